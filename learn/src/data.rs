//! Training data: examples, a libsvm reader, a synthetic generator with a
//! known answer, and deterministic splits.
//!
//! Keys are what travels to the servers, so examples hold keys, not feature
//! ids. The generator spreads its feature ids over the whole `u64` space
//! with [`feature_key`] so that every server's range gets keys (ids
//! `0..n` would all land on the first server); libsvm files keep their
//! indices unless the caller asks for [`Dataset::spread_keys`].
//!
//! The synthetic data exists to answer "did training work?": labels are
//! drawn from a planted logistic model, so the planted model's own
//! held-out accuracy is the ceiling any learner can reach, and the gap to
//! it measures the learner rather than the data.

use std::io::BufRead;

use pslite_core::splitmix64;
use pslite_core::Rng;

use super::metrics::{self, Evaluation, MetricError};
use super::model;

/// One labelled example.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    /// `(key, value)` pairs; the reader and the generator produce them
    /// sorted by key with each key once.
    pub features: Vec<(u64, f32)>,
    /// 0.0 or 1.0.
    pub label: f32,
}

/// A list of examples.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dataset {
    /// The examples, in file or generation order until shuffled.
    pub examples: Vec<Example>,
}

impl Dataset {
    /// Maps every key through [`feature_key`], so that small libsvm indices
    /// spread over all servers. The map is a bijection, so distinct
    /// features stay distinct.
    pub fn spread_keys(mut self) -> Self {
        for example in &mut self.examples {
            for (key, _) in &mut example.features {
                *key = feature_key(*key);
            }
            example.features.sort_unstable_by_key(|&(key, _)| key);
        }
        self
    }

    /// Shuffles the examples with a seeded Fisher–Yates shuffle.
    pub fn shuffle(&mut self, seed: u64) {
        let mut rng = Rng::new(seed);
        for i in (1..self.examples.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            self.examples.swap(i, j);
        }
    }

    /// `(train, held_out)`: a seeded shuffle, then the last `held_out_len`
    /// examples (all of them when there are fewer) are held out.
    pub fn split(&self, held_out_len: usize, seed: u64) -> (Self, Self) {
        let mut shuffled = self.clone();
        shuffled.shuffle(seed);
        let train_len = shuffled.examples.len().saturating_sub(held_out_len);
        let held_out = shuffled.examples.split_off(train_len);
        (shuffled, Self { examples: held_out })
    }

    /// `count` shards for `count` workers, example `i` going to shard
    /// `i % count`: sizes differ by at most one, and each shard keeps the
    /// dataset's order. No shards when `count` is 0.
    pub fn shards(&self, count: usize) -> Vec<Self> {
        if count == 0 {
            return Vec::new();
        }
        let mut shards = vec![Self::default(); count];
        for (i, example) in self.examples.iter().enumerate() {
            shards[i % count].examples.push(example.clone());
        }
        shards
    }

    /// The labels, in order.
    pub fn labels(&self) -> Vec<f32> {
        self.examples.iter().map(|e| e.label).collect()
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.examples.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }
}

/// The key of feature id `feature`: a bijective mix (SplitMix64's), shifted
/// so that feature 0 lands exactly on `u64::MAX`. The synthetic bias lives
/// there, so every minibatch touches the top key, which ps-lite's ranges
/// left without an owner.
pub fn feature_key(feature: u64) -> u64 {
    mix(feature) ^ mix(0) ^ u64::MAX
}

fn mix(x: u64) -> u64 {
    let mut state = x;
    splitmix64(&mut state)
}

/// A libsvm line that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The reader failed (including text that is not UTF-8).
    #[error("line {line}: cannot read: {source}")]
    Io {
        /// 1-based line number.
        line: usize,
        /// What the reader said.
        source: std::io::Error,
    },
    /// The line is not `label index:value ...`.
    #[error("line {line}: {problem}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        problem: LineProblem,
    },
}

/// What is wrong with a malformed libsvm line.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum LineProblem {
    /// The label is not -1, +1, 0 or 1.
    #[error("label `{0}` is not one of -1, +1, 0, 1")]
    Label(String),
    /// A feature token has no `:`.
    #[error("feature `{0}` is not `index:value`")]
    Feature(String),
    /// A feature index is not a non-negative integer.
    #[error("feature index `{0}` is not a non-negative integer")]
    Index(String),
    /// A feature value is not a finite number.
    #[error("feature value `{0}` is not a finite number")]
    Value(String),
    /// The same index twice on one line.
    #[error("feature index {0} appears twice")]
    DuplicateIndex(u64),
}

/// Reads a libsvm/svmlight file: one `label index:value ...` per line.
///
/// Labels -1/+1 and 0/1 are both accepted (-1 and 0 become 0.0). Anything
/// after `#` is a comment, blank lines are skipped, `qid:` tokens are
/// ignored, indices may come in any order (they are sorted) but not twice,
/// and zero values are dropped (they add keys to pull and change nothing).
/// The first bad line stops the read with an error naming it.
pub fn read_libsvm<R: BufRead>(reader: R) -> Result<Dataset, ParseError> {
    let mut examples = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let line_number = index + 1;
        let text = line.map_err(|source| ParseError::Io { line: line_number, source })?;
        let parsed = parse_line(&text).map_err(|problem| ParseError::Malformed { line: line_number, problem })?;
        examples.extend(parsed);
    }
    Ok(Dataset { examples })
}

/// One line: `None` for blank or comment-only lines.
fn parse_line(text: &str) -> Result<Option<Example>, LineProblem> {
    let content = text.split_once('#').map_or(text, |(before, _)| before);
    let mut tokens = content.split_whitespace();
    let Some(label_text) = tokens.next() else {
        return Ok(None);
    };
    let label = match label_text.parse::<f64>() {
        Ok(1.0) => 1.0,
        Ok(0.0 | -1.0) => 0.0,
        _ => return Err(LineProblem::Label(label_text.to_owned())),
    };
    let mut features = Vec::new();
    for token in tokens {
        if token.starts_with("qid:") {
            continue;
        }
        let (index_text, value_text) = token.split_once(':').ok_or_else(|| LineProblem::Feature(token.to_owned()))?;
        let index = index_text.parse::<u64>().map_err(|_| LineProblem::Index(index_text.to_owned()))?;
        let value = match value_text.parse::<f32>() {
            Ok(v) if v.is_finite() => v,
            _ => return Err(LineProblem::Value(value_text.to_owned())),
        };
        features.push((index, value));
    }
    features.sort_unstable_by_key(|&(key, _)| key);
    if let Some(pair) = features.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(LineProblem::DuplicateIndex(pair[0].0));
    }
    features.retain(|&(_, value)| value != 0.0);
    Ok(Some(Example { features, label }))
}

/// How to generate a synthetic sparse logistic-regression problem.
///
/// Feature ids `1..=feature_space` are drawn with a power-law skew: id
/// `1 + floor(feature_space * u^skew)` for `u` uniform in `[0, 1)`, so low
/// ids are common (with the defaults id 1 is in about half the examples)
/// and most of the space is touched a handful of times. Feature 0 is a
/// bias present in every example. Only the bias and the
/// `informative_features` most common ids can carry planted weight (each
/// with probability `planted_density`, uniform in
/// `[-planted_weight_max, planted_weight_max]`): the rare tail is noise a
/// learner must learn to ignore, as rare ids in click logs mostly are. A
/// planted weight on an id seen twice could not be learnt by anyone, and
/// would only lower the ceiling.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticConfig {
    /// Number of examples.
    pub examples: usize,
    /// Number of non-bias feature ids.
    pub feature_space: u64,
    /// Fewest features drawn per example (before removing repeats).
    pub features_per_example_min: u32,
    /// Most features drawn per example.
    pub features_per_example_max: u32,
    /// The exponent of the power-law skew; 1 is uniform.
    pub skew: u32,
    /// How many of the most common ids may carry planted weight.
    pub informative_features: u64,
    /// Probability that an informative id has a non-zero planted weight.
    pub planted_density: f64,
    /// Largest planted weight magnitude.
    pub planted_weight_max: f32,
    /// The planted bias (feature 0); negative makes positives rarer.
    pub planted_bias: f32,
    /// Everything random derives from this.
    pub seed: u64,
}

impl Default for SyntheticConfig {
    /// 100k examples over a 1M-id space, 10–40 features each.
    fn default() -> Self {
        Self {
            examples: 100_000,
            feature_space: 1 << 20,
            features_per_example_min: 10,
            features_per_example_max: 40,
            skew: 4,
            informative_features: 1_000,
            planted_density: 0.5,
            planted_weight_max: 4.0,
            planted_bias: -0.5,
            seed: 1,
        }
    }
}

/// A configuration the generator cannot use.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("synthetic data: {field} {reason}")]
pub struct SyntheticConfigError {
    /// The offending field.
    pub field: &'static str,
    /// Why it is unusable.
    pub reason: &'static str,
}

/// Generated data and the model its labels were drawn from.
#[derive(Clone, Debug)]
pub struct Synthetic {
    /// The examples.
    pub dataset: Dataset,
    /// The planted model.
    pub planted: PlantedModel,
}

impl SyntheticConfig {
    /// Generates the data. Example `i` depends only on the seed and `i`,
    /// so a smaller `examples` gives a prefix of a larger one, and the
    /// planted model does not depend on `examples` at all.
    pub fn generate(&self) -> Result<Synthetic, SyntheticConfigError> {
        self.check()?;
        let planted = self.plant(Rng::derive_seed(self.seed, STREAM_PLANTED));
        let examples_seed = Rng::derive_seed(self.seed, STREAM_EXAMPLES);
        let examples = (0..self.examples as u64)
            .map(|i| self.example(&planted, &mut Rng::new(Rng::derive_seed(examples_seed, i))))
            .collect();
        Ok(Synthetic { dataset: Dataset { examples }, planted })
    }

    fn check(&self) -> Result<(), SyntheticConfigError> {
        let fail = |field, reason| Err(SyntheticConfigError { field, reason });
        if self.feature_space == 0 {
            return fail("feature_space", "must be at least 1");
        }
        if self.features_per_example_min > self.features_per_example_max {
            return fail("features_per_example_min", "must not exceed features_per_example_max");
        }
        if self.skew == 0 || self.skew > SKEW_MAX {
            return fail("skew", "must be in 1..=16");
        }
        if self.informative_features > self.feature_space {
            return fail("informative_features", "must not exceed feature_space");
        }
        if !(0.0..=1.0).contains(&self.planted_density) {
            return fail("planted_density", "must be in [0, 1]");
        }
        if !(self.planted_weight_max.is_finite() && self.planted_weight_max >= 0.0) {
            return fail("planted_weight_max", "must be finite and non-negative");
        }
        if !self.planted_bias.is_finite() {
            return fail("planted_bias", "must be finite");
        }
        Ok(())
    }

    fn plant(&self, seed: u64) -> PlantedModel {
        let mut rng = Rng::new(seed);
        let mut weights = vec![(feature_key(0), self.planted_bias)];
        for feature in 1..=self.informative_features {
            if rng.chance(self.planted_density) {
                let weight = (2.0 * rng.unit() - 1.0) * f64::from(self.planted_weight_max);
                weights.push((feature_key(feature), weight as f32));
            }
        }
        PlantedModel::from_weights(weights)
    }

    fn example(&self, planted: &PlantedModel, rng: &mut Rng) -> Example {
        let spread = u64::from(self.features_per_example_max - self.features_per_example_min) + 1;
        let drawn = u64::from(self.features_per_example_min) + rng.below(spread);
        let mut features: Vec<(u64, f32)> = Vec::with_capacity(drawn as usize + 1);
        features.push((feature_key(0), 1.0));
        for _ in 0..drawn {
            let skewed = rng.unit().powi(self.skew as i32);
            // `skewed < 1`, so the id stays in `1..=feature_space`.
            let id = 1 + ((self.feature_space as f64 * skewed) as u64).min(self.feature_space - 1);
            features.push((feature_key(id), 1.0));
        }
        features.sort_unstable_by_key(|&(key, _)| key);
        features.dedup_by_key(|&mut (key, _)| key);
        let margin: f64 = features.iter().map(|&(key, value)| f64::from(planted.weight(key)) * f64::from(value)).sum();
        let label = if rng.chance(model::sigmoid(margin)) { 1.0 } else { 0.0 };
        Example { features, label }
    }
}

/// The weights the synthetic labels were drawn from.
#[derive(Clone, Debug, PartialEq)]
pub struct PlantedModel {
    /// Non-zero weights, sorted by key.
    weights: Vec<(u64, f32)>,
}

impl PlantedModel {
    /// A model from `(key, weight)` pairs (sorted here; a repeated key
    /// keeps its first weight).
    pub fn from_weights(mut weights: Vec<(u64, f32)>) -> Self {
        weights.sort_by_key(|&(key, _)| key);
        weights.dedup_by_key(|&mut (key, _)| key);
        weights.retain(|&(_, weight)| weight != 0.0);
        Self { weights }
    }

    /// The weight of `key` (0 for keys without one).
    pub fn weight(&self, key: u64) -> f32 {
        self.weights.binary_search_by_key(&key, |&(k, _)| k).map_or(0.0, |i| self.weights[i].1)
    }

    /// The weights of `keys`, aligned with them: what a pull would return
    /// if the servers held this model.
    pub fn weights_for(&self, keys: &[u64]) -> Vec<f32> {
        keys.iter().map(|&key| self.weight(key)).collect()
    }

    /// The non-zero weights, sorted by key.
    pub fn nonzero(&self) -> &[(u64, f32)] {
        &self.weights
    }

    /// Predicted probabilities of label 1 for each example.
    pub fn probabilities(&self, dataset: &Dataset) -> Vec<f64> {
        dataset
            .examples
            .iter()
            .map(|example| {
                let margin =
                    example.features.iter().map(|&(key, value)| f64::from(self.weight(key)) * f64::from(value)).sum();
                model::sigmoid(margin)
            })
            .collect()
    }

    /// Log-loss, accuracy and AUC of this model on `dataset`: on held-out
    /// synthetic data, the best a learner can expect.
    pub fn evaluate(&self, dataset: &Dataset) -> Result<Evaluation, MetricError> {
        metrics::evaluate(&self.probabilities(dataset), &dataset.labels())
    }
}

/// Sub-stream names under the generator's seed.
const STREAM_PLANTED: u64 = 0;
const STREAM_EXAMPLES: u64 = 1;

/// Beyond this, `u^skew` underflows to 0 for most draws.
const SKEW_MAX: u32 = 16;

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Dataset, ParseError> {
        read_libsvm(text.as_bytes())
    }

    fn malformed_line(error: ParseError) -> (usize, LineProblem) {
        match error {
            ParseError::Malformed { line, problem } => (line, problem),
            ParseError::Io { line, source } => panic!("unexpected io error at line {line}: {source}"),
        }
    }

    #[test]
    fn libsvm_lines_become_sorted_examples() {
        let data = read("+1 7:0.5 3:2 qid:4 # a comment\n\n# only a comment\n-1 1:1e-1\n0 2:0 9:1\n1\n").unwrap();
        assert_eq!(
            data.examples,
            vec![
                Example { features: vec![(3, 2.0), (7, 0.5)], label: 1.0 },
                Example { features: vec![(1, 0.1)], label: 0.0 },
                Example { features: vec![(9, 1.0)], label: 0.0 },
                Example { features: vec![], label: 1.0 },
            ]
        );
    }

    #[test]
    fn libsvm_errors_name_the_line_and_the_problem() {
        let cases = [
            ("1 1:1\n2 1:1\n", 2, LineProblem::Label("2".into())),
            ("1 1:1\n\n# c\nyes 1:1\n", 4, LineProblem::Label("yes".into())),
            ("1 1:1\n1 1:1 7\n", 2, LineProblem::Feature("7".into())),
            ("1 -3:1\n", 1, LineProblem::Index("-3".into())),
            ("1 1:1\n1 1:1\n0 2:nan\n", 3, LineProblem::Value("nan".into())),
            ("1 2:inf\n", 1, LineProblem::Value("inf".into())),
            ("1 2:x\n", 1, LineProblem::Value("x".into())),
            ("1 5:1 2:1 5:2\n", 1, LineProblem::DuplicateIndex(5)),
        ];
        for (text, line, problem) in cases {
            let error = read(text).unwrap_err();
            let message = error.to_string();
            assert_eq!(malformed_line(error), (line, problem), "{text:?}");
            assert!(message.starts_with(&format!("line {line}: ")), "{message}");
        }
    }

    #[test]
    fn non_utf8_input_is_an_error_naming_the_line() {
        let error = read_libsvm(&b"1 1:1\n1 \xff:1\n"[..]).unwrap_err();
        assert!(matches!(error, ParseError::Io { line: 2, .. }), "{error:?}");
    }

    #[test]
    fn spreading_keys_keeps_features_distinct_and_sorted() {
        let data = read("1 1:1 2:2 3:3\n").unwrap().spread_keys();
        let keys: Vec<u64> = data.examples[0].features.iter().map(|f| f.0).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        let values: Vec<f32> = [1, 2, 3]
            .iter()
            .map(|&i| data.examples[0].features.iter().find(|f| f.0 == feature_key(i)).unwrap().1)
            .collect();
        assert_eq!(values, vec![1.0, 2.0, 3.0]);
        assert_eq!(feature_key(0), u64::MAX);
    }

    fn small() -> SyntheticConfig {
        SyntheticConfig { examples: 2_000, feature_space: 50_000, ..SyntheticConfig::default() }
    }

    #[test]
    fn generation_is_deterministic_and_prefix_stable() {
        let a = small().generate().unwrap();
        let b = small().generate().unwrap();
        assert_eq!(a.dataset, b.dataset);
        assert_eq!(a.planted, b.planted);
        let shorter = SyntheticConfig { examples: 500, ..small() }.generate().unwrap();
        assert_eq!(shorter.dataset.examples[..], a.dataset.examples[..500]);
        assert_eq!(shorter.planted, a.planted);
        let other = SyntheticConfig { seed: 2, ..small() }.generate().unwrap();
        assert_ne!(other.dataset, a.dataset);
    }

    #[test]
    fn synthetic_examples_have_sorted_unique_keys_across_the_key_space() {
        let data = small().generate().unwrap().dataset;
        let mut quarters = [0usize; 4];
        for example in &data.examples {
            let keys: Vec<u64> = example.features.iter().map(|f| f.0).collect();
            assert!(keys.windows(2).all(|w| w[0] < w[1]));
            assert_eq!(keys.last(), Some(&u64::MAX), "every example has the bias");
            assert!((2..=41).contains(&keys.len()), "{}", keys.len());
            for key in keys {
                quarters[(key >> 62) as usize] += 1;
            }
        }
        let total: usize = quarters.iter().sum();
        assert!(quarters.iter().all(|&q| q > total / 8), "{quarters:?}");
    }

    #[test]
    fn synthetic_features_are_skewed() {
        let data = small().generate().unwrap().dataset;
        let common = feature_key(1);
        let rare = feature_key(40_000);
        let count = |key| data.examples.iter().filter(|e| e.features.iter().any(|f| f.0 == key)).count();
        assert!(count(common) > data.len() / 4, "{}", count(common));
        assert!(count(rare) < data.len() / 100, "{}", count(rare));
    }

    #[test]
    fn labels_follow_the_planted_model() {
        let synthetic = SyntheticConfig { examples: 20_000, ..small() }.generate().unwrap();
        let planted = synthetic.planted.evaluate(&synthetic.dataset).unwrap();
        assert!(planted.accuracy > planted.majority_rate + 0.1, "{planted:?}");
        // A model that knows nothing predicts 0.5 everywhere.
        let ignorant = metrics::log_loss(&vec![0.5; synthetic.dataset.len()], &synthetic.dataset.labels()).unwrap();
        assert!(planted.log_loss < ignorant - 0.1, "{planted:?}");
    }

    #[test]
    fn bad_configurations_are_refused() {
        let cases = [
            SyntheticConfig { feature_space: 0, informative_features: 0, ..small() },
            SyntheticConfig { features_per_example_min: 5, features_per_example_max: 4, ..small() },
            SyntheticConfig { skew: 0, ..small() },
            SyntheticConfig { informative_features: 50_001, ..small() },
            SyntheticConfig { planted_density: f64::NAN, ..small() },
            SyntheticConfig { planted_weight_max: -1.0, ..small() },
        ];
        for config in cases {
            assert!(config.generate().is_err(), "{config:?}");
        }
    }

    #[test]
    fn splits_and_shards_partition_the_examples() {
        let data = small().generate().unwrap().dataset;
        let (train, held_out) = data.split(500, 9);
        assert_eq!((train.len(), held_out.len()), (1_500, 500));
        assert_eq!(data.split(500, 9), (train.clone(), held_out.clone()));
        assert_ne!(data.split(500, 10).1, held_out);
        let shards = train.shards(3);
        assert_eq!(shards.iter().map(Dataset::len).collect::<Vec<_>>(), vec![500, 500, 500]);
        let mut all: Vec<Example> = shards.into_iter().chain([held_out]).flat_map(|d| d.examples).collect();
        let mut original = data.examples.clone();
        let order = |e: &Example| (e.features.clone().into_iter().map(|f| f.0).collect::<Vec<_>>(), e.label as u8);
        all.sort_by_key(order);
        original.sort_by_key(order);
        assert_eq!(all, original);
        assert!(data.shards(0).is_empty());
        assert_eq!(data.split(5_000, 1).0.len(), 0);
    }
}
