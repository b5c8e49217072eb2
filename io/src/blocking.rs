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
#[derive(Clone, Debug)]
pub struct Runtime {
    runtime: Arc<tokio::runtime::Runtime>,
}

impl Runtime {
    /// A multi-threaded runtime with `threads` workers (at least one).
    pub fn new(threads: usize) -> Result<Self> {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(threads.max(1)).enable_all().build()?;
        Ok(Self { runtime: Arc::new(runtime) })
    }

    /// Runs any future of this crate to completion.
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Starts a node from `settings` and waits until the cluster is ready
    /// (see [`crate::start`]).
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
    pub fn local_cluster(&self, servers: u32, workers: u32) -> Result<LocalCluster> {
        let inner = self.block_on(AsyncLocalCluster::start(servers, workers))?;
        Ok(LocalCluster { runtime: self.clone(), inner })
    }

    /// Starts a local cluster from `settings`, each server's handle built
    /// by `make_handle` (see [`crate::LocalCluster::start_with`]).
    pub fn local_cluster_with(&self, settings: Settings, make_handle: HandleFactory) -> Result<LocalCluster> {
        let inner = self.block_on(AsyncLocalCluster::start_with(settings, make_handle))?;
        Ok(LocalCluster { runtime: self.clone(), inner })
    }

    /// The blocking form of a running node's handle.
    pub fn node(&self, node: NodeHandle) -> Node {
        Node { runtime: self.clone(), inner: node }
    }

    /// The blocking form of a typed worker.
    pub fn worker<T: Element>(&self, worker: AsyncKvWorker<T>) -> KvWorker<T> {
        KvWorker { runtime: self.clone(), inner: worker }
    }

    /// The blocking form of an untyped worker.
    pub fn raw_worker(&self, worker: AsyncRawKvWorker) -> RawKvWorker {
        RawKvWorker { runtime: self.clone(), inner: worker }
    }
}

/// Blocking form of [`crate::LocalCluster`].
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
    pub fn worker<T: Element>(&self, index: usize) -> KvWorker<T> {
        self.runtime.worker(self.inner.worker(index))
    }

    /// See [`crate::LocalCluster::raw_worker`].
    pub fn raw_worker(&self, index: usize) -> RawKvWorker {
        self.runtime.raw_worker(self.inner.raw_worker(index))
    }

    /// See [`crate::LocalCluster::finalize`].
    pub fn finalize(self) -> Result<Released> {
        self.runtime.block_on(self.inner.finalize())
    }
}

/// Blocking form of [`NodeHandle`]; clone it freely.
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
    pub fn worker<T: Element>(&self, customer: CustomerId) -> KvWorker<T> {
        self.runtime.worker(AsyncKvWorker::new(self.inner.clone(), customer))
    }

    /// An untyped worker on customer `customer` of this (worker) node.
    pub fn raw_worker(&self, customer: CustomerId) -> RawKvWorker {
        self.runtime.raw_worker(AsyncRawKvWorker::new(self.inner.clone(), customer))
    }

    /// See [`NodeHandle::wait_ready`].
    pub fn wait_ready(&self) -> Result<()> {
        self.runtime.block_on(self.inner.wait_ready())
    }

    /// See [`NodeHandle::wait`].
    pub fn wait(&self, customer: CustomerId, ts: Timestamp) -> Result<Completion> {
        self.runtime.block_on(self.inner.wait(customer, ts))
    }

    /// See [`NodeHandle::simple_request`].
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
    pub fn barrier(&self, group: Group) -> Result<Released> {
        self.runtime.block_on(self.inner.barrier(group))
    }

    /// See [`NodeHandle::finalize`].
    pub fn finalize(&self) -> Result<Released> {
        self.runtime.block_on(self.inner.finalize())
    }

    /// See [`NodeHandle::set_handle`].
    pub fn set_handle(&self, app: u32, handle: impl Into<ServerHandle>) -> Result<()> {
        self.runtime.block_on(self.inner.set_handle(app, handle))
    }

    /// See [`NodeHandle::set_threaded_simple_handler`].
    pub fn set_threaded_simple_handler(
        &self,
        handler: impl FnMut(&SimpleRequest) -> (i32, Bytes) + Send + 'static,
    ) -> Result<()> {
        self.runtime.block_on(self.inner.set_threaded_simple_handler(handler))
    }

    /// See [`NodeHandle::set_simple_handler`].
    pub fn set_simple_handler(
        &self,
        handler: impl FnMut(&SimpleRequest) -> (i32, Bytes) + Send + 'static,
    ) -> Result<()> {
        self.runtime.block_on(self.inner.set_simple_handler(handler))
    }

    /// See [`NodeHandle::stats`].
    pub fn stats(&self) -> Result<Stats> {
        self.runtime.block_on(self.inner.stats())
    }

    /// See [`NodeHandle::next_barrier_generation`].
    pub fn next_barrier_generation(&self, group: Group) -> Result<u64> {
        self.runtime.block_on(self.inner.next_barrier_generation(group))
    }

    /// See [`NodeHandle::info`].
    pub fn info(&self) -> Info {
        self.inner.info()
    }

    /// See [`NodeHandle::events`]; read it with `blocking_recv`.
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
    pub fn abort(&self) {
        self.inner.abort();
    }

    /// See [`NodeHandle::is_closed`].
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }
}

/// Blocking form of [`crate::KvWorker`]; clones share the customer.
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
    pub fn push(&self, keys: &[u64], values: &[T]) -> Result<Timestamp> {
        self.runtime.block_on(self.inner.push(keys, values))
    }

    /// See [`crate::KvWorker::push_with`].
    pub fn push_with(&self, keys: &[u64], values: &[T], lens: Option<&[u32]>, cmd: i32) -> Result<Timestamp> {
        self.runtime.block_on(self.inner.push_with(keys, values, lens, cmd))
    }

    /// See [`crate::KvWorker::zpush`].
    pub fn zpush(&self, keys: Keys, values: Bytes, lens: Option<Lens>, cmd: i32) -> Result<Timestamp> {
        self.runtime.block_on(self.inner.zpush(keys, values, lens, cmd))
    }

    /// See [`crate::KvWorker::pull`].
    pub fn pull(&self, keys: &[u64]) -> Result<Timestamp> {
        self.runtime.block_on(self.inner.pull(keys))
    }

    /// See [`crate::KvWorker::pull_with`].
    pub fn pull_with(&self, keys: &[u64], cmd: i32) -> Result<Timestamp> {
        self.runtime.block_on(self.inner.pull_with(keys, cmd))
    }

    /// See [`crate::KvWorker::zpull`].
    pub fn zpull(&self, keys: Keys, cmd: i32) -> Result<Timestamp> {
        self.runtime.block_on(self.inner.zpull(keys, cmd))
    }

    /// See [`crate::KvWorker::push_pull`].
    pub fn push_pull(&self, keys: &[u64], values: &[T]) -> Result<Timestamp> {
        self.runtime.block_on(self.inner.push_pull(keys, values))
    }

    /// See [`crate::KvWorker::push_pull_with`].
    pub fn push_pull_with(&self, keys: &[u64], values: &[T], lens: Option<&[u32]>, cmd: i32) -> Result<Timestamp> {
        self.runtime.block_on(self.inner.push_pull_with(keys, values, lens, cmd))
    }

    /// See [`crate::KvWorker::zpush_pull`].
    pub fn zpush_pull(&self, keys: Keys, values: Bytes, lens: Option<Lens>, cmd: i32) -> Result<Timestamp> {
        self.runtime.block_on(self.inner.zpush_pull(keys, values, lens, cmd))
    }

    /// See [`crate::KvWorker::wait`].
    pub fn wait(&self, ts: Timestamp) -> Result<()> {
        self.runtime.block_on(self.inner.wait(ts))
    }

    /// See [`crate::KvWorker::wait_pull`].
    pub fn wait_pull(&self, ts: Timestamp) -> Result<Pulled<T>> {
        self.runtime.block_on(self.inner.wait_pull(ts))
    }

    /// See [`crate::KvWorker::push_wait`].
    pub fn push_wait(&self, keys: &[u64], values: &[T]) -> Result<()> {
        self.runtime.block_on(self.inner.push_wait(keys, values))
    }

    /// See [`crate::KvWorker::pull_wait`].
    pub fn pull_wait(&self, keys: &[u64]) -> Result<Vec<T>> {
        self.runtime.block_on(self.inner.pull_wait(keys))
    }

    /// See [`crate::KvWorker::push_pull_wait`].
    pub fn push_pull_wait(&self, keys: &[u64], values: &[T]) -> Result<Vec<T>> {
        self.runtime.block_on(self.inner.push_pull_wait(keys, values))
    }
}

/// Blocking form of [`crate::RawKvWorker`].
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
    pub fn zpush(&self, keys: Keys, values: Values, lens: Option<Lens>, cmd: i32) -> Result<Timestamp> {
        self.runtime.block_on(self.inner.zpush(keys, values, lens, cmd))
    }

    /// See [`crate::RawKvWorker::zpull`].
    pub fn zpull(&self, keys: Keys, dtype: DType, cmd: i32) -> Result<Timestamp> {
        self.runtime.block_on(self.inner.zpull(keys, dtype, cmd))
    }

    /// See [`crate::RawKvWorker::zpush_pull`].
    pub fn zpush_pull(&self, keys: Keys, values: Values, lens: Option<Lens>, cmd: i32) -> Result<Timestamp> {
        self.runtime.block_on(self.inner.zpush_pull(keys, values, lens, cmd))
    }

    /// See [`crate::RawKvWorker::wait`].
    pub fn wait(&self, ts: Timestamp) -> Result<()> {
        self.runtime.block_on(self.inner.wait(ts))
    }

    /// See [`crate::RawKvWorker::wait_pull`].
    pub fn wait_pull(&self, ts: Timestamp) -> Result<RawPulled> {
        self.runtime.block_on(self.inner.wait_pull(ts))
    }
}
