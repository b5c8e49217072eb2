//! The blocking API, for code that is not async (ps-lite's calling style).
//!
//! A [`Runtime`] owns a small tokio runtime; every type here wraps its
//! async namesake and runs each call to completion on that runtime, with
//! the same names and the same meaning, so the async documentation applies
//! word for word. Call them from ordinary threads, never from inside an
//! async task (tokio panics if a runtime is entered twice).
//!
//! ```no_run
//! # fn main() -> pslite_io::Result<()> {
//! use pslite_io::blocking::Runtime;
//! let runtime = Runtime::new(2)?;
//! let cluster = runtime.local_cluster(1, 1)?;
//! let worker = cluster.worker::<f32>(0);
//! let ts = worker.push(&[1, 2], &[0.5, 1.5])?;
//! worker.wait(ts)?;
//! assert_eq!(worker.pull_wait(&[1, 2])?, vec![0.5, 1.5]);
//! assert!(cluster.finalize()?.is_complete());
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use pslite_core::{
    CustomerId, DType, Element, Group, Keys, Lens, SimpleReply, SimpleRequest, Stats, Target, Timestamp, Values,
};
use tokio::sync::broadcast;

use crate::error::Result;
use crate::handle::NodeHandle;
use crate::local::{HandleFactory, LocalCluster as AsyncLocalCluster};
use crate::msg::{Completion, Info, NodeEvent, Released};
use crate::respond::ServerHandle;
use crate::settings::Settings;
use crate::worker::{KvWorker as AsyncKvWorker, Pulled, RawKvWorker as AsyncRawKvWorker, RawPulled};

/// A tokio runtime for blocking use; clones share it, and it stops when
/// the last clone (including those inside the handles made from it) goes.
///
/// ```
/// # fn main() -> pslite_io::Result<()> {
/// let runtime = pslite_io::blocking::Runtime::new(2)?;
/// let cluster = runtime.local_cluster(1, 1)?;
/// let worker = cluster.worker::<f32>(0);
/// // Handles carry the runtime with them, to any thread.
/// let pusher = std::thread::spawn(move || worker.push_wait(&[1], &[1.0]));
/// pusher.join().expect("the pushing thread")?;
/// assert_eq!(cluster.worker::<f32>(0).pull_wait(&[1])?, [1.0]);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Runtime {
    runtime: Arc<tokio::runtime::Runtime>,
}

impl Runtime {
    /// A multi-threaded runtime with `threads` workers (at least one).
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// use pslite_io::blocking::Runtime;
    /// // Threads for the nodes' tasks: one is plenty for a small local cluster.
    /// let runtime = Runtime::new(1)?;
    /// let cluster = runtime.local_cluster(1, 1)?;
    /// assert_eq!(cluster.worker::<f32>(0).pull_wait(&[3])?, [0.0]);
    /// # Ok(()) }
    /// ```
    pub fn new(threads: usize) -> Result<Self> {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(threads.max(1)).enable_all().build()?;
        Ok(Self { runtime: Arc::new(runtime) })
    }

    /// Runs any future of this crate to completion.
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// # let cluster = runtime.local_cluster(1, 1)?;
    /// // The async API is one call away: here, two pulls awaited together.
    /// let both = runtime.block_on(async {
    ///     let worker = cluster.inner().worker::<f32>(0);
    ///     tokio::try_join!(worker.pull_wait(&[1]), worker.pull_wait(&[2]))
    /// })?;
    /// assert_eq!(both, (vec![0.0], vec![0.0]));
    /// # Ok(()) }
    /// ```
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Starts a node from `settings` and waits until the cluster is ready
    /// (see [`crate::start`]).
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// use pslite_core::{Phase, Role};
    /// use pslite_io::{LocalCluster, Settings};
    /// let scheduler = runtime.block_on(pslite_io::start(LocalCluster::settings(1, 1)))?;
    /// let joining = Settings::new(Role::Server, scheduler.local_addr()).cluster(1, 1);
    /// let _server = runtime.block_on(pslite_io::start(joining.clone()))?;
    /// // Returns once the whole cluster is ready (the async `start` only binds).
    /// let worker = runtime.start(joining.for_role(Role::Worker))?;
    /// assert_eq!(worker.info().phase, Phase::Ready);
    /// # Ok(()) }
    /// ```
    pub fn start(&self, settings: Settings) -> Result<Node> {
        let node = self.block_on(async {
            let node = crate::start(settings).await?;
            node.wait_ready().await?;
            Ok::<_, crate::Error>(node)
        })?;
        Ok(self.node(node))
    }

    /// Starts a node with server handles and a SimpleApp handler installed
    /// before anything arrives, and waits until the cluster is ready (see
    /// [`crate::start_with`]).
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// use pslite_core::{CustomerId, KvStore, Role};
    /// use pslite_io::{LocalCluster, ServerHandle, Settings};
    /// let scheduler = runtime.block_on(pslite_io::start(LocalCluster::settings(1, 1)))?;
    /// let joining = Settings::new(Role::Worker, scheduler.local_addr()).cluster(1, 1);
    /// let worker = runtime.node(runtime.block_on(pslite_io::start(joining.clone()))?);
    /// // Two tables, both serving from the first request; app 1 on a thread.
    /// let handles = vec![(0, KvStore::<f32>::new().into()), (1, ServerHandle::threaded(KvStore::<i64>::new()))];
    /// let _server = runtime.start_with(joining.for_role(Role::Server), handles, None)?;
    /// worker.wait_ready()?;
    /// assert_eq!(worker.worker::<i64>(CustomerId::new(1, 0)).push_pull_wait(&[1], &[3])?, [3]);
    /// # Ok(()) }
    /// ```
    pub fn start_with(
        &self,
        settings: Settings,
        handles: Vec<(u32, ServerHandle)>,
        simple_handler: Option<crate::SimpleHandler>,
    ) -> Result<Node> {
        let node = self.block_on(async {
            let node = crate::start_with(settings, handles, simple_handler).await?;
            node.wait_ready().await?;
            Ok::<_, crate::Error>(node)
        })?;
        Ok(self.node(node))
    }

    /// Starts a server node with `handle` for application 0 and waits until
    /// the cluster is ready (see [`crate::KvServer::start`]).
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// use pslite_core::{CustomerId, KvStore, Role};
    /// use pslite_io::{LocalCluster, Settings};
    /// let scheduler = runtime.block_on(pslite_io::start(LocalCluster::settings(1, 1)))?;
    /// let joining = Settings::new(Role::Worker, scheduler.local_addr()).cluster(1, 1);
    /// let worker = runtime.node(runtime.block_on(pslite_io::start(joining.clone()))?);
    /// // Returns once the cluster is ready, its handle serving from the first request.
    /// let _server = runtime.server(joining.for_role(Role::Server), KvStore::<i32>::new())?;
    /// worker.wait_ready()?;
    /// let worker = worker.worker::<i32>(CustomerId::DEFAULT);
    /// worker.push_wait(&[1], &[5])?;
    /// assert_eq!(worker.pull_wait(&[1])?, [5]);
    /// # Ok(()) }
    /// ```
    pub fn server(&self, settings: Settings, handle: impl Into<ServerHandle>) -> Result<Node> {
        let node = self.block_on(async {
            let server = crate::KvServer::start(settings, handle).await?;
            server.node().wait_ready().await?;
            Ok::<_, crate::Error>(server.node().clone())
        })?;
        Ok(self.node(node))
    }

    /// Starts a local cluster with the default store (see
    /// [`crate::LocalCluster::start`]).
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// use pslite_core::Phase;
    /// let cluster = runtime.local_cluster(2, 1)?;
    /// // Every node is ready when it returns.
    /// assert_eq!(cluster.server(1).info().phase, Phase::Ready);
    /// # Ok(()) }
    /// ```
    pub fn local_cluster(&self, servers: u32, workers: u32) -> Result<LocalCluster> {
        let inner = self.block_on(AsyncLocalCluster::start(servers, workers))?;
        Ok(LocalCluster { runtime: self.clone(), inner })
    }

    /// Starts a local cluster from `settings`, each server's handle built
    /// by `make_handle` (see [`crate::LocalCluster::start_with`]).
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// use pslite_core::KvStore;
    /// use pslite_io::LocalCluster;
    /// // Servers that sum i64 counters.
    /// let settings = LocalCluster::settings(1, 1);
    /// let cluster = runtime.local_cluster_with(settings, Box::new(|_| KvStore::<i64>::new().into()))?;
    /// assert_eq!(cluster.worker::<i64>(0).push_pull_wait(&[1], &[2])?, [2]);
    /// # Ok(()) }
    /// ```
    pub fn local_cluster_with(&self, settings: Settings, make_handle: HandleFactory) -> Result<LocalCluster> {
        let inner = self.block_on(AsyncLocalCluster::start_with(settings, make_handle))?;
        Ok(LocalCluster { runtime: self.clone(), inner })
    }

    /// The blocking form of a running node's handle.
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// # let cluster = runtime.local_cluster(1, 1)?;
    /// use pslite_core::Role;
    /// // An async handle, from wherever it came, made blocking.
    /// let node = runtime.node(cluster.inner().workers[0].clone());
    /// assert_eq!(node.info().role, Role::Worker);
    /// # Ok(()) }
    /// ```
    pub fn node(&self, node: NodeHandle) -> Node {
        Node { runtime: self.clone(), inner: node }
    }

    /// The blocking form of a typed worker.
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// # let cluster = runtime.local_cluster(1, 1)?;
    /// let worker = runtime.worker(cluster.inner().worker::<f32>(0));
    /// assert_eq!(worker.push_pull_wait(&[1], &[1.0])?, [1.0]);
    /// # Ok(()) }
    /// ```
    pub fn worker<T: Element>(&self, worker: AsyncKvWorker<T>) -> KvWorker<T> {
        KvWorker { runtime: self.clone(), inner: worker }
    }

    /// The blocking form of an untyped worker.
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// # let cluster = runtime.local_cluster(1, 1)?;
    /// use pslite_core::{Keys, Values};
    /// let raw = runtime.raw_worker(cluster.inner().raw_worker(0));
    /// raw.wait(raw.zpush(Keys::from_slice(&[1]), Values::from_slice(&[1.0f32]), None, 0)?)?;
    /// # Ok(()) }
    /// ```
    pub fn raw_worker(&self, worker: AsyncRawKvWorker) -> RawKvWorker {
        RawKvWorker { runtime: self.clone(), inner: worker }
    }
}

/// Blocking form of [`crate::LocalCluster`].
///
/// ```
/// # fn main() -> pslite_io::Result<()> {
/// # let runtime = pslite_io::blocking::Runtime::new(1)?;
/// use pslite_core::Role;
/// let cluster = runtime.local_cluster(2, 1)?;
/// assert_eq!(cluster.scheduler().info().role, Role::Scheduler);
/// assert_eq!(cluster.server(1).info().role, Role::Server);
/// assert_eq!(cluster.worker_node(0).info().role, Role::Worker);
/// // The async handles, for what has no blocking form.
/// assert_eq!(cluster.inner().nodes().count(), 4);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct LocalCluster {
    runtime: Runtime,
    inner: AsyncLocalCluster,
}

impl LocalCluster {
    /// The async cluster, for its node handles.
    pub fn inner(&self) -> &AsyncLocalCluster {
        &self.inner
    }

    /// The scheduler.
    pub fn scheduler(&self) -> Node {
        self.runtime.node(self.inner.scheduler.clone())
    }

    /// The server node at `index` (start order).
    pub fn server(&self, index: usize) -> Node {
        self.runtime.node(self.inner.servers[index].clone())
    }

    /// The worker node at `index` (start order).
    pub fn worker_node(&self, index: usize) -> Node {
        self.runtime.node(self.inner.workers[index].clone())
    }

    /// See [`crate::LocalCluster::worker`].
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// let cluster = runtime.local_cluster(1, 2)?;
    /// cluster.worker::<f32>(0).push_wait(&[1], &[1.0])?;
    /// // Another worker node, the same servers.
    /// assert_eq!(cluster.worker::<f32>(1).pull_wait(&[1])?, [1.0]);
    /// # Ok(()) }
    /// ```
    pub fn worker<T: Element>(&self, index: usize) -> KvWorker<T> {
        self.runtime.worker(self.inner.worker(index))
    }

    /// See [`crate::LocalCluster::raw_worker`].
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// # let cluster = runtime.local_cluster(1, 1)?;
    /// use pslite_core::{DType, Keys};
    /// cluster.worker::<f32>(0).push_wait(&[1], &[2.0])?;
    /// // The same customer, read untyped.
    /// let raw = cluster.raw_worker(0);
    /// let pulled = raw.wait_pull(raw.zpull(Keys::from_slice(&[1]), DType::F32, 0)?)?;
    /// assert_eq!(pulled.values.to_vec::<f32>(), Some(vec![2.0]));
    /// # Ok(()) }
    /// ```
    pub fn raw_worker(&self, index: usize) -> RawKvWorker {
        self.runtime.raw_worker(self.inner.raw_worker(index))
    }

    /// See [`crate::LocalCluster::finalize`].
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// let cluster = runtime.local_cluster(1, 1)?;
    /// assert!(cluster.finalize()?.is_complete());
    /// # Ok(()) }
    /// ```
    pub fn finalize(self) -> Result<Released> {
        self.runtime.block_on(self.inner.finalize())
    }
}

/// Blocking form of [`NodeHandle`]; clone it freely.
///
/// ```
/// # fn main() -> pslite_io::Result<()> {
/// # let runtime = pslite_io::blocking::Runtime::new(1)?;
/// # let cluster = runtime.local_cluster(1, 1)?;
/// use pslite_core::Role;
/// let node = cluster.worker_node(0);
/// assert_eq!(node.info().role, Role::Worker);
/// // Bound to loopback, it advertises the address it listens on.
/// assert_eq!(node.advertised_addr(), node.local_addr());
/// assert!(!node.is_closed());
/// assert_eq!(node.inner().info(), node.info());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Node {
    runtime: Runtime,
    inner: NodeHandle,
}

impl Node {
    /// The async handle.
    pub fn inner(&self) -> &NodeHandle {
        &self.inner
    }

    /// A typed worker on customer `customer` of this (worker) node.
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// # let cluster = runtime.local_cluster(1, 1)?;
    /// # let node = cluster.worker_node(0);
    /// use pslite_core::CustomerId;
    /// // Two tables on one node: each its own customer.
    /// let weights = node.worker::<f32>(CustomerId::new(0, 0));
    /// let steps = node.worker::<f32>(CustomerId::new(0, 1));
    /// assert_ne!(weights.inner().customer(), steps.inner().customer());
    /// weights.push_wait(&[1], &[0.5])?;
    /// # Ok(()) }
    /// ```
    pub fn worker<T: Element>(&self, customer: CustomerId) -> KvWorker<T> {
        self.runtime.worker(AsyncKvWorker::new(self.inner.clone(), customer))
    }

    /// An untyped worker on customer `customer` of this (worker) node.
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// # let cluster = runtime.local_cluster(1, 1)?;
    /// # let node = cluster.worker_node(0);
    /// use pslite_core::{CustomerId, DType, Keys};
    /// let raw = node.raw_worker(CustomerId::DEFAULT);
    /// let pulled = raw.wait_pull(raw.zpull(Keys::from_slice(&[1]), DType::F32, 0)?)?;
    /// assert_eq!(pulled.values.to_vec::<f32>(), Some(vec![0.0]));
    /// # Ok(()) }
    /// ```
    pub fn raw_worker(&self, customer: CustomerId) -> RawKvWorker {
        self.runtime.raw_worker(AsyncRawKvWorker::new(self.inner.clone(), customer))
    }

    /// See [`NodeHandle::wait_ready`].
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// use pslite_core::Role;
    /// use pslite_io::{LocalCluster, Settings};
    /// let scheduler = runtime.block_on(pslite_io::start(LocalCluster::settings(1, 1)))?;
    /// let joining = Settings::new(Role::Server, scheduler.local_addr()).cluster(1, 1);
    /// let server = runtime.node(runtime.block_on(pslite_io::start(joining.clone()))?);
    /// let worker = runtime.node(runtime.block_on(pslite_io::start(joining.for_role(Role::Worker)))?);
    /// // Both started and registering; each is usable once ready.
    /// server.wait_ready()?;
    /// worker.wait_ready()?;
    /// assert_eq!(worker.info().num_servers, 1);
    /// # Ok(()) }
    /// ```
    pub fn wait_ready(&self) -> Result<()> {
        self.runtime.block_on(self.inner.wait_ready())
    }

    /// See [`NodeHandle::wait`].
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// # let cluster = runtime.local_cluster(1, 1)?;
    /// # let node = cluster.worker_node(0);
    /// use pslite_core::{CustomerId, Group};
    /// use pslite_io::Completion;
    /// let ts = node.simple_request(CustomerId::DEFAULT, Group::SERVERS, 1, bytes::Bytes::new())?;
    /// assert!(matches!(node.wait(CustomerId::DEFAULT, ts)?, Completion::Simple(replies) if replies.len() == 1));
    /// # Ok(()) }
    /// ```
    pub fn wait(&self, customer: CustomerId, ts: Timestamp) -> Result<Completion> {
        self.runtime.block_on(self.inner.wait(customer, ts))
    }

    /// See [`NodeHandle::simple_request`].
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// # let cluster = runtime.local_cluster(1, 1)?;
    /// # let node = cluster.worker_node(0);
    /// use pslite_core::{CustomerId, NodeId};
    /// let customer = CustomerId::new(1, 0);
    /// // Returns at once; the wait can come later.
    /// let ts = node.simple_request(customer, NodeId::SCHEDULER, 3, bytes::Bytes::new())?;
    /// node.wait(customer, ts)?;
    /// # Ok(()) }
    /// ```
    pub fn simple_request(
        &self,
        customer: CustomerId,
        target: impl Into<Target>,
        head: i32,
        body: Bytes,
    ) -> Result<Timestamp> {
        self.runtime.block_on(self.inner.simple_request(customer, target, head, body))
    }

    /// See [`NodeHandle::simple`].
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// # let cluster = runtime.local_cluster(1, 1)?;
    /// # let node = cluster.worker_node(0);
    /// use pslite_core::{CustomerId, NodeId};
    /// let replies = node.simple(CustomerId::DEFAULT, NodeId::SCHEDULER, 7, bytes::Bytes::new())?;
    /// // No handler there: the default answer echoes the head.
    /// assert_eq!((replies[0].from, replies[0].head), (NodeId::SCHEDULER, 7));
    /// # Ok(()) }
    /// ```
    pub fn simple(
        &self,
        customer: CustomerId,
        target: impl Into<Target>,
        head: i32,
        body: Bytes,
    ) -> Result<Vec<SimpleReply>> {
        self.runtime.block_on(self.inner.simple(customer, target, head, body))
    }

    /// See [`NodeHandle::barrier`].
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// use pslite_core::Group;
    /// let cluster = runtime.local_cluster(1, 2)?;
    /// let other = cluster.worker_node(1);
    /// let waiting = std::thread::spawn(move || other.barrier(Group::WORKERS));
    /// // Both return once both arrived.
    /// assert!(cluster.worker_node(0).barrier(Group::WORKERS)?.is_complete());
    /// assert!(waiting.join().expect("the other worker")?.is_complete());
    /// # Ok(()) }
    /// ```
    pub fn barrier(&self, group: Group) -> Result<Released> {
        self.runtime.block_on(self.inner.barrier(group))
    }

    /// See [`NodeHandle::finalize`].
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// let cluster = runtime.local_cluster(1, 1)?;
    /// let finishing: Vec<_> = [cluster.scheduler(), cluster.server(0), cluster.worker_node(0)]
    ///     .map(|node| std::thread::spawn(move || node.finalize()))
    ///     .into();
    /// // Each returns once every node finalized.
    /// for node in finishing {
    ///     assert!(node.join().expect("a finalizing thread")?.is_complete());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn finalize(&self) -> Result<Released> {
        self.runtime.block_on(self.inner.finalize())
    }

    /// See [`NodeHandle::set_handle`].
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// # let cluster = runtime.local_cluster(1, 1)?;
    /// use pslite_core::{CustomerId, KvStore};
    /// // A second table, of i64 counters, on application 1.
    /// cluster.server(0).set_handle(1, KvStore::<i64>::new())?;
    /// let counts = cluster.worker_node(0).worker::<i64>(CustomerId::new(1, 0));
    /// assert_eq!(counts.push_pull_wait(&[1], &[3])?, [3]);
    /// # Ok(()) }
    /// ```
    pub fn set_handle(&self, app: u32, handle: impl Into<ServerHandle>) -> Result<()> {
        self.runtime.block_on(self.inner.set_handle(app, handle))
    }

    /// See [`NodeHandle::set_threaded_simple_handler`].
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// # let cluster = runtime.local_cluster(1, 1)?;
    /// use pslite_core::{CustomerId, NodeId};
    /// // A slow handler, on its own thread: the scheduler's heartbeats go on.
    /// cluster.scheduler().set_threaded_simple_handler(|request| {
    ///     std::thread::sleep(std::time::Duration::from_millis(10));
    ///     (request.head * 2, bytes::Bytes::new())
    /// })?;
    /// let replies = cluster.worker_node(0).simple(CustomerId::DEFAULT, NodeId::SCHEDULER, 21, bytes::Bytes::new())?;
    /// assert_eq!(replies[0].head, 42);
    /// # Ok(()) }
    /// ```
    pub fn set_threaded_simple_handler(
        &self,
        handler: impl FnMut(&SimpleRequest) -> (i32, Bytes) + Send + 'static,
    ) -> Result<()> {
        self.runtime.block_on(self.inner.set_threaded_simple_handler(handler))
    }

    /// See [`NodeHandle::set_simple_handler`].
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// # let cluster = runtime.local_cluster(1, 1)?;
    /// use pslite_core::{CustomerId, NodeId};
    /// cluster.scheduler().set_simple_handler(|request| (request.head, request.body.clone()))?;
    /// let body = bytes::Bytes::from_static(b"epoch 3 done");
    /// let replies = cluster.worker_node(0).simple(CustomerId::DEFAULT, NodeId::SCHEDULER, 0, body)?;
    /// assert_eq!(replies[0].body, "epoch 3 done");
    /// # Ok(()) }
    /// ```
    pub fn set_simple_handler(
        &self,
        handler: impl FnMut(&SimpleRequest) -> (i32, Bytes) + Send + 'static,
    ) -> Result<()> {
        self.runtime.block_on(self.inner.set_simple_handler(handler))
    }

    /// See [`NodeHandle::stats`].
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// # let cluster = runtime.local_cluster(1, 1)?;
    /// let server = cluster.server(0);
    /// let before = server.stats()?;
    /// cluster.worker::<f32>(0).push_wait(&[1], &[1.0])?;
    /// let after = server.stats()?;
    /// // The push arrived, and nothing was garbled.
    /// assert!(after.frames_in > before.frames_in);
    /// assert_eq!(after.decode_errors, 0);
    /// # Ok(()) }
    /// ```
    pub fn stats(&self) -> Result<Stats> {
        self.runtime.block_on(self.inner.stats())
    }

    /// See [`NodeHandle::next_barrier_generation`].
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// # let cluster = runtime.local_cluster(1, 1)?;
    /// # let node = cluster.worker_node(0);
    /// use pslite_core::Group;
    /// assert_eq!(node.next_barrier_generation(Group::WORKERS)?, 0);
    /// assert!(node.barrier(Group::WORKERS)?.is_complete());
    /// assert_eq!(node.next_barrier_generation(Group::WORKERS)?, 1);
    /// # Ok(()) }
    /// ```
    pub fn next_barrier_generation(&self, group: Group) -> Result<u64> {
        self.runtime.block_on(self.inner.next_barrier_generation(group))
    }

    /// See [`NodeHandle::info`].
    pub fn info(&self) -> Info {
        self.inner.info()
    }

    /// See [`NodeHandle::events`]; read it with `blocking_recv`.
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// # let cluster = runtime.local_cluster(1, 1)?;
    /// use pslite_io::NodeEvent;
    /// let mut news = cluster.worker_node(0).events();
    /// cluster.finalize()?;
    /// assert_eq!(news.blocking_recv().expect("sent before finalize returned"), NodeEvent::Terminated);
    /// # Ok(()) }
    /// ```
    pub fn events(&self) -> broadcast::Receiver<NodeEvent> {
        self.inner.events()
    }

    /// See [`NodeHandle::local_addr`].
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }

    /// See [`NodeHandle::advertised_addr`].
    pub fn advertised_addr(&self) -> SocketAddr {
        self.inner.advertised_addr()
    }

    /// See [`NodeHandle::abort`].
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// # let cluster = runtime.local_cluster(1, 1)?;
    /// # let node = cluster.worker_node(0);
    /// node.abort();
    /// while !node.is_closed() {
    ///     std::thread::yield_now();
    /// }
    /// // A crashed node has no report to give.
    /// assert!(matches!(node.finalize(), Err(pslite_io::Error::Shutdown)));
    /// # Ok(()) }
    /// ```
    pub fn abort(&self) {
        self.inner.abort();
    }

    /// See [`NodeHandle::is_closed`].
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }
}

/// Blocking form of [`crate::KvWorker`]; clones share the customer.
///
/// ```
/// # fn main() -> pslite_io::Result<()> {
/// # let runtime = pslite_io::blocking::Runtime::new(1)?;
/// # let cluster = runtime.local_cluster(1, 1)?;
/// use pslite_core::Role;
/// let worker = cluster.worker::<f32>(0);
/// assert_eq!(worker.node().info().role, Role::Worker);
/// // The untyped and the async views share its customer.
/// assert_eq!(worker.raw().inner().customer(), worker.inner().customer());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct KvWorker<T> {
    runtime: Runtime,
    inner: AsyncKvWorker<T>,
}

impl<T> Clone for KvWorker<T> {
    fn clone(&self) -> Self {
        Self { runtime: self.runtime.clone(), inner: self.inner.clone() }
    }
}

impl<T: Element> KvWorker<T> {
    /// The async worker.
    pub fn inner(&self) -> &AsyncKvWorker<T> {
        &self.inner
    }

    /// The untyped worker on the same customer.
    pub fn raw(&self) -> RawKvWorker {
        self.runtime.raw_worker(self.inner.raw().clone())
    }

    /// The node behind this worker.
    pub fn node(&self) -> Node {
        self.runtime.node(self.inner.node().clone())
    }

    /// See [`crate::KvWorker::push`].
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// # let cluster = runtime.local_cluster(1, 1)?;
    /// # let worker = cluster.worker::<f32>(0);
    /// let (first, second) = (worker.push(&[1], &[1.0])?, worker.push(&[1], &[2.0])?);
    /// worker.wait(first)?;
    /// worker.wait(second)?;
    /// assert_eq!(worker.pull_wait(&[1])?, [3.0]);
    /// # Ok(()) }
    /// ```
    pub fn push(&self, keys: &[u64], values: &[T]) -> Result<Timestamp> {
        self.runtime.block_on(self.inner.push(keys, values))
    }

    /// See [`crate::KvWorker::push_with`].
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// # let cluster = runtime.local_cluster(1, 1)?;
    /// # let worker = cluster.worker::<f32>(0);
    /// // Two values for key 3, one for key 8.
    /// worker.wait(worker.push_with(&[3, 8], &[1.0, 2.0, 3.0], Some(&[2, 1]), 0)?)?;
    /// assert_eq!(worker.pull_wait(&[3, 8])?, [1.0, 2.0, 3.0]);
    /// # Ok(()) }
    /// ```
    pub fn push_with(&self, keys: &[u64], values: &[T], lens: Option<&[u32]>, cmd: i32) -> Result<Timestamp> {
        self.runtime.block_on(self.inner.push_with(keys, values, lens, cmd))
    }

    /// See [`crate::KvWorker::zpush`].
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// # let cluster = runtime.local_cluster(1, 1)?;
    /// # let worker = cluster.worker::<f32>(0);
    /// use pslite_core::{Keys, Values};
    /// let bytes = Values::from_slice(&[1.5f32]).as_bytes().clone();
    /// worker.wait(worker.zpush(Keys::from_slice(&[1]), bytes, None, 0)?)?;
    /// assert_eq!(worker.pull_wait(&[1])?, [1.5]);
    /// # Ok(()) }
    /// ```
    pub fn zpush(&self, keys: Keys, values: Bytes, lens: Option<Lens>, cmd: i32) -> Result<Timestamp> {
        self.runtime.block_on(self.inner.zpush(keys, values, lens, cmd))
    }

    /// See [`crate::KvWorker::pull`].
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// # let cluster = runtime.local_cluster(1, 1)?;
    /// # let worker = cluster.worker::<f32>(0);
    /// let ts = worker.pull(&[1, 2])?;
    /// assert_eq!(worker.wait_pull(ts)?.to_vec(), [0.0, 0.0]);
    /// # Ok(()) }
    /// ```
    pub fn pull(&self, keys: &[u64]) -> Result<Timestamp> {
        self.runtime.block_on(self.inner.pull(keys))
    }

    /// See [`crate::KvWorker::pull_with`].
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// # let cluster = runtime.local_cluster(1, 1)?;
    /// # let worker = cluster.worker::<f32>(0);
    /// // The default store ignores the command; a handle of your own reads it.
    /// let ts = worker.pull_with(&[1], 7)?;
    /// assert_eq!(worker.wait_pull(ts)?.to_vec(), [0.0]);
    /// # Ok(()) }
    /// ```
    pub fn pull_with(&self, keys: &[u64], cmd: i32) -> Result<Timestamp> {
        self.runtime.block_on(self.inner.pull_with(keys, cmd))
    }

    /// See [`crate::KvWorker::zpull`].
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// # let cluster = runtime.local_cluster(1, 1)?;
    /// # let worker = cluster.worker::<f32>(0);
    /// use pslite_core::Keys;
    /// let keys = Keys::from_slice(&[1, 2]);
    /// let ts = worker.zpull(keys.clone(), 0)?;
    /// assert_eq!(worker.wait_pull(ts)?.keys(), &keys);
    /// # Ok(()) }
    /// ```
    pub fn zpull(&self, keys: Keys, cmd: i32) -> Result<Timestamp> {
        self.runtime.block_on(self.inner.zpull(keys, cmd))
    }

    /// See [`crate::KvWorker::push_pull`].
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// # let cluster = runtime.local_cluster(1, 1)?;
    /// # let worker = cluster.worker::<f32>(0);
    /// let ts = worker.push_pull(&[1], &[0.5])?;
    /// assert_eq!(worker.wait_pull(ts)?.to_vec(), [0.5]);
    /// # Ok(()) }
    /// ```
    pub fn push_pull(&self, keys: &[u64], values: &[T]) -> Result<Timestamp> {
        self.runtime.block_on(self.inner.push_pull(keys, values))
    }

    /// See [`crate::KvWorker::push_pull_with`].
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// # let cluster = runtime.local_cluster(1, 1)?;
    /// # let worker = cluster.worker::<f32>(0);
    /// let ts = worker.push_pull_with(&[3, 8], &[1.0, 2.0, 3.0], Some(&[2, 1]), 0)?;
    /// assert_eq!(worker.wait_pull(ts)?.lens().map(|lens| lens.to_vec()), Some(vec![2, 1]));
    /// # Ok(()) }
    /// ```
    pub fn push_pull_with(&self, keys: &[u64], values: &[T], lens: Option<&[u32]>, cmd: i32) -> Result<Timestamp> {
        self.runtime.block_on(self.inner.push_pull_with(keys, values, lens, cmd))
    }

    /// See [`crate::KvWorker::zpush_pull`].
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// # let cluster = runtime.local_cluster(1, 1)?;
    /// # let worker = cluster.worker::<f32>(0);
    /// use pslite_core::{Keys, Values};
    /// let bytes = Values::from_slice(&[2.0f32]).as_bytes().clone();
    /// let ts = worker.zpush_pull(Keys::from_slice(&[1]), bytes, None, 0)?;
    /// assert_eq!(worker.wait_pull(ts)?.to_vec(), [2.0]);
    /// # Ok(()) }
    /// ```
    pub fn zpush_pull(&self, keys: Keys, values: Bytes, lens: Option<Lens>, cmd: i32) -> Result<Timestamp> {
        self.runtime.block_on(self.inner.zpush_pull(keys, values, lens, cmd))
    }

    /// See [`crate::KvWorker::wait`].
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// # let cluster = runtime.local_cluster(1, 1)?;
    /// // f64s for a store of f32s: the server refuses, and the wait says so.
    /// let wrong = cluster.worker::<f64>(0);
    /// assert!(wrong.wait(wrong.push(&[1], &[1.0])?).is_err());
    /// # Ok(()) }
    /// ```
    pub fn wait(&self, ts: Timestamp) -> Result<()> {
        self.runtime.block_on(self.inner.wait(ts))
    }

    /// See [`crate::KvWorker::wait_pull`].
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// # let cluster = runtime.local_cluster(1, 1)?;
    /// # let worker = cluster.worker::<f32>(0);
    /// let ts = worker.push_pull(&[4], &[1.0])?;
    /// assert_eq!(worker.wait_pull(ts)?.to_vec(), [1.0]);
    /// # Ok(()) }
    /// ```
    pub fn wait_pull(&self, ts: Timestamp) -> Result<Pulled<T>> {
        self.runtime.block_on(self.inner.wait_pull(ts))
    }

    /// See [`crate::KvWorker::push_wait`].
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// # let cluster = runtime.local_cluster(1, 1)?;
    /// # let worker = cluster.worker::<f32>(0);
    /// worker.push_wait(&[7], &[0.25])?;
    /// assert_eq!(worker.pull_wait(&[7])?, [0.25]);
    /// # Ok(()) }
    /// ```
    pub fn push_wait(&self, keys: &[u64], values: &[T]) -> Result<()> {
        self.runtime.block_on(self.inner.push_wait(keys, values))
    }

    /// See [`crate::KvWorker::pull_wait`].
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// # let cluster = runtime.local_cluster(1, 1)?;
    /// # let worker = cluster.worker::<f32>(0);
    /// // Never pushed: zeros.
    /// assert_eq!(worker.pull_wait(&[1, u64::MAX])?, [0.0, 0.0]);
    /// # Ok(()) }
    /// ```
    pub fn pull_wait(&self, keys: &[u64]) -> Result<Vec<T>> {
        self.runtime.block_on(self.inner.pull_wait(keys))
    }

    /// See [`crate::KvWorker::push_pull_wait`].
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// # let cluster = runtime.local_cluster(1, 1)?;
    /// # let worker = cluster.worker::<f32>(0);
    /// assert_eq!(worker.push_pull_wait(&[9], &[1.0])?, [1.0]);
    /// assert_eq!(worker.push_pull_wait(&[9], &[1.0])?, [2.0]);
    /// # Ok(()) }
    /// ```
    pub fn push_pull_wait(&self, keys: &[u64], values: &[T]) -> Result<Vec<T>> {
        self.runtime.block_on(self.inner.push_pull_wait(keys, values))
    }
}

/// Blocking form of [`crate::RawKvWorker`].
///
/// ```
/// # fn main() -> pslite_io::Result<()> {
/// # let runtime = pslite_io::blocking::Runtime::new(1)?;
/// # let cluster = runtime.local_cluster(1, 1)?;
/// use pslite_core::{DType, Keys, Values};
/// let raw = cluster.raw_worker(0);
/// let keys = Keys::from_slice(&[1]);
/// // The element type is chosen per call.
/// raw.wait(raw.zpush(keys.clone(), Values::from_slice(&[1.0f32]), None, 0)?)?;
/// let pulled = raw.wait_pull(raw.zpull(keys, DType::F32, 0)?)?;
/// assert_eq!(pulled.values.to_vec::<f32>(), Some(vec![1.0]));
/// assert_eq!(raw.inner().customer(), pslite_core::CustomerId::DEFAULT);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct RawKvWorker {
    runtime: Runtime,
    inner: AsyncRawKvWorker,
}

impl RawKvWorker {
    /// The async worker.
    pub fn inner(&self) -> &AsyncRawKvWorker {
        &self.inner
    }

    /// See [`crate::RawKvWorker::zpush`].
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// # let cluster = runtime.local_cluster(1, 1)?;
    /// # let raw = cluster.raw_worker(0);
    /// use pslite_core::{Keys, Values};
    /// let ts = raw.zpush(Keys::from_slice(&[1]), Values::from_slice(&[1.0f32]), None, 0)?;
    /// raw.wait(ts)?;
    /// # Ok(()) }
    /// ```
    pub fn zpush(&self, keys: Keys, values: Values, lens: Option<Lens>, cmd: i32) -> Result<Timestamp> {
        self.runtime.block_on(self.inner.zpush(keys, values, lens, cmd))
    }

    /// See [`crate::RawKvWorker::zpull`].
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// # let cluster = runtime.local_cluster(1, 1)?;
    /// # let raw = cluster.raw_worker(0);
    /// use pslite_core::{DType, Keys};
    /// let pulled = raw.wait_pull(raw.zpull(Keys::from_slice(&[1]), DType::F32, 0)?)?;
    /// assert_eq!(pulled.values.dtype(), DType::F32);
    /// # Ok(()) }
    /// ```
    pub fn zpull(&self, keys: Keys, dtype: DType, cmd: i32) -> Result<Timestamp> {
        self.runtime.block_on(self.inner.zpull(keys, dtype, cmd))
    }

    /// See [`crate::RawKvWorker::zpush_pull`].
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// # let cluster = runtime.local_cluster(1, 1)?;
    /// # let raw = cluster.raw_worker(0);
    /// use pslite_core::{Keys, Values};
    /// let ts = raw.zpush_pull(Keys::from_slice(&[1]), Values::from_slice(&[4.0f32]), None, 0)?;
    /// assert_eq!(raw.wait_pull(ts)?.values.to_vec::<f32>(), Some(vec![4.0]));
    /// # Ok(()) }
    /// ```
    pub fn zpush_pull(&self, keys: Keys, values: Values, lens: Option<Lens>, cmd: i32) -> Result<Timestamp> {
        self.runtime.block_on(self.inner.zpush_pull(keys, values, lens, cmd))
    }

    /// See [`crate::RawKvWorker::wait`].
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// # let cluster = runtime.local_cluster(1, 1)?;
    /// # let raw = cluster.raw_worker(0);
    /// use pslite_core::{Keys, Values};
    /// // Refused by the f32 store, reported by the wait.
    /// let ts = raw.zpush(Keys::from_slice(&[1]), Values::from_slice(&[1i32]), None, 0)?;
    /// assert!(raw.wait(ts).is_err());
    /// # Ok(()) }
    /// ```
    pub fn wait(&self, ts: Timestamp) -> Result<()> {
        self.runtime.block_on(self.inner.wait(ts))
    }

    /// See [`crate::RawKvWorker::wait_pull`].
    ///
    /// ```
    /// # fn main() -> pslite_io::Result<()> {
    /// # let runtime = pslite_io::blocking::Runtime::new(1)?;
    /// # let cluster = runtime.local_cluster(1, 1)?;
    /// # let raw = cluster.raw_worker(0);
    /// use pslite_core::{Keys, Values};
    /// // A push has nothing to pull: a mistake, not a hang.
    /// let ts = raw.zpush(Keys::from_slice(&[1]), Values::from_slice(&[1.0f32]), None, 0)?;
    /// assert!(raw.wait_pull(ts).is_err());
    /// # Ok(()) }
    /// ```
    pub fn wait_pull(&self, ts: Timestamp) -> Result<RawPulled> {
        self.runtime.block_on(self.inner.wait_pull(ts))
    }
}
