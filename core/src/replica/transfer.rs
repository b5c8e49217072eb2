//! State transfer: how a server that restarted empty catches up with a
//! range while pushes go on.
//!
//! The tail sends the learner one ordered stream that mixes the range's
//! state, in key-ordered chunks, with the live batches it applies. A chunk
//! is read from the tail's store when it is put on the stream, between two
//! batches, so it holds exactly the batches before it; the learner applies
//! the stream strictly in its own order (its items are numbered apart from
//! the range's batch numbers) and installs chunks and batches alike. Since
//! a batch carries the state its push left (not the push), installing one
//! for keys no chunk covered yet is harmless: the chunk that covers them
//! later was read later, and holds the same or newer. After the last chunk
//! the learner holds the tail's state as of the last batch it saw, and
//! reports it has caught up; the next table makes it the tail.
//!
//! Chunks are cut by key count and paced by a byte budget per interval, so
//! training keeps most of the bandwidth. The first chunk's state also
//! carries the range's dedup table as the tail holds it then; later
//! batches carry their pushes, so the learner's table ends as the tail's.

use super::log::{Arrival, ChainLog, Numbered};
use crate::time::{Duration, Instant};

/// One item of the stream to a learner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Item<B, C> {
    /// A live batch, with its number in the range's order.
    Batch(u64, B),
    /// The state of the keys after `from` (or from the range's start)
    /// through `through`; `last` when no key of the range is after it.
    Chunk { through: u64, last: bool, state: C },
}

/// The tail's side: where the walk over the range's keys is, and the
/// numbering of the stream.
#[derive(Clone, Debug)]
pub(crate) struct Outgoing<B, C> {
    /// Keys up to this one were sent (`None`: none yet).
    sent_through: Option<u64>,
    done: bool,
    stream: ChainLog<Item<B, C>>,
    pacer: Pacer,
}

impl<B: Clone, C: Clone> Outgoing<B, C> {
    pub(crate) fn new(pacer: Pacer) -> Self {
        Self { sent_through: None, done: false, stream: ChainLog::default(), pacer }
    }

    /// Whether every chunk went out.
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// The first key the next chunk starts at, or `None` once done.
    pub(crate) fn next_from(&self) -> Option<u64> {
        match (self.done, self.sent_through) {
            (true, _) => None,
            (false, None) => Some(0),
            (false, Some(key)) => key.checked_add(1),
        }
    }

    /// A batch the tail applied goes on the stream.
    pub(crate) fn batch(&mut self, seq: u64, batch: B) -> Numbered<Item<B, C>> {
        self.stream.sequence(Item::Batch(seq, batch), false)
    }

    /// Whether the budget allows a chunk of `bytes` at `now`.
    pub(crate) fn may_send(&mut self, now: Instant, bytes: u64) -> bool {
        !self.done && self.pacer.take(now, bytes)
    }

    /// A chunk read now, covering the keys through `through` (`last` when
    /// it reaches the end of the range), goes on the stream.
    pub(crate) fn chunk(&mut self, through: u64, last: bool, state: C) -> Numbered<Item<B, C>> {
        debug_assert!(self.sent_through.is_none_or(|sent| through > sent), "chunks walk forward");
        self.sent_through = Some(through);
        self.done = last;
        self.stream.sequence(Item::Chunk { through, last, state }, false)
    }
}

/// What the learner does with one stream item, in stream order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Install<B, C> {
    /// Install this chunk.
    Chunk(C),
    /// Install this batch, number `seq` of the range.
    Batch { seq: u64, batch: B },
}

/// The learner's side.
#[derive(Clone, Debug, Default)]
pub(crate) struct Incoming<B, C> {
    stream: ChainLog<Item<B, C>>,
    /// The last batch seen on the stream.
    seq: u64,
    caught_up: bool,
}

impl<B: Clone, C: Clone> Incoming<B, C> {
    /// An item of the stream: what to install now, in order.
    pub(crate) fn receive(&mut self, item: Numbered<Item<B, C>>) -> Vec<Install<B, C>> {
        let Arrival::Apply(ready) = self.stream.receive(item) else {
            return Vec::new();
        };
        self.stream.applied_through(&ready, false);
        ready
            .into_iter()
            .map(|item| match item.payload {
                Item::Batch(seq, batch) => {
                    self.seq = seq;
                    Install::Batch { seq, batch }
                }
                Item::Chunk { last, state, .. } => {
                    self.caught_up |= last;
                    Install::Chunk(state)
                }
            })
            .collect()
    }

    /// Whether the last chunk is installed: the learner holds the range as
    /// of batch [`seq`](Self::seq).
    pub(crate) fn caught_up(&self) -> bool {
        self.caught_up
    }

    /// The last batch the learner installed from the stream.
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }
}

/// A byte budget per interval: chunks wait while the interval's budget is
/// spent. One chunk larger than the budget still goes, alone in its
/// interval, so a large value never stalls the transfer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pacer {
    interval: Duration,
    budget: u64,
    started: Option<Instant>,
    spent: u64,
}

impl Pacer {
    pub(crate) fn new(budget: u64, interval: Duration) -> Self {
        Self { interval, budget, started: None, spent: 0 }
    }

    /// Spends `bytes` at `now` if the current interval allows it.
    pub(crate) fn take(&mut self, now: Instant, bytes: u64) -> bool {
        let fresh = self.started.is_none_or(|start| now >= start + self.interval);
        if fresh {
            self.started = Some(now);
            self.spent = 0;
        }
        if self.spent > 0 && self.spent + bytes > self.budget {
            return false;
        }
        self.spent += bytes;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    type Store = BTreeMap<u64, i64>;
    /// A batch or a chunk: the values of some keys.
    type State = Vec<(u64, i64)>;

    #[test]
    fn the_pacer_lets_one_budget_through_per_interval() {
        let at = |ms| Instant::ZERO + Duration::from_millis(ms);
        let mut pacer = Pacer::new(100, Duration::from_millis(10));
        assert!(pacer.take(at(0), 60) && pacer.take(at(1), 40));
        assert!(!pacer.take(at(2), 1), "spent");
        assert!(pacer.take(at(10), 500), "a large chunk goes alone");
        assert!(!pacer.take(at(11), 1));
    }

    #[derive(Clone, Debug)]
    enum Step {
        /// The tail applies a push of these key offsets and deltas.
        Push(Vec<(u8, i8)>),
        /// The tail sends a chunk of at most this many keys, if paced in.
        Chunk(u8),
        /// Deliver the item in flight at this index.
        Deliver(usize),
        /// Time passes.
        Tick,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => proptest::collection::vec((any::<u8>(), any::<i8>()), 1..6).prop_map(Step::Push),
            2 => (1u8..8).prop_map(Step::Chunk),
            5 => any::<usize>().prop_map(Step::Deliver),
            1 => Just(Step::Tick),
        ]
    }

    proptest! {
        /// A learner fed an interleaving of live batches and chunks, in
        /// any delivery order, ends equal to the tail at the same batch:
        /// what batches changed before a chunk was read is in the chunk,
        /// what they changed after comes with the batch.
        #[test]
        fn a_learner_ends_equal_to_the_tail_at_the_same_batch(
            initial in proptest::collection::btree_map(any::<u8>(), any::<i64>(), 0..40),
            steps in proptest::collection::vec(step(), 0..120),
        ) {
            // Keys spread over the whole space, so ranges are not small integers.
            let key = |offset: u8| u64::from(offset) << 56 | 0x1234;
            let mut tail: Store = initial.iter().map(|(&k, &v)| (key(k), v)).collect();
            let mut learner: Store = Store::new();
            let mut out = Outgoing::<State, State>::new(Pacer::new(64, Duration::from_millis(5)));
            let mut incoming = Incoming::<State, State>::default();
            let mut wire: Vec<Numbered<Item<State, State>>> = Vec::new();
            let mut now = Instant::ZERO;
            let mut seq = 0;
            let install = |learner: &mut Store, installs: Vec<Install<State, State>>| {
                for install in installs {
                    match install {
                        Install::Chunk(state) => learner.extend(state),
                        Install::Batch { batch, .. } => learner.extend(batch),
                    }
                }
            };
            let send_chunk = |tail: &Store, out: &mut Outgoing<State, State>, now: Instant, keys: usize| {
                let from = out.next_from()?;
                let state: State = tail.range(from..).take(keys).map(|(&k, &v)| (k, v)).collect();
                if !out.may_send(now, 16 * state.len().max(1) as u64) {
                    return None;
                }
                let last = state.len() < keys || tail.range(from..).nth(keys).is_none();
                let through = if last { u64::MAX } else { state.last().expect("keys read").0 };
                Some(out.chunk(through, last, state))
            };
            for step in steps {
                match step {
                    Step::Push(deltas) => {
                        seq += 1;
                        let mut batch = State::new();
                        for (offset, delta) in deltas {
                            let value = tail.entry(key(offset)).or_insert(0);
                            *value += i64::from(delta);
                            batch.push((key(offset), *value));
                        }
                        wire.push(out.batch(seq, batch));
                    }
                    Step::Chunk(keys) => wire.extend(send_chunk(&tail, &mut out, now, usize::from(keys))),
                    Step::Deliver(i) if !wire.is_empty() => {
                        let item = wire.remove(i % wire.len());
                        install(&mut learner, incoming.receive(item));
                    }
                    Step::Tick => now += Duration::from_millis(5),
                    _ => {}
                }
                // Whatever arrived, the learner never holds a key the tail
                // does not.
                prop_assert!(learner.keys().all(|k| tail.contains_key(k)));
            }
            // Finish the walk, deliver everything.
            while !out.is_done() {
                now += Duration::from_millis(5);
                wire.extend(send_chunk(&tail, &mut out, now, 4));
            }
            while !wire.is_empty() {
                let item = wire.remove(0);
                install(&mut learner, incoming.receive(item));
            }
            prop_assert!(incoming.caught_up());
            prop_assert_eq!(incoming.seq(), seq);
            prop_assert_eq!(learner, tail);
        }
    }
}
