//! Cutting a sorted key-value list into one part per server, and gluing
//! pull answers back together.
//!
//! Keys are sorted, so each server's part is one contiguous run found by
//! binary search; value parts are sub-ranges of the caller's buffer (no
//! copy). Servers whose range holds no key get no message, as in ps-lite.
//! Unlike ps-lite's `DefaultSlicer`, which aborts on bad input, every
//! inconsistency is an [`ApiMisuse`](crate::ApiMisuse) naming what is wrong.

use bytes::BytesMut;
use smallvec::SmallVec;

use crate::error::Mismatch;
use crate::id::Rank;
pub use crate::kv::list::{check_keys, check_lengths, check_request, KvList};
use crate::kv::values::{Keys, Lens, Values};
use crate::range::ServerRanges;

/// One server's part of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// The server's rank.
    pub rank: Rank,
    /// Index of the part's first key in the whole list.
    pub offset: usize,
    /// The part.
    pub list: KvList,
}

/// Splits a checked list by server ranges. Parts come in rank order;
/// servers without keys are skipped.
pub fn slice(ranges: &ServerRanges, list: &KvList) -> SmallVec<[Part; 4]> {
    let keys = &list.keys;
    let n = keys.len();
    let per_key = list.values.len().checked_div(n).unwrap_or(0);
    let mut parts = SmallVec::new();
    let mut start = 0usize;
    // Value offset of `start`, advanced incrementally for variable lengths.
    let mut value_start = 0usize;
    for (rank, range) in ranges.as_slice().iter().enumerate() {
        if start == n {
            break;
        }
        let end = start + keys.slice(start, n).partition_point(|k| k <= range.end_inclusive());
        if end == start {
            continue;
        }
        let (value_end, lens) = match &list.lens {
            Some(lens) => {
                let part_lens = lens.slice(start, end);
                (value_start + part_lens.total() as usize, Some(part_lens))
            }
            None => (end * per_key, None),
        };
        let values =
            if list.values.is_empty() { list.values.clone() } else { list.values.slice(value_start, value_end) };
        parts.push(Part {
            rank: Rank(rank as u32),
            offset: start,
            list: KvList { keys: keys.slice(start, end), values, lens },
        });
        start = end;
        value_start = value_end;
    }
    parts
}

/// Concatenates parts in the order given (rank order, hence key order).
/// One part is returned as is, without copying. Lengths are emitted when
/// any part has them or parts disagree on values per key.
pub fn merge(parts: impl IntoIterator<Item = KvList>) -> Result<KvList, Mismatch> {
    let parts: SmallVec<[KvList; 2]> = parts.into_iter().collect();
    let Some(first) = parts.first() else {
        return Err(Mismatch::NoParts);
    };
    let dtype = first.values.dtype();
    if parts.iter().any(|p| p.values.dtype() != dtype) {
        return Err(Mismatch::ValueType);
    }
    for part in &parts {
        check_lengths(part).map_err(|_| Mismatch::Lengths)?;
    }
    if parts.len() == 1 {
        return Ok(parts.into_iter().next().expect("one part"));
    }
    let per_key = |p: &KvList| if p.keys.is_empty() { None } else { Some(p.values.len() / p.keys.len()) };
    let uniform = parts.iter().all(|p| p.lens.is_none())
        && parts.iter().filter_map(per_key).collect::<std::collections::BTreeSet<_>>().len() <= 1;
    let key_bytes: usize = parts.iter().map(|p| p.keys.as_bytes().len()).sum();
    let value_bytes: usize = parts.iter().map(|p| p.values.as_bytes().len()).sum();
    let mut keys = BytesMut::with_capacity(key_bytes);
    let mut values = BytesMut::with_capacity(value_bytes);
    let mut lens = (!uniform).then(|| BytesMut::with_capacity(key_bytes / 2));
    for part in &parts {
        keys.extend_from_slice(part.keys.as_bytes());
        values.extend_from_slice(part.values.as_bytes());
        if let Some(out) = lens.as_mut() {
            match &part.lens {
                Some(l) => out.extend_from_slice(l.as_bytes()),
                None => {
                    let k = per_key(part).unwrap_or(0) as u32;
                    for _ in 0..part.keys.len() {
                        out.extend_from_slice(&k.to_le_bytes());
                    }
                }
            }
        }
    }
    Ok(KvList {
        keys: Keys::from_bytes(keys.freeze()).expect("whole keys"),
        values: Values::from_bytes(dtype, values.freeze()).expect("whole values"),
        lens: lens.map(|l| Lens::from_bytes(l.freeze()).expect("whole lens")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ApiMisuse;
    use proptest::prelude::*;

    fn list(keys: &[u64], values: &[f32], lens: Option<&[u32]>) -> KvList {
        KvList { keys: Keys::from_slice(keys), values: Values::from_slice(values), lens: lens.map(Lens::from_slice) }
    }

    #[test]
    fn misuse_names_the_problem() {
        assert_eq!(
            check_keys(&Keys::from_slice(&[1, 3, 2])),
            Err(ApiMisuse::UnsortedKeys { index: 2, key: 2, previous: 3 })
        );
        assert_eq!(check_keys(&Keys::from_slice(&[1, 1])), Err(ApiMisuse::DuplicateKey { index: 1, key: 1 }));
        assert!(matches!(check_lengths(&list(&[1, 2], &[1.0, 2.0, 3.0], None)), Err(ApiMisuse::LengthMismatch { .. })));
        assert!(matches!(
            check_lengths(&list(&[], &[1.0], None)),
            Err(ApiMisuse::LengthMismatch { what: "values without keys", .. })
        ));
        assert!(matches!(
            check_lengths(&list(&[1, 2], &[1.0, 2.0, 3.0], Some(&[1, 1]))),
            Err(ApiMisuse::LengthMismatch { what: "sum of lens vs values", .. })
        ));
    }

    #[test]
    fn servers_without_keys_get_no_part_and_the_top_key_is_sliced() {
        let ranges = ServerRanges::equal(3);
        let parts = slice(&ranges, &list(&[0, u64::MAX], &[1.0, 2.0], None));
        assert_eq!(parts.len(), 2);
        assert_eq!((parts[0].rank, parts[1].rank), (Rank(0), Rank(2)));
        assert_eq!(parts[1].list.keys.to_vec(), vec![u64::MAX]);
    }

    fn sorted_list() -> impl Strategy<Value = (Vec<u64>, Vec<u32>, bool)> {
        (proptest::collection::btree_set(any::<u64>(), 0..64), any::<bool>()).prop_flat_map(|(keys, variable)| {
            let keys: Vec<u64> = keys.into_iter().collect();
            let n = keys.len();
            (Just(keys), proptest::collection::vec(0u32..4, n), Just(variable))
        })
    }

    proptest! {
        #[test]
        fn slicing_then_merging_is_the_identity((keys, lens, variable) in sorted_list(), servers in 1u32..16, per_key in 1usize..4) {
            let ranges = ServerRanges::equal(servers);
            let (lens, count) = if variable {
                let total: u32 = lens.iter().sum();
                (Some(lens), total as usize)
            } else {
                (None, keys.len() * per_key)
            };
            let values: Vec<f32> = (0..count).map(|i| i as f32).collect();
            let whole = list(&keys, &values, lens.as_deref());
            prop_assert!(check_lengths(&whole).is_ok());
            let parts = slice(&ranges, &whole);
            for part in &parts {
                let range = ranges.get(part.rank).unwrap();
                prop_assert!(part.list.keys.iter().all(|k| range.contains(k)));
                prop_assert!(check_lengths(&part.list).is_ok());
            }
            if keys.is_empty() {
                prop_assert!(parts.is_empty());
            } else {
                let merged = merge(parts.into_iter().map(|p| p.list)).unwrap();
                prop_assert_eq!(merged.keys.to_vec(), keys);
                prop_assert_eq!(merged.values.to_vec::<f32>().unwrap(), values);
                if let Some(lens) = lens {
                    prop_assert_eq!(merged.lens.map(|l| l.to_vec()), Some(lens));
                }
            }
        }
    }
}
