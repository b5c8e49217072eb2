//! A byte-consuming source of choices.
//!
//! Structured fuzzing needs "pick one of these" rather than raw bytes: each
//! choice eats as few bytes as it can, so a small mutation of the input
//! changes one decision and leaves the others in place, which is what lets
//! coverage guidance climb. An exhausted input answers zeros, so every
//! input, however short, is a complete and finite run.

/// Choices read off the front of a fuzz input.
#[derive(Debug)]
pub(crate) struct Decisions<'a> {
    data: &'a [u8],
}

impl<'a> Decisions<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// Whether the input is used up.
    pub(crate) fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub(crate) fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&first, rest)) => {
                self.data = rest;
                first
            }
            None => 0,
        }
    }

    /// Uniform-ish in `0..n` (`n == 0` gives 0). Always one byte when
    /// `n <= 256`, even for `n <= 1`, so how many bytes a choice eats never
    /// depends on state and hand-written seeds stay aligned.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        match n {
            0 | 1 => {
                self.byte();
                0
            }
            2..=256 => usize::from(self.byte()) % n,
            _ => self.u32() as usize % n,
        }
    }

    pub(crate) fn chance(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    pub(crate) fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    pub(crate) fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    pub(crate) fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// Up to `n` raw bytes (fewer when the input runs out).
    pub(crate) fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        taken
    }

    /// A length up to `len_max`, then that many raw bytes.
    pub(crate) fn blob(&mut self, len_max: usize) -> &'a [u8] {
        let len = self.below(len_max + 1);
        self.bytes(len)
    }

    /// Everything left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}
