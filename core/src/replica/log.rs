//! One chain member's ordered log of one key range: what it applied, what
//! it forwarded and is not known to be committed yet (`Sent`), and what
//! arrived ahead of its turn.
//!
//! The head numbers batches; every other member applies them strictly in
//! that order, so all replicas pass through the same states and a
//! member's applied batches are always a prefix of its predecessor's. A
//! batch is *committed* once the tail applied it: only then is it
//! acknowledged, so an acknowledged push is on every member. `Sent` keeps
//! each forwarded batch until the tail's `Committed` comes back, which is
//! what failover needs and all it needs:
//! - a successor died: the new successor may lack any part of `Sent`, so
//!   all of it is sent again (it drops what it has);
//! - the tail died: its predecessor becomes tail, and everything in its
//!   `Sent` is committed now (it is applied on every member left);
//! - the head died: the new head numbers on from what it applied; batches
//!   the old head numbered but never forwarded were never acknowledged,
//!   and their workers send them again.
//!
//! The payload is opaque here: what crosses the chain is the node's
//! business.

use std::collections::{BTreeMap, VecDeque};

/// How far past the last applied batch one may arrive and be held (the
/// next one is applied at once); beyond it a batch is dropped, and the member asks its predecessor for
/// everything after what it applied (`resend_from`). Reliable delivery
/// resends a lost frame by itself, but it may have delivered (and
/// acknowledged) a batch this log then had to drop.
pub(crate) const HELD_MAX: u64 = 1024;

/// A batch and its number in the range's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Numbered<P> {
    pub(crate) seq: u64,
    pub(crate) payload: P,
}

/// What became of a batch that arrived from the predecessor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Arrival<P> {
    /// Apply these now, in this order (the batch and any held-back ones
    /// it made contiguous).
    Apply(Vec<Numbered<P>>),
    /// Applied already (a resend after a failover, or a duplicate).
    Duplicate,
    /// An earlier batch is missing: kept until it comes.
    Held,
    /// Too far ahead to keep: dropped. Ask the predecessor to send again
    /// everything after [`ChainLog::applied`].
    Dropped,
}

/// One member's log of one range.
#[derive(Clone, Debug)]
pub(crate) struct ChainLog<P> {
    /// Every batch up to this one is applied here (0: none).
    applied: u64,
    /// Every batch up to this one is applied at the tail.
    committed: u64,
    /// Forwarded, not known to be committed: seqs `committed+1..=applied`
    /// that went to a successor, in order.
    sent: VecDeque<Numbered<P>>,
    /// Arrived before their turn.
    held: BTreeMap<u64, P>,
    held_max: u64,
}

impl<P> Default for ChainLog<P> {
    fn default() -> Self {
        Self::starting_at(0)
    }
}

impl<P> ChainLog<P> {
    /// A log that starts where a state transfer left it: the range's state
    /// up to batch `applied` is installed, and that much is committed.
    pub(crate) fn starting_at(applied: u64) -> Self {
        Self { applied, committed: applied, sent: VecDeque::new(), held: BTreeMap::new(), held_max: HELD_MAX }
    }

    /// The same log, holding at most `held_max` batches ahead.
    #[cfg(test)]
    pub(crate) fn holding_at_most(self, held_max: u64) -> Self {
        Self { held_max, ..self }
    }
}

impl<P: Clone> ChainLog<P> {
    /// The last batch applied here.
    pub(crate) fn applied(&self) -> u64 {
        self.applied
    }

    /// The last batch known applied at the tail.
    pub(crate) fn committed(&self) -> u64 {
        self.committed
    }

    /// Batches kept for a successor.
    pub(crate) fn sent(&self) -> impl Iterator<Item = &Numbered<P>> {
        self.sent.iter()
    }

    /// Batches held back.
    #[cfg(any(test, feature = "inspect"))]
    pub(crate) fn held(&self) -> usize {
        self.held.len()
    }

    /// The head applied a new batch: it takes the next number. With a
    /// successor it is kept until committed; a head that is also the tail
    /// commits it at once.
    pub(crate) fn sequence(&mut self, payload: P, has_successor: bool) -> Numbered<P> {
        debug_assert!(self.held.is_empty(), "a head has no predecessor to hold batches from");
        self.applied += 1;
        let batch = Numbered { seq: self.applied, payload };
        if has_successor {
            self.sent.push_back(batch.clone());
        } else {
            self.committed = self.applied;
        }
        batch
    }

    /// A batch from the predecessor.
    pub(crate) fn receive(&mut self, batch: Numbered<P>) -> Arrival<P> {
        let Numbered { seq, payload } = batch;
        if seq <= self.applied {
            return Arrival::Duplicate;
        }
        if seq > self.applied + 1 {
            if seq - self.applied > self.held_max {
                return Arrival::Dropped;
            }
            self.held.insert(seq, payload);
            return Arrival::Held;
        }
        let mut ready = vec![Numbered { seq, payload }];
        let mut next = seq + 1;
        while let Some(payload) = self.held.remove(&next) {
            ready.push(Numbered { seq: next, payload });
            next += 1;
        }
        Arrival::Apply(ready)
    }

    /// The batches `receive` handed out were applied, in order: a member
    /// with a successor keeps them for it; the tail commits them.
    pub(crate) fn applied_through(&mut self, batches: &[Numbered<P>], has_successor: bool) {
        for batch in batches {
            debug_assert_eq!(batch.seq, self.applied + 1, "applied in order");
            self.applied = batch.seq;
            if has_successor {
                self.sent.push_back(batch.clone());
            } else {
                self.committed = batch.seq;
            }
        }
    }

    /// The tail applied everything up to `seq`: those batches are
    /// acknowledged and need not be kept. Stale reports change nothing.
    pub(crate) fn on_committed(&mut self, seq: u64) {
        let seq = seq.min(self.applied);
        if seq <= self.committed {
            return;
        }
        self.committed = seq;
        while self.sent.front().is_some_and(|b| b.seq <= seq) {
            self.sent.pop_front();
        }
    }

    /// A new successor (the old one died, or a learner became tail behind
    /// us): everything not known committed goes to it again.
    pub(crate) fn resend(&self) -> Vec<Numbered<P>> {
        self.sent.iter().cloned().collect()
    }

    /// The successor dropped batches it could not hold and has applied
    /// everything before `from`: what it lacks goes again.
    pub(crate) fn resend_from(&self, from: u64) -> Vec<Numbered<P>> {
        self.sent.iter().filter(|b| b.seq >= from).cloned().collect()
    }

    /// The tail died and this member is the tail now: everything it
    /// forwarded is applied on every member left, so it is committed.
    /// Returns those batches, to be acknowledged.
    pub(crate) fn become_tail(&mut self) -> Vec<Numbered<P>> {
        self.committed = self.applied;
        self.sent.drain(..).collect()
    }

    /// The predecessor died and this member is the head now: what arrived
    /// out of turn will never be filled in (the new order goes on from
    /// what is applied here), so it is dropped.
    pub(crate) fn become_head(&mut self) {
        self.held.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn batches_are_applied_in_order_whatever_order_they_arrive_in() {
        let mut log = ChainLog::default();
        let batch = |seq| Numbered { seq, payload: seq * 10 };
        assert_eq!(log.receive(batch(2)), Arrival::Held);
        assert_eq!(log.receive(batch(3)), Arrival::Held);
        let Arrival::Apply(ready) = log.receive(batch(1)) else { panic!("batch 1 is next") };
        assert_eq!(ready, [batch(1), batch(2), batch(3)]);
        log.applied_through(&ready, true);
        assert_eq!((log.applied(), log.committed(), log.held()), (3, 0, 0));
        assert_eq!(log.receive(batch(2)), Arrival::Duplicate);
        assert_eq!(log.receive(batch(4 + HELD_MAX)), Arrival::Dropped);
        // Exactly `held_max` past the last applied is still held; one more
        // is dropped.
        let mut small = ChainLog::starting_at(10).holding_at_most(2);
        assert_eq!(small.receive(batch(12)), Arrival::Held);
        assert_eq!(small.receive(batch(13)), Arrival::Dropped);
        assert_eq!(ChainLog::<u64>::starting_at(9).receive(batch(10)), Arrival::Apply(vec![batch(10)]));
        log.on_committed(2);
        assert_eq!(log.sent().map(|b| b.seq).collect::<Vec<_>>(), [3]);
        log.on_committed(1);
        assert_eq!(log.committed(), 2, "a stale report changes nothing");
        assert_eq!(log.become_tail(), [batch(3)]);
        assert_eq!((log.committed(), log.sent().count()), (3, 0));
    }

    /// One step of a simulated chain.
    #[derive(Clone, Debug)]
    enum Step {
        /// The head takes a new batch.
        Push,
        /// Deliver the message in flight at this index (mod the count).
        Deliver(usize),
        /// Duplicate the message in flight at this index.
        Duplicate(usize),
        /// The member at this position (mod the chain length) dies.
        Kill(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => Just(Step::Push),
            6 => any::<usize>().prop_map(Step::Deliver),
            1 => any::<usize>().prop_map(Step::Duplicate),
            1 => any::<usize>().prop_map(Step::Kill),
        ]
    }

    #[derive(Clone, Debug)]
    enum Msg {
        Batch(Numbered<u64>),
        Committed(u64),
        /// "Send again everything from this batch on."
        ResendFrom(u64),
    }

    struct Member {
        id: usize,
        log: ChainLog<u64>,
        /// Payloads applied, in order.
        state: Vec<u64>,
    }

    fn from_id(at: usize, chain: &[Member]) -> usize {
        chain[at].id
    }

    /// A chain and the messages between its members. A message is taken
    /// only from the receiver's current neighbour on that side, as the
    /// epoch check does: a dead member's frames are dropped.
    struct Model {
        chain: Vec<Member>,
        wire: Vec<(usize, usize, Msg)>,
        acked: BTreeSet<u64>,
        next_payload: u64,
    }

    impl Model {
        fn at(&self, id: usize) -> Option<usize> {
            self.chain.iter().position(|m| m.id == id)
        }

        /// The tail applied through `seq`: acknowledge, report upstream.
        fn committed_at_tail(&mut self) {
            let tail = self.chain.last().unwrap();
            self.acked.extend(tail.state.iter().copied());
            if self.chain.len() > 1 {
                let from = tail.id;
                let to = self.chain[self.chain.len() - 2].id;
                self.wire.push((from, to, Msg::Committed(tail.log.applied())));
            }
        }

        fn push(&mut self) {
            self.next_payload += 1;
            let has_successor = self.chain.len() > 1;
            let head = &mut self.chain[0];
            head.state.push(self.next_payload);
            let batch = head.log.sequence(self.next_payload, has_successor);
            if has_successor {
                self.wire.push((self.chain[0].id, self.chain[1].id, Msg::Batch(batch)));
            } else {
                self.committed_at_tail();
            }
        }

        fn deliver(&mut self, (from, to, msg): (usize, usize, Msg)) {
            let (Some(at), Some(sender)) = (self.at(to), self.at(from)) else { return };
            match msg {
                Msg::Batch(batch) if sender + 1 == at => {
                    let has_successor = at + 1 < self.chain.len();
                    let arrival = self.chain[at].log.receive(batch);
                    if arrival == Arrival::Dropped {
                        let from = self.chain[at].log.applied() + 1;
                        self.wire.push((to, from_id(sender, &self.chain), Msg::ResendFrom(from)));
                    }
                    // As `Serving::on_replicate` does: a predecessor that
                    // sends again may have missed the report (the middle
                    // that carried it died), so the tail, or a middle that
                    // heard one, repeats it.
                    if arrival == Arrival::Duplicate {
                        let log = &self.chain[at].log;
                        let seq = if has_successor { log.committed() } else { log.applied() };
                        if seq > 0 {
                            self.wire.push((to, from_id(sender, &self.chain), Msg::Committed(seq)));
                        }
                    }
                    if let Arrival::Apply(ready) = arrival {
                        self.chain[at].state.extend(ready.iter().map(|b| b.payload));
                        self.chain[at].log.applied_through(&ready, has_successor);
                        if has_successor {
                            let next = self.chain[at + 1].id;
                            self.wire.extend(ready.into_iter().map(|b| (to, next, Msg::Batch(b))));
                        } else {
                            self.committed_at_tail();
                        }
                    }
                }
                Msg::ResendFrom(from) if sender == at + 1 => {
                    let again = self.chain[at].log.resend_from(from);
                    self.wire.extend(again.into_iter().map(|b| (to, self.chain[sender].id, Msg::Batch(b))));
                }
                Msg::Committed(seq) if sender == at + 1 => {
                    self.chain[at].log.on_committed(seq);
                    if at > 0 {
                        self.wire.push((to, self.chain[at - 1].id, Msg::Committed(seq)));
                    }
                }
                _ => {}
            }
        }

        fn kill(&mut self, at: usize) {
            self.chain.remove(at);
            if at == self.chain.len() {
                // The tail died: its predecessor acknowledges its Sent.
                self.chain.last_mut().unwrap().log.become_tail();
                self.committed_at_tail();
            } else if at == 0 {
                self.chain[0].log.become_head();
            } else {
                // A middle died: its predecessor sends its Sent again.
                let (from, to) = (self.chain[at - 1].id, self.chain[at].id);
                let resend = self.chain[at - 1].log.resend();
                self.wire.extend(resend.into_iter().map(|b| (from, to, Msg::Batch(b))));
            }
        }
    }

    proptest! {
        /// Under reordering, duplication and deaths of any member but the
        /// last: every member's applied batches are a prefix of its
        /// predecessor's, and its predecessor's `Sent` covers the gap;
        /// acknowledged batches are applied on every live member, none
        /// twice; and once everything is delivered the chain converges.
        #[test]
        fn a_chain_keeps_prefix_order_and_acknowledged_batches_through_failovers(
            length in 1usize..=3,
            steps in proptest::collection::vec(step(), 0..150),
        ) {
            // Hold one batch past the next at most, so drops and resend
            // requests happen.
            let log = || ChainLog::default().holding_at_most(2);
            let chain = (0..length).map(|id| Member { id, log: log(), state: Vec::new() }).collect();
            let mut model = Model { chain, wire: Vec::new(), acked: BTreeSet::new(), next_payload: 100 };
            for step in steps {
                match step {
                    Step::Push => model.push(),
                    Step::Deliver(i) if !model.wire.is_empty() => {
                        let msg = model.wire.remove(i % model.wire.len());
                        model.deliver(msg);
                    }
                    Step::Duplicate(i) if !model.wire.is_empty() => {
                        let copy = model.wire[i % model.wire.len()].clone();
                        model.wire.push(copy);
                    }
                    Step::Kill(i) if model.chain.len() > 1 => model.kill(i % model.chain.len()),
                    _ => {}
                }
                let chain = &model.chain;
                for pair in chain.windows(2) {
                    let (i, j) = (&pair[0], &pair[1]);
                    prop_assert!(j.state.len() <= i.state.len() && i.state[..j.state.len()] == j.state[..],
                        "member {} is not a prefix of member {}", j.id, i.id);
                    let sent: Vec<u64> = i.log.sent().map(|b| b.payload).collect();
                    let gap = &i.state[j.state.len()..];
                    prop_assert!(sent.ends_with(gap), "member {}'s Sent {:?} lacks the gap {:?}", i.id, sent, gap);
                }
                for member in chain {
                    prop_assert_eq!(member.state.len() as u64, member.log.applied());
                    let distinct: BTreeSet<u64> = member.state.iter().copied().collect();
                    prop_assert_eq!(distinct.len(), member.state.len(), "a batch applied twice at {}", member.id);
                    for payload in &model.acked {
                        prop_assert!(member.state.contains(payload), "acked {} missing at {}", payload, member.id);
                    }
                }
            }
            // Quiet: everything in flight arrives; the chain converges.
            while !model.wire.is_empty() {
                let msg = model.wire.remove(0);
                model.deliver(msg);
            }
            for member in &model.chain {
                prop_assert_eq!(&member.state, &model.chain[0].state, "member {} did not converge", member.id);
                prop_assert_eq!(member.log.held(), 0);
            }
            let tail = model.chain.last().unwrap().log.applied();
            prop_assert!(model.chain.iter().all(|m| m.log.committed() == tail && m.log.sent().count() == 0),
                "Sent drains once the tail's reports arrive");
        }
    }
}
