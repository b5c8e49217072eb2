//! The server API: ps-lite's `KVServer` with a user handle.

use crate::error::Result;
use crate::handle::NodeHandle;
use crate::msg::Released;
use crate::respond::ServerHandle;
use crate::settings::Settings;
use crate::start::start_serving;

/// A server node running `handle` for application 0 (install handles for
/// other application ids with [`NodeHandle::set_handle`]).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> pslite_io::Result<()> {
/// use pslite_core::{CustomerId, KvStore, Role};
/// use pslite_io::{KvServer, KvWorker, LocalCluster, Settings};
/// let scheduler = pslite_io::start(LocalCluster::settings(1, 1)).await?;
/// let joining = Settings::new(Role::Server, scheduler.local_addr()).cluster(1, 1);
/// let server = KvServer::start(joining.clone(), KvStore::<i64>::new()).await?;
/// let node = pslite_io::start(joining.for_role(Role::Worker)).await?;
/// node.wait_ready().await?;
/// let worker = KvWorker::<i64>::new(node, CustomerId::DEFAULT);
/// worker.push_wait(&[5], &[3]).await?;
/// assert_eq!(worker.pull_wait(&[5]).await?, [3]);
/// assert_eq!(server.node().info().role, Role::Server);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct KvServer {
    node: NodeHandle,
}

impl KvServer {
    /// Starts a server node with `handle` (e.g. `KvStore::<f32>::new()`,
    /// run on the node's task) for application 0, installed before any
    /// request can arrive. A slow handle should get a thread of its own,
    /// or answer later; see [`ServerHandle`].
    ///
    /// ```no_run
    /// # async fn run(settings: pslite_io::Settings, model: impl pslite_core::KvHandle) -> pslite_io::Result<()> {
    /// use pslite_io::{KvServer, ServerHandle};
    /// let server = KvServer::start(settings, ServerHandle::threaded(model)).await?;
    /// server.node().wait_ready().await?;
    /// server.finalize().await?;
    /// # Ok(()) }
    /// ```
    pub async fn start(settings: Settings, handle: impl Into<ServerHandle>) -> Result<Self> {
        let handle = handle.into().install(0)?;
        let node = start_serving(settings, vec![(0, handle)], None).await?;
        Ok(Self { node })
    }

    /// The node behind the server.
    pub fn node(&self) -> &NodeHandle {
        &self.node
    }

    /// Serves until every node finalizes.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// # use pslite_core::{KvStore, Role};
    /// # use pslite_io::{KvServer, LocalCluster, Settings};
    /// # let scheduler = pslite_io::start(LocalCluster::settings(1, 1)).await?;
    /// # let joining = Settings::new(Role::Server, scheduler.local_addr()).cluster(1, 1);
    /// # let worker = pslite_io::start(joining.for_role(Role::Worker)).await?;
    /// let server = KvServer::start(joining, KvStore::<f32>::new()).await?;
    /// // A barrier: it needs the cluster formed, which `start` does not wait for.
    /// server.node().wait_ready().await?;
    /// # worker.wait_ready().await?;
    /// # scheduler.wait_ready().await?;
    /// // The job ends when every node finalizes.
    /// let (served, ..) = tokio::join!(server.finalize(), worker.finalize(), scheduler.finalize());
    /// assert!(served?.is_complete());
    /// # Ok(()) }
    /// ```
    pub async fn finalize(&self) -> Result<Released> {
        self.node.finalize().await
    }
}
