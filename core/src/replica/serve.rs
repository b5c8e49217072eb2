//! A server's side of replicated ranges, wired to messages and to the
//! application: which requests it takes for which range, what goes down
//! and up each chain, and what a new table changes.
//!
//! One [`RangeMember`] per range this server is a member of, by the
//! range's index in the replica table. The decisions are the member's;
//! this module routes: a push reaches the handle only at the head, a pull
//! only at the tail, anything else is redirected; batches come only from
//! the current predecessor and commit reports only from the current
//! successor; messages routed under a table newer than ours wait here
//! until it arrives.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use smallvec::smallvec;

use super::catch_up::{Learning, Pace, Source};
use super::dedup::Origin;
use super::log::{Arrival, Numbered};
use super::member::{Admit, Batch, PushRef, RangeMember};
use crate::chains::{Chains, RangeChain};
use crate::event::Event;
use crate::id::{Incarnation, NodeId, Rank, Role};
use crate::kv::Values;
use crate::kv::{CustomerId, Refusal, Response, ServerRequestId, Timestamp};
use crate::membership::Membership;
use crate::outbox::Outbox;
use crate::responder::{self, Limits, Responder};
use crate::slice::KvList;
use crate::stats::Stats;
use crate::time::{Duration, Instant};
use crate::wire::{BatchPush, KvOp, KvRequestMsg, Message, ReplicateMsg};

/// What becomes of the handle's answer to a KV request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Then {
    /// It goes to the worker at once.
    Send,
    /// A push to a replicated range, at its head: its state goes down the
    /// chain, and the answer once the tail applied it.
    Replicate(PushRef),
    /// A push its range applied already (sent again after a failover):
    /// answered once batch `seq` is committed, without applying it again.
    AnswerAfter(u64),
}

/// A message kept for later, with the sender's incarnation when it came:
/// one from a process replaced meanwhile is dropped, not taken as its
/// successor's.
pub(crate) type Held = (NodeId, Incarnation, Message);

/// What a batch carries: the app whose handle made it, and the state.
pub(crate) type State = (u32, KvList);

/// When a batch the head applied commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Commit {
    /// At once: this member is the whole chain.
    Now,
    /// When the successor reports it.
    AtSuccessor,
    /// When the learner this tail waits for has it.
    AtLearner,
}

/// An answer the head owes a worker until the push's batch commits.
#[derive(Clone, Debug)]
pub(crate) struct Owed {
    id: ServerRequestId,
    response: Response,
    /// The tail answers this push itself: the head sends its answer only
    /// if it becomes the tail (the one that would have may have died).
    tail_answers: bool,
}

impl Owed {
    fn new(id: ServerRequestId, response: Response) -> Self {
        Self { id, response, tail_answers: false }
    }
}

/// Most messages kept while waiting for a newer table: beyond it they
/// are dropped (requests are refused) and the senders' resends or a
/// `ResendFrom` bring them again.
const AHEAD_MAX: usize = 4096;

/// The ranges this server holds a copy of.
#[derive(Debug)]
pub(crate) struct Serving {
    pub(super) members: BTreeMap<u32, RangeMember<State, Owed>>,
    /// Per range with batches kept for the successor: the last commit
    /// seen and since when, to send them again when the chain stalls.
    progress: BTreeMap<u32, (u64, Instant)>,
    /// Messages routed under a newer table than ours, with that epoch.
    ahead: VecDeque<(u64, Held)>,
    /// Pulls that came while the read lease had lapsed: served once the
    /// scheduler answers again, or never (the scheduler declared us dead,
    /// and the workers send them to the new tail).
    unleased: VecDeque<Held>,
    /// Answers a tail (head and tail at once) owed while its lease had
    /// lapsed: a tail that may have been replaced acknowledges nothing.
    unleased_answers: Vec<Owed>,
    /// Ranges whose commit report a tail held back for want of a lease.
    commits_held: BTreeSet<u32>,
    /// How long a worker's pushes are remembered without a new one.
    pub(super) idle_max: Duration,
    /// The applications that hold keys of each range here: a transfer
    /// walks each.
    pub(super) apps: BTreeMap<u32, BTreeSet<u32>>,
    /// Per range this server is the tail of and that has a learner.
    pub(super) sources: BTreeMap<u32, Source>,
    /// Streams started, to number the next.
    pub(super) streams: u64,
    /// Times this server started learning a range, to number the next.
    pub(super) learning_starts: u64,
    /// Per range this server learns.
    pub(super) learning: BTreeMap<u32, Learning>,
    /// Ranges this process installed part of from a transfer it no longer
    /// follows: forgotten before it learns them again.
    pub(super) partial: BTreeSet<u32>,
    /// How transfers go.
    pub(super) pace: Pace,
}

/// What one message is handled against.
#[derive(Clone, Copy)]
pub(crate) struct Context<'a> {
    pub(crate) me: Rank,
    pub(crate) membership: &'a Membership,
    pub(crate) now: Instant,
    pub(crate) limits: Limits,
    /// Whether this server may serve pulls now: it holds the read lease
    /// (or no heartbeats run, and nobody is ever declared dead).
    pub(crate) lease: bool,
}

impl Context<'_> {
    pub(super) fn chain(&self, range: u32) -> Option<&RangeChain> {
        self.membership.chains().as_slice().get(range as usize)
    }

    fn epoch(&self) -> u64 {
        self.membership.epoch()
    }
}

/// The member after `me` in `chain`, and the one before.
pub(super) fn neighbours(chain: &RangeChain, me: Rank) -> (Option<Rank>, Option<Rank>) {
    let members = chain.members();
    match members.iter().position(|&m| m == me) {
        Some(at) => (at.checked_sub(1).map(|p| members[p]), members.get(at + 1).copied()),
        None => (None, None),
    }
}

/// The worker's id for push `push`, part `part`.
pub(super) fn request_id(push: &PushRef, part: u32) -> ServerRequestId {
    let Origin { worker, incarnation, customer } = push.origin;
    ServerRequestId { from: worker, incarnation, customer, ts: push.ts, part }
}

fn origin_of(id: ServerRequestId) -> Origin {
    Origin { worker: id.from, incarnation: id.incarnation, customer: id.customer }
}

pub(super) fn to_wire(push: &PushRef) -> BatchPush {
    let Origin { worker, incarnation, customer } = push.origin;
    BatchPush {
        worker,
        incarnation,
        customer: (customer.app, customer.customer),
        ts: push.ts.0,
        floor: push.floor.0,
        tail_answers: push.tail_answers,
    }
}

pub(super) fn from_wire(push: &BatchPush) -> PushRef {
    let origin = Origin {
        worker: push.worker,
        incarnation: push.incarnation,
        customer: CustomerId::new(push.customer.0, push.customer.1),
    };
    PushRef { origin, ts: Timestamp(push.ts), floor: Timestamp(push.floor), tail_answers: push.tail_answers }
}

fn replicate(range: u32, epoch: u64, batch: &Numbered<Batch<State>>) -> Message {
    let (app, state) = &batch.payload.state;
    Message::Replicate(ReplicateMsg {
        range,
        epoch,
        seq: batch.seq,
        app: *app,
        pushes: batch.payload.pushes.iter().map(to_wire).collect(),
        keys: state.keys.clone(),
        values: state.values.clone(),
        lens: state.lens.clone(),
    })
}

impl Serving {
    /// No range yet; a worker's pushes are remembered for `idle_max`
    /// after its last one (the request timeout: no resend comes later);
    /// transfers go at `pace`.
    pub(crate) fn new(idle_max: Duration, pace: Pace) -> Self {
        Self {
            members: BTreeMap::new(),
            progress: BTreeMap::new(),
            ahead: VecDeque::new(),
            unleased: VecDeque::new(),
            unleased_answers: Vec::new(),
            commits_held: BTreeSet::new(),
            idle_max,
            apps: BTreeMap::new(),
            sources: BTreeMap::new(),
            streams: 0,
            learning_starts: 0,
            learning: BTreeMap::new(),
            partial: BTreeSet::new(),
            pace,
        }
    }

    /// What this server still keeps for replication: answers owed,
    /// batches kept for a successor or held back, and messages waiting
    /// for a table or a lease. Zero once a quiet cluster has settled.
    #[cfg(any(test, feature = "inspect"))]
    pub(crate) fn backlog(&self) -> usize {
        let members: usize = self.members.values().map(|m| m.owed() + m.sent() + m.held()).sum();
        members + self.ahead.len() + self.unleased.len() + self.unleased_answers.len() + self.catch_up_backlog()
    }

    /// Holds `message`, routed under table `epoch` (newer than ours),
    /// until that table arrives. Returns whether it was kept.
    fn hold(&mut self, epoch: u64, held: Held) -> bool {
        if self.ahead.len() >= AHEAD_MAX {
            return false;
        }
        self.ahead.push_back((epoch, held));
        true
    }

    /// A KV request for a replicated range: taken for the handle (a push
    /// at the head, a pull at the tail), answered from the dedup table,
    /// redirected, or held for a newer table.
    #[allow(clippy::too_many_arguments)] // the request, its sender, and the node's parts it touches
    pub(crate) fn on_kv_request(
        &mut self,
        from: NodeId,
        incarnation: Incarnation,
        request: KvRequestMsg,
        cx: Context<'_>,
        responder: &mut Responder<Then>,
        out: &mut Outbox,
        stats: &mut Stats,
    ) {
        let route = request.route;
        let id = ServerRequestId {
            from,
            incarnation,
            customer: CustomerId::new(request.app, request.customer),
            ts: Timestamp(request.ts),
            part: route.part,
        };
        if route.epoch > cx.epoch() {
            if !self.hold(route.epoch, (from, incarnation, Message::KvRequest(request))) {
                responder::send_kv_response(id, Response::Refused(Refusal::TooManyPending), cx.limits, out);
            }
            return;
        }
        let Some(chain) = cx.chain(route.part) else {
            responder::send_kv_response(id, Response::Refused(Refusal::NoRange), cx.limits, out);
            return;
        };
        let place = if request.op.pushes() { chain.head() } else { chain.tail() };
        let member = self.members.get_mut(&route.part);
        let (Some(member), true) = (member, place == Some(cx.me)) else {
            responder::send_redirect(id, cx.epoch(), out);
            return;
        };
        let range = Some(chain.range());
        if responder.is_pending(id) {
            // Sent again while the handle still has it.
            stats.parts_again += 1;
            return;
        }
        if !request.op.pushes() {
            if !cx.lease {
                // A tail cut off from the scheduler may have been replaced:
                // what it holds may lack pushes acknowledged since.
                if self.unleased.len() < AHEAD_MAX {
                    self.unleased.push_back((from, incarnation, Message::KvRequest(request)));
                } else {
                    stats.unexpected_drops += 1;
                }
                return;
            }
            responder.on_kv_request(id, request, range, Then::Send, cx.limits, out, stats);
            return;
        }
        // A push's answer is an acknowledgement the tail can give as soon as
        // it applied the batch, a hop sooner than the head could; a
        // push_pull's carries the values the head's handle computed.
        let tail_answers = !request.op.pulls();
        let push = PushRef { origin: origin_of(id), ts: id.ts, floor: Timestamp(route.floor), tail_answers };
        let admitted = member.admit(push, cx.now);
        match admitted {
            Admit::Apply => responder.on_kv_request(id, request, range, Then::Replicate(push), cx.limits, out, stats),
            Admit::Answer if !request.op.pulls() => {
                stats.parts_again += 1;
                responder::send_kv_response(id, Response::ack(), cx.limits, out);
            }
            Admit::AnswerAt(seq) if !request.op.pulls() => {
                stats.parts_again += 1;
                member.owe(seq, Owed::new(id, Response::ack()));
            }
            Admit::Answer | Admit::AnswerAt(_) => {
                // A push_pull sent again, which its range applied already:
                // answered as a pull of the same keys (the handle must not
                // apply it twice), once its batch is committed.
                let seq = match admitted {
                    Admit::AnswerAt(seq) => seq,
                    _ => 0,
                };
                let pull = KvRequestMsg {
                    op: KvOp::Pull,
                    values: Values::empty(request.values.dtype()),
                    lens: None,
                    ..request
                };
                responder.on_kv_request(id, pull, range, Then::AnswerAfter(seq), cx.limits, out, stats);
            }
            Admit::Drop => stats.parts_again += 1,
        }
    }

    /// The handle answered request `id`, taken as `then` says; `state` is
    /// what it exported of the request's keys after applying it.
    #[allow(clippy::too_many_arguments)] // the answer, what the request was taken for, and the node's parts
    pub(crate) fn on_answer(
        &mut self,
        id: ServerRequestId,
        then: Then,
        response: Response,
        state: Option<KvList>,
        cx: Context<'_>,
        out: &mut Outbox,
        stats: &mut Stats,
    ) {
        let member = self.members.get_mut(&id.part);
        match (then, member) {
            (Then::Replicate(push), Some(_)) if matches!(response, Response::Ok { .. }) => {
                let Some(state) = state else {
                    // Applied here and not elsewhere: the copies differ
                    // from now on, which only a handle that cannot export
                    // causes. The worker learns it; the shell refuses such
                    // handles before serving.
                    stats.unexpected_drops += 1;
                    let refusal = Refusal::Handle("this handle cannot be replicated".into());
                    responder::send_kv_response(id, Response::Refused(refusal), cx.limits, out);
                    return;
                };
                let (seq, commit) = self.apply_at_head(id.part, push, (id.customer.app, state), cx, out);
                let member = self.members.get_mut(&id.part).expect("a member applied it");
                match commit {
                    Commit::Now => self.commit_answers(vec![Owed::new(id, response)], cx, out),
                    Commit::AtSuccessor => member.owe(seq, Owed { id, response, tail_answers: push.tail_answers }),
                    // This tail answers once the learner has the batch.
                    Commit::AtLearner => member.owe(seq, Owed::new(id, response)),
                }
            }
            (Then::AnswerAfter(seq), Some(member)) if seq > member.committed() => {
                member.owe(seq, Owed::new(id, response));
            }
            _ => responder::send_kv_response(id, response, cx.limits, out),
        }
    }

    /// The handle answered request `id`, whose requester died or was
    /// replaced meanwhile (its pending entry is gone), exporting `state`:
    /// a push the handle applied at the head must still go down the chain,
    /// or later batches would carry its effect without naming it and the
    /// copies would apply it without knowing. Nobody waits for the answer.
    pub(crate) fn on_orphan_answer(&mut self, id: ServerRequestId, state: KvList, cx: Context<'_>, out: &mut Outbox) {
        let Some(chain) = cx.chain(id.part) else {
            return;
        };
        let (true, true) = (self.members.contains_key(&id.part), chain.head() == Some(cx.me)) else {
            return;
        };
        // The worker is gone: nothing older than this push will come again.
        let push = PushRef { origin: origin_of(id), ts: id.ts, floor: id.ts, tail_answers: false };
        self.apply_at_head(id.part, push, (id.customer.app, state), cx, out);
    }

    /// At the head of range `part`: the handle applied `push`, leaving
    /// `state`. The batch goes to the successor or, when this member is
    /// also the tail, to its learner's stream if it has one. Returns the
    /// batch's number and when it commits.
    fn apply_at_head(
        &mut self,
        part: u32,
        push: PushRef,
        (app, state): State,
        cx: Context<'_>,
        out: &mut Outbox,
    ) -> (u64, Commit) {
        let successor = cx.chain(part).and_then(|chain| neighbours(chain, cx.me).1);
        self.apps.entry(part).or_default().insert(app);
        // A learner the tail waits for counts as a successor.
        let synced = successor.is_none() && self.synced(part);
        let member = self.members.get_mut(&part).expect("the caller found the member");
        let batch = member.applied(smallvec![push], (app, state), successor.is_some() || synced, cx.now);
        let seq = batch.seq;
        match successor {
            Some(next) => {
                out.send(NodeId::server(next), replicate(part, cx.epoch(), &batch));
                (seq, Commit::AtSuccessor)
            }
            None => {
                self.stream_batch(part, &batch, true, out);
                (seq, if synced { Commit::AtLearner } else { Commit::Now })
            }
        }
    }

    /// A batch from `from`.
    pub(crate) fn on_replicate(
        &mut self,
        from: NodeId,
        message: ReplicateMsg,
        cx: Context<'_>,
        out: &mut Outbox,
        stats: &mut Stats,
    ) {
        if message.epoch > cx.epoch() {
            let epoch = message.epoch;
            let incarnation = cx.membership.get(from).map_or(Incarnation(0), |e| e.incarnation);
            if !self.hold(epoch, (from, incarnation, Message::Replicate(message))) {
                stats.unexpected_drops += 1;
            }
            return;
        }
        let range = message.range;
        let (Some(chain), Some(member)) = (cx.chain(range), self.members.get_mut(&range)) else {
            stats.unexpected_drops += 1;
            return;
        };
        let (before, after) = neighbours(chain, cx.me);
        // Only the current predecessor feeds us, and only with batches
        // numbered since the chain last changed: an older head's order
        // may differ from the one we follow now.
        if before.map(NodeId::server) != Some(from) {
            stats.unexpected_drops += 1;
            return;
        }
        if message.epoch < chain.changed_at() {
            // Our predecessor has not seen the table that changed the
            // chain yet (a learner joined behind us, say): it sends its
            // batches again once it has (`on_table`).
            stats.unexpected_drops += 1;
            return;
        }
        let pushes = message.pushes.iter().map(from_wire).collect();
        let state = KvList { keys: message.keys, values: message.values, lens: message.lens };
        let batch = Numbered { seq: message.seq, payload: Batch { pushes, state: (message.app, state) } };
        match member.receive(batch) {
            Arrival::Apply(batches) => {
                for batch in &batches {
                    let (app, state) = &batch.payload.state;
                    let pushes = batch.payload.pushes.iter().map(|p| request_id(p, range)).collect();
                    out.event(Event::Install { app: *app, state: state.clone(), pushes });
                    self.apps.entry(range).or_default().insert(*app);
                }
                // A learner the tail waits for counts as a successor.
                let synced = after.is_none() && self.synced(range);
                let member = self.members.get_mut(&range).expect("looked up above");
                member.installed(&batches, after.is_some() || synced, cx.now);
                if synced {
                    for batch in &batches {
                        for owed in tail_answers(range, std::slice::from_ref(batch)) {
                            member.owe(batch.seq, owed);
                        }
                    }
                }
                if after.is_none() {
                    for batch in &batches {
                        self.stream_batch(range, batch, false, out);
                    }
                }
                let member = self.members.get_mut(&range).expect("looked up above");
                match after {
                    Some(next) => {
                        for batch in &batches {
                            out.send(NodeId::server(next), replicate(range, cx.epoch(), batch));
                        }
                    }
                    None if synced => {}
                    None => {
                        let answers = tail_answers(range, &batches);
                        let seq = member.committed();
                        self.commit_answers(answers, cx, out);
                        self.report_commit(range, before, seq, cx, out);
                    }
                }
            }
            // The predecessor sent again what we have: it may have missed
            // our report, so the tail repeats it.
            Arrival::Duplicate if after.is_none() && cx.lease => {
                out.send(from, Message::Committed { range, seq: member.committed() });
            }
            Arrival::Duplicate if after.is_none() => {
                self.commits_held.insert(range);
            }
            // A middle repeats what the tail reported to it, for the same
            // reason: a predecessor that sends again has not heard.
            Arrival::Duplicate if member.committed() > 0 => {
                out.send(from, Message::Committed { range, seq: member.committed() });
            }
            Arrival::Duplicate | Arrival::Held => {}
            Arrival::Dropped => {
                stats.unexpected_drops += 1;
                out.send(from, Message::ResendFrom { range, seq: member.last_applied() + 1 });
            }
        }
    }

    /// This server's member of `range` and its predecessor there, when
    /// `from` is its successor: only the current successor reports commits
    /// or asks for batches again. Anything else is counted and dropped.
    fn member_if_successor(
        &mut self,
        from: NodeId,
        range: u32,
        cx: Context<'_>,
        stats: &mut Stats,
    ) -> Option<(Option<Rank>, &mut RangeMember<State, Owed>)> {
        let found = cx.chain(range).zip(self.members.get_mut(&range)).and_then(|(chain, member)| {
            let (before, after) = neighbours(chain, cx.me);
            (after.map(NodeId::server) == Some(from)).then_some((before, member))
        });
        if found.is_none() {
            stats.unexpected_drops += 1;
        }
        found
    }

    /// The successor `from` applied (or its tail did) batches up to `seq`.
    pub(crate) fn on_committed(
        &mut self,
        from: NodeId,
        range: u32,
        seq: u64,
        cx: Context<'_>,
        out: &mut Outbox,
        stats: &mut Stats,
    ) {
        let Some((before, member)) = self.member_if_successor(from, range, cx, stats) else {
            return;
        };
        let before_commit = member.committed();
        // The tail answered the pushes it acknowledges itself.
        let due = member.on_committed(seq).into_iter().filter(|owed| !owed.tail_answers).collect();
        send_owed(due, cx, out);
        if let (Some(prev), true) = (before, member.committed() > before_commit) {
            out.send(NodeId::server(prev), Message::Committed { range, seq: member.committed() });
        }
    }

    /// The successor `from` dropped batches of `range` from `seq` on.
    pub(crate) fn on_resend_from(
        &mut self,
        from: NodeId,
        range: u32,
        seq: u64,
        cx: Context<'_>,
        out: &mut Outbox,
        stats: &mut Stats,
    ) {
        let Some((_, member)) = self.member_if_successor(from, range, cx, stats) else {
            return;
        };
        for batch in member.resend_from(seq) {
            out.send(from, replicate(range, cx.epoch(), &batch));
        }
    }

    /// The node adopted a table (`old` was its previous replica table):
    /// each range's member takes its new place. Returns the messages that
    /// waited for this table, to be handled now.
    pub(crate) fn on_table(&mut self, old: &Chains, cx: Context<'_>, out: &mut Outbox) -> Vec<Held> {
        let new = cx.membership.chains();
        for (index, chain) in new.as_slice().iter().enumerate() {
            let range = index as u32;
            if !chain.holds(cx.me) {
                self.members.remove(&range);
                continue;
            }
            let Some(member) = self.members.get_mut(&range) else {
                // A learner that caught up becomes the tail; otherwise this
                // is formation, or a range that lost every copy and
                // restarts empty here.
                let member = self.promote(range).unwrap_or_else(|| RangeMember::new(self.idle_max));
                self.members.insert(range, member);
                continue;
            };
            let (before, after) = old.as_slice().get(index).map_or((None, None), |c| neighbours(c, cx.me));
            let (now_before, now_after) = neighbours(chain, cx.me);
            if now_before.is_none() && before.is_some() {
                member.become_head();
            }
            if now_after.is_none() && after.is_some() {
                let (mut due, unseen) = member.become_tail();
                // The tail that died may not have answered what it applied.
                due.extend(tail_answers(range, &unseen));
                match (now_before, cx.lease) {
                    (Some(prev), true) => {
                        out.send(NodeId::server(prev), Message::Committed { range, seq: member.committed() });
                    }
                    (Some(_), false) => {
                        self.commits_held.insert(range);
                    }
                    (None, _) => {}
                }
                if cx.lease {
                    send_owed(due, cx, out);
                } else {
                    self.unleased_answers.extend(due);
                }
            }
            // A new successor lacks what we kept; the same one dropped what
            // we sent under the table before, if the chain changed since.
            let changed = old.as_slice().get(index).is_none_or(|c| c.changed_at() != chain.changed_at());
            if let (Some(next), true) = (now_after, now_after != after || changed) {
                for batch in member.resend() {
                    out.send(NodeId::server(next), replicate(range, cx.epoch(), &batch));
                }
            }
        }
        let kept: BTreeSet<u32> = self.members.keys().copied().collect();
        self.apps.retain(|range, _| kept.contains(range));
        self.transfers_on_table(cx, out);
        let epoch = cx.epoch();
        let (ready, later): (VecDeque<_>, VecDeque<_>) = self.ahead.drain(..).partition(|(at, _)| *at <= epoch);
        self.ahead = later;
        ready.into_iter().map(|(_, held)| held).collect()
    }

    /// A periodic check: a range whose successor has reported no commit
    /// for `stall` while batches wait for it gets them all again. Frames
    /// are lost only where nothing resends them (resends off, a server
    /// that was not ready yet, a reset connection); without this, the
    /// batch lost would hold every later one back for good, and the
    /// tail's repeated report (`Duplicate` above) or the applied batches
    /// let the chain go on.
    pub(crate) fn on_tick(&mut self, stall: Duration, cx: Context<'_>, out: &mut Outbox) {
        let progress = &mut self.progress;
        progress.retain(|range, _| self.members.get(range).is_some_and(|m| m.sent() > 0));
        for (&range, member) in &self.members {
            if member.sent() == 0 {
                continue;
            }
            let committed = member.committed();
            let since = progress.entry(range).or_insert((committed, cx.now));
            if since.0 != committed {
                *since = (committed, cx.now);
                continue;
            }
            if cx.now < since.1 + stall {
                continue;
            }
            since.1 = cx.now;
            let Some(next) = cx.chain(range).and_then(|chain| neighbours(chain, cx.me).1) else {
                continue;
            };
            for batch in member.resend() {
                out.send(NodeId::server(next), replicate(range, cx.epoch(), &batch));
            }
        }
        self.catch_up_tick(stall, cx, out);
    }

    /// Tells `predecessor` that batches of `range` are committed through
    /// `seq`, while this tail holds the read lease (once it is renewed
    /// otherwise).
    pub(super) fn report_commit(
        &mut self,
        range: u32,
        predecessor: Option<Rank>,
        seq: u64,
        cx: Context<'_>,
        out: &mut Outbox,
    ) {
        match (predecessor, cx.lease) {
            (Some(prev), true) => out.send(NodeId::server(prev), Message::Committed { range, seq }),
            (Some(_), false) => {
                self.commits_held.insert(range);
            }
            (None, _) => {}
        }
    }

    /// Answers of pushes this server committed as the tail: sent while it
    /// holds the read lease, kept until it does again otherwise.
    pub(super) fn commit_answers(&mut self, due: Vec<Owed>, cx: Context<'_>, out: &mut Outbox) {
        if cx.lease {
            send_owed(due, cx, out);
        } else {
            self.unleased_answers.extend(due);
        }
    }

    /// The read lease was renewed: answers and commit reports held back
    /// go out, and the pulls that waited for it come back to be handled
    /// again.
    pub(crate) fn on_lease_renewed(&mut self, cx: Context<'_>, out: &mut Outbox) -> Vec<Held> {
        send_owed(std::mem::take(&mut self.unleased_answers), cx, out);
        for range in std::mem::take(&mut self.commits_held) {
            let (Some(chain), Some(member)) = (cx.chain(range), self.members.get(&range)) else {
                continue;
            };
            if let (Some(prev), None) = neighbours(chain, cx.me) {
                out.send(NodeId::server(prev), Message::Committed { range, seq: member.committed() });
            }
        }
        self.unleased.drain(..).collect()
    }

    /// Worker `id` died or was replaced: its pushes will not come again.
    pub(crate) fn forget_worker(&mut self, id: NodeId, incarnation: Incarnation) {
        if id.role() == Some(Role::Worker) {
            for member in self.members.values_mut() {
                member.forget_worker(id, incarnation);
            }
        }
    }

    /// The node stopped: nothing is owed or kept any more.
    pub(crate) fn clear(&mut self) {
        self.members.clear();
        self.progress.clear();
        self.ahead.clear();
        self.unleased.clear();
        self.unleased_answers.clear();
        self.commits_held.clear();
        self.apps.clear();
        self.sources.clear();
        self.learning.clear();
        self.partial.clear();
    }
}

/// The acknowledgements a tail gives for the pushes of `batches` of range
/// `range` that it answers itself.
fn tail_answers(range: u32, batches: &[Numbered<Batch<State>>]) -> Vec<Owed> {
    batches
        .iter()
        .flat_map(|batch| &batch.payload.pushes)
        .filter(|push| push.tail_answers)
        .map(|push| Owed::new(request_id(push, range), Response::ack()))
        .collect()
}

/// Sends answers that came due, to requesters still there to take them.
fn send_owed(due: Vec<Owed>, cx: Context<'_>, out: &mut Outbox) {
    for Owed { id, response, .. } in due {
        if !responder::requester_gone(id, cx.membership) {
            responder::send_kv_response(id, response, cx.limits, out);
        }
    }
}
