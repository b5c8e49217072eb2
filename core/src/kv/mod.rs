//! The key-value application: workers push and pull, servers answer.
//!
//! This module holds the values both halves share: keys, values and lists
//! ([`list`], [`values`]), ids, and what a server answers ([`Response`],
//! [`Refusal`]). The worker half (request tracking) and the server half
//! (pending requests awaiting `respond`) are components of the node;
//! [`store`] is the default handle that both the io shell and the
//! simulator run, so tests of either exercise the same summing code.

pub(crate) mod arena;
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
///
/// ```
/// use pslite_core::CustomerId;
/// // The app picks the server handle (ps-lite's app_id); the customer keeps
/// // one app's requesters apart, so each waits only for its own requests.
/// let (weights, stats) = (CustomerId::new(0, 0), CustomerId::new(0, 1));
/// let optimizer = CustomerId::new(1, 0);
/// assert_eq!(weights, CustomerId::DEFAULT);
/// assert_eq!((stats.app, stats.customer), (0, 1));
/// assert!(weights < stats && stats < optimizer, "ordered by app, then customer");
/// ```
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
///
/// ```
/// use pslite_core::Timestamp;
/// // The derived order is for maps; to ask which request was issued first,
/// // use `is_before`, which survives the wrap.
/// let (last, wrapped) = (Timestamp(u32::MAX), Timestamp(0));
/// assert!(last > wrapped);
/// assert!(last.is_before(wrapped));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u32);

impl Timestamp {
    /// Whether `self` comes before `other` in serial-number order, which
    /// survives the wrap after 2^32 requests: `other` is less than 2^31
    /// steps ahead.
    ///
    /// ```
    /// use pslite_core::Timestamp;
    /// assert!(Timestamp(1).is_before(Timestamp(2)));
    /// assert!(!Timestamp(2).is_before(Timestamp(2)), "not before itself");
    /// // At most half the circle ahead counts as later.
    /// assert!(!Timestamp(0).is_before(Timestamp(1 << 31)));
    /// ```
    pub fn is_before(self, other: Self) -> bool {
        self != other && other.0.wrapping_sub(self.0) < 1 << 31
    }
}

/// What a KV request asks for.
///
/// ```
/// use pslite_core::KvOp;
/// // A push_pull both carries values and brings them back.
/// assert!(KvOp::PushPull.pushes() && KvOp::PushPull.pulls());
/// assert!(!KvOp::Pull.pushes() && !KvOp::Push.pulls());
/// ```
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
///
/// ```
/// use pslite_core::{check_request, CustomerId, Keys, KvCall, KvList, KvOp, Values};
/// let list = KvList { keys: Keys::from_slice(&[1, 2]), values: Values::from_slice(&[0.5f32, 1.5]), lens: None };
/// let call = KvCall { customer: CustomerId::DEFAULT, ts: None, cmd: 0, op: KvOp::Push, list };
/// // A shell checks the call before it queues it for `Node::submit`.
/// assert_eq!(check_request(call.op, &call.list), Ok(()));
/// ```
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
///
/// ```
/// # use pslite_core::*;
/// # let id = ServerRequestId {
/// #     from: NodeId::worker(Rank(0)),
/// #     incarnation: Incarnation(0),
/// #     customer: CustomerId::DEFAULT,
/// #     ts: Timestamp(0), part: 0,
/// # };
///
/// use std::collections::BTreeMap;
/// // A handle that answers later keeps what it owes by id.
/// let mut owed = BTreeMap::new();
/// owed.insert(id, "pending");
/// // A restarted worker is another requester, even with the same node id.
/// let restarted = ServerRequestId { incarnation: id.incarnation.next(), ..id };
/// assert!(owed.contains_key(&id) && !owed.contains_key(&restarted));
/// ```
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
    /// Which part of the request this is: the index of its key range in
    /// the replica table. With one copy of each range a server gets at
    /// most one part of a request; with several, one server may get two
    /// (it heads one range and is the tail of another), each answered
    /// on its own.
    pub part: u32,
}

/// A push, pull or push_pull slice a server must answer.
///
/// ```
/// # use pslite_core::*;
/// # let id = ServerRequestId {
/// #     from: NodeId::worker(Rank(0)),
/// #     incarnation: Incarnation(0),
/// #     customer: CustomerId::DEFAULT,
/// #     ts: Timestamp(0), part: 0,
/// # };
///
/// // Requests built by hand test a handle without a cluster.
/// let push = ServerRequest {
///     id, cmd: 0, op: KvOp::Push, keys: Keys::from_slice(&[7]), values: Values::from_slice(&[2.0f32]), lens: None,
/// };
/// let pull = ServerRequest { op: KvOp::Pull, values: Values::empty(DType::F32), ..push.clone() };
/// let mut store = KvStore::<f32>::new();
/// assert_eq!(store.handle(&push), Response::ack());
/// assert_eq!(store.handle(&pull), Response::Ok { values: Values::from_slice(&[2.0f32]), lens: None });
/// ```
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
///
/// ```
/// use pslite_core::{Refusal, Response, Values};
/// // A pull's answer: the values of the keys asked for, in their order.
/// let answer = Response::Ok { values: Values::from_slice(&[0.5f32, 1.5]), lens: None };
/// // Or a refusal, whose text the worker's request fails with.
/// let refusal = Response::Refused(Refusal::Handle("model not loaded yet".into()));
/// assert!(matches!(answer, Response::Ok { values, .. } if values.len() == 2));
/// assert!(matches!(refusal, Response::Refused(reason) if reason.to_string() == "model not loaded yet"));
/// ```
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
///
/// ```
/// use pslite_core::{ApiMisuse, Refusal};
/// // The text is all that crosses the wire, so it says what went wrong.
/// assert_eq!(Refusal::NoHandle { app: 3 }.to_string(), "no handle for app 3");
/// let malformed = Refusal::from(ApiMisuse::DuplicateKey { index: 1, key: 9 });
/// assert_eq!(malformed.to_string(), "duplicate key 9 at index 1");
/// ```
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
    ///
    /// ```
    /// use pslite_core::Response;
    /// // A push needs no values back, only the news that it was applied.
    /// assert!(matches!(Response::ack(), Response::Ok { values, lens: None } if values.is_empty()));
    /// ```
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

    /// The state `keys` hold now (those that hold any), in a form only
    /// [`install`](Self::install) on the same kind of handle reads: all a
    /// copy needs to answer every later request on those keys exactly as
    /// this one would, byte for byte. Replicated ranges send it down the
    /// chain after each push and to a server catching up, which is why
    /// it is the state and not the push: a handle whose update is not a
    /// sum (an optimizer's, with per-key accumulators) or not
    /// deterministic replicates all the same.
    ///
    /// `None` (the default): this handle cannot be replicated.
    fn export(&self, keys: &Keys) -> Option<KvList> {
        let _ = keys;
        None
    }

    /// Installs what [`export`](Self::export) of another copy returned,
    /// replacing what these keys held.
    fn install(&mut self, state: &KvList) -> Result<(), Refusal> {
        let _ = state;
        Err(Refusal::Handle("this handle cannot be replicated (it does not export its state)".into()))
    }

    /// The state of the keys of `range` this handle holds, in ascending
    /// key order from the range's start, in the form of
    /// [`export`](Self::export): at most `keys_max` keys, whose values
    /// take at most `bytes_max` bytes together; but the first key held
    /// always comes, whatever the limits, so that a walk always advances.
    /// An empty list: the range holds nothing.
    ///
    /// A server catching up with a replicated range reads it from the
    /// range's tail this way, in key-ordered chunks that each fit a frame,
    /// without the tail listing every key it holds first; the next chunk
    /// starts after the last key of this one.
    ///
    /// `None` (the default): this handle cannot be replicated.
    ///
    /// ```
    /// # use pslite_core::*;
    /// # let push = |keys: &[u64], values: &[f32]| ServerRequest {
    /// #     id: ServerRequestId { from: NodeId::worker(Rank(0)), incarnation: Incarnation(0),
    /// #         customer: CustomerId::DEFAULT, ts: Timestamp(0), part: 0 },
    /// #     cmd: 0, op: KvOp::Push, keys: Keys::from_slice(keys), values: Values::from_slice(values), lens: None,
    /// # };
    /// let mut tail = KvStore::<f32>::new();
    /// tail.handle(&push(&[1, 5, 9, 20, u64::MAX], &[1.0, 5.0, 9.0, 20.0, 0.5]));
    /// let range = KeyRange::new(2, u64::MAX).unwrap();
    /// let (mut learner, mut rest, mut chunks) = (KvStore::<f32>::new(), Some(range), 0);
    /// // Two keys a chunk. The next chunk starts after the last key of this
    /// // one; the walk ends after the range's last key or at an empty chunk
    /// // (a short chunk is no end: the byte limit may have cut it).
    /// while let Some(left) = rest {
    ///     let chunk = KvHandle::export_range(&tail, left, 2, usize::MAX).expect("the store replicates");
    ///     if chunk.keys.is_empty() {
    ///         break;
    ///     }
    ///     learner.install(&chunk).unwrap();
    ///     chunks += 1;
    ///     let last = chunk.keys.get(chunk.keys.len() - 1);
    ///     rest = last.checked_add(1).and_then(|next| KeyRange::new(next, left.end_inclusive()));
    /// }
    /// assert_eq!(chunks, 2, "the chunk holding u64::MAX ends the walk");
    /// let all = Keys::from_slice(&[1, 5, 9, 20, u64::MAX]);
    /// assert_eq!(learner.export(&all).keys, Keys::from_slice(&[5, 9, 20, u64::MAX]));
    /// ```
    fn export_range(&self, range: KeyRange, keys_max: usize, bytes_max: usize) -> Option<KvList> {
        let _ = (range, keys_max, bytes_max);
        None
    }

    /// Drops everything this handle holds for the keys of `range`:
    /// afterwards they answer as keys never pushed, and a later push or
    /// [`install`](Self::install) creates them anew. A server whose
    /// partial copy of a range belongs to a state that no longer exists
    /// (its transfer was cut off and the range moved on) drops it this way
    /// before learning the range again, so no stale key survives.
    fn forget_range(&mut self, range: KeyRange) -> Result<(), Refusal> {
        let _ = range;
        Err(Refusal::Handle("this handle cannot be replicated (it cannot forget a range)".into()))
    }
}

/// A boxed handle is a handle, so handles chosen at run time (by name,
/// from a flag) go wherever one chosen at compile time does.
impl KvHandle for Box<dyn KvHandle> {
    fn handle(&mut self, request: &ServerRequest) -> Response {
        (**self).handle(request)
    }

    fn export(&self, keys: &Keys) -> Option<KvList> {
        (**self).export(keys)
    }

    fn install(&mut self, state: &KvList) -> Result<(), Refusal> {
        (**self).install(state)
    }

    fn export_range(&self, range: KeyRange, keys_max: usize, bytes_max: usize) -> Option<KvList> {
        (**self).export_range(range, keys_max, bytes_max)
    }

    fn forget_range(&mut self, range: KeyRange) -> Result<(), Refusal> {
        (**self).forget_range(range)
    }
}

/// A SimpleApp request to answer.
///
/// ```
/// # use pslite_core::*;
/// # let id = ServerRequestId {
/// #     from: NodeId::worker(Rank(0)),
/// #     incarnation: Incarnation(0),
/// #     customer: CustomerId::DEFAULT,
/// #     ts: Timestamp(0), part: 0,
/// # };
///
/// use bytes::Bytes;
/// // A SimpleApp handler is a plain function of the request.
/// fn handler(request: &SimpleRequest) -> (i32, Bytes) {
///     (request.head, Bytes::from(format!("{} bytes", request.body.len())))
/// }
/// let request = SimpleRequest { id, head: 4, body: Bytes::from_static(b"abc") };
/// assert_eq!(handler(&request), (4, Bytes::from_static(b"3 bytes")));
/// ```
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
///
/// ```
/// use bytes::Bytes;
/// use pslite_core::{NodeId, Rank, SimpleReply};
/// let reply = |rank, head| SimpleReply { from: NodeId::server(Rank(rank)), head, body: Bytes::new() };
/// // One reply per target: say, which servers report a failed checkpoint.
/// let replies = [reply(0, 0), reply(1, -1)];
/// let failed: Vec<NodeId> = replies.iter().filter(|reply| reply.head != 0).map(|reply| reply.from).collect();
/// assert_eq!(failed, [NodeId::server(Rank(1))]);
/// ```
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
