//! The replica tables every node holds: one per epoch, the same on every
//! node, shaped like the cluster, and changed only as deaths, restarts
//! and catch-ups allow (the replication design's config agreement).
//!
//! Checked by hand from the tables' parts, not with the core's own
//! `Chains::from_parts`, so a bug there cannot hide itself.

use std::collections::BTreeMap;

use pslite_core::wire::NodeEntry;
use pslite_core::{Chains, Incarnation, NodeId, RangeChain, Rank, ServerRanges};

use super::{violation, Check};

/// Every replica table seen, by epoch (the node tables that came with them
/// are the checker's).
#[derive(Debug)]
pub(crate) struct Placement {
    replicas: u8,
    ranges: ServerRanges,
    tables: BTreeMap<u64, Chains>,
}

impl Placement {
    pub(crate) fn new(replicas: u8, ranges: ServerRanges) -> Self {
        Self { replicas, ranges, tables: BTreeMap::new() }
    }

    /// The epoch of the newest replica table seen.
    pub(crate) fn latest_epoch(&self) -> Option<u64> {
        self.tables.last_key_value().map(|(&epoch, _)| epoch)
    }

    /// The newest replica table seen.
    pub(crate) fn latest(&self) -> Option<&Chains> {
        self.tables.last_key_value().map(|(_, chains)| chains)
    }

    /// `node` holds `chains` with the node table `entries` at `epoch`;
    /// `node_tables` are the node tables seen so far, by epoch.
    pub(crate) fn check(
        &mut self,
        node: NodeId,
        epoch: u64,
        entries: &[NodeEntry],
        chains: &Chains,
        node_tables: &BTreeMap<u64, Vec<NodeEntry>>,
    ) -> Check {
        if let Some(known) = self.tables.get(&epoch) {
            if known != chains {
                return violation(format!(
                    "placement: node {node} holds another replica table at epoch {epoch} than others did:\n  \
                     {chains:?}\n  {known:?}"
                ));
            }
            return Ok(());
        }
        self.check_shape(node, epoch, entries, chains)?;
        if let Some(before) = with_entries(self.tables.range(..epoch).next_back(), node_tables) {
            check_change(before, (epoch, entries, chains))?;
        }
        if let Some(after) = with_entries(self.tables.range(epoch + 1..).next(), node_tables) {
            check_change((epoch, entries, chains), after)?;
        }
        self.tables.insert(epoch, chains.clone());
        Ok(())
    }

    /// One chain per range of the cluster's partition, at most R distinct
    /// live servers in each, a learner that is live and not a member, and
    /// no change dated after the table.
    fn check_shape(&self, node: NodeId, epoch: u64, entries: &[NodeEntry], chains: &Chains) -> Check {
        let what =
            |problem: String| violation(format!("placement: node {node}, epoch {epoch}: {problem}\n  {chains:?}"));
        if chains.replicas() != self.replicas {
            return what(format!("{} replicas, the cluster keeps {}", chains.replicas(), self.replicas));
        }
        let ranges: Vec<_> = chains.as_slice().iter().map(RangeChain::range).collect();
        if ranges != self.ranges.as_slice() {
            return what(format!("ranges {ranges:?} are not the cluster's {:?}", self.ranges));
        }
        let alive = |rank: Rank| entries.iter().any(|e| e.id == NodeId::server(rank) && e.alive);
        for (index, chain) in chains.as_slice().iter().enumerate() {
            if chain.members().len() > usize::from(self.replicas) {
                return what(format!("range {index} has more than {} members", self.replicas));
            }
            let named: Vec<Rank> = chain.members().iter().copied().chain(chain.learner()).collect();
            for (at, rank) in named.iter().enumerate() {
                if named[..at].contains(rank) {
                    return what(format!("range {index} names server {} twice", rank.0));
                }
                if !alive(*rank) {
                    return what(format!("range {index} names server {}, dead or unknown in the same table", rank.0));
                }
            }
            if chain.changed_at() > epoch {
                return what(format!("range {index} changed at epoch {}, after its table", chain.changed_at()));
            }
        }
        Ok(())
    }
}

/// A replica table seen, with the node table of its epoch.
fn with_entries<'a>(
    table: Option<(&u64, &'a Chains)>,
    node_tables: &'a BTreeMap<u64, Vec<NodeEntry>>,
) -> Option<(u64, &'a [NodeEntry], &'a Chains)> {
    let (&epoch, chains) = table?;
    node_tables.get(&epoch).map(|entries| (epoch, entries.as_slice(), chains))
}

/// From one table to a later one: a server leaves a chain only by dying
/// (so a range is lost only when all its members died); between adjacent
/// epochs it joins only as the tail, and only as the learner that caught
/// up or as a new process starting a lost range; survivors keep their
/// order; and `changed_at` moves exactly when members change.
fn check_change(old: (u64, &[NodeEntry], &Chains), new: (u64, &[NodeEntry], &Chains)) -> Check {
    let ((old_epoch, old_entries, old_chains), (new_epoch, new_entries, new_chains)) = (old, new);
    let incarnation = |entries: &[NodeEntry], rank: Rank| -> Option<(Incarnation, bool)> {
        entries.iter().find(|e| e.id == NodeId::server(rank)).map(|e| (e.incarnation, e.alive))
    };
    let gone = |rank: Rank| match (incarnation(old_entries, rank), incarnation(new_entries, rank)) {
        (Some((before, _)), Some((after, alive))) => after > before || !alive,
        _ => true,
    };
    for (index, (was, is)) in old_chains.as_slice().iter().zip(new_chains.as_slice()).enumerate() {
        let what = |problem: String| {
            violation(format!(
                "placement: range {index} from epoch {old_epoch} to {new_epoch}: {problem}\n  {was:?}\n  {is:?}"
            ))
        };
        for &rank in was.members().iter().filter(|r| !is.holds(**r)) {
            if !gone(rank) {
                return what(format!("server {} left the chain alive", rank.0));
            }
        }
        // Tables between the two, not seen here, may have lost the range
        // and had a new process start it.
        let unseen_between = new_epoch > old_epoch + 1;
        for &rank in is.members().iter().filter(|r| !was.holds(**r)) {
            if unseen_between {
                // Several changes happened in between (a restart that
                // started a lost range, a learner promoted and the next
                // one too): each was checked where it could be seen.
                continue;
            }
            if !(was.learner() == Some(rank) || was.is_lost()) {
                return what(format!("server {} joined without catching up", rank.0));
            }
            if is.tail() != Some(rank) {
                return what(format!("server {} joined, but not as the tail", rank.0));
            }
        }
        let kept: Vec<Rank> = is.members().iter().copied().filter(|r| was.holds(*r)).collect();
        let order: Vec<Rank> = was.members().iter().copied().filter(|r| is.holds(*r)).collect();
        if kept != order {
            return what("survivors changed order".into());
        }
        if is.changed_at() < was.changed_at() || (is.changed_at() == was.changed_at() && is.members() != was.members())
        {
            return what("members changed without changed_at moving on".into());
        }
        if !unseen_between && is.changed_at() != was.changed_at() && is.members() == was.members() {
            return what("changed_at moved, but the members did not change".into());
        }
    }
    Ok(())
}
