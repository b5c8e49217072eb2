//! The worker's side of replicated ranges: where each part of a request
//! goes, where it goes again when the chain changes, and which pulls wait
//! for the worker's own pushes.
//!
//! A push part goes to the range's head, a pull part to its tail (which
//! has applied everything acknowledged). Ranges never move, only chains
//! change: a part waiting on a server that left the chain is sent again,
//! with the same id, to whoever holds that place now (the new head's dedup
//! table makes the push's second coming harmless), and fails only when
//! the range is lost.
//!
//! Program order: ps-lite programs push and then pull the same keys
//! without waiting in between, and expect to read their push. With one
//! copy the server sees both in order; with a chain the pull goes to the
//! tail while the push may still be on its way down. So a pull part waits
//! while the same worker has a push part to that range unanswered, and
//! goes once they are all answered (or failed).

use std::collections::BTreeMap;

use smallvec::SmallVec;

use crate::chains::RangeChain;
use crate::id::{Incarnation, Rank};
use crate::kv::KvOp;

/// Where a part of `op` on `chain` goes: the head for anything that
/// pushes, the tail for a pull; `None` when the range is lost.
pub(crate) fn target(chain: &RangeChain, op: KvOp) -> Option<Rank> {
    if op.pushes() {
        chain.head()
    } else {
        chain.tail()
    }
}

/// What became of a part whose server left the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reroute {
    /// Still at its server: nothing to do.
    Stay,
    /// Send it again, same id, to this server.
    To(Rank),
    /// Every copy of the range is gone: the part fails.
    Lost,
}

/// A part sent to the process `sent_to` while the processes `sent_while`
/// held its range, against the new `chain`; `holds(rank, incarnation)`
/// says whether that process is a member of it now. A part whose server
/// is still a member stays even if its place changed (it finishes the part
/// as what it is now: a head that became tail commits at once, a tail that
/// became middle forwards). Processes, not ranks: a restarted server with
/// the same rank starts afresh. When none of the processes that held the
/// range is a member any more, every copy the part could be on is gone
/// (members that joined since started the range afresh): lost.
pub(crate) fn reroute(
    chain: &RangeChain,
    op: KvOp,
    sent_to: (Rank, Incarnation),
    sent_while: &[(Rank, Incarnation)],
    holds: impl Fn(Rank, Incarnation) -> bool,
) -> Reroute {
    if holds(sent_to.0, sent_to.1) {
        return Reroute::Stay;
    }
    if !sent_while.iter().any(|&(rank, incarnation)| holds(rank, incarnation)) {
        return Reroute::Lost;
    }
    target(chain, op).map_or(Reroute::Lost, Reroute::To)
}

/// Pull parts held behind the same worker's unanswered pushes, per range.
#[derive(Clone, Debug)]
pub(crate) struct ProgramOrder<P> {
    pushes: BTreeMap<usize, u32>,
    held: BTreeMap<usize, SmallVec<[P; 1]>>,
}

impl<P> Default for ProgramOrder<P> {
    fn default() -> Self {
        Self { pushes: BTreeMap::new(), held: BTreeMap::new() }
    }
}

impl<P> ProgramOrder<P> {
    /// A push part to range `index` went out.
    pub(crate) fn push_sent(&mut self, index: usize) {
        *self.pushes.entry(index).or_insert(0) += 1;
    }

    /// A push part to range `index` was answered or failed: returns the
    /// pulls that may go now.
    pub(crate) fn push_ended(&mut self, index: usize) -> SmallVec<[P; 1]> {
        let Some(count) = self.pushes.get_mut(&index) else {
            debug_assert!(false, "a push ended that was never sent");
            return SmallVec::new();
        };
        *count -= 1;
        if *count > 0 {
            return SmallVec::new();
        }
        self.pushes.remove(&index);
        self.held.remove(&index).unwrap_or_default()
    }

    /// A pull part to range `index`: `Some(part)` to send it now, `None`
    /// when it waits for pushes.
    pub(crate) fn pull(&mut self, index: usize, part: P) -> Option<P> {
        if self.pushes.contains_key(&index) {
            self.held.entry(index).or_default().push(part);
            return None;
        }
        Some(part)
    }

    /// Pull parts waiting, over every range.
    #[cfg(any(test, feature = "inspect"))]
    pub(crate) fn held(&self) -> usize {
        self.held.values().map(SmallVec::len).sum()
    }

    /// Drops held pulls `gone` says no longer wait (their request failed
    /// or timed out).
    pub(crate) fn forget(&mut self, gone: impl Fn(&P) -> bool) {
        for parts in self.held.values_mut() {
            parts.retain(|p| !gone(p));
        }
        self.held.retain(|_, parts| !parts.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chains::Chains;
    use crate::range::ServerRanges;
    use proptest::prelude::*;
    use smallvec::smallvec;

    #[test]
    fn pushes_go_to_the_head_pulls_to_the_tail_and_parts_follow_a_death() {
        let chains = Chains::initial(&ServerRanges::equal(3), 3, 1);
        let chain = &chains.as_slice()[1];
        assert_eq!((target(chain, KvOp::Push), target(chain, KvOp::PushPull)), (Some(Rank(1)), Some(Rank(1))));
        assert_eq!(target(chain, KvOp::Pull), Some(Rank(0)));
        let after =
            |members: &[u32]| RangeChain::new(chain.range(), members.iter().map(|&r| Rank(r)).collect(), None, 2);
        let first = Incarnation(0);
        let before: Vec<(Rank, Incarnation)> = chain.members().iter().map(|&r| (r, first)).collect();
        // Members as processes: `restarted` ranks hold incarnation 1 now.
        let reroute_on = |members: &[u32], restarted: &[u32], op, sent_to: u32| {
            let chain = after(members);
            let holds = |rank: Rank, incarnation: Incarnation| {
                let now = if restarted.contains(&rank.0) { Incarnation(1) } else { first };
                chain.holds(rank) && incarnation == now
            };
            reroute(&chain, op, (Rank(sent_to), first), &before, holds)
        };
        // The head died: a push waiting on it goes to the new head.
        assert_eq!(reroute_on(&[2, 0], &[], KvOp::Push, 1), Reroute::To(Rank(2)));
        // The tail died: a pull waiting on it goes to the new tail.
        assert_eq!(reroute_on(&[1, 2], &[], KvOp::Pull, 0), Reroute::To(Rank(2)));
        // A middle died: parts at the head and the tail stay.
        assert_eq!(reroute_on(&[1, 0], &[], KvOp::Push, 1), Reroute::Stay);
        assert_eq!(reroute_on(&[1, 0], &[], KvOp::Pull, 0), Reroute::Stay);
        assert_eq!(reroute_on(&[], &[], KvOp::Pull, 0), Reroute::Lost);
        // Every member died and the head's restarted process started the
        // range afresh, in the same table: the part's copies are gone.
        assert_eq!(reroute_on(&[1], &[1], KvOp::Push, 1), Reroute::Lost);
        // The head restarted, but a member from before holds the range:
        // the part goes to the head, the new process.
        assert_eq!(reroute_on(&[1, 2], &[1], KvOp::Push, 1), Reroute::To(Rank(1)));
    }

    #[test]
    fn a_pull_waits_for_the_same_workers_pushes_to_its_range_only() {
        let mut order = ProgramOrder::default();
        order.push_sent(0);
        order.push_sent(0);
        assert_eq!(order.pull(1, "pull of range 1"), Some("pull of range 1"), "another range goes at once");
        assert_eq!(order.pull(0, "pull a"), None);
        assert_eq!(order.pull(0, "pull b"), None);
        assert!(order.push_ended(0).is_empty(), "one push still out");
        assert_eq!(order.held(), 2);
        let released: SmallVec<[&str; 1]> = order.push_ended(0);
        assert_eq!(released, smallvec!["pull a", "pull b"] as SmallVec<[&str; 1]>);
        assert_eq!(order.pull(0, "pull c"), Some("pull c"));
        order.push_sent(2);
        assert_eq!(order.pull(2, "timed out"), None);
        order.forget(|p| *p == "timed out");
        assert_eq!(order.held(), 0);
        assert!(order.push_ended(2).is_empty());
    }

    proptest! {
        /// Against a model: a pull goes at once exactly when no push to
        /// its range is out, and every held pull is released by the end of
        /// the last push to its range, in the order it was held.
        #[test]
        fn held_pulls_go_exactly_when_their_range_has_no_push_out(
            ops in proptest::collection::vec((0usize..3, 0u8..3), 0..80),
        ) {
            let mut order = ProgramOrder::default();
            let mut out = [0u32; 3];
            let mut held: [Vec<usize>; 3] = Default::default();
            for (n, (index, what)) in ops.into_iter().enumerate() {
                match what {
                    0 => {
                        order.push_sent(index);
                        out[index] += 1;
                    }
                    1 if out[index] > 0 => {
                        out[index] -= 1;
                        let released: Vec<usize> = order.push_ended(index).into_iter().collect();
                        let expected = if out[index] == 0 { std::mem::take(&mut held[index]) } else { Vec::new() };
                        prop_assert_eq!(released, expected);
                    }
                    _ => {
                        let sent = order.pull(index, n);
                        prop_assert_eq!(sent.is_some(), out[index] == 0);
                        if sent.is_none() {
                            held[index].push(n);
                        }
                    }
                }
                prop_assert_eq!(order.held(), held.iter().map(Vec::len).sum::<usize>());
            }
        }
    }
}
