//! The shell's one error type: everything a caller of `pslite-io` can see.

use pslite_core::{ConfigError, DType, DecodeError, RequestError};

/// What went wrong, from the socket up to the protocol.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> pslite_io::Result<()> {
/// use pslite_core::{ApiMisuse, RequestError};
/// use pslite_io::Error;
/// # let cluster = pslite_io::LocalCluster::start(1, 1).await?;
/// // Caller mistakes fail the call itself, before anything is sent.
/// match cluster.worker::<f32>(0).push(&[2, 1], &[1.0, 2.0]).await {
///     Err(Error::Request(RequestError::ApiMisuse(ApiMisuse::UnsortedKeys { index, .. }))) => assert_eq!(index, 1),
///     other => panic!("unsorted keys were accepted: {other:?}"),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket operation failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The protocol failed the request (dead peer, timeout, misuse, …).
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The configuration was refused.
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    /// A peer sent bytes that are not a valid frame.
    #[error("decode: {0}")]
    Decode(#[from] DecodeError),
    /// The node has shut down; its handles no longer work.
    #[error("the node has shut down")]
    Shutdown,
    /// A wait asked for values of one type, and the request was issued for
    /// another (through a raw worker on the same customer, say): the
    /// caller's mistake, since the servers' answers were checked against
    /// the request.
    #[error("a wait for {asked:?} values of a request issued for {issued:?} values")]
    ValueType {
        /// The type waited for.
        asked: DType,
        /// The type the request was issued for.
        issued: DType,
    },
    /// No scheduler answered within `register_timeout`.
    #[error("no scheduler answered at {scheduler} within the registration timeout (PS_REGISTER_TIMEOUT)")]
    RegistrationFailed {
        /// Where the scheduler was expected.
        scheduler: std::net::SocketAddr,
    },
}

/// Shorthand for results of this crate.
///
/// ```
/// use std::net::{SocketAddr, TcpListener};
/// // Errors of the layers below convert with `?`.
/// fn free_port() -> pslite_io::Result<SocketAddr> {
///     Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
/// }
/// assert_ne!(free_port()?.port(), 0);
/// # Ok::<(), pslite_io::Error>(())
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;
