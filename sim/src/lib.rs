//! # pslite-sim: a deterministic simulator for the pslite core
//!
//! One `u64` seed stands for one run: a cluster of core [`Node`]s on a
//! simulated network, in virtual time, with faults drawn from the seed
//! (crashes, restarts, pauses, clogs, partitions, slow server handles,
//! drifting clocks, and — on request — lost, duplicated and reset frames),
//! workers running seeded scripts of push, pull, push_pull, SimpleApp
//! requests and barriers, and a checker that holds every event to the
//! cluster's invariants. The same seed replays the same run, byte for
//! byte; a failure prints the one command that does it.
//!
//! The design follows TigerBeetle's VOPR: sub-seeds per subsystem, swarm
//! testing of the fault parameters, a safety phase with faults and then a
//! liveness phase with faults healed, and exit codes that tell correctness
//! (129), liveness (128) and panics (127) apart.
//!
//! ```
//! use pslite_sim::{Setup, Sim, SwarmOptions};
//!
//! let mut sim = Sim::new(Setup::swarm(7, SwarmOptions { lite: true, ..SwarmOptions::default() }));
//! let outcome = sim.run();
//! assert!(outcome.passed(), "{}", outcome.report());
//! ```
//!
//! [`Node`]: pslite_core::Node

pub mod checker;
pub mod cluster;
pub mod faults;
mod injector;
mod liveness;
pub mod network;
pub mod queue;
pub mod replay;
pub mod setup;
pub mod sim;
pub mod trace;
mod worker;
pub mod workload;

pub use checker::{Bounds, Checker, Completion, Disturbance, Issued, RequestKey, StoreId, Violation};
pub use cluster::{Timing, SCHEDULER_SLOT};
pub use faults::{FaultClass, FaultClasses, FaultPlan, PartitionMode};
pub use replay::{reproduce_command, Failure, FailureKind, Outcome, RunStats, SwarmOptions};
pub use setup::{Limits, Setup};
pub use sim::Sim;
pub use worker::SIMPLE_APP;
pub use workload::{Op, Script, SimpleTarget, Workload};
