//! The scheduler's half of the control plane: registration and ids
//! ([`registry`]), group barriers ([`barrier`]) and heartbeats with failure
//! detection ([`liveness`], which also holds the other nodes' half).

pub mod barrier;
pub mod liveness;
pub mod registry;

use std::collections::BTreeMap;

use crate::id::NodeId;
use crate::time::Instant;

/// Everything only the scheduler keeps.
#[derive(Debug, Default)]
pub(crate) struct SchedulerState {
    pub(crate) registry: registry::Registry,
    pub(crate) barriers: barrier::Barriers,
    /// When each node was last heard from.
    pub(crate) heard_at: BTreeMap<NodeId, Instant>,
}
