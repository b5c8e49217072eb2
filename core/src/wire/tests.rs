//! Properties of the codec: every message survives encode → bytes →
//! decode, any chunking of a stream cuts the same frames, and no input —
//! arbitrary, truncated or hostile — panics the decoder or makes it ask for
//! more than its cap.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;

use super::message::Envelope;
use super::*;
use crate::chains::{Chains, ChainsError, Members, RangeChain, REPLICAS_MAX};
use crate::id::{Group, Incarnation, NodeId, Rank, Role};
use crate::kv::{DType, Keys, Lens, Values};
use crate::range::{RangesError, ServerRanges};

/// Small enough that generated frames hit it, large enough for all of them.
const FRAME_LEN_MAX: u32 = 1 << 14;

fn node_id() -> impl Strategy<Value = NodeId> {
    prop_oneof![Just(NodeId::UNASSIGNED), member_id()]
}

/// An id a registered node can have (never `UNASSIGNED`).
fn member_id() -> impl Strategy<Value = NodeId> {
    prop_oneof![Just(NodeId::SCHEDULER), (8u32..).prop_map(|raw| NodeId::from_raw(raw).expect("8 and up are ids"))]
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)),
    ]
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Scheduler), Just(Role::Server), Just(Role::Worker)]
}

fn group() -> impl Strategy<Value = Group> {
    (1u8..=7).prop_map(|bits| Group::from_bits(bits).expect("1..=7 are groups"))
}

fn dtype() -> impl Strategy<Value = DType> {
    prop_oneof![Just(DType::F32), Just(DType::F64), Just(DType::I32), Just(DType::I64), Just(DType::U8)]
}

fn values() -> impl Strategy<Value = Values> {
    (dtype(), vec(any::<u8>(), 0..48)).prop_map(|(dtype, mut raw)| {
        raw.truncate(raw.len() / dtype.size() * dtype.size());
        Values::from_bytes(dtype, Bytes::from(raw)).expect("whole elements")
    })
}

/// Keys with optional lengths, one per key. The codec does not care
/// whether keys are sorted or lengths add up; the layers above check that.
fn keys_and_lens() -> impl Strategy<Value = (Keys, Option<Lens>)> {
    vec(any::<u64>(), 0..12).prop_flat_map(|keys| {
        let n = keys.len();
        (Just(Keys::from_slice(&keys)), proptest::option::of(vec(any::<u32>(), n).prop_map(|l| Lens::from_slice(&l))))
    })
}

/// What a server sends back: keys echoed with their lengths, or lengths
/// alone (the worker knows the keys).
fn response_keys_and_lens() -> impl Strategy<Value = (Keys, Option<Lens>)> {
    prop_oneof![keys_and_lens(), vec(any::<u32>(), 1..12).prop_map(|l| (Keys::default(), Some(Lens::from_slice(&l)))),]
}

fn kv_op() -> impl Strategy<Value = KvOp> {
    prop_oneof![Just(KvOp::Push), Just(KvOp::Pull), Just(KvOp::PushPull)]
}

fn simple() -> impl Strategy<Value = SimpleMsg> {
    (any::<u32>(), any::<u32>(), any::<u32>(), any::<i32>(), vec(any::<u8>(), 0..32))
        .prop_map(|(app, customer, ts, head, body)| SimpleMsg { app, customer, ts, head, body: Bytes::from(body) })
}

fn node_entry() -> impl Strategy<Value = NodeEntry> {
    (member_id(), any::<u32>(), socket_addr(), any::<u64>(), any::<bool>()).prop_map(
        |(id, incarnation, addr, instance, alive)| NodeEntry {
            id,
            incarnation: Incarnation(incarnation),
            addr,
            instance,
            alive,
        },
    )
}

/// A replica table as the scheduler makes one: the initial placement,
/// with some members gone and a learner, or none at all.
fn chains() -> impl Strategy<Value = Chains> {
    let table = (1u32..=6, 1u8..=REPLICAS_MAX, any::<u64>(), vec(any::<u8>(), 6)).prop_map(
        |(servers, replicas, epoch, drops)| {
            let replicas = replicas.min(servers as u8);
            let initial = Chains::initial(&ServerRanges::equal(servers), replicas, epoch);
            let chains = initial
                .as_slice()
                .iter()
                .zip(drops)
                .map(|(chain, drop)| {
                    let mut members: Members = chain.members().into();
                    let learner =
                        (members.len() > 1 && drop % 3 == 0).then(|| members.remove(usize::from(drop) % members.len()));
                    RangeChain::new(chain.range(), members, learner, epoch.wrapping_add(u64::from(drop)))
                })
                .collect();
            Chains::from_parts(replicas, chains).expect("a placement the scheduler could make")
        },
    );
    prop_oneof![1 => Just(Chains::default()), 4 => table]
}

pub(crate) fn message() -> impl Strategy<Value = Message> {
    let route =
        (any::<u32>(), any::<u64>(), any::<u32>()).prop_map(|(part, epoch, floor)| KvRoute { part, epoch, floor });
    let kv_request = (any::<[u32; 3]>(), any::<i32>(), kv_op(), keys_and_lens(), values(), route).prop_map(
        |([app, customer, ts], cmd, op, (keys, lens), values, route)| {
            Message::KvRequest(KvRequestMsg { app, customer, ts, cmd, op, keys, values, lens, route })
        },
    );
    let redirect = proptest::option::of(1..u64::MAX);
    let kv_response =
        (any::<[u32; 4]>(), proptest::option::of(any::<String>()), response_keys_and_lens(), values(), redirect)
            .prop_map(|([app, customer, ts, part], error, (keys, lens), values, redirect)| {
                // A refusal carries its reason where the values would be, and
                // is no redirect.
                let values = if error.is_some() { Values::empty(DType::U8) } else { values };
                let redirect = redirect.filter(|_| error.is_none());
                Message::KvResponse(KvResponseMsg { app, customer, ts, error, keys, values, lens, part, redirect })
            });
    let batch_push = (1u32..1000, any::<u32>(), any::<(u32, u32)>(), any::<u32>(), any::<u32>(), any::<bool>())
        .prop_map(|(worker, incarnation, customer, ts, floor, tail_answers)| BatchPush {
            worker: NodeId::worker(Rank(worker)),
            incarnation: Incarnation(incarnation),
            customer,
            ts,
            floor,
            tail_answers,
        });
    let replicate = (
        (any::<u32>(), any::<u64>(), any::<u64>(), any::<u32>()),
        vec(batch_push.clone(), 0..4),
        keys_and_lens(),
        values(),
    )
        .prop_map(|((range, epoch, seq, app), pushes, (keys, lens), values)| {
            Message::Replicate(ReplicateMsg { range, epoch, seq, app, pushes, keys, values, lens })
        });
    let chain_report =
        (0u8..3, any::<u32>(), any::<u64>(), any::<u32>()).prop_map(|(kind, range, seq, learner)| match kind {
            0 => Message::Committed { range, seq },
            1 => Message::ResendFrom { range, seq },
            _ => Message::CaughtUp { range, source: seq, learner: Incarnation(learner) },
        });
    let learned = (any::<u32>(), any::<u64>(), any::<u64>(), any::<u64>(), any::<bool>())
        .prop_map(|(range, start, stream, item, resend)| Message::Learned { range, start, stream, item, resend });
    let chunk =
        proptest::option::of((any::<u64>(), any::<bool>()).prop_map(|(through, last)| ChunkEnd { through, last }));
    let transfer = (
        (any::<u32>(), (any::<u64>(), any::<u64>()), any::<u64>(), any::<u64>(), chunk, any::<u32>()),
        vec((batch_push, any::<u64>()), 0..4),
        keys_and_lens(),
        values(),
    )
        .prop_map(|((range, (source, stream), item, seq, chunk, app), pushes, (keys, lens), values)| {
            Message::Transfer(TransferMsg { range, source, stream, item, seq, chunk, app, pushes, keys, values, lens })
        });
    prop_oneof![
        (role(), socket_addr(), any::<u64>())
            .prop_map(|(role, listen_addr, instance)| Message::Register(RegisterMsg { role, listen_addr, instance })),
        (any::<u64>(), vec(node_entry(), 0..8), vec((group(), any::<u64>()), 0..7)).prop_flat_map(
            |(epoch, nodes, generations)| chains().prop_map(move |chains| {
                Message::NodeTable(NodeTableMsg {
                    epoch,
                    nodes: nodes.clone(),
                    generations: generations.clone(),
                    chains,
                })
            })
        ),
        (group(), any::<u64>(), any::<bool>()).prop_map(|(group, generation, finalize)| Message::Barrier {
            group,
            generation,
            finalize
        }),
        (group(), any::<u64>(), proptest::option::of(member_id()), vec(member_id(), 0..4)).prop_map(
            |(group, generation, dead, missing)| {
                let outcome = match (dead, missing.is_empty()) {
                    (Some(dead), _) => BarrierOutcome::MemberDied(dead),
                    (None, true) => BarrierOutcome::Released,
                    (None, false) => BarrierOutcome::ReleasedWithout(missing),
                };
                Message::BarrierRelease { group, generation, outcome }
            }
        ),
        Just(Message::Heartbeat { sent_at: 0 }),
        any::<u64>().prop_map(|epoch| Message::HeartbeatAck { epoch, echo: 0 }),
        vec(any::<u64>(), 0..16).prop_map(|seqs| Message::Ack { seqs }),
        Just(Message::Terminate),
        kv_request,
        kv_response,
        replicate,
        chain_report,
        learned,
        transfer,
        simple().prop_map(Message::SimpleRequest),
        simple().prop_map(Message::SimpleResponse),
    ]
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (node_id(), any::<u32>(), node_id(), any::<u32>(), any::<u64>()).prop_map(
        |(sender, incarnation, receiver, receiver_incarnation, seq)| Envelope {
            sender,
            incarnation: Incarnation(incarnation),
            receiver,
            receiver_incarnation: Incarnation(receiver_incarnation),
            seq,
        },
    )
}

fn header_of(kind: Kind, body_len: u32) -> Header {
    Header {
        kind,
        body_len,
        sender: NodeId::SCHEDULER,
        incarnation: Incarnation(3),
        receiver: NodeId::UNASSIGNED,
        receiver_incarnation: Incarnation(0),
        seq: 0,
    }
}

/// Cuts every frame the decoder can out of `buf`; `Err` once it refuses.
/// Checks on the way that it never asks a reader to hold more than its cap.
fn cut_all(decoder: &mut FrameDecoder, buf: &mut BytesMut, out: &mut Vec<(Header, Bytes)>) -> Result<(), DecodeError> {
    while let Some((header, frame)) = decoder.decode(buf)? {
        assert_eq!(frame.len(), header.frame_len());
        assert!(frame.len() <= FRAME_LEN_MAX as usize, "a frame over the cap was cut");
        out.push((header, frame));
    }
    let wanted = decoder.bytes_wanted(buf.len());
    assert!(wanted > 0, "the decoder waits for bytes but wants none");
    assert!(buf.len() + wanted <= FRAME_LEN_MAX as usize, "the decoder asks for {wanted} more than it may hold");
    Ok(())
}

proptest! {
    #[test]
    fn every_message_survives_encode_and_decode(message in message(), envelope in envelope()) {
        let frame = message.encode(envelope);
        let bytes = frame.to_bytes();
        prop_assert_eq!(bytes.len(), frame.len());
        let expected = Header {
            kind: message.kind(),
            body_len: (bytes.len() - HEADER_LEN) as u32,
            sender: envelope.sender,
            incarnation: envelope.incarnation,
            receiver: envelope.receiver,
            receiver_incarnation: envelope.receiver_incarnation,
            seq: envelope.seq,
        };
        prop_assert_eq!(Header::decode(&bytes, FRAME_LEN_MAX), Ok(expected));
        let mut buf = BytesMut::from(&bytes[..]);
        let (header, whole) = FrameDecoder::new(FRAME_LEN_MAX).decode(&mut buf).unwrap().expect("a whole frame");
        prop_assert!(buf.is_empty());
        prop_assert_eq!(header, expected);
        prop_assert_eq!(Message::decode(&header, &whole), Ok(message));
    }

    #[test]
    fn any_chunking_of_a_stream_cuts_the_same_frames(
        frames in vec((message(), envelope()), 1..6),
        chunk_lens in vec(1usize..80, 1..16),
    ) {
        let mut stream = BytesMut::new();
        let mut expected = Vec::new();
        for (message, envelope) in &frames {
            let frame = message.encode(*envelope);
            frame.write_to(&mut stream);
            expected.push((frame.to_bytes(), message.clone()));
        }
        let stream = stream.freeze();
        let mut decoder = FrameDecoder::new(FRAME_LEN_MAX);
        let mut buf = BytesMut::new();
        let mut cut = Vec::new();
        let mut at = 0;
        for chunk_len in chunk_lens.iter().cycle() {
            if at == stream.len() {
                break;
            }
            let end = (at + chunk_len).min(stream.len());
            buf.extend_from_slice(&stream[at..end]);
            at = end;
            cut_all(&mut decoder, &mut buf, &mut cut).unwrap();
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(cut.len(), expected.len());
        for ((header, frame), (bytes, message)) in cut.iter().zip(expected) {
            prop_assert_eq!(frame, &bytes);
            prop_assert_eq!(Message::decode(header, frame), Ok(message));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(raw in vec(any::<u8>(), 0..256), chunk_len in 1usize..40) {
        let mut decoder = FrameDecoder::new(FRAME_LEN_MAX);
        let mut buf = BytesMut::new();
        let mut cut = Vec::new();
        for piece in raw.chunks(chunk_len) {
            buf.extend_from_slice(piece);
            if cut_all(&mut decoder, &mut buf, &mut cut).is_err() {
                break;
            }
        }
        for (header, frame) in &cut {
            let _ = Message::decode(header, frame);
        }
    }

    /// Arbitrary bytes rarely get past the magic; these start from a valid
    /// frame and corrupt a few bytes, so the body decoders see hostile
    /// counts, lengths and flags behind a believable header.
    #[test]
    fn corrupted_frames_never_panic_and_accepted_ones_reencode_identically(
        message in message(),
        envelope in envelope(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut_at in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let mut raw = message.encode(envelope).to_bytes().to_vec();
        for (index, byte) in flips {
            let i = index.index(raw.len());
            raw[i] = byte;
        }
        if let Some(cut_at) = cut_at {
            raw.truncate(cut_at.index(raw.len()));
        }
        let mut buf = BytesMut::from(&raw[..]);
        let mut cut = Vec::new();
        if cut_all(&mut FrameDecoder::new(FRAME_LEN_MAX), &mut buf, &mut cut).is_err() {
            return Ok(());
        }
        for (header, frame) in &cut {
            let Ok(decoded) = Message::decode(header, frame) else { continue };
            // A refusal's reason is decoded leniently (lossy UTF-8, any
            // dtype byte), so only other messages must encode back to the
            // very same bytes.
            if !matches!(&decoded, Message::KvResponse(m) if m.error.is_some()) {
                let envelope = Envelope {
                    sender: header.sender,
                    incarnation: header.incarnation,
                    receiver: header.receiver,
                    receiver_incarnation: header.receiver_incarnation,
                    seq: header.seq,
                };
                prop_assert_eq!(&decoded.encode(envelope).to_bytes(), frame);
            }
        }
    }

    #[test]
    fn arbitrary_bodies_never_panic_the_message_decoder(kind in 1u8..=12, body in vec(any::<u8>(), 0..200)) {
        let kind = Kind::from_wire(kind).expect("1..=12 are kinds");
        let header = header_of(kind, body.len() as u32);
        let mut raw = header.encode().to_vec();
        raw.extend_from_slice(&body);
        let _ = Message::decode(&header, &Bytes::from(raw));
    }
}

#[test]
fn a_huge_announced_length_is_refused_from_the_header_alone() {
    for body_len in [u32::MAX, FRAME_LEN_MAX - HEADER_LEN as u32 + 1] {
        let mut buf = BytesMut::from(&header_of(Kind::KvRequest, body_len).encode()[..]);
        let len = HEADER_LEN as u64 + u64::from(body_len);
        assert_eq!(
            FrameDecoder::new(FRAME_LEN_MAX).decode(&mut buf),
            Err(DecodeError::FrameTooLarge { len, max: FRAME_LEN_MAX })
        );
    }
    // Exactly at the cap it waits for the body, and asks for no more.
    let body_len = FRAME_LEN_MAX - HEADER_LEN as u32;
    let mut buf = BytesMut::from(&header_of(Kind::KvRequest, body_len).encode()[..]);
    let mut decoder = FrameDecoder::new(FRAME_LEN_MAX);
    assert_eq!(decoder.decode(&mut buf), Ok(None));
    assert_eq!(decoder.bytes_wanted(buf.len()), body_len as usize);
}

#[test]
fn each_bad_header_field_has_its_own_error() {
    let good = header_of(Kind::Heartbeat, 0).encode();
    let bad = |offset: usize, bytes: &[u8]| {
        let mut raw = good;
        raw[offset..offset + bytes.len()].copy_from_slice(bytes);
        raw
    };
    let cases = [
        (bad(0, b"PSLX"), DecodeError::BadMagic(u32::from_le_bytes(*b"PSLX"))),
        (bad(4, &2u16.to_le_bytes()), DecodeError::UnsupportedVersion(2)),
        (bad(4, &3u16.to_le_bytes()), DecodeError::UnsupportedVersion(3)),
        (bad(4, &4u16.to_le_bytes()), DecodeError::UnsupportedVersion(4)),
        (bad(4, &5u16.to_le_bytes()), DecodeError::UnsupportedVersion(5)),
        (bad(4, &7u16.to_le_bytes()), DecodeError::UnsupportedVersion(7)),
        (bad(4, &0u16.to_le_bytes()), DecodeError::UnsupportedVersion(0)),
        (bad(6, &[0]), DecodeError::UnknownKind(0)),
        (bad(6, &[19]), DecodeError::UnknownKind(19)),
        (bad(7, &[1]), DecodeError::ReservedNotZero),
        (bad(7, &[0x80]), DecodeError::ReservedNotZero),
        (
            bad(8, &u32::MAX.to_le_bytes()),
            DecodeError::FrameTooLarge { len: HEADER_LEN as u64 + u64::from(u32::MAX), max: FRAME_LEN_MAX },
        ),
        (bad(12, &5u32.to_le_bytes()), DecodeError::InvalidField { field: "sender", value: 5 }),
        (bad(20, &2u32.to_le_bytes()), DecodeError::InvalidField { field: "receiver", value: 2 }),
        (bad(28, &1u32.to_le_bytes()), DecodeError::ReservedNotZero),
    ];
    for (raw, error) in cases {
        assert_eq!(Header::decode(&raw, FRAME_LEN_MAX), Err(error.clone()));
        let mut buf = BytesMut::from(&raw[..]);
        assert_eq!(FrameDecoder::new(FRAME_LEN_MAX).decode(&mut buf), Err(error));
    }
    let short = &good[..HEADER_LEN - 1];
    assert_eq!(
        Header::decode(short, FRAME_LEN_MAX),
        Err(DecodeError::Truncated { needed: HEADER_LEN, have: HEADER_LEN - 1 })
    );
    // Any receiver incarnation decodes: a stale one is the node's to judge.
    assert!(Header::decode(&bad(24, &7u32.to_le_bytes()), FRAME_LEN_MAX).is_ok());
}

#[test]
fn bad_bodies_name_what_is_wrong() {
    let frame = |kind: Kind, body: &[u8]| {
        let header = header_of(kind, body.len() as u32);
        let mut raw = header.encode().to_vec();
        raw.extend_from_slice(body);
        Message::decode(&header, &Bytes::from(raw))
    };
    assert_eq!(frame(Kind::Terminate, &[0]), Err(DecodeError::SectionMismatch("trailing bytes after the message")));
    assert_eq!(frame(Kind::Heartbeat, &[0; 9]), Err(DecodeError::SectionMismatch("trailing bytes after the message")));
    assert_eq!(frame(Kind::Heartbeat, &[0]), Err(DecodeError::Truncated { needed: 8, have: 1 }));
    // A node table with no nodes and no generations, then a replica table.
    let table = |replicas: u8, count: u32, entries: &[u8]| {
        let mut body = 5u64.to_le_bytes().to_vec();
        body.extend_from_slice(&0u32.to_le_bytes());
        body.push(0);
        body.push(replicas);
        body.extend_from_slice(&count.to_le_bytes());
        body.extend_from_slice(entries);
        frame(Kind::NodeTable, &body)
    };
    let entry = |start: u64, end: u64, members: &[u32], learner: u32| {
        let mut raw = [start.to_le_bytes(), end.to_le_bytes(), 9u64.to_le_bytes()].concat();
        raw.push(members.len() as u8);
        raw.extend(members.iter().flat_map(|m| m.to_le_bytes()));
        raw.extend_from_slice(&learner.to_le_bytes());
        raw
    };
    assert!(table(1, 1, &entry(0, u64::MAX, &[0], u32::MAX)).is_ok());
    assert_eq!(table(0, 1, &[]), Err(DecodeError::InvalidField { field: "chains without replicas", value: 1 }));
    assert_eq!(table(1, 1 << 20, &[]), Err(DecodeError::InvalidField { field: "range count", value: 1 << 20 }));
    assert!(matches!(table(1, 1000, &[]), Err(DecodeError::Truncated { .. })), "checked before allocating");
    assert_eq!(
        table(1, 1, &entry(9, 8, &[0], u32::MAX)),
        Err(DecodeError::InvalidField { field: "range end", value: 8 })
    );
    assert_eq!(
        table(3, 1, &entry(0, u64::MAX, &[0, 0, 0, 0], u32::MAX)),
        Err(DecodeError::InvalidField { field: "chain length", value: 4 })
    );
    assert_eq!(
        table(2, 1, &entry(0, u64::MAX, &[0, 0], u32::MAX)),
        Err(DecodeError::Chains(ChainsError::Repeated { index: 0, rank: 0 }))
    );
    assert_eq!(
        table(1, 1, &entry(0, u64::MAX, &[0], 0)),
        Err(DecodeError::Chains(ChainsError::Repeated { index: 0, rank: 0 })),
        "a member is no learner"
    );
    assert_eq!(
        table(1, 1, &entry(1, u64::MAX, &[0], u32::MAX)),
        Err(DecodeError::Chains(ChainsError::Ranges(RangesError::FirstNotZero(1))))
    );
    assert_eq!(frame(Kind::HeartbeatAck, &[0; 7]), Err(DecodeError::Truncated { needed: 8, have: 7 }));
    assert_eq!(frame(Kind::Barrier, &[8; 10]), Err(DecodeError::InvalidField { field: "group", value: 8 }));
    let mut barrier = vec![1u8];
    barrier.extend_from_slice(&0u64.to_le_bytes());
    barrier.push(2);
    assert_eq!(frame(Kind::Barrier, &barrier), Err(DecodeError::InvalidField { field: "finalize", value: 2 }));
    let mut release = vec![1u8];
    release.extend_from_slice(&0u64.to_le_bytes());
    release.push(3);
    assert_eq!(
        frame(Kind::BarrierRelease, &release),
        Err(DecodeError::InvalidField { field: "barrier outcome", value: 3 })
    );
    let mut release = vec![1u8];
    release.extend_from_slice(&0u64.to_le_bytes());
    release.push(2);
    release.extend_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        frame(Kind::BarrierRelease, &release),
        Err(DecodeError::InvalidField { field: "missing count", value: u64::from(u32::MAX) })
    );
    // A frame shorter than its header says.
    let header = header_of(Kind::HeartbeatAck, 8);
    let short = Bytes::copy_from_slice(&header.encode());
    assert_eq!(
        Message::decode(&header, &short),
        Err(DecodeError::Truncated { needed: HEADER_LEN + 8, have: HEADER_LEN })
    );

    // KV metadata: the route (part, floor, epoch), ids, op, dtype,
    // has-lens, reserved, three section lengths.
    let kv = |op: u8, dtype: u8, has_lens: u8, reserved: u8, lens: [u32; 3], tail: &[u8]| {
        let mut body = vec![0u8; 16 + 16];
        body.extend_from_slice(&[op, dtype, has_lens, reserved]);
        for len in lens {
            body.extend_from_slice(&len.to_le_bytes());
        }
        body.extend_from_slice(tail);
        frame(Kind::KvRequest, &body)
    };
    assert!(kv(0, 0, 0, 0, [8, 4, 0], &[0; 12]).is_ok());
    assert_eq!(kv(3, 0, 0, 0, [0, 0, 0], &[]), Err(DecodeError::InvalidField { field: "kv op", value: 3 }));
    assert_eq!(kv(0, 9, 0, 0, [0, 0, 0], &[]), Err(DecodeError::InvalidField { field: "dtype", value: 9 }));
    assert_eq!(kv(0, 0, 2, 0, [0, 0, 0], &[]), Err(DecodeError::InvalidField { field: "has lens", value: 2 }));
    assert_eq!(kv(0, 0, 0, 1, [0, 0, 0], &[]), Err(DecodeError::ReservedNotZero));
    assert_eq!(
        kv(0, 0, 0, 0, [8, 4, 4], &[0; 16]),
        Err(DecodeError::SectionMismatch("lens section without the lens flag"))
    );
    assert_eq!(
        kv(0, 0, 0, 0, [8, 4, 0], &[0; 13]),
        Err(DecodeError::SectionMismatch("section lengths do not add up to the body"))
    );
    assert_eq!(
        kv(0, 0, 0, 0, [7, 4, 0], &[0; 11]),
        Err(DecodeError::SectionMismatch("keys not a multiple of 8 bytes"))
    );
    assert_eq!(kv(0, 0, 1, 0, [16, 8, 4], &[0; 28]), Err(DecodeError::SectionMismatch("one length per key expected")));
    // A response has no command: its slot is reserved.
    let mut response = vec![0u8; 16 + 12];
    response.extend_from_slice(&1u32.to_le_bytes());
    response.extend_from_slice(&[0, 0, 0, 0]);
    response.extend_from_slice(&[0; 12]);
    assert_eq!(frame(Kind::KvResponse, &response), Err(DecodeError::ReservedNotZero));
    response[16 + 12] = 0;
    assert!(frame(Kind::KvResponse, &response).is_ok());
    // Nor does its route have a floor, and only a redirect names an epoch.
    response[4] = 1;
    assert_eq!(frame(Kind::KvResponse, &response), Err(DecodeError::ReservedNotZero));
    response[4] = 0;
    response[8] = 7;
    assert_eq!(
        frame(Kind::KvResponse, &response),
        Err(DecodeError::InvalidField { field: "kv redirect epoch", value: 7 })
    );
    response[16 + 16] = 2;
    assert!(frame(Kind::KvResponse, &response).is_ok());
    // Section lengths near u32::MAX must not overflow the sum.
    assert_eq!(
        kv(0, 0, 1, 0, [u32::MAX, u32::MAX, u32::MAX], &[]),
        Err(DecodeError::SectionMismatch("section lengths do not add up to the body"))
    );
}

#[test]
fn a_chain_message_carries_its_values_at_an_aligned_offset() {
    let envelope = Envelope {
        sender: NodeId::server(Rank(0)),
        incarnation: Incarnation(1),
        receiver: NodeId::server(Rank(1)),
        receiver_incarnation: Incarnation(2),
        seq: 9,
    };
    let push = BatchPush {
        worker: NodeId::worker(Rank(0)),
        incarnation: Incarnation(0),
        customer: (0, 0),
        ts: 4,
        floor: 4,
        tail_answers: true,
    };
    for count in 0..6 {
        let message = Message::Replicate(ReplicateMsg {
            range: 1,
            epoch: 2,
            seq: 3,
            app: 0,
            pushes: vec![push; count],
            keys: Keys::from_slice(&[1, 2, 3]),
            values: Values::from_slice(&[0.5f32; 7]),
            lens: Some(Lens::from_slice(&[1, 2, 4])),
        });
        let transfer = Message::Transfer(TransferMsg {
            range: 1,
            source: 2,
            stream: 1,
            item: 4,
            seq: 3,
            chunk: Some(ChunkEnd { through: 9, last: false }),
            app: 0,
            pushes: vec![(push, 2); count],
            keys: Keys::from_slice(&[1]),
            values: Values::from_slice(&[0.5f32; 3]),
            lens: None,
        });
        let encoded = |message: &Message| {
            let frame = message.encode(envelope).to_bytes();
            let header = Header::decode(&frame, FRAME_LEN_MAX).expect("a good header");
            let decoded = Message::decode(&header, &frame).expect("decodes");
            assert_eq!(&decoded, message);
            let values = match &decoded {
                Message::Replicate(m) => m.values.as_bytes().as_ptr(),
                Message::Transfer(m) => m.values.as_bytes().as_ptr(),
                other => unreachable!("{other:?}"),
            };
            let offset = values as usize - frame.as_ptr() as usize;
            assert_eq!(offset % 8, 0, "{count} pushes: values at {offset}");
            (frame, header, offset)
        };
        encoded(&transfer);
        let (frame, header, offset) = encoded(&message);
        // The padding is zeros, and anything else is refused.
        let keys_at = offset - 3 * 8;
        let meta_end = HEADER_LEN + 28 + count * 25 + 32;
        if keys_at > meta_end {
            let mut bad = frame.to_vec();
            bad[meta_end] = 1;
            assert_eq!(Message::decode(&header, &Bytes::from(bad)), Err(DecodeError::ReservedNotZero));
        }
    }
}
