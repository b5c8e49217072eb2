//! A key-value list, and what makes one well formed: strictly ascending
//! keys and values that fit them. Workers check their own requests with
//! it, servers check what arrives from the wire, and the store checks
//! what its handle is given.

use super::values::{Keys, Lens, Values};
use super::KvOp;
use crate::error::ApiMisuse;

/// Keys with their values and optional per-key lengths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvList {
    /// Strictly ascending keys.
    pub keys: Keys,
    /// Values: `k` per key, or `lens[i]` for key `i`.
    pub values: Values,
    /// Per-key lengths, for variable-length values.
    pub lens: Option<Lens>,
}

/// Checks keys are strictly ascending.
pub fn check_keys(keys: &Keys) -> Result<(), ApiMisuse> {
    let mut previous: Option<u64> = None;
    for (index, key) in keys.iter().enumerate() {
        if let Some(previous) = previous {
            if key == previous {
                return Err(ApiMisuse::DuplicateKey { index, key });
            }
            if key < previous {
                return Err(ApiMisuse::UnsortedKeys { index, key, previous });
            }
        }
        previous = Some(key);
    }
    Ok(())
}

/// Checks that values fit keys: `lens` has one entry per key summing to the
/// value count, or the value count is a multiple of the key count. Pulls
/// (no values, no lens) are always consistent.
pub fn check_lengths(list: &KvList) -> Result<(), ApiMisuse> {
    let keys = list.keys.len() as u64;
    let values = list.values.len() as u64;
    match &list.lens {
        Some(lens) => {
            if lens.len() as u64 != keys {
                return Err(ApiMisuse::LengthMismatch {
                    what: "one length per key",
                    expected: keys,
                    got: lens.len() as u64,
                });
            }
            if lens.total() != values {
                return Err(ApiMisuse::LengthMismatch {
                    what: "sum of lens vs values",
                    expected: lens.total(),
                    got: values,
                });
            }
        }
        None if keys == 0 && values != 0 => {
            return Err(ApiMisuse::LengthMismatch { what: "values without keys", expected: 0, got: values });
        }
        None if keys != 0 && values % keys != 0 => {
            return Err(ApiMisuse::LengthMismatch {
                what: "values per key (value count must be a multiple of the key count)",
                expected: values.next_multiple_of(keys),
                got: values,
            });
        }
        None => {}
    }
    Ok(())
}

/// Everything a caller can get wrong about a request, checked without a
/// node: sorted unique keys, values that fit them, and values on a push.
/// Shells call it to report mistakes before queueing anything.
pub fn check_request(op: KvOp, list: &KvList) -> Result<(), ApiMisuse> {
    check_keys(&list.keys)?;
    check_lengths(list)?;
    if op.pushes() && list.lens.is_none() && !list.keys.is_empty() && list.values.is_empty() {
        return Err(ApiMisuse::LengthMismatch {
            what: "a push needs values",
            expected: list.keys.len() as u64,
            got: 0,
        });
    }
    Ok(())
}
