//! Hand-written fault plans for cases random search rarely hits, in the
//! spirit of VOPR's scenario DSL: build a calm cluster, drive it to the
//! interesting moment, strike, and check what the nodes reported. Every
//! scenario then runs the liveness phase, so the cluster must also recover
//! and finish, with the checker watching throughout.

use pslite_core::{BarrierTicket, CustomerId, Duration, Event, Incarnation, Instant, RequestError, Timestamp};
use pslite_sim::{FailureKind, Op, Setup, Sim};

/// How long a wait on a crashed node may take: failure detection plus two
/// network delays (the table that announces it) and a little slack.
fn crash_bound(sim: &Sim) -> Duration {
    let timing = sim.setup().timing;
    timing.heartbeat_timeout + timing.heartbeat_interval + 2 * sim.setup().plan.delay_max() + Duration::from_millis(2)
}

fn ready(servers: u32, workers: u32) -> Sim {
    let mut sim = Sim::new(Setup::scenario(0x5ce7a810, servers, workers));
    assert!(sim.run_until(Duration::from_secs(5), Sim::cluster_ready), "the cluster forms");
    sim
}

/// The end of request `ts` of `customer` at `slot`, once it happened.
fn completion(sim: &Sim, slot: usize, customer: CustomerId, ts: Timestamp) -> Option<(Instant, Event)> {
    sim.events_of(slot)
        .find(|(_, e)| match e {
            Event::RequestDone { customer: c, ts: t }
            | Event::PullDone { customer: c, ts: t, .. }
            | Event::RequestFailed { customer: c, ts: t, .. }
            | Event::SimpleDone { customer: c, ts: t, .. } => *c == customer && *t == ts,
            _ => false,
        })
        .map(|(at, e)| (at, e.clone()))
}

fn barrier_end(sim: &Sim, slot: usize, ticket: BarrierTicket) -> Option<(Instant, Event)> {
    sim.events_of(slot)
        .find(|(_, e)| matches!(e, Event::BarrierReleased(t) | Event::BarrierFailed(t, _) if *t == ticket))
        .map(|(at, e)| (at, e.clone()))
}

/// Runs the liveness phase: everything must heal and finish.
fn finish(mut sim: Sim) {
    let outcome = sim.run();
    assert!(outcome.passed(), "{}", outcome.report());
}

#[test]
fn server_crash_during_push_pull_fails_the_request_with_peer_dead_within_the_bound() {
    let mut sim = ready(2, 1);
    let (worker, server) = (sim.worker_slot(0), sim.server_slot(1));
    let server_id = sim.node(server).unwrap().id();
    let op = Op::PushPull { app: 0, keys: vec![0, 1 << 63, u64::MAX], values: vec![1.0, 2.0, 3.0] };
    let (customer, ts) = sim.issue(worker, &op).expect("push_pull accepted");
    sim.crash(server);
    let crashed_at = sim.now();
    assert!(sim.run_until(Duration::from_secs(10), |s| completion(s, worker, customer, ts).is_some()));
    let (at, event) = completion(&sim, worker, customer, ts).unwrap();
    let error = RequestError::PeerDead(server_id);
    assert_eq!(event, Event::RequestFailed { customer, ts, error });
    let waited = at.saturating_since(crashed_at);
    assert!(waited <= crash_bound(&sim), "waited {waited:?}, bound {:?}", crash_bound(&sim));
    assert!(sim.failure().is_none(), "{:?}", sim.failure());
    finish(sim);
}

#[test]
fn restarted_server_takes_the_old_id_with_a_new_incarnation_and_stale_frames_are_dropped() {
    let mut sim = ready(1, 1);
    let (worker, server) = (sim.worker_slot(0), sim.server_slot(0));
    let server_id = sim.node(server).unwrap().id();
    // What the first server process sends the worker is held on the way
    // until long after a new process has taken its place.
    let clog_until = sim.now() + Duration::from_secs(4);
    sim.clog(server, worker, clog_until);
    let (customer, ts) = sim.issue(worker, &Op::Push { app: 0, keys: vec![5], values: vec![1.0] }).unwrap();
    sim.run_for(Duration::from_millis(20));
    sim.crash(server);
    sim.restart(server);
    let replaced = |s: &Sim| {
        let table = s.node(0).unwrap().membership();
        let node = s.node(server).unwrap();
        table.get(server_id).is_some_and(|e| e.alive && e.incarnation == Incarnation(1)) && node.id() == server_id
    };
    assert!(sim.run_until(Duration::from_secs(3), replaced), "the restarted server takes the dead id");
    let node = sim.node(server).unwrap();
    assert_eq!((node.id(), node.incarnation()), (server_id, Incarnation(1)));
    assert!(sim.run_until(Duration::from_secs(1), |s| completion(s, worker, customer, ts).is_some()));
    let (_, event) = completion(&sim, worker, customer, ts).unwrap();
    assert_eq!(event, Event::RequestFailed { customer, ts, error: RequestError::PeerDead(server_id) });
    let stale_before = sim.node(worker).unwrap().stats().stale_incarnation_drops;
    sim.run_for(clog_until.saturating_since(sim.now()) + Duration::from_millis(100));
    let stale_after = sim.node(worker).unwrap().stats().stale_incarnation_drops;
    assert!(stale_after > stale_before, "the old incarnation's answer is dropped as stale");
    assert!(completion(&sim, worker, customer, ts).is_some_and(|(_, e)| matches!(e, Event::RequestFailed { .. })));
    assert!(sim.failure().is_none(), "{:?}", sim.failure());
    finish(sim);
}

#[test]
fn scheduler_partitioned_from_one_worker_fails_its_requests_with_scheduler_lost() {
    let mut sim = ready(1, 2);
    let (lonely, other, server) = (sim.worker_slot(0), sim.worker_slot(1), sim.server_slot(0));
    let server_id = sim.node(server).unwrap().id();
    // The server stops answering for a while, so requests stay pending.
    sim.pause(server, Duration::from_secs(3));
    let cut = vec![(0, lonely), (lonely, 0)];
    sim.partition(cut, Duration::from_secs(3), "scheduler from one worker".to_owned());
    let partitioned_at = sim.now();
    let push = Op::Push { app: 0, keys: vec![7], values: vec![1.0] };
    let (c1, ts1) = sim.issue(lonely, &push).unwrap();
    let (c2, ts2) = sim.issue(other, &push).unwrap();
    let both = |s: &Sim| completion(s, lonely, c1, ts1).is_some() && completion(s, other, c2, ts2).is_some();
    assert!(sim.run_until(Duration::from_secs(3), both));
    let (at, event) = completion(&sim, lonely, c1, ts1).unwrap();
    assert_eq!(event, Event::RequestFailed { customer: c1, ts: ts1, error: RequestError::SchedulerLost });
    let timing = sim.setup().timing;
    let bound = timing.heartbeat_timeout + timing.heartbeat_interval + Duration::from_millis(2);
    assert!(
        at.saturating_since(partitioned_at) <= bound,
        "lost the scheduler after {:?}",
        at.saturating_since(partitioned_at)
    );
    // The worker that still hears the scheduler learns the server is dead.
    let (_, event) = completion(&sim, other, c2, ts2).unwrap();
    assert_eq!(event, Event::RequestFailed { customer: c2, ts: ts2, error: RequestError::PeerDead(server_id) });
    assert!(sim.failure().is_none(), "{:?}", sim.failure());
    finish(sim);
}

#[test]
fn barrier_fails_when_a_member_dies_before_arriving() {
    let mut sim = ready(1, 2);
    let (waiting, dying) = (sim.worker_slot(0), sim.worker_slot(1));
    let dying_id = sim.node(dying).unwrap().id();
    let ticket = sim.enter_barrier(waiting).expect("barrier entered");
    sim.run_for(Duration::from_millis(50));
    assert!(barrier_end(&sim, waiting, ticket).is_none(), "one member is missing");
    sim.crash(dying);
    let crashed_at = sim.now();
    assert!(sim.run_until(Duration::from_secs(5), |s| barrier_end(s, waiting, ticket).is_some()));
    let (at, event) = barrier_end(&sim, waiting, ticket).unwrap();
    assert_eq!(event, Event::BarrierFailed(ticket, RequestError::PeerDead(dying_id)));
    assert!(at.saturating_since(crashed_at) <= crash_bound(&sim));
    assert!(sim.failure().is_none(), "{:?}", sim.failure());
    finish(sim);
}

#[test]
fn barrier_releases_when_every_member_arrives() {
    let mut sim = ready(1, 2);
    let (first, second) = (sim.worker_slot(0), sim.worker_slot(1));
    let t1 = sim.enter_barrier(first).unwrap();
    sim.run_for(Duration::from_millis(50));
    assert!(barrier_end(&sim, first, t1).is_none(), "released before the second member arrived");
    let t2 = sim.enter_barrier(second).unwrap();
    assert!(sim.run_until(Duration::from_secs(1), |s| barrier_end(s, first, t1).is_some()
        && barrier_end(s, second, t2).is_some()));
    assert_eq!(barrier_end(&sim, first, t1).unwrap().1, Event::BarrierReleased(t1));
    finish(sim);
}

#[test]
fn strict_mode_reports_a_request_that_fails() {
    let mut setup = Setup::scenario(0x5ce7a810, 1, 1);
    setup.strict = true;
    let mut sim = Sim::new(setup);
    assert!(sim.run_until(Duration::from_secs(5), Sim::cluster_ready));
    let (worker, server) = (sim.worker_slot(0), sim.server_slot(0));
    sim.issue(worker, &Op::Push { app: 0, keys: vec![3], values: vec![1.0] }).unwrap();
    sim.crash(server);
    sim.run_for(crash_bound(&sim));
    let failure = sim.failure().expect("the failed push is reported");
    assert!(failure.what.starts_with("strict:"), "{failure}");
}

#[test]
fn a_panic_inside_a_run_is_reported_with_exit_code_127() {
    let mut setup = Setup::scenario(0x5ce7a810, 1, 1);
    // Too small a queue for even the first heartbeats: an assertion fires.
    setup.limits.queue_len_max = 3;
    let outcome = Sim::new(setup).run();
    let failure = outcome.failure.as_ref().expect("the run fails");
    assert_eq!(failure.kind, FailureKind::Panic);
    assert!(failure.what.contains("event queue exceeds 3 events"), "{failure}");
    assert_eq!(outcome.exit_code(), 127);
    assert!(outcome.report().lines().last().is_some_and(|l| l.starts_with("reproduce:")));
}
