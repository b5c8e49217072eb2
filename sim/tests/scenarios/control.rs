//! The control plane: registration and ids, barriers, finalize.

use std::net::SocketAddr;

use pslite_core::{
    ApiMisuse, BarrierTicket, CustomerId, DType, Duration, Event, Group, Incarnation, Instant, Keys, NodeId, Phase,
    Rank, RequestError, Rng, Role, Values,
};
use pslite_sim::Sim;

use super::*;

/// Ids by slot for 2 servers and 3 workers: ranks follow the listen
/// addresses, which the simulator hands out in slot order.
const IDS_2_3: [u32; 6] = [1, 8, 10, 9, 11, 13];

fn ids(sim: &Sim) -> Vec<u32> {
    (0..sim.slots()).map(|i| sim.node(i).unwrap().id().get()).collect()
}

fn released(sim: &Sim, i: usize, ticket: BarrierTicket) -> usize {
    count(sim, i, |e| matches!(e, Event::BarrierReleased { ticket: t, missing } if *t == ticket && missing.is_empty()))
}

#[test]
fn the_same_addresses_get_the_same_ids_whatever_the_arrival_order() {
    for seed in 0..200 {
        let mut setup = setup(seed, 2, 3);
        setup.autostart = false;
        let mut sim = Sim::new(setup);
        // Start the processes in a seeded order, a few milliseconds apart;
        // the per-frame delay shuffles their registrations further. A node
        // started before the scheduler loses its first registration.
        let mut rng = Rng::new(seed);
        for i in shuffled(sim.slots(), seed) {
            sim.run_for(rng.jitter(Duration::from_millis(3)));
            sim.start(i);
        }
        form(&mut sim);
        assert_eq!(ids(&sim), IDS_2_3, "seed {seed}");
        let scheduler = sim.node(SCHEDULER).unwrap();
        let table: Vec<(u32, SocketAddr)> = scheduler.membership().iter().map(|n| (n.id.get(), n.addr)).collect();
        let expected: Vec<(u32, SocketAddr)> =
            [1, 3, 2, 4, 5].into_iter().map(|i| (IDS_2_3[i], sim.config(i).listen_addr)).collect();
        assert_eq!(table, expected, "seed {seed}");
        for (i, raw) in IDS_2_3.into_iter().enumerate() {
            assert_eq!(sim.node(i).unwrap().membership(), scheduler.membership(), "seed {seed}, node {i}");
            let id = NodeId::from_raw(raw).expect("valid id");
            let first_two: Vec<&Event> = sim.events_of(i).take(2).map(|(_, e)| e).collect();
            assert_eq!(
                first_two,
                [&Event::Registered { id, rank: id.rank(), incarnation: Incarnation(0) }, &Event::ClusterReady],
                "seed {seed}, node {i}"
            );
        }
        assert!(sim.failure().is_none(), "seed {seed}: {:?}", sim.failure());
    }
}

#[test]
fn node_info_getters_describe_the_node() {
    let mut sim = started(setup(7, 2, 3));
    let w = sim.worker_slot(0);
    let node = sim.node(w).unwrap();
    assert_eq!(node.id(), NodeId::UNASSIGNED);
    assert_eq!(node.rank(), None);
    assert_eq!(node.phase(), Phase::Registering);
    form(&mut sim);
    let expected = [
        (Role::Scheduler, 0),
        (Role::Server, 0),
        (Role::Server, 1),
        (Role::Worker, 0),
        (Role::Worker, 1),
        (Role::Worker, 2),
    ];
    for (i, (role, rank)) in expected.into_iter().enumerate() {
        let node = sim.node(i).unwrap();
        assert_eq!(node.id().get(), IDS_2_3[i]);
        assert_eq!(node.role(), role);
        assert_eq!(node.rank(), Some(Rank(rank)));
        assert_eq!(node.incarnation(), Incarnation(0));
        assert_eq!(node.phase(), Phase::Ready);
        assert_eq!((node.num_servers(), node.num_workers()), (2, 3));
    }
}

#[test]
fn a_dropped_registration_is_retried() {
    for seed in 0..20 {
        let mut sim = started(setup(seed, 2, 3));
        // Everything in flight at the start is a registration.
        assert_eq!(sim.drop_frames(|f| f.to == SCHEDULER), 5, "seed {seed}");
        form(&mut sim);
        assert_eq!(ids(&sim), IDS_2_3, "seed {seed}");
        let retry = sim.config(SCHEDULER).register_retry_interval;
        for i in 1..sim.slots() {
            let at = event_at(&sim, i, |e| matches!(e, Event::Registered { .. })).expect("registered");
            assert!(at >= Instant::ZERO + retry, "seed {seed}: node {i} registered at {at:?}, before any retry");
        }
        assert!(sim.failure().is_none(), "seed {seed}: {:?}", sim.failure());
    }
}

#[test]
fn a_lost_node_table_is_asked_for_again() {
    let mut sim = started(setup(3, 2, 3));
    let w = sim.worker_slot(2);
    assert!(sim.run_until(PATIENCE, |s| s.frames_in_flight().any(|f| f.from == SCHEDULER)));
    // The scheduler just formed the cluster; its first table to `w` is lost.
    assert_eq!(sim.drop_frames(|f| f.from == SCHEDULER && f.to == w), 1);
    form(&mut sim);
    assert_eq!(sim.node(w).unwrap().id().get(), 13);
    assert_eq!(sim.node(w).unwrap().membership(), sim.node(SCHEDULER).unwrap().membership());
    assert!(sim.failure().is_none(), "{:?}", sim.failure());
}

#[test]
fn a_repeated_registration_changes_nothing() {
    let mut sim = started(setup(11, 2, 3));
    let w = sim.worker_slot(1);
    let register = sim.frames_in_flight().find(|f| f.from == w).expect("the registration is in flight").bytes.clone();
    form(&mut sim);
    drive(&mut sim);
    let state = |sim: &Sim| -> Vec<(u32, u64, usize)> {
        (0..sim.slots())
            .map(|i| {
                let node = sim.node(i).unwrap();
                (node.id().get(), node.membership().epoch(), sim.events_of(i).count())
            })
            .collect()
    };
    let before = state(&sim);
    // The same process registers again, as a late retry would.
    sim.inject_frame(w, SCHEDULER, register);
    drive(&mut sim);
    assert_eq!(before, state(&sim), "(id, epoch, events) per node");
    assert!(sim.failure().is_none(), "{:?}", sim.failure());
}

#[test]
fn a_barrier_releases_every_member_only_after_the_last_arrives() {
    for group in all_groups() {
        let mut sim = ready(setup(u64::from(group.bits()), 2, 3));
        let members = members(&sim, group);
        // Back to back on one group: each member in turn arrives last.
        for (generation, &late) in members.iter().enumerate() {
            let ticket = BarrierTicket { group, generation: generation as u64 };
            for &i in members.iter().filter(|&&i| i != late) {
                assert_eq!(sim.with_node(i, |n, now| n.barrier(now, group)), Ok(ticket));
            }
            drive(&mut sim);
            for &i in &members {
                assert_eq!(released(&sim, i, ticket), 0, "{ticket:?}: node {i} released before node {late} arrived");
            }
            assert_eq!(sim.with_node(late, |n, now| n.barrier(now, group)), Ok(ticket));
            drive(&mut sim);
            for &i in &members {
                assert_eq!(released(&sim, i, ticket), 1, "{ticket:?}: node {i}");
                assert_eq!(sim.node(i).unwrap().barriers_pending(), 0);
            }
        }
        assert!(sim.failure().is_none(), "{group:?}: {:?}", sim.failure());
        finish(sim);
    }
}

#[test]
fn back_to_back_barriers_do_not_mix() {
    let group = Group::SERVERS | Group::WORKERS;
    let mut sim = ready(setup(5, 2, 3));
    let members = members(&sim, group);
    let (&eager, rest) = members.split_first().expect("members");
    let first = BarrierTicket { group, generation: 0 };
    let second = BarrierTicket { group, generation: 1 };
    // The eager member is already at the second barrier when the others
    // reach the first: its second arrival must not count for the first.
    assert_eq!(sim.with_node(eager, |n, now| n.barrier(now, group)), Ok(first));
    assert_eq!(sim.with_node(eager, |n, now| n.barrier(now, group)), Ok(second));
    for &i in &rest[1..] {
        sim.with_node(i, |n, now| n.barrier(now, group)).expect("barrier");
    }
    drive(&mut sim);
    assert!(members.iter().all(|&i| released(&sim, i, first) == 0));
    sim.with_node(rest[0], |n, now| n.barrier(now, group)).expect("barrier");
    drive(&mut sim);
    assert!(members.iter().all(|&i| released(&sim, i, first) == 1));
    assert!(members.iter().all(|&i| released(&sim, i, second) == 0));
    for &i in rest {
        assert_eq!(sim.with_node(i, |n, now| n.barrier(now, group)), Ok(second));
    }
    drive(&mut sim);
    assert!(members.iter().all(|&i| released(&sim, i, second) == 1));
    assert!(sim.failure().is_none(), "{:?}", sim.failure());
}

#[test]
fn a_barrier_over_a_group_without_this_node_is_refused() {
    let mut sim = ready(setup(9, 2, 3));
    for group in all_groups() {
        for i in 0..sim.slots() {
            let role = sim.role(i);
            if group.contains(role) {
                continue;
            }
            // Nobody would ever release it: the scheduler only counts members.
            assert_eq!(
                sim.with_node(i, |n, now| n.barrier(now, group)),
                Err(ApiMisuse::NotInGroup { group, role }.into()),
                "node {i}"
            );
        }
    }
}

#[test]
fn finalize_terminates_every_node_and_later_commands_are_refused() {
    for seed in 0..10 {
        let mut sim = ready(setup(seed, 2, 3));
        for i in shuffled(sim.slots(), seed) {
            sim.with_node(i, |n, now| n.finalize(now)).expect("finalize accepted");
        }
        drive(&mut sim);
        for i in 0..sim.slots() {
            assert_eq!(count(&sim, i, |e| *e == Event::Terminated), 1, "seed {seed}, node {i}");
            let last = sim.events_of(i).last().map(|(_, e)| e);
            assert_eq!(last, Some(&Event::Terminated), "nothing follows Terminated");
            let node = sim.node(i).unwrap();
            assert_eq!(node.phase(), Phase::Terminated);
            assert_eq!(node.poll_timeout(), None);
            sim.with_node(i, |node, now| {
                assert_eq!(node.barrier(now, Group::ALL), Err(RequestError::Terminated));
                assert_eq!(node.finalize(now), Err(RequestError::Terminated));
                assert_eq!(
                    node.simple_request(now, CustomerId::DEFAULT, Group::ALL, 1, Bytes::new()),
                    Err(RequestError::Terminated)
                );
            });
        }
        let w = sim.worker_slot(0);
        sim.with_node(w, |worker, now| {
            let keys = Keys::from_slice(&[1]);
            assert_eq!(
                worker.push(now, CustomerId::DEFAULT, 0, keys.clone(), Values::from_slice(&[1.0f32]), None),
                Err(RequestError::Terminated)
            );
            assert_eq!(worker.pull(now, CustomerId::DEFAULT, 0, keys, DType::F32), Err(RequestError::Terminated));
        });
        assert!(sim.failure().is_none(), "seed {seed}: {:?}", sim.failure());
    }
}

#[test]
fn a_member_whose_final_release_is_lost_is_told_to_stop_by_the_scheduler() {
    // The scheduler stops once it released the finalize, so it resends
    // nothing: a member whose release is lost learns from the Terminate
    // the scheduler sends after it, not a heartbeat timeout later.
    let mut sim = ready(setup(0xf1a1, 1, 1));
    let w = sim.worker_slot(0);
    let ticket = sim.with_node(w, |n, now| n.finalize(now)).expect("finalize accepted");
    for i in (0..sim.slots()).filter(|&i| i != w) {
        sim.with_node(i, |n, now| n.finalize(now)).expect("finalize accepted");
    }
    let release = pslite_core::wire::Kind::BarrierRelease as u8;
    let sent = sim.run_until(PATIENCE, |s| s.frames_in_flight().any(|f| f.to == w && f.bytes[6] == release));
    assert!(sent, "the scheduler released the finalize");
    let started = sim.now();
    assert_eq!(sim.drop_frames(|f| f.to == w && f.bytes[6] == release), 1);
    drive(&mut sim);
    let (at, end) = barrier_end(&sim, w, ticket).expect("the worker's finalize ended");
    assert_eq!(end, Event::BarrierFailed(ticket, RequestError::Terminated), "stopped by the scheduler");
    assert!(at.saturating_since(started) < sim.config(w).heartbeat_interval, "at once, not after a timeout");
    assert_eq!(sim.node(w).unwrap().phase(), Phase::Terminated);
}
