//! Catch-up wired to messages and to the application: a range's tail
//! streams the range to its learner, the learner installs it and reports
//! to the scheduler, and when the table makes the learner the tail the
//! old tail hands over.
//!
//! The stream itself (chunks mixed with live batches, their order, what
//! the learner installs) is [`transfer`](super::transfer)'s; this module
//! decides when each side starts, stops and starts over:
//! - **Tail**: a range of which it is the tail and that has a learner
//!   gets a [`Source`], tied to the learner's process and to the chain as
//!   it stands (`changed_at`). Chunks are read by the application
//!   ([`Event::Export`]), one in flight, paced.
//! - **Learner**: a [`Learning`] tied to the same; anything else it is
//!   sent is dropped. When the chain changes under it (its tail died), or
//!   it stops learning, what it installed is a partial copy of a state
//!   that may be gone: it forgets the range ([`Event::Forget`]) before it
//!   learns it again.
//! - **Promotion**: once the learner applied the last chunk, the tail
//!   treats it as its successor: a batch is committed (acknowledged,
//!   reported up the chain) only once the learner applied it too. When
//!   the learner also holds every batch the tail acknowledged before, the
//!   tail reports it caught up (again on every tick until a table
//!   answers). So whenever the scheduler makes it the tail, it holds
//!   every acknowledged push, even if the old tail hears of the new table
//!   late; the old tail's uncommitted batches are its `Sent`, which go to
//!   the learner as to any new successor.

use std::collections::BTreeSet;

use smallvec::SmallVec;

use super::dedup::DedupTable;
use super::log::Numbered;
use super::member::{Batch, PushRef, RangeMember};
use super::serve::{from_wire, neighbours, request_id, to_wire, Context, Serving, State};
use super::transfer::{Cover, Incoming, Install, Item, Outgoing, Pacer, Read};
use crate::event::{Event, ExportTicket};
use crate::id::{Incarnation, NodeId};
use crate::outbox::Outbox;
use crate::slice::KvList;
use crate::stats::Stats;
use crate::time::Instant;
use crate::wire::{ChunkEnd, Message, TransferMsg, TRANSFER_PUSHES_MAX};

/// Most bytes of values in one chunk, unless a frame is smaller.
const CHUNK_BYTES_MAX: usize = 1 << 20;

/// How a tail sends a range to a learner (see `Config`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pace {
    /// Most keys in one chunk.
    pub(crate) chunk_keys: usize,
    /// Most bytes per second.
    pub(crate) bytes_per_second: u64,
    /// The budget is renewed per this interval (the heartbeat's, whose
    /// tick starts reads the budget held back).
    pub(crate) interval: crate::time::Duration,
}

/// A chunk of a transfer: one application's keys, and part of the
/// range's dedup table (the first chunks carry it).
#[derive(Clone, Debug)]
pub(crate) struct Chunk {
    app: u32,
    state: KvList,
    dedup: Vec<(PushRef, u64)>,
}

type Stream = Outgoing<Batch<State>, Chunk>;

/// The tail's transfer of one range to its learner.
#[derive(Debug)]
pub(crate) struct Source {
    learner: NodeId,
    incarnation: Incarnation,
    changed_at: u64,
    /// Tells this stream apart from an earlier one to the same learner:
    /// a learner that started over is sent a new stream from its start.
    stream: u64,
    /// The learner's latest start of learning heard of.
    starts_seen: u64,
    out: Stream,
    /// Names the read under way, and what it reads.
    read: u64,
    reading: Option<(u32, crate::range::KeyRange)>,
    /// The range's dedup table as it was when the transfer started, for
    /// the first chunks; later batches carry their pushes.
    dedup: Vec<(PushRef, u64)>,
    /// The last item the learner reported and since when, to send the
    /// stream again when it stalls.
    progress: (u64, Instant),
    /// Set once the learner applied every chunk: commits wait for it from
    /// then on, and it is reported caught up once it applied this item
    /// (the last one the tail may have acknowledged alone).
    sync: Option<u64>,
}

/// A learner's side of one range.
#[derive(Debug)]
pub(crate) struct Learning {
    /// Which time this server started learning (see `Message::Learned`).
    start: u64,
    tail: NodeId,
    changed_at: u64,
    /// The stream followed (`None` until the first item comes).
    stream: Option<u64>,
    incoming: Incoming<Batch<State>, Chunk>,
    dedup: DedupTable,
    apps: BTreeSet<u32>,
    /// Anything was installed: dropping this leaves a partial copy.
    installed: bool,
}

fn transfer_message(range: u32, (source, stream): (u64, u64), item: &Numbered<Item<Batch<State>, Chunk>>) -> Message {
    let (seq, chunk, app, pushes, state) = match &item.payload {
        Item::Batch(seq, batch, cover) => {
            let pushes = batch.pushes.iter().map(|p| (to_wire(p), *seq)).collect();
            let state = keys_kept(&batch.state.1, *cover);
            (*seq, None, batch.state.0, pushes, state)
        }
        Item::Chunk { through, last, seq, state } => {
            let pushes = state.dedup.iter().map(|(p, seq)| (to_wire(p), *seq)).collect();
            (*seq, Some(ChunkEnd { through: *through, last: *last }), state.app, pushes, state.state.clone())
        }
    };
    Message::Transfer(TransferMsg {
        range,
        source,
        stream,
        item: item.seq,
        seq,
        chunk,
        app,
        pushes,
        keys: state.keys,
        values: state.values,
        lens: state.lens,
    })
}

/// The keys of `state` (ascending) that `cover` keeps: a prefix.
fn keys_kept(state: &KvList, cover: Cover) -> KvList {
    let n = state.keys.iter().take_while(|&k| cover.keeps(k)).count();
    let total = state.keys.len();
    let (values_end, lens) = match &state.lens {
        Some(lens) => {
            let kept = lens.slice(0, n);
            (kept.total() as usize, Some(kept))
        }
        None => (state.values.len().checked_div(total).unwrap_or(0) * n, None),
    };
    let values =
        if values_end == state.values.len() { state.values.clone() } else { state.values.slice(0, values_end) };
    KvList { keys: state.keys.slice(0, n), values, lens }
}

fn from_transfer(message: TransferMsg) -> Numbered<Item<Batch<State>, Chunk>> {
    let state = KvList { keys: message.keys, values: message.values, lens: message.lens };
    let payload = match message.chunk {
        None => {
            let pushes: SmallVec<[PushRef; 1]> = message.pushes.iter().map(|(p, _)| from_wire(p)).collect();
            // The tail sent only the keys to install.
            Item::Batch(message.seq, Batch { pushes, state: (message.app, state) }, Cover::All)
        }
        Some(ChunkEnd { through, last }) => {
            let dedup = message.pushes.iter().map(|(p, seq)| (from_wire(p), *seq)).collect();
            Item::Chunk { through, last, seq: message.seq, state: Chunk { app: message.app, state, dedup } }
        }
    };
    Numbered { seq: message.item, payload }
}

impl Serving {
    /// What catch-up still keeps: transfers and learners under way,
    /// hand-overs not confirmed, pulls waiting for one.
    #[cfg(any(test, feature = "inspect"))]
    pub(crate) fn catch_up_backlog(&self) -> usize {
        let sources: usize = self.sources.values().map(|s| 1 + s.out.backlog()).sum();
        sources + self.learning.len()
    }

    /// A table was adopted: each range's transfer starts, goes on, starts
    /// over or ends, by this server's place in it. Runs after the members
    /// took their places.
    pub(super) fn transfers_on_table(&mut self, cx: Context<'_>, out: &mut Outbox) {
        let chains = cx.membership.chains();
        // The tail's side.
        let mut keep = BTreeSet::new();
        for (index, chain) in chains.as_slice().iter().enumerate() {
            let range = index as u32;
            let (Some(learner), true) = (chain.learner(), chain.tail() == Some(cx.me)) else {
                continue;
            };
            let learner = NodeId::server(learner);
            let Some(incarnation) = cx.membership.get(learner).filter(|e| e.alive).map(|e| e.incarnation) else {
                continue;
            };
            keep.insert(range);
            let same = self.sources.get(&range).is_some_and(|s| {
                (s.learner, s.incarnation, s.changed_at) == (learner, incarnation, chain.changed_at())
            });
            if same {
                continue;
            }
            self.end_source(range, cx, out);
            self.start_source(range, learner, incarnation, cx);
        }
        let dropped: Vec<u32> = self.sources.keys().copied().filter(|range| !keep.contains(range)).collect();
        for range in dropped {
            self.end_source(range, cx, out);
        }
        // The learner's side.
        for (index, chain) in chains.as_slice().iter().enumerate() {
            let range = index as u32;
            let learns = chain.learner() == Some(cx.me);
            let tail = chain.tail().map(NodeId::server);
            let current = self
                .learning
                .get(&range)
                .is_some_and(|l| learns && Some(l.tail) == tail && l.changed_at == chain.changed_at());
            if current {
                continue;
            }
            if let Some(dropped) = self.learning.remove(&range) {
                if dropped.installed {
                    self.partial.insert(range);
                }
            }
            let (true, Some(tail)) = (learns, tail) else {
                continue;
            };
            if self.partial.remove(&range) {
                out.event(Event::Forget { range: chain.range() });
            }
            // Numbers this start, so that the tail tells a late copy of the
            // request below from a new start.
            self.learning_starts += 1;
            let start = self.learning_starts;
            let learning = Learning {
                start,
                tail,
                changed_at: chain.changed_at(),
                stream: None,
                incoming: Incoming::default(),
                dedup: DedupTable::new(self.idle_max),
                apps: BTreeSet::new(),
                installed: false,
            };
            self.learning.insert(range, learning);
            // Anything the tail sent before we knew dropped here: ask for
            // the transfer from its start.
            out.send(tail, Message::Learned { range, start, stream: 0, item: 0, resend: true });
        }
        self.start_reads(cx, out);
    }

    /// Starts a transfer of `range` to `learner`, process `incarnation`,
    /// on a stream of its own.
    fn start_source(&mut self, range: u32, learner: NodeId, incarnation: Incarnation, cx: Context<'_>) {
        let (Some(member), Some(chain)) = (self.members.get(&range), cx.chain(range)) else {
            return;
        };
        let apps = self.apps.get(&range).cloned().unwrap_or_default();
        let pace = self.pace;
        let budget = u128::from(pace.bytes_per_second) * pace.interval.as_nanos() / 1_000_000_000;
        let pacer = Pacer::new(u64::try_from(budget).unwrap_or(u64::MAX).max(1), pace.interval);
        let dedup = member
            .dedup()
            .entries()
            .into_iter()
            .map(|(origin, ts, floor, seq)| (PushRef { origin, ts, floor, tail_answers: false }, seq))
            .collect();
        self.streams += 1;
        let source = Source {
            learner,
            incarnation,
            changed_at: chain.changed_at(),
            stream: self.streams,
            starts_seen: 0,
            out: Outgoing::new(chain.range(), member.last_applied(), apps, pacer),
            read: 0,
            reading: None,
            dedup,
            progress: (0, cx.now),
            sync: None,
        };
        self.sources.insert(range, source);
    }

    /// Ends the transfer of `range`, if any. A learner the tail waited on
    /// no longer holds anything back: while this server is still the
    /// tail, what only the learner lacked is committed now, as when a
    /// successor dies (once the learner became the tail, it is this
    /// server's successor and gets its `Sent`).
    fn end_source(&mut self, range: u32, cx: Context<'_>, out: &mut Outbox) {
        let Some(source) = self.sources.remove(&range) else {
            return;
        };
        let still_tail = cx.chain(range).is_some_and(|c| c.tail() == Some(cx.me));
        if let (Some(_), true, Some(member)) = (source.sync, still_tail, self.members.get_mut(&range)) {
            let (due, _) = member.become_tail();
            let seq = member.committed();
            let before = cx.chain(range).and_then(|c| neighbours(c, cx.me).0);
            self.commit_answers(due, cx, out);
            self.report_commit(range, before, seq, cx, out);
        }
    }

    /// The member a learner becomes when a table makes it the tail: it
    /// holds the range as of the last batch it installed, and serves pulls
    /// once its predecessor said what it acknowledged.
    pub(super) fn promote(&mut self, range: u32) -> Option<RangeMember<State, super::serve::Owed>> {
        let learning = self.learning.remove(&range)?;
        // Why a report can never promote a learner that has not caught
        // up: the scheduler takes a `CaughtUp` only from the chain's
        // current tail, for its current `changed_at` and the learner's
        // current incarnation. For one such triple the learner keeps one
        // `Learning` (it starts another only when the tail, `changed_at`
        // or its own learning changes, and the last happens only through
        // its death or promotion), so the tail never restarts that
        // stream, and every report of it was made once this learner held
        // the range.
        debug_assert!(learning.incoming.caught_up(), "promoted before it caught up");
        self.apps.entry(range).or_default().extend(learning.apps);
        Some(RangeMember::caught_up(learning.incoming.seq(), learning.dedup))
    }

    /// The tail applied batch `batch` of `range`: a learner gets it too.
    /// `as_head`: the tail made it itself, and the store applied it before
    /// any read whose result is not back yet.
    pub(super) fn stream_batch(&mut self, range: u32, batch: &Numbered<Batch<State>>, as_head: bool, out: &mut Outbox) {
        let Some(source) = self.sources.get_mut(&range) else {
            return;
        };
        let app = batch.payload.state.0;
        if let Some(item) = source.out.batch(batch.seq, app, batch.payload.clone(), !as_head) {
            out.send(source.learner, transfer_message(range, (source.changed_at, source.stream), &item));
        }
    }

    /// Starts the reads the transfers' pace and window allow.
    fn start_reads(&mut self, cx: Context<'_>, out: &mut Outbox) {
        let bytes_max = CHUNK_BYTES_MAX.min(cx.limits.frame_len_max as usize / 4);
        let ranges: Vec<u32> = self.sources.keys().copied().collect();
        for range in ranges {
            let source = self.sources.get_mut(&range).expect("listed above");
            match source.out.start_read(cx.now) {
                None => {}
                Some(Read::App { app, keys }) => {
                    source.read += 1;
                    source.reading = Some((app, keys));
                    let ticket = ExportTicket { range, read: source.read };
                    out.event(Event::Export { ticket, app, keys, keys_max: self.pace.chunk_keys, bytes_max });
                }
                Some(Read::Nothing) => {
                    let Some(end) = cx.chain(range).map(|c| c.range().end_inclusive()) else {
                        continue;
                    };
                    let nothing = KvList {
                        keys: crate::kv::Keys::from_slice(&[]),
                        values: crate::kv::Values::empty(crate::kv::DType::F32),
                        lens: None,
                    };
                    let empty = Chunk { app: 0, state: nothing, dedup: Vec::new() };
                    self.send_chunk(range, cx.now, end, empty, out);
                }
            }
        }
    }

    /// The application read the chunk `ticket` asked for (`None`: it
    /// cannot export, and the next tick asks again).
    pub(crate) fn on_exported(
        &mut self,
        ticket: ExportTicket,
        state: Option<KvList>,
        cx: Context<'_>,
        out: &mut Outbox,
    ) {
        let range = ticket.range;
        let (Some(source), Some(chain)) = (self.sources.get_mut(&range), cx.chain(range)) else {
            return;
        };
        if source.read != ticket.read || source.reading.is_none() {
            return;
        }
        let Some(state) = state else {
            source.reading = None;
            for item in source.out.read_failed() {
                out.send(source.learner, transfer_message(range, (source.changed_at, source.stream), &item));
            }
            return;
        };
        let Some((app, keys)) = source.reading.take() else {
            return;
        };
        // A chunk may be cut short by its size in bytes: only an empty one
        // ends its application's walk.
        let through = state.keys.iter().last().unwrap_or(chain.range().end_inclusive());
        debug_assert!(keys.contains(through), "a read returns keys of its span");
        let chunk = Chunk { app, state, dedup: Vec::new() };
        self.send_chunk(range, cx.now, through, chunk, out);
    }

    /// Puts a chunk on `range`'s stream, with the next part of the dedup
    /// table, and sends it with the batches that waited for it.
    fn send_chunk(&mut self, range: u32, now: Instant, through: u64, mut chunk: Chunk, out: &mut Outbox) {
        let Some(source) = self.sources.get_mut(&range) else {
            return;
        };
        let take = source.dedup.len().min(TRANSFER_PUSHES_MAX);
        chunk.dedup = source.dedup.drain(..take).collect();
        let bytes = chunk.state.values.as_bytes().len() as u64 + 8 * chunk.state.keys.len() as u64;
        let more = !source.dedup.is_empty();
        let items = source.out.chunk(now, through, bytes, chunk, more);
        for item in items {
            out.send(source.learner, transfer_message(range, (source.changed_at, source.stream), &item));
        }
    }

    /// An item of a transfer, from `from`.
    pub(crate) fn on_transfer(
        &mut self,
        from: NodeId,
        message: TransferMsg,
        cx: Context<'_>,
        out: &mut Outbox,
        stats: &mut Stats,
    ) {
        let range = message.range;
        let Some(learning) = self.learning.get_mut(&range) else {
            stats.unexpected_drops += 1;
            return;
        };
        if learning.tail != from || learning.changed_at != message.source {
            stats.unexpected_drops += 1;
            return;
        }
        match learning.stream {
            Some(stream) if message.stream < stream => {
                // An earlier stream's item, late.
                stats.unexpected_drops += 1;
                return;
            }
            Some(stream) if message.stream > stream => {
                // The tail started over: so does the learner, without
                // what it installed of the earlier stream.
                if let (true, Some(chain)) = (learning.installed, cx.chain(range)) {
                    out.event(Event::Forget { range: chain.range() });
                }
                learning.incoming = Incoming::default();
                learning.dedup = DedupTable::new(self.idle_max);
                learning.apps.clear();
                learning.installed = false;
                learning.stream = Some(message.stream);
            }
            Some(_) => {}
            None => learning.stream = Some(message.stream),
        }
        let received = learning.incoming.receive(from_transfer(message));
        for install in received.installs {
            let (app, state, pushes) = match install {
                Install::Chunk { state: chunk, .. } => {
                    for (push, seq) in &chunk.dedup {
                        learning.dedup.record(push.origin, push.ts, push.floor, *seq, cx.now);
                    }
                    (chunk.app, chunk.state, Vec::new())
                }
                Install::Batch { seq, batch } => {
                    for p in &batch.pushes {
                        learning.dedup.record(p.origin, p.ts, p.floor, seq, cx.now);
                    }
                    let ids = batch.pushes.iter().map(|p| request_id(p, range)).collect();
                    (batch.state.0, batch.state.1, ids)
                }
            };
            if state.keys.is_empty() {
                continue;
            }
            learning.apps.insert(app);
            learning.installed = true;
            out.event(Event::Install { app, state, pushes });
        }
        let resend = received.resend_from.is_some();
        let (start, stream, item) = (learning.start, learning.stream.unwrap_or(0), learning.incoming.applied());
        out.send(from, Message::Learned { range, start, stream, item, resend });
    }

    /// The learner `from` installed the transfer of `range` through `item`.
    #[allow(clippy::too_many_arguments)] // the report, and the node's parts it touches
    pub(crate) fn on_learned(
        &mut self,
        from: NodeId,
        (range, start, stream): (u32, u64, u64),
        item: u64,
        resend: bool,
        cx: Context<'_>,
        out: &mut Outbox,
        stats: &mut Stats,
    ) {
        let Some(source) = self.sources.get_mut(&range).filter(|s| s.learner == from) else {
            stats.unexpected_drops += 1;
            return;
        };
        if stream == 0 {
            // The learner started learning: it holds nothing of any
            // stream. A request from a start whose reports came already is
            // a late copy.
            if start <= source.starts_seen {
                return;
            }
            source.starts_seen = start;
            if source.out.acked() > 0 || source.sync.is_some() {
                let (learner, incarnation) = (source.learner, source.incarnation);
                self.end_source(range, cx, out);
                self.start_source(range, learner, incarnation, cx);
                if let Some(source) = self.sources.get_mut(&range) {
                    source.starts_seen = start;
                }
            } else {
                for item in source.out.resend_from(1) {
                    out.send(from, transfer_message(range, (source.changed_at, source.stream), &item));
                }
            }
            self.start_reads(cx, out);
            return;
        }
        if stream != source.stream {
            stats.unexpected_drops += 1;
            return;
        }
        source.starts_seen = source.starts_seen.max(start);
        let held = source.out.on_acked(item);
        if resend {
            for item in source.out.resend_from(item + 1) {
                out.send(from, transfer_message(range, (source.changed_at, source.stream), &item));
            }
        }
        if source.sync.is_none() && source.out.learner_has_every_chunk() {
            // From now on the learner is as good as a successor; what the
            // tail acknowledged alone is on the stream up to here.
            source.sync = Some(source.out.last_item());
        }
        let synced = source.sync.is_some();
        self.report_caught_up(range, out);
        if let (true, Some(seq), Some(member)) = (synced, held, self.members.get_mut(&range)) {
            let before = member.committed();
            let due = member.on_committed(seq);
            let (seq, moved) = (member.committed(), member.committed() > before);
            self.commit_answers(due, cx, out);
            if moved {
                let predecessor = cx.chain(range).and_then(|c| neighbours(c, cx.me).0);
                self.report_commit(range, predecessor, seq, cx, out);
            }
        }
        self.start_reads(cx, out);
    }

    /// Whether this tail waits for its learner to commit batches of
    /// `range`.
    pub(super) fn synced(&self, range: u32) -> bool {
        self.sources.get(&range).is_some_and(|s| s.sync.is_some())
    }

    /// Tells the scheduler the learner of `range` caught up, once it holds
    /// everything this tail acknowledged alone.
    fn report_caught_up(&self, range: u32, out: &mut Outbox) {
        let Some(source) = self.sources.get(&range) else {
            return;
        };
        if source.sync.is_some_and(|last| source.out.acked() >= last) {
            let report = Message::CaughtUp { range, source: source.changed_at, learner: source.incarnation };
            out.send(NodeId::SCHEDULER, report);
        }
    }

    /// The periodic repeats: stalled streams go again, hand-overs not
    /// confirmed go again, caught-up learners report again, and reads the
    /// pace held back start.
    pub(super) fn catch_up_tick(&mut self, stall: crate::time::Duration, cx: Context<'_>, out: &mut Outbox) {
        for (&range, source) in &mut self.sources {
            let acked = source.out.acked();
            if source.out.backlog() == 0 || acked != source.progress.0 {
                source.progress = (acked, cx.now);
                continue;
            }
            if cx.now < source.progress.1 + stall {
                continue;
            }
            source.progress.1 = cx.now;
            for item in source.out.resend_from(acked + 1) {
                out.send(source.learner, transfer_message(range, (source.changed_at, source.stream), &item));
            }
        }
        let ranges: Vec<u32> = self.sources.keys().copied().collect();
        for range in ranges {
            self.report_caught_up(range, out);
        }
        self.start_reads(cx, out);
    }
}
