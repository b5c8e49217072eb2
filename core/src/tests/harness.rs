//! A tiny in-memory cluster: N nodes, a frame queue, virtual time that
//! jumps to the next event, and hooks to drop or reorder frames by hand.
//!
//! Frames cross as encoded bytes (so every test also runs the codec) with a
//! seeded per-frame delay, which shuffles arrival order between seeds.
//! Servers answer KV requests with [`KvStore`] and SimpleApp requests by
//! echoing the head plus one, unless `auto_serve` is off.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bytes::Bytes;

use crate::kv::store::KvStore;
use crate::*;

/// A frame on its way.
#[derive(Clone, Debug)]
pub(crate) struct InFlight {
    pub(crate) deliver_at: Instant,
    pub(crate) from: usize,
    pub(crate) to: usize,
    pub(crate) bytes: Bytes,
}

pub(crate) struct Cluster {
    pub(crate) now: Instant,
    pub(crate) nodes: Vec<Option<Node>>,
    pub(crate) addrs: Vec<SocketAddr>,
    pub(crate) configs: Vec<Config>,
    pub(crate) in_flight: Vec<InFlight>,
    pub(crate) events: Vec<Vec<(Instant, Event)>>,
    pub(crate) stores: BTreeMap<(usize, u32), KvStore<f32>>,
    pub(crate) auto_serve: bool,
    /// Nodes whose outgoing and incoming frames are dropped.
    pub(crate) isolated: Vec<bool>,
    rng: Rng,
    pub(crate) delay_max: Duration,
    /// Probability that a frame is lost on the way.
    pub(crate) loss: f64,
    /// Probability that a frame arrives twice.
    pub(crate) duplication: f64,
    /// The cluster's seed: printed on failure, the root of every node's seed.
    seed: u64,
    /// Processes started so far, so every start draws a distinct seed.
    starts: u64,
}

pub(crate) const SCHEDULER: usize = 0;

/// Every frame takes at least this long, plus a seeded share of `delay_max`.
const DELAY_MIN: Duration = Duration::from_micros(100);

pub(crate) fn addr(index: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, (index / 250) as u8, (index % 250) as u8 + 1], 7000))
}

// Helpers are shared by every test module; not each uses all of them.
#[allow(dead_code)]
impl Cluster {
    /// A scheduler (index 0), `servers` servers, then `workers` workers,
    /// built from `configure(builder)`.
    pub(crate) fn with(
        servers: u32,
        workers: u32,
        seed: u64,
        configure: impl Fn(ConfigBuilder) -> ConfigBuilder,
    ) -> Self {
        let mut cluster = Self::stopped(servers, workers, seed, configure);
        for i in 0..cluster.nodes.len() {
            cluster.start(i);
        }
        cluster
    }

    pub(crate) fn new(servers: u32, workers: u32, seed: u64) -> Self {
        Self::with(servers, workers, seed, |b| b)
    }

    /// Like [`with`](Self::with), but no process runs yet: tests choose the
    /// order and the moments at which nodes [`start`](Self::start).
    pub(crate) fn stopped(
        servers: u32,
        workers: u32,
        seed: u64,
        configure: impl Fn(ConfigBuilder) -> ConfigBuilder,
    ) -> Self {
        let base = configure(Config::builder(Role::Scheduler, addr(SCHEDULER)).cluster(servers, workers))
            .build()
            .expect("test config is valid");
        let mut roles = vec![Role::Scheduler];
        roles.extend(std::iter::repeat_n(Role::Server, servers as usize));
        roles.extend(std::iter::repeat_n(Role::Worker, workers as usize));
        let mut cluster = Self {
            now: Instant::ZERO,
            nodes: Vec::new(),
            addrs: Vec::new(),
            configs: Vec::new(),
            in_flight: Vec::new(),
            events: Vec::new(),
            stores: BTreeMap::new(),
            auto_serve: true,
            isolated: vec![false; roles.len()],
            rng: Rng::new(seed),
            delay_max: Duration::from_millis(5),
            loss: 0.0,
            duplication: 0.0,
            seed,
            starts: 0,
        };
        for (i, role) in roles.into_iter().enumerate() {
            cluster.addrs.push(addr(i));
            cluster.configs.push(base.for_role(role, addr(i)));
            cluster.events.push(Vec::new());
            cluster.nodes.push(None);
        }
        cluster
    }

    /// Starts a fresh process in node `i`'s role and address, now. Each
    /// process of a slot gets its own seed, so a restart is a new instance.
    pub(crate) fn start(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "node {i} is already running");
        let stream = self.starts * 1000 + i as u64;
        self.starts += 1;
        let node_seed = Rng::derive_seed(self.seed, stream);
        self.nodes[i] = Some(Node::new(self.configs[i].clone(), node_seed, self.now));
        self.drain(i);
    }

    pub(crate) fn node(&mut self, i: usize) -> &mut Node {
        self.nodes[i].as_mut().expect("node is running")
    }

    /// Node `i`, to read.
    pub(crate) fn node_ref(&self, i: usize) -> &Node {
        self.nodes[i].as_ref().expect("node is running")
    }

    pub(crate) fn index_of(&self, id: NodeId) -> usize {
        self.nodes.iter().position(|n| n.as_ref().is_some_and(|n| n.id() == id)).expect("a running node has this id")
    }

    /// Index of worker `rank`.
    pub(crate) fn worker(&self, rank: usize) -> usize {
        1 + self.configs[0].num_servers as usize + rank
    }

    /// Index of server `rank`.
    pub(crate) fn server(&self, rank: usize) -> usize {
        1 + rank
    }

    /// Drains every node's outputs into the queue and the event logs.
    pub(crate) fn drain_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.drain(i);
        }
    }

    pub(crate) fn drain(&mut self, i: usize) {
        loop {
            let Some(node) = self.nodes[i].as_mut() else {
                return;
            };
            let mut transmits = Vec::new();
            while let Some(t) = node.poll_transmit() {
                transmits.push(t);
            }
            let mut progressed = !transmits.is_empty();
            let mut requests = Vec::new();
            while let Some(event) = node.poll_event() {
                progressed = true;
                if self.auto_serve {
                    match &event {
                        Event::ServerRequest(r) => requests.push(Either::Kv(r.clone())),
                        Event::SimpleRequest(r) => requests.push(Either::Simple(r.clone())),
                        _ => {}
                    }
                }
                self.events[i].push((self.now, event));
            }
            for t in transmits {
                let Some(to) = self.addrs.iter().position(|a| *a == t.addr) else {
                    continue;
                };
                if self.rng.chance(self.loss) {
                    continue;
                }
                let copies = if self.rng.chance(self.duplication) { 2 } else { 1 };
                let bytes = t.frame.to_bytes();
                for _ in 0..copies {
                    self.inject(i, to, bytes.clone());
                }
            }
            for request in requests {
                let now = self.now;
                match request {
                    Either::Kv(r) => {
                        let store = self.stores.entry((i, r.id.customer.app)).or_default();
                        let answer = store.handle(&r);
                        self.nodes[i].as_mut().unwrap().respond(now, r.id, answer).expect("respond");
                    }
                    Either::Simple(r) => {
                        let body = r.body.clone();
                        self.nodes[i]
                            .as_mut()
                            .unwrap()
                            .simple_respond(now, r.id, r.head.wrapping_add(1), body)
                            .expect("simple_respond");
                    }
                }
            }
            if !progressed {
                return;
            }
        }
    }

    /// The next moment something happens.
    fn next_time(&self) -> Option<Instant> {
        let frame = self.in_flight.iter().map(|f| f.deliver_at).min();
        let timer = self.nodes.iter().flatten().filter_map(Node::poll_timeout).min();
        [frame, timer].into_iter().flatten().min()
    }

    /// Processes everything due at the next moment; false when nothing is left.
    pub(crate) fn step(&mut self) -> bool {
        let Some(at) = self.next_time() else {
            return false;
        };
        self.now = self.now.max(at);
        let now = self.now;
        // Frames due now, in (time, queue) order.
        let mut due: Vec<InFlight> = Vec::new();
        let mut later = Vec::new();
        for f in self.in_flight.drain(..) {
            if f.deliver_at <= now {
                due.push(f);
            } else {
                later.push(f);
            }
        }
        self.in_flight = later;
        due.sort_by_key(|f| f.deliver_at);
        for f in due {
            if self.isolated[f.to] || self.isolated[f.from] {
                continue;
            }
            if let Some(node) = self.nodes[f.to].as_mut() {
                node.handle_frame(now, f.bytes).expect("honest frames decode");
                self.drain(f.to);
            }
        }
        for i in 0..self.nodes.len() {
            let due = self.nodes[i].as_ref().and_then(Node::poll_timeout).is_some_and(|t| t <= now);
            if due {
                self.node(i).handle_timeout(now);
                self.drain(i);
            }
        }
        true
    }

    /// Runs until `done` holds, at most `steps_max` steps; panics otherwise.
    pub(crate) fn run_until(&mut self, steps_max: usize, mut done: impl FnMut(&Self) -> bool) {
        for _ in 0..steps_max {
            if done(self) {
                return;
            }
            if !self.step() {
                break;
            }
        }
        assert!(done(self), "condition not reached (seed {}, {:?})", self.seed, self.now);
    }

    /// Runs until every node is ready.
    pub(crate) fn form(&mut self) {
        self.run_until(10_000, |c| c.nodes.iter().flatten().all(|n| n.phase() == Phase::Ready));
    }

    /// Runs until nothing is in flight and no request is pending (timers of
    /// heartbeats keep running forever, so this is bounded by steps).
    pub(crate) fn settle(&mut self) {
        self.run_until(100_000, |c| {
            c.in_flight.is_empty()
                && c.nodes.iter().flatten().all(|n| n.requests_pending() == 0 && n.responses_pending() == 0)
        });
    }

    /// Runs for `duration` of virtual time.
    pub(crate) fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.next_time().is_some_and(|t| t <= end) {
            self.step();
        }
        self.now = end;
    }

    /// Runs until no frame is in flight: every consequence of the last
    /// command has landed. Heartbeat timers keep ticking forever, so this is
    /// "the network is quiet", not "nothing is scheduled".
    pub(crate) fn drive(&mut self) {
        self.drive_bounded(10_000);
    }

    /// [`drive`](Self::drive) that fails after `steps_max` steps, so a
    /// protocol that keeps talking (a livelock) fails the test instead of
    /// hanging it.
    pub(crate) fn drive_bounded(&mut self, steps_max: usize) {
        for _ in 0..steps_max {
            if self.in_flight.is_empty() {
                return;
            }
            self.step();
        }
        assert!(self.in_flight.is_empty(), "network still busy after {steps_max} steps (seed {})", self.seed);
    }

    /// The longest a frame can be on the wire: bounds in virtual time add
    /// this once per hop.
    pub(crate) fn frame_delay_max(&self) -> Duration {
        self.delay_max + DELAY_MIN
    }

    /// Puts `bytes` on the wire from node `from` to node `to`, arriving
    /// after the usual delay: replays a captured frame.
    pub(crate) fn inject(&mut self, from: usize, to: usize, bytes: Bytes) {
        let delay = self.rng.jitter(self.delay_max) + DELAY_MIN;
        self.in_flight.push(InFlight { deliver_at: self.now + delay, from, to, bytes });
    }

    /// Sends node `to` the next node table from the scheduler: its current
    /// table, changed by `edit`, as a faulty or forged scheduler would.
    pub(crate) fn inject_table(&mut self, to: usize, edit: impl FnOnce(&mut Vec<wire::NodeEntry>)) {
        let node = self.node_ref(to);
        let receiver = node.id();
        let epoch = node.membership().epoch() + 1;
        let mut nodes: Vec<wire::NodeEntry> = node.membership().iter().copied().collect();
        edit(&mut nodes);
        let table = wire::Message::NodeTable(wire::NodeTableMsg { epoch, nodes });
        let envelope =
            wire::message::Envelope { sender: NodeId::SCHEDULER, incarnation: Incarnation(0), receiver, seq: 0 };
        self.inject(SCHEDULER, to, table.encode(envelope).to_bytes());
    }

    /// When node `i` first logged an event matching `pred`.
    pub(crate) fn event_at(&self, i: usize, pred: impl Fn(&Event) -> bool) -> Option<Instant> {
        self.events[i].iter().find(|(_, e)| pred(e)).map(|(at, _)| *at)
    }

    /// Drops every frame in flight that matches `pred`; returns how many.
    pub(crate) fn drop_where(&mut self, pred: impl Fn(&InFlight) -> bool) -> usize {
        let before = self.in_flight.len();
        self.in_flight.retain(|f| !pred(f));
        before - self.in_flight.len()
    }

    /// Stops node `i` (its process is gone).
    pub(crate) fn crash(&mut self, i: usize) {
        self.nodes[i] = None;
        self.in_flight.retain(|f| f.to != i);
    }

    /// Starts a fresh process in node `i`'s role and address (a new
    /// instance, as after a reboot), whether or not the old one crashed.
    pub(crate) fn restart(&mut self, i: usize) {
        self.nodes[i] = None;
        self.start(i);
    }

    /// Events of node `i` (drained so far).
    pub(crate) fn events(&self, i: usize) -> impl Iterator<Item = &Event> {
        self.events[i].iter().map(|(_, e)| e)
    }

    /// Issues a command on node `i` and drains it.
    pub(crate) fn with_node<T>(&mut self, i: usize, f: impl FnOnce(&mut Node, Instant) -> T) -> T {
        let now = self.now;
        let out = f(self.node(i), now);
        self.drain(i);
        out
    }

    /// The completion event of `ts` on node `i`, once it happened.
    pub(crate) fn completion(&self, i: usize, customer: CustomerId, ts: Timestamp) -> Option<&Event> {
        self.events(i).find(|e| match e {
            Event::RequestDone { customer: c, ts: t }
            | Event::PullDone { customer: c, ts: t, .. }
            | Event::RequestFailed { customer: c, ts: t, .. }
            | Event::SimpleDone { customer: c, ts: t, .. } => *c == customer && *t == ts,
            _ => false,
        })
    }

    /// Runs until `ts` on node `i` completed, and returns the event.
    pub(crate) fn wait(&mut self, i: usize, customer: CustomerId, ts: Timestamp) -> Event {
        self.run_until(100_000, |c| c.completion(i, customer, ts).is_some());
        self.completion(i, customer, ts).cloned().expect("completed")
    }

    /// Pushes f32 values from worker node `i` and waits for it.
    pub(crate) fn push_wait(&mut self, i: usize, keys: &[u64], values: &[f32]) -> Event {
        let ts = self
            .with_node(i, |n, now| {
                n.push(now, CustomerId::DEFAULT, 0, Keys::from_slice(keys), Values::from_slice(values), None)
            })
            .expect("push accepted");
        self.wait(i, CustomerId::DEFAULT, ts)
    }

    /// Pulls f32 values from worker node `i` and waits for them.
    pub(crate) fn pull_wait(&mut self, i: usize, keys: &[u64]) -> Vec<f32> {
        let ts = self
            .with_node(i, |n, now| n.pull(now, CustomerId::DEFAULT, 0, Keys::from_slice(keys), DType::F32))
            .expect("pull accepted");
        match self.wait(i, CustomerId::DEFAULT, ts) {
            Event::PullDone { values, .. } => values.to_vec().expect("f32 values"),
            other => panic!("pull did not complete: {other:?}"),
        }
    }
}

enum Either {
    Kv(ServerRequest),
    Simple(SimpleRequest),
}

#[test]
fn harness_forms_a_cluster_and_moves_a_push() {
    let mut c = Cluster::new(2, 1, 1);
    c.form();
    let w = c.worker(0);
    let done = c.push_wait(w, &[0, u64::MAX], &[1.0, 2.0]);
    assert!(matches!(done, Event::RequestDone { .. }), "{done:?}");
    assert_eq!(c.pull_wait(w, &[0, 5, u64::MAX]), vec![1.0, 0.0, 2.0]);
}

#[test]
fn simple_request_to_everyone_includes_the_sender() {
    let mut c = Cluster::new(2, 2, 3);
    c.form();
    let w = c.worker(0);
    let ts = c.with_node(w, |n, now| n.simple_request(now, CustomerId::DEFAULT, Group::ALL, 1, Bytes::new())).unwrap();
    match c.wait(w, CustomerId::DEFAULT, ts) {
        Event::SimpleDone { replies, .. } => assert_eq!(replies.len(), 5),
        other => panic!("{other:?}"),
    }
}
