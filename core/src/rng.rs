//! Seeded randomness with an algorithm fixed by this file.
//!
//! A printed seed must replay the same run after any dependency upgrade, so
//! the generator is ours: SplitMix64 to expand seeds and derive independent
//! streams, xoshiro256** for the stream itself (both public-domain
//! algorithms by Blackman and Vigna). Nothing in the core or the simulator
//! draws randomness from anywhere else.

use crate::time::Duration;

/// A deterministic random stream (xoshiro256**), seeded from a `u64`.
///
/// ```
/// use pslite_core::Rng;
/// // A seed replays the same stream, on any machine and after any upgrade.
/// let (mut a, mut b) = (Rng::new(42), Rng::new(42));
/// assert_eq!(a.next_u64(), b.next_u64());
/// assert!(a.below(6) < 6);
/// // Sub-streams by name: how much one draws does not shift the other.
/// let network = Rng::new(Rng::derive_seed(42, 1)).next_u64();
/// let crashes = Rng::new(Rng::derive_seed(42, 2)).next_u64();
/// assert_ne!(network, crashes);
/// ```
#[derive(Clone, Debug)]
pub struct Rng {
    state: [u64; 4],
}

/// One step of SplitMix64: a bijective mix used to expand and derive seeds.
///
/// ```
/// use pslite_core::splitmix64;
/// // Neighbouring seeds give unrelated outputs, and the state moves on.
/// let (mut a, mut b) = (1u64, 2u64);
/// let (first, second) = (splitmix64(&mut a), splitmix64(&mut b));
/// assert_ne!(first, second);
/// assert_ne!(splitmix64(&mut a), first);
/// ```
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    /// A stream fully determined by `seed`.
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        let state = [splitmix64(&mut sm), splitmix64(&mut sm), splitmix64(&mut sm), splitmix64(&mut sm)];
        // SplitMix64 outputs are a bijection of distinct inputs, so four in a
        // row are never all zero; xoshiro would be stuck at zero otherwise.
        assert!(state.iter().any(|&w| w != 0), "xoshiro state must not be all zero");
        Self { state }
    }

    /// A seed for an independent sub-stream named by `stream`, without
    /// advancing `self`: consumers that draw more or fewer numbers do not
    /// shift each other.
    pub fn derive_seed(seed: u64, stream: u64) -> u64 {
        let mut sm = seed ^ stream.wrapping_mul(0xd1b5_4a32_d192_ed03);
        splitmix64(&mut sm)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.state;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; `n == 0` gives 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        loop {
            let product = u128::from(self.next_u64()) * u128::from(n);
            let low = product as u64;
            if low >= n.wrapping_neg() % n {
                return (product >> 64) as u64;
            }
        }
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// True with probability `p` (clamped to `[0, 1]`).
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// A duration uniform in `[0, max]`, for spreading retries apart.
    pub fn jitter(&mut self, max: Duration) -> Duration {
        let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.below(nanos.saturating_add(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_gives_the_same_stream() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn stream_is_pinned_to_the_algorithm() {
        // Pinned values: if these change, every printed seed stops replaying.
        let mut r = Rng::new(0);
        let first = r.next_u64();
        let second = r.next_u64();
        assert_eq!((first, second), (PINNED[0], PINNED[1]));
    }
    const PINNED: [u64; 2] = [0x99ec_5f36_cb75_f2b4, 0xbf6e_1f78_4956_452a];

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut r = Rng::new(7);
        let mut seen = [false; 5];
        for _ in 0..1000 {
            let v = r.below(5);
            assert!(v < 5);
            seen[v as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn derived_seeds_differ_per_stream() {
        assert_ne!(Rng::derive_seed(1, 0), Rng::derive_seed(1, 1));
        assert_ne!(Rng::derive_seed(1, 0), Rng::derive_seed(2, 0));
    }
}
