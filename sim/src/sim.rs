//! The simulator: virtual time, the event loop, and driving the nodes.
//!
//! One [`Sim`] is one run of one seed. It pops the earliest event, sets the
//! clock to it, applies it (a frame arrives, a timer fires, a fault
//! strikes, a worker issues its next operation), drains the node it
//! touched by the core's contract (transmits, events, then the next
//! timeout) and lets the checker look at the result. Phase one ("safety")
//! runs the workers' scripts under faults; phase two ("liveness") heals
//! everything and demands that the cluster finishes. Nothing in here reads
//! a clock, a thread or a hash order: one seed is one run.

use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::Bytes;
use pslite_core::wire::{Header, Kind, Message};
use pslite_core::{
    CustomerId, Duration, Event, Incarnation, Instant, KvHandle, KvList, Node, NodeId, Phase, Response, Rng, Role,
    ServerRanges, ServerRequest, ServerRequestId, SimpleRequest, Timestamp, Transmit,
};

use crate::checker::wire::{Sent, WireLedger};
use crate::checker::{Bounds, Check, Checker, Completion, RequestKey, StoreId, Violation};
use crate::cluster::{addr, base_config, Clock, SimNode, SCHEDULER_SLOT};
use crate::faults::FaultClass;
use crate::injector::FaultStreams;
use crate::network::Network;
use crate::queue::{Delivery, EventQueue, FaultAction, SimEvent, Slot};
use crate::replay::{reproduce_command, Failure, FailureKind, Outcome, RunStats};
use crate::setup::{stream, Setup};
use crate::trace::{Dropped, Entry, Note, Trace, What};
use crate::worker::WorkerRun;

/// Which phase the run is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RunPhase {
    /// Faults on, scripts running, invariants checked.
    Safety,
    /// Faults healed since the instant; the cluster must finish.
    Liveness(Instant),
}

/// One simulated run.
#[derive(Debug)]
pub struct Sim {
    pub(crate) setup: Setup,
    pub(crate) now: Instant,
    pub(crate) events: u64,
    pub(crate) queue: EventQueue,
    pub(crate) nodes: Vec<SimNode>,
    pub(crate) net: Network,
    pub(crate) fault_rngs: FaultStreams,
    handler_rng: Rng,
    pub(crate) workers: Vec<WorkerRun>,
    pub(crate) checker: Checker,
    /// What crossed the wire, per process, for the nodes' stats and their
    /// reliable delivery.
    pub(crate) wire: WireLedger,
    /// Whether no frame can be lost or held long enough to be resent: no
    /// fault that loses or holds frames, and round trips well below the
    /// resend timeout. Then no frame that reached its ready receiver may
    /// be resent.
    prompt: bool,
    /// Barriers the checker was told about, per process: the others were
    /// entered by hand in a scenario and are outside the model.
    pub(crate) barrier_tickets: std::collections::BTreeSet<(NodeId, Incarnation, pslite_core::BarrierTicket)>,
    pub(crate) trace: Trace,
    pub(crate) phase: RunPhase,
    pub(crate) failure: Option<Failure>,
    pub(crate) ranges: ServerRanges,
    node_seed: u64,
    /// Where the choice of answers to corrupt starts.
    pub(crate) corrupt_seed: u64,
    /// Node events as they happened, when the setup asks for them.
    log: Vec<(Slot, Instant, Event)>,
    pub(crate) last_node_fault: Option<Instant>,
    pub(crate) partition_quiet_until: Instant,
    pub(crate) finalize_started: bool,
    /// Since when the cluster has been whole, in the liveness phase.
    pub(crate) whole_since: Option<Instant>,
    /// Since when a settled cluster has had replication left to drain.
    pub(crate) backlog_since: Option<Instant>,
    stats: RunStats,
    /// Per slot: the instant of the last timer fire and how many fired at it
    /// (a timer that fires without moving on is a core bug, not a livelock
    /// to wait out).
    timer_spin: Vec<(Instant, u32)>,
    /// Whether a scenario test ran commands on nodes by hand: requests,
    /// barriers and pushes the checker was never told about may exist.
    pub(crate) hand_driven: bool,
    /// Whether a scenario test put frames of its own on the wire: tables
    /// may lie and peers may be named at addresses no slot has.
    pub(crate) forged: bool,
    /// Stores that applied a push the checker was never told about: their
    /// contents are no longer the model's.
    pub(crate) stores_unmodelled: std::collections::BTreeSet<StoreId>,
}

/// The longest delay between two resends of a frame, whatever the attempt
/// (the core's cap).
const RESEND_DELAY_MAX: Duration = Duration::from_secs(30);
/// Timer fires of one node at one instant before it counts as spinning.
const TIMER_SPIN_MAX: u32 = 1000;
/// Rounds of one drain before it counts as a loop.
const DRAIN_ROUNDS_MAX: u32 = 10_000;
/// Longest random start delay of a node at the beginning of a run.
const START_SPREAD_MAX: Duration = Duration::from_millis(50);

impl Sim {
    /// Builds the cluster; processes start within the first milliseconds.
    pub fn new(setup: Setup) -> Self {
        let seed = setup.seed;
        let mut config = base_config(&setup);
        if let Some(configure) = setup.configure {
            config = configure(config.into_builder()).build().expect("the scenario's configuration is valid");
        }
        let ranges = config.server_ranges();
        let mut clocks = Rng::new(Rng::derive_seed(seed, stream::CLOCKS));
        let drift = setup.plan.classes.contains(FaultClass::ClockDrift);
        let mut roles = vec![Role::Scheduler];
        roles.extend(std::iter::repeat_n(Role::Server, setup.servers as usize));
        roles.extend(std::iter::repeat_n(Role::Worker, setup.workers as usize));
        let nodes: Vec<SimNode> = roles
            .iter()
            .enumerate()
            .map(|(slot, &role)| {
                let clock = if drift { random_clock(&mut clocks, &setup.plan) } else { Clock::EXACT };
                SimNode::new(role, config.for_role(role, addr(slot)), clock)
            })
            .collect();
        let workers: Vec<WorkerRun> = (0..)
            .zip(setup.workload.scripts.iter().cloned())
            .map(|(rank, script)| WorkerRun::new(script, Rng::derive_seed(seed, stream::THINK + rank)))
            .collect();
        assert_eq!(workers.len(), setup.workers as usize, "one script per worker");
        let bounds = bounds_for(&setup, &config);
        let checker = Checker::new(bounds, ranges.clone(), setup.servers, setup.workers, config.replicas)
            .with_values(setup.values);
        let prompt = setup.swarm.is_some() && setup.plan.delivers_promptly(config.resend_timeout);
        let mut sim = Self {
            now: Instant::ZERO,
            events: 0,
            queue: EventQueue::new(setup.limits.queue_len_max),
            net: Network::new(nodes.len(), Rng::derive_seed(seed, stream::NETWORK), &setup.plan),
            nodes,
            fault_rngs: FaultStreams::new(Rng::derive_seed(seed, stream::FAULTS)),
            handler_rng: Rng::new(Rng::derive_seed(seed, stream::HANDLER)),
            workers,
            checker,
            wire: WireLedger::default(),
            prompt,
            barrier_tickets: std::collections::BTreeSet::new(),
            trace: Trace::new(setup.limits.trace_len_max, setup.trace_all),
            phase: RunPhase::Safety,
            failure: None,
            ranges,
            node_seed: Rng::derive_seed(seed, stream::NODES),
            corrupt_seed: Rng::derive_seed(seed, stream::CORRUPT),
            log: Vec::new(),
            last_node_fault: None,
            partition_quiet_until: Instant::ZERO,
            finalize_started: false,
            whole_since: None,
            backlog_since: None,
            stats: RunStats::default(),
            timer_spin: Vec::new(),
            hand_driven: false,
            forged: false,
            stores_unmodelled: std::collections::BTreeSet::new(),
            setup,
        };
        sim.timer_spin = vec![(Instant::FAR_FUTURE, 0); sim.nodes.len()];
        let mut starts = Rng::new(Rng::derive_seed(seed, stream::STARTS));
        for slot in (0..sim.nodes.len()).filter(|_| sim.setup.autostart) {
            let at =
                if slot == SCHEDULER_SLOT { Instant::ZERO } else { Instant::ZERO + starts.jitter(START_SPREAD_MAX) };
            sim.queue.push(at, SimEvent::Fault(FaultAction::Restart(slot)));
        }
        if sim.injects_faults() {
            sim.queue.push(Instant::ZERO + sim.setup.plan.fault_tick_interval, SimEvent::FaultTick);
        }
        sim
    }

    /// Runs both phases to the end and reports.
    pub fn run(&mut self) -> Outcome {
        let result = catch_unwind(AssertUnwindSafe(|| self.run_phases()));
        if let Err(payload) = result {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".to_owned());
            self.fail(FailureKind::Panic, format!("panic: {message}"));
        }
        self.outcome()
    }

    fn run_phases(&mut self) {
        while self.failure.is_none() {
            match self.phase {
                RunPhase::Safety => {
                    let time_up = self.now >= Instant::ZERO + self.setup.limits.safety_time_max;
                    if time_up || self.scripts_done() {
                        self.transition_to_liveness();
                        continue;
                    }
                }
                RunPhase::Liveness(since) => {
                    self.supervise();
                    let Some(reason) = self.pending() else {
                        self.check_finished();
                        return;
                    };
                    if self.now >= since + self.setup.limits.liveness_time_max {
                        self.fail(FailureKind::Liveness, format!("not finished after the faults healed: {reason}"));
                        return;
                    }
                    if self.queue.is_empty() {
                        self.fail(FailureKind::Liveness, format!("nothing left to happen: {reason}"));
                        return;
                    }
                }
            }
            if self.events >= self.setup.limits.events_max {
                let reason = self.pending().unwrap_or_else(|| "no reason pending".to_owned());
                self.fail(
                    FailureKind::Liveness,
                    format!("events_max {} reached: {reason}", self.setup.limits.events_max),
                );
                return;
            }
            if !self.step() && self.phase == RunPhase::Safety {
                // Nothing left to happen (every node stopped): only the
                // liveness phase can tell whether that is the end.
                self.transition_to_liveness();
            }
        }
    }

    /// Processes the next event; false when none is left.
    pub fn step(&mut self) -> bool {
        let Some((at, event)) = self.queue.pop() else {
            return false;
        };
        assert!(at >= self.now, "time runs forward: {at:?} < {:?}", self.now);
        self.now = at;
        self.events += 1;
        self.apply(event);
        self.check_cluster();
        true
    }

    /// Steps until `done` holds or `duration` of virtual time has passed;
    /// whether `done` held. Stops early on a failure.
    pub fn run_until(&mut self, duration: Duration, mut done: impl FnMut(&Self) -> bool) -> bool {
        let end = self.now + duration;
        loop {
            if done(self) {
                return true;
            }
            if self.failure.is_some() || self.queue.peek_time().is_none_or(|t| t > end) {
                return false;
            }
            self.step();
        }
    }

    /// Steps through `duration` of virtual time.
    pub fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        self.run_until(duration, |_| false);
        self.now = self.now.max(end);
    }

    // ----- getters for tests and reports -----

    /// Virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The run's setup.
    pub fn setup(&self) -> &Setup {
        &self.setup
    }

    /// The first failure, if any.
    pub fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    /// The node running in `slot`, if any.
    pub fn node(&self, slot: Slot) -> Option<&Node> {
        self.nodes[slot].process.as_ref().map(|p| &p.node)
    }

    /// The slot of server `rank` (ranks as configured, before any restart).
    pub fn server_slot(&self, rank: u32) -> Slot {
        assert!(rank < self.setup.servers);
        1 + rank as Slot
    }

    /// The slot of worker `rank`.
    pub fn worker_slot(&self, rank: u32) -> Slot {
        assert!(rank < self.setup.workers);
        1 + self.setup.servers as Slot + rank as Slot
    }

    /// Node events of `slot` so far (with `record_events`).
    pub fn events_of(&self, slot: Slot) -> impl Iterator<Item = (Instant, &Event)> {
        self.log.iter().filter(move |(s, _, _)| *s == slot).map(|(_, at, e)| (*at, e))
    }

    /// Simulator events processed so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The trace's fingerprint so far.
    pub fn fingerprint(&self) -> u64 {
        self.trace.fingerprint()
    }

    /// Whether every registered node is ready and agrees with the
    /// scheduler's table.
    pub fn cluster_ready(&self) -> bool {
        self.cluster_whole()
    }

    // ----- the event loop -----

    fn apply(&mut self, event: SimEvent) {
        if let Some(slot) = event.slot() {
            if self.nodes[slot].paused_until.is_some() && self.nodes[slot].process.is_some() {
                if let SimEvent::Deliver(d) = &event {
                    self.record(Some(slot), deliver_what(d, Some(Dropped::Held)), None);
                }
                self.nodes[slot].hold(event);
                return;
            }
        }
        match event {
            SimEvent::Deliver(delivery) => self.deliver(delivery),
            SimEvent::NodeTimer { slot, generation } => self.fire_timer(slot, generation),
            SimEvent::HandlerDone { slot, life, request } => {
                if self.nodes[slot].life() == Some(life) {
                    self.answer_kv(slot, *request, true);
                    self.drain(slot);
                }
            }
            SimEvent::WorkloadStep { slot, generation } => self.workload_step(slot, generation),
            SimEvent::FaultTick => self.fault_tick(),
            SimEvent::Fault(action) => self.fault_action(action),
        }
    }

    fn deliver(&mut self, d: Delivery) {
        let dropped = if let Err(why) = self.net.arrival_check(d.from, d.to, d.link_epoch) {
            Some(why)
        } else {
            match self.nodes[d.to].life() {
                None => Some(Dropped::Crashed),
                Some(life) if life != d.to_life => Some(Dropped::Restarted),
                Some(_) => None,
            }
        };
        self.record(Some(d.to), deliver_what(&d, dropped), Some(&d.bytes));
        if dropped.is_some() {
            return;
        }
        let now = self.node_now(d.to);
        let process = self.nodes[d.to].process.as_mut().expect("checked above");
        let header = Header::decode(&d.bytes, u32::MAX).ok();
        let first = self.wire.received((d.to, process.life), header.as_ref(), d.bytes.len());
        let node = &process.node;
        if let Some(h) = header.as_ref().filter(|h| h.receiver == node.id() && node.phase() == Phase::Ready) {
            if self.prompt && h.receiver_incarnation == node.incarnation() {
                self.wire.delivered_to_ready(h);
            }
        }
        // A request part its server dropped (not ready yet, or the sender
        // is newer than its table) comes again only with resends, a resend
        // timeout later, or never: its request is bounded by its timeout.
        let request_frame = header.as_ref().filter(|h| h.kind == Kind::KvRequest).copied();
        let drops_before = drops(process.node.stats());
        let request_bytes = request_frame.map(|_| d.bytes.clone());
        let duplicates = process.node.stats().duplicates_dropped;
        if let Err(error) = process.node.handle_frame(now, d.bytes) {
            self.fail(FailureKind::Correctness, format!("codec: a frame from slot {} did not decode: {error}", d.from));
            return;
        }
        if let (Some(h), Some(bytes)) = (request_frame, request_bytes) {
            if drops(process.node.stats()) > drops_before {
                if let Ok(Message::KvRequest(m)) = Message::decode(&h, &bytes) {
                    let customer = CustomerId::new(m.app, m.customer);
                    let key = RequestKey { node: h.sender, incarnation: h.incarnation, customer, ts: Timestamp(m.ts) };
                    self.checker.request_part_lost(key);
                }
            }
        }
        let process = self.nodes[d.to].process.as_mut().expect("checked above");
        if first && process.node.stats().duplicates_dropped > duplicates {
            let h = header.expect("a first delivery has a header");
            let what = format!(
                "reliable: node {} (slot {}) dropped seq {} of {}@{} as a duplicate on its first delivery",
                process.node.id(),
                d.to,
                h.seq,
                h.sender,
                h.incarnation.0
            );
            self.fail(FailureKind::Correctness, what);
            return;
        }
        self.drain(d.to);
    }

    fn fire_timer(&mut self, slot: Slot, generation: u64) {
        if self.nodes[slot].timer_generation != generation || self.nodes[slot].process.is_none() {
            return;
        }
        self.nodes[slot].timer_at = None;
        let spin = &mut self.timer_spin[slot];
        if spin.0 == self.now {
            spin.1 += 1;
            if spin.1 > TIMER_SPIN_MAX {
                self.fail(
                    FailureKind::Liveness,
                    format!("timers: slot {slot} fired {TIMER_SPIN_MAX} times at one instant without moving on"),
                );
                return;
            }
        } else {
            *spin = (self.now, 1);
        }
        let now = self.node_now(slot);
        self.record(Some(slot), What::Timer, None);
        let process = self.nodes[slot].process.as_mut().expect("checked above");
        process.node.handle_timeout(now);
        self.drain(slot);
    }

    /// Drains `slot` by the core's contract: transmits and events until
    /// both are empty (handling an event may produce more), then the next
    /// timeout.
    pub(crate) fn drain(&mut self, slot: Slot) {
        for _ in 0..DRAIN_ROUNDS_MAX {
            let Some(process) = self.nodes[slot].process.as_mut() else {
                return;
            };
            let transmits: Vec<Transmit> = std::iter::from_fn(|| process.node.poll_transmit()).collect();
            let events: Vec<Event> = std::iter::from_fn(|| process.node.poll_event()).collect();
            if transmits.is_empty() && events.is_empty() {
                self.schedule_timer(slot);
                self.check_node(slot);
                return;
            }
            for transmit in transmits {
                self.transmit(slot, transmit);
            }
            for event in events {
                self.on_node_event(slot, event);
                if self.failure.is_some() {
                    return;
                }
            }
        }
        panic!("slot {slot} did not drain in {DRAIN_ROUNDS_MAX} rounds");
    }

    fn schedule_timer(&mut self, slot: Slot) {
        let sim_node = &mut self.nodes[slot];
        let Some(process) = sim_node.process.as_ref() else {
            return;
        };
        let next = process.node.poll_timeout().map(|local| sim_node.clock.to_global(local).max(self.now));
        if next == sim_node.timer_at {
            return;
        }
        sim_node.timer_generation += 1;
        sim_node.timer_at = next;
        if let Some(at) = next {
            let generation = sim_node.timer_generation;
            self.queue.push(at, SimEvent::NodeTimer { slot, generation });
        }
    }

    fn transmit(&mut self, from: Slot, transmit: Transmit) {
        let bytes = transmit.frame.to_bytes();
        let header = Header::decode(&bytes, u32::MAX).expect("nodes send frames that decode");
        let process = self.nodes[from].process.as_ref().expect("frames come from a running process");
        // (A forged request may come from a sender of any role, and be answered.)
        if let Some(what) = nonconforming(&process.node, &header).filter(|_| !self.forged) {
            let what = format!(
                "wire: node {} (slot {from}) sent {:?} to {}: {what}",
                process.node.id(),
                header.kind,
                header.receiver
            );
            self.fail(FailureKind::Correctness, what);
            return;
        }
        let sent = self.wire.sent((from, process.life), &header, bytes.len(), self.nodes[from].clock.to_node(self.now));
        let mut broken = None;
        if let Sent::Resend { attempt, since_last } = sent {
            // The schedule the configuration promises: the first resend
            // after resend_timeout, each later one after twice the delay
            // before it (up to the core's cap of 30 s), and no more than
            // resend_attempts_max of them.
            let config = process.node.config();
            let doubled = config.resend_timeout.saturating_mul(1 << (attempt - 1).min(16));
            let gap = doubled.min(RESEND_DELAY_MAX);
            if attempt > config.resend_attempts_max || since_last < gap {
                broken = Some(format!(
                    "reliable: node {} (slot {from}) resent seq {} to {} for the {attempt}th time {since_last:?} \
                     after the last, against a schedule of at least {gap:?} and {} attempts",
                    process.node.id(),
                    header.seq,
                    header.receiver,
                    config.resend_attempts_max
                ));
            }
        }
        let resent = matches!(sent, Sent::Resend { .. });
        if resent && self.prompt && self.wire.was_delivered_to_ready(&header) {
            broken = Some(format!(
                "reliable: node {} (slot {from}) resent seq {} to {}, which got it promptly and ACKs at once",
                process.node.id(),
                header.seq,
                header.receiver,
            ));
        }
        if resent {
            // A request's frames are resent only while it waits for its
            // outcome: once it has one, a late copy could only do harm
            // (reach a replacement of its server and be applied again).
            let request = match Message::decode(&header, &bytes) {
                Ok(Message::KvRequest(m)) => Some((CustomerId::new(m.app, m.customer), Timestamp(m.ts))),
                Ok(Message::SimpleRequest(m)) => Some((CustomerId::new(m.app, m.customer), Timestamp(m.ts))),
                _ => None,
            };
            if let Some((customer, ts)) = request.filter(|&(c, t)| !process.node.is_pending(c, t)) {
                broken = Some(format!(
                    "reliable: node {} (slot {from}) resent a frame of request app {} ts {} after it ended",
                    process.node.id(),
                    customer.app,
                    ts.0
                ));
            }
        }
        // A resend goes only where the frame may still be awaited, and a
        // request or an answer only to a process that may still take it:
        // what was kept for (or owed to) a dead or replaced incarnation is
        // gone. (The scheduler does tell a node declared dead so, in case it
        // lives on. A forged table can drop an id and bring it back as new,
        // which no scheduler's table does: then nothing told of a death.)
        let data =
            matches!(header.kind, Kind::KvRequest | Kind::KvResponse | Kind::SimpleRequest | Kind::SimpleResponse);
        let gone = header.seq != 0
            && (resent || data)
            && !self.forged
            && process.node.membership().get(header.receiver).is_some_and(|e| {
                e.incarnation > header.receiver_incarnation
                    || (e.incarnation == header.receiver_incarnation && !e.alive)
            });
        if gone {
            let how = if resent { "resent" } else { "sent" };
            broken = Some(format!(
                "reliable: node {} (slot {from}) {how} seq {} to {}@{}, which it knows is dead or replaced",
                process.node.id(),
                header.seq,
                header.receiver,
                header.receiver_incarnation.0
            ));
        }
        if let Some(what) = broken {
            self.fail(FailureKind::Correctness, what);
        }
        let bytes = self.maybe_corrupt(from, &header, bytes);
        let Some(to) = self.slot_of(transmit.addr) else {
            // Only a forged table can name an address no slot has.
            assert!(self.forged, "slot {from} sent to {}, which is no node's address", transmit.addr);
            let header = header_of(&bytes);
            self.record(Some(from), What::SendDropped { to: Slot::MAX, header, why: Dropped::NoSuchAddress }, None);
            return;
        };
        self.send_frame(from, to, bytes);
    }

    /// Hands `bytes` to the network from `from` to the process now running
    /// in `to`, and schedules its arrival (or records its loss).
    pub(crate) fn send_frame(&mut self, from: Slot, to: Slot, bytes: Bytes) {
        let to_life = self.nodes[to].life().unwrap_or(u32::MAX);
        match self.net.send(self.now, from, to) {
            Ok(arrival) => {
                if let Some(at) = arrival.duplicate_at {
                    let copy = Delivery {
                        from,
                        to,
                        to_life,
                        link_epoch: arrival.link_epoch,
                        bytes: bytes.clone(),
                        duplicate: true,
                    };
                    self.queue.push(at, SimEvent::Deliver(copy));
                }
                let delivery = Delivery { from, to, to_life, link_epoch: arrival.link_epoch, bytes, duplicate: false };
                self.queue.push(arrival.at, SimEvent::Deliver(delivery));
            }
            Err(why) => {
                let header = header_of(&bytes);
                self.record(Some(from), What::SendDropped { to, header, why }, None);
            }
        }
    }

    fn on_node_event(&mut self, slot: Slot, event: Event) {
        if self.setup.record_events {
            self.log.push((slot, self.now, event.clone()));
        }
        let request_id = match &event {
            Event::ServerRequest(r) => Some(r.id),
            Event::SimpleRequest(r) => Some(r.id),
            _ => None,
        };
        if let (Some(id), Some(process)) = (request_id, self.nodes[slot].process.as_ref()) {
            // A request is named after the incarnation that sent it (the
            // answer goes to that process, and to no successor of it).
            let node = &process.node;
            let sender = if id.from == node.id() {
                Some(node.incarnation())
            } else if id.from == NodeId::SCHEDULER {
                Some(Incarnation(0))
            } else {
                node.membership().get(id.from).map(|e| e.incarnation)
            };
            if sender != Some(id.incarnation) && !self.forged {
                let what = format!(
                    "requests: node {} (slot {slot}) names a request of {} after incarnation {}, its sender is {sender:?}",
                    node.id(),
                    id.from,
                    id.incarnation.0
                );
                self.fail(FailureKind::Correctness, what);
                return;
            }
        }
        match event {
            Event::Registered { id, incarnation, .. } => {
                self.record(Some(slot), What::Node(Note::Registered(id, incarnation)), None);
                let worker = self.nodes[slot].role == Role::Worker;
                let process = self.nodes[slot].process.as_mut().expect("events come from a running process");
                process.identity = Some((id, incarnation));
                if id.role() == Some(Role::Server) {
                    let store = StoreId { slot, life: process.life };
                    self.checker.server_started(id, incarnation, store, self.now);
                }
                if worker {
                    let start = process.node.next_barrier_generation(pslite_core::Group::WORKERS);
                    let index = self.worker_index(slot);
                    let (skipped, owed) = self.workers[index].resume(start);
                    if skipped > 0 || owed > 0 {
                        let note = Note::Resumed { generation: start, skipped, owed };
                        self.record(Some(slot), What::Node(note), None);
                    }
                }
            }
            Event::ClusterReady => {
                self.record(Some(slot), What::Node(Note::ClusterReady), None);
                if self.nodes[slot].role == Role::Worker {
                    self.schedule_step(slot, Duration::ZERO);
                }
            }
            Event::ServerRequest(request) => {
                let note = Note::ServerRequest { from: request.id.from, ts: request.id.ts.0, op: op_name(&request) };
                self.record(Some(slot), What::Node(note), None);
                if !self.nodes[slot].serving {
                    return;
                }
                let p = self.setup.plan.slow_handle_probability;
                if p > 0.0 && self.handler_rng.chance(p) {
                    let delay =
                        Duration::from_micros(1) + self.handler_rng.jitter(self.setup.plan.slow_handle_delay_max);
                    let life = self.nodes[slot].life().expect("running");
                    let event = SimEvent::HandlerDone { slot, life, request: Box::new(request) };
                    self.queue.push(self.now + delay, event);
                } else {
                    self.answer_kv(slot, request, false);
                }
            }
            Event::SimpleRequest(request) if !self.nodes[slot].serving => {
                let note = Note::SimpleRequest { from: request.id.from, ts: request.id.ts.0 };
                self.record(Some(slot), What::Node(note), None);
            }
            Event::SimpleRequest(request) => self.answer_simple(slot, request),
            Event::Install { app, state, pushes } => self.install(slot, app, state, pushes),
            Event::Export { ticket, app, keys, keys_max, bytes_max } => {
                self.export(slot, ticket, app, keys, keys_max, bytes_max)
            }
            Event::Forget { range } => {
                let process = self.nodes[slot].process.as_mut().expect("running");
                let store_id = StoreId { slot, life: process.life };
                for (&app, store) in &mut process.stores {
                    store.forget_range(range);
                    self.checker.range_forgotten(store_id, app, range);
                }
            }
            Event::NodeDead { id, incarnation } => {
                self.record(Some(slot), What::Node(Note::NodeDead(id, incarnation)), None);
                if slot == SCHEDULER_SLOT {
                    self.checker.node_declared_dead(self.now, id, incarnation);
                }
            }
            Event::NodeRecovered { id, incarnation } => {
                self.record(Some(slot), What::Node(Note::NodeRecovered(id, incarnation)), None);
                if slot == SCHEDULER_SLOT {
                    self.checker.node_recovered(self.now, id, incarnation);
                }
            }
            Event::Terminated => self.record(Some(slot), What::Node(Note::Terminated), None),
            Event::BarrierReleased { ticket, missing } => self.barrier_ended(slot, ticket, Ok(missing)),
            Event::BarrierFailed(ticket, error) => self.barrier_ended(slot, ticket, Err(error)),
            Event::RegistrationFailed { scheduler } => {
                let what = format!("registration: slot {slot} found no scheduler at {scheduler}");
                self.fail(FailureKind::Liveness, what);
            }
            Event::RequestDone { customer, ts } => {
                self.record(Some(slot), What::Node(Note::Done { app: customer.app, ts: ts.0 }), None);
                self.request_ended(slot, customer, ts, Ended::Done);
            }
            Event::PullDone { customer, ts, keys, values, lens } => {
                self.record(Some(slot), What::Node(Note::Done { app: customer.app, ts: ts.0 }), None);
                if self.unmodelled_request(slot, customer, ts) {
                    return;
                }
                let keys = keys.to_vec();
                let Some(values) = values.to_vec::<f32>().filter(|v| v.len() == keys.len() && lens.is_none()) else {
                    let what = format!("pulls: worker slot {slot} ts {} got values that are not one f32 per key", ts.0);
                    self.fail(FailureKind::Correctness, what);
                    return;
                };
                self.request_ended(slot, customer, ts, Ended::Pulled(keys, values));
            }
            Event::SimpleDone { customer, ts, replies } => {
                self.record(Some(slot), What::Node(Note::Done { app: customer.app, ts: ts.0 }), None);
                self.request_ended(slot, customer, ts, Ended::Simple(replies));
            }
            Event::RequestFailed { customer, ts, error } => {
                let note = Note::Failed { app: customer.app, ts: ts.0, error: error.clone() };
                self.record(Some(slot), What::Node(note), None);
                if self.setup.strict {
                    let what = format!(
                        "strict: slot {slot} request app {} ts {} failed without a fault: {error}",
                        customer.app, ts.0
                    );
                    self.fail(FailureKind::Correctness, what);
                }
                self.request_ended(slot, customer, ts, Ended::Failed(error));
            }
        }
    }

    /// Runs the server handle on `request` and answers it.
    pub(crate) fn answer_kv(&mut self, slot: Slot, request: ServerRequest, delayed: bool) {
        let now = self.node_now(slot);
        let process = self.nodes[slot].process.as_mut().expect("running");
        let store_id = StoreId { slot, life: process.life };
        let (server, _) = process.identity.expect("servers get requests only once registered");
        let app = request.id.customer.app;
        let store = process.stores.entry(app).or_default();
        let response = store.handle(&request);
        // With several copies, a push's answer takes its keys' state down
        // the chain, as the io shell does.
        let replicated = self.setup.replicas > 1;
        let state = (replicated && request.op.pushes()).then(|| store.export(&request.keys));
        let key = RequestKey::from(request.id);
        let part = self.checker.part_range(request.id.part);
        let mut check: Check = Ok(());
        // A request made by hand is outside the model: the store that
        // applies it no longer holds the model's sums.
        let modelled = !self.hand_driven || self.checker.knows_request(key);
        if !modelled && request.op.pushes() {
            self.stores_unmodelled.insert(store_id);
        }
        if modelled && matches!(response, Response::Ok { .. }) {
            if request.op.pushes() {
                let values = request.values.to_vec::<f32>().unwrap_or_default();
                check = self.checker.push_applied(store_id, server, key, part, &request.keys.to_vec(), &values);
            }
            if check.is_ok() && request.op.pulls() {
                check = self.checker.pull_served(store_id, server, key, part);
            }
        }
        if check.is_ok() && !self.stores_unmodelled.contains(&store_id) {
            check = self.checker.check_store(store_id, app, store, &self.setup.workload.keys);
        }
        let answered = process.node.respond_with_state(now, request.id, response, state);
        let note = Note::Answered { from: request.id.from, ts: request.id.ts.0, delayed };
        self.record(Some(slot), What::Node(note), None);
        if let Err(error) = answered {
            // Each request the node surfaced is answered once, so nothing
            // here is the handle's fault: an answer for a requester that
            // died or was replaced meanwhile, or for a stopped node, is
            // dropped without an error.
            self.record(Some(slot), What::Node(Note::Rejected { op: "respond", error: error.clone() }), None);
            if check.is_ok() {
                check = Err(Violation { what: format!("respond: server slot {slot} refused its own answer: {error}") });
            }
        }
        self.report(check);
    }

    /// A replicated range's state reached a copy: the store installs it,
    /// and from then on holds the pushes it names, each exactly once.
    fn install(&mut self, slot: Slot, app: u32, state: KvList, pushes: Vec<ServerRequestId>) {
        let process = self.nodes[slot].process.as_mut().expect("running");
        let store_id = StoreId { slot, life: process.life };
        let (server, _) = process.identity.expect("servers install only once registered");
        if self.forged {
            // A forged batch may carry anything: this store is the test's.
            self.stores_unmodelled.insert(store_id);
        }
        let store = process.stores.entry(app).or_default();
        let forged = self.forged;
        let mut check = match store.install(&state) {
            Ok(()) => Ok(()),
            // A made-up state may not fit the store; a refusal is right.
            Err(_) if forged => Ok(()),
            Err(error) => {
                Err(Violation { what: format!("replication: {store_id} could not install a state: {error}") })
            }
        };
        if pushes.is_empty() && check.is_ok() && !self.forged {
            // A chunk of a transfer: it holds the keys as the tail's store
            // did when read.
            check = self.checker.chunk_installed(store_id, server, app, &state);
        }
        let installed: Vec<u64> = state.keys.iter().collect();
        for id in &pushes {
            let modelled = !self.forged && (!self.hand_driven || self.checker.knows_request(RequestKey::from(*id)));
            if check.is_ok() && modelled {
                check = self.checker.push_installed(store_id, server, RequestKey::from(*id), id.part, &installed);
            }
        }
        if check.is_ok() && !self.stores_unmodelled.contains(&store_id) {
            check = self.checker.check_store(store_id, app, store, &self.setup.workload.keys);
        }
        self.report(check);
    }

    /// A server's store is read for a transfer, in the node's order, as
    /// the shells do; the checker notes what the chunk holds.
    fn export(
        &mut self,
        slot: Slot,
        ticket: pslite_core::ExportTicket,
        app: u32,
        keys: pslite_core::KeyRange,
        keys_max: usize,
        bytes_max: usize,
    ) {
        let now = self.node_now(slot);
        let process = self.nodes[slot].process.as_mut().expect("running");
        let store_id = StoreId { slot, life: process.life };
        let state = process.stores.entry(app).or_default().export_range(keys, keys_max, bytes_max);
        if !self.forged {
            self.checker.chunk_read(store_id, app, &state);
        }
        if let Err(error) = process.node.exported(now, ticket, Some(state)) {
            self.fail(FailureKind::Correctness, format!("replication: slot {slot} refused its own chunk: {error}"));
        }
    }

    /// Every node echoes SimpleApp requests: same head, same body.
    fn answer_simple(&mut self, slot: Slot, request: SimpleRequest) {
        self.record(Some(slot), What::Node(Note::SimpleRequest { from: request.id.from, ts: request.id.ts.0 }), None);
        let now = self.node_now(slot);
        let process = self.nodes[slot].process.as_mut().expect("running");
        let id = process.node.id();
        self.checker.request_answered(RequestKey::from(request.id), id);
        if let Err(error) = process.node.simple_respond(now, request.id, request.head, request.body) {
            self.fail(FailureKind::Correctness, format!("simple: slot {slot} could not answer a request: {error}"));
        }
    }

    // ----- checks -----

    /// Per-node checks, after the node drained.
    fn check_node(&mut self, slot: Slot) {
        let Some(process) = self.nodes[slot].process.as_mut() else {
            return;
        };
        let node = &process.node;
        let id = node.id();
        if node.stats().decode_errors > 0 {
            let what =
                format!("codec: node {id} (slot {slot}) failed to decode {} honest frames", node.stats().decode_errors);
            self.fail(FailureKind::Correctness, what);
            return;
        }
        let mut check = self.checker.check_ranges(id, node.server_ranges());
        if check.is_ok() {
            check = self.wire.check_stats((slot, process.life), id, node.stats());
        }
        // One duplicate filter and one send stream per peer id at most, its
        // current incarnation's (and the scheduler's): a dead or replaced
        // incarnation's go with it. (A forged table may leave peers out.)
        let peers_max = node.membership().iter().count() + 1;
        let per_peer = [("duplicate filters", node.dedup_windows()), ("send streams", node.send_streams())];
        if let Some((what, n)) = per_peer.into_iter().find(|&(_, n)| n > peers_max).filter(|_| !self.forged) {
            check = check.and(Err(Violation {
                what: format!("reliable: node {id} (slot {slot}) keeps {n} {what} for {peers_max} peers"),
            }));
        }

        // A node its own table calls dead or replaced stops at once: a new
        // process may do its work already, so anything it did would be a
        // zombie's (the supervisor would only replace it later).
        let own = node.membership().get(id).filter(|_| node.phase() == Phase::Ready);
        let mine = node.incarnation();
        if let Some(entry) = own.filter(|e| e.incarnation > mine || (e.incarnation == mine && !e.alive)) {
            check = check.and(Err(Violation {
                what: format!(
                    "membership: node {id}@{} (slot {slot}) runs on after its table gave its id to {}@{} ({})",
                    mine.0,
                    id,
                    entry.incarnation.0,
                    if entry.alive { "alive" } else { "dead" }
                ),
            }));
        }
        // A stopped node holds nothing from the moment it stops (what it
        // held failed, or is dropped), not only at the end of the run: a
        // process that stopped on its own is replaced before then.
        if check.is_ok() && node.phase() == Phase::Terminated {
            check = held_after_termination(node, slot);
        }

        let epoch = node.membership().epoch();
        // A forged table is the test's own; only the scheduler's are checked.
        if check.is_ok() && epoch < process.epoch_checked && !self.forged {
            // Membership (and with it the replica table) never rolls back.
            check = Err(Violation {
                what: format!(
                    "membership: node {id} (slot {slot}) went back from epoch {} to {epoch}",
                    process.epoch_checked
                ),
            });
        }
        if check.is_ok() && epoch != process.epoch_checked && epoch > 0 && !self.forged {
            process.epoch_checked = epoch;
            let entries: Vec<_> = node.membership().iter().copied().collect();
            check = self.checker.check_table(self.now, id, epoch, entries, node.membership().chains());
        }
        self.report(check);
    }

    /// At the end of a run every node has terminated with nothing left
    /// over: no request of its own waiting, none to answer, no barrier
    /// open.
    fn check_finished(&mut self) {
        for (slot, n) in self.nodes.iter().enumerate() {
            let Some(node) = n.process.as_ref().map(|p| &p.node) else {
                continue;
            };
            if let Err(Violation { what }) = held_after_termination(node, slot) {
                self.fail(FailureKind::Correctness, what);
                return;
            }
        }
    }

    /// Cluster-wide checks, after every event.
    fn check_cluster(&mut self) {
        if self.failure.is_some() {
            return;
        }
        let mut live: Vec<(NodeId, Incarnation)> = self
            .nodes
            .iter()
            .filter_map(|n| n.process.as_ref())
            .filter(|p| p.node.phase() != Phase::Terminated)
            .filter_map(|p| p.identity)
            .collect();
        let check = self.checker.check_identities(&mut live).and_then(|()| self.checker.check_deadlines(self.now));
        self.report(check);
    }

    pub(crate) fn report(&mut self, check: Check) {
        if let Err(Violation { what }) = check {
            self.fail(FailureKind::Correctness, what);
        }
    }

    pub(crate) fn fail(&mut self, kind: FailureKind, what: String) {
        if self.failure.is_none() {
            self.failure = Some(Failure { kind, what, at: self.now, event: self.events });
        }
    }

    // ----- helpers -----

    /// The time `slot`'s node reads now.
    pub(crate) fn node_now(&self, slot: Slot) -> Instant {
        self.nodes[slot].clock.to_node(self.now)
    }

    pub(crate) fn record(&mut self, slot: Option<Slot>, what: What, frame: Option<&[u8]>) {
        self.count(slot, &what);
        let entry = Entry { event: self.events, at: self.now, slot, what };
        self.trace.record(entry, frame);
    }

    fn count(&mut self, slot: Option<Slot>, what: &What) {
        let stats = &mut self.stats;
        match what {
            What::Crash => stats.crashes += 1,
            What::Restart if self.nodes[slot.expect("restarts name a slot")].lives > 1 => stats.restarts += 1,
            What::Pause { .. } => stats.pauses += 1,
            What::Partition { .. } => stats.partitions += 1,
            What::Clog { .. } => stats.clogs += 1,
            What::Reset { .. } => stats.resets += 1,
            What::Deliver { dropped: None, .. } => stats.frames_delivered += 1,
            What::Deliver { dropped: Some(Dropped::Held), .. } => {}
            What::Deliver { .. } | What::SendDropped { .. } => stats.frames_dropped += 1,
            What::Node(Note::Issued { .. }) => stats.requests_issued += 1,
            What::Node(Note::Done { .. }) => stats.requests_done += 1,
            What::Node(Note::Failed { .. }) => stats.requests_failed += 1,
            What::Node(Note::BarrierReleased { .. }) => stats.barriers_released += 1,
            What::Node(Note::BarrierFailed { .. }) => stats.barriers_failed += 1,
            What::Node(Note::NodeDead(..)) if slot == Some(SCHEDULER_SLOT) => stats.deaths_declared += 1,
            _ => {}
        }
    }

    /// Starts a fresh process in `slot` with a seed of its own.
    pub(crate) fn start_process(&mut self, slot: Slot) {
        if self.nodes[slot].process.is_some() {
            return;
        }
        let life = self.nodes[slot].lives;
        let seed = Rng::derive_seed(self.node_seed, ((slot as u64) << 32) | u64::from(life));
        self.nodes[slot].start(seed, self.now);
        self.record(Some(slot), What::Restart, None);
        self.drain(slot);
    }

    fn slot_of(&self, target: SocketAddr) -> Option<Slot> {
        let SocketAddr::V4(v4) = target else {
            return None;
        };
        let [_, _, high, low] = v4.ip().octets();
        let slot = usize::from(high) * 250 + usize::from(low).checked_sub(1)?;
        (slot < self.nodes.len() && addr(slot) == target).then_some(slot)
    }

    fn outcome(&self) -> Outcome {
        let mut context = String::new();
        if self.failure.is_some() {
            context.push_str(&self.setup.describe());
            context.push('\n');
            if !self.setup.trace_all {
                context.push_str(&format!("last {} trace entries:\n", self.trace.last().count()));
                for entry in self.trace.last() {
                    context.push_str(&format!("{entry}\n"));
                }
            }
            if let Some(reason) = self.pending() {
                context.push_str(&format!("pending: {reason}\n"));
            }
        }
        let reproduce = match self.setup.swarm {
            Some(options) => reproduce_command(self.setup.seed, options),
            None => format!("rerun this hand-written setup (seed {:#018x})", self.setup.seed),
        };
        Outcome {
            seed: self.setup.seed,
            failure: self.failure.clone(),
            fingerprint: self.trace.fingerprint(),
            events: self.events,
            virtual_time: self.now,
            stats: self.stats,
            context,
            reproduce,
        }
    }
}

/// What is wrong with a frame `node` sent with `header`, if anything: who
/// sends which message to whom is part of the protocol, and so is the
/// absence of sequence numbers and ACKs when resends are off.
fn nonconforming(node: &Node, header: &Header) -> Option<&'static str> {
    use pslite_core::wire::Kind;
    let me = node.id();
    let role = node.role();
    let config = node.config();
    if header.receiver == me && me != NodeId::UNASSIGNED {
        return Some("a message to itself, which the loopback handles");
    }
    if !config.resend && (header.seq != 0 || header.kind == Kind::Ack) {
        return Some("sequenced or acknowledged with resends off");
    }
    let to = header.receiver.role();
    let ok = match header.kind {
        Kind::Register | Kind::Heartbeat | Kind::Barrier => header.receiver == NodeId::SCHEDULER,
        Kind::NodeTable | Kind::BarrierRelease | Kind::HeartbeatAck | Kind::Terminate => role == Role::Scheduler,
        Kind::KvRequest => role == Role::Worker && to == Some(Role::Server),
        Kind::KvResponse => role == Role::Server && to == Some(Role::Worker),
        _ => true,
    };
    (!ok).then_some("not a message its role sends to that receiver")
}

/// The checker's time limits for `setup`, whose nodes run `config`.
fn bounds_for(setup: &Setup, config: &pslite_core::Config) -> Bounds {
    // A node's own timers run at its clock's rate: a thousandth covers any
    // drift the swarm draws (at most a few hundred parts per million).
    let drift_slack = config.request_timeout / 1000;
    let detection = config.failure_detection_bound();
    let slack = Duration::from_millis(2);
    Bounds {
        request: config.request_timeout + drift_slack + slack,
        // Detection (the last heartbeat may arrive one delay after the
        // crash, then heartbeat_timeout, then up to one scan interval), and
        // one more delay for the table that announces it.
        // With several copies, a part sent again to the new head goes down
        // the chain and its commit comes back: two more delays per copy.
        // A part sent again also waits for the new server's handle, which
        // a slow-handle plan delays.
        crash: detection
            + (2 + 2 * u32::from(setup.replicas)) * setup.plan.delay_max()
            + if setup.replicas > 1 { 2 * setup.plan.slow_handle_delay_max } else { Duration::ZERO }
            + slack,
        crash_checked: !setup.plan.loses_frames(),
        resend: config.resend_timeout + config.resend_timeout / 4,
        recovery: config.recovery_timeout,
        barrier_policy: setup.barrier_policy,
        lost_scan: config.heartbeat_interval + slack,
        lost_after: detection + config.heartbeat_interval + slack,
        scheduler_slot: SCHEDULER_SLOT,
    }
}

/// A clock with an offset and a rate error within the plan's limits.
fn random_clock(rng: &mut Rng, plan: &crate::faults::FaultPlan) -> Clock {
    let ppm = i64::from(plan.clock_drift_ppm_max);
    Clock { offset: rng.jitter(plan.clock_offset_max), drift_ppm: (rng.below(2 * ppm as u64 + 1) as i64 - ppm) as i32 }
}

/// How a worker's request ended, as the sim hands it to the worker logic.
#[derive(Debug)]
pub(crate) enum Ended {
    Done,
    Pulled(Vec<u64>, Vec<f32>),
    Simple(Vec<pslite_core::SimpleReply>),
    Failed(pslite_core::RequestError),
}

impl Ended {
    pub(crate) fn completion(&self) -> Completion<'_> {
        match self {
            Self::Done => Completion::Done,
            Self::Pulled(keys, values) => Completion::Pulled { keys, values },
            Self::Simple(_) => Completion::SimpleDone,
            Self::Failed(error) => Completion::Failed(error),
        }
    }
}

fn op_name(request: &ServerRequest) -> &'static str {
    match request.op {
        pslite_core::KvOp::Push => "push",
        pslite_core::KvOp::Pull => "pull",
        pslite_core::KvOp::PushPull => "push_pull",
    }
}

pub(crate) fn header_of(bytes: &Bytes) -> [u8; pslite_core::wire::HEADER_LEN] {
    let mut header = [0u8; pslite_core::wire::HEADER_LEN];
    let n = bytes.len().min(header.len());
    header[..n].copy_from_slice(&bytes[..n]);
    header
}

pub(crate) fn deliver_what(d: &Delivery, dropped: Option<Dropped>) -> What {
    What::Deliver {
        from: d.from,
        header: header_of(&d.bytes),
        len: d.bytes.len() as u32,
        dropped,
        duplicate: d.duplicate,
    }
}

/// Frames a node dropped without handling them, over every reason.
fn drops(stats: &pslite_core::Stats) -> u64 {
    stats.unknown_sender_drops
        + stats.unexpected_drops
        + stats.stale_incarnation_drops
        + stats.stale_receiver_drops
        + stats.misrouted_drops
        + stats.dead_sender_drops
}

/// A terminated node must hold no request of its own, none to answer and
/// no open barrier.
fn held_after_termination(node: &Node, slot: Slot) -> Check {
    let left = (node.requests_pending(), node.responses_pending(), node.barriers_pending());
    if left == (0, 0, 0) {
        return Ok(());
    }
    Err(Violation {
        what: format!(
            "stopped: node {} (slot {slot}) terminated with {} requests pending, {} to answer, {} barriers open",
            node.id(),
            left.0,
            left.1,
            left.2
        ),
    })
}
