//! Sparse logistic regression on one minibatch.
//!
//! A worker's step is: build a [`Batch`] from its examples, pull the
//! weights of [`Batch::keys`], compute [`Batch::loss_and_gradient`] with
//! them, push the gradient back under the same keys. Keys and gradient are
//! aligned and sorted, which is the order the key-value API wants, and each
//! key appears once however many examples share it, so a push carries one
//! aggregated gradient per key.
//!
//! Arithmetic is in `f64` (weights travel as `f32`), and the sigmoid and
//! log-loss are written so that no margin, however large, gives an
//! infinity or a NaN.

/// A minibatch laid out for fast prediction: its keys once each, and for
/// every feature occurrence the position of its key.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    keys: Vec<u64>,
    /// `slots[starts[i]..starts[i + 1]]` are example `i`'s key positions.
    starts: Vec<usize>,
    slots: Vec<usize>,
    values: Vec<f32>,
    labels: Vec<f32>,
}

/// The pulled weights do not fit the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{got} weights for a batch of {expected} keys")]
pub struct WeightCountError {
    /// Number of keys in the batch.
    pub expected: usize,
    /// Number of weights given.
    pub got: usize,
}

/// The mean log-loss of a batch and its gradient.
#[derive(Clone, Debug, PartialEq)]
pub struct LossGradient {
    /// Mean log-loss over the batch's examples, at the weights given.
    pub loss: f64,
    /// Gradient of the mean loss, one entry per [`Batch::keys`] entry.
    pub gradient: Vec<f32>,
}

impl Batch {
    /// Lays out `examples`. Feature keys need not be sorted or unique
    /// within an example; a repeated key simply counts twice.
    pub fn new(examples: &[super::data::Example]) -> Self {
        let mut keys: Vec<u64> = examples.iter().flat_map(|e| e.features.iter().map(|&(key, _)| key)).collect();
        keys.sort_unstable();
        keys.dedup();
        let occurrences = examples.iter().map(|e| e.features.len()).sum();
        let mut starts = Vec::with_capacity(examples.len() + 1);
        let mut slots = Vec::with_capacity(occurrences);
        let mut values = Vec::with_capacity(occurrences);
        starts.push(0);
        for example in examples {
            for &(key, value) in &example.features {
                let slot = keys.binary_search(&key).expect("every feature key is in the union");
                slots.push(slot);
                values.push(value);
            }
            starts.push(slots.len());
        }
        let labels = examples.iter().map(|e| e.label).collect();
        Self { keys, starts, slots, values, labels }
    }

    /// The keys to pull and push: every feature key of the batch, sorted,
    /// each once.
    pub fn keys(&self) -> &[u64] {
        &self.keys
    }

    /// The labels, in example order.
    pub fn labels(&self) -> &[f32] {
        &self.labels
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the batch has no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Each example's margin `w · x`, given one weight per key.
    pub fn margins(&self, weights: &[f32]) -> Result<Vec<f64>, WeightCountError> {
        self.check(weights)?;
        Ok((0..self.len()).map(|i| self.margin(i, weights)).collect())
    }

    /// Each example's predicted probability of label 1.
    pub fn probabilities(&self, weights: &[f32]) -> Result<Vec<f64>, WeightCountError> {
        Ok(self.margins(weights)?.into_iter().map(sigmoid).collect())
    }

    /// The mean log-loss at `weights` and its gradient per key:
    /// `sum over examples of (p - y) * x / batch size`. An empty batch has
    /// loss 0 and an empty gradient.
    pub fn loss_and_gradient(&self, weights: &[f32]) -> Result<LossGradient, WeightCountError> {
        self.check(weights)?;
        let mut gradient = vec![0.0f64; self.keys.len()];
        let mut loss_sum = 0.0;
        for i in 0..self.len() {
            let margin = self.margin(i, weights);
            let label = f64::from(self.labels[i]);
            loss_sum += log_loss_of_margin(margin, label);
            let residual = sigmoid(margin) - label;
            for at in self.starts[i]..self.starts[i + 1] {
                gradient[self.slots[at]] += residual * f64::from(self.values[at]);
            }
        }
        let scale = if self.is_empty() { 0.0 } else { 1.0 / self.len() as f64 };
        Ok(LossGradient {
            loss: loss_sum * scale,
            gradient: gradient.into_iter().map(|g| (g * scale) as f32).collect(),
        })
    }

    fn check(&self, weights: &[f32]) -> Result<(), WeightCountError> {
        if weights.len() == self.keys.len() {
            Ok(())
        } else {
            Err(WeightCountError { expected: self.keys.len(), got: weights.len() })
        }
    }

    fn margin(&self, example: usize, weights: &[f32]) -> f64 {
        (self.starts[example]..self.starts[example + 1])
            .map(|at| f64::from(weights[self.slots[at]]) * f64::from(self.values[at]))
            .sum()
    }
}

/// `1 / (1 + e^-margin)`, without overflow for margins of any size.
pub fn sigmoid(margin: f64) -> f64 {
    if margin >= 0.0 {
        1.0 / (1.0 + (-margin).exp())
    } else {
        let e = margin.exp();
        e / (1.0 + e)
    }
}

/// The log-loss `-y ln p - (1 - y) ln (1 - p)` of predicting
/// `p = sigmoid(margin)` for `label` in `[0, 1]`, computed as
/// `softplus(margin) - label * margin` so that a confident wrong
/// prediction costs its (large, finite) margin rather than `ln 0`.
pub fn log_loss_of_margin(margin: f64, label: f64) -> f64 {
    let softplus = margin.max(0.0) + (-margin.abs()).exp().ln_1p();
    softplus - label * margin
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Example;
    use proptest::prelude::*;

    fn example(features: &[(u64, f32)], label: f32) -> Example {
        Example { features: features.to_vec(), label }
    }

    #[test]
    fn keys_are_the_sorted_union_and_margins_use_them() {
        let batch = Batch::new(&[example(&[(9, 1.0), (u64::MAX, 2.0)], 1.0), example(&[(3, 1.0), (9, -1.0)], 0.0)]);
        assert_eq!(batch.keys(), &[3, 9, u64::MAX]);
        assert_eq!(batch.margins(&[1.0, 10.0, 100.0]).unwrap(), vec![210.0, -9.0]);
        assert_eq!(batch.margins(&[1.0]), Err(WeightCountError { expected: 3, got: 1 }));
        assert!(batch.loss_and_gradient(&[]).is_err());
    }

    #[test]
    fn gradient_aggregates_per_key() {
        // At zero weights every prediction is 0.5, so the residual is 0.5 - y.
        let batch = Batch::new(&[example(&[(1, 1.0), (2, 2.0)], 1.0), example(&[(2, 1.0)], 0.0)]);
        let step = batch.loss_and_gradient(&[0.0, 0.0]).unwrap();
        assert_eq!(step.gradient, vec![-0.25, (-0.5 * 2.0 + 0.5) / 2.0]);
        assert!((step.loss - std::f64::consts::LN_2).abs() < 1e-12);
    }

    #[test]
    fn extreme_margins_stay_finite() {
        for margin in [-1e6, -800.0, -40.0, 0.0, 40.0, 800.0, 1e6] {
            let p = sigmoid(margin);
            assert!((0.0..=1.0).contains(&p), "{margin}: {p}");
            for label in [0.0, 1.0] {
                let loss = log_loss_of_margin(margin, label);
                assert!(loss.is_finite() && loss >= 0.0, "{margin} {label}: {loss}");
            }
        }
        assert_eq!(log_loss_of_margin(1e6, 0.0), 1e6);
        assert!(log_loss_of_margin(1e6, 1.0) < 1e-300);
        assert!((log_loss_of_margin(-3.0, 0.0) - (1.0 - sigmoid(-3.0)).ln().abs()).abs() < 1e-12);
    }

    #[test]
    fn empty_batch_has_no_keys_and_zero_loss() {
        let batch = Batch::new(&[]);
        assert!(batch.keys().is_empty());
        assert_eq!(batch.loss_and_gradient(&[]).unwrap(), LossGradient { loss: 0.0, gradient: vec![] });
    }

    fn examples() -> impl Strategy<Value = Vec<Example>> {
        let features = proptest::collection::btree_map(0u64..12, -2.0f32..2.0, 0..6);
        let one = (features, prop_oneof![Just(0.0f32), Just(1.0f32)])
            .prop_map(|(features, label)| Example { features: features.into_iter().collect(), label });
        proptest::collection::vec(one, 1..8)
    }

    proptest! {
        #[test]
        fn gradient_matches_finite_differences(
            examples in examples(),
            weights_pool in proptest::collection::vec(-2.0f32..2.0, 12),
        ) {
            let batch = Batch::new(&examples);
            let weights: Vec<f32> = weights_pool[..batch.keys().len()].to_vec();
            let analytic = batch.loss_and_gradient(&weights).unwrap().gradient;
            // h is exactly representable, so w ± h moves the f32 weight by
            // (nearly) exactly h; the central difference is then accurate
            // to O(h²) times the third derivative, which is bounded here.
            let h = 1.0 / 256.0;
            for k in 0..weights.len() {
                let mut up = weights.clone();
                up[k] += h;
                let mut down = weights.clone();
                down[k] -= h;
                let numeric = (batch.loss_and_gradient(&up).unwrap().loss
                    - batch.loss_and_gradient(&down).unwrap().loss) / f64::from(up[k] - down[k]);
                prop_assert!((numeric - f64::from(analytic[k])).abs() < 1e-3,
                    "key {}: numeric {} analytic {}", batch.keys()[k], numeric, analytic[k]);
            }
        }
    }
}
