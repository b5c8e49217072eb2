//! The distributed training job: workers pull weights, compute gradients
//! and push them; servers apply them with an optimizer handle; the
//! scheduler monitors progress through SimpleApp reports.
//!
//! Consistency follows ps-lite's model: with `max_delay` τ a worker keeps
//! at most τ pushes unfinished — τ = 0 is sequential (each push completes
//! before the next pull), a finite τ is bounded delay, and unbounded is
//! eventual consistency (capped at [`UNBOUNDED_PUSHES_MAX`] outstanding so
//! memory stays bounded).

use std::collections::VecDeque;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use pslite_core::{CustomerId, Keys, NodeId, SimpleRequest, Values};
use pslite_io::{KvWorker, NodeHandle};

use super::data::Dataset;
use super::metrics::{self, Evaluation, MetricError};
use super::model::Batch;
use super::optim::{Optimizer, CMD_GRADIENT};

/// SimpleApp head of a progress report (worker → scheduler).
pub const HEAD_PROGRESS: i32 = 1;
/// SimpleApp head of the final report (worker 0 → scheduler).
pub const HEAD_FINAL: i32 = 2;
/// The application id progress reports travel on, apart from KV traffic.
pub const MONITOR_APP: u32 = 7;
/// Outstanding pushes per worker under unbounded delay.
pub const UNBOUNDED_PUSHES_MAX: usize = 4096;

/// How far a worker may run ahead of its oldest unfinished push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaxDelay {
    /// At most this many pushes unfinished (0: sequential).
    Bounded(u32),
    /// No bound but memory's (eventual consistency).
    Unbounded,
}

impl MaxDelay {
    fn pushes_max(self) -> usize {
        match self {
            Self::Bounded(tau) => tau as usize,
            Self::Unbounded => UNBOUNDED_PUSHES_MAX,
        }
    }
}

impl FromStr for MaxDelay {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "unbounded" | "inf" | "eventual" => Ok(Self::Unbounded),
            n => n.parse().map(Self::Bounded).map_err(|_| format!("{s:?}: expected a number or `unbounded`")),
        }
    }
}

impl std::fmt::Display for MaxDelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bounded(tau) => write!(f, "{tau}"),
            Self::Unbounded => f.write_str("unbounded"),
        }
    }
}

/// What every worker does.
#[derive(Clone, Debug)]
pub struct JobConfig {
    /// The servers' update rule (servers are built with it).
    pub optimizer: Optimizer,
    /// Examples per minibatch.
    pub batch_len: usize,
    /// Passes over each worker's shard.
    pub epochs: u32,
    /// Consistency model.
    pub max_delay: MaxDelay,
    /// Minibatches between two progress reports.
    pub report_every_batches: u32,
    /// Shuffling seed (each worker and epoch derive their own).
    pub seed: u64,
}

impl Default for JobConfig {
    fn default() -> Self {
        Self {
            optimizer: Optimizer::from_str("ftrl").expect("known optimizer"),
            batch_len: 100,
            epochs: 3,
            max_delay: MaxDelay::Bounded(4),
            report_every_batches: 10,
            seed: 1,
        }
    }
}

/// What one worker did.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct WorkerSummary {
    /// Examples processed (counting every epoch).
    pub examples: u64,
    /// Minibatches processed.
    pub batches: u64,
    /// Payload bytes pushed (keys and gradients).
    pub bytes_pushed: u64,
    /// Payload bytes pulled (keys asked and weights received).
    pub bytes_pulled: u64,
    /// Mean training log-loss over the last epoch.
    pub last_epoch_log_loss: f64,
}

/// Trains on `shard` through `worker`, reporting progress to the scheduler.
pub async fn run_worker(
    worker: &KvWorker<f32>,
    shard: &Dataset,
    config: &JobConfig,
) -> pslite_io::Result<WorkerSummary> {
    run_worker_with(worker, shard, config, |_| {}).await
}

/// [`run_worker`], calling `after_step` with the number of minibatches
/// done each time one's push has been issued (and the pushes beyond
/// `max_delay` waited for): the hook a demonstration uses to act at a
/// given training step (the example kills a server there) and to time
/// the steps. It runs on the worker's task, so it must not block.
pub async fn run_worker_with(
    worker: &KvWorker<f32>,
    shard: &Dataset,
    config: &JobConfig,
    mut after_step: impl FnMut(u64),
) -> pslite_io::Result<WorkerSummary> {
    let node = worker.node();
    let pushes_max = config.max_delay.pushes_max();
    let mut outstanding = VecDeque::new();
    let mut summary = WorkerSummary::default();
    let mut report = ProgressReport::default();
    let mut order = shard.clone();
    for epoch in 0..config.epochs {
        order.shuffle(pslite_core::Rng::derive_seed(config.seed, u64::from(epoch)));
        let (mut epoch_loss, mut epoch_examples) = (0.0, 0u64);
        for examples in order.examples.chunks(config.batch_len.max(1)) {
            let batch = Batch::new(examples);
            let keys = Keys::from_slice(batch.keys());
            let pull = worker.zpull(keys.clone(), CMD_GRADIENT).await?;
            let weights = worker.wait_pull(pull).await?.to_vec();
            let step = batch.loss_and_gradient(&weights).map_err(|_| bad_weights())?;
            let gradient = Values::from_slice(&step.gradient);
            let pulled = (keys.as_bytes().len() + weights.len() * 4) as u64;
            let pushed = (keys.as_bytes().len() + gradient.as_bytes().len()) as u64;
            summary.bytes_pulled += pulled;
            summary.bytes_pushed += pushed;
            report.bytes_pulled += pulled;
            report.bytes_pushed += pushed;
            outstanding.push_back(worker.zpush(keys, gradient.as_bytes().clone(), None, CMD_GRADIENT).await?);
            while outstanding.len() > pushes_max {
                let oldest = outstanding.pop_front().expect("non-empty");
                worker.wait(oldest).await?;
            }
            let n = batch.len() as u64;
            summary.examples += n;
            summary.batches += 1;
            after_step(summary.batches);
            epoch_loss += step.loss * n as f64;
            epoch_examples += n;
            report.examples += n;
            report.loss_sum += step.loss * n as f64;
            if summary.batches % u64::from(config.report_every_batches.max(1)) == 0 {
                send_progress(node, &mut report).await?;
            }
        }
        summary.last_epoch_log_loss = epoch_loss / epoch_examples.max(1) as f64;
    }
    for ts in outstanding {
        worker.wait(ts).await?;
    }
    send_progress(node, &mut report).await?;
    Ok(summary)
}

fn bad_weights() -> pslite_io::Error {
    pslite_io::Error::Request(pslite_core::RequestError::BadResponse {
        server: NodeId::UNASSIGNED,
        mismatch: pslite_core::Mismatch::Lengths,
    })
}

/// Why the held-out set could not be evaluated.
#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    /// Pulling the weights failed, or they did not fit the keys.
    #[error(transparent)]
    Pull(#[from] pslite_io::Error),
    /// The metrics are undefined for this set (empty, say).
    #[error("held-out set cannot be evaluated: {0}")]
    Metric(#[from] MetricError),
}

/// Pulls the current weights of `held_out`'s keys and evaluates them.
pub async fn evaluate_remote(worker: &KvWorker<f32>, held_out: &Dataset) -> Result<Evaluation, EvaluateError> {
    let batch = Batch::new(&held_out.examples);
    let weights = worker.pull_wait(batch.keys()).await?;
    let probabilities = batch.probabilities(&weights).map_err(|_| bad_weights())?;
    Ok(metrics::evaluate(&probabilities, batch.labels())?)
}

#[derive(Default)]
struct ProgressReport {
    examples: u64,
    loss_sum: f64,
    bytes_pushed: u64,
    bytes_pulled: u64,
}

const PROGRESS_LEN: usize = 32;

async fn send_progress(node: &NodeHandle, report: &mut ProgressReport) -> pslite_io::Result<()> {
    if report.examples == 0 {
        return Ok(());
    }
    let mut body = BytesMut::with_capacity(PROGRESS_LEN);
    body.put_u64_le(report.examples);
    body.put_f64_le(report.loss_sum);
    body.put_u64_le(report.bytes_pushed);
    body.put_u64_le(report.bytes_pulled);
    node.simple(CustomerId::new(MONITOR_APP, 0), NodeId::SCHEDULER, HEAD_PROGRESS, body.freeze()).await?;
    *report = ProgressReport::default();
    Ok(())
}

/// The numbers the scheduler prints at the end.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FinalReport {
    /// Held-out metrics of the trained model.
    pub held_out: Evaluation,
    /// Held-out metrics of the planted model (synthetic data), if known.
    pub planted: Option<Evaluation>,
    /// Training log-loss over the last epoch, averaged over the workers
    /// that reported it.
    pub train_log_loss: f64,
}

const FINAL_FIELDS: usize = 11;

impl FinalReport {
    /// Encodes for a SimpleApp body.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(FINAL_FIELDS * 8);
        let put_eval = |out: &mut BytesMut, e: Option<&Evaluation>| {
            let e = e.copied();
            out.put_f64_le(e.map_or(f64::NAN, |e| e.count as f64));
            out.put_f64_le(e.map_or(f64::NAN, |e| e.log_loss));
            out.put_f64_le(e.map_or(f64::NAN, |e| e.accuracy));
            out.put_f64_le(e.and_then(|e| e.auc).unwrap_or(f64::NAN));
            out.put_f64_le(e.map_or(f64::NAN, |e| e.majority_rate));
        };
        put_eval(&mut out, Some(&self.held_out));
        put_eval(&mut out, self.planted.as_ref());
        out.put_f64_le(self.train_log_loss);
        out.freeze()
    }

    /// Decodes a SimpleApp body; `None` when it has the wrong size.
    pub fn decode(mut body: Bytes) -> Option<Self> {
        if body.len() != FINAL_FIELDS * 8 {
            return None;
        }
        let eval = |body: &mut Bytes| {
            let count = body.get_f64_le();
            let log_loss = body.get_f64_le();
            let accuracy = body.get_f64_le();
            let auc = body.get_f64_le();
            let majority_rate = body.get_f64_le();
            (!count.is_nan()).then_some(Evaluation {
                count: count as usize,
                log_loss,
                accuracy,
                auc: (!auc.is_nan()).then_some(auc),
                majority_rate,
            })
        };
        let held_out = eval(&mut body)?;
        let planted = eval(&mut body);
        Some(Self { held_out, planted, train_log_loss: body.get_f64_le() })
    }
}

/// What the scheduler has heard, shared with whoever displays it.
#[derive(Clone, Debug, Default)]
pub struct MonitorState {
    /// Examples processed by all workers so far.
    pub examples: u64,
    /// Sum of per-example training loss reported so far.
    pub loss_sum: f64,
    /// Payload bytes pushed by all workers so far.
    pub bytes_pushed: u64,
    /// Payload bytes pulled by all workers so far.
    pub bytes_pulled: u64,
    /// `(examples so far, mean loss of the reports since the last point)`.
    pub curve: Vec<(f64, f64)>,
    /// The final report, once worker 0 sent it.
    pub final_report: Option<FinalReport>,
    /// Reports that did not decode.
    pub malformed: u64,
}

/// The scheduler's view of training progress.
#[derive(Clone, Debug, Default)]
pub struct Monitor {
    state: Arc<Mutex<MonitorState>>,
    finished: Arc<tokio::sync::Notify>,
}

impl Monitor {
    /// A copy of the current state.
    pub fn snapshot(&self) -> MonitorState {
        self.state.lock().expect("monitor lock").clone()
    }

    /// Waits until the final report arrived.
    pub async fn finished(&self) -> FinalReport {
        loop {
            let notified = self.finished.notified();
            if let Some(report) = self.snapshot().final_report {
                return report;
            }
            notified.await;
        }
    }

    /// The SimpleApp handler to install on the scheduler.
    pub fn handler(&self) -> impl FnMut(&SimpleRequest) -> (i32, Bytes) + Send + 'static {
        let state = Arc::clone(&self.state);
        let finished = Arc::clone(&self.finished);
        move |request| {
            let mut state = state.lock().expect("monitor lock");
            match request.head {
                HEAD_PROGRESS if request.body.len() == PROGRESS_LEN => {
                    let mut body = request.body.clone();
                    let examples = body.get_u64_le();
                    let loss_sum = body.get_f64_le();
                    state.examples = state.examples.saturating_add(examples);
                    state.loss_sum += loss_sum;
                    state.bytes_pushed = state.bytes_pushed.saturating_add(body.get_u64_le());
                    state.bytes_pulled = state.bytes_pulled.saturating_add(body.get_u64_le());
                    let point = (state.examples as f64, loss_sum / examples.max(1) as f64);
                    state.curve.push(point);
                }
                HEAD_FINAL => match FinalReport::decode(request.body.clone()) {
                    Some(report) => {
                        state.final_report = Some(report);
                        finished.notify_waiters();
                    }
                    None => state.malformed += 1,
                },
                _ => state.malformed += 1,
            }
            (request.head, Bytes::new())
        }
    }
}

/// Sends the final report to the scheduler.
pub async fn send_final(node: &NodeHandle, report: &FinalReport) -> pslite_io::Result<()> {
    node.simple(CustomerId::new(MONITOR_APP, 0), NodeId::SCHEDULER, HEAD_FINAL, report.encode()).await?;
    Ok(())
}

/// The mean of worker losses, for the final report.
pub fn mean_loss(summaries: &[WorkerSummary]) -> f64 {
    summaries.iter().map(|s| s.last_epoch_log_loss).sum::<f64>() / summaries.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_report_round_trips_and_bad_sizes_are_refused() {
        let held_out = Evaluation { count: 10, log_loss: 0.5, accuracy: 0.75, auc: Some(0.8), majority_rate: 0.6 };
        let report = FinalReport { held_out, planted: None, train_log_loss: 0.4 };
        assert_eq!(FinalReport::decode(report.encode()), Some(report));
        assert_eq!(FinalReport::decode(Bytes::from_static(&[0; 5])), None);
    }

    #[test]
    fn max_delay_parses_numbers_and_unbounded() {
        assert_eq!("0".parse(), Ok(MaxDelay::Bounded(0)));
        assert_eq!("unbounded".parse(), Ok(MaxDelay::Unbounded));
        assert!("soon".parse::<MaxDelay>().is_err());
    }
}
