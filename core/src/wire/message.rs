//! Message bodies: what each frame kind carries and how it is laid out.
//!
//! Metadata is a fixed little-endian layout per kind, read through a
//! bounds-checked `Reader`; payload sections follow it and are sliced out
//! of the frame buffer, never copied. Every count read from the wire is
//! checked against the bytes actually present before anything is allocated.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{BufMut, Bytes, BytesMut};
use smallvec::{smallvec, SmallVec};

use super::frame::Frame;
use super::header::{Header, Kind, HEADER_LEN};
use super::DecodeError;
use crate::chains::{Chains, Members, RangeChain, REPLICAS_MAX};
use crate::id::{Group, Incarnation, NodeId, Rank, Role};
use crate::kv::values::{DType, Keys, Lens, Values};
pub use crate::kv::KvOp;
use crate::range::KeyRange;

/// A node asks the scheduler to join (or rejoin) the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterMsg {
    /// The role it wants.
    pub role: Role,
    /// Where it can be reached.
    pub listen_addr: SocketAddr,
    /// A random number drawn once per process: it tells a retry of the same
    /// process (idempotent) apart from a restarted one (a new incarnation).
    pub instance: u64,
}

/// One node in the scheduler's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeEntry {
    /// Its id.
    pub id: NodeId,
    /// Its current incarnation.
    pub incarnation: Incarnation,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The process instance that holds the id now.
    pub instance: u64,
    /// Whether the scheduler considers it alive.
    pub alive: bool,
}

/// The scheduler's view of the cluster, sent whenever it changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeTableMsg {
    /// Increases with every change; older tables are ignored.
    pub epoch: u64,
    /// Every server and worker, ordered by id.
    pub nodes: Vec<NodeEntry>,
    /// The recipient's next barrier generation on each group it belongs
    /// to, in the scheduler's numbering. A node reads it once, when the
    /// table gives it its id: a replacement joins the barriers where the
    /// survivors are, not at 0.
    pub generations: Vec<(Group, u64)>,
    /// Which servers hold each key range, at the same epoch as `nodes`
    /// (empty only in tables no scheduler sent, such as forged ones in
    /// tests: the scheduler always sends its table).
    pub chains: Chains,
}

/// How a barrier ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BarrierOutcome {
    /// Every member arrived.
    Released,
    /// Released among the live members; these dead members never arrived
    /// (the policy released without them, at once or after waiting for
    /// their replacements).
    ReleasedWithout(Vec<NodeId>),
    /// A member died, and the policy fails the barrier on a death.
    MemberDied(NodeId),
}

/// A push, pull or push_pull slice for one server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvRequestMsg {
    /// Application id.
    pub app: u32,
    /// Customer within the application.
    pub customer: u32,
    /// The worker's timestamp for the whole request.
    pub ts: u32,
    /// User command, passed to the handle.
    pub cmd: i32,
    /// Push, pull or both.
    pub op: KvOp,
    /// Keys, ascending.
    pub keys: Keys,
    /// Values (empty for a pull; the dtype says what a pull expects).
    pub values: Values,
    /// Per-key lengths for variable-length values.
    pub lens: Option<Lens>,
    /// Which range the part is for and under which table it was routed.
    pub route: KvRoute,
}

/// Where a request part was sent, for replicated ranges (all zero with
/// one copy, where a server's range alone says where a part goes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvRoute {
    /// The index of the part's key range in the replica table: with
    /// several copies one server may get two parts of one request (it is
    /// the tail of one range and the head of another), and its answers
    /// name the part they are for.
    pub part: u32,
    /// The table epoch the worker routed the part under: a server whose
    /// table is older holds the part until it learns the newer one.
    pub epoch: u64,
    /// The oldest request of the same customer the worker still waits
    /// on: pushes before it are settled, and the range's dedup table may
    /// forget them.
    pub floor: u32,
}

/// A server's answer to a [`KvRequestMsg`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvResponseMsg {
    /// Application id.
    pub app: u32,
    /// Customer.
    pub customer: u32,
    /// Timestamp of the request.
    pub ts: u32,
    /// `Some(reason)` when the handle refused the request.
    pub error: Option<String>,
    /// Keys of pulled values.
    pub keys: Keys,
    /// Pulled values.
    pub values: Values,
    /// Lengths of pulled values, when variable.
    pub lens: Option<Lens>,
    /// The part answered ([`KvRoute::part`] of the request).
    pub part: u32,
    /// `Some(epoch)`: not served, because this server's table at `epoch`
    /// does not give it the part's place in its range's chain; the worker
    /// sends the part again where a table at least that new says.
    pub redirect: Option<u64>,
}

/// One push a replicated batch applied, named as the range's dedup table
/// knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchPush {
    /// The worker process.
    pub worker: NodeId,
    /// Its incarnation.
    pub incarnation: Incarnation,
    /// The customer (app, customer).
    pub customer: (u32, u32),
    /// The request's timestamp.
    pub ts: u32,
    /// The worker's oldest waiting request then ([`KvRoute::floor`]).
    pub floor: u32,
    /// Whether the tail answers it once applied (a push: its answer is an
    /// acknowledgement any member can give) rather than the head (a
    /// push_pull, whose values the head's handle computed).
    pub tail_answers: bool,
}

/// A batch going down a range's chain: the pushes it applied and the
/// state they left on their keys (the handle's `export`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicateMsg {
    /// The range's index in the replica table.
    pub range: u32,
    /// The sender's table epoch.
    pub epoch: u64,
    /// The batch's number in the range's order, from 1.
    pub seq: u64,
    /// The application whose handle made (and installs) the state.
    pub app: u32,
    /// The pushes it applied (at most [`BATCH_PUSHES_MAX`]).
    pub pushes: Vec<BatchPush>,
    /// Keys, values and lengths as the head's handle exported them.
    pub keys: Keys,
    /// See `keys`.
    pub values: Values,
    /// See `keys`.
    pub lens: Option<Lens>,
}

/// Where a chunk of a state transfer ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkEnd {
    /// The last key the chunk covers: every key of the range up to it
    /// that the tail held is in this chunk or an earlier one.
    pub through: u64,
    /// No chunk follows: with it the learner holds the whole range.
    pub last: bool,
}

/// One item of a state transfer, from a range's tail to its learner: a
/// key-ordered chunk of the range's state, or a batch the tail applied
/// meanwhile. Items are numbered on their own stream, apart from the
/// range's batch numbers, and installed strictly in that order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferMsg {
    /// The range's index in the replica table.
    pub range: u32,
    /// The range's `changed_at` the tail streams under: a learner follows
    /// only the tail of its own table.
    pub source: u64,
    /// Which of the tail's streams to this learner (from 1): a newer one
    /// starts the transfer over.
    pub stream: u64,
    /// The item's number on the stream, from 1.
    pub item: u64,
    /// A batch's number in the range's order; for a chunk, the last batch
    /// the tail applied before reading it.
    pub seq: u64,
    /// `Some` for a chunk, `None` for a batch.
    pub chunk: Option<ChunkEnd>,
    /// The application whose handle exported (and installs) the state.
    pub app: u32,
    /// A batch's pushes, each with the batch's number; in a transfer's
    /// first chunk, the range's dedup table, each push with the number of
    /// the batch that applied it (at most [`TRANSFER_PUSHES_MAX`]).
    pub pushes: Vec<(BatchPush, u64)>,
    /// Keys, values and lengths as the tail's handle exported them.
    pub keys: Keys,
    /// See `keys`.
    pub values: Values,
    /// See `keys`.
    pub lens: Option<Lens>,
}

/// A SimpleApp request or response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimpleMsg {
    /// Application id.
    pub app: u32,
    /// Customer.
    pub customer: u32,
    /// Timestamp of the request.
    pub ts: u32,
    /// Integer head (ps-lite's `head`).
    pub head: i32,
    /// Opaque body.
    pub body: Bytes,
}

/// Every message that crosses the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// See [`RegisterMsg`].
    Register(RegisterMsg),
    /// See [`NodeTableMsg`].
    NodeTable(NodeTableMsg),
    /// A node arrived at barrier `generation` of `group`.
    Barrier {
        /// The group.
        group: Group,
        /// Counts the barriers of this node; keeps back-to-back ones apart.
        generation: u64,
        /// Whether it is the final barrier (`finalize`), which waits for
        /// dead members' replacements whatever the barrier policy.
        finalize: bool,
    },
    /// The barrier `generation` of `group` ended.
    BarrierRelease {
        /// The group.
        group: Group,
        /// The generation.
        generation: u64,
        /// How it ended.
        outcome: BarrierOutcome,
    },
    /// A node is alive.
    Heartbeat {
        /// When the node sent it, by its own clock (nanoseconds), echoed
        /// back: the scheduler declares the node dead no sooner than
        /// `heartbeat_timeout` after it, which bounds the node's read lease.
        sent_at: u64,
    },
    /// The scheduler is alive, at this membership epoch.
    HeartbeatAck {
        /// The scheduler's current epoch, so a node that missed a table asks again.
        epoch: u64,
        /// The `sent_at` of the heartbeat answered.
        echo: u64,
    },
    /// Receipt of frames with these sequence numbers. One ACK frame
    /// carries every receipt gathered for a peer while handling a batch of
    /// input, so small requests do not double the frame count.
    Ack {
        /// The acknowledged sequence numbers (at most [`ACKS_PER_FRAME_MAX`]).
        seqs: Vec<u64>,
    },
    /// Stop.
    Terminate,
    /// See [`KvRequestMsg`].
    KvRequest(KvRequestMsg),
    /// See [`KvResponseMsg`].
    KvResponse(KvResponseMsg),
    /// SimpleApp request.
    SimpleRequest(SimpleMsg),
    /// SimpleApp response.
    SimpleResponse(SimpleMsg),
    /// See [`ReplicateMsg`].
    Replicate(ReplicateMsg),
    /// Every batch of range `range` up to `seq` is applied at the tail
    /// (sent up the chain, member to predecessor).
    Committed {
        /// The range's index.
        range: u32,
        /// The last batch committed.
        seq: u64,
    },
    /// The sender dropped batches of range `range` it could not hold: send
    /// everything from `seq` on again.
    ResendFrom {
        /// The range's index.
        range: u32,
        /// The first batch missing.
        seq: u64,
    },
    /// See [`TransferMsg`].
    Transfer(TransferMsg),
    /// A learner installed the transfer of range `range` through `item`
    /// (learner to tail).
    Learned {
        /// The range's index.
        range: u32,
        /// Which time this learner started learning the range (from 1):
        /// a request from a start whose reports the tail has seen is a
        /// late copy.
        start: u64,
        /// The stream, as the tail numbered it; 0 asks for a stream from
        /// the start (the learner holds nothing of any).
        stream: u64,
        /// The last item installed.
        item: u64,
        /// It dropped later items it could not hold: send them again.
        resend: bool,
    },
    /// The learner of range `range`, process `learner`, holds the range
    /// and every batch the tail acknowledged, and the tail commits
    /// nothing it lacks (tail to scheduler): it may become the tail.
    CaughtUp {
        /// The range's index.
        range: u32,
        /// The range's `changed_at` the transfer came under.
        source: u64,
        /// The learner's incarnation.
        learner: Incarnation,
    },
}

/// Header fields that are not about the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// Sender id.
    pub sender: NodeId,
    /// Sender incarnation.
    pub incarnation: Incarnation,
    /// Receiver id.
    pub receiver: NodeId,
    /// The receiver's incarnation, as the sender knows it.
    pub receiver_incarnation: Incarnation,
    /// Sequence number, 0 when unreliable.
    pub seq: u64,
}

/// Most sequence numbers one ACK frame carries.
pub const ACKS_PER_FRAME_MAX: usize = 4096;
/// Most pushes one replicated batch names: bounds the decode of a
/// hostile batch.
pub const BATCH_PUSHES_MAX: usize = 4096;
/// Most pushes one transfer item names (a range's dedup table is capped
/// at as many entries): bounds the decode of a hostile item.
pub const TRANSFER_PUSHES_MAX: usize = 1 << 16;
/// Most nodes a table may list: bounds the decode of a hostile table.
pub const NODES_MAX: usize = 1 << 16;
/// Distinct groups (every non-empty subset of the three roles).
const GROUPS_MAX: usize = 7;
const ADDR_LEN: usize = 19;
const NODE_ENTRY_LEN: usize = 4 + 4 + ADDR_LEN + 8 + 1;
const KV_META_LEN: usize = 4 * 4 + 4 + 4 * 3;
const KV_ROUTE_LEN: usize = 4 + 4 + 8;
const REPLICATE_META_LEN: usize = 4 + 8 + 8 + 4 + 4;
const BATCH_PUSH_LEN: usize = 6 * 4 + 1;
const TRANSFER_META_LEN: usize = 4 + 8 + 8 + 8 + 8 + 1 + 8 + 4 + 4;
const SIMPLE_META_LEN: usize = 4 * 4;

/// Bytes of metadata of every message but a node table and a release that
/// names missing members (which grow as they need).
const META_LEN_MAX: usize = 64;

impl Message {
    /// The frame kind.
    pub fn kind(&self) -> Kind {
        match self {
            Self::Register(_) => Kind::Register,
            Self::NodeTable(_) => Kind::NodeTable,
            Self::Barrier { .. } => Kind::Barrier,
            Self::BarrierRelease { .. } => Kind::BarrierRelease,
            Self::Heartbeat { .. } => Kind::Heartbeat,
            Self::HeartbeatAck { .. } => Kind::HeartbeatAck,
            Self::Ack { .. } => Kind::Ack,
            Self::Terminate => Kind::Terminate,
            Self::KvRequest(_) => Kind::KvRequest,
            Self::KvResponse(_) => Kind::KvResponse,
            Self::SimpleRequest(_) => Kind::SimpleRequest,
            Self::SimpleResponse(_) => Kind::SimpleResponse,
            Self::Replicate(_) => Kind::Replicate,
            Self::Committed { .. } => Kind::Committed,
            Self::ResendFrom { .. } => Kind::ResendFrom,
            Self::Transfer(_) => Kind::Transfer,
            Self::Learned { .. } => Kind::Learned,
            Self::CaughtUp { .. } => Kind::CaughtUp,
        }
    }

    /// Encodes into a frame. Payload sections are shared, not copied.
    pub fn encode(&self, envelope: Envelope) -> Frame {
        self.encode_with(envelope, &mut BytesMut::new())
    }

    /// [`encode`](Self::encode), writing the fixed metadata into `scratch`
    /// and splitting it off: a sender that keeps one scratch buffer makes
    /// one allocation per many frames instead of one per frame.
    pub fn encode_with(&self, envelope: Envelope, scratch: &mut BytesMut) -> Frame {
        // Room for every fixed layout but a node table; when the scratch
        // buffer runs out this takes a new one of its original size.
        scratch.reserve(META_LEN_MAX);
        let meta = scratch;
        let mut parts: SmallVec<[Bytes; 4]> = SmallVec::new();
        match self {
            Self::Register(m) => {
                meta.put_u8(m.role.to_wire());
                put_addr(meta, m.listen_addr);
                meta.put_u64_le(m.instance);
            }
            Self::NodeTable(m) => {
                meta.put_u64_le(m.epoch);
                meta.put_u32_le(m.nodes.len() as u32);
                for n in &m.nodes {
                    meta.put_u32_le(n.id.get());
                    meta.put_u32_le(n.incarnation.0);
                    put_addr(meta, n.addr);
                    meta.put_u64_le(n.instance);
                    meta.put_u8(u8::from(n.alive));
                }
                debug_assert!(m.generations.len() <= GROUPS_MAX, "one entry per group");
                meta.put_u8(m.generations.len() as u8);
                for (group, generation) in &m.generations {
                    meta.put_u8(group.bits());
                    meta.put_u64_le(*generation);
                }
                put_chains(meta, &m.chains);
            }
            Self::Barrier { group, generation, finalize } => {
                meta.put_u8(group.bits());
                meta.put_u64_le(*generation);
                meta.put_u8(u8::from(*finalize));
            }
            Self::BarrierRelease { group, generation, outcome } => {
                meta.put_u8(group.bits());
                meta.put_u64_le(*generation);
                match outcome {
                    BarrierOutcome::Released => meta.put_u8(0),
                    BarrierOutcome::MemberDied(id) => {
                        meta.put_u8(1);
                        meta.put_u32_le(id.get());
                    }
                    BarrierOutcome::ReleasedWithout(missing) => {
                        debug_assert!(missing.len() <= NODES_MAX, "members are nodes");
                        meta.put_u8(2);
                        meta.put_u32_le(missing.len() as u32);
                        for id in missing {
                            meta.put_u32_le(id.get());
                        }
                    }
                }
            }
            Self::Terminate => {}
            Self::Heartbeat { sent_at } => meta.put_u64_le(*sent_at),
            Self::HeartbeatAck { epoch, echo } => {
                meta.put_u64_le(*epoch);
                meta.put_u64_le(*echo);
            }
            Self::Ack { seqs } => {
                debug_assert!(seqs.len() <= ACKS_PER_FRAME_MAX, "the sender splits larger ACK lists");
                meta.put_u32_le(seqs.len() as u32);
                for seq in seqs {
                    meta.put_u64_le(*seq);
                }
            }
            Self::KvRequest(m) => {
                let op = match m.op {
                    KvOp::Push => 0,
                    KvOp::Pull => 1,
                    KvOp::PushPull => 2,
                };
                meta.put_u32_le(m.route.part);
                meta.put_u32_le(m.route.floor);
                meta.put_u64_le(m.route.epoch);
                put_kv_meta(meta, [m.app, m.customer, m.ts, m.cmd as u32], op, &m.keys, &m.values, m.lens.as_ref());
                push_sections(&mut parts, &m.keys, &m.values, m.lens.as_ref());
            }
            Self::KvResponse(m) => {
                let error = m.error.as_ref().map(|e| Values::from_slice(e.as_bytes()));
                let (status, values) = match (&error, m.redirect) {
                    (Some(e), _) => (1, e),
                    (None, Some(_)) => (2, &m.values),
                    (None, None) => (0, &m.values),
                };
                meta.put_u32_le(m.part);
                meta.put_u32_le(0);
                meta.put_u64_le(m.redirect.unwrap_or(0));
                put_kv_meta(meta, [m.app, m.customer, m.ts, 0], status, &m.keys, values, m.lens.as_ref());
                push_sections(&mut parts, &m.keys, values, m.lens.as_ref());
            }
            Self::SimpleRequest(m) | Self::SimpleResponse(m) => {
                meta.put_u32_le(m.app);
                meta.put_u32_le(m.customer);
                meta.put_u32_le(m.ts);
                meta.put_i32_le(m.head);
                parts.push(m.body.clone());
            }
            Self::Replicate(m) => {
                debug_assert!(m.pushes.len() <= BATCH_PUSHES_MAX, "the head folds at most that many");
                meta.reserve(m.pushes.len() * BATCH_PUSH_LEN);
                meta.put_u32_le(m.range);
                meta.put_u64_le(m.epoch);
                meta.put_u64_le(m.seq);
                meta.put_u32_le(m.app);
                meta.put_u32_le(m.pushes.len() as u32);
                for push in &m.pushes {
                    put_batch_push(meta, push);
                }
                put_kv_meta(meta, [0; 4], 0, &m.keys, &m.values, m.lens.as_ref());
                pad_to_sections(meta);
                push_sections(&mut parts, &m.keys, &m.values, m.lens.as_ref());
            }
            Self::Transfer(m) => {
                debug_assert!(m.pushes.len() <= TRANSFER_PUSHES_MAX, "the tail sends at most that many");
                meta.reserve(m.pushes.len() * (BATCH_PUSH_LEN + 8));
                meta.put_u32_le(m.range);
                meta.put_u64_le(m.source);
                meta.put_u64_le(m.stream);
                meta.put_u64_le(m.item);
                meta.put_u64_le(m.seq);
                let (tag, through) = match m.chunk {
                    None => (0, 0),
                    Some(ChunkEnd { through, last }) => (1 + u8::from(last), through),
                };
                meta.put_u8(tag);
                meta.put_u64_le(through);
                meta.put_u32_le(m.app);
                meta.put_u32_le(m.pushes.len() as u32);
                for (push, seq) in &m.pushes {
                    put_batch_push(meta, push);
                    meta.put_u64_le(*seq);
                }
                put_kv_meta(meta, [0; 4], 0, &m.keys, &m.values, m.lens.as_ref());
                pad_to_sections(meta);
                push_sections(&mut parts, &m.keys, &m.values, m.lens.as_ref());
            }
            Self::Learned { range, start, stream, item, resend } => {
                meta.put_u32_le(*range);
                meta.put_u64_le(*start);
                meta.put_u64_le(*stream);
                meta.put_u64_le(*item);
                meta.put_u8(u8::from(*resend));
            }
            Self::CaughtUp { range, source, learner } => {
                meta.put_u32_le(*range);
                meta.put_u64_le(*source);
                meta.put_u32_le(learner.0);
            }
            Self::Committed { range, seq } | Self::ResendFrom { range, seq } => {
                meta.put_u32_le(*range);
                meta.put_u64_le(*seq);
            }
        }
        let meta = meta.split().freeze();
        let mut all: SmallVec<[Bytes; 4]> = smallvec![meta];
        all.extend(parts.into_iter().filter(|p| !p.is_empty()));
        let body_len: usize = all.iter().map(Bytes::len).sum();
        let header = Header {
            kind: self.kind(),
            body_len: u32::try_from(body_len).expect("frames are capped far below 4 GiB by the sender"),
            sender: envelope.sender,
            incarnation: envelope.incarnation,
            receiver: envelope.receiver,
            receiver_incarnation: envelope.receiver_incarnation,
            seq: envelope.seq,
        };
        Frame { header: header.encode(), parts: all }
    }

    /// Decodes the body of a complete frame (`frame` includes the header,
    /// already validated into `header`).
    pub fn decode(header: &Header, frame: &Bytes) -> Result<Self, DecodeError> {
        if frame.len() != header.frame_len() {
            return Err(DecodeError::Truncated { needed: header.frame_len(), have: frame.len() });
        }
        let body = frame.slice(HEADER_LEN..);
        let mut r = Reader { bytes: &body, at: 0 };
        let message = match header.kind {
            Kind::Register => {
                let role = read_role(&mut r)?;
                let listen_addr = read_addr(&mut r)?;
                let instance = r.u64()?;
                Self::Register(RegisterMsg { role, listen_addr, instance })
            }
            Kind::NodeTable => {
                let epoch = r.u64()?;
                let count = r.u32()? as usize;
                if count > NODES_MAX {
                    return Err(DecodeError::InvalidField { field: "node count", value: count as u64 });
                }
                // Check the bytes are there before allocating for them.
                r.need(count * NODE_ENTRY_LEN)?;
                let mut nodes = Vec::with_capacity(count);
                for _ in 0..count {
                    let raw = r.u32()?;
                    let id = match NodeId::from_raw(raw) {
                        Some(id) if id.role().is_some() => id,
                        _ => return Err(DecodeError::InvalidField { field: "node id", value: u64::from(raw) }),
                    };
                    let incarnation = Incarnation(r.u32()?);
                    let addr = read_addr(&mut r)?;
                    let instance = r.u64()?;
                    let alive = read_bool(&mut r, "alive")?;
                    nodes.push(NodeEntry { id, incarnation, addr, instance, alive });
                }
                let count = usize::from(r.u8()?);
                if count > GROUPS_MAX {
                    return Err(DecodeError::InvalidField { field: "generation count", value: count as u64 });
                }
                let mut generations = Vec::with_capacity(count);
                for _ in 0..count {
                    generations.push((read_group(&mut r)?, r.u64()?));
                }
                let chains = read_chains(&mut r)?;
                Self::NodeTable(NodeTableMsg { epoch, nodes, generations, chains })
            }
            Kind::Barrier => {
                let group = read_group(&mut r)?;
                let generation = r.u64()?;
                let finalize = read_bool(&mut r, "finalize")?;
                Self::Barrier { group, generation, finalize }
            }
            Kind::BarrierRelease => {
                let group = read_group(&mut r)?;
                let generation = r.u64()?;
                let member = |raw: u32| {
                    NodeId::from_raw(raw)
                        .filter(|id| id.role().is_some())
                        .ok_or(DecodeError::InvalidField { field: "barrier member", value: u64::from(raw) })
                };
                let outcome = match r.u8()? {
                    0 => BarrierOutcome::Released,
                    1 => BarrierOutcome::MemberDied(member(r.u32()?)?),
                    2 => {
                        let count = r.u32()? as usize;
                        if count > NODES_MAX {
                            return Err(DecodeError::InvalidField { field: "missing count", value: count as u64 });
                        }
                        r.need(count * 4)?;
                        let mut missing = Vec::with_capacity(count);
                        for _ in 0..count {
                            missing.push(member(r.u32()?)?);
                        }
                        BarrierOutcome::ReleasedWithout(missing)
                    }
                    other => {
                        return Err(DecodeError::InvalidField { field: "barrier outcome", value: u64::from(other) })
                    }
                };
                Self::BarrierRelease { group, generation, outcome }
            }
            Kind::Heartbeat => Self::Heartbeat { sent_at: r.u64()? },
            Kind::Terminate => Self::Terminate,
            Kind::HeartbeatAck => Self::HeartbeatAck { epoch: r.u64()?, echo: r.u64()? },
            Kind::Ack => {
                let count = r.u32()? as usize;
                if count > ACKS_PER_FRAME_MAX {
                    return Err(DecodeError::InvalidField { field: "ack count", value: count as u64 });
                }
                r.need(count * 8)?;
                let mut seqs = Vec::with_capacity(count);
                for _ in 0..count {
                    seqs.push(r.u64()?);
                }
                Self::Ack { seqs }
            }
            Kind::KvRequest => {
                r.need(KV_ROUTE_LEN)?;
                let (part, floor, epoch) = (r.u32()?, r.u32()?, r.u64()?);
                let kv = read_kv(&mut r, &body, KeysEcho::Required, Layout::Packed)?;
                let op = match kv.code {
                    0 => KvOp::Push,
                    1 => KvOp::Pull,
                    2 => KvOp::PushPull,
                    other => return Err(DecodeError::InvalidField { field: "kv op", value: u64::from(other) }),
                };
                Self::KvRequest(KvRequestMsg {
                    app: kv.ids[0],
                    customer: kv.ids[1],
                    ts: kv.ids[2],
                    cmd: kv.ids[3] as i32,
                    op,
                    keys: kv.keys,
                    values: kv.values,
                    lens: kv.lens,
                    route: KvRoute { part, epoch, floor },
                })
            }
            Kind::KvResponse => {
                r.need(KV_ROUTE_LEN)?;
                let part = r.u32()?;
                if r.u32()? != 0 {
                    return Err(DecodeError::ReservedNotZero);
                }
                let epoch = r.u64()?;
                let kv = read_kv(&mut r, &body, KeysEcho::Optional, Layout::Packed)?;
                // Responses have no command; its slot must stay zero.
                if kv.ids[3] != 0 {
                    return Err(DecodeError::ReservedNotZero);
                }
                let redirect = (kv.code == 2).then_some(epoch);
                if redirect.is_none() && epoch != 0 {
                    return Err(DecodeError::InvalidField { field: "kv redirect epoch", value: epoch });
                }
                let (error, values) = match kv.code {
                    0 | 2 => (None, kv.values),
                    1 => {
                        // The reason is UTF-8 text sent as bytes: anything
                        // else is refused rather than silently altered.
                        if kv.values.dtype() != DType::U8 {
                            let dtype = u64::from(kv.values.dtype().to_wire());
                            return Err(DecodeError::InvalidField { field: "kv error dtype", value: dtype });
                        }
                        let text = std::str::from_utf8(kv.values.as_bytes()).map_err(|e| {
                            DecodeError::InvalidField { field: "kv error text", value: e.valid_up_to() as u64 }
                        })?;
                        (Some(text.to_owned()), Values::empty(DType::U8))
                    }
                    other => return Err(DecodeError::InvalidField { field: "kv status", value: u64::from(other) }),
                };
                Self::KvResponse(KvResponseMsg {
                    app: kv.ids[0],
                    customer: kv.ids[1],
                    ts: kv.ids[2],
                    error,
                    keys: kv.keys,
                    values,
                    lens: kv.lens,
                    part,
                    redirect,
                })
            }
            Kind::Replicate => {
                r.need(REPLICATE_META_LEN)?;
                let (range, epoch, seq, app, count) = (r.u32()?, r.u64()?, r.u64()?, r.u32()?, r.u32()? as usize);
                if count > BATCH_PUSHES_MAX {
                    return Err(DecodeError::InvalidField { field: "batch pushes", value: count as u64 });
                }
                r.need(count * BATCH_PUSH_LEN)?;
                let mut pushes = Vec::with_capacity(count);
                for _ in 0..count {
                    pushes.push(read_batch_push(&mut r)?);
                }
                let kv = read_kv(&mut r, &body, KeysEcho::Required, Layout::Aligned)?;
                if kv.ids != [0; 4] || kv.code != 0 {
                    return Err(DecodeError::ReservedNotZero);
                }
                Self::Replicate(ReplicateMsg {
                    range,
                    epoch,
                    seq,
                    app,
                    pushes,
                    keys: kv.keys,
                    values: kv.values,
                    lens: kv.lens,
                })
            }
            Kind::Committed | Kind::ResendFrom => {
                let (range, seq) = (r.u32()?, r.u64()?);
                if header.kind == Kind::Committed {
                    Self::Committed { range, seq }
                } else {
                    Self::ResendFrom { range, seq }
                }
            }
            Kind::CaughtUp => {
                let (range, source, learner) = (r.u32()?, r.u64()?, Incarnation(r.u32()?));
                Self::CaughtUp { range, source, learner }
            }
            Kind::Learned => {
                let (range, start, stream, item) = (r.u32()?, r.u64()?, r.u64()?, r.u64()?);
                let resend = read_bool(&mut r, "learned: resend")?;
                Self::Learned { range, start, stream, item, resend }
            }
            Kind::Transfer => {
                r.need(TRANSFER_META_LEN)?;
                let (range, source, stream, item, seq) = (r.u32()?, r.u64()?, r.u64()?, r.u64()?, r.u64()?);
                let (tag, through) = (r.u8()?, r.u64()?);
                let chunk = match tag {
                    0 if through == 0 => None,
                    0 => return Err(DecodeError::ReservedNotZero),
                    1 | 2 => Some(ChunkEnd { through, last: tag == 2 }),
                    other => {
                        return Err(DecodeError::InvalidField { field: "transfer item kind", value: u64::from(other) })
                    }
                };
                let (app, count) = (r.u32()?, r.u32()? as usize);
                if count > TRANSFER_PUSHES_MAX {
                    return Err(DecodeError::InvalidField { field: "transfer pushes", value: count as u64 });
                }
                r.need(count * (BATCH_PUSH_LEN + 8))?;
                let mut pushes = Vec::with_capacity(count);
                for _ in 0..count {
                    let push = read_batch_push(&mut r)?;
                    pushes.push((push, r.u64()?));
                }
                let kv = read_kv(&mut r, &body, KeysEcho::Required, Layout::Aligned)?;
                if kv.ids != [0; 4] || kv.code != 0 {
                    return Err(DecodeError::ReservedNotZero);
                }
                Self::Transfer(TransferMsg {
                    range,
                    source,
                    stream,
                    item,
                    seq,
                    chunk,
                    app,
                    pushes,
                    keys: kv.keys,
                    values: kv.values,
                    lens: kv.lens,
                })
            }
            Kind::SimpleRequest | Kind::SimpleResponse => {
                r.need(SIMPLE_META_LEN)?;
                let msg = SimpleMsg {
                    app: r.u32()?,
                    customer: r.u32()?,
                    ts: r.u32()?,
                    head: r.u32()? as i32,
                    body: body.slice(r.at..),
                };
                r.at = body.len();
                if header.kind == Kind::SimpleRequest {
                    Self::SimpleRequest(msg)
                } else {
                    Self::SimpleResponse(msg)
                }
            }
        };
        if r.at != body.len() {
            return Err(DecodeError::SectionMismatch("trailing bytes after the message"));
        }
        Ok(message)
    }
}

/// Bytes of a chain entry with no members and no learner.
const CHAIN_ENTRY_MIN: usize = 8 + 8 + 8 + 1 + 4;
/// A learner field that names no learner.
const NO_LEARNER: u32 = u32::MAX;

/// The replica table: its replica count (0: no table), then per range its
/// keys, `changed_at`, members head first and learner.
fn put_chains(out: &mut BytesMut, chains: &Chains) {
    out.put_u8(chains.replicas());
    out.put_u32_le(chains.as_slice().len() as u32);
    for chain in chains.as_slice() {
        out.put_u64_le(chain.range().start());
        out.put_u64_le(chain.range().end_inclusive());
        out.put_u64_le(chain.changed_at());
        out.put_u8(chain.members().len() as u8);
        for rank in chain.members() {
            out.put_u32_le(rank.0);
        }
        out.put_u32_le(chain.learner().map_or(NO_LEARNER, |r| r.0));
    }
}

fn read_chains(r: &mut Reader<'_>) -> Result<Chains, DecodeError> {
    let replicas = r.u8()?;
    let count = r.u32()? as usize;
    if replicas == 0 {
        return match count {
            0 => Ok(Chains::default()),
            _ => Err(DecodeError::InvalidField { field: "chains without replicas", value: count as u64 }),
        };
    }
    if count > NODES_MAX {
        return Err(DecodeError::InvalidField { field: "range count", value: count as u64 });
    }
    r.need(count * CHAIN_ENTRY_MIN)?;
    let mut chains = Vec::with_capacity(count);
    for _ in 0..count {
        let (start, end) = (r.u64()?, r.u64()?);
        let range = KeyRange::new(start, end).ok_or(DecodeError::InvalidField { field: "range end", value: end })?;
        let changed_at = r.u64()?;
        let len = r.u8()?;
        if len > REPLICAS_MAX {
            return Err(DecodeError::InvalidField { field: "chain length", value: u64::from(len) });
        }
        let members: Members = (0..len).map(|_| r.u32().map(Rank)).collect::<Result<_, _>>()?;
        let learner = match r.u32()? {
            NO_LEARNER => None,
            rank => Some(Rank(rank)),
        };
        chains.push(RangeChain::new(range, members, learner, changed_at));
    }
    Ok(Chains::from_parts(replicas, chains)?)
}

fn put_addr(out: &mut BytesMut, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.put_u8(4);
            out.put_slice(&ip.to_ipv6_mapped().octets());
        }
        IpAddr::V6(ip) => {
            out.put_u8(6);
            out.put_slice(&ip.octets());
        }
    }
    out.put_u16_le(addr.port());
}

fn put_kv_meta(out: &mut BytesMut, ids: [u32; 4], code: u8, keys: &Keys, values: &Values, lens: Option<&Lens>) {
    for id in ids {
        out.put_u32_le(id);
    }
    out.put_u8(code);
    out.put_u8(values.dtype().to_wire());
    out.put_u8(u8::from(lens.is_some()));
    out.put_u8(0);
    out.put_u32_le(keys.as_bytes().len() as u32);
    out.put_u32_le(values.as_bytes().len() as u32);
    out.put_u32_le(lens.map_or(0, |l| l.as_bytes().len() as u32));
}

/// Where a message's key, value and length sections start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// Right after the metadata.
    Packed,
    /// At the next multiple of [`SECTION_ALIGN`] bytes from the frame's
    /// start, after zero padding: keys are 8 bytes each, so the values
    /// start there too, and a receiver whose frame lies at an aligned
    /// address can keep a chain's values as they arrived instead of
    /// copying them (`KvStore::install`).
    Aligned,
}

/// What [`Layout::Aligned`] aligns to: every element type's size divides it.
const SECTION_ALIGN: usize = 8;

/// Zeros after `meta` (a body's metadata, which follows the header) up to
/// the next multiple of [`SECTION_ALIGN`] from the frame's start.
fn pad_to_sections(meta: &mut BytesMut) {
    const _: () = assert!(HEADER_LEN % SECTION_ALIGN == 0, "the body starts aligned");
    meta.put_bytes(0, meta.len().next_multiple_of(SECTION_ALIGN) - meta.len());
}

fn push_sections(parts: &mut SmallVec<[Bytes; 4]>, keys: &Keys, values: &Values, lens: Option<&Lens>) {
    parts.push(keys.as_bytes().clone());
    parts.push(values.as_bytes().clone());
    if let Some(lens) = lens {
        parts.push(lens.as_bytes().clone());
    }
}

/// A bounds-checked cursor over a message body.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn need(&self, n: usize) -> Result<(), DecodeError> {
        let have = self.bytes.len() - self.at;
        if have < n {
            return Err(DecodeError::Truncated { needed: n, have });
        }
        Ok(())
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        self.need(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&self.bytes[self.at..self.at + N]);
        self.at += N;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.take().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.take().map(u64::from_le_bytes)
    }
}

fn read_role(r: &mut Reader<'_>) -> Result<Role, DecodeError> {
    let raw = r.u8()?;
    Role::from_wire(raw).ok_or(DecodeError::InvalidField { field: "role", value: u64::from(raw) })
}

fn read_group(r: &mut Reader<'_>) -> Result<Group, DecodeError> {
    let raw = r.u8()?;
    Group::from_bits(raw).ok_or(DecodeError::InvalidField { field: "group", value: u64::from(raw) })
}

fn put_batch_push(meta: &mut BytesMut, push: &BatchPush) {
    for field in [push.worker.get(), push.incarnation.0, push.customer.0, push.customer.1, push.ts, push.floor] {
        meta.put_u32_le(field);
    }
    meta.put_u8(u8::from(push.tail_answers));
}

fn read_batch_push(r: &mut Reader<'_>) -> Result<BatchPush, DecodeError> {
    let raw = r.u32()?;
    let worker = NodeId::from_raw(raw)
        .filter(|id| id.role() == Some(Role::Worker))
        .ok_or(DecodeError::InvalidField { field: "batch push worker", value: u64::from(raw) })?;
    let incarnation = Incarnation(r.u32()?);
    let customer = (r.u32()?, r.u32()?);
    let (ts, floor) = (r.u32()?, r.u32()?);
    let tail_answers = read_bool(r, "batch push answered by the tail")?;
    Ok(BatchPush { worker, incarnation, customer, ts, floor, tail_answers })
}

fn read_bool(r: &mut Reader<'_>, field: &'static str) -> Result<bool, DecodeError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(DecodeError::InvalidField { field, value: u64::from(other) }),
    }
}

fn read_addr(r: &mut Reader<'_>) -> Result<SocketAddr, DecodeError> {
    let family = r.u8()?;
    let octets: [u8; 16] = r.take()?;
    let port = u16::from_le_bytes(r.take()?);
    let ip = match family {
        4 => {
            let v6 = Ipv6Addr::from(octets);
            let v4 = v6.to_ipv4_mapped().ok_or(DecodeError::InvalidField { field: "ipv4 address", value: 0 })?;
            IpAddr::V4(Ipv4Addr::from(v4.octets()))
        }
        6 => IpAddr::V6(Ipv6Addr::from(octets)),
        other => return Err(DecodeError::InvalidField { field: "address family", value: u64::from(other) }),
    };
    Ok(SocketAddr::new(ip, port))
}

struct KvParts {
    ids: [u32; 4],
    code: u8,
    keys: Keys,
    values: Values,
    lens: Option<Lens>,
}

/// Whether a KV frame must carry the keys its lengths belong to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum KeysEcho {
    /// Requests: lengths describe the keys sent with them.
    Required,
    /// Responses: servers need not echo the keys (the worker has them), so
    /// lengths without keys are checked against the asked keys later.
    Optional,
}

fn read_kv(r: &mut Reader<'_>, body: &Bytes, keys_echo: KeysEcho, layout: Layout) -> Result<KvParts, DecodeError> {
    r.need(KV_META_LEN)?;
    let ids = [r.u32()?, r.u32()?, r.u32()?, r.u32()?];
    let code = r.u8()?;
    let dtype_raw = r.u8()?;
    let dtype =
        DType::from_wire(dtype_raw).ok_or(DecodeError::InvalidField { field: "dtype", value: u64::from(dtype_raw) })?;
    let has_lens = read_bool(r, "has lens")?;
    if r.u8()? != 0 {
        return Err(DecodeError::ReservedNotZero);
    }
    let keys_len = r.u32()? as usize;
    let values_len = r.u32()? as usize;
    let lens_len = r.u32()? as usize;
    if !has_lens && lens_len != 0 {
        return Err(DecodeError::SectionMismatch("lens section without the lens flag"));
    }
    if layout == Layout::Aligned {
        let pad = r.at.next_multiple_of(SECTION_ALIGN) - r.at;
        r.need(pad)?;
        for _ in 0..pad {
            if r.u8()? != 0 {
                return Err(DecodeError::ReservedNotZero);
            }
        }
    }
    let total = keys_len as u64 + values_len as u64 + lens_len as u64;
    if total != (body.len() - r.at) as u64 {
        return Err(DecodeError::SectionMismatch("section lengths do not add up to the body"));
    }
    let mut section = |len: usize| {
        let bytes = body.slice(r.at..r.at + len);
        r.at += len;
        bytes
    };
    let keys =
        Keys::from_bytes(section(keys_len)).ok_or(DecodeError::SectionMismatch("keys not a multiple of 8 bytes"))?;
    let values = Values::from_bytes(dtype, section(values_len))
        .ok_or(DecodeError::SectionMismatch("values not a multiple of the element size"))?;
    let lens = if has_lens {
        let lens = Lens::from_bytes(section(lens_len))
            .ok_or(DecodeError::SectionMismatch("lens not a multiple of 4 bytes"))?;
        let keys_omitted = keys_echo == KeysEcho::Optional && keys.is_empty();
        if lens.len() != keys.len() && !keys_omitted {
            return Err(DecodeError::SectionMismatch("one length per key expected"));
        }
        Some(lens)
    } else {
        None
    };
    Ok(KvParts { ids, code, keys, values, lens })
}
