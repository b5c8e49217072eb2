//! The event queue: everything that will happen, ordered by virtual time.
//!
//! Ties are broken by insertion number, never by the event's contents or an
//! address, so two runs of one seed pop events in the same order. Time does
//! not tick: the simulation jumps straight to the next event.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use bytes::Bytes;
use pslite_core::{Instant, ServerRequest};

/// Index of a node's place in the simulated cluster: its address and role.
/// Processes come and go in a slot (crash, restart); the slot stays.
pub type Slot = usize;

/// A frame on the wire between two slots.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// Sending slot.
    pub from: Slot,
    /// Receiving slot.
    pub to: Slot,
    /// The receiving process at send time: a frame travels on a connection
    /// to one process, so a restarted process never sees its predecessor's.
    pub to_life: u32,
    /// The link's connection number at send time; a reset bumps it and
    /// everything sent before is dropped on arrival.
    pub link_epoch: u64,
    /// The encoded frame.
    pub bytes: Bytes,
    /// Whether this is a duplicate made by the network.
    pub duplicate: bool,
}

/// Something the simulator will do at an instant.
#[derive(Clone, Debug)]
pub enum SimEvent {
    /// A frame arrives.
    Deliver(Delivery),
    /// A node's `poll_timeout` came; stale when `generation` is old.
    NodeTimer {
        /// The node.
        slot: Slot,
        /// The slot's timer generation when scheduled.
        generation: u64,
    },
    /// A slow server handle finished a request.
    HandlerDone {
        /// The server.
        slot: Slot,
        /// The process that received it (a restarted one must not answer).
        life: u32,
        /// The request.
        request: Box<ServerRequest>,
    },
    /// A worker's script may issue its next operation.
    WorkloadStep {
        /// The worker.
        slot: Slot,
        /// Stale when older than the slot's step generation.
        generation: u64,
    },
    /// Time to draw the next random faults.
    FaultTick,
    /// A scheduled fault action.
    Fault(FaultAction),
}

/// Fault actions that are scheduled ahead (restarts, ends of partitions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultAction {
    /// Start a fresh process in a crashed slot.
    Restart(Slot),
    /// Let a paused node run again.
    Resume(Slot),
    /// End the partition with this number.
    Heal(u64),
}

impl SimEvent {
    /// The node this event is about, if any; paused nodes hold such events.
    pub fn slot(&self) -> Option<Slot> {
        match self {
            Self::Deliver(d) => Some(d.to),
            Self::NodeTimer { slot, .. } | Self::HandlerDone { slot, .. } | Self::WorkloadStep { slot, .. } => {
                Some(*slot)
            }
            Self::FaultTick | Self::Fault(_) => None,
        }
    }
}

struct Scheduled {
    at: Instant,
    seq: u64,
    event: SimEvent,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    /// Reversed, so the max-heap pops the earliest (time, insertion) first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// Pending events, earliest first; ties in insertion order.
pub struct EventQueue {
    heap: BinaryHeap<Scheduled>,
    seq_next: u64,
    len_max: usize,
}

impl std::fmt::Debug for EventQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EventQueue({} pending)", self.heap.len())
    }
}

impl EventQueue {
    /// An empty queue that refuses to grow past `len_max` events (a
    /// runaway producer is a simulator bug, reported instead of eating
    /// memory).
    pub fn new(len_max: usize) -> Self {
        assert!(len_max > 0, "the queue must hold at least one event");
        Self { heap: BinaryHeap::new(), seq_next: 0, len_max }
    }

    /// Schedules `event` at `at`.
    pub fn push(&mut self, at: Instant, event: SimEvent) {
        assert!(self.heap.len() < self.len_max, "event queue exceeds {} events", self.len_max);
        let seq = self.seq_next;
        self.seq_next += 1;
        self.heap.push(Scheduled { at, seq, event });
    }

    /// The earliest event, removed.
    pub fn pop(&mut self) -> Option<(Instant, SimEvent)> {
        self.heap.pop().map(|s| (s.at, s.event))
    }

    /// When the earliest event is due.
    pub fn peek_time(&self) -> Option<Instant> {
        self.heap.peek().map(|s| s.at)
    }

    /// Pending events, earliest first (ties in insertion order).
    pub fn iter(&self) -> impl Iterator<Item = (Instant, &SimEvent)> {
        let mut all: Vec<&Scheduled> = self.heap.iter().collect();
        all.sort_unstable_by_key(|s| (s.at, s.seq));
        all.into_iter().map(|s| (s.at, &s.event))
    }

    /// Removes the pending events for which `remove` holds, earliest first;
    /// returns them. What stays keeps its time and its place among ties.
    pub fn remove_where(&mut self, mut remove: impl FnMut(&SimEvent) -> bool) -> Vec<(Instant, SimEvent)> {
        let mut all = std::mem::take(&mut self.heap).into_vec();
        all.sort_unstable_by_key(|s| (s.at, s.seq));
        let mut removed = Vec::new();
        for scheduled in all {
            if remove(&scheduled.event) {
                removed.push((scheduled.at, scheduled.event));
            } else {
                self.heap.push(scheduled);
            }
        }
        removed
    }

    /// Events pending.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pslite_core::Duration;

    #[test]
    fn earliest_first_and_ties_in_insertion_order() {
        let mut q = EventQueue::new(16);
        let t = |ms| Instant::ZERO + Duration::from_millis(ms);
        q.push(t(5), SimEvent::WorkloadStep { slot: 1, generation: 0 });
        q.push(t(1), SimEvent::WorkloadStep { slot: 2, generation: 0 });
        q.push(t(5), SimEvent::WorkloadStep { slot: 3, generation: 0 });
        q.push(t(1), SimEvent::WorkloadStep { slot: 4, generation: 0 });
        let order: Vec<Slot> = std::iter::from_fn(|| q.pop()).map(|(_, e)| e.slot().unwrap()).collect();
        assert_eq!(order, vec![2, 4, 1, 3]);
    }

    #[test]
    fn removing_events_keeps_the_order_of_the_rest() {
        let mut q = EventQueue::new(16);
        let t = |ms| Instant::ZERO + Duration::from_millis(ms);
        for (ms, slot) in [(5, 1), (1, 2), (5, 3), (1, 4), (3, 5)] {
            q.push(t(ms), SimEvent::WorkloadStep { slot, generation: 0 });
        }
        let removed: Vec<Slot> =
            q.remove_where(|e| e.slot().is_some_and(|s| s % 2 == 0)).iter().map(|(_, e)| e.slot().unwrap()).collect();
        assert_eq!(removed, vec![2, 4]);
        let listed: Vec<Slot> = q.iter().map(|(_, e)| e.slot().unwrap()).collect();
        assert_eq!(listed, vec![5, 1, 3]);
        let order: Vec<Slot> = std::iter::from_fn(|| q.pop()).map(|(_, e)| e.slot().unwrap()).collect();
        assert_eq!(order, vec![5, 1, 3]);
    }
}
