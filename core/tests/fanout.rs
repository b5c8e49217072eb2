//! A death reaches every part of a node the same way, whether the node
//! declared it (the scheduler) or read it in a table (everyone else).
//!
//! Four nodes in memory, frames delivered by hand through the public API:
//! a scheduler, a server and two workers. Worker 1 goes silent while the
//! server still holds one of its requests.

use std::net::SocketAddr;

use pslite_core::*;

const SCHEDULER: usize = 0;
const SERVER: usize = 1;
const SURVIVOR: usize = 2;
const CRASHED: usize = 3;

fn addr(index: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7000 + index as u16))
}

struct Nodes {
    nodes: Vec<Node>,
    /// Whether each node still runs; a stopped one neither sends nor hears.
    running: Vec<bool>,
    events: Vec<Vec<Event>>,
    now: Instant,
    /// Frames the server sent to the crashed worker's address.
    sent_to_crashed: usize,
}

impl Nodes {
    fn new() -> Self {
        let base = Config::builder(Role::Scheduler, addr(SCHEDULER))
            .cluster(1, 2)
            .heartbeat(Duration::from_millis(100), Duration::from_millis(500))
            .build()
            .unwrap();
        let now = Instant::ZERO;
        let roles = [Role::Scheduler, Role::Server, Role::Worker, Role::Worker];
        let nodes = roles.iter().enumerate().map(|(i, &role)| Node::new(base.for_role(role, addr(i)), i as u64, now));
        Self { nodes: nodes.collect(), running: vec![true; 4], events: vec![Vec::new(); 4], now, sent_to_crashed: 0 }
    }

    /// Delivers frames until the network is quiet.
    fn settle(&mut self) {
        for _ in 0..1000 {
            let mut wire = Vec::new();
            for (i, node) in self.nodes.iter_mut().enumerate() {
                while let Some(transmit) = node.poll_transmit() {
                    if self.running[i] {
                        wire.push((i, transmit));
                    }
                }
                while let Some(event) = node.poll_event() {
                    self.events[i].push(event);
                }
            }
            if wire.is_empty() {
                return;
            }
            for (from, transmit) in wire {
                let to = usize::from(transmit.addr.port() - 7000);
                if from == SERVER && to == CRASHED {
                    self.sent_to_crashed += 1;
                }
                if self.running[to] {
                    self.nodes[to].handle_frame(self.now, transmit.frame.to_bytes()).unwrap();
                }
            }
        }
        panic!("the network did not settle");
    }

    /// Moves time on in steps of 10 ms until `done`, firing timers.
    fn run_until(&mut self, done: impl Fn(&Self) -> bool) {
        for _ in 0..10_000 {
            if done(self) {
                return;
            }
            self.now += Duration::from_millis(10);
            for (i, node) in self.nodes.iter_mut().enumerate() {
                if self.running[i] && node.poll_timeout().is_some_and(|at| at <= self.now) {
                    node.handle_timeout(self.now);
                }
            }
            self.settle();
        }
        panic!("the condition never held");
    }
}

#[test]
fn a_server_that_reads_a_workers_death_in_a_table_forgets_its_requests_and_sends_it_nothing() {
    let mut c = Nodes::new();
    c.settle();
    assert!(c.nodes.iter().all(|n| n.phase() == Phase::Ready), "the cluster forms");
    let crashed_id = c.nodes[CRASHED].id();
    let keys = Keys::from_slice(&[1]);
    c.nodes[CRASHED].push(c.now, CustomerId::DEFAULT, 0, keys, Values::from_slice(&[1.0f32]), None).unwrap();
    c.settle();
    let request = c.events[SERVER]
        .iter()
        .find_map(|e| match e {
            Event::ServerRequest(r) => Some(r.clone()),
            _ => None,
        })
        .expect("the server holds the push");
    // The worker crashes while the server's handle is still at work.
    c.running[CRASHED] = false;
    let died = Event::NodeDead { id: crashed_id, incarnation: Incarnation(0) };
    c.run_until(|c| c.events[SERVER].contains(&died));
    assert_eq!(c.nodes[SERVER].responses_pending(), 0, "the dead worker's request is forgotten");
    // The handle finishes: nothing goes to the dead worker, nothing waits
    // for an acknowledgement from it, and the handle is not told it erred.
    let sent_before = c.sent_to_crashed;
    assert_eq!(c.nodes[SERVER].respond(c.now, request.id, Response::ack()), Ok(()));
    c.settle();
    assert_eq!(c.sent_to_crashed, sent_before);
    assert_eq!(c.nodes[SERVER].frames_unacked(), 0);
    // The survivor is served as before.
    let keys = Keys::from_slice(&[2]);
    let ts = c.nodes[SURVIVOR].push(c.now, CustomerId::DEFAULT, 0, keys, Values::from_slice(&[1.0f32]), None).unwrap();
    c.settle();
    let answer = c.events[SERVER]
        .iter()
        .rev()
        .find_map(|e| match e {
            Event::ServerRequest(r) => Some(r.id),
            _ => None,
        })
        .unwrap();
    c.nodes[SERVER].respond(c.now, answer, Response::ack()).unwrap();
    c.settle();
    assert!(c.events[SURVIVOR].contains(&Event::RequestDone { customer: CustomerId::DEFAULT, ts }));
}

#[test]
fn a_process_cut_off_and_replaced_learns_it_once_it_reaches_the_scheduler_again() {
    let mut c = Nodes::new();
    c.settle();
    let id = c.nodes[CRASHED].id();
    // Cut off: it neither sends nor hears, and is declared dead.
    c.running[CRASHED] = false;
    let died = Event::NodeDead { id, incarnation: Incarnation(0) };
    c.run_until(|c| c.events[SCHEDULER].contains(&died));
    // A new process takes its id.
    let config = c.nodes[SURVIVOR].config().for_role(Role::Worker, addr(4));
    c.nodes.push(Node::new(config, 99, c.now));
    c.running.push(true);
    c.events.push(Vec::new());
    let recovered = Event::NodeRecovered { id, incarnation: Incarnation(1) };
    c.run_until(|c| c.events[SCHEDULER].contains(&recovered));
    // The cut heals: the former process, having lost the scheduler, asks to
    // register again and is told its id belongs to another process now.
    c.running[CRASHED] = true;
    c.run_until(|c| c.nodes[CRASHED].phase() == Phase::Terminated);
    // Replaced, not declared dead: the table it got names its successor.
    assert!(!c.events[CRASHED].contains(&died), "{:?}", c.events[CRASHED]);
    assert_eq!(c.events[CRASHED].last(), Some(&Event::Terminated));
    assert_eq!(c.nodes[4].phase(), Phase::Ready, "the replacement goes on");
}
