//! The pieces together, in one process: the learning loop the distributed
//! example runs, with the network replaced by direct calls to the handle.

use super::data::{Dataset, SyntheticConfig};
use super::metrics::{self, Evaluation};
use super::model::Batch;
use super::optim::{Optimizer, OptimizerStore};
use super::testing::{pull, push};

/// Minibatch training over `epochs` passes, reshuffling each pass; returns
/// the held-out evaluation after each pass.
///
/// `workers` batches at a time are computed from the same pulled weights
/// and then pushed one after another, as `workers` asynchronous workers
/// would when each pulls before the others' pushes land: a gradient is up
/// to `workers - 1` updates stale.
fn train(
    store: &mut OptimizerStore,
    train: &Dataset,
    held_out: &Dataset,
    epochs: u64,
    batch_len: usize,
    workers: usize,
) -> Vec<Evaluation> {
    let held_out_batch = Batch::new(&held_out.examples);
    let mut order = train.clone();
    let mut evaluations = Vec::new();
    for epoch in 0..epochs {
        order.shuffle(epoch);
        let batches: Vec<Batch> = order.examples.chunks(batch_len).map(Batch::new).collect();
        for round in batches.chunks(workers) {
            let steps: Vec<Vec<f32>> = round
                .iter()
                .map(|batch| batch.loss_and_gradient(&pull(store, batch.keys())).unwrap().gradient)
                .collect();
            for (batch, gradient) in round.iter().zip(steps) {
                push(store, batch.keys(), &gradient);
            }
        }
        let weights = pull(store, held_out_batch.keys());
        let probabilities = held_out_batch.probabilities(&weights).unwrap();
        evaluations.push(metrics::evaluate(&probabilities, held_out_batch.labels()).unwrap());
    }
    evaluations
}

/// Trains each optimizer with its defaults the way the example does (four
/// workers, minibatches of 100) on the default synthetic data. Run with
/// `--nocapture` to see the numbers.
#[test]
fn async_minibatch_training_approaches_the_planted_model() {
    let synthetic = SyntheticConfig::default().generate().unwrap();
    let (train_set, held_out) = synthetic.dataset.split(20_000, 7);
    let planted = synthetic.planted.evaluate(&held_out).unwrap();
    println!("planted on held-out: {}", summary(&planted));
    assert!(planted.accuracy > planted.majority_rate + 0.15, "the data has signal: {planted:?}");
    let train_keys = Batch::new(&train_set.examples).keys().to_vec();
    for name in Optimizer::NAMES {
        let mut store = OptimizerStore::new(name.parse().unwrap()).unwrap();
        let evaluations = train(&mut store, &train_set, &held_out, 3, 100, 4);
        for (epoch, evaluation) in evaluations.iter().enumerate() {
            println!("{name} epoch {}: {}", epoch + 1, summary(evaluation));
        }
        let last = evaluations.last().unwrap();
        assert!(last.accuracy > planted.accuracy - 0.025, "{name}: {last:?}");
        assert!(last.log_loss < planted.log_loss + 0.07, "{name}: {last:?}");
        let nonzero = store.weights(&train_keys).iter().filter(|&&w| w != 0.0).count();
        println!("{name}: {} keys with state, {nonzero} non-zero weights", store.len());
        if name == "ftrl" {
            // The planted model has about 500 non-zero weights; L1 should
            // find a model of that size among the ~600k keys touched.
            assert!(last.accuracy > planted.accuracy - 0.01, "{last:?}");
            assert!(nonzero < train_keys.len() / 100, "{nonzero} of {}", train_keys.len());
        }
    }
}

fn summary(e: &Evaluation) -> String {
    let auc = e.auc.map_or("-".to_owned(), |auc| format!("{auc:.4}"));
    format!(
        "accuracy {:.4}, log-loss {:.4}, AUC {auc}, majority rate {:.4} ({} examples)",
        e.accuracy, e.log_loss, e.majority_rate, e.count
    )
}
