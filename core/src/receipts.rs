//! Receipts (ACKs) waiting to be sent, per peer.
//!
//! A receipt need not leave the moment its frame arrives: it only stops
//! the sender's resend, which waits `resend_timeout`. Held for a short
//! while, it rides along with the next frame to the same peer (the shell
//! writes a peer's queued frames together), or leaves with the receipts of
//! the frames that arrived meanwhile in one frame. Measured on a chain of
//! two copies, a 1 KiB push cost seven separate writes, four of them bare
//! receipts, each waking a reader on the other side; most of those now
//! share a write or a frame.
//!
//! A receipt for a frame seen before leaves at once: its sender is
//! already resending, and each late receipt costs it another copy.

use std::collections::BTreeMap;

use crate::id::NodeId;
use crate::time::{Duration, Instant};
use crate::wire::message::ACKS_PER_FRAME_MAX;

/// The longest a receipt waits for company.
const DELAY_MAX: Duration = Duration::from_millis(2);

/// How long a receipt may wait for company: short against the sender's
/// resend timeout, so waiting never causes a resend.
pub(crate) fn delay(resend_timeout: Duration) -> Duration {
    (resend_timeout / 64).min(DELAY_MAX)
}

/// One peer's waiting receipts.
#[derive(Debug)]
struct Waiting {
    seqs: Vec<u64>,
    /// When they must leave, company or not.
    due: Instant,
}

/// Receipts not sent yet, by peer.
#[derive(Debug, Default)]
pub(crate) struct Receipts {
    waiting: BTreeMap<NodeId, Waiting>,
    /// The earliest `due` of all, so a poll with nothing due costs nothing.
    next_due: Option<Instant>,
}

impl Receipts {
    /// Adds a receipt for `seq` to `peer`, to leave by `due` at the latest
    /// (earlier if others for `peer` are due earlier, or a frame fills up).
    pub(crate) fn add(&mut self, peer: NodeId, seq: u64, due: Instant) {
        let waiting = self.waiting.entry(peer).or_insert(Waiting { seqs: Vec::new(), due });
        waiting.seqs.push(seq);
        // A full frame's worth gains nothing by waiting.
        let due = if waiting.seqs.len() >= ACKS_PER_FRAME_MAX { Instant::ZERO } else { due };
        waiting.due = waiting.due.min(due);
        self.next_due = Some(self.next_due.map_or(waiting.due, |next| next.min(waiting.due)));
    }

    /// When the next receipts must leave.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.next_due
    }

    /// Takes the receipts of every peer whose are due by `now`.
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<(NodeId, Vec<u64>)> {
        if self.next_due.is_none_or(|next| next > now) {
            return Vec::new();
        }
        let due: Vec<NodeId> = self.waiting.iter().filter(|(_, w)| w.due <= now).map(|(&peer, _)| peer).collect();
        let taken = due.into_iter().filter_map(|peer| self.take(peer).map(|seqs| (peer, seqs))).collect();
        self.recompute();
        taken
    }

    /// Takes `peer`'s receipts, due or not: a frame to it is leaving, and
    /// they go in the same write.
    pub(crate) fn take_for(&mut self, peer: NodeId) -> Option<Vec<u64>> {
        let seqs = self.take(peer)?;
        self.recompute();
        Some(seqs)
    }

    fn take(&mut self, peer: NodeId) -> Option<Vec<u64>> {
        self.waiting.remove(&peer).map(|waiting| waiting.seqs)
    }

    fn recompute(&mut self) {
        self.next_due = self.waiting.values().map(|w| w.due).min();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Rank;

    fn at(ms: u64) -> Instant {
        Instant::ZERO + Duration::from_millis(ms)
    }

    #[test]
    fn receipts_wait_until_due_and_leave_together() {
        let (a, b) = (NodeId::server(Rank(0)), NodeId::worker(Rank(1)));
        let mut receipts = Receipts::default();
        receipts.add(a, 1, at(2));
        receipts.add(a, 2, at(3));
        receipts.add(b, 7, at(5));
        assert_eq!(receipts.next_due(), Some(at(2)), "the oldest receipt sets the time");
        assert!(receipts.take_due(at(1)).is_empty());
        assert_eq!(receipts.take_due(at(2)), vec![(a, vec![1, 2])], "a peer's receipts leave together");
        assert_eq!(receipts.next_due(), Some(at(5)));
        // One due now (a duplicate's) takes the peer's others with it.
        receipts.add(b, 8, at(2));
        assert_eq!(receipts.next_due(), Some(at(2)));
        assert_eq!(receipts.take_due(at(2)), vec![(b, vec![7, 8])]);
        assert_eq!(receipts.next_due(), None);
    }

    #[test]
    fn a_frame_to_the_peer_takes_its_receipts_early() {
        let (a, b) = (NodeId::server(Rank(0)), NodeId::server(Rank(1)));
        let mut receipts = Receipts::default();
        receipts.add(a, 1, at(4));
        receipts.add(b, 2, at(9));
        assert_eq!(receipts.take_for(b), Some(vec![2]));
        assert_eq!(receipts.take_for(b), None);
        assert_eq!(receipts.next_due(), Some(at(4)));
        assert_eq!(receipts.take_due(Instant::FAR_FUTURE), vec![(a, vec![1])], "everything, when the node stops");
        assert_eq!(receipts.next_due(), None);
    }

    #[test]
    fn a_full_frame_of_receipts_is_due_at_once() {
        let peer = NodeId::server(Rank(0));
        let mut receipts = Receipts::default();
        for seq in 0..ACKS_PER_FRAME_MAX as u64 {
            receipts.add(peer, seq, at(100));
        }
        assert_eq!(receipts.take_due(at(0)).first().map(|(_, seqs)| seqs.len()), Some(ACKS_PER_FRAME_MAX));
    }

    #[test]
    fn waiting_stays_short_against_the_resend_timeout() {
        assert_eq!(delay(Duration::from_secs(1)), DELAY_MAX);
        assert_eq!(delay(Duration::from_millis(64)), Duration::from_millis(1));
    }
}
