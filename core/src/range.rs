//! Key ranges: which server owns which keys.
//!
//! ps-lite splits the key space into half-open ranges `[MAX/n·i,
//! MAX/n·(i+1))`, which leaves `u64::MAX` (and for most `n` a few keys
//! below it) to nobody. Our ranges are inclusive at both ends and checked
//! to partition `[0, u64::MAX]` exactly, so every key has one owner.

use std::fmt;

use crate::id::Rank;

/// An inclusive range of keys `start..=end_inclusive`; never empty.
///
/// ```
/// use pslite_core::KeyRange;
/// let range = KeyRange::new(100, 199).unwrap();
/// assert!(range.contains(100) && range.contains(199) && !range.contains(200));
/// assert_eq!((range.start(), range.end_inclusive()), (100, 199));
/// // Inclusive ends: the whole key space is one range, u64::MAX included.
/// assert!(KeyRange::FULL.contains(u64::MAX));
/// assert_eq!(KeyRange::new(5, 4), None, "never empty");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyRange {
    start: u64,
    end_inclusive: u64,
}

impl KeyRange {
    /// The whole key space.
    pub const FULL: Self = Self { start: 0, end_inclusive: u64::MAX };

    /// `start..=end_inclusive`; `None` when that would be empty.
    pub const fn new(start: u64, end_inclusive: u64) -> Option<Self> {
        if start <= end_inclusive {
            Some(Self { start, end_inclusive })
        } else {
            None
        }
    }

    /// First key.
    pub const fn start(self) -> u64 {
        self.start
    }

    /// Last key.
    pub const fn end_inclusive(self) -> u64 {
        self.end_inclusive
    }

    /// Whether `key` lies inside.
    pub const fn contains(self, key: u64) -> bool {
        self.start <= key && key <= self.end_inclusive
    }
}

impl fmt::Debug for KeyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {}]", self.start, self.end_inclusive)
    }
}

/// Why a list of ranges is not a partition of the key space.
///
/// ```
/// use pslite_core::{KeyRange, RangesError, ServerRanges};
/// // Ranges that stop short would leave the top keys to nobody.
/// let short = vec![KeyRange::new(0, 9).unwrap()];
/// assert_eq!(ServerRanges::from_ranges(short), Err(RangesError::LastNotMax(9)));
/// assert_eq!(RangesError::LastNotMax(9).to_string(), "the last range ends at 9, not u64::MAX");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RangesError {
    /// No ranges at all.
    #[error("no ranges")]
    Empty,
    /// The first range does not start at key 0.
    #[error("the first range starts at {0}, not 0")]
    FirstNotZero(u64),
    /// The last range does not end at `u64::MAX`.
    #[error("the last range ends at {0}, not u64::MAX")]
    LastNotMax(u64),
    /// Two neighbours leave a gap or overlap.
    #[error("range {index} starts at {start}, but the previous one ends at {previous_end}")]
    NotContiguous {
        /// Index of the range that does not follow its predecessor.
        index: usize,
        /// Its start.
        start: u64,
        /// Where the predecessor ends.
        previous_end: u64,
    },
}

/// One range per server, in rank order; contiguous, non-overlapping and
/// covering `0..=u64::MAX` (checked on construction).
///
/// ```
/// use pslite_core::{Rank, ServerRanges};
/// let ranges = ServerRanges::equal(3);
/// assert_eq!((ranges.len(), ranges.as_slice().len()), (3, 3));
/// // Every key has exactly one owner, the top of the key space included.
/// assert_eq!(ranges.owner(0), Rank(0));
/// assert_eq!(ranges.owner(u64::MAX), Rank(2));
/// let middle = ranges.get(Rank(1)).unwrap();
/// assert_eq!(ranges.owner(middle.start()), Rank(1));
/// assert_eq!(ranges.get(Rank(3)), None);
/// ```
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ServerRanges {
    ranges: Vec<KeyRange>,
}

impl ServerRanges {
    /// `servers` ranges of (nearly) equal size; the first `2^64 mod n`
    /// boundaries are rounded down, so sizes differ by at most one.
    ///
    /// ```
    /// use pslite_core::{KeyRange, ServerRanges};
    /// let ranges = ServerRanges::equal(3);
    /// let size = |range: &KeyRange| u128::from(range.end_inclusive() - range.start()) + 1;
    /// let sizes: Vec<u128> = ranges.as_slice().iter().map(size).collect();
    /// // All 2^64 keys, shared out within one key of each other.
    /// assert_eq!(sizes.iter().sum::<u128>(), 1 << 64);
    /// assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
    /// ```
    pub fn equal(servers: u32) -> Self {
        assert!(servers > 0, "a cluster has at least one server");
        let n = u128::from(servers);
        let space = 1u128 << 64;
        let boundary = |i: u128| -> u128 { i * space / n };
        let ranges = (0..n)
            .map(|i| {
                let start = boundary(i) as u64;
                let end_inclusive = (boundary(i + 1) - 1) as u64;
                KeyRange { start, end_inclusive }
            })
            .collect();
        let me = Self { ranges };
        debug_assert!(me.check().is_ok());
        me
    }

    /// Explicit ranges, one per server in rank order.
    ///
    /// ```
    /// use pslite_core::{KeyRange, Rank, RangesError, ServerRanges};
    /// // A small hot table on server 0, everything else on server 1.
    /// let hot = KeyRange::new(0, 999).unwrap();
    /// let ranges = ServerRanges::from_ranges(vec![hot, KeyRange::new(1000, u64::MAX).unwrap()]).unwrap();
    /// assert_eq!((ranges.owner(999), ranges.owner(1000)), (Rank(0), Rank(1)));
    /// // A gap would leave keys to nobody: refused.
    /// let gap = vec![KeyRange::new(0, 9).unwrap(), KeyRange::new(11, u64::MAX).unwrap()];
    /// assert!(matches!(ServerRanges::from_ranges(gap), Err(RangesError::NotContiguous { index: 1, .. })));
    /// ```
    pub fn from_ranges(ranges: Vec<KeyRange>) -> Result<Self, RangesError> {
        let me = Self { ranges };
        me.check()?;
        Ok(me)
    }

    fn check(&self) -> Result<(), RangesError> {
        let first = self.ranges.first().ok_or(RangesError::Empty)?;
        if first.start != 0 {
            return Err(RangesError::FirstNotZero(first.start));
        }
        let last = self.ranges.last().ok_or(RangesError::Empty)?;
        if last.end_inclusive != u64::MAX {
            return Err(RangesError::LastNotMax(last.end_inclusive));
        }
        for (index, pair) in self.ranges.windows(2).enumerate() {
            if pair[0].end_inclusive.checked_add(1) != Some(pair[1].start) {
                return Err(RangesError::NotContiguous {
                    index: index + 1,
                    start: pair[1].start,
                    previous_end: pair[0].end_inclusive,
                });
            }
        }
        Ok(())
    }

    /// Number of servers.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Never true: a partition has at least one range.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The range of the server of `rank`.
    pub fn get(&self, rank: Rank) -> Option<KeyRange> {
        self.ranges.get(rank.0 as usize).copied()
    }

    /// All ranges in rank order.
    pub fn as_slice(&self) -> &[KeyRange] {
        &self.ranges
    }

    /// The rank of the server that owns `key` (binary search).
    pub fn owner(&self, key: u64) -> Rank {
        let index = self.ranges.partition_point(|r| r.end_inclusive < key);
        debug_assert!(index < self.ranges.len(), "ranges cover every key");
        Rank(index as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn top_of_the_key_space_has_an_owner() {
        for n in [1, 3, 7, 64] {
            let ranges = ServerRanges::equal(n);
            assert_eq!(ranges.owner(u64::MAX), Rank(n - 1));
            assert_eq!(ranges.owner(0), Rank(0));
        }
    }

    #[test]
    fn gaps_and_overlaps_are_refused() {
        let gap = vec![KeyRange::new(0, 9).unwrap(), KeyRange::new(11, u64::MAX).unwrap()];
        assert!(matches!(ServerRanges::from_ranges(gap), Err(RangesError::NotContiguous { index: 1, .. })));
        let short = vec![KeyRange::new(0, 9).unwrap()];
        assert_eq!(ServerRanges::from_ranges(short), Err(RangesError::LastNotMax(9)));
        assert_eq!(ServerRanges::from_ranges(vec![]), Err(RangesError::Empty));
    }

    proptest! {
        #[test]
        fn equal_split_partitions_the_key_space(n in 1u32..=64, key: u64) {
            let ranges = ServerRanges::equal(n);
            prop_assert_eq!(ranges.len(), n as usize);
            prop_assert!(!ranges.is_empty());
            prop_assert!(ranges.check().is_ok());
            let owner = ranges.owner(key);
            prop_assert!(ranges.get(owner).unwrap().contains(key));
            // Exactly one owner.
            let owners = ranges.as_slice().iter().filter(|r| r.contains(key)).count();
            prop_assert_eq!(owners, 1);
            // Sizes differ by at most one key.
            let sizes: Vec<u128> = ranges.as_slice().iter()
                .map(|r| u128::from(r.end_inclusive()) - u128::from(r.start()) + 1).collect();
            let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            prop_assert!(max - min <= 1);
            prop_assert_eq!(sizes.iter().sum::<u128>(), 1u128 << 64);
        }
    }
}
