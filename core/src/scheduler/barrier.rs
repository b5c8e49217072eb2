//! Group barriers, counted by the scheduler, and what a member's death
//! does to them.
//!
//! Generations are the scheduler's: every node numbers its barriers per
//! group from the generation the scheduler gave it when it registered (0
//! in a fresh cluster), so arrivals are counted per `(group, generation)`
//! and back-to-back barriers never mix. A barrier is released when every
//! member it waits for has arrived (the scheduler too, when the group
//! includes it).
//!
//! ## When a member dies
//!
//! Which members a barrier waits for is the policy's choice
//! ([`BarrierPolicy`]):
//!
//! * `FailOnDeath`: a death fails every open barrier of the dead member's
//!   groups; members that arrive later get the same failure.
//! * `WaitForRecovery` (the default): the barrier waits for a dead member's
//!   replacement up to `recovery_timeout` after the death was declared,
//!   then is released among the live members. The release tells every
//!   member who was missing (`ReleasedWithout`). A standard job therefore
//!   survives a death: a restarted process rejoins at the barrier the
//!   survivors wait in, and a process that never comes back costs the
//!   survivors one timeout, not the job.
//! * `Elastic`: the barrier is released among the live members at once,
//!   with the same report.
//!
//! `finalize` always waits for recovery, whatever the policy: ending the
//! job for everyone because one process died is never what a job wants,
//! and the report says who did not finish.
//!
//! ## Where a replacement starts
//!
//! A replacement's first barrier on a group is the one the survivors have
//! not finished: the open barrier of the group if there is one (its
//! predecessor's arrival there no longer counts; the replacement arrives
//! itself), else the next generation after the last one that ended. The
//! scheduler sends it that generation in the table that gives it its id,
//! so its own numbering continues from there. Barriers the survivors
//! finished without it are behind it; an application that resumes work
//! reads where the cluster is ([`Node::next_barrier_generation`]) and
//! skips or redoes the steps in between, as its semantics need.
//!
//! An arrival at a generation that already ended (a member that had not
//! arrived when a barrier failed) is answered with the recorded outcome,
//! remembered for the last `ENDED_REMEMBERED_MAX` generations of each
//! group; an arrival older than those is failed, never opened again.
//!
//! A member waiting in its final barrier arrives at no other, so an
//! ordinary barrier does not wait for it: it is released without it
//! (named among the missing). Otherwise a survivor that finished and a
//! replacement that still works would each wait for the other forever.
//!
//! [`Node::next_barrier_generation`]: crate::Node::next_barrier_generation

use std::collections::{BTreeMap, BTreeSet};

use crate::config::BarrierPolicy;
use crate::id::{Group, NodeId, Role};
use crate::membership::Membership;
use crate::outbox::Outbox;
use crate::stats::Stats;
use crate::time::{Duration, Instant};
use crate::wire::{BarrierOutcome, Message};

/// Ended generations per group whose outcome is remembered for late
/// arrivals; an arrival at an older one is failed.
const ENDED_REMEMBERED_MAX: usize = 1024;

/// What the barrier counter needs to know of the configuration.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rules {
    /// What an ordinary barrier does on a death.
    pub(crate) policy: BarrierPolicy,
    /// How long a waiting barrier waits for a replacement.
    pub(crate) recovery_timeout: Duration,
}

/// The scheduler's count of every barrier.
#[derive(Debug, Default)]
pub(crate) struct Arrivals {
    open: BTreeMap<(Group, u64), OpenBarrier>,
    /// How recent generations ended, for members that arrive late.
    ended: BTreeMap<(Group, u64), BarrierOutcome>,
    /// Per group, one past the newest generation that ended.
    ended_below: BTreeMap<Group, u64>,
    /// Members declared dead and not replaced yet, with when.
    dead_since: BTreeMap<NodeId, Instant>,
    /// When a waiting barrier next stops waiting for a dead member.
    deadline: Option<Instant>,
}

#[derive(Debug, Default)]
struct OpenBarrier {
    arrived: BTreeSet<NodeId>,
    /// Some arrival came from `finalize`.
    finalize: bool,
}

impl OpenBarrier {
    /// Whether a dead member's absence holds this barrier up to the
    /// recovery timeout: a finalize always, others under `WaitForRecovery`.
    fn waits_for_recovery(&self, policy: BarrierPolicy) -> bool {
        self.finalize || policy == BarrierPolicy::WaitForRecovery
    }
}

impl Arrivals {
    /// `from` arrived at barrier `generation` over `group`.
    #[allow(clippy::too_many_arguments)] // the arrival, and what it is counted against
    pub(crate) fn on_arrival(
        &mut self,
        now: Instant,
        (from, group, generation, finalize): (NodeId, Group, u64, bool),
        membership: &Membership,
        rules: Rules,
        out: &mut Outbox,
        stats: &mut Stats,
    ) {
        let member = from.role().is_some_and(|role| group.contains(role));
        if !member {
            stats.unexpected_drops += 1;
            return;
        }
        if from != NodeId::SCHEDULER && !membership.is_alive(from) {
            // Declared dead (a process cut off, not crashed): its arrival
            // would open or complete barriers the survivors left behind.
            stats.dead_sender_drops += 1;
            return;
        }
        let key = (group, generation);
        if let Some(outcome) = self.ended.get(&key) {
            out.send(from, Message::BarrierRelease { group, generation, outcome: outcome.clone() });
            return;
        }
        if generation < self.ended_below.get(&group).copied().unwrap_or(0) {
            // Ended so long ago its outcome is forgotten: failed rather than
            // opened again, which would wait for members long gone on.
            let outcome = BarrierOutcome::MemberDied(from);
            out.send(from, Message::BarrierRelease { group, generation, outcome });
            return;
        }
        let open = self.open.entry(key).or_default();
        open.arrived.insert(from);
        open.finalize |= finalize;
        if finalize {
            // A member in its final barrier arrives at no other: barriers
            // that wait for it may go on now.
            let keys: Vec<(Group, u64)> = self.open.keys().copied().collect();
            for key in keys {
                self.try_release(now, key, membership, rules, out);
            }
        } else {
            self.try_release(now, key, membership, rules, out);
        }
        self.rearm(now, membership, rules);
    }

    /// The next generation a node registering as `id` enters on each group
    /// of its role: where the survivors are.
    pub(crate) fn generations_for(&self, id: NodeId) -> Vec<(Group, u64)> {
        let Some(role) = id.role() else {
            return Vec::new();
        };
        Group::all()
            .filter(|group| group.contains(role))
            .map(|group| {
                let ended_below = self.ended_below.get(&group).copied().unwrap_or(0);
                let first_open = self.open.range((group, ended_below)..=(group, u64::MAX)).next().map(|(k, _)| k.1);
                (group, first_open.unwrap_or(ended_below))
            })
            .filter(|&(_, generation)| generation > 0)
            .collect()
    }

    /// Whether barrier `key` waits for `id`, a member of its group, at `now`.
    fn waits_for(&self, now: Instant, key: (Group, u64), id: NodeId, membership: &Membership, rules: Rules) -> bool {
        let Some(open) = self.open.get(&key) else {
            return false;
        };
        if !open.finalize && self.finalizing(id) {
            // It waits in its final barrier and will arrive at no other (a
            // survivor that finished while a replacement still works, say):
            // waiting for it would deadlock the two barriers.
            return false;
        }
        if membership.is_alive(id) {
            return true;
        }
        open.waits_for_recovery(rules.policy)
            && self.dead_since.get(&id).is_some_and(|&since| now < since + rules.recovery_timeout)
    }

    /// Whether `id` arrived at an open finalize barrier.
    fn finalizing(&self, id: NodeId) -> bool {
        self.open.values().any(|open| open.finalize && open.arrived.contains(&id))
    }

    /// Releases `key` if every member it waits for has arrived.
    fn try_release(
        &mut self,
        now: Instant,
        key: (Group, u64),
        membership: &Membership,
        rules: Rules,
        out: &mut Outbox,
    ) {
        let (group, generation) = key;
        let Some(open) = self.open.get(&key) else {
            return;
        };
        let scheduler_awaited = open.finalize || !self.finalizing(NodeId::SCHEDULER);
        if group.contains(Role::Scheduler) && !open.arrived.contains(&NodeId::SCHEDULER) && scheduler_awaited {
            return;
        }
        let members: Vec<NodeId> = membership.members(group).collect();
        let pending =
            members.iter().any(|&id| !open.arrived.contains(&id) && self.waits_for(now, key, id, membership, rules));
        if pending {
            return;
        }
        let open = self.open.remove(&key).expect("checked above");
        let missing: Vec<NodeId> = members.into_iter().filter(|id| !open.arrived.contains(id)).collect();
        let outcome =
            if missing.is_empty() { BarrierOutcome::Released } else { BarrierOutcome::ReleasedWithout(missing) };
        self.end(key, &outcome);
        tell(open.arrived, (group, generation, &outcome), membership, out);
    }

    /// A member was declared dead: fail its barriers, or count its absence
    /// from now, as the policy says.
    pub(crate) fn on_member_died(
        &mut self,
        now: Instant,
        dead: NodeId,
        membership: &Membership,
        rules: Rules,
        out: &mut Outbox,
    ) {
        let Some(role) = dead.role() else {
            return;
        };
        self.dead_since.insert(dead, now);
        let affected: Vec<(Group, u64)> = self.open.keys().filter(|(group, _)| group.contains(role)).copied().collect();
        for key in affected {
            let finalize = self.open.get(&key).is_some_and(|open| open.finalize);
            if rules.policy == BarrierPolicy::FailOnDeath && !finalize {
                self.fail(key, dead, membership, out);
            } else {
                self.try_release(now, key, membership, rules, out);
            }
        }
        self.rearm(now, membership, rules);
    }

    /// A replacement registered as `id`: barriers waiting for it wait for
    /// its own arrival, since its predecessor's no longer speaks for it.
    /// (Nothing is released here: there is one more member to wait for.)
    pub(crate) fn on_member_recovered(&mut self, now: Instant, id: NodeId, membership: &Membership, rules: Rules) {
        self.dead_since.remove(&id);
        for open in self.open.values_mut() {
            open.arrived.remove(&id);
        }
        self.rearm(now, membership, rules);
    }

    /// Stops waiting for the dead members whose time is up.
    pub(crate) fn on_timeout(&mut self, now: Instant, membership: &Membership, rules: Rules, out: &mut Outbox) {
        let keys: Vec<(Group, u64)> = self.open.keys().copied().collect();
        for key in keys {
            self.try_release(now, key, membership, rules, out);
        }
        self.rearm(now, membership, rules);
    }

    /// When [`on_timeout`](Self::on_timeout) has work next.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadline
    }

    fn fail(&mut self, key: (Group, u64), dead: NodeId, membership: &Membership, out: &mut Outbox) {
        let Some(open) = self.open.remove(&key) else {
            return;
        };
        let outcome = BarrierOutcome::MemberDied(dead);
        self.end(key, &outcome);
        let (group, generation) = key;
        tell(open.arrived, (group, generation, &outcome), membership, out);
    }

    fn end(&mut self, (group, generation): (Group, u64), outcome: &BarrierOutcome) {
        self.ended.insert((group, generation), outcome.clone());
        // Bounded per group, the oldest generations going first.
        let of_group = self.ended.range((group, 0)..=(group, u64::MAX)).count();
        if of_group > ENDED_REMEMBERED_MAX {
            let oldest = self.ended.range((group, 0)..=(group, u64::MAX)).next().map(|(key, _)| *key);
            if let Some(oldest) = oldest {
                self.ended.remove(&oldest);
            }
        }
        let below = self.ended_below.entry(group).or_insert(0);
        *below = (*below).max(generation.saturating_add(1));
    }

    /// The earliest moment after `now` an open barrier stops waiting for a
    /// dead member.
    fn rearm(&mut self, now: Instant, membership: &Membership, rules: Rules) {
        let mut deadline: Option<Instant> = None;
        for (&(group, _), open) in &self.open {
            if !open.waits_for_recovery(rules.policy) {
                continue;
            }
            for id in membership.members(group) {
                if open.arrived.contains(&id) {
                    continue;
                }
                if let Some(&since) = self.dead_since.get(&id) {
                    let at = since + rules.recovery_timeout;
                    if at > now {
                        deadline = Some(deadline.map_or(at, |d| d.min(at)));
                    }
                }
            }
        }
        self.deadline = deadline;
    }
}

/// Tells the members that arrived how barrier `generation` over `group`
/// ended; not the ones declared dead since, which nobody can reach (a
/// message to one would open a stream to a process that is gone).
fn tell(
    arrived: BTreeSet<NodeId>,
    (group, generation, outcome): (Group, u64, &BarrierOutcome),
    membership: &Membership,
    out: &mut Outbox,
) {
    for id in arrived.into_iter().filter(|&id| id == NodeId::SCHEDULER || membership.is_alive(id)) {
        out.send(id, Message::BarrierRelease { group, generation, outcome: outcome.clone() });
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::id::{Incarnation, Rank};
    use crate::outbox::Dest;
    use crate::time::Duration;
    use crate::wire::NodeEntry;

    fn workers(n: u32) -> Membership {
        let nodes = (0..n)
            .map(|rank| NodeEntry {
                id: NodeId::worker(Rank(rank)),
                incarnation: Incarnation(0),
                addr: SocketAddr::from(([127, 0, 0, 1], 10 + rank as u16)),
                instance: u64::from(rank) + 1,
                alive: true,
            })
            .collect();
        let mut membership = Membership::default();
        membership.apply(1, nodes, crate::chains::Chains::default()).unwrap();
        membership
    }

    fn kill(membership: &mut Membership, id: NodeId) {
        let mut entry = *membership.get(id).unwrap();
        entry.alive = false;
        membership.update(entry);
    }

    fn releases(out: &mut Outbox) -> Vec<(NodeId, u64, BarrierOutcome)> {
        let mut sent = Vec::new();
        while let Some((dest, message)) = out.pop_message() {
            let (Dest::Node(to), Message::BarrierRelease { generation, outcome, .. }) = (dest, message) else {
                panic!("only releases are sent");
            };
            sent.push((to, generation, outcome));
        }
        sent
    }

    const W0: NodeId = NodeId::worker(Rank(0));
    const W1: NodeId = NodeId::worker(Rank(1));
    const TIMEOUT: Duration = Duration::from_secs(5);

    fn rules(policy: BarrierPolicy) -> Rules {
        Rules { policy, recovery_timeout: TIMEOUT }
    }

    fn at(ms: u64) -> Instant {
        Instant::ZERO + Duration::from_millis(ms)
    }

    fn recover(membership: &mut Membership, id: NodeId) {
        let mut entry = *membership.get(id).unwrap();
        entry.alive = true;
        entry.incarnation = entry.incarnation.next();
        membership.update(entry);
    }

    /// An arrival at `generation` of the workers' barrier.
    fn arrive(
        arrivals: &mut Arrivals,
        now: Instant,
        id: NodeId,
        generation: u64,
        membership: &Membership,
        policy: BarrierPolicy,
        out: &mut Outbox,
    ) {
        let mut stats = Stats::default();
        arrivals.on_arrival(now, (id, Group::WORKERS, generation, false), membership, rules(policy), out, &mut stats);
        assert_eq!(stats, Stats::default(), "arrival counted as a drop");
    }

    #[test]
    fn a_barrier_is_released_when_the_last_member_arrives() {
        let membership = workers(2);
        let (mut arrivals, mut out, mut stats) = (Arrivals::default(), Outbox::default(), Stats::default());
        let policy = BarrierPolicy::WaitForRecovery;
        arrive(&mut arrivals, at(0), W0, 0, &membership, policy, &mut out);
        assert!(releases(&mut out).is_empty());
        arrive(&mut arrivals, at(1), W1, 0, &membership, policy, &mut out);
        let released = BarrierOutcome::Released;
        assert_eq!(releases(&mut out), vec![(W0, 0, released.clone()), (W1, 0, released)]);
        // A server is no member of the workers' barrier.
        let server = (NodeId::server(Rank(0)), Group::WORKERS, 1, false);
        arrivals.on_arrival(at(2), server, &membership, rules(policy), &mut out, &mut stats);
        assert_eq!(stats.unexpected_drops, 1);
        // The next node to register starts after what ended.
        assert_eq!(
            arrivals.generations_for(W1),
            vec![(Group::WORKERS, 1), (Group::SERVERS | Group::WORKERS, 0)]
                .into_iter()
                .filter(|g| g.1 > 0)
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn under_fail_on_death_a_death_fails_the_barrier_and_late_arrivals_learn_of_it() {
        let mut membership = workers(3);
        let (mut arrivals, mut out) = (Arrivals::default(), Outbox::default());
        let policy = BarrierPolicy::FailOnDeath;
        arrive(&mut arrivals, at(0), W0, 0, &membership, policy, &mut out);
        kill(&mut membership, W1);
        arrivals.on_member_died(at(1), W1, &membership, rules(policy), &mut out);
        assert_eq!(releases(&mut out), vec![(W0, 0, BarrierOutcome::MemberDied(W1))]);
        let w2 = NodeId::worker(Rank(2));
        arrive(&mut arrivals, at(2), w2, 0, &membership, policy, &mut out);
        assert_eq!(releases(&mut out), vec![(w2, 0, BarrierOutcome::MemberDied(W1))]);
    }

    #[test]
    fn a_dead_members_arrival_is_dropped() {
        let mut membership = workers(2);
        let (mut arrivals, mut out, mut stats) = (Arrivals::default(), Outbox::default(), Stats::default());
        kill(&mut membership, W1);
        let arrival = (W1, Group::WORKERS, 0, false);
        arrivals.on_arrival(at(0), arrival, &membership, rules(BarrierPolicy::Elastic), &mut out, &mut stats);
        assert_eq!(stats.dead_sender_drops, 1);
        assert!(releases(&mut out).is_empty());
        assert_eq!(arrivals.generations_for(W1), Vec::new(), "nothing was opened");
    }

    #[test]
    fn under_elastic_a_death_releases_the_barrier_among_the_live_at_once() {
        let mut membership = workers(2);
        let (mut arrivals, mut out) = (Arrivals::default(), Outbox::default());
        let policy = BarrierPolicy::Elastic;
        arrive(&mut arrivals, at(0), W0, 0, &membership, policy, &mut out);
        kill(&mut membership, W1);
        arrivals.on_member_died(at(1), W1, &membership, rules(policy), &mut out);
        assert_eq!(releases(&mut out), vec![(W0, 0, BarrierOutcome::ReleasedWithout(vec![W1]))]);
        assert_eq!(arrivals.next_deadline(), None);
        // A later barrier does not wait for the dead member either.
        arrive(&mut arrivals, at(2), W0, 1, &membership, policy, &mut out);
        assert_eq!(releases(&mut out), vec![(W0, 1, BarrierOutcome::ReleasedWithout(vec![W1]))]);
    }

    #[test]
    fn under_wait_for_recovery_a_replacement_completes_the_barrier_the_survivors_wait_in() {
        let mut membership = workers(2);
        let (mut arrivals, mut out) = (Arrivals::default(), Outbox::default());
        let policy = BarrierPolicy::WaitForRecovery;
        // Generation 0 completes; at generation 1 worker 1 arrives, then dies.
        for id in [W0, W1] {
            arrive(&mut arrivals, at(0), id, 0, &membership, policy, &mut out);
        }
        releases(&mut out);
        arrive(&mut arrivals, at(1), W1, 1, &membership, policy, &mut out);
        kill(&mut membership, W1);
        arrivals.on_member_died(at(2), W1, &membership, rules(policy), &mut out);
        assert!(releases(&mut out).is_empty(), "its arrival still counts, and W0 is not there yet");
        // The replacement registers: its predecessor's arrival no longer
        // counts, and it starts in the open barrier.
        recover(&mut membership, W1);
        arrivals.on_member_recovered(at(3), W1, &membership, rules(policy));
        assert_eq!(arrivals.generations_for(W1), vec![(Group::WORKERS, 1)]);
        arrive(&mut arrivals, at(4), W0, 1, &membership, policy, &mut out);
        assert!(releases(&mut out).is_empty(), "waits for the replacement's own arrival");
        arrive(&mut arrivals, at(5), W1, 1, &membership, policy, &mut out);
        let released = BarrierOutcome::Released;
        assert_eq!(releases(&mut out), vec![(W0, 1, released.clone()), (W1, 1, released)]);
        assert_eq!(arrivals.next_deadline(), None);
    }

    #[test]
    fn under_wait_for_recovery_the_barrier_goes_on_without_the_dead_at_the_deadline() {
        let mut membership = workers(2);
        let (mut arrivals, mut out) = (Arrivals::default(), Outbox::default());
        let policy = BarrierPolicy::WaitForRecovery;
        arrive(&mut arrivals, at(0), W0, 0, &membership, policy, &mut out);
        kill(&mut membership, W1);
        arrivals.on_member_died(at(1000), W1, &membership, rules(policy), &mut out);
        assert_eq!(arrivals.next_deadline(), Some(at(1000) + TIMEOUT));
        arrivals.on_timeout(at(5999), &membership, rules(policy), &mut out);
        assert!(releases(&mut out).is_empty());
        arrivals.on_timeout(at(6000), &membership, rules(policy), &mut out);
        assert_eq!(releases(&mut out), vec![(W0, 0, BarrierOutcome::ReleasedWithout(vec![W1]))]);
        assert_eq!(arrivals.next_deadline(), None);
        // A member that arrives late is told how it ended.
        let w2_membership = membership.clone();
        let mut stats = Stats::default();
        arrivals.on_arrival(
            at(7000),
            (W0, Group::WORKERS, 0, false),
            &w2_membership,
            rules(policy),
            &mut out,
            &mut stats,
        );
        assert_eq!(releases(&mut out), vec![(W0, 0, BarrierOutcome::ReleasedWithout(vec![W1]))]);
    }

    #[test]
    fn finalize_waits_for_recovery_whatever_the_policy() {
        let mut membership = workers(2);
        let (mut arrivals, mut out, mut stats) = (Arrivals::default(), Outbox::default(), Stats::default());
        let policy = BarrierPolicy::FailOnDeath;
        let finalize = (W0, Group::WORKERS, 0, true);
        arrivals.on_arrival(at(0), finalize, &membership, rules(policy), &mut out, &mut stats);
        kill(&mut membership, W1);
        arrivals.on_member_died(at(0), W1, &membership, rules(policy), &mut out);
        assert!(releases(&mut out).is_empty(), "a finalize neither fails nor goes on at the death");
        assert_eq!(arrivals.next_deadline(), Some(at(0) + TIMEOUT));
        arrivals.on_timeout(at(0) + TIMEOUT, &membership, rules(policy), &mut out);
        assert_eq!(releases(&mut out), vec![(W0, 0, BarrierOutcome::ReleasedWithout(vec![W1]))]);
    }

    #[test]
    fn an_ordinary_barrier_does_not_wait_for_a_member_in_its_final_barrier() {
        let membership = workers(2);
        let (mut arrivals, mut out, mut stats) = (Arrivals::default(), Outbox::default(), Stats::default());
        let policy = BarrierPolicy::WaitForRecovery;
        // Worker 0 finished and waits in finalize; worker 1 (a replacement
        // that redoes its work) enters a workers' barrier afterwards.
        let finalize = (W0, Group::WORKERS, 0, true);
        arrivals.on_arrival(at(0), finalize, &membership, rules(policy), &mut out, &mut stats);
        arrive(&mut arrivals, at(1), W1, 1, &membership, policy, &mut out);
        assert_eq!(releases(&mut out), vec![(W1, 1, BarrierOutcome::ReleasedWithout(vec![W0]))]);
        // The other way round: a barrier open first goes on once the
        // missing member enters its final barrier.
        let mut arrivals = Arrivals::default();
        arrive(&mut arrivals, at(0), W1, 0, &membership, policy, &mut out);
        assert!(releases(&mut out).is_empty());
        let finalize = (W0, Group::WORKERS, 1, true);
        arrivals.on_arrival(at(1), finalize, &membership, rules(policy), &mut out, &mut stats);
        assert_eq!(releases(&mut out), vec![(W1, 0, BarrierOutcome::ReleasedWithout(vec![W0]))]);
    }

    #[test]
    fn a_member_waiting_in_another_ordinary_barrier_is_still_awaited() {
        // Only a final barrier means a member arrives at no other: W0 waits
        // in the workers' barrier and will come to this one after it.
        let membership = workers(2);
        let (mut arrivals, mut out, mut stats) = (Arrivals::default(), Outbox::default(), Stats::default());
        let policy = BarrierPolicy::WaitForRecovery;
        arrive(&mut arrivals, at(0), W0, 0, &membership, policy, &mut out);
        let both = Group::SERVERS | Group::WORKERS;
        arrivals.on_arrival(at(1), (W1, both, 0, false), &membership, rules(policy), &mut out, &mut stats);
        assert!(releases(&mut out).is_empty(), "neither barrier may go on without W0 or W1");
        arrivals.on_arrival(at(2), (W0, both, 0, false), &membership, rules(policy), &mut out, &mut stats);
        assert_eq!(releases(&mut out).len(), 2, "the second barrier, once both are there");
    }

    #[test]
    fn an_arrival_older_than_what_is_remembered_is_failed_not_opened_again() {
        let membership = workers(1);
        let (mut arrivals, mut out) = (Arrivals::default(), Outbox::default());
        let policy = BarrierPolicy::Elastic;
        let total = ENDED_REMEMBERED_MAX as u64 + 1;
        for generation in 0..total {
            arrive(&mut arrivals, at(generation), W0, generation, &membership, policy, &mut out);
        }
        assert_eq!(releases(&mut out).len(), total as usize);
        // Generation 0 is forgotten: a late arrival there is failed. The
        // last ENDED_REMEMBERED_MAX are remembered, generation 1 the oldest.
        arrive(&mut arrivals, at(total), W0, 0, &membership, policy, &mut out);
        assert_eq!(releases(&mut out), vec![(W0, 0, BarrierOutcome::MemberDied(W0))]);
        arrive(&mut arrivals, at(total), W0, 1, &membership, policy, &mut out);
        assert_eq!(releases(&mut out), vec![(W0, 1, BarrierOutcome::Released)]);
        assert_eq!(arrivals.generations_for(W0), vec![(Group::WORKERS, total)], "nothing was opened");
        // Another group's barriers do not push this group's out.
        let mut arrivals = Arrivals::default();
        arrive(&mut arrivals, at(0), W0, 0, &membership, policy, &mut out);
        for generation in 0..total {
            let finalize = (W0, Group::ALL, generation, false);
            let mut stats = Stats::default();
            let scheduler = (NodeId::SCHEDULER, Group::ALL, generation, false);
            arrivals.on_arrival(at(1), scheduler, &membership, rules(policy), &mut out, &mut stats);
            arrivals.on_arrival(at(1), finalize, &membership, rules(policy), &mut out, &mut stats);
        }
        releases(&mut out);
        arrive(&mut arrivals, at(2), W0, 0, &membership, policy, &mut out);
        assert_eq!(releases(&mut out), vec![(W0, 0, BarrierOutcome::Released)]);
    }
}
