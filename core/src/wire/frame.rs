//! An encoded frame ready for the socket.

use bytes::{BufMut, Bytes, BytesMut};
use smallvec::SmallVec;

use super::header::HEADER_LEN;

/// An encoded frame: the header, then body parts in order.
///
/// The parts are kept apart so the shell can hand them to a vectored write
/// and payloads (keys, values) reach the socket without being copied into
/// one buffer first.
///
/// ```
/// # use pslite_core::{Config, Instant, Node, Role};
/// # let config = Config::builder(Role::Worker, "127.0.0.1:9091".parse().unwrap()).build().unwrap();
/// # let mut node = Node::new(config, 1, Instant::ZERO);
///
/// use bytes::BytesMut;
/// let frame = node.poll_transmit().expect("a registration").frame;
/// // A vectored write sends the header and parts as they are; joined, they
/// // are the same bytes.
/// let mut joined = BytesMut::from(&frame.header[..]);
/// frame.parts.iter().for_each(|part| joined.extend_from_slice(part));
/// assert_eq!(joined.len(), frame.len());
/// assert_eq!(joined.freeze(), frame.to_bytes());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    /// The encoded header.
    pub header: [u8; HEADER_LEN],
    /// Body parts; their lengths add up to the header's body length.
    pub parts: SmallVec<[Bytes; 4]>,
}

impl Frame {
    /// Total length in bytes, header included.
    pub fn len(&self) -> usize {
        HEADER_LEN + self.parts.iter().map(Bytes::len).sum::<usize>()
    }

    /// Never true: a frame has at least a header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Appends the whole frame to `out` (one copy; the simulator and tests
    /// use this, the TCP shell writes the parts vectored instead).
    pub fn write_to(&self, out: &mut BytesMut) {
        out.reserve(self.len());
        out.put_slice(&self.header);
        for part in &self.parts {
            out.put_slice(part);
        }
    }

    /// The whole frame as one contiguous buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.len());
        self.write_to(&mut out);
        out.freeze()
    }
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Frame({} bytes, kind {})", self.len(), self.header[6])
    }
}
