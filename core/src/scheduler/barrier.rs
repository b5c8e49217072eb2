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
use crate::node::{Node, RoleState};
use crate::time::Instant;
use crate::timer::Timer;
use crate::wire::{BarrierOutcome, Message};

/// Failed generations remembered for late arrivals.
const FAILED_REMEMBERED_MAX: usize = 1024;

#[derive(Debug, Default)]
pub(crate) struct Barriers {
    open: BTreeMap<(Group, u64), OpenBarrier>,
    failed: BTreeMap<(Group, u64), NodeId>,
    /// Per group, one past the newest generation released or failed.
    ended_below: BTreeMap<Group, u64>,
    /// Per replacement and group: the scheduler's generation of the
    /// replacement's generation 0. Bounded by nodes × groups.
    offsets: BTreeMap<(NodeId, Group), u64>,
}

impl Barriers {
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

impl Node {
    pub(crate) fn on_barrier_arrival(&mut self, now: Instant, from: NodeId, group: Group, generation: u64) {
        let member = from.role().is_some_and(|role| group.contains(role));
        let RoleState::Scheduler(state) = &mut self.role_state else {
            self.stats.unexpected_drops += 1;
            return;
        };
        if !member {
            self.stats.unexpected_drops += 1;
            return;
        }
        let Some(global) = generation.checked_add(state.barriers.offset(from, group)) else {
            self.stats.unexpected_drops += 1;
            return;
        };
        let key = (group, global);
        if let Some(&dead) = state.barriers.failed.get(&key) {
            self.send(from, Message::BarrierRelease { group, generation, outcome: BarrierOutcome::MemberDied(dead) });
            return;
        }
        state.barriers.open.entry(key).or_default().arrived.insert(from);
        self.try_release(now, key);
    }

    /// Releases `key` if every member it waits for has arrived.
    fn try_release(&mut self, _now: Instant, key: (Group, u64)) {
        let (group, generation) = key;
        let wait_for_recovery = matches!(self.config.barrier_policy, BarrierPolicy::WaitForRecovery { .. });
        let mut required: BTreeSet<NodeId> = if wait_for_recovery {
            self.membership.members(group).collect()
        } else {
            self.membership.alive(group).collect()
        };
        if group.contains(Role::Scheduler) {
            required.insert(NodeId::SCHEDULER);
        }
        let RoleState::Scheduler(state) = &mut self.role_state else {
            return;
        };
        let Some(open) = state.barriers.open.get(&key) else {
            return;
        };
        if !required.is_subset(&open.arrived) {
            return;
        }
        let open = state.barriers.open.remove(&key).expect("checked above");
        state.barriers.record_end(key);
        let releases: Vec<(NodeId, u64)> =
            open.arrived.into_iter().map(|id| (id, state.barriers.generation_of(id, group, generation))).collect();
        for (id, generation) in releases {
            self.send(id, Message::BarrierRelease { group, generation, outcome: BarrierOutcome::Released });
        }
        self.arm_barrier_deadline();
    }

    /// A member died: fail or start waiting, as the policy says.
    pub(crate) fn on_barrier_member_died(&mut self, now: Instant, dead: NodeId) {
        let policy = self.config.barrier_policy;
        let RoleState::Scheduler(state) = &mut self.role_state else {
            return;
        };
        let Some(role) = dead.role() else {
            return;
        };
        let affected: Vec<(Group, u64)> =
            state.barriers.open.keys().filter(|(group, _)| group.contains(role)).copied().collect();
        match policy {
            BarrierPolicy::FailOnDeath => {
                for key in affected {
                    self.fail_barrier(key, dead);
                }
            }
            BarrierPolicy::WaitForRecovery { timeout } => {
                for key in affected {
                    if let Some(open) = state.barriers.open.get_mut(&key) {
                        if !open.arrived.contains(&dead) && open.deadline.is_none() {
                            open.deadline = Some((now + timeout, dead));
                        }
                    }
                }
                self.arm_barrier_deadline();
            }
        }
    }

    /// A replacement registered: barriers waiting for it may go on once it
    /// arrives, and its generations are mapped onto the survivors'.
    pub(crate) fn on_member_recovered(&mut self, now: Instant, id: NodeId) {
        let Some(role) = id.role() else {
            return;
        };
        let RoleState::Scheduler(state) = &mut self.role_state else {
            return;
        };
        // An arrival of the old process does not speak for the new one,
        // which numbers its barriers afresh and will arrive itself.
        for open in state.barriers.open.values_mut() {
            open.arrived.remove(&id);
        }
        for bits in 1..=7 {
            let group = Group::from_bits(bits).expect("1..=7 are groups");
            if !group.contains(role) {
                continue;
            }
            let first_open = state.barriers.open.range((group, 0)..=(group, u64::MAX)).next().map(|(k, _)| k.1);
            let base = first_open.unwrap_or_else(|| state.barriers.ended_below.get(&group).copied().unwrap_or(0));
            state.barriers.offsets.insert((id, group), base);
        }
        let keys: Vec<(Group, u64)> = state.barriers.open.keys().copied().collect();
        for key in keys {
            self.try_release(now, key);
        }
    }

    pub(crate) fn on_barrier_deadline(&mut self, now: Instant) {
        let RoleState::Scheduler(state) = &self.role_state else {
            return;
        };
        let expired: Vec<((Group, u64), NodeId)> = state
            .barriers
            .open
            .iter()
            .filter_map(|(key, open)| open.deadline.filter(|(at, _)| *at <= now).map(|(_, dead)| (*key, dead)))
            .collect();
        for (key, dead) in expired {
            self.fail_barrier(key, dead);
        }
        self.arm_barrier_deadline();
    }

    fn fail_barrier(&mut self, key: (Group, u64), dead: NodeId) {
        let RoleState::Scheduler(state) = &mut self.role_state else {
            return;
        };
        let Some(open) = state.barriers.open.remove(&key) else {
            return;
        };
        state.barriers.failed.insert(key, dead);
        state.barriers.record_end(key);
        while state.barriers.failed.len() > FAILED_REMEMBERED_MAX {
            state.barriers.failed.pop_first();
        }
        let (group, generation) = key;
        let failures: Vec<(NodeId, u64)> =
            open.arrived.into_iter().map(|id| (id, state.barriers.generation_of(id, group, generation))).collect();
        for (id, generation) in failures {
            self.send(id, Message::BarrierRelease { group, generation, outcome: BarrierOutcome::MemberDied(dead) });
        }
    }

    fn arm_barrier_deadline(&mut self) {
        let RoleState::Scheduler(state) = &self.role_state else {
            return;
        };
        match state.barriers.open.values().filter_map(|o| o.deadline.map(|(at, _)| at)).min() {
            Some(at) => self.timers.set(Timer::BarrierDeadline, at),
            None => self.timers.stop(Timer::BarrierDeadline),
        }
    }
}
