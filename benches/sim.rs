//! Simulator speed: events per second on one core, over a fixed set of
//! default-swarm seeds (faults included), so the figure covers the codec,
//! the core and the checker as a sweep runs them. The bar is one
//! million events per second on one core.

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pslite_sim::{Setup, Sim, SwarmOptions};

const SEEDS: u64 = 8;

/// Events the fixed seeds take, counted once outside the timed loop.
fn events_per_pass() -> u64 {
    (0..SEEDS).map(|seed| Sim::new(Setup::swarm(seed, SwarmOptions::default())).run().events).sum()
}

fn simulator(c: &mut Criterion) {
    let events = events_per_pass();
    let mut group = c.benchmark_group("sim");
    group.sample_size(10);
    group.throughput(Throughput::Elements(events));
    group.bench_function(format!("{SEEDS} default-swarm seeds ({events} events)"), |b| {
        b.iter(|| {
            for seed in 0..SEEDS {
                let outcome = Sim::new(Setup::swarm(seed, SwarmOptions::default())).run();
                assert!(outcome.failure.is_none(), "seed {seed} failed: {}", outcome.reproduce);
                black_box(outcome.fingerprint);
            }
        });
    });
    group.finish();
    // One plain timing as well, printed as events/s, for the README.
    let started = Instant::now();
    let total: u64 = (0..SEEDS).map(|seed| Sim::new(Setup::swarm(seed, SwarmOptions::default())).run().events).sum();
    let rate = total as f64 / started.elapsed().as_secs_f64();
    println!(
        "sim: {total} events in {:.3} s = {:.2} M events/s on one core",
        started.elapsed().as_secs_f64(),
        rate / 1e6
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().configure_from_args();
    targets = simulator
}
criterion_main!(benches);
