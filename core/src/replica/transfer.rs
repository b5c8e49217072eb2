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
use crate::range::KeyRange;
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
/// stream's items until the learner has them.
#[derive(Clone, Debug)]
pub(crate) struct Outgoing<B, C> {
    range: KeyRange,
    /// Keys up to this one were sent (`None`: none yet).
    sent_through: Option<u64>,
    done: bool,
    /// Items are kept, as a chain member keeps `Sent`, until the learner
    /// reports it applied them: one it had to drop is asked for again.
    stream: ChainLog<Item<B, C>>,
    pacer: Pacer,
}

impl<B: Clone, C: Clone> Outgoing<B, C> {
    /// A transfer of `range`'s keys (the tail's store may hold other
    /// ranges too: they are not sent).
    pub(crate) fn new(range: KeyRange, pacer: Pacer) -> Self {
        Self { range, sent_through: None, done: false, stream: ChainLog::default(), pacer }
    }

    /// Whether every chunk went out.
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// The keys the next chunk reads from, or `None` once done.
    pub(crate) fn next_keys(&self) -> Option<KeyRange> {
        let from = match (self.done, self.sent_through) {
            (true, _) => return None,
            (false, None) => self.range.start(),
            (false, Some(key)) => key + 1,
        };
        KeyRange::new(from, self.range.end_inclusive())
    }

    /// A batch the tail applied goes on the stream.
    pub(crate) fn batch(&mut self, seq: u64, batch: B) -> Numbered<Item<B, C>> {
        self.stream.sequence(Item::Batch(seq, batch), true)
    }

    /// The learner applied the stream through item `seq`.
    pub(crate) fn on_acked(&mut self, seq: u64) {
        self.stream.on_committed(seq);
    }

    /// The learner dropped items it could not hold: what it lacks.
    pub(crate) fn resend_from(&self, from: u64) -> Vec<Numbered<Item<B, C>>> {
        self.stream.resend_from(from)
    }

    /// Whether the budget allows a chunk of `bytes` at `now`.
    pub(crate) fn may_send(&mut self, now: Instant, bytes: u64) -> bool {
        !self.done && self.pacer.take(now, bytes)
    }

    /// A chunk read now from [`next_keys`](Self::next_keys), covering
    /// them through `through` (the range's last key once every key of it
    /// the store holds is in), goes on the stream.
    pub(crate) fn chunk(&mut self, through: u64, state: C) -> Numbered<Item<B, C>> {
        debug_assert!(self.sent_through.is_none_or(|sent| through > sent), "chunks walk forward");
        debug_assert!(self.range.contains(through), "chunks stay in the range");
        let last = through >= self.range.end_inclusive();
        self.sent_through = Some(through);
        self.done = last;
        self.stream.sequence(Item::Chunk { through, last, state }, true)
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
#[derive(Clone, Debug)]
pub(crate) struct Incoming<B, C> {
    stream: ChainLog<Item<B, C>>,
    /// The last batch seen on the stream.
    seq: u64,
    caught_up: bool,
}

/// What the learner makes of one stream item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Received<B, C> {
    /// Install these, in order.
    pub(crate) installs: Vec<Install<B, C>>,
    /// Items had to be dropped: ask the tail for everything from this one.
    pub(crate) resend_from: Option<u64>,
}

impl<B, C> Default for Incoming<B, C> {
    fn default() -> Self {
        Self { stream: ChainLog::default(), seq: 0, caught_up: false }
    }
}

impl<B: Clone, C: Clone> Incoming<B, C> {
    /// The same learner, holding at most `held_max` items ahead.
    pub(crate) fn holding_at_most(self, held_max: u64) -> Self {
        Self { stream: self.stream.holding_at_most(held_max), ..self }
    }

    /// An item of the stream.
    pub(crate) fn receive(&mut self, item: Numbered<Item<B, C>>) -> Received<B, C> {
        let ready = match self.stream.receive(item) {
            Arrival::Apply(ready) => ready,
            Arrival::Dropped => {
                return Received { installs: Vec::new(), resend_from: Some(self.stream.applied() + 1) };
            }
            Arrival::Held | Arrival::Duplicate => return Received { installs: Vec::new(), resend_from: None },
        };
        self.stream.applied_through(&ready, false);
        let installs = ready
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
            .collect();
        Received { installs, resend_from: None }
    }

    /// The last stream item applied, to acknowledge to the tail.
    pub(crate) fn applied(&self) -> u64 {
        self.stream.applied()
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

    /// Stream traffic: items to the learner, reports back to the tail.
    #[derive(Clone, Debug)]
    enum Msg {
        Item(Numbered<Item<State, State>>),
        Acked(u64),
        ResendFrom(u64),
    }

    proptest! {
        /// A learner of one range, fed an interleaving of live batches and
        /// chunks in any delivery order (holding one item past the next at most, so
        /// it drops some and asks for them again), ends equal to the tail's
        /// store over that range, caught up at the tail's last batch, and
        /// never holds a key outside it: what batches changed before a
        /// chunk was read is in the chunk, what they changed after comes
        /// with the batch.
        #[test]
        fn a_learner_ends_equal_to_the_tail_over_its_range(
            initial in proptest::collection::btree_map(any::<u8>(), any::<i64>(), 0..60),
            steps in proptest::collection::vec(step(), 0..120),
        ) {
            // Keys spread over the whole space; the range is the middle
            // half of it, and the tail's store holds other ranges' keys too.
            let key = |offset: u8| u64::from(offset) << 56 | 0x1234;
            let range = KeyRange::new(key(64), key(191)).unwrap();
            let in_range = |offset: u8| 64 + offset % 128;
            let mut tail: Store = initial.iter().map(|(&k, &v)| (key(k), v)).collect();
            let mut learner: Store = Store::new();
            let mut out = Outgoing::<State, State>::new(range, Pacer::new(64, Duration::from_millis(5)));
            let mut incoming = Incoming::<State, State>::default().holding_at_most(2);
            let mut wire: Vec<Msg> = Vec::new();
            let mut now = Instant::ZERO;
            let mut seq = 0;
            let receive = |learner: &mut Store, incoming: &mut Incoming<State, State>, wire: &mut Vec<Msg>, item| {
                let received = incoming.receive(item);
                for install in received.installs {
                    match install {
                        Install::Chunk(state) => learner.extend(state),
                        Install::Batch { batch, .. } => learner.extend(batch),
                    }
                }
                wire.push(Msg::Acked(incoming.applied()));
                wire.extend(received.resend_from.map(Msg::ResendFrom));
            };
            let deliver = |msg: Msg, learner: &mut Store, incoming: &mut Incoming<State, State>, out: &mut Outgoing<State, State>, wire: &mut Vec<Msg>| {
                match msg {
                    Msg::Item(item) => receive(learner, incoming, wire, item),
                    Msg::Acked(seq) => out.on_acked(seq),
                    Msg::ResendFrom(from) => wire.extend(out.resend_from(from).into_iter().map(Msg::Item)),
                }
            };
            let send_chunk = |tail: &Store, out: &mut Outgoing<State, State>, now: Instant, keys: usize| {
                let next = out.next_keys()?;
                let span = next.start()..=next.end_inclusive();
                let state: State = tail.range(span.clone()).take(keys).map(|(&k, &v)| (k, v)).collect();
                if !out.may_send(now, 16 * state.len().max(1) as u64) {
                    return None;
                }
                let rest = tail.range(span).nth(keys).is_some();
                let through = match state.last() {
                    Some(&(last, _)) if rest => last,
                    _ => next.end_inclusive(),
                };
                Some(Msg::Item(out.chunk(through, state)))
            };
            for step in steps {
                match step {
                    Step::Push(deltas) => {
                        seq += 1;
                        let mut batch = State::new();
                        for (offset, delta) in deltas {
                            let value = tail.entry(key(in_range(offset))).or_insert(0);
                            *value += i64::from(delta);
                            batch.push((key(in_range(offset)), *value));
                        }
                        wire.push(Msg::Item(out.batch(seq, batch)));
                    }
                    Step::Chunk(keys) => wire.extend(send_chunk(&tail, &mut out, now, usize::from(keys))),
                    Step::Deliver(i) if !wire.is_empty() => {
                        let msg = wire.remove(i % wire.len());
                        deliver(msg, &mut learner, &mut incoming, &mut out, &mut wire);
                    }
                    Step::Tick => now += Duration::from_millis(5),
                    _ => {}
                }
                prop_assert!(learner.keys().all(|k| tail.contains_key(k) && range.contains(*k)));
            }
            // Finish the walk, deliver everything.
            while !out.is_done() {
                now += Duration::from_millis(5);
                wire.extend(send_chunk(&tail, &mut out, now, 4));
            }
            while !wire.is_empty() {
                let msg = wire.remove(0);
                deliver(msg, &mut learner, &mut incoming, &mut out, &mut wire);
            }
            prop_assert!(incoming.caught_up());
            prop_assert_eq!(incoming.seq(), seq);
            let expected: Store = tail.range(range.start()..=range.end_inclusive()).map(|(&k, &v)| (k, v)).collect();
            prop_assert_eq!(learner, expected);
        }
    }
}
