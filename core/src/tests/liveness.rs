//! Failure detection as a whole cluster sees it.

use super::harness::{Cluster, SCHEDULER};
use crate::*;

#[test]
fn work_started_after_the_scheduler_was_lost_fails_too() {
    let mut c = Cluster::new(1, 2, 3);
    c.form();
    let w = c.worker(0);
    c.isolated[SCHEDULER] = true;
    let config = c.configs[w].clone();
    c.run_for(config.heartbeat_timeout + config.heartbeat_interval * 2);
    let ticket = c.with_node(w, |n, now| n.barrier(now, Group::WORKERS)).expect("barrier accepted");
    c.run_for(config.heartbeat_interval * 2);
    let failed = c.events(w).any(|e| *e == Event::BarrierFailed(ticket, RequestError::SchedulerLost));
    assert!(failed, "a barrier entered while the scheduler is lost must fail");
}

#[test]
fn a_finalize_that_fails_for_lack_of_the_scheduler_still_terminates() {
    let mut c = Cluster::new(1, 1, 5);
    c.form();
    let w = c.worker(0);
    c.with_node(w, |n, now| n.finalize(now)).expect("finalize accepted");
    c.isolated[SCHEDULER] = true;
    let config = c.configs[w].clone();
    c.run_for(config.heartbeat_timeout + config.heartbeat_interval * 2);
    assert_eq!(c.node(w).phase(), Phase::Terminated);
    let terminated = c.events(w).filter(|e| **e == Event::Terminated).count();
    assert_eq!(terminated, 1, "one Terminated event");
}

#[test]
fn a_request_to_a_replaced_server_fails_even_when_its_death_was_missed() {
    let mut c = Cluster::new(1, 1, 7);
    c.form();
    let (w, s) = (c.worker(0), c.server(0));
    let server = c.node(s).id();
    let keys = Keys::from_slice(&[1]);
    let ts = c
        .with_node(w, |n, now| n.push(now, CustomerId::DEFAULT, 0, keys, Values::from_slice(&[1.0f32]), None))
        .expect("push accepted");
    c.crash(s);
    c.restart(s);
    // The worker hears nothing of the death: every table is lost until the
    // restarted server has taken the id.
    let node_table = wire::Kind::NodeTable as u8;
    let replaced = |c: &Cluster| {
        c.nodes[SCHEDULER].as_ref().is_some_and(|n| n.membership().get(server).is_some_and(|e| e.incarnation.0 == 1))
    };
    for _ in 0..100_000 {
        c.drop_where(|f| f.to == w && f.bytes[6] == node_table);
        if replaced(&c) {
            break;
        }
        c.step();
    }
    assert!(replaced(&c));
    c.run_until(100_000, |c| {
        c.nodes[w].as_ref().is_some_and(|n| n.membership().get(server).is_some_and(|e| e.incarnation.0 == 1))
    });
    let events: Vec<&Event> = c.events(w).collect();
    assert!(!events.iter().any(|e| matches!(e, Event::NodeDead { .. })), "the death was not heard: {events:?}");
    let failed = c.completion(w, CustomerId::DEFAULT, ts).cloned();
    let error = RequestError::PeerDead(server);
    assert_eq!(failed, Some(Event::RequestFailed { customer: CustomerId::DEFAULT, ts, error }));
}
