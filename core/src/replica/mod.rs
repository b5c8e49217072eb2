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
//! | `serve` | the wiring on a server: which requests it takes for which range, batches down and commit reports up the chain, held messages, the read lease, and a member's moves on a new table |
//! | `catch_up` | the wiring of `transfer`: when a tail streams a range to its learner, chunk reads by the application, the learner's installs, and the tail waiting for a caught-up learner before it reports it to the scheduler |
//!
//! ## How the node wires them
//!
//! With `replicas = 1` nothing here runs: requests go as they always did.
//! With more:
//! - **Worker** (`requests`): each part goes where `route::target` says,
//!   carrying the epoch it was routed under and its customer's floor (the
//!   oldest request still waiting); on a table in which its server left
//!   the chain, `route::reroute` sends it again or fails it with the range
//!   lost; pulls pass through `route::ProgramOrder`; a redirect from a
//!   server with a newer table waits for that table.
//! - **Head** (`serve`): `member::RangeMember::admit` decides on each push
//!   part; a new one reaches the application as before, and its answer
//!   comes back with the handle's `export` of the keys, which becomes the
//!   batch that goes down the chain. The answer is owed until the batch
//!   commits.
//! - **Every other member**: batches from its current predecessor only
//!   (older epochs dropped, newer ones held until the table arrives) are
//!   handed to the application as installs, in order; the tail reports
//!   `Committed` upstream, while it holds its read lease.
//! - **A new table**: each member compares its place before and after:
//!   tail now → `become_tail` (answers due); new successor → `resend`;
//!   head now → `become_head`.
//! - **Application**: installs run in the order the node hands them out
//!   and before any later request on the same handle, which inline and
//!   threaded handles do and deferred ones cannot promise: a deferred
//!   handle refuses replicated pushes.
//! - **Catch-up** (`catch_up`): the tail of a range with a learner
//!   streams it the range's state in chunks the application reads
//!   (`Event::Export`), mixed with the batches it applies; the learner
//!   installs them in stream order. Once the learner holds every chunk,
//!   the tail commits a batch only when the learner has it too, and once
//!   the learner also holds every batch the tail acknowledged alone, the
//!   tail reports it to the scheduler, whose `placement::on_caught_up`
//!   makes it the tail.

pub(crate) mod catch_up;
pub(crate) mod dedup;
pub(crate) mod log;
pub(crate) mod member;
pub(crate) mod route;
pub(crate) mod serve;
pub(crate) mod transfer;
