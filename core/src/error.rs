//! Errors of the command and completion surfaces.
//!
//! Following rustls, caller mistakes ([`ApiMisuse`]) are kept apart from
//! what the cluster did to a request ([`RequestError`]); malformed peer
//! input is a [`crate::wire::DecodeError`] and never reaches either.

use crate::id::{Group, NodeId, Role};

/// Why a request did not complete.
///
/// ```
/// use pslite_core::{ApiMisuse, NodeId, Rank, RequestError};
/// // What the cluster did decides what the caller does next.
/// fn retry_later(error: &RequestError) -> bool {
///     matches!(error, RequestError::PeerDead(_) | RequestError::TimedOut | RequestError::ResendExhausted)
/// }
/// let dead = RequestError::PeerDead(NodeId::server(Rank(1)));
/// assert!(retry_later(&dead));
/// assert_eq!(dead.to_string(), "node 10 is dead");
/// assert!(!retry_later(&RequestError::from(ApiMisuse::NotReady)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// A node the request depends on was declared dead.
    #[error("node {0} is dead")]
    PeerDead(NodeId),
    /// Nothing was heard from the scheduler for `heartbeat_timeout`.
    #[error("lost contact with the scheduler")]
    SchedulerLost,
    /// The scheduler declared this process dead (it was cut off, say) and
    /// gave its id to a new process: this one stops.
    #[error("this node was declared dead and replaced by incarnation {}", incarnation.0)]
    Replaced {
        /// The replacement's incarnation.
        incarnation: crate::id::Incarnation,
    },
    /// Every copy of a key range the request touches is gone (with
    /// `replicas` copies, all of them died before a replacement caught up).
    #[error("every copy of key range {0:?} is lost")]
    RangeLost(crate::range::KeyRange),
    /// The request exceeded `request_timeout`.
    #[error("request timed out")]
    TimedOut,
    /// A frame was resent `resend_attempts_max` times without an ACK.
    #[error("no acknowledgement after the maximum number of resends")]
    ResendExhausted,
    /// The node is shutting down or has shut down.
    #[error("node terminated")]
    Terminated,
    /// The server's handle refused the request.
    #[error("server {server} refused the request: {reason}")]
    Refused {
        /// The server.
        server: NodeId,
        /// The handle's reason.
        reason: String,
    },
    /// A server answered with something that does not fit the request.
    #[error("bad response from {server}: {mismatch}")]
    BadResponse {
        /// The server ([`NodeId::UNASSIGNED`] when the parts of several
        /// servers do not fit together).
        server: NodeId,
        /// What did not fit.
        mismatch: Mismatch,
    },
    /// The caller used the API wrongly.
    #[error(transparent)]
    ApiMisuse(#[from] ApiMisuse),
}

/// How a pull's answer fails to fit what was asked.
///
/// ```
/// use pslite_core::{Mismatch, NodeId, Rank, RequestError};
/// // A server answered f64s to a pull of f32s: its fault, named.
/// let error = RequestError::BadResponse { server: NodeId::server(Rank(0)), mismatch: Mismatch::ValueType };
/// assert_eq!(error.to_string(), "bad response from 8: values of another type than asked for");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    /// A server echoed other keys than it was asked for.
    #[error("keys differ from the keys asked for")]
    Keys,
    /// Values of another element type than asked for.
    #[error("values of another type than asked for")]
    ValueType,
    /// Values (or lengths) that do not fit the keys.
    #[error("values do not fit the keys")]
    Lengths,
    /// Nothing to merge: no server answered with a part.
    #[error("no parts to merge")]
    NoParts,
}

/// A caller mistake, caught before anything is sent.
///
/// ```
/// use pslite_core::{check_request, ApiMisuse, Keys, KvList, KvOp, Values};
/// let list = KvList { keys: Keys::from_slice(&[3, 3]), values: Values::from_slice(&[1.0f32, 1.0]), lens: None };
/// // Caught before anything is sent: the caller's to fix, not the cluster's.
/// assert_eq!(check_request(KvOp::Push, &list), Err(ApiMisuse::DuplicateKey { index: 1, key: 3 }));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApiMisuse {
    /// Keys are not strictly ascending (`index` is the first offender).
    #[error("keys must be strictly ascending: key at index {index} is {key}, after {previous}")]
    UnsortedKeys {
        /// Index of the offending key.
        index: usize,
        /// The key.
        key: u64,
        /// The key before it.
        previous: u64,
    },
    /// The same key appears twice in a row.
    #[error("duplicate key {key} at index {index}")]
    DuplicateKey {
        /// Index of the second occurrence.
        index: usize,
        /// The key.
        key: u64,
    },
    /// Values do not fit keys and lengths.
    #[error("length mismatch: {what} (expected {expected}, got {got})")]
    LengthMismatch {
        /// Which lengths disagree.
        what: &'static str,
        /// Expected count.
        expected: u64,
        /// Actual count.
        got: u64,
    },
    /// The command belongs to another role.
    #[error("{command} is not available on a {role}")]
    WrongRole {
        /// The command.
        command: &'static str,
        /// This node's role.
        role: Role,
    },
    /// A barrier over a group this node is not a member of: the scheduler
    /// counts members only, so it could never be released.
    #[error("a {role} cannot enter a barrier over {group:?}")]
    NotInGroup {
        /// The group asked for.
        group: Group,
        /// This node's role.
        role: Role,
    },
    /// The cluster is not ready yet (or no longer running).
    #[error("the cluster is not ready")]
    NotReady,
    /// More keys than `keys_per_request_max`.
    #[error("{keys} keys exceed keys_per_request_max {max}")]
    TooManyKeys {
        /// Keys given.
        keys: usize,
        /// The limit.
        max: u32,
    },
    /// More outstanding requests than `requests_pending_max`.
    #[error("{max} requests are already pending")]
    TooManyPending {
        /// The limit.
        max: u32,
    },
    /// The request would not fit in one frame.
    #[error("request of {bytes} bytes exceeds frame_len_max {max}")]
    FrameTooLarge {
        /// Bytes needed.
        bytes: u64,
        /// The limit.
        max: u32,
    },
    /// A caller-chosen timestamp belongs to a request still pending.
    #[error("timestamp {ts} is already in use by a pending request")]
    TimestampInUse {
        /// The timestamp.
        ts: u32,
    },
    /// `respond` or `simple_respond` named a request that was never
    /// surfaced, was already answered, or is of the other kind.
    #[error("no pending server request matches")]
    UnknownRequest,
    /// A wait on a timestamp that was never issued, or whose outcome an
    /// earlier wait already took: nothing would ever complete it.
    #[error("timestamp {ts} names no request to wait for")]
    UnknownTimestamp {
        /// The timestamp.
        ts: u32,
    },
    /// A wait for one kind of outcome on a request of another kind (say,
    /// `wait_pull` on a push).
    #[error("request {ts} is no {expected}")]
    WrongKind {
        /// The timestamp.
        ts: u32,
        /// What the wait expected: "pull" or "SimpleApp request".
        expected: &'static str,
    },
    /// A wait on a request another wait is already waiting for: only one
    /// can take its outcome.
    #[error("request {ts} is already being waited for")]
    AlreadyWaited {
        /// The timestamp.
        ts: u32,
    },
    /// A simple request targets no node.
    #[error("no live node in the target")]
    EmptyTarget,
}
