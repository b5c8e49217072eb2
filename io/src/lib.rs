//! # pslite-io: the production shell of pslite
//!
//! The same sans-IO core that the simulator tests, driven by tokio TCP
//! sockets and a real clock. One task per node owns its `Node`; per
//! connection a reader cuts frames with the core's `FrameDecoder` (no
//! copy) and a writer batches frames into vectored writes.
//!
//! A server handle runs on the node's task, which suits quick handles
//! such as the default store; a slow one gets a thread of its own or
//! answers later, so it holds up neither heartbeats nor other requests
//! (see [`ServerHandle`]).
//!
//! ```no_run
//! # async fn run() -> pslite_io::Result<()> {
//! use pslite_io::LocalCluster;
//! let cluster = LocalCluster::start(2, 1).await?;
//! let worker = cluster.worker::<f32>(0);
//! let ts = worker.push(&[1, u64::MAX], &[1.0, 2.0]).await?;
//! worker.wait(ts).await?;
//! assert_eq!(worker.pull_wait(&[1, u64::MAX]).await?, vec![1.0, 2.0]);
//! cluster.finalize().await?;
//! # Ok(()) }
//! ```

// Every public item is documented: this crate is the user API.
#![warn(missing_docs)]

// Inside, from the bottom up (tests/module_graph.rs keeps it acyclic):
// `error`, `settings` and `socket` need nothing of the crate, `env` and
// `handshake` only the settings; `msg` holds the messages between tasks;
// `outcomes` the results nobody waited for yet; `conn` the reader and
// writer tasks; `driver` the node task; `respond` the server handles that
// run off the node's task and answer it later (through `msg`, so the
// driver needs nothing of it); `handle` the user API; `start` start-up
// and the accept loop; `worker`, `server`, `local` and `blocking` the
// APIs built on them.
pub mod blocking;
mod conn;
mod driver;
pub mod env;
mod error;
mod handle;
mod handshake;
mod local;
mod msg;
mod outcomes;
mod respond;
mod server;
mod settings;
mod socket;
mod start;
mod worker;

pub use error::{Error, Result};
pub use handle::NodeHandle;
pub use local::{HandleFactory, LocalCluster};
pub use msg::{Completion, Info, NodeEvent, Released, SimpleHandler};
pub use respond::{Responder, ServerHandle};
pub use server::KvServer;
pub use settings::{Settings, TOKEN_LEN_MAX};
pub use start::{start, start_with};
pub use worker::{KvWorker, Pulled, RawKvWorker, RawPulled};
