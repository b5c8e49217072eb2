//! What crossed the wire, per process: what each node must report in the
//! [`Stats`] its operators read, and the sequenced frames it sent and
//! received, which reliable delivery is held to.
//!
//! The simulator hands every frame to a node and takes every frame from
//! it, so it can count them itself: frames and bytes in and out, and
//! resends (a sequenced frame sent again to the same incarnation with the
//! same sequence number). From the same records it tells a frame's first
//! delivery to a process from a repeat, which no duplicate filter may get
//! wrong.

use std::collections::{BTreeMap, BTreeSet};

use pslite_core::wire::{Header, Kind};
use pslite_core::{Duration, Incarnation, Instant, NodeId, Stats};

use super::{violation, Check};
use crate::queue::Slot;

/// One process: its slot and which process of the slot (0 first).
pub type ProcessId = (Slot, u32);

/// The wire records of every process of a run.
#[derive(Debug, Default)]
pub struct WireLedger {
    processes: BTreeMap<ProcessId, Wire>,
    /// Sequenced frames handed to the ready process they were meant for:
    /// sender, its incarnation, receiver, its incarnation, sequence number.
    delivered: BTreeSet<Stream>,
}

/// A sequenced frame as both ends name it: sender and its incarnation,
/// receiver and its incarnation, sequence number.
type Stream = (NodeId, Incarnation, NodeId, Incarnation, u64);

fn stream(h: &Header) -> Stream {
    (h.sender, h.incarnation, h.receiver, h.receiver_incarnation, h.seq)
}

#[derive(Debug, Default)]
struct Wire {
    frames_in: u64,
    bytes_in: u64,
    frames_out: u64,
    bytes_out: u64,
    resends: u64,
    /// Sequenced frames sent, by receiver, its incarnation and sequence
    /// number: how often they were resent, and when (by the node's clock)
    /// they were last sent.
    sent: BTreeMap<(NodeId, Incarnation, u64), (u32, Instant)>,
    /// Sequenced frames received (ACKs aside): sender, its incarnation,
    /// sequence number.
    received: BTreeSet<(NodeId, Incarnation, u64)>,
}

/// What the ledger makes of a frame a process sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// Not sequenced, or sequenced and sent for the first time.
    First,
    /// A sequenced frame sent before, to the same receiver incarnation.
    Resend {
        /// Which resend of the frame this is (1 for the first).
        attempt: u32,
        /// Time since the frame was last sent, by the node's clock.
        since_last: Duration,
    },
}

impl WireLedger {
    /// `process` sent a frame of `len` bytes with `header` at `now` by its
    /// own clock.
    pub fn sent(&mut self, process: ProcessId, header: &Header, len: usize, now: Instant) -> Sent {
        let wire = self.processes.entry(process).or_default();
        wire.frames_out += 1;
        wire.bytes_out += len as u64;
        if header.seq == 0 {
            return Sent::First;
        }
        let key = (header.receiver, header.receiver_incarnation, header.seq);
        let Some((resends, last)) = wire.sent.get_mut(&key) else {
            wire.sent.insert(key, (0, now));
            return Sent::First;
        };
        wire.resends += 1;
        *resends += 1;
        let since_last = now.saturating_since(*last);
        *last = now;
        Sent::Resend { attempt: *resends, since_last }
    }

    /// `process` is handed a frame of `len` bytes (`header` when it has
    /// one). Returns whether it is the first delivery to this process of a
    /// sequenced frame other than an ACK.
    pub fn received(&mut self, process: ProcessId, header: Option<&Header>, len: usize) -> bool {
        let wire = self.processes.entry(process).or_default();
        wire.frames_in += 1;
        wire.bytes_in += len as u64;
        match header {
            Some(h) if h.seq != 0 && h.kind != Kind::Ack => wire.received.insert((h.sender, h.incarnation, h.seq)),
            _ => false,
        }
    }

    /// The sequenced frame with `header` reached the ready process it was
    /// meant for, which ACKs it at once.
    pub fn delivered_to_ready(&mut self, header: &Header) {
        if header.seq != 0 {
            self.delivered.insert(stream(header));
        }
    }

    /// Whether a copy of the sequenced frame with `header` reached the
    /// ready process it was meant for.
    pub fn was_delivered_to_ready(&self, header: &Header) -> bool {
        self.delivered.contains(&stream(header))
    }

    /// A test handed `process` frames itself: its counts of what came in
    /// start over from what the node reports.
    pub fn resync_in(&mut self, process: ProcessId, stats: &Stats) {
        let wire = self.processes.entry(process).or_default();
        wire.frames_in = stats.frames_in;
        wire.bytes_in = stats.bytes_in;
    }

    /// `process` is gone: its records go too.
    pub fn forget(&mut self, process: ProcessId) {
        self.processes.remove(&process);
    }

    /// The node of `process`, named `node`, reports `stats`: its frames,
    /// bytes and resends must be what crossed the wire.
    pub fn check_stats(&self, process: ProcessId, node: NodeId, stats: &Stats) -> Check {
        let wire = self.processes.get(&process);
        let counted = |f: fn(&Wire) -> u64| wire.map_or(0, f);
        let pairs = [
            ("frames_in", stats.frames_in, counted(|w| w.frames_in)),
            ("bytes_in", stats.bytes_in, counted(|w| w.bytes_in)),
            ("frames_out", stats.frames_out, counted(|w| w.frames_out)),
            ("bytes_out", stats.bytes_out, counted(|w| w.bytes_out)),
            ("resends", stats.resends, counted(|w| w.resends)),
        ];
        for (name, reported, seen) in pairs {
            if reported != seen {
                return violation(format!(
                    "stats: node {node} (slot {} life {}) reports {name} = {reported}, the wire saw {seen}",
                    process.0, process.1
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use pslite_core::wire::message::Envelope;
    use pslite_core::wire::Message;
    use pslite_core::Rank;

    use super::*;

    fn header(message: &Message, seq: u64) -> (Header, usize) {
        let envelope = Envelope {
            sender: NodeId::worker(Rank(0)),
            incarnation: Incarnation(0),
            receiver: NodeId::server(Rank(0)),
            receiver_incarnation: Incarnation(1),
            seq,
        };
        let bytes = message.encode(envelope).to_bytes();
        (Header::decode(&bytes, u32::MAX).expect("decodes"), bytes.len())
    }

    #[test]
    fn a_sequenced_frame_sent_again_is_a_resend_and_counts() {
        let mut ledger = WireLedger::default();
        let p = (3, 0);
        let (h, len) = header(&Message::Terminate, 5);
        let at = |ms| Instant::ZERO + Duration::from_millis(ms);
        assert_eq!(ledger.sent(p, &h, len, at(0)), Sent::First);
        let resend = Sent::Resend { attempt: 1, since_last: Duration::from_millis(7) };
        assert_eq!(ledger.sent(p, &h, len, at(7)), resend);
        let (unsequenced, len0) = header(&Message::Heartbeat { sent_at: 0 }, 0);
        assert_eq!(ledger.sent(p, &unsequenced, len0, at(8)), Sent::First);
        assert_eq!(ledger.sent(p, &unsequenced, len0, at(9)), Sent::First);
        let stats = Stats { frames_out: 4, bytes_out: 2 * (len + len0) as u64, resends: 1, ..Stats::default() };
        ledger.check_stats(p, NodeId::worker(Rank(0)), &stats).expect("what the wire saw");
        let wrong = Stats { resends: 0, ..stats };
        let what = ledger.check_stats(p, NodeId::worker(Rank(0)), &wrong).expect_err("a resend not counted").what;
        assert!(what.contains("resends = 0"), "{what}");
    }

    #[test]
    fn only_the_first_delivery_of_a_sequenced_frame_is_first() {
        let mut ledger = WireLedger::default();
        let p = (1, 2);
        let (h, len) = header(&Message::Terminate, 7);
        assert!(ledger.received(p, Some(&h), len));
        assert!(!ledger.received(p, Some(&h), len), "a repeat");
        assert!(ledger.received((1, 3), Some(&h), len), "another process's first");
        let (ack, len) = header(&Message::Ack { seqs: vec![1] }, 8);
        assert!(!ledger.received(p, Some(&ack), len), "ACKs are not filtered");
        assert!(!ledger.received(p, None, 3), "garbage is no frame");
    }
}
