//! The checker against made-up histories: each bad history must be
//! reported, and the good history next to it must not be.

use std::net::SocketAddr;

use pslite_core::wire::NodeEntry;
use pslite_core::{
    BarrierPolicy, BarrierTicket, Chains, CustomerId, Duration, Group, Incarnation, Instant, KeyRange, KvHandle,
    KvStore, Mismatch, NodeId, RangeChain, Rank, RequestError, ServerRanges, Timestamp,
};
use pslite_core::{Keys, KvList, KvOp, ServerRequest, ServerRequestId, Values};
use pslite_sim::{Bounds, Checker, Completion, Disturbance, Issued, RequestKey, StoreId, Sum, ValueMode};

const W0: NodeId = NodeId::worker(Rank(0));
const W1: NodeId = NodeId::worker(Rank(1));
const S0: NodeId = NodeId::server(Rank(0));
const WORKER_SLOT: usize = 3;
const SERVER_SLOT: usize = 1;
const STORE: StoreId = StoreId { slot: SERVER_SLOT, life: 0 };

fn at(ms: u64) -> Instant {
    Instant::ZERO + Duration::from_millis(ms)
}

/// Server 0's range, of two.
fn r0() -> KeyRange {
    ServerRanges::equal(2).get(Rank(0)).unwrap()
}

fn checker() -> Checker {
    checker_keeping(1)
}

fn checker_keeping(replicas: u8) -> Checker {
    let bounds = Bounds {
        request: Duration::from_secs(5),
        crash: Duration::from_millis(1200),
        crash_checked: true,
        resend: Duration::from_millis(1250),
        recovery: Duration::from_secs(2),
        barrier_policy: BarrierPolicy::WaitForRecovery,
        lost_scan: Duration::from_millis(102),
        lost_after: Duration::from_millis(1202),
        scheduler_slot: 0,
    };
    Checker::new(bounds, ServerRanges::equal(2), 2, 2, replicas)
}

fn request(ts: u32) -> RequestKey {
    RequestKey { node: W0, incarnation: Incarnation(0), customer: CustomerId::DEFAULT, ts: Timestamp(ts) }
}

fn push(keys: &[u64], values: &[f32]) -> Issued {
    Issued::Push { keys: keys.to_vec(), values: values.to_vec() }
}

fn issue_push(c: &mut Checker, ms: u64, ts: u32, keys: &[u64], values: &[f32]) {
    c.request_issued(at(ms), WORKER_SLOT, request(ts), push(keys, values), vec![S0]).expect("issue is fine");
}

fn violation(result: Result<(), pslite_sim::Violation>) -> String {
    result.expect_err("the checker must report this history").what
}

#[test]
fn a_push_applied_twice_by_one_store_is_reported() {
    let mut c = checker();
    issue_push(&mut c, 0, 0, &[1], &[2.0]);
    c.push_applied(STORE, S0, request(0), r0(), &[1], &[2.0]).expect("the first application is fine");
    let what = violation(c.push_applied(STORE, S0, request(0), r0(), &[1], &[2.0]));
    assert!(what.contains("applied twice"), "{what}");
}

#[test]
fn a_store_whose_contents_differ_from_what_it_applied_is_reported() {
    let mut c = checker();
    issue_push(&mut c, 0, 0, &[1], &[2.0]);
    c.push_applied(STORE, S0, request(0), r0(), &[1], &[2.0]).unwrap();
    let server_request = ServerRequest {
        id: ServerRequestId {
            from: W0,
            incarnation: Incarnation(0),
            customer: CustomerId::DEFAULT,
            ts: Timestamp(0),
            part: 0,
        },
        cmd: 0,
        op: KvOp::Push,
        keys: Keys::from_slice(&[1]),
        values: Values::from_slice(&[2.0f32]),
        lens: None,
    };
    let mut store = KvStore::<f32>::new();
    store.handle(&server_request);
    c.check_store(STORE, 0, &store, &[1, 2]).expect("the store matches the model");
    store.handle(&server_request);
    let what = violation(c.check_store(STORE, 0, &store, &[1, 2]));
    assert!(what.contains("key 1") && what.contains("sum to 2"), "{what}");
}

#[test]
fn a_push_applied_with_other_values_than_pushed_is_reported() {
    let mut c = checker();
    issue_push(&mut c, 0, 0, &[1, 2], &[2.0, 3.0]);
    let what = violation(c.push_applied(STORE, S0, request(0), r0(), &[1, 2], &[3.0, 2.0]));
    assert!(what.contains("the worker pushed 2"), "{what}");
}

#[test]
fn an_acknowledged_push_that_no_store_applied_is_reported() {
    let mut c = checker();
    issue_push(&mut c, 0, 0, &[1], &[2.0]);
    issue_push(&mut c, 0, 1, &[1], &[2.0]);
    c.push_applied(STORE, S0, request(1), r0(), &[1], &[2.0]).unwrap();
    c.request_completed(at(5), request(1), Completion::Done).expect("applied, then acknowledged");
    let what = violation(c.request_completed(at(5), request(0), Completion::Done));
    assert!(what.contains("no store applied"), "{what}");
}

#[test]
fn a_failed_push_may_be_applied_or_not() {
    let mut c = checker();
    issue_push(&mut c, 0, 0, &[1], &[2.0]);
    issue_push(&mut c, 0, 1, &[1], &[3.0]);
    c.push_applied(STORE, S0, request(1), r0(), &[1], &[3.0]).unwrap();
    let failed = RequestError::TimedOut;
    c.request_completed(at(5), request(0), Completion::Failed(&failed)).expect("failed, never applied");
    c.request_completed(at(5), request(1), Completion::Failed(&failed)).expect("failed, applied once");
}

#[test]
fn a_request_completed_twice_or_never_issued_is_reported() {
    let mut c = checker();
    issue_push(&mut c, 0, 0, &[1], &[2.0]);
    c.push_applied(STORE, S0, request(0), r0(), &[1], &[2.0]).unwrap();
    c.request_completed(at(1), request(0), Completion::Done).unwrap();
    assert!(violation(c.request_completed(at(2), request(0), Completion::Done)).contains("completed twice"));
    assert!(violation(c.request_completed(at(2), request(9), Completion::Done)).contains("never issued"));
}

#[test]
fn timestamps_that_do_not_increase_are_reported() {
    let mut c = checker();
    issue_push(&mut c, 0, 5, &[1], &[2.0]);
    let what = violation(c.request_issued(at(1), WORKER_SLOT, request(4), push(&[1], &[1.0]), vec![S0]));
    assert!(what.contains("timestamps"), "{what}");
}

#[test]
fn a_pull_value_outside_its_window_is_reported() {
    let mut c = checker();
    // Push 2 to key 1, acknowledged before the pull is issued; push 3 more,
    // applied but still pending while the pull runs.
    issue_push(&mut c, 0, 0, &[1], &[2.0]);
    c.push_applied(STORE, S0, request(0), r0(), &[1], &[2.0]).unwrap();
    c.request_completed(at(1), request(0), Completion::Done).unwrap();
    issue_push(&mut c, 2, 1, &[1], &[3.0]);
    c.push_applied(STORE, S0, request(1), r0(), &[1], &[3.0]).unwrap();
    for ts in 2..=5 {
        let pull = Issued::Pull { keys: vec![1] };
        c.request_issued(at(10), WORKER_SLOT, request(ts), pull, vec![S0]).unwrap();
        c.pull_served(STORE, S0, request(ts), r0()).unwrap();
    }
    let pulled = |value: f32| [value];
    let keys = [1u64];
    for (ts, value) in [(2, 2.0), (3, 5.0)] {
        let values = pulled(value);
        c.request_completed(at(11), request(ts), Completion::Pulled { keys: &keys, values: &values })
            .unwrap_or_else(|v| panic!("{value} is inside [2, 5]: {v}"));
    }
    let too_small = pulled(1.0);
    let what =
        violation(c.request_completed(at(11), request(4), Completion::Pulled { keys: &keys, values: &too_small }));
    assert!(what.contains("outside every window [2, 5]"), "{what}");
    let too_large = pulled(6.0);
    let what =
        violation(c.request_completed(at(11), request(5), Completion::Pulled { keys: &keys, values: &too_large }));
    assert!(what.contains("outside every window"), "{what}");
}

#[test]
fn a_pull_no_server_served_is_reported() {
    let mut c = checker();
    c.request_issued(at(0), WORKER_SLOT, request(0), Issued::Pull { keys: vec![1] }, vec![S0]).unwrap();
    let what = violation(c.request_completed(at(1), request(0), Completion::Pulled { keys: &[1], values: &[0.0] }));
    assert!(what.contains("never served"), "{what}");
}

#[test]
fn a_barrier_released_before_a_member_entered_is_reported() {
    let ticket = BarrierTicket { group: Group::WORKERS, generation: 0 };
    // W1 never entered and was never dead.
    let mut c = checker();
    c.barrier_entered(at(0), WORKER_SLOT, W0, Incarnation(0), ticket, false).unwrap();
    let what = violation(c.barrier_ended(at(1), W0, Incarnation(0), ticket, Some(&[])));
    assert!(what.contains("before member 11 entered"), "{what}");
    // Both entered.
    let mut c = checker();
    c.barrier_entered(at(0), WORKER_SLOT, W0, Incarnation(0), ticket, false).unwrap();
    c.barrier_entered(at(0), WORKER_SLOT + 1, W1, Incarnation(0), ticket, false).unwrap();
    c.barrier_ended(at(1), W0, Incarnation(0), ticket, Some(&[])).expect("every member entered");
    // W1 was declared dead while W0 waited: released among the living, and
    // the release names it.
    let mut c = checker();
    c.barrier_entered(at(0), WORKER_SLOT, W0, Incarnation(0), ticket, false).unwrap();
    c.node_declared_dead(at(1), W1, Incarnation(0));
    let what = violation(c.barrier_ended(at(2), W0, Incarnation(0), ticket, Some(&[])));
    assert!(what.contains("without naming it missing"), "{what}");
    let mut c = checker();
    c.barrier_entered(at(0), WORKER_SLOT, W0, Incarnation(0), ticket, false).unwrap();
    c.node_declared_dead(at(1), W1, Incarnation(0));
    // (Once the recovery timeout ran out: the policy is WaitForRecovery.)
    c.barrier_ended(at(2001), W0, Incarnation(0), ticket, Some(&[W1])).expect("the missing member was dead");
}

#[test]
fn a_barrier_released_without_a_live_member_is_reported() {
    let ticket = BarrierTicket { group: Group::WORKERS, generation: 0 };
    let mut c = checker();
    c.barrier_entered(at(0), WORKER_SLOT, W0, Incarnation(0), ticket, false).unwrap();
    let what = violation(c.barrier_ended(at(1), W0, Incarnation(0), ticket, Some(&[W1])));
    assert!(what.contains("which was alive throughout"), "{what}");
    let mut c = checker();
    c.barrier_entered(at(0), WORKER_SLOT, W0, Incarnation(0), ticket, false).unwrap();
    c.barrier_entered(at(0), WORKER_SLOT + 1, W1, Incarnation(0), ticket, false).unwrap();
    let what = violation(c.barrier_ended(at(1), W0, Incarnation(0), ticket, Some(&[S0])));
    assert!(what.contains("no member"), "{what}");
}

#[test]
fn two_live_processes_with_one_identity_are_reported() {
    let c = checker();
    let mut fine = vec![(S0, Incarnation(0)), (S0, Incarnation(1)), (W0, Incarnation(0))];
    c.check_identities(&mut fine).expect("incarnations tell them apart");
    let mut twins = vec![(S0, Incarnation(1)), (W0, Incarnation(0)), (S0, Incarnation(1))];
    assert!(violation(c.check_identities(&mut twins)).contains("node 8 incarnation 1"));
}

#[test]
fn tables_that_differ_at_one_epoch_are_reported() {
    let entry = |id: NodeId, alive: bool| NodeEntry {
        id,
        incarnation: Incarnation(0),
        addr: SocketAddr::from(([10, 0, 0, 1], 7000)),
        instance: u64::from(id.get()),
        alive,
    };
    let ids = [NodeId::server(Rank(0)), NodeId::worker(Rank(0)), NodeId::server(Rank(1)), NodeId::worker(Rank(1))];
    let mut ordered = ids.to_vec();
    ordered.sort();
    let table = |dead: Option<NodeId>| ordered.iter().map(|&id| entry(id, Some(id) != dead)).collect::<Vec<_>>();
    let mut c = checker();
    let chains = Chains::initial(&ServerRanges::equal(2), 1, 3);
    c.check_table(Instant::ZERO, W0, 3, table(None), &chains).unwrap();
    c.check_table(Instant::ZERO, W1, 3, table(None), &chains).expect("the same table");
    let what = violation(c.check_table(Instant::ZERO, W1, 3, table(Some(S0)), &chains));
    assert!(what.contains("another table at epoch 3"), "{what}");
    let what = violation(c.check_table(Instant::ZERO, W1, 4, table(None)[1..].to_vec(), &chains));
    assert!(what.contains("lists ids"), "{what}");
}

/// Server `rank`'s entry in a table of 2 servers and 2 workers.
fn entries(servers: [(u32, bool); 2]) -> Vec<NodeEntry> {
    let entry = |id: NodeId, incarnation: u32, alive: bool| NodeEntry {
        id,
        incarnation: Incarnation(incarnation),
        addr: SocketAddr::from(([10, 0, 0, 1], 7000)),
        instance: u64::from(id.get()),
        alive,
    };
    let mut table = vec![entry(W0, 0, true), entry(W1, 0, true)];
    for (rank, (incarnation, alive)) in (0..).zip(servers) {
        table.push(entry(NodeId::server(Rank(rank)), incarnation, alive));
    }
    table.sort_by_key(|e| e.id);
    table
}

/// A table of 2 ranges kept twice: `chains[i]` is range i's members, its
/// learner and its `changed_at`.
fn chains(ranges: [(&[u32], Option<u32>, u64); 2]) -> Chains {
    let split = ServerRanges::equal(2);
    let chains = (0..2)
        .map(|i| {
            let (members, learner, changed_at) = ranges[i];
            let members = members.iter().map(|&r| Rank(r)).collect();
            RangeChain::new(split.as_slice()[i], members, learner.map(Rank), changed_at)
        })
        .collect();
    Chains::from_parts(2, chains).unwrap()
}

#[test]
fn replica_tables_that_differ_at_one_epoch_or_name_the_dead_are_reported() {
    let mut c = checker_keeping(2);
    let all = entries([(0, true), (0, true)]);
    let initial = chains([(&[0, 1], None, 1), (&[1, 0], None, 1)]);
    c.check_table(Instant::ZERO, W0, 1, all.clone(), &initial).unwrap();
    let other = chains([(&[1, 0], None, 1), (&[1, 0], None, 1)]);
    let what = violation(c.check_table(Instant::ZERO, W1, 1, all.clone(), &other));
    assert!(what.contains("another replica table at epoch 1"), "{what}");
    // Server 1 is dead in the table that still names it.
    let what = violation(c.check_table(Instant::ZERO, W1, 2, entries([(0, true), (0, false)]), &initial));
    assert!(what.contains("names server 1, dead"), "{what}");
    let mut c = checker_keeping(2);
    let what = violation(c.check_table(Instant::ZERO, W0, 1, all, &Chains::initial(&ServerRanges::equal(2), 1, 1)));
    assert!(what.contains("1 replicas, the cluster keeps 2"), "{what}");
}

#[test]
fn a_server_that_leaves_a_chain_alive_or_joins_without_catching_up_is_reported() {
    let mut c = checker_keeping(2);
    c.check_table(
        Instant::ZERO,
        W0,
        1,
        entries([(0, true), (0, true)]),
        &chains([(&[0, 1], None, 1), (&[1, 0], None, 1)]),
    )
    .unwrap();
    // Server 1 dies: it leaves both chains; then it restarts and learns.
    let dead = chains([(&[0], None, 2), (&[0], None, 2)]);
    c.check_table(Instant::ZERO, W0, 2, entries([(0, true), (0, false)]), &dead).expect("a death");
    let learning = chains([(&[0], Some(1), 2), (&[0], None, 2)]);
    c.check_table(Instant::ZERO, W0, 3, entries([(0, true), (1, true)]), &learning).expect("a learner");
    let caught_up = chains([(&[0, 1], None, 4), (&[0], None, 2)]);
    c.check_table(Instant::ZERO, W0, 4, entries([(0, true), (1, true)]), &caught_up).expect("the learner caught up");
    let skipped = chains([(&[0, 1], None, 4), (&[0, 1], None, 5)]);
    let what = violation(c.check_table(Instant::ZERO, W0, 5, entries([(0, true), (1, true)]), &skipped));
    assert!(what.contains("range 1 from epoch 4 to 5: server 1 joined without catching up"), "{what}");
    let unchanged = chains([(&[0], None, 4), (&[0], None, 2)]);
    let what = violation(c.check_table(Instant::ZERO, W0, 6, entries([(0, true), (1, true)]), &unchanged));
    assert!(what.contains("range 0 from epoch 4 to 6: server 1 left the chain alive"), "{what}");
    // Server 1 dies again and leaves range 0, but the range's date stays.
    let undated = chains([(&[0], None, 4), (&[0], None, 2)]);
    let what = violation(c.check_table(Instant::ZERO, W0, 7, entries([(0, true), (1, false)]), &undated));
    assert!(what.contains("without changed_at moving on"), "{what}");
}

#[test]
fn a_wait_past_its_bound_after_a_crash_is_reported() {
    let mut c = checker();
    issue_push(&mut c, 0, 0, &[1], &[2.0]);
    c.process_crashed(at(1000), SERVER_SLOT, Some((S0, Incarnation(0))));
    c.check_deadlines(at(2199)).expect("within heartbeat timeout + interval + slack");
    let what = violation(c.check_deadlines(at(2201)));
    assert!(what.contains("bounded wait") && what.contains("slot 1 crashed"), "{what}");
}

#[test]
fn a_pause_of_the_scheduler_extends_the_bound() {
    let mut c = checker();
    issue_push(&mut c, 0, 0, &[1], &[2.0]);
    c.process_crashed(at(1000), SERVER_SLOT, Some((S0, Incarnation(0))));
    c.disturbance(Disturbance { slot: 0, peer: None, from: at(1500), until: at(3000) });
    c.check_deadlines(at(4199)).expect("a paused scheduler declares nobody dead");
    assert!(violation(c.check_deadlines(at(4201))).contains("bounded wait"));
}

#[test]
fn a_request_past_request_timeout_is_reported() {
    let mut c = checker();
    issue_push(&mut c, 0, 0, &[1], &[2.0]);
    c.check_deadlines(at(4999)).expect("within request_timeout");
    assert!(violation(c.check_deadlines(at(5001))).contains("request_timeout"));
}

#[test]
fn a_request_that_the_crashed_server_already_answered_is_not_bound_by_its_crash() {
    let mut c = checker();
    issue_push(&mut c, 0, 0, &[1], &[2.0]);
    c.push_applied(STORE, S0, request(0), r0(), &[1], &[2.0]).unwrap();
    c.process_crashed(at(1000), SERVER_SLOT, Some((S0, Incarnation(0))));
    c.check_deadlines(at(4000)).expect("only request_timeout bounds it now");
}

#[test]
fn a_pull_completed_despite_a_corrupt_answer_or_refused_for_an_honest_one_is_reported() {
    let pull = |c: &mut Checker, ts| {
        c.request_issued(at(0), WORKER_SLOT, request(ts), Issued::Pull { keys: vec![1] }, vec![S0]).unwrap();
    };
    let mut c = checker();
    pull(&mut c, 0);
    c.pull_served(STORE, S0, request(0), r0()).unwrap();
    c.answer_corrupted(request(0), S0, Mismatch::Keys);
    let what = violation(c.request_completed(at(1), request(0), Completion::Pulled { keys: &[1], values: &[0.0] }));
    assert!(what.contains("completed although"), "{what}");
    // Refused for the right reason: fine; for another, or with no reason: not.
    pull(&mut c, 1);
    c.answer_corrupted(request(1), S0, Mismatch::ValueType);
    let refused = RequestError::BadResponse { server: S0, mismatch: Mismatch::ValueType };
    c.request_completed(at(1), request(1), Completion::Failed(&refused)).expect("the corrupt answer was refused");
    pull(&mut c, 2);
    c.answer_corrupted(request(2), S0, Mismatch::Lengths);
    let what = violation(c.request_completed(at(1), request(2), Completion::Failed(&refused)));
    assert!(what.contains("answered it as asked"), "{what}");
    pull(&mut c, 3);
    let what = violation(c.request_completed(at(1), request(3), Completion::Failed(&refused)));
    assert!(what.contains("answered it as asked"), "{what}");
}

#[test]
fn a_barrier_that_waits_for_recovery_released_before_the_recovery_timeout_is_reported() {
    // Bounds: recovery 2 s, WaitForRecovery. W1 dies at 1 s; W0 waits.
    let ticket = BarrierTicket { group: Group::WORKERS, generation: 0 };
    let mut c = checker();
    c.barrier_entered(at(0), WORKER_SLOT, W0, Incarnation(0), ticket, false).unwrap();
    c.node_declared_dead(at(1000), W1, Incarnation(0));
    let what = violation(c.barrier_ended(at(2500), W0, Incarnation(0), ticket, Some(&[W1])));
    assert!(what.contains("before the recovery timeout"), "{what}");
    let mut c = checker();
    c.barrier_entered(at(0), WORKER_SLOT, W0, Incarnation(0), ticket, false).unwrap();
    c.node_declared_dead(at(1000), W1, Incarnation(0));
    c.barrier_ended(at(3000), W0, Incarnation(0), ticket, Some(&[W1])).expect("released at the timeout");
}

#[test]
fn a_learner_that_joins_ahead_of_the_tail_or_a_date_that_moves_alone_is_reported() {
    let mut c = checker_keeping(2);
    let alive = || entries([(0, true), (1, true)]);
    c.check_table(Instant::ZERO, W0, 1, entries([(0, true), (0, false)]), &chains([(&[0], None, 1), (&[0], None, 1)]))
        .unwrap();
    let learning = chains([(&[0], Some(1), 1), (&[0], Some(1), 1)]);
    c.check_table(Instant::ZERO, W0, 2, entries([(0, true), (1, true)]), &learning).expect("learners");
    let ahead = chains([(&[1, 0], None, 3), (&[0], Some(1), 1)]);
    let what = violation(c.check_table(Instant::ZERO, W0, 3, alive(), &ahead));
    assert!(what.contains("range 0 from epoch 2 to 3: server 1 joined, but not as the tail"), "{what}");
    let redated = chains([(&[0], Some(1), 3), (&[0], Some(1), 1)]);
    let what = violation(c.check_table(Instant::ZERO, W0, 3, alive(), &redated));
    assert!(what.contains("changed_at moved, but the members did not change"), "{what}");
    let behind = chains([(&[0, 1], None, 3), (&[0], Some(1), 1)]);
    c.check_table(Instant::ZERO, W0, 3, alive(), &behind).expect("caught up, as the tail");
}

/// Fractions as the swarm pushes them: whole numbers plus sevenths, whose
/// f32 sums round, differently in each direction. The smallest comes last.
const FRACTIONS: [f32; 6] =
    [4.0 + 5.0 / 7.0, 3.0 + 3.0 / 7.0, 2.0 + 3.0 / 7.0, 2.0 + 2.0 / 7.0, 4.0 + 1.0 / 7.0, 1.0 + 4.0 / 7.0];
const SMALLEST: f32 = FRACTIONS[5];

/// A fraction-mode checker in which the store applied each of
/// [`FRACTIONS`] to key 1, as pushes 0 to 5, all acknowledged.
fn fractions_applied() -> Checker {
    let mut c = checker().with_values(ValueMode::Fractions);
    for (ts, value) in (0..).zip(FRACTIONS) {
        issue_push(&mut c, 0, ts, &[1], &[value]);
        c.push_applied(STORE, S0, request(ts), r0(), &[1], &[value]).unwrap();
        c.request_completed(at(1), request(ts), Completion::Done).unwrap();
    }
    c
}

/// A store whose key 1 holds `value`.
fn holding(value: f32) -> KvStore<f32> {
    let mut store = KvStore::<f32>::new();
    let state = KvList { keys: Keys::from_slice(&[1]), values: Values::from_slice(&[value]), lens: None };
    store.install(&state).expect("one f32 for one key");
    store
}

/// The f32 sum of `values`, added from last to first: another order than
/// the pushes came in, with other rounding.
fn summed_backwards(values: &[f32]) -> f32 {
    values.iter().rev().fold(0.0, |sum, v| sum + v)
}

#[test]
fn with_fractions_a_store_whose_sum_rounded_in_another_order_is_not_reported() {
    let c = fractions_applied();
    let exact = Sum::of(FRACTIONS).total;
    let forwards = FRACTIONS.iter().fold(0.0f32, |sum, v| sum + v);
    let backwards = summed_backwards(&FRACTIONS);
    // Both roundings are off the exact sum, and off each other: an exact
    // comparison would report them, and bytes tell the orders apart.
    assert!(f64::from(forwards) != exact && f64::from(backwards) != exact);
    assert_ne!(forwards.to_bits(), backwards.to_bits());
    for sum in [forwards, backwards] {
        c.check_store(STORE, 0, &holding(sum), &[1]).unwrap_or_else(|v| panic!("{sum} is {exact} rounded: {v}"));
    }
}

#[test]
fn with_fractions_a_store_missing_one_push_is_reported() {
    let c = fractions_applied();
    // The smallest push is the hardest to tell from rounding.
    let without_smallest = summed_backwards(&FRACTIONS[..5]);
    let what = violation(c.check_store(STORE, 0, &holding(without_smallest), &[1]));
    assert!(what.contains("key 1") && what.contains("sum to") && what.contains("(6 pushes)"), "{what}");
}

#[test]
fn with_fractions_a_store_holding_one_push_twice_is_reported() {
    let c = fractions_applied();
    let twice = summed_backwards(&FRACTIONS) + SMALLEST;
    let what = violation(c.check_store(STORE, 0, &holding(twice), &[1]));
    assert!(what.contains("key 1") && what.contains("sum to"), "{what}");
}

#[test]
fn with_fractions_a_pull_is_held_to_its_window_within_rounding() {
    let mut c = fractions_applied();
    for ts in 10..=12 {
        c.request_issued(at(10), WORKER_SLOT, request(ts), Issued::Pull { keys: vec![1] }, vec![S0]).unwrap();
        c.pull_served(STORE, S0, request(ts), r0()).unwrap();
    }
    let keys = [1u64];
    let rounded = [summed_backwards(&FRACTIONS)];
    c.request_completed(at(11), request(10), Completion::Pulled { keys: &keys, values: &rounded })
        .expect("every push counted once, rounded");
    let missing = [summed_backwards(&FRACTIONS[..5])];
    let what =
        violation(c.request_completed(at(11), request(11), Completion::Pulled { keys: &keys, values: &missing }));
    assert!(what.contains("outside every window"), "{what}");
    let doubled = [rounded[0] + SMALLEST];
    let what =
        violation(c.request_completed(at(11), request(12), Completion::Pulled { keys: &keys, values: &doubled }));
    assert!(what.contains("outside every window"), "{what}");
}

#[test]
fn with_integers_a_store_one_ulp_off_its_sum_is_reported() {
    let mut c = checker();
    issue_push(&mut c, 0, 0, &[1], &[2.0]);
    issue_push(&mut c, 0, 1, &[1], &[3.0]);
    c.push_applied(STORE, S0, request(0), r0(), &[1], &[2.0]).unwrap();
    c.push_applied(STORE, S0, request(1), r0(), &[1], &[3.0]).unwrap();
    c.check_store(STORE, 0, &holding(5.0), &[1]).expect("the exact sum");
    let off = f32::from_bits(5.0f32.to_bits() + 1);
    let what = violation(c.check_store(STORE, 0, &holding(off), &[1]));
    assert!(what.contains("sum to 5"), "{what}");
    // The same store is within rounding for a fraction-mode checker.
    let mut c = checker().with_values(ValueMode::Fractions);
    issue_push(&mut c, 0, 0, &[1], &[2.0]);
    issue_push(&mut c, 0, 1, &[1], &[3.0]);
    c.push_applied(STORE, S0, request(0), r0(), &[1], &[2.0]).unwrap();
    c.push_applied(STORE, S0, request(1), r0(), &[1], &[3.0]).unwrap();
    c.check_store(STORE, 0, &holding(off), &[1]).expect("one ulp is rounding");
}

#[test]
#[should_panic(expected = "pushed values are integers")]
fn with_integers_a_fraction_pushed_is_a_broken_workload() {
    let mut c = checker();
    issue_push(&mut c, 0, 0, &[1], &[FRACTIONS[0]]);
}
