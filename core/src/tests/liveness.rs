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
