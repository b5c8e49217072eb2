//! Requests this node has to answer: surface them, remember them, answer
//! them. The server side of KV requests, and every node's side of
//! SimpleApp requests.
//!
//! A request from the wire is untrusted: its keys must be sorted, inside
//! this server's range, and fit its values, or it is refused with a reason
//! (the worker's request fails with it). Accepted requests are remembered
//! until the application answers, which is how a slow or asynchronous
//! handle can answer out of order. The table is bounded by
//! `requests_pending_max`; beyond it requests are refused, not queued.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::error::{ApiMisuse, RequestError};
use crate::event::Event;
use crate::id::{Incarnation, NodeId};
use crate::kv::{
    CustomerId, DType, Keys, Refusal, Response, ServerRequest, ServerRequestId, SimpleRequest, Timestamp, Values,
};
use crate::membership::Membership;
use crate::outbox::Outbox;
use crate::range::KeyRange;
use crate::slice::{self, KvList};
use crate::stats::Stats;
use crate::wire::{KvOp, KvRequestMsg, KvResponseMsg, Message, SimpleMsg};

/// Requests this node has to answer. Each KV request keeps a `T` that
/// says what becomes of its answer (the node's business: with replicated
/// ranges, whether it goes down a chain first).
#[derive(Debug)]
pub(crate) struct Responder<T> {
    pending: BTreeMap<ServerRequestId, Answer<T>>,
}

impl<T> Default for Responder<T> {
    fn default() -> Self {
        Self { pending: BTreeMap::new() }
    }
}

/// What kind of answer a pending request expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer<T> {
    Kv(T),
    Simple,
}

/// What an arriving request is checked against.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// This server's keys; `None` on a node that owns no range.
    pub(crate) range: Option<KeyRange>,
    pub(crate) requests_pending_max: u32,
    pub(crate) frame_len_max: u32,
}

impl<T: Copy> Responder<T> {
    #[cfg(any(test, feature = "inspect"))]
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether request `id` waits for the application's answer.
    pub(crate) fn is_pending(&self, id: ServerRequestId) -> bool {
        self.pending.contains_key(&id)
    }

    /// The node stopped: nobody will be answered.
    pub(crate) fn forget_all(&mut self) {
        self.pending.clear();
    }

    /// Drops requests from `id`'s earlier incarnations (it died or was
    /// replaced; nobody waits for those answers).
    pub(crate) fn forget_from(&mut self, id: NodeId) {
        self.pending.retain(|k, _| k.from != id);
    }

    /// KV request `id`: refused, or surfaced as a [`ServerRequest`] event
    /// for the application's handle, whose answer is then settled as
    /// `then` says. `range` is where its keys must lie.
    #[allow(clippy::too_many_arguments)] // the request, where it must lie, and the node's context
    pub(crate) fn on_kv_request(
        &mut self,
        id: ServerRequestId,
        request: KvRequestMsg,
        range: Option<KeyRange>,
        then: T,
        limits: Limits,
        out: &mut Outbox,
        stats: &mut Stats,
    ) {
        if self.pending.contains_key(&id) {
            stats.duplicates_dropped += 1;
            return;
        }
        let list = KvList { keys: request.keys, values: request.values, lens: request.lens };
        if let Err(reason) = check_request(&list, request.op, range) {
            send_kv_response(id, Response::Refused(reason), limits, out);
            return;
        }
        if self.pending.len() >= limits.requests_pending_max as usize {
            send_kv_response(id, Response::Refused(Refusal::TooManyPending), limits, out);
            return;
        }
        self.pending.insert(id, Answer::Kv(then));
        let (cmd, op, keys, values, lens) = (request.cmd, request.op, list.keys, list.values, list.lens);
        out.event(Event::ServerRequest(ServerRequest { id, cmd, op, keys, values, lens }));
    }

    /// The application's answer to a [`ServerRequest`]: what to do with
    /// it, or `None` when its requester died or was replaced meanwhile
    /// (the answer is dropped: nobody waits for it, and a slow handle did
    /// nothing wrong).
    pub(crate) fn respond(&mut self, id: ServerRequestId, membership: &Membership) -> Result<Option<T>, RequestError> {
        let then = match self.pending.get(&id) {
            Some(Answer::Kv(then)) => *then,
            _ => return self.take(id, |_| false, membership).map(|_| None),
        };
        self.pending.remove(&id);
        Ok(Some(then))
    }

    /// Takes pending request `id` for an answer of the kind `fits` accepts:
    /// `Ok(true)` to send it, `Ok(false)` when its requester is gone (the
    /// answer is dropped), an error when no such request waits.
    fn take(
        &mut self,
        id: ServerRequestId,
        fits: impl Fn(Answer<T>) -> bool,
        membership: &Membership,
    ) -> Result<bool, RequestError> {
        match self.pending.get(&id) {
            Some(&answer) if fits(answer) => {
                self.pending.remove(&id);
                Ok(true)
            }
            None if requester_gone(id, membership) => Ok(false),
            _ => Err(ApiMisuse::UnknownRequest.into()),
        }
    }

    /// A SimpleApp request from `from`, whose current incarnation is
    /// `incarnation`, surfaced as a [`SimpleRequest`] event.
    pub(crate) fn on_simple_request(
        &mut self,
        from: NodeId,
        incarnation: Incarnation,
        request: SimpleMsg,
        limits: Limits,
        out: &mut Outbox,
        stats: &mut Stats,
    ) {
        let id = ServerRequestId {
            from,
            incarnation,
            customer: CustomerId::new(request.app, request.customer),
            ts: Timestamp(request.ts),
            part: 0,
        };
        if self.pending.contains_key(&id) {
            stats.duplicates_dropped += 1;
            return;
        }
        if self.pending.len() >= limits.requests_pending_max as usize {
            stats.unexpected_drops += 1;
            return;
        }
        self.pending.insert(id, Answer::Simple);
        out.event(Event::SimpleRequest(SimpleRequest { id, head: request.head, body: request.body }));
    }

    /// The application's answer to a [`SimpleRequest`]; dropped, as in
    /// [`respond`](Self::respond), when the requester is gone.
    pub(crate) fn simple_respond(
        &mut self,
        id: ServerRequestId,
        head: i32,
        body: Bytes,
        membership: &Membership,
        out: &mut Outbox,
    ) -> Result<(), RequestError> {
        if self.take(id, |answer| matches!(answer, Answer::Simple), membership)? {
            let message = SimpleMsg { app: id.customer.app, customer: id.customer.customer, ts: id.ts.0, head, body };
            out.send(id.from, Message::SimpleResponse(message));
        }
        Ok(())
    }
}

/// The incarnation `from` has in the table, when it may send requests:
/// a sender declared dead is dropped (nobody will wait for the answers,
/// and a replacement starts over), as is one we do not know.
pub(crate) fn requester(from: NodeId, membership: &Membership, stats: &mut Stats) -> Option<Incarnation> {
    match membership.get(from) {
        Some(entry) if entry.alive => Some(entry.incarnation),
        Some(_) => {
            stats.dead_sender_drops += 1;
            None
        }
        None => {
            stats.unknown_sender_drops += 1;
            None
        }
    }
}

/// Whether the process that sent request `id` died or was replaced. The
/// scheduler and this node itself are not in the table and never go.
pub(crate) fn requester_gone(id: ServerRequestId, membership: &Membership) -> bool {
    membership.get(id.from).is_some_and(|entry| !entry.alive || entry.incarnation != id.incarnation)
}

fn check_request(list: &KvList, op: KvOp, range: Option<KeyRange>) -> Result<(), Refusal> {
    slice::check_keys(&list.keys)?;
    if op.pushes() {
        slice::check_lengths(list)?;
    } else if !list.values.is_empty() || list.lens.is_some() {
        return Err(Refusal::PullWithValues);
    }
    let range = range.ok_or(Refusal::NoRange)?;
    if let (Some(first), Some(last)) = (list.keys.iter().next(), list.keys.iter().last()) {
        if !range.contains(first) || !range.contains(last) {
            return Err(Refusal::OutOfRange { range });
        }
    }
    Ok(())
}

pub(crate) fn send_kv_response(id: ServerRequestId, response: Response, limits: Limits, out: &mut Outbox) {
    // The requester is alive in the table: requests of a dead or replaced
    // one are forgotten (`forget_from`) before anyone could answer them.
    // An answer the requester would refuse as too large (or that could
    // not be framed at all) becomes a refusal it can report.
    let frame_len_max = u64::from(limits.frame_len_max);
    let too_large = matches!(&response, Response::Ok { values, lens }
        if (values.as_bytes().len() + lens.as_ref().map_or(0, |l| l.as_bytes().len()) + 256) as u64 > frame_len_max);
    let response = if too_large { Response::Refused(Refusal::AnswerTooLarge) } else { response };
    let (error, values, lens) = match response {
        Response::Ok { values, lens } => (None, values, lens),
        Response::Refused(reason) => (Some(reason.to_string()), Values::empty(DType::U8), None),
    };
    let message = KvResponseMsg {
        app: id.customer.app,
        customer: id.customer.customer,
        ts: id.ts.0,
        error,
        keys: Keys::default(),
        values,
        lens,
        part: id.part,
        redirect: None,
    };
    out.send(id.from, Message::KvResponse(message));
}

/// Tells the worker that part `id` is not this server's to serve: its
/// table at `epoch` puts another member at the part's place.
pub(crate) fn send_redirect(id: ServerRequestId, epoch: u64, out: &mut Outbox) {
    let message = KvResponseMsg {
        app: id.customer.app,
        customer: id.customer.customer,
        ts: id.ts.0,
        error: None,
        keys: Keys::default(),
        values: Values::empty(DType::U8),
        lens: None,
        part: id.part,
        redirect: Some(epoch),
    };
    out.send(id.from, Message::KvResponse(message));
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::id::Rank;
    use crate::range::ServerRanges;
    use crate::wire::NodeEntry;

    fn worker() -> NodeId {
        NodeId::worker(Rank(0))
    }

    fn membership(alive: bool) -> Membership {
        let mut membership = Membership::default();
        let entry = NodeEntry {
            id: worker(),
            incarnation: Incarnation(0),
            addr: SocketAddr::from(([127, 0, 0, 1], 9)),
            instance: 1,
            alive,
        };
        membership.apply(1, vec![entry], crate::chains::Chains::default()).unwrap();
        membership
    }

    /// Server 0 of two: it owns the lower half of the key space.
    fn limits() -> Limits {
        let ranges = ServerRanges::equal(2);
        Limits { range: ranges.get(Rank(0)), requests_pending_max: 2, frame_len_max: 1 << 20 }
    }

    /// A request from `from` as the node hands it over with one copy of
    /// each range.
    fn take_request(
        responder: &mut Responder<()>,
        from: NodeId,
        request: KvRequestMsg,
        limits: Limits,
        membership: &Membership,
        out: &mut Outbox,
        stats: &mut Stats,
    ) {
        let Some(incarnation) = requester(from, membership, stats) else {
            return;
        };
        let customer = CustomerId::new(request.app, request.customer);
        let id = ServerRequestId { from, incarnation, customer, ts: Timestamp(request.ts), part: 0 };
        responder.on_kv_request(id, request, limits.range, (), limits, out, stats);
    }

    /// The application's answer, sent as the node sends it with one copy.
    fn answer(
        responder: &mut Responder<()>,
        id: ServerRequestId,
        response: Response,
        limits: Limits,
        membership: &Membership,
        out: &mut Outbox,
    ) -> Result<(), RequestError> {
        if responder.respond(id, membership)?.is_some() {
            send_kv_response(id, response, limits, out);
        }
        Ok(())
    }

    fn push(ts: u32, keys: &[u64]) -> KvRequestMsg {
        let values: Vec<f32> = keys.iter().map(|_| 1.0).collect();
        KvRequestMsg {
            app: 0,
            customer: 0,
            ts,
            cmd: 0,
            op: KvOp::Push,
            keys: Keys::from_slice(keys),
            values: Values::from_slice(&values),
            lens: None,
            route: crate::wire::KvRoute::default(),
        }
    }

    fn refusal(out: &mut Outbox) -> Option<String> {
        match out.pop_message() {
            Some((_, Message::KvResponse(response))) => response.error,
            other => panic!("expected a response, got {other:?}"),
        }
    }

    #[test]
    fn a_request_is_surfaced_once_and_answered_once() {
        let (membership, mut out, mut stats) = (membership(true), Outbox::default(), Stats::default());
        let mut responder = Responder::default();
        take_request(&mut responder, worker(), push(7, &[1, 2]), limits(), &membership, &mut out, &mut stats);
        take_request(&mut responder, worker(), push(7, &[1, 2]), limits(), &membership, &mut out, &mut stats);
        assert_eq!(stats.duplicates_dropped, 1);
        let Some(Event::ServerRequest(request)) = out.pop_event() else { panic!("a server request") };
        assert!(out.pop_event().is_none());
        assert_eq!(responder.len(), 1);
        answer(&mut responder, request.id, Response::ack(), limits(), &membership, &mut out).unwrap();
        assert_eq!(refusal(&mut out), None);
        let again = answer(&mut responder, request.id, Response::ack(), limits(), &membership, &mut out);
        assert_eq!(again, Err(ApiMisuse::UnknownRequest.into()));
    }

    #[test]
    fn keys_outside_the_range_and_requests_beyond_the_cap_are_refused_with_a_reason() {
        let (membership, mut out, mut stats) = (membership(true), Outbox::default(), Stats::default());
        let mut responder = Responder::default();
        take_request(&mut responder, worker(), push(1, &[1, u64::MAX]), limits(), &membership, &mut out, &mut stats);
        let reason = refusal(&mut out).unwrap();
        assert!(reason.contains("outside this server's range [0, 9223372036854775807]"), "{reason}");
        for ts in 2..4 {
            take_request(&mut responder, worker(), push(ts, &[ts.into()]), limits(), &membership, &mut out, &mut stats);
        }
        take_request(&mut responder, worker(), push(4, &[4]), limits(), &membership, &mut out, &mut stats);
        assert!(refusal(&mut out).unwrap().contains("too many pending"));
        assert_eq!(responder.len(), 2);
    }

    #[test]
    fn an_answer_of_the_wrong_kind_is_refused_and_the_request_still_waits() {
        let (membership, mut out, mut stats) = (membership(true), Outbox::default(), Stats::default());
        let mut responder = Responder::default();
        take_request(&mut responder, worker(), push(1, &[1]), limits(), &membership, &mut out, &mut stats);
        let simple = SimpleMsg { app: 0, customer: 0, ts: 2, head: 0, body: Bytes::new() };
        responder.on_simple_request(worker(), Incarnation(0), simple, limits(), &mut out, &mut stats);
        let Some(Event::ServerRequest(kv)) = out.pop_event() else { panic!("a server request") };
        let Some(Event::SimpleRequest(simple)) = out.pop_event() else { panic!("a simple request") };
        let unknown = Err(ApiMisuse::UnknownRequest.into());
        assert_eq!(answer(&mut responder, simple.id, Response::ack(), limits(), &membership, &mut out), unknown);
        assert_eq!(responder.simple_respond(kv.id, 0, Bytes::new(), &membership, &mut out), unknown);
        assert_eq!(responder.len(), 2, "both still wait for their answer");
        assert!(out.pop_message().is_none(), "nothing was sent");
    }

    #[test]
    fn requests_of_a_dead_sender_are_dropped_and_forgotten() {
        let (mut out, mut stats) = (Outbox::default(), Stats::default());
        let mut responder = Responder::default();
        take_request(&mut responder, worker(), push(1, &[1]), limits(), &membership(false), &mut out, &mut stats);
        assert_eq!(stats.dead_sender_drops, 1);
        assert_eq!(responder.len(), 0);
        take_request(&mut responder, worker(), push(1, &[1]), limits(), &membership(true), &mut out, &mut stats);
        assert_eq!(responder.len(), 1);
        responder.forget_from(worker());
        assert_eq!(responder.len(), 0);
    }
}
