//! Distributed asynchronous SGD for sparse logistic regression: the
//! canonical parameter-server job.
//!
//! Workers read data and compute gradients; servers hold the weights and
//! apply updates with an optimizer handle (SGD, AdaGrad or FTRL-Proximal);
//! the scheduler shows progress and, at the end, the held-out metrics, a
//! summary file and the loss curve as SVG.
//!
//! ```text
//! cargo run --release --example train                          # local cluster, synthetic data
//! cargo run --release --example train -- --data a9a.libsvm --optimizer adagrad --max-delay 0
//! pslite-launch --servers 2 --workers 4 -- target/release/examples/train   # one process per node
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use pslite::{CustomerId, Group, KvWorker, LocalCluster, Rank, Released, Role, Settings};
use pslite_learn::data::{read_libsvm, Dataset, PlantedModel, SyntheticConfig};
use pslite_learn::job::{self, FinalReport, JobConfig, MaxDelay, Monitor, MonitorState, WorkerSummary};
use pslite_learn::optim::{Optimizer, OptimizerStore};
use pslite_learn::plot::Plot;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser, Debug, Clone)]
#[command(about = "Sparse logistic regression by asynchronous SGD on a pslite cluster")]
struct Args {
    /// Training data in libsvm/svmlight format; default: seeded synthetic data.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Synthetic examples to generate.
    #[arg(long, default_value_t = 100_000)]
    examples: usize,
    /// Fraction of the data held out for evaluation.
    #[arg(long, default_value_t = 0.2)]
    held_out_fraction: f64,
    /// Servers (local mode).
    #[arg(long, default_value_t = 2)]
    servers: u32,
    /// Workers (local mode).
    #[arg(long, default_value_t = 4)]
    workers: u32,
    /// sgd, adagrad or ftrl.
    #[arg(long, default_value = "ftrl")]
    optimizer: Optimizer,
    /// Examples per minibatch.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Passes over the data.
    #[arg(long, default_value_t = 3)]
    epochs: u32,
    /// Pushes a worker may leave unfinished: 0 sequential, N bounded delay, `unbounded` eventual.
    #[arg(long, default_value = "4")]
    max_delay: MaxDelay,
    /// Seed of the data and the shuffles.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Directory for summary.txt and loss.svg.
    #[arg(long, default_value = "runs/train")]
    out: PathBuf,
}

struct Data {
    train: Dataset,
    held_out: Dataset,
    planted: Option<PlantedModel>,
}

fn load(args: &Args) -> Result<Data, BoxError> {
    let (dataset, planted) = match &args.data {
        Some(path) => {
            let file = std::io::BufReader::new(std::fs::File::open(path)?);
            // Spread libsvm's small feature ids over the whole key space,
            // so every server gets a share of the model.
            (read_libsvm(file)?.spread_keys(), None)
        }
        None => {
            let synthetic = SyntheticConfig { examples: args.examples, seed: args.seed, ..SyntheticConfig::default() }
                .generate()?;
            (synthetic.dataset, Some(synthetic.planted))
        }
    };
    let held_out_len = ((dataset.len() as f64) * args.held_out_fraction.clamp(0.0, 0.9)) as usize;
    let (train, held_out) = dataset.split(held_out_len.max(1), args.seed);
    Ok(Data { train, held_out, planted })
}

fn job_config(args: &Args) -> JobConfig {
    JobConfig {
        optimizer: args.optimizer,
        batch_len: args.batch,
        epochs: args.epochs,
        max_delay: args.max_delay,
        report_every_batches: 10,
        seed: args.seed,
    }
}

fn server_handle(optimizer: Optimizer) -> pslite::ServerHandle {
    OptimizerStore::new(optimizer).expect("optimizer settings were checked").into()
}

/// Worker 0's last duty: evaluate the model and tell the scheduler.
async fn report_final(
    worker: &KvWorker<f32>,
    data: &Data,
    summaries: &[WorkerSummary],
) -> Result<FinalReport, BoxError> {
    let held_out = job::evaluate_remote(worker, &data.held_out).await?;
    let planted = match &data.planted {
        Some(model) => Some(model.evaluate(&data.held_out)?),
        None => None,
    };
    let report = FinalReport { held_out, planted, train_log_loss: job::mean_loss(summaries) };
    job::send_final(worker.node(), &report).await?;
    Ok(report)
}

/// Shows a live progress bar until the final report arrives, then prints
/// the summary and writes the files.
async fn monitor(monitor: Monitor, args: Args, total_examples: u64) -> Result<(), BoxError> {
    let started = Instant::now();
    let bar = ProgressBar::new(total_examples);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} examples  {per_sec}  {msg}")?
            .progress_chars("=> "),
    );
    let finished = monitor.finished();
    tokio::pin!(finished);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let report = loop {
        tokio::select! {
            report = &mut finished => break report,
            _ = tick.tick() => {
                let state = monitor.snapshot();
                bar.set_position(state.examples.min(total_examples));
                if let Some(&(_, loss)) = state.curve.last() {
                    bar.set_message(format!("loss {loss:.4}"));
                }
            }
        }
    };
    bar.finish_and_clear();
    let wall = started.elapsed();
    let state = monitor.snapshot();
    let summary = summary_text(&args, &report, wall, &state);
    println!("{summary}");
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join("summary.txt"), &summary)?;
    Plot::new("Training log-loss", "examples processed", "mean log-loss per report")
        .with_series(format!("{} τ={}", args.optimizer.name(), args.max_delay), state.curve)
        .write_svg(args.out.join("loss.svg"))?;
    println!("wrote {} and {}", args.out.join("summary.txt").display(), args.out.join("loss.svg").display());
    Ok(())
}

fn summary_text(args: &Args, report: &FinalReport, wall: Duration, state: &MonitorState) -> String {
    let examples = state.examples;
    let h = &report.held_out;
    let mut s = format!(
        "optimizer {}, max delay {}, {} examples processed in {:.2} s ({:.0} examples/s)\n\
         training log-loss (last epoch, reporting workers): {:.4}\n\
         held-out: log-loss {:.4}, accuracy {:.4}, AUC {}, majority-class rate {:.4} ({} examples)\n",
        args.optimizer.name(),
        args.max_delay,
        examples,
        wall.as_secs_f64(),
        examples as f64 / wall.as_secs_f64().max(1e-9),
        report.train_log_loss,
        h.log_loss,
        h.accuracy,
        h.auc.map_or("n/a".to_owned(), |a| format!("{a:.4}")),
        h.majority_rate,
        h.count,
    );
    if let Some(p) = &report.planted {
        s += &format!(
            "planted model on held-out: log-loss {:.4}, accuracy {:.4}, AUC {}\n",
            p.log_loss,
            p.accuracy,
            p.auc.map_or("n/a".to_owned(), |a| format!("{a:.4}"))
        );
    }
    s += &format!(
        "payload pushed {:.1} MB, pulled {:.1} MB",
        state.bytes_pushed as f64 / 1e6,
        state.bytes_pulled as f64 / 1e6
    );
    s
}

async fn run_local(args: Args) -> Result<(), BoxError> {
    let data = Arc::new(load(&args)?);
    let config = job_config(&args);
    let optimizer = args.optimizer;
    let settings = LocalCluster::settings(args.servers, args.workers);
    let cluster = LocalCluster::start_with(settings, Box::new(move |_: Rank| server_handle(optimizer))).await?;
    let watcher = Monitor::default();
    cluster.scheduler.set_simple_handler(watcher.handler()).await?;
    let total = data.train.len() as u64 * u64::from(args.epochs);
    let display = tokio::spawn(monitor(watcher.clone(), args.clone(), total));
    let shards = data.train.shards(args.workers as usize);
    let mut tasks = Vec::new();
    for (i, shard) in shards.into_iter().enumerate() {
        let worker = cluster.worker(i);
        let config = config.clone();
        tasks.push(tokio::spawn(async move { job::run_worker(&worker, &shard, &config).await }));
    }
    let mut summaries = Vec::new();
    for task in tasks {
        summaries.push(task.await??);
    }
    report_final(&cluster.worker(0), &data, &summaries).await?;
    display.await??;
    warn_missing(cluster.finalize().await?);
    Ok(())
}

/// A job can finish without members that died and were not replaced
/// within the recovery timeout; say so rather than finish silently.
fn warn_missing(released: Released) {
    if !released.is_complete() {
        eprintln!("finished without {:?}: dead, and not replaced within PS_RECOVERY_TIMEOUT", released.missing);
    }
}

/// One node of a cluster started by a launcher (DMLC_ROLE is set).
async fn run_role(args: Args) -> Result<(), BoxError> {
    let settings = Settings::from_env()?;
    let role = settings.core.role;
    let workers = settings.core.num_workers;
    match role {
        Role::Scheduler => {
            let watcher = Monitor::default();
            let node = pslite::start_with(settings, Vec::new(), Some(Box::new(watcher.handler()))).await?;
            node.wait_ready().await?;
            let data = load(&args)?;
            let total = data.train.len() as u64 * u64::from(args.epochs);
            monitor(watcher, args, total).await?;
            warn_missing(node.finalize().await?);
        }
        Role::Server => {
            let node = pslite::start_with(settings, vec![(0, server_handle(args.optimizer))], None).await?;
            node.wait_ready().await?;
            warn_missing(node.finalize().await?);
        }
        Role::Worker => {
            let node = pslite::start(settings).await?;
            node.wait_ready().await?;
            let data = load(&args)?;
            let rank = node.info().rank.expect("registered").0 as usize;
            let shard = data.train.shards(workers as usize).swap_remove(rank);
            let worker = KvWorker::new(node.clone(), CustomerId::DEFAULT);
            let summary = job::run_worker(&worker, &shard, &job_config(&args)).await?;
            // Everyone's pushes are in once the workers' barrier releases.
            warn_missing(node.barrier(Group::WORKERS).await?);
            if rank == 0 {
                report_final(&worker, &data, &[summary]).await?;
            }
            warn_missing(node.finalize().await?);
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt().with_max_level(pslite::env::verbosity()).with_writer(std::io::stderr).init();
    let args = Args::parse();
    args.optimizer.check()?;
    if std::env::var_os("DMLC_ROLE").is_some() {
        run_role(args).await
    } else {
        run_local(args).await
    }
}
