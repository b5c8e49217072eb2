//! Throughput and latency of pslite on this machine, each row next to a
//! raw tokio TCP baseline measured in the same run with the same payload
//! sizes, message count and in-flight window, as a ratio.
//!
//! ```text
//! cargo run --release -p pslite-tools --bin pslite-bench                          # the default table
//! cargo run --release -p pslite-tools --bin pslite-bench -- --mode push --sizes 1KiB --in-flight 64
//! cargo run --release -p pslite-tools --bin pslite-bench -- --kv-app              # 10M keys: one push, one pull
//! cargo run --release -p pslite-tools --bin pslite-bench -- --processes           # scheduler, servers as child processes
//! cargo run --release -p pslite-tools --bin pslite-bench -- --processes --kv-app  # with each process's peak RSS
//! cargo run --release -p pslite-tools --bin pslite-bench -- --kv-app --handle noop # protocol only: the server stores nothing
//! cargo run --release -p pslite-tools --bin pslite-bench -- --window batch        # issue a batch, wait for all of it
//! cargo run --release -p pslite-tools --bin pslite-bench -- --scaling --sizes 64KiB # 1x1, 4x1, 1x4, 4x4 clusters
//! ```
//!
//! Two raw baselines run beside every row: the naive one writes each
//! message with its own `write` (what a simple sender does), the batched
//! one gathers whatever the window allows into one large write and parses
//! replies from a reused buffer (the machine's real limit for small
//! messages). `req/raw` and `req/batched` compare pslite with each.
//!
//! By default every node runs in this process (`LocalCluster`). With
//! `--processes` the scheduler and each server are child processes of this
//! binary, started with ps-lite's `DMLC_*` environment (what
//! `pslite-launch` does); the workers, which are measured, stay here.

use std::collections::VecDeque;
use std::future::Future;
use std::io::Read;
use std::net::{Ipv4Addr, TcpListener as StdTcpListener};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use clap::{Parser, ValueEnum};
use pslite::{
    CustomerId, DType, Keys, KvHandle, LocalCluster, NodeHandle, RawKvWorker, Role, ServerHandle, Settings, Values,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

type BoxError = Box<dyn std::error::Error>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Push,
    Pull,
    PushPull,
    PushThenPull,
}

/// How requests are kept in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Window {
    /// A new request as soon as one completes (a sliding window).
    Sliding,
    /// A batch of `--in-flight` requests, then wait for all of them before
    /// the next batch (how ps-lite's size benchmark runs).
    Batch,
}

/// The server's handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum HandleKind {
    /// The default `KvStore`: sums pushes, answers pulls from the store.
    Store,
    /// Stores nothing: acknowledges pushes and answers pulls with one zero
    /// per key, as ps-lite's kv_app test server does (`--kv-app` only).
    Noop,
}

#[derive(Parser, Debug)]
#[command(about = "pslite throughput and latency beside a raw TCP baseline")]
struct Args {
    /// Modes to run.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Mode::Push, Mode::Pull, Mode::PushPull])]
    mode: Vec<Mode>,
    /// Value bytes per request (suffixes KiB, MiB).
    #[arg(long, value_delimiter = ',', default_values_t = ["1KiB".to_string(), "64KiB".to_string(), "1MiB".to_string(), "4MiB".to_string()])]
    sizes: Vec<String>,
    /// Keys per request (the values are split among them).
    #[arg(long, default_value_t = 1)]
    keys: usize,
    /// Requests in flight per worker; default 64 below 1 MiB, 4 from 1 MiB.
    #[arg(long)]
    in_flight: Option<usize>,
    /// Servers.
    #[arg(long, default_value_t = 1)]
    servers: u32,
    /// Workers.
    #[arg(long, default_value_t = 1)]
    workers: u32,
    /// Seconds per round (each of pslite and raw).
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// Rounds per row, pslite and raw taking turns; each side reports its
    /// median round, since one run on a shared machine varies by tens of
    /// percent.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Turn ACK + resend off (PS_RESEND=0).
    #[arg(long)]
    no_resend: bool,
    /// Instead: ps-lite's kv_app benchmark, 10M float keys in one push and one pull.
    #[arg(long)]
    kv_app: bool,
    /// Keys for --kv-app.
    #[arg(long, default_value_t = 10_000_000)]
    kv_app_keys: u64,
    /// Run the scheduler and each server as a child process (workers stay here).
    #[arg(long)]
    processes: bool,
    /// Runtime threads of each child process with `--processes`. One
    /// leaves the cores to the measured worker here: on 2 cores, children
    /// with 2 threads each measured 10-20% slower (1 KiB and 4 MiB pushes).
    #[arg(long, default_value_t = 1)]
    child_threads: usize,
    /// Sliding window, or batches waited for as a whole.
    #[arg(long, value_enum, default_value_t = Window::Sliding)]
    window: Window,
    /// The servers' handle.
    #[arg(long, value_enum, default_value_t = HandleKind::Store)]
    handle: HandleKind,
    /// Run every row on clusters of 1x1, 4x1, 1x4 and 4x4 workers x
    /// servers (overrides --servers and --workers), total throughput.
    #[arg(long)]
    scaling: bool,
    /// Internal: be the node `DMLC_ROLE` names (a child of `--processes`).
    #[arg(long, hide = true)]
    serve: bool,
}

fn parse_size(s: &str) -> usize {
    let s = s.trim();
    let (number, unit) = s.find(|c: char| !c.is_ascii_digit()).map_or((s, ""), |i| s.split_at(i));
    let n: usize = number.parse().unwrap_or_else(|_| panic!("bad size {s:?}"));
    n * match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        other => panic!("unknown unit {other:?}"),
    }
}

/// What one run measured.
#[derive(Default)]
struct Measured {
    requests: u64,
    bytes_up: u64,
    bytes_down: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Measured {
    fn gbps(bytes: u64, elapsed: Duration) -> f64 {
        bytes as f64 / elapsed.as_secs_f64() / 1e9
    }
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    fn percentile(&mut self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        self.latencies.sort_unstable();
        let index = ((self.latencies.len() - 1) as f64 * p).round() as usize;
        self.latencies[index]
    }
    /// The round with the median request rate.
    fn median(mut rounds: Vec<Self>) -> Self {
        rounds.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
        let middle = rounds.len() / 2;
        rounds.swap_remove(middle)
    }

    fn merge(&mut self, other: Self) {
        self.requests += other.requests;
        self.bytes_up += other.bytes_up;
        self.bytes_down += other.bytes_down;
        self.elapsed = self.elapsed.max(other.elapsed);
        self.latencies.extend(other.latencies);
    }
}

/// ps-lite's kv_app test server: stores nothing, acknowledges pushes and
/// answers a pull with one zero per key, so a row with it measures the
/// protocol alone.
struct NoopHandle;

impl KvHandle for NoopHandle {
    fn handle(&mut self, request: &pslite::ServerRequest) -> pslite::Response {
        match request.op {
            pslite::KvOp::Push => pslite::Response::ack(),
            pslite::KvOp::Pull | pslite::KvOp::PushPull => {
                let zeros = BytesMut::zeroed(request.keys.len() * request.values.dtype().size()).freeze();
                let values = Values::from_bytes(request.values.dtype(), zeros).expect("whole elements");
                pslite::Response::Ok { values, lens: None }
            }
        }
    }
}

fn make_handle(kind: HandleKind) -> ServerHandle {
    match kind {
        HandleKind::Store => pslite::KvStore::<f32>::new().into(),
        HandleKind::Noop => NoopHandle.into(),
    }
}

/// Keys spread over the key space so several servers share the load;
/// each row and worker gets its own, since a key's length is fixed by its
/// first push.
fn request_keys(keys: usize, worker: usize, row: usize) -> Keys {
    let step = u64::MAX / keys as u64;
    let offset = (row * 1024 + worker) as u64;
    let list: Vec<u64> = (0..keys as u64).map(|i| i * step + offset).collect();
    Keys::from_slice(&list)
}

/// What one row runs: the same for pslite and both raw baselines.
#[derive(Clone, Copy, Debug)]
struct Load {
    mode: Mode,
    size: usize,
    window: usize,
    pattern: Window,
    duration: Duration,
}

impl Load {
    /// Whether request number `issued` pushes and whether it pulls.
    fn kind(&self, issued: u64) -> (bool, bool) {
        match self.mode {
            Mode::Push => (true, false),
            Mode::Pull => (false, true),
            Mode::PushPull => (true, true),
            Mode::PushThenPull => (issued % 2 == 0, issued % 2 == 1),
        }
    }

    /// Whether another request may be issued with `inflight` outstanding:
    /// a sliding window refills as requests complete, a batch only once
    /// all of the last one completed (`filling` says a batch is being
    /// issued and not yet full).
    fn may_issue(&self, inflight: usize, filling: &mut bool) -> bool {
        match self.pattern {
            Window::Sliding => inflight < self.window,
            Window::Batch => {
                if inflight == 0 {
                    *filling = true;
                }
                if inflight >= self.window {
                    *filling = false;
                }
                *filling
            }
        }
    }
}

async fn run_pslite(worker: RawKvWorker, load: Load, keys: usize, (index, row): (usize, usize)) -> Measured {
    let Load { mode, size, duration, .. } = load;
    let keys = request_keys(keys, index, row);
    let floats = (size / 4).max(keys.len()) / keys.len() * keys.len();
    let values = Values::from_slice(&vec![1.0f32; floats]);
    let payload = (floats * 4) as u64;
    // Give every key its full value first, so pulls move `size` bytes.
    let ts = worker.zpush(keys.clone(), values.clone(), None, 0).await.expect("first push accepted");
    worker.wait(ts).await.expect("first push completed");
    let mut measured = Measured::default();
    let mut inflight: VecDeque<(pslite::Timestamp, Instant, bool)> = VecDeque::new();
    let started = Instant::now();
    let mut issued = 0u64;
    let mut filling = false;
    let finish = |measured: &mut Measured, issued_at: Instant, pulled: bool, pushed: bool| {
        measured.requests += 1;
        measured.latencies.push(issued_at.elapsed());
        if pushed {
            measured.bytes_up += payload;
        }
        if pulled {
            measured.bytes_down += payload;
        }
    };
    loop {
        let done_issuing = started.elapsed() >= duration;
        if done_issuing && inflight.is_empty() {
            break;
        }
        if !done_issuing && load.may_issue(inflight.len(), &mut filling) {
            let (pushes, pulls) = load.kind(issued);
            let ts = match (pushes, pulls) {
                (true, true) => worker.zpush_pull(keys.clone(), values.clone(), None, 0).await,
                (true, false) => worker.zpush(keys.clone(), values.clone(), None, 0).await,
                _ => worker.zpull(keys.clone(), DType::F32, 0).await,
            }
            .expect("request accepted");
            issued += 1;
            inflight.push_back((ts, Instant::now(), pulls));
            continue;
        }
        let (ts, at, pulls) = inflight.pop_front().expect("non-empty");
        if pulls {
            worker.wait_pull(ts).await.expect("request completed");
        } else {
            worker.wait(ts).await.expect("request completed");
        }
        let pushed = !pulls || mode == Mode::PushPull;
        finish(&mut measured, at, pulls, pushed);
    }
    measured.elapsed = started.elapsed();
    measured
}

/// Buffer size of the batched baseline's readers and writers: many small
/// messages per system call, large ones straight through.
const RAW_BUFFER: usize = 1 << 20;

/// The naive baseline's buffers hold one byte, so every read and write of
/// a header or body goes straight to the socket (tokio refuses 0).
fn raw_buffer(batched: bool) -> usize {
    if batched {
        RAW_BUFFER
    } else {
        1
    }
}

/// The same traffic over plain TCP: a length-prefixed request (with the
/// payload when it pushes) answered by a length-prefixed response (with
/// the payload when it pulls), the same window. Naive (`batched` false):
/// one `write` per message and per reply, reads straight from the socket.
/// Batched: messages gathered in a buffer and written together whenever
/// the window is full (or the server has no more complete input), replies
/// parsed from a reused read buffer.
async fn run_raw(load: Load, batched: bool) -> Measured {
    let Load { size, window, duration, .. } = load;
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (reader, writer) = stream.into_split();
        let capacity = raw_buffer(batched);
        let mut reader = BufReader::with_capacity(capacity, reader);
        let mut writer = BufWriter::with_capacity(capacity, writer);
        let mut body = vec![0u8; size + 8];
        loop {
            let mut head = [0u8; 16];
            if reader.read_exact(&mut head).await.is_err() {
                return;
            }
            let len = u64::from_le_bytes(head[0..8].try_into().unwrap()) as usize;
            let reply_len = u64::from_le_bytes(head[8..16].try_into().unwrap()) as usize;
            if body.len() < len.max(reply_len) {
                body.resize(len.max(reply_len), 0);
            }
            reader.read_exact(&mut body[..len]).await.unwrap();
            let written = if batched {
                let head = (reply_len as u64).to_le_bytes();
                writer.write_all(&head).await.and(writer.write_all(&body[..reply_len]).await)
            } else {
                let mut out = BytesMut::with_capacity(8 + reply_len);
                out.put_u64_le(reply_len as u64);
                out.put_slice(&body[..reply_len]);
                writer.write_all(&out).await
            };
            // Answer what arrived together in one write.
            let flushed = if reader.buffer().is_empty() { writer.flush().await } else { Ok(()) };
            if written.and(flushed).is_err() {
                return;
            }
        }
    });
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (reader, writer) = stream.into_split();
    let capacity = raw_buffer(batched);
    let mut reader = BufReader::with_capacity(capacity, reader);
    let mut writer = BufWriter::with_capacity(capacity, writer);
    let payload = Bytes::from(vec![1u8; size]);
    let started = Instant::now();
    // One permit per request in flight, returned by the receiver; a batch
    // takes the whole window at once, so it waits for all of the last one.
    let room = Arc::new(Semaphore::new(window));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, bool, bool)>();
    let sender_room = Arc::clone(&room);
    let sender = tokio::spawn(async move {
        let mut issued = 0u64;
        while started.elapsed() < duration {
            let permits = match load.pattern {
                Window::Sliding => 1,
                Window::Batch => window as u32,
            };
            let permit = match sender_room.try_acquire_many(permits) {
                Ok(permit) => permit,
                Err(_) => {
                    // Nothing more may go out until replies come: send
                    // what was gathered.
                    writer.flush().await.unwrap();
                    sender_room.acquire_many(permits).await.unwrap()
                }
            };
            permit.forget();
            for _ in 0..permits {
                let (pushes, pulls) = load.kind(issued);
                if tx.send((Instant::now(), pushes, pulls)).is_err() {
                    return;
                }
                let len = if pushes { size } else { 8 };
                let mut head = BytesMut::with_capacity(16 + if batched { 8 } else { len });
                head.put_u64_le(len as u64);
                head.put_u64_le(if pulls { size as u64 } else { 0 });
                if batched {
                    writer.write_all(&head).await.unwrap();
                    if pushes {
                        writer.write_all(&payload).await.unwrap();
                    } else {
                        writer.write_all(&[0; 8]).await.unwrap();
                    }
                } else {
                    if pushes {
                        head.put_slice(&payload);
                    } else {
                        head.put_u64_le(0);
                    }
                    writer.write_all(&head).await.unwrap();
                }
                issued += 1;
            }
        }
        writer.flush().await.unwrap();
    });
    let mut measured = Measured::default();
    let mut body = vec![0u8; size];
    while let Some((at, pushes, pulls)) = rx.recv().await {
        let mut head = [0u8; 8];
        reader.read_exact(&mut head).await.unwrap();
        let len = u64::from_le_bytes(head) as usize;
        reader.read_exact(&mut body[..len]).await.unwrap();
        room.add_permits(1);
        measured.requests += 1;
        measured.latencies.push(at.elapsed());
        if pushes {
            measured.bytes_up += size as u64;
        }
        if pulls {
            measured.bytes_down += size as u64;
        }
    }
    measured.elapsed = started.elapsed();
    sender.await.unwrap();
    drop(reader);
    server.abort();
    measured
}

fn size_name(size: usize) -> String {
    if size >= 1 << 20 {
        format!("{}MiB", size >> 20)
    } else if size >= 1 << 10 {
        format!("{}KiB", size >> 10)
    } else {
        format!("{size}B")
    }
}

/// How long the cluster may take to form, and to finalize, before the
/// bench gives up (a child that hangs must not hang the bench).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const FINALIZE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the children are checked on.
const CHILD_POLL: Duration = Duration::from_millis(50);
/// The line a server child prints on its stdout after finalize.
const PEAK_RSS_LINE: &str = "peak_rss_bytes=";

/// The nodes the bench runs: all in this process, or the scheduler and
/// servers as child processes with the workers here.
enum Cluster {
    InProcess(LocalCluster),
    Processes { workers: Vec<NodeHandle>, children: Children },
}

impl Cluster {
    async fn start(args: &Args, servers: u32, workers: u32) -> Result<Self, BoxError> {
        if !args.processes {
            let mut settings = LocalCluster::settings(servers, workers);
            settings.core.resend = !args.no_resend;
            let kind = args.handle;
            return Ok(Self::InProcess(
                LocalCluster::start_with(settings, Box::new(move |_| make_handle(kind))).await?,
            ));
        }
        // Ask the OS for a free port, then release it for the scheduler
        // (as pslite-launch does); if another process takes it first, the
        // scheduler fails to bind and the bench fails loudly.
        let port = StdTcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
        let env = [
            ("DMLC_PS_ROOT_URI", "127.0.0.1".to_owned()),
            ("DMLC_PS_ROOT_PORT", port.to_string()),
            ("DMLC_NUM_SERVER", servers.to_string()),
            ("DMLC_NUM_WORKER", workers.to_string()),
            ("PS_RESEND", if args.no_resend { "0" } else { "1" }.to_owned()),
        ];
        // The workers read the same environment the children see (theirs
        // plus this process's), so every node has the same settings; an
        // invalid value fails here, before any child starts.
        let settings = pslite::env::settings_from(|name| {
            if name == "DMLC_ROLE" {
                return Some("worker".to_owned());
            }
            env.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone()).or_else(|| std::env::var(name).ok())
        })?;
        let exe = std::env::current_exe()?;
        let mut children = Children(Vec::new());
        let roles = std::iter::once(("scheduler".to_owned(), "scheduler"))
            .chain((0..servers).map(|i| (format!("server {i}"), "server")));
        for (name, role) in roles {
            let child = Command::new(&exe)
                .arg("--serve")
                .arg(format!("--child-threads={}", args.child_threads.max(1)))
                .arg(format!("--handle={}", args.handle.to_possible_value().expect("a named value").get_name()))
                .envs(env.iter().map(|(n, v)| (n, v)))
                .env("DMLC_ROLE", role)
                // The child exits when this end closes: no orphans even if
                // the bench is killed outright.
                .stdin(Stdio::piped())
                .stdout(if role == "server" { Stdio::piped() } else { Stdio::inherit() })
                .spawn()
                .map_err(|error| format!("cannot start {name} ({}): {error}", exe.display()))?;
            children.0.push((name, child));
        }
        let mut nodes = Vec::new();
        for _ in 0..workers {
            nodes.push(pslite::start_with(settings.clone(), Vec::new(), None).await?);
        }
        let ready = async {
            for node in &nodes {
                node.wait_ready().await?;
            }
            Ok::<_, pslite::Error>(())
        };
        match children.watch(false, tokio::time::timeout(READY_TIMEOUT, ready)).await? {
            Ok(ready) => ready?,
            Err(_) => return Err(format!("the cluster did not form within {READY_TIMEOUT:?}").into()),
        }
        Ok(Self::Processes { workers: nodes, children })
    }

    fn workers(&self) -> usize {
        match self {
            Self::InProcess(cluster) => cluster.workers.len(),
            Self::Processes { workers, .. } => workers.len(),
        }
    }

    fn worker(&self, index: usize) -> RawKvWorker {
        match self {
            Self::InProcess(cluster) => cluster.raw_worker(index),
            Self::Processes { workers, .. } => RawKvWorker::new(workers[index].clone(), CustomerId::DEFAULT),
        }
    }

    /// Runs `work`; with child processes, one that exits meanwhile is an
    /// error instead of a hang.
    async fn watch<T>(&mut self, work: impl Future<Output = T>) -> Result<T, BoxError> {
        match self {
            Self::InProcess(_) => Ok(work.await),
            Self::Processes { children, .. } => children.watch(false, work).await,
        }
    }

    /// Finalizes every node (a barrier over all) and, with child
    /// processes, waits for each; returns each server child's peak RSS.
    async fn finalize(self) -> Result<Vec<u64>, BoxError> {
        match self {
            Self::InProcess(cluster) => {
                complete(cluster.finalize().await?)?;
                Ok(Vec::new())
            }
            Self::Processes { workers, mut children } => {
                let finals: Vec<_> =
                    workers.into_iter().map(|node| tokio::spawn(async move { node.finalize().await })).collect();
                let finalized = async {
                    for task in finals {
                        complete(task.await??)?;
                    }
                    Ok::<_, BoxError>(())
                };
                match children.watch(true, tokio::time::timeout(FINALIZE_TIMEOUT, finalized)).await? {
                    Ok(finalized) => finalized?,
                    Err(_) => return Err(format!("the cluster did not finalize within {FINALIZE_TIMEOUT:?}").into()),
                }
                children.finish().await
            }
        }
    }
}

/// The child processes, scheduler first. Dropping them kills and reaps
/// whichever still run, so an error anywhere leaves no orphans.
struct Children(Vec<(String, Child)>);

impl Children {
    /// Runs `work` while checking on the children: one that exits with an
    /// error, or at all before finalize (`finalizing` false), ends it.
    async fn watch<T>(&mut self, finalizing: bool, work: impl Future<Output = T>) -> Result<T, BoxError> {
        let failed = async {
            loop {
                for (name, child) in &mut self.0 {
                    match child.try_wait() {
                        Ok(None) => {}
                        Ok(Some(status)) if finalizing && status.success() => {}
                        Ok(Some(status)) => return format!("{name} exited with {status} before the bench ended"),
                        Err(error) => return format!("cannot check on {name}: {error}"),
                    }
                }
                tokio::time::sleep(CHILD_POLL).await;
            }
        };
        tokio::select! {
            result = work => Ok(result),
            failure = failed => Err(failure.into()),
        }
    }

    /// Waits for every child to exit (0, or it is an error) and returns
    /// the peak RSS each server printed.
    async fn finish(&mut self) -> Result<Vec<u64>, BoxError> {
        let deadline = Instant::now() + FINALIZE_TIMEOUT;
        let mut peaks = Vec::new();
        for (name, child) in &mut self.0 {
            // Poll rather than `wait`, which would close the child's stdin
            // (its cue to exit at once) before it printed its peak.
            let status = loop {
                if let Some(status) = child.try_wait()? {
                    break status;
                }
                if Instant::now() >= deadline {
                    return Err(format!("{name} did not exit after finalize").into());
                }
                tokio::time::sleep(CHILD_POLL).await;
            };
            if !status.success() {
                return Err(format!("{name} exited with {status}").into());
            }
            if let Some(mut stdout) = child.stdout.take() {
                let mut output = String::new();
                stdout.read_to_string(&mut output)?;
                let peak = output
                    .lines()
                    .find_map(|line| line.strip_prefix(PEAK_RSS_LINE))
                    .and_then(|value| value.trim().parse().ok())
                    .ok_or_else(|| format!("{name} printed no {PEAK_RSS_LINE}N line: {output:?}"))?;
                peaks.push(peak);
            }
        }
        self.0.clear();
        Ok(peaks)
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A child of `--processes`: the scheduler or a server, as `DMLC_ROLE`
/// says. A server prints its peak RSS on stdout once finalized.
async fn serve(kind: HandleKind) -> Result<(), BoxError> {
    tracing_subscriber::fmt().with_max_level(pslite::env::verbosity()).with_writer(std::io::stderr).init();
    // The bench holds our stdin open; its end means the bench is gone.
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        eprintln!("pslite-bench --serve: the bench process is gone; exiting");
        std::process::exit(1);
    });
    let settings = Settings::from_env()?;
    let role = settings.core.role;
    let handles: Vec<(u32, ServerHandle)> = match role {
        Role::Scheduler => Vec::new(),
        Role::Server => vec![(0, make_handle(kind))],
        Role::Worker => return Err("--serve runs a scheduler or a server, not a worker".into()),
    };
    let node = pslite::start_with(settings, handles, None).await?;
    node.wait_ready().await?;
    complete(node.finalize().await?)?;
    if role == Role::Server {
        println!("{PEAK_RSS_LINE}{}", peak_rss_bytes());
    }
    Ok(())
}

async fn table(args: &Args) -> Result<(), BoxError> {
    let shapes = if args.scaling { vec![(1, 1), (4, 1), (1, 4), (4, 4)] } else { vec![(args.workers, args.servers)] };
    println!(
        "{} key(s)/request, resend {}, {} window, {}; raw = a tokio TCP connection per worker, same sizes and window \
         (naive: a write per message; batched: gathered writes)",
        args.keys,
        if args.no_resend { "off" } else { "on" },
        match args.window {
            Window::Sliding => "sliding",
            Window::Batch => "batch",
        },
        if args.processes {
            "separate processes (scheduler and servers as children, workers here)"
        } else {
            "in one process"
        },
    );
    println!(
        "{:<5} {:<12} {:>6} {:>6} | {:>8} {:>8} {:>10} {:>9} {:>9} | {:>8} {:>10} {:>9} | {:>10} | {:>6} {:>7} {:>9} {:>11}",
        "wxs",
        "mode",
        "size",
        "window",
        "up GB/s",
        "dn GB/s",
        "req/s",
        "p50",
        "p99",
        "raw GB/s",
        "raw req/s",
        "raw p50",
        "batch req/s",
        "ratio",
        "req/raw",
        "req/batch",
        "rounds"
    );
    let mut row = 0;
    for (workers, servers) in shapes {
        let mut cluster = Cluster::start(args, servers, workers).await?;
        for &mode in &args.mode {
            for size in args.sizes.iter().map(|s| parse_size(s)) {
                row += 1;
                let window = args.in_flight.unwrap_or(if size >= 1 << 20 { 4 } else { 64 });
                let load =
                    Load { mode, size, window, pattern: args.window, duration: Duration::from_secs_f64(args.seconds) };
                let mut ours_rounds = Vec::new();
                let mut raw_rounds = Vec::new();
                let mut batched_rounds = Vec::new();
                for _ in 0..args.repeat.max(1) {
                    let mut ours = Measured::default();
                    // A JoinSet aborts its tasks when dropped, e.g. on an error.
                    let mut tasks = tokio::task::JoinSet::new();
                    for i in 0..cluster.workers() {
                        let worker = cluster.worker(i);
                        let keys = args.keys;
                        tasks.spawn(async move { run_pslite(worker, load, keys, (i, row)).await });
                    }
                    cluster
                        .watch(async {
                            while let Some(measured) = tasks.join_next().await {
                                ours.merge(measured?);
                            }
                            Ok::<_, tokio::task::JoinError>(())
                        })
                        .await??;
                    ours_rounds.push(ours);
                    raw_rounds.push(run_raw_connections(load, workers, false).await);
                    batched_rounds.push(run_raw_connections(load, workers, true).await);
                }
                let round_ratios: Vec<f64> =
                    ours_rounds.iter().zip(&raw_rounds).map(|(ours, raw)| ours.rate() / raw.rate()).collect();
                let spread = (
                    round_ratios.iter().copied().fold(f64::INFINITY, f64::min),
                    round_ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                );
                let mut ours = Measured::median(ours_rounds);
                let mut raw = Measured::median(raw_rounds);
                let batched = Measured::median(batched_rounds);
                let (up, down) =
                    (Measured::gbps(ours.bytes_up, ours.elapsed), Measured::gbps(ours.bytes_down, ours.elapsed));
                let (raw_up, raw_down) =
                    (Measured::gbps(raw.bytes_up, raw.elapsed), Measured::gbps(raw.bytes_down, raw.elapsed));
                let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
                println!(
                    "{:<5} {:<12} {:>6} {:>6} | {:>8.3} {:>8.3} {:>10.0} {:>9.1?} {:>9.1?} | {:>8.3} {:>10.0} {:>9.1?} | {:>10.0} | {:>6.2} {:>7.2} {:>9.2} {:>11}",
                    format!("{workers}x{servers}"),
                    format!("{mode:?}"),
                    size_name(size),
                    window,
                    up,
                    down,
                    ours.rate(),
                    ours.percentile(0.5),
                    ours.percentile(0.99),
                    raw_up.max(raw_down),
                    raw.rate(),
                    raw.percentile(0.5),
                    batched.rate(),
                    ratio(up.max(down), raw_up.max(raw_down)),
                    ratio(ours.rate(), raw.rate()),
                    ratio(ours.rate(), batched.rate()),
                    format!("{:.2}-{:.2}", spread.0, spread.1),
                );
            }
        }
        cluster.finalize().await?;
    }
    println!(
        "each side: the median of {} round(s) of {:.1} s, pslite and raw taking turns; ratio = pslite/raw payload GB/s \
         (the busier direction); req/raw, req/batch = pslite requests/s over each baseline's; rounds = lowest-highest \
         req/raw of a round with its raw turn",
        args.repeat.max(1),
        args.seconds
    );
    Ok(())
}

/// `connections` raw connections at once (one per pslite worker), merged.
async fn run_raw_connections(load: Load, connections: u32, batched: bool) -> Measured {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections.max(1) {
        tasks.spawn(run_raw(load, batched));
    }
    let mut merged = Measured::default();
    while let Some(measured) = tasks.join_next().await {
        merged.merge(measured.expect("raw baseline task"));
    }
    merged
}

fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// What one kv_app round measured.
struct KvAppRound {
    push: Duration,
    pull: Duration,
    /// Peak RSS of this process (the worker, or the whole cluster).
    peak: u64,
    /// Peak RSS of each server process (separate processes only).
    server_peaks: Vec<u64>,
}

/// ps-lite's kv_app: `--repeat` rounds, each on a fresh cluster, then the
/// median round. Rounds vary: the first after a pause is often slower, its
/// memory freshly faulted in.
async fn kv_app(args: &Args) -> Result<(), BoxError> {
    let n = args.kv_app_keys;
    let payload = n * (8 + 4);
    let mb = |bytes: u64| bytes as f64 / 1e6;
    let where_ = if args.processes { "separate processes" } else { "one process" };
    let handle = match args.handle {
        HandleKind::Store => "KvStore (sums into a store)",
        HandleKind::Noop => "no-op handle (stores nothing, pulls answered with zeros)",
    };
    println!(
        "kv_app: {n} f32 keys in one push, then one pull; {} server(s), {where_}, {handle}; payload {:.0} MB (keys + values)",
        args.servers,
        mb(payload)
    );
    let mut rounds = Vec::new();
    let mut raw_rounds = Vec::new();
    for round in 1..=args.repeat.max(1) {
        let r = kv_app_round(args).await?;
        let raw = kv_app_raw(n).await;
        println!(
            "round {round} raw TCP: push {:.0} ms, pull {:.0} ms, total {:.0} ms",
            raw.0.as_secs_f64() * 1e3,
            raw.1.as_secs_f64() * 1e3,
            (raw.0 + raw.1).as_secs_f64() * 1e3,
        );
        raw_rounds.push(raw);
        let peaks = if r.server_peaks.is_empty() {
            format!("peak RSS {:.0} MB ({:.2}x payload, the whole cluster)", mb(r.peak), r.peak as f64 / payload as f64)
        } else {
            let servers: Vec<String> = r
                .server_peaks
                .iter()
                .enumerate()
                .map(|(i, &p)| format!("server {i} {:.0} MB ({:.2}x)", mb(p), p as f64 / payload as f64))
                .collect();
            format!(
                "peak RSS: worker {:.0} MB ({:.2}x), {}",
                mb(r.peak),
                r.peak as f64 / payload as f64,
                servers.join(", ")
            )
        };
        println!(
            "round {round}: push {:.0} ms, pull {:.0} ms, total {:.0} ms; {peaks}",
            r.push.as_secs_f64() * 1e3,
            r.pull.as_secs_f64() * 1e3,
            (r.push + r.pull).as_secs_f64() * 1e3,
        );
        rounds.push(r);
    }
    let median = |mut times: Vec<Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    let push = median(rounds.iter().map(|r| r.push).collect());
    let pull = median(rounds.iter().map(|r| r.pull).collect());
    let total = median(rounds.iter().map(|r| r.push + r.pull).collect());
    // This process's peak is its first round's: later rounds start with
    // what the allocator kept of earlier ones. Servers are fresh processes
    // every round, so their highest peak counts.
    let peak = rounds[0].peak;
    let server_peak = rounds.iter().flat_map(|r| r.server_peaks.iter().copied()).max();
    let peaks = match server_peak {
        Some(server) => format!(
            "peak RSS: worker {:.2}x (round 1), server {:.2}x (highest) the payload",
            peak as f64 / payload as f64,
            server as f64 / payload as f64
        ),
        None => format!("peak RSS {:.2}x the payload (round 1, whole cluster)", peak as f64 / payload as f64),
    };
    println!(
        "median of {} round(s): push {:.0} ms, pull {:.0} ms, total {:.0} ms; {peaks}",
        rounds.len(),
        push.as_secs_f64() * 1e3,
        pull.as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e3,
    );
    let raw_total = median(raw_rounds.iter().map(|r| r.0 + r.1).collect());
    println!(
        "raw TCP carrying the same bytes (median {:.0} ms): pslite total = {:.2}x raw",
        raw_total.as_secs_f64() * 1e3,
        total.as_secs_f64() / raw_total.as_secs_f64()
    );
    Ok(())
}

/// kv_app's bytes over one plain TCP connection, as fast as it carries
/// them: the push sends every key and value (12 bytes a key) and waits
/// for an 8-byte ack; the pull sends every key and reads a value per key
/// back. The server only reads and writes, so this is the floor for
/// pslite's kv_app row.
async fn kv_app_raw(n: u64) -> (Duration, Duration) {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let n = n as usize;
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        stream.set_nodelay(true).unwrap();
        let mut buf = vec![0u8; n * 12];
        stream.read_exact(&mut buf).await.unwrap();
        stream.write_all(&[0; 8]).await.unwrap();
        stream.read_exact(&mut buf[..n * 8]).await.unwrap();
        stream.write_all(&buf[..n * 4]).await.unwrap();
    });
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let up = vec![1u8; n * 12];
    let mut down = vec![0u8; n * 4];
    let started = Instant::now();
    stream.write_all(&up).await.unwrap();
    stream.read_exact(&mut down[..8]).await.unwrap();
    let push = started.elapsed();
    let started = Instant::now();
    stream.write_all(&up[..n * 8]).await.unwrap();
    stream.read_exact(&mut down).await.unwrap();
    let pull = started.elapsed();
    server.await.unwrap();
    (push, pull)
}

async fn kv_app_round(args: &Args) -> Result<KvAppRound, BoxError> {
    let n = args.kv_app_keys;
    let mut cluster = Cluster::start(args, args.servers, args.workers.max(1)).await?;
    let worker = cluster.worker(0);
    // Build the buffers directly as bytes: the zero-copy path (ZPush).
    let step = u64::MAX / n;
    let mut key_bytes = BytesMut::with_capacity(n as usize * 8);
    let mut value_bytes = BytesMut::with_capacity(n as usize * 4);
    for i in 0..n {
        key_bytes.put_u64_le(i * step);
        value_bytes.put_f32_le(1.0);
    }
    let keys = Keys::from_bytes(key_bytes.freeze()).expect("whole keys");
    let values = Values::from_bytes(DType::F32, value_bytes.freeze()).expect("whole values");
    // Peak RSS counts from here: this round's buffers, not earlier rounds'.
    reset_peak_rss();
    let (push, pull) = cluster
        .watch(async {
            let started = Instant::now();
            let ts = worker.zpush(keys.clone(), values, None, 0).await?;
            worker.wait(ts).await?;
            let push_time = started.elapsed();
            let started = Instant::now();
            let ts = worker.zpull(keys, DType::F32, 0).await?;
            let pulled = worker.wait_pull(ts).await?;
            let pull_time = started.elapsed();
            assert_eq!(pulled.values.len() as u64, n);
            Ok::<_, pslite::Error>((push_time, pull_time))
        })
        .await??;
    let peak = peak_rss_bytes();
    let server_peaks = cluster.finalize().await?;
    Ok(KvAppRound { push, pull, peak, server_peaks })
}

/// Resets this process's peak RSS (VmHWM) to its current RSS, so a round
/// measures its own peak (Linux: writing 5 to /proc/self/clear_refs).
fn reset_peak_rss() {
    if let Err(error) = std::fs::write("/proc/self/clear_refs", "5") {
        eprintln!("pslite-bench: could not reset the peak RSS ({error}); peaks include earlier rounds");
    }
}

fn main() -> ExitCode {
    // A test that starts the bench bound to itself takes it down with it.
    if let Err(error) = pslite_tools::parent::honour() {
        eprintln!("pslite-bench: {error}");
        return ExitCode::FAILURE;
    }
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(if args.serve { args.child_threads.max(1) } else { 2 })
        .enable_all()
        .build()
        .expect("runtime");
    let (who, result) = runtime.block_on(async {
        if args.serve {
            ("pslite-bench --serve", serve(args.handle).await)
        } else if args.handle == HandleKind::Noop && !args.kv_app {
            (
                "pslite-bench",
                Err("--handle noop answers kv_app's pulls (one value per key); use it with --kv-app".into()),
            )
        } else if args.kv_app {
            ("pslite-bench", kv_app(&args).await)
        } else {
            ("pslite-bench", table(&args).await)
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{who}: {error}");
            ExitCode::FAILURE
        }
    }
}

/// A benchmark whose cluster lost a member measured something else: an
/// error, not a figure.
fn complete(released: pslite::Released) -> Result<(), BoxError> {
    if released.is_complete() {
        Ok(())
    } else {
        Err(format!("nodes {:?} died during the run", released.missing).into())
    }
}
