//! The default server handle, `KvStore<f32>`: applying pushes and answering
//! pulls, at both ends of the shape range (one huge dense key, many scalar
//! keys).
//!
//! A push is at heart `stored[i] += pushed[i]`, so its baseline is that sum
//! in a plain loop over `f32` slices; a pull is at heart a copy of the
//! stored values, so its baseline is `copy_from_slice` of the same count.
//! What the store adds on top (key lookup, length checks, decoding the
//! little-endian wire buffer element by element) is the gap between them.
//! `values_iter` sums through `Values::iter` without a store, to tell the
//! cost of element decoding from the cost of the store itself, and
//! `fixed_width` decodes the same bytes with the element width known at
//! compile time, to show what that decoding can cost.

mod common;

use criterion::{BenchmarkId, Criterion, Throughput};
use pslite::kv::{CustomerId, Response, ServerRequest, ServerRequestId, Timestamp};
use pslite::kv::{DType, Keys, Values};
use pslite::{Incarnation, KvOp, KvStore, NodeId, Rank};

use common::{Ledger, Work};

/// (label, keys, values per key): the same order of magnitude of values
/// spread over one key and over many.
const SHAPES: [(&str, usize, usize); 2] = [("1 key x 1M values", 1, 1_000_000), ("100k keys x 1 value", 100_000, 1)];

fn main() {
    let mut criterion = common::criterion();
    store(&mut criterion);
    criterion.final_summary();
}

fn store(criterion: &mut Criterion) {
    let ledger = Ledger::default();
    let mut group = criterion.benchmark_group("store");
    for (label, key_count, per_key) in SHAPES {
        let value_count = key_count * per_key;
        let pushed: Vec<f32> = (0..value_count).map(|i| (i % 1024) as f32).collect();
        let push = request(KvOp::Push, key_count, Values::from_slice(&pushed));
        let pull = request(KvOp::Pull, key_count, Values::empty(DType::F32));
        let mut store = KvStore::<f32>::new();
        // The first push inserts the keys; the timed ones add to them, the
        // steady state of training.
        store.push(&push).expect("a well-formed push is applied");
        group.throughput(Throughput::Elements(value_count as u64));

        group.bench_function(BenchmarkId::new("sum", label), |b| {
            let mut sums = vec![0f32; value_count];
            ledger.iter(b, &format!("store/sum/{label}"), || {
                for (sum, &value) in sums.iter_mut().zip(&pushed) {
                    *sum += value;
                }
            });
        });
        group.bench_function(BenchmarkId::new("values_iter", label), |b| {
            let mut sums = vec![0f32; value_count];
            ledger.iter(b, &format!("store/values_iter/{label}"), || {
                for (sum, value) in sums.iter_mut().zip(push.values.iter::<f32>()) {
                    *sum += value;
                }
            });
        });
        group.bench_function(BenchmarkId::new("fixed_width", label), |b| {
            let mut sums = vec![0f32; value_count];
            let bytes = push.values.as_bytes();
            ledger.iter(b, &format!("store/fixed_width/{label}"), || {
                for (sum, raw) in sums.iter_mut().zip(bytes.chunks_exact(size_of::<f32>())) {
                    *sum += f32::from_le_bytes(raw.try_into().expect("chunks of the element width"));
                }
            });
        });
        group.bench_function(BenchmarkId::new("push", label), |b| {
            ledger
                .iter(b, &format!("store/push/{label}"), || store.push(&push).expect("a well-formed push is applied"));
        });
        group.bench_function(BenchmarkId::new("copy", label), |b| {
            let mut copy = vec![0f32; value_count];
            ledger.iter(b, &format!("store/copy/{label}"), || copy.copy_from_slice(&pushed));
        });
        group.bench_function(BenchmarkId::new("pull", label), |b| {
            ledger.iter(b, &format!("store/pull/{label}"), || {
                let response = store.pull(&pull).expect("a well-formed pull is answered");
                let Response::Ok { values, .. } = &response else { panic!("pull refused: {response:?}") };
                assert_eq!(values.len(), value_count, "a pull answers every value");
                response
            });
        });
    }
    group.finish();

    for (label, key_count, per_key) in SHAPES {
        let value_count = key_count * per_key;
        let work = Work::elements(value_count, value_count * size_of::<f32>());
        let sum = format!("store/sum/{label}");
        ledger.compare(&format!("store/values_iter/{label}"), &sum, work);
        ledger.compare(&format!("store/fixed_width/{label}"), &sum, work);
        ledger.compare(&format!("store/push/{label}"), &sum, work);
        ledger.compare(&format!("store/pull/{label}"), &format!("store/copy/{label}"), work);
    }
}

/// A request for `key_count` keys spread over the key space.
fn request(op: KvOp, key_count: usize, values: Values) -> ServerRequest {
    let step = u64::MAX / key_count as u64;
    let keys: Vec<u64> = (0..key_count as u64).map(|i| i * step).collect();
    ServerRequest {
        id: ServerRequestId {
            from: NodeId::worker(Rank(0)),
            incarnation: Incarnation(0),
            customer: CustomerId::DEFAULT,
            ts: Timestamp(1),
            part: 0,
        },
        cmd: 0,
        op,
        keys: Keys::from_slice(&keys),
        values,
        lens: None,
    }
}
