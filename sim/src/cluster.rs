//! The simulated machines: one slot per node of the cluster, each with an
//! address, a clock and, while it runs, a process holding a core [`Node`].
//!
//! A slot outlives its processes: a crash drops the process (and with it
//! the node's state and the server's store), a restart puts a fresh one in
//! the same place with the same configuration and a new seed, the way a
//! supervisor would restart a machine's job.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

use pslite_core::{Config, Duration, Incarnation, Instant, KvStore, Node, NodeId, Role};

use crate::queue::{SimEvent, Slot};
use crate::setup::Setup;

/// The slot of the scheduler.
pub const SCHEDULER_SLOT: Slot = 0;

/// Events a paused node may hold before the simulator calls it a runaway.
const HELD_MAX: usize = 1 << 20;

/// The listen address of a slot; the scheduler is slot 0.
pub fn addr(slot: Slot) -> SocketAddr {
    SocketAddr::from(([10, 0, (slot / 250) as u8, (slot % 250) as u8 + 1], 7000))
}

/// Protocol timings of a simulated cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// `Config::heartbeat_interval`.
    pub heartbeat_interval: Duration,
    /// `Config::heartbeat_timeout`.
    pub heartbeat_timeout: Duration,
    /// `Config::request_timeout`.
    pub request_timeout: Duration,
    /// `Config::register_retry_interval`.
    pub register_retry_interval: Duration,
    /// `Config::recovery_timeout`: how long barriers that wait for a dead
    /// member's replacement wait.
    pub recovery_timeout: Duration,
}

impl Default for Timing {
    /// Short enough that failure detection happens many times per run,
    /// long against network delays (a few milliseconds at most).
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(100),
            heartbeat_timeout: Duration::from_millis(1000),
            request_timeout: Duration::from_secs(5),
            register_retry_interval: Duration::from_millis(100),
            recovery_timeout: Duration::from_secs(2),
        }
    }
}

/// The configuration every node of the cluster starts from.
pub fn base_config(setup: &Setup) -> Config {
    let (servers, workers, timing) = (setup.servers, setup.workers, setup.timing);
    let mut builder = Config::builder(Role::Scheduler, addr(SCHEDULER_SLOT))
        .cluster(servers, workers)
        .heartbeat(timing.heartbeat_interval, timing.heartbeat_timeout);
    builder.request_timeout = timing.request_timeout;
    builder.register_retry_interval = timing.register_retry_interval;
    builder.recovery_timeout = timing.recovery_timeout;
    builder.barrier_policy = setup.barrier_policy;
    builder.frame_len_max = 1 << 20;
    builder.keys_per_request_max = setup.request_limits.keys_per_request_max;
    builder.requests_pending_max = setup.request_limits.requests_pending_max;
    builder.resend = setup.resend;
    builder.replicas = setup.replicas;
    builder.transfer_chunk_keys = setup.transfer_chunk_keys;
    builder.build().expect("simulator configuration is valid")
}

/// A node's view of time: `now + offset`, running `drift_ppm` parts per
/// million fast (or slow). Monotonic, as a real monotonic clock is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    /// Added to virtual time.
    pub offset: Duration,
    /// Rate error in parts per million.
    pub drift_ppm: i32,
}

impl Clock {
    /// A clock that reads virtual time exactly.
    pub const EXACT: Self = Self { offset: Duration::ZERO, drift_ppm: 0 };

    /// What the node reads at virtual time `now`.
    pub fn to_node(self, now: Instant) -> Instant {
        let global = now.as_nanos();
        if now == Instant::FAR_FUTURE {
            return Instant::FAR_FUTURE;
        }
        let drift = (i128::from(global) * i128::from(self.drift_ppm)).div_euclid(1_000_000);
        let nanos = i128::from(global) + drift + self.offset.as_nanos() as i128;
        Instant::from_nanos(nanos.clamp(0, i128::from(u64::MAX - 1)) as u64)
    }

    /// The earliest virtual time at which the node reads at least `local`.
    pub fn to_global(self, local: Instant) -> Instant {
        if local == Instant::FAR_FUTURE {
            return Instant::FAR_FUTURE;
        }
        let since_offset = i128::from(local.as_nanos()) - self.offset.as_nanos() as i128;
        let estimate = (since_offset * 1_000_000).div_euclid(1_000_000 + i128::from(self.drift_ppm));
        let mut global = Instant::from_nanos(estimate.clamp(0, i128::from(u64::MAX - 1)) as u64);
        // The estimate is off by rounding only; step to the exact answer.
        while self.to_node(global) < local {
            global = Instant::from_nanos(global.as_nanos() + 1);
        }
        while global.as_nanos() > 0 && self.to_node(Instant::from_nanos(global.as_nanos() - 1)) >= local {
            global = Instant::from_nanos(global.as_nanos() - 1);
        }
        global
    }
}

/// A running process in a slot.
#[derive(Debug)]
pub struct Process {
    /// The protocol state machine.
    pub node: Node,
    /// Which process of the slot this is (0 first, +1 per restart).
    pub life: u32,
    /// Server stores, one per application id.
    pub stores: BTreeMap<u32, KvStore<f32>>,
    /// Id and incarnation, once registered.
    pub identity: Option<(NodeId, Incarnation)>,
    /// Whether `finalize` was called.
    pub finalize_called: bool,
    /// The last membership epoch the checker saw.
    pub epoch_checked: u64,
}

/// One node's place in the cluster.
#[derive(Debug)]
pub struct SimNode {
    /// Its role.
    pub role: Role,
    /// Its configuration (the same for every process in the slot).
    pub config: Config,
    /// Its clock.
    pub clock: Clock,
    /// The running process, `None` while crashed.
    pub process: Option<Process>,
    /// Processes started in this slot so far.
    pub lives: u32,
    /// Bumped whenever the node's timer is rescheduled or its process
    /// changes; timer events with an older number are stale.
    pub timer_generation: u64,
    /// Virtual time of the scheduled timer event.
    pub timer_at: Option<Instant>,
    /// Until when the node is paused.
    pub paused_until: Option<Instant>,
    /// Events that arrived during a pause, in order.
    pub held: VecDeque<SimEvent>,
    /// When the last process crashed, while none runs.
    pub crashed_at: Option<Instant>,
    /// Whether a restart is scheduled.
    pub restart_pending: bool,
    /// Whether the node answers the KV and SimpleApp requests it gets by
    /// itself (its server handle and echo); when off, they wait in the
    /// event log for a scenario test to answer by hand.
    pub serving: bool,
}

impl SimNode {
    /// A slot with no process yet.
    pub fn new(role: Role, config: Config, clock: Clock) -> Self {
        Self {
            role,
            config,
            clock,
            process: None,
            lives: 0,
            timer_generation: 0,
            timer_at: None,
            paused_until: None,
            held: VecDeque::new(),
            crashed_at: None,
            restart_pending: false,
            serving: true,
        }
    }

    /// Starts a fresh process seeded by `seed` at virtual time `now`.
    pub fn start(&mut self, seed: u64, now: Instant) -> &mut Process {
        assert!(self.process.is_none(), "a slot runs one process at a time");
        let node = Node::new(self.config.clone(), seed, self.clock.to_node(now));
        let life = self.lives;
        self.lives += 1;
        self.timer_generation += 1;
        self.timer_at = None;
        self.crashed_at = None;
        self.restart_pending = false;
        self.process.insert(Process {
            node,
            life,
            stores: BTreeMap::new(),
            identity: None,
            finalize_called: false,
            epoch_checked: 0,
        })
    }

    /// Stops the process; returns it.
    pub fn crash(&mut self, now: Instant) -> Option<Process> {
        let process = self.process.take()?;
        self.timer_generation += 1;
        self.timer_at = None;
        self.paused_until = None;
        self.held.clear();
        self.crashed_at = Some(now);
        Some(process)
    }

    /// Holds `event` until the pause ends.
    pub fn hold(&mut self, event: SimEvent) {
        assert!(self.held.len() < HELD_MAX, "a paused node holds more than {HELD_MAX} events");
        self.held.push_back(event);
    }

    /// The running process's life number.
    pub fn life(&self) -> Option<u32> {
        self.process.as_ref().map(|p| p.life)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_round_trips_to_the_earliest_instant() {
        for clock in [
            Clock::EXACT,
            Clock { offset: Duration::from_millis(1234), drift_ppm: 150 },
            Clock { offset: Duration::from_secs(3), drift_ppm: -200 },
        ] {
            for nanos in [0u64, 1, 999_999, 1_000_000_007, 123_456_789_012] {
                let now = Instant::from_nanos(nanos);
                let local = clock.to_node(now);
                let back = clock.to_global(local);
                assert!(back <= now, "{clock:?}: {now:?} -> {local:?} -> {back:?}");
                assert!(clock.to_node(back) >= local);
                if back.as_nanos() > 0 {
                    assert!(clock.to_node(Instant::from_nanos(back.as_nanos() - 1)) < local);
                }
            }
        }
    }

    #[test]
    fn clock_is_monotonic() {
        let clock = Clock { offset: Duration::from_millis(5), drift_ppm: -200 };
        let mut last = Instant::ZERO;
        for nanos in (0..100_000u64).step_by(997) {
            let local = clock.to_node(Instant::from_nanos(nanos));
            assert!(local >= last);
            last = local;
        }
    }
}
