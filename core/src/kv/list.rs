//! A key-value list, and what makes one well formed: strictly ascending
//! keys and values that fit them. Workers check their own requests with
//! it, servers check what arrives from the wire, and the store checks
//! what its handle is given.

use super::values::{Keys, Lens, Values};
use super::KvOp;
use crate::error::ApiMisuse;

/// Keys with their values and optional per-key lengths.
///
/// ```
/// use pslite_core::{check_request, KvList, KvOp, Keys, Lens, Values};
/// // Key 1 has two values, key 4 one.
/// let list = KvList {
///     keys: Keys::from_slice(&[1, 4]),
///     values: Values::from_slice(&[0.5f32, 0.5, 2.0]),
///     lens: Some(Lens::from_slice(&[2, 1])),
/// };
/// assert_eq!(check_request(KvOp::Push, &list), Ok(()));
/// ```
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
///
/// ```
/// use pslite_core::{kv::list::check_keys, ApiMisuse, Keys};
/// assert_eq!(check_keys(&Keys::from_slice(&[1, 5, 9])), Ok(()));
/// // The first offender is named, for a message the caller can act on.
/// let error = check_keys(&Keys::from_slice(&[1, 9, 5])).unwrap_err();
/// assert_eq!(error, ApiMisuse::UnsortedKeys { index: 2, key: 5, previous: 9 });
/// ```
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
///
/// ```
/// use pslite_core::{kv::list::check_lengths, ApiMisuse, Keys, KvList, Values};
/// // Three values cannot be shared equally between two keys.
/// let list = KvList { keys: Keys::from_slice(&[1, 2]), values: Values::from_slice(&[1.0f32; 3]), lens: None };
/// assert!(matches!(check_lengths(&list), Err(ApiMisuse::LengthMismatch { expected: 4, got: 3, .. })));
/// ```
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
///
/// ```
/// use pslite_core::{check_request, ApiMisuse, DType, Keys, KvList, KvOp, Values};
/// let pull = KvList { keys: Keys::from_slice(&[1, 2]), values: Values::empty(DType::F32), lens: None };
/// assert_eq!(check_request(KvOp::Pull, &pull), Ok(()));
/// // The same list as a push has nothing to push.
/// assert!(matches!(check_request(KvOp::Push, &pull), Err(ApiMisuse::LengthMismatch { .. })));
/// ```
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
