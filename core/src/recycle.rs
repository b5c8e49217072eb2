//! Large buffers used again once every view of them is dropped.
//!
//! Frames and values are views (`Bytes`) into the buffer they were built
//! or received in, never copies, so a buffer cannot be written again while
//! any view lives, and the next large frame needs new memory. Once every
//! view is gone, the buffer can serve again instead: that spares the
//! allocator a large allocation and the kernel a page fault per page. The
//! system allocator hands large freed blocks back to the OS, so without
//! this every 4 MiB frame was faulted in afresh (a read side showed ten
//! times the page faults, and 4 MiB pushes ran at 0.81x raw TCP, against
//! 0.92x with reuse).
//!
//! Only buffers of a useful size are kept, and only a few, so what a
//! recycler holds is bounded: `SPARES_MAX * SPARE_BYTES_MAX`. A spare serves
//! only a need of at least half its size: a small answer cut from a large
//! buffer would hold all of it for as long as the answer lives.

use std::collections::VecDeque;

use bytes::BytesMut;

/// Buffers of at least this size are kept.
pub const SPARE_BYTES_MIN: usize = 1 << 20;
/// Buffers above this size are not kept: a huge frame is rare, and its
/// memory goes back at once.
pub const SPARE_BYTES_MAX: usize = 8 << 20;
/// Buffers kept: about as many as frames in flight at once.
pub const SPARES_MAX: usize = 4;

/// Spare buffers, each with the size it was allocated with.
#[derive(Debug, Default)]
pub struct Recycler {
    spares: VecDeque<(BytesMut, usize)>,
}

impl Clone for Recycler {
    /// A clone starts without spares: they are memory, not state.
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl Recycler {
    /// An empty buffer with room for `needed` bytes, and the size it was
    /// allocated with: a spare whose views are all dropped and that is at
    /// most twice the need, else a new one of exactly `needed` bytes. A
    /// buffer that is never written past `needed` keeps that size, which
    /// is what [`keep`](Self::keep) must be told.
    ///
    /// The spare kept last is tried first: it is the likeliest to still be
    /// in the cache, so the kernel's copy into it and the reads of what
    /// lands there do not go to memory. Taking the oldest instead cycled a
    /// reader through all its spares (16 MiB of 4 MiB frames against a
    /// 32 MiB L3 shared with everything else), and 4 MiB pushes ran at
    /// 0.73-0.83x raw TCP against 0.93-1.16x taking the newest.
    pub fn take(&mut self, needed: usize) -> (BytesMut, usize) {
        let fits = |size: usize| needed <= size && size / 2 <= needed;
        let reusable = self.spares.iter_mut().rposition(|(spare, size)| fits(*size) && spare.try_reclaim(needed));
        match reusable.and_then(|i| self.spares.remove(i)) {
            Some(spare) => spare,
            None => (BytesMut::with_capacity(needed), needed),
        }
    }

    /// Keeps `buffer` (allocated with `size` bytes; what it holds is
    /// discarded, views cut from it stay valid) to serve again once its
    /// views are dropped, if it is of a size worth keeping; the oldest
    /// spare makes room.
    pub fn keep(&mut self, mut buffer: BytesMut, size: usize) {
        if !(SPARE_BYTES_MIN..=SPARE_BYTES_MAX).contains(&size) {
            return;
        }
        buffer.clear();
        if self.spares.len() == SPARES_MAX {
            self.spares.pop_front();
        }
        self.spares.push_back((buffer, size));
    }

    /// Bytes the spares hold.
    pub fn held_bytes(&self) -> usize {
        self.spares.iter().map(|(_, size)| size).sum()
    }

    /// Lets every spare go.
    pub fn clear(&mut self) {
        self.spares.clear();
    }

    /// Buffers held.
    pub fn len(&self) -> usize {
        self.spares.len()
    }

    /// Whether no buffer is held.
    pub fn is_empty(&self) -> bool {
        self.spares.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_serves_again_only_once_its_views_are_dropped() {
        let mut recycler = Recycler::default();
        let (mut buffer, size) = recycler.take(2 << 20);
        buffer.resize(2 << 20, 7);
        let view = buffer.split().freeze();
        let memory = view.as_ptr();
        recycler.keep(buffer, size);
        // The view is alive: new memory.
        let (other, other_size) = recycler.take(2 << 20);
        assert_ne!(other.as_ptr(), memory);
        assert_eq!(recycler.len(), 1);
        drop(view);
        // Now it is gone: the same memory, empty, with the room asked for.
        let (again, _) = recycler.take(2 << 20);
        assert_eq!(again.as_ptr(), memory);
        assert!(again.is_empty() && again.capacity() >= 2 << 20);
        assert!(recycler.is_empty());
        recycler.keep(other, other_size);
        assert_eq!(recycler.len(), 1);
    }

    #[test]
    fn the_spare_kept_last_serves_first() {
        let mut recycler = Recycler::default();
        let (first, first_size) = recycler.take(2 << 20);
        let (second, second_size) = recycler.take(2 << 20);
        let (older, newer) = (first.as_ptr(), second.as_ptr());
        recycler.keep(first, first_size);
        recycler.keep(second, second_size);
        assert_eq!(recycler.take(2 << 20).0.as_ptr(), newer, "the newest, likeliest in the cache");
        assert_eq!(recycler.take(2 << 20).0.as_ptr(), older);
        // The newest still has a view alive: the next newest serves.
        let (mut busy, busy_size) = recycler.take(2 << 20);
        let (idle, idle_size) = recycler.take(2 << 20);
        let idle_memory = idle.as_ptr();
        busy.resize(16, 0);
        let view = busy.split().freeze();
        recycler.keep(idle, idle_size);
        recycler.keep(busy, busy_size);
        assert_eq!(recycler.take(2 << 20).0.as_ptr(), idle_memory);
        drop(view);
    }

    #[test]
    fn a_small_need_does_not_take_a_large_spare() {
        let mut recycler = Recycler::default();
        recycler.keep(BytesMut::with_capacity(4 << 20), 4 << 20);
        let (small, size) = recycler.take(4);
        assert_eq!((small.capacity(), size), (4, 4), "a fresh buffer of the need");
        assert_eq!(recycler.len(), 1);
        let (large, size) = recycler.take(3 << 20);
        assert_eq!(size, 4 << 20, "a need of at least half the spare takes it");
        assert!(large.capacity() >= 3 << 20 && recycler.is_empty());
    }

    #[test]
    fn small_and_huge_buffers_are_not_kept_and_at_most_a_few_are() {
        let mut recycler = Recycler::default();
        let (small, size) = recycler.take(1000);
        recycler.keep(small, size);
        let (huge, size) = recycler.take(SPARE_BYTES_MAX + 1);
        recycler.keep(huge, size);
        assert!(recycler.is_empty());
        for _ in 0..SPARES_MAX + 2 {
            recycler.keep(BytesMut::with_capacity(SPARE_BYTES_MIN), SPARE_BYTES_MIN);
        }
        assert_eq!(recycler.len(), SPARES_MAX);
        assert_eq!(recycler.held_bytes(), SPARES_MAX * SPARE_BYTES_MIN);
        recycler.clear();
        assert!(recycler.is_empty());
    }
}
