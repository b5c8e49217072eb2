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
//! cargo run --release -p pslite-tools --bin pslite-bench -- --replicas            # R = 2 and 3 as a ratio of R = 1
//! cargo run --release -p pslite-tools --bin pslite-bench -- --failover            # kill a server: the gap in pushes
//! ```
//!
//! `--replicas` runs three clusters of 3 servers and 1 worker side by side,
//! with 1, 2 and 3 copies of each key range, taking turns round by round,
//! and reports 2 and 3 against 1. `--failover` kills a server of a cluster
//! with 2 copies while a worker pushes to every range, `--kills` times, and
//! reports how long the range the dead server headed took no pushes,
//! against the heartbeat timeout that bounds its detection.
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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use clap::{Parser, ValueEnum};
use pslite::{
    Chains, CustomerId, DType, Keys, KvHandle, LocalCluster, NodeEvent, NodeHandle, NodeId, Rank, RawKvWorker, Role,
    ServerHandle, ServerRanges, Settings, Values,
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
    /// Instead: push, pull and push_pull on 3 servers and 1 worker with
    /// 1, 2 and 3 copies of each key range (a cluster each, rounds taking
    /// turns), and a 1 KiB push with one in flight for latency; 2 and 3
    /// as a ratio of 1. Requests carry at least one key per range.
    #[arg(long)]
    replicas: bool,
    /// Instead: `--kills` times, start 3 servers with 2 copies of each
    /// range, push to every range, kill a server (SIGKILL with
    /// `--processes`) and time how long until a push to the range it
    /// headed is acknowledged again.
    #[arg(long)]
    failover: bool,
    /// Servers killed by --failover, one per fresh cluster.
    #[arg(long, default_value_t = 10)]
    kills: usize,
    /// Heartbeat interval of --failover, in seconds.
    #[arg(long, default_value_t = 0.2)]
    heartbeat_interval: f64,
    /// Heartbeat timeout of --failover, in seconds: silence after which a
    /// node is declared dead.
    #[arg(long, default_value_t = 1.0)]
    heartbeat_timeout: f64,
    /// Internal: be the node `DMLC_ROLE` names (a child of `--processes`).
    #[arg(long, hide = true)]
    serve: bool,
    /// Internal: a child of `--failover`, whose finalize may miss the
    /// killed server.
    #[arg(long, hide = true)]
    deaths_expected: bool,
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
    run_raw_chain(load, batched, 1).await
}

/// [`run_raw`] through a chain of `hops` plain TCP servers: each but the
/// last passes every request on to the next as it arrived, and every
/// reply back. What moving the same bytes `hops` times costs on this
/// machine, the bound for a replicated range whose copies share it.
async fn run_raw_chain(load: Load, batched: bool, hops: usize) -> Measured {
    let Load { size, window, duration, .. } = load;
    let mut next = None;
    let mut servers = Vec::new();
    for _ in 0..hops.max(1) {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        servers.push(tokio::spawn(raw_serve(listener, size, batched, next)));
        next = Some(addr);
    }
    let addr = next.expect("one server at least");
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
    for server in servers {
        server.abort();
    }
    measured
}

/// One raw server: answers each request, or with `next`, passes it on
/// and passes the reply back.
async fn raw_serve(listener: TcpListener, size: usize, batched: bool, next: Option<std::net::SocketAddr>) {
    let (stream, _) = listener.accept().await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (reader, writer) = stream.into_split();
    let capacity = raw_buffer(batched);
    let mut reader = BufReader::with_capacity(capacity, reader);
    let mut upstream = Some(BufWriter::with_capacity(capacity, writer));
    let mut body = vec![0u8; size + 8];
    let mut onward = match next {
        None => None,
        Some(addr) => {
            let mut writer = upstream.take().expect("not taken yet");
            let stream = TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (replies, requests) = stream.into_split();
            let mut replies = BufReader::with_capacity(capacity, replies);
            // Replies come back in order: each goes upstream as it arrives.
            tokio::spawn(async move {
                let mut reply = vec![0u8; size + 8];
                loop {
                    let mut head = [0u8; 8];
                    if replies.read_exact(&mut head).await.is_err() {
                        return;
                    }
                    let len = u64::from_le_bytes(head) as usize;
                    if reply.len() < len {
                        reply.resize(len, 0);
                    }
                    let read = replies.read_exact(&mut reply[..len]).await;
                    let written = writer.write_all(&head).await.and(writer.write_all(&reply[..len]).await);
                    let flushed = if replies.buffer().is_empty() { writer.flush().await } else { Ok(()) };
                    if read.and(written).and(flushed).is_err() {
                        return;
                    }
                }
            });
            Some(BufWriter::with_capacity(capacity, requests))
        }
    };
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
        if let Some(onward) = onward.as_mut() {
            let written = onward.write_all(&head).await.and(onward.write_all(&body[..len]).await);
            let flushed = if reader.buffer().is_empty() { onward.flush().await } else { Ok(()) };
            if written.and(flushed).is_err() {
                return;
            }
            continue;
        }
        let writer = upstream.as_mut().expect("the last server answers itself");
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

/// What `--replicas` and `--failover` change in a cluster's settings; the
/// default changes nothing, so the other modes run as they always did.
#[derive(Clone, Copy, Debug, Default)]
struct Tuning {
    /// Copies of each key range (`PS_REPLICAS`).
    replicas: Option<u8>,
    /// Heartbeat interval and timeout (`PS_HEARTBEAT_*`).
    heartbeat: Option<(Duration, Duration)>,
    /// How long finalize waits for a dead member's replacement
    /// (`PS_RECOVERY_TIMEOUT`): the killed server never comes back.
    recovery_timeout: Option<Duration>,
    /// A member will be killed: child processes accept its absence at
    /// finalize (the bench checks who was missing itself).
    deaths_expected: bool,
}

/// The nodes the bench runs: all in this process, or the scheduler and
/// servers as child processes with the workers here.
enum Cluster {
    /// `killed`: the servers stopped by `kill_server`, left out of finalize.
    InProcess {
        cluster: LocalCluster,
        killed: Vec<NodeId>,
    },
    Processes {
        workers: Vec<NodeHandle>,
        children: Children,
    },
}

impl Cluster {
    async fn start(args: &Args, servers: u32, workers: u32, tuning: &Tuning) -> Result<Self, BoxError> {
        if !args.processes {
            let mut settings = LocalCluster::settings(servers, workers);
            settings.core.resend = !args.no_resend;
            if let Some(replicas) = tuning.replicas {
                settings.core.replicas = replicas;
            }
            if let Some((interval, timeout)) = tuning.heartbeat {
                settings.core = settings.core.heartbeat(interval, timeout);
            }
            if let Some(timeout) = tuning.recovery_timeout {
                settings.core.recovery_timeout = timeout;
            }
            let kind = args.handle;
            let cluster = LocalCluster::start_with(settings, Box::new(move |_| make_handle(kind))).await?;
            return Ok(Self::InProcess { cluster, killed: Vec::new() });
        }
        // Ask the OS for a free port, then release it for the scheduler
        // (as pslite-launch does); if another process takes it first, the
        // scheduler fails to bind and the bench fails loudly.
        let port = StdTcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
        let mut env = vec![
            ("DMLC_PS_ROOT_URI", "127.0.0.1".to_owned()),
            ("DMLC_PS_ROOT_PORT", port.to_string()),
            ("DMLC_NUM_SERVER", servers.to_string()),
            ("DMLC_NUM_WORKER", workers.to_string()),
            ("PS_RESEND", if args.no_resend { "0" } else { "1" }.to_owned()),
        ];
        if let Some(replicas) = tuning.replicas {
            env.push(("PS_REPLICAS", replicas.to_string()));
        }
        if let Some((interval, timeout)) = tuning.heartbeat {
            env.push(("PS_HEARTBEAT_INTERVAL", interval.as_secs_f64().to_string()));
            env.push(("PS_HEARTBEAT_TIMEOUT", timeout.as_secs_f64().to_string()));
        }
        if let Some(timeout) = tuning.recovery_timeout {
            env.push(("PS_RECOVERY_TIMEOUT", timeout.as_secs_f64().to_string()));
        }
        // The workers read the same environment the children see (theirs
        // plus this process's), so every node has the same settings; an
        // invalid value fails here, before any child starts.
        let settings = pslite::env::settings_from(|name| {
            if name == "DMLC_ROLE" {
                return Some("worker".to_owned());
            }
            env.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone()).or_else(|| std::env::var(name).ok())
        })?;
        // The children read the same variables: a build that ignored one
        // would measure another cluster than the one asked for.
        if tuning.replicas.is_some_and(|replicas| replicas != settings.core.replicas) {
            return Err(format!("PS_REPLICAS={:?} was not taken up by the settings", tuning.replicas).into());
        }
        let exe = std::env::current_exe()?;
        let mut children = Children(Vec::new());
        let roles = std::iter::once(("scheduler".to_owned(), "scheduler"))
            .chain((0..servers).map(|i| (format!("server {i}"), "server")));
        for (name, role) in roles {
            let child = Command::new(&exe)
                .arg("--serve")
                .arg(format!("--child-threads={}", args.child_threads.max(1)))
                .arg(format!("--handle={}", args.handle.to_possible_value().expect("a named value").get_name()))
                .args(tuning.deaths_expected.then_some("--deaths-expected"))
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
            Self::InProcess { cluster, .. } => cluster.workers.len(),
            Self::Processes { workers, .. } => workers.len(),
        }
    }

    fn worker(&self, index: usize) -> RawKvWorker {
        match self {
            Self::InProcess { cluster, .. } => cluster.raw_worker(index),
            Self::Processes { workers, .. } => RawKvWorker::new(workers[index].clone(), CustomerId::DEFAULT),
        }
    }

    /// Stops server `index` (start order, not rank) as a crash would: its
    /// tasks aborted in this process, or its process sent SIGKILL. No
    /// finalize, no goodbye; the others find out through heartbeats.
    /// Returns its id when this process knows it (not for a child).
    fn kill_server(&mut self, index: usize) -> Result<Option<NodeId>, BoxError> {
        match self {
            Self::InProcess { cluster, killed } => {
                let server = &cluster.servers[index];
                server.abort();
                killed.push(server.info().id);
                Ok(Some(server.info().id))
            }
            Self::Processes { children, .. } => {
                children.kill(&format!("server {index}"))?;
                Ok(None)
            }
        }
    }

    /// Bytes the servers received and the workers sent so far, summed
    /// (in this process only: children are not asked). Their difference
    /// over a round is what servers sent each other, chains forwarding
    /// pushes above all (plus a few heartbeats).
    async fn traffic(&self) -> Result<Option<(u64, u64)>, BoxError> {
        let Self::InProcess { cluster, .. } = self else {
            return Ok(None);
        };
        let (mut servers_in, mut workers_out) = (0, 0);
        for server in &cluster.servers {
            servers_in += server.stats().await?.bytes_in;
        }
        for worker in &cluster.workers {
            workers_out += worker.stats().await?.bytes_out;
        }
        Ok(Some((servers_in, workers_out)))
    }

    /// Runs `work`; with child processes, one that exits meanwhile is an
    /// error instead of a hang.
    async fn watch<T>(&mut self, work: impl Future<Output = T>) -> Result<T, BoxError> {
        match self {
            Self::InProcess { .. } => Ok(work.await),
            Self::Processes { children, .. } => children.watch(false, work).await,
        }
    }

    /// Finalizes every node still running (a barrier over all) and, with
    /// child processes, waits for each; returns each server child's peak
    /// RSS. No node may report a member missing that is not in `dead`
    /// (the killed servers).
    async fn finalize(self, dead: &[NodeId]) -> Result<Vec<u64>, BoxError> {
        match self {
            Self::InProcess { cluster, killed } if killed.is_empty() => {
                as_expected(cluster.finalize().await?, dead)?;
                Ok(Vec::new())
            }
            Self::InProcess { cluster, killed } => {
                let finals: Vec<_> = cluster
                    .nodes()
                    .filter(|node| !killed.contains(&node.info().id))
                    .map(|node| {
                        let node = node.clone();
                        tokio::spawn(async move { node.finalize().await })
                    })
                    .collect();
                let finalized = async {
                    for task in finals {
                        as_expected(task.await??, dead)?;
                    }
                    Ok::<_, BoxError>(())
                };
                match tokio::time::timeout(FINALIZE_TIMEOUT, finalized).await {
                    Ok(finalized) => finalized?,
                    Err(_) => return Err(format!("the cluster did not finalize within {FINALIZE_TIMEOUT:?}").into()),
                }
                Ok(Vec::new())
            }
            Self::Processes { workers, mut children } => {
                let finals: Vec<_> =
                    workers.into_iter().map(|node| tokio::spawn(async move { node.finalize().await })).collect();
                let finalized = async {
                    for task in finals {
                        as_expected(task.await??, dead)?;
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

    /// Kills the child called `name` (SIGKILL) and reaps it; it is no
    /// longer watched.
    fn kill(&mut self, name: &str) -> Result<(), BoxError> {
        let index = self.0.iter().position(|(n, _)| n == name).ok_or_else(|| format!("no child called {name}"))?;
        let (_, mut child) = self.0.remove(index);
        child.kill()?;
        child.wait()?;
        Ok(())
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
/// says. A server prints its peak RSS on stdout once finalized. With
/// `deaths_expected` (`--failover` kills a server) finalize may miss
/// members: the bench checks who.
async fn serve(kind: HandleKind, deaths_expected: bool) -> Result<(), BoxError> {
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
    let released = node.finalize().await?;
    if !deaths_expected {
        complete(released)?;
    }
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
        let mut cluster = Cluster::start(args, servers, workers, &Tuning::default()).await?;
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
                    ours_rounds.push(pslite_round(&mut cluster, load, args.keys, row).await?);
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
        cluster.finalize(&[]).await?;
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

/// One round of `load` on every worker of `cluster` at once, merged.
async fn pslite_round(cluster: &mut Cluster, load: Load, keys: usize, row: usize) -> Result<Measured, BoxError> {
    let mut ours = Measured::default();
    // A JoinSet aborts its tasks when dropped, e.g. on an error.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..cluster.workers() {
        let worker = cluster.worker(i);
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
    Ok(ours)
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

/// Servers of the `--replicas` and `--failover` clusters: enough for three
/// copies of every range.
const REPLICA_SERVERS: u32 = 3;
/// The copies `--replicas` compares, the baseline first.
const REPLICA_COUNTS: [u8; 3] = [1, 2, 3];

/// Push, pull and push_pull with 1, 2 and 3 copies of each key range, on
/// three clusters that take turns round by round, so the ratios to one
/// copy come from the same minutes of the same machine. Every replica of
/// every cluster shares this machine's cores: the ratios say what the
/// extra copies cost here, not what they cost on separate hosts.
async fn replicas_table(args: &Args) -> Result<(), BoxError> {
    // One key per range at least, so every chain carries its share; with
    // one key a request would only ever reach the first range.
    let keys = args.keys.max(REPLICA_SERVERS as usize);
    let reached = ranges_reached(keys, REPLICA_SERVERS);
    if reached != REPLICA_SERVERS as usize {
        return Err(format!("{keys} keys per request reach {reached} of {REPLICA_SERVERS} ranges").into());
    }
    println!(
        "replicas: {REPLICA_SERVERS} servers x 1 worker, one cluster per R = 1, 2, 3 ({}); {keys} key(s)/request \
         spread over all {REPLICA_SERVERS} ranges; resend {}, {} window",
        if args.processes { "scheduler and servers as child processes" } else { "in one process" },
        if args.no_resend { "off" } else { "on" },
        match args.window {
            Window::Sliding => "sliding",
            Window::Batch => "batch",
        },
    );
    let mut clusters = Vec::new();
    for replicas in REPLICA_COUNTS {
        let tuning = Tuning { replicas: Some(replicas), ..Tuning::default() };
        clusters.push(Cluster::start(args, REPLICA_SERVERS, 1, &tuning).await?);
    }
    let duration = Duration::from_secs_f64(args.seconds);
    let mut loads = Vec::new();
    for &mode in &args.mode {
        for size in args.sizes.iter().map(|s| parse_size(s)) {
            let window = args.in_flight.unwrap_or(if size >= 1 << 20 { 4 } else { 64 });
            loads.push(Load { mode, size, window, pattern: args.window, duration });
        }
    }
    // Latency: a 1 KiB push with nothing else in flight.
    loads.push(Load { mode: Mode::Push, size: 1 << 10, window: 1, pattern: Window::Sliding, duration });
    println!(
        "{:<12} {:>6} {:>6} {:>2} | {:>8} {:>8} {:>10} {:>9} {:>9} | {:>8} | {:>7} {:>7} {:>11} | {:>7} {:>7}",
        "mode",
        "size",
        "window",
        "R",
        "up GB/s",
        "dn GB/s",
        "req/s",
        "p50",
        "p99",
        "fwd/push",
        "req/R1",
        "p50/R1",
        "rounds",
        "raw/R1",
        "vs raw"
    );
    for (index, load) in loads.into_iter().enumerate() {
        // Row numbers start at 1, as in the main table: each row its keys.
        let Rounds { pslite: rounds, mut forwarded, raw } =
            replicas_rounds(&mut clusters, load, keys, index + 1, args.repeat.max(1)).await?;
        let raw_rates: Vec<f64> = raw.into_iter().map(|r| Measured::median(r).rate()).collect();
        // Each R against R = 1 of the same round.
        let round_ratios: Vec<(f64, f64)> = rounds
            .iter()
            .map(|r| {
                let ratios = r.iter().zip(&rounds[0]).map(|(ours, base)| ours.rate() / base.rate());
                ratios.fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), x| (low.min(x), high.max(x)))
            })
            .collect();
        let mut medians: Vec<Measured> = rounds.into_iter().map(Measured::median).collect();
        let (base_rate, base_p50) = (medians[0].rate(), medians[0].percentile(0.5));
        for (at, ours) in medians.iter_mut().enumerate() {
            let fwd = match forwarded[at].as_mut_slice() {
                [] => "-".to_owned(),
                ratios => {
                    ratios.sort_by(f64::total_cmp);
                    format!("{:.2}", ratios[ratios.len() / 2])
                }
            };
            let spread =
                if at == 0 { "-".to_owned() } else { format!("{:.2}-{:.2}", round_ratios[at].0, round_ratios[at].1) };
            let p50 = ours.percentile(0.5);
            println!(
                "{:<12} {:>6} {:>6} {:>2} | {:>8.3} {:>8.3} {:>10.0} {:>9.1?} {:>9.1?} | {:>8} | {:>7.2} {:>7.2} {:>11} | {:>7.2} {:>7.2}",
                format!("{:?}", load.mode),
                size_name(load.size),
                load.window,
                REPLICA_COUNTS[at],
                Measured::gbps(ours.bytes_up, ours.elapsed),
                Measured::gbps(ours.bytes_down, ours.elapsed),
                ours.rate(),
                p50,
                ours.percentile(0.99),
                fwd,
                ours.rate() / base_rate,
                p50.as_secs_f64() / base_p50.as_secs_f64(),
                spread,
                raw_rates[at] / raw_rates[0],
                ours.rate() / raw_rates[at],
            );
        }
    }
    for cluster in clusters {
        cluster.finalize(&[]).await?;
    }
    println!(
        "each R: the median of {} round(s) of {:.1} s, the three clusters taking turns; req/R1, p50/R1 = requests/s \
         and median latency over R = 1's; rounds = lowest-highest req/R1 of a round against R = 1's turn in it; \
         fwd/push = bytes servers received from each other per pushed byte (R - 1 when every hop carries the pushed \
         values; in one process only); raw/R1 = requests/s of the same load through a chain of R plain TCP \
         servers (pushes; pulls: one) over one server's, run after each turn: what moving the bytes R times \
         costs on this machine, whose cores every copy shares; vs raw = requests/s over that raw chain's: \
         at or near 1, R copies cost what moving the bytes R times costs here; the last row is the latency row (one request in \
         flight)",
        args.repeat.max(1),
        args.seconds
    );
    Ok(())
}

/// `repeat` rounds of `load` on each cluster, the clusters taking turns;
/// per cluster, its rounds and (in one process) the bytes servers
/// received from each other per pushed byte in each.
async fn replicas_rounds(
    clusters: &mut [Cluster],
    load: Load,
    keys: usize,
    row: usize,
    repeat: usize,
) -> Result<Rounds, BoxError> {
    let mut rounds: Vec<Vec<Measured>> = clusters.iter().map(|_| Vec::new()).collect();
    let mut forwarded: Vec<Vec<f64>> = clusters.iter().map(|_| Vec::new()).collect();
    let mut raw: Vec<Vec<Measured>> = clusters.iter().map(|_| Vec::new()).collect();
    for round in 0..repeat {
        // Each round starts with another R, so none is always the one that
        // runs first after a pause.
        for turn in 0..clusters.len() {
            let at = (round + turn) % clusters.len();
            let before = clusters[at].traffic().await?;
            let measured = pslite_round(&mut clusters[at], load, keys, row).await?;
            let after = clusters[at].traffic().await?;
            if let (Some((in_before, out_before)), Some((in_after, out_after))) = (before, after) {
                let between_servers = (in_after - in_before).saturating_sub(out_after - out_before);
                if measured.bytes_up > 0 {
                    forwarded[at].push(between_servers as f64 / measured.bytes_up as f64);
                }
            }
            rounds[at].push(measured);
            // Pushes travel the whole chain; pulls go to the tail alone.
            let hops = if matches!(load.mode, Mode::Pull) { 1 } else { usize::from(REPLICA_COUNTS[at]) };
            raw[at].push(run_raw_chain(load, true, hops).await);
        }
    }
    Ok(Rounds { pslite: rounds, forwarded, raw })
}

/// What [`replicas_rounds`] measured, per cluster (index into
/// [`REPLICA_COUNTS`]).
struct Rounds {
    /// The cluster's rounds.
    pslite: Vec<Vec<Measured>>,
    /// Bytes servers received from each other per pushed byte, per round
    /// (in one process only).
    forwarded: Vec<Vec<f64>>,
    /// The same load over a chain of R raw TCP servers, per round: what
    /// moving the bytes R times costs here.
    raw: Vec<Vec<Measured>>,
}

/// How many of `servers` equal ranges the keys of a row reach.
fn ranges_reached(keys: usize, servers: u32) -> usize {
    let ranges = ServerRanges::equal(servers);
    let mut owners: Vec<Rank> = request_keys(keys, 0, 1).iter().map(|key| ranges.owner(key)).collect();
    owners.sort_unstable();
    owners.dedup();
    owners.len()
}

/// Copies of each range `--failover` keeps: one to lose, one to go on.
const FAILOVER_REPLICAS: u8 = 2;
/// How long the pushers run before the kill, so pushes are flowing to
/// every range when it comes.
const FAILOVER_WARMUP: Duration = Duration::from_millis(300);
/// How long finalize waits for the killed server's replacement, which
/// never comes.
const FAILOVER_RECOVERY: Duration = Duration::from_secs(1);
/// Values of a failover push: 1 KiB of f32.
const FAILOVER_FLOATS: usize = 256;
/// How often the bench looks whether every range took a push again; the
/// times themselves are taken by the pushers.
const FAILOVER_POLL: Duration = Duration::from_millis(1);

/// When each push of a range was issued and when it was acknowledged, per
/// range.
type PushLog = Arc<Mutex<Vec<Vec<(Instant, Instant)>>>>;

/// The killed server's place in a range's chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// It took the range's pushes.
    Head,
    /// Between head and tail (R = 3 only).
    Middle,
    /// It acknowledged the range's pushes and answered its pulls.
    Tail,
    /// Not in the chain.
    Outside,
}

impl Place {
    /// Where `victim` is among `members`, head first.
    fn of(victim: Rank, members: &[Rank]) -> Self {
        match members.iter().position(|&rank| rank == victim) {
            None => Self::Outside,
            Some(0) => Self::Head,
            Some(at) if at + 1 == members.len() => Self::Tail,
            Some(_) => Self::Middle,
        }
    }
}

/// What one kill measured, times from the kill.
struct Kill {
    victim: Rank,
    /// Until the worker heard the server was declared dead.
    declared: Duration,
    /// Per range: the victim's place in its chain, and the time to the
    /// first acknowledgement of a push issued after the kill.
    gaps: Vec<(Place, Duration)>,
    /// Pushes acknowledged in the whole round (before and after the kill).
    pushes: usize,
}

impl Kill {
    /// The slowest gap among ranges where the victim had `place`.
    fn gap(&self, place: Place) -> Option<Duration> {
        self.gaps.iter().filter(|(p, _)| *p == place).map(|&(_, gap)| gap).max()
    }
}

/// `--kills` times: a fresh cluster of 3 servers with 2 copies of each
/// range, a worker pushing to every range, one server killed, and the time
/// until each range acknowledges a push again. The range the victim
/// headed cannot, until the victim is declared dead (the heartbeat
/// timeout) and its successor takes over; the others show what else the
/// death held up.
async fn failover(args: &Args) -> Result<(), BoxError> {
    let interval = Duration::try_from_secs_f64(args.heartbeat_interval)?;
    let timeout = Duration::try_from_secs_f64(args.heartbeat_timeout)?;
    let tuning = Tuning {
        replicas: Some(FAILOVER_REPLICAS),
        heartbeat: Some((interval, timeout)),
        recovery_timeout: Some(FAILOVER_RECOVERY),
        deaths_expected: true,
    };
    println!(
        "failover: {} kill(s), each on a fresh cluster of {REPLICA_SERVERS} servers x 1 worker with R = \
         {FAILOVER_REPLICAS} ({}); heartbeat interval {interval:?}, timeout {timeout:?} (detection bound {:?}); \
         the worker pushes 1 KiB to every range, one push in flight per range, and the server killed after \
         {FAILOVER_WARMUP:?} ({})",
        args.kills,
        if args.processes { "scheduler and servers as child processes" } else { "in one process" },
        interval + timeout,
        if args.processes { "SIGKILL" } else { "its tasks aborted, no finalize" },
    );
    println!(
        "{:>4} {:>6} | {:>10} | {:>11} {:>11} {:>11} | {:>7}",
        "kill", "victim", "declared", "headed", "tailed", "outside", "pushes"
    );
    let mut kills = Vec::new();
    for kill in 0..args.kills {
        // Every server in turn (by start order; its rank comes from the
        // death notice).
        let result = failover_round(args, &tuning, kill % REPLICA_SERVERS as usize).await?;
        let show = |gap: Option<Duration>| gap.map_or_else(|| "-".to_owned(), ms);
        println!(
            "{:>4} {:>6} | {:>10} | {:>11} {:>11} {:>11} | {:>7}",
            kill + 1,
            format!("rank {}", result.victim.0),
            ms(result.declared),
            show(result.gap(Place::Head)),
            show(result.gap(Place::Tail)),
            show(result.gap(Place::Outside)),
            result.pushes,
        );
        kills.push(result);
    }
    if kills.is_empty() {
        return Ok(());
    }
    let summary = |name: &str, mut times: Vec<Duration>| {
        if times.is_empty() {
            return;
        }
        times.sort_unstable();
        let (min, median, max) = (times[0], times[times.len() / 2], times[times.len() - 1]);
        let of_timeout = |t: Duration| t.as_secs_f64() / timeout.as_secs_f64();
        println!(
            "{name}: min {}, median {}, max {} = {:.2}x, {:.2}x, {:.2}x heartbeat_timeout",
            ms(min),
            ms(median),
            ms(max),
            of_timeout(min),
            of_timeout(median),
            of_timeout(max),
        );
    };
    summary("gap of the range the victim headed", kills.iter().filter_map(|k| k.gap(Place::Head)).collect());
    summary("gap of the range the victim was tail of", kills.iter().filter_map(|k| k.gap(Place::Tail)).collect());
    summary("declared dead (the worker heard)", kills.iter().map(|k| k.declared).collect());
    println!(
        "gap = from the kill to the first acknowledgement of a push issued after it, for the range where the victim \
         was head (headed), tail (tailed), or not a member (outside); declared = from the kill to the worker's \
         notice of the death; pushes = acknowledged in the round"
    );
    Ok(())
}

/// A duration in milliseconds, one decimal: the failover table's unit.
fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1e3)
}

/// One kill on a fresh cluster; the victim is server `victim` in start
/// order.
async fn failover_round(args: &Args, tuning: &Tuning, victim: usize) -> Result<Kill, BoxError> {
    let mut cluster = Cluster::start(args, REPLICA_SERVERS, 1, tuning).await?;
    let worker = cluster.worker(0);
    let mut news = worker.node().events();
    let ranges = ServerRanges::equal(REPLICA_SERVERS);
    let chains = Chains::initial(&ranges, FAILOVER_REPLICAS, 0);
    let keys: Vec<Keys> = ranges.as_slice().iter().map(|range| Keys::from_slice(&[range.start()])).collect();
    let values = Values::from_slice(&[1.0f32; FAILOVER_FLOATS]);
    // A key's length is fixed by its first push: all before any timing.
    for key in &keys {
        let ts = worker.zpush(key.clone(), values.clone(), None, 0).await?;
        worker.wait(ts).await?;
    }
    let log: PushLog = Arc::new(Mutex::new(keys.iter().map(|_| Vec::new()).collect()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut pushers = tokio::task::JoinSet::new();
    for (range, key) in keys.iter().enumerate() {
        let pusher = Pusher { worker: worker.clone(), keys: key.clone(), values: values.clone(), range };
        pushers.spawn(pusher.run(Arc::clone(&log), Some(Arc::clone(&stop))));
    }
    cluster.watch(tokio::time::sleep(FAILOVER_WARMUP)).await?;
    if let Some(ended) = pushers.try_join_next() {
        ended?.map_err(|(range, error)| format!("a push to range {range} failed before the kill: {error}"))?;
        return Err("a pusher stopped before the kill".into());
    }
    let known = cluster.kill_server(victim)?;
    let killed_at = Instant::now();
    // One push to every range issued right at the kill, beside the loops
    // (whose next push may wait for one issued before it).
    for (range, key) in keys.iter().enumerate() {
        let pusher = Pusher { worker: worker.clone(), keys: key.clone(), values: values.clone(), range };
        pushers.spawn(pusher.run(Arc::clone(&log), None));
    }
    let notice = tokio::spawn(async move {
        loop {
            match news.recv().await {
                Ok(NodeEvent::Dead(id)) => return Some((id, Instant::now())),
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    // Far above the detection bound: only a hang reaches it.
    let bound = 10 * tuning.heartbeat.map_or(Duration::ZERO, |(interval, timeout)| interval + timeout)
        + Duration::from_secs(10);
    let resumed = |log: &PushLog| {
        let log = log.lock().unwrap_or_else(PoisonError::into_inner);
        log.iter().map(|pushes| pushes.iter().any(|&(issued, _)| issued >= killed_at)).collect::<Vec<bool>>()
    };
    let waited = cluster
        .watch(async {
            loop {
                if let Some(ended) = pushers.try_join_next() {
                    ended?
                        .map_err(|(range, error)| format!("a push to range {range} failed after the kill: {error}"))?;
                }
                let resumed = resumed(&log);
                if notice.is_finished() && resumed.iter().all(|&r| r) {
                    return Ok::<_, BoxError>(());
                }
                if killed_at.elapsed() > bound {
                    return Err(format!(
                        "{bound:?} after the kill: death noticed {}, ranges that took a push issued after it \
                         {resumed:?} (range i is held by servers i and i+1 mod {REPLICA_SERVERS}, by rank)",
                        notice.is_finished()
                    )
                    .into());
                }
                tokio::time::sleep(FAILOVER_POLL).await;
            }
        })
        .await;
    waited??;
    stop.store(true, Ordering::Relaxed);
    let drained = cluster
        .watch(tokio::time::timeout(bound, async {
            while let Some(ended) = pushers.join_next().await {
                ended?.map_err(|(range, error)| format!("a push to range {range} failed after the kill: {error}"))?;
            }
            Ok::<_, BoxError>(())
        }))
        .await?;
    drained.map_err(|_| format!("pushes still unacknowledged {bound:?} after the ranges resumed"))??;
    let (dead, declared_at) = notice.await?.ok_or("the worker stopped before it heard of the death")?;
    if known.is_some_and(|known| known != dead) || dead.role() != Some(Role::Server) {
        return Err(format!("killed server {known:?}, but {dead:?} was declared dead").into());
    }
    let victim = dead.rank();
    let log = std::mem::take(&mut *log.lock().unwrap_or_else(PoisonError::into_inner));
    let pushes = log.iter().map(Vec::len).sum();
    let gaps = log
        .iter()
        .zip(chains.as_slice())
        .map(|(pushes, chain)| {
            let gap = pushes
                .iter()
                .filter(|&&(issued, _)| issued >= killed_at)
                .map(|&(_, acked)| acked - killed_at)
                .min()
                .expect("every range resumed");
            (Place::of(victim, chain.members()), gap)
        })
        .collect();
    cluster.finalize(&[dead]).await?;
    Ok(Kill { victim, declared: declared_at - killed_at, gaps, pushes })
}

/// Pushes to the keys of one range, one at a time.
struct Pusher {
    worker: RawKvWorker,
    keys: Keys,
    values: Values,
    range: usize,
}

impl Pusher {
    /// Pushes until `stop` (once when there is none), logging when each
    /// push was issued and acknowledged; an error names the range.
    async fn run(self, log: PushLog, stop: Option<Arc<AtomicBool>>) -> Result<(), (usize, pslite::Error)> {
        loop {
            let issued = Instant::now();
            let ts = self
                .worker
                .zpush(self.keys.clone(), self.values.clone(), None, 0)
                .await
                .map_err(|e| (self.range, e))?;
            self.worker.wait(ts).await.map_err(|e| (self.range, e))?;
            let acked = Instant::now();
            log.lock().unwrap_or_else(PoisonError::into_inner)[self.range].push((issued, acked));
            if stop.as_ref().is_none_or(|stop| stop.load(Ordering::Relaxed)) {
                return Ok(());
            }
        }
    }
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
    let mut cluster = Cluster::start(args, args.servers, args.workers.max(1), &Tuning::default()).await?;
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
    let server_peaks = cluster.finalize(&[]).await?;
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
            ("pslite-bench --serve", serve(args.handle, args.deaths_expected).await)
        } else if args.handle == HandleKind::Noop && !args.kv_app {
            (
                "pslite-bench",
                Err("--handle noop answers kv_app's pulls (one value per key); use it with --kv-app".into()),
            )
        } else if args.kv_app {
            ("pslite-bench", kv_app(&args).await)
        } else if args.replicas || args.failover {
            let mut result = Ok(());
            if args.replicas {
                result = replicas_table(&args).await;
            }
            if args.failover && result.is_ok() {
                result = failover(&args).await;
            }
            ("pslite-bench", result)
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
    as_expected(released, &[])
}

/// Only members in `dead` (the servers the bench killed) were missing at
/// the end; any other loss is an error. A killed one may be missing or not:
/// a server child enters finalize as soon as the cluster is ready, so it
/// may have arrived at the last barrier before it was killed.
fn as_expected(released: pslite::Released, dead: &[NodeId]) -> Result<(), BoxError> {
    if released.missing.iter().all(|id| dead.contains(id)) {
        Ok(())
    } else if dead.is_empty() {
        Err(format!("nodes {:?} died during the run", released.missing).into())
    } else {
        Err(format!("nodes {:?} were missing at the end, expected only {dead:?}", released.missing).into())
    }
}
