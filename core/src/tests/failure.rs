//! Failure detection and recovery: crashed servers, a lost scheduler,
//! barriers with a dead member, restarted nodes and their stale frames.
//!
//! Every wait must end within a bound after the failure. The scheduler
//! declares a silent node dead within `heartbeat_timeout +
//! heartbeat_interval` of its last heartbeat (see `scheduler::liveness`);
//! one hop before (the last heartbeat may still be on the wire) and one
//! after (the news travels) make up the slack.

use super::harness::{Cluster, SCHEDULER};
use crate::*;

/// The latest a wait may end after a failure at `failed_at`, and the
/// earliest a failure may be declared (a peer is not dead before it has been
/// silent for the timeout).
fn window(c: &Cluster, failed_at: Instant) -> (Instant, Instant) {
    let config = &c.configs[0];
    let (interval, timeout) = (config.heartbeat_interval, config.heartbeat_timeout);
    let hop = c.frame_delay_max();
    let earliest = Instant::from_nanos(failed_at.as_nanos().saturating_sub((interval + hop * 2).as_nanos() as u64));
    (earliest + timeout, failed_at + timeout + interval + hop * 2)
}

fn assert_within(c: &Cluster, what: &str, failed_at: Instant, at: Instant) {
    let (earliest, latest) = window(c, failed_at);
    assert!(earliest <= at && at <= latest, "{what}: ended at {at:?}, outside [{earliest:?}, {latest:?}]");
}

#[test]
fn a_server_crash_during_push_pull_fails_the_request_within_the_bound() {
    for seed in 0..20 {
        let mut c = Cluster::new(2, 3, seed);
        c.form();
        // Crash at a seeded phase of the heartbeat cycle.
        let mut rng = Rng::new(seed);
        c.run_for(c.configs[0].heartbeat_interval * 3 + rng.jitter(c.configs[0].heartbeat_interval));
        let (w, s) = (c.worker(0), c.server(1));
        let dead = c.node_ref(s).id();
        let ts = c
            .with_node(w, |n, now| {
                let values = Values::from_slice(&[1.0f32, 2.0]);
                n.push_pull(now, CustomerId::DEFAULT, 0, Keys::from_slice(&[1, u64::MAX]), values, None)
            })
            .expect("push_pull accepted");
        let crashed_at = c.now;
        c.crash(s);
        let failed = c.wait(w, CustomerId::DEFAULT, ts);
        let expected = Event::RequestFailed { customer: CustomerId::DEFAULT, ts, error: RequestError::PeerDead(dead) };
        assert_eq!(failed, expected, "seed {seed}");
        let failed_at = c.event_at(w, |e| *e == expected).expect("logged");
        assert_within(&c, &format!("seed {seed}: push_pull"), crashed_at, failed_at);
        // Everyone hears of the death, once, within the same bound.
        let death = Event::NodeDead { id: dead, incarnation: Incarnation(0) };
        let others: Vec<usize> = (0..c.nodes.len()).filter(|&i| i != s).collect();
        c.run_until(10_000, |c| others.iter().all(|&i| c.event_at(i, |e| *e == death).is_some()));
        c.drive();
        for i in others {
            assert_within(&c, &format!("seed {seed}: node {i}"), crashed_at, c.event_at(i, |e| *e == death).unwrap());
            assert_eq!(c.events(i).filter(|e| **e == death).count(), 1, "seed {seed}, node {i}");
        }
    }
}

#[test]
fn a_worker_cut_off_from_the_scheduler_fails_its_work_with_scheduler_lost() {
    for seed in 0..10 {
        let mut c = Cluster::new(2, 3, seed);
        c.form();
        let mut rng = Rng::new(seed);
        c.run_for(c.configs[0].heartbeat_interval * 2 + rng.jitter(c.configs[0].heartbeat_interval));
        let w = c.worker(1);
        let ts = c
            .with_node(w, |n, now| {
                n.push(now, CustomerId::DEFAULT, 0, Keys::from_slice(&[9]), Values::from_slice(&[1.0f32]), None)
            })
            .expect("push accepted");
        let ticket = c.with_node(w, |n, now| n.barrier(now, Group::WORKERS)).expect("barrier entered");
        let cut_at = c.now;
        c.isolated[w] = true;
        let expected = Event::RequestFailed { customer: CustomerId::DEFAULT, ts, error: RequestError::SchedulerLost };
        assert_eq!(c.wait(w, CustomerId::DEFAULT, ts), expected, "seed {seed}");
        assert_within(&c, &format!("seed {seed}: push"), cut_at, c.event_at(w, |e| *e == expected).expect("logged"));
        let barrier_failed = Event::BarrierFailed(ticket, RequestError::SchedulerLost);
        let at = c.event_at(w, |e| *e == barrier_failed).expect("the barrier failed too");
        assert_within(&c, &format!("seed {seed}: barrier"), cut_at, at);
        assert_eq!((c.node_ref(w).requests_pending(), c.node_ref(w).barriers_pending()), (0, 0));
    }
}

#[test]
fn a_barrier_whose_member_dies_fails_within_the_bound() {
    for (seed, group) in [(1, Group::ALL), (2, Group::WORKERS), (3, Group::SCHEDULER | Group::SERVERS)] {
        let mut c = Cluster::new(2, 3, seed);
        c.form();
        c.run_for(c.configs[0].heartbeat_interval * 2);
        let members: Vec<usize> = (0..c.nodes.len()).filter(|&i| group.contains(c.configs[i].role)).collect();
        let victim = *members.last().expect("a member that is not the scheduler");
        let dead = c.node_ref(victim).id();
        let mut tickets = Vec::new();
        for &i in members.iter().filter(|&&i| i != victim) {
            tickets.push((i, c.with_node(i, |n, now| n.barrier(now, group)).expect("barrier entered")));
        }
        c.drive();
        let crashed_at = c.now;
        c.crash(victim);
        for (i, ticket) in tickets {
            let failed = Event::BarrierFailed(ticket, RequestError::PeerDead(dead));
            c.run_until(100_000, |c| c.event_at(i, |e| *e == failed).is_some());
            let at = c.event_at(i, |e| *e == failed).expect("failed");
            assert_within(&c, &format!("{group:?}: node {i}"), crashed_at, at);
            assert_eq!(c.node_ref(i).barriers_pending(), 0);
        }
    }
}

#[test]
fn a_restarted_server_takes_its_old_id_and_its_old_frames_are_dropped() {
    let mut c = Cluster::new(2, 3, 21);
    c.form();
    let (s, w) = (c.server(1), c.worker(0));
    let id = c.node_ref(s).id();
    // Capture a response and a heartbeat of the first incarnation.
    let ts = c
        .with_node(w, |n, now| n.pull(now, CustomerId::DEFAULT, 0, Keys::from_slice(&[u64::MAX]), DType::F32))
        .expect("pull accepted");
    c.run_until(1000, |c| c.in_flight.iter().any(|f| f.from == s && f.to == w));
    let old_response = c.in_flight.iter().find(|f| f.from == s && f.to == w).expect("response").bytes.clone();
    c.wait(w, CustomerId::DEFAULT, ts);
    c.run_until(10_000, |c| c.in_flight.iter().any(|f| f.from == s && f.to == SCHEDULER));
    let old_heartbeat = c.in_flight.iter().find(|f| f.from == s && f.to == SCHEDULER).expect("heartbeat").bytes.clone();
    c.drive();

    c.crash(s);
    c.restart(s);
    let recovered = Event::NodeRecovered { id, incarnation: Incarnation(1) };
    let others: Vec<usize> = (0..c.nodes.len()).filter(|&i| i != s).collect();
    c.run_until(100_000, |c| others.iter().all(|&i| c.events(i).any(|e| *e == recovered)));
    c.drive();
    assert_eq!((c.node_ref(s).id(), c.node_ref(s).incarnation()), (id, Incarnation(1)));
    assert!(c.events(s).any(|e| *e == Event::Registered { id, rank: id.rank(), incarnation: Incarnation(1) }));
    for &i in &others {
        let died = c.event_at(i, |e| *e == Event::NodeDead { id, incarnation: Incarnation(0) }).expect("death seen");
        let back = c.event_at(i, |e| *e == recovered).expect("recovery seen");
        assert!(died <= back, "node {i} saw the recovery before the death");
        assert_eq!(c.node_ref(i).membership(), c.node_ref(SCHEDULER).membership(), "node {i}");
    }

    // Frames of the old process arrive late: dropped and counted, no effect.
    let before: Vec<(Stats, usize)> = [w, SCHEDULER].map(|i| (c.node_ref(i).stats().clone(), c.events[i].len())).into();
    c.inject(s, w, old_response);
    c.inject(s, SCHEDULER, old_heartbeat);
    c.drive();
    for (i, (stats, events)) in [w, SCHEDULER].into_iter().zip(before) {
        let now = c.node_ref(i).stats();
        assert_eq!(now.stale_incarnation_drops, stats.stale_incarnation_drops + 1, "node {i}");
        assert_eq!(now.unexpected_drops, stats.unexpected_drops, "node {i}");
        assert_eq!(c.events[i].len(), events, "node {i}");
    }
    // The new incarnation serves.
    assert!(matches!(c.push_wait(w, &[u64::MAX], &[1.0]), Event::RequestDone { .. }));
}

/// Runs one barrier over `group` on `members` and checks everyone is released.
fn barrier_round(c: &mut Cluster, group: Group, members: &[usize]) {
    let tickets: Vec<(usize, BarrierTicket)> = members
        .iter()
        .map(|&i| (i, c.with_node(i, |n, now| n.barrier(now, group)).expect("barrier entered")))
        .collect();
    c.run_until(10_000, |c| tickets.iter().all(|&(i, t)| c.events(i).any(|e| *e == Event::BarrierReleased(t))));
}

#[test]
fn a_restarted_node_joins_the_barriers_the_survivors_are_at() {
    let policies = [BarrierPolicy::FailOnDeath, BarrierPolicy::WaitForRecovery { timeout: Duration::from_secs(30) }];
    for policy in policies {
        let mut c = Cluster::with(2, 3, 17, |mut b| {
            b.barrier_policy = policy;
            b
        });
        c.form();
        let everyone: Vec<usize> = (0..c.nodes.len()).collect();
        let servers = [c.server(0), c.server(1)];
        // The survivors' generations move on: 2 on SERVERS, 1 on ALL.
        barrier_round(&mut c, Group::SERVERS, &servers);
        barrier_round(&mut c, Group::SERVERS, &servers);
        barrier_round(&mut c, Group::ALL, &everyone);
        let s = servers[1];
        let id = c.node_ref(s).id();
        c.crash(s);
        c.restart(s);
        // The survivor is already waiting when the server dies: its barrier
        // fails at the death, or (WaitForRecovery) waits for the replacement.
        let survivor = c.with_node(servers[0], |n, now| n.barrier(now, Group::SERVERS)).expect("barrier entered");
        let recovered = Event::NodeRecovered { id, incarnation: Incarnation(1) };
        c.run_until(100_000, |c| c.events(servers[0]).any(|e| *e == recovered));
        c.drive();
        let failed = Event::BarrierFailed(survivor, RequestError::PeerDead(id));
        let waiting = policy != BarrierPolicy::FailOnDeath;
        assert_eq!(c.events(servers[0]).any(|e| *e == failed), !waiting, "{policy:?}");
        assert_eq!(c.node_ref(servers[0]).barriers_pending(), usize::from(waiting), "{policy:?}");
        let replacement = c.with_node(s, |n, now| n.barrier(now, Group::SERVERS)).expect("barrier entered");
        assert_eq!(replacement.generation, 0, "a new process counts from 0");
        let survivor = if waiting {
            survivor
        } else {
            c.with_node(servers[0], |n, now| n.barrier(now, Group::SERVERS)).expect("barrier entered")
        };
        let both = [(servers[0], survivor), (s, replacement)];
        c.run_until(10_000, |c| both.iter().all(|&(i, t)| c.events(i).any(|e| *e == Event::BarrierReleased(t))));
        // From here on, both numberings stay in step.
        barrier_round(&mut c, Group::SERVERS, &servers);
        barrier_round(&mut c, Group::ALL, &everyone);
        barrier_round(&mut c, Group::ALL, &everyone);
    }
}

#[test]
fn requests_from_a_worker_declared_dead_are_dropped_by_servers() {
    use crate::wire::message::Envelope;
    use crate::wire::{KvRequestMsg, Message};
    let mut c = Cluster::new(1, 1, 21);
    c.form();
    let (w, s) = (c.worker(0), c.server(0));
    let (worker_id, incarnation) = (c.node(w).id(), c.node(w).incarnation());
    let server_id = c.node(s).id();
    c.isolated[w] = true;
    c.run_until(100_000, |c| c.events(s).any(|e| matches!(e, Event::NodeDead { id, .. } if *id == worker_id)));
    // The partition heals; the worker, still running, reaches the server.
    c.isolated[w] = false;
    let request = Message::KvRequest(KvRequestMsg {
        app: 0,
        customer: 0,
        ts: 99,
        cmd: 0,
        op: KvOp::Push,
        keys: Keys::from_slice(&[1]),
        values: Values::from_slice(&[5.0f32]),
        lens: None,
    });
    let envelope = Envelope { sender: worker_id, incarnation, receiver: server_id, seq: 0 };
    let requests_before = c.events(s).filter(|e| matches!(e, Event::ServerRequest(_))).count();
    c.inject(w, s, request.encode(envelope).to_bytes());
    c.drive();
    assert!(c.node(s).stats().dead_sender_drops > 0);
    let requests_after = c.events(s).filter(|e| matches!(e, Event::ServerRequest(_))).count();
    assert_eq!(requests_after, requests_before, "nothing from the dead worker reached the handle");
}

#[test]
fn a_node_told_of_its_own_death_while_finalizing_emits_nothing_after_terminated() {
    // Found by node_inputs (corpus: regression-bbbc0bdc4490, regression-cc58af90d3cf).
    let mut c = Cluster::new(1, 2, 31);
    c.form();
    let w = c.worker(0);
    c.with_node(w, |n, now| n.finalize(now)).expect("finalize accepted");
    let me = c.node(w).id();
    c.inject_table(w, |nodes| {
        for entry in nodes.iter_mut().filter(|entry| entry.id == me) {
            entry.alive = false;
        }
    });
    c.run_until(10_000, |c| c.events(w).any(|e| *e == Event::Terminated));
    assert_eq!(c.events(w).last(), Some(&Event::Terminated), "nothing follows Terminated");
}

#[test]
fn a_table_that_lists_the_scheduler_does_not_make_it_two_targets_of_a_group_request() {
    // Found in review: the scheduler is added to a group's targets directly,
    // and a table entry for it made it a second target, which panicked on
    // completion.
    use crate::kv::CustomerId;
    use bytes::Bytes;
    let mut c = Cluster::new(1, 2, 33);
    c.form();
    let w = c.worker(0);
    c.inject_table(w, |nodes| {
        let mut scheduler = nodes[0];
        scheduler.id = NodeId::SCHEDULER;
        nodes.insert(0, scheduler);
    });
    c.drive();
    let customer = CustomerId::new(5, 0);
    let ts = c
        .with_node(w, |n, now| n.simple_request(now, customer, Group::ALL, 1, Bytes::new()))
        .expect("simple request accepted");
    let Event::SimpleDone { replies, .. } = c.wait(w, customer, ts) else { panic!("the group request failed") };
    let from: Vec<NodeId> = replies.iter().map(|r| r.from).collect();
    let mut distinct = from.clone();
    distinct.dedup();
    assert_eq!(from, distinct, "one reply per member");
    assert_eq!(from.first(), Some(&NodeId::SCHEDULER));
}
