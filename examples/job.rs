//! One node of a small job, for running each node as its own process and
//! watching it from outside: the multi-process tests start it, kill it and
//! start it again, and read what it did from its standard output.
//!
//! ```text
//! cargo build -p pslite -p pslite-tools --example job --bin pslite-launch
//! target/debug/pslite-launch --servers 2 --workers 2 -- target/debug/examples/job
//! ```
//!
//! The node takes its place from ps-lite's `DMLC_*` and `PS_*` variables
//! and its part of the job from these:
//!
//! | variable | meaning |
//! |---|---|
//! | `JOB_ROUNDS` | pushes per worker (default 10), or `commanded`: one per `round` line on stdin, until a `finish` line |
//! | `JOB_CONTROL` | `stdin`: stdin is a pipe from the process that started this one, and its end (that process died) stops the node at once, so a killed test leaves no node behind |
//!
//! A worker pushes, in every round, `(rank + 1) * (i + 1)` to the `i`-th
//! of a set of keys on both sides of every server boundary (0 and
//! `u64::MAX` included), so a value summed into the wrong key or counted
//! twice shows. After its rounds it waits at a barrier over the workers
//! and pulls; with a fixed number of rounds it checks every sum.
//!
//! It reports each step as one line on stdout, `event NAME key=value...`
//! (strings quoted as Rust writes them), and nothing else goes to stdout:
//!
//! | line | when |
//! |---|---|
//! | `event listening role=R addr=A advertised=B` | bound to `A` (a scheduler started with `DMLC_PS_ROOT_PORT=0` tells its port here); peers dial `B` |
//! | `event ready id=N rank=R` | registered |
//! | `event push-ok round=R` | a worker's push round was acknowledged |
//! | `event rounds-done rounds=N` | a worker finished pushing |
//! | `event released missing=N,...` | a worker's barrier over the workers was released, without the dead workers listed (none: all arrived) |
//! | `event barrier-passed generation=G` | a replacement found the other workers past that barrier already, and did not wait |
//! | `event pulled values=V,V,...` | what a worker pulled after the barrier, key by key |
//! | `event sums-exact` | the pulled sums are what the rounds of every worker make |
//! | `event dead id=N`, `event recovered id=N` | membership news |
//! | `event copies values=N,...` | the scheduler's count of copies of each key range, whenever it changes |
//! | `event error op=OP kind=K [node=N] error="..."` | a step failed; `kind` names the error (`peer-dead` with `node`, `scheduler-lost`, `timed-out`, ...) |
//! | `event finalized missing=N,...` | the final barrier passed, without the dead nodes listed; exit status 0 follows |
//!
//! Exit status: 0 when the node's part succeeded, 1 after an `error` line
//! or wrong sums, 2 when the controlling stdin closed, 3 on bad usage.

use std::io::{BufRead, Write};

use pslite::{CustomerId, Group, KvStore, KvWorker, NodeEvent, NodeHandle, RequestError, Role, Settings};
use tokio::sync::mpsc;

/// A worker's pushes: a fixed count, or one per `round` command.
#[derive(Clone, Copy, Debug)]
enum Rounds {
    Fixed(u32),
    Commanded,
}

/// A command read from the controlling stdin.
#[derive(Debug)]
enum Command {
    Round,
    Finish,
}

/// Writes one progress line. Stdout is line-buffered, so the line leaves
/// at once; a write that fails (the reader is gone) is ignored, since the
/// node's work does not depend on being watched.
fn emit(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "event {line}");
}

/// The `kind` (and the node, for a death) of an error, for the tests to
/// match without parsing messages.
fn kind(error: &pslite::Error) -> String {
    match error {
        pslite::Error::Request(RequestError::PeerDead(id)) => format!("peer-dead node={id}"),
        pslite::Error::Request(RequestError::SchedulerLost) => "scheduler-lost".to_owned(),
        pslite::Error::Request(RequestError::TimedOut) => "timed-out".to_owned(),
        pslite::Error::Request(RequestError::ResendExhausted) => "resend-exhausted".to_owned(),
        pslite::Error::Request(RequestError::Terminated) => "terminated".to_owned(),
        pslite::Error::Request(RequestError::Replaced { .. }) => "replaced".to_owned(),
        pslite::Error::Request(_) => "request".to_owned(),
        pslite::Error::Config(_) => "config".to_owned(),
        pslite::Error::Io(_) => "io".to_owned(),
        pslite::Error::Decode(_) => "decode".to_owned(),
        pslite::Error::Shutdown => "shutdown".to_owned(),
        pslite::Error::RegistrationFailed { .. } => "registration-failed".to_owned(),
        pslite::Error::ValueType { .. } => "value-type".to_owned(),
    }
}

/// Reports a failed step and makes it the process's failure.
fn failed(op: &str, error: pslite::Error) -> ExitCode {
    emit(format_args!("error op={op} kind={} error={:?}", kind(&error), error.to_string()));
    ExitCode::Failed
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ExitCode {
    Failed = 1,
    Orphaned = 2,
    Usage = 3,
}

/// Keys on both sides of every server boundary, 0 and `u64::MAX` included.
fn keys(servers: u32) -> Vec<u64> {
    let mut keys = vec![0, u64::MAX];
    for range in pslite::ServerRanges::equal(servers).as_slice().iter().skip(1) {
        keys.extend([range.start() - 1, range.start()]);
    }
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Node ids as a comma-separated list (empty for none).
/// Each range's count of copies (members of its chain), in range order.
fn copies(chains: &pslite::Chains) -> Vec<usize> {
    chains.as_slice().iter().map(|chain| chain.members().len()).collect()
}

fn ids(ids: &[pslite::NodeId]) -> String {
    ids.iter().map(|id| id.get().to_string()).collect::<Vec<_>>().join(",")
}

/// What worker `rank` pushes to the `i`-th key in every round.
fn contribution(rank: u32, i: usize) -> f32 {
    ((rank + 1) * (i as u32 + 1)) as f32
}

/// Reads commands from stdin on a thread of its own (stdin is blocking);
/// at its end the process exits, since whoever held the pipe is gone.
fn control_from_stdin() -> mpsc::UnboundedReceiver<Command> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let command = match line.trim() {
                "round" => Command::Round,
                "finish" => Command::Finish,
                _ => continue,
            };
            // Nobody takes commands (not a commanded worker): ignore them.
            let _ = tx.send(command);
        }
        std::process::exit(ExitCode::Orphaned as i32);
    });
    rx
}

/// A worker's part: its rounds, the barrier over workers, the pull and,
/// with a fixed number of rounds, the check of every sum.
async fn work(
    node: &NodeHandle,
    rounds: Rounds,
    commands: &mut Option<mpsc::UnboundedReceiver<Command>>,
) -> Result<(), ExitCode> {
    let info = node.info();
    let rank = info.rank.map_or(0, |rank| rank.0);
    let keys = keys(info.num_servers);
    let values: Vec<f32> = (0..keys.len()).map(|i| contribution(rank, i)).collect();
    let worker = KvWorker::new(node.clone(), CustomerId::DEFAULT);
    let mut done = 0u32;
    loop {
        match rounds {
            Rounds::Fixed(count) if done == count => break,
            Rounds::Fixed(_) => {}
            Rounds::Commanded => match commands.as_mut() {
                Some(commands) => match commands.recv().await {
                    Some(Command::Round) => {}
                    Some(Command::Finish) | None => break,
                },
                None => return Err(ExitCode::Usage),
            },
        }
        let pushed = match worker.push(&keys, &values).await {
            Ok(ts) => worker.wait(ts).await,
            Err(error) => Err(error),
        };
        match pushed {
            Ok(()) => {
                done += 1;
                emit(format_args!("push-ok round={done}"));
            }
            // A commanded worker goes on: its controller decides what an
            // error means and whether to try again.
            Err(error) if matches!(rounds, Rounds::Commanded) => {
                failed("push", error);
            }
            Err(error) => return Err(failed("push", error)),
        }
    }
    emit(format_args!("rounds-done rounds={done}"));
    // This program has one barrier over the workers, generation 0. A
    // replacement that registered after the others passed it starts
    // further on, and goes straight to its pull: waiting would wait for
    // workers that finished.
    let next = node.next_barrier_generation(Group::WORKERS).await.map_err(|error| failed("barrier", error))?;
    let released = if next == 0 {
        let released = node.barrier(Group::WORKERS).await.map_err(|error| failed("barrier", error))?;
        emit(format_args!("released missing={}", ids(&released.missing)));
        released
    } else {
        emit(format_args!("barrier-passed generation={next}"));
        pslite::Released::default()
    };
    let sums: Vec<f32> = worker.pull_wait(&keys).await.map_err(|error| failed("pull", error))?;
    let listed: Vec<String> = sums.iter().map(f32::to_string).collect();
    emit(format_args!("pulled values={}", listed.join(",")));
    // Without a dead worker's rounds, or with a server that restarted
    // empty, the sums are not the formula's.
    if let (Rounds::Fixed(count), true) = (rounds, released.is_complete()) {
        let expected: Vec<f32> = (0..keys.len())
            .map(|i| (0..info.num_workers).map(|rank| contribution(rank, i) * count as f32).sum())
            .collect();
        if sums != expected {
            eprintln!("job: pulled {sums:?}, expected {expected:?}");
            emit(format_args!("error op=check kind=wrong-sums error={:?}", "pulled sums differ from the pushes"));
            return Err(ExitCode::Failed);
        }
        emit(format_args!("sums-exact"));
    }
    Ok(())
}

/// The node's whole life; `Err` carries the exit status.
async fn run() -> Result<(), ExitCode> {
    if std::env::var_os("DMLC_ROLE").is_none() {
        eprintln!("job: one node of a job; start it with DMLC_ROLE and the rest of ps-lite's environment set, for example through pslite-launch (see the example's docs)");
        return Err(ExitCode::Usage);
    }
    let rounds = match std::env::var("JOB_ROUNDS").as_deref() {
        Err(_) => Rounds::Fixed(10),
        Ok("commanded") => Rounds::Commanded,
        Ok(count) => match count.parse() {
            Ok(count) => Rounds::Fixed(count),
            Err(_) => {
                eprintln!("job: JOB_ROUNDS: {count:?} is not a count of rounds nor \"commanded\"");
                return Err(ExitCode::Usage);
            }
        },
    };
    let mut commands = match std::env::var("JOB_CONTROL").as_deref() {
        Ok("stdin") => Some(control_from_stdin()),
        _ => None,
    };
    if matches!(rounds, Rounds::Commanded) && commands.is_none() {
        eprintln!("job: JOB_ROUNDS=commanded needs JOB_CONTROL=stdin");
        return Err(ExitCode::Usage);
    }
    let settings = Settings::from_env().map_err(|error| failed("configure", error.into()))?;
    let role = settings.core.role;
    let handles: Vec<(u32, pslite::ServerHandle)> =
        if role == Role::Server { vec![(0, KvStore::<f32>::new().into())] } else { Vec::new() };
    let node = pslite::start_with(settings, handles, None).await.map_err(|error| failed("start", error))?;
    emit(format_args!("listening role={role} addr={} advertised={}", node.local_addr(), node.advertised_addr()));
    let mut news = node.events();
    tokio::spawn(async move {
        // Lagging behind only loses news, never stops the node.
        while let Ok(event) = news.recv().await {
            match event {
                NodeEvent::Dead(id) => emit(format_args!("dead id={id}")),
                NodeEvent::Recovered(id) => emit(format_args!("recovered id={id}")),
                NodeEvent::Terminated => {}
            }
        }
    });
    node.wait_ready().await.map_err(|error| failed("register", error))?;
    if role == Role::Scheduler {
        let node = node.clone();
        tokio::spawn(async move {
            // The copies of each range, as they change: a replaced server
            // has caught up when every range is back to its count.
            let mut last = Vec::new();
            while let Ok(chains) = node.wait_chains(|c| copies(c) != last).await {
                last = copies(&chains);
                let listed: Vec<String> = last.iter().map(usize::to_string).collect();
                emit(format_args!("copies values={}", listed.join(",")));
            }
        });
    }
    let info = node.info();
    let rank = info.rank.map_or_else(|| "none".to_owned(), |rank| rank.0.to_string());
    emit(format_args!("ready id={} rank={rank}", info.id));
    if role == Role::Worker {
        work(&node, rounds, &mut commands).await?;
    }
    let released = node.finalize().await.map_err(|error| failed("finalize", error))?;
    emit(format_args!("finalized missing={}", ids(&released.missing)));
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    tracing_subscriber::fmt().with_max_level(pslite::env::verbosity()).with_writer(std::io::stderr).init();
    if let Err(code) = run().await {
        std::process::exit(code as i32);
    }
}
