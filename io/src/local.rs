//! A whole cluster in one process, on loopback: the quickest way to run
//! pslite, and what the integration tests and the training example use.
//! Every node is a real node with its own sockets; only the process is
//! shared.

use std::net::{Ipv4Addr, SocketAddr};

use pslite_core::{CustomerId, Element, KvStore, Rank, Role};

use crate::error::Result;
use crate::handle::NodeHandle;
use crate::msg::Released;
use crate::respond::ServerHandle;
use crate::settings::Settings;
use crate::start::start_with;
use crate::worker::{KvWorker, RawKvWorker};

/// Builds the server handle of each server rank, in the mode its
/// [`ServerHandle`] says (any `KvHandle` converts into one run on the
/// node's task).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> pslite_io::Result<()> {
/// use pslite_core::KvStore;
/// use pslite_io::{HandleFactory, LocalCluster, ServerHandle};
/// // Servers that sum i64 counters, each store on a thread of its own.
/// let counters: HandleFactory = Box::new(|_rank| ServerHandle::threaded(KvStore::<i64>::new()));
/// let cluster = LocalCluster::start_with(LocalCluster::settings(2, 1), counters).await?;
/// let worker = cluster.worker::<i64>(0);
/// worker.push_wait(&[1, u64::MAX], &[3, 4]).await?;
/// assert_eq!(worker.pull_wait(&[1, u64::MAX]).await?, [3, 4]);
/// # Ok(()) }
/// ```
pub type HandleFactory = Box<dyn FnMut(Rank) -> ServerHandle>;

/// A scheduler, servers and workers on 127.0.0.1, ports chosen by the OS.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> pslite_io::Result<()> {
/// use pslite_core::Role;
/// let cluster = pslite_io::LocalCluster::start(2, 3).await?;
/// assert_eq!((cluster.servers.len(), cluster.workers.len()), (2, 3));
/// // Every node, scheduler first: handy for checks over the whole cluster.
/// assert_eq!(cluster.nodes().count(), 6);
/// assert_eq!(cluster.nodes().next().map(|node| node.info().role), Some(Role::Scheduler));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct LocalCluster {
    /// The scheduler.
    pub scheduler: NodeHandle,
    /// Servers, by rank.
    pub servers: Vec<NodeHandle>,
    /// Workers, by rank.
    pub workers: Vec<NodeHandle>,
}

impl LocalCluster {
    /// `servers` servers with the default `KvStore<f32>` and `workers` workers.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// use pslite_core::Phase;
    /// let cluster = pslite_io::LocalCluster::start(2, 1).await?;
    /// // Returns once every node is ready: requests can go out at once.
    /// assert!(cluster.nodes().all(|node| node.info().phase == Phase::Ready));
    /// assert_eq!(cluster.worker::<f32>(0).pull_wait(&[7]).await?, [0.0]);
    /// # Ok(()) }
    /// ```
    pub async fn start(servers: u32, workers: u32) -> Result<Self> {
        let settings = Self::settings(servers, workers);
        Self::start_with(settings, Box::new(|_| KvStore::<f32>::new().into())).await
    }

    /// Default settings for a local cluster of this size.
    ///
    /// ```
    /// use pslite_core::Duration;
    /// let mut settings = pslite_io::LocalCluster::settings(2, 4);
    /// assert_eq!((settings.core.num_servers, settings.core.num_workers), (2, 4));
    /// // Tune before `start_with`: say, a quicker failure detector for a test.
    /// settings.core = settings.core.heartbeat(Duration::from_millis(100), Duration::from_secs(1));
    /// assert!(settings.core.build().is_ok());
    /// ```
    pub fn settings(servers: u32, workers: u32) -> Settings {
        let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        Settings::new(Role::Scheduler, loopback).cluster(servers, workers)
    }

    /// A cluster from `settings` (role and addresses are set here), each
    /// server's handle built by `make_handle`. Returns once every node is
    /// registered and the cluster is ready.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// use pslite_core::KvStore;
    /// use pslite_io::LocalCluster;
    /// // Servers whose never-pushed keys pull as two zeros each.
    /// let make_handle = Box::new(|_rank| KvStore::<f32>::with_value_len_default(2).into());
    /// let cluster = LocalCluster::start_with(LocalCluster::settings(2, 1), make_handle).await?;
    /// assert_eq!(cluster.worker::<f32>(0).pull_wait(&[1, u64::MAX]).await?, [0.0; 4]);
    /// # Ok(()) }
    /// ```
    pub async fn start_with(settings: Settings, mut make_handle: HandleFactory) -> Result<Self> {
        let mut scheduler_settings = settings.for_role(Role::Scheduler);
        scheduler_settings.core.scheduler_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let scheduler = start_with(scheduler_settings, Vec::new(), None).await?;
        let mut node_settings = settings.clone();
        node_settings.core.scheduler_addr = scheduler.local_addr();
        node_settings.bind_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let mut servers = Vec::new();
        for rank in 0..settings.core.num_servers {
            let handle = make_handle(Rank(rank));
            servers.push(start_with(node_settings.for_role(Role::Server), vec![(0, handle)], None).await?);
        }
        let mut workers = Vec::new();
        for _ in 0..settings.core.num_workers {
            workers.push(start_with(node_settings.for_role(Role::Worker), Vec::new(), None).await?);
        }
        let cluster = Self { scheduler, servers, workers };
        for node in cluster.nodes() {
            node.wait_ready().await?;
        }
        Ok(cluster)
    }

    /// Every node, scheduler first.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeHandle> {
        std::iter::once(&self.scheduler).chain(&self.servers).chain(&self.workers)
    }

    /// A KV worker of `T` (customer 0 of app 0) on the worker node at
    /// `index` (start order; ranks are assigned by address, see
    /// `NodeHandle::info`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// let cluster = pslite_io::LocalCluster::start(1, 2).await?;
    /// let (a, b) = (cluster.worker::<f32>(0), cluster.worker::<f32>(1));
    /// assert_ne!(a.node().info().id, b.node().info().id);
    /// a.push_wait(&[1], &[1.0]).await?;
    /// // Another node, the same servers.
    /// assert_eq!(b.pull_wait(&[1]).await?, [1.0]);
    /// # Ok(()) }
    /// ```
    pub fn worker<T: Element>(&self, index: usize) -> KvWorker<T> {
        KvWorker::from_raw(self.raw_worker(index))
    }

    /// The untyped worker on the same customer as [`worker`](Self::worker).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// use pslite_core::{DType, Keys};
    /// # let cluster = pslite_io::LocalCluster::start(1, 1).await?;
    /// cluster.worker::<f32>(0).push_wait(&[1], &[2.0]).await?;
    /// // The same customer, read untyped.
    /// let raw = cluster.raw_worker(0);
    /// let pulled = raw.wait_pull(raw.zpull(Keys::from_slice(&[1]), DType::F32, 0).await?).await?;
    /// assert_eq!(pulled.values.to_vec::<f32>(), Some(vec![2.0]));
    /// # Ok(()) }
    /// ```
    pub fn raw_worker(&self, index: usize) -> RawKvWorker {
        RawKvWorker::new(self.workers[index].clone(), CustomerId::DEFAULT)
    }

    /// Finalizes every node (a barrier over all, then shutdown). The
    /// report names the members any node saw missing.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// let cluster = pslite_io::LocalCluster::start(1, 1).await?;
    /// cluster.worker::<f32>(0).push_wait(&[1], &[1.0]).await?;
    /// let released = cluster.finalize().await?;
    /// // Everyone took part to the end.
    /// assert!(released.is_complete(), "missing: {:?}", released.missing);
    /// # Ok(()) }
    /// ```
    pub async fn finalize(self) -> Result<Released> {
        let finals: Vec<_> = self
            .nodes()
            .map(|node| {
                let node = node.clone();
                tokio::spawn(async move { node.finalize().await })
            })
            .collect();
        let mut missing = Vec::new();
        for task in finals {
            missing.extend(task.await.expect("finalize task panicked")?.missing);
        }
        missing.sort_unstable();
        missing.dedup();
        Ok(Released { missing })
    }
}
