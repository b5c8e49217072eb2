//! Push and pull across every server range, checked exactly.
//!
//! Without `DMLC_ROLE` it runs a whole cluster in this process; with it
//! (as set by `pslite-launch` or dmlc-tracker) it runs as that one node:
//!
//! ```text
//! cargo run --example push_pull
//! cargo run -p pslite-tools --bin pslite-launch -- --servers 2 --workers 2 -- target/debug/examples/push_pull
//! ```

use pslite::{CustomerId, KvStore, KvWorker, LocalCluster, Role, Settings};

const ROUNDS: u32 = 10;

/// Keys on both sides of every server boundary, 0 and u64::MAX included.
fn keys(servers: u32) -> Vec<u64> {
    let mut keys = vec![0, u64::MAX];
    for range in pslite::ServerRanges::equal(servers).as_slice().iter().skip(1) {
        keys.extend([range.start() - 1, range.start()]);
    }
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Pushes `ROUNDS` times, then checks the sums `workers` such workers make.
async fn work(worker: &KvWorker<f32>, servers: u32, workers: u32) -> pslite::Result<()> {
    let keys = keys(servers);
    let ones = vec![1.0f32; keys.len()];
    for _ in 0..ROUNDS {
        let ts = worker.push(&keys, &ones).await?;
        worker.wait(ts).await?;
    }
    // Everyone has pushed once the barrier over workers releases; without
    // a dead worker's pushes the sums cannot be checked.
    let released = worker.node().barrier(pslite::Group::WORKERS).await?;
    if !released.is_complete() {
        eprintln!("workers {:?} died before the barrier: sums not checked", released.missing);
        return Ok(());
    }
    let sums: Vec<f32> = worker.pull_wait(&keys).await?;
    let expected = (ROUNDS * workers) as f32;
    if sums.iter().any(|&s| s != expected) {
        eprintln!("wrong sums: {sums:?}, expected {expected} everywhere");
        std::process::exit(1);
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_max_level(pslite::env::verbosity()).with_writer(std::io::stderr).init();
    if std::env::var_os("DMLC_ROLE").is_none() {
        let (servers, workers) = (2, 3);
        let cluster = LocalCluster::start(servers, workers).await?;
        let tasks: Vec<_> = (0..workers as usize)
            .map(|i| {
                let worker = cluster.worker(i);
                tokio::spawn(async move { work(&worker, servers, workers).await })
            })
            .collect();
        for task in tasks {
            task.await??;
        }
        let released = cluster.finalize().await?;
        assert!(released.is_complete(), "nobody dies in a local cluster");
        println!("push_pull: {workers} workers x {ROUNDS} rounds over {servers} servers: sums exact");
        return Ok(());
    }
    let settings = Settings::from_env()?;
    let (servers, workers) = (settings.core.num_servers, settings.core.num_workers);
    let role = settings.core.role;
    let handles: Vec<(u32, pslite::ServerHandle)> =
        if role == Role::Server { vec![(0, KvStore::<f32>::new().into())] } else { Vec::new() };
    let node = pslite::start_with(settings, handles, None).await?;
    node.wait_ready().await?;
    if role == Role::Worker {
        work(&KvWorker::<f32>::new(node.clone(), CustomerId::DEFAULT), servers, workers).await?;
    } else if role != Role::Scheduler {
        // Servers serve until the final barrier.
    }
    let released = node.finalize().await?;
    if !released.is_complete() {
        eprintln!("finished without {:?}: dead, and not replaced within PS_RECOVERY_TIMEOUT", released.missing);
    }
    Ok(())
}
