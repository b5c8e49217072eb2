//! Replicated ranges at the moments random search rarely hits: a member
//! dies between applying a batch and passing it on, two members of a
//! chain die together, every member dies, a worker dies with pushes at
//! the head, and a tail cut off from the scheduler keeps being asked for
//! pulls. The checker watches every copy throughout (exact sums per store,
//! acknowledged pushes on every member, pulls against everything
//! acknowledged); the tests check what the workers saw.

use pslite_core::RequestError;
use pslite_sim::queue::Delivery;

use super::*;

/// A calm cluster keeping `replicas` copies of each range.
fn replicated(seed: u64, servers: u32, workers: u32, replicas: u8) -> Sim {
    let mut setup = setup(seed, servers, workers);
    setup.replicas = replicas;
    let mut sim = ready(setup);
    drive(&mut sim);
    sim
}

/// A key in range `index` of `servers` equal ranges.
fn key_in(index: u32, servers: u32) -> u64 {
    let step = u64::MAX / u64::from(servers);
    step * u64::from(index) + 7
}

/// What the store of app 0 in `slot` holds for `key`.
fn held(sim: &Sim, slot: usize, key: u64) -> Option<f32> {
    sim.store(slot, 0)?.get(key).map(|values| values[0])
}

/// Issues a push of `value` to `key` from the worker in `slot`, without
/// waiting.
fn push(sim: &mut Sim, slot: usize, key: u64, value: f32) -> Timestamp {
    sim.with_node(slot, |n, now| {
        n.push(now, CustomerId::DEFAULT, 0, Keys::from_slice(&[key]), Values::from_slice(&[value]), None)
    })
    .expect("push accepted")
}

/// Drops the frames on the wire from the server in `from` to other
/// servers: the chain's traffic it sent last.
fn drop_chain_frames(sim: &mut Sim, from: usize) {
    let servers: Vec<usize> = (0..sim.setup().servers).map(|r| sim.server_slot(r)).collect();
    sim.drop_frames(|d: &Delivery| d.from == from && servers.contains(&d.to));
}

#[test]
fn a_head_that_dies_between_applying_and_forwarding_leaves_the_push_to_its_successor() {
    let mut sim = replicated(0x4ead, 3, 1, 2);
    let (w, head, tail) = (sim.worker_slot(0), sim.server_slot(0), sim.server_slot(1));
    let key = key_in(0, 3);
    assert!(matches!(push_wait(&mut sim, w, &[key], &[1.0]), Event::RequestDone { .. }));
    let ts = push(&mut sim, w, key, 2.0);
    // The head applies the push; its batch never leaves, and nor does it.
    assert!(sim.run_until(PATIENCE, |s| held(s, head, key) == Some(3.0)), "the head applies the push");
    drop_chain_frames(&mut sim, head);
    sim.crash(head);
    match wait(&mut sim, w, CustomerId::DEFAULT, ts) {
        Event::RequestDone { .. } => {}
        other => panic!("the push completes at the new head, not {other:?}"),
    }
    assert_eq!(held(&sim, tail, key), Some(3.0), "applied once, at the successor");
    assert_eq!(pull_wait(&mut sim, w, &[key]), [3.0]);
    finish(sim);
}

#[test]
fn a_tail_that_dies_between_applying_and_reporting_leaves_the_commit_to_its_predecessor() {
    let mut sim = replicated(0x7a11, 3, 1, 2);
    let (w, head, tail) = (sim.worker_slot(0), sim.server_slot(0), sim.server_slot(1));
    let key = key_in(0, 3);
    let ts = push(&mut sim, w, key, 5.0);
    assert!(sim.run_until(PATIENCE, |s| held(s, tail, key) == Some(5.0)), "the tail installs the batch");
    drop_chain_frames(&mut sim, tail);
    sim.crash(tail);
    match wait(&mut sim, w, CustomerId::DEFAULT, ts) {
        Event::RequestDone { .. } => {}
        other => panic!("the head, now the tail, acknowledges: {other:?}"),
    }
    assert_eq!(held(&sim, head, key), Some(5.0));
    assert_eq!(pull_wait(&mut sim, w, &[key]), [5.0], "pulled from the head, the tail now");
    finish(sim);
}

#[test]
fn a_middle_that_dies_with_batches_unforwarded_has_its_predecessor_send_them_on() {
    let mut sim = replicated(0x3dd1e, 3, 1, 3);
    let (w, middle, tail) = (sim.worker_slot(0), sim.server_slot(1), sim.server_slot(2));
    let key = key_in(0, 3);
    let ts = push(&mut sim, w, key, 4.0);
    assert!(sim.run_until(PATIENCE, |s| held(s, middle, key) == Some(4.0)), "the middle installs the batch");
    drop_chain_frames(&mut sim, middle);
    sim.crash(middle);
    match wait(&mut sim, w, CustomerId::DEFAULT, ts) {
        Event::RequestDone { .. } => {}
        other => panic!("the head sends its kept batches to the tail: {other:?}"),
    }
    assert_eq!(held(&sim, tail, key), Some(4.0));
    finish(sim);
}

#[test]
fn two_members_of_a_chain_dying_together_leave_the_third_serving_every_push() {
    let mut sim = replicated(0x2d1e, 3, 1, 3);
    let w = sim.worker_slot(0);
    let keys = [key_in(0, 3), key_in(1, 3), key_in(2, 3)];
    assert!(matches!(push_wait(&mut sim, w, &keys, &[1.0, 2.0, 3.0]), Event::RequestDone { .. }));
    sim.crash(sim.server_slot(0));
    sim.crash(sim.server_slot(2));
    let ts = sim
        .with_node(w, |n, now| {
            n.push(now, CustomerId::DEFAULT, 0, Keys::from_slice(&keys), Values::from_slice(&[1.0f32, 1.0, 1.0]), None)
        })
        .expect("push accepted");
    let issued = sim.now();
    match wait(&mut sim, w, CustomerId::DEFAULT, ts) {
        Event::RequestDone { .. } => {}
        other => panic!("every range keeps a copy: {other:?}"),
    }
    let took = sim.now().saturating_since(issued);
    assert!(took <= crash_bound(&sim) + PATIENCE / 1000, "completed within the failure bound, took {took:?}");
    assert_eq!(pull_wait(&mut sim, w, &keys), [2.0, 3.0, 4.0]);
    finish(sim);
}

#[test]
fn a_range_whose_every_member_died_fails_its_requests_with_range_lost() {
    let mut sim = replicated(0x105e, 3, 1, 2);
    let w = sim.worker_slot(0);
    // Range 0 lives on servers 0 and 1.
    sim.crash(sim.server_slot(0));
    sim.crash(sim.server_slot(1));
    let ts = push(&mut sim, w, key_in(0, 3), 1.0);
    match wait(&mut sim, w, CustomerId::DEFAULT, ts) {
        Event::RequestFailed { error: RequestError::RangeLost(range), .. } => assert!(range.contains(key_in(0, 3))),
        other => panic!("expected RangeLost, got {other:?}"),
    }
    // A request made after the table shows it is refused at once.
    let refused = sim.with_node(w, |n, now| {
        n.push(now, CustomerId::DEFAULT, 0, Keys::from_slice(&[key_in(0, 3)]), Values::from_slice(&[1.0]), None)
    });
    assert!(matches!(refused, Err(RequestError::RangeLost(_))), "{refused:?}");
    // Range 2 ([2, 0]) lost server 0 only and serves on.
    assert!(matches!(push_wait(&mut sim, w, &[key_in(2, 3)], &[1.0]), Event::RequestDone { .. }));
    finish(sim);
}

#[test]
fn a_worker_that_dies_with_a_push_at_the_head_leaves_every_copy_equal() {
    let mut sim = replicated(0xdead, 3, 2, 2);
    let (w0, w1, head) = (sim.worker_slot(0), sim.worker_slot(1), sim.server_slot(0));
    let key = key_in(0, 3);
    // The head holds the push for its handle while the worker dies.
    sim.serve(head, false);
    push(&mut sim, w0, key, 8.0);
    assert!(sim.run_until(PATIENCE, |s| s.events_of(head).any(|(_, e)| matches!(e, Event::ServerRequest(_)))));
    sim.crash(w0);
    sim.run_for(crash_bound(&sim));
    let request = sim
        .events_of(head)
        .find_map(|(_, e)| match e {
            Event::ServerRequest(r) => Some(r.clone()),
            _ => None,
        })
        .expect("the head got the push");
    // The handle answers late: the push is applied and must reach the
    // other copy even though nobody waits for its answer.
    sim.serve(head, true);
    sim.answer(head, request);
    assert!(matches!(push_wait(&mut sim, w1, &[key], &[1.0]), Event::RequestDone { .. }));
    assert_eq!(pull_wait(&mut sim, w1, &[key]), [9.0]);
    assert_eq!(held(&sim, sim.server_slot(1), key), Some(9.0), "the tail holds both pushes");
    finish(sim);
}

#[test]
fn a_tail_cut_off_from_the_scheduler_stops_serving_pulls_before_it_is_replaced() {
    let mut sim = replicated(0x1ea5e, 3, 1, 2);
    let (w, head, tail) = (sim.worker_slot(0), sim.server_slot(0), sim.server_slot(1));
    let key = key_in(0, 3);
    assert!(matches!(push_wait(&mut sim, w, &[key], &[1.0]), Event::RequestDone { .. }));
    // The tail of range 0 hears nothing from the scheduler; the workers
    // still reach it.
    sim.partition(vec![(tail, SCHEDULER), (SCHEDULER, tail)], PATIENCE, "tail from scheduler".into());
    // Just before the scheduler declares it dead, the worker is cut off
    // from the scheduler for a while too: it keeps the table in which
    // the cut-off server is the tail.
    let lease = sim.config(tail).read_lease();
    sim.run_for(lease - Duration::from_millis(200));
    let cut = Duration::from_millis(600);
    sim.partition(vec![(w, SCHEDULER), (SCHEDULER, w)], cut, "worker from scheduler".into());
    let replaced = |s: &Sim| s.node(head).is_some_and(|n| n.membership().chains().as_slice()[0].members().len() == 1);
    assert!(sim.run_until(PATIENCE, replaced), "the scheduler replaces the tail");
    // A push the head acknowledges alone, then a pull, which the worker
    // sends to the server it still takes for the tail: that one's copy
    // lacks the push, and its lease has lapsed, so it holds the pull; once
    // the worker has the new table the pull goes to the head.
    assert!(matches!(push_wait(&mut sim, w, &[key], &[2.0]), Event::RequestDone { .. }));
    let ts = sim
        .with_node(w, |n, now| n.pull(now, CustomerId::DEFAULT, 0, Keys::from_slice(&[key]), DType::F32))
        .expect("pull accepted");
    match wait(&mut sim, w, CustomerId::DEFAULT, ts) {
        Event::PullDone { values, .. } => assert_eq!(values.to_vec::<f32>(), Some(vec![3.0])),
        other => panic!("the pull completes at the new tail: {other:?}"),
    }
    let served_by_cut_tail = sim.events_of(tail).any(|(_, e)| matches!(e, Event::ServerRequest(r) if r.id.ts == ts));
    assert!(!served_by_cut_tail, "the cut-off tail never served the pull");
    finish(sim);
}
