//! The server API: ps-lite's `KVServer` with a user handle.

use pslite_core::KvHandle;

use crate::error::Result;
use crate::handle::NodeHandle;
use crate::msg::Released;
use crate::settings::Settings;
use crate::start::start_with;

/// A server node running `handle` for application 0 (install handles for
/// other application ids with [`NodeHandle::set_handle`]).
#[derive(Clone, Debug)]
pub struct KvServer {
    node: NodeHandle,
}

impl KvServer {
    /// Starts a server node with `handle` (e.g. `KvStore::<f32>::new()`).
    pub async fn start(settings: Settings, handle: impl KvHandle) -> Result<Self> {
        let node = start_with(settings, vec![(0, Box::new(handle))], None).await?;
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
