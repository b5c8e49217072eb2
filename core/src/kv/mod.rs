//! The key-value application: workers push and pull, servers answer.
//!
//! This module holds the values both halves share: keys, values and lists
//! ([`list`], [`values`]), ids, and what a server answers ([`Response`],
//! [`Refusal`]). The worker half (request tracking) and the server half
//! (pending requests awaiting `respond`) are components of the node;
//! [`store`] is the default handle that both the io shell and the
//! simulator run, so tests of either exercise the same summing code.

pub(crate) mod index;
pub mod list;
pub mod store;
pub mod values;

use bytes::Bytes;

use crate::error::ApiMisuse;
use crate::id::{Incarnation, NodeId};
use crate::range::KeyRange;
pub use list::KvList;
pub use store::StoreError;
pub use values::{DType, Element, Keys, Lens, Values};

/// One request tracker: an application and a customer within it, so that
/// one process can host several workers or tables without their
/// completions mixing (ps-lite's `app_id` and `customer_id`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct CustomerId {
    /// Application id.
    pub app: u32,
    /// Customer within the application.
    pub customer: u32,
}

impl CustomerId {
    /// Application 0, customer 0.
    pub const DEFAULT: Self = Self { app: 0, customer: 0 };

    /// `app`, `customer`.
    pub const fn new(app: u32, customer: u32) -> Self {
        Self { app, customer }
    }
}

/// Names one request of one customer; increasing, never reused within an
/// incarnation (ps-lite's integer timestamp).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u32);

impl Timestamp {
    /// Whether `self` comes before `other` in serial-number order, which
    /// survives the wrap after 2^32 requests: `other` is less than 2^31
    /// steps ahead.
    pub fn is_before(self, other: Self) -> bool {
        self != other && other.0.wrapping_sub(self.0) < 1 << 31
    }
}

/// What a KV request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KvOp {
    /// Apply values.
    Push,
    /// Return values.
    Pull,
    /// Apply values, then return the result.
    PushPull,
}

impl KvOp {
    /// Whether the request carries values to apply.
    pub const fn pushes(self) -> bool {
        matches!(self, Self::Push | Self::PushPull)
    }

    /// Whether the response carries values.
    pub const fn pulls(self) -> bool {
        matches!(self, Self::Pull | Self::PushPull)
    }
}

/// A push, pull or push_pull as one value, for [`Node::submit`](crate::Node::submit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvCall {
    /// Whose request it is.
    pub customer: CustomerId,
    /// A timestamp chosen by the caller, or `None` to let the node choose.
    pub ts: Option<Timestamp>,
    /// User command passed to the server's handle.
    pub cmd: i32,
    /// What is asked.
    pub op: KvOp,
    /// Keys, values (empty for a pull; their dtype is what a pull expects) and lengths.
    pub list: KvList,
}

/// Identifies a request a server (or SimpleApp receiver) must answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerRequestId {
    /// The requesting node.
    pub from: NodeId,
    /// Its incarnation when it asked.
    pub incarnation: Incarnation,
    /// Its customer.
    pub customer: CustomerId,
    /// Its timestamp.
    pub ts: Timestamp,
}

/// A push, pull or push_pull slice a server must answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerRequest {
    /// Who asked; pass back to `respond`.
    pub id: ServerRequestId,
    /// The user command (ps-lite's `cmd`).
    pub cmd: i32,
    /// What is asked.
    pub op: KvOp,
    /// Keys, ascending, all inside this server's range.
    pub keys: Keys,
    /// Pushed values (empty for pulls; their dtype is the one expected back).
    pub values: Values,
    /// Per-key lengths of pushed values, when variable.
    pub lens: Option<Lens>,
}

/// A server's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// Done; pulls carry one value run per requested key.
    Ok {
        /// Values for a pull (empty for a push).
        values: Values,
        /// Per-key lengths when they vary.
        lens: Option<Lens>,
    },
    /// The handle refused; the worker's request fails with this reason.
    Refused(Refusal),
}

/// Why a server refused a request. It crosses the wire as its text, and
/// the worker's request fails with that text
/// ([`RequestError::Refused`](crate::RequestError::Refused)): the worker
/// cannot trust a remote's reason to be one of ours, so it keeps it as
/// the words it was sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The keys or values do not fit together (checked again on the
    /// server: the request came from the wire).
    #[error(transparent)]
    Malformed(#[from] ApiMisuse),
    /// A pull carried values.
    #[error("a pull carries no values")]
    PullWithValues,
    /// This node owns no key range.
    #[error("server has no range")]
    NoRange,
    /// Keys outside this server's range.
    #[error("keys outside this server's range {range:?}")]
    OutOfRange {
        /// This server's range.
        range: KeyRange,
    },
    /// `requests_pending_max` requests already wait for an answer.
    #[error("server has too many pending requests")]
    TooManyPending,
    /// The answer would not fit in one frame (`frame_len_max`).
    #[error("the answer exceeds frame_len_max")]
    AnswerTooLarge,
    /// No handle serves the request's app.
    #[error("no handle for app {app}")]
    NoHandle {
        /// The app.
        app: u32,
    },
    /// The default store could not apply or answer the request.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A user handle's own reason.
    #[error("{0}")]
    Handle(String),
}

impl Response {
    /// An empty success, the answer to a push.
    pub fn ack() -> Self {
        Self::Ok { values: Values::empty(DType::U8), lens: None }
    }
}

/// Server-side logic run on every request (ps-lite's request handle).
///
/// A handle is plain synchronous code; the shell feeds its answer back
/// with `respond`. pslite-io runs it on the node's task (cheap handles,
/// like the default sum), on a thread of its own, or lets it answer later
/// (`ServerHandle`), so a slow handle never delays heartbeats. The `cmd`
/// on every request lets one handle serve several operations.
///
/// A handle that keeps the latest value per key (pushes overwrite), built
/// on the default store for its reads:
///
/// ```
/// use pslite_core::{Keys, KvHandle, KvOp, KvStore, Response, ServerRequest, Values};
///
/// #[derive(Default)]
/// struct Latest(std::collections::BTreeMap<u64, f32>);
///
/// impl KvHandle for Latest {
///     fn handle(&mut self, request: &ServerRequest) -> Response {
///         if request.op != KvOp::Pull {
///             for (key, value) in request.keys.iter().zip(request.values.iter::<f32>()) {
///                 self.0.insert(key, value);
///             }
///         }
///         if request.op == KvOp::Push {
///             return Response::ack();
///         }
///         let values: Vec<f32> = request.keys.iter().map(|k| self.0.get(&k).copied().unwrap_or(0.0)).collect();
///         Response::Ok { values: Values::from_slice(&values), lens: None }
///     }
/// }
/// # let _ = (Keys::from_slice(&[]), KvStore::<f32>::new());
/// ```
pub trait KvHandle: Send + 'static {
    /// Answers one request.
    fn handle(&mut self, request: &ServerRequest) -> Response;
}

/// A boxed handle is a handle, so handles chosen at run time (by name,
/// from a flag) go wherever one chosen at compile time does.
impl KvHandle for Box<dyn KvHandle> {
    fn handle(&mut self, request: &ServerRequest) -> Response {
        (**self).handle(request)
    }
}

/// A SimpleApp request to answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimpleRequest {
    /// Who asked; pass back to `simple_respond`.
    pub id: ServerRequestId,
    /// Integer head.
    pub head: i32,
    /// Opaque body.
    pub body: Bytes,
}

/// One node's answer to a SimpleApp request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimpleReply {
    /// Who answered.
    pub from: NodeId,
    /// Integer head.
    pub head: i32,
    /// Opaque body.
    pub body: Bytes,
}

#[cfg(test)]
mod tests {
    use super::Timestamp;

    #[test]
    fn timestamps_order_across_the_wrap() {
        let t = |n| Timestamp(n);
        assert!(t(1).is_before(t(2)) && !t(2).is_before(t(1)) && !t(2).is_before(t(2)));
        assert!(t(u32::MAX).is_before(t(0)), "the wrap continues the order");
        assert!(t(u32::MAX - 5).is_before(t(3)));
        assert!(t(0).is_before(t((1 << 31) - 1)) && !t(0).is_before(t(1 << 31)), "at most half the circle ahead");
    }
}
