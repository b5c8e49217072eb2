//! An ordered map whose values stay where they were put.
//!
//! A `BTreeMap` keeps its values inside its nodes and moves them on every
//! insert and removal around them; for values of a few hundred bytes (a
//! pending request, a frame kept for resending) that copying showed in
//! profiles of the request path. Here the tree holds only a slot number
//! and the values sit in a vector whose empty slots are reused, so it
//! grows to the most entries ever held at once and then allocates no more.
//! Order (and so every iteration) is the keys' order, as in a `BTreeMap`.

use std::collections::BTreeMap;
use std::ops::RangeBounds;

#[derive(Debug)]
pub(crate) struct SlottedMap<K, V> {
    index: BTreeMap<K, usize>,
    slots: Vec<Option<V>>,
    free: Vec<usize>,
}

impl<K, V> Default for SlottedMap<K, V> {
    fn default() -> Self {
        Self { index: BTreeMap::new(), slots: Vec::new(), free: Vec::new() }
    }
}

impl<K: Ord, V> SlottedMap<K, V> {
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    pub(crate) fn contains_key(&self, key: &K) -> bool {
        self.index.contains_key(key)
    }

    /// Inserts `value` under `key`, returning the value it replaces.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        if let Some(&slot) = self.index.get(&key) {
            return self.slots[slot].replace(value);
        }
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(value);
                slot
            }
            None => {
                self.slots.push(Some(value));
                self.slots.len() - 1
            }
        };
        self.index.insert(key, slot);
        None
    }

    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let slot = self.index.remove(key)?;
        self.free.push(slot);
        self.slots[slot].take()
    }

    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        self.slots[*self.index.get(key)?].as_ref()
    }

    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.slots[*self.index.get(key)?].as_mut()
    }

    /// Entries in key order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.index.iter().map(|(key, &slot)| (key, self.slots[slot].as_ref().expect("an indexed slot is full")))
    }

    /// Keys in `range`, in order.
    pub(crate) fn keys_in(&self, range: impl RangeBounds<K>) -> impl Iterator<Item = &K> {
        self.index.range(range).map(|(key, _)| key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn behaves_as_a_btree_map(ops in proptest::collection::vec((0u8..3, 0u16..64, any::<u32>()), 0..400)) {
            let mut map = SlottedMap::default();
            let mut model = BTreeMap::new();
            for (op, key, value) in ops {
                match op {
                    0 => prop_assert_eq!(map.insert(key, value), model.insert(key, value)),
                    1 => prop_assert_eq!(map.remove(&key), model.remove(&key)),
                    _ => {
                        if let Some(v) = map.get_mut(&key) {
                            *v = v.wrapping_add(value);
                        }
                        if let Some(v) = model.get_mut(&key) {
                            *v = v.wrapping_add(value);
                        }
                    }
                }
                prop_assert_eq!(map.len(), model.len());
                prop_assert_eq!(map.get(&key), model.get(&key));
                prop_assert!(map.iter().map(|(k, v)| (*k, *v)).eq(model.iter().map(|(k, v)| (*k, *v))));
                prop_assert!(map.keys_in(10..30).copied().eq(model.range(10..30).map(|(k, _)| *k)));
                // Slots are reused: never more than were ever held at once.
                prop_assert!(map.slots.len() <= 64);
            }
        }
    }
}
