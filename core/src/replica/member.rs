//! One server's part in one replicated range: the ordered log and the
//! dedup table together, and the decisions a member makes on a push, a
//! batch from its predecessor, a commit report from its successor, and a
//! change of its place in the chain.
//!
//! The head acknowledges a push only once its batch is committed (the
//! tail applied it), so an acknowledged push is on every member; until
//! then the answer is *owed*, kept by batch number. A push that arrives
//! again (its worker's head died and it was sent to the new one, which
//! applied it as a member) is found in the dedup table: answered at once
//! if its batch is committed, owed until then if not, never applied twice.
//!
//! The head, not the tail, sends the answer: the worker waits on the
//! server it sent to, as with one copy, at the cost of one more hop of
//! latency for the commit report to come back. Answers that only the tail
//! could send would need the worker to track who may answer each part.

use std::collections::BTreeMap;

use smallvec::SmallVec;

use super::dedup::{DedupTable, Origin, Seen};
use super::log::{Arrival, ChainLog, Numbered};
use crate::id::{Incarnation, NodeId};
use crate::kv::Timestamp;
use crate::time::{Duration, Instant};

/// One push part as the range knows it: whose it is, and the oldest
/// request its worker still waited on when sending it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PushRef {
    pub(crate) origin: Origin,
    pub(crate) ts: Timestamp,
    pub(crate) floor: Timestamp,
    /// The tail answers it once applied (see [`BatchPush`]).
    ///
    /// [`BatchPush`]: crate::wire::BatchPush
    pub(crate) tail_answers: bool,
}

/// What goes down the chain: the pushes a batch applied and the state
/// they left on their keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Batch<S> {
    pub(crate) pushes: SmallVec<[PushRef; 1]>,
    pub(crate) state: S,
}

/// What to do with a push that reached the head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// New: run the handle, then [`RangeMember::applied`].
    Apply,
    /// Applied and committed already: answer now.
    Answer,
    /// Applied, not committed yet: answer once batch `seq` is
    /// ([`RangeMember::owe`]).
    AnswerAt(u64),
    /// Older than its worker's floor: nobody waits for an answer.
    Drop,
}

/// One member's state for one range. `S` is the state a batch carries,
/// `A` an answer owed to a worker.
#[derive(Clone, Debug)]
pub(crate) struct RangeMember<S, A> {
    log: ChainLog<Batch<S>>,
    dedup: DedupTable,
    owed: BTreeMap<u64, Vec<A>>,
}

impl<S: Clone, A> RangeMember<S, A> {
    /// A member from the range's start; a worker's pushes are forgotten
    /// after `idle_max` without one (the request timeout).
    pub(crate) fn new(idle_max: Duration) -> Self {
        Self::caught_up(0, DedupTable::new(idle_max))
    }

    /// A learner that caught up: it holds the range as of batch `seq`, and
    /// the dedup table that came with the transfer.
    pub(crate) fn caught_up(seq: u64, dedup: DedupTable) -> Self {
        Self { log: ChainLog::starting_at(seq), dedup, owed: BTreeMap::new() }
    }

    /// The same member, holding at most `held_max` batches ahead.
    #[cfg(test)]
    pub(crate) fn holding_at_most(self, held_max: u64) -> Self {
        Self { log: self.log.holding_at_most(held_max), ..self }
    }

    /// The dedup table, to send with a state transfer.
    pub(crate) fn dedup(&self) -> &DedupTable {
        &self.dedup
    }

    /// The last batch applied here.
    pub(crate) fn last_applied(&self) -> u64 {
        self.log.applied()
    }

    /// Batches held back, waiting for an earlier one.
    #[cfg(any(test, feature = "inspect"))]
    pub(crate) fn held(&self) -> usize {
        self.log.held()
    }

    /// The last batch known applied at the tail.
    pub(crate) fn committed(&self) -> u64 {
        self.log.committed()
    }

    /// Answers owed, over every batch.
    #[cfg(any(test, feature = "inspect"))]
    pub(crate) fn owed(&self) -> usize {
        self.owed.values().map(Vec::len).sum()
    }

    /// Batches kept for the successor.
    pub(crate) fn sent(&self) -> usize {
        self.log.sent().count()
    }

    /// At the head: a push part arrived at `now`.
    pub(crate) fn admit(&mut self, push: PushRef, now: Instant) -> Admit {
        self.dedup.settle_before(push.origin, push.floor, now);
        match self.dedup.check(push.origin, push.ts) {
            Seen::New => Admit::Apply,
            Seen::Settled => Admit::Drop,
            Seen::Applied(seq) if seq <= self.log.committed() => Admit::Answer,
            Seen::Applied(seq) => Admit::AnswerAt(seq),
        }
    }

    /// At the head: the handle applied `pushes`, leaving `state`. Returns
    /// the batch, to forward with a successor; without one, this member is
    /// also the tail and the batch is committed at once.
    pub(crate) fn applied(
        &mut self,
        pushes: SmallVec<[PushRef; 1]>,
        state: S,
        has_successor: bool,
        now: Instant,
    ) -> Numbered<Batch<S>> {
        let seq = self.log.applied() + 1;
        for push in &pushes {
            self.dedup.record(push.origin, push.ts, push.floor, seq, now);
        }
        let batch = self.log.sequence(Batch { pushes, state }, has_successor);
        debug_assert_eq!(batch.seq, seq);
        batch
    }

    /// An answer to send once batch `seq` is committed.
    pub(crate) fn owe(&mut self, seq: u64, answer: A) {
        debug_assert!(seq > self.log.committed(), "committed answers go at once");
        self.owed.entry(seq).or_default().push(answer);
    }

    /// A batch from the predecessor: what to install now, in order.
    pub(crate) fn receive(&mut self, batch: Numbered<Batch<S>>) -> Arrival<Batch<S>> {
        self.log.receive(batch)
    }

    /// The batches `receive` handed out are installed: their pushes are
    /// known here from now on, so a resend to this member (should it
    /// become head) is not applied again. Returns whether they are
    /// committed (this member is the tail).
    pub(crate) fn installed(&mut self, batches: &[Numbered<Batch<S>>], has_successor: bool, now: Instant) -> bool {
        for batch in batches {
            for push in &batch.payload.pushes {
                self.dedup.record(push.origin, push.ts, push.floor, batch.seq, now);
            }
        }
        self.log.applied_through(batches, has_successor);
        !has_successor
    }

    /// The tail applied everything through `seq`: the answers owed up to
    /// it are due.
    pub(crate) fn on_committed(&mut self, seq: u64) -> Vec<A> {
        self.log.on_committed(seq);
        self.take_owed_through(self.log.committed())
    }

    /// What a new successor must be sent.
    pub(crate) fn resend(&self) -> Vec<Numbered<Batch<S>>> {
        self.log.resend()
    }

    /// What the successor asks for again after dropping batches it could
    /// not hold: everything from `from` on.
    pub(crate) fn resend_from(&self, from: u64) -> Vec<Numbered<Batch<S>>> {
        self.log.resend_from(from)
    }

    /// The tail died and this member is the tail now: everything applied
    /// is committed, and every answer owed is due. Returns those answers
    /// and the batches it had passed on and not seen committed, whose
    /// pushes the tail that died may not have answered.
    pub(crate) fn become_tail(&mut self) -> (Vec<A>, Vec<Numbered<Batch<S>>>) {
        let batches = self.log.become_tail();
        (self.take_owed_through(self.log.committed()), batches)
    }

    /// The head died and this member heads the range now.
    pub(crate) fn become_head(&mut self) {
        self.log.become_head();
    }

    /// A worker process died or was replaced: its pushes will not come
    /// again.
    pub(crate) fn forget_worker(&mut self, worker: NodeId, incarnation: Incarnation) {
        self.dedup.forget_worker(worker, incarnation);
    }

    fn take_owed_through(&mut self, seq: u64) -> Vec<A> {
        let later = self.owed.split_off(&(seq + 1));
        std::mem::replace(&mut self.owed, later).into_values().flatten().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Rank;
    use crate::kv::CustomerId;
    use proptest::prelude::*;
    use smallvec::smallvec;
    use std::collections::BTreeSet;

    const WORKERS: u32 = 2;
    const IDLE: Duration = Duration::from_secs(120);

    fn origin(worker: u32) -> Origin {
        Origin { worker: NodeId::worker(Rank(worker)), incarnation: Incarnation(0), customer: CustomerId::DEFAULT }
    }

    #[test]
    fn a_push_sent_again_to_a_new_head_is_answered_not_applied_twice() {
        let now = Instant::ZERO;
        let mut head = RangeMember::<u32, &str>::new(IDLE);
        let mut next = RangeMember::<u32, &str>::new(IDLE);
        let push = PushRef { origin: origin(0), ts: Timestamp(4), floor: Timestamp(4), tail_answers: false };
        assert_eq!(head.admit(push, now), Admit::Apply);
        let batch = head.applied(smallvec![push], 40, true, now);
        head.owe(batch.seq, "ack 4");
        assert_eq!((head.owed(), head.sent()), (1, 1));
        let Arrival::Apply(ready) = next.receive(batch) else { panic!("in order") };
        assert!(next.installed(&ready, false, now), "the tail commits");
        // The head dies before the commit report reaches it: the worker
        // sends the push to the new head, which has it.
        assert_eq!(next.admit(push, now), Admit::Answer);
        assert_eq!(head.on_committed(1), ["ack 4"]);
        assert_eq!((head.owed(), head.sent()), (0, 0));
        let mut lone = RangeMember::<u32, &str>::new(IDLE);
        let later = PushRef { ts: Timestamp(9), floor: Timestamp(9), ..push };
        assert_eq!(lone.admit(push, now), Admit::Apply);
        let batch = lone.applied(smallvec![push], 1, false, now);
        assert_eq!((batch.seq, lone.committed()), (1, 1), "a chain of one commits at once");
        assert_eq!(lone.admit(later, now), Admit::Apply);
        assert_eq!(lone.admit(push, now), Admit::Drop, "its worker moved its floor past it");
        // A worker process that died sends nothing again: its entries go.
        lone.forget_worker(NodeId::worker(Rank(0)), Incarnation(0));
        assert_eq!(lone.admit(push, now), Admit::Apply, "forgotten");
        // A learner that caught up goes on from the batch it holds, with
        // the table it was sent.
        let mut learner = RangeMember::<u32, &str>::caught_up(1, next.dedup().clone());
        assert_eq!(learner.admit(push, now), Admit::Answer, "known through the transferred table");
        let batch = learner.applied(smallvec![later], 9, false, now);
        assert_eq!(batch.seq, 2, "numbering goes on");
        // A member holds at most as many batches ahead as it is told.
        let mut short = RangeMember::<u32, &str>::new(IDLE).holding_at_most(2);
        let ahead = |seq| Numbered { seq, payload: Batch { pushes: smallvec![push], state: 0 } };
        assert_eq!(short.receive(ahead(2)), Arrival::Held);
        assert_eq!(short.receive(ahead(3)), Arrival::Dropped);
    }

    #[derive(Clone, Debug)]
    enum Step {
        /// A worker issues a new push to the head it knows.
        Issue(u32),
        /// Deliver the message in flight at this index.
        Deliver(usize),
        /// Duplicate the message in flight at this index.
        Duplicate(usize),
        /// A worker sends every push it still waits on to the current head
        /// again (a timeout, or the news of a death).
        Resend(u32),
        /// The member at this position dies.
        Kill(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (0..WORKERS).prop_map(Step::Issue),
            8 => any::<usize>().prop_map(Step::Deliver),
            1 => any::<usize>().prop_map(Step::Duplicate),
            1 => (0..WORKERS).prop_map(Step::Resend),
            1 => any::<usize>().prop_map(Step::Kill),
        ]
    }

    /// A push's id in the model: its worker and timestamp.
    type Id = (u32, u32);

    #[derive(Clone, Debug)]
    enum Msg {
        /// Worker → head.
        Push(Id, Timestamp),
        /// Head → worker.
        Ack(Id),
        Batch(Numbered<Batch<Id>>),
        Committed(u64),
        /// "Send again everything from this batch on."
        ResendFrom(u64),
    }

    struct Member {
        id: usize,
        range: RangeMember<Id, Id>,
        /// Pushes installed, in order.
        state: Vec<Id>,
    }

    /// Nodes: members `0..`, workers `100 + w`.
    struct Model {
        chain: Vec<Member>,
        wire: Vec<(usize, usize, Msg)>,
        /// Per worker: next timestamp, and pushes waiting for an answer.
        workers: Vec<(u32, BTreeSet<u32>)>,
        acked: BTreeSet<Id>,
    }

    impl Model {
        fn at(&self, id: usize) -> Option<usize> {
            self.chain.iter().position(|m| m.id == id)
        }

        fn floor(&self, worker: u32) -> Timestamp {
            let (next, waiting) = &self.workers[worker as usize];
            Timestamp(waiting.first().copied().unwrap_or(*next))
        }

        fn send_push(&mut self, worker: u32, ts: u32) {
            let floor = self.floor(worker);
            let head = self.chain[0].id;
            self.wire.push((100 + worker as usize, head, Msg::Push((worker, ts), floor)));
        }

        fn tail_committed(&mut self) {
            let tail = self.chain.last().unwrap();
            if self.chain.len() > 1 {
                let to = self.chain[self.chain.len() - 2].id;
                self.wire.push((tail.id, to, Msg::Committed(tail.range.last_applied())));
            }
        }

        fn answer(&mut self, from: usize, ids: Vec<Id>) {
            for id in ids {
                self.wire.push((from, 100 + id.0 as usize, Msg::Ack(id)));
            }
        }

        fn deliver(&mut self, (from, to, msg): (usize, usize, Msg)) {
            if let Msg::Ack(id) = msg {
                let (_, waiting) = &mut self.workers[to - 100];
                if waiting.remove(&id.1) {
                    self.acked.insert(id);
                }
                return;
            }
            let Some(at) = self.at(to) else { return };
            let has_successor = at + 1 < self.chain.len();
            match msg {
                Msg::Push(id, floor) if at == 0 => {
                    let push = PushRef { origin: origin(id.0), ts: Timestamp(id.1), floor, tail_answers: false };
                    match self.chain[0].range.admit(push, Instant::ZERO) {
                        Admit::Apply => {
                            self.chain[0].state.push(id);
                            let batch = self.chain[0].range.applied(smallvec![push], id, has_successor, Instant::ZERO);
                            if has_successor {
                                self.chain[0].range.owe(batch.seq, id);
                                self.wire.push((to, self.chain[1].id, Msg::Batch(batch)));
                            } else {
                                self.answer(to, vec![id]);
                            }
                        }
                        Admit::Answer => self.answer(to, vec![id]),
                        Admit::AnswerAt(seq) => self.chain[0].range.owe(seq, id),
                        Admit::Drop => {}
                    }
                }
                Msg::Batch(batch) if self.at(from).is_some_and(|p| p + 1 == at) => {
                    let arrival = self.chain[at].range.receive(batch);
                    if arrival == Arrival::Dropped {
                        let again = self.chain[at].range.last_applied() + 1;
                        self.wire.push((to, from, Msg::ResendFrom(again)));
                    }
                    // As `Serving::on_replicate` does: a predecessor that
                    // sends again may have missed the report (the middle
                    // that carried it died), so the tail, or a middle that
                    // heard one, repeats it.
                    if arrival == Arrival::Duplicate && self.chain[at].range.committed() > 0 {
                        let seq = self.chain[at].range.committed();
                        self.wire.push((to, from, Msg::Committed(seq)));
                    }
                    if let Arrival::Apply(ready) = arrival {
                        self.chain[at].state.extend(ready.iter().map(|b| b.payload.state));
                        if self.chain[at].range.installed(&ready, has_successor, Instant::ZERO) {
                            self.tail_committed();
                        } else {
                            let next = self.chain[at + 1].id;
                            self.wire.extend(ready.into_iter().map(|b| (to, next, Msg::Batch(b))));
                        }
                    }
                }
                Msg::ResendFrom(again) if self.at(from) == Some(at + 1) => {
                    let batches = self.chain[at].range.resend_from(again);
                    self.wire.extend(batches.into_iter().map(|b| (to, from, Msg::Batch(b))));
                }
                Msg::Committed(seq) if self.at(from) == Some(at + 1) => {
                    let due = self.chain[at].range.on_committed(seq);
                    if at == 0 {
                        self.answer(to, due);
                    } else {
                        self.wire.push((to, self.chain[at - 1].id, Msg::Committed(seq)));
                    }
                }
                _ => {}
            }
        }

        fn kill(&mut self, at: usize) {
            self.chain.remove(at);
            let last = self.chain.len() - 1;
            if at > last {
                let (due, _) = self.chain[last].range.become_tail();
                if last == 0 {
                    let head = self.chain[0].id;
                    self.answer(head, due);
                }
                self.tail_committed();
            } else if at == 0 {
                self.chain[0].range.become_head();
            } else {
                let (from, to) = (self.chain[at - 1].id, self.chain[at].id);
                let resend = self.chain[at - 1].range.resend();
                self.wire.extend(resend.into_iter().map(|b| (from, to, Msg::Batch(b))));
            }
            if at == 0 {
                // Workers hear of the death and send what waits to the new head.
                for worker in 0..WORKERS {
                    self.resend(worker);
                }
            }
        }

        fn resend(&mut self, worker: u32) {
            let waiting: Vec<u32> = self.workers[worker as usize].1.iter().copied().collect();
            for ts in waiting {
                self.send_push(worker, ts);
            }
        }
    }

    proptest! {
        /// Workers push to the head and send again what waits after a
        /// head's death (or whenever they like); members die at any moment.
        /// A push acknowledged is installed on every live member; no
        /// member installs a push twice; and once the network is quiet
        /// and workers have sent everything again, every push is
        /// acknowledged, members agree, and nothing is left owed or kept.
        #[test]
        fn every_acknowledged_push_is_on_every_member_once_through_failovers(
            length in 1usize..=3,
            steps in proptest::collection::vec(step(), 0..150),
        ) {
            let chain = (0..length).map(|id| Member { id, range: RangeMember::new(IDLE).holding_at_most(2), state: Vec::new() }).collect();
            let workers = vec![(0, BTreeSet::new()); WORKERS as usize];
            let mut model = Model { chain, wire: Vec::new(), workers, acked: BTreeSet::new() };
            for step in steps {
                match step {
                    Step::Issue(w) => {
                        let (next, waiting) = &mut model.workers[w as usize];
                        let ts = *next;
                        *next += 1;
                        waiting.insert(ts);
                        model.send_push(w, ts);
                    }
                    Step::Deliver(i) if !model.wire.is_empty() => {
                        let msg = model.wire.remove(i % model.wire.len());
                        model.deliver(msg);
                    }
                    Step::Duplicate(i) if !model.wire.is_empty() => {
                        let copy = model.wire[i % model.wire.len()].clone();
                        model.wire.push(copy);
                    }
                    Step::Resend(w) => model.resend(w),
                    Step::Kill(i) if model.chain.len() > 1 => model.kill(i % model.chain.len()),
                    _ => {}
                }
                for member in &model.chain {
                    let distinct: BTreeSet<Id> = member.state.iter().copied().collect();
                    prop_assert_eq!(distinct.len(), member.state.len(), "a push installed twice at {}", member.id);
                    for id in &model.acked {
                        prop_assert!(member.state.contains(id), "acked {:?} missing at {}", id, member.id);
                    }
                }
            }
            for _ in 0..4 {
                while !model.wire.is_empty() {
                    let msg = model.wire.remove(0);
                    model.deliver(msg);
                }
                for worker in 0..WORKERS {
                    model.resend(worker);
                }
            }
            while !model.wire.is_empty() {
                let msg = model.wire.remove(0);
                model.deliver(msg);
            }
            prop_assert!(model.workers.iter().all(|(_, waiting)| waiting.is_empty()), "every push answered");
            for member in &model.chain {
                prop_assert_eq!(&member.state, &model.chain[0].state, "member {} did not converge", member.id);
                prop_assert_eq!((member.range.owed(), member.range.sent()), (0, 0), "member {} keeps", member.id);
            }
        }
    }
}
