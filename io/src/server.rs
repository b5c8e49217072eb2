//! The server API: ps-lite's `KVServer` with a user handle.

use crate::error::Result;
use crate::handle::NodeHandle;
use crate::msg::Released;
use crate::respond::ServerHandle;
use crate::settings::Settings;
use crate::start::start_serving;

/// A server node running `handle` for application 0 (install handles for
/// other application ids with [`NodeHandle::set_handle`]).
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
    pub async fn finalize(&self) -> Result<Released> {
        self.node.finalize().await
    }
}
