//! What a run is made of: the seed, the cluster's shape and timings, the
//! fault plan, the scripts and the limits — all drawn from one seed in
//! swarm mode ([`Setup::swarm`]), or written by hand for scenario tests
//! ([`Setup::scenario`]).

use pslite_core::{BarrierPolicy, ConfigBuilder, Duration, Rng, ServerRanges, REPLICAS_MAX};

use crate::cluster::Timing;
use crate::faults::{FaultClasses, FaultPlan};
use crate::replay::SwarmOptions;
use crate::values::ValueMode;
use crate::workload::{Script, Workload};

/// Sub-seed streams, fixed so that each subsystem's draws are its own.
pub(crate) mod stream {
    pub(crate) const SHAPE: u64 = 1;
    pub(crate) const PLAN: u64 = 2;
    pub(crate) const NETWORK: u64 = 3;
    pub(crate) const FAULTS: u64 = 4;
    pub(crate) const WORKLOAD: u64 = 5;
    pub(crate) const HANDLER: u64 = 6;
    pub(crate) const CLOCKS: u64 = 7;
    pub(crate) const NODES: u64 = 8;
    pub(crate) const STARTS: u64 = 9;
    /// Request limits and reliable delivery on or off: drawn after the
    /// streams above existed, so seeds kept what those draw.
    pub(crate) const PROTOCOL: u64 = 10;
    /// Which answers a corrupting server corrupts.
    pub(crate) const CORRUPT: u64 = 11;
    /// The replica count: its own stream, so adding it kept every other
    /// draw of a seed.
    pub(crate) const REPLICAS: u64 = 12;
    /// The value mode, then the fractions of pushed values: their own
    /// stream, so integer seeds kept every draw and fraction seeds kept
    /// their scripts but for the values.
    pub(crate) const VALUES: u64 = 13;
    /// Plus the worker's rank.
    pub(crate) const THINK: u64 = 1 << 16;
}

/// Caps that turn a runaway run into a reported failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most events in one run.
    pub events_max: u64,
    /// Virtual time the safety phase may take before faults heal anyway.
    pub safety_time_max: Duration,
    /// Virtual time the liveness phase may take to finish.
    pub liveness_time_max: Duration,
    /// Events pending at once.
    pub queue_len_max: usize,
    /// Trace entries kept for the failure report.
    pub trace_len_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            events_max: 5_000_000,
            safety_time_max: Duration::from_secs(30),
            liveness_time_max: Duration::from_secs(60),
            queue_len_max: 1 << 20,
            trace_len_max: 400,
        }
    }
}

/// The limits on a node's own requests: `Config::keys_per_request_max`
/// and `Config::requests_pending_max` (which also caps the requests a
/// server holds unanswered).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestLimits {
    /// Most keys in one request.
    pub keys_per_request_max: u32,
    /// Most requests pending at once.
    pub requests_pending_max: u32,
}

impl Default for RequestLimits {
    /// Far above what the scripts do.
    fn default() -> Self {
        Self { keys_per_request_max: 1 << 20, requests_pending_max: 256 }
    }
}

impl RequestLimits {
    /// In about one seed in three, limits the scripts run into: a request
    /// at exactly the key limit, one above it, a window that fills the
    /// pending table. Otherwise the defaults.
    fn swarm(rng: &mut Rng) -> Self {
        if !rng.chance(0.3) {
            return Self::default();
        }
        let keys = 1 + rng.below(crate::workload::KEYS_PER_OP_MAX) as u32;
        Self { keys_per_request_max: keys, requests_pending_max: 1 + rng.below(4) as u32 }
    }
}

/// Everything that determines a run.
#[derive(Clone, Debug)]
pub struct Setup {
    /// The seed.
    pub seed: u64,
    /// Servers.
    pub servers: u32,
    /// Workers.
    pub workers: u32,
    /// Copies of each key range (`Config::replicas`), at most `servers`.
    pub replicas: u8,
    /// Most keys in one chunk of a state transfer
    /// (`Config::transfer_chunk_keys`): small in the swarm, so that a
    /// transfer of its few keys takes several chunks.
    pub transfer_chunk_keys: u32,
    /// Protocol timings.
    pub timing: Timing,
    /// What barriers do when a member dies.
    pub barrier_policy: BarrierPolicy,
    /// Limits on requests.
    pub request_limits: RequestLimits,
    /// Reliable delivery (`Config::resend`, ps-lite's `PS_RESEND`). Off,
    /// frames carry no sequence numbers and nothing is resent or filtered,
    /// so the plan has no fault that loses or duplicates frames on a live
    /// connection (loss, duplication, resets, partitions): the model is
    /// ps-lite's, TCP without resends.
    pub resend: bool,
    /// Faults to inject.
    pub plan: FaultPlan,
    /// What kind of values pushes carry, and so how exactly the checker
    /// compares sums. The workload's values must be of this kind.
    pub values: ValueMode,
    /// What the workers do.
    pub workload: Workload,
    /// Caps.
    pub limits: Limits,
    /// Print every trace entry as it happens.
    pub trace_all: bool,
    /// Keep every node event, for scenario tests to inspect.
    pub record_events: bool,
    /// The swarm options the run came from; `None` for hand-written setups
    /// (they have no one-line replay).
    pub swarm: Option<SwarmOptions>,
    /// Whether a failed request or barrier is itself a failure: meant for
    /// runs without faults, where nothing should ever fail.
    pub strict: bool,
    /// Whether every process starts by itself within the first
    /// milliseconds (the scheduler at zero). Scenario tests that choose the
    /// order and the moments of the starts turn this off and call
    /// [`Sim::start`](crate::Sim::start).
    pub autostart: bool,
    /// Changes to every node's configuration beyond the timings and the
    /// barrier policy above (resend settings, limits, heartbeats off), for
    /// scenario tests. The checker's bounds follow the changed settings.
    pub configure: Option<fn(ConfigBuilder) -> ConfigBuilder>,
}

impl Setup {
    /// The run `seed` stands for under `options`: cluster shape, fault plan
    /// and scripts all drawn from the seed.
    pub fn swarm(seed: u64, options: SwarmOptions) -> Self {
        let mut shape = Rng::new(Rng::derive_seed(seed, stream::SHAPE));
        let (servers, workers) = if options.lite {
            (1 + shape.below(2) as u32, 1 + shape.below(2) as u32)
        } else {
            (1 + shape.below(4) as u32, 1 + shape.below(4) as u32)
        };
        let barrier_policy = match shape.below(4) {
            0 => BarrierPolicy::FailOnDeath,
            1 => BarrierPolicy::Elastic,
            _ => BarrierPolicy::WaitForRecovery,
        };
        let timing = Timing { recovery_timeout: Duration::from_millis(100 + shape.below(2900)), ..Timing::default() };
        let mut plan = FaultPlan::swarm(&mut Rng::new(Rng::derive_seed(seed, stream::PLAN)), options.faults);
        let mut protocol = Rng::new(Rng::derive_seed(seed, stream::PROTOCOL));
        let request_limits = RequestLimits::swarm(&mut protocol);
        let drawn_resend = !protocol.chance(0.25);
        let resend = options.resend.unwrap_or(drawn_resend);
        if !resend {
            for class in FaultClasses::WITHOUT_RESEND_OFF {
                plan = plan.without(class);
            }
        }
        let replicas_max = servers.min(u32::from(REPLICAS_MAX)) as u8;
        let mut copies = Rng::new(Rng::derive_seed(seed, stream::REPLICAS));
        let replicas = 1 + copies.below(u64::from(replicas_max)) as u8;
        let transfer_chunk_keys = if copies.chance(0.25) { 1 << 16 } else { 1 + copies.below(4) as u32 };
        let ranges = ServerRanges::equal(servers);
        let mut fractions = Rng::new(Rng::derive_seed(seed, stream::VALUES));
        let drawn_values = ValueMode::swarm(&mut fractions);
        let values = options.values.unwrap_or(drawn_values);
        let mut workload_rng = Rng::new(Rng::derive_seed(seed, stream::WORKLOAD));
        let workload = Workload::swarm(&mut workload_rng, &ranges, workers, options.lite, values, &mut fractions);
        let strict = options.strict && plan.classes == FaultClasses::NONE;
        Self {
            seed,
            servers,
            workers,
            replicas,
            transfer_chunk_keys,
            timing,
            barrier_policy,
            request_limits,
            resend,
            plan,
            values,
            workload,
            limits: Limits::default(),
            trace_all: false,
            record_events: false,
            strict,
            swarm: Some(options),
            autostart: true,
            configure: None,
        }
    }

    /// A calm cluster whose workers do nothing on their own: the starting
    /// point of scenario tests, which then drive it by hand.
    pub fn scenario(seed: u64, servers: u32, workers: u32) -> Self {
        let ranges = ServerRanges::equal(servers);
        let keys = crate::workload::boundary_keys(&mut Rng::new(seed), &ranges);
        Self {
            seed,
            servers,
            workers,
            replicas: 1,
            transfer_chunk_keys: 1 << 16,
            timing: Timing::default(),
            barrier_policy: BarrierPolicy::FailOnDeath,
            request_limits: RequestLimits::default(),
            resend: true,
            plan: FaultPlan::calm(),
            values: ValueMode::Integers,
            workload: Workload { keys, apps: 1, scripts: vec![Script::idle(); workers as usize] },
            limits: Limits::default(),
            trace_all: false,
            record_events: true,
            swarm: None,
            strict: false,
            autostart: true,
            configure: None,
        }
    }

    /// The run's parameters, printed before it starts.
    pub fn describe(&self) -> String {
        let ops: Vec<usize> = self.workload.scripts.iter().map(|s| s.ops.len()).collect();
        format!(
            "seed {:#018x}\n  cluster             1 scheduler, {} servers, {} workers, {} replicas \
             ({} keys per transfer chunk)\n  \
             timing              heartbeat {:?}/{:?}, request timeout {:?}, {:?}, recovery {:?}\n  \
             requests            at most {} keys, {} pending; resend {}\n  \
             workload            {} keys, {} apps, pushing {}, ops per worker {ops:?}\n{}",
            self.seed,
            self.servers,
            self.workers,
            self.replicas,
            self.transfer_chunk_keys,
            self.timing.heartbeat_interval,
            self.timing.heartbeat_timeout,
            self.timing.request_timeout,
            self.barrier_policy,
            self.timing.recovery_timeout,
            self.request_limits.keys_per_request_max,
            self.request_limits.requests_pending_max,
            if self.resend { "on" } else { "off" },
            self.workload.keys.len(),
            self.workload.apps,
            self.values,
            self.plan
        )
    }
}
