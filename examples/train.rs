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
//! cargo run --release --example train -- --replicas 2 --kill-server-at 150   # a server dies mid-run
//! ```
//!
//! `--kill-server-at STEP` (local mode) aborts one server node, as a crash
//! would, once worker 0 has pushed STEP minibatches, and starts a
//! replacement once the death is declared (`--no-restart` leaves it dead).
//! With `--replicas 2` or more the job carries on; the summary says when
//! the server was killed, when each node heard it declared dead, how long
//! worker 0 waited, when the replacement took the dead id (it learns its
//! ranges from their tails while training goes on), and when each range
//! was back to its full number of copies. With one copy of each range the
//! job stops with an error that says why.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use pslite::{
    CustomerId, Group, KvWorker, LocalCluster, NodeEvent, NodeHandle, Rank, Released, Role, Settings, REPLICAS_MAX,
};
use pslite_learn::data::{read_libsvm, Dataset, PlantedModel, SyntheticConfig};
use pslite_learn::failover::{FailoverLog, Kill, News};
use pslite_learn::job::{self, FinalReport, JobConfig, MaxDelay, Monitor, MonitorState, WorkerSummary};
use pslite_learn::optim::{Optimizer, OptimizerStore};
use pslite_learn::plot::Plot;
use tokio::sync::broadcast::error::RecvError;

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
    /// Copies of each key range, 1 to 3 and at most the servers; default 1
    /// (with a launcher: PS_REPLICAS, else 1). Overrides PS_REPLICAS.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=i64::from(REPLICAS_MAX)))]
    replicas: Option<u8>,
    /// Local mode: abort a server node, as a crash would, once worker 0 has
    /// pushed this many minibatches.
    #[arg(long, value_name = "STEP")]
    kill_server_at: Option<u64>,
    /// The rank of the server `--kill-server-at` kills.
    #[arg(long, default_value_t = 0, value_name = "RANK")]
    kill_rank: u32,
    /// Leave the killed server dead instead of starting a replacement once
    /// its death is declared (finalize then waits the recovery timeout,
    /// 60 s, for one).
    #[arg(long)]
    no_restart: bool,
}

impl Args {
    fn replicas(&self) -> u8 {
        self.replicas.unwrap_or(1)
    }

    /// What clap cannot check alone.
    fn check(&self) -> Result<(), BoxError> {
        let launched = std::env::var_os("DMLC_ROLE").is_some();
        if launched && self.kill_server_at.is_some() {
            return Err("--kill-server-at works in local mode only; under a launcher, kill a server process \
                        instead (tests/processes.rs does it with SIGKILL)"
                .into());
        }
        if !launched && u32::from(self.replicas()) > self.servers {
            return Err(format!(
                "--replicas {} needs at least as many servers (--servers {})",
                self.replicas(),
                self.servers
            )
            .into());
        }
        if self.kill_server_at.is_some() && self.kill_rank >= self.servers {
            return Err(format!("--kill-rank {}: there are only {} servers", self.kill_rank, self.servers).into());
        }
        Ok(())
    }
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
/// the summary (with the failover's, if a server was to be killed) and
/// writes the files.
async fn monitor(
    monitor: Monitor,
    args: Args,
    total_examples: u64,
    started: Instant,
    failover: Option<SharedLog>,
) -> Result<(), BoxError> {
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
    let mut summary = summary_text(&args, &report, wall, &state);
    if let Some(failover) = failover {
        summary += "\n";
        summary += lock(&failover).summary().trim_end();
    }
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
        "optimizer {}, max delay {}, replicas {}, {} examples processed in {:.2} s ({:.0} examples/s)\n\
         training log-loss (last epoch, reporting workers): {:.4}\n\
         held-out: log-loss {:.4}, accuracy {:.4}, AUC {}, majority-class rate {:.4} ({} examples)\n",
        args.optimizer.name(),
        args.max_delay,
        args.replicas(),
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
    let mut settings = LocalCluster::settings(args.servers, args.workers);
    settings.core.replicas = args.replicas();
    let mut cluster =
        LocalCluster::start_with(settings.clone(), Box::new(move |_: Rank| server_handle(optimizer))).await?;
    let watcher = Monitor::default();
    cluster.scheduler.set_simple_handler(watcher.handler()).await?;
    let started = Instant::now();
    let demo = match args.kill_server_at {
        Some(step) => Some(KillDemo::arm(&cluster, &settings, &args, step, started)?),
        None => None,
    };
    let total = data.train.len() as u64 * u64::from(args.epochs);
    let failover = demo.as_ref().map(|demo| Arc::clone(&demo.log));
    let display = tokio::spawn(monitor(watcher.clone(), args.clone(), total, started, failover));
    let shards = data.train.shards(args.workers as usize);
    let mut tasks = Vec::new();
    for (i, shard) in shards.into_iter().enumerate() {
        let worker = cluster.worker(i);
        let config = config.clone();
        let after_step = match (&demo, i) {
            (Some(demo), 0) => Some(demo.step_hook(started)),
            _ => None,
        };
        tasks.push(tokio::spawn(async move {
            match after_step {
                Some(hook) => job::run_worker_with(&worker, &shard, &config, hook).await,
                None => job::run_worker(&worker, &shard, &config).await,
            }
        }));
    }
    let mut summaries = Vec::new();
    for task in tasks {
        match task.await? {
            Ok(summary) => summaries.push(summary),
            Err(error) => {
                display.abort();
                return Err(training_failed(error, demo.as_ref(), args.replicas()));
            }
        }
    }
    report_final(&cluster.worker(0), &data, &summaries).await?;
    display.await??;
    if let Some(demo) = demo {
        demo.settle(&mut cluster).await?;
    }
    warn_missing(cluster.finalize().await?);
    Ok(())
}

type SharedLog = Arc<Mutex<FailoverLog>>;

/// How long the end of a run waits for the killed server's replacement
/// to be ready: its death is declared within the failure-detection bound
/// (seconds) of the kill, and training cannot end before it is, since
/// every server is some range's tail.
const REPLACEMENT_WAIT: Duration = Duration::from_secs(120);

fn lock(log: &SharedLog) -> std::sync::MutexGuard<'_, FailoverLog> {
    log.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `--kill-server-at`: the server to kill, the failover log, the tasks
/// that listen for membership news and start the replacement.
struct KillDemo {
    step: u64,
    victim: NodeHandle,
    victim_index: usize,
    log: SharedLog,
    listeners: Vec<tokio::task::JoinHandle<()>>,
    replacement: Option<tokio::task::JoinHandle<Result<NodeHandle, BoxError>>>,
}

impl KillDemo {
    /// Picks the victim and starts listening (before training, so no news
    /// is missed).
    fn arm(
        cluster: &LocalCluster,
        settings: &Settings,
        args: &Args,
        step: u64,
        started: Instant,
    ) -> Result<Self, BoxError> {
        let victim_index = cluster
            .servers
            .iter()
            .position(|server| server.info().rank == Some(Rank(args.kill_rank)))
            .ok_or_else(|| format!("no server has rank {}", args.kill_rank))?;
        let victim = cluster.servers[victim_index].clone();
        let mut log = FailoverLog::new(args.replicas());
        log.kill_planned(step);
        let log = Arc::new(Mutex::new(log));
        let listeners = vec![
            listen(&cluster.scheduler, "scheduler", &log, started),
            listen(&cluster.workers[0], "worker 0", &log, started),
            watch_tables(&cluster.scheduler, &log, started),
        ];
        let replacement = (!args.no_restart).then(|| {
            // As LocalCluster starts its servers: loopback, any port.
            let mut server = settings.for_role(Role::Server);
            server.core.scheduler_addr = cluster.scheduler.local_addr();
            server.bind_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
            let mut news = cluster.scheduler.events();
            let dead = victim.info().id;
            let (log, optimizer) = (Arc::clone(&log), args.optimizer);
            tokio::spawn(async move {
                loop {
                    match news.recv().await {
                        Ok(NodeEvent::Dead(id)) if id == dead => break,
                        Ok(_) | Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => return Err("scheduler stopped".into()),
                    }
                }
                lock(&log).replacement_started(started.elapsed());
                let node = pslite::start_with(server, vec![(0, server_handle(optimizer))], None).await?;
                node.wait_ready().await?;
                Ok(node)
            })
        });
        Ok(Self { step, victim, victim_index, log, listeners, replacement })
    }

    /// Worker 0's step hook: times every step and kills the victim at
    /// the chosen one.
    fn step_hook(&self, started: Instant) -> impl FnMut(u64) + Send + 'static {
        let (victim, kill_at, log) = (self.victim.clone(), self.step, Arc::clone(&self.log));
        move |step| {
            let at = started.elapsed();
            let mut log = lock(&log);
            if step == kill_at {
                let info = victim.info();
                victim.abort();
                let rank = info.rank.expect("a ready server has a rank");
                log.killed(Kill { server: info.id, rank, step, at });
            }
            log.step(step, at);
        }
    }

    /// After training: the cluster finalizes without the killed node and
    /// with its replacement, if one was started.
    async fn settle(self, cluster: &mut LocalCluster) -> Result<(), BoxError> {
        let killed = lock(&self.log).kill().is_some();
        match self.replacement {
            Some(replacement) if killed => {
                let replacement = tokio::time::timeout(REPLACEMENT_WAIT, replacement)
                    .await
                    .map_err(|_| format!("the replacement server was not ready within {REPLACEMENT_WAIT:?}"))???;
                cluster.servers[self.victim_index] = replacement;
            }
            Some(replacement) => replacement.abort(),
            None if killed => {
                cluster.servers.swap_remove(self.victim_index);
            }
            None => {}
        }
        for listener in self.listeners {
            listener.abort();
        }
        Ok(())
    }
}

/// Records the membership news `node` reports until it terminates.
fn listen(node: &NodeHandle, observer: &'static str, log: &SharedLog, started: Instant) -> tokio::task::JoinHandle<()> {
    let mut news = node.events();
    let log = Arc::clone(log);
    let node = node.clone();
    tokio::spawn(async move {
        loop {
            let news = match news.recv().await {
                Ok(NodeEvent::Dead(id)) => News::Dead(id),
                Ok(NodeEvent::Recovered(id)) => News::Recovered(id),
                Ok(NodeEvent::Terminated) | Err(RecvError::Closed) => return,
                Err(RecvError::Lagged(_)) => continue,
            };
            let mut log = lock(&log);
            log.heard(observer, news, started.elapsed());
            // The replica table changes with the news that comes with it.
            log.table(&node.chains(), started.elapsed());
        }
    })
}

/// Records every replica table `node` adopts: a learner joining a chain
/// changes the table with no membership news.
fn watch_tables(node: &NodeHandle, log: &SharedLog, started: Instant) -> tokio::task::JoinHandle<()> {
    let log = Arc::clone(log);
    let node = node.clone();
    tokio::spawn(async move {
        let mut last = node.chains();
        while let Ok(chains) = node.wait_chains(|c| *c != last).await {
            lock(&log).table(&chains, started.elapsed());
            last = chains;
        }
    })
}

/// A worker's error, said plainly when it follows the demonstration's
/// kill: with one copy of each range the killed server's keys are gone.
fn training_failed(error: pslite::Error, demo: Option<&KillDemo>, replicas: u8) -> BoxError {
    let Some(kill) = demo.and_then(|demo| lock(&demo.log).kill()) else {
        return error.into();
    };
    let killed = format!("server {} (rank {}) was killed at step {}", kill.server.get(), kill.rank.0, kill.step);
    if replicas == 1 {
        format!(
            "training stopped: {killed}, and with --replicas 1 its key range had no other copy, \
             so its part of the model is gone ({error}); run with --replicas 2 or more to survive a server's death"
        )
        .into()
    } else {
        format!("training failed although each range has {replicas} copies: {killed}, then a worker got: {error}")
            .into()
    }
}

/// A job can finish without members that died and were not replaced
/// within the recovery timeout; say so rather than finish silently.
fn warn_missing(released: Released) {
    if !released.is_complete() {
        eprintln!("finished without {:?}: dead, and not replaced within PS_RECOVERY_TIMEOUT", released.missing);
    }
}

/// One node of a cluster started by a launcher (DMLC_ROLE is set).
async fn run_role(mut args: Args) -> Result<(), BoxError> {
    let mut settings = Settings::from_env()?;
    match args.replicas {
        Some(replicas) => settings.core.replicas = replicas,
        // For the summary: what the environment chose.
        None => args.replicas = Some(settings.core.replicas),
    }
    let role = settings.core.role;
    let workers = settings.core.num_workers;
    match role {
        Role::Scheduler => {
            let watcher = Monitor::default();
            let node = pslite::start_with(settings, Vec::new(), Some(Box::new(watcher.handler()))).await?;
            node.wait_ready().await?;
            let data = load(&args)?;
            let total = data.train.len() as u64 * u64::from(args.epochs);
            monitor(watcher, args, total, Instant::now(), None).await?;
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
async fn main() -> ExitCode {
    tracing_subscriber::fmt().with_max_level(pslite::env::verbosity()).with_writer(std::io::stderr).init();
    let args = Args::parse();
    let result = match args.optimizer.check().map_err(BoxError::from).and_then(|()| args.check()) {
        Err(error) => Err(error),
        Ok(()) if std::env::var_os("DMLC_ROLE").is_some() => run_role(args).await,
        Ok(()) => run_local(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Display, not Debug: the errors here are sentences.
            eprintln!("train: {error}");
            ExitCode::FAILURE
        }
    }
}
