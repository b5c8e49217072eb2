//! The simulator's command line: replay one seed, or sweep many.
//!
//! `pslite-sim --seed 0x…` replays one run (add `--trace` for every event);
//! `pslite-sim --seeds N` runs N seeds from a start seed (`--start`, else
//! `PSLITE_SEED`, else a random one) on `--jobs` threads and reports seeds
//! and events per second. Results are the same whatever the thread count:
//! each seed is its own run, and they are reported in seed order. The exit
//! code is that of the first failing seed (correctness 129, liveness 128,
//! panic 127), or 0.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant as WallInstant;

use clap::Parser;
use pslite_sim::{FailureKind, FaultClasses, FaultPlan, Outcome, RunStats, Setup, Sim, SwarmOptions, ValueMode};

/// Deterministic simulation of a pslite cluster under seeded faults.
#[derive(Debug, Parser)]
#[command(name = "pslite-sim")]
struct Args {
    /// Replay this seed (decimal or 0x-prefixed hex).
    #[arg(long, value_parser = parse_seed, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run this many seeds, one after the other from the start seed.
    #[arg(long)]
    seeds: Option<u64>,
    /// First seed of a sweep (default: $PSLITE_SEED, else random).
    #[arg(long, value_parser = parse_seed)]
    start: Option<u64>,
    /// Threads for a sweep; results do not depend on it.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Small clusters and short scripts.
    #[arg(long)]
    lite: bool,
    /// Print every event of a single run as it happens.
    #[arg(long)]
    trace: bool,
    /// Fault classes: default, all, none, or a list such as crash-server,pause,clog.
    #[arg(long, default_value = "default", value_parser = FaultClasses::parse)]
    faults: FaultClasses,
    /// In seeds without faults, fail on any failed request or barrier.
    #[arg(long)]
    strict: bool,
    /// Reliable delivery (ps-lite's PS_RESEND) in every seed: on or off.
    /// By default each seed draws it (off in about one in four, without
    /// the faults only resends make up for).
    #[arg(long, value_parser = parse_on_off)]
    resend: Option<bool>,
    /// Pushed values in every seed: integers (exact sums) or fractions
    /// (sums that round, so copies of a range must hold the head's bytes).
    /// By default each seed draws it (fractions in about one in four).
    #[arg(long, value_parser = ValueMode::parse)]
    values: Option<ValueMode>,
}

fn parse_on_off(text: &str) -> Result<bool, String> {
    match text {
        "on" | "1" => Ok(true),
        "off" | "0" => Ok(false),
        _ => Err(format!("{text:?}: on or off")),
    }
}

fn parse_seed(text: &str) -> Result<u64, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
        None => text.replace('_', "").parse(),
    };
    parsed.map_err(|e| format!("not a seed: {text:?} ({e})"))
}

fn random_seed() -> u64 {
    // Only the choice of seed is random; the run it names is not.
    RandomState::new().hash_one(std::process::id())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let options = SwarmOptions {
        lite: args.lite,
        faults: args.faults,
        strict: args.strict,
        resend: args.resend,
        values: args.values,
    };
    match args.seeds {
        Some(count) => sweep(&args, options, count),
        None => single(args.seed.unwrap_or_else(random_seed), options, args.trace),
    }
}

fn single(seed: u64, options: SwarmOptions, trace: bool) -> ExitCode {
    let mut setup = Setup::swarm(seed, options);
    setup.trace_all = trace;
    println!("{}", setup.describe());
    let plan = setup.plan.clone();
    let outcome = Sim::new(setup).run();
    if let Some(failure) = &outcome.failure {
        print!("{}", outcome.context);
        println!("{}", shrink(seed, options, &plan, failure.kind));
        // Last: what broke, and the command that replays it.
        println!("{failure}");
        println!("reproduce: {}", outcome.reproduce);
        return ExitCode::from(failure.kind.exit_code());
    }
    println!(
        "PASSED ({} events, {:?}) fingerprint={:#018x}",
        outcome.events, outcome.virtual_time, outcome.fingerprint
    );
    ExitCode::SUCCESS
}

/// Reruns a failed seed with each of its fault classes switched off in
/// turn (the rest of the run stays as it was) and says which ones the
/// failure needs.
fn shrink(seed: u64, options: SwarmOptions, plan: &FaultPlan, kind: FailureKind) -> String {
    let mut lines = vec!["fault classes this failure needs:".to_owned()];
    for class in plan.classes.iter() {
        let without = SwarmOptions { faults: options.faults.without(class), ..options };
        let outcome = Sim::new(Setup::swarm(seed, without)).run();
        let verdict = match &outcome.failure {
            None => format!("needed (passes without it: {})", outcome.reproduce),
            Some(f) if f.kind == kind => "not needed (fails the same way without it)".to_owned(),
            Some(f) => format!("changes the failure to: {f}"),
        };
        lines.push(format!("  {:<12} {verdict}", class.name()));
    }
    if plan.classes.iter().next().is_none() {
        lines.push("  none: the failure happens without any fault".to_owned());
    }
    lines.join("\n")
}

fn sweep(args: &Args, options: SwarmOptions, count: u64) -> ExitCode {
    let start = args
        .start
        .or_else(|| std::env::var("PSLITE_SEED").ok().and_then(|s| parse_seed(&s).ok()))
        .unwrap_or_else(random_seed);
    let jobs = args.jobs.max(1);
    println!("sweeping {count} seeds from {start:#018x} on {jobs} threads, options:{}", options.to_args());
    let next = AtomicU64::new(0);
    let began = WallInstant::now();
    let mut outcomes: Vec<(u64, Outcome)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..jobs)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        if index >= count {
                            return done;
                        }
                        let seed = start.wrapping_add(index);
                        let outcome = Sim::new(Setup::swarm(seed, options)).run();
                        if !outcome.passed() {
                            eprintln!("{}", outcome.summary());
                        }
                        done.push((index, outcome));
                    }
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("sweep threads catch panics per seed")).collect()
    });
    let elapsed = began.elapsed().as_secs_f64();
    outcomes.sort_by_key(|(index, _)| *index);
    let failed: Vec<&Outcome> = outcomes.iter().map(|(_, o)| o).filter(|o| !o.passed()).collect();
    for outcome in &failed {
        println!("\n{}", outcome.report());
    }
    let events: u64 = outcomes.iter().map(|(_, o)| o.events).sum();
    let combined = outcomes.iter().fold(0u64, |acc, (_, o)| acc.rotate_left(5) ^ o.fingerprint);
    println!(
        "{count} seeds: {} passed, {} failed; {:.1} seeds/s, {:.0} events/s ({events} events in {elapsed:.2} s on {jobs} \
         threads); combined fingerprint {combined:#018x}",
        count - failed.len() as u64,
        failed.len(),
        count as f64 / elapsed,
        events as f64 / elapsed,
    );
    for outcome in &failed {
        println!("  {}", outcome.summary());
    }
    let mut total = RunStats::default();
    for (_, outcome) in &outcomes {
        total.add(&outcome.stats);
    }
    let share = |f: fn(&RunStats) -> u64| {
        100.0 * outcomes.iter().filter(|(_, o)| f(&o.stats) > 0).count() as f64 / count.max(1) as f64
    };
    println!("totals: {total}");
    println!(
        "seeds with: a crash {:.0}%, a pause {:.0}%, a clog {:.0}%, a partition {:.0}%, a declared death {:.0}%, \
         a failed request {:.0}%, a failed barrier {:.0}%",
        share(|s| s.crashes),
        share(|s| s.pauses),
        share(|s| s.clogs),
        share(|s| s.partitions),
        share(|s| s.deaths_declared),
        share(|s| s.requests_failed),
        share(|s| s.barriers_failed),
    );
    match failed.first() {
        Some(first) => ExitCode::from(first.exit_code()),
        None => ExitCode::SUCCESS,
    }
}
