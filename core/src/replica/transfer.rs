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

use std::collections::VecDeque;

use super::log::{Arrival, ChainLog, Numbered};
use crate::range::KeyRange;
use crate::time::{Duration, Instant};

/// One item of the stream to a learner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Item<B, C> {
    /// A live batch, with its number in the range's order, and the keys of
    /// it the learner installs (the stream keeps it whole: it is the
    /// learner's first batch as a successor should it become the tail).
    Batch(u64, B, Cover),
    /// The state of one application's keys after the previous chunk's
    /// (or from the range's start) through `through`; `last` when no key
    /// of the range is after it, in any application. It holds every batch
    /// up to `seq`, the last one the tail applied before reading it.
    Chunk { through: u64, last: bool, seq: u64, state: C },
}

/// Which keys of a batch the learner installs: those a chunk covered
/// already. The others a later chunk covers, read after the batch was
/// applied, so it holds the batch's effect; installing them now would
/// put keys in the learner's store that the transfer's model (and a
/// learner that forgot a partial copy) does not expect yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cover {
    /// Every key: its application was walked, or is not walked at all
    /// (all its keys came with batches since the transfer began).
    All,
    /// Keys up to this one.
    UpTo(u64),
    /// None yet.
    Nothing,
}

impl Cover {
    pub(crate) fn keeps(self, key: u64) -> bool {
        match self {
            Self::All => true,
            Self::UpTo(last) => key <= last,
            Self::Nothing => false,
        }
    }
}

/// What the tail reads next for a transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Read {
    /// Application `app`'s keys in `keys`, in ascending order, up to a
    /// chunk's size.
    App { app: u32, keys: KeyRange },
    /// The range holds nothing: one empty, last chunk ends the transfer.
    Nothing,
}

/// The tail's side: where the walk over the range's keys is, and the
/// stream's items until the learner has them.
#[derive(Clone, Debug)]
pub(crate) struct Outgoing<B, C> {
    range: KeyRange,
    /// Applications still to walk, the current one first; each holds keys
    /// of the range (an application's keys that appear later come with
    /// batches, which are all on the stream).
    apps: VecDeque<u32>,
    /// Keys of the current application up to this one were sent (`None`:
    /// none yet).
    sent_through: Option<u64>,
    done: bool,
    /// A chunk is being read: batches installed meanwhile wait behind it,
    /// so the stream keeps the order in which the store saw them.
    reading: bool,
    /// The last batch on the stream (or applied before it began): what
    /// the next chunk holds at least.
    seq: u64,
    waiting: Vec<(u64, u32, B)>,

    /// Items are kept, as a chain member keeps `Sent`, until the learner
    /// reports it applied them: one it had to drop is asked for again.
    stream: ChainLog<Item<B, C>>,
    /// The item of the last chunk: the next read waits until the learner
    /// has it, so one chunk at most is in flight.
    last_chunk: u64,
    pacer: Pacer,
}

impl<B: Clone, C: Clone> Outgoing<B, C> {
    /// A transfer of `range`'s keys held by applications `apps` (the
    /// tail's store may hold other ranges too: they are not sent).
    /// `seq` is the last batch the tail applied so far.
    pub(crate) fn new(range: KeyRange, seq: u64, apps: impl IntoIterator<Item = u32>, pacer: Pacer) -> Self {
        Self {
            seq,
            range,
            apps: apps.into_iter().collect(),
            sent_through: None,
            done: false,
            reading: false,
            waiting: Vec::new(),
            stream: ChainLog::default(),
            last_chunk: 0,
            pacer,
        }
    }

    /// Whether every chunk went out.
    #[cfg(test)]
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// Items the learner has not reported applied yet, and batches
    /// waiting behind a read.
    pub(crate) fn backlog(&self) -> usize {
        self.stream.sent().count() + self.waiting.len() + usize::from(self.reading)
    }

    /// The next read, if one may start at `now`: none while one is under
    /// way, while the learner lacks the last chunk, or while the pace
    /// allows none. The read's result comes back through
    /// [`chunk`](Self::chunk).
    pub(crate) fn start_read(&mut self, now: Instant) -> Option<Read> {
        if self.done || self.reading || self.stream.committed() < self.last_chunk || !self.pacer.ready(now) {
            return None;
        }
        self.reading = true;
        let Some(&app) = self.apps.front() else {
            return Some(Read::Nothing);
        };
        let from = self.sent_through.map_or(self.range.start(), |key| key + 1);
        let keys = KeyRange::new(from, self.range.end_inclusive()).expect("a walk ends at the range's end");
        Some(Read::App { app, keys })
    }

    /// A read could not be done (the application cannot export): the next
    /// one tries again.
    pub(crate) fn read_failed(&mut self) -> Vec<Numbered<Item<B, C>>> {
        self.reading = false;
        self.release_waiting()
    }

    /// A batch the tail applied goes on the stream, or waits behind the
    /// read under way when `after_read`: the store applies it after the
    /// read, as an install handed out after the read is. A batch the tail
    /// made as head was applied when its answer came, so one that comes
    /// before the read's result was applied before the read.
    pub(crate) fn batch(&mut self, seq: u64, app: u32, batch: B, after_read: bool) -> Option<Numbered<Item<B, C>>> {
        if self.reading && after_read {
            self.waiting.push((seq, app, batch));
            return None;
        }
        Some(self.sequence_batch(seq, app, batch))
    }

    /// Keys of application `app` the learner holds from chunks so far.
    fn cover(&self, app: u32) -> Cover {
        match self.apps.iter().position(|&a| a == app) {
            None => Cover::All,
            Some(0) => self.sent_through.map_or(Cover::Nothing, Cover::UpTo),
            Some(_) => Cover::Nothing,
        }
    }

    fn sequence_batch(&mut self, seq: u64, app: u32, batch: B) -> Numbered<Item<B, C>> {
        self.seq = seq;
        let cover = self.cover(app);
        self.stream.sequence(Item::Batch(seq, batch, cover), true)
    }

    /// The learner applied the stream through item `item`. Returns the
    /// last batch it holds now, if that moved.
    pub(crate) fn on_acked(&mut self, item: u64) -> Option<u64> {
        let newest = self
            .stream
            .sent()
            .take_while(|i| i.seq <= item)
            .map(|i| match i.payload {
                Item::Batch(seq, ..) | Item::Chunk { seq, .. } => seq,
            })
            .max();
        self.stream.on_committed(item);
        newest
    }

    /// Whether the learner applied every chunk, and with them the state of
    /// the whole range.
    pub(crate) fn learner_has_every_chunk(&self) -> bool {
        self.done && self.stream.committed() >= self.last_chunk
    }

    /// The last item on the stream.
    pub(crate) fn last_item(&self) -> u64 {
        self.stream.applied()
    }

    /// The last item the learner reported applied.
    pub(crate) fn acked(&self) -> u64 {
        self.stream.committed()
    }

    /// The learner dropped items it could not hold: what it lacks.
    pub(crate) fn resend_from(&self, from: u64) -> Vec<Numbered<Item<B, C>>> {
        self.stream.resend_from(from)
    }

    /// The read under way returned `state` of `bytes` bytes, covering its
    /// keys through `through` (the range's end once every key of the
    /// application is in): the chunk goes on the stream, then the batches
    /// that waited for it. With `more`, another chunk follows even when the
    /// walk is over (an empty one, carrying more of the dedup table).
    pub(crate) fn chunk(
        &mut self,
        now: Instant,
        through: u64,
        bytes: u64,
        state: C,
        more: bool,
    ) -> Vec<Numbered<Item<B, C>>> {
        let seq = self.seq;
        debug_assert!(self.reading, "a chunk answers a read");
        debug_assert!(self.sent_through.is_none_or(|sent| through > sent), "chunks walk forward");
        debug_assert!(self.range.contains(through), "chunks stay in the range");
        self.reading = false;
        self.pacer.take(now, bytes);
        if through >= self.range.end_inclusive() {
            self.apps.pop_front();
            self.sent_through = None;
        } else {
            self.sent_through = Some(through);
        }
        let last = self.apps.is_empty() && !more;
        self.done = last;
        let chunk = self.stream.sequence(Item::Chunk { through, last, seq, state }, true);
        self.last_chunk = chunk.seq;
        let mut items = vec![chunk];
        items.extend(self.release_waiting());
        items
    }

    fn release_waiting(&mut self) -> Vec<Numbered<Item<B, C>>> {
        let waiting = std::mem::take(&mut self.waiting);
        waiting.into_iter().map(|(seq, app, batch)| self.sequence_batch(seq, app, batch)).collect()
    }
}

/// What the learner does with one stream item, in stream order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Install<B, C> {
    /// Install this chunk, which covers its application's keys up to
    /// `through`.
    Chunk { through: u64, state: C },
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
    #[cfg(test)]
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
                Item::Batch(seq, batch, _) => {
                    self.seq = seq;
                    Install::Batch { seq, batch }
                }
                Item::Chunk { through, last, seq, state } => {
                    self.seq = self.seq.max(seq);
                    self.caught_up |= last;
                    Install::Chunk { through, state }
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

    /// Whether anything may be sent at `now`: the interval's budget is
    /// not spent, or a new interval began.
    pub(crate) fn ready(&self, now: Instant) -> bool {
        self.started.is_none_or(|start| now >= start + self.interval) || self.spent < self.budget
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
        /// The tail starts reading a chunk of at most this many keys, if
        /// the pace and the learner allow.
        Read(u8),
        /// The read under way comes back.
        Finish,
        /// Deliver the item in flight at this index.
        Deliver(usize),
        /// Time passes.
        Tick,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => proptest::collection::vec((any::<u8>(), any::<i8>()), 1..6).prop_map(Step::Push),
            2 => (1u8..8).prop_map(Step::Read),
            2 => Just(Step::Finish),
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
            let mut out = Outgoing::<State, State>::new(range, 0, [0], Pacer::new(64, Duration::from_millis(5)));
            let mut incoming = Incoming::<State, State>::default().holding_at_most(2);
            let mut wire: Vec<Msg> = Vec::new();
            let mut now = Instant::ZERO;
            let mut seq = 0;
            // The wire carries a batch cut to the keys chunks covered.
            let receive = |learner: &mut Store, incoming: &mut Incoming<State, State>, wire: &mut Vec<Msg>, item: Numbered<Item<State, State>>, covered: &mut Option<u64>| {
                let payload = match item.payload {
                    Item::Batch(seq, batch, cover) => {
                        Item::Batch(seq, batch.into_iter().filter(|(k, _)| cover.keeps(*k)).collect(), Cover::All)
                    }
                    chunk => chunk,
                };
                let received = incoming.receive(Numbered { seq: item.seq, payload });
                for install in received.installs {
                    match install {
                        Install::Chunk { through, state } => {
                            *covered = Some(through);
                            learner.extend(state);
                        }
                        Install::Batch { batch, .. } => learner.extend(batch),
                    }
                }
                wire.push(Msg::Acked(incoming.applied()));
                wire.extend(received.resend_from.map(Msg::ResendFrom));
            };
            let mut covered = None;
            let deliver = |msg: Msg, learner: &mut Store, incoming: &mut Incoming<State, State>, out: &mut Outgoing<State, State>, wire: &mut Vec<Msg>, covered: &mut Option<u64>| {
                match msg {
                    Msg::Item(item) => receive(learner, incoming, wire, item, covered),
                    Msg::Acked(seq) => {
                        out.on_acked(seq);
                    }
                    Msg::ResendFrom(from) => wire.extend(out.resend_from(from).into_iter().map(Msg::Item)),
                }
            };
            // A read takes the store as it is when it starts (batches
            // applied later wait behind it), and comes back later.
            let start_read = |tail: &Store, out: &mut Outgoing<State, State>, now: Instant, keys: usize| {
                let Read::App { keys: next, .. } = out.start_read(now)? else {
                    return None;
                };
                let span = next.start()..=next.end_inclusive();
                let state: State = tail.range(span.clone()).take(keys).map(|(&k, &v)| (k, v)).collect();
                let rest = tail.range(span).nth(keys).is_some();
                let through = match state.last() {
                    Some(&(last, _)) if rest => last,
                    _ => next.end_inclusive(),
                };
                Some((through, state))
            };
            let finish = |read: &mut Option<(u64, State)>, out: &mut Outgoing<State, State>, now: Instant, wire: &mut Vec<Msg>| {
                if let Some((through, state)) = read.take() {
                    let bytes = 16 * state.len() as u64;
                    wire.extend(out.chunk(now, through, bytes, state, false).into_iter().map(Msg::Item));
                }
            };
            let mut read = None;
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
                        wire.extend(out.batch(seq, 0, batch, true).map(Msg::Item));
                    }
                    Step::Read(keys) if read.is_none() => read = start_read(&tail, &mut out, now, usize::from(keys)),
                    Step::Finish => finish(&mut read, &mut out, now, &mut wire),
                    Step::Deliver(i) if !wire.is_empty() => {
                        let msg = wire.remove(i % wire.len());
                        deliver(msg, &mut learner, &mut incoming, &mut out, &mut wire, &mut covered);
                    }
                    Step::Tick => now += Duration::from_millis(5),
                    _ => {}
                }
                prop_assert!(learner.keys().all(|k| tail.contains_key(k) && range.contains(*k)));
                // Only keys a chunk covered: the rest would come from a
                // batch alone, without the state before it.
                prop_assert!(learner.keys().all(|k| covered.is_some_and(|c| *k <= c)), "{:?} {:?}", learner, covered);
            }
            // Finish the walk, deliver everything.
            finish(&mut read, &mut out, now, &mut wire);
            while !out.is_done() {
                now += Duration::from_millis(5);
                read = start_read(&tail, &mut out, now, 4);
                finish(&mut read, &mut out, now, &mut wire);
                while !wire.is_empty() {
                    let msg = wire.remove(0);
                    deliver(msg, &mut learner, &mut incoming, &mut out, &mut wire, &mut covered);
                }
            }
            while !wire.is_empty() {
                let msg = wire.remove(0);
                deliver(msg, &mut learner, &mut incoming, &mut out, &mut wire, &mut covered);
            }
            prop_assert!(incoming.caught_up());
            prop_assert_eq!(incoming.seq(), seq);
            let expected: Store = tail.range(range.start()..=range.end_inclusive()).map(|(&k, &v)| (k, v)).collect();
            prop_assert_eq!(learner, expected);
        }
    }
}
