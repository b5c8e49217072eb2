//! Barriers this node entered, and what their end means for it.
//!
//! Each node numbers its barriers per group (the generation), so two
//! back-to-back barriers on one group can never be mixed up; the
//! scheduler counts arrivals per `(group, generation)` (see
//! [`crate::scheduler::barrier`], which also says what deaths do). The
//! numbering starts where the scheduler says when the node registers: 0
//! in a new cluster, where the survivors are for a replacement. A barrier
//! ends when the scheduler releases or fails it, or when this node gives
//! up on the cluster; a finalize barrier's end stops the node either way.

use std::collections::BTreeMap;

use crate::error::RequestError;
use crate::event::{BarrierTicket, Event};
use crate::id::{Group, NodeId};
use crate::outbox::Outbox;
use crate::stats::Stats;
use crate::wire::{BarrierOutcome, Message};

/// Why a barrier was entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// The application's `barrier`.
    User,
    /// `finalize`: the node stops when it ends.
    Finalize,
}

/// The barriers of one node.
#[derive(Debug, Default)]
pub(crate) struct Barriers {
    /// Entered and not yet ended.
    entered: BTreeMap<BarrierTicket, Purpose>,
    /// Next generation per group.
    generations: BTreeMap<Group, u64>,
}

impl Barriers {
    /// Enters the next barrier over `group`: tells the scheduler. Refused
    /// with `Terminated` when a finalize is already under way.
    pub(crate) fn enter(
        &mut self,
        group: Group,
        purpose: Purpose,
        out: &mut Outbox,
    ) -> Result<BarrierTicket, RequestError> {
        if purpose == Purpose::Finalize && self.finalizing() {
            return Err(RequestError::Terminated);
        }
        let generation = self.generations.entry(group).or_insert(0);
        let ticket = BarrierTicket { group, generation: *generation };
        // Saturating: a hostile table could start the count at the top.
        *generation = generation.saturating_add(1);
        self.entered.insert(ticket, purpose);
        let finalize = purpose == Purpose::Finalize;
        out.send(NodeId::SCHEDULER, Message::Barrier { group, generation: ticket.generation, finalize });
        Ok(ticket)
    }

    /// Continues each group's numbering from the scheduler's (a replacement
    /// joins where the survivors are). Only before any barrier is entered.
    pub(crate) fn start_at(&mut self, generations: &[(Group, u64)]) {
        debug_assert!(self.entered.is_empty() && self.generations.is_empty(), "set once, at registration");
        self.generations.extend(generations.iter().copied());
    }

    /// The generation the next barrier over `group` will have.
    pub(crate) fn next_generation(&self, group: Group) -> u64 {
        self.generations.get(&group).copied().unwrap_or(0)
    }

    /// The scheduler ended `ticket`. Returns its purpose, or `None` for a
    /// ticket this node does not wait on (a duplicate or a stray).
    pub(crate) fn on_release(
        &mut self,
        ticket: BarrierTicket,
        outcome: BarrierOutcome,
        out: &mut Outbox,
        stats: &mut Stats,
    ) -> Option<Purpose> {
        let Some(purpose) = self.entered.remove(&ticket) else {
            stats.unexpected_drops += 1;
            return None;
        };
        match outcome {
            BarrierOutcome::Released => out.event(Event::BarrierReleased { ticket, missing: Vec::new() }),
            BarrierOutcome::ReleasedWithout(missing) => out.event(Event::BarrierReleased { ticket, missing }),
            BarrierOutcome::MemberDied(id) => {
                out.event(Event::BarrierFailed(ticket, RequestError::PeerDead(id)));
            }
        }
        Some(purpose)
    }

    /// Fails every barrier entered. Returns whether one was a finalize.
    #[must_use]
    pub(crate) fn fail_all(&mut self, error: &RequestError, out: &mut Outbox) -> bool {
        let entered = std::mem::take(&mut self.entered);
        let finalizing = entered.values().any(|p| *p == Purpose::Finalize);
        for ticket in entered.into_keys() {
            out.event(Event::BarrierFailed(ticket, error.clone()));
        }
        finalizing
    }

    #[cfg(any(test, feature = "inspect"))]
    /// Barriers entered and not ended.
    pub(crate) fn len(&self) -> usize {
        self.entered.len()
    }

    fn finalizing(&self) -> bool {
        self.entered.values().any(|p| *p == Purpose::Finalize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Dest;

    #[test]
    fn generations_count_per_group_and_each_entry_tells_the_scheduler() {
        let mut barriers = Barriers::default();
        let mut out = Outbox::default();
        let a = barriers.enter(Group::WORKERS, Purpose::User, &mut out).unwrap();
        let b = barriers.enter(Group::ALL, Purpose::User, &mut out).unwrap();
        let c = barriers.enter(Group::WORKERS, Purpose::User, &mut out).unwrap();
        assert_eq!((a.generation, b.generation, c.generation), (0, 0, 1));
        let sent: Vec<(Dest, Message)> = out.messages().cloned().collect();
        assert_eq!(sent.len(), 3);
        assert!(sent.iter().all(|(dest, _)| *dest == Dest::Node(NodeId::SCHEDULER)));
        assert_eq!(sent[2].1, Message::Barrier { group: Group::WORKERS, generation: 1, finalize: false });
    }

    #[test]
    fn a_replacement_numbers_its_barriers_from_where_the_scheduler_says() {
        let mut barriers = Barriers::default();
        let mut out = Outbox::default();
        barriers.start_at(&[(Group::WORKERS, 4)]);
        assert_eq!(barriers.next_generation(Group::WORKERS), 4);
        assert_eq!(barriers.next_generation(Group::ALL), 0);
        let ticket = barriers.enter(Group::ALL, Purpose::Finalize, &mut out).unwrap();
        assert_eq!(ticket.generation, 0);
        assert_eq!(barriers.enter(Group::WORKERS, Purpose::User, &mut out).unwrap().generation, 4);
        let sent: Vec<Message> = out.messages().map(|(_, m)| m.clone()).collect();
        assert_eq!(sent[0], Message::Barrier { group: Group::ALL, generation: 0, finalize: true });
    }

    #[test]
    fn a_release_without_dead_members_names_them() {
        let mut barriers = Barriers::default();
        let mut out = Outbox::default();
        let mut stats = Stats::default();
        let ticket = barriers.enter(Group::WORKERS, Purpose::User, &mut out).unwrap();
        let dead = NodeId::worker(crate::id::Rank(1));
        let outcome = BarrierOutcome::ReleasedWithout(vec![dead]);
        assert_eq!(barriers.on_release(ticket, outcome, &mut out, &mut stats), Some(Purpose::User));
        assert_eq!(out.pop_event(), Some(Event::BarrierReleased { ticket, missing: vec![dead] }));
    }

    #[test]
    fn a_release_ends_its_barrier_once_and_strays_are_counted() {
        let mut barriers = Barriers::default();
        let mut out = Outbox::default();
        let mut stats = Stats::default();
        let ticket = barriers.enter(Group::ALL, Purpose::Finalize, &mut out).unwrap();
        let died = BarrierOutcome::MemberDied(NodeId::SCHEDULER);
        assert_eq!(barriers.on_release(ticket, died, &mut out, &mut stats), Some(Purpose::Finalize));
        assert_eq!(out.pop_event(), Some(Event::BarrierFailed(ticket, RequestError::PeerDead(NodeId::SCHEDULER))));
        assert_eq!(barriers.on_release(ticket, BarrierOutcome::Released, &mut out, &mut stats), None);
        assert_eq!(stats.unexpected_drops, 1);
        assert_eq!(barriers.len(), 0);
    }

    #[test]
    fn a_second_finalize_is_refused_and_failing_all_reports_the_finalize() {
        let mut barriers = Barriers::default();
        let mut out = Outbox::default();
        barriers.enter(Group::WORKERS, Purpose::User, &mut out).unwrap();
        assert!(!barriers.fail_all(&RequestError::SchedulerLost, &mut out));
        barriers.enter(Group::ALL, Purpose::Finalize, &mut out).unwrap();
        assert_eq!(barriers.enter(Group::ALL, Purpose::Finalize, &mut out), Err(RequestError::Terminated));
        assert!(barriers.fail_all(&RequestError::SchedulerLost, &mut out));
        assert_eq!(barriers.len(), 0);
    }
}
