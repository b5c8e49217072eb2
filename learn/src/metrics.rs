//! How good a model's predictions are: log-loss, accuracy, AUC, and the
//! majority-class rate that any accuracy must beat to mean something.
//!
//! Predictions are probabilities of label 1; labels are 0.0 or 1.0 (above
//! 0.5 counts as positive). Inputs that make a metric meaningless (no
//! examples, lengths that differ, one class only for AUC) are errors, not
//! NaNs that would surface later in a plot.

/// A metric could not be computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MetricError {
    /// Predictions and labels differ in number.
    #[error("{predictions} predictions for {labels} labels")]
    LengthMismatch {
        /// Number of predictions.
        predictions: usize,
        /// Number of labels.
        labels: usize,
    },
    /// There is nothing to measure.
    #[error("no examples")]
    Empty,
    /// AUC needs both a positive and a negative example.
    #[error("AUC needs both classes")]
    OneClass,
}

/// Every metric at once, for a progress line or a plot.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// Number of examples.
    pub count: usize,
    /// Mean log-loss.
    pub log_loss: f64,
    /// Fraction predicted right at threshold 0.5.
    pub accuracy: f64,
    /// Area under the ROC curve; `None` when only one class is present.
    pub auc: Option<f64>,
    /// Accuracy of always predicting the more common label.
    pub majority_rate: f64,
}

/// All metrics of `probabilities` against `labels`.
pub fn evaluate(probabilities: &[f64], labels: &[f32]) -> Result<Evaluation, MetricError> {
    let auc = match auc(probabilities, labels) {
        Ok(auc) => Some(auc),
        Err(MetricError::OneClass) => None,
        Err(other) => return Err(other),
    };
    Ok(Evaluation {
        count: labels.len(),
        log_loss: log_loss(probabilities, labels)?,
        accuracy: accuracy(probabilities, labels)?,
        auc,
        majority_rate: majority_rate(labels)?,
    })
}

/// Mean log-loss. Probabilities are clamped to
/// `[PROBABILITY_MIN, 1 - PROBABILITY_MIN]` so that one confident mistake
/// costs about 34.5 rather than infinity. (Where margins are at hand,
/// [`super::model::log_loss_of_margin`] needs no clamp.)
pub fn log_loss(probabilities: &[f64], labels: &[f32]) -> Result<f64, MetricError> {
    check(probabilities, labels)?;
    let total: f64 = probabilities
        .iter()
        .zip(labels)
        .map(|(&p, &label)| {
            let p = p.clamp(PROBABILITY_MIN, 1.0 - PROBABILITY_MIN);
            if positive(label) {
                -p.ln()
            } else {
                -(1.0 - p).ln()
            }
        })
        .sum();
    Ok(total / labels.len() as f64)
}

/// Fraction of examples whose prediction is on the label's side of 0.5
/// (exactly 0.5 predicts label 1).
pub fn accuracy(probabilities: &[f64], labels: &[f32]) -> Result<f64, MetricError> {
    check(probabilities, labels)?;
    let right = probabilities.iter().zip(labels).filter(|&(&p, &label)| (p >= 0.5) == positive(label)).count();
    Ok(right as f64 / labels.len() as f64)
}

/// Area under the ROC curve: the probability that a random positive
/// scores above a random negative, ties counting one half. Computed from
/// ranks (Mann–Whitney), tied scores sharing their average rank, in
/// `O(n log n)`.
pub fn auc(scores: &[f64], labels: &[f32]) -> Result<f64, MetricError> {
    check(scores, labels)?;
    let positives = labels.iter().filter(|&&l| positive(l)).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return Err(MetricError::OneClass);
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut positive_rank_sum = 0.0;
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && scores[order[end]].total_cmp(&scores[order[start]]).is_eq() {
            end += 1;
        }
        // Ranks are 1-based: the group holds ranks start+1 ..= end.
        let rank_mean = (start + 1 + end) as f64 / 2.0;
        let group_positives = order[start..end].iter().filter(|&&i| positive(labels[i])).count();
        positive_rank_sum += rank_mean * group_positives as f64;
        start = end;
    }
    let positives = positives as f64;
    let pairs_won = positive_rank_sum - positives * (positives + 1.0) / 2.0;
    Ok(pairs_won / (positives * negatives as f64))
}

/// The share of the more common label.
pub fn majority_rate(labels: &[f32]) -> Result<f64, MetricError> {
    if labels.is_empty() {
        return Err(MetricError::Empty);
    }
    let positives = labels.iter().filter(|&&l| positive(l)).count();
    Ok(positives.max(labels.len() - positives) as f64 / labels.len() as f64)
}

fn check(predictions: &[f64], labels: &[f32]) -> Result<(), MetricError> {
    if predictions.len() != labels.len() {
        return Err(MetricError::LengthMismatch { predictions: predictions.len(), labels: labels.len() });
    }
    if labels.is_empty() {
        return Err(MetricError::Empty);
    }
    Ok(())
}

fn positive(label: f32) -> bool {
    label > 0.5
}

/// The clamp of [`log_loss`] (scikit-learn's choice).
pub const PROBABILITY_MIN: f64 = 1e-15;

#[cfg(test)]
mod tests {
    use super::*;

    const LABELS: [f32; 6] = [0.0, 0.0, 1.0, 0.0, 1.0, 1.0];

    #[test]
    fn auc_of_a_perfect_ranking_is_one_and_of_its_reverse_zero() {
        let perfect = [0.1, 0.2, 0.9, 0.3, 0.8, 0.7];
        assert_eq!(auc(&perfect, &LABELS), Ok(1.0));
        let reversed: Vec<f64> = perfect.iter().map(|s| -s).collect();
        assert_eq!(auc(&reversed, &LABELS), Ok(0.0));
    }

    #[test]
    fn tied_scores_count_half() {
        assert_eq!(auc(&[0.5; 6], &LABELS), Ok(0.5));
        // Positives 0.9, 0.5, 0.5; negatives 0.5, 0.1, 0.1: of the nine
        // pairs, seven are won and two (0.5 vs 0.5) tied.
        let scores = [0.1, 0.1, 0.9, 0.5, 0.5, 0.5];
        assert_eq!(auc(&scores, &LABELS), Ok(8.0 / 9.0));
    }

    #[test]
    fn auc_matches_counting_pairs() {
        let mut rng = pslite_core::Rng::new(3);
        let labels: Vec<f32> = (0..200).map(|_| if rng.chance(0.3) { 1.0 } else { 0.0 }).collect();
        let scores: Vec<f64> = (0..200).map(|_| rng.below(10) as f64).collect();
        let mut won = 0.0;
        let mut pairs = 0.0;
        for (i, &li) in labels.iter().enumerate() {
            for (j, &lj) in labels.iter().enumerate() {
                if li == 1.0 && lj == 0.0 {
                    pairs += 1.0;
                    won += if scores[i] > scores[j] {
                        1.0
                    } else if scores[i] == scores[j] {
                        0.5
                    } else {
                        0.0
                    };
                }
            }
        }
        assert!((auc(&scores, &labels).unwrap() - won / pairs).abs() < 1e-12);
    }

    #[test]
    fn accuracy_log_loss_and_majority() {
        let p = [0.2, 0.6, 0.5, 0.1, 0.9, 0.4];
        assert_eq!(accuracy(&p, &LABELS), Ok(4.0 / 6.0));
        assert_eq!(majority_rate(&LABELS), Ok(0.5));
        assert_eq!(majority_rate(&[1.0, 1.0, 0.0]), Ok(2.0 / 3.0));
        let expected = -(0.8f64.ln() + 0.4f64.ln() + 0.5f64.ln() + 0.9f64.ln() + 0.9f64.ln() + 0.4f64.ln()) / 6.0;
        assert!((log_loss(&p, &LABELS).unwrap() - expected).abs() < 1e-12);
        let certain_and_wrong = log_loss(&[1.0], &[0.0]).unwrap();
        assert!(certain_and_wrong.is_finite() && certain_and_wrong > 30.0);
    }

    #[test]
    fn meaningless_inputs_are_errors() {
        assert_eq!(auc(&[0.1, 0.2], &[1.0, 1.0]), Err(MetricError::OneClass));
        assert_eq!(accuracy(&[0.1], &[1.0, 0.0]), Err(MetricError::LengthMismatch { predictions: 1, labels: 2 }));
        assert_eq!(log_loss(&[], &[]), Err(MetricError::Empty));
        assert_eq!(majority_rate(&[]), Err(MetricError::Empty));
        let one_class = evaluate(&[0.9, 0.8], &[1.0, 1.0]).unwrap();
        assert_eq!((one_class.auc, one_class.accuracy, one_class.count), (None, 1.0, 2));
    }
}
