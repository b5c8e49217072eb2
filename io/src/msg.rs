//! The messages a node's tasks send each other.
//!
//! Handles send [`Command`]s to the driver and hear back on the channels
//! inside them ([`Completion`]s, plus [`Info`] and [`NodeEvent`] on the
//! node's watch and broadcast channels); readers and writers send the
//! driver [`Inbound`]; the driver hands each writer its frames as
//! [`Outgoing`]; server handles that answer later (see `respond`) send
//! the driver their [`Answer`]s. The types live here, apart from the
//! tasks, so that every task module depends on the messages and none on
//! another task's module: this module imports nothing of the crate but
//! its error type.

use std::net::SocketAddr;

use bytes::Bytes;
use pslite_core::{
    CustomerId, Frame, Group, Keys, KvCall, KvHandle, Lens, NodeId, Phase, Rank, RequestError, Response, Role,
    ServerRequest, ServerRequestId, SimpleReply, SimpleRequest, Stats, Target, Timestamp, Values,
};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};

use crate::error::Result;

/// How a request ended well.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> pslite_io::Result<()> {
/// use pslite_io::Completion;
/// # let cluster = pslite_io::LocalCluster::start(1, 1).await?;
/// let worker = cluster.worker::<f32>(0);
/// let ts = worker.pull(&[4, 5]).await?;
/// // The node's own wait hands back the completion as it came.
/// match worker.node().wait(worker.customer(), ts).await? {
///     Completion::Pulled { keys, values, lens } => {
///         assert_eq!((keys.to_vec(), values.to_vec::<f32>(), lens), (vec![4, 5], Some(vec![0.0, 0.0]), None));
///     }
///     other => panic!("a pull completes with values, not {other:?}"),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub enum Completion {
    /// A push (or anything without data back) completed.
    Done,
    /// A pull or push_pull completed.
    Pulled {
        /// The keys asked for.
        keys: Keys,
        /// Their values.
        values: Values,
        /// Per-key lengths, when they vary.
        lens: Option<Lens>,
    },
    /// Every target of a SimpleApp request answered.
    Simple(Vec<SimpleReply>),
}

/// How a barrier (or `finalize`) ended when it was released: with every
/// member, or without the dead members its policy stopped waiting for.
/// Those are named, so a program can tell a complete step (or job) from
/// one that went on without someone.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> pslite_io::Result<()> {
/// use pslite_core::{BarrierPolicy, Duration, Group, KvStore};
/// use pslite_io::LocalCluster;
/// let mut settings = LocalCluster::settings(1, 2);
/// settings.core.barrier_policy = BarrierPolicy::Elastic;
/// settings.core = settings.core.heartbeat(Duration::from_millis(100), Duration::from_secs(1));
/// let cluster = LocalCluster::start_with(settings, Box::new(|_| KvStore::<f32>::new().into())).await?;
/// let lost = cluster.workers[1].info().id;
/// cluster.workers[1].abort();
/// // Released once the scheduler declares the lost worker dead, without it.
/// let released = cluster.workers[0].barrier(Group::WORKERS).await?;
/// assert!(!released.is_complete());
/// assert_eq!(released.missing, [lost]);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use = "a barrier may be released without dead members; the report says who"]
pub struct Released {
    /// Members that never arrived, in id order; empty when all did.
    pub missing: Vec<NodeId>,
}

impl Released {
    /// Whether every member arrived.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
    }
}

/// How a node ended, kept for a `finalize` that comes after its task
/// stopped (which can then no longer be asked).
#[derive(Debug, Clone)]
pub(crate) enum Ended {
    /// Finalized: the report of its last barrier.
    Finalized(Released),
    /// Stopped by an error: declared dead, replaced, its finalize failed.
    Failed(RequestError),
    /// No scheduler answered at this address.
    NoScheduler(SocketAddr),
}

impl Ended {
    /// What `finalize` returns for this ending.
    pub(crate) fn outcome(self) -> Result<Released> {
        match self {
            Self::Finalized(released) => Ok(released),
            Self::Failed(error) => Err(error.into()),
            Self::NoScheduler(scheduler) => Err(crate::error::Error::RegistrationFailed { scheduler }),
        }
    }
}

/// Membership news for the application.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> pslite_io::Result<()> {
/// use pslite_core::{Duration, KvStore};
/// use pslite_io::{LocalCluster, NodeEvent};
/// let mut settings = LocalCluster::settings(2, 1);
/// settings.core = settings.core.heartbeat(Duration::from_millis(100), Duration::from_secs(1));
/// let cluster = LocalCluster::start_with(settings, Box::new(|_| KvStore::<f32>::new().into())).await?;
/// let mut news = cluster.workers[0].events();
/// cluster.servers[1].abort();
/// // Every node hears of the death, e.g. to stop using that server's keys.
/// assert_eq!(news.recv().await.unwrap(), NodeEvent::Dead(cluster.servers[1].info().id));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeEvent {
    /// A node was declared dead.
    Dead(NodeId),
    /// A replacement took a dead node's id.
    Recovered(NodeId),
    /// This node terminated.
    Terminated,
}

/// ps-lite's NodeInfo: who this node is and what it knows of the cluster.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> pslite_io::Result<()> {
/// use pslite_core::{NodeId, Rank, Role};
/// let cluster = pslite_io::LocalCluster::start(2, 1).await?;
/// // ps-lite's MyRank(): dense from 0 within the role, and the id follows it.
/// let mut ranks: Vec<Rank> = cluster.servers.iter().filter_map(|server| server.info().rank).collect();
/// ranks.sort();
/// assert_eq!(ranks, [Rank(0), Rank(1)]);
/// let info = cluster.servers[0].info();
/// assert_eq!((info.role, info.id), (Role::Server, NodeId::server(info.rank.unwrap())));
/// assert_eq!((info.num_servers, info.alive_servers, info.alive_workers), (2, 2, 1));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Info {
    /// This node's id (`NodeId::UNASSIGNED` until registered).
    pub id: NodeId,
    /// Rank within its role, once registered.
    pub rank: Option<Rank>,
    /// Role.
    pub role: Role,
    /// Life phase.
    pub phase: Phase,
    /// Configured servers.
    pub num_servers: u32,
    /// Configured workers.
    pub num_workers: u32,
    /// Servers currently alive.
    pub alive_servers: u32,
    /// Workers currently alive.
    pub alive_workers: u32,
}

/// What the driver publishes for handles to read at any time: who the
/// node is, and the replica table as of membership epoch `epoch`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Published {
    pub(crate) info: Info,
    pub(crate) epoch: u64,
    pub(crate) chains: pslite_core::Chains,
}

/// Answers SimpleApp requests on this node: `(head, body)` back.
/// [`start_with`](crate::start_with) installs one before the node can
/// receive anything; the `set_*simple_handler` methods of
/// [`NodeHandle`](crate::NodeHandle) take one like any closure.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> pslite_io::Result<()> {
/// use std::sync::{atomic::{AtomicI32, Ordering}, Arc};
/// use bytes::Bytes;
/// use pslite_core::{CustomerId, NodeId};
/// use pslite_io::SimpleHandler;
/// # let cluster = pslite_io::LocalCluster::start(1, 1).await?;
/// // The scheduler adds up the progress the workers report.
/// let done = Arc::new(AtomicI32::new(0));
/// let count = Arc::clone(&done);
/// let handler: SimpleHandler = Box::new(move |request| {
///     count.fetch_add(request.head, Ordering::SeqCst);
///     (0, Bytes::new())
/// });
/// cluster.scheduler.set_simple_handler(handler).await?;
/// cluster.workers[0].simple(CustomerId::DEFAULT, NodeId::SCHEDULER, 5, Bytes::new()).await?;
/// assert_eq!(done.load(Ordering::SeqCst), 5);
/// # Ok(()) }
/// ```
pub type SimpleHandler = Box<dyn FnMut(&SimpleRequest) -> (i32, Bytes) + Send>;

/// A server handle as the driver runs it.
pub(crate) enum KvServe {
    /// Called on the driver's task; its answer goes out at once.
    Inline(Box<dyn KvHandle>),
    /// Handed each request with the way back to the driver; the answer
    /// comes back later as an [`Answer`].
    Deferred(Box<dyn FnMut(ServerRequest, AnswerSender) + Send>),
    /// On a thread of its own, which takes requests and the states of
    /// replicated ranges to install in one queue, so it applies both in
    /// the order the node handed them out.
    Threaded(Box<dyn FnMut(Job) + Send>),
}

/// What a threaded handle's thread does next.
pub(crate) enum Job {
    /// Answer a request (exporting its keys' state when `export`),
    /// through `answers`.
    Request { request: ServerRequest, answers: AnswerSender, export: bool },
    /// Install a replicated range's state.
    Install(pslite_core::KvList),
    /// Read a chunk of a replicated range for a server catching up, and
    /// send it back through `answers`.
    Export {
        ticket: pslite_core::ExportTicket,
        keys: pslite_core::KeyRange,
        keys_max: usize,
        bytes_max: usize,
        answers: AnswerSender,
    },
    /// Drop what the handle holds in a range.
    Forget(pslite_core::KeyRange),
}

/// A SimpleApp handler as the driver runs it; see [`KvServe`].
pub(crate) enum SimpleServe {
    Inline(SimpleHandler),
    Deferred(Box<dyn FnMut(SimpleRequest, AnswerSender) + Send>),
}

/// An answer to a request the driver handed to a deferred handle.
#[derive(Debug)]
pub(crate) enum Answer {
    Kv {
        id: ServerRequestId,
        response: Response,
        state: Option<pslite_core::KvList>,
    },
    Simple {
        id: ServerRequestId,
        head: i32,
        body: Bytes,
    },
    /// A threaded handle read a chunk of a replicated range.
    Exported {
        ticket: pslite_core::ExportTicket,
        state: Option<pslite_core::KvList>,
    },
}

/// Where deferred handles send their answers. Unbounded so that answering
/// never blocks nor fails for lack of room, from any thread; the core
/// bounds it: every answer is for a request pending in the node, and
/// those are at most `requests_pending_max`.
pub(crate) type AnswerSender = mpsc::UnboundedSender<Answer>;

/// Commands carry timestamps chosen by the handle, so callers never wait
/// for the driver to learn them; a failure is reported to `wait`.
pub(crate) enum Command {
    Kv { call: KvCall },
    Simple { customer: CustomerId, ts: Timestamp, target: Target, head: i32, body: Bytes },
    Wait { customer: CustomerId, ts: Timestamp, reply: oneshot::Sender<Result<Completion>> },
    Barrier { group: Group, reply: oneshot::Sender<Result<Released>> },
    Finalize { reply: oneshot::Sender<Result<Released>> },
    WaitReady { reply: oneshot::Sender<Result<()>> },
    SetHandle { app: u32, handle: KvServe, reply: oneshot::Sender<()> },
    SetSimpleHandler { handler: SimpleServe, reply: oneshot::Sender<()> },
    Stats { reply: oneshot::Sender<Stats> },
    NextBarrierGeneration { group: Group, reply: oneshot::Sender<u64> },
}

/// What the connection tasks tell the driver.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// Complete frames, in the order they arrived on one connection.
    Frames(Vec<Bytes>),
    /// The connection we write to `addr` over failed.
    LinkLost(SocketAddr),
}

/// Frames for one peer, handed from the driver to its writer in one
/// message, with the queue room they take (released once written).
pub(crate) struct Outgoing {
    pub(crate) frames: Vec<Frame>,
    pub(crate) room: OwnedSemaphorePermit,
}
