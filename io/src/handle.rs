//! The user API of a running node: [`NodeHandle`].
//!
//! A handle talks to the node's driver only through commands (see `msg`),
//! so callers never share the node: a request is queued without waiting
//! for an answer, and `wait` asks the driver only when the request's
//! outcome is not recorded yet (see `outcomes`). Starting a node is in
//! `start`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use pslite_core::{CustomerId, Group, SimpleReply, Stats, Target, Timestamp};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::error::{Error, Result};
use crate::msg::{Command, Completion, Ended, Info, NodeEvent, Published, Released, SimpleHandler, SimpleServe};
use crate::outcomes::SharedOutcomes;
use crate::respond::{threaded_simple, ServerHandle};

/// The next timestamp of one customer; see [`NodeHandle::issue`].
pub(crate) type Clock = Arc<Mutex<u32>>;

/// A running node. Clone it freely; the node lives until `finalize` or
/// until every handle is dropped.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> pslite_io::Result<()> {
/// let cluster = pslite_io::LocalCluster::start(1, 1).await?;
/// let worker = cluster.workers[0].clone();
/// // Bound to loopback, a node advertises the address it listens on: what
/// // its peers dial.
/// assert!(worker.local_addr().ip().is_loopback());
/// assert_eq!(worker.advertised_addr(), worker.local_addr());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct NodeHandle {
    commands: mpsc::Sender<Command>,
    info: watch::Receiver<Published>,
    events: broadcast::Sender<NodeEvent>,
    local_addr: SocketAddr,
    advertised_addr: SocketAddr,
    clocks: Arc<Mutex<BTreeMap<CustomerId, Clock>>>,
    outcomes: SharedOutcomes,
    tasks: Arc<[tokio::task::AbortHandle; 2]>,
}

impl NodeHandle {
    /// A handle on the node whose tasks [`start_with`](crate::start_with)
    /// spawned: the driver's and the accept loop's, aborted by [`abort`](Self::abort).
    pub(crate) fn new(
        commands: mpsc::Sender<Command>,
        info: watch::Receiver<Published>,
        events: broadcast::Sender<NodeEvent>,
        local_addr: SocketAddr,
        advertised_addr: SocketAddr,
        outcomes: SharedOutcomes,
        tasks: [tokio::task::AbortHandle; 2],
    ) -> Self {
        let tasks = Arc::new(tasks);
        Self { commands, info, events, local_addr, advertised_addr, clocks: Arc::default(), outcomes, tasks }
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.map_err(|_| Error::Shutdown)?;
        rx.await.map_err(|_| Error::Shutdown)
    }

    /// Waits until the cluster is formed (or the node stops).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// use pslite_core::{Phase, Role};
    /// use pslite_io::{LocalCluster, Settings};
    /// let scheduler = pslite_io::start(LocalCluster::settings(1, 1)).await?;
    /// let joining = Settings::new(Role::Worker, scheduler.local_addr()).cluster(1, 1);
    /// let _server = pslite_io::start(joining.for_role(Role::Server)).await?;
    /// let worker = pslite_io::start(joining).await?;
    /// // `start` returned once bound; requests may go out once all registered.
    /// worker.wait_ready().await?;
    /// assert_eq!(worker.info().phase, Phase::Ready);
    /// # Ok(()) }
    /// ```
    pub async fn wait_ready(&self) -> Result<()> {
        self.call(|reply| Command::WaitReady { reply }).await?
    }

    /// The timestamp counter of `customer`, shared by every handle of this
    /// node, so timestamps are unique per customer however many callers.
    pub(crate) fn clock(&self, customer: CustomerId) -> Clock {
        let mut clocks = self.clocks.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(clocks.entry(customer).or_default())
    }

    /// Queues the command `make` builds for the next timestamp of `clock`,
    /// and returns that timestamp: no round trip to the node's task.
    /// Taking the timestamp and queueing happen in one step under the
    /// clock's lock (after room in the queue is reserved, so nothing waits
    /// while holding it), so the task receives each customer's timestamps
    /// in order, which the record of outcomes relies on.
    pub(crate) async fn issue(&self, clock: &Clock, make: impl FnOnce(Timestamp) -> Command) -> Result<Timestamp> {
        let permit = self.commands.reserve().await.map_err(|_| Error::Shutdown)?;
        let mut next = clock.lock().unwrap_or_else(PoisonError::into_inner);
        let ts = Timestamp(*next);
        *next = next.wrapping_add(1);
        permit.send(make(ts));
        Ok(ts)
    }

    /// Waits for request `ts` of `customer`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// use bytes::Bytes;
    /// use pslite_core::{ApiMisuse, CustomerId, Group, RequestError};
    /// use pslite_io::{Completion, Error};
    /// # let cluster = pslite_io::LocalCluster::start(1, 1).await?;
    /// let (node, customer) = (&cluster.workers[0], CustomerId::DEFAULT);
    /// let ts = node.simple_request(customer, Group::SERVERS, 1, Bytes::new()).await?;
    /// // One wait for every kind of request; the completion says which it was.
    /// assert!(matches!(node.wait(customer, ts).await?, Completion::Simple(replies) if replies.len() == 1));
    /// // Its outcome is taken: a second wait is a mistake, reported at once.
    /// let again = node.wait(customer, ts).await;
    /// assert!(matches!(again, Err(Error::Request(RequestError::ApiMisuse(ApiMisuse::UnknownTimestamp { .. })))));
    /// # Ok(()) }
    /// ```
    pub async fn wait(&self, customer: CustomerId, ts: Timestamp) -> Result<Completion> {
        // Already in: no need to ask the node's task.
        let taken = self.outcomes.lock().take(customer, ts);
        match taken {
            Some(result) => result,
            None => self.call(|reply| Command::Wait { customer, ts, reply }).await?,
        }
    }

    /// Sends a SimpleApp request; returns its timestamp at once.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// use bytes::Bytes;
    /// use pslite_core::{CustomerId, Group, NodeId};
    /// # let cluster = pslite_io::LocalCluster::start(1, 1).await?;
    /// let (node, customer) = (&cluster.workers[0], CustomerId::new(1, 0));
    /// // Both requests are in flight before either is waited for.
    /// let to_servers = node.simple_request(customer, Group::SERVERS, 1, Bytes::from_static(b"save")).await?;
    /// let to_scheduler = node.simple_request(customer, NodeId::SCHEDULER, 2, Bytes::new()).await?;
    /// assert!(to_servers.is_before(to_scheduler));
    /// node.wait(customer, to_scheduler).await?;
    /// node.wait(customer, to_servers).await?;
    /// # Ok(()) }
    /// ```
    pub async fn simple_request(
        &self,
        customer: CustomerId,
        target: impl Into<Target>,
        head: i32,
        body: Bytes,
    ) -> Result<Timestamp> {
        let target = target.into();
        let clock = self.clock(customer);
        self.issue(&clock, |ts| Command::Simple { customer, ts, target, head, body }).await
    }

    /// Sends a SimpleApp request and waits for every reply.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// use bytes::Bytes;
    /// use pslite_core::{CustomerId, NodeId};
    /// # let cluster = pslite_io::LocalCluster::start(1, 1).await?;
    /// let worker = &cluster.workers[0];
    /// let replies = worker.simple(CustomerId::DEFAULT, NodeId::SCHEDULER, 7, Bytes::from_static(b"10%")).await?;
    /// assert_eq!(replies[0].from, NodeId::SCHEDULER);
    /// // No handler is set there: the default answer echoes the head, no body.
    /// assert_eq!((replies[0].head, replies[0].body.len()), (7, 0));
    /// # Ok(()) }
    /// ```
    pub async fn simple(
        &self,
        customer: CustomerId,
        target: impl Into<Target>,
        head: i32,
        body: Bytes,
    ) -> Result<Vec<SimpleReply>> {
        let ts = self.simple_request(customer, target, head, body).await?;
        match self.wait(customer, ts).await? {
            Completion::Simple(replies) => Ok(replies),
            Completion::Done | Completion::Pulled { .. } => {
                let misuse = pslite_core::ApiMisuse::WrongKind { ts: ts.0, expected: "SimpleApp request" };
                Err(Error::Request(misuse.into()))
            }
        }
    }

    /// A barrier over `group`; returns when it is released: when every
    /// member arrived, or (under the barrier policy) without dead members
    /// that were not replaced in time, which the report names. An error
    /// when the policy fails barriers on a death, or the cluster is lost.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// use pslite_core::{ApiMisuse, Group, RequestError};
    /// use pslite_io::Error;
    /// let cluster = pslite_io::LocalCluster::start(1, 2).await?;
    /// let (a, b) = (&cluster.workers[0], &cluster.workers[1]);
    /// // Each returns once both workers arrived.
    /// let (released_a, released_b) = tokio::join!(a.barrier(Group::WORKERS), b.barrier(Group::WORKERS));
    /// assert!(released_a?.is_complete() && released_b?.is_complete());
    /// // A server would wait among workers forever: refused at once.
    /// let refused = cluster.servers[0].barrier(Group::WORKERS).await;
    /// assert!(matches!(refused, Err(Error::Request(RequestError::ApiMisuse(ApiMisuse::NotInGroup { .. })))));
    /// # Ok(()) }
    /// ```
    pub async fn barrier(&self, group: Group) -> Result<Released> {
        self.call(|reply| Command::Barrier { group, reply }).await?
    }

    /// A barrier over everyone, then shutdown. Returns once terminated.
    ///
    /// A dead member's replacement is waited for up to `recovery_timeout`
    /// (`PS_RECOVERY_TIMEOUT`); after that the job finishes among the
    /// survivors, and the report names who was missing. Before the cluster
    /// is formed it fails with [`ApiMisuse::NotReady`](pslite_core::ApiMisuse::NotReady),
    /// so call [`wait_ready`](Self::wait_ready) first.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// use pslite_io::LocalCluster;
    /// let LocalCluster { scheduler, servers, workers } = LocalCluster::start(1, 1).await?;
    /// // Every node finalizes; each returns once all arrived.
    /// let (a, b, c) = tokio::join!(scheduler.finalize(), servers[0].finalize(), workers[0].finalize());
    /// assert!(a?.is_complete() && b?.is_complete() && c?.is_complete());
    /// // Asked again, a finalized node repeats its report.
    /// assert!(workers[0].finalize().await?.is_complete());
    /// # Ok(()) }
    /// ```
    pub async fn finalize(&self) -> Result<Released> {
        match self.call(|reply| Command::Finalize { reply }).await {
            Ok(result) => result,
            // The node's task has stopped: report how it ended (an aborted
            // node recorded nothing, and stays `Shutdown`).
            Err(Error::Shutdown) => self.outcomes.lock().ended().map_or(Err(Error::Shutdown), Ended::outcome),
            Err(error) => Err(error),
        }
    }

    /// Installs (or replaces) the server handle of application `app`;
    /// returns once the node uses it, so no request that arrives later
    /// meets the old one (requests a threaded or deferred handle already
    /// took are still answered by it).
    ///
    /// A [`KvHandle`](pslite_core::KvHandle) runs on the node's own task:
    /// right for quick handles like the default store. A slow one would
    /// hold up every other request and the node's heartbeats; give it a
    /// thread ([`ServerHandle::threaded`]) or answer later
    /// ([`ServerHandle::deferred`]). No request reaches a server before
    /// [`LocalCluster::start_with`](crate::LocalCluster::start_with)
    /// returns, so handles set right after it serve from the first.
    ///
    /// ```no_run
    /// # async fn run(node: pslite_io::NodeHandle, model: impl pslite_core::KvHandle) -> pslite_io::Result<()> {
    /// use pslite_io::ServerHandle;
    /// node.set_handle(0, pslite_core::KvStore::<f32>::new()).await?;
    /// node.set_handle(1, ServerHandle::threaded(model)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn set_handle(&self, app: u32, handle: impl Into<ServerHandle>) -> Result<()> {
        let handle = handle.into().install(app)?;
        self.call(|reply| Command::SetHandle { app, handle, reply }).await
    }

    /// Installs the SimpleApp handler, run on the node's task; returns
    /// once the node uses it. For a handler that takes long, see
    /// [`set_threaded_simple_handler`](Self::set_threaded_simple_handler).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// use bytes::Bytes;
    /// use pslite_core::{CustomerId, Group};
    /// let cluster = pslite_io::LocalCluster::start(2, 1).await?;
    /// for server in &cluster.servers {
    ///     server.set_simple_handler(|request| (request.head + 1, request.body.clone())).await?;
    /// }
    /// let body = Bytes::from_static(b"ping");
    /// let replies = cluster.workers[0].simple(CustomerId::DEFAULT, Group::SERVERS, 41, body).await?;
    /// // One reply per server, each from the handler.
    /// assert_eq!(replies.len(), 2);
    /// assert!(replies.iter().all(|reply| reply.head == 42 && reply.body == "ping"));
    /// # Ok(()) }
    /// ```
    pub async fn set_simple_handler(
        &self,
        handler: impl FnMut(&pslite_core::SimpleRequest) -> (i32, Bytes) + Send + 'static,
    ) -> Result<()> {
        let handler = SimpleServe::Inline(Box::new(handler));
        self.call(|reply| Command::SetSimpleHandler { handler, reply }).await
    }

    /// Installs the SimpleApp handler on a thread of its own, which
    /// answers requests one after another: what
    /// [`ServerHandle::threaded`] is to a server handle, so a slow handler
    /// delays neither heartbeats nor other requests. The thread ends when
    /// the node ends or the handler is replaced. A panic in `handler` ends
    /// the thread, and requests it does not answer fail only at the
    /// requester's `request_timeout` (SimpleApp has no refusal).
    ///
    /// ```no_run
    /// # async fn run(node: pslite_io::NodeHandle) -> pslite_io::Result<()> {
    /// node.set_threaded_simple_handler(|request| {
    ///     // e.g. write a checkpoint, then say so
    ///     (request.head, bytes::Bytes::from_static(b"saved"))
    /// })
    /// .await?;
    /// # Ok(()) }
    /// ```
    pub async fn set_threaded_simple_handler(
        &self,
        handler: impl FnMut(&pslite_core::SimpleRequest) -> (i32, Bytes) + Send + 'static,
    ) -> Result<()> {
        let handler: SimpleHandler = Box::new(handler);
        let handler = threaded_simple(handler)?;
        self.call(|reply| Command::SetSimpleHandler { handler, reply }).await
    }

    /// The node's counters.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// # let cluster = pslite_io::LocalCluster::start(1, 1).await?;
    /// let node = &cluster.workers[0];
    /// let before = node.stats().await?;
    /// cluster.worker::<f32>(0).push_wait(&[1], &[1.0]).await?;
    /// let after = node.stats().await?;
    /// // The push went out and its answer came back; nothing was garbled.
    /// assert!(after.frames_out > before.frames_out && after.frames_in > before.frames_in);
    /// assert_eq!(after.decode_errors, 0);
    /// # Ok(()) }
    /// ```
    pub async fn stats(&self) -> Result<Stats> {
        self.call(|reply| Command::Stats { reply }).await
    }

    /// The generation this node's next barrier over `group` will have: 0
    /// in a new cluster, and for a replacement the barrier the survivors
    /// wait in or the next one they will enter. A program that resumes
    /// after a crash compares it with its own count of barriers to skip
    /// (or redo) the steps the cluster took without it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// use pslite_core::Group;
    /// # let cluster = pslite_io::LocalCluster::start(1, 1).await?;
    /// let worker = &cluster.workers[0];
    /// assert_eq!(worker.next_barrier_generation(Group::WORKERS).await?, 0);
    /// assert!(worker.barrier(Group::WORKERS).await?.is_complete());
    /// assert_eq!(worker.next_barrier_generation(Group::WORKERS).await?, 1);
    /// // Counted per group.
    /// assert_eq!(worker.next_barrier_generation(Group::ALL).await?, 0);
    /// # Ok(()) }
    /// ```
    pub async fn next_barrier_generation(&self, group: Group) -> Result<u64> {
        self.call(|reply| Command::NextBarrierGeneration { group, reply }).await
    }

    /// Who this node is, as of now.
    pub fn info(&self) -> Info {
        self.info.borrow().info
    }

    /// The replica table as this node holds it now: which servers keep
    /// each key range (`Config::replicas` of them while none died), head
    /// first, and which one is learning it. Empty before the node joined
    /// a cluster.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// use pslite_io::LocalCluster;
    /// let cluster = LocalCluster::start(2, 1).await?;
    /// let chains = cluster.workers[0].chains();
    /// // One copy of each range by default, on the server of its rank.
    /// assert_eq!(chains.as_slice().len(), 2);
    /// assert!(chains.as_slice().iter().all(|chain| chain.members().len() == 1));
    /// cluster.finalize().await?;
    /// # Ok(()) }
    /// ```
    pub fn chains(&self) -> pslite_core::Chains {
        self.info.borrow().chains.clone()
    }

    /// Waits until the replica table is one `ready` accepts (at once if
    /// the current one is) and returns it: a server replaced after a
    /// death has caught up once every range is back to
    /// `Config::replicas` copies. [`Error::Shutdown`] if the node ends
    /// first.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// use pslite_io::LocalCluster;
    /// let cluster = LocalCluster::start(2, 1).await?;
    /// let whole = |chains: &pslite_core::Chains| chains.as_slice().iter().all(|c| c.members().len() == 1);
    /// let chains = cluster.workers[0].wait_chains(whole).await?;
    /// assert_eq!(chains.as_slice().len(), 2);
    /// cluster.finalize().await?;
    /// # Ok(()) }
    /// ```
    pub async fn wait_chains(
        &self,
        mut ready: impl FnMut(&pslite_core::Chains) -> bool,
    ) -> Result<pslite_core::Chains> {
        let mut info = self.info.clone();
        let published = info.wait_for(|p| ready(&p.chains)).await.map_err(|_| Error::Shutdown)?;
        Ok(published.chains.clone())
    }

    /// Membership news from now on.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// use pslite_io::{LocalCluster, NodeEvent};
    /// let cluster = LocalCluster::start(1, 1).await?;
    /// // Subscribe first: news from before the call is not replayed.
    /// let mut news = cluster.workers[0].events();
    /// cluster.finalize().await?;
    /// assert_eq!(news.recv().await.expect("sent before finalize returned"), NodeEvent::Terminated);
    /// # Ok(()) }
    /// ```
    pub fn events(&self) -> broadcast::Receiver<NodeEvent> {
        self.events.subscribe()
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address this node gave the scheduler for its peers to dial:
    /// what a deployment must check when nodes cannot reach each other
    /// (see [`env`](crate::env) for how it is chosen).
    pub fn advertised_addr(&self) -> SocketAddr {
        self.advertised_addr
    }

    /// Stops the node at once, as a crash would: no finalize, no goodbye.
    /// Its listener closes and its connections drop; peers find out through
    /// heartbeats. For failure tests and for abandoning a node.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// # let cluster = pslite_io::LocalCluster::start(1, 1).await?;
    /// let worker = &cluster.workers[0];
    /// worker.abort();
    /// while !worker.is_closed() {
    ///     tokio::task::yield_now().await;
    /// }
    /// // A crashed node has nothing to report: no made-up success.
    /// assert!(matches!(worker.finalize().await, Err(pslite_io::Error::Shutdown)));
    /// # Ok(()) }
    /// ```
    pub fn abort(&self) {
        for task in self.tasks.iter() {
            task.abort();
        }
    }

    /// Whether the node's task has ended.
    pub fn is_closed(&self) -> bool {
        self.commands.is_closed()
    }
}
