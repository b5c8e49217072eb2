//! A worker running its script: issuing operations, waiting for them, and
//! telling the checker about each.
//!
//! The script belongs to the slot, not the process: a worker that crashes
//! and restarts goes on from where its predecessor stopped, as a restarted
//! training job would, and whatever the predecessor had in flight is lost
//! (its fate unknown to everyone, which the checker allows for).

use std::collections::BTreeMap;

use bytes::Bytes;
use pslite_core::{
    BarrierTicket, CustomerId, DType, Duration, Group, Instant, Keys, NodeId, Phase, RequestError, Rng, Target,
    Timestamp, Values,
};

use crate::checker::{Issued, RequestKey};
use crate::queue::{SimEvent, Slot};
use crate::replay::FailureKind;
use crate::sim::{Ended, Sim};
use crate::trace::{Note, What};
use crate::workload::{owners, Op, Script, SimpleTarget};

/// The application id of SimpleApp requests, apart from the KV apps.
pub const SIMPLE_APP: u32 = 100;

/// A request in flight, with what its answer must look like.
#[derive(Clone, Debug)]
pub(crate) enum Outstanding {
    Kv,
    Simple { head: i32, body: Bytes, targets: Vec<NodeId> },
}

/// One worker slot's progress through its script.
#[derive(Debug)]
pub(crate) struct WorkerRun {
    pub(crate) script: Script,
    /// Index of the next operation.
    pub(crate) next: usize,
    pub(crate) outstanding: BTreeMap<(CustomerId, Timestamp), Outstanding>,
    pub(crate) barrier: Option<BarrierTicket>,
    /// The cluster's generation the script's next barrier operation stands
    /// for (the slot's, carried across processes).
    script_generation: u64,
    /// The generation the current process's next barrier takes. Ahead of
    /// the script, the script's barriers up to it are passed over (the
    /// cluster finished them without this slot); behind it, the process
    /// enters barriers again before the script goes on (its predecessor
    /// was in them, and a predecessor's arrival does not count for its
    /// replacement). Either way each member has as many barriers left as
    /// the others.
    process_generation: u64,
    step_generation: u64,
    step_at: Option<Instant>,
    /// No operation is issued before this: the worker is thinking.
    think_until: Instant,
    rng: Rng,
}

impl WorkerRun {
    pub(crate) fn new(script: Script, seed: u64) -> Self {
        Self {
            script,
            next: 0,
            outstanding: BTreeMap::new(),
            barrier: None,
            script_generation: 0,
            process_generation: 0,
            step_generation: 0,
            step_at: None,
            think_until: Instant::ZERO,
            rng: Rng::new(seed),
        }
    }

    /// Whether every operation was issued and has ended.
    pub(crate) fn done(&self) -> bool {
        self.next == self.script.ops.len()
            && self.outstanding.is_empty()
            && self.barrier.is_none()
            && self.process_generation >= self.script_generation
    }

    /// A new process took the slot, its next barrier at `start` (where the
    /// scheduler says the cluster is). Returns how many of the script's
    /// barriers it will pass over and how many it will enter again.
    pub(crate) fn resume(&mut self, start: u64) -> (u64, u64) {
        self.process_generation = start;
        (start.saturating_sub(self.script_generation), self.script_generation.saturating_sub(start))
    }

    /// Forgets what the crashed process had in flight.
    pub(crate) fn process_lost(&mut self) {
        self.outstanding.clear();
        self.barrier = None;
        self.step_generation += 1;
        self.step_at = None;
    }
}

impl Sim {
    pub(crate) fn worker_index(&self, slot: Slot) -> usize {
        let first = 1 + self.setup.servers as usize;
        assert!(slot >= first && slot < first + self.workers.len(), "slot {slot} is no worker");
        slot - first
    }

    /// Runs the worker's script in `slot` after `delay` (and not while it
    /// thinks), unless a step is already due sooner.
    pub(crate) fn schedule_step(&mut self, slot: Slot, delay: Duration) {
        let index = self.worker_index(slot);
        let run = &mut self.workers[index];
        let at = (self.now + delay).max(run.think_until);
        if run.step_at.is_some_and(|due| due <= at) {
            return;
        }
        run.step_generation += 1;
        run.step_at = Some(at);
        let generation = run.step_generation;
        self.queue.push(at, SimEvent::WorkloadStep { slot, generation });
    }

    /// Issues the script's next operations, as far as the window and
    /// barriers allow.
    pub(crate) fn workload_step(&mut self, slot: Slot, generation: u64) {
        let index = self.worker_index(slot);
        if self.workers[index].step_generation != generation {
            return;
        }
        self.workers[index].step_at = None;
        let ready = self.nodes[slot]
            .process
            .as_ref()
            .is_some_and(|p| p.node.phase() == Phase::Ready && p.identity.is_some() && !p.finalize_called);
        if !ready {
            return;
        }
        let window = self.workers[index].script.window;
        loop {
            let run = &self.workers[index];
            if run.barrier.is_some() {
                return;
            }
            if run.process_generation < run.script_generation {
                if run.outstanding.is_empty() {
                    let _ = self.enter_barrier(slot);
                }
                return;
            }
            if run.next == run.script.ops.len() {
                return;
            }
            let op = run.script.ops[run.next].clone();
            if op == Op::Barrier && run.process_generation > run.script_generation {
                let run = &mut self.workers[index];
                run.script_generation += 1;
                run.next += 1;
                continue;
            }
            if op == Op::Barrier {
                if run.outstanding.is_empty() {
                    self.workers[index].next += 1;
                    self.workers[index].script_generation += 1;
                    // A refused barrier (the node is shutting down) is
                    // part of the run: the script moves on.
                    let _ = self.enter_barrier(slot);
                }
                return;
            }
            if run.outstanding.len() >= window {
                return;
            }
            self.workers[index].next += 1;
            // A refused operation (a target known dead, the scheduler
            // lost) is part of the run: the script moves on.
            let _ = self.issue(slot, &op);
            if self.failure.is_some() {
                return;
            }
            let run = &mut self.workers[index];
            let think = run.rng.jitter(run.script.think_max);
            if !think.is_zero() {
                run.think_until = self.now + think;
                self.schedule_step(slot, think);
                return;
            }
        }
    }

    /// Issues `op` from the worker in `slot` and tells the checker.
    /// Scenario tests call this directly.
    pub fn issue(&mut self, slot: Slot, op: &Op) -> Result<(CustomerId, Timestamp), RequestError> {
        let index = self.worker_index(slot);
        let now = self.node_now(slot);
        let ranges = self.ranges.clone();
        let process = self.nodes[slot].process.as_mut().ok_or(RequestError::Terminated)?;
        let (id, incarnation) = process.identity.ok_or(RequestError::ApiMisuse(pslite_core::ApiMisuse::NotReady))?;
        let node = &mut process.node;
        let pending_before = node.requests_pending();
        // Where the node's own table sends each part: with several copies
        // the head of each range for pushes and its tail for pulls.
        let replicated = node.config().replicas > 1;
        let targets_of = |keys: &[u64], pushes: bool| -> Vec<NodeId> {
            if !replicated {
                return owners(&ranges, keys);
            }
            let chains = node.membership().chains().as_slice();
            let mut ids: Vec<NodeId> = keys
                .iter()
                .filter_map(|&k| chains.get(ranges.owner(k).0 as usize))
                .filter_map(|chain| if pushes { chain.head() } else { chain.tail() })
                .map(NodeId::server)
                .collect();
            ids.sort();
            ids.dedup();
            ids
        };
        let (push_targets, pull_targets) = match op {
            Op::Push { keys, .. } | Op::PushPull { keys, .. } => (targets_of(keys, true), Vec::new()),
            Op::Pull { keys, .. } => (Vec::new(), targets_of(keys, false)),
            _ => (Vec::new(), Vec::new()),
        };
        let (name, customer, result, issued, targets, outstanding) = match op {
            Op::Push { app, keys, values } | Op::PushPull { app, keys, values } => {
                let customer = CustomerId::new(*app, 0);
                let push_pull = matches!(op, Op::PushPull { .. });
                let (k, v) = (Keys::from_slice(keys), Values::from_slice(values));
                let result = if push_pull {
                    node.push_pull(now, customer, 0, k, v, None)
                } else {
                    node.push(now, customer, 0, k, v, None)
                };
                let issued = if push_pull {
                    Issued::PushPull { keys: keys.clone(), values: values.clone() }
                } else {
                    Issued::Push { keys: keys.clone(), values: values.clone() }
                };
                let name = if push_pull { "push_pull" } else { "push" };
                (name, customer, result, issued, push_targets, Outstanding::Kv)
            }
            Op::Pull { app, keys } => {
                let customer = CustomerId::new(*app, 0);
                let result = node.pull(now, customer, 0, Keys::from_slice(keys), DType::F32);
                ("pull", customer, result, Issued::Pull { keys: keys.clone() }, pull_targets, Outstanding::Kv)
            }
            Op::Simple { target, head, body } => {
                let customer = CustomerId::new(SIMPLE_APP, 0);
                let (target, targets) = simple_targets(node, *target);
                let body = Bytes::from(body.clone());
                let result = node.simple_request(now, customer, target, *head, body.clone());
                let outstanding = Outstanding::Simple { head: *head, body, targets: targets.clone() };
                ("simple", customer, result, Issued::Simple, targets, outstanding)
            }
            Op::Barrier => panic!("barriers are entered with enter_barrier"),
        };
        if let Some(what) = unjustified(&process.node, op, &result, pending_before, &targets) {
            self.fail(FailureKind::Correctness, format!("requests: slot {slot} {name}: {what}"));
        }
        let ts = match result {
            Ok(ts) => ts,
            Err(error) => {
                self.record(Some(slot), What::Node(Note::Rejected { op: name, error: error.clone() }), None);
                self.drain(slot);
                return Err(error);
            }
        };
        let note = Note::Issued { op: name, app: customer.app, ts: ts.0, keys: op_keys(op) };
        self.record(Some(slot), What::Node(note), None);
        self.workers[index].outstanding.insert((customer, ts), outstanding);
        let key = RequestKey { node: id, incarnation, customer, ts };
        let check = self.checker.request_issued(self.now, slot, key, issued, targets);
        self.report(check);
        self.drain(slot);
        Ok((customer, ts))
    }

    /// Enters a barrier over all workers from `slot`.
    pub fn enter_barrier(&mut self, slot: Slot) -> Result<BarrierTicket, RequestError> {
        let index = self.worker_index(slot);
        let now = self.node_now(slot);
        let process = self.nodes[slot].process.as_mut().ok_or(RequestError::Terminated)?;
        let (id, incarnation) = process.identity.ok_or(RequestError::ApiMisuse(pslite_core::ApiMisuse::NotReady))?;
        match process.node.barrier(now, Group::WORKERS) {
            Ok(ticket) => {
                let note = Note::BarrierEntered { group: ticket.group, generation: ticket.generation, finalize: false };
                self.record(Some(slot), What::Node(note), None);
                let run = &mut self.workers[index];
                run.barrier = Some(ticket);
                let aligned = ticket.generation == run.process_generation;
                run.process_generation = ticket.generation + 1;
                if !aligned && !self.hand_driven {
                    let what = format!("barriers: slot {slot} entered {ticket:?} out of its script's numbering");
                    self.fail(FailureKind::Correctness, what);
                }
                self.barrier_tickets.insert((id, incarnation, ticket));
                let check = self.checker.barrier_entered(self.now, slot, id, incarnation, ticket, false);
                self.report(check);
                self.drain(slot);
                Ok(ticket)
            }
            Err(error) => {
                self.record(Some(slot), What::Node(Note::Rejected { op: "barrier", error: error.clone() }), None);
                self.drain(slot);
                Err(error)
            }
        }
    }

    /// A request of the worker in `slot` ended.
    pub(crate) fn request_ended(&mut self, slot: Slot, customer: CustomerId, ts: Timestamp, ended: Ended) {
        if self.unmodelled_request(slot, customer, ts) {
            return;
        }
        let index = self.worker_index(slot);
        let process = self.nodes[slot].process.as_ref().expect("events come from a running process");
        let Some((id, incarnation)) = process.identity else {
            self.fail(
                FailureKind::Correctness,
                format!("requests: slot {slot} completed ts {} before registering", ts.0),
            );
            return;
        };
        if process.node.is_pending(customer, ts) {
            // Shells ask the node whether a request still waits, to tell
            // it from one never issued: once its end was reported, it does
            // not.
            let what = format!("requests: slot {slot} reported the end of ts {} and still holds it pending", ts.0);
            self.fail(FailureKind::Correctness, what);
            return;
        }
        let key = RequestKey { node: id, incarnation, customer, ts };
        let mut check = self.checker.request_completed(self.now, key, ended.completion());
        if let (Ok(()), Ended::Failed(RequestError::SchedulerLost)) = (&check, &ended) {
            check = self.checker.scheduler_lost(self.now, slot, id, incarnation);
        }
        self.report(check);
        let outstanding = self.workers[index].outstanding.remove(&(customer, ts));
        if let (Some(Outstanding::Simple { head, body, targets }), Ended::Simple(replies)) = (&outstanding, &ended) {
            let from: Vec<NodeId> = replies.iter().map(|r| r.from).collect();
            let echoed = replies.iter().all(|r| r.head == *head && r.body == *body);
            if from != *targets || !echoed {
                let what = format!(
                    "simple: {key} to {targets:?} (head {head}, {} bytes) answered by {from:?}: {replies:?}",
                    body.len()
                );
                self.fail(FailureKind::Correctness, what);
            }
        }
        self.schedule_step(slot, Duration::ZERO);
    }

    /// Whether request `ts` of `customer` that just ended at `slot` is one
    /// a scenario test made by hand ([`Sim::with_node`]), which the checker
    /// never saw: only workers' requests issued through [`Sim::issue`] are
    /// modelled.
    pub(crate) fn unmodelled_request(&self, slot: Slot, customer: CustomerId, ts: Timestamp) -> bool {
        if !self.hand_driven {
            return false;
        }
        if self.nodes[slot].role != pslite_core::Role::Worker {
            return true;
        }
        let Some((node, incarnation)) = self.nodes[slot].process.as_ref().and_then(|p| p.identity) else {
            return false;
        };
        !self.checker.knows_request(RequestKey { node, incarnation, customer, ts })
    }

    /// A barrier of the node in `slot` ended: released (without the
    /// members named), or failed with an error.
    pub(crate) fn barrier_ended(&mut self, slot: Slot, ticket: BarrierTicket, end: Result<Vec<NodeId>, RequestError>) {
        let note = match &end {
            Ok(missing) => {
                Note::BarrierReleased { group: ticket.group, generation: ticket.generation, missing: missing.clone() }
            }
            Err(error) => {
                Note::BarrierFailed { group: ticket.group, generation: ticket.generation, error: error.clone() }
            }
        };
        let error = end.as_ref().err().cloned();
        self.record(Some(slot), What::Node(note), None);
        let process = self.nodes[slot].process.as_ref().expect("events come from a running process");
        let Some((id, incarnation)) = process.identity else {
            return;
        };
        // A barrier entered by hand is outside the model (its tickets are
        // kept only for barriers the checker was told about).
        let modelled = self.barrier_tickets.remove(&(id, incarnation, ticket)) || !self.hand_driven;
        if modelled {
            let check = self.checker.barrier_ended(self.now, id, incarnation, ticket, end.ok().as_deref());
            self.report(check);
        }
        if error == Some(RequestError::SchedulerLost) {
            let check = self.checker.scheduler_lost(self.now, slot, id, incarnation);
            self.report(check);
        }
        // A finalize barrier may end in Terminated when the Terminate frame
        // overtakes the release; that is the shutdown, not a failure.
        if let Some(error) = error.as_ref().filter(|e| self.setup.strict && **e != RequestError::Terminated) {
            let what = format!("strict: slot {slot} {ticket:?} failed without a fault: {error}");
            self.fail(FailureKind::Correctness, what);
        }
        if self.nodes[slot].role == pslite_core::Role::Worker {
            let index = self.worker_index(slot);
            if self.workers[index].barrier == Some(ticket) {
                self.workers[index].barrier = None;
                self.schedule_step(slot, Duration::ZERO);
            }
        }
    }
}

/// The core's target for `target` and the ids it will wait on, computed
/// from the node's own view of who is alive (as the core does).
fn simple_targets(node: &pslite_core::Node, target: SimpleTarget) -> (Target, Vec<NodeId>) {
    let group = |g: Group| {
        let mut ids: Vec<NodeId> = node.membership().alive(g).collect();
        if g.contains(pslite_core::Role::Scheduler) {
            ids.insert(0, NodeId::SCHEDULER);
        }
        (Target::Group(g), ids)
    };
    match target {
        SimpleTarget::Scheduler => (Target::Node(NodeId::SCHEDULER), vec![NodeId::SCHEDULER]),
        SimpleTarget::Server(rank) => (Target::Node(NodeId::server(rank)), vec![NodeId::server(rank)]),
        SimpleTarget::Servers => group(Group::SERVERS),
        SimpleTarget::Workers => group(Group::WORKERS),
    }
}

/// What is wrong with `result`, the node's answer to issuing `op` (which
/// waits on `targets`) while it had `pending` requests, if anything: a
/// refusal must follow from what the node knows (its phase, its table,
/// its limits), and a request it knows it cannot serve must be refused.
fn unjustified(
    node: &pslite_core::Node,
    op: &Op,
    result: &Result<Timestamp, RequestError>,
    pending: usize,
    targets: &[NodeId],
) -> Option<String> {
    use pslite_core::ApiMisuse;
    let config = node.config();
    let keys = op_keys(op);
    let too_many_keys = keys > config.keys_per_request_max as usize;
    let full = pending >= config.requests_pending_max as usize;
    let gone = |id: &NodeId| *id != NodeId::SCHEDULER && *id != node.id() && !node.membership().is_alive(*id);
    let dead = targets.iter().find(|id| gone(id));
    let error = match result {
        Ok(ts) if too_many_keys => return Some(format!("ts {} accepted with {keys} keys over the limit", ts.0)),
        Ok(ts) if full => return Some(format!("ts {} accepted with {pending} requests pending, the limit", ts.0)),
        Ok(ts) => return dead.map(|id| format!("ts {} accepted for {id}, which the node knows is dead", ts.0)),
        Err(error) => error,
    };
    let justified = match error {
        RequestError::Terminated => node.phase() == Phase::Terminated,
        RequestError::ApiMisuse(ApiMisuse::TooManyKeys { keys: k, max }) => {
            too_many_keys && *k == keys && *max == config.keys_per_request_max
        }
        RequestError::ApiMisuse(ApiMisuse::TooManyPending { max }) => full && *max == config.requests_pending_max,
        RequestError::PeerDead(id) => targets.contains(id) && gone(id),
        RequestError::RangeLost(range) => {
            node.membership().chains().as_slice().iter().any(|chain| chain.range() == *range && chain.is_lost())
        }
        // A group with nobody alive in it (servers only: the workers'
        // group holds the sender).
        RequestError::ApiMisuse(ApiMisuse::EmptyTarget) => targets.is_empty(),
        _ => false,
    };
    (!justified).then(|| format!("refused with {error:?} ({keys} keys, {pending} pending, {targets:?} targeted)"))
}

fn op_keys(op: &Op) -> usize {
    match op {
        Op::Push { keys, .. } | Op::Pull { keys, .. } | Op::PushPull { keys, .. } => keys.len(),
        Op::Simple { .. } | Op::Barrier => 0,
    }
}
