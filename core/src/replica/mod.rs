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

// The node wires these once pushes travel along chains; until then only
// their tests use them.
#![cfg_attr(not(test), allow(dead_code))]

pub(crate) mod dedup;
pub(crate) mod log;
pub(crate) mod member;
pub(crate) mod route;
pub(crate) mod transfer;
