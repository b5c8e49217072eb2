//! Throughput and latency of pslite on this machine, each row next to a
//! raw tokio TCP baseline measured in the same run with the same payload
//! sizes, message count and in-flight window, as a ratio.
//!
//! ```text
//! cargo run --release --bin pslite-bench                          # the default table
//! cargo run --release --bin pslite-bench -- --mode push --sizes 1KiB --in-flight 64
//! cargo run --release --bin pslite-bench -- --kv-app              # 10M keys: one push, one pull
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use clap::{Parser, ValueEnum};
use pslite::{DType, Keys, KvWorker, LocalCluster, Values};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Push,
    Pull,
    PushPull,
    PushThenPull,
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
    /// Seconds per row (each of pslite and raw).
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Turn ACK + resend off (PS_RESEND=0).
    #[arg(long)]
    no_resend: bool,
    /// Instead: ps-lite's kv_app benchmark, 10M float keys in one push and one pull.
    #[arg(long)]
    kv_app: bool,
    /// Keys for --kv-app.
    #[arg(long, default_value_t = 10_000_000)]
    kv_app_keys: u64,
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
    fn merge(&mut self, other: Self) {
        self.requests += other.requests;
        self.bytes_up += other.bytes_up;
        self.bytes_down += other.bytes_down;
        self.elapsed = self.elapsed.max(other.elapsed);
        self.latencies.extend(other.latencies);
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

async fn run_pslite(
    worker: KvWorker,
    mode: Mode,
    size: usize,
    keys: usize,
    window: usize,
    duration: Duration,
    (index, row): (usize, usize),
) -> Measured {
    let keys = request_keys(keys, index, row);
    let floats = (size / 4).max(keys.len()) / keys.len() * keys.len();
    let values = Values::from_slice(&vec![1.0f32; floats]);
    let payload = (floats * 4) as u64;
    // Give every key its full value first, so pulls move `size` bytes.
    let ts = worker.zpush(0, keys.clone(), values.clone(), None).await.expect("first push accepted");
    worker.wait(ts).await.expect("first push completed");
    let mut measured = Measured::default();
    let mut inflight: VecDeque<(pslite::Timestamp, Instant, bool)> = VecDeque::new();
    let started = Instant::now();
    let mut issued = 0u64;
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
        if !done_issuing && inflight.len() < window {
            let (pushes, pulls) = match mode {
                Mode::Push => (true, false),
                Mode::Pull => (false, true),
                Mode::PushPull => (true, true),
                Mode::PushThenPull => (issued % 2 == 0, issued % 2 == 1),
            };
            let ts = match (pushes, pulls) {
                (true, true) => worker.zpush_pull(0, keys.clone(), values.clone(), None).await,
                (true, false) => worker.zpush(0, keys.clone(), values.clone(), None).await,
                _ => worker.zpull(0, keys.clone(), DType::F32).await,
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

/// The same traffic over plain TCP: a length-prefixed request (with the
/// payload when it pushes) answered by a length-prefixed response (with
/// the payload when it pulls), `window` in flight, one write per message.
async fn run_raw(mode: Mode, size: usize, window: usize, duration: Duration) -> Measured {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (mut reader, mut writer) = stream.into_split();
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
            let mut out = BytesMut::with_capacity(8 + reply_len);
            out.put_u64_le(reply_len as u64);
            out.put_slice(&body[..reply_len]);
            if writer.write_all(&out).await.is_err() {
                return;
            }
        }
    });
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let payload = Bytes::from(vec![1u8; size]);
    let started = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Instant, bool, bool)>(window);
    let sender = tokio::spawn(async move {
        let mut issued = 0u64;
        while started.elapsed() < duration {
            let (pushes, pulls) = match mode {
                Mode::Push => (true, false),
                Mode::Pull => (false, true),
                Mode::PushPull => (true, true),
                Mode::PushThenPull => (issued % 2 == 0, issued % 2 == 1),
            };
            // The channel's capacity is the window: a send waits for a reply.
            if tx.send((Instant::now(), pushes, pulls)).await.is_err() {
                return;
            }
            let len = if pushes { size } else { 8 };
            let mut head = BytesMut::with_capacity(16 + len);
            head.put_u64_le(len as u64);
            head.put_u64_le(if pulls { size as u64 } else { 0 });
            if pushes {
                head.put_slice(&payload);
            } else {
                head.put_u64_le(0);
            }
            writer.write_all(&head).await.unwrap();
            issued += 1;
        }
    });
    let mut measured = Measured::default();
    let mut body = vec![0u8; size];
    while let Some((at, pushes, pulls)) = rx.recv().await {
        let mut head = [0u8; 8];
        reader.read_exact(&mut head).await.unwrap();
        let len = u64::from_le_bytes(head) as usize;
        reader.read_exact(&mut body[..len]).await.unwrap();
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

async fn table(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut settings = LocalCluster::settings(args.servers, args.workers);
    settings.core.resend = !args.no_resend;
    let cluster = LocalCluster::start_with(settings, Box::new(|_| Box::new(pslite::KvStore::<f32>::new()))).await?;
    let duration = Duration::from_secs_f64(args.seconds);
    println!(
        "{} server(s), {} worker(s), {} key(s)/request, resend {}; raw = one tokio TCP connection, same sizes and window",
        args.servers,
        args.workers,
        args.keys,
        if args.no_resend { "off" } else { "on" }
    );
    println!(
        "{:<14} {:>6} {:>6} | {:>8} {:>8} {:>10} {:>9} {:>9} | {:>8} {:>8} {:>10} {:>9} | {:>6} {:>6}",
        "mode",
        "size",
        "window",
        "up GB/s",
        "dn GB/s",
        "req/s",
        "p50",
        "p99",
        "raw up",
        "raw dn",
        "raw req/s",
        "raw p50",
        "ratio",
        "req"
    );
    let mut row = 0;
    for &mode in &args.mode {
        for size in args.sizes.iter().map(|s| parse_size(s)) {
            row += 1;
            let window = args.in_flight.unwrap_or(if size >= 1 << 20 { 4 } else { 64 });
            let mut ours = Measured::default();
            let tasks: Vec<_> = (0..cluster.workers.len())
                .map(|i| {
                    let worker = cluster.worker(i);
                    let keys = args.keys;
                    tokio::spawn(async move { run_pslite(worker, mode, size, keys, window, duration, (i, row)).await })
                })
                .collect();
            for task in tasks {
                ours.merge(task.await?);
            }
            let mut raw = run_raw(mode, size, window, duration).await;
            let (up, down) =
                (Measured::gbps(ours.bytes_up, ours.elapsed), Measured::gbps(ours.bytes_down, ours.elapsed));
            let (raw_up, raw_down) =
                (Measured::gbps(raw.bytes_up, raw.elapsed), Measured::gbps(raw.bytes_down, raw.elapsed));
            let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
            let byte_ratio = ratio(up.max(down), raw_up.max(raw_down));
            let request_ratio = ratio(ours.rate(), raw.rate());
            println!(
                "{:<14} {:>6} {:>6} | {:>8.3} {:>8.3} {:>10.0} {:>9.1?} {:>9.1?} | {:>8.3} {:>8.3} {:>10.0} {:>9.1?} | {:>6.2} {:>6.2}",
                format!("{mode:?}"),
                size_name(size),
                window,
                up,
                down,
                ours.rate(),
                ours.percentile(0.5),
                ours.percentile(0.99),
                raw_up,
                raw_down,
                raw.rate(),
                raw.percentile(0.5),
                byte_ratio,
                request_ratio,
            );
        }
    }
    println!("ratio = pslite/raw payload GB/s (the busier direction); req = pslite/raw requests/s");
    cluster.finalize().await?;
    Ok(())
}

fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

async fn kv_app(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let n = args.kv_app_keys;
    let mut settings = LocalCluster::settings(args.servers, args.workers.max(1));
    settings.core.resend = !args.no_resend;
    let cluster = LocalCluster::start_with(settings, Box::new(|_| Box::new(pslite::KvStore::<f32>::new()))).await?;
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
    let payload = (keys.as_bytes().len() + values.as_bytes().len()) as u64;
    let before = peak_rss_bytes();
    let started = Instant::now();
    let ts = worker.zpush(0, keys.clone(), values, None).await?;
    worker.wait(ts).await?;
    let push_time = started.elapsed();
    let started = Instant::now();
    let ts = worker.zpull(0, keys, DType::F32).await?;
    let pulled = worker.wait_pull(ts).await?;
    let pull_time = started.elapsed();
    assert_eq!(pulled.values.len() as u64, n);
    let peak = peak_rss_bytes();
    println!(
        "kv_app: {n} f32 keys, {} server(s): push {:.0} ms, pull {:.0} ms, total {:.0} ms; payload {:.0} MB (keys + values); \
         peak RSS {:.0} MB ({:.2}x payload; {:.0} MB before the push, the whole cluster is in this process)",
        args.servers,
        push_time.as_secs_f64() * 1e3,
        pull_time.as_secs_f64() * 1e3,
        (push_time + pull_time).as_secs_f64() * 1e3,
        payload as f64 / 1e6,
        peak as f64 / 1e6,
        peak as f64 / payload as f64,
        before as f64 / 1e6,
    );
    cluster.finalize().await?;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.kv_app {
        kv_app(&args).await
    } else {
        table(&args).await
    }
}
