//! The fault injector: turns a [`FaultPlan`](crate::faults::FaultPlan) into
//! crashes, pauses, clogs, partitions and resets over virtual time.
//!
//! Every fault tick draws, per class, whether a fault starts now (from the
//! injector's own random stream). Stability windows keep faults from
//! flapping faster than any real system sees: after a crash or restart no
//! node crashes for `crash_stability`, after a heal no partition starts for
//! `partition_stability`. Every fault that can hold up frames is reported
//! to the checker as a disturbance, so bounds that assume a working
//! network are extended exactly where the network did not work. Scenario
//! tests call the same actions by hand.

use pslite_core::{Duration, Instant, Rng, Role};

use crate::checker::Disturbance;
use crate::cluster::SCHEDULER_SLOT;
use crate::faults::{FaultClass, PartitionMode};
use crate::queue::{FaultAction, SimEvent, Slot};
use crate::sim::{RunPhase, Sim};
use crate::trace::What;

impl Sim {
    /// Whether the plan injects anything on fault ticks.
    pub(crate) fn injects_faults(&self) -> bool {
        let plan = &self.setup.plan;
        plan.crash_probability > 0.0
            || plan.pause_probability > 0.0
            || plan.partition_probability > 0.0
            || plan.clog_probability > 0.0
            || plan.reset_probability > 0.0
    }

    pub(crate) fn fault_tick(&mut self) {
        if self.phase != RunPhase::Safety {
            return;
        }
        let plan = self.setup.plan.clone();
        self.queue.push(self.now + plan.fault_tick_interval, SimEvent::FaultTick);
        // Each class draws from its own stream (see `FaultStreams`); a
        // probability of zero draws too, and never fires.
        if self.fault_rngs.crash.chance(plan.crash_probability) {
            self.random_crash();
        }
        if self.fault_rngs.pause.chance(plan.pause_probability) {
            let rng = &mut self.fault_rngs.pause;
            let slot = rng.below(self.nodes.len() as u64) as Slot;
            let duration = Duration::from_millis(1) + rng.jitter(plan.pause_duration_max);
            self.pause(slot, duration);
        }
        if self.fault_rngs.partition.chance(plan.partition_probability)
            && self.net.partitions_active() == 0
            && self.now >= self.partition_quiet_until
        {
            self.random_partition();
        }
        if self.fault_rngs.clog.chance(plan.clog_probability) {
            let (from, to) = random_link(&mut self.fault_rngs.clog, self.nodes.len());
            let until = self.now + Duration::from_millis(1) + self.fault_rngs.clog.jitter(plan.clog_duration_max);
            self.clog(from, to, until);
        }
        if self.fault_rngs.reset.chance(plan.reset_probability) {
            let (a, b) = random_link(&mut self.fault_rngs.reset, self.nodes.len());
            self.reset(a, b);
        }
    }

    pub(crate) fn fault_action(&mut self, action: FaultAction) {
        match action {
            FaultAction::Restart(slot) => self.start_process(slot),
            FaultAction::Resume(slot) => self.resume(slot),
            FaultAction::Heal(id) => self.heal(id),
        }
    }

    fn random_crash(&mut self) {
        let plan = &self.setup.plan;
        if self.last_node_fault.is_some_and(|at| self.now < at + plan.crash_stability) {
            return;
        }
        let down = self.nodes.iter().filter(|n| n.process.is_none()).count() as u32;
        if down >= plan.crashed_max {
            return;
        }
        // The scheduler is never replaced (as in ps-lite), so it never crashes.
        let classes = plan.classes;
        let candidates: Vec<Slot> = (0..self.nodes.len())
            .filter(|&s| self.nodes[s].process.is_some())
            .filter(|&s| match self.nodes[s].role {
                Role::Scheduler => false,
                Role::Server => classes.contains(FaultClass::CrashServer),
                Role::Worker => classes.contains(FaultClass::CrashWorker),
            })
            .collect();
        if candidates.is_empty() {
            return;
        }
        let slot = candidates[self.fault_rngs.crash.below(candidates.len() as u64) as usize];
        let delay =
            plan.restart_delay_min + self.fault_rngs.crash.jitter(plan.restart_delay_max - plan.restart_delay_min);
        self.crash(slot);
        self.schedule_restart(slot, delay);
    }

    /// Stops the process in `slot` at once: its state, timers and store
    /// are gone; frames to it are dropped from now on.
    pub fn crash(&mut self, slot: Slot) {
        assert_ne!(self.nodes[slot].role, Role::Scheduler, "the scheduler is never replaced, so never crashed");
        let Some(process) = self.nodes[slot].crash(self.now) else {
            return;
        };
        self.last_node_fault = Some(self.now);
        self.wire.forget((slot, process.life));
        self.record(Some(slot), What::Crash, None);
        self.checker.process_crashed(self.now, slot, process.identity);
        if self.nodes[slot].role == Role::Worker {
            let index = slot - 1 - self.setup.servers as usize;
            self.workers[index].process_lost();
        }
    }

    /// Starts a fresh process in `slot` after `delay`.
    pub fn schedule_restart(&mut self, slot: Slot, delay: Duration) {
        if self.nodes[slot].restart_pending {
            return;
        }
        self.nodes[slot].restart_pending = true;
        self.queue.push(self.now + delay, SimEvent::Fault(FaultAction::Restart(slot)));
    }

    /// Starts a fresh process in the crashed `slot` now.
    pub fn restart(&mut self, slot: Slot) {
        self.last_node_fault = Some(self.now);
        self.start_process(slot);
    }

    /// Stops `slot` from running for `duration`: everything for it waits.
    pub fn pause(&mut self, slot: Slot, duration: Duration) {
        let sim_node = &mut self.nodes[slot];
        if sim_node.process.is_none() || sim_node.paused_until.is_some() {
            return;
        }
        let until = self.now + duration;
        sim_node.paused_until = Some(until);
        self.record(Some(slot), What::Pause { until }, None);
        self.checker.disturbance(Disturbance { slot, peer: None, from: self.now, until });
        self.queue.push(until, SimEvent::Fault(FaultAction::Resume(slot)));
    }

    fn resume(&mut self, slot: Slot) {
        let sim_node = &mut self.nodes[slot];
        if sim_node.paused_until.take().is_none() {
            return;
        }
        let held: Vec<SimEvent> = sim_node.held.drain(..).collect();
        self.record(Some(slot), What::Resume, None);
        for event in held {
            self.queue.push(self.now, event);
        }
    }

    fn random_partition(&mut self) {
        let plan = self.setup.plan.clone();
        let n = self.nodes.len();
        let mut side = vec![false; n];
        let description;
        match plan.partition_mode {
            PartitionMode::IsolateSingle => {
                let alone = self.fault_rngs.partition.below(n as u64) as Slot;
                side[alone] = true;
                description = format!("slot {alone} isolated");
            }
            PartitionMode::UniformSplit => {
                for s in side.iter_mut() {
                    *s = self.fault_rngs.partition.chance(0.5);
                }
                description = format!("split {side:?}");
            }
            PartitionMode::SchedulerFromOne => {
                let other = 1 + self.fault_rngs.partition.below(n as u64 - 1) as Slot;
                side[other] = true;
                description = format!("scheduler from slot {other}");
            }
        }
        // One-way partitions cut only frames leaving the marked side (or
        // only those entering it), chosen per partition.
        let outbound_only = !plan.partition_symmetric && self.fault_rngs.partition.chance(0.5);
        let inbound_only = !plan.partition_symmetric && !outbound_only;
        let mut links = Vec::new();
        for a in 0..n {
            for b in 0..n {
                let crosses = side[a] != side[b];
                let cut = match plan.partition_mode {
                    PartitionMode::SchedulerFromOne => crosses && (a == SCHEDULER_SLOT || b == SCHEDULER_SLOT),
                    _ => crosses,
                };
                let allowed = (!outbound_only || side[a]) && (!inbound_only || side[b]);
                if cut && allowed {
                    links.push((a, b));
                }
            }
        }
        if links.is_empty() {
            return;
        }
        let span = plan.partition_duration_max - plan.partition_duration_min;
        let duration = plan.partition_duration_min + self.fault_rngs.partition.jitter(span);
        let direction = if outbound_only {
            " (one-way, out of the marked side)"
        } else if inbound_only {
            " (one-way, into the marked side)"
        } else {
            ""
        };
        self.partition(links, duration, format!("{description}{direction}"));
    }

    /// Cuts the directed `links` for `duration`; frames on them are lost.
    pub fn partition(&mut self, links: Vec<(Slot, Slot)>, duration: Duration, description: String) -> u64 {
        let until = self.now + duration;
        for &(a, b) in &links {
            self.checker.disturbance(Disturbance { slot: a, peer: Some(b), from: self.now, until });
        }
        let id = self.net.partition(links);
        self.record(None, What::Partition { id, description }, None);
        self.queue.push(until, SimEvent::Fault(FaultAction::Heal(id)));
        id
    }

    /// Ends partition `id` now; nothing when it has ended already.
    pub fn heal(&mut self, id: u64) {
        if self.net.partitions_active() == 0 || !self.net.partition_active(id) {
            return;
        }
        self.net.heal(id);
        self.partition_quiet_until = self.now + self.setup.plan.partition_stability;
        self.record(None, What::Heal { id }, None);
    }

    /// Holds frames sent on `from → to` until `until`.
    pub fn clog(&mut self, from: Slot, to: Slot, until: Instant) {
        self.net.clog(from, to, until);
        let delay_max = self.setup.plan.delay_max();
        self.checker.disturbance(Disturbance { slot: from, peer: Some(to), from: self.now, until: until + delay_max });
        self.record(Some(from), What::Clog { to, until }, None);
    }

    /// Resets the connection between `a` and `b`: frames in flight are lost.
    pub fn reset(&mut self, a: Slot, b: Slot) {
        self.net.reset(a, b);
        let until = self.now + self.setup.plan.delay_max();
        self.checker.disturbance(Disturbance { slot: a, peer: Some(b), from: self.now, until });
        self.record(Some(a), What::Reset { to: b }, None);
    }
}

/// One random stream per fault class, so that switching a class off leaves
/// the faults of every other class exactly where they were.
#[derive(Debug)]
pub(crate) struct FaultStreams {
    crash: Rng,
    pause: Rng,
    partition: Rng,
    clog: Rng,
    reset: Rng,
}

impl FaultStreams {
    pub(crate) fn new(seed: u64) -> Self {
        let stream = |n| Rng::new(Rng::derive_seed(seed, n));
        Self { crash: stream(1), pause: stream(2), partition: stream(3), clog: stream(4), reset: stream(5) }
    }
}

/// A random directed link between two different slots.
fn random_link(rng: &mut Rng, slots: usize) -> (Slot, Slot) {
    let n = slots as u64;
    let from = rng.below(n) as Slot;
    let to = (from + 1 + rng.below(n - 1) as Slot) % slots;
    (from, to)
}
