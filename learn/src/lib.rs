//! The machine-learning half of the training example: sparse logistic
//! regression trained by asynchronous SGD. Everything here is pure
//! computation; the network is the caller's business.
//!
//! It is a workspace crate of its own, never published, rather than a
//! module of `pslite`: the library that users depend on should not compile
//! an example's parser, plotter and optimizers.
//!
//! - [`data`]: examples, a libsvm reader, a seeded synthetic problem with a
//!   planted model (the accuracy ceiling), train/held-out splits and
//!   per-worker shards.
//! - [`model`]: per minibatch, the keys to pull and push, predictions, the
//!   log-loss and the per-key gradient.
//! - [`optim`]: the server-side update rules (SGD, AdaGrad, FTRL) as a
//!   [`KvHandle`](pslite_core::KvHandle).
//! - [`metrics`]: log-loss, accuracy, AUC and the majority-class rate.
//! - [`plot`]: loss curves as SVG.
//! - [`failover`]: what a server's death did to a run (killed when,
//!   declared dead when, ranges back to full strength when), for the
//!   summary.
//!
//! The whole loop in one process, one store standing in for the servers
//! (in a cluster each server runs its own store over its key range, and
//! the weights and gradients travel by pull and push):
//!
//! ```
//! use pslite_learn::{data::SyntheticConfig, metrics, model::Batch, optim::OptimizerStore};
//!
//! let synthetic = SyntheticConfig { examples: 2_000, ..SyntheticConfig::default() }.generate().unwrap();
//! let (train, held_out) = synthetic.dataset.split(500, 1);
//! let mut store = OptimizerStore::new("ftrl".parse().unwrap()).unwrap();
//! for shard in train.shards(4) {
//!     for examples in shard.examples.chunks(100) {
//!         let batch = Batch::new(examples);
//!         let weights = store.weights(batch.keys()); // pull
//!         let step = batch.loss_and_gradient(&weights).unwrap();
//!         store.push(batch.keys(), &step.gradient).unwrap(); // push, command CMD_GRADIENT
//!     }
//! }
//! let batch = Batch::new(&held_out.examples);
//! let probabilities = batch.probabilities(&store.weights(batch.keys())).unwrap();
//! let trained = metrics::evaluate(&probabilities, batch.labels()).unwrap();
//! let planted = synthetic.planted.evaluate(&held_out).unwrap();
//! assert!(trained.log_loss.is_finite() && trained.accuracy <= planted.accuracy + 0.05);
//! ```

pub mod data;
pub mod failover;
pub mod job;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod plot;

#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;
