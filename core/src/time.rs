//! Time as the core sees it: a number handed in by the driver.
//!
//! The core never reads a clock. The io shell converts its monotonic clock
//! into nanoseconds since one fixed epoch; the simulator starts at zero and
//! jumps from event to event. Keeping our own type (rather than
//! `std::time::Instant`) is what lets both drive the same code.

use std::fmt;
use std::ops::{Add, AddAssign};
pub use std::time::Duration;

/// A point in time, in nanoseconds since the driver's epoch.
///
/// ```
/// use pslite_core::{Duration, Instant};
/// // A driver's clock: nanoseconds since an epoch of its choosing.
/// let epoch = std::time::Instant::now();
/// let now = Instant::from_nanos(epoch.elapsed().as_nanos() as u64);
/// let deadline = now + Duration::from_secs(5);
/// assert_eq!(deadline.saturating_since(now), Duration::from_secs(5));
/// // A clock read out of order gives no time, not a panic.
/// assert_eq!(now.saturating_since(deadline), Duration::ZERO);
/// assert_eq!(Instant::FAR_FUTURE + Duration::from_secs(1), Instant::FAR_FUTURE);
/// assert_eq!(Instant::from_nanos(1_500_000_000).to_string(), "t=1.500000s");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The driver's epoch.
    pub const ZERO: Self = Self(0);
    /// Later than every instant a run can reach; used as "never".
    pub const FAR_FUTURE: Self = Self(u64::MAX);

    /// An instant `nanos` nanoseconds after the epoch.
    pub const fn from_nanos(nanos: u64) -> Self {
        Self(nanos)
    }

    /// Nanoseconds since the epoch.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time elapsed from `earlier` to `self`, or zero when `earlier` is later
    /// (a drifting clock must not panic the core).
    pub fn saturating_since(self, earlier: Self) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Self;
    /// Saturates at [`Instant::FAR_FUTURE`] instead of overflowing.
    fn add(self, rhs: Duration) -> Self {
        let nanos = u64::try_from(rhs.as_nanos()).unwrap_or(u64::MAX);
        Self(self.0.saturating_add(nanos))
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, rhs: Duration) {
        *self = *self + rhs;
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Self::FAR_FUTURE {
            return f.write_str("t=never");
        }
        write!(f, "t={}.{:06}s", self.0 / 1_000_000_000, (self.0 % 1_000_000_000) / 1000)
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_seconds_with_microseconds() {
        assert_eq!(format!("{:?}", Instant::from_nanos(12_345_678_901)), "t=12.345678s");
    }

    #[test]
    fn addition_saturates_instead_of_wrapping() {
        let late = Instant::from_nanos(u64::MAX - 1);
        assert_eq!(late + Duration::from_secs(1), Instant::FAR_FUTURE);
        assert_eq!(Instant::ZERO.saturating_since(late), Duration::ZERO);
    }
}
