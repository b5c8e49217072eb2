//! Cutting frames out of a byte stream.

use bytes::{Bytes, BytesMut};

use super::header::{Header, HEADER_LEN};
use super::DecodeError;

/// Streaming frame cutter for a TCP connection.
///
/// Feed it the connection's read buffer; it returns each complete frame as a
/// `Bytes` split off that buffer, so the payload is never copied. It looks
/// at a header as soon as [`HEADER_LEN`] bytes are present and refuses a bad
/// one (magic, version, kind, reserved bits, length over the cap) before the
/// body is buffered, and it tells the caller how many bytes to reserve so
/// the buffer never grows past one frame plus one read.
///
/// ```
/// # use pslite_core::{Config, Instant, Node, Role};
/// # let config = Config::builder(Role::Worker, "127.0.0.1:9091".parse().unwrap()).build().unwrap();
/// # let mut node = Node::new(config, 1, Instant::ZERO);
///
/// use bytes::BytesMut;
/// use pslite_core::FrameDecoder;
/// let frame = node.poll_transmit().expect("a registration").frame.to_bytes();
/// let mut decoder = FrameDecoder::new(1 << 20);
/// // The frame arrives in two reads: only the second completes it.
/// let mut buf = BytesMut::from(&frame[..10]);
/// assert!(decoder.decode(&mut buf)?.is_none());
/// buf.extend_from_slice(&frame[10..]);
/// let (_header, cut) = decoder.decode(&mut buf)?.expect("a whole frame");
/// assert_eq!((cut, buf.len()), (frame, 0));
/// # Ok::<(), pslite_core::DecodeError>(())
/// ```
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    frame_len_max: u32,
    /// Header of the frame being assembled, once validated.
    pending: Option<Header>,
}

impl FrameDecoder {
    /// A decoder that refuses frames longer than `frame_len_max` bytes.
    pub fn new(frame_len_max: u32) -> Self {
        Self { frame_len_max, pending: None }
    }

    /// The next complete frame in `buf`, split off its front; `Ok(None)`
    /// when more bytes are needed. After an error the stream is unusable
    /// (framing is lost) and the connection should be closed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<(Header, Bytes)>, DecodeError> {
        let header = match self.pending {
            Some(header) => header,
            None => {
                if buf.len() < HEADER_LEN {
                    return Ok(None);
                }
                let header = Header::decode(&buf[..HEADER_LEN], self.frame_len_max)?;
                self.pending = Some(header);
                header
            }
        };
        let frame_len = header.frame_len();
        if buf.len() < frame_len {
            return Ok(None);
        }
        self.pending = None;
        Ok(Some((header, buf.split_to(frame_len).freeze())))
    }

    /// Bytes still missing for the frame being assembled (at least one
    /// header when none is pending): what a reader should reserve.
    pub fn bytes_wanted(&self, buffered: usize) -> usize {
        let target = self.pending.map_or(HEADER_LEN, |h| h.frame_len());
        target.saturating_sub(buffered)
    }
}
