//! Counters of what crossed a node, for operators and for the simulator's
//! checker. Plain integers, monotonically increasing.

/// Counters of one node.
///
/// ```
/// use pslite_core::{Config, Instant, Node, Role};
/// let config = Config::builder(Role::Worker, "127.0.0.1:9091".parse().unwrap()).build().unwrap();
/// let mut node = Node::new(config, 1, Instant::ZERO);
/// // Garbage from the wire is dropped and counted, never a panic.
/// assert!(node.handle_frame(Instant::ZERO, bytes::Bytes::from_static(b"garbage")).is_err());
/// assert_eq!(node.stats().decode_errors, 1);
/// assert_eq!(node.stats().frames_in, 1);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames handed to `handle_frame`.
    pub frames_in: u64,
    /// Frames queued for sending.
    pub frames_out: u64,
    /// Bytes handed to `handle_frame`.
    pub bytes_in: u64,
    /// Bytes queued for sending.
    pub bytes_out: u64,
    /// Frames that did not decode.
    pub decode_errors: u64,
    /// Frames from an older incarnation of their sender.
    pub stale_incarnation_drops: u64,
    /// Frames from senders not (yet) in our table.
    pub unknown_sender_drops: u64,
    /// Requests from a node the scheduler declared dead.
    pub dead_sender_drops: u64,
    /// Frames addressed to another node.
    pub misrouted_drops: u64,
    /// Frames addressed to a former incarnation of this node's id.
    pub stale_receiver_drops: u64,
    /// Well-formed frames that make no sense in our state (a response to
    /// nothing, a scheduler message from a non-scheduler, …).
    pub unexpected_drops: u64,
    /// Frames sent again for lack of an acknowledgement.
    pub resends: u64,
    /// Frames received twice and dropped.
    pub duplicates_dropped: u64,
    /// Parts of requests to replicated ranges that arrived again (sent
    /// again after their range's chain changed) and were answered from
    /// what this server knew rather than applied again.
    pub parts_again: u64,
}
