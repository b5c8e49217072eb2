//! The control plane: registration and ids, barriers, finalize.

use super::harness::{Cluster, SCHEDULER};
use crate::*;

/// Ids by harness index for 2 servers and 3 workers: ranks follow the
/// listen addresses, which the harness hands out in index order.
const IDS_2_3: [u32; 6] = [1, 8, 10, 9, 11, 13];

fn ids(c: &Cluster) -> Vec<u32> {
    (0..c.nodes.len()).map(|i| c.node_ref(i).id().get()).collect()
}

/// Harness indices of the nodes in `group`.
fn members(c: &Cluster, group: Group) -> Vec<usize> {
    (0..c.configs.len()).filter(|&i| group.contains(c.configs[i].role)).collect()
}

fn released(c: &Cluster, i: usize, ticket: BarrierTicket) -> usize {
    c.events(i).filter(|e| **e == Event::BarrierReleased(ticket)).count()
}

fn all_groups() -> impl Iterator<Item = Group> {
    (1..=7).map(|bits| Group::from_bits(bits).expect("bits 1..=7 name a group"))
}

#[test]
fn the_same_addresses_get_the_same_ids_whatever_the_arrival_order() {
    for seed in 0..200 {
        let mut c = Cluster::stopped(2, 3, seed, |b| b);
        // Start the processes in a seeded order, a few milliseconds apart;
        // the per-frame delay shuffles their registrations further. A node
        // started before the scheduler loses its first registration.
        let mut order: Vec<usize> = (0..c.nodes.len()).collect();
        let mut rng = Rng::new(seed);
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        for i in order {
            c.run_for(rng.jitter(Duration::from_millis(3)));
            c.start(i);
        }
        c.form();
        assert_eq!(ids(&c), IDS_2_3, "seed {seed}");
        let table: Vec<(u32, std::net::SocketAddr)> =
            c.node_ref(SCHEDULER).membership().iter().map(|n| (n.id.get(), n.addr)).collect();
        let expected: Vec<(u32, std::net::SocketAddr)> =
            [1, 3, 2, 4, 5].into_iter().map(|i| (IDS_2_3[i], c.addrs[i])).collect();
        assert_eq!(table, expected, "seed {seed}");
        for (i, raw) in IDS_2_3.into_iter().enumerate() {
            assert_eq!(c.node_ref(i).membership(), c.node_ref(SCHEDULER).membership(), "seed {seed}, node {i}");
            let id = NodeId::from_raw(raw).expect("valid id");
            let first_two: Vec<&Event> = c.events(i).take(2).collect();
            assert_eq!(
                first_two,
                [&Event::Registered { id, rank: id.rank(), incarnation: Incarnation(0) }, &Event::ClusterReady],
                "seed {seed}, node {i}"
            );
        }
    }
}

#[test]
fn node_info_getters_describe_the_node() {
    let mut c = Cluster::new(2, 3, 7);
    let w = c.worker(0);
    assert_eq!(c.node(w).id(), NodeId::UNASSIGNED);
    assert_eq!(c.node(w).rank(), None);
    assert_eq!(c.node(w).phase(), Phase::Registering);
    c.form();
    let expected = [
        (Role::Scheduler, 0),
        (Role::Server, 0),
        (Role::Server, 1),
        (Role::Worker, 0),
        (Role::Worker, 1),
        (Role::Worker, 2),
    ];
    for (i, (role, rank)) in expected.into_iter().enumerate() {
        let node = c.node(i);
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
        let mut c = Cluster::new(2, 3, seed);
        // Everything in flight at the start is a registration.
        assert_eq!(c.drop_where(|f| f.to == SCHEDULER), 5);
        c.form();
        assert_eq!(ids(&c), IDS_2_3, "seed {seed}");
        let retry = c.configs[0].register_retry_interval;
        for i in 1..c.nodes.len() {
            let at = c.event_at(i, |e| matches!(e, Event::Registered { .. })).expect("registered");
            assert!(at >= Instant::ZERO + retry, "seed {seed}: node {i} registered at {at:?}, before any retry");
        }
    }
}

#[test]
fn a_lost_node_table_is_asked_for_again() {
    let mut c = Cluster::new(2, 3, 3);
    let w = c.worker(2);
    c.run_until(1000, |c| c.in_flight.iter().any(|f| f.from == SCHEDULER));
    // The scheduler just formed the cluster; its first table to `w` is lost.
    assert_eq!(c.drop_where(|f| f.from == SCHEDULER && f.to == w), 1);
    c.form();
    assert_eq!(c.node(w).id().get(), 13);
    assert_eq!(c.node_ref(w).membership(), c.node_ref(SCHEDULER).membership());
}

#[test]
fn a_repeated_registration_changes_nothing() {
    let mut c = Cluster::new(2, 3, 11);
    let w = c.worker(1);
    let register = c.in_flight.iter().find(|f| f.from == w).expect("the registration is in flight").clone();
    c.form();
    c.drive();
    let before: Vec<(u32, u64, usize)> = (0..c.nodes.len())
        .map(|i| (c.node_ref(i).id().get(), c.node_ref(i).membership().epoch(), c.events[i].len()))
        .collect();
    // The same process registers again, as a late retry would.
    c.inject(w, SCHEDULER, register.bytes);
    c.drive();
    let after: Vec<(u32, u64, usize)> = (0..c.nodes.len())
        .map(|i| (c.node_ref(i).id().get(), c.node_ref(i).membership().epoch(), c.events[i].len()))
        .collect();
    assert_eq!(before, after, "(id, epoch, events) per node");
}

#[test]
fn a_barrier_releases_every_member_only_after_the_last_arrives() {
    for group in all_groups() {
        let mut c = Cluster::new(2, 3, u64::from(group.bits()));
        c.form();
        let members = members(&c, group);
        // Back to back on one group: each member in turn arrives last.
        for (generation, &late) in members.iter().enumerate() {
            let ticket = BarrierTicket { group, generation: generation as u64 };
            for &i in members.iter().filter(|&&i| i != late) {
                assert_eq!(c.with_node(i, |n, now| n.barrier(now, group)), Ok(ticket));
            }
            c.drive();
            for &i in &members {
                assert_eq!(released(&c, i, ticket), 0, "{ticket:?}: node {i} released before node {late} arrived");
            }
            assert_eq!(c.with_node(late, |n, now| n.barrier(now, group)), Ok(ticket));
            c.drive();
            for &i in &members {
                assert_eq!(released(&c, i, ticket), 1, "{ticket:?}: node {i}");
                assert_eq!(c.node(i).barriers_pending(), 0);
            }
        }
    }
}

#[test]
fn back_to_back_barriers_do_not_mix() {
    let group = Group::SERVERS | Group::WORKERS;
    let mut c = Cluster::new(2, 3, 5);
    c.form();
    let members = members(&c, group);
    let (&eager, rest) = members.split_first().expect("members");
    let first = BarrierTicket { group, generation: 0 };
    let second = BarrierTicket { group, generation: 1 };
    // The eager member is already at the second barrier when the others
    // reach the first: its second arrival must not count for the first.
    assert_eq!(c.with_node(eager, |n, now| n.barrier(now, group)), Ok(first));
    assert_eq!(c.with_node(eager, |n, now| n.barrier(now, group)), Ok(second));
    for &i in &rest[1..] {
        c.with_node(i, |n, now| n.barrier(now, group)).expect("barrier");
    }
    c.drive();
    assert!(members.iter().all(|&i| released(&c, i, first) == 0));
    c.with_node(rest[0], |n, now| n.barrier(now, group)).expect("barrier");
    c.drive();
    assert!(members.iter().all(|&i| released(&c, i, first) == 1));
    assert!(members.iter().all(|&i| released(&c, i, second) == 0));
    for &i in rest {
        assert_eq!(c.with_node(i, |n, now| n.barrier(now, group)), Ok(second));
    }
    c.drive();
    assert!(members.iter().all(|&i| released(&c, i, second) == 1));
}

#[test]
fn a_barrier_over_a_group_without_this_node_is_refused() {
    let mut c = Cluster::new(2, 3, 9);
    c.form();
    for group in all_groups() {
        for i in 0..c.nodes.len() {
            let role = c.configs[i].role;
            if group.contains(role) {
                continue;
            }
            // Nobody would ever release it: the scheduler only counts members.
            assert_eq!(
                c.with_node(i, |n, now| n.barrier(now, group)),
                Err(ApiMisuse::NotInGroup { group, role }.into()),
                "node {i}"
            );
        }
    }
}

#[test]
fn finalize_terminates_every_node_and_later_commands_are_refused() {
    for seed in 0..10 {
        let mut c = Cluster::new(2, 3, seed);
        c.form();
        let mut order: Vec<usize> = (0..c.nodes.len()).collect();
        let mut rng = Rng::new(seed);
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        for i in order {
            c.with_node(i, |n, now| n.finalize(now)).expect("finalize accepted");
        }
        c.drive();
        for i in 0..c.nodes.len() {
            assert_eq!(c.events(i).filter(|e| **e == Event::Terminated).count(), 1, "seed {seed}, node {i}");
            assert_eq!(c.events(i).last(), Some(&Event::Terminated), "nothing follows Terminated");
            let node = c.node(i);
            assert_eq!(node.phase(), Phase::Terminated);
            assert_eq!(node.poll_timeout(), None);
            let now = c.now;
            let node = c.node(i);
            assert_eq!(node.barrier(now, Group::ALL), Err(RequestError::Terminated));
            assert_eq!(node.finalize(now), Err(RequestError::Terminated));
            assert_eq!(
                node.simple_request(now, CustomerId::DEFAULT, Group::ALL, 1, bytes::Bytes::new()),
                Err(RequestError::Terminated)
            );
        }
        let w = c.worker(0);
        let now = c.now;
        let worker = c.node(w);
        let keys = Keys::from_slice(&[1]);
        assert_eq!(
            worker.push(now, CustomerId::DEFAULT, 0, keys.clone(), Values::from_slice(&[1.0f32]), None),
            Err(RequestError::Terminated)
        );
        assert_eq!(worker.pull(now, CustomerId::DEFAULT, 0, keys, DType::F32), Err(RequestError::Terminated));
    }
}
