//! Arbitrary bytes through the frame cutter and the message codec.
//!
//! Input layout: one byte picks `frame_len_max` (top two bits) and the
//! largest chunk (low six bits, 0 = the whole stream at once), one byte
//! seeds the chunk sizes, the rest is the byte stream. Checked:
//! - nothing panics;
//! - the decoder never holds more than `frame_len_max` plus one chunk;
//! - every cut frame has the header it announced and, when it decodes,
//!   re-encodes to exactly its own bytes (one encoding per message);
//! - the chunking does not change the outcome: frames and final error are
//!   the same as when the stream arrives in one piece.

use bytes::{Bytes, BytesMut};

use super::decisions::Decisions;
use crate::config::FRAME_LEN_MIN;
use crate::rng::Rng;
use crate::wire::message::Envelope;
use crate::wire::{DecodeError, FrameDecoder, Header, Message, HEADER_LEN};

/// Caps to decode under: the smallest valid config value, then smaller
/// ones so the over-length path is reached by short inputs too.
const FRAME_LEN_MAXES: [u32; 4] = [FRAME_LEN_MIN, 1024, 128, HEADER_LEN as u32 + 8];

/// Feeds `data` to a [`FrameDecoder`] in input-chosen chunks and decodes
/// every frame; panics only when a codec invariant is broken.
pub fn frame_decode(data: &[u8]) {
    let mut d = Decisions::new(data);
    let setting = d.byte();
    let frame_len_max = FRAME_LEN_MAXES[usize::from(setting >> 6)];
    let chunk_len_max = usize::from(setting & 0x3f);
    let chunk_seed = d.byte();
    let stream = d.rest();

    whole_input_as_one_frame(stream, frame_len_max);
    let chunked = cut(stream, frame_len_max, chunk_len_max, chunk_seed);
    let at_once = cut(stream, frame_len_max, 0, 0);
    assert_eq!(chunked, at_once, "chunking changed what was decoded");
}

/// What a stream decoded to: the frames, then how it ended.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    frames: Vec<Bytes>,
    error: Option<DecodeError>,
}

/// Runs `stream` through a decoder in chunks of 1..=`chunk_len_max` bytes
/// drawn from `seed` (0: the whole stream in one chunk).
fn cut(stream: &[u8], frame_len_max: u32, chunk_len_max: usize, seed: u8) -> Outcome {
    let mut rng = Rng::new(u64::from(seed));
    let mut decoder = FrameDecoder::new(frame_len_max);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let len = match chunk_len_max {
            0 => rest.len(),
            max => (1 + rng.below(max as u64) as usize).min(rest.len()),
        };
        let (piece, tail) = rest.split_at(len);
        rest = tail;
        buf.extend_from_slice(piece);
        assert!(
            buf.len() <= frame_len_max as usize + piece.len(),
            "decoder holds {} bytes: more than frame_len_max {frame_len_max} plus a {}-byte chunk",
            buf.len(),
            piece.len()
        );
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some((header, frame))) => {
                    check_frame(&header, &frame, frame_len_max);
                    frames.push(frame);
                }
                Ok(None) => {
                    let wanted = decoder.bytes_wanted(buf.len());
                    assert!(wanted > 0, "decoder wants nothing but returned no frame");
                    assert!(
                        buf.len() + wanted <= (frame_len_max as usize).max(HEADER_LEN),
                        "decoder asks to buffer beyond frame_len_max"
                    );
                    break;
                }
                Err(error) => return Outcome { frames, error: Some(error) },
            }
        }
    }
    Outcome { frames, error: None }
}

/// The whole input handed over as if it were one frame (what
/// `Node::handle_frame` receives from a shell that cut it wrongly).
fn whole_input_as_one_frame(stream: &[u8], frame_len_max: u32) {
    let Ok(header) = Header::decode(stream, frame_len_max) else {
        return;
    };
    let frame = Bytes::copy_from_slice(stream);
    if stream.len() != header.frame_len() {
        assert!(Message::decode(&header, &frame).is_err(), "a frame of the wrong length decoded");
        return;
    }
    check_frame(&header, &frame, frame_len_max);
}

/// A cut frame: its header is what it announced, and a decodable body
/// re-encodes to the same bytes.
fn check_frame(header: &Header, frame: &Bytes, frame_len_max: u32) {
    assert_eq!(frame.len(), header.frame_len(), "frame length differs from its header");
    assert!(frame.len() <= frame_len_max as usize, "frame longer than frame_len_max");
    assert_eq!(Header::decode(frame, frame_len_max).as_ref(), Ok(header), "header decodes differently");
    assert_eq!(header.encode()[..], frame[..HEADER_LEN], "header re-encodes differently");
    let Ok(message) = Message::decode(header, frame) else {
        return;
    };
    let envelope = Envelope {
        sender: header.sender,
        incarnation: header.incarnation,
        receiver: header.receiver,
        receiver_incarnation: header.receiver_incarnation,
        seq: header.seq,
    };
    let again = message.encode(envelope).to_bytes();
    assert_eq!(again, frame, "{message:?} re-encodes to other bytes than it was decoded from");
}
