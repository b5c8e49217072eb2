//! Which faults a run injects, and how hard: the [`FaultPlan`].
//!
//! In swarm mode ([`FaultPlan::swarm`]) every parameter is drawn from the
//! seed, so one sweep covers calm seeds (few or no faults) and hostile ones
//! (crashes, pauses and clogs all at once); a fixed mix would test only one
//! point of that space. Every fault class can be switched off on its own
//! ([`FaultClasses`]); [`FaultClasses::DEFAULT`] holds every one of them.
//! Scenario tests write a plan by hand, usually starting from
//! [`FaultPlan::calm`].

use std::fmt;

use pslite_core::{Duration, Rng};

/// One kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultClass {
    /// Frames on one link overtake each other (independent delays).
    Reorder,
    /// A link holds frames for a while, then delivers them (a congested or
    /// briefly broken TCP connection that survives).
    Clog,
    /// Links are cut and frames on them are lost (a partition long enough
    /// for TCP to give up).
    Partition,
    /// Single frames are lost.
    Loss,
    /// Single frames arrive twice.
    Duplicate,
    /// A connection dies and every frame in flight on it is lost.
    Reset,
    /// A server process stops; a fresh one starts in its place later.
    CrashServer,
    /// A worker process stops; a fresh one starts in its place later and
    /// goes on with the script.
    CrashWorker,
    /// A process stops running for a while, then goes on.
    Pause,
    /// A server's handle answers late, so answers overtake each other.
    SlowHandle,
    /// Each node's clock has its own offset and rate.
    ClockDrift,
    /// A server's answer to a pull does not fit the request (other keys
    /// echoed, values of another type, lengths that do not add up), as
    /// from a buggy or hostile server: the worker must refuse it.
    Corrupt,
}

impl FaultClass {
    /// Every class, in a fixed order.
    pub const ALL: [Self; 12] = [
        Self::Reorder,
        Self::Clog,
        Self::Partition,
        Self::Loss,
        Self::Duplicate,
        Self::Reset,
        Self::CrashServer,
        Self::CrashWorker,
        Self::Pause,
        Self::SlowHandle,
        Self::ClockDrift,
        Self::Corrupt,
    ];

    /// The name used on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Reorder => "reorder",
            Self::Clog => "clog",
            Self::Partition => "partition",
            Self::Loss => "loss",
            Self::Duplicate => "duplicate",
            Self::Reset => "reset",
            Self::CrashServer => "crash-server",
            Self::CrashWorker => "crash-worker",
            Self::Pause => "pause",
            Self::SlowHandle => "slow-handle",
            Self::ClockDrift => "clock-drift",
            Self::Corrupt => "corrupt",
        }
    }

    const fn bit(self) -> u16 {
        1 << self as u16
    }
}

/// A set of fault classes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FaultClasses(u16);

impl FaultClasses {
    /// No faults at all.
    pub const NONE: Self = Self(0);
    /// Every class.
    pub const ALL: Self = Self((1 << FaultClass::ALL.len()) - 1);
    /// Every class: loss, duplication, resets and partitions are survived
    /// through reliable delivery, and crashed servers and workers are
    /// replaced by restarted processes that rejoin the running job (a
    /// worker where the survivors' barriers are).
    pub const DEFAULT: Self = Self::ALL;

    /// The classes a run without reliable delivery cannot have: they lose
    /// or duplicate frames on a live connection, which only resends and
    /// duplicate filters make up for.
    pub const WITHOUT_RESEND_OFF: [FaultClass; 4] =
        [FaultClass::Loss, FaultClass::Duplicate, FaultClass::Reset, FaultClass::Partition];

    /// Whether `class` is in the set.
    pub const fn contains(self, class: FaultClass) -> bool {
        self.0 & class.bit() != 0
    }

    /// The set with `class` added.
    pub const fn with(self, class: FaultClass) -> Self {
        Self(self.0 | class.bit())
    }

    /// The set without `class`.
    pub const fn without(self, class: FaultClass) -> Self {
        Self(self.0 & !class.bit())
    }

    /// The classes in the set, in a fixed order.
    pub fn iter(self) -> impl Iterator<Item = FaultClass> {
        FaultClass::ALL.into_iter().filter(move |c| self.contains(*c))
    }

    /// Parses `default`, `all`, `none`, or a comma-separated list of class
    /// names (`crash,pause,clog`).
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "default" => return Ok(Self::DEFAULT),
            "all" => return Ok(Self::ALL),
            "none" => return Ok(Self::NONE),
            _ => {}
        }
        let mut set = Self::NONE;
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let class = FaultClass::ALL.into_iter().find(|c| c.name() == name).ok_or_else(|| {
                let known: Vec<&str> = FaultClass::ALL.iter().map(|c| c.name()).collect();
                format!("unknown fault class {name:?}; known: default, all, none, {}", known.join(", "))
            })?;
            set = set.with(class);
        }
        Ok(set)
    }

    /// The shortest text [`parse`](Self::parse) reads back as this set.
    pub fn to_arg(self) -> String {
        if self == Self::DEFAULT {
            "default".to_owned()
        } else if self == Self::NONE {
            "none".to_owned()
        } else {
            self.iter().map(FaultClass::name).collect::<Vec<_>>().join(",")
        }
    }
}

impl fmt::Debug for FaultClasses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_arg())
    }
}

/// Which links a partition cuts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionMode {
    /// One random node against everyone else.
    IsolateSingle,
    /// A random split of all nodes into two sides.
    UniformSplit,
    /// The scheduler against one random non-scheduler node.
    SchedulerFromOne,
}

/// Every fault parameter of one run. Probabilities are per fault tick.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultPlan {
    /// The classes this run injects.
    pub classes: FaultClasses,
    /// Smallest one-way delay.
    pub delay_min: Duration,
    /// Uniform extra delay on top of the minimum.
    pub delay_random_max: Duration,
    /// Chance that a frame gets a tail delay on top.
    pub delay_tail_probability: f64,
    /// Largest tail delay.
    pub delay_tail_max: Duration,
    /// Chance that a frame is lost.
    pub loss_probability: f64,
    /// Chance that a frame arrives twice.
    pub duplicate_probability: f64,
    /// How often random faults are drawn.
    pub fault_tick_interval: Duration,
    /// Chance per tick that a random link clogs.
    pub clog_probability: f64,
    /// Longest clog.
    pub clog_duration_max: Duration,
    /// Chance per tick that a partition starts (when none is active).
    pub partition_probability: f64,
    /// Which links a partition cuts.
    pub partition_mode: PartitionMode,
    /// Both directions (or only one, chosen at random).
    pub partition_symmetric: bool,
    /// Shortest partition.
    pub partition_duration_min: Duration,
    /// Longest partition.
    pub partition_duration_max: Duration,
    /// Quiet time after a heal before the next partition may start.
    pub partition_stability: Duration,
    /// Chance per tick that a random link's connection resets.
    pub reset_probability: f64,
    /// Chance per tick that a random node crashes.
    pub crash_probability: f64,
    /// Quiet time after a crash or restart before the next crash.
    pub crash_stability: Duration,
    /// Shortest time from a crash to the restart.
    pub restart_delay_min: Duration,
    /// Longest time from a crash to the restart.
    pub restart_delay_max: Duration,
    /// Most nodes down at once.
    pub crashed_max: u32,
    /// Chance per tick that a random node pauses.
    pub pause_probability: f64,
    /// Longest pause.
    pub pause_duration_max: Duration,
    /// Chance that a server handles a request late.
    pub slow_handle_probability: f64,
    /// Longest handle delay.
    pub slow_handle_delay_max: Duration,
    /// Largest clock offset of a node.
    pub clock_offset_max: Duration,
    /// Largest clock rate error of a node, in parts per million.
    pub clock_drift_ppm_max: u32,
    /// Chance that a server's answer to a pull is corrupted.
    pub corrupt_probability: f64,
}

impl FaultPlan {
    /// No faults: short, fixed-order delays and exact clocks.
    pub fn calm() -> Self {
        Self {
            classes: FaultClasses::NONE,
            delay_min: Duration::from_micros(100),
            delay_random_max: Duration::from_micros(400),
            delay_tail_probability: 0.0,
            delay_tail_max: Duration::ZERO,
            loss_probability: 0.0,
            duplicate_probability: 0.0,
            fault_tick_interval: Duration::from_millis(50),
            clog_probability: 0.0,
            clog_duration_max: Duration::ZERO,
            partition_probability: 0.0,
            partition_mode: PartitionMode::IsolateSingle,
            partition_symmetric: true,
            partition_duration_min: Duration::ZERO,
            partition_duration_max: Duration::ZERO,
            partition_stability: Duration::ZERO,
            reset_probability: 0.0,
            crash_probability: 0.0,
            crash_stability: Duration::ZERO,
            restart_delay_min: Duration::ZERO,
            restart_delay_max: Duration::ZERO,
            crashed_max: 0,
            pause_probability: 0.0,
            pause_duration_max: Duration::ZERO,
            slow_handle_probability: 0.0,
            slow_handle_delay_max: Duration::ZERO,
            clock_offset_max: Duration::ZERO,
            clock_drift_ppm_max: 0,
            corrupt_probability: 0.0,
        }
    }

    /// Draws a plan from `rng`, using only classes in `allowed`. About one
    /// seed in eight is calm; otherwise each allowed class is on with
    /// probability 3/4 and its strength is drawn too.
    pub fn swarm(rng: &mut Rng, allowed: FaultClasses) -> Self {
        let mut plan = Self::calm();
        let calm = rng.chance(0.125);
        let mut classes = FaultClasses::NONE;
        // Classes added later draw after everything else (below), so that
        // a seed keeps the plan it had before they existed.
        let later = [FaultClass::Corrupt];
        for class in FaultClass::ALL.into_iter().filter(|c| !later.contains(c)) {
            // Draw for every class, allowed or not, so that switching one
            // class off does not change what the seed means for the others.
            if rng.chance(0.75) && !calm && allowed.contains(class) {
                classes = classes.with(class);
            }
        }
        plan.classes = classes;
        let ms = |rng: &mut Rng, lo: u64, hi: u64| Duration::from_millis(lo + rng.below(hi - lo + 1));
        let us = |rng: &mut Rng, lo: u64, hi: u64| Duration::from_micros(lo + rng.below(hi - lo + 1));
        plan.delay_min = us(rng, 10, 1000);
        plan.delay_random_max = us(rng, 0, 2000);
        plan.delay_tail_probability = rng.unit() * 0.05;
        plan.delay_tail_max = ms(rng, 0, 20);
        // Strengths are drawn whatever the classes, for the same reason.
        let loss = rng.unit() * 0.05;
        let duplicate = rng.unit() * 0.05;
        let clog = (rng.unit() * 0.05, ms(rng, 10, 2000));
        let partition_probability = rng.unit() * 0.05;
        let partition_mode = match rng.below(3) {
            0 => PartitionMode::IsolateSingle,
            1 => PartitionMode::UniformSplit,
            _ => PartitionMode::SchedulerFromOne,
        };
        let partition_symmetric = rng.chance(0.5);
        let partition_duration_min = ms(rng, 50, 500);
        let partition_duration_max = partition_duration_min + ms(rng, 0, 3000);
        let partition_stability = ms(rng, 100, 2000);
        let reset = rng.unit() * 0.02;
        let crash = (rng.unit() * 0.05, ms(rng, 0, 2000));
        let restart_delay_min = ms(rng, 0, 500);
        let restart_delay_max = restart_delay_min + ms(rng, 0, 2500);
        let crashed_max = 1 + rng.below(2) as u32;
        let pause = (rng.unit() * 0.03, ms(rng, 10, 2000));
        let slow = (rng.unit() * 0.3, ms(rng, 1, 50));
        let clock = (ms(rng, 0, 10_000), rng.below(201) as u32);
        // Strengths are kept whatever the classes; a class that is off has
        // probability zero (or, for clocks, no offset and no drift), which
        // is exactly what `without` produces.
        plan.clog_duration_max = clog.1;
        plan.partition_mode = partition_mode;
        plan.partition_symmetric = partition_symmetric;
        plan.partition_duration_min = partition_duration_min;
        plan.partition_duration_max = partition_duration_max;
        plan.partition_stability = partition_stability;
        plan.crash_stability = crash.1;
        plan.restart_delay_min = restart_delay_min;
        plan.restart_delay_max = restart_delay_max;
        plan.crashed_max = crashed_max;
        plan.pause_duration_max = pause.1;
        plan.slow_handle_delay_max = slow.1;
        (plan.loss_probability, plan.duplicate_probability) = (loss, duplicate);
        (plan.clog_probability, plan.partition_probability, plan.reset_probability) =
            (clog.0, partition_probability, reset);
        (plan.crash_probability, plan.pause_probability, plan.slow_handle_probability) = (crash.0, pause.0, slow.0);
        (plan.clock_offset_max, plan.clock_drift_ppm_max) = clock;
        if rng.chance(0.75) && !calm && allowed.contains(FaultClass::Corrupt) {
            classes = classes.with(FaultClass::Corrupt);
        }
        plan.corrupt_probability = rng.unit() * 0.05;
        let mut plan = FaultClass::ALL.into_iter().filter(|c| !classes.contains(*c)).fold(plan, |p, c| p.without(c));
        plan.classes = classes;
        plan
    }

    /// The same plan without `class`: the run a seed gives when that
    /// class is switched off (every other draw stays the same).
    pub fn without(&self, class: FaultClass) -> Self {
        let mut plan = self.clone();
        plan.classes = plan.classes.without(class);
        match class {
            FaultClass::Reorder => {}
            FaultClass::Clog => plan.clog_probability = 0.0,
            FaultClass::Partition => plan.partition_probability = 0.0,
            FaultClass::Loss => plan.loss_probability = 0.0,
            FaultClass::Duplicate => plan.duplicate_probability = 0.0,
            FaultClass::Reset => plan.reset_probability = 0.0,
            FaultClass::CrashServer | FaultClass::CrashWorker => {}
            FaultClass::Pause => plan.pause_probability = 0.0,
            FaultClass::SlowHandle => plan.slow_handle_probability = 0.0,
            FaultClass::ClockDrift => {
                plan.clock_offset_max = Duration::ZERO;
                plan.clock_drift_ppm_max = 0;
            }
            FaultClass::Corrupt => plan.corrupt_probability = 0.0,
        }
        if !plan.classes.contains(FaultClass::CrashServer) && !plan.classes.contains(FaultClass::CrashWorker) {
            plan.crash_probability = 0.0;
        }
        plan
    }

    /// Whether frames on one link may overtake each other.
    pub fn reorder(&self) -> bool {
        self.classes.contains(FaultClass::Reorder)
    }

    /// The longest one-way delay of a frame that is neither clogged nor
    /// held by a pause.
    pub fn delay_max(&self) -> Duration {
        self.delay_min + self.delay_random_max + self.delay_tail_max
    }

    /// Whether every frame arrives, and its ACK returns, well within
    /// `resend_timeout`: no class that loses or holds frames (loss, resets,
    /// partitions, clogs, pauses, crashes) and round trips of at most a
    /// tenth of the timeout. Then nothing is ever resent.
    pub fn delivers_promptly(&self, resend_timeout: Duration) -> bool {
        let holds = [
            FaultClass::Loss,
            FaultClass::Reset,
            FaultClass::Partition,
            FaultClass::Clog,
            FaultClass::Pause,
            FaultClass::CrashServer,
            FaultClass::CrashWorker,
        ];
        !holds.iter().any(|class| self.classes.contains(*class)) && self.delay_max() * 20 < resend_timeout
    }

    /// Whether frames can be lost without a node dying (then no bound that
    /// relies on a table reaching everyone holds).
    pub fn loses_frames(&self) -> bool {
        self.loss_probability > 0.0
    }
}

impl fmt::Display for FaultPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on = |class: FaultClass| if self.classes.contains(class) { "on " } else { "off" };
        writeln!(f, "  faults              {:?}", self.classes)?;
        writeln!(
            f,
            "  delay               min {:?} + uniform {:?}, tail {:.4} x up to {:?}; reorder {}",
            self.delay_min,
            self.delay_random_max,
            self.delay_tail_probability,
            self.delay_tail_max,
            on(FaultClass::Reorder)
        )?;
        writeln!(f, "  loss                {} p={:.4}", on(FaultClass::Loss), self.loss_probability)?;
        writeln!(f, "  duplicate           {} p={:.4}", on(FaultClass::Duplicate), self.duplicate_probability)?;
        writeln!(f, "  fault tick          {:?}", self.fault_tick_interval)?;
        writeln!(
            f,
            "  clog                {} p={:.4} up to {:?}",
            on(FaultClass::Clog),
            self.clog_probability,
            self.clog_duration_max
        )?;
        writeln!(
            f,
            "  partition           {} p={:.4} {:?} {} for {:?}..{:?}, stability {:?}",
            on(FaultClass::Partition),
            self.partition_probability,
            self.partition_mode,
            if self.partition_symmetric { "symmetric" } else { "one-way" },
            self.partition_duration_min,
            self.partition_duration_max,
            self.partition_stability
        )?;
        writeln!(f, "  reset               {} p={:.4}", on(FaultClass::Reset), self.reset_probability)?;
        writeln!(
            f,
            "  crash               servers {} workers {} p={:.4} stability {:?}, restart after {:?}..{:?}, at most {} down",
            on(FaultClass::CrashServer),
            on(FaultClass::CrashWorker),
            self.crash_probability,
            self.crash_stability,
            self.restart_delay_min,
            self.restart_delay_max,
            self.crashed_max
        )?;
        writeln!(
            f,
            "  pause               {} p={:.4} up to {:?}",
            on(FaultClass::Pause),
            self.pause_probability,
            self.pause_duration_max
        )?;
        writeln!(
            f,
            "  slow handle         {} p={:.4} up to {:?}",
            on(FaultClass::SlowHandle),
            self.slow_handle_probability,
            self.slow_handle_delay_max
        )?;
        writeln!(
            f,
            "  clock drift         {} offset up to {:?}, rate up to {} ppm",
            on(FaultClass::ClockDrift),
            self.clock_offset_max,
            self.clock_drift_ppm_max
        )?;
        write!(f, "  corrupt answers     {} p={:.4}", on(FaultClass::Corrupt), self.corrupt_probability)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_parse_and_print_back() {
        for text in ["default", "all", "none", "crash-server,pause", "loss"] {
            let set = FaultClasses::parse(text).unwrap();
            assert_eq!(FaultClasses::parse(&set.to_arg()).unwrap(), set);
        }
        assert!(FaultClasses::parse("pause,bogus").unwrap_err().contains("bogus"));
        assert!(FaultClasses::DEFAULT.contains(FaultClass::Loss));
        assert!(FaultClasses::DEFAULT.contains(FaultClass::CrashWorker));
        assert!(FaultClasses::DEFAULT.contains(FaultClass::CrashServer));
    }

    #[test]
    fn swarm_uses_only_allowed_classes_and_varies_by_seed() {
        let allowed = FaultClasses::NONE.with(FaultClass::CrashServer).with(FaultClass::Clog);
        let mut seen_on = false;
        let mut plans = Vec::new();
        for seed in 0..32 {
            let plan = FaultPlan::swarm(&mut Rng::new(seed), allowed);
            assert_eq!(plan.classes.0 & !allowed.0, 0, "seed {seed}: {:?}", plan.classes);
            assert!(plan.loss_probability == 0.0 && plan.partition_probability == 0.0);
            seen_on |= plan.crash_probability > 0.0;
            plans.push(plan);
        }
        assert!(seen_on);
        assert!(plans.windows(2).any(|w| w[0] != w[1]));
    }
}
