//! How a run ends and how to run it again.
//!
//! A failure is reported the same way everywhere (binary, sweep tests): the
//! fault plan, the last trace entries, then, last, one line saying what
//! broke and one command that replays the run. The exit codes follow
//! TigerBeetle's VOPR so shell loops over seeds can tell failures apart.

use std::fmt;

use pslite_core::Instant;

use crate::faults::FaultClasses;
use crate::values::ValueMode;

/// What kind of failure a run hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// An invariant broke.
    Correctness,
    /// The cluster did not finish after the faults healed.
    Liveness,
    /// Something panicked (an assertion in the core or the simulator).
    Panic,
}

impl FailureKind {
    /// The process exit code for this failure.
    pub const fn exit_code(self) -> u8 {
        match self {
            Self::Panic => 127,
            Self::Liveness => 128,
            Self::Correctness => 129,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Correctness => "correctness",
            Self::Liveness => "liveness",
            Self::Panic => "panic",
        }
    }
}

/// A failed run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Its kind.
    pub kind: FailureKind,
    /// What broke.
    pub what: String,
    /// Virtual time.
    pub at: Instant,
    /// Number of the event during which it broke.
    pub event: u64,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FAILED ({}): {} at {:?} event={}", self.kind.name(), self.what, self.at, self.event)
    }
}

/// The command-line options that, with the seed, determine a swarm run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwarmOptions {
    /// Small clusters and short scripts.
    pub lite: bool,
    /// Fault classes the swarm may draw from.
    pub faults: FaultClasses,
    /// In runs without any fault, every request and barrier must succeed.
    pub strict: bool,
    /// Reliable delivery on or off in every run; `None` draws it per seed
    /// (off in about one seed in four).
    pub resend: Option<bool>,
    /// The kind of pushed values in every run; `None` draws it per seed
    /// (fractions in about one seed in four).
    pub values: Option<ValueMode>,
}

impl Default for SwarmOptions {
    fn default() -> Self {
        Self { lite: false, faults: FaultClasses::DEFAULT, strict: false, resend: None, values: None }
    }
}

impl SwarmOptions {
    /// The options as command-line arguments (empty for the defaults).
    pub fn to_args(self) -> String {
        let mut args = String::new();
        if self.lite {
            args.push_str(" --lite");
        }
        if self.faults != FaultClasses::DEFAULT {
            args.push_str(" --faults ");
            args.push_str(&self.faults.to_arg());
        }
        if self.strict {
            args.push_str(" --strict");
        }
        if let Some(resend) = self.resend {
            args.push_str(if resend { " --resend on" } else { " --resend off" });
        }
        if let Some(values) = self.values {
            args.push_str(" --values ");
            args.push_str(values.name());
        }
        args
    }
}

/// The one command that replays a swarm run.
pub fn reproduce_command(seed: u64, options: SwarmOptions) -> String {
    format!("cargo run -p pslite-sim --release -- --seed {seed:#018x}{}", options.to_args())
}

/// What a run did, for judging how much a sweep exercised.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Processes crashed (by faults or the supervisor).
    pub crashes: u64,
    /// Processes started after a crash.
    pub restarts: u64,
    /// Pauses.
    pub pauses: u64,
    /// Partitions.
    pub partitions: u64,
    /// Clogged links.
    pub clogs: u64,
    /// Connection resets.
    pub resets: u64,
    /// Frames handed to nodes.
    pub frames_delivered: u64,
    /// Frames lost on the way (crashed receiver, partition, loss, reset).
    pub frames_dropped: u64,
    /// Requests issued by workers.
    pub requests_issued: u64,
    /// Requests completed.
    pub requests_done: u64,
    /// Requests failed.
    pub requests_failed: u64,
    /// Barriers released (per node).
    pub barriers_released: u64,
    /// Barriers failed (per node).
    pub barriers_failed: u64,
    /// Deaths the scheduler declared.
    pub deaths_declared: u64,
}

impl RunStats {
    /// Adds `other` to `self`.
    pub fn add(&mut self, other: &Self) {
        self.crashes += other.crashes;
        self.restarts += other.restarts;
        self.pauses += other.pauses;
        self.partitions += other.partitions;
        self.clogs += other.clogs;
        self.resets += other.resets;
        self.frames_delivered += other.frames_delivered;
        self.frames_dropped += other.frames_dropped;
        self.requests_issued += other.requests_issued;
        self.requests_done += other.requests_done;
        self.requests_failed += other.requests_failed;
        self.barriers_released += other.barriers_released;
        self.barriers_failed += other.barriers_failed;
        self.deaths_declared += other.deaths_declared;
    }
}

impl fmt::Display for RunStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "crashes {} restarts {} pauses {} partitions {} clogs {} resets {} deaths {}; frames {} delivered {} \
             dropped; requests {} issued {} done {} failed; barriers {} released {} failed",
            self.crashes,
            self.restarts,
            self.pauses,
            self.partitions,
            self.clogs,
            self.resets,
            self.deaths_declared,
            self.frames_delivered,
            self.frames_dropped,
            self.requests_issued,
            self.requests_done,
            self.requests_failed,
            self.barriers_released,
            self.barriers_failed
        )
    }
}

/// How a run ended.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// `None` when the run passed.
    pub failure: Option<Failure>,
    /// Fingerprint of the whole trace.
    pub fingerprint: u64,
    /// Simulator events processed.
    pub events: u64,
    /// Virtual time at the end.
    pub virtual_time: Instant,
    /// What the run did.
    pub stats: RunStats,
    /// On failure: the plan, the last trace entries and what was pending.
    pub context: String,
    /// How to run it again: a command line, or for hand-written setups a
    /// note naming the seed.
    pub reproduce: String,
}

impl Outcome {
    /// Whether the run passed.
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }

    /// The process exit code: 0, or the failure's.
    pub fn exit_code(&self) -> u8 {
        self.failure.as_ref().map_or(0, |f| f.kind.exit_code())
    }

    /// The whole failure report: context, then, last, the failure line and
    /// the replay command. Empty for a passed run.
    pub fn report(&self) -> String {
        match &self.failure {
            None => String::new(),
            Some(failure) => format!("{}{failure}\nreproduce: {}\n", self.context, self.reproduce),
        }
    }

    /// One line: seed, result, events, virtual time, fingerprint.
    pub fn summary(&self) -> String {
        let result = match &self.failure {
            None => "PASSED".to_owned(),
            Some(f) => format!("FAILED ({})", f.kind.name()),
        };
        format!(
            "seed {:#018x} {result} events={} {:?} fingerprint={:#018x}",
            self.seed, self.events, self.virtual_time, self.fingerprint
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::FaultClass;

    #[test]
    fn reproduce_command_carries_the_options_that_change_the_run() {
        assert_eq!(
            reproduce_command(0x5e3a, SwarmOptions::default()),
            "cargo run -p pslite-sim --release -- --seed 0x0000000000005e3a"
        );
        let faults = FaultClasses::NONE.with(FaultClass::Loss);
        let options = SwarmOptions { lite: true, faults, ..SwarmOptions::default() };
        assert!(reproduce_command(1, options).ends_with("--seed 0x0000000000000001 --lite --faults loss"));
        let options = SwarmOptions { resend: Some(false), ..SwarmOptions::default() };
        assert!(reproduce_command(1, options).ends_with("--seed 0x0000000000000001 --resend off"));
        let options = SwarmOptions { values: Some(ValueMode::Fractions), ..SwarmOptions::default() };
        assert!(reproduce_command(1, options).ends_with("--seed 0x0000000000000001 --values fractions"));
        let options = SwarmOptions { values: Some(ValueMode::Integers), ..SwarmOptions::default() };
        assert!(reproduce_command(1, options).ends_with("--seed 0x0000000000000001 --values integers"));
    }

    #[test]
    fn exit_codes_follow_the_vopr() {
        assert_eq!(FailureKind::Panic.exit_code(), 127);
        assert_eq!(FailureKind::Liveness.exit_code(), 128);
        assert_eq!(FailureKind::Correctness.exit_code(), 129);
    }
}
