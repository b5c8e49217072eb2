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

use super::store::KeyMap;

/// A key's values: `len` elements from `start` in the arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) start: usize,
    pub(crate) len: u32,
}

/// Sorted keys plus a hash delta; see the module docs.
#[derive(Clone, Debug, Default)]
pub(crate) struct KeyIndex {
    keys: Vec<u64>,
    runs: Vec<Run>,
    delta: KeyMap<Run>,
}

/// Position of a walk through the sorted array.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Cursor(usize);

impl KeyIndex {
    pub(crate) fn len(&self) -> usize {
        self.keys.len() + self.delta.len()
    }

    /// The run of `key`, by binary search and then the delta.
    pub(crate) fn get(&self, key: u64) -> Option<Run> {
        match self.keys.binary_search(&key) {
            Ok(i) => Some(self.runs[i]),
            Err(_) => self.delta.get(&key).copied(),
        }
    }

    /// The run of `key`, searching forward from `cursor` (galloping), which
    /// makes a walk over ascending keys linear. Keys out of order are still
    /// found, by a search of the whole array.
    pub(crate) fn find(&self, cursor: &mut Cursor, key: u64) -> Option<Run> {
        let keys = &self.keys;
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
                return Some(self.runs[low + i]);
            }
            Err(i) => low + i,
        };
        cursor.0 = found;
        if self.delta.is_empty() {
            None
        } else {
            self.delta.get(&key).copied()
        }
    }

    /// Adds keys not yet present (ascending, with their runs).
    pub(crate) fn insert_sorted(&mut self, keys: Vec<u64>, runs: Vec<Run>) {
        debug_assert!(keys.windows(2).all(|w| w[0] < w[1]), "new keys come sorted and unique");
        debug_assert_eq!(keys.len(), runs.len());
        if keys.is_empty() {
            return;
        }
        if self.keys.is_empty() && self.delta.is_empty() {
            // The first batch becomes the array as it is: no copy.
            self.keys = keys;
            self.runs = runs;
            return;
        }
        let waiting = self.delta.len() + keys.len();
        if waiting <= self.keys.len() / 8 {
            self.delta.extend(keys.into_iter().zip(runs));
            return;
        }
        let mut pending: Vec<(u64, Run)> = self.delta.drain().collect();
        pending.sort_unstable_by_key(|&(key, _)| key);
        let pending = merge(pending, keys.into_iter().zip(runs).collect());
        let old_keys = std::mem::take(&mut self.keys);
        let old_runs = std::mem::take(&mut self.runs);
        self.keys.reserve(old_keys.len() + pending.len());
        self.runs.reserve(old_keys.len() + pending.len());
        let mut new = pending.into_iter().peekable();
        for (key, run) in old_keys.into_iter().zip(old_runs) {
            while let Some(&(next, next_run)) = new.peek() {
                if next >= key {
                    break;
                }
                self.keys.push(next);
                self.runs.push(next_run);
                new.next();
            }
            self.keys.push(key);
            self.runs.push(run);
        }
        for (key, run) in new {
            self.keys.push(key);
            self.runs.push(run);
        }
    }
}

/// Two ascending lists of distinct keys, merged.
fn merge(a: Vec<(u64, Run)>, b: Vec<(u64, Run)>) -> Vec<(u64, Run)> {
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
            batches in proptest::collection::vec(proptest::collection::btree_set(0u64..500, 0..60), 1..30),
            probes in proptest::collection::vec(0u64..520, 0..80),
        ) {
            let mut index = KeyIndex::default();
            let mut model = BTreeMap::new();
            let mut next = 0usize;
            for batch in batches {
                let mut cursor = Cursor::default();
                let (mut new_keys, mut new_runs) = (Vec::new(), Vec::new());
                for key in batch {
                    let found = index.find(&mut cursor, key);
                    prop_assert_eq!(found, model.get(&key).copied());
                    if found.is_none() {
                        let run = Run { start: next, len: 1 };
                        next += 1;
                        new_keys.push(key);
                        new_runs.push(run);
                        model.insert(key, run);
                    }
                }
                index.insert_sorted(new_keys, new_runs);
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
}
