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
pub type HandleFactory = Box<dyn FnMut(Rank) -> ServerHandle>;

/// A scheduler, servers and workers on 127.0.0.1, ports chosen by the OS.
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
    pub async fn start(servers: u32, workers: u32) -> Result<Self> {
        let settings = Self::settings(servers, workers);
        Self::start_with(settings, Box::new(|_| KvStore::<f32>::new().into())).await
    }

    /// Default settings for a local cluster of this size.
    pub fn settings(servers: u32, workers: u32) -> Settings {
        let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        Settings::new(Role::Scheduler, loopback).cluster(servers, workers)
    }

    /// A cluster from `settings` (role and addresses are set here), each
    /// server's handle built by `make_handle`. Returns once every node is
    /// registered and the cluster is ready.
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
    pub fn worker<T: Element>(&self, index: usize) -> KvWorker<T> {
        KvWorker::from_raw(self.raw_worker(index))
    }

    /// The untyped worker on the same customer as [`worker`](Self::worker).
    pub fn raw_worker(&self, index: usize) -> RawKvWorker {
        RawKvWorker::new(self.workers[index].clone(), CustomerId::DEFAULT)
    }

    /// Finalizes every node (a barrier over all, then shutdown). The
    /// report names the members any node saw missing.
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
