//! The scheduler's half of failure detection: who was heard when, and who
//! has been silent too long.
//!
//! The scheduler answers every heartbeat of a live node with its membership
//! epoch and scans every `heartbeat_interval`; a node silent for
//! `heartbeat_timeout` is declared dead (the node fans the death out and
//! broadcasts the new table, which fails requests waiting on it everywhere).
//!
//! The bound on how late a crash is declared is
//! [`Config::failure_detection_bound`](crate::Config::failure_detection_bound);
//! requests waiting on the crashed node fail one network delay after it.

use std::collections::BTreeMap;

use crate::id::NodeId;
use crate::membership::Membership;
use crate::outbox::Outbox;
use crate::stats::Stats;
use crate::time::{Duration, Instant};
use crate::wire::{Message, NodeEntry};

/// When each node was last heard from.
#[derive(Debug, Default)]
pub(crate) struct HeardAt(BTreeMap<NodeId, Instant>);

impl HeardAt {
    /// `id` counts as heard at `now` (it registered, or replaced a node).
    pub(crate) fn heard(&mut self, id: NodeId, now: Instant) {
        self.0.insert(id, now);
    }

    /// A heartbeat from `from`, sent at `sent_at` by its clock: answered
    /// with the epoch, and that time echoed, when it is alive.
    pub(crate) fn on_heartbeat(
        &mut self,
        now: Instant,
        (from, sent_at): (NodeId, u64),
        membership: &Membership,
        out: &mut Outbox,
        stats: &mut Stats,
    ) {
        if !membership.is_alive(from) {
            // A node we declared dead (or never knew) keeps talking: it is
            // not answered, so it times us out and stops its work.
            stats.unexpected_drops += 1;
            return;
        }
        self.0.insert(from, now);
        out.send(from, Message::HeartbeatAck { epoch: membership.epoch(), echo: sent_at });
    }

    /// The live nodes silent for `timeout` at `now`, in id order.
    pub(crate) fn silent(&self, now: Instant, timeout: Duration, membership: &Membership) -> Vec<NodeEntry> {
        membership
            .iter()
            .filter(|n| n.alive)
            .filter(|n| self.0.get(&n.id).is_none_or(|&at| now.saturating_since(at) >= timeout))
            .copied()
            .collect()
    }
}
