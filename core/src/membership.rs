//! Who is in the cluster, as this node last heard from the scheduler.
//!
//! The scheduler owns the authoritative table and sends a copy with a new
//! epoch whenever it changes; everyone else replaces theirs only with a
//! newer epoch, so reordered tables cannot roll membership back. Changes
//! between two tables become `NodeDead` / `NodeRecovered` events. The
//! replica table ([`Chains`]) travels and is replaced with it, under the
//! same epoch: who holds a range never belongs to another moment than who
//! is alive.

use std::collections::BTreeMap;

use crate::chains::Chains;
use crate::id::{Group, Incarnation, NodeId, Rank};
use crate::wire::NodeEntry;

/// A change between two tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The node was alive and is dead now.
    Died(NodeId, Incarnation),
    /// The id is held by a new, live incarnation.
    Recovered(NodeId, Incarnation),
}

/// The node table at one epoch.
///
/// ```
/// use pslite_core::{wire::NodeEntry, Chains, Group, Incarnation, Membership, NodeId, Rank};
/// let server = |rank, alive| NodeEntry {
///     id: NodeId::server(Rank(rank)), incarnation: Incarnation(0),
///     addr: "127.0.0.1:9000".parse().unwrap(), instance: 7, alive,
/// };
/// let mut table = Membership::default();
/// table.apply(1, vec![server(0, true), server(1, true)], Chains::default());
/// // Server 1 died: a newer table says so, and the change is reported.
/// assert_eq!(table.apply(2, vec![server(0, true), server(1, false)], Chains::default()).map(|changes| changes.len()), Some(1));
/// assert_eq!(table.alive(Group::SERVERS).collect::<Vec<_>>(), [NodeId::server(Rank(0))]);
/// // An older table is ignored: membership never rolls back.
/// assert_eq!(table.apply(1, vec![server(0, true), server(1, true)], Chains::default()), None);
/// assert!(!table.is_alive(NodeId::server(Rank(1))));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    epoch: u64,
    nodes: BTreeMap<NodeId, NodeEntry>,
    chains: Chains,
}

impl Membership {
    /// The epoch of this table (0: none received yet).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The entry of `id`.
    pub fn get(&self, id: NodeId) -> Option<&NodeEntry> {
        self.nodes.get(&id)
    }

    /// Which servers hold each key range (empty before the first table).
    pub fn chains(&self) -> &Chains {
        &self.chains
    }

    /// All entries, ordered by id.
    pub fn iter(&self) -> impl Iterator<Item = &NodeEntry> {
        self.nodes.values()
    }

    /// Ids of the nodes in `group` (excluding the scheduler, which is not
    /// in the table), alive or not, ordered by id.
    pub fn members(&self, group: Group) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes.values().filter(move |n| n.id.role().is_some_and(|r| group.contains(r))).map(|n| n.id)
    }

    /// Ids of the live nodes in `group`.
    pub fn alive(&self, group: Group) -> impl Iterator<Item = NodeId> + '_ {
        self.members(group).filter(|id| self.nodes[id].alive)
    }

    /// Whether `id` is known and alive.
    pub fn is_alive(&self, id: NodeId) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.alive)
    }

    /// Replaces the table when `epoch` is newer; returns what changed, or
    /// `None` when the table was old and ignored.
    ///
    /// An entry for the scheduler is ignored: nodes reach it at its
    /// configured address, and a table naming it (a corrupt one) would
    /// make it, say, a second target of a group request.
    pub fn apply(&mut self, epoch: u64, nodes: Vec<NodeEntry>, chains: Chains) -> Option<Vec<Change>> {
        if epoch <= self.epoch {
            return None;
        }
        let nodes: Vec<NodeEntry> = nodes.into_iter().filter(|n| n.id != NodeId::SCHEDULER).collect();
        let mut changes = Vec::new();
        let first = self.epoch == 0;
        for entry in &nodes {
            let before = self.nodes.get(&entry.id);
            if first {
                continue;
            }
            match before {
                Some(old) if old.alive && !entry.alive => changes.push(Change::Died(entry.id, entry.incarnation)),
                Some(old) if entry.alive && entry.incarnation > old.incarnation => {
                    changes.push(Change::Recovered(entry.id, entry.incarnation));
                }
                _ => {}
            }
        }
        self.epoch = epoch;
        self.nodes = nodes.into_iter().map(|n| (n.id, n)).collect();
        self.chains = chains;
        Some(changes)
    }

    /// Scheduler only: changes one entry and bumps the epoch.
    pub(crate) fn update(&mut self, entry: NodeEntry) {
        self.epoch += 1;
        self.nodes.insert(entry.id, entry);
    }

    /// Scheduler only: the replica table changed (a learner joined its
    /// chain) under a new epoch, with no node's entry changing.
    pub(crate) fn bump(&mut self) {
        self.epoch += 1;
    }

    /// Scheduler only: installs the first complete table.
    pub(crate) fn install(&mut self, nodes: Vec<NodeEntry>) {
        self.epoch += 1;
        self.nodes = nodes.into_iter().map(|n| (n.id, n)).collect();
    }

    /// Scheduler only: the replica table, changed in place under the
    /// epoch of the membership change that caused it.
    pub(crate) fn chains_mut(&mut self) -> &mut Chains {
        &mut self.chains
    }

    /// Scheduler only: the replica table to change, with who of the
    /// servers is alive in this table (placement's question).
    pub(crate) fn chains_and_live_servers(&mut self) -> (&mut Chains, impl Fn(Rank) -> bool + '_) {
        let nodes = &self.nodes;
        (&mut self.chains, move |rank| nodes.get(&NodeId::server(rank)).is_some_and(|n| n.alive))
    }

    /// The table as sent on the wire.
    pub(crate) fn entries(&self) -> Vec<NodeEntry> {
        self.nodes.values().copied().collect()
    }
}
