//! Failure detection as a whole cluster sees it, around a lost scheduler
//! and a missed death.

use pslite_core::{wire, CustomerId, Event, Group, Incarnation, Keys, Phase, RequestError, Values};
use pslite_sim::Sim;

use super::*;

/// How long a node takes at most to give up on a silent scheduler, plus a
/// scan to act on it.
fn scheduler_lost(sim: &Sim, slot: usize) -> Duration {
    let config = sim.config(slot);
    config.failure_detection_bound() + config.heartbeat_interval
}

#[test]
fn work_started_after_the_scheduler_was_lost_fails_too() {
    let mut sim = ready(setup(3, 1, 2));
    let w = sim.worker_slot(0);
    sim.isolate(SCHEDULER, PATIENCE);
    sim.run_for(scheduler_lost(&sim, w));
    let ticket = sim.with_node(w, |n, now| n.barrier(now, Group::WORKERS)).expect("barrier accepted");
    sim.run_for(sim.config(w).heartbeat_interval * 2);
    let failed = count(&sim, w, |e| *e == Event::BarrierFailed(ticket, RequestError::SchedulerLost)) > 0;
    assert!(failed, "a barrier entered while the scheduler is lost must fail");
    assert!(sim.failure().is_none(), "{:?}", sim.failure());
}

#[test]
fn a_finalize_that_fails_for_lack_of_the_scheduler_still_terminates() {
    let mut sim = ready(setup(5, 1, 1));
    let w = sim.worker_slot(0);
    sim.with_node(w, |n, now| n.finalize(now)).expect("finalize accepted");
    sim.isolate(SCHEDULER, PATIENCE);
    sim.run_for(scheduler_lost(&sim, w));
    assert_eq!(sim.node(w).unwrap().phase(), Phase::Terminated);
    assert_eq!(count(&sim, w, |e| *e == Event::Terminated), 1, "one Terminated event");
    assert!(sim.failure().is_none(), "{:?}", sim.failure());
}

#[test]
fn a_request_to_a_replaced_server_fails_even_when_its_death_was_missed() {
    let mut sim = ready(setup(7, 1, 1));
    let (w, s) = (sim.worker_slot(0), sim.server_slot(0));
    let server = sim.node(s).unwrap().id();
    let keys = Keys::from_slice(&[1]);
    let ts = sim
        .with_node(w, |n, now| n.push(now, CustomerId::DEFAULT, 0, keys, Values::from_slice(&[1.0f32]), None))
        .expect("push accepted");
    sim.crash(s);
    sim.restart(s);
    // The worker hears nothing of the death: every table is lost until the
    // restarted server has taken the id.
    let node_table = wire::Kind::NodeTable as u8;
    let replaced_at = |sim: &Sim, slot: usize| {
        sim.node(slot).is_some_and(|n| n.membership().get(server).is_some_and(|e| e.incarnation == Incarnation(1)))
    };
    for _ in 0..100_000 {
        sim.drop_frames(|f| f.to == w && f.bytes[6] == node_table);
        if replaced_at(&sim, SCHEDULER) {
            break;
        }
        sim.step();
    }
    assert!(replaced_at(&sim, SCHEDULER));
    assert!(sim.run_until(PATIENCE, |sim| replaced_at(sim, w)));
    let deaths = count(&sim, w, |e| matches!(e, Event::NodeDead { .. }));
    assert_eq!(deaths, 0, "the death was not heard");
    let failed = completion(&sim, w, CustomerId::DEFAULT, ts).map(|(_, e)| e);
    let error = RequestError::PeerDead(server);
    assert_eq!(failed, Some(Event::RequestFailed { customer: CustomerId::DEFAULT, ts, error }));
    assert!(sim.failure().is_none(), "{:?}", sim.failure());
}

#[test]
fn a_node_that_waited_long_for_the_cluster_counts_the_schedulers_silence_from_its_registration() {
    // The worker starts long before anyone else: its registrations go
    // unanswered for several heartbeat timeouts, which says nothing about
    // a scheduler it has not met yet.
    let mut setup = setup(0x1a7e, 1, 1);
    setup.autostart = false;
    let mut sim = Sim::new(setup);
    let (s, w) = (sim.server_slot(0), sim.worker_slot(0));
    sim.start(w);
    sim.run_for(sim.config(w).heartbeat_timeout * 3);
    sim.start(SCHEDULER);
    sim.start(s);
    assert!(sim.run_until(PATIENCE, |sim| sim.node(w).is_some_and(|n| n.phase() == Phase::Ready)));
    // The scheduler's answers to the first heartbeats are slow to come (a
    // congested link for half a heartbeat timeout): no reason to give up.
    let slow = sim.now() + sim.config(w).heartbeat_timeout / 2;
    sim.clog(SCHEDULER, w, slow);
    let keys = Keys::from_slice(&[1]);
    let ts = sim
        .with_node(w, |n, now| n.push(now, CustomerId::DEFAULT, 0, keys, Values::from_slice(&[1.0f32]), None))
        .expect("push accepted");
    assert_eq!(wait(&mut sim, w, CustomerId::DEFAULT, ts), Event::RequestDone { customer: CustomerId::DEFAULT, ts });
    assert!(sim.failure().is_none(), "{:?}", sim.failure());
}
