//! Frame encode and decode throughput against a memcpy of the same bytes.
//!
//! The codec is meant to be zero-copy: encoding shares the caller's key and
//! value buffers with the frame, decoding slices them out of the receive
//! buffer. So `encode` and `decode` should run far above memcpy speed and
//! not slow down with the payload; only `to_bytes`, the one path that
//! gathers a frame into one buffer, should cost about a memcpy. Before
//! timing anything the bench checks that a 4 MiB frame really is neither
//! copied on encode nor on decode, so a regression fails loudly instead of
//! showing up as a slower number nobody reads.

mod common;

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput};
use pslite::kv::{Keys, Values};
use pslite::wire::message::Envelope;
use pslite::wire::{Frame, KvRequestMsg, Message};
use pslite::{FrameDecoder, Incarnation, KvOp, NodeId, Rank};

use common::{Ledger, Work};

/// Value payload sizes: a small gradient, a typical slice, and the large
/// dense pushes where copying would start to dominate.
const VALUE_SIZES: [(&str, usize); 4] =
    [("1 KiB", 1 << 10), ("64 KiB", 64 << 10), ("1 MiB", 1 << 20), ("4 MiB", 4 << 20)];

/// Values per key: an embedding-style push, so the key section is a
/// realistic eighth of the values rather than absent or dominant.
const VALUES_PER_KEY: usize = 16;

fn main() {
    let mut criterion = common::criterion();
    assert_payload_is_never_copied();
    codec(&mut criterion);
    criterion.final_summary();
}

fn codec(criterion: &mut Criterion) {
    let ledger = Ledger::default();
    let mut group = criterion.benchmark_group("codec");
    for (label, value_bytes) in VALUE_SIZES {
        let message = push_request(value_bytes);
        let frame = message.encode(envelope());
        let wire = frame.to_bytes();
        group.throughput(Throughput::Bytes(wire.len() as u64));

        let name = |case: &str| format!("codec/{case}/{label}");
        group.bench_function(BenchmarkId::new("memcpy", label), |b| {
            let mut copy = vec![0u8; wire.len()];
            ledger.iter(b, &name("memcpy"), || copy.copy_from_slice(&wire));
        });
        group.bench_function(BenchmarkId::new("encode", label), |b| {
            ledger.iter(b, &name("encode"), || message.encode(envelope()));
        });
        group.bench_function(BenchmarkId::new("to_bytes", label), |b| {
            ledger.iter(b, &name("to_bytes"), || frame.to_bytes());
        });
        group.bench_function(BenchmarkId::new("decode", label), |b| {
            let mut decoder = FrameDecoder::new(u32::MAX);
            // The receive buffer goes round: decoding splits the frame off
            // it, and once the message is dropped the frame is the buffer's
            // only owner again, so it turns back into the buffer without a
            // copy and every iteration decodes the same bytes in place.
            let mut buffer = Some(BytesMut::from(&wire[..]));
            ledger.iter(b, &name("decode"), || {
                let mut received = buffer.take().expect("the buffer comes back every iteration");
                let (header, bytes) = decoder.decode(&mut received).expect("valid frame").expect("complete frame");
                drop(received);
                let decoded = Message::decode(&header, &bytes).expect("valid message");
                std::hint::black_box(&decoded);
                drop(decoded);
                buffer = Some(bytes.try_into_mut().expect("the frame is the buffer's only owner"));
            });
        });
    }
    group.finish();

    for (label, value_bytes) in VALUE_SIZES {
        let frame_len = push_request(value_bytes).encode(envelope()).len();
        let baseline = format!("codec/memcpy/{label}");
        for case in ["encode", "to_bytes", "decode"] {
            ledger.compare(&format!("codec/{case}/{label}"), &baseline, Work::bytes(frame_len));
        }
    }
}

/// Encodes and decodes a 4 MiB push and panics if the values were copied
/// on the way: on encode the frame must hold the caller's value buffer, on
/// decode the values must point into the received frame buffer.
fn assert_payload_is_never_copied() {
    let message = push_request(4 << 20);
    let Message::KvRequest(sent) = &message else { unreachable!("push_request builds a KvRequest") };
    let frame: Frame = message.encode(envelope());
    let sent_at = sent.values.as_bytes().as_ptr();
    assert!(
        frame.parts.iter().any(|part| part.as_ptr() == sent_at && part.len() == sent.values.as_bytes().len()),
        "Message::encode copied a 4 MiB value section: no frame part shares the caller's value buffer"
    );

    let mut received = BytesMut::from(&frame.to_bytes()[..]);
    let buffer_start = received.as_ptr() as usize;
    let buffer = buffer_start..buffer_start + received.len();
    let (header, bytes) = FrameDecoder::new(u32::MAX)
        .decode(&mut received)
        .expect("a frame we encoded decodes")
        .expect("the buffer holds the whole frame");
    let decoded = Message::decode(&header, &bytes).expect("a message we encoded decodes");
    let Message::KvRequest(request) = decoded else { panic!("decoded {decoded:?}, expected a KvRequest") };
    let values = request.values.as_bytes();
    assert_eq!(values.len(), 4 << 20, "decoded values have the wrong length");
    let values_start = values.as_ptr() as usize;
    assert!(
        buffer.contains(&values_start) && values_start + values.len() <= buffer.end,
        "decoding a 4 MiB frame copied its payload: the values live at {values_start:#x}..{:#x}, \
         outside the receive buffer {:#x}..{:#x}",
        values_start + values.len(),
        buffer.start,
        buffer.end,
    );
}

/// A push of `value_bytes` of f32 values, `VALUES_PER_KEY` per key, with
/// keys spread over the whole key space.
fn push_request(value_bytes: usize) -> Message {
    let value_count = value_bytes / size_of::<f32>();
    let key_count = value_count / VALUES_PER_KEY;
    let step = u64::MAX / key_count as u64;
    let keys: Vec<u64> = (0..key_count as u64).map(|i| i * step).collect();
    let values: Vec<f32> = (0..value_count).map(|i| i as f32).collect();
    Message::KvRequest(KvRequestMsg {
        app: 0,
        customer: 0,
        ts: 1,
        cmd: 0,
        op: KvOp::Push,
        keys: Keys::from_slice(&keys),
        values: Values::from_slice(&values),
        lens: None,
        route: Default::default(),
    })
}

fn envelope() -> Envelope {
    Envelope {
        sender: NodeId::worker(Rank(0)),
        incarnation: Incarnation(0),
        receiver: NodeId::server(Rank(0)),
        receiver_incarnation: Incarnation(0),
        seq: 1,
    }
}
