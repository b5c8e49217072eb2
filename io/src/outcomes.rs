//! Outcomes of requests that nobody waited for yet.
//!
//! The node's task records them; `wait` takes them. They are shared under
//! a lock, so a `wait` whose outcome is already in returns at once instead
//! of a round trip through the node's task (two task wake-ups per request
//! in a pipelined worker). A `wait` that finds nothing asks the task, which
//! alone knows whether the request is still pending.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use pslite_core::{CustomerId, Timestamp};

use crate::error::Error;
use crate::msg::{Completion, Ended};

/// The outcomes of one node, shared by its task and its handles.
#[derive(Clone, Debug, Default)]
pub(crate) struct SharedOutcomes(Arc<Mutex<Outcomes>>);

impl SharedOutcomes {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Outcomes> {
        // Nothing here panics while holding the lock; if something did, the
        // maps are still consistent, so carry on rather than panic again.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Outcomes {
    /// Outcomes that carry something: values, replies, errors.
    finished: BTreeMap<(CustomerId, Timestamp), Result<Completion, Error>>,
    /// Plain successes, kept compactly so that fire-and-forget pushes
    /// (ps-lite callers often never wait) cost no memory per request.
    succeeded: BTreeMap<CustomerId, Succeeded>,
    /// How the node ended, once its task stopped: what a `finalize` that
    /// comes after that learns.
    ended: Option<Ended>,
}

impl Outcomes {
    /// Records how the node ended (its task sets it once, as it stops).
    pub(crate) fn set_ended(&mut self, ended: Ended) {
        self.ended = Some(ended);
    }

    /// How the node ended; `None` while its task runs, or if it was aborted.
    pub(crate) fn ended(&self) -> Option<Ended> {
        self.ended.clone()
    }

    /// The outcome of `ts`, if it is in (taken, unless a plain success).
    pub(crate) fn take(&mut self, customer: CustomerId, ts: Timestamp) -> Option<Result<Completion, Error>> {
        if let Some(result) = self.finished.remove(&(customer, ts)) {
            return Some(result);
        }
        self.succeeded.get(&customer).is_some_and(|s| s.contains(ts)).then_some(Ok(Completion::Done))
    }

    /// Keeps the outcome of `ts` for a later `wait`. `pending` says which
    /// timestamps of `customer` the node still works on; every timestamp
    /// the node has been handed is either pending or recorded here.
    pub(crate) fn record(
        &mut self,
        customer: CustomerId,
        ts: Timestamp,
        result: Result<Completion, Error>,
        pending: impl Fn(Timestamp) -> bool,
    ) {
        if matches!(result, Ok(Completion::Done)) {
            self.succeeded.entry(customer).or_default().insert(ts, pending);
        } else {
            self.finished.insert((customer, ts), result);
        }
    }
}

/// Timestamps of one customer that succeeded without data: every one
/// before `below` that is not in `finished` (and not pending), plus the
/// few after it that completed out of order.
///
/// The watermark may only pass timestamps the node was handed: handles
/// issue a customer's timestamps and queue their requests in one step
/// under the customer's clock lock (see `NodeHandle::issue`), so the node
/// receives them in order and every timestamp before one it completed was
/// handed to it before.
///
/// Timestamps wrap after 2^32 requests (hours at full speed), so "before"
/// is [`Timestamp::is_before`]'s serial-number order, and the watermark
/// moves on across the wrap.
#[derive(Debug, Default)]
struct Succeeded {
    below: u32,
    above: BTreeSet<u32>,
    highest: Option<u32>,
}

impl Succeeded {
    fn contains(&self, ts: Timestamp) -> bool {
        ts.is_before(Timestamp(self.below)) || self.above.contains(&ts.0)
    }

    /// Records `ts`, then moves the watermark over every timestamp that is
    /// no longer pending (done, failed into `finished`, or taken by a
    /// wait), so the set stays as small as the requests in flight.
    fn insert(&mut self, ts: Timestamp, pending: impl Fn(Timestamp) -> bool) {
        if !ts.is_before(Timestamp(self.below)) {
            self.above.insert(ts.0);
        }
        let highest = match self.highest {
            Some(h) if ts.is_before(Timestamp(h)) => h,
            _ => ts.0,
        };
        self.highest = Some(highest);
        while !Timestamp(highest).is_before(Timestamp(self.below)) && !pending(Timestamp(self.below)) {
            self.above.remove(&self.below);
            self.below = self.below.wrapping_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watermark_moves_on_across_the_wrap_of_timestamps() {
        let start = u32::MAX - 2;
        let mut succeeded = Succeeded { below: start, ..Succeeded::default() };
        let pending = |ts: Timestamp| ts.0 == 3;
        for ts in [start, u32::MAX - 1, u32::MAX, 0, 1, 2, 4] {
            succeeded.insert(Timestamp(ts), pending);
        }
        // Every one up to 2 is done; 3 is still pending, 4 done after it.
        assert_eq!(succeeded.below, 3);
        for ts in [start, u32::MAX, 0, 2, 4] {
            assert!(succeeded.contains(Timestamp(ts)), "{ts} succeeded");
        }
        assert!(!succeeded.contains(Timestamp(3)), "3 is pending");
        assert!(!succeeded.contains(Timestamp(5)), "5 was never issued");
        assert!(!succeeded.contains(Timestamp(1 << 30)), "far ahead is not done");
        // 3 ends: the watermark passes it and 4.
        succeeded.insert(Timestamp(3), |_| false);
        assert_eq!(succeeded.below, 5);
        assert!(succeeded.above.is_empty());
    }
}
