//! The training job on a real loopback cluster: the loss must fall, and
//! the trained model must close at least half the gap between the best
//! constant predictor and the planted model that generated the labels.

use std::time::Duration;

use pslite_core::Rank;
use pslite_io::LocalCluster;
use pslite_learn::data::SyntheticConfig;
use pslite_learn::job::{self, JobConfig, MaxDelay};
use pslite_learn::optim::OptimizerStore;

const BOUND: Duration = Duration::from_secs(120);

/// Held-out log-loss of always predicting the training set's base rate:
/// what a model that learnt nothing but the bias achieves.
fn constant_log_loss(train_labels: &[f32], held_out_labels: &[f32]) -> f64 {
    let p = train_labels.iter().map(|&y| f64::from(y)).sum::<f64>() / train_labels.len() as f64;
    let loss: f64 = held_out_labels.iter().map(|&y| if y > 0.5 { -p.ln() } else { -(1.0 - p).ln() }).sum();
    loss / held_out_labels.len() as f64
}

async fn train_once(max_delay: MaxDelay) {
    let synthetic = SyntheticConfig { examples: 30_000, ..SyntheticConfig::default() }.generate().unwrap();
    let (train, held_out) = synthetic.dataset.split(5_000, 3);
    let planted = synthetic.planted.evaluate(&held_out).unwrap();
    let constant = constant_log_loss(&train.labels(), &held_out.labels());
    assert!(planted.log_loss < constant, "the data carries signal");

    let config = JobConfig { epochs: 2, max_delay, ..JobConfig::default() };
    let optimizer = config.optimizer;
    let settings = LocalCluster::settings(2, 2);
    let cluster = tokio::time::timeout(
        BOUND,
        LocalCluster::start_with(settings, Box::new(move |_: Rank| OptimizerStore::new(optimizer).unwrap().into())),
    )
    .await
    .unwrap()
    .unwrap();
    let before = job::evaluate_remote(&cluster.worker(0), &held_out).await.unwrap();
    assert!((before.log_loss - std::f64::consts::LN_2).abs() < 1e-6, "an untouched model predicts 1/2");
    let mut tasks = Vec::new();
    for (i, shard) in train.shards(2).into_iter().enumerate() {
        let worker = cluster.worker(i);
        let config = config.clone();
        tasks.push(tokio::spawn(async move { job::run_worker(&worker, &shard, &config).await }));
    }
    for task in tasks {
        let summary = tokio::time::timeout(BOUND, task).await.unwrap().unwrap().unwrap();
        assert_eq!(summary.examples, 2 * 12_500);
    }
    let after = job::evaluate_remote(&cluster.worker(1), &held_out).await.unwrap();
    let bound = planted.log_loss + 0.5 * (constant - planted.log_loss);
    assert!(
        after.log_loss < bound,
        "τ={max_delay}: held-out log-loss {:.4} is not below {bound:.4} (planted {:.4}, constant {constant:.4})",
        after.log_loss,
        planted.log_loss
    );
    assert!(after.accuracy > after.majority_rate, "better than always guessing the common label");
    assert!(tokio::time::timeout(BOUND, cluster.finalize()).await.unwrap().unwrap().is_complete());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_training_closes_half_the_gap_to_the_planted_model() {
    train_once(MaxDelay::Bounded(0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_delay_training_closes_half_the_gap_to_the_planted_model() {
    train_once(MaxDelay::Bounded(4)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventual_consistency_training_closes_half_the_gap_to_the_planted_model() {
    train_once(MaxDelay::Unbounded).await;
}
