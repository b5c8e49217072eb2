//! The default store's values: one growing list of elements, kept in a
//! few shared segments so a pull can answer with the store's own memory.
//!
//! A large pull answered from a copy costs a memcpy of the whole answer on
//! the server's one task, which also writes the socket: measured, that copy
//! was most of what a 4 MiB pull lost to raw TCP. So a pull of one stretch
//! that makes up much of its segment is answered with a reference to the
//! segment instead ([`Arena::share`]), and a push that finds its segment
//! still referenced by an answer on the wire copies the segment first
//! (copy-on-write, [`Arc::make_mut`]), which leaves the answer as it was
//! when it was made. New elements go into the last segment while nothing
//! else holds it and it stays small ([`SEGMENT_APPEND_BYTES`]), so a large
//! push of new keys starts a segment of its own.

use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::values::{add_all, put_all, read_all, replace_all, sum_all, Element};

/// A segment takes appends while it holds at most this much with them; a
/// larger push of new keys gets a segment of its own. Were they appended
/// to a segment holding other keys, a pull of just those keys would be
/// less than half of it and be copied: measured, a benchmark whose push
/// rows filled the store first pulled 4 MiB at 0.61-0.69x raw TCP, against
/// about 1x with a store holding that key alone. Small keys still share
/// segments, so a store holds about one per MiB of small keys.
pub(crate) const SEGMENT_APPEND_BYTES: usize = 1 << 20;

/// What [`Arena::rewrite`] does to each element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Write {
    /// Adds the new value (a push).
    Add,
    /// Takes the new value (an install of another copy's state).
    Replace,
}

/// A run of elements starting at `base` in the arena's numbering.
#[derive(Debug, Clone)]
struct Segment<T> {
    base: usize,
    data: Backing<T>,
}

/// Where a segment's elements lie.
#[derive(Debug, Clone)]
enum Backing<T> {
    /// Memory of the store's own, shared with answers on the wire.
    Owned(Arc<Vec<T>>),
    /// A received frame's values, taken as they arrived by an install
    /// ([`Arena::adopt`]): aligned, little-endian, never written to. A
    /// write goes to memory of the store's own.
    Received(Bytes),
}

impl<T: Element> Backing<T> {
    fn as_slice(&self) -> &[T] {
        match self {
            Self::Owned(data) => data,
            Self::Received(bytes) => bytemuck::cast_slice(bytes),
        }
    }

    fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// The elements to change in place, when nothing else holds them.
    fn unique(&mut self) -> Option<&mut Vec<T>> {
        match self {
            Self::Owned(data) => Arc::get_mut(data),
            Self::Received(_) => None,
        }
    }

    /// The elements to change, copied first if anything else holds them.
    fn make_mut(&mut self) -> &mut Vec<T> {
        if let Self::Received(bytes) = self {
            *self = Self::Owned(Arc::new(bytemuck::cast_slice(bytes).to_vec()));
        }
        match self {
            Self::Owned(data) => Arc::make_mut(data),
            Self::Received(_) => unreachable!("made owned above"),
        }
    }
}

/// Elements numbered `0..len`, in segments.
#[derive(Debug, Clone)]
pub(crate) struct Arena<T> {
    segments: Vec<Segment<T>>,
    len: usize,
}

impl<T> Default for Arena<T> {
    fn default() -> Self {
        Self { segments: Vec::new(), len: 0 }
    }
}

/// An answer's bytes: a stretch of a segment, which it keeps alive.
struct Shared<T> {
    data: Arc<Vec<T>>,
    range: Range<usize>,
}

impl<T: Element> AsRef<[u8]> for Shared<T> {
    fn as_ref(&self) -> &[u8] {
        bytemuck::cast_slice(&self.data[self.range.clone()])
    }
}

impl<T: Element> Arena<T> {
    /// Elements held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Makes room for `additional` more elements in the segment they will
    /// go to: the last one if it may grow by that much, else a new one.
    pub(crate) fn reserve(&mut self, additional: usize) {
        // Nothing to add: no reason to start a segment.
        if additional == 0 {
            return;
        }
        let size = size_of::<T>();
        let appendable = self.segments.last_mut().is_some_and(|last| {
            let held = last.data.len();
            (held == 0 || (held + additional) * size <= SEGMENT_APPEND_BYTES) && last.data.unique().is_some()
        });
        if !appendable {
            self.segments.push(Segment { base: self.len, data: Backing::Owned(Arc::new(Vec::new())) });
        }
        // Amortised growth: a segment filled by many small pushes is not
        // copied at each one. An empty segment gets exactly what it needs.
        self.writable_tail().reserve(additional);
    }

    /// Appends `items` to the segment [`reserve`](Self::reserve) chose;
    /// returns where the first one went.
    pub(crate) fn extend(&mut self, items: impl Iterator<Item = T>) -> usize {
        let start = self.len;
        let tail = self.writable_tail();
        let before = tail.len();
        tail.extend(items);
        let added = tail.len() - before;
        self.len += added;
        start
    }

    /// The elements in `range`, which lies within one segment (a key's run
    /// always does: its values are appended in one go).
    pub(crate) fn slice(&self, range: Range<usize>) -> &[T] {
        let segment = &self.segments[self.find(range.start)];
        &segment.data.as_slice()[range.start - segment.base..range.end - segment.base]
    }

    /// [`slice`](Self::slice) to change, copying the segment first if an
    /// answer on the wire still holds it.
    #[cfg(test)]
    pub(crate) fn slice_mut(&mut self, range: Range<usize>) -> &mut [T] {
        let at = self.find(range.start);
        let segment = &mut self.segments[at];
        let base = segment.base;
        &mut segment.data.make_mut()[range.start - base..range.end - base]
    }

    /// Writes the little-endian elements of `bytes` onto the elements in
    /// `range` (within one segment), as `write` says.
    ///
    /// A segment an answer still holds is not changed under it. When
    /// `range` is the whole segment (a large key alone in its own), the
    /// result goes to fresh memory without first copying what `write`
    /// replaces: a replicated head shares each large key's segment with
    /// the batch it sends down the chain, which its next push to that key
    /// finds still held.
    pub(crate) fn rewrite(&mut self, range: Range<usize>, bytes: &[u8], write: Write) {
        debug_assert_eq!(range.len() * size_of::<T>(), bytes.len());
        let at = self.find(range.start);
        let segment = &mut self.segments[at];
        let inner = range.start - segment.base..range.end - segment.base;
        if inner.len() == segment.data.len() && segment.data.unique().is_none() {
            let fresh = match write {
                Write::Replace => read_all(bytes),
                // Summed straight into spare capacity: zero-filling the
                // fresh memory first would cost one more pass over it.
                Write::Add => sum_all(segment.data.as_slice(), bytes),
            };
            segment.data = Backing::Owned(Arc::new(fresh));
            return;
        }
        let slots = &mut segment.data.make_mut()[inner];
        match write {
            Write::Add => add_all(slots, bytes),
            Write::Replace => replace_all(slots, bytes),
        }
    }

    /// Makes `values` (little-endian elements, as received) the elements
    /// of `range` without copying them, when `range` is a whole segment
    /// and `values` lies aligned for `T`; returns whether it did. The
    /// segment's former memory is let go (or left to the answers holding
    /// it). A large key installed down a chain this way costs its tail no
    /// copy, the one a plain TCP relay does not make either.
    pub(crate) fn adopt(&mut self, range: Range<usize>, values: &Bytes) -> bool {
        let at = self.find(range.start);
        let segment = &mut self.segments[at];
        let whole = range.start == segment.base && range.len() == segment.data.len();
        let fits = values.len() == range.len() * size_of::<T>() && bytemuck::try_cast_slice::<u8, T>(values).is_ok();
        if !(whole && fits) || cfg!(target_endian = "big") {
            return false;
        }
        segment.data = Backing::Received(values.clone());
        true
    }

    /// Appends the elements in `range` (which may span segments) to `out`.
    pub(crate) fn copy_into(&self, mut range: Range<usize>, out: &mut BytesMut) {
        while !range.is_empty() {
            let segment = &self.segments[self.find(range.start)];
            let end = range.end.min(segment.base + segment.data.len());
            put_all(&segment.data.as_slice()[range.start - segment.base..end - segment.base], out);
            range.start = end;
        }
    }

    /// The elements in `range` as bytes that share the segment's memory,
    /// when `range` lies in one segment and makes up at least half of it:
    /// a later push to the segment while the answer is on the wire copies
    /// the segment, which then costs at most twice the copy saved here.
    pub(crate) fn share(&self, range: Range<usize>) -> Option<Bytes> {
        if cfg!(target_endian = "big") || range.is_empty() {
            return None;
        }
        let segment = &self.segments[self.find(range.start)];
        let held = segment.data.len();
        let inner = range.start - segment.base..range.end - segment.base;
        if inner.end > held || inner.len() * 2 < held {
            return None;
        }
        Some(match &segment.data {
            Backing::Owned(data) => Bytes::from_owner(Shared { data: Arc::clone(data), range: inner }),
            Backing::Received(bytes) => bytes.slice(inner.start * size_of::<T>()..inner.end * size_of::<T>()),
        })
    }

    /// The index of the segment holding element `at`.
    fn find(&self, at: usize) -> usize {
        debug_assert!(at < self.len);
        self.segments.partition_point(|segment| segment.base <= at) - 1
    }

    /// The last segment, to append to: a new one when an answer holds the
    /// last (appending could move its memory under the answer's feet).
    fn writable_tail(&mut self) -> &mut Vec<T> {
        let appendable = self.segments.last_mut().is_some_and(|last| last.data.unique().is_some());
        if !appendable {
            self.segments.push(Segment { base: self.len, data: Backing::Owned(Arc::new(Vec::new())) });
        }
        let last = self.segments.last_mut().expect("one at least");
        last.data.unique().expect("nothing else holds it")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_answer_keeps_its_values_while_pushes_change_the_store() {
        let mut arena = Arena::<f32>::default();
        assert_eq!(arena.extend([1.0, 2.0, 3.0, 4.0].into_iter()), 0);
        let answer = arena.share(1..4).expect("three of four elements of one segment");
        // The push copies the segment the answer holds; the answer keeps
        // the values it was made with.
        arena.slice_mut(1..2)[0] += 10.0;
        assert_eq!(answer, Bytes::from(bytemuck::cast_slice::<f32, u8>(&[2.0, 3.0, 4.0]).to_vec()));
        assert_eq!(arena.slice(0..4), [1.0, 12.0, 3.0, 4.0]);
        // The push left the first segment to the answer and took a copy of
        // its own, which nothing holds: it grows in place. Held, it does
        // not, and a second segment starts.
        assert_eq!(arena.extend([5.0].into_iter()), 4);
        let old = arena.share(0..4).expect("four of five elements");
        assert_eq!(arena.extend([6.0].into_iter()), 5);
        assert_eq!((arena.slice(4..5), arena.slice(5..6)), (&[5.0][..], &[6.0][..]));
        let mut out = BytesMut::new();
        arena.copy_into(2..6, &mut out);
        assert_eq!(&out[..], bytemuck::cast_slice::<f32, u8>(&[3.0, 4.0, 5.0, 6.0]));
        drop((answer, old));
        // A small part of a big segment is copied rather than shared.
        assert!(arena.share(0..1).is_none());
        assert_eq!(arena.len(), 6);
    }

    #[test]
    fn a_rewrite_leaves_held_memory_as_it_was() {
        let raw = |values: &[f32]| bytemuck::cast_slice::<f32, u8>(values).to_vec();
        let mut arena = Arena::<f32>::default();
        arena.reserve(3);
        arena.extend([1.0, 2.0, 3.0].into_iter());
        // Nothing holds it: changed where it lies.
        let home = arena.slice(0..3).as_ptr();
        arena.rewrite(0..3, &raw(&[1.0, 1.0, 1.0]), Write::Add);
        assert_eq!((arena.slice(0..3), arena.slice(0..3).as_ptr()), (&[2.0, 3.0, 4.0][..], home));
        // Held whole: the new values go to fresh memory in one pass.
        let held = arena.share(0..3).expect("the whole segment");
        arena.rewrite(0..3, &raw(&[1.0, 1.0, 1.0]), Write::Add);
        assert_eq!(arena.slice(0..3), [3.0, 4.0, 5.0]);
        assert_eq!(&held[..], &raw(&[2.0, 3.0, 4.0])[..]);
        assert_ne!(arena.slice(0..3).as_ptr().cast(), held.as_ptr());
        // Held, and changed in part: copied first, the rest kept.
        let held = arena.share(0..3).expect("the whole segment");
        arena.rewrite(1..2, &raw(&[7.0]), Write::Replace);
        assert_eq!(arena.slice(0..3), [3.0, 7.0, 5.0]);
        assert_eq!(&held[..], &raw(&[3.0, 4.0, 5.0])[..]);
    }

    #[test]
    fn an_adopted_segment_is_read_where_it_arrived_and_written_elsewhere() {
        let raw = |values: &[f32]| Bytes::from(bytemuck::cast_slice::<f32, u8>(values).to_vec());
        let mut arena = Arena::<f32>::default();
        arena.reserve(3);
        arena.extend([1.0, 2.0, 3.0].into_iter());
        // Held, the segment takes no appends: the next elements start one.
        let held = arena.share(0..3);
        arena.reserve(2);
        arena.extend([4.0, 5.0].into_iter());
        drop(held);
        // Only a whole segment, only aligned bytes of the right length.
        let received = raw(&[7.0, 8.0, 9.0]);
        assert!(!arena.adopt(0..2, &raw(&[7.0, 8.0])), "part of a segment");
        assert!(!arena.adopt(0..3, &received.slice(4..)), "too short");
        let unaligned = Bytes::from([&[0u8][..], &received[..]].concat()).slice(1..);
        assert_eq!(unaligned.len(), received.len());
        assert!(!arena.adopt(0..3, &unaligned), "misaligned");
        assert!(arena.adopt(0..3, &received));
        assert_eq!(arena.slice(0..3), [7.0, 8.0, 9.0]);
        assert_eq!(arena.slice(0..3).as_ptr().cast(), received.as_ptr(), "no copy");
        // Shared as it is; written to memory of the store's own.
        let answer = arena.share(0..3).expect("the whole segment");
        assert_eq!(answer.as_ptr(), received.as_ptr());
        arena.rewrite(0..3, &raw(&[1.0, 1.0, 1.0]), Write::Add);
        assert_eq!(arena.slice(0..3), [8.0, 9.0, 10.0]);
        arena.rewrite(1..2, &raw(&[0.5]), Write::Replace);
        assert_eq!(arena.slice(0..3), [8.0, 0.5, 10.0]);
        assert_eq!(&received[..], &raw(&[7.0, 8.0, 9.0])[..], "what arrived is never written");
        assert!(arena.adopt(0..3, &received));
        arena.rewrite(2..3, &raw(&[6.0]), Write::Replace);
        assert_eq!((arena.slice(0..3), arena.slice(3..5)), (&[7.0, 8.0, 6.0][..], &[4.0, 5.0][..]));
        assert_eq!(&received[..], &raw(&[7.0, 8.0, 9.0])[..]);
    }

    #[test]
    fn a_large_push_of_new_keys_gets_a_segment_of_its_own() {
        let large = SEGMENT_APPEND_BYTES / size_of::<f32>();
        let mut arena = Arena::<f32>::default();
        // Small keys share a segment.
        for i in 0..4 {
            arena.reserve(2);
            assert_eq!(arena.extend([i as f32; 2].into_iter()), 2 * i);
        }
        assert_eq!(arena.segments.len(), 1);
        // A large push starts its own, so a pull of it alone shares it.
        arena.reserve(large);
        assert_eq!(arena.extend(std::iter::repeat_n(1.0, large)), 8);
        assert_eq!(arena.segments.len(), 2);
        assert_eq!(arena.share(8..8 + large).map(|bytes| bytes.len()), Some(large * 4));
        // What comes after a large segment does not join it: a later pull
        // of the large keys stays the whole of theirs.
        arena.reserve(1);
        arena.extend([5.0].into_iter());
        assert_eq!(arena.segments.len(), 3);
        // Small keys join a segment until it would pass the bound.
        arena.reserve(large - 1);
        arena.extend(std::iter::repeat_n(2.0, large - 1));
        assert_eq!(arena.segments.len(), 3);
        arena.reserve(1);
        arena.extend([3.0].into_iter());
        assert_eq!(arena.segments.len(), 4);
        assert_eq!(arena.len(), 8 + 2 * large + 1);
        assert_eq!((arena.slice(6..8), arena.slice(8..9)), (&[3.0, 3.0][..], &[1.0][..]));
        assert_eq!(arena.slice(8 + large..9 + large), [5.0]);
    }
}
