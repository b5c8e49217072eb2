//! Which pushes a range has applied, by the worker's own identity for the
//! request, so a push sent again after a failover is applied once.
//!
//! Link-level duplicate filtering (`reliable`) cannot do this: a worker
//! whose head died sends the same push part to the new head, a different
//! server, which may have applied it already through the chain. So every
//! member records, per range, each applied push part's id and the batch
//! that carried it: a resend that finds its id is acknowledged once that
//! batch is committed, never applied again. The table travels with the
//! range (each batch carries its ids; a state transfer carries the table).
//!
//! It stays bounded because the worker says, with each push, the oldest
//! of its requests still waiting (its *floor*): nothing older will ever be
//! sent again, so those entries go. A dead or replaced worker process's
//! entries go with it. Per origin the table never holds more than
//! `ENTRIES_MAX`; a worker that outruns it (no honest one can, since it
//! has at most `requests_pending_max` requests waiting) loses its oldest.
//!
//! Timestamps wrap at 2^32, and an origin's floor moves only when it
//! pushes to this range. An origin silent here for longer than `idle_max`
//! (the request timeout: no request is sent again after it) has nothing
//! that could come again, so its next push starts its entries afresh; a
//! floor left that long could otherwise look newer than a wrapped one,
//! and a new push would be taken for a settled one.

use std::collections::BTreeMap;

use crate::id::{Incarnation, NodeId};
use crate::kv::{CustomerId, Timestamp};
use crate::time::{Duration, Instant};

/// Entries kept per origin at most.
pub(crate) const ENTRIES_MAX: usize = 1 << 16;

/// The process and customer a push came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Origin {
    pub(crate) worker: NodeId,
    pub(crate) incarnation: Incarnation,
    pub(crate) customer: CustomerId,
}

/// What the table knows of a push part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Never applied here: apply it.
    New,
    /// Applied, carried by batch `seq`: acknowledge it once that batch is
    /// committed.
    Applied(u64),
    /// Older than the origin's floor: its worker has its outcome already
    /// and does not wait for an answer.
    Settled,
}

/// One origin's applied pushes, keyed by timestamp relative to its floor
/// so that timestamps keep their order across the 2^32 wrap.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Applied {
    floor: Timestamp,
    /// `ts - floor` → the batch that carried the push.
    by_offset: BTreeMap<u32, u64>,
    /// When the origin last pushed to this range.
    seen: Instant,
}

impl Applied {
    fn offset(&self, ts: Timestamp) -> Option<u32> {
        (!ts.is_before(self.floor)).then(|| ts.0.wrapping_sub(self.floor.0))
    }
}

/// The table of one range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DedupTable {
    origins: BTreeMap<Origin, Applied>,
    idle_max: Duration,
}

impl DedupTable {
    /// An empty table that forgets origins silent for over `idle_max`.
    pub(crate) fn new(idle_max: Duration) -> Self {
        Self { origins: BTreeMap::new(), idle_max }
    }

    /// What the table knows of push `ts` from `origin`.
    pub(crate) fn check(&self, origin: Origin, ts: Timestamp) -> Seen {
        let Some(applied) = self.origins.get(&origin) else {
            return Seen::New;
        };
        match applied.offset(ts) {
            None => Seen::Settled,
            Some(offset) => applied.by_offset.get(&offset).map_or(Seen::New, |&seq| Seen::Applied(seq)),
        }
    }

    /// Push `ts` from `origin` was applied in batch `seq`; the push said
    /// its worker waits on nothing older than `floor`. A push older than the
    /// floor is not recorded (nobody will send it again).
    pub(crate) fn record(&mut self, origin: Origin, ts: Timestamp, floor: Timestamp, seq: u64, now: Instant) {
        self.settle_before(origin, floor, now);
        let applied =
            self.origins.entry(origin).or_insert_with(|| Applied { floor, by_offset: BTreeMap::new(), seen: now });
        let Some(offset) = applied.offset(ts) else {
            return;
        };
        applied.by_offset.insert(offset, seq);
        if applied.by_offset.len() > ENTRIES_MAX {
            applied.by_offset.pop_first();
        }
    }

    /// `origin` waits on nothing older than `floor` at `now`: entries
    /// before it go. A floor that does not move forward changes nothing,
    /// unless the origin was silent so long that its old floor means
    /// nothing any more.
    pub(crate) fn settle_before(&mut self, origin: Origin, floor: Timestamp, now: Instant) {
        let Some(applied) = self.origins.get_mut(&origin) else {
            return;
        };
        if now >= applied.seen + self.idle_max {
            *applied = Applied { floor, by_offset: BTreeMap::new(), seen: now };
            return;
        }
        applied.seen = now;
        let Some(shift) = applied.offset(floor).filter(|&shift| shift > 0) else {
            return;
        };
        let kept = applied.by_offset.split_off(&shift);
        applied.by_offset = kept.into_iter().map(|(offset, seq)| (offset - shift, seq)).collect();
        applied.floor = floor;
    }

    /// Worker `worker` died or was replaced at `incarnation`: its
    /// processes up to that one will send nothing again.
    pub(crate) fn forget_worker(&mut self, worker: NodeId, incarnation: Incarnation) {
        self.origins.retain(|origin, _| origin.worker != worker || origin.incarnation > incarnation);
    }

    /// Every entry, as `(origin, ts, floor, seq)`: what a learner records
    /// to hold the same table.
    pub(crate) fn entries(&self) -> Vec<(Origin, Timestamp, Timestamp, u64)> {
        self.origins
            .iter()
            .flat_map(|(&origin, applied)| {
                applied.by_offset.iter().map(move |(&offset, &seq)| {
                    (origin, Timestamp(applied.floor.0.wrapping_add(offset)), applied.floor, seq)
                })
            })
            .collect()
    }

    /// Entries held, over every origin.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.origins.values().map(|a| a.by_offset.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Rank;
    use proptest::prelude::*;

    const IDLE: Duration = Duration::from_secs(120);

    fn at(secs: u64) -> Instant {
        Instant::ZERO + Duration::from_secs(secs)
    }

    fn origin(worker: u32, incarnation: u32) -> Origin {
        Origin {
            worker: NodeId::worker(Rank(worker)),
            incarnation: Incarnation(incarnation),
            customer: CustomerId::DEFAULT,
        }
    }

    #[test]
    fn a_push_is_known_by_its_id_until_its_worker_settles_past_it() {
        let mut table = DedupTable::new(IDLE);
        let w = origin(0, 0);
        assert_eq!(table.check(w, Timestamp(5)), Seen::New);
        table.record(w, Timestamp(5), Timestamp(3), 17, at(0));
        // Requests of one worker arrive in any order.
        table.record(w, Timestamp(4), Timestamp(3), 18, at(0));
        assert_eq!(table.check(w, Timestamp(4)), Seen::Applied(18));
        table.record(w, Timestamp(9), Timestamp(3), 18, at(0));
        assert_eq!(table.check(w, Timestamp(5)), Seen::Applied(17));
        assert_eq!(table.check(origin(0, 1), Timestamp(5)), Seen::New, "another process, another push");
        table.settle_before(w, Timestamp(7), at(1));
        assert_eq!(table.check(w, Timestamp(5)), Seen::Settled);
        assert_eq!(table.check(w, Timestamp(9)), Seen::Applied(18));
        assert_eq!(table.len(), 1);
        table.record(w, Timestamp(6), Timestamp(3), 19, at(1));
        assert_eq!(table.check(w, Timestamp(6)), Seen::Settled, "settled already: not recorded");
        table.settle_before(w, Timestamp(6), at(1));
        assert_eq!(table.check(w, Timestamp(9)), Seen::Applied(18), "a floor never moves back");
        // Its next process pushes too; forgetting the first keeps the second.
        let next = origin(0, 1);
        table.record(next, Timestamp(2), Timestamp(2), 20, at(1));
        table.forget_worker(NodeId::worker(Rank(0)), Incarnation(0));
        assert_eq!((table.len(), table.check(w, Timestamp(9))), (1, Seen::New));
        assert_eq!(table.check(next, Timestamp(2)), Seen::Applied(20));
    }

    #[test]
    fn an_origin_holds_at_most_its_cap_and_loses_its_oldest_first() {
        let mut table = DedupTable::new(IDLE);
        let w = origin(3, 0);
        let count = ENTRIES_MAX as u32 + 1;
        for ts in 0..count {
            table.record(w, Timestamp(ts), Timestamp(0), u64::from(ts), at(0));
        }
        assert_eq!(table.len(), ENTRIES_MAX);
        assert_eq!(table.check(w, Timestamp(0)), Seen::New, "the oldest went");
        assert_eq!(table.check(w, Timestamp(1)), Seen::Applied(1));
        assert_eq!(table.check(w, Timestamp(count - 1)), Seen::Applied(u64::from(count - 1)));
    }

    #[test]
    fn timestamps_keep_their_order_across_the_wrap() {
        let mut table = DedupTable::new(IDLE);
        let w = origin(1, 0);
        table.record(w, Timestamp(u32::MAX - 1), Timestamp(u32::MAX - 1), 1, at(0));
        table.record(w, Timestamp(2), Timestamp(u32::MAX - 1), 2, at(0));
        table.settle_before(w, Timestamp(u32::MAX), at(0));
        assert_eq!(table.check(w, Timestamp(u32::MAX - 1)), Seen::Settled);
        assert_eq!(table.check(w, Timestamp(2)), Seen::Applied(2), "after the wrap, still ahead of the floor");
    }

    #[test]
    fn an_origin_silent_past_the_request_timeout_starts_afresh() {
        let mut table = DedupTable::new(IDLE);
        let w = origin(2, 0);
        table.record(w, Timestamp(0), Timestamp(0), 1, at(0));
        // 2^31 + 1 requests later (pulls, other ranges) it pushes here
        // again: serially its floor looks older than the one held.
        let far = Timestamp((1 << 31) + 1);
        table.settle_before(w, far, at(10));
        assert_eq!(table.check(w, far), Seen::Settled, "within the timeout the old floor stands");
        table.settle_before(w, far, at(10) + IDLE);
        assert_eq!(table.check(w, far), Seen::New, "silent for a timeout: nothing of it can come again");
        assert_eq!(table.len(), 0);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Record(u8, u32, u32),
        Settle(u8, u32),
        Forget(u8),
        Check(u8, u32),
    }

    proptest! {
        /// Against a model that remembers everything: the table answers
        /// `Applied` exactly for recorded, unsettled, unforgotten pushes,
        /// with their batch; `Settled` exactly below the floor.
        #[test]
        fn the_table_answers_as_a_model_that_forgets_nothing(
            start in any::<u32>(),
            ops in proptest::collection::vec(prop_oneof![
                4 => (0u8..3, 0u32..64, 0u32..16).prop_map(|(w, t, back)| Op::Record(w, t, t.saturating_sub(back))),
                1 => (0u8..3, 0u32..64).prop_map(|(w, t)| Op::Settle(w, t)),
                1 => (0u8..3).prop_map(Op::Forget),
                3 => (0u8..3, 0u32..64).prop_map(|(w, t)| Op::Check(w, t)),
            ], 0..200),
        ) {
            let mut table = DedupTable::new(IDLE);
            // Per worker: recorded (offset → seq), and the floor's offset.
            let mut model: BTreeMap<u8, (BTreeMap<u32, u64>, Option<u32>)> = BTreeMap::new();
            let mut seq = 0;
            let ts = |offset: u32| Timestamp(start.wrapping_add(offset));
            for op in ops {
                match op {
                    Op::Record(w, t, f) => {
                        seq += 1;
                        table.record(origin(u32::from(w), 0), ts(t), ts(f), seq, at(0));
                        let (recorded, floor) = model.entry(w).or_default();
                        let floor = *floor.insert(floor.map_or(f, |old| old.max(f)));
                        recorded.retain(|&at, _| at >= floor);
                        if t >= floor {
                            recorded.insert(t, seq);
                        }
                    }
                    Op::Settle(w, t) => {
                        table.settle_before(origin(u32::from(w), 0), ts(t), at(0));
                        if let Some((recorded, Some(floor))) = model.get_mut(&w) {
                            if t > *floor {
                                *floor = t;
                                recorded.retain(|&at, _| at >= t);
                            }
                        }
                    }
                    Op::Forget(w) => {
                        table.forget_worker(NodeId::worker(Rank(u32::from(w))), Incarnation(0));
                        model.remove(&w);
                    }
                    Op::Check(w, t) => {
                        let expected = match model.get(&w) {
                            Some((_, Some(floor))) if t < *floor => Seen::Settled,
                            Some((recorded, _)) => recorded.get(&t).map_or(Seen::New, |&s| Seen::Applied(s)),
                            None => Seen::New,
                        };
                        prop_assert_eq!(table.check(origin(u32::from(w), 0), ts(t)), expected);
                    }
                }
                let entries: usize = model.values().map(|(r, _)| r.len()).sum();
                prop_assert_eq!(table.len(), entries);
            }
        }
    }
}
