//! Phase two: faults heal, and the cluster must finish.
//!
//! At the transition the network heals (no partitions, clogs, loss or
//! duplication), paused nodes resume and crashed ones restart. From then
//! on a supervisor does what an operator's process manager would: a node
//! that the scheduler declared dead (or whose id a newer incarnation took)
//! can never rejoin on its own, so it is stopped and started afresh. Once
//! every slot runs a registered, current member and every script is done,
//! every node calls `finalize`, and the run passes when all of them have
//! terminated. [`Sim::pending`] names what is still missing; if it is not
//! empty when the time budget runs out, the run failed on liveness.

use pslite_core::{Duration, Phase, Role};

use crate::cluster::SCHEDULER_SLOT;
use crate::queue::Slot;
use crate::replay::FailureKind;
use crate::sim::{RunPhase, Sim};
use crate::trace::{Note, What};

/// Delay before the supervisor restarts a stopped node.
const SUPERVISOR_RESTART_DELAY: Duration = Duration::from_millis(10);

impl Sim {
    /// Whether every worker finished its script.
    pub(crate) fn scripts_done(&self) -> bool {
        self.workers.iter().all(|w| w.done())
    }

    /// Ends the safety phase: heal, resume, restart.
    pub fn transition_to_liveness(&mut self) {
        if self.phase != RunPhase::Safety {
            return;
        }
        self.phase = RunPhase::Liveness(self.now);
        self.record(None, What::Liveness, None);
        self.net.heal_all(self.now);
        for slot in 0..self.nodes.len() {
            if self.nodes[slot].paused_until.is_some() {
                self.nodes[slot].paused_until = Some(self.now);
                self.queue.push(self.now, crate::queue::SimEvent::Fault(crate::queue::FaultAction::Resume(slot)));
            }
            if self.nodes[slot].process.is_none() {
                self.schedule_restart(slot, Duration::ZERO);
            }
        }
    }

    /// The supervisor: restarts nodes that cannot rejoin, and starts
    /// `finalize` once the cluster is whole and the scripts are done.
    pub(crate) fn supervise(&mut self) {
        for slot in 0..self.nodes.len() {
            // A zombie worker still finishes its script (its barriers fail,
            // its requests may succeed); restarted, it would number its
            // barriers from 0 and never meet the others in one.
            let busy = self.nodes[slot].role == Role::Worker && !self.workers[self.worker_index(slot)].done();
            if !busy && self.is_zombie(slot) {
                self.crash(slot);
            }
            // A process that stopped on its own (it learnt it was replaced)
            // is over: an operator starts a new one.
            let stopped = self.nodes[slot]
                .process
                .as_ref()
                .is_some_and(|p| p.node.phase() == Phase::Terminated && !p.finalize_called);
            if stopped && !self.finalize_started {
                self.crash(slot);
            }
            if self.nodes[slot].process.is_none() {
                self.schedule_restart(slot, SUPERVISOR_RESTART_DELAY);
            }
        }
        if self.finalize_started {
            return;
        }
        if !self.cluster_whole() {
            self.whole_since = None;
            return;
        }
        // Whole for a while, as an operator would wait: a node that just
        // resumed may still hold news (a death, a table) that breaks it.
        let settle = self.nodes[SCHEDULER_SLOT].config.failure_detection_bound();
        let since = *self.whole_since.get_or_insert(self.now);
        if !self.scripts_done() || self.now < since + settle {
            return;
        }
        // Settled: replication drains too (every batch committed, every
        // answer given, nothing held), within a stalled chain's resend and
        // a settling period of the last request ending.
        // And with every server back, every range is back to its full
        // count of copies: learners caught up and joined.
        let backlog = self.nodes.iter().enumerate().find_map(|(slot, n)| {
            let node = &n.process.as_ref()?.node;
            let backlog = node.replication_backlog();
            let what =
                format!("node {} (slot {slot}) still keeps {backlog} batches, answers or held messages", node.id());
            (backlog > 0).then_some(what)
        });
        let short = self.nodes[SCHEDULER_SLOT].process.as_ref().and_then(|p| {
            let chains = p.node.membership().chains();
            let replicas = usize::from(chains.replicas());
            chains.as_slice().iter().enumerate().find_map(|(index, chain)| {
                let members = chain.members().len();
                (members < replicas || chain.learner().is_some())
                    .then(|| format!("range {index} has {members} of {replicas} copies ({chain:?})"))
            })
        });
        if let (Some(what), false) = (backlog.or(short), self.forged) {
            let since = *self.backlog_since.get_or_insert(self.now);
            let config = &self.nodes[SCHEDULER_SLOT].config;
            if self.now >= since + 2 * settle + config.resend_timeout {
                let what = format!("replication: {what} since the cluster settled at {since:?}");
                self.fail(FailureKind::Liveness, what);
            }
            return;
        }
        if !self.forged {
            if let Some(what) = self.copies_differ() {
                self.fail(FailureKind::Correctness, what);
                return;
            }
        }
        self.finalize_started = true;
        // Workers first, the scheduler last, as a launcher would stop them;
        // the order does not matter to the protocol.
        for slot in (0..self.nodes.len()).rev() {
            let now = self.node_now(slot);
            let Some(process) = self.nodes[slot].process.as_mut() else {
                continue;
            };
            process.finalize_called = true;
            let (id, incarnation) = process.identity.expect("a whole cluster is registered");
            match process.node.finalize(now) {
                Ok(ticket) => {
                    let note =
                        Note::BarrierEntered { group: ticket.group, generation: ticket.generation, finalize: true };
                    self.record(Some(slot), What::Node(note), None);
                    self.barrier_tickets.insert((id, incarnation, ticket));
                    let check = self.checker.barrier_entered(self.now, slot, id, incarnation, ticket, true);
                    self.report(check);
                }
                Err(error) => {
                    let what = format!("finalize: slot {slot} refused finalize in a whole cluster: {error}");
                    self.fail(FailureKind::Liveness, what);
                    return;
                }
            }
            self.drain(slot);
        }
    }

    /// A running, registered node whose id the scheduler holds dead or has
    /// given to a newer incarnation.
    fn is_zombie(&self, slot: Slot) -> bool {
        if slot == SCHEDULER_SLOT {
            return false;
        }
        let Some(process) = &self.nodes[slot].process else {
            return false;
        };
        let Some((id, incarnation)) = process.identity else {
            return false;
        };
        if process.node.phase() == Phase::Terminated {
            return false;
        }
        let scheduler = self.nodes[SCHEDULER_SLOT].process.as_ref().expect("the scheduler never crashes");
        if scheduler.node.phase() != Phase::Ready {
            return false;
        }
        scheduler
            .node
            .membership()
            .get(id)
            .is_some_and(|e| e.incarnation > incarnation || (e.incarnation == incarnation && !e.alive))
    }

    /// Every slot runs a ready process that holds a live id in the
    /// scheduler's table, in the incarnation the table names.
    pub(crate) fn cluster_whole(&self) -> bool {
        let Some(scheduler) = &self.nodes[SCHEDULER_SLOT].process else {
            return false;
        };
        if scheduler.node.phase() != Phase::Ready {
            return false;
        }
        let table = scheduler.node.membership();
        // A paused node has not seen what it holds yet; its view may be old.
        self.nodes.iter().enumerate().all(|(slot, n)| {
            n.paused_until.is_none()
                && n.process.as_ref().is_some_and(|p| {
                    p.node.phase() == Phase::Ready
                        && (slot == SCHEDULER_SLOT
                            || p.identity.is_some_and(|(id, inc)| {
                                table.get(id).is_some_and(|e| e.alive && e.incarnation == inc)
                            }))
                })
        })
    }

    /// What keeps the run from being finished, in words; `None` when every
    /// script is done and every node has terminated.
    pub fn pending(&self) -> Option<String> {
        for (slot, n) in self.nodes.iter().enumerate() {
            let Some(process) = &n.process else {
                return Some(format!("slot {slot} ({}) has no process", n.role));
            };
            if process.node.phase() == Phase::Registering {
                return Some(format!("slot {slot} ({}) not registered", n.role));
            }
        }
        for (index, run) in self.workers.iter().enumerate() {
            if !run.done() {
                let slot = 1 + self.setup.servers as usize + index;
                let id = self.nodes[slot].process.as_ref().map(|p| p.node.id());
                let mut waits = Vec::new();
                for (customer, ts) in run.outstanding.keys() {
                    waits.push(format!("request app {} ts {} pending", customer.app, ts.0));
                }
                if let Some(ticket) = run.barrier {
                    waits.push(format!("in barrier {ticket:?}"));
                }
                if waits.is_empty() {
                    waits.push("waiting to issue the next".to_owned());
                }
                return Some(format!(
                    "worker slot {slot} (node {id:?}) at op {}/{}: {}",
                    run.next,
                    run.script.ops.len(),
                    waits.join(", ")
                ));
            }
        }
        if !self.finalize_started {
            let why = if self.whole_since.is_some() { "cluster settling" } else { "cluster not whole" };
            return Some(format!("finalize not started: {why}"));
        }
        for (slot, n) in self.nodes.iter().enumerate() {
            let process = n.process.as_ref().expect("checked above");
            if process.node.phase() != Phase::Terminated {
                let node = &process.node;
                let role = if n.role == Role::Scheduler { "scheduler" } else { "node" };
                return Some(format!(
                    "{role} {} (slot {slot}) not terminated: {:?}, {} requests, {} barriers pending, finalize called: {}",
                    node.id(),
                    node.phase(),
                    node.requests_pending(),
                    node.barriers_pending(),
                    process.finalize_called
                ));
            }
        }
        None
    }
}

impl Sim {
    /// Once replication has drained, every member of a range has applied
    /// the same batches, so their stores hold the same bytes for the
    /// range's keys: the head's bits, whatever order of additions made
    /// them. Names the first range whose copies differ.
    fn copies_differ(&self) -> Option<String> {
        let scheduler = self.nodes[SCHEDULER_SLOT].process.as_ref()?;
        let chains = scheduler.node.membership().chains();
        for (index, chain) in chains.as_slice().iter().enumerate() {
            // Ranks are the scheduler's to give: find each member's slot.
            let slot_of = |rank: pslite_core::Rank| {
                (0..self.nodes.len()).find(|&slot| {
                    self.nodes[slot]
                        .process
                        .as_ref()
                        .is_some_and(|p| p.node.role() == Role::Server && p.node.rank() == Some(rank))
                })
            };
            let slots: Vec<usize> = chain.members().iter().filter_map(|&rank| slot_of(rank)).collect();
            if slots.len() < 2 {
                continue;
            }
            let stores = |slot: usize| self.nodes[slot].process.as_ref().map(|p| &p.stores);
            let apps: std::collections::BTreeSet<u32> =
                slots.iter().filter_map(|&slot| stores(slot)).flat_map(|s| s.keys().copied()).collect();
            for app in apps {
                let held = |slot: usize| {
                    let state = stores(slot)
                        .and_then(|s| s.get(&app))
                        .map(|store| store.export_range(chain.range(), usize::MAX, usize::MAX));
                    state.map_or((Vec::new(), Vec::new()), |s| {
                        (s.keys.iter().collect::<Vec<u64>>(), s.values.as_bytes().to_vec())
                    })
                };
                let first = held(slots[0]);
                if let Some(&other) = slots[1..].iter().find(|&&slot| held(slot) != first) {
                    return Some(format!(
                        "replication: the copies of range {index} differ once settled: app {app} {}",
                        difference((slots[0], &first), (other, &held(other)))
                    ));
                }
            }
        }
        None
    }
}

/// Where two copies' `(keys, value bytes)` of one range part ways: the
/// keys each holds if those differ, else the first key whose bytes differ.
fn difference((slot, ours): (usize, &(Vec<u64>, Vec<u8>)), (other, theirs): (usize, &(Vec<u64>, Vec<u8>))) -> String {
    if ours.0 != theirs.0 {
        return format!("in slot {slot} holds keys {:?}, in slot {other} {:?}", ours.0, theirs.0);
    }
    // Equal keys and unequal bytes: name the key when each holds one f32.
    let values = |bytes: &[u8]| -> Vec<f32> {
        bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("four bytes"))).collect()
    };
    let (a, b) = (values(&ours.1), values(&theirs.1));
    let one_each = a.len() == ours.0.len() && b.len() == ours.0.len();
    match (0..a.len()).find(|&i| one_each && a[i].to_bits() != b[i].to_bits()) {
        Some(i) => format!(
            "key {}: slot {slot} holds {} ({:#010x}), slot {other} {} ({:#010x})",
            ours.0[i],
            a[i],
            a[i].to_bits(),
            b[i],
            b[i].to_bits()
        ),
        None => {
            format!("in slot {slot} holds {} values for keys {:?}, in slot {other} {} values", a.len(), ours.0, b.len())
        }
    }
}
