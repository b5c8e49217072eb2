//! The shell's one error type: everything a caller of `pslite-io` can see.

use pslite_core::{ConfigError, DecodeError, RequestError};

/// What went wrong, from the socket up to the protocol.
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
    /// No scheduler answered within `register_timeout`.
    #[error("no scheduler answered at {scheduler} within the registration timeout (PS_REGISTER_TIMEOUT)")]
    RegistrationFailed {
        /// Where the scheduler was expected.
        scheduler: std::net::SocketAddr,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
