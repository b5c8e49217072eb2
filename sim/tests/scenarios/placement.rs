//! The replica table through deaths and restarts: every node holds the
//! scheduler's, chains fail over in their order, and a restarted server
//! learns behind the tail before it joins the chains it left, as their tail.

use pslite_core::{Phase, Rank};

use super::*;

/// Each range's members and learner as every live node holds them, after
/// checking they all hold the same.
fn chains_everywhere(sim: &Sim) -> Vec<(Vec<u32>, Option<u32>)> {
    let mut seen: Option<Chains> = None;
    for slot in 0..sim.slots() {
        let Some(node) = sim.node(slot) else { continue };
        let chains = node.membership().chains();
        if let Some(first) = &seen {
            assert_eq!(first, chains, "slot {slot} holds another replica table");
        } else {
            seen = Some(chains.clone());
        }
    }
    let chains = seen.expect("a live node");
    chains.as_slice().iter().map(|c| (c.members().iter().map(|r| r.0).collect(), c.learner().map(|r| r.0))).collect()
}

#[test]
fn chains_fail_over_in_order_and_a_restarted_server_learns_behind_the_tail() {
    let mut setup = setup(0x91ace, 3, 2);
    setup.replicas = 3;
    let mut sim = ready(setup);
    drive(&mut sim);
    let all = |v: [u32; 3]| v.to_vec();
    assert_eq!(
        chains_everywhere(&sim),
        [(all([0, 1, 2]), None), (all([1, 2, 0]), None), (all([2, 0, 1]), None)],
        "range i starts on servers i, i+1, i+2"
    );
    // The head of range 1 dies: its successor heads it, and the others
    // lose a middle or a tail.
    let s1 = sim.server_slot(1);
    sim.crash(s1);
    sim.run_for(crash_bound(&sim));
    drive(&mut sim);
    assert_eq!(chains_everywhere(&sim), [(vec![0, 2], None), (vec![2, 0], None), (vec![2, 0], None)]);
    // Its replacement starts empty: it learns every range it is meant to
    // hold behind the tail, and joins each chain as its tail once it has
    // caught up: every range is back to three copies.
    sim.restart(s1);
    assert!(sim.run_until(PATIENCE, |s| s.node(s1).is_some_and(|n| n.phase() == Phase::Ready)));
    let first = sim.node(s1).expect("running").membership().chains().clone();
    assert!(
        first.as_slice().iter().all(|c| c.members().len() == 2 && c.learner() == Some(Rank(1))),
        "a learner first, with routing unchanged: {first:?}"
    );
    let caught_up = |s: &Sim| {
        let slot = s.server_slot(1);
        s.node(slot).is_some_and(|n| n.membership().chains().as_slice().iter().all(|c| c.members().len() == 3))
    };
    assert!(sim.run_until(PATIENCE, caught_up), "the restarted server never caught up");
    drive(&mut sim);
    assert_eq!(chains_everywhere(&sim), [(vec![0, 2, 1], None), (vec![2, 0, 1], None), (vec![2, 0, 1], None)]);
    finish(sim);
}

#[test]
fn with_one_replica_a_dead_servers_range_is_lost_until_its_replacement_starts_it_afresh() {
    let mut sim = ready(setup(0x91acf, 2, 1));
    drive(&mut sim);
    assert_eq!(chains_everywhere(&sim), [(vec![0], None), (vec![1], None)], "ps-lite's split");
    let s0 = sim.server_slot(0);
    sim.crash(s0);
    sim.run_for(crash_bound(&sim));
    drive(&mut sim);
    assert_eq!(chains_everywhere(&sim), [(vec![], None), (vec![1], None)]);
    sim.restart(s0);
    assert!(sim.run_until(PATIENCE, |s| s.node(s0).is_some_and(|n| n.phase() == Phase::Ready)));
    drive(&mut sim);
    assert_eq!(chains_everywhere(&sim), [(vec![0], None), (vec![1], None)]);
    finish(sim);
}
