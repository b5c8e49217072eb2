//! A scheduler, a server and a worker driven by input-chosen actions.
//!
//! The three nodes share a small "network": every frame one of them sends
//! to another's address waits in a bounded pool until an action delivers,
//! duplicates or drops it, so a run can form a real cluster, push, pull and
//! finalize, with loss, duplication and reordering chosen by the input.
//! Other actions inject raw bytes, well-formed messages from invented
//! senders, timeouts, restarts and every application command.
//!
//! After each action every node is drained and checked against what its
//! driver can observe (see [`Probe::check`]): exact frame and byte
//! counters, one completion per issued request and barrier with results
//! that fit the request, bounded pending work, monotonic phase, stable id,
//! silence after termination, frames that decode, and a next timeout that
//! is never in the past after `handle_timeout`.
//!
//! This is a fuzz-input network, not a scenario harness, and it does not
//! drive the simulator's cluster on purpose. Scenarios run on
//! `pslite-sim`, where a seed draws delays and faults, virtual time moves
//! from event to event, and a checker holds the cluster to a model; here
//! the input bytes are the only source of choice: each byte picks the next
//! action, which frame of the pool is delivered, duplicated or dropped, and
//! when time moves, so the fuzzer's mutations map one to one onto
//! schedules and a corpus file replays the same run forever. It also does
//! what a cluster model must not: frames of raw bytes, senders that were
//! never registered, restarts at any step. And it lives in the core
//! (behind the `fuzzing` feature) because the cargo-fuzz target and the
//! corpus replay in `core`'s own tests build it without the simulator,
//! which itself depends on the core.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;

use bytes::{BufMut, Bytes, BytesMut};

use super::decisions::Decisions;
use crate::chains::Chains;
use crate::config::{BarrierPolicy, Config, FRAME_LEN_MIN};
use crate::error::{ApiMisuse, RequestError};
use crate::id::{Group, Incarnation, NodeId, Rank, Role};
use crate::kv::store::KvStore;
use crate::kv::{CustomerId, DType, Keys, KvHandle, Lens, Response, ServerRequest, SimpleRequest, Timestamp, Values};
use crate::node::{BarrierTicket, Event, Node, Phase};
use crate::slice;
use crate::time::{Duration, Instant};
use crate::wire::message::Envelope;
use crate::wire::{
    BarrierOutcome, Header, Kind, KvOp, KvRequestMsg, KvResponseMsg, KvRoute, Message, NodeEntry, NodeTableMsg,
    RegisterMsg, SimpleMsg, HEADER_LEN,
};

/// Actions per run: keeps one input fast whatever its length.
const ACTIONS_MAX: usize = 192;
/// Frames waiting in the network; the oldest is lost beyond this.
const POOL_MAX: usize = 48;
/// Longest raw frame injected; with a header it stays under
/// `frame_len_max`, so the body decoder (not the size check) sees it.
const RAW_FRAME_LEN_MAX: usize = 96;
const _: () = assert!(HEADER_LEN + RAW_FRAME_LEN_MAX < FRAME_LEN_MIN as usize);
/// Requests remembered for answering, per node.
const TO_ANSWER_MAX: usize = 16;
const KEYS_MAX: usize = 12;
const REQUESTS_PENDING_MAX: u32 = 4;
const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(1);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const SCHEDULER: usize = 0;
const SERVER: usize = 1;
const WORKER: usize = 2;
const CUSTOMERS: [CustomerId; 2] = [CustomerId::DEFAULT, CustomerId::new(1, 2)];
const GROUPS: [Group; 4] = [Group::ALL, Group::SERVERS, Group::WORKERS, Group::SCHEDULER];
const DTYPES: [DType; 5] = [DType::F32, DType::F32, DType::F64, DType::I32, DType::U8];

/// What one step does; an input byte picks one from [`ACTIONS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Raw bytes, or a valid header over raw bytes, to the target.
    RawFrame,
    /// A well-formed message from an invented sender to the target.
    Message,
    /// Deliver, duplicate, misdeliver or lose a frame in flight.
    Network,
    /// Move time forward; every node handles its timeouts.
    Advance,
    /// Move time to the target's next timeout exactly.
    FireTimeout,
    /// Push, pull or push_pull (from the worker, mostly).
    Kv,
    /// Enter a barrier.
    Barrier,
    /// Send a SimpleApp request.
    Simple,
    /// Answer a request the target surfaced.
    Answer,
    /// Registrations (scheduler) or the table (others) that make it ready.
    MakeReady,
    /// Finalize.
    Finalize,
    /// A new process in the target's place.
    Restart,
}

/// The action table; repeats make the network and messages more likely.
pub(crate) const ACTIONS: [Action; 16] = [
    Action::RawFrame,
    Action::Message,
    Action::Message,
    Action::Network,
    Action::Network,
    Action::Network,
    Action::Advance,
    Action::FireTimeout,
    Action::Kv,
    Action::Kv,
    Action::Barrier,
    Action::Simple,
    Action::Answer,
    Action::MakeReady,
    Action::Finalize,
    Action::Restart,
];

/// Runs one input; panics only when a node breaks an invariant.
pub fn node_inputs(data: &[u8]) {
    run(data);
}

/// Where a run ended, so tests can check that a seed reaches the state it
/// was written for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Summary {
    /// Phase of the scheduler, the server and the worker.
    pub(crate) phases: Vec<Phase>,
    /// Events seen over all nodes, by name.
    pub(crate) events: Vec<(&'static str, usize)>,
}

#[cfg(test)]
impl Summary {
    /// How many events named `name` were seen.
    pub(crate) fn count(&self, name: &str) -> usize {
        self.events.iter().find(|(n, _)| *n == name).map_or(0, |(_, count)| *count)
    }
}

pub(crate) fn run(data: &[u8]) -> Summary {
    let mut d = Decisions::new(data);
    let mut world = World::new(&mut d);
    for _ in 0..ACTIONS_MAX {
        if d.is_empty() {
            break;
        }
        world.act(&mut d);
    }
    let events = EVENT_NAMES
        .iter()
        .enumerate()
        .map(|(kind, name)| (*name, world.probes.iter().map(|p| p.seen[kind]).sum()))
        .collect();
    Summary { phases: world.probes.iter().map(|p| p.node.phase()).collect(), events }
}

/// One of the three nodes under test, with what its driver knows.
struct Probe {
    node: Node,
    addr: SocketAddr,
    /// This process's registration, as it sent it (servers and workers).
    register: Option<RegisterMsg>,
    /// Frames and bytes handed in, frames that failed to decode, frames and
    /// bytes drained: the node's `Stats` must agree exactly.
    frames_in: u64,
    bytes_in: u64,
    decode_errors: u64,
    frames_out: u64,
    bytes_out: u64,
    /// Requests issued and not completed yet, with what they asked.
    open: BTreeMap<(CustomerId, Timestamp), Asked>,
    barriers: BTreeSet<BarrierTicket>,
    to_answer: VecDeque<ServerRequest>,
    simple_to_answer: VecDeque<SimpleRequest>,
    terminated: bool,
    phase: Phase,
    id: NodeId,
    /// Events seen, by kind (for [`Summary`]); counted by index rather
    /// than name so no string comparison leaks into the fuzzer's
    /// dictionary.
    seen: [usize; EVENT_NAMES.len()],
}

/// What an issued request asked for, to check its completion against.
#[derive(Debug)]
enum Asked {
    Push,
    Pull { keys: Keys, dtype: DType },
    Simple,
}

struct World {
    now: Instant,
    config: Config,
    probes: [Probe; 3],
    /// Frames in flight between the three nodes, with their destination.
    pool: VecDeque<(SocketAddr, Bytes)>,
    store: KvStore<f32>,
    /// The cluster as invented for structured messages: one entry per
    /// server and worker, the real server and worker at rank 0.
    picture: Vec<NodeEntry>,
    restarts: u64,
}

fn addr(host: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, host], 7000))
}

impl World {
    fn new(d: &mut Decisions<'_>) -> Self {
        let mut builder =
            Config::builder(Role::Scheduler, addr(1)).cluster(1 + d.below(2) as u32, 1 + d.below(2) as u32);
        builder.heartbeat_interval = HEARTBEAT_INTERVAL;
        builder.heartbeat_timeout = HEARTBEAT_TIMEOUT;
        builder.request_timeout = REQUEST_TIMEOUT;
        builder.register_retry_interval = Duration::from_millis(200);
        builder.requests_pending_max = REQUESTS_PENDING_MAX;
        builder.keys_per_request_max = KEYS_MAX as u32 - 2;
        builder.frame_len_max = FRAME_LEN_MIN;
        if d.chance() {
            builder.barrier_policy = BarrierPolicy::WaitForRecovery;
            builder.recovery_timeout = Duration::from_secs(2);
        }
        let config = builder.build().expect("fuzz config is valid");
        let probes = [
            Probe::new(config.clone(), addr(1), 1, Instant::ZERO),
            Probe::new(config.for_role(Role::Server, addr(2)), addr(2), 2, Instant::ZERO),
            Probe::new(config.for_role(Role::Worker, addr(3)), addr(3), 3, Instant::ZERO),
        ];
        let mut world = Self {
            now: Instant::ZERO,
            config,
            probes,
            pool: VecDeque::new(),
            store: KvStore::new(),
            picture: Vec::new(),
            restarts: 0,
        };
        for i in 0..3 {
            world.drain(i, false);
        }
        world.picture_cluster();
        world
    }

    /// Invents the cluster that structured messages talk about.
    fn picture_cluster(&mut self) {
        self.picture.clear();
        for (role, count, real) in
            [(Role::Server, self.config.num_servers, SERVER), (Role::Worker, self.config.num_workers, WORKER)]
        {
            for rank in 0..count {
                let id = NodeId::of(role, Rank(rank));
                let (addr, instance) = match (&self.probes[real].register, rank) {
                    (Some(register), 0) => (register.listen_addr, register.instance),
                    _ => (SocketAddr::from(([10, 0, 1, id.get() as u8], 7000)), 1000 + u64::from(id.get())),
                };
                self.picture.push(NodeEntry { id, incarnation: Incarnation(0), addr, instance, alive: true });
            }
        }
    }

    fn act(&mut self, d: &mut Decisions<'_>) {
        let target = d.below(3);
        let action = d.pick(&ACTIONS);
        match action {
            Action::RawFrame => self.raw_frame(d, target),
            Action::Message => {
                let message = self.message(d, target);
                self.deliver_message(d, target, &message);
            }
            Action::Network => self.network(d),
            Action::Advance => self.advance(d),
            Action::FireTimeout => self.fire_next_timeout(target),
            Action::Kv => self.kv_command(d),
            Action::Barrier => self.barrier(d, target),
            Action::Simple => self.simple_request(d, target),
            Action::Answer => self.answer(d, target),
            Action::MakeReady => self.make_ready(d, target),
            Action::Finalize => self.finalize(target),
            Action::Restart => self.restart(d, target),
        }
        for i in 0..3 {
            self.drain(i, action == Action::Answer && i == target);
        }
    }

    // ----- inputs -----

    fn handle_frame(&mut self, i: usize, frame: Bytes) {
        let now = self.now;
        let probe = &mut self.probes[i];
        probe.frames_in += 1;
        probe.bytes_in += frame.len() as u64;
        if probe.node.handle_frame(now, frame).is_err() {
            probe.decode_errors += 1;
        }
    }

    /// Raw bytes, or a valid header of a random kind over a raw body, so
    /// body decoding is reached without luck.
    fn raw_frame(&mut self, d: &mut Decisions<'_>, target: usize) {
        let len = d.below(RAW_FRAME_LEN_MAX);
        let frame = if d.chance() {
            Bytes::copy_from_slice(d.bytes(len))
        } else {
            let body = d.bytes(len);
            let header = Header {
                kind: Kind::from_wire(1 + d.below(12) as u8).expect("kinds 1..=12 exist"),
                body_len: body.len() as u32,
                sender: self.sender(d, target),
                incarnation: Incarnation(d.below(2) as u32),
                receiver: NodeId::UNASSIGNED,
                receiver_incarnation: Incarnation(0),
                seq: 0,
            };
            let mut frame = BytesMut::from(&header.encode()[..]);
            frame.put_slice(body);
            frame.freeze()
        };
        self.handle_frame(target, frame);
    }

    fn deliver_message(&mut self, d: &mut Decisions<'_>, target: usize, message: &Message) {
        let envelope = Envelope {
            sender: self.sender(d, target),
            incarnation: Incarnation(d.pick(&[0, 0, 0, 1, u32::MAX])),
            receiver: d.pick(&[NodeId::UNASSIGNED, self.probes[target].node.id(), NodeId::worker(Rank(7))]),
            receiver_incarnation: self.probes[target].node.incarnation(),
            seq: d.pick(&[0, 1, u64::MAX]),
        };
        let frame = message.encode(envelope).to_bytes();
        self.handle_frame(target, frame);
    }

    /// The network: deliver, duplicate, misdeliver or lose a pooled frame.
    fn network(&mut self, d: &mut Decisions<'_>) {
        let index = d.below(8);
        let how = d.below(8);
        let misdeliver_to = d.below(3);
        if self.pool.is_empty() {
            return;
        }
        let index = index % self.pool.len();
        let (to, frame) =
            if how == 0 { self.pool[index].clone() } else { self.pool.remove(index).expect("index is in the pool") };
        let destination = match how {
            1 => Some(misdeliver_to),
            2 => None,
            _ => self.probes.iter().position(|p| p.addr == to),
        };
        if let Some(i) = destination {
            self.handle_frame(i, frame);
        }
    }

    fn advance(&mut self, d: &mut Decisions<'_>) {
        let step = d.pick(&[
            Duration::from_millis(1),
            Duration::from_millis(50),
            HEARTBEAT_INTERVAL,
            Duration::from_millis(250),
            HEARTBEAT_TIMEOUT,
            Duration::from_secs(3),
            REQUEST_TIMEOUT,
            Duration::from_secs(60),
        ]);
        self.now += step;
        self.handle_timeouts();
    }

    /// Jumps to `target`'s next timeout exactly, so deadlines fire on time
    /// rather than only when overshot.
    fn fire_next_timeout(&mut self, target: usize) {
        if let Some(at) = self.probes[target].node.poll_timeout() {
            self.now = self.now.max(at);
        }
        self.handle_timeouts();
    }

    fn handle_timeouts(&mut self) {
        let now = self.now;
        for probe in &mut self.probes {
            probe.node.handle_timeout(now);
            if let Some(next) = probe.node.poll_timeout() {
                assert!(
                    next > now,
                    "{:?}: next timeout {next:?} is not after handle_timeout({now:?})",
                    probe.node.role()
                );
            }
        }
    }

    fn restart(&mut self, d: &mut Decisions<'_>, target: usize) {
        self.restarts += 1;
        let config = self.probes[target].node.config().clone();
        let addr = self.probes[target].addr;
        self.probes[target] = Probe::new(config, addr, (self.restarts << 8) | d.byte() as u64, self.now);
        self.drain(target, false);
    }

    // ----- structured messages -----

    fn sender(&self, d: &mut Decisions<'_>, target: usize) -> NodeId {
        let own = self.probes[target].node.id();
        match d.below(8) {
            0 => NodeId::UNASSIGNED,
            1 | 2 => NodeId::SCHEDULER,
            3 => own,
            4 => NodeId::from_raw(d.u32()).unwrap_or(NodeId::UNASSIGNED),
            _ => self.picture[d.below(self.picture.len())].id,
        }
    }

    fn message(&mut self, d: &mut Decisions<'_>, target: usize) -> Message {
        match d.below(12) {
            0 => Message::Register(self.register(d)),
            1 => Message::NodeTable(self.table(d, target)),
            2 => Message::Barrier { group: d.pick(&GROUPS), generation: d.below(3) as u64, finalize: false },
            3 => Message::BarrierRelease {
                group: d.pick(&GROUPS),
                generation: d.below(3) as u64,
                outcome: if d.chance() {
                    BarrierOutcome::Released
                } else {
                    BarrierOutcome::MemberDied(self.sender(d, target))
                },
            },
            4 => Message::Heartbeat { sent_at: 0 },
            5 => Message::HeartbeatAck { epoch: d.below(5) as u64, echo: 0 },
            6 => Message::Ack { seqs: (0..d.below(4)).map(|_| d.below(4) as u64).collect() },
            7 => Message::Terminate,
            8 => Message::KvRequest(kv_request(d)),
            9 => Message::KvResponse(self.kv_response(d, target)),
            10 => {
                let open = self.pick_open(d, target);
                Message::SimpleRequest(simple_msg(d, open))
            }
            _ => {
                let open = self.pick_open(d, target);
                Message::SimpleResponse(simple_msg(d, open))
            }
        }
    }

    fn register(&self, d: &mut Decisions<'_>) -> RegisterMsg {
        let entry = self.picture[d.below(self.picture.len())];
        let role = match d.below(8) {
            0 => Role::Scheduler,
            1 => Role::Server,
            2 => Role::Worker,
            _ => entry.id.role().expect("picture holds servers and workers"),
        };
        let instance = if d.below(4) == 0 { u64::from(d.byte()) } else { entry.instance };
        RegisterMsg { role, listen_addr: entry.addr, instance }
    }

    /// A table in the shape the scheduler sends: usually the picture, with
    /// the target in its rank-0 slot, sometimes bent (dead nodes, new
    /// incarnations, an old epoch).
    fn table(&self, d: &mut Decisions<'_>, target: usize) -> NodeTableMsg {
        let mut nodes = self.picture.clone();
        if let Some(register) = &self.probes[target].register {
            if let Some(entry) = nodes.iter_mut().find(|n| n.id.role() == Some(register.role) && n.id.rank() == Rank(0))
            {
                entry.instance = register.instance;
                entry.addr = register.listen_addr;
            }
        }
        for entry in &mut nodes {
            match d.below(8) {
                0 => entry.alive = false,
                1 => entry.incarnation = Incarnation(1 + d.below(2) as u32),
                _ => {}
            }
        }
        if d.below(8) == 0 {
            nodes.pop();
        }
        let epoch = self.probes[target].node.membership().epoch() + d.pick(&[1, 1, 1, 0, 2]);
        NodeTableMsg { epoch, nodes, generations: Vec::new(), chains: Chains::default() }
    }

    /// A response naming one of the target's open requests when it has
    /// any, with values that sometimes fit it.
    fn kv_response(&self, d: &mut Decisions<'_>, target: usize) -> KvResponseMsg {
        let (customer, ts) = self.pick_open(d, target);
        let fitting = match self.probes[target].open.get(&(customer, ts)) {
            Some(Asked::Pull { keys, dtype }) => Some((keys.len(), *dtype)),
            _ => None,
        };
        let error = (d.below(8) == 0).then(|| "refused".to_owned());
        let (values, lens) = match (fitting, d.below(3)) {
            (Some((count, dtype)), 0 | 1) => (values_of(d, dtype, count), None),
            _ => {
                let count = d.below(KEYS_MAX);
                (any_values(d, count), lens_of(d, count))
            }
        };
        let keys = if d.below(4) == 0 { sorted_keys(d) } else { Keys::default() };
        // The harness runs one copy of each range, where answers are
        // known by their sender and a redirect is dropped; the codec's
        // tests cover both fields. No decision is spent on them, so the
        // corpus's scripts keep their meaning.
        let (part, redirect) = (0, None);
        KvResponseMsg {
            app: customer.app,
            customer: customer.customer,
            ts: ts.0,
            error,
            keys,
            values,
            lens,
            part,
            redirect,
        }
    }

    fn pick_open(&self, d: &mut Decisions<'_>, target: usize) -> (CustomerId, Timestamp) {
        let invent = d.below(4) == 0;
        let invented = (d.pick(&CUSTOMERS), Timestamp(d.below(4) as u32));
        let index = usize::from(d.byte());
        let open = &self.probes[target].open;
        if open.is_empty() || invent {
            return invented;
        }
        *open.keys().nth(index % open.len()).expect("index below len")
    }

    /// Brings `target` to Ready the way the cluster would: the scheduler
    /// gets a registration from everyone in the picture, the others get
    /// the table that names them.
    fn make_ready(&mut self, d: &mut Decisions<'_>, target: usize) {
        if target == SCHEDULER {
            for entry in self.picture.clone() {
                let role = entry.id.role().expect("picture holds servers and workers");
                let register = RegisterMsg { role, listen_addr: entry.addr, instance: entry.instance };
                let envelope = Envelope {
                    sender: NodeId::UNASSIGNED,
                    incarnation: Incarnation(0),
                    receiver: NodeId::SCHEDULER,
                    receiver_incarnation: Incarnation(0),
                    seq: 0,
                };
                self.handle_frame(SCHEDULER, Message::Register(register).encode(envelope).to_bytes());
            }
        } else {
            let mut table = self.table(d, target);
            table.nodes.iter_mut().for_each(|n| n.alive = true);
            // Addressed to the id the table gives the target, as the
            // scheduler addresses the table that registers a node.
            let receiver = self.probes[target]
                .register
                .as_ref()
                .map_or(NodeId::UNASSIGNED, |register| NodeId::of(register.role, Rank(0)));
            let envelope = Envelope {
                sender: NodeId::SCHEDULER,
                incarnation: Incarnation(0),
                receiver,
                receiver_incarnation: Incarnation(0),
                seq: 0,
            };
            self.handle_frame(target, Message::NodeTable(table).encode(envelope).to_bytes());
        }
    }

    // ----- commands -----

    /// Push, pull or push_pull from the worker (or, sometimes, from a node
    /// of the wrong role, which must refuse).
    fn kv_command(&mut self, d: &mut Decisions<'_>) {
        let target = if d.below(8) == 0 { d.below(3) } else { WORKER };
        let now = self.now;
        let customer = d.pick(&CUSTOMERS);
        let cmd = d.below(3) as i32;
        let keys = if d.below(8) == 0 { unsorted_keys(d) } else { sorted_keys(d) };
        let dtype = d.pick(&DTYPES);
        let per_key = d.pick(&[1, 1, 2, 0]);
        let lens = if d.below(4) == 0 { lens_of(d, keys.len()) } else { None };
        let count = match &lens {
            Some(lens) if d.below(4) != 0 => lens.total() as usize,
            _ => keys.len() * per_key + usize::from(d.below(8) == 0),
        };
        let values = values_of(d, dtype, count);
        let node = &mut self.probes[target].node;
        let (result, asked) = match d.below(3) {
            0 => (node.push(now, customer, cmd, keys, values, lens), Asked::Push),
            1 => (node.pull(now, customer, cmd, keys.clone(), dtype), Asked::Pull { keys, dtype }),
            _ => {
                let asked = Asked::Pull { keys: keys.clone(), dtype };
                (node.push_pull(now, customer, cmd, keys, values, lens), asked)
            }
        };
        self.probes[target].issued(customer, result, asked);
    }

    fn barrier(&mut self, d: &mut Decisions<'_>, target: usize) {
        let group = d.pick(&GROUPS);
        let result = self.probes[target].node.barrier(self.now, group);
        self.probes[target].entered(result);
    }

    fn finalize(&mut self, target: usize) {
        let result = self.probes[target].node.finalize(self.now);
        self.probes[target].entered(result);
    }

    fn simple_request(&mut self, d: &mut Decisions<'_>, target: usize) {
        let customer = d.pick(&CUSTOMERS);
        let head = i32::from(d.byte());
        let body = Bytes::copy_from_slice(d.blob(15));
        let to = match d.below(4) {
            0 => crate::simple::Target::Node(self.sender(d, target)),
            _ => crate::simple::Target::Group(d.pick(&GROUPS)),
        };
        let result = self.probes[target].node.simple_request(self.now, customer, to, head, body);
        self.probes[target].issued(customer, result, Asked::Simple);
    }

    /// Answers a remembered request: with the default store, an invented
    /// response, a refusal, or for a request that does not exist.
    fn answer(&mut self, d: &mut Decisions<'_>, target: usize) {
        let now = self.now;
        let simple = d.chance();
        let how = d.below(4);
        let tamper = d.below(8) == 0;
        let probe = &mut self.probes[target];
        if simple {
            let Some(request) = probe.simple_to_answer.pop_front() else {
                return;
            };
            let body = Bytes::copy_from_slice(d.blob(7));
            let result = probe.node.simple_respond(now, request.id, request.head.wrapping_add(1), body);
            assert_misuse_only(result.err(), &[ApiMisuse::UnknownRequest]);
            return;
        }
        let Some(request) = probe.to_answer.pop_front() else {
            return;
        };
        let response = match how {
            0 | 1 => self.store.handle(&request),
            2 => Response::Refused(crate::kv::Refusal::Handle("no".to_owned())),
            _ => {
                let count = d.below(KEYS_MAX);
                Response::Ok { values: any_values(d, count), lens: lens_of(d, count) }
            }
        };
        let mut id = request.id;
        if tamper {
            id.ts = Timestamp(id.ts.0.wrapping_add(1000));
        }
        let result = self.probes[target].node.respond(now, id, response);
        assert_misuse_only(result.err(), &[ApiMisuse::UnknownRequest]);
    }

    // ----- outputs and invariants -----

    /// Drains node `i` into the pool and the probe, then checks it.
    /// `may_send`: the action was a command that may send even after
    /// termination (answering a request the application still held).
    fn drain(&mut self, i: usize, may_send: bool) {
        let silent = self.probes[i].terminated && !may_send;
        let addrs: Vec<SocketAddr> = self.probes.iter().map(|p| p.addr).collect();
        let probe = &mut self.probes[i];
        while let Some(transmit) = probe.node.poll_transmit() {
            assert!(!silent, "{:?} sent {:?} after it terminated", probe.node.role(), transmit.frame);
            let frame = transmit.frame.to_bytes();
            probe.frames_out += 1;
            probe.bytes_out += frame.len() as u64;
            let header = Header::decode(&frame, probe.node.config().frame_len_max).expect("own frames decode");
            let message = Message::decode(&header, &frame).expect("own messages decode");
            assert!(header.sender == NodeId::UNASSIGNED || header.sender == probe.node.id(), "sent under another id");
            assert_eq!(header.receiver, transmit.to, "transmit and header disagree on the receiver");
            if let (Message::Register(register), None) = (&message, &probe.register) {
                probe.register = Some(register.clone());
            }
            if addrs.contains(&transmit.addr) {
                if self.pool.len() == POOL_MAX {
                    self.pool.pop_front();
                }
                self.pool.push_back((transmit.addr, frame));
            }
        }
        while let Some(event) = probe.node.poll_event() {
            assert!(!probe.terminated, "{:?} emitted {event:?} after Terminated", probe.node.role());
            probe.on_event(event);
        }
        probe.check();
    }
}

impl Probe {
    fn new(config: Config, addr: SocketAddr, seed: u64, now: Instant) -> Self {
        let node = Node::new(config, seed, now);
        Self {
            phase: node.phase(),
            id: node.id(),
            node,
            addr,
            register: None,
            frames_in: 0,
            bytes_in: 0,
            decode_errors: 0,
            frames_out: 0,
            bytes_out: 0,
            open: BTreeMap::new(),
            barriers: BTreeSet::new(),
            to_answer: VecDeque::new(),
            simple_to_answer: VecDeque::new(),
            terminated: false,
            seen: [0; EVENT_NAMES.len()],
        }
    }

    fn issued(&mut self, customer: CustomerId, result: Result<Timestamp, RequestError>, asked: Asked) {
        match result {
            Ok(ts) => {
                let previous = self.open.insert((customer, ts), asked);
                assert!(previous.is_none(), "timestamp {ts:?} issued twice");
            }
            Err(RequestError::ApiMisuse(misuse)) => assert!(!misuse.to_string().is_empty()),
            Err(RequestError::PeerDead(_) | RequestError::Terminated) => {}
            Err(other) => panic!("a command failed with {other:?}, which only completions carry"),
        }
    }

    fn entered(&mut self, result: Result<BarrierTicket, RequestError>) {
        match result {
            Ok(ticket) => assert!(self.barriers.insert(ticket), "barrier ticket {ticket:?} issued twice"),
            // A caller mistake (not ready, a group without this node) is
            // refused at once; anything else only a completion may carry.
            Err(RequestError::ApiMisuse(_) | RequestError::Terminated) => {}
            Err(other) => panic!("barrier failed with {other:?}"),
        }
    }

    fn on_event(&mut self, event: Event) {
        let role = self.node.role();
        self.seen[event_kind(&event)] += 1;
        match event {
            Event::Registered { id, rank, .. } => {
                assert_eq!(
                    (id, id.rank(), id.role()),
                    (self.node.id(), rank, Some(role)),
                    "registered as another node"
                );
            }
            Event::ClusterReady => assert_eq!(self.node.phase(), Phase::Ready),
            Event::Install { .. } => assert_eq!(role, Role::Server, "a {role} was given a state to install"),
            Event::Export { .. } => assert_eq!(role, Role::Server, "a {role} was asked to read a range"),
            Event::Forget { .. } => assert_eq!(role, Role::Server, "a {role} was told to forget a range"),
            Event::RequestDone { customer, ts } => {
                let asked = self.open.remove(&(customer, ts));
                assert!(matches!(asked, Some(Asked::Push)), "RequestDone for {ts:?}, which asked {asked:?}");
            }
            Event::PullDone { customer, ts, keys, values, lens } => {
                let asked = self.open.remove(&(customer, ts));
                let Some(Asked::Pull { keys: asked_keys, dtype }) = asked else {
                    panic!("PullDone for {ts:?}, which asked {asked:?}");
                };
                assert_eq!(keys, asked_keys, "pulled other keys than asked");
                assert_eq!(values.dtype(), dtype, "pulled another dtype than asked");
                let list = slice::KvList { keys, values, lens };
                assert_eq!(slice::check_lengths(&list), Ok(()), "pulled values do not fit the keys");
            }
            Event::RequestFailed { customer, ts, error } => {
                let asked = self.open.remove(&(customer, ts));
                assert!(asked.is_some(), "{ts:?} failed ({error}) but was not pending");
            }
            Event::SimpleDone { customer, ts, replies } => {
                let asked = self.open.remove(&(customer, ts));
                assert!(matches!(asked, Some(Asked::Simple)), "SimpleDone for {ts:?}, which asked {asked:?}");
                assert!(replies.windows(2).all(|w| w[0].from < w[1].from), "replies not ordered by node id");
            }
            Event::ServerRequest(request) => {
                assert_eq!(role, Role::Server, "a {role} was asked to serve");
                let range = self.node.server_ranges().get(self.node.rank().expect("ready server has a rank"));
                let range = range.expect("own rank has a range");
                assert_eq!(slice::check_keys(&request.keys), Ok(()), "unsorted keys reached the handle");
                assert!(request.keys.iter().all(|k| range.contains(k)), "foreign keys reached the handle");
                let list = slice::KvList {
                    keys: request.keys.clone(),
                    values: request.values.clone(),
                    lens: request.lens.clone(),
                };
                if request.op.pushes() {
                    assert_eq!(slice::check_lengths(&list), Ok(()), "unfit values reached the handle");
                } else {
                    assert!(list.values.is_empty() && list.lens.is_none(), "a pull reached the handle with values");
                }
                if self.to_answer.len() == TO_ANSWER_MAX {
                    self.to_answer.pop_front();
                }
                self.to_answer.push_back(request);
            }
            Event::SimpleRequest(request) => {
                if self.simple_to_answer.len() == TO_ANSWER_MAX {
                    self.simple_to_answer.pop_front();
                }
                self.simple_to_answer.push_back(request);
            }
            Event::BarrierReleased { ticket, .. } | Event::BarrierFailed(ticket, _) => {
                assert!(self.barriers.remove(&ticket), "barrier {ticket:?} ended but was not entered or ended twice");
            }
            Event::NodeDead { .. } | Event::NodeRecovered { .. } => {}
            Event::RegistrationFailed { .. } => {
                assert_eq!(self.node.phase(), Phase::Terminated, "giving up on registration stops the node");
            }
            Event::Terminated => {
                assert_eq!(self.node.phase(), Phase::Terminated);
                self.terminated = true;
            }
        }
    }

    /// What a driver can rely on after draining.
    fn check(&mut self) {
        let node = &self.node;
        let role = node.role();
        let stats = node.stats();
        assert_eq!(
            (stats.frames_in, stats.bytes_in, stats.decode_errors, stats.frames_out, stats.bytes_out),
            (self.frames_in, self.bytes_in, self.decode_errors, self.frames_out, self.bytes_out),
            "{role}: stats (frames in, bytes in, decode errors, frames out, bytes out) disagree with what crossed"
        );
        let max = node.config().requests_pending_max as usize;
        assert!(node.requests_pending() <= max, "{role}: {} requests pending", node.requests_pending());
        assert!(node.responses_pending() <= max, "{role}: {} responses pending", node.responses_pending());
        assert_eq!(node.requests_pending(), self.open.len(), "{role}: pending requests disagree with completions");
        assert_eq!(node.barriers_pending(), self.barriers.len(), "{role}: pending barriers disagree with completions");
        assert!(node.phase() >= self.phase, "{role}: phase went back from {:?} to {:?}", self.phase, node.phase());
        self.phase = node.phase();
        if self.id != NodeId::UNASSIGNED {
            assert_eq!(node.id(), self.id, "{role}: id changed");
        }
        self.id = node.id();
        assert_eq!(self.terminated, node.phase() == Phase::Terminated, "{role}: Terminated event and phase disagree");
        match node.phase() {
            Phase::Terminated => {
                assert_eq!(node.poll_timeout(), None, "{role}: terminated node wants a timeout");
                assert!(self.open.is_empty() && self.barriers.is_empty(), "{role}: work outlived termination");
            }
            Phase::Registering if role != Role::Scheduler => {
                assert!(node.poll_timeout().is_some(), "{role}: registering without a retry timer");
            }
            Phase::Ready if node.config().heartbeats => {
                assert!(node.poll_timeout().is_some(), "{role}: ready without heartbeat timers");
            }
            _ => {}
        }
    }
}

const EVENT_NAMES: [&str; 17] = [
    "Registered",
    "ClusterReady",
    "RequestDone",
    "PullDone",
    "RequestFailed",
    "ServerRequest",
    "SimpleRequest",
    "SimpleDone",
    "BarrierReleased",
    "BarrierFailed",
    "NodeDead",
    "NodeRecovered",
    "Terminated",
    "RegistrationFailed",
    "Install",
    "Export",
    "Forget",
];

/// Index of the event's name in [`EVENT_NAMES`].
fn event_kind(event: &Event) -> usize {
    match event {
        Event::Registered { .. } => 0,
        Event::ClusterReady => 1,
        Event::RequestDone { .. } => 2,
        Event::PullDone { .. } => 3,
        Event::RequestFailed { .. } => 4,
        Event::ServerRequest(_) => 5,
        Event::SimpleRequest(_) => 6,
        Event::SimpleDone { .. } => 7,
        Event::BarrierReleased { .. } => 8,
        Event::BarrierFailed(..) => 9,
        Event::NodeDead { .. } => 10,
        Event::NodeRecovered { .. } => 11,
        Event::Terminated => 12,
        Event::RegistrationFailed { .. } => 13,
        Event::Install { .. } => 14,
        Event::Export { .. } => 15,
        Event::Forget { .. } => 16,
    }
}

/// A refused command names one of the `expected` misuses.
fn assert_misuse_only(error: Option<RequestError>, expected: &[ApiMisuse]) {
    match error {
        None => {}
        Some(RequestError::ApiMisuse(misuse)) if expected.contains(&misuse) => {}
        Some(other) => panic!("unexpected refusal {other:?}"),
    }
}

fn kv_request(d: &mut Decisions<'_>) -> KvRequestMsg {
    let customer = d.pick(&CUSTOMERS);
    let op = d.pick(&[KvOp::Push, KvOp::Pull, KvOp::PushPull]);
    let keys = if d.below(4) == 0 { unsorted_keys(d) } else { sorted_keys(d) };
    let lens = if d.below(4) == 0 { lens_of(d, keys.len()) } else { None };
    let count = match (&lens, op) {
        (_, KvOp::Pull) if d.chance() => 0,
        (Some(lens), _) if d.chance() => lens.total() as usize,
        _ => keys.len() * d.pick(&[1, 1, 2, 0]),
    };
    KvRequestMsg {
        app: customer.app,
        customer: customer.customer,
        ts: d.below(4) as u32,
        cmd: d.below(3) as i32,
        op,
        keys,
        values: any_values(d, count),
        lens,
        route: KvRoute::default(),
    }
}

fn simple_msg(d: &mut Decisions<'_>, (customer, ts): (CustomerId, Timestamp)) -> SimpleMsg {
    let body = Bytes::copy_from_slice(d.blob(15));
    SimpleMsg { app: customer.app, customer: customer.customer, ts: ts.0, head: i32::from(d.byte()), body }
}

/// A key near where ranges split (two servers split at 2^63), or anywhere.
fn key(d: &mut Decisions<'_>) -> u64 {
    let base = d.pick(&[0, 1 << 63, u64::MAX, 1 << 20]);
    let offset = u64::from(d.byte() % 16);
    match d.below(4) {
        0 => base.wrapping_sub(offset),
        1 => d.u64(),
        _ => base.wrapping_add(offset),
    }
}

fn sorted_keys(d: &mut Decisions<'_>) -> Keys {
    let mut keys: Vec<u64> = (0..d.below(KEYS_MAX + 1)).map(|_| key(d)).collect();
    keys.sort_unstable();
    keys.dedup();
    Keys::from_slice(&keys)
}

fn unsorted_keys(d: &mut Decisions<'_>) -> Keys {
    let keys: Vec<u64> = (0..d.below(KEYS_MAX + 1)).map(|_| key(d)).collect();
    Keys::from_slice(&keys)
}

fn lens_of(d: &mut Decisions<'_>, count: usize) -> Option<Lens> {
    if d.below(4) != 0 {
        return None;
    }
    let count = if d.below(8) == 0 { d.below(KEYS_MAX) } else { count };
    let lens: Vec<u32> = (0..count).map(|_| d.pick(&[0, 1, 1, 2, 3])).collect();
    Some(Lens::from_slice(&lens))
}

fn any_values(d: &mut Decisions<'_>, count: usize) -> Values {
    let dtype = d.pick(&DTYPES);
    values_of(d, dtype, count)
}

/// `count` elements of `dtype` with small integer values (sums stay exact).
fn values_of(d: &mut Decisions<'_>, dtype: DType, count: usize) -> Values {
    let mut bytes = BytesMut::with_capacity(count * dtype.size());
    for _ in 0..count {
        let v = d.byte() % 8;
        match dtype {
            DType::F32 => bytes.put_f32_le(f32::from(v)),
            DType::F64 => bytes.put_f64_le(f64::from(v)),
            DType::I32 => bytes.put_i32_le(i32::from(v)),
            DType::I64 => bytes.put_i64_le(i64::from(v)),
            DType::U8 => bytes.put_u8(v),
        }
    }
    Values::from_bytes(dtype, bytes.freeze()).expect("whole elements")
}
