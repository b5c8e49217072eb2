//! A restarted server catching up with its ranges: while pushes go on,
//! when the learner dies mid-transfer, and when the tail it learns from
//! dies mid-transfer. Each ends with every range back to its full count
//! of copies and every copy holding the same bytes; the checker watches
//! every store throughout (a chunk installs the source's state at its
//! read, batches add theirs).

use pslite_core::{KeyRange, KvStore, Phase};

use super::*;

/// Keys enough for several chunks of a transfer (4096 keys each), spread
/// over every range.
const KEYS: u64 = 9000;

fn keys() -> Vec<u64> {
    let step = u64::MAX / KEYS;
    (0..KEYS).map(|i| i * step + 3).collect()
}

/// A calm cluster keeping `replicas` copies of each range, every key
/// pushed once.
fn loaded(seed: u64, servers: u32, replicas: u8) -> Sim {
    let mut setup = setup(seed, servers, 1);
    setup.replicas = replicas;
    setup.transfer_chunk_keys = 4096;
    let mut sim = ready(setup);
    let keys = keys();
    let ones = vec![1.0f32; keys.len()];
    let w = sim.worker_slot(0);
    assert!(matches!(push_wait(&mut sim, w, &keys, &ones), Event::RequestDone { .. }));
    sim
}

/// Whether every live node's table has every range at `copies` members.
pub(super) fn every_range_has(sim: &Sim, copies: usize) -> bool {
    (0..sim.slots()).filter_map(|slot| sim.node(slot)).all(|node| {
        node.membership().chains().as_slice().iter().all(|c| c.members().len() == copies && c.learner().is_none())
    })
}

/// Everything a store holds, as its bytes.
fn whole(store: &KvStore<f32>) -> (Vec<u64>, Vec<u8>) {
    let all = store.export_range(KeyRange::FULL, usize::MAX, usize::MAX);
    (all.keys.iter().collect(), all.values.as_bytes().to_vec())
}

/// Every server's store holds the same keys and bytes.
fn copies_equal(sim: &Sim) {
    let servers: Vec<usize> = (0..sim.setup().servers).map(|r| sim.server_slot(r)).collect();
    let first = whole(sim.store(servers[0], 0).expect("a store"));
    for &slot in &servers[1..] {
        assert!(whole(sim.store(slot, 0).expect("a store")) == first, "slot {slot} differs from slot {}", servers[0]);
    }
}

/// Pushes `value` to every key from the worker without waiting.
fn push_all(sim: &mut Sim, value: f32) -> Timestamp {
    let keys = keys();
    let values = vec![value; keys.len()];
    let w = sim.worker_slot(0);
    sim.with_node(w, |n, now| {
        n.push(now, CustomerId::DEFAULT, 0, Keys::from_slice(&keys), Values::from_slice(&values), None)
    })
    .expect("push accepted")
}

/// Whether the server in `slot` holds some of its ranges' keys while still
/// learning them.
fn mid_transfer(sim: &Sim, slot: usize) -> bool {
    let learning = sim.node(slot).is_some_and(|n| {
        let rank = n.rank();
        n.phase() == Phase::Ready && n.membership().chains().as_slice().iter().any(|c| c.learner() == rank)
    });
    learning && sim.store(slot, 0).is_some_and(|s| !s.is_empty())
}

#[test]
fn a_restarted_server_catches_up_while_pushes_go_on_and_ends_equal_to_the_others() {
    let mut sim = loaded(0xca7c, 2, 2);
    let (w, s1) = (sim.worker_slot(0), sim.server_slot(1));
    sim.crash(s1);
    sim.run_for(crash_bound(&sim));
    assert!(every_range_has(&sim, 1));
    sim.restart(s1);
    // Pushes keep coming while it learns: each waits for the one before.
    let mut rounds = 1.0;
    while !every_range_has(&sim, 2) {
        let ts = push_all(&mut sim, 1.0);
        assert!(matches!(wait(&mut sim, w, CustomerId::DEFAULT, ts), Event::RequestDone { .. }));
        rounds += 1.0;
        assert!(rounds < 1000.0, "the restarted server never caught up");
    }
    assert!(rounds > 2.0, "pushes went on during the transfer");
    let ts = push_all(&mut sim, 1.0);
    assert!(matches!(wait(&mut sim, w, CustomerId::DEFAULT, ts), Event::RequestDone { .. }));
    drive(&mut sim);
    copies_equal(&sim);
    let pulled = pull_wait(&mut sim, w, &keys());
    assert!(pulled.iter().all(|&v| v == rounds + 1.0), "every push counted once: {:?}", &pulled[..3]);
    finish(sim);
}

#[test]
fn a_learner_that_dies_mid_transfer_learns_again_from_scratch_when_it_comes_back() {
    let mut sim = loaded(0x1ea7, 2, 2);
    let s1 = sim.server_slot(1);
    sim.crash(s1);
    sim.run_for(crash_bound(&sim));
    sim.restart(s1);
    assert!(sim.run_until(PATIENCE, |s| mid_transfer(s, s1)), "the learner gets a first chunk");
    sim.crash(s1);
    sim.run_for(crash_bound(&sim));
    assert!(every_range_has(&sim, 1), "the learner left without joining");
    sim.restart(s1);
    assert!(sim.run_until(PATIENCE, |s| every_range_has(s, 2)), "the new process catches up");
    drive(&mut sim);
    copies_equal(&sim);
    finish(sim);
}

#[test]
fn a_tail_that_dies_mid_transfer_leaves_the_learner_to_start_over_from_the_new_tail() {
    let mut sim = loaded(0x7a1d, 3, 3);
    let (s1, s2) = (sim.server_slot(1), sim.server_slot(2));
    sim.crash(s2);
    sim.run_for(crash_bound(&sim));
    sim.restart(s2);
    // Range 0 is [0, 1] then: server 1 streams it to server 2.
    assert!(sim.run_until(PATIENCE, |s| mid_transfer(s, s2)), "the learner gets a first chunk");
    sim.crash(s1);
    sim.run_for(crash_bound(&sim));
    // Server 0 is the tail of what server 1 held, and streams it anew.
    assert!(sim.run_until(PATIENCE, |s| every_range_has(s, 2)), "the learner catches up from the new tail");
    sim.restart(s1);
    assert!(sim.run_until(PATIENCE, |s| every_range_has(s, 3)), "and so does the second one");
    drive(&mut sim);
    copies_equal(&sim);
    let w = sim.worker_slot(0);
    assert!(pull_wait(&mut sim, w, &keys()).iter().all(|&v| v == 1.0));
    finish(sim);
}
