//! Keys, values and lengths as typed views over shared byte buffers.
//!
//! A request's payload travels from the caller's buffer to the socket and
//! from the socket to the handle without being copied: every type here is
//! a `Bytes` plus a way to read it. Slicing a request across servers takes
//! sub-ranges of the same buffer. Elements are little-endian and read one by
//! one, so the buffers need no alignment.

use bytes::{BufMut, Bytes, BytesMut};

/// The element type of a value buffer.
///
/// ```
/// use pslite_core::{DType, Element, Values};
/// // The type travels with the buffer, so a receiver knows how to read it.
/// let values = Values::from_slice(&[1.0f64, 2.0]);
/// assert_eq!(values.dtype(), DType::F64);
/// assert_eq!(values.as_bytes().len(), 2 * DType::F64.size());
/// assert_eq!(<f64 as Element>::DTYPE, DType::F64);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit float (ps-lite's default).
    F32,
    /// 64-bit float.
    F64,
    /// 32-bit signed integer.
    I32,
    /// 64-bit signed integer.
    I64,
    /// Raw bytes, for user-defined values.
    U8,
}

impl DType {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            Self::F32 | Self::I32 => 4,
            Self::F64 | Self::I64 => 8,
            Self::U8 => 1,
        }
    }

    pub(crate) const fn to_wire(self) -> u8 {
        match self {
            Self::F32 => 0,
            Self::F64 => 1,
            Self::I32 => 2,
            Self::I64 => 3,
            Self::U8 => 4,
        }
    }

    pub(crate) const fn from_wire(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(Self::F32),
            1 => Some(Self::F64),
            2 => Some(Self::I32),
            3 => Some(Self::I64),
            4 => Some(Self::U8),
            _ => None,
        }
    }
}

/// A plain number type that can live in a [`Values`] buffer.
///
/// `Pod` lets a slice of elements be viewed as bytes without copying them
/// one by one; the wire format is little-endian, so that view is used only
/// on little-endian targets.
///
/// ```
/// use pslite_core::{Element, Values};
/// // Code generic over every element type a buffer can hold.
/// fn total<T: Element>(values: &Values) -> T {
///     values.iter::<T>().fold(T::default(), T::sum)
/// }
/// assert_eq!(total::<i32>(&Values::from_slice(&[1, 2, 3])), 6);
/// // Integers wrap rather than panic: no peer can crash a server with a sum.
/// assert_eq!(total::<u8>(&Values::from_slice(&[200u8, 100])), 44);
/// ```
pub trait Element: Copy + Default + std::fmt::Debug + bytemuck::Pod + Send + Sync + 'static {
    /// Its [`DType`].
    const DTYPE: DType;
    /// Appends `self` in little-endian order.
    fn put(self, buf: &mut BytesMut);
    /// Reads one element from exactly `DTYPE.size()` bytes.
    fn read(bytes: &[u8]) -> Self;
    /// `self + other` (wrapping for integers, so a peer cannot make us panic).
    fn sum(self, other: Self) -> Self;
}

macro_rules! element {
    ($t:ty, $dtype:expr, $put:ident, $sum:expr) => {
        impl Element for $t {
            const DTYPE: DType = $dtype;
            #[inline]
            fn put(self, buf: &mut BytesMut) {
                buf.$put(self);
            }
            #[inline(always)]
            fn read(bytes: &[u8]) -> Self {
                let mut raw = [0u8; std::mem::size_of::<$t>()];
                raw.copy_from_slice(bytes);
                <$t>::from_le_bytes(raw)
            }
            #[inline(always)]
            fn sum(self, other: Self) -> Self {
                $sum(self, other)
            }
        }
    };
}
element!(f32, DType::F32, put_f32_le, |a: f32, b: f32| a + b);
element!(f64, DType::F64, put_f64_le, |a: f64, b: f64| a + b);
element!(i32, DType::I32, put_i32_le, i32::wrapping_add);
element!(i64, DType::I64, put_i64_le, i64::wrapping_add);
element!(u8, DType::U8, put_u8, u8::wrapping_add);

fn encode<T: Element>(items: &[T]) -> Bytes {
    let mut buf = BytesMut::with_capacity(size_of_val(items));
    put_all(items, &mut buf);
    buf.freeze()
}

/// Appends `items` in little-endian order: one copy of the whole slice
/// where the target is little-endian, element by element elsewhere.
///
/// ```
/// use bytes::BytesMut;
/// use pslite_core::kv::values::put_all;
/// let mut buf = BytesMut::new();
/// put_all(&[1.0f32, 2.0], &mut buf);
/// // Little-endian on every target: the wire format.
/// assert_eq!(&buf[..4], &1.0f32.to_le_bytes()[..]);
/// assert_eq!(buf.len(), 8);
/// ```
#[inline]
pub fn put_all<T: Element>(items: &[T], buf: &mut BytesMut) {
    if cfg!(target_endian = "little") {
        buf.extend_from_slice(bytemuck::cast_slice(items));
    } else {
        for &item in items {
            item.put(buf);
        }
    }
}

/// Adds little-endian elements in `bytes` onto `into`, element-wise.
///
/// ```
/// use pslite_core::{kv::values::add_all, Values};
/// let mut sums = [1.0f32, 1.0];
/// // Adds a received buffer in place, without decoding it into a Vec first.
/// add_all(&mut sums, Values::from_slice(&[0.5f32, 2.0]).as_bytes());
/// assert_eq!(sums, [1.5, 3.0]);
/// ```
#[inline]
pub fn add_all<T: Element>(into: &mut [T], bytes: &[u8]) {
    debug_assert_eq!(size_of_val(into), bytes.len());
    for (slot, chunk) in into.iter_mut().zip(bytes.chunks_exact(size_of::<T>())) {
        *slot = slot.sum(T::read(chunk));
    }
}

/// Copies little-endian elements in `bytes` onto `into`.
#[inline]
pub(crate) fn replace_all<T: Element>(into: &mut [T], bytes: &[u8]) {
    debug_assert_eq!(size_of_val(into), bytes.len());
    if cfg!(target_endian = "little") {
        bytemuck::cast_slice_mut::<T, u8>(into).copy_from_slice(bytes);
    } else {
        for (slot, chunk) in into.iter_mut().zip(bytes.chunks_exact(size_of::<T>())) {
            *slot = T::read(chunk);
        }
    }
}

/// The little-endian elements in `bytes`, whatever their alignment.
#[inline]
pub(crate) fn read_all<T: Element>(bytes: &[u8]) -> Vec<T> {
    let mut all = Vec::with_capacity(bytes.len() / size_of::<T>());
    all.extend(bytes.chunks_exact(size_of::<T>()).map(T::read));
    all
}

/// `held` plus the little-endian elements in `bytes`, element-wise, in
/// new memory written once (no zero-fill before the sums).
#[inline]
pub(crate) fn sum_all<T: Element>(held: &[T], bytes: &[u8]) -> Vec<T> {
    debug_assert_eq!(size_of_val(held), bytes.len());
    let mut sums = Vec::with_capacity(held.len());
    sums.extend(held.iter().zip(bytes.chunks_exact(size_of::<T>())).map(|(&old, raw)| old.sum(T::read(raw))));
    sums
}

fn read_u64(bytes: &[u8]) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(bytes);
    u64::from_le_bytes(raw)
}

/// A list of `u64` keys.
///
/// ```
/// use pslite_core::Keys;
/// let keys = Keys::from_slice(&[1, 5, u64::MAX]);
/// assert_eq!((keys.len(), keys.get(2)), (3, u64::MAX));
/// assert_eq!(keys.iter().filter(|key| key % 2 == 1).count(), 3);
/// assert_eq!(keys.to_vec(), [1, 5, u64::MAX]);
/// // Eight little-endian bytes per key: what goes on the wire.
/// assert_eq!(keys.as_bytes().len(), 24);
/// assert!(!keys.is_empty());
/// ```
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Keys {
    bytes: Bytes,
}

impl Keys {
    /// Copies `keys` into a new buffer.
    pub fn from_slice(keys: &[u64]) -> Self {
        let mut buf = BytesMut::with_capacity(keys.len() * 8);
        for &k in keys {
            buf.put_u64_le(k);
        }
        Self { bytes: buf.freeze() }
    }

    /// Wraps little-endian `u64`s without copying; `None` when the length
    /// is not a multiple of 8.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use pslite_core::Keys;
    /// // Keys read from a file or a socket, used where they lie.
    /// let bytes = Bytes::from([7u64, 9].iter().flat_map(|key| key.to_le_bytes()).collect::<Vec<u8>>());
    /// assert_eq!(Keys::from_bytes(bytes.clone()).map(|keys| keys.to_vec()), Some(vec![7, 9]));
    /// // A torn buffer is no list of keys.
    /// assert_eq!(Keys::from_bytes(bytes.slice(..12)), None);
    /// ```
    pub fn from_bytes(bytes: Bytes) -> Option<Self> {
        (bytes.len() % 8 == 0).then_some(Self { bytes })
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.bytes.len() / 8
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The `i`-th key. Panics when out of bounds, like slice indexing.
    pub fn get(&self, i: usize) -> u64 {
        read_u64(&self.bytes[i * 8..i * 8 + 8])
    }

    /// All keys in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = u64> + '_ {
        self.bytes.chunks_exact(8).map(read_u64)
    }

    /// The first index whose key does not satisfy `pred` (keys sorted).
    ///
    /// ```
    /// use pslite_core::Keys;
    /// let keys = Keys::from_slice(&[1, 5, 9, 20]);
    /// // Where keys of 10 and above begin: the cut between two servers' ranges.
    /// let cut = keys.partition_point(|key| key < 10);
    /// assert_eq!(cut, 3);
    /// assert_eq!(keys.slice(cut, keys.len()).to_vec(), [20]);
    /// ```
    pub fn partition_point(&self, mut pred: impl FnMut(u64) -> bool) -> usize {
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let mid = low + (high - low) / 2;
            if pred(self.get(mid)) {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        low
    }

    /// Keys `start..end`, sharing the buffer.
    ///
    /// ```
    /// use pslite_core::Keys;
    /// let keys = Keys::from_slice(&[1, 2, 3, 4]);
    /// let tail = keys.slice(2, 4);
    /// assert_eq!(tail.to_vec(), [3, 4]);
    /// // No copy: the slice points into the same buffer.
    /// assert_eq!(tail.as_bytes().as_ptr(), keys.as_bytes()[16..].as_ptr());
    /// ```
    pub fn slice(&self, start: usize, end: usize) -> Self {
        Self { bytes: self.bytes.slice(start * 8..end * 8) }
    }

    /// The underlying bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Copies into a vector.
    pub fn to_vec(&self) -> Vec<u64> {
        self.iter().collect()
    }
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const SHOWN: usize = 8;
        let mut list = f.debug_list();
        list.entries(self.iter().take(SHOWN));
        if self.len() > SHOWN {
            list.entry(&format_args!("… {} keys", self.len()));
        }
        list.finish()
    }
}

/// Per-key value lengths (in elements), for variable-length values.
///
/// ```
/// use pslite_core::Lens;
/// // Key i has lens[i] values: here 2, none and 3.
/// let lens = Lens::from_slice(&[2, 0, 3]);
/// assert_eq!((lens.len(), lens.get(2)), (3, 3));
/// assert_eq!(lens.iter().max(), Some(3));
/// assert_eq!(lens.slice(1, 3).to_vec(), [0, 3]);
/// assert_eq!(lens.as_bytes().len(), 12);
/// assert!(!lens.is_empty());
/// ```
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Lens {
    bytes: Bytes,
}

impl Lens {
    /// Copies `lens` into a new buffer.
    pub fn from_slice(lens: &[u32]) -> Self {
        let mut buf = BytesMut::with_capacity(lens.len() * 4);
        for &l in lens {
            buf.put_u32_le(l);
        }
        Self { bytes: buf.freeze() }
    }

    /// Wraps little-endian `u32`s; `None` when not a multiple of 4 bytes.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use pslite_core::Lens;
    /// let bytes = Bytes::from([2u32, 1].iter().flat_map(|len| len.to_le_bytes()).collect::<Vec<u8>>());
    /// assert_eq!(Lens::from_bytes(bytes.clone()).map(|lens| lens.to_vec()), Some(vec![2, 1]));
    /// assert_eq!(Lens::from_bytes(bytes.slice(..6)), None);
    /// ```
    pub fn from_bytes(bytes: Bytes) -> Option<Self> {
        (bytes.len() % 4 == 0).then_some(Self { bytes })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.bytes.len() / 4
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The `i`-th length.
    pub fn get(&self, i: usize) -> u32 {
        let mut raw = [0u8; 4];
        raw.copy_from_slice(&self.bytes[i * 4..i * 4 + 4]);
        u32::from_le_bytes(raw)
    }

    /// All lengths in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = u32> + '_ {
        self.bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
    }

    /// Entries `start..end`, sharing the buffer.
    pub fn slice(&self, start: usize, end: usize) -> Self {
        Self { bytes: self.bytes.slice(start * 4..end * 4) }
    }

    /// The underlying bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Copies into a vector.
    pub fn to_vec(&self) -> Vec<u32> {
        self.iter().collect()
    }

    /// Sum of all lengths, in 64 bits so a hostile list cannot overflow it.
    ///
    /// ```
    /// use pslite_core::Lens;
    /// // How many values the keys need, without overflow whatever the lengths.
    /// assert_eq!(Lens::from_slice(&[2, 0, 3]).total(), 5);
    /// assert_eq!(Lens::from_slice(&[u32::MAX, u32::MAX]).total(), 2 * u64::from(u32::MAX));
    /// ```
    pub fn total(&self) -> u64 {
        self.iter().map(u64::from).sum()
    }
}

impl std::fmt::Debug for Lens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lens({} entries)", self.len())
    }
}

/// A buffer of values of one [`DType`].
///
/// ```
/// use pslite_core::{DType, Values};
/// let values = Values::from_slice(&[1.5f32, -2.0, 4.0]);
/// assert_eq!((values.dtype(), values.len()), (DType::F32, 3));
/// assert_eq!(values.as_bytes().len(), 12);
/// // Read as the type it holds; another type reads as nothing.
/// assert_eq!(values.get::<f32>(1), Some(-2.0));
/// assert_eq!(values.get::<i32>(1), None);
/// assert!(!values.is_empty());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Values {
    dtype: DType,
    bytes: Bytes,
}

impl Values {
    /// Copies `items` into a new buffer.
    pub fn from_slice<T: Element>(items: &[T]) -> Self {
        Self { dtype: T::DTYPE, bytes: encode(items) }
    }

    /// An empty buffer of `dtype`.
    ///
    /// ```
    /// use pslite_core::{DType, Values};
    /// // A pull's values: none, but the type it expects back.
    /// let asked = Values::empty(DType::I64);
    /// assert!(asked.is_empty());
    /// assert_eq!(asked.dtype(), DType::I64);
    /// ```
    pub fn empty(dtype: DType) -> Self {
        Self { dtype, bytes: Bytes::new() }
    }

    /// Wraps little-endian elements of `dtype` without copying; `None` when
    /// the length is not a multiple of the element size.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use pslite_core::{DType, Values};
    /// let bytes = Bytes::from(2.5f64.to_le_bytes().to_vec());
    /// assert_eq!(Values::from_bytes(DType::F64, bytes.clone()).and_then(|v| v.get::<f64>(0)), Some(2.5));
    /// // Twelve bytes are no whole number of f64s.
    /// assert_eq!(Values::from_bytes(DType::F64, Bytes::from_static(&[0; 12])), None);
    /// ```
    pub fn from_bytes(dtype: DType, bytes: Bytes) -> Option<Self> {
        (bytes.len() % dtype.size() == 0).then_some(Self { dtype, bytes })
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.bytes.len() / self.dtype.size()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Elements `start..end`, sharing the buffer.
    ///
    /// ```
    /// use pslite_core::Values;
    /// let values = Values::from_slice(&[1i64, 2, 3]);
    /// // One server's part of a request, sharing the caller's buffer.
    /// let part = values.slice(1, 3);
    /// assert_eq!(part.to_vec::<i64>(), Some(vec![2, 3]));
    /// assert_eq!(part.as_bytes().as_ptr(), values.as_bytes()[8..].as_ptr());
    /// ```
    pub fn slice(&self, start: usize, end: usize) -> Self {
        let size = self.dtype.size();
        Self { dtype: self.dtype, bytes: self.bytes.slice(start * size..end * size) }
    }

    /// The `i`-th element as `T`; `None` when `T` is not the dtype.
    pub fn get<T: Element>(&self, i: usize) -> Option<T> {
        let size = self.dtype.size();
        (T::DTYPE == self.dtype).then(|| T::read(&self.bytes[i * size..i * size + size]))
    }

    /// Copies into a vector of `T`; `None` when `T` is not the dtype.
    ///
    /// ```
    /// use pslite_core::Values;
    /// let values = Values::from_slice(&[1.0f32, 2.0]);
    /// assert_eq!(values.to_vec::<f32>(), Some(vec![1.0, 2.0]));
    /// // Asking for another type is a question, not a reinterpretation.
    /// assert_eq!(values.to_vec::<i32>(), None);
    /// ```
    pub fn to_vec<T: Element>(&self) -> Option<Vec<T>> {
        (T::DTYPE == self.dtype).then(|| self.iter::<T>().collect())
    }

    /// The elements as a slice of `T`, without copying: `None` when `T` is
    /// not the dtype, or the buffer is not aligned for `T` (a received
    /// frame's payload may sit at any offset), or on a big-endian target
    /// where the wire's little-endian bytes are not native `T`s. Fall back
    /// to [`to_vec`](Self::to_vec) then.
    ///
    /// ```
    /// use pslite_core::Values;
    /// let values = Values::from_slice(&[1.0f32, 2.0, 3.0]);
    /// // In place when it can be, else a copy: the same answer either way.
    /// let sum: f32 = match values.as_slice::<f32>() {
    ///     Some(slice) => slice.iter().sum(),
    ///     None => values.iter::<f32>().sum(),
    /// };
    /// assert_eq!(sum, 6.0);
    /// ```
    pub fn as_slice<T: Element>(&self) -> Option<&[T]> {
        if T::DTYPE != self.dtype || cfg!(target_endian = "big") {
            return None;
        }
        bytemuck::try_cast_slice(&self.bytes).ok()
    }

    /// Iterates as `T`; empty when `T` is not the dtype. Chunks have the
    /// compile-time width of `T`, which lets the loop vectorise (a width
    /// read from the dtype at run time made it 15x slower).
    ///
    /// ```
    /// use pslite_core::Values;
    /// let values = Values::from_slice(&[1i32, 2, 3]);
    /// assert_eq!(values.iter::<i32>().max(), Some(3));
    /// // Another type yields nothing: check `dtype` first where that matters.
    /// assert_eq!(values.iter::<f32>().count(), 0);
    /// ```
    pub fn iter<T: Element>(&self) -> impl Iterator<Item = T> + '_ {
        let bytes: &[u8] = if T::DTYPE == self.dtype { &self.bytes } else { &[] };
        bytes.chunks_exact(size_of::<T>()).map(T::read)
    }

    /// The underlying bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }
}

impl std::fmt::Debug for Values {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Values({:?} x {})", self.dtype, self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_views_read_what_was_written() {
        let keys = Keys::from_slice(&[1, 5, u64::MAX]);
        assert_eq!(keys.to_vec(), vec![1, 5, u64::MAX]);
        assert_eq!(keys.partition_point(|k| k < 5), 1);
        let values = Values::from_slice(&[1.5f32, -2.0]);
        assert_eq!(values.to_vec::<f32>(), Some(vec![1.5, -2.0]));
        assert_eq!(values.to_vec::<f64>(), None);
        assert_eq!(values.slice(1, 2).get::<f32>(0), Some(-2.0));
        assert!(Values::from_bytes(DType::F64, Bytes::from_static(&[0; 12])).is_none());
        assert!(Keys::from_bytes(Bytes::from_static(&[0; 7])).is_none());
    }

    #[test]
    fn an_aligned_buffer_is_viewed_in_place_and_a_misaligned_one_is_not() {
        let values = Values::from_slice(&[1.5f32, -2.0, 3.0]);
        let view = values.as_slice::<f32>().expect("a fresh buffer is aligned");
        assert_eq!(view, &[1.5, -2.0, 3.0]);
        assert_eq!(view.as_ptr().cast::<u8>(), values.as_bytes().as_ptr(), "no copy");
        assert_eq!(values.as_slice::<i32>(), None, "another type is refused");
        let mut raw = vec![0u8; 9];
        raw[1..5].copy_from_slice(&1.5f32.to_le_bytes());
        raw[5..9].copy_from_slice(&2.5f32.to_le_bytes());
        let bytes = Bytes::from(raw);
        let odd = Values::from_bytes(DType::F32, bytes.slice(1..9)).unwrap();
        if odd.as_bytes().as_ptr().align_offset(4) != 0 {
            assert_eq!(odd.as_slice::<f32>(), None, "a misaligned view is refused");
        }
        assert_eq!(odd.to_vec::<f32>(), Some(vec![1.5, 2.5]), "and copying still works");
    }

    #[test]
    fn slices_share_the_buffer() {
        let keys = Keys::from_slice(&[1, 2, 3, 4]);
        let tail = keys.slice(2, 4);
        assert_eq!(tail.as_bytes().as_ptr(), keys.as_bytes()[16..].as_ptr());
    }
}
