//! The scheduler's sub-machine: registration and ids ([`registry`]), group
//! barrier counting ([`barrier`]), who was heard when ([`liveness`]) and
//! which servers hold which key range ([`placement`]).
//!
//! Only the scheduler node has one. Its parts read and change the
//! authoritative membership table, which the node owns and passes in; the
//! node fans out what follows from a change (a death, a replacement) to
//! every component, this one included.

pub(crate) mod barrier;
pub(crate) mod liveness;
pub(crate) mod placement;
pub(crate) mod registry;

/// Everything only the scheduler keeps.
#[derive(Debug, Default)]
pub(crate) struct Scheduler {
    pub(crate) registry: registry::Registry,
    pub(crate) arrivals: barrier::Arrivals,
    pub(crate) heard_at: liveness::HeardAt,
}
