//! Bounded waiting: every request ends within `request_timeout`, and every
//! request or barrier that depends on a crashed node ends within the
//! failure-detection bound of the crash.
//!
//! Waits are kept in a set ordered by a provisional deadline (the bound
//! with no disturbance). Only when that passes is the real deadline worked
//! out, with every pause, clog, cut or reset that touched the waiter, the
//! crashed node or the scheduler in the meantime: those can hide a death
//! for as long as they last, and extending only then keeps the common case
//! (the wait ends early) cheap.

use pslite_core::{Duration, Incarnation, Instant, NodeId};

use super::{violation, Check, Checker, CrashBound, Fate, MemberState, Waiter};
use crate::queue::Slot;

impl Checker {
    /// Reports the first wait past its bound at `now`.
    pub fn check_deadlines(&mut self, now: Instant) -> Check {
        while let Some(&(deadline, waiter)) = self.deadlines.first() {
            if deadline >= now {
                return Ok(());
            }
            self.deadlines.pop_first();
            let Some(effective) = self.deadline_of(waiter) else {
                continue;
            };
            if effective < now {
                return violation(self.describe_overdue(waiter, effective));
            }
            self.deadlines.insert((effective, waiter));
        }
        Ok(())
    }

    pub(super) fn arm(&mut self, waiter: Waiter) {
        if let Some(deadline) = self.provisional_deadline(waiter) {
            self.deadlines.insert((deadline, waiter));
        }
    }

    fn provisional_deadline(&self, waiter: Waiter) -> Option<Instant> {
        match waiter {
            Waiter::Request(key) => {
                let record = self.requests.get(&key).filter(|r| r.fate == Fate::Pending)?;
                let timeout = record.issued_at + self.bounds.request;
                let crash =
                    record.crash.filter(|_| self.bounds.crash_checked).map(|c| c.crashed_at + self.bounds.crash);
                Some(crash.map_or(timeout, |c| c.min(timeout)))
            }
            Waiter::Barrier(node, incarnation, ticket) => {
                let record = self.barriers_pending.get(&(node, incarnation, ticket))?;
                let crash = record.crash.filter(|_| self.bounds.crash_checked)?;
                let recovery = if record.waits_for_recovery(self.bounds.barrier_policy) {
                    self.bounds.recovery
                } else {
                    Duration::ZERO
                };
                Some(crash.crashed_at + self.bounds.crash + recovery)
            }
        }
    }

    /// The deadline of a waiter with every relevant disturbance taken into
    /// account; `None` when it no longer waits.
    fn deadline_of(&self, waiter: Waiter) -> Option<Instant> {
        match waiter {
            Waiter::Request(key) => {
                let record = self.requests.get(&key).filter(|r| r.fate == Fate::Pending)?;
                // The request's own deadline fires on its node's timer, which
                // a pause of that node holds back.
                let slack = Duration::from_millis(1);
                let timeout = self.extend(record.issued_at + self.bounds.request, &[record.slot], true, slack);
                let crash = record
                    .crash
                    .filter(|_| self.bounds.crash_checked)
                    .map(|c| self.crash_deadline(key.node, key.incarnation, record.slot, record.issued_at, c));
                Some(crash.map_or(timeout, |c| c.min(timeout)))
            }
            Waiter::Barrier(node, incarnation, ticket) => {
                let record = self.barriers_pending.get(&(node, incarnation, ticket))?;
                let crash = record.crash.filter(|_| self.bounds.crash_checked)?;
                // The recovery wait starts when the death is detected, which
                // disturbances may have delayed: it goes on top of the
                // extended detection bound.
                let policy = self.bounds.barrier_policy;
                let deadline = self.crash_deadline(node, incarnation, record.slot, record.entered_at, crash);
                if !record.keeps_arrivals(policy) {
                    // The death fails the barrier.
                    return Some(deadline);
                }
                // The barrier goes on among the live members: bound only
                // once none of them is still to arrive (an arrival, a
                // crash or a death re-arms this wait), and then by each
                // member's arrival, crash or death.
                let waits = record.waits_for_recovery(policy);
                let scheduler = self.bounds.scheduler_slot;
                let mut deadline = deadline;
                for member in self.members(ticket.group) {
                    let bound = match self.member_state(member, ticket, record.finalize) {
                        MemberState::Arrived(at, slot) => {
                            let slots = [record.slot, slot, scheduler];
                            self.extend(at + self.bounds.crash, &slots, false, self.bounds.crash)
                        }
                        MemberState::Crashed(crash) => {
                            let detected =
                                self.crash_deadline(node, incarnation, record.slot, record.entered_at, crash);
                            if waits {
                                // The scheduler's recovery timer can itself
                                // be held up (a pause of the scheduler, say).
                                let slots = [record.slot, crash.crashed_slot, scheduler];
                                self.extend(detected + self.bounds.recovery, &slots, false, self.bounds.crash)
                            } else {
                                detected
                            }
                        }
                        MemberState::Dead(since) => {
                            let wait = if waits { self.bounds.recovery } else { Duration::ZERO };
                            let slots = [record.slot, scheduler];
                            self.extend(since + wait + self.bounds.crash, &slots, false, self.bounds.crash)
                        }
                        MemberState::Awaited => return None,
                    };
                    deadline = deadline.max(bound);
                }
                Some(deadline)
            }
        }
    }

    fn crash_deadline(
        &self,
        node: NodeId,
        incarnation: Incarnation,
        slot: Slot,
        started_at: Instant,
        crash: CrashBound,
    ) -> Instant {
        let mut slots = vec![slot, crash.crashed_slot, self.bounds.scheduler_slot];
        if self.replicas > 1 {
            // With several copies the wait moves on to whichever server
            // holds the place now, and a head waits on the copies after
            // it: a disturbance of any server may hold it up.
            slots.extend((0..self.servers).map(|rank| 1 + rank as Slot));
        }
        let deadline = self.extend(crash.crashed_at + self.bounds.crash, &slots, false, self.bounds.crash);
        match self.declared_dead.get(&(node, incarnation)) {
            // The waiter itself was declared dead: no table reaches it, but
            // it has lost the scheduler and fails its work at every scan.
            Some(&dead_at) => {
                let lost = (dead_at + self.bounds.lost_after).max(started_at + self.bounds.lost_scan);
                deadline.max(self.extend(lost, &[slot], true, self.bounds.lost_scan))
            }
            None => deadline,
        }
    }

    /// Pushes `deadline` past every disturbance of `slots` that began before
    /// it, by `after` beyond its end; `pauses_only` ignores link faults.
    fn extend(&self, mut deadline: Instant, slots: &[Slot], pauses_only: bool, after: Duration) -> Instant {
        // Each pass can only move the deadline later; a disturbance is used
        // at most once, so this ends after at most one pass per disturbance.
        let mut used = vec![false; self.disturbances.len()];
        // Frames lost on a cut link come again with a doubling backoff:
        // after the cut heals, the next attempt of a frame first sent at
        // `t0` is due by `heal + (heal - t0) + resend`. The earliest cut of
        // the chain bounds `t0` from below.
        let mut cut_since: Option<Instant> = None;
        loop {
            let mut moved = false;
            for (i, d) in self.disturbances.iter().enumerate() {
                let relevant = match d.peer {
                    None => slots.contains(&d.slot),
                    Some(peer) => !pauses_only && slots.contains(&d.slot) && slots.contains(&peer),
                };
                if !used[i] && relevant && d.from <= deadline {
                    used[i] = true;
                    let mut end = d.until + after;
                    if d.peer.is_some() {
                        let since = cut_since.map_or(d.from, |since| since.min(d.from));
                        cut_since = Some(since);
                        end = end + d.until.saturating_since(since) + self.bounds.resend;
                    }
                    if end > deadline {
                        deadline = end;
                        moved = true;
                    }
                }
            }
            if !moved {
                return deadline;
            }
        }
    }

    fn describe_overdue(&self, waiter: Waiter, deadline: Instant) -> String {
        match waiter {
            Waiter::Request(key) => {
                let record = &self.requests[&key];
                let cause = match record.crash {
                    Some(c)
                        if self.bounds.crash_checked
                            && self.crash_deadline(key.node, key.incarnation, record.slot, record.issued_at, c)
                                == deadline =>
                    {
                        format!("slot {} crashed at {:?}", c.crashed_slot, c.crashed_at)
                    }
                    _ => "request_timeout".to_owned(),
                };
                format!(
                    "bounded wait: {key} ({} to {:?}, issued {:?}) still pending past its bound {deadline:?} ({cause})",
                    record.issued.name(),
                    record.targets,
                    record.issued_at
                )
            }
            Waiter::Barrier(node, _, ticket) => {
                let record = &self.barriers_pending[&(node, waiter_incarnation(waiter), ticket)];
                let crash = record.crash.expect("barriers have deadlines only after a crash");
                format!(
                    "bounded wait: node {node} still in {ticket:?} (entered {:?}) past its bound {deadline:?}: \
                     slot {} crashed at {:?}",
                    record.entered_at, crash.crashed_slot, crash.crashed_at
                )
            }
        }
    }
}

fn waiter_incarnation(waiter: Waiter) -> Incarnation {
    match waiter {
        Waiter::Barrier(_, incarnation, _) => incarnation,
        Waiter::Request(key) => key.incarnation,
    }
}
