//! Cutting a key-value list into per-server parts and gluing the parts
//! back together, as every push and pull does on the worker.
//!
//! Slicing is a binary search per server over sorted keys, with the parts
//! sharing the caller's buffers, so it should cost next to nothing however
//! many keys there are. Merging must concatenate the parts' keys and values
//! (a pull answer has to end up in one list), so its floor is a memcpy of
//! those bytes, which is the baseline measured next to it.

mod common;

use criterion::{BenchmarkId, Criterion, Throughput};
use pslite::kv::{Keys, Values};
use pslite::slice::{merge, slice};
use pslite::{KvList, ServerRanges};

use common::{Ledger, Work};

const KEY_COUNTS: [(&str, usize); 3] = [("1k", 1_000), ("100k", 100_000), ("1M", 1_000_000)];
const SERVER_COUNTS: [u32; 3] = [1, 8, 64];

fn main() {
    let mut criterion = common::criterion();
    slicing(&mut criterion);
    criterion.final_summary();
}

fn slicing(criterion: &mut Criterion) {
    let ledger = Ledger::default();
    let mut group = criterion.benchmark_group("slicing");
    for (label, key_count) in KEY_COUNTS {
        let list = spread_list(key_count);
        group.throughput(Throughput::Elements(key_count as u64));

        let baseline = format!("slicing/memcpy/{label} keys");
        group.bench_function(BenchmarkId::new("memcpy", format!("{label} keys")), |b| {
            let mut keys = vec![0u8; list.keys.as_bytes().len()];
            let mut values = vec![0u8; list.values.as_bytes().len()];
            ledger.iter(b, &baseline, || {
                keys.copy_from_slice(list.keys.as_bytes());
                values.copy_from_slice(list.values.as_bytes());
            });
        });
        for servers in SERVER_COUNTS {
            let ranges = ServerRanges::equal(servers);
            let parameter = format!("{label} keys/{servers} servers");
            assert_eq!(slice(&ranges, &list).len(), servers as usize, "keys spread over the space reach every server");

            group.bench_function(BenchmarkId::new("slice", &parameter), |b| {
                ledger.iter(b, &format!("slicing/slice/{parameter}"), || slice(&ranges, &list));
            });
            group.bench_function(BenchmarkId::new("slice+merge", &parameter), |b| {
                ledger.iter(b, &format!("slicing/slice+merge/{parameter}"), || {
                    merge(slice(&ranges, &list).into_iter().map(|part| part.list)).expect("parts of one list merge")
                });
            });
        }
    }
    group.finish();

    for (label, key_count) in KEY_COUNTS {
        let work = Work::elements(key_count, key_count * (size_of::<u64>() + size_of::<f32>()));
        for servers in SERVER_COUNTS {
            ledger.compare(
                &format!("slicing/slice+merge/{label} keys/{servers} servers"),
                &format!("slicing/memcpy/{label} keys"),
                work,
            );
        }
    }
}

/// `key_count` sorted keys evenly spread over the key space, one f32 each,
/// so every server of an equal split gets the same share.
fn spread_list(key_count: usize) -> KvList {
    let step = u64::MAX / key_count as u64;
    let keys: Vec<u64> = (0..key_count as u64).map(|i| i * step).collect();
    let values: Vec<f32> = (0..key_count).map(|i| i as f32).collect();
    KvList { keys: Keys::from_slice(&keys), values: Values::from_slice(&values), lens: None }
}
