//! The fixed frame header.
//!
//! Layout (little-endian, 40 bytes):
//!
//! | offset | size | field                                           |
//! |-------:|-----:|-------------------------------------------------|
//! | 0      | 4    | magic `PSLT`                                    |
//! | 4      | 2    | protocol version                                |
//! | 6      | 1    | message kind                                    |
//! | 7      | 1    | flags (reserved, must be zero)                  |
//! | 8      | 4    | body length in bytes (header excluded)          |
//! | 12     | 4    | sender node id (0 before registration)          |
//! | 16     | 4    | sender incarnation                              |
//! | 20     | 4    | receiver node id (0 when unknown)               |
//! | 24     | 4    | receiver incarnation                            |
//! | 28     | 4    | reserved, must be zero                          |
//! | 32     | 8    | sequence number for reliable delivery (0: none) |
//!
//! Identity lives in the header rather than the body so a receiver can drop
//! a stale incarnation's frame without decoding its body. Both ends are
//! named: the sender's incarnation lets a receiver drop what a former
//! process sent, and the receiver's lets a replacement drop what was meant
//! for its predecessor (a resend that outlived it, say).

use super::DecodeError;
use crate::id::{Incarnation, NodeId};

/// Bytes in a header.
pub const HEADER_LEN: usize = 40;
/// `PSLT` in little-endian.
pub const MAGIC: u32 = u32::from_le_bytes(*b"PSLT");
/// The one protocol version this build speaks.
pub const VERSION: u16 = 6;

/// Message kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// A node asks to join.
    Register = 1,
    /// The scheduler's view of the cluster.
    NodeTable = 2,
    /// A node arrives at a barrier.
    Barrier = 3,
    /// The scheduler releases (or fails) a barrier.
    BarrierRelease = 4,
    /// A node is alive.
    Heartbeat = 5,
    /// The scheduler is alive.
    HeartbeatAck = 6,
    /// Receipt of a reliable frame.
    Ack = 7,
    /// Shut down.
    Terminate = 8,
    /// Push and/or pull.
    KvRequest = 9,
    /// Answer to a KV request.
    KvResponse = 10,
    /// SimpleApp request.
    SimpleRequest = 11,
    /// SimpleApp response.
    SimpleResponse = 12,
    /// A batch going down a range's chain.
    Replicate = 13,
    /// A range's batches are applied at the tail up to a number.
    Committed = 14,
    /// A chain member asks its predecessor for batches again.
    ResendFrom = 15,
    /// An item of a state transfer, tail to learner.
    Transfer = 16,
    /// A learner applied a transfer's items up to a number.
    Learned = 17,
    /// A range's learner holds it, tail to scheduler.
    CaughtUp = 18,
}

impl Kind {
    /// Parses a kind byte.
    pub const fn from_wire(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => Self::Register,
            2 => Self::NodeTable,
            3 => Self::Barrier,
            4 => Self::BarrierRelease,
            5 => Self::Heartbeat,
            6 => Self::HeartbeatAck,
            7 => Self::Ack,
            8 => Self::Terminate,
            9 => Self::KvRequest,
            10 => Self::KvResponse,
            11 => Self::SimpleRequest,
            12 => Self::SimpleResponse,
            13 => Self::Replicate,
            14 => Self::Committed,
            15 => Self::ResendFrom,
            16 => Self::Transfer,
            17 => Self::Learned,
            18 => Self::CaughtUp,
            _ => return None,
        })
    }
}

/// A decoded, validated header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Message kind.
    pub kind: Kind,
    /// Body length (header excluded).
    pub body_len: u32,
    /// Sender id, [`NodeId::UNASSIGNED`] before registration.
    pub sender: NodeId,
    /// Sender incarnation.
    pub incarnation: Incarnation,
    /// Intended receiver, [`NodeId::UNASSIGNED`] when not known yet.
    pub receiver: NodeId,
    /// The incarnation of `receiver` the frame is meant for (0 when the
    /// receiver is not known yet).
    pub receiver_incarnation: Incarnation,
    /// Reliable-delivery sequence number; 0 for frames that are not acked.
    pub seq: u64,
}

impl Header {
    /// Encodes into the fixed layout.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        out[4..6].copy_from_slice(&VERSION.to_le_bytes());
        out[6] = self.kind as u8;
        out[7] = 0;
        out[8..12].copy_from_slice(&self.body_len.to_le_bytes());
        out[12..16].copy_from_slice(&self.sender.get().to_le_bytes());
        out[16..20].copy_from_slice(&self.incarnation.0.to_le_bytes());
        out[20..24].copy_from_slice(&self.receiver.get().to_le_bytes());
        out[24..28].copy_from_slice(&self.receiver_incarnation.0.to_le_bytes());
        out[32..40].copy_from_slice(&self.seq.to_le_bytes());
        out
    }

    /// Decodes and validates the first [`HEADER_LEN`] bytes of `bytes`,
    /// refusing anything longer than `frame_len_max` in total.
    pub fn decode(bytes: &[u8], frame_len_max: u32) -> Result<Self, DecodeError> {
        if bytes.len() < HEADER_LEN {
            return Err(DecodeError::Truncated { needed: HEADER_LEN, have: bytes.len() });
        }
        let u32_at = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let magic = u32_at(0);
        if magic != MAGIC {
            return Err(DecodeError::BadMagic(magic));
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let kind = Kind::from_wire(bytes[6]).ok_or(DecodeError::UnknownKind(bytes[6]))?;
        if bytes[7] != 0 {
            return Err(DecodeError::ReservedNotZero);
        }
        let body_len = u32_at(8);
        let total = HEADER_LEN as u64 + u64::from(body_len);
        if total > u64::from(frame_len_max) {
            return Err(DecodeError::FrameTooLarge { len: total, max: frame_len_max });
        }
        let node = |field: &'static str, raw: u32| {
            NodeId::from_raw(raw).ok_or(DecodeError::InvalidField { field, value: u64::from(raw) })
        };
        if u32_at(28) != 0 {
            return Err(DecodeError::ReservedNotZero);
        }
        let mut seq_raw = [0u8; 8];
        seq_raw.copy_from_slice(&bytes[32..40]);
        Ok(Self {
            kind,
            body_len,
            sender: node("sender", u32_at(12))?,
            incarnation: Incarnation(u32_at(16)),
            receiver: node("receiver", u32_at(20))?,
            receiver_incarnation: Incarnation(u32_at(24)),
            seq: u64::from_le_bytes(seq_raw),
        })
    }

    /// Total frame length, header included.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.body_len as usize
    }
}
