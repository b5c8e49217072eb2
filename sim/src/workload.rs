//! What the workers do: a seeded script each, of push, pull, push_pull,
//! SimpleApp requests and barriers.
//!
//! Keys sit on and next to every server boundary, with 0 and `u64::MAX`
//! always among them, so slicing and merging are exercised where they
//! break. Values are positive, so a sum only grows — which is what lets
//! the checker bound a pulled value from both sides — and of the run's
//! [`ValueMode`]: small integers, whose f32 sums are exact and independent
//! of order, or fractions, whose sums round. Barriers are
//! common to all workers (the same rounds end in a barrier everywhere), as
//! in a training loop; the operations inside a round differ per worker.

use pslite_core::{Duration, NodeId, Rank, Rng, ServerRanges};

use crate::values::ValueMode;

/// Most keys one operation touches.
pub(crate) const KEYS_PER_OP_MAX: u64 = 8;

/// Whom a SimpleApp request goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimpleTarget {
    /// The scheduler alone.
    Scheduler,
    /// One server.
    Server(Rank),
    /// Every live server.
    Servers,
    /// Every live worker, the sender included.
    Workers,
}

/// One step of a worker's script.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Push one value per key.
    Push {
        /// Application id.
        app: u32,
        /// Keys, ascending.
        keys: Vec<u64>,
        /// Values, positive, of the run's [`ValueMode`].
        values: Vec<f32>,
    },
    /// Pull the keys.
    Pull {
        /// Application id.
        app: u32,
        /// Keys, ascending.
        keys: Vec<u64>,
    },
    /// Push, then pull the same keys.
    PushPull {
        /// Application id.
        app: u32,
        /// Keys, ascending.
        keys: Vec<u64>,
        /// Values, positive, of the run's [`ValueMode`].
        values: Vec<f32>,
    },
    /// A SimpleApp request; every node echoes it.
    Simple {
        /// Whom to ask.
        target: SimpleTarget,
        /// The head.
        head: i32,
        /// The body.
        body: Vec<u8>,
    },
    /// Wait for the worker's outstanding requests, then a barrier over
    /// all workers.
    Barrier,
}

/// One worker's script.
#[derive(Clone, Debug, PartialEq)]
pub struct Script {
    /// The operations, in order.
    pub ops: Vec<Op>,
    /// Longest pause between two operations.
    pub think_max: Duration,
    /// Most requests outstanding at once.
    pub window: usize,
}

impl Script {
    /// A script that does nothing (scenario tests drive such workers by
    /// hand).
    pub fn idle() -> Self {
        Self { ops: Vec::new(), think_max: Duration::ZERO, window: 1 }
    }
}

/// Every worker's script plus the keys they use.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    /// Keys in play, ascending.
    pub keys: Vec<u64>,
    /// Application ids in play.
    pub apps: u32,
    /// One script per worker, by rank.
    pub scripts: Vec<Script>,
}

impl Workload {
    /// Draws scripts for `workers` workers over keys around the boundaries
    /// of `ranges`. `lite` keeps them short. Pushed values are of mode
    /// `values`; the fractions, if any, come from `fractions`, so that
    /// everything else a seed's scripts do is the same in both modes.
    pub fn swarm(
        rng: &mut Rng,
        ranges: &ServerRanges,
        workers: u32,
        lite: bool,
        values: ValueMode,
        fractions: &mut Rng,
    ) -> Self {
        let keys = boundary_keys(rng, ranges);
        let apps = 1 + rng.below(2) as u32;
        let rounds = if lite { 3 + rng.below(4) } else { 3 + rng.below(6) };
        let ops_per_round_max = if lite { 6 } else { 8 };
        // Think times long enough that a script spans several heartbeat
        // timeouts, so faults strike while requests are in flight.
        let think_max_ms = (50, 300);
        let barriers: Vec<bool> = (0..rounds).map(|_| rng.chance(0.6)).collect();
        let scripts = (0..workers)
            .map(|_| {
                let mut ops = Vec::new();
                for &barrier in &barriers {
                    for _ in 0..1 + rng.below(ops_per_round_max) {
                        ops.push(random_op(rng, &keys, apps, ranges.len() as u32, values, fractions));
                    }
                    if barrier {
                        ops.push(Op::Barrier);
                    }
                }
                let (lo, hi) = think_max_ms;
                let think_max = Duration::from_millis(lo + rng.below(hi - lo + 1));
                Script { ops, think_max, window: 1 + rng.below(4) as usize }
            })
            .collect();
        Self { keys, apps, scripts }
    }

    /// Operations over all scripts.
    pub fn ops(&self) -> usize {
        self.scripts.iter().map(|s| s.ops.len()).sum()
    }
}

/// 0, `u64::MAX`, every server's first and last key with their
/// neighbours, and one random key per range.
pub fn boundary_keys(rng: &mut Rng, ranges: &ServerRanges) -> Vec<u64> {
    let mut keys = vec![0, 1, u64::MAX - 1, u64::MAX];
    for range in ranges.as_slice() {
        let (start, end) = (range.start(), range.end_inclusive());
        keys.extend([start, start.saturating_add(1), end.saturating_sub(1), end]);
        keys.push(start + rng.below(end - start));
    }
    keys.sort_unstable();
    keys.dedup();
    keys
}

fn random_op(rng: &mut Rng, keys: &[u64], apps: u32, servers: u32, mode: ValueMode, fractions: &mut Rng) -> Op {
    let app = rng.below(u64::from(apps)) as u32;
    let pick = rng.below(100);
    if pick < 12 {
        let target = match rng.below(4) {
            0 => SimpleTarget::Scheduler,
            1 => SimpleTarget::Server(Rank(rng.below(u64::from(servers)) as u32)),
            2 => SimpleTarget::Servers,
            _ => SimpleTarget::Workers,
        };
        let body = (0..rng.below(16)).map(|_| rng.below(256) as u8).collect();
        return Op::Simple { target, head: rng.below(1000) as i32 - 500, body };
    }
    let chosen = pick_keys(rng, keys);
    let values: Vec<f32> = chosen.iter().map(|_| mode.value(1 + rng.below(4), fractions)).collect();
    match pick {
        12..=51 => Op::Push { app, keys: chosen, values },
        52..=79 => Op::Pull { app, keys: chosen },
        _ => Op::PushPull { app, keys: chosen, values },
    }
}

/// A non-empty ascending subset of `keys`.
fn pick_keys(rng: &mut Rng, keys: &[u64]) -> Vec<u64> {
    let count = 1 + rng.below(KEYS_PER_OP_MAX.min(keys.len() as u64));
    let mut chosen: Vec<u64> = Vec::with_capacity(count as usize);
    while (chosen.len() as u64) < count {
        let key = keys[rng.below(keys.len() as u64) as usize];
        if !chosen.contains(&key) {
            chosen.push(key);
        }
    }
    chosen.sort_unstable();
    chosen
}

/// The server ids owning `keys`, in rank order.
pub fn owners(ranges: &ServerRanges, keys: &[u64]) -> Vec<NodeId> {
    let mut ids: Vec<NodeId> = keys.iter().map(|&k| NodeId::server(ranges.owner(k))).collect();
    ids.dedup();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_include_both_ends_and_every_boundary() {
        let ranges = ServerRanges::equal(3);
        let keys = boundary_keys(&mut Rng::new(1), &ranges);
        assert!(keys.contains(&0) && keys.contains(&u64::MAX));
        for range in ranges.as_slice() {
            assert!(keys.contains(&range.start()) && keys.contains(&range.end_inclusive()));
        }
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
    }

    fn pushed(workload: &Workload) -> Vec<(Vec<u64>, Vec<f32>)> {
        let ops = workload.scripts.iter().flat_map(|s| &s.ops);
        ops.filter_map(|op| match op {
            Op::Push { keys, values, .. } | Op::PushPull { keys, values, .. } => Some((keys.clone(), values.clone())),
            _ => None,
        })
        .collect()
    }

    #[test]
    fn every_worker_has_the_same_number_of_barriers() {
        for seed in 0..20 {
            for mode in ValueMode::ALL {
                let ranges = ServerRanges::equal(2);
                let workload = Workload::swarm(&mut Rng::new(seed), &ranges, 3, false, mode, &mut Rng::new(!seed));
                let barriers: Vec<usize> =
                    workload.scripts.iter().map(|s| s.ops.iter().filter(|o| **o == Op::Barrier).count()).collect();
                assert!(barriers.windows(2).all(|w| w[0] == w[1]), "seed {seed}: {barriers:?}");
                for (keys, values) in pushed(&workload) {
                    assert_eq!(keys.len(), values.len());
                    assert!(values.iter().all(|v| mode.admits(*v)), "{mode}: {values:?}");
                }
            }
        }
    }

    #[test]
    fn the_value_mode_changes_the_values_and_nothing_else() {
        for seed in 0..20 {
            let ranges = ServerRanges::equal(3);
            let draw = |mode| Workload::swarm(&mut Rng::new(seed), &ranges, 2, false, mode, &mut Rng::new(!seed));
            let (integers, fractions) = (draw(ValueMode::Integers), draw(ValueMode::Fractions));
            let strip = |w: &Workload| {
                let mut w = w.clone();
                for op in w.scripts.iter_mut().flat_map(|s| &mut s.ops) {
                    if let Op::Push { values, .. } | Op::PushPull { values, .. } = op {
                        values.iter_mut().for_each(|v| *v = v.floor());
                    }
                }
                w
            };
            assert_eq!(strip(&fractions), integers, "seed {seed}");
            let pushes = pushed(&fractions);
            assert!(pushes.iter().all(|(_, values)| values.iter().all(|v| v.fract() != 0.0)), "seed {seed}");
        }
    }
}
