//! Copies of a range hold the head's bytes, with pushed values whose f32
//! sums round: copies that added the same pushes in other orders would
//! hold other bits, so the settled cluster's byte comparison of the copies
//! means something here. It passes after several workers push to the same
//! keys at once through a server's crash and catch-up, and it fails when
//! one copy is one ulp off.

use std::collections::BTreeMap;

use pslite_core::{KvList, Rank, Role};
use pslite_sim::{Op, ValueMode};

use super::*;

/// A calm cluster of 3 servers and 3 workers keeping `replicas` copies of
/// each range, its workers pushing fractions.
fn fractional(seed: u64, replicas: u8) -> Sim {
    let mut setup = setup(seed, 3, 3);
    setup.replicas = replicas;
    setup.values = ValueMode::Fractions;
    ready(setup)
}

/// Both ends of the key space and one key inside each range.
fn keys(sim: &Sim) -> Vec<u64> {
    let ranges = sim.node(sim.server_slot(0)).expect("running").server_ranges().clone();
    let mut keys = vec![0, u64::MAX];
    keys.extend(ranges.as_slice().iter().map(|r| r.start() + (r.end_inclusive() - r.start()) / 2));
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// What worker `worker` pushes to the `index`th key in round `round`: a
/// whole number and some sevenths, varied so sums round every which way.
fn fraction(round: usize, worker: usize, index: usize) -> f32 {
    let whole = 1 + (round + worker + index) % 4;
    let sevenths = 1 + (3 * round + 5 * worker + index) % 6;
    whole as f32 + sevenths as f32 / 7.0
}

/// A request in flight: the worker's slot, whether it pushes, its id.
type Pending = (usize, bool, CustomerId, Timestamp);

/// Every worker pushes to every key and then pulls them all, at once;
/// `pushed` keeps each key's values in the order they were issued.
fn round(sim: &mut Sim, keys: &[u64], number: usize, pushed: &mut BTreeMap<u64, Vec<f32>>) -> Vec<Pending> {
    let mut pending = Vec::new();
    for worker in 0..sim.setup().workers as usize {
        let slot = sim.worker_slot(worker as u32);
        let values: Vec<f32> = (0..keys.len()).map(|index| fraction(number, worker, index)).collect();
        for (key, value) in keys.iter().zip(&values) {
            pushed.entry(*key).or_default().push(*value);
        }
        let push = Op::Push { app: 0, keys: keys.to_vec(), values };
        let (customer, ts) = sim.issue(slot, &push).expect("push accepted");
        pending.push((slot, true, customer, ts));
        let (customer, ts) = sim.issue(slot, &Op::Pull { app: 0, keys: keys.to_vec() }).expect("pull accepted");
        pending.push((slot, false, customer, ts));
    }
    pending
}

/// Waits for every request of a round: each must succeed (a range always
/// keeps a copy here).
fn settle(sim: &mut Sim, pending: Vec<Pending>) {
    for (slot, pushes, customer, ts) in pending {
        match wait(sim, slot, customer, ts) {
            Event::RequestDone { .. } if pushes => {}
            Event::PullDone { .. } if !pushes => {}
            other => panic!("slot {slot} ts {ts:?} ended with {other:?} (seed {:#x})", sim.setup().seed),
        }
    }
}

/// The f32 sum of `values` in their order.
fn f32_sum<'a>(values: impl Iterator<Item = &'a f32>) -> f32 {
    values.fold(0.0, |sum, v| sum + v)
}

#[test]
fn copies_stay_byte_equal_through_concurrent_fraction_pushes_a_crash_and_a_catch_up() {
    for replicas in [2u8, 3] {
        let mut sim = fractional(0xf7ac + u64::from(replicas), replicas);
        let keys = keys(&sim);
        let mut pushed = BTreeMap::new();
        let pending = round(&mut sim, &keys, 0, &mut pushed);
        settle(&mut sim, pending);
        // A server crashes with a round in flight; the copies left go on.
        let victim = sim.server_slot(1);
        let pending = round(&mut sim, &keys, 1, &mut pushed);
        sim.crash(victim);
        settle(&mut sim, pending);
        sim.run_for(crash_bound(&sim));
        sim.restart(victim);
        // Rounds go on while it learns its ranges again.
        let mut number = 2;
        while !catch_up::every_range_has(&sim, usize::from(replicas)) {
            let pending = round(&mut sim, &keys, number, &mut pushed);
            settle(&mut sim, pending);
            number += 1;
            assert!(number < 200, "the restarted server never caught up ({replicas} copies)");
        }
        let pending = round(&mut sim, &keys, number, &mut pushed);
        settle(&mut sim, pending);
        drive(&mut sim);
        // The values make the order of additions show in the bits: equal
        // bytes on every copy below are the head's, not a coincidence.
        let orders_matter = pushed.values().any(|v| f32_sum(v.iter()).to_bits() != f32_sum(v.iter().rev()).to_bits());
        assert!(orders_matter, "fraction sums that do not depend on the order");
        // The checker held every store and pull to the exact sums
        // throughout; settling compares the copies' bytes.
        finish(sim);
    }
}

/// A settled cluster keeping 2 copies, after rounds of fraction pushes;
/// and the slot of the tail of range 0, with a key of it.
fn settled_fractions() -> (Sim, usize, u64) {
    let mut sim = fractional(0x0e1b, 2);
    let keys = keys(&sim);
    let mut pushed = BTreeMap::new();
    for number in 0..3 {
        let pending = round(&mut sim, &keys, number, &mut pushed);
        settle(&mut sim, pending);
    }
    drive(&mut sim);
    let chain = sim.node(SCHEDULER).expect("the scheduler runs").membership().chains().as_slice()[0].clone();
    let tail: Rank = chain.tail().expect("range 0 has members");
    let slot = (0..sim.slots())
        .find(|&slot| sim.node(slot).is_some_and(|n| n.role() == Role::Server && n.rank() == Some(tail)))
        .expect("the tail runs");
    let key = *keys.iter().find(|&&k| chain.range().contains(k)).expect("a key in range 0");
    (sim, slot, key)
}

#[test]
fn a_copy_one_ulp_off_the_head_fails_the_settled_comparison() {
    let (sim, _, _) = settled_fractions();
    finish(sim);
    let (mut sim, tail, key) = settled_fractions();
    let held = sim.store(tail, 0).and_then(|s| s.get(key)).expect("the tail holds the key")[0];
    let off = f32::from_bits(held.to_bits() + 1);
    // Well within the rounding the checker allows a sum: only the bytes tell.
    sim.with_store(tail, 0, |store| {
        let state = KvList { keys: Keys::from_slice(&[key]), values: Values::from_slice(&[off]), lens: None };
        store.install(&state).expect("one f32 for a key it holds");
    })
    .expect("the tail has a store");
    let outcome = sim.run();
    let failure = outcome.failure.as_ref().expect("the copies differ");
    assert_eq!(failure.kind, FailureKind::Correctness, "{failure}");
    assert!(failure.what.contains("copies of range 0 differ once settled"), "{failure}");
    assert!(failure.what.contains(&format!("key {key}")) && failure.what.contains(&format!("{:#010x}", off.to_bits())));
}
