//! Placement: how the scheduler changes the replica table ([`Chains`]) as
//! servers die, come back and catch up.
//!
//! Chain order alone decides failover, so no change needs a round of
//! questions: a dead server leaves every chain it was in (its successor
//! becomes head, its predecessor tail); a server back as a new process
//! starts empty, so it waits as a learner behind the tail of each range it
//! is meant to hold and joins as the new tail once it has caught up. Every
//! change happens under the membership epoch that caused it, and a range's
//! `changed_at` moves only when its members do.
//!
//! A range whose last member died is lost: its state is gone, and the
//! table shows it with no members until a server meant to hold it
//! registers as a new process, which starts the range afresh as its only
//! member (ps-lite's behaviour for every death). A learner that was still
//! catching up when that happened is dropped, since what it holds is a
//! part of a state that no longer exists.

use crate::chains::Chains;
use crate::id::Rank;

/// `rank` was declared dead at `epoch`: it leaves every chain and stops
/// learning. Returns the ranges it was the last member of.
pub(crate) fn on_server_died(chains: &mut Chains, rank: Rank, epoch: u64, alive: impl Fn(Rank) -> bool) -> Vec<usize> {
    let mut lost = Vec::new();
    for index in 0..chains.as_slice().len() {
        let chain = chains.get_mut(index);
        if chain.holds(rank) {
            chain.members_mut().retain(|r| *r != rank);
            chain.set_changed_at(epoch);
            if chain.is_lost() {
                chain.set_learner(None);
                lost.push(index);
                continue;
            }
        }
        if chain.learner() == Some(rank) {
            chain.set_learner(None);
        }
        refill_learner(chains, index, |r| r != rank && alive(r));
    }
    lost
}

/// `rank` registered as a new process at `epoch`, with nothing in its
/// store: it starts every lost range it is meant to hold, and learns the
/// others (or waits to, behind another learner).
pub(crate) fn on_server_restarted(chains: &mut Chains, rank: Rank, epoch: u64, alive: impl Fn(Rank) -> bool) {
    let homes: Vec<usize> = chains.homes_of(rank).collect();
    for index in homes {
        let chain = chains.get_mut(index);
        if chain.holds(rank) || chain.learner() == Some(rank) {
            // Its predecessor's death removed it; a table that still names
            // it would have it learn what it holds already.
            continue;
        }
        if chain.is_lost() {
            chain.members_mut().push(rank);
            chain.set_changed_at(epoch);
            // A live server dropped as learner when the range was lost
            // learns the new state from scratch.
            refill_learner(chains, index, |r| r == rank || alive(r));
        } else if chain.learner().is_none() {
            chain.set_learner(Some(rank));
        }
    }
}

/// The learner `rank` of range `index` reports it holds the range: it
/// becomes the tail at `epoch`, and the next server waiting, if any,
/// starts learning. `false` (and nothing changed) when `rank` is not that
/// range's learner any more, as for a report that crossed a death.
pub(crate) fn on_caught_up(
    chains: &mut Chains,
    index: usize,
    rank: Rank,
    epoch: u64,
    alive: impl Fn(Rank) -> bool,
) -> bool {
    let Some(chain) = chains.as_slice().get(index) else {
        return false;
    };
    if chain.learner() != Some(rank) || chain.is_lost() {
        return false;
    }
    let chain = chains.get_mut(index);
    chain.members_mut().push(rank);
    chain.set_learner(None);
    chain.set_changed_at(epoch);
    refill_learner(chains, index, alive);
    true
}

/// Gives range `index` a learner when it has none: the first live server
/// in its home order that is neither a member nor learning it.
fn refill_learner(chains: &mut Chains, index: usize, alive: impl Fn(Rank) -> bool) {
    let chain = &chains.as_slice()[index];
    if chain.learner().is_some() || chain.is_lost() {
        return;
    }
    let next = chains.home(index).find(|&r| alive(r) && !chain.holds(r));
    chains.get_mut(index).set_learner(next);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::range::ServerRanges;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn members(chains: &Chains, index: usize) -> Vec<u32> {
        chains.as_slice()[index].members().iter().map(|r| r.0).collect()
    }

    #[test]
    fn a_dead_head_hands_the_range_to_its_successor_and_a_dead_tail_to_its_predecessor() {
        let mut chains = Chains::initial(&ServerRanges::equal(3), 3, 1);
        assert_eq!(members(&chains, 0), [0, 1, 2]);
        let lost = on_server_died(&mut chains, Rank(0), 2, |r| r != Rank(0));
        assert!(lost.is_empty());
        assert_eq!(members(&chains, 0), [1, 2], "the successor heads");
        assert_eq!(members(&chains, 1), [1, 2], "the tail's predecessor is tail");
        assert_eq!(members(&chains, 2), [2, 1]);
        assert!(chains.as_slice().iter().all(|c| c.changed_at() == 2));
    }

    #[test]
    fn a_restarted_server_learns_then_joins_as_tail() {
        let mut chains = Chains::initial(&ServerRanges::equal(3), 2, 1);
        on_server_died(&mut chains, Rank(1), 2, |r| r != Rank(1));
        assert_eq!((members(&chains, 0), members(&chains, 1)), (vec![0], vec![2]));
        on_server_restarted(&mut chains, Rank(1), 3, |_| true);
        for index in [0, 1] {
            assert_eq!(chains.as_slice()[index].learner(), Some(Rank(1)));
            assert_eq!(chains.as_slice()[index].changed_at(), 2, "a learner does not change routing");
        }
        assert!(!on_caught_up(&mut chains, 2, Rank(1), 4, |_| true), "not range 2's learner");
        assert!(on_caught_up(&mut chains, 1, Rank(1), 4, |_| true));
        assert_eq!(members(&chains, 1), [2, 1], "back as the tail, not in its old place");
        assert_eq!(chains.as_slice()[1].changed_at(), 4);
        assert!(!on_caught_up(&mut chains, 1, Rank(1), 5, |_| true), "twice is once");
    }

    #[test]
    fn a_range_whose_members_all_died_is_lost_until_a_home_server_starts_it_afresh() {
        let mut chains = Chains::initial(&ServerRanges::equal(2), 2, 1);
        on_server_died(&mut chains, Rank(1), 2, |r| r == Rank(0));
        on_server_restarted(&mut chains, Rank(1), 3, |_| true);
        assert_eq!(chains.as_slice()[0].learner(), Some(Rank(1)));
        // The tail dies before the learner caught up: range 0 is lost, and
        // the learner's partial copy with it.
        let lost = on_server_died(&mut chains, Rank(0), 4, |r| r == Rank(1));
        assert_eq!(lost, [0, 1], "server 0 was the last member of both");
        assert!(chains.as_slice()[0].is_lost() && chains.as_slice()[0].learner().is_none());
        assert!(!on_caught_up(&mut chains, 0, Rank(1), 5, |_| true), "nothing left to catch up with");
        on_server_restarted(&mut chains, Rank(0), 6, |_| true);
        assert_eq!(members(&chains, 0), [0], "started afresh by a new process");
        assert_eq!(chains.as_slice()[0].learner(), Some(Rank(1)), "the dropped learner starts over");
        assert_eq!(chains.as_slice()[0].changed_at(), 6);
    }

    #[test]
    fn with_one_replica_a_death_loses_the_range_and_the_replacement_takes_it_back() {
        let mut chains = Chains::initial(&ServerRanges::equal(2), 1, 1);
        assert_eq!(on_server_died(&mut chains, Rank(1), 2, |r| r == Rank(0)), [1]);
        on_server_restarted(&mut chains, Rank(1), 3, |_| true);
        assert_eq!(
            Chains::initial(&ServerRanges::equal(2), 1, 1).as_slice()[1].members(),
            chains.as_slice()[1].members()
        );
    }

    #[derive(Clone, Debug)]
    enum Step {
        Die(u32),
        Restart(u32),
        CatchUp(usize),
    }

    fn step(servers: u32) -> impl Strategy<Value = Step> {
        prop_oneof![
            (0..servers).prop_map(Step::Die),
            (0..servers).prop_map(Step::Restart),
            (0..servers as usize).prop_map(Step::CatchUp),
        ]
    }

    proptest! {
        /// Any sequence of deaths, restarts and catch-ups keeps a table a
        /// receiver accepts; members only leave by dying and only join by
        /// catching up (or by starting a lost range afresh); chains hold
        /// live servers only; a range is lost only when all its members
        /// died; and every range is back to R copies once everyone is
        /// alive and has caught up.
        #[test]
        fn placement_keeps_the_table_valid_and_heals(
            servers in 1u32..=6,
            replicas in 1u8..=3,
            steps in proptest::collection::vec(step(6), 0..60),
        ) {
            let mut chains = Chains::initial(&ServerRanges::equal(servers), replicas, 1);
            let mut alive: BTreeSet<u32> = (0..servers).collect();
            let mut epoch = 1;
            for step in steps {
                let before = chains.clone();
                let step_taken = step.clone();
                epoch += 1;
                match step {
                    Step::Die(rank) if alive.contains(&rank) => {
                        alive.remove(&rank);
                        let lost = on_server_died(&mut chains, Rank(rank), epoch, |r| alive.contains(&r.0));
                        for index in lost {
                            prop_assert_eq!(before.as_slice()[index].members(), [Rank(rank)]);
                        }
                    }
                    Step::Restart(rank) if rank < servers && !alive.contains(&rank) => {
                        alive.insert(rank);
                        on_server_restarted(&mut chains, Rank(rank), epoch, |r| alive.contains(&r.0));
                    }
                    Step::CatchUp(index) if index < servers as usize => {
                        if let Some(learner) = chains.as_slice()[index].learner() {
                            prop_assert!(on_caught_up(&mut chains, index, learner, epoch, |r| alive.contains(&r.0)));
                        }
                    }
                    _ => continue,
                }
                let checked = Chains::from_parts(replicas, chains.as_slice().to_vec());
                prop_assert_eq!(checked.as_ref(), Ok(&chains));
                for (index, (old, new)) in before.as_slice().iter().zip(chains.as_slice()).enumerate() {
                    for rank in new.members().iter().chain(new.learner().as_ref()) {
                        prop_assert!(alive.contains(&rank.0), "range {} names dead server {}", index, rank.0);
                    }
                    for rank in old.members().iter().filter(|r| !new.holds(**r)) {
                        prop_assert!(!alive.contains(&rank.0), "range {}: live server {} left", index, rank.0);
                    }
                    if let Step::Restart(rank) = step_taken {
                        // A restarted home server starts a lost range, or
                        // learns it (or waits behind another learner).
                        if chains.homes_of(Rank(rank)).any(|home| home == index) {
                            let placed = new.holds(Rank(rank)) && old.is_lost()
                                || new.learner() == Some(Rank(rank))
                                || old.learner().is_some_and(|l| l != Rank(rank));
                            prop_assert!(placed, "range {}: restarted {} not placed: {:?} -> {:?}", index, rank, old, new);
                        }
                    }
                    let joined: Vec<Rank> = new.members().iter().copied().filter(|r| !old.holds(*r)).collect();
                    if !joined.is_empty() {
                        let caught_up = joined.len() == 1 && old.learner() == Some(joined[0]);
                        prop_assert!(caught_up || old.is_lost(), "range {}: {:?} -> {:?}", index, old, new);
                        prop_assert_eq!(new.tail(), Some(joined[0]), "a newcomer joins as the tail");
                    }
                    // Survivors keep their relative order.
                    let kept: Vec<Rank> = new.members().iter().copied().filter(|r| old.holds(*r)).collect();
                    let order: Vec<Rank> = old.members().iter().copied().filter(|r| new.holds(*r)).collect();
                    prop_assert_eq!(kept, order);
                    if old.members() != new.members() {
                        prop_assert_eq!(new.changed_at(), epoch);
                    } else {
                        prop_assert_eq!(new.changed_at(), old.changed_at());
                    }
                }
            }
            // Heal: everyone comes back and every learner catches up.
            for rank in 0..servers {
                if alive.insert(rank) {
                    epoch += 1;
                    on_server_restarted(&mut chains, Rank(rank), epoch, |r| alive.contains(&r.0));
                }
            }
            for _ in 0..REPLICAS_LIMIT {
                for index in 0..servers as usize {
                    if let Some(learner) = chains.as_slice()[index].learner() {
                        epoch += 1;
                        on_caught_up(&mut chains, index, learner, epoch, |_| true);
                    }
                }
            }
            let copies = usize::from(replicas).min(servers as usize);
            for (index, chain) in chains.as_slice().iter().enumerate() {
                prop_assert_eq!(chain.members().len(), copies, "range {} after healing: {:?}", index, chain);
            }
        }
    }

    const REPLICAS_LIMIT: usize = crate::chains::REPLICAS_MAX as usize;
}
