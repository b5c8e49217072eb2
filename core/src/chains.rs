//! The replica configuration: which servers hold each key range, and in
//! what order.
//!
//! With `replicas = R`, every key range is held by a *chain* of up to R
//! servers: pushes enter at the head, which runs the handle and forwards
//! the resulting values; pulls are answered by the tail, which has applied
//! everything that was acknowledged. A server that restarts after a crash
//! does not rejoin a chain at once: it is a *learner* behind the tail until
//! it holds the range's state, then the next table makes it the tail.
//!
//! The scheduler decides every change (`scheduler::placement`) and sends
//! the table with the node table, under the same epoch, so a node never
//! holds a membership of one moment and chains of another. `changed_at`
//! per range lets a server tell a frame sent under an older chain from one
//! sent under the current one without comparing whole tables.

use std::fmt;

use smallvec::SmallVec;

use crate::id::Rank;
use crate::range::{KeyRange, RangesError, ServerRanges};

/// Most copies of a range pslite keeps: enough to survive two crashes.
pub const REPLICAS_MAX: u8 = 3;

/// The servers of one chain, head first.
pub type Members = SmallVec<[Rank; REPLICAS_MAX as usize]>;

/// One key range and the servers that hold it.
///
/// ```
/// use pslite_core::{Chains, KeyRange, Rank, ServerRanges};
/// let chains = Chains::initial(&ServerRanges::equal(3), 2, 1);
/// // Range 1 is held by servers 1 (head) and 2 (tail).
/// let chain = &chains.as_slice()[1];
/// assert_eq!((chain.head(), chain.tail()), (Some(Rank(1)), Some(Rank(2))));
/// assert_eq!(chain.members(), [Rank(1), Rank(2)]);
/// assert!(!chain.is_lost() && chain.learner().is_none());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct RangeChain {
    range: KeyRange,
    members: Members,
    learner: Option<Rank>,
    changed_at: u64,
}

impl RangeChain {
    /// A chain as read from the wire or built by the scheduler; checked
    /// as part of a whole table by [`Chains::from_parts`].
    pub fn new(range: KeyRange, members: Members, learner: Option<Rank>, changed_at: u64) -> Self {
        Self { range, members, learner, changed_at }
    }

    /// The keys.
    pub fn range(&self) -> KeyRange {
        self.range
    }

    /// The in-sync servers, head first, tail last; empty when every one of
    /// them died.
    pub fn members(&self) -> &[Rank] {
        &self.members
    }

    /// Where pushes go: the server that runs the handle and orders them.
    pub fn head(&self) -> Option<Rank> {
        self.members.first().copied()
    }

    /// Where pulls go: the server that has applied everything acknowledged.
    pub fn tail(&self) -> Option<Rank> {
        self.members.last().copied()
    }

    /// A server catching up behind the tail, not yet in the chain.
    pub fn learner(&self) -> Option<Rank> {
        self.learner
    }

    /// The epoch at which the members last changed: a frame sent for this
    /// range under an older epoch was routed by a chain that no longer
    /// holds. A learner coming or going leaves it alone, since routing
    /// never depends on the learner.
    pub fn changed_at(&self) -> u64 {
        self.changed_at
    }

    /// Every member died: the range's state is gone.
    pub fn is_lost(&self) -> bool {
        self.members.is_empty()
    }

    /// Whether `rank` is a member (not a learner).
    pub fn holds(&self, rank: Rank) -> bool {
        self.members.contains(&rank)
    }

    pub(crate) fn members_mut(&mut self) -> &mut Members {
        &mut self.members
    }

    pub(crate) fn set_learner(&mut self, learner: Option<Rank>) {
        self.learner = learner;
    }

    pub(crate) fn set_changed_at(&mut self, epoch: u64) {
        self.changed_at = epoch;
    }
}

impl fmt::Debug for RangeChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}:", self.range)?;
        let ranks: Vec<u32> = self.members.iter().map(|r| r.0).collect();
        write!(f, "{ranks:?}")?;
        if let Some(learner) = self.learner {
            write!(f, "+{}", learner.0)?;
        }
        write!(f, "@{}", self.changed_at)
    }
}

/// Why a replica table is not one pslite can use.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainsError {
    /// The replica count is outside `1..=REPLICAS_MAX`.
    #[error("replicas {0} outside 1..={REPLICAS_MAX}")]
    Replicas(u8),
    /// The ranges do not partition the key space.
    #[error("ranges: {0}")]
    Ranges(#[from] RangesError),
    /// A chain longer than the replica count.
    #[error("range {index} has {len} members, more than {replicas} replicas")]
    TooLong {
        /// The range's index.
        index: usize,
        /// Its member count.
        len: usize,
        /// The table's replica count.
        replicas: u8,
    },
    /// A server named twice in one chain, or both member and learner.
    #[error("range {index} names server {rank} twice")]
    Repeated {
        /// The range's index.
        index: usize,
        /// The server named twice.
        rank: u32,
    },
    /// A server rank beyond the table's server count.
    #[error("range {index} names server {rank}, but there are {servers} servers")]
    NoSuchServer {
        /// The range's index.
        index: usize,
        /// The rank named.
        rank: u32,
        /// The server count (one range per server).
        servers: usize,
    },
}

/// The replica table: one chain per key range, ranges in key order and
/// partitioning `[0, u64::MAX]` (checked on construction). One range per
/// server: the table keeps the cluster's partition and only says who
/// holds each part.
///
/// ```
/// use pslite_core::{Chains, Rank, ServerRanges};
/// // With one replica the table is ps-lite's split: range i on server i.
/// let ranges = ServerRanges::equal(4);
/// let chains = Chains::initial(&ranges, 1, 1);
/// for (i, chain) in chains.as_slice().iter().enumerate() {
///     assert_eq!(chain.members(), [Rank(i as u32)]);
///     assert_eq!(chain.range(), ranges.as_slice()[i]);
/// }
/// // A key's chain is found by binary search, u64::MAX included.
/// assert_eq!(chains.index_of(u64::MAX), Some(3));
/// assert_eq!(Chains::default().index_of(7), None, "no table yet");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chains {
    replicas: u8,
    chains: Vec<RangeChain>,
}

impl Chains {
    /// The first table of a cluster: range `i` is held by servers `i, i+1,
    /// …, i+R-1` (mod the server count), head first, so each server heads
    /// one range and is the second and third copy of its predecessors'.
    /// `replicas` above the server count is cut to it.
    pub fn initial(ranges: &ServerRanges, replicas: u8, epoch: u64) -> Self {
        assert!((1..=REPLICAS_MAX).contains(&replicas), "replicas {replicas} outside 1..={REPLICAS_MAX}");
        let chains = ranges
            .as_slice()
            .iter()
            .enumerate()
            .map(|(index, &range)| RangeChain::new(range, home(index, ranges.len(), replicas).collect(), None, epoch))
            .collect();
        Self { replicas, chains }
    }

    /// A table from its parts, checked: ranges partition the key space,
    /// chains are no longer than `replicas`, and no server appears twice in
    /// a range (as member or learner) or beyond the server count.
    pub fn from_parts(replicas: u8, chains: Vec<RangeChain>) -> Result<Self, ChainsError> {
        if !(1..=REPLICAS_MAX).contains(&replicas) {
            return Err(ChainsError::Replicas(replicas));
        }
        ServerRanges::from_ranges(chains.iter().map(|c| c.range).collect())?;
        let servers = chains.len();
        for (index, chain) in chains.iter().enumerate() {
            if chain.members.len() > usize::from(replicas) {
                return Err(ChainsError::TooLong { index, len: chain.members.len(), replicas });
            }
            let named: Members = chain.members.iter().copied().chain(chain.learner).collect();
            for (at, rank) in named.iter().enumerate() {
                if rank.0 as usize >= servers {
                    return Err(ChainsError::NoSuchServer { index, rank: rank.0, servers });
                }
                if named[..at].contains(rank) {
                    return Err(ChainsError::Repeated { index, rank: rank.0 });
                }
            }
        }
        Ok(Self { replicas, chains })
    }

    /// How many copies of each range the cluster keeps when all is well
    /// (0 before the first table arrived).
    pub fn replicas(&self) -> u8 {
        self.replicas
    }

    /// Every range's chain, in key order.
    pub fn as_slice(&self) -> &[RangeChain] {
        &self.chains
    }

    /// No table yet.
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty()
    }

    /// The index of the range holding `key`; `None` before the first
    /// table.
    pub fn index_of(&self, key: u64) -> Option<usize> {
        let index = self.chains.partition_point(|c| c.range.end_inclusive() < key);
        (index < self.chains.len()).then_some(index)
    }

    /// Whether a frame for range `index` sent under `epoch` was routed by
    /// a chain that has changed since.
    pub fn is_stale(&self, index: usize, epoch: u64) -> bool {
        self.chains.get(index).is_some_and(|c| c.changed_at > epoch)
    }

    /// The ranges `rank` is meant to hold when every server is alive, by
    /// the initial placement.
    pub fn homes_of(&self, rank: Rank) -> impl Iterator<Item = usize> + '_ {
        let servers = self.chains.len();
        (0..servers).filter(move |&index| home(index, servers, self.replicas).any(|r| r == rank))
    }

    /// The servers meant to hold range `index` when every one is alive,
    /// head first.
    pub fn home(&self, index: usize) -> impl Iterator<Item = Rank> {
        home(index, self.chains.len(), self.replicas)
    }

    pub(crate) fn get_mut(&mut self, index: usize) -> &mut RangeChain {
        &mut self.chains[index]
    }
}

/// The initial placement: `i, i+1, …` (mod `servers`), at most `replicas`
/// and at most `servers` of them.
fn home(index: usize, servers: usize, replicas: u8) -> impl Iterator<Item = Rank> {
    let len = usize::from(replicas).min(servers);
    (0..len).map(move |step| Rank(((index + step) % servers) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use smallvec::smallvec;

    #[test]
    fn a_table_that_names_a_server_twice_or_one_that_does_not_exist_is_refused() {
        let ranges = ServerRanges::equal(2);
        let chain = |i: usize, members: Members, learner| RangeChain::new(ranges.as_slice()[i], members, learner, 1);
        let twice = vec![chain(0, smallvec![Rank(0), Rank(0)], None), chain(1, smallvec![Rank(1)], None)];
        assert_eq!(Chains::from_parts(2, twice), Err(ChainsError::Repeated { index: 0, rank: 0 }));
        let learner_too = vec![chain(0, smallvec![Rank(0)], None), chain(1, smallvec![Rank(1)], Some(Rank(1)))];
        assert_eq!(Chains::from_parts(2, learner_too), Err(ChainsError::Repeated { index: 1, rank: 1 }));
        let beyond = vec![chain(0, smallvec![Rank(0)], None), chain(1, smallvec![Rank(2)], None)];
        assert_eq!(Chains::from_parts(2, beyond), Err(ChainsError::NoSuchServer { index: 1, rank: 2, servers: 2 }));
        let long = vec![chain(0, smallvec![Rank(0), Rank(1)], None), chain(1, smallvec![Rank(1)], None)];
        assert_eq!(Chains::from_parts(1, long), Err(ChainsError::TooLong { index: 0, len: 2, replicas: 1 }));
        assert_eq!(Chains::from_parts(4, vec![]), Err(ChainsError::Replicas(4)));
        assert_eq!(Chains::from_parts(1, vec![]), Err(ChainsError::Ranges(RangesError::Empty)));
    }

    #[test]
    fn a_key_at_either_end_of_a_range_belongs_to_it() {
        let chains = Chains::initial(&ServerRanges::equal(5), 2, 1);
        for (index, chain) in chains.as_slice().iter().enumerate() {
            assert_eq!(chains.index_of(chain.range().start()), Some(index));
            assert_eq!(chains.index_of(chain.range().end_inclusive()), Some(index));
        }
        assert_eq!(Chains::default().index_of(0), None);
    }

    #[test]
    fn staleness_compares_the_epoch_with_the_last_change_of_members() {
        let mut chains = Chains::initial(&ServerRanges::equal(2), 2, 3);
        assert!(!chains.is_stale(0, 3) && chains.is_stale(0, 2));
        chains.get_mut(1).set_changed_at(7);
        assert!(chains.is_stale(1, 6) && !chains.is_stale(1, 7) && !chains.is_stale(0, 6));
        assert!(!chains.is_stale(9, 0), "no such range: nothing to be stale against");
    }

    proptest! {
        #[test]
        fn the_initial_table_is_a_valid_partition_with_every_server_heading_one_range(
            servers in 1u32..=16, replicas in 1u8..=REPLICAS_MAX, key: u64,
        ) {
            let ranges = ServerRanges::equal(servers);
            let chains = Chains::initial(&ranges, replicas, 1);
            // What the scheduler builds passes the check a receiver applies.
            let rebuilt = Chains::from_parts(replicas, chains.as_slice().to_vec());
            prop_assert_eq!(rebuilt.as_ref(), Ok(&chains));
            let copies = usize::from(replicas).min(servers as usize);
            for (index, chain) in chains.as_slice().iter().enumerate() {
                prop_assert_eq!(chain.members().len(), copies);
                prop_assert_eq!(chain.head(), Some(Rank(index as u32)));
                prop_assert_eq!(chains.home(index).collect::<Vec<_>>(), chain.members().to_vec());
            }
            // Every server holds exactly `copies` ranges, one as head.
            for rank in 0..servers {
                let held = chains.as_slice().iter().filter(|c| c.holds(Rank(rank))).count();
                prop_assert_eq!(held, copies);
                prop_assert_eq!(chains.homes_of(Rank(rank)).count(), copies);
            }
            let index = chains.index_of(key).expect("a table covers every key");
            prop_assert!(chains.as_slice()[index].range().contains(key));
            prop_assert_eq!(Rank(index as u32), ranges.owner(key), "R=1 routing is today's");
        }
    }
}
