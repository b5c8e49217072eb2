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
//! Modules: [`setup`] (what a run is), [`sim`] (the event loop and the
//! nodes' drain), [`queue`], [`network`], [`faults`] (the plan) and the
//! injector that carries it out, the scripted faults and hand commands of
//! scenario tests, [`cluster`] (slots, processes, clocks), the
//! workers' [`workload`] and its [`values`], the [`checker`], the
//! [`trace`] and [`replay`].
//!
//! ## Design notes
//!
//! * A frame travels on a connection to one process: it is bound to the
//!   receiving process when sent, so a restarted process never receives
//!   what was sent to its predecessor (as with TCP). Frames a process sent
//!   before it crashed still arrive — that is how stale incarnations meet
//!   their receivers.
//! * A clog holds frames and delivers them late (a connection that
//!   survives); a partition or a reset loses them (one that does not).
//! * The scheduler is never crashed, since nothing can replace it (as in
//!   ps-lite); it is paused and partitioned like any node.
//! * A script belongs to its worker's slot: a restarted worker goes on
//!   where its predecessor stopped.
//! * In the liveness phase a supervisor stops and restarts nodes the
//!   scheduler declared dead (they can never rejoin on their own), and
//!   calls `finalize` everywhere once the cluster has been whole for a
//!   failure-detection period.
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
mod corrupt;
pub mod faults;
mod injector;
mod liveness;
pub mod network;
pub mod queue;
pub mod replay;
mod scripted;
pub mod setup;
pub mod sim;
pub mod trace;
pub mod values;
mod worker;
pub mod workload;

pub use checker::{Bounds, Checker, Completion, Disturbance, Issued, RequestKey, StoreId, Violation};
pub use cluster::{Timing, SCHEDULER_SLOT};
pub use faults::{FaultClass, FaultClasses, FaultPlan, PartitionMode};
pub use replay::{reproduce_command, Failure, FailureKind, Outcome, RunStats, SwarmOptions};
pub use setup::{Limits, Setup};
pub use sim::Sim;
pub use values::{Sum, ValueMode};
pub use worker::SIMPLE_APP;
pub use workload::{Op, Script, SimpleTarget, Workload};
