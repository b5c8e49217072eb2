//! Random seeds through the whole simulator, as CI runs them.
//!
//! `PSLITE_SIM_SEEDS` sets how many seeds each sweep runs (default 200)
//! and `PSLITE_SEED` the first one (default 0), so a CI job can sweep a
//! fresh range every time and a failure names its seed. Every fault class
//! is on (`FaultClasses::DEFAULT`), worker crashes included.

use pslite_sim::{Outcome, Setup, Sim, SwarmOptions};

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => {
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("{name}={text:?} is not a number: {e}"))
        }
        Err(_) => default,
    }
}

fn sweep(count: u64, options: SwarmOptions) {
    let start = env_u64("PSLITE_SEED", 0);
    let failed: Vec<Outcome> = (0..count)
        .map(|i| Sim::new(Setup::swarm(start.wrapping_add(i), options)).run())
        .filter(|o| !o.passed())
        .collect();
    if let Some(first) = failed.first() {
        let seeds: Vec<String> = failed.iter().map(Outcome::summary).collect();
        panic!("{} of {count} seeds failed:\n{}\n\nfirst failure:\n{}", failed.len(), seeds.join("\n"), first.report());
    }
}

#[test]
fn sweep_lite() {
    sweep(env_u64("PSLITE_SIM_SEEDS", 200), SwarmOptions { lite: true, ..SwarmOptions::default() });
}

#[test]
fn sweep_full_clusters() {
    sweep(env_u64("PSLITE_SIM_SEEDS", 200), SwarmOptions::default());
}
