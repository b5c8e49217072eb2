//! The wire format: versioned, length-prefixed binary frames.
//!
//! Every frame starts with a fixed [`HEADER_LEN`]-byte header (see
//! [`header`]) that says who sent it, in which incarnation, how long the
//! body is and what kind of message it holds. The header is checked in full
//! before a single body byte is buffered, so a hostile peer cannot make us
//! allocate more than `frame_len_max`. Bodies are a fixed-layout metadata
//! part followed by raw payload sections (keys, values, lengths) that are
//! sliced out of the received buffer without copying.

pub mod decode;
pub mod frame;
pub mod header;
pub mod message;

pub use decode::FrameDecoder;
pub use frame::Frame;
pub use header::{Header, Kind, HEADER_LEN, MAGIC, VERSION};
pub use message::{
    BarrierOutcome, BatchPush, ChunkEnd, KvOp, KvRequestMsg, KvResponseMsg, KvRoute, Message, NodeEntry, NodeTableMsg,
    RegisterMsg, ReplicateMsg, SimpleMsg, TransferMsg, BATCH_PUSHES_MAX, TRANSFER_PUSHES_MAX,
};

/// What was wrong with bytes received from a peer.
///
/// ```
/// use bytes::BytesMut;
/// use pslite_core::{DecodeError, FrameDecoder};
/// let mut decoder = FrameDecoder::new(1 << 20);
/// let mut garbage = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n"[..]);
/// // Not our protocol: refused on the header alone, before any body is read.
/// assert!(matches!(decoder.decode(&mut garbage), Err(DecodeError::BadMagic(_))));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The frame does not start with our magic number.
    #[error("bad magic {0:#010x}: not a pslite frame")]
    BadMagic(u32),
    /// The peer speaks a protocol version we do not.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u16),
    /// The message kind is unknown.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// Reserved header bits are set.
    #[error("reserved header bits are set")]
    ReservedNotZero,
    /// The announced frame is larger than we accept.
    #[error("frame of {len} bytes exceeds frame_len_max {max}")]
    FrameTooLarge {
        /// Announced length, header included.
        len: u64,
        /// Our cap.
        max: u32,
    },
    /// Fewer bytes than a field needs.
    #[error("truncated: needed {needed} bytes, have {have}")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        have: usize,
    },
    /// Declared section lengths disagree with each other or with the body.
    #[error("section mismatch: {0}")]
    SectionMismatch(&'static str),
    /// A replica table that is not one (see [`Chains::from_parts`](crate::Chains::from_parts)).
    #[error("invalid replica table: {0}")]
    Chains(#[from] crate::chains::ChainsError),
    /// A field holds a value that no valid sender produces.
    #[error("invalid field {field}: {value}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
    },
}

#[cfg(test)]
pub(crate) mod tests;
