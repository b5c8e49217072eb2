//! Arbitrary key-value lists through the slicing checks, `slice` and
//! `merge`.
//!
//! A list either fails `check_keys`/`check_lengths` with an [`ApiMisuse`]
//! or is sliced; then every part lies inside its server's range, parts
//! tile the list in order, and merging them gives the list back exactly.
//! Independently, `merge` of arbitrary parts either refuses or returns
//! their concatenation with lengths that fit.

use bytes::{BufMut, BytesMut};

use super::decisions::Decisions;
use crate::error::ApiMisuse;
use crate::id::Rank;
use crate::kv::{DType, Keys, Lens, Values};
use crate::range::{KeyRange, ServerRanges};
use crate::slice::{self as slicing, KvList};

const SERVERS_MAX: usize = 64;
const KEYS_MAX: usize = 48;
const DTYPES: [DType; 5] = [DType::F32, DType::F64, DType::I32, DType::I64, DType::U8];

/// Runs one input; panics only when slicing or merging breaks an invariant.
pub fn slice(data: &[u8]) {
    let mut d = Decisions::new(data);
    let ranges = server_ranges(&mut d);
    let list = kv_list(&mut d);
    match slicing::check_keys(&list.keys).and_then(|()| slicing::check_lengths(&list)) {
        Ok(()) => slice_and_merge(&ranges, &list),
        Err(misuse) => assert_clean(&misuse),
    }
    let parts = (0..d.below(4)).map(|_| kv_list(&mut d)).collect();
    merge_arbitrary(parts);
}

fn slice_and_merge(ranges: &ServerRanges, list: &KvList) {
    let parts = slicing::slice(ranges, list);
    let mut next_key = 0;
    let mut previous_rank: Option<Rank> = None;
    for part in &parts {
        assert!(previous_rank.is_none_or(|r| r < part.rank), "parts out of rank order");
        previous_rank = Some(part.rank);
        assert!(!part.list.keys.is_empty(), "a server without keys got a part");
        assert_eq!(part.offset, next_key, "parts do not tile the keys");
        next_key += part.list.keys.len();
        let range = ranges.get(part.rank).expect("part for an existing server");
        assert!(part.list.keys.iter().all(|k| range.contains(k)), "key sent to a server that does not own it");
        assert_eq!(part.list.values.dtype(), list.values.dtype());
        assert_eq!(slicing::check_lengths(&part.list), Ok(()), "a checked list sliced into an unchecked part");
    }
    assert_eq!(next_key, list.keys.len(), "parts lost keys");
    if parts.is_empty() {
        return;
    }
    let merged = slicing::merge(parts.into_iter().map(|p| p.list)).expect("sliced parts merge");
    assert_eq!(&merged, list, "merge(slice(list)) is not list");
}

/// `merge` of any parts refuses, or concatenates them into a list whose
/// values fit its keys.
fn merge_arbitrary(parts: Vec<KvList>) {
    let Ok(merged) = slicing::merge(parts.clone()) else {
        return;
    };
    let keys: Vec<u8> = parts.iter().flat_map(|p| p.keys.as_bytes().to_vec()).collect();
    let values: Vec<u8> = parts.iter().flat_map(|p| p.values.as_bytes().to_vec()).collect();
    assert_eq!(merged.keys.as_bytes()[..], keys[..], "merged keys are not the concatenation");
    assert_eq!(merged.values.as_bytes()[..], values[..], "merged values are not the concatenation");
    assert_eq!(slicing::check_lengths(&merged), Ok(()), "merge produced values that do not fit the keys");
}

/// Every misuse explains itself without panicking.
fn assert_clean(misuse: &ApiMisuse) {
    assert!(matches!(
        misuse,
        ApiMisuse::UnsortedKeys { .. } | ApiMisuse::DuplicateKey { .. } | ApiMisuse::LengthMismatch { .. }
    ));
    assert!(!misuse.to_string().is_empty());
}

/// Equal ranges for 1..=64 servers, or explicit boundaries (falling back to
/// equal ones when they do not partition the key space).
fn server_ranges(d: &mut Decisions<'_>) -> ServerRanges {
    let servers = 1 + d.below(SERVERS_MAX);
    if !d.chance() {
        return ServerRanges::equal(servers as u32);
    }
    let mut starts: Vec<u64> = (1..servers).map(|_| interesting_key(d)).collect();
    starts.sort_unstable();
    starts.dedup();
    starts.retain(|&s| s != 0);
    let mut ranges = Vec::with_capacity(starts.len() + 1);
    let mut start = 0;
    for &next in &starts {
        ranges.extend(KeyRange::new(start, next - 1));
        start = next;
    }
    ranges.extend(KeyRange::new(start, u64::MAX));
    let ranges = ServerRanges::from_ranges(ranges).expect("boundaries built to partition the key space");
    for key in [0, u64::MAX, interesting_key(d)] {
        let owners = ranges.as_slice().iter().filter(|r| r.contains(key)).count();
        assert_eq!(owners, 1, "key {key} has {owners} owners");
    }
    ranges
}

/// Keys near range boundaries are where slicing goes wrong, so they are
/// more likely than uniform ones.
fn interesting_key(d: &mut Decisions<'_>) -> u64 {
    let base = d.pick(&[0, u64::MAX / 2, u64::MAX / 3, (u64::MAX / 3) * 2, u64::MAX, 1 << 32]);
    let offset = u64::from(d.byte());
    match d.below(3) {
        0 => base.wrapping_add(offset),
        1 => base.wrapping_sub(offset),
        _ => d.u64(),
    }
}

/// Keys (usually ascending), values of a random dtype and count, and
/// optionally lengths, each either consistent or off.
fn kv_list(d: &mut Decisions<'_>) -> KvList {
    let count = d.below(KEYS_MAX + 1);
    let mut keys: Vec<u64> = (0..count).map(|_| interesting_key(d)).collect();
    if d.below(4) != 0 {
        keys.sort_unstable();
        if d.below(4) != 0 {
            keys.dedup();
        }
    }
    let dtype = d.pick(&DTYPES);
    let lens: Option<Vec<u32>> = match d.below(4) {
        0 => Some(keys.iter().map(|_| u32::from(d.byte() % 4)).collect()),
        1 => Some((0..d.below(KEYS_MAX + 1)).map(|_| d.pick(&[0, 1, 2, u32::MAX])).collect()),
        _ => None,
    };
    let value_count = match d.below(4) {
        0 => lens.as_ref().map_or(0, |l| l.iter().map(|&x| x as usize).sum::<usize>().min(1 << 12)),
        1 => keys.len() * (1 + d.below(3)),
        2 => 0,
        _ => d.below(64),
    };
    let mut values = BytesMut::with_capacity(value_count * dtype.size());
    for _ in 0..value_count * dtype.size() {
        values.put_u8(d.byte());
    }
    KvList {
        keys: Keys::from_slice(&keys),
        values: Values::from_bytes(dtype, values.freeze()).expect("whole elements"),
        lens: lens.map(|l| Lens::from_slice(&l)),
    }
}
