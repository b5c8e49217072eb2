//! The values workers push, and the one rule by which the checker holds a
//! stored or pulled value to the pushes behind it.
//!
//! Two modes ([`ValueMode`]). With integers, f32 sums are exact and do not
//! depend on the order of additions, so the checker compares exactly. But
//! then copies of a range that added the same pushes in different orders
//! (or added the pushes themselves instead of installing the head's
//! results) still hold the same bytes, and the settled cluster's
//! byte-equality check cannot tell. With fractions, f32 sums round, so the
//! order of additions shows in the bits: only copies that installed the
//! head's bytes stay byte-equal. The checker then keeps the exact sums
//! ([`Sum`]) and allows for f32 rounding ([`Sum::rounding`]), which stays
//! far below the smallest push, so a missing or doubled push still shows.

use std::fmt;

use pslite_core::Rng;

/// What kind of values the workers push.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ValueMode {
    /// Small positive integers: exact sums, exact comparisons.
    #[default]
    Integers,
    /// An integer plus sevenths (1 1/7 to 4 6/7): sums round, so copies
    /// agree bit for bit only if they hold the head's results.
    Fractions,
}

impl ValueMode {
    /// Every mode, in a fixed order.
    pub const ALL: [Self; 2] = [Self::Integers, Self::Fractions];

    /// The name used on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Integers => "integers",
            Self::Fractions => "fractions",
        }
    }

    /// Reads a name back.
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|m| m.name() == text).ok_or_else(|| format!("{text:?}: integers or fractions"))
    }

    /// The swarm's draw: fractions in about one seed in four. The draw is
    /// made whether or not the mode is forced, so forcing it changes
    /// nothing else of the seed.
    pub(crate) fn swarm(rng: &mut Rng) -> Self {
        if rng.chance(0.25) {
            Self::Fractions
        } else {
            Self::Integers
        }
    }

    /// A pushed value whose integer part is `whole`; fractions draw their
    /// sevenths from `fractions`, a stream of their own, so a seed's
    /// scripts are the same in both modes but for the values.
    pub(crate) fn value(self, whole: u64, fractions: &mut Rng) -> f32 {
        match self {
            Self::Integers => whole as f32,
            Self::Fractions => whole as f32 + (1 + fractions.below(6)) as f32 / 7.0,
        }
    }

    /// Whether workers may push `value` in this mode: at least
    /// [`PUSHED_MIN`], so that rounding never hides a push, and an integer
    /// when sums must be exact.
    pub fn admits(self, value: f32) -> bool {
        let integral = self == Self::Fractions || value.fract() == 0.0;
        value.is_finite() && value >= PUSHED_MIN && integral
    }

    /// Whether a store may hold `value` after applying at least the pushes
    /// summed in `low` and at most those in `high` (`low == high` for a
    /// store's exact contents): the one place that decides it, for every
    /// check. Pushes are positive, so every state in between lies between
    /// the two sums. Integers must hit the window exactly; fractions may
    /// miss it by the rounding of the larger sum.
    pub fn fits(self, value: f32, low: Sum, high: Sum) -> bool {
        let value = f64::from(value);
        let slack = self.slack(high);
        let integral = self == Self::Fractions || value.fract() == 0.0;
        integral && low.total - slack <= value && value <= high.total + slack
    }

    /// How far a store's f32 value may lie from `sum` in this mode.
    pub fn slack(self, sum: Sum) -> f64 {
        match self {
            Self::Integers => 0.0,
            Self::Fractions => {
                let rounding = sum.rounding();
                // Beyond this a push more or less could pass for rounding.
                assert!(
                    rounding < f64::from(PUSHED_MIN) / 2.0,
                    "{} pushes summing to {} round by up to {rounding}, too close to a push to tell",
                    sum.terms,
                    sum.total
                );
                rounding
            }
        }
    }
}

impl fmt::Display for ValueMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The smallest value a worker pushes, in either mode.
pub const PUSHED_MIN: f32 = 1.0;

/// The exact sum of some pushed values, and how many they are.
///
/// Each f32 is exact in an f64, and every pushed value is a multiple of
/// 2^-23 (f32s of at least 1), so the f64 sum stays exact below 2^29,
/// far beyond any run's sums.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sum {
    /// The sum.
    pub total: f64,
    /// How many values it adds.
    pub terms: u32,
}

/// The f32 unit roundoff: one addition's result is off by at most this
/// share of its magnitude.
const F32_ROUNDOFF: f64 = 1.0 / (1u64 << 24) as f64;

impl Sum {
    /// The sum of `values`.
    pub fn of(values: impl IntoIterator<Item = f32>) -> Self {
        values.into_iter().fold(Self::default(), Self::plus)
    }

    /// This sum with `value` added.
    pub fn plus(self, value: f32) -> Self {
        Self { total: self.total + f64::from(value), terms: self.terms + 1 }
    }

    /// The larger of two sums: with positive values, the one that bounds
    /// more pushes.
    pub fn max(self, other: Self) -> Self {
        if other.total > self.total {
            other
        } else {
            self
        }
    }

    /// How far an f32 computation of this sum can land from it, whatever
    /// the order of additions and however they were grouped (a copy
    /// installs sums made elsewhere and adds to them): each of the
    /// `terms − 1` additions rounds by at most `2^-24` of a partial sum,
    /// and with positive terms no partial sum exceeds the total, so
    /// `terms · total · 2^-24` bounds the error, second-order terms
    /// included. With pushes between 1 and 5 it stays below half the
    /// smallest push up to about a thousand pushes to one key, so a push
    /// missing or doubled stays outside it.
    pub fn rounding(self) -> f64 {
        f64::from(self.terms) * self.total * F32_ROUNDOFF
    }
}

impl fmt::Display for Sum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back() {
        for mode in ValueMode::ALL {
            assert_eq!(ValueMode::parse(mode.name()), Ok(mode));
        }
        assert!(ValueMode::parse("floats").is_err());
    }

    #[test]
    fn fractions_are_admitted_only_in_their_mode_and_never_below_one() {
        let mut rng = Rng::new(3);
        let drawn: Vec<f32> = (0..100).map(|i| ValueMode::Fractions.value(1 + i % 4, &mut rng)).collect();
        assert!(drawn.iter().all(|&v| ValueMode::Fractions.admits(v) && v.fract() != 0.0), "{drawn:?}");
        assert!(drawn.iter().all(|&v| !ValueMode::Integers.admits(v)));
        assert!(ValueMode::Integers.admits(ValueMode::Integers.value(3, &mut rng)));
        assert!(!ValueMode::Fractions.admits(0.5) && !ValueMode::Fractions.admits(f32::NAN));
    }

    #[test]
    fn fraction_sums_depend_on_the_order_of_additions() {
        let mut rng = Rng::new(11);
        let values: Vec<f32> = (0..40).map(|i| ValueMode::Fractions.value(1 + i % 4, &mut rng)).collect();
        let forward = values.iter().fold(0.0f32, |sum, v| sum + v);
        let backward = values.iter().rev().fold(0.0f32, |sum, v| sum + v);
        assert_ne!(forward.to_bits(), backward.to_bits(), "the mode exists to make these differ");
        let exact = Sum::of(values.iter().copied());
        for sum in [forward, backward] {
            assert!(ValueMode::Fractions.fits(sum, exact, exact), "{sum} vs {exact}");
        }
    }

    #[test]
    fn a_push_more_or_less_never_fits() {
        let values = [1.0f32 + 1.0 / 7.0, 4.0 + 6.0 / 7.0, 2.0 + 3.0 / 7.0];
        let all = Sum::of(values);
        let stored = values.iter().fold(0.0f32, |sum, v| sum + v);
        for mode in ValueMode::ALL {
            let less = stored - values[0];
            let more = stored + values[0];
            assert!(!mode.fits(less, all, all) && !mode.fits(more, all, all), "{mode}");
        }
        // Integers are held to the exact sum: one ulp off is off.
        let exact = Sum::of([1.0, 2.0]);
        assert!(ValueMode::Integers.fits(3.0, exact, exact));
        assert!(!ValueMode::Integers.fits(f32::from_bits(3.0f32.to_bits() + 1), exact, exact));
        assert!(ValueMode::Fractions.fits(f32::from_bits(3.0f32.to_bits() + 1), exact, exact));
    }
}
