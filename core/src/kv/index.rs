//! Where each key's values live in a store's arena.
//!
//! Requests arrive with their keys sorted, so the index keeps most keys in
//! one sorted array walked with a forward-moving cursor: a request touches
//! memory in order instead of one cache miss per key, which is what a
//! hash table costs on millions of keys. Keys added since the last merge
//! wait in a small hash table (`delta`), so a batch with a few new keys
//! does not rewrite the whole array; when the delta grows past an eighth
//! of the array, or a batch brings many new keys at once, everything is
//! merged into the array in one linear pass.
//!
//! A key costs 16 bytes here (its value and a packed run), so ten million
//! scalar keys index in 160 MB next to their 40 MB of values; while the
//! index holds one push of keys of equal length, runs follow a formula and
//! a key costs 8 bytes.

use super::store::KeyMap;

/// A key's values: `len` elements from `start` in the arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) start: usize,
    pub(crate) len: u32,
}

/// Bits of a packed run that hold its start.
const START_BITS: u32 = 40;
/// Largest arena a packed run can point into, in elements (about 10^12):
/// beyond any one server's memory, but checked, never assumed.
pub(crate) const ARENA_ELEMENTS_MAX: usize = 1 << START_BITS;
/// The length field of a run too long to pack; its length is kept aside.
const LONG: u64 = (1 << (64 - START_BITS)) - 1;

/// A run in one word: the start in the low 40 bits, the length in the high
/// 24. Runs of 16M elements or more (a huge dense key, rare) store `LONG`
/// and keep their length aside, keyed by start, which is unique per run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Packed(u64);

impl Packed {
    /// Packs `run`, handing a length too long to pack to `long`.
    fn new(run: Run, long: &mut impl FnMut(usize, u32)) -> Self {
        debug_assert!(run.start + run.len as usize <= ARENA_ELEMENTS_MAX);
        let len = u64::from(run.len);
        let len = if len >= LONG {
            long(run.start, run.len);
            LONG
        } else {
            len
        };
        Self(run.start as u64 | len << START_BITS)
    }
}

/// The runs of a sorted key list, by position.
#[derive(Clone, Debug)]
enum Runs {
    /// Run `i` is `len` elements from `first + i * len`. One push of new
    /// keys of equal length stores its values in key order, so its runs
    /// follow this formula; while the index holds just such a push (a
    /// dense model's first push, ps-lite's kv_app) it costs no memory per
    /// key for runs.
    Even { first: usize, len: u32, count: usize },
    /// One packed run per key.
    Listed(Vec<Packed>),
}

impl Default for Runs {
    fn default() -> Self {
        Self::Even { first: 0, len: 0, count: 0 }
    }
}

impl Runs {
    fn len(&self) -> usize {
        match self {
            Self::Even { count, .. } => *count,
            Self::Listed(runs) => runs.len(),
        }
    }

    /// Appends `run`, leaving the formula for a list when it stops fitting.
    fn push(&mut self, run: Run, capacity: usize, long: &mut impl FnMut(usize, u32)) {
        match self {
            Self::Even { count: 0, .. } => *self = Self::Even { first: run.start, len: run.len, count: 1 },
            Self::Even { first, len, count } if run.len == *len && run.start == *first + *count * *len as usize => {
                *count += 1;
            }
            Self::Even { .. } => {
                let mut listed = std::mem::take(self).into_listed(capacity, long);
                listed.push(Packed::new(run, long));
                *self = Self::Listed(listed);
            }
            Self::Listed(runs) => runs.push(Packed::new(run, long)),
        }
    }

    /// The runs as a list (with room for `capacity`).
    fn into_listed(self, capacity: usize, long: &mut impl FnMut(usize, u32)) -> Vec<Packed> {
        match self {
            Self::Even { first, len, count } => {
                let mut runs = Vec::with_capacity(capacity.max(count));
                runs.extend((0..count).map(|i| Packed::new(Run { start: first + i * len as usize, len }, long)));
                runs
            }
            Self::Listed(runs) => runs,
        }
    }
}

/// Keys new to the index, ascending, with their runs: built by a push,
/// handed to [`KeyIndex::insert`].
#[derive(Debug, Default)]
pub(crate) struct Batch {
    keys: Vec<u64>,
    runs: Runs,
    long: Vec<(usize, u32)>,
    capacity: usize,
}

impl Batch {
    /// Room for `n` new keys, so building a batch never reallocates.
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self { keys: Vec::with_capacity(n), runs: Runs::default(), long: Vec::new(), capacity: n }
    }

    /// Adds `key` (above every key already added) with its run, whose end
    /// the caller has checked against [`ARENA_ELEMENTS_MAX`].
    pub(crate) fn push(&mut self, key: u64, run: Run) {
        debug_assert!(self.keys.last().is_none_or(|&last| last < key), "batch keys ascend");
        self.keys.push(key);
        let long = &mut self.long;
        self.runs.push(run, self.capacity, &mut |start, len| long.push((start, len)));
    }
}

/// Sorted keys plus a hash delta; see the module docs.
#[derive(Clone, Debug, Default)]
pub(crate) struct KeyIndex {
    keys: Vec<u64>,
    runs: Runs,
    delta: KeyMap<Packed>,
    /// Lengths of runs too long to pack, by start.
    long: KeyMap<u32>,
}

/// Position of a walk through the sorted array.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Cursor(usize);

impl KeyIndex {
    pub(crate) fn len(&self) -> usize {
        self.keys.len() + self.delta.len()
    }

    fn unpack(&self, packed: Packed) -> Run {
        let start = (packed.0 & ((1 << START_BITS) - 1)) as usize;
        let len = packed.0 >> START_BITS;
        let len = if len == LONG { self.long[&(start as u64)] } else { len as u32 };
        Run { start, len }
    }

    /// The run of the `i`th key of the sorted array.
    #[inline]
    fn run_at(&self, i: usize) -> Run {
        match &self.runs {
            Runs::Even { first, len, .. } => Run { start: first + i * *len as usize, len: *len },
            Runs::Listed(runs) => self.unpack(runs[i]),
        }
    }

    /// The run of `key`, by binary search and then the delta.
    pub(crate) fn get(&self, key: u64) -> Option<Run> {
        match self.keys.binary_search(&key) {
            Ok(i) => Some(self.run_at(i)),
            Err(_) => self.delta.get(&key).map(|&p| self.unpack(p)),
        }
    }

    /// The run of `key`, searching forward from `cursor` (galloping), which
    /// makes a walk over ascending keys linear. Keys out of order are still
    /// found, by a search of the whole array.
    #[inline]
    pub(crate) fn find(&self, cursor: &mut Cursor, key: u64) -> Option<Run> {
        let keys = &self.keys;
        // The common step of a walk: the next key is the next entry.
        if keys.get(cursor.0) == Some(&key) {
            cursor.0 += 1;
            return Some(self.run_at(cursor.0 - 1));
        }
        let from = if cursor.0 > 0 && keys[cursor.0 - 1] >= key { 0 } else { cursor.0 };
        // Gallop: double the span until its last key is not below `key`;
        // the answer then lies in the span's upper half.
        let mut span = 1;
        while from + span <= keys.len() && keys[from + span - 1] < key {
            span *= 2;
        }
        let low = from + span / 2;
        let high = (from + span).min(keys.len());
        let found = match keys[low..high].binary_search(&key) {
            Ok(i) => {
                cursor.0 = low + i + 1;
                return Some(self.run_at(low + i));
            }
            Err(i) => low + i,
        };
        cursor.0 = found;
        if self.delta.is_empty() {
            None
        } else {
            self.delta.get(&key).map(|&p| self.unpack(p))
        }
    }

    /// The keys in `from..=through`, ascending, at most `max` of them: a
    /// state transfer reads a range in chunks of this. A binary search
    /// finds the span in the array; the delta's keys in the span are
    /// filtered and sorted apart (the delta is small by design, at most an
    /// eighth of the array), so a chunk costs `O(delta + max log max)`,
    /// not a pass over every key the index holds.
    pub(crate) fn keys_in(&self, from: u64, through: u64, max: usize) -> Vec<u64> {
        if from > through || max == 0 {
            return Vec::new();
        }
        let first = self.keys.partition_point(|&key| key < from);
        let listed = self.keys[first..].iter().copied().take_while(|&key| key <= through).take(max);
        let mut waiting: Vec<u64> = self.delta.keys().copied().filter(|key| (from..=through).contains(key)).collect();
        // Only the `max` smallest can be answered: sort just those.
        if waiting.len() > max {
            waiting.select_nth_unstable(max);
            waiting.truncate(max);
        }
        waiting.sort_unstable();
        let mut out = Vec::with_capacity(max.min(self.keys.len() - first + waiting.len()));
        let (mut listed, mut waiting) = (listed.peekable(), waiting.into_iter().peekable());
        while out.len() < max {
            let next = match (listed.peek(), waiting.peek()) {
                (Some(&a), Some(&b)) if a < b => listed.next(),
                (Some(_), Some(_)) | (None, Some(_)) => waiting.next(),
                (Some(_), None) => listed.next(),
                (None, None) => break,
            };
            out.extend(next);
        }
        debug_assert!(out.windows(2).all(|pair| pair[0] < pair[1]), "array and delta hold distinct keys");
        debug_assert!(out.iter().all(|key| (from..=through).contains(key)));
        out
    }

    /// Removes every key in `from..=through`: a server drops a partial
    /// copy of a range this way before learning it again. Runs of keys
    /// that stay keep their places. The arena space of removed keys is
    /// not reclaimed, nor are their entries in `long` (keyed by a start no
    /// later run reuses, as the arena only grows): this happens on a rare
    /// recovery path, and a key pushed again later gets a new run.
    pub(crate) fn remove_span(&mut self, from: u64, through: u64) {
        if from > through {
            return;
        }
        self.delta.retain(|key, _| !(from..=through).contains(key));
        let first = self.keys.partition_point(|&key| key < from);
        let end = self.keys.partition_point(|&key| key <= through);
        if first == end {
            return;
        }
        let count = self.keys.len();
        self.keys.drain(first..end);
        let removed = end - first;
        self.runs = match std::mem::take(&mut self.runs) {
            // A prefix or a suffix of an even list leaves one.
            Runs::Even { first: start, len, .. } if first == 0 => {
                Runs::Even { first: start + removed * len as usize, len, count: count - removed }
            }
            Runs::Even { first: start, len, .. } if end == count => Runs::Even { first: start, len, count: first },
            runs => {
                let index_long = &mut self.long;
                let mut runs = runs.into_listed(0, &mut |start, len| {
                    index_long.insert(start as u64, len);
                });
                runs.drain(first..end);
                Runs::Listed(runs)
            }
        };
        if self.keys.is_empty() {
            self.runs = Runs::default();
        }
        debug_assert_eq!(self.keys.len(), self.runs.len());
    }

    /// Adds the batch's keys, none of which is present yet.
    pub(crate) fn insert(&mut self, batch: Batch) {
        let Batch { keys, runs, long, capacity: _ } = batch;
        self.long.extend(long.into_iter().map(|(start, len)| (start as u64, len)));
        if keys.is_empty() {
            return;
        }
        debug_assert_eq!(keys.len(), runs.len());
        if self.keys.is_empty() && self.delta.is_empty() {
            // The first batch becomes the array as it is: no copy.
            self.keys = keys;
            self.runs = runs;
            return;
        }
        let index_long = &mut self.long;
        let mut long = |start: usize, len: u32| {
            index_long.insert(start as u64, len);
        };
        let runs = runs.into_listed(0, &mut long);
        let waiting = self.delta.len() + keys.len();
        if waiting <= self.keys.len() / 8 {
            self.delta.extend(keys.into_iter().zip(runs));
            return;
        }
        let mut pending: Vec<(u64, Packed)> = self.delta.drain().collect();
        pending.sort_unstable_by_key(|&(key, _)| key);
        let pending = merge(pending, keys.into_iter().zip(runs).collect());
        let old_keys = std::mem::take(&mut self.keys);
        let old_runs = std::mem::take(&mut self.runs).into_listed(0, &mut long);
        let total = old_keys.len() + pending.len();
        let mut new_keys = Vec::with_capacity(total);
        let mut new_runs = Vec::with_capacity(total);
        let mut new = pending.into_iter().peekable();
        for (key, run) in old_keys.into_iter().zip(old_runs) {
            while let Some(&(next, next_run)) = new.peek() {
                if next >= key {
                    break;
                }
                new_keys.push(next);
                new_runs.push(next_run);
                new.next();
            }
            new_keys.push(key);
            new_runs.push(run);
        }
        for (key, run) in new {
            new_keys.push(key);
            new_runs.push(run);
        }
        self.keys = new_keys;
        self.runs = Runs::Listed(new_runs);
    }
}

/// Two ascending lists of distinct keys, merged.
fn merge(a: Vec<(u64, Packed)>, b: Vec<(u64, Packed)>) -> Vec<(u64, Packed)> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => {
                if x.0 < y.0 {
                    out.extend(a.next());
                } else {
                    out.extend(b.next());
                }
            }
            (Some(_), None) => out.extend(a.by_ref()),
            (None, Some(_)) => out.extend(b.by_ref()),
            (None, None) => return out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        #[test]
        fn index_agrees_with_a_map_whatever_the_batches(
            batches in proptest::collection::vec(
                (proptest::collection::btree_set(0u64..500, 0..60), proptest::option::of(prop_oneof![1u32..4, Just(LONG as u32 + 3)]), 0usize..3),
                1..30),
            probes in proptest::collection::vec(0u64..520, 0..80),
        ) {
            let mut index = KeyIndex::default();
            let mut model = BTreeMap::new();
            let mut next = 0usize;
            for (batch, even_len, gap_at) in batches {
                let mut cursor = Cursor::default();
                let mut new = Batch::default();
                for (i, key) in batch.into_iter().enumerate() {
                    let found = index.find(&mut cursor, key);
                    prop_assert_eq!(found, model.get(&key).copied());
                    if found.is_none() {
                        // Batches of one length, contiguous or with a gap,
                        // and batches where every seventh run is too long
                        // to pack.
                        let len = even_len.unwrap_or(if key % 7 == 0 { (LONG as u32) + key as u32 } else { 1 + key as u32 % 5 });
                        if i == gap_at + 1 {
                            next += 1;
                        }
                        let run = Run { start: next, len };
                        next += len as usize;
                        new.push(key, run);
                        model.insert(key, run);
                    }
                }
                index.insert(new);
                prop_assert_eq!(index.len(), model.len());
            }
            let mut cursor = Cursor::default();
            for key in probes {
                // Out of order on purpose: the cursor must cope.
                prop_assert_eq!(index.find(&mut cursor, key), model.get(&key).copied());
                prop_assert_eq!(index.get(key), model.get(&key).copied());
            }
        }
    }

    /// Keys near both ends of the key space, so spans reach `0` and `u64::MAX`.
    fn edge_key() -> impl Strategy<Value = u64> {
        prop_oneof![0u64..64, (u64::MAX - 64)..=u64::MAX]
    }

    proptest! {
        /// Reading spans (`keys_in`) and removing them (`remove_span`)
        /// agree with a map, whether the keys sit in an even array, a
        /// listed one or the delta, and keys removed can come back.
        #[test]
        fn spans_read_and_removed_agree_with_a_map(
            rounds in proptest::collection::vec(
                (
                    proptest::collection::btree_set(edge_key(), 0..48),
                    proptest::option::of(prop_oneof![Just(2u32), Just(LONG as u32 + 1)]),
                    proptest::collection::vec((edge_key(), edge_key(), 0usize..20, any::<bool>()), 0..6),
                ),
                1..10,
            ),
        ) {
            let mut index = KeyIndex::default();
            let mut model: BTreeMap<u64, Run> = BTreeMap::new();
            let mut next = 0usize;
            for (keys, even_len, spans) in rounds {
                let mut batch = Batch::default();
                for key in keys {
                    if model.contains_key(&key) {
                        continue;
                    }
                    let run = Run { start: next, len: even_len.unwrap_or(1 + key as u32 % 3) };
                    next += run.len as usize;
                    batch.push(key, run);
                    model.insert(key, run);
                }
                index.insert(batch);
                for (from, through, max, remove) in spans {
                    let expected: Vec<u64> = if from <= through {
                        model.range(from..=through).map(|(&key, _)| key).take(max).collect()
                    } else {
                        Vec::new()
                    };
                    prop_assert_eq!(index.keys_in(from, through, max), expected);
                    if remove {
                        index.remove_span(from, through);
                        model.retain(|key, _| !(from..=through).contains(key));
                        prop_assert_eq!(index.len(), model.len());
                    }
                    prop_assert_eq!(index.get(from), model.get(&from).copied());
                    prop_assert_eq!(index.get(through), model.get(&through).copied());
                }
                let mut cursor = Cursor::default();
                for (&key, &run) in &model {
                    prop_assert_eq!(index.find(&mut cursor, key), Some(run));
                    prop_assert_eq!(index.get(key), Some(run));
                }
                let all: Vec<u64> = model.keys().copied().collect();
                prop_assert_eq!(index.keys_in(0, u64::MAX, usize::MAX), all);
            }
        }
    }

    #[test]
    fn removing_a_span_of_an_even_array_keeps_the_rest_in_place() {
        let mut batch = Batch::default();
        for key in 0..10u64 {
            batch.push(key, Run { start: 3 * key as usize, len: 3 });
        }
        let mut index = KeyIndex::default();
        index.insert(batch);
        index.remove_span(0, 1);
        index.remove_span(8, u64::MAX);
        assert!(
            matches!(index.runs, Runs::Even { first: 6, len: 3, count: 6 }),
            "a prefix and a suffix keep the formula"
        );
        index.remove_span(4, 5);
        assert!(matches!(index.runs, Runs::Listed(_)));
        assert_eq!(index.keys_in(0, u64::MAX, 10), [2, 3, 6, 7]);
        assert_eq!(index.get(7), Some(Run { start: 21, len: 3 }));
        assert_eq!((index.get(1), index.get(5), index.get(9)), (None, None, None));
        assert_eq!(index.keys_in(3, 6, 1), [3]);
        assert_eq!(index.keys_in(7, 3, 10), [] as [u64; 0], "an empty span");
    }

    #[test]
    fn a_run_packs_up_to_the_arena_limit() {
        let mut batch = Batch::default();
        let last = Run { start: ARENA_ELEMENTS_MAX - 3, len: 3 };
        batch.push(1, Run { start: 0, len: LONG as u32 - 1 });
        batch.push(2, Run { start: 5, len: u32::MAX });
        batch.push(3, last);
        let mut index = KeyIndex::default();
        index.insert(batch);
        assert_eq!(index.get(1), Some(Run { start: 0, len: LONG as u32 - 1 }));
        assert_eq!(index.get(2), Some(Run { start: 5, len: u32::MAX }));
        assert_eq!(index.get(3), Some(last));
        assert_eq!(index.get(4), None);
    }
}
