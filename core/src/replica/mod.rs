//! Replicated key ranges: the parts a chain member runs for each range it
//! holds, apart from the node that wires them to the wire and the
//! application.
//!
//! | module | owns |
//! |---|---|
//! | `log` | one member's ordered log of one range: the next number, what it applied, `Sent`, batches held back |
//! | `dedup` | the pushes a range applied, by the worker's id for them, so one sent again to a new head is applied once |
//! | `transfer` | catching a restarted server up: the tail's stream of key-ordered chunks mixed with live batches, its pacing, and what the learner installs of each |
//! | `route` | the worker's side: head for pushes, tail for pulls, parts sent again when their server leaves the chain, pulls held behind the same worker's pushes |
//! | `member` | one server's part in one range: log and dedup together, and its decisions on a push, a batch, a commit report and a change of place |
//!
//! The replica table itself (who holds what) is [`Chains`](crate::Chains),
//! and its changes are the scheduler's (`scheduler::placement`).
//!
//! ## How the node wires them (not yet done)
//!
//! With `replicas = 1` nothing here runs: requests go as they always did.
//! With more:
//! - **Worker**: each part goes where `route::target` says, carrying the
//!   epoch it was routed under and its worker's floor (the oldest request
//!   of its customer still waiting); on a table in which its server left
//!   the chain, `route::reroute` sends it again or fails it with the range
//!   lost; pulls pass through `route::ProgramOrder`.
//! - **Head**: `member::RangeMember::admit` decides on each push part; a
//!   new one reaches the application as today, and its answer comes back
//!   with the handle's `export` of the keys, which becomes the batch that
//!   goes down the chain (`Replicate { range, epoch, seq, pushes, state }`).
//!   The answer to the worker is owed until the batch commits.
//! - **Every other member**: batches from its current predecessor only
//!   (older epochs dropped, newer ones held until the table arrives) are
//!   handed to the application as installs, in order, then recorded
//!   (`installed`); the tail answers `Committed { range, seq }` upstream.
//! - **A new table**: each member compares its place before and after:
//!   tail now → `become_tail` (answers due); new successor → `resend`;
//!   head now → `become_head`; learner → a `transfer::Incoming`, and the
//!   tail of that range starts a `transfer::Outgoing` to it. A learner
//!   that caught up tells the scheduler, whose `placement::on_caught_up`
//!   makes it the tail at the next epoch.
//! - **Application**: installs must run in the order the node hands them
//!   out and before any later request on the same handle, which inline and
//!   threaded handles do and deferred ones cannot promise: a deferred
//!   handle refuses to serve a replicated range.
//! - **Simulator**: the checker's stores learn installs (a replica's store
//!   equals the head's as of the batch it installed), pulls are checked
//!   against the tail, and the replication design's invariants after
//!   every event.

// The node wires these once pushes travel along chains; until then only
// their tests use them.
#![cfg_attr(not(test), allow(dead_code))]

pub(crate) mod dedup;
pub(crate) mod log;
pub(crate) mod member;
pub(crate) mod route;
pub(crate) mod serve;
pub(crate) mod transfer;
