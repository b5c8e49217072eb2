//! The default server handle: sum pushes, return sums on pull.
//!
//! Values live in one arena per store (a few shared segments, see `arena`)
//! with a lookup table from key to its run, so ten million keys are one
//! allocation rather than ten million. A key's length is fixed by its
//! first push; a later push of another length is refused with a reason,
//! never a panic. A key that was never pushed pulls as `value_len_default`
//! zeros (1 by default, ps-lite's behaviour): a model starts at zero.

use std::hash::{BuildHasherDefault, Hasher};

use bytes::BytesMut;
use hashbrown::HashMap;

use crate::error::ApiMisuse;
use crate::range::KeyRange;
use crate::recycle::Recycler;

use super::arena::{Arena, Write};
use super::index::{Batch, Cursor, KeyIndex, Run, ARENA_ELEMENTS_MAX};
use super::list::KvList;
use super::values::{put_all, DType, Element, Keys, Lens, Values};
use super::{KvHandle, Refusal, Response, ServerRequest};

/// A fast, fixed (hence deterministic) hasher for integer keys:
/// one multiply and a fold (Fx-style). Lookup only, never iterated.
#[derive(Default, Clone, Copy, Debug)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        let x = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = x ^ (x >> 29);
    }
}

/// A map from keys that hashes with [`KeyHasher`].
pub type KeyMap<V> = HashMap<u64, V, BuildHasherDefault<KeyHasher>>;

/// Values per key of one push: listed, or the same for every key (the
/// common case, which needs no list built).
enum RunLens {
    Listed(Lens),
    Equal(u32),
}

impl RunLens {
    #[inline]
    fn get(&self, i: usize) -> u32 {
        match self {
            Self::Listed(lens) => lens.get(i),
            Self::Equal(len) => *len,
        }
    }
}

/// Longest key list whose answer is sized before it is written (to write
/// it into a recycled buffer); longer ones are many small values, written
/// into a new buffer.
const ANSWER_SIZED_KEYS_MAX: usize = 4096;

/// Values per key of a pull's answer: only a length while every key has
/// the same, so the common uniform pull builds no list as long as its keys.
#[derive(Default)]
struct PulledLens {
    count: usize,
    uniform: Option<u32>,
    listed: Vec<u32>,
}

impl PulledLens {
    fn push(&mut self, len: u32) {
        if self.count == 0 {
            self.uniform = Some(len);
        } else if self.uniform.is_some_and(|u| u != len) {
            self.listed = vec![self.uniform.take().expect("checked"); self.count];
        }
        if self.uniform.is_none() {
            self.listed.push(len);
        }
        self.count += 1;
    }

    /// The lens to send: a list when lengths differ or the pull asked for one.
    fn finish(self, asked: bool) -> Option<Lens> {
        match self.uniform {
            Some(_) | None if self.count == 0 => asked.then(|| Lens::from_slice(&[])),
            Some(len) => asked.then(|| Lens::from_slice(&vec![len; self.count])),
            None => Some(Lens::from_slice(&self.listed)),
        }
    }
}

/// Sums pushes of element type `T`; answers pulls with the sums.
///
/// The default server handle (ps-lite's `KVServerDefaultHandle`):
///
/// ```
/// use pslite_core::KvStore;
/// let mut store = KvStore::<f32>::new();
/// assert_eq!(store.get(7), None, "never pushed");
/// assert!(store.is_empty());
/// ```
#[derive(Debug, Clone)]
pub struct KvStore<T: Element = f32> {
    index: KeyIndex,
    arena: Arena<T>,
    value_len_default: u32,
    /// Buffers of earlier pull answers, to write later ones in.
    recycler: Recycler,
}

impl<T: Element> Default for KvStore<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Element> KvStore<T> {
    /// An empty store; never-pushed keys pull as one zero.
    pub fn new() -> Self {
        Self::with_value_len_default(1)
    }

    /// An empty store; never-pushed keys pull as `len` zeros.
    ///
    /// ```
    /// # use pslite_core::*;
    /// # let request = |op, keys: &[u64], values: Values| ServerRequest {
    /// #     id: ServerRequestId {
    /// #         from: NodeId::worker(Rank(0)),
    /// #         incarnation: Incarnation(0),
    /// #         customer: CustomerId::DEFAULT,
    /// #         ts: Timestamp(0), part: 0,
    /// #     },
    /// #     cmd: 0, op, keys: Keys::from_slice(keys), values, lens: None,
    /// # };
    ///
    /// // Embeddings of 4 values: a key never pushed pulls as 4 zeros, not 1.
    /// let store = KvStore::<f32>::with_value_len_default(4);
    /// let pulled = store.pull(&request(KvOp::Pull, &[9], Values::empty(DType::F32))).unwrap();
    /// assert_eq!(pulled, Response::Ok { values: Values::from_slice(&[0.0f32; 4]), lens: None });
    /// ```
    pub fn with_value_len_default(len: u32) -> Self {
        Self {
            index: KeyIndex::default(),
            arena: Arena::default(),
            value_len_default: len,
            recycler: Recycler::default(),
        }
    }

    /// Number of keys stored.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether nothing was pushed yet.
    pub fn is_empty(&self) -> bool {
        self.index.len() == 0
    }

    /// The values of `key`, if pushed.
    pub fn get(&self, key: u64) -> Option<&[T]> {
        self.index.get(key).map(|r| self.arena.slice(r.start..r.start + r.len as usize))
    }

    /// Adds `values` (`lens[i]` per key, or an equal share) to the keys.
    /// Checks everything before changing anything, so a refused push leaves
    /// the store as it was.
    ///
    /// ```
    /// # use pslite_core::*;
    /// # let request = |op, keys: &[u64], values: Values| ServerRequest {
    /// #     id: ServerRequestId {
    /// #         from: NodeId::worker(Rank(0)),
    /// #         incarnation: Incarnation(0),
    /// #         customer: CustomerId::DEFAULT,
    /// #         ts: Timestamp(0), part: 0,
    /// #     },
    /// #     cmd: 0, op, keys: Keys::from_slice(keys), values, lens: None,
    /// # };
    ///
    /// let mut store = KvStore::<f32>::new();
    /// store.push(&request(KvOp::Push, &[1, 2], Values::from_slice(&[1.0f32, 2.0]))).unwrap();
    /// store.push(&request(KvOp::Push, &[2], Values::from_slice(&[0.5f32]))).unwrap();
    /// assert_eq!((store.len(), store.get(2)), (2, Some(&[2.5f32][..])));
    /// // A key keeps the length of its first push; another is refused, and
    /// // the refused push changes nothing.
    /// let longer = request(KvOp::Push, &[1, 2], Values::from_slice(&[1.0f32, 1.0, 1.0, 1.0]));
    /// assert!(matches!(store.push(&longer), Err(StoreError::LengthChanged { key: 1, held: 1, pushed: 2 })));
    /// assert_eq!(store.get(1), Some(&[1.0f32][..]));
    /// ```
    pub fn push(&mut self, request: &ServerRequest) -> Result<(), StoreError> {
        let keys = &request.keys;
        let values = &request.values;
        if values.dtype() != T::DTYPE {
            return Err(StoreError::PushType { held: T::DTYPE, pushed: values.dtype() });
        }
        super::list::check_keys(keys)?;
        let lens = self.lens_of(request)?;
        // Check everything first, so a refused push changes nothing. Both
        // passes walk the sorted index forward, which costs little more
        // than keeping every lookup in a list as long as the request.
        let mut cursor = Cursor::default();
        let (mut new_keys, mut new_elements) = (0usize, 0usize);
        for (i, key) in keys.iter().enumerate() {
            match self.index.find(&mut cursor, key) {
                Some(run) if run.len != lens.get(i) => {
                    return Err(StoreError::LengthChanged { key, held: run.len, pushed: lens.get(i) });
                }
                Some(_) => {}
                None => {
                    new_keys += 1;
                    new_elements += lens.get(i) as usize;
                }
            }
        }
        if self.arena.len() + new_elements > ARENA_ELEMENTS_MAX {
            return Err(StoreError::Full { held: self.arena.len(), max: ARENA_ELEMENTS_MAX });
        }
        self.arena.reserve(new_elements);
        let size = size_of::<T>();
        let bytes = values.as_bytes();
        let mut batch = Batch::with_capacity(new_keys);
        if new_keys == keys.len() {
            // All new (a first push): the values go in as they are, in one pass.
            let start = self.arena.extend(bytes.chunks_exact(size).map(T::read));
            let mut at = start;
            for (i, key) in keys.iter().enumerate() {
                let len = lens.get(i);
                batch.push(key, Run { start: at, len });
                at += len as usize;
            }
        } else {
            let mut cursor = Cursor::default();
            let mut at = 0usize;
            for (i, key) in keys.iter().enumerate() {
                let len = lens.get(i) as usize;
                let chunk = &bytes[at * size..(at + len) * size];
                match self.index.find(&mut cursor, key) {
                    Some(run) => self.arena.rewrite(run.start..run.start + len, chunk, Write::Add),
                    None => {
                        let start = self.arena.extend(chunk.chunks_exact(size).map(T::read));
                        batch.push(key, Run { start, len: len as u32 });
                    }
                }
                at += len;
            }
            debug_assert_eq!(at, values.len());
        }
        self.index.insert(batch);
        Ok(())
    }

    /// The values of `keys`, zeros for keys never pushed.
    ///
    /// ```
    /// # use pslite_core::*;
    /// # let request = |op, keys: &[u64], values: Values| ServerRequest {
    /// #     id: ServerRequestId {
    /// #         from: NodeId::worker(Rank(0)),
    /// #         incarnation: Incarnation(0),
    /// #         customer: CustomerId::DEFAULT,
    /// #         ts: Timestamp(0), part: 0,
    /// #     },
    /// #     cmd: 0, op, keys: Keys::from_slice(keys), values, lens: None,
    /// # };
    ///
    /// let mut store = KvStore::<i64>::new();
    /// store.push(&request(KvOp::Push, &[5], Values::from_slice(&[7i64]))).unwrap();
    /// // The values of the keys in order, zeros for keys never pushed.
    /// let answer = store.pull(&request(KvOp::Pull, &[5, 6], Values::empty(DType::I64))).unwrap();
    /// assert_eq!(answer, Response::Ok { values: Values::from_slice(&[7i64, 0]), lens: None });
    /// ```
    pub fn pull(&self, request: &ServerRequest) -> Result<Response, StoreError> {
        self.pull_into(request, &mut BytesMut::new(), true)
    }

    /// Bytes a pull of `request` answers with, if cheap to tell: a walk of
    /// the index as long as the key list, done for short lists only.
    fn answer_bytes(&self, request: &ServerRequest) -> Option<usize> {
        if request.keys.len() > ANSWER_SIZED_KEYS_MAX {
            return None;
        }
        let mut cursor = Cursor::default();
        let elements: usize = request
            .keys
            .iter()
            .map(|key| self.index.find(&mut cursor, key).map_or(self.value_len_default, |run| run.len) as usize)
            .sum();
        Some(elements * size_of::<T>())
    }

    /// [`pull`](Self::pull), writing the values into `out` and splitting
    /// them off it, so the caller can give `out`'s memory a second life;
    /// or, if `share` allows, answering with the store's own memory when
    /// the keys make up one stretch of it.
    fn pull_into(&self, request: &ServerRequest, out: &mut BytesMut, share: bool) -> Result<Response, StoreError> {
        if request.values.dtype() != T::DTYPE {
            return Err(StoreError::PullType { held: T::DTYPE, asked: request.values.dtype() });
        }
        out.reserve(request.keys.len() * size_of::<T>());
        let zeros = vec![T::default(); self.value_len_default as usize];
        let mut lens = PulledLens::default();
        // Keys pushed together sit side by side in the arena: copy each
        // stretch of adjacent runs at once rather than key by key.
        let mut stretch = 0..0;
        let mut cursor = Cursor::default();
        for key in request.keys.iter() {
            let run = self.index.find(&mut cursor, key);
            match run {
                Some(run) if run.start == stretch.end => stretch.end += run.len as usize,
                Some(run) => {
                    self.arena.copy_into(stretch, out);
                    stretch = run.start..run.start + run.len as usize;
                }
                None => {
                    self.arena.copy_into(stretch, out);
                    stretch = 0..0;
                    put_all(&zeros, out);
                }
            }
            lens.push(run.map_or(self.value_len_default, |run| run.len));
        }
        // Every key in one stretch, nothing copied yet: the answer can
        // share the store's memory instead.
        let shared = if share && out.is_empty() { self.arena.share(stretch.clone()) } else { None };
        let bytes = match shared {
            Some(bytes) => bytes,
            None => {
                self.arena.copy_into(stretch, out);
                out.split().freeze()
            }
        };
        let values = Values::from_bytes(T::DTYPE, bytes).expect("whole elements");
        Ok(Response::Ok { values, lens: lens.finish(request.lens.is_some()) })
    }

    fn lens_of(&self, request: &ServerRequest) -> Result<RunLens, StoreError> {
        run_lens(&request.keys, &request.values, request.lens.as_ref())
    }

    /// What `keys` hold (keys never pushed are left out), with each key's
    /// length: what a copy of this store installs to answer every later
    /// request on those keys exactly as this one does.
    ///
    /// ```
    /// # use pslite_core::*;
    /// # let push = |keys: &[u64], values: &[f32]| ServerRequest {
    /// #     id: ServerRequestId { from: NodeId::worker(Rank(0)), incarnation: Incarnation(0),
    /// #         customer: CustomerId::DEFAULT, ts: Timestamp(0), part: 0 },
    /// #     cmd: 0, op: KvOp::Push, keys: Keys::from_slice(keys), values: Values::from_slice(values), lens: None,
    /// # };
    /// let mut head = KvStore::<f32>::new();
    /// head.push(&push(&[1, 2], &[0.1, 0.2])).unwrap();
    /// head.push(&push(&[2], &[0.3])).unwrap();
    /// let state = head.export(&Keys::from_slice(&[1, 2, 3]));
    /// assert_eq!(state.keys, Keys::from_slice(&[1, 2]), "3 holds nothing");
    /// // A copy that installs it holds the same bits, whatever order of
    /// // additions made them.
    /// let mut copy = KvStore::<f32>::new();
    /// copy.install(&state).unwrap();
    /// assert_eq!(copy.get(2).unwrap()[0].to_bits(), head.get(2).unwrap()[0].to_bits());
    /// ```
    pub fn export(&self, keys: &Keys) -> KvList {
        let (mut held, mut runs) = (Vec::new(), Vec::new());
        for key in keys.iter() {
            if let Some(run) = self.index.get(key) {
                held.push(key);
                runs.push(run);
            }
        }
        self.list_of(&held, &runs)
    }

    /// `keys` with the values of their `runs`, in the form of
    /// [`export`](Self::export). Runs that make up one stretch of the
    /// arena share its memory when [`Arena::share`] allows: a replicated
    /// head exports every push's keys to send them down the chain, and
    /// for a large key a copy of its values cost as much as the push's
    /// own sum.
    fn list_of(&self, keys: &[u64], runs: &[Run]) -> KvList {
        let lens: Vec<u32> = runs.iter().map(|run| run.len).collect();
        let stretch = runs.first().map_or(0..0, |first| {
            let mut stretch = first.start..first.start;
            for run in runs {
                if run.start != stretch.end {
                    return 0..0;
                }
                stretch.end += run.len as usize;
            }
            stretch
        });
        let bytes = self.arena.share(stretch).unwrap_or_else(|| {
            let mut out = BytesMut::with_capacity(lens.iter().map(|&len| len as usize).sum::<usize>() * size_of::<T>());
            for run in runs {
                self.arena.copy_into(run.start..run.start + run.len as usize, &mut out);
            }
            out.freeze()
        });
        let values = Values::from_bytes(T::DTYPE, bytes).expect("whole elements");
        KvList { keys: Keys::from_slice(keys), values, lens: Some(Lens::from_slice(&lens)) }
    }

    /// Replaces what the keys of `state` hold with it (see
    /// [`export`](Self::export)). Checks everything first, so a refused
    /// state changes nothing.
    pub fn install(&mut self, state: &KvList) -> Result<(), StoreError> {
        if state.values.dtype() != T::DTYPE {
            return Err(StoreError::PushType { held: T::DTYPE, pushed: state.values.dtype() });
        }
        super::list::check_keys(&state.keys)?;
        let lens = run_lens(&state.keys, &state.values, state.lens.as_ref())?;
        let mut new_elements = 0usize;
        for (i, key) in state.keys.iter().enumerate() {
            match self.index.get(key) {
                Some(run) if run.len != lens.get(i) => {
                    return Err(StoreError::LengthChanged { key, held: run.len, pushed: lens.get(i) });
                }
                Some(_) => {}
                None => new_elements += lens.get(i) as usize,
            }
        }
        if self.arena.len() + new_elements > ARENA_ELEMENTS_MAX {
            return Err(StoreError::Full { held: self.arena.len(), max: ARENA_ELEMENTS_MAX });
        }
        self.arena.reserve(new_elements);
        let size = size_of::<T>();
        let bytes = state.values.as_bytes();
        // One large key: its values are most of the frame they came in, so
        // keeping them where they arrived costs no more memory than a copy.
        let adoptable = state.keys.len() == 1 && bytes.len() >= ADOPT_BYTES_MIN;
        let mut batch = Batch::with_capacity(state.keys.len());
        let mut at = 0usize;
        for (i, key) in state.keys.iter().enumerate() {
            let len = lens.get(i) as usize;
            let chunk = &bytes[at * size..(at + len) * size];
            match self.index.get(key) {
                Some(run) if adoptable && self.arena.adopt(run.start..run.start + len, bytes) => {}
                Some(run) => self.arena.rewrite(run.start..run.start + len, chunk, Write::Replace),
                None => {
                    let start = self.arena.extend(chunk.chunks_exact(size).map(T::read));
                    batch.push(key, Run { start, len: len as u32 });
                }
            }
            at += len;
        }
        self.index.insert(batch);
        Ok(())
    }

    /// The keys of `range` this store holds, ascending from its start,
    /// with their values and lengths (the form of
    /// [`export`](Self::export)): at most `keys_max` keys whose values
    /// take at most `bytes_max` bytes (elements × their size) together,
    /// but always the first key held, whatever the limits, so a walk over
    /// the range always advances. A learning server installs the chunks
    /// one by one; the next chunk starts after the last key of this one.
    ///
    /// ```
    /// # use pslite_core::*;
    /// # let push = |keys: &[u64], values: &[f32]| ServerRequest {
    /// #     id: ServerRequestId { from: NodeId::worker(Rank(0)), incarnation: Incarnation(0),
    /// #         customer: CustomerId::DEFAULT, ts: Timestamp(0), part: 0 },
    /// #     cmd: 0, op: KvOp::Push, keys: Keys::from_slice(keys), values: Values::from_slice(values), lens: None,
    /// # };
    /// let mut store = KvStore::<f32>::new();
    /// store.push(&push(&[1, 2, 3, 40], &[1.0, 2.0, 3.0, 4.0])).unwrap();
    /// let range = KeyRange::new(2, 39).unwrap();
    /// assert_eq!(store.export_range(range, 10, 1024).keys, Keys::from_slice(&[2, 3]));
    /// // Two f32s make 8 bytes: the second key would not fit in 7.
    /// assert_eq!(store.export_range(range, 10, 7).keys, Keys::from_slice(&[2]));
    /// // The first key comes even when it alone is over the limit.
    /// assert_eq!(store.export_range(range, 10, 0).keys, Keys::from_slice(&[2]));
    /// ```
    pub fn export_range(&self, range: KeyRange, keys_max: usize, bytes_max: usize) -> KvList {
        let keys = self.index.keys_in(range.start(), range.end_inclusive(), keys_max.max(1));
        let (mut held, mut runs) = (Vec::with_capacity(keys.len()), Vec::with_capacity(keys.len()));
        let mut bytes = 0usize;
        let mut cursor = Cursor::default();
        for key in keys {
            let run = self.index.find(&mut cursor, key).expect("keys_in lists keys the index holds");
            let run_bytes = run.len as usize * size_of::<T>();
            if !held.is_empty() && bytes.saturating_add(run_bytes) > bytes_max {
                break;
            }
            bytes += run_bytes;
            held.push(key);
            runs.push(run);
        }
        self.list_of(&held, &runs)
    }

    /// Drops the keys of `range`: afterwards [`get`](Self::get) finds none
    /// of them, pulls answer zeros, and a later push or install creates
    /// them anew, with any length.
    ///
    /// A server forgets a range to learn it again after a transfer was cut
    /// off, and learns it into new arena space; each cut-off would leave
    /// the range's old values behind for good. So once at most half of the
    /// arena is still held, the store moves what it holds into a new one:
    /// a copy of the held values, paid for by the forgotten ones since the
    /// last move.
    pub fn forget_range(&mut self, range: KeyRange) {
        self.index.remove_span(range.start(), range.end_inclusive());
        debug_assert!(self.index.keys_in(range.start(), range.end_inclusive(), 1).is_empty());
        if self.held_elements() * 2 <= self.arena.len() {
            self.compact();
        }
    }

    /// Elements the index still points to, counted a bounded number of
    /// keys at a time (a store may hold tens of millions).
    fn held_elements(&self) -> usize {
        const KEYS_PER_STEP: usize = 1 << 16;
        let (mut held, mut from) = (0usize, Some(0u64));
        while let Some(start) = from {
            let keys = self.index.keys_in(start, u64::MAX, KEYS_PER_STEP);
            let mut cursor = Cursor::default();
            held += keys
                .iter()
                .filter_map(|&key| self.index.find(&mut cursor, key))
                .map(|run| run.len as usize)
                .sum::<usize>();
            from = match keys.last() {
                Some(&last) if keys.len() == KEYS_PER_STEP => last.checked_add(1),
                _ => None,
            };
        }
        held
    }

    /// Rebuilds the store from what it holds, in key order and without the
    /// space of forgotten keys. Answers on the wire keep the memory they
    /// share.
    fn compact(&mut self) {
        let held = self.export_range(KeyRange::FULL, usize::MAX, usize::MAX);
        let mut fresh = Self::with_value_len_default(self.value_len_default);
        // Its own export, into an empty store of the same type: nothing to
        // refuse. Were it refused, the store stays as it was.
        if held.keys.is_empty() || fresh.install(&held).is_ok() {
            fresh.recycler = std::mem::take(&mut self.recycler);
            *self = fresh;
        } else {
            debug_assert!(false, "a store's export installs into an empty store");
        }
    }

    /// Elements the arena holds, forgotten ones included.
    #[cfg(test)]
    fn arena_len(&self) -> usize {
        self.arena.len()
    }
}

/// The least an install of one key must carry for the store to keep the
/// received values rather than copy them ([`KvStore::install`]): below it
/// the copy costs little, and the frame kept alive would be mostly other
/// bytes.
const ADOPT_BYTES_MIN: usize = 64 << 10;

/// Values per key of a list of `keys` and `values`: listed in `lens`, or
/// an equal share.
fn run_lens(keys: &Keys, values: &Values, lens: Option<&Lens>) -> Result<RunLens, StoreError> {
    let count = keys.len();
    match lens {
        Some(lens) if lens.len() == count && lens.total() == values.len() as u64 => Ok(RunLens::Listed(lens.clone())),
        Some(_) => Err(StoreError::LensMismatch),
        None if count == 0 => Ok(RunLens::Equal(0)),
        None if values.len() % count == 0 => Ok(RunLens::Equal((values.len() / count) as u32)),
        None => Err(StoreError::Uneven { values: values.len(), keys: count }),
    }
}

/// Why the default store refused a request.
///
/// ```
/// use pslite_core::{DType, Refusal, StoreError};
/// // A worker pushing f64s to a store of f32s: refused, and the worker's
/// // request fails with this text.
/// let error = StoreError::PushType { held: DType::F32, pushed: DType::F64 };
/// assert_eq!(Refusal::from(error).to_string(), "store holds F32, push has F64");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A push of another element type than the store holds.
    #[error("store holds {held:?}, push has {pushed:?}")]
    PushType {
        /// What the store holds.
        held: DType,
        /// What the push carries.
        pushed: DType,
    },
    /// A pull asking for another element type than the store holds.
    #[error("store holds {held:?}, pull asks for {asked:?}")]
    PullType {
        /// What the store holds.
        held: DType,
        /// What the pull asks for.
        asked: DType,
    },
    /// A key's value count differs from what it was first pushed with.
    #[error("key {key} holds {held} values, push has {pushed}")]
    LengthChanged {
        /// The key.
        key: u64,
        /// Values the store holds for it.
        held: u32,
        /// Values the push has for it.
        pushed: u32,
    },
    /// The store's value arena is at its limit.
    #[error("store full: {held} values held, the limit is {max}")]
    Full {
        /// Values held.
        held: usize,
        /// The limit.
        max: usize,
    },
    /// Per-key lengths that do not fit the keys and values.
    #[error("lens do not fit keys and values")]
    LensMismatch,
    /// A value count that is no multiple of the key count.
    #[error("{values} values do not divide among {keys} keys")]
    Uneven {
        /// Values given.
        values: usize,
        /// Keys given.
        keys: usize,
    },
    /// Keys that are not strictly ascending.
    #[error(transparent)]
    Keys(#[from] ApiMisuse),
}

impl<T: Element + Send> KvHandle for KvStore<T> {
    fn export(&self, keys: &Keys) -> Option<KvList> {
        Some(Self::export(self, keys))
    }

    fn install(&mut self, state: &KvList) -> Result<(), Refusal> {
        Self::install(self, state).map_err(Refusal::from)
    }

    fn export_range(&self, range: KeyRange, keys_max: usize, bytes_max: usize) -> Option<KvList> {
        Some(Self::export_range(self, range, keys_max, bytes_max))
    }

    fn forget_range(&mut self, range: KeyRange) -> Result<(), Refusal> {
        Self::forget_range(self, range);
        Ok(())
    }

    fn handle(&mut self, request: &ServerRequest) -> Response {
        if request.op.pushes() {
            if let Err(error) = self.push(request) {
                return Response::Refused(error.into());
            }
        }
        if request.op.pulls() {
            // Answers leave as views of the buffer they were written in;
            // once sent and dropped, the buffer serves a later answer.
            // Only a buffer of the exact size is never written past its
            // size, so only then is it kept.
            let Some(bytes) = self.answer_bytes(request) else {
                return self.pull(request).unwrap_or_else(|error| Response::Refused(error.into()));
            };
            // A push-and-pull's answer is copied: sharing it, the next
            // push-and-pull (training's usual step) would find it still on
            // the wire and copy the segment into fresh memory instead,
            // which measured slower than this copy into warm memory.
            let share = !request.op.pushes();
            let (mut out, size) = self.recycler.take(bytes);
            let response =
                self.pull_into(request, &mut out, share).unwrap_or_else(|error| Response::Refused(error.into()));
            self.recycler.keep(out, size);
            return response;
        }
        Response::ack()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{Incarnation, NodeId};
    use crate::kv::{CustomerId, Keys, Refusal, ServerRequestId, Timestamp};
    use crate::wire::KvOp;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn request(op: KvOp, keys: &[u64], values: &[f32], lens: Option<&[u32]>) -> ServerRequest {
        ServerRequest {
            id: ServerRequestId {
                from: NodeId::worker(crate::id::Rank(0)),
                incarnation: Incarnation(0),
                customer: CustomerId::DEFAULT,
                ts: Timestamp(0),
                part: 0,
            },
            cmd: 0,
            op,
            keys: Keys::from_slice(keys),
            values: Values::from_slice(values),
            lens: lens.map(Lens::from_slice),
        }
    }

    fn pulled(store: &mut KvStore, keys: &[u64]) -> Vec<f32> {
        match store.handle(&request(KvOp::Pull, keys, &[], None)) {
            Response::Ok { values, .. } => values.to_vec().unwrap(),
            Response::Refused(r) => panic!("pull refused: {r}"),
        }
    }

    #[test]
    fn never_pushed_keys_pull_as_zero() {
        let mut store = KvStore::<f32>::new();
        assert_eq!(pulled(&mut store, &[1, 2]), vec![0.0, 0.0]);
    }

    #[test]
    fn a_push_of_another_length_is_refused_and_changes_nothing() {
        let mut store = KvStore::<f32>::new();
        store.handle(&request(KvOp::Push, &[1, 2], &[1.0, 2.0], None));
        let refused = store.handle(&request(KvOp::Push, &[1, 2], &[1.0, 1.0, 1.0], Some(&[1, 2])));
        assert!(matches!(refused, Response::Refused(Refusal::Store(StoreError::LengthChanged { key: 2, .. }))));
        assert_eq!(pulled(&mut store, &[1, 2]), vec![1.0, 2.0]);
    }

    #[test]
    fn a_pull_answer_is_written_in_the_memory_of_an_earlier_one_once_dropped() {
        let mut store = KvStore::<f32>::new();
        let big = vec![1.5f32; 1 << 19]; // 2 MiB under one key
        store.handle(&request(KvOp::Push, &[9], &big, None));
        let values_of = |response: Response| match response {
            Response::Ok { values, .. } => values,
            Response::Refused(r) => panic!("{r}"),
        };
        // Key 10 was never pushed: its zeros make the answer a copy.
        let expected: Vec<f32> = big.iter().copied().chain([0.0]).collect();
        let first = values_of(store.handle(&request(KvOp::Pull, &[9, 10], &[], None)));
        let second = values_of(store.handle(&request(KvOp::Pull, &[9, 10], &[], None)));
        // Both alive: two buffers.
        assert_ne!(first.as_bytes().as_ptr(), second.as_bytes().as_ptr());
        let memory = first.as_bytes().as_ptr();
        assert_eq!(first.to_vec::<f32>().unwrap(), expected);
        drop(first);
        let third = values_of(store.handle(&request(KvOp::Pull, &[9, 10], &[], None)));
        assert_eq!(third.as_bytes().as_ptr(), memory);
        assert_eq!(third.to_vec::<f32>().unwrap(), expected);
        assert_eq!(second.to_vec::<f32>().unwrap(), expected, "an answer still held is never overwritten");
    }

    #[test]
    fn a_pull_of_what_was_pushed_together_shares_the_store_memory_and_keeps_its_values() {
        let mut store = KvStore::<f32>::new();
        let big = vec![1.5f32; 1 << 18];
        store.handle(&request(KvOp::Push, &[9], &big, None));
        let values_of = |response: Response| match response {
            Response::Ok { values, .. } => values,
            Response::Refused(r) => panic!("{r}"),
        };
        let first = values_of(store.handle(&request(KvOp::Pull, &[9], &[], None)));
        let second = values_of(store.handle(&request(KvOp::Pull, &[9], &[], None)));
        assert_eq!(first.as_bytes().as_ptr(), second.as_bytes().as_ptr(), "no copy: the store's own memory");
        assert_eq!(first.as_bytes().as_ptr(), store.get(9).unwrap().as_ptr().cast());
        // A push while the answers are held changes the store, not them.
        store.handle(&request(KvOp::Push, &[9], &vec![1.0f32; 1 << 18], None));
        assert_eq!(first.to_vec::<f32>().unwrap(), big);
        assert_eq!(store.get(9).unwrap()[0], 2.5);
        let third = values_of(store.handle(&request(KvOp::Pull, &[9], &[], None)));
        assert_eq!(third.to_vec::<f32>().unwrap(), vec![2.5f32; 1 << 18]);
        drop((first, second));
        // Nothing holds the old memory now: a push changes the values in place.
        let before = store.get(9).unwrap().as_ptr();
        drop(third);
        store.handle(&request(KvOp::Push, &[9], &vec![1.0f32; 1 << 18], None));
        assert_eq!(store.get(9).unwrap().as_ptr(), before);
        assert_eq!(store.get(9).unwrap()[0], 3.5);
    }

    #[test]
    fn an_export_of_a_large_key_shares_the_store_memory_and_keeps_its_values() {
        let mut store = KvStore::<f32>::new();
        let both = [vec![0.5f32; 4], vec![1.5f32; 1 << 18]].concat();
        store.handle(&request(KvOp::Push, &[3, 9], &both, Some(&[4, 1 << 18])));
        store.handle(&request(KvOp::Push, &[9], &vec![1.0f32; 1 << 18], None));
        // The large key alone: what a head sends down the chain is the
        // store's memory, not a copy.
        let sent = store.export(&Keys::from_slice(&[9]));
        assert_eq!(sent.values.as_bytes().as_ptr(), store.get(9).unwrap().as_ptr().cast());
        // The next push leaves what was sent as it was.
        store.handle(&request(KvOp::Push, &[9], &vec![1.0f32; 1 << 18], None));
        assert!(sent.values.to_vec::<f32>().unwrap() == vec![2.5f32; 1 << 18], "what was sent changed");
        assert_eq!(store.get(9).unwrap()[0], 3.5);
        let mut copy = KvStore::<f32>::new();
        copy.install(&sent).unwrap();
        assert_eq!(copy.get(9).unwrap()[0], 2.5);
        // A small key beside it is copied, and keys not held are left out.
        let small = store.export(&Keys::from_slice(&[3, 4]));
        assert_eq!((small.keys.to_vec(), small.values.to_vec::<f32>().unwrap()), (vec![3], vec![0.5f32; 4]));
    }

    #[test]
    fn an_install_of_one_large_key_keeps_the_received_values_where_they_are() {
        let mut store = KvStore::<f32>::new();
        let big = 1 << 16;
        store.handle(&request(KvOp::Push, &[9], &vec![1.0f32; big], None));
        let state = |value: f32| KvList {
            keys: Keys::from_slice(&[9]),
            values: Values::from_slice(&vec![value; big]),
            lens: Some(Lens::from_slice(&[big as u32])),
        };
        let received = state(2.5);
        store.install(&received).unwrap();
        assert_eq!(store.get(9).unwrap().as_ptr().cast(), received.values.as_bytes().as_ptr(), "not copied");
        // A pull answers with it; a push writes elsewhere.
        let pulled = store.pull(&request(KvOp::Pull, &[9], &[], None)).unwrap();
        store.handle(&request(KvOp::Push, &[9], &vec![1.0f32; big], None));
        assert_eq!(store.get(9).unwrap()[0], 3.5);
        assert!(received.values.to_vec::<f32>().unwrap() == vec![2.5f32; big], "what arrived is unchanged");
        assert!(matches!(pulled, Response::Ok { values, .. } if values.to_vec::<f32>().unwrap() == vec![2.5f32; big]));
        // A small key, or several keys, are copied.
        store.handle(&request(KvOp::Push, &[1], &[1.0], None));
        let small = KvList { keys: Keys::from_slice(&[1]), values: Values::from_slice(&[3.0f32]), lens: None };
        store.install(&small).unwrap();
        assert_ne!(store.get(1).unwrap().as_ptr().cast(), small.values.as_bytes().as_ptr());
        assert_eq!(store.get(1), Some(&[3.0f32][..]));
        let both = KvList {
            keys: Keys::from_slice(&[1, 9]),
            values: Values::from_slice(&[vec![2.0f32], vec![4.0f32; big]].concat()),
            lens: Some(Lens::from_slice(&[1, big as u32])),
        };
        store.install(&both).unwrap();
        assert_ne!(store.get(9).unwrap().as_ptr().cast(), both.values.as_bytes()[4..].as_ptr());
        assert_eq!((store.get(1), store.get(9).unwrap()[0]), (Some(&[2.0f32][..]), 4.0));
    }

    #[test]
    fn variable_lengths_round_trip() {
        let mut store = KvStore::<f32>::new();
        store.handle(&request(KvOp::Push, &[3, 9], &[1.0, 2.0, 3.0], Some(&[2, 1])));
        match store.handle(&request(KvOp::PushPull, &[3, 9], &[1.0, 1.0, 1.0], Some(&[2, 1]))) {
            Response::Ok { values, lens } => {
                assert_eq!(values.to_vec::<f32>().unwrap(), vec![2.0, 3.0, 4.0]);
                assert_eq!(lens.unwrap().to_vec(), vec![2, 1]);
            }
            Response::Refused(r) => panic!("{r}"),
        }
    }

    #[test]
    fn an_install_that_does_not_fit_is_refused_and_changes_nothing() {
        let mut store = KvStore::<f32>::new();
        store.handle(&request(KvOp::Push, &[1, 2], &[1.0, 2.0], None));
        let state = |keys: &[u64], values: &[f32], lens: &[u32]| KvList {
            keys: Keys::from_slice(keys),
            values: Values::from_slice(values),
            lens: Some(Lens::from_slice(lens)),
        };
        let longer = state(&[2, 3], &[5.0, 6.0, 7.0, 8.0], &[1, 3]);
        assert!(store.install(&longer).is_ok(), "a key of its held length and a new one");
        let changed = state(&[1, 4], &[9.0, 9.0, 9.0], &[2, 1]);
        assert_eq!(store.install(&changed), Err(StoreError::LengthChanged { key: 1, held: 1, pushed: 2 }));
        assert_eq!(store.get(4), None, "checked before anything changed");
        let f64s = KvList { keys: Keys::from_slice(&[1]), values: Values::from_slice(&[1.0f64]), lens: None };
        assert!(matches!(store.install(&f64s), Err(StoreError::PushType { .. })));
        assert_eq!(pulled(&mut store, &[1, 2, 3]), [1.0, 5.0, 6.0, 7.0, 8.0]);
    }

    /// Keys near both ends of the key space, so ranges reach `0` and `u64::MAX`.
    fn edge_key() -> impl Strategy<Value = u64> {
        prop_oneof![0u64..40, (u64::MAX - 40)..=u64::MAX]
    }

    /// A store of the pushes (`key -> (length, value)`, a key keeping the
    /// length of its first push), with non-integer values whose sums depend
    /// on the order of additions; and the keys it holds.
    fn store_of(pushes: &[BTreeMap<u64, (u32, f32)>]) -> (KvStore, BTreeMap<u64, u32>) {
        let mut store = KvStore::<f32>::new();
        let mut lens_of: BTreeMap<u64, u32> = BTreeMap::new();
        for push in pushes {
            let keys: Vec<u64> = push.keys().copied().collect();
            let lens: Vec<u32> = push.iter().map(|(k, &(l, _))| *lens_of.entry(*k).or_insert(l)).collect();
            let values: Vec<f32> =
                push.values().zip(&lens).flat_map(|(&(_, v), &l)| (0..l).map(move |j| v / (j + 3) as f32)).collect();
            let answer = store.handle(&request(KvOp::Push, &keys, &values, Some(&lens)));
            assert_eq!(answer, Response::ack());
        }
        (store, lens_of)
    }

    /// The chunks of a walk over `range` as a learning server reads it:
    /// each chunk starts after the last key of the one before, and the walk
    /// ends after the range's last key or at an empty chunk.
    fn walk(store: &KvStore, range: KeyRange, keys_max: usize, bytes_max: usize) -> Vec<KvList> {
        let mut chunks: Vec<KvList> = Vec::new();
        let mut rest = Some(range);
        while let Some(left) = rest {
            // Every chunk but the last holds a key the others do not.
            assert!(chunks.len() <= store.len(), "the walk does not end");
            let chunk = store.export_range(left, keys_max, bytes_max);
            if chunk.keys.is_empty() {
                break;
            }
            let last = chunk.keys.get(chunk.keys.len() - 1);
            rest = last.checked_add(1).and_then(|next| KeyRange::new(next, left.end_inclusive()));
            chunks.push(chunk);
        }
        chunks
    }

    #[test]
    fn a_forgotten_key_is_pushed_anew_with_another_length() {
        let mut store = KvStore::<f32>::new();
        store.handle(&request(KvOp::Push, &[1, 2, u64::MAX], &[1.0, 2.0, 3.0], None));
        store.forget_range(KeyRange::new(2, u64::MAX).unwrap());
        assert_eq!((store.get(2), store.get(u64::MAX), store.len()), (None, None, 1));
        assert_eq!(pulled(&mut store, &[1, 2, u64::MAX]), [1.0, 0.0, 0.0]);
        let longer = store.handle(&request(KvOp::Push, &[2, u64::MAX], &[4.0, 5.0, 6.0, 7.0], None));
        assert_eq!(longer, Response::ack(), "no length held any more");
        assert_eq!(pulled(&mut store, &[1, 2, u64::MAX]), [1.0, 4.0, 5.0, 6.0, 7.0]);
        // Installs too: the key's old length does not stand in the way.
        store.forget_range(KeyRange::new(2, 2).unwrap());
        let state = KvList { keys: Keys::from_slice(&[2]), values: Values::from_slice(&[8.0f32; 3]), lens: None };
        assert_eq!(store.install(&state), Ok(()));
        assert_eq!(store.get(2), Some(&[8.0f32; 3][..]));
        assert!(KvHandle::forget_range(&mut store, KeyRange::FULL).is_ok());
        assert!(store.is_empty());
        assert_eq!(store.export_range(KeyRange::FULL, 10, 100).keys, Keys::from_slice(&[]));
    }

    #[test]
    fn forgetting_most_of_the_store_gives_its_space_back_and_keeps_the_rest() {
        let mut store = KvStore::<f32>::new();
        let keys: Vec<u64> = (0..100).map(|k| k * 10).collect();
        let values: Vec<f32> = (0..200).map(|v| v as f32).collect();
        assert_eq!(store.handle(&request(KvOp::Push, &keys, &values, Some(&[2; 100]))), Response::ack());
        // A learner cut off three times: each time it forgets the range and
        // installs it again in new space.
        let range = KeyRange::new(0, 499).unwrap();
        for round in 0..3 {
            store.forget_range(range);
            let state = KvList {
                keys: Keys::from_slice(&keys[..50]),
                values: Values::from_slice(&vec![round as f32; 150]),
                lens: Some(Lens::from_slice(&[3; 50])),
            };
            assert_eq!(store.install(&state), Ok(()));
            assert!(store.arena_len() <= 2 * (150 + 100), "round {round}: {} elements", store.arena_len());
            assert_eq!(store.get(0), Some(&[round as f32; 3][..]));
            assert_eq!(store.get(490), Some(&[round as f32; 3][..]));
        }
        // The keys outside the range kept their values through every move.
        for (i, &key) in keys.iter().enumerate().skip(50) {
            assert_eq!(store.get(key), Some(&values[2 * i..2 * i + 2]), "key {key}");
        }
        assert_eq!(store.len(), 100);
        store.forget_range(KeyRange::FULL);
        assert_eq!((store.len(), store.arena_len()), (0, 0));
    }

    proptest! {
        /// Walking a range chunk by chunk and installing every chunk into
        /// a fresh store copies the range bit for bit and nothing outside
        /// it; every chunk keeps to its limits and is cut only by them.
        #[test]
        fn a_range_walked_in_chunks_installs_as_the_range_is(
            pushes in proptest::collection::vec(
                proptest::collection::btree_map(edge_key(), (1u32..4, -1.0e3f32..1.0e3), 1..12), 1..8),
            ends in (edge_key(), edge_key()),
            keys_max in 0usize..6,
            bytes_max in 0usize..40,
        ) {
            let (head, lens_of) = store_of(&pushes);
            let range = KeyRange::new(ends.0.min(ends.1), ends.0.max(ends.1)).unwrap();
            let inside: Vec<u64> = lens_of.range(range.start()..=range.end_inclusive()).map(|(&k, _)| k).collect();
            let chunks = walk(&head, range, keys_max, bytes_max);
            let mut learner = KvStore::<f32>::new();
            let mut walked = Vec::new();
            for chunk in &chunks {
                let keys = chunk.keys.to_vec();
                let bytes = chunk.values.len() * size_of::<f32>();
                prop_assert!(!keys.is_empty() && keys.len() <= keys_max.max(1));
                prop_assert!(bytes <= bytes_max || keys.len() == 1, "{} bytes in {} keys", bytes, keys.len());
                // Cut only by a limit: the next key held would break one.
                if let Some(&next) = inside.get(walked.len() + keys.len()) {
                    let next_bytes = lens_of[&next] as usize * size_of::<f32>();
                    prop_assert!(keys.len() >= keys_max || bytes + next_bytes > bytes_max, "chunk cut short before {}", next);
                }
                prop_assert_eq!(chunk.lens.as_ref().map(Lens::to_vec), Some(keys.iter().map(|k| lens_of[k]).collect::<Vec<_>>()));
                prop_assert!(learner.install(chunk).is_ok());
                walked.extend(keys);
            }
            prop_assert_eq!(&walked, &inside);
            prop_assert_eq!(learner.len(), inside.len(), "nothing outside the range");
            let all: Vec<u64> = lens_of.keys().copied().collect();
            // Lists compare bytes, so the values are equal bit for bit.
            prop_assert_eq!(learner.export(&Keys::from_slice(&all)), head.export(&Keys::from_slice(&inside)));
            prop_assert_eq!(learner.export_range(KeyRange::FULL, usize::MAX, usize::MAX), head.export_range(range, usize::MAX, usize::MAX));
        }

        /// Forgetting a range drops its keys and nothing else: they pull as
        /// zeros and `get` finds none; the other keys keep their values.
        #[test]
        fn a_forgotten_range_pulls_as_never_pushed_and_the_rest_stays(
            pushes in proptest::collection::vec(
                proptest::collection::btree_map(edge_key(), (1u32..4, -1.0e3f32..1.0e3), 1..12), 1..8),
            ends in (edge_key(), edge_key()),
        ) {
            let (mut store, lens_of) = store_of(&pushes);
            let range = KeyRange::new(ends.0.min(ends.1), ends.0.max(ends.1)).unwrap();
            let all: Vec<u64> = lens_of.keys().copied().collect();
            let before: BTreeMap<u64, Vec<f32>> = all.iter().map(|&k| (k, store.get(k).unwrap().to_vec())).collect();
            store.forget_range(range);
            let mut expected = Vec::new();
            for (&key, values) in &before {
                if range.contains(key) {
                    prop_assert_eq!(store.get(key), None);
                    expected.push(0.0);
                } else {
                    prop_assert_eq!(store.get(key).map(<[f32]>::to_vec), Some(values.clone()));
                    expected.extend(values);
                }
            }
            let bits = |values: &[f32]| values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&pulled(&mut store, &all)), bits(&expected));
            prop_assert_eq!(store.len(), before.keys().filter(|&&k| !range.contains(k)).count());
            prop_assert!(store.export_range(range, usize::MAX, usize::MAX).keys.is_empty());
        }

        /// A copy that installs the head's export of each push's keys
        /// after the push, and a fresh store that installs one export of
        /// everything at the end (a state transfer), hold the head's bits:
        /// every pull answers alike, byte for byte, with non-integer
        /// values whose sums depend on the order of additions.
        #[test]
        fn copies_that_install_exports_answer_as_the_head_does(
            pushes in proptest::collection::vec(
                proptest::collection::btree_map(0u64..40, (1u32..4, -1.0e3f32..1.0e3), 1..10), 1..12),
        ) {
            let mut head = KvStore::<f32>::new();
            let mut copy = KvStore::<f32>::new();
            let mut lens_of: BTreeMap<u64, u32> = BTreeMap::new();
            for push in &pushes {
                let keys: Vec<u64> = push.keys().copied().collect();
                let lens: Vec<u32> = push.iter().map(|(k, &(l, _))| *lens_of.entry(*k).or_insert(l)).collect();
                let values: Vec<f32> = push.values().zip(&lens).flat_map(|(&(_, v), &l)| (0..l).map(move |j| v / (j + 3) as f32)).collect();
                let applied = matches!(head.handle(&request(KvOp::Push, &keys, &values, Some(&lens))), Response::Ok { .. });
                prop_assert!(applied);
                let state = KvHandle::export(&head, &Keys::from_slice(&keys)).expect("the store replicates");
                prop_assert_eq!(state.keys.len(), keys.len());
                prop_assert!(KvHandle::install(&mut copy, &state).is_ok());
            }
            let everything: Vec<u64> = (0..44).collect();
            let mut transferred = KvStore::<f32>::new();
            transferred.install(&head.export(&Keys::from_slice(&everything))).unwrap();
            let pull = request(KvOp::Pull, &everything, &[], Some(&[]));
            let answer = |store: &mut KvStore| store.handle(&pull);
            let expected = answer(&mut head);
            prop_assert_eq!(&answer(&mut copy), &expected);
            prop_assert_eq!(&answer(&mut transferred), &expected);
            prop_assert_eq!(copy.len(), head.len());
            prop_assert_eq!(transferred.export(&Keys::from_slice(&everything)), head.export(&Keys::from_slice(&everything)));
        }

        #[test]
        fn pulls_match_a_model_of_variable_lengths(
            pushes in proptest::collection::vec(proptest::collection::btree_map(0u64..40, 1u32..4, 1..10), 1..8),
            probe in proptest::collection::btree_set(0u64..44, 0..44),
            ask_lens in any::<bool>(),
        ) {
            let mut store = KvStore::<f32>::new();
            let mut model: BTreeMap<u64, Vec<f32>> = BTreeMap::new();
            for (n, push) in pushes.iter().enumerate() {
                // A key's length is fixed by its first push: keep it.
                let lens: Vec<u32> = push.iter().map(|(k, &l)| model.get(k).map_or(l, |v| v.len() as u32)).collect();
                let keys: Vec<u64> = push.keys().copied().collect();
                let values: Vec<f32> = lens.iter().flat_map(|&l| (0..l).map(move |j| (n as u32 * 10 + j) as f32)).collect();
                let applied = matches!(store.handle(&request(KvOp::Push, &keys, &values, Some(&lens))), Response::Ok { .. });
                prop_assert!(applied);
                let mut at = 0;
                for (key, &len) in keys.iter().zip(&lens) {
                    let entry = model.entry(*key).or_insert_with(|| vec![0.0; len as usize]);
                    for slot in entry.iter_mut() {
                        *slot += values[at];
                        at += 1;
                    }
                }
            }
            let keys: Vec<u64> = probe.iter().copied().collect();
            let asked: Vec<u32> = vec![0; keys.len()];
            let pull = request(KvOp::Pull, &keys, &[], ask_lens.then_some(&asked[..]));
            let Response::Ok { values, lens } = store.handle(&pull) else { panic!("pull refused") };
            let expected: Vec<Vec<f32>> = keys.iter().map(|k| model.get(k).cloned().unwrap_or(vec![0.0])).collect();
            prop_assert_eq!(values.to_vec::<f32>().unwrap(), expected.concat());
            let expected_lens: Vec<u32> = expected.iter().map(|v| v.len() as u32).collect();
            let uniform = expected_lens.windows(2).all(|w| w[0] == w[1]);
            match lens {
                Some(lens) => {
                    prop_assert!(ask_lens || !uniform, "lens sent for a uniform pull nobody asked lens of");
                    prop_assert_eq!(lens.to_vec(), expected_lens);
                }
                None => prop_assert!(!ask_lens && uniform, "lens missing"),
            }
        }

        #[test]
        fn a_push_and_pull_answers_what_a_push_then_a_pull_would(
            steps in proptest::collection::vec(
                (proptest::collection::btree_map(0u64..40, 1u32..4, 1..10), any::<bool>(), any::<bool>()),
                1..10,
            ),
            long in 0usize..3,
        ) {
            // Two stores: one takes push-and-pulls, the other a push and
            // then a pull of the same keys. Push-and-pull answers are built
            // apart from pull answers (copied, never shared): they must
            // not differ.
            let (mut together, mut apart) = (KvStore::<f32>::new(), KvStore::<f32>::new());
            let mut held: BTreeMap<u64, u32> = BTreeMap::new();
            for (n, (push, listed, wrong_len)) in steps.iter().enumerate() {
                // A key's length is fixed by its first push; some pushes
                // get one wrong, and both stores must refuse them alike.
                let lens: Vec<u32> = push.iter().map(|(k, &l)| held.get(k).map_or(l, |&h| h + u32::from(*wrong_len))).collect();
                let keys: Vec<u64> = push.keys().copied().collect();
                // Some keys long: answers of a page or more.
                let lens: Vec<u32> = lens.iter().map(|&l| if l == 3 && long > 0 { 3 + (4096 * long) as u32 } else { l }).collect();
                let values: Vec<f32> = lens.iter().flat_map(|&l| (0..l).map(move |j| (n as u32 * 7 + j % 5) as f32)).collect();
                let lens_sent = listed.then_some(&lens[..]);
                let answer = together.handle(&request(KvOp::PushPull, &keys, &values, lens_sent));
                let pushed = apart.handle(&request(KvOp::Push, &keys, &values, lens_sent));
                match (&answer, &pushed) {
                    (Response::Refused(a), Response::Refused(b)) => prop_assert_eq!(a, b),
                    (Response::Ok { .. }, Response::Ok { .. }) => {
                        for (key, len) in keys.iter().zip(&lens) {
                            held.insert(*key, *len);
                        }
                        let asked: Vec<u32> = vec![0; keys.len()];
                        let pulled = apart.handle(&request(KvOp::Pull, &keys, &[], listed.then_some(&asked[..])));
                        prop_assert_eq!(&answer, &pulled);
                    }
                    _ => prop_assert!(false, "push-and-pull {answer:?}, push {pushed:?}"),
                }
            }
        }

        #[test]
        fn answers_held_across_later_pushes_keep_the_values_they_were_made_with(
            pushes in proptest::collection::vec(proptest::collection::btree_set(0u64..24, 1..8), 1..12),
        ) {
            let mut store = KvStore::<f32>::new();
            let mut model: BTreeMap<u64, f32> = BTreeMap::new();
            let mut held = Vec::new();
            for (n, push) in pushes.iter().enumerate() {
                let keys: Vec<u64> = push.iter().copied().collect();
                let values: Vec<f32> = keys.iter().map(|&k| (n * 100) as f32 + k as f32).collect();
                let applied = matches!(store.handle(&request(KvOp::Push, &keys, &values, None)), Response::Ok { .. });
                prop_assert!(applied);
                for (key, value) in keys.iter().zip(&values) {
                    *model.entry(*key).or_default() += value;
                }
                // Pull what was just pushed (often one stretch of the
                // arena, answered with the store's memory) and keep it.
                let Response::Ok { values, .. } = store.handle(&request(KvOp::Pull, &keys, &[], None)) else {
                    panic!("pull refused")
                };
                let expected: Vec<f32> = keys.iter().map(|k| model[k]).collect();
                held.push((values, expected));
            }
            for (values, expected) in &held {
                prop_assert_eq!(&values.to_vec::<f32>().unwrap(), expected);
            }
            let keys: Vec<u64> = model.keys().copied().collect();
            let Response::Ok { values, .. } = store.handle(&request(KvOp::Pull, &keys, &[], None)) else {
                panic!("pull refused")
            };
            prop_assert_eq!(values.to_vec::<f32>().unwrap(), model.values().copied().collect::<Vec<_>>());
        }

        #[test]
        fn sums_do_not_depend_on_arrival_order(
            pushes in proptest::collection::vec(
                proptest::collection::btree_map(0u64..32, -100i32..100, 1..8), 1..12),
            seed in any::<u64>())
        {
            let reqs: Vec<ServerRequest> = pushes.iter().map(|p| {
                let keys: Vec<u64> = p.keys().copied().collect();
                let vals: Vec<f32> = p.values().map(|&v| v as f32).collect();
                request(KvOp::Push, &keys, &vals, None)
            }).collect();
            let mut forward = KvStore::<f32>::new();
            for r in &reqs { forward.handle(r); }
            let mut shuffled = reqs.clone();
            let mut rng = crate::rng::Rng::new(seed);
            for i in (1..shuffled.len()).rev() {
                shuffled.swap(i, rng.below(i as u64 + 1) as usize);
            }
            let mut backward = KvStore::<f32>::new();
            for r in &shuffled { backward.handle(r); }
            let all: Vec<u64> = (0..32).collect();
            prop_assert_eq!(pulled(&mut forward, &all), pulled(&mut backward, &all));
        }
    }
}
