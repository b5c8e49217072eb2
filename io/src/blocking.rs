//! Blocking wrappers for code that is not async (ps-lite's calling style).
//!
//! A [`Runtime`] owns a small tokio runtime; handles made from it run their
//! async calls on it with `block_on`. Call them from ordinary threads, never
//! from inside an async task.

use pslite_core::{Element, Timestamp};

use crate::error::Result;
use crate::handle::NodeHandle;
use crate::local::LocalCluster;
use crate::settings::Settings;
use crate::worker::KvWorker as AsyncKvWorker;

/// A runtime for blocking use.
#[derive(Debug)]
pub struct Runtime {
    runtime: tokio::runtime::Runtime,
}

impl Runtime {
    /// A multi-threaded runtime with `threads` workers.
    pub fn new(threads: usize) -> Result<Self> {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(threads.max(1)).enable_all().build()?;
        Ok(Self { runtime })
    }

    /// Starts a node and waits until the cluster is ready.
    pub fn start(&self, settings: Settings) -> Result<NodeHandle> {
        self.runtime.block_on(async {
            let node = crate::start(settings).await?;
            node.wait_ready().await?;
            Ok(node)
        })
    }

    /// Starts a local cluster with the default store.
    pub fn local_cluster(&self, servers: u32, workers: u32) -> Result<LocalCluster> {
        self.runtime.block_on(LocalCluster::start(servers, workers))
    }

    /// Runs any future of this crate to completion.
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// A blocking worker over `worker`.
    pub fn worker(&self, worker: AsyncKvWorker) -> KvWorker<'_> {
        KvWorker { runtime: self, inner: worker }
    }
}

/// Blocking form of [`crate::KvWorker`].
#[derive(Debug)]
pub struct KvWorker<'a> {
    runtime: &'a Runtime,
    inner: AsyncKvWorker,
}

impl KvWorker<'_> {
    /// See [`crate::KvWorker::push`].
    pub fn push<T: Element>(&self, keys: &[u64], values: &[T]) -> Result<Timestamp> {
        self.runtime.block_on(self.inner.push(keys, values))
    }

    /// See [`crate::KvWorker::pull`].
    pub fn pull<T: Element>(&self, keys: &[u64]) -> Result<Vec<T>> {
        self.runtime.block_on(self.inner.pull(keys))
    }

    /// See [`crate::KvWorker::push_pull`].
    pub fn push_pull<T: Element>(&self, keys: &[u64], values: &[T]) -> Result<Vec<T>> {
        self.runtime.block_on(self.inner.push_pull(keys, values))
    }

    /// See [`crate::KvWorker::wait`].
    pub fn wait(&self, ts: Timestamp) -> Result<()> {
        self.runtime.block_on(self.inner.wait(ts))
    }
}
