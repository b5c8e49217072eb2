//! What a node hands its driver: frames to send, events for the
//! application, and the small value types those carry.
//!
//! A leaf module: every component writes these into the shared
//! outbox, and the shells read them, so none of
//! them may depend on the node or on a component.

use std::net::SocketAddr;

use crate::error::RequestError;
use crate::id::{Group, Incarnation, NodeId, Rank};
use crate::kv::{
    CustomerId, Keys, KvList, Lens, ServerRequest, ServerRequestId, SimpleReply, SimpleRequest, Timestamp, Values,
};
use crate::range::KeyRange;
use crate::wire::Frame;

/// Names one read of a replicated range's state ([`Event::Export`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExportTicket {
    pub(crate) range: u32,
    pub(crate) read: u64,
}

/// A frame to send: the shell writes `frame` to `addr`.
///
/// ```
/// use std::net::SocketAddr;
/// use pslite_core::{Config, Instant, Node, NodeId, Role};
/// let scheduler: SocketAddr = "127.0.0.1:9091".parse().unwrap();
/// let mut node = Node::new(Config::builder(Role::Worker, scheduler).build().unwrap(), 1, Instant::ZERO);
/// // A new worker's first frame registers it with the scheduler.
/// let transmit = node.poll_transmit().expect("registration is queued at once");
/// assert_eq!((transmit.to, transmit.addr), (NodeId::SCHEDULER, scheduler));
/// // The shell writes these bytes to that address.
/// assert!(!transmit.frame.to_bytes().is_empty());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The receiving node ([`NodeId::UNASSIGNED`] if it has no id yet).
    pub to: NodeId,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The encoded frame.
    pub frame: Frame,
}

/// Where a node is in its life.
///
/// ```
/// use pslite_core::{ApiMisuse, Config, Group, Instant, Node, Phase, RequestError, Role};
/// let config = Config::builder(Role::Worker, "127.0.0.1:9091".parse().unwrap()).build().unwrap();
/// let mut node = Node::new(config, 1, Instant::ZERO);
/// assert_eq!(node.phase(), Phase::Registering);
/// // Commands wait for `Ready`: before, they are refused, not queued.
/// let refused = node.barrier(Instant::ZERO, Group::WORKERS);
/// assert_eq!(refused, Err(RequestError::ApiMisuse(ApiMisuse::NotReady)));
/// // Phases only move forward, so `>= Ready` asks "was it ever ready?".
/// assert!(Phase::Registering < Phase::Ready && Phase::Ready < Phase::Terminated);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Waiting for the cluster to form.
    Registering,
    /// Running.
    Ready,
    /// Finished (after `finalize`, a `Terminate`, or a fatal loss).
    Terminated,
}

/// Names one barrier this node entered.
///
/// ```
/// use std::collections::BTreeMap;
/// use pslite_core::{BarrierTicket, Config, Group, Instant, Node, Role};
/// let config = Config::builder(Role::Worker, "127.0.0.1:9091".parse().unwrap()).build().unwrap();
/// let node = Node::new(config, 1, Instant::ZERO);
/// // A driver keeps who waits for which barrier, by ticket; generations
/// // count per group, so the next one is known before it is entered.
/// let next = BarrierTicket { group: Group::WORKERS, generation: node.next_barrier_generation(Group::WORKERS) };
/// let mut waiters = BTreeMap::new();
/// waiters.insert(next, "epoch 0 done");
/// assert_eq!(next.generation, 0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BarrierTicket {
    /// The group.
    pub group: Group,
    /// This node's count of barriers on `group`, from 0.
    pub generation: u64,
}

/// What happened, for the application.
///
/// ```
/// use std::net::SocketAddr;
/// use pslite_core::{Config, Duration, Event, Instant, Node, Role};
/// let scheduler: SocketAddr = "127.0.0.1:9091".parse().unwrap();
/// let mut builder = Config::builder(Role::Worker, scheduler);
/// builder.register_timeout = Duration::from_secs(2);
/// let mut node = Node::new(builder.build().unwrap(), 1, Instant::ZERO);
/// // Nobody answers: run the node's timers, dropping its frames, until it stops.
/// while let Some(at) = node.poll_timeout() {
///     node.handle_timeout(at);
///     while node.poll_transmit().is_some() {}
/// }
/// let events: Vec<Event> = std::iter::from_fn(|| node.poll_event()).collect();
/// assert_eq!(events, [Event::RegistrationFailed { scheduler }, Event::Terminated]);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// This node has its id and rank.
    Registered {
        /// The id.
        id: NodeId,
        /// The rank within its role.
        rank: Rank,
        /// Its incarnation (0 unless it replaced a dead node).
        incarnation: Incarnation,
    },
    /// Every node is registered; requests may flow.
    ClusterReady,
    /// A push (or a request without data back) completed.
    RequestDone {
        /// The customer.
        customer: CustomerId,
        /// The request.
        ts: Timestamp,
    },
    /// A pull or push_pull completed, with values in key order.
    PullDone {
        /// The customer.
        customer: CustomerId,
        /// The request.
        ts: Timestamp,
        /// The keys asked for.
        keys: Keys,
        /// Their values.
        values: Values,
        /// Per-key lengths, when they vary.
        lens: Option<Lens>,
    },
    /// A request failed; it will never complete.
    RequestFailed {
        /// The customer.
        customer: CustomerId,
        /// The request.
        ts: Timestamp,
        /// Why.
        error: RequestError,
    },
    /// A server must answer this with `respond`.
    ServerRequest(ServerRequest),
    /// This node must answer this with `simple_respond`.
    SimpleRequest(SimpleRequest),
    /// Every target answered a SimpleApp request.
    SimpleDone {
        /// The customer.
        customer: CustomerId,
        /// The request.
        ts: Timestamp,
        /// One reply per target, ordered by node id.
        replies: Vec<SimpleReply>,
    },
    /// The barrier was released: every member arrived, or (`missing` not
    /// empty) the policy went on without dead members that were not
    /// replaced in time.
    BarrierReleased {
        /// The barrier.
        ticket: BarrierTicket,
        /// Members that never arrived, in id order; empty when all did.
        missing: Vec<NodeId>,
    },
    /// The barrier cannot complete.
    BarrierFailed(BarrierTicket, RequestError),
    /// A replicated range's state, as its head's handle exported it
    /// after applying `pushes`: install it in app `app`'s handle
    /// ([`KvHandle::install`](crate::KvHandle::install)) before handing
    /// that handle any later request, so that every copy passes through
    /// the head's states in the head's order.
    Install {
        /// The application whose handle installs it.
        app: u32,
        /// Keys and what they hold now.
        state: KvList,
        /// The pushes this state includes that the last one did not;
        /// empty for a chunk of a state transfer, which holds a range's
        /// keys as they were, whatever pushes made them.
        pushes: Vec<ServerRequestId>,
    },
    /// Read a chunk of a replicated range for a server catching up with
    /// it: app `app`'s keys in `keys`, in ascending order, at most
    /// `keys_max` of them and no more once their values reach `bytes_max`
    /// bytes ([`KvHandle::export_range`](crate::KvHandle::export_range)),
    /// and hand the result to [`Node::exported`](crate::Node::exported).
    /// Read it in order with the installs and requests around it, as for
    /// `Install`: the chunk must hold exactly what the handle had applied
    /// when the event came.
    Export {
        /// Names the read in `Node::exported`.
        ticket: ExportTicket,
        /// The application whose handle reads.
        app: u32,
        /// The keys to read from.
        keys: KeyRange,
        /// Most keys in the chunk.
        keys_max: usize,
        /// The chunk stops adding keys once its values reach this size.
        bytes_max: usize,
    },
    /// Every KV handle drops what it holds in `range`
    /// ([`KvHandle::forget_range`](crate::KvHandle::forget_range)): this
    /// server learned part of the range from a copy that is gone, and
    /// learns it again from scratch.
    Forget {
        /// The keys to drop.
        range: KeyRange,
    },
    /// The scheduler declared a node dead.
    NodeDead {
        /// The node.
        id: NodeId,
        /// The incarnation that died.
        incarnation: Incarnation,
    },
    /// A restarted process took a dead node's id.
    NodeRecovered {
        /// The id.
        id: NodeId,
        /// The new incarnation.
        incarnation: Incarnation,
    },
    /// No scheduler answered within `register_timeout`; the node stops
    /// (`Terminated` follows).
    RegistrationFailed {
        /// Where the scheduler was expected.
        scheduler: SocketAddr,
    },
    /// The node stopped; no more events follow.
    Terminated,
}
