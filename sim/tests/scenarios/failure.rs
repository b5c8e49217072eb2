//! Failure detection and recovery: crashed servers, a lost scheduler,
//! barriers with a dead member, restarted nodes and their stale frames.
//!
//! Every wait must end within a bound after the failure: the scheduler
//! declares a silent node dead within `Config::failure_detection_bound` of
//! its crash; one hop before (the last heartbeat may still be on the wire)
//! and one after (the news travels) make up the slack.

use pslite_core::wire::message::Envelope;
use pslite_core::wire::{KvRequestMsg, Message};
use pslite_core::{
    BarrierPolicy, BarrierTicket, CustomerId, DType, Duration, Event, Group, Incarnation, Instant, Keys, KvOp, NodeId,
    RequestError, Rng, Stats, Values,
};
use pslite_sim::{Op, Sim};

use super::*;

/// The window in which a wait may end after a failure at `failed_at`: not
/// before the peer has been silent for the timeout, not after the
/// detection bound and two hops.
fn window(sim: &Sim, failed_at: Instant) -> (Instant, Instant) {
    let config = sim.config(SCHEDULER);
    let hop = sim.setup().plan.delay_max();
    let earliest = Instant::from_nanos(
        failed_at.as_nanos().saturating_sub((config.heartbeat_interval + hop * 2).as_nanos() as u64),
    );
    (earliest + config.heartbeat_timeout, failed_at + crash_bound(sim))
}

fn assert_within(sim: &Sim, what: &str, failed_at: Instant, at: Instant) {
    let (earliest, latest) = window(sim, failed_at);
    assert!(earliest <= at && at <= latest, "{what}: ended at {at:?}, outside [{earliest:?}, {latest:?}]");
}

#[test]
fn a_server_crash_during_push_pull_fails_the_request_with_peer_dead_within_the_bound() {
    for seed in 0..20 {
        let mut sim = ready(setup(seed, 2, 3));
        // Crash at a seeded phase of the heartbeat cycle.
        let interval = sim.config(SCHEDULER).heartbeat_interval;
        let mut rng = Rng::new(seed);
        sim.run_for(interval * 3 + rng.jitter(interval));
        let (w, s) = (sim.worker_slot(0), sim.server_slot(1));
        let dead = sim.node(s).unwrap().id();
        let op = Op::PushPull { app: 0, keys: vec![1, u64::MAX], values: vec![1.0, 2.0] };
        let (customer, ts) = sim.issue(w, &op).expect("push_pull accepted");
        let crashed_at = sim.now();
        sim.crash(s);
        let failed = wait(&mut sim, w, customer, ts);
        let expected = Event::RequestFailed { customer, ts, error: RequestError::PeerDead(dead) };
        assert_eq!(failed, expected, "seed {seed}");
        let failed_at = event_at(&sim, w, |e| *e == expected).expect("logged");
        assert_within(&sim, &format!("seed {seed}: push_pull"), crashed_at, failed_at);
        // Everyone hears of the death, once, within the same bound.
        let death = Event::NodeDead { id: dead, incarnation: Incarnation(0) };
        let others: Vec<usize> = (0..sim.slots()).filter(|&i| i != s).collect();
        assert!(sim.run_until(PATIENCE, |sim| others.iter().all(|&i| event_at(sim, i, |e| *e == death).is_some())));
        drive(&mut sim);
        for i in others {
            let at = event_at(&sim, i, |e| *e == death).unwrap();
            assert_within(&sim, &format!("seed {seed}: node {i}"), crashed_at, at);
            assert_eq!(count(&sim, i, |e| *e == death), 1, "seed {seed}, node {i}");
        }
        assert!(sim.failure().is_none(), "seed {seed}: {:?}", sim.failure());
        finish(sim);
    }
}

#[test]
fn a_worker_cut_off_from_the_scheduler_fails_its_work_with_scheduler_lost() {
    for seed in 0..10 {
        let mut sim = ready(setup(seed, 2, 3));
        let interval = sim.config(SCHEDULER).heartbeat_interval;
        let mut rng = Rng::new(seed);
        sim.run_for(interval * 2 + rng.jitter(interval));
        let w = sim.worker_slot(1);
        let (customer, ts) = sim.issue(w, &Op::Push { app: 0, keys: vec![9], values: vec![1.0] }).expect("push");
        let ticket = sim.enter_barrier(w).expect("barrier entered");
        let cut_at = sim.now();
        sim.isolate(w, PATIENCE);
        let expected = Event::RequestFailed { customer, ts, error: RequestError::SchedulerLost };
        assert_eq!(wait(&mut sim, w, customer, ts), expected, "seed {seed}");
        let at = event_at(&sim, w, |e| *e == expected).expect("logged");
        assert_within(&sim, &format!("seed {seed}: push"), cut_at, at);
        let barrier_failed = Event::BarrierFailed(ticket, RequestError::SchedulerLost);
        let at = event_at(&sim, w, |e| *e == barrier_failed).expect("the barrier failed too");
        assert_within(&sim, &format!("seed {seed}: barrier"), cut_at, at);
        let node = sim.node(w).unwrap();
        assert_eq!((node.requests_pending(), node.barriers_pending()), (0, 0));
        assert!(sim.failure().is_none(), "seed {seed}: {:?}", sim.failure());
    }
}

#[test]
fn scheduler_partitioned_from_one_worker_fails_its_requests_with_scheduler_lost() {
    let mut sim = calm(1, 2);
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
    // The worker stops hearing the scheduler at the cut and gives up at
    // the first scan after the timeout.
    let bound = sim.config(lonely).failure_detection_bound() + Duration::from_millis(2);
    let lost_after = at.saturating_since(partitioned_at);
    assert!(lost_after <= bound, "lost the scheduler after {lost_after:?}");
    // The worker that still hears the scheduler learns the server is dead.
    let (_, event) = completion(&sim, other, c2, ts2).unwrap();
    assert_eq!(event, Event::RequestFailed { customer: c2, ts: ts2, error: RequestError::PeerDead(server_id) });
    assert!(sim.failure().is_none(), "{:?}", sim.failure());
    finish(sim);
}

#[test]
fn a_barrier_whose_member_dies_before_arriving_fails_within_the_bound() {
    for (seed, group) in [(1, Group::ALL), (2, Group::WORKERS), (3, Group::SCHEDULER | Group::SERVERS)] {
        let mut sim = ready(setup(seed, 2, 3));
        sim.run_for(sim.config(SCHEDULER).heartbeat_interval * 2);
        let members = members(&sim, group);
        let victim = *members.last().expect("a member that is not the scheduler");
        let dead = sim.node(victim).unwrap().id();
        let mut tickets = Vec::new();
        for &i in members.iter().filter(|&&i| i != victim) {
            tickets.push((i, sim.with_node(i, |n, now| n.barrier(now, group)).expect("barrier entered")));
        }
        drive(&mut sim);
        for &(i, ticket) in &tickets {
            assert!(barrier_end(&sim, i, ticket).is_none(), "{group:?}: node {i} released with a member missing");
        }
        let crashed_at = sim.now();
        sim.crash(victim);
        for (i, ticket) in tickets {
            let failed = Event::BarrierFailed(ticket, RequestError::PeerDead(dead));
            assert!(sim.run_until(PATIENCE, |s| event_at(s, i, |e| *e == failed).is_some()), "{group:?}: node {i}");
            let at = event_at(&sim, i, |e| *e == failed).expect("failed");
            assert_within(&sim, &format!("{group:?}: node {i}"), crashed_at, at);
            assert_eq!(sim.node(i).unwrap().barriers_pending(), 0);
        }
        assert!(sim.failure().is_none(), "{group:?}: {:?}", sim.failure());
        finish(sim);
    }
}

#[test]
fn a_restarted_server_takes_its_old_id_and_its_old_frames_are_dropped() {
    let mut sim = ready(setup(21, 2, 3));
    let (s, w) = (sim.server_slot(1), sim.worker_slot(0));
    let id = sim.node(s).unwrap().id();
    // Capture a response and a heartbeat of the first incarnation.
    let ts = sim
        .with_node(w, |n, now| n.pull(now, CustomerId::DEFAULT, 0, Keys::from_slice(&[u64::MAX]), DType::F32))
        .expect("pull accepted");
    let from_to =
        |from: usize, to: usize| move |sim: &Sim| sim.frames_in_flight().any(|f| f.from == from && f.to == to);
    assert!(sim.run_until(PATIENCE, from_to(s, w)));
    let old_response = sim.frames_in_flight().find(|f| f.from == s && f.to == w).expect("response").bytes.clone();
    wait(&mut sim, w, CustomerId::DEFAULT, ts);
    assert!(sim.run_until(PATIENCE, from_to(s, SCHEDULER)));
    let old_heartbeat =
        sim.frames_in_flight().find(|f| f.from == s && f.to == SCHEDULER).expect("heartbeat").bytes.clone();
    drive(&mut sim);

    sim.crash(s);
    sim.restart(s);
    let recovered = Event::NodeRecovered { id, incarnation: Incarnation(1) };
    let others: Vec<usize> = (0..sim.slots()).filter(|&i| i != s).collect();
    assert!(sim.run_until(PATIENCE, |sim| others.iter().all(|&i| count(sim, i, |e| *e == recovered) > 0)));
    drive(&mut sim);
    let node = sim.node(s).unwrap();
    assert_eq!((node.id(), node.incarnation()), (id, Incarnation(1)));
    let registered = Event::Registered { id, rank: id.rank(), incarnation: Incarnation(1) };
    assert_eq!(count(&sim, s, |e| *e == registered), 1);
    for &i in &others {
        let died = event_at(&sim, i, |e| *e == Event::NodeDead { id, incarnation: Incarnation(0) }).expect("death");
        let back = event_at(&sim, i, |e| *e == recovered).expect("recovery seen");
        assert!(died <= back, "node {i} saw the recovery before the death");
        assert_eq!(sim.node(i).unwrap().membership(), sim.node(SCHEDULER).unwrap().membership(), "node {i}");
    }

    // Frames of the old process arrive late: dropped and counted, no effect.
    let before: Vec<(Stats, usize)> =
        [w, SCHEDULER].map(|i| (sim.node(i).unwrap().stats().clone(), sim.events_of(i).count())).into();
    sim.inject_frame(s, w, old_response);
    sim.inject_frame(s, SCHEDULER, old_heartbeat);
    drive(&mut sim);
    for (i, (stats, events)) in [w, SCHEDULER].into_iter().zip(before) {
        let now = sim.node(i).unwrap().stats();
        assert_eq!(now.stale_incarnation_drops, stats.stale_incarnation_drops + 1, "node {i}");
        assert_eq!(now.unexpected_drops, stats.unexpected_drops, "node {i}");
        assert_eq!(sim.events_of(i).count(), events, "node {i}");
    }
    // The new incarnation serves.
    assert!(matches!(push_wait(&mut sim, w, &[u64::MAX], &[1.0]), Event::RequestDone { .. }));
    assert!(sim.failure().is_none(), "{:?}", sim.failure());
}

#[test]
fn a_request_pending_across_a_server_restart_fails_and_the_old_answer_is_dropped_as_stale() {
    let mut sim = calm(1, 1);
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

/// Runs one barrier over `group` on `members` and checks everyone is released.
fn barrier_round(sim: &mut Sim, group: Group, members: &[usize]) {
    let tickets: Vec<(usize, BarrierTicket)> = members
        .iter()
        .map(|&i| (i, sim.with_node(i, |n, now| n.barrier(now, group)).expect("barrier entered")))
        .collect();
    let complete = |e: &Event, t: BarrierTicket| matches!(e, Event::BarrierReleased { ticket, missing } if *ticket == t && missing.is_empty());
    let released = |sim: &Sim| tickets.iter().all(|&(i, t)| count(sim, i, |e| complete(e, t)) > 0);
    assert!(sim.run_until(PATIENCE, released), "{group:?} released everyone");
}

#[test]
fn a_restarted_node_joins_the_barriers_the_survivors_are_at() {
    for policy in [BarrierPolicy::FailOnDeath, BarrierPolicy::WaitForRecovery, BarrierPolicy::Elastic] {
        let mut setup = setup(17, 2, 3);
        setup.barrier_policy = policy;
        // Long enough that the replacement always comes in time.
        setup.timing.recovery_timeout = Duration::from_secs(30);
        let mut sim = ready(setup);
        let everyone: Vec<usize> = (0..sim.slots()).collect();
        let servers = [sim.server_slot(0), sim.server_slot(1)];
        // The survivors' generations move on: 2 on SERVERS, 1 on ALL.
        barrier_round(&mut sim, Group::SERVERS, &servers);
        barrier_round(&mut sim, Group::SERVERS, &servers);
        barrier_round(&mut sim, Group::ALL, &everyone);
        let s = servers[1];
        let id = sim.node(s).unwrap().id();
        // The survivor is already waiting when the server dies.
        let survivor = sim.with_node(servers[0], |n, now| n.barrier(now, Group::SERVERS)).expect("barrier entered");
        assert_eq!(survivor.generation, 2);
        sim.crash(s);
        let dead = Event::NodeDead { id, incarnation: Incarnation(0) };
        assert!(sim.run_until(PATIENCE, |sim| count(sim, servers[0], |e| *e == dead) > 0));
        drive(&mut sim);
        // What the death does to the survivor's barrier is the policy's.
        let failed = Event::BarrierFailed(survivor, RequestError::PeerDead(id));
        let released_without = Event::BarrierReleased { ticket: survivor, missing: vec![id] };
        let (fails, waits, goes_on) = match policy {
            BarrierPolicy::FailOnDeath => (true, false, false),
            BarrierPolicy::WaitForRecovery => (false, true, false),
            BarrierPolicy::Elastic => (false, false, true),
        };
        assert_eq!(count(&sim, servers[0], |e| *e == failed) > 0, fails, "{policy:?}");
        assert_eq!(count(&sim, servers[0], |e| *e == released_without) > 0, goes_on, "{policy:?}");
        assert_eq!(sim.node(servers[0]).unwrap().barriers_pending(), usize::from(waits), "{policy:?}");
        sim.restart(s);
        let recovered = Event::NodeRecovered { id, incarnation: Incarnation(1) };
        assert!(sim.run_until(PATIENCE, |sim| count(sim, servers[0], |e| *e == recovered) > 0));
        drive(&mut sim);
        // The replacement starts where the survivors are: in the barrier
        // they wait in, or at the next one.
        let start = sim.node(s).unwrap().next_barrier_generation(Group::SERVERS);
        assert_eq!(start, if waits { 2 } else { 3 }, "{policy:?}");
        assert_eq!(sim.node(s).unwrap().next_barrier_generation(Group::ALL), 1, "{policy:?}");
        let replacement = sim.with_node(s, |n, now| n.barrier(now, Group::SERVERS)).expect("barrier entered");
        assert_eq!(replacement.generation, start, "{policy:?}");
        let survivor = if waits {
            survivor
        } else {
            sim.with_node(servers[0], |n, now| n.barrier(now, Group::SERVERS)).expect("barrier entered")
        };
        let both = [(servers[0], survivor), (s, replacement)];
        let complete = |sim: &Sim, i: usize, t: BarrierTicket| {
            count(
                sim,
                i,
                |e| matches!(e, Event::BarrierReleased { ticket, missing } if *ticket == t && missing.is_empty()),
            )
        };
        assert!(sim.run_until(PATIENCE, |sim| both.iter().all(|&(i, t)| complete(sim, i, t) > 0)), "{policy:?}");
        // From here on, both numberings stay in step.
        barrier_round(&mut sim, Group::SERVERS, &servers);
        barrier_round(&mut sim, Group::ALL, &everyone);
        barrier_round(&mut sim, Group::ALL, &everyone);
        assert!(sim.failure().is_none(), "{policy:?}: {:?}", sim.failure());
    }
}

#[test]
fn requests_from_a_worker_declared_dead_are_dropped_by_servers() {
    let mut sim = ready(setup(21, 1, 1));
    let (w, s) = (sim.worker_slot(0), sim.server_slot(0));
    let (worker_id, incarnation) = {
        let node = sim.node(w).unwrap();
        (node.id(), node.incarnation())
    };
    let server_id = sim.node(s).unwrap().id();
    let cut = sim.isolate(w, PATIENCE);
    let dead = |e: &Event| matches!(e, Event::NodeDead { id, .. } if *id == worker_id);
    assert!(sim.run_until(PATIENCE, |sim| count(sim, s, dead) > 0));
    // The partition heals; the worker, still running, reaches the server.
    sim.heal(cut);
    let request = Message::KvRequest(KvRequestMsg {
        app: 0,
        customer: 0,
        ts: 99,
        cmd: 0,
        op: KvOp::Push,
        keys: Keys::from_slice(&[1]),
        values: Values::from_slice(&[5.0f32]),
        lens: None,
        route: Default::default(),
    });
    let receiver_incarnation = sim.node(s).unwrap().incarnation();
    let envelope = Envelope { sender: worker_id, incarnation, receiver: server_id, receiver_incarnation, seq: 0 };
    let is_request = |e: &Event| matches!(e, Event::ServerRequest(_));
    let requests_before = count(&sim, s, is_request);
    sim.inject_frame(w, s, request.encode(envelope).to_bytes());
    drive(&mut sim);
    assert!(sim.node(s).unwrap().stats().dead_sender_drops > 0);
    assert_eq!(count(&sim, s, is_request), requests_before, "nothing from the dead worker reached the handle");
    assert!(sim.failure().is_none(), "{:?}", sim.failure());
}

#[test]
fn a_node_told_of_its_own_death_while_finalizing_emits_nothing_after_terminated() {
    // Found by node_inputs (corpus: regression-bbbc0bdc4490, regression-cc58af90d3cf).
    let mut sim = ready(setup(31, 1, 2));
    let w = sim.worker_slot(0);
    sim.with_node(w, |n, now| n.finalize(now)).expect("finalize accepted");
    let me = sim.node(w).unwrap().id();
    inject_table(&mut sim, w, |nodes| {
        for entry in nodes.iter_mut().filter(|entry| entry.id == me) {
            entry.alive = false;
        }
    });
    assert!(sim.run_until(PATIENCE, |sim| count(sim, w, |e| *e == Event::Terminated) > 0));
    assert_eq!(sim.events_of(w).last().map(|(_, e)| e), Some(&Event::Terminated), "nothing follows Terminated");
    assert!(sim.failure().is_none(), "{:?}", sim.failure());
}

#[test]
fn a_table_that_lists_the_scheduler_does_not_make_it_two_targets_of_a_group_request() {
    // Found in review: the scheduler is added to a group's targets directly,
    // and a table entry for it made it a second target, which panicked on
    // completion.
    let mut sim = ready(setup(33, 1, 2));
    let w = sim.worker_slot(0);
    inject_table(&mut sim, w, |nodes| {
        let mut scheduler = nodes[0];
        scheduler.id = NodeId::SCHEDULER;
        nodes.insert(0, scheduler);
    });
    drive(&mut sim);
    let customer = CustomerId::new(5, 0);
    let ts = sim
        .with_node(w, |n, now| n.simple_request(now, customer, Group::ALL, 1, Bytes::new()))
        .expect("simple request accepted");
    let Event::SimpleDone { replies, .. } = wait(&mut sim, w, customer, ts) else { panic!("the group request failed") };
    let from: Vec<NodeId> = replies.iter().map(|r| r.from).collect();
    let mut distinct = from.clone();
    distinct.dedup();
    assert_eq!(from, distinct, "one reply per member");
    assert_eq!(from.first(), Some(&NodeId::SCHEDULER));
    assert!(sim.failure().is_none(), "{:?}", sim.failure());
}

#[test]
fn a_server_stopped_while_it_holds_a_request_answers_nothing_and_keeps_nothing() {
    let mut sim = calm(1, 1);
    let (worker, server) = (sim.worker_slot(0), sim.server_slot(0));
    // The server's handle holds what it gets, like a slow user handle.
    sim.serve(server, false);
    let (customer, ts) = sim.issue(worker, &Op::Push { app: 0, keys: vec![5], values: vec![1.0] }).unwrap();
    let held = |s: &Sim| {
        s.events_of(server).find_map(|(_, e)| match e {
            Event::ServerRequest(request) => Some(request.clone()),
            _ => None,
        })
    };
    assert!(sim.run_until(PATIENCE, |s| held(s).is_some()), "the push reaches the server");
    let request = held(&sim).unwrap();
    // Told of its own death, the server stops.
    let me = sim.node(server).unwrap().id();
    inject_table(&mut sim, server, |nodes| {
        for entry in nodes.iter_mut().filter(|entry| entry.id == me) {
            entry.alive = false;
        }
    });
    assert!(sim.run_until(PATIENCE, |s| count(s, server, |e| *e == Event::Terminated) > 0));
    // The handle's late answer is dropped without blaming the handle, the
    // push fails rather than completing, and the stopped node keeps no
    // request to answer (the end-of-run check counts what it holds).
    let answered = sim.with_node(server, |n, now| n.respond(now, request.id, pslite_core::Response::ack()));
    assert_eq!(answered, Ok(()));
    assert_eq!(
        wait(&mut sim, worker, customer, ts),
        Event::RequestFailed { customer, ts, error: RequestError::PeerDead(me) }
    );
    finish(sim);
}
