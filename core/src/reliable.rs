//! Reliable delivery: sequence numbers, ACKs, resend with backoff, and a
//! bounded duplicate filter.
//!
//! TCP is reliable only while a connection lives; when one breaks, frames
//! in flight are lost, and a reconnect can deliver a resent frame twice.
//! The default server handle *sums* pushes, so the core must deliver each
//! frame to the application exactly once. Every frame that needs delivery
//! carries a sequence number, per directed stream `(peer, peer's
//! incarnation)`; the receiver ACKs it and delivers it once; the sender
//! resends after `resend_timeout`, doubling the delay each attempt with a
//! seeded jitter, up to `resend_attempts_max`, and then gives up and fails
//! the request that frame belonged to (never the process).
//!
//! Duplicate detection is a watermark ("everything below `base` was
//! delivered") plus a fixed-size bitmap for the window above it, per
//! sender incarnation: memory per peer is constant however many frames
//! flow. A frame too far ahead of the window is dropped unacknowledged;
//! its sender will resend it once the window has moved on.

use std::collections::{BTreeMap, BTreeSet};

use crate::event::Transmit;
use crate::id::{Incarnation, NodeId};
use crate::kv::{CustomerId, Timestamp};
use crate::rng::Rng;
use crate::slotted::SlottedMap;
use crate::time::{Duration, Instant};

/// Frames a receiver tracks above its watermark, per sender.
pub(crate) const DEDUP_WINDOW: u64 = 1 << 14;
const DEDUP_WORDS: usize = (DEDUP_WINDOW / 64) as usize;
/// Longest delay between two resends, however many attempts.
const RESEND_DELAY_MAX: Duration = Duration::from_secs(30);

/// Which delivered-or-not sequence numbers one sender incarnation used.
#[derive(Clone, Debug)]
pub(crate) struct DedupWindow {
    /// Every sequence number below this was delivered.
    base: u64,
    /// Bit `s % DEDUP_WINDOW` set: `s` in `[base, base + DEDUP_WINDOW)` delivered.
    bits: Box<[u64; DEDUP_WORDS]>,
}

/// What the filter says of an arriving sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// First arrival: deliver it (and ACK).
    New,
    /// Seen before: drop it (but ACK again, the first ACK may be lost).
    Duplicate,
    /// Beyond the window: drop without ACK; it will come again.
    TooFarAhead,
}

impl Default for DedupWindow {
    fn default() -> Self {
        // Sequence numbers start at 1; 0 means "not reliable".
        Self { base: 1, bits: Box::new([0; DEDUP_WORDS]) }
    }
}

impl DedupWindow {
    /// Classifies `seq` and records it when new.
    pub(crate) fn admit(&mut self, seq: u64) -> Admission {
        if seq < self.base {
            return Admission::Duplicate;
        }
        if seq - self.base >= DEDUP_WINDOW {
            return Admission::TooFarAhead;
        }
        let (word, bit) = Self::slot(seq);
        if self.bits[word] & bit != 0 {
            return Admission::Duplicate;
        }
        self.bits[word] |= bit;
        // Advance the watermark over the contiguous delivered prefix.
        loop {
            let (word, bit) = Self::slot(self.base);
            if self.bits[word] & bit == 0 {
                break;
            }
            self.bits[word] &= !bit;
            self.base += 1;
        }
        Admission::New
    }

    fn slot(seq: u64) -> (usize, u64) {
        let index = seq % DEDUP_WINDOW;
        ((index / 64) as usize, 1 << (index % 64))
    }
}

/// The request a reliable frame belongs to, failed if it cannot be delivered.
pub(crate) type Owner = Option<(CustomerId, Timestamp)>;

#[derive(Debug)]
struct Unacked {
    transmit: Transmit,
    attempts: u32,
    resend_at: Instant,
    owner: Owner,
}

/// Sender and receiver state of one node.
#[derive(Debug, Default)]
pub(crate) struct Reliable {
    next_seq: BTreeMap<(NodeId, Incarnation), u64>,
    /// Frames kept for resending (a few hundred bytes each): out of the tree.
    unacked: SlottedMap<(NodeId, u64), Unacked>,
    resend_queue: BTreeSet<(Instant, NodeId, u64)>,
    received: BTreeMap<(NodeId, Incarnation), DedupWindow>,
    /// Unacknowledged frames by the request they carry, so an outcome
    /// stops their resends.
    owned: BTreeSet<(CustomerId, Timestamp, NodeId, u64)>,
}

/// What `Reliable::expire` produced.
#[derive(Debug, Default)]
pub(crate) struct Expired {
    pub(crate) resend: Vec<Transmit>,
    pub(crate) failed: Vec<(NodeId, Owner)>,
}

impl Reliable {
    /// The next sequence number towards `peer` in its `incarnation`.
    pub(crate) fn next_seq(&mut self, peer: NodeId, incarnation: Incarnation) -> u64 {
        let next = self.next_seq.entry((peer, incarnation)).or_insert(1);
        let seq = *next;
        *next += 1;
        seq
    }

    /// Remembers a sent frame until it is acknowledged.
    pub(crate) fn track(&mut self, now: Instant, seq: u64, transmit: Transmit, owner: Owner, first_delay: Duration) {
        let peer = transmit.to;
        let resend_at = now + first_delay;
        self.resend_queue.insert((resend_at, peer, seq));
        if let Some((customer, ts)) = owner {
            self.owned.insert((customer, ts, peer, seq));
        }
        self.unacked.insert((peer, seq), Unacked { transmit, attempts: 0, resend_at, owner });
    }

    /// The request `ts` of `customer` has its outcome (an answer implies
    /// its frames arrived; a failure makes them moot): its frames are not
    /// resent any more. Without this, a frame whose ACK was lost kept being
    /// resent after its answer, and could reach a replacement of the
    /// server and be applied there again.
    pub(crate) fn forget_owner(&mut self, customer: CustomerId, ts: Timestamp) {
        let low = (customer, ts, NodeId::UNASSIGNED, 0);
        let high = (customer, ts, NodeId::from_raw(u32::MAX).expect("a server id"), u64::MAX);
        // One search per frame (a request has a few) rather than a list.
        while let Some(&(_, _, peer, seq)) = self.owned.range(low..=high).next() {
            self.owned.remove(&(customer, ts, peer, seq));
            if let Some(entry) = self.unacked.remove(&(peer, seq)) {
                self.resend_queue.remove(&(entry.resend_at, peer, seq));
            }
        }
    }

    fn disown(&mut self, owner: Owner, peer: NodeId, seq: u64) {
        if let Some((customer, ts)) = owner {
            self.owned.remove(&(customer, ts, peer, seq));
        }
    }

    /// An ACK arrived from `peer`.
    pub(crate) fn acknowledge(&mut self, peer: NodeId, seq: u64) -> bool {
        match self.unacked.remove(&(peer, seq)) {
            Some(entry) => {
                self.resend_queue.remove(&(entry.resend_at, peer, seq));
                self.disown(entry.owner, peer, seq);
                true
            }
            None => false,
        }
    }

    /// Classifies an arriving frame of `sender` in its `incarnation`.
    pub(crate) fn admit(&mut self, sender: NodeId, incarnation: Incarnation, seq: u64) -> Admission {
        self.received.entry((sender, incarnation)).or_default().admit(seq)
    }

    /// Forgets everything about `peer` up to and including `incarnation`
    /// (it died or was replaced): pending frames to it are dropped and its
    /// old streams closed. (The requests those frames carried fail on their
    /// own: they wait on the peer.)
    pub(crate) fn forget_peer(&mut self, peer: NodeId, incarnation: Incarnation) {
        let seqs: Vec<u64> = self.unacked.keys_in((peer, 0)..=(peer, u64::MAX)).map(|&(_, s)| s).collect();
        for seq in seqs {
            if let Some(entry) = self.unacked.remove(&(peer, seq)) {
                self.resend_queue.remove(&(entry.resend_at, peer, seq));
                self.disown(entry.owner, peer, seq);
            }
        }
        self.next_seq.retain(|&(id, inc), _| id != peer || inc > incarnation);
        self.received.retain(|&(id, inc), _| id != peer || inc > incarnation);
    }

    /// Resends what is due at `now`; gives up on frames out of attempts.
    pub(crate) fn expire(
        &mut self,
        now: Instant,
        resend_timeout: Duration,
        attempts_max: u32,
        rng: &mut Rng,
    ) -> Expired {
        let mut expired = Expired::default();
        while let Some(&(at, peer, seq)) = self.resend_queue.first() {
            if at > now {
                break;
            }
            self.resend_queue.pop_first();
            let Some(entry) = self.unacked.get_mut(&(peer, seq)) else {
                continue;
            };
            if entry.attempts >= attempts_max {
                let entry = self.unacked.remove(&(peer, seq)).expect("present");
                self.disown(entry.owner, peer, seq);
                expired.failed.push((peer, entry.owner));
                continue;
            }
            entry.attempts += 1;
            let backoff = resend_timeout.saturating_mul(1 << entry.attempts.min(16)).min(RESEND_DELAY_MAX);
            entry.resend_at = now + backoff + rng.jitter(resend_timeout / 4);
            self.resend_queue.insert((entry.resend_at, peer, seq));
            expired.resend.push(entry.transmit.clone());
        }
        expired
    }

    /// When the next resend is due.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.resend_queue.first().map(|&(at, _, _)| at)
    }

    #[cfg(any(test, feature = "inspect"))]
    /// Frames waiting for an ACK.
    pub(crate) fn unacked_len(&self) -> usize {
        self.unacked.len()
    }

    #[cfg(any(test, feature = "inspect"))]
    /// Receiver incarnations with a sequence number stream.
    pub(crate) fn streams_len(&self) -> usize {
        self.next_seq.len()
    }

    #[cfg(any(test, feature = "inspect"))]
    /// Sender incarnations with a duplicate filter.
    pub(crate) fn windows_len(&self) -> usize {
        self.received.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn duplicates_are_recognised_and_the_window_slides() {
        let mut w = DedupWindow::default();
        assert_eq!(w.admit(1), Admission::New);
        assert_eq!(w.admit(1), Admission::Duplicate);
        assert_eq!(w.admit(3), Admission::New);
        assert_eq!(w.admit(2), Admission::New);
        assert_eq!(w.base, 4);
        assert_eq!(w.admit(4 + DEDUP_WINDOW), Admission::TooFarAhead);
        assert_eq!(w.admit(3 + DEDUP_WINDOW), Admission::New);
    }

    fn transmit(to: NodeId) -> Transmit {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
        let message = crate::wire::Message::Heartbeat { sent_at: 0 };
        let envelope = crate::wire::message::Envelope {
            sender: NodeId::SCHEDULER,
            incarnation: Incarnation(0),
            receiver: to,
            receiver_incarnation: Incarnation(0),
            seq: 1,
        };
        Transmit { to, addr, frame: message.encode(envelope) }
    }

    #[test]
    fn forgetting_a_peer_drops_its_streams_up_to_the_incarnation_and_keeps_newer_ones() {
        let peer = NodeId::worker(crate::id::Rank(0));
        let other = NodeId::worker(crate::id::Rank(1));
        let mut reliable = Reliable::default();
        let now = Instant::ZERO;
        for incarnation in [0, 1, 2].map(Incarnation) {
            let seq = reliable.next_seq(peer, incarnation);
            reliable.track(now, seq + 10 * u64::from(incarnation.0), transmit(peer), None, Duration::from_secs(1));
            assert_eq!(reliable.admit(peer, incarnation, 1), Admission::New);
        }
        reliable.next_seq(other, Incarnation(0));
        reliable.admit(other, Incarnation(0), 1);
        reliable.forget_peer(peer, Incarnation(1));
        assert_eq!((reliable.streams_len(), reliable.windows_len()), (2, 2), "incarnation 2 and the other peer");
        assert_eq!(reliable.unacked_len(), 0, "nothing is resent to the peer");
        assert_eq!(reliable.next_seq(peer, Incarnation(2)), 2, "incarnation 2's stream goes on");
        assert_eq!(reliable.next_seq(peer, Incarnation(1)), 1, "incarnation 1's starts over");
        assert_eq!(reliable.admit(peer, Incarnation(2), 1), Admission::Duplicate);
        assert_eq!(reliable.admit(peer, Incarnation(1), 1), Admission::New);
    }

    /// The schedule a lost frame is resent on: each resend after twice the
    /// delay before it (capped), plus at most a quarter timeout of jitter so
    /// peers do not resend in lockstep; never sooner, never much later.
    #[test]
    fn resends_back_off_by_doubling_with_a_quarter_timeout_of_jitter_at_most() {
        let timeout = Duration::from_millis(200);
        let peer = NodeId::worker(crate::id::Rank(0));
        let mut reliable = Reliable::default();
        let mut rng = crate::rng::Rng::new(7);
        reliable.track(Instant::ZERO, 1, transmit(peer), None, timeout);
        let attempts_max = 12;
        for attempt in 1..=attempts_max {
            let now = reliable.next_deadline().expect("a resend is due");
            let expired = reliable.expire(now, timeout, attempts_max, &mut rng);
            assert_eq!((expired.resend.len(), expired.failed.len()), (1, 0), "attempt {attempt}");
            let backoff = timeout.saturating_mul(1 << attempt).min(RESEND_DELAY_MAX);
            let next = reliable.next_deadline().expect("scheduled again");
            let delay = next.saturating_since(now);
            assert!(backoff <= delay && delay <= backoff + timeout / 4, "attempt {attempt}: {delay:?} after {now:?}");
        }
        let now = reliable.next_deadline().expect("the last wait");
        let expired = reliable.expire(now, timeout, attempts_max, &mut rng);
        assert_eq!((expired.resend.len(), expired.failed.len()), (0, 1), "out of attempts, the frame fails");
        assert_eq!(reliable.next_deadline(), None);
    }

    proptest! {
        #[test]
        fn window_delivers_each_number_once_within_reach(seqs in proptest::collection::vec(1u64..3000, 0..2000)) {
            let mut w = DedupWindow::default();
            let mut delivered = BTreeSet::new();
            for seq in seqs {
                match w.admit(seq) {
                    Admission::New => prop_assert!(delivered.insert(seq), "{} delivered twice", seq),
                    Admission::Duplicate => prop_assert!(delivered.contains(&seq)),
                    Admission::TooFarAhead => prop_assert!(seq >= w.base + DEDUP_WINDOW),
                }
            }
        }
    }

    #[test]
    fn memory_stays_constant_after_a_million_frames() {
        let mut w = DedupWindow::default();
        let mut rng = crate::rng::Rng::new(5);
        let total = 1_000_000u64;
        // Blocks of 8 arrive shuffled, and every tenth frame arrives again.
        for block in (1..=total).step_by(8) {
            let mut seqs: Vec<u64> = (block..(block + 8).min(total + 1)).collect();
            for i in (1..seqs.len()).rev() {
                seqs.swap(i, rng.below(i as u64 + 1) as usize);
            }
            for seq in seqs {
                assert_eq!(w.admit(seq), Admission::New);
                if rng.chance(0.1) {
                    assert_eq!(w.admit(seq), Admission::Duplicate);
                }
            }
        }
        assert_eq!(w.base, total + 1, "the watermark absorbed every delivered frame");
        assert_eq!(w.admit(total / 2), Admission::Duplicate, "old frames stay recognised below the watermark");
    }
}
