//! Group barriers, counted by the scheduler.
//!
//! Each node numbers its barriers per group (the generation), so two
//! back-to-back barriers on one group can never be mixed up: arrivals are
//! counted per `(group, generation)`. A barrier is released when every
//! member of the group has arrived (the scheduler too, when the group
//! includes it). When a member dies first, [`BarrierPolicy`] decides: fail
//! at once (the default), or wait for the replacement up to a bound. A
//! failed generation is remembered (boundedly) so members that arrive
//! later learn of the failure instead of waiting forever.
//!
//! A replacement process starts counting its generations from 0 while the
//! survivors' count went on, so the scheduler keeps, per replaced node and
//! group, the offset between the two: the replacement's first barrier is
//! the first one the survivors have not finished. Without it the two sides
//! would wait at different generations forever.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::BarrierPolicy;
use crate::id::{Group, NodeId, Role};
use crate::membership::Membership;
use crate::outbox::Outbox;
use crate::stats::Stats;
use crate::time::Instant;
use crate::wire::{BarrierOutcome, Message};

/// Failed generations remembered for late arrivals.
const FAILED_REMEMBERED_MAX: usize = 1024;

/// The scheduler's count of every barrier.
#[derive(Debug, Default)]
pub(crate) struct Arrivals {
    open: BTreeMap<(Group, u64), OpenBarrier>,
    failed: BTreeMap<(Group, u64), NodeId>,
    /// Per group, one past the newest generation released or failed.
    ended_below: BTreeMap<Group, u64>,
    /// Per replacement and group: the scheduler's generation of the
    /// replacement's generation 0. Bounded by nodes × groups.
    offsets: BTreeMap<(NodeId, Group), u64>,
    /// The earliest deadline of an open barrier (`WaitForRecovery`),
    /// recomputed whenever one may have changed.
    deadline: Option<Instant>,
}

impl Arrivals {
    pub(crate) fn offset(&self, id: NodeId, group: Group) -> u64 {
        self.offsets.get(&(id, group)).copied().unwrap_or(0)
    }

    /// The generation `id` calls `generation` in the scheduler's numbering.
    fn generation_of(&self, id: NodeId, group: Group, generation: u64) -> u64 {
        generation.checked_sub(self.offset(id, group)).expect("arrivals are counted under the sender's current offset")
    }

    fn record_end(&mut self, (group, generation): (Group, u64)) {
        let below = self.ended_below.entry(group).or_insert(0);
        *below = (*below).max(generation.saturating_add(1));
    }
}

#[derive(Debug, Default)]
struct OpenBarrier {
    arrived: BTreeSet<NodeId>,
    /// Under `WaitForRecovery`: when to give up on a dead member.
    deadline: Option<(Instant, NodeId)>,
}

impl Arrivals {
    /// `from` arrived at its barrier `generation` over `group`.
    #[allow(clippy::too_many_arguments)] // the arrival, and what it is counted against
    pub(crate) fn on_arrival(
        &mut self,
        from: NodeId,
        group: Group,
        generation: u64,
        membership: &Membership,
        policy: BarrierPolicy,
        out: &mut Outbox,
        stats: &mut Stats,
    ) {
        let member = from.role().is_some_and(|role| group.contains(role));
        if !member {
            stats.unexpected_drops += 1;
            return;
        }
        let Some(global) = generation.checked_add(self.offset(from, group)) else {
            stats.unexpected_drops += 1;
            return;
        };
        let key = (group, global);
        if let Some(&dead) = self.failed.get(&key) {
            out.send(from, Message::BarrierRelease { group, generation, outcome: BarrierOutcome::MemberDied(dead) });
            return;
        }
        self.open.entry(key).or_default().arrived.insert(from);
        self.try_release(key, membership, policy, out);
    }

    /// Releases `key` if every member it waits for has arrived.
    fn try_release(&mut self, key: (Group, u64), membership: &Membership, policy: BarrierPolicy, out: &mut Outbox) {
        let (group, generation) = key;
        let wait_for_recovery = matches!(policy, BarrierPolicy::WaitForRecovery { .. });
        let mut required: BTreeSet<NodeId> =
            if wait_for_recovery { membership.members(group).collect() } else { membership.alive(group).collect() };
        if group.contains(Role::Scheduler) {
            required.insert(NodeId::SCHEDULER);
        }
        let Some(open) = self.open.get(&key) else {
            return;
        };
        if !required.is_subset(&open.arrived) {
            return;
        }
        let open = self.open.remove(&key).expect("checked above");
        self.record_end(key);
        for id in open.arrived {
            let generation = self.generation_of(id, group, generation);
            out.send(id, Message::BarrierRelease { group, generation, outcome: BarrierOutcome::Released });
        }
        self.rearm();
    }

    /// A member died: fail or start waiting, as the policy says.
    pub(crate) fn on_member_died(&mut self, now: Instant, dead: NodeId, policy: BarrierPolicy, out: &mut Outbox) {
        let Some(role) = dead.role() else {
            return;
        };
        let affected: Vec<(Group, u64)> = self.open.keys().filter(|(group, _)| group.contains(role)).copied().collect();
        match policy {
            BarrierPolicy::FailOnDeath => {
                for key in affected {
                    self.fail(key, dead, out);
                }
            }
            BarrierPolicy::WaitForRecovery { timeout } => {
                for key in affected {
                    if let Some(open) = self.open.get_mut(&key) {
                        if !open.arrived.contains(&dead) && open.deadline.is_none() {
                            open.deadline = Some((now + timeout, dead));
                        }
                    }
                }
                self.rearm();
            }
        }
    }

    /// A replacement registered: barriers waiting for it may go on once it
    /// arrives, and its generations are mapped onto the survivors'.
    pub(crate) fn on_member_recovered(
        &mut self,
        id: NodeId,
        membership: &Membership,
        policy: BarrierPolicy,
        out: &mut Outbox,
    ) {
        let Some(role) = id.role() else {
            return;
        };
        // An arrival of the old process does not speak for the new one,
        // which numbers its barriers afresh and will arrive itself.
        for open in self.open.values_mut() {
            open.arrived.remove(&id);
        }
        for bits in 1..=7 {
            let group = Group::from_bits(bits).expect("1..=7 are groups");
            if !group.contains(role) {
                continue;
            }
            let first_open = self.open.range((group, 0)..=(group, u64::MAX)).next().map(|(k, _)| k.1);
            let base = first_open.unwrap_or_else(|| self.ended_below.get(&group).copied().unwrap_or(0));
            self.offsets.insert((id, group), base);
        }
        let keys: Vec<(Group, u64)> = self.open.keys().copied().collect();
        for key in keys {
            self.try_release(key, membership, policy, out);
        }
    }

    /// Gives up on the dead members whose deadline has come.
    pub(crate) fn on_timeout(&mut self, now: Instant, out: &mut Outbox) {
        if self.deadline.is_none_or(|at| at > now) {
            return;
        }
        let expired: Vec<((Group, u64), NodeId)> = self
            .open
            .iter()
            .filter_map(|(key, open)| open.deadline.filter(|(at, _)| *at <= now).map(|(_, dead)| (*key, dead)))
            .collect();
        for (key, dead) in expired {
            self.fail(key, dead, out);
        }
        self.rearm();
    }

    /// When [`on_timeout`](Self::on_timeout) has work next.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadline
    }

    fn fail(&mut self, key: (Group, u64), dead: NodeId, out: &mut Outbox) {
        let Some(open) = self.open.remove(&key) else {
            return;
        };
        self.failed.insert(key, dead);
        self.record_end(key);
        while self.failed.len() > FAILED_REMEMBERED_MAX {
            self.failed.pop_first();
        }
        let (group, generation) = key;
        for id in open.arrived {
            let generation = self.generation_of(id, group, generation);
            out.send(id, Message::BarrierRelease { group, generation, outcome: BarrierOutcome::MemberDied(dead) });
        }
    }

    fn rearm(&mut self) {
        self.deadline = self.open.values().filter_map(|o| o.deadline.map(|(at, _)| at)).min();
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
        membership.apply(1, nodes).unwrap();
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

    #[test]
    fn a_barrier_is_released_when_the_last_member_arrives() {
        let membership = workers(2);
        let (mut arrivals, mut out, mut stats) = (Arrivals::default(), Outbox::default(), Stats::default());
        let policy = BarrierPolicy::FailOnDeath;
        arrivals.on_arrival(W0, Group::WORKERS, 0, &membership, policy, &mut out, &mut stats);
        assert!(releases(&mut out).is_empty());
        arrivals.on_arrival(W1, Group::WORKERS, 0, &membership, policy, &mut out, &mut stats);
        let released = BarrierOutcome::Released;
        assert_eq!(releases(&mut out), vec![(W0, 0, released), (W1, 0, released)]);
        // A server is no member of the workers' barrier.
        arrivals.on_arrival(NodeId::server(Rank(0)), Group::WORKERS, 1, &membership, policy, &mut out, &mut stats);
        assert_eq!(stats.unexpected_drops, 1);
    }

    #[test]
    fn under_fail_on_death_a_death_fails_the_barrier_and_late_arrivals_learn_of_it() {
        let mut membership = workers(2);
        let (mut arrivals, mut out, mut stats) = (Arrivals::default(), Outbox::default(), Stats::default());
        let policy = BarrierPolicy::FailOnDeath;
        arrivals.on_arrival(W0, Group::WORKERS, 0, &membership, policy, &mut out, &mut stats);
        kill(&mut membership, W1);
        arrivals.on_member_died(Instant::ZERO, W1, policy, &mut out);
        assert_eq!(releases(&mut out), vec![(W0, 0, BarrierOutcome::MemberDied(W1))]);
        arrivals.on_arrival(W1, Group::WORKERS, 0, &membership, policy, &mut out, &mut stats);
        assert_eq!(releases(&mut out), vec![(W1, 0, BarrierOutcome::MemberDied(W1))]);
    }

    #[test]
    fn under_wait_for_recovery_a_replacement_completes_the_barrier_at_its_own_generation() {
        let mut membership = workers(2);
        let (mut arrivals, mut out, mut stats) = (Arrivals::default(), Outbox::default(), Stats::default());
        let timeout = Duration::from_secs(5);
        let policy = BarrierPolicy::WaitForRecovery { timeout };
        // Generation 0 completes; at generation 1 worker 1 dies before arriving.
        for id in [W0, W1] {
            arrivals.on_arrival(id, Group::WORKERS, 0, &membership, policy, &mut out, &mut stats);
        }
        releases(&mut out);
        arrivals.on_arrival(W0, Group::WORKERS, 1, &membership, policy, &mut out, &mut stats);
        kill(&mut membership, W1);
        arrivals.on_member_died(Instant::ZERO, W1, policy, &mut out);
        assert_eq!(arrivals.next_deadline(), Some(Instant::ZERO + timeout));
        // The replacement counts from 0, which maps onto the open generation 1.
        let mut entry = *membership.get(W1).unwrap();
        entry.alive = true;
        entry.incarnation = Incarnation(1);
        membership.update(entry);
        arrivals.on_member_recovered(W1, &membership, policy, &mut out);
        assert_eq!(arrivals.offset(W1, Group::WORKERS), 1);
        arrivals.on_arrival(W1, Group::WORKERS, 0, &membership, policy, &mut out, &mut stats);
        let released = BarrierOutcome::Released;
        assert_eq!(releases(&mut out), vec![(W0, 1, released), (W1, 0, released)]);
        assert_eq!(arrivals.next_deadline(), None);
    }

    #[test]
    fn under_wait_for_recovery_the_barrier_fails_at_the_deadline() {
        let mut membership = workers(2);
        let (mut arrivals, mut out, mut stats) = (Arrivals::default(), Outbox::default(), Stats::default());
        let timeout = Duration::from_secs(5);
        let policy = BarrierPolicy::WaitForRecovery { timeout };
        arrivals.on_arrival(W0, Group::WORKERS, 0, &membership, policy, &mut out, &mut stats);
        kill(&mut membership, W1);
        arrivals.on_member_died(Instant::ZERO, W1, policy, &mut out);
        arrivals.on_timeout(Instant::ZERO + Duration::from_millis(4999), &mut out);
        assert!(releases(&mut out).is_empty());
        arrivals.on_timeout(Instant::ZERO + timeout, &mut out);
        assert_eq!(releases(&mut out), vec![(W0, 0, BarrierOutcome::MemberDied(W1))]);
        assert_eq!(arrivals.next_deadline(), None);
    }
}
