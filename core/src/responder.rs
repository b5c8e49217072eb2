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

/// Requests this node has to answer.
#[derive(Debug, Default)]
pub(crate) struct Responder {
    pending: BTreeMap<ServerRequestId, Answer>,
}

/// What kind of answer a pending request expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Kv(KvOp),
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

impl Responder {
    #[cfg(any(test, feature = "inspect"))]
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
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

    /// A KV request from `from`: refused, or surfaced as a
    /// [`ServerRequest`] event for the application's handle.
    pub(crate) fn on_kv_request(
        &mut self,
        from: NodeId,
        request: KvRequestMsg,
        limits: Limits,
        membership: &Membership,
        out: &mut Outbox,
        stats: &mut Stats,
    ) {
        let incarnation = match membership.get(from) {
            Some(entry) if entry.alive => entry.incarnation,
            Some(_) => {
                // Declared dead: its requests are dropped, since nobody
                // will wait for the answers and a replacement starts over.
                stats.dead_sender_drops += 1;
                return;
            }
            None => {
                stats.unknown_sender_drops += 1;
                return;
            }
        };
        let id = ServerRequestId {
            from,
            incarnation,
            customer: CustomerId::new(request.app, request.customer),
            ts: Timestamp(request.ts),
        };
        if self.pending.contains_key(&id) {
            stats.duplicates_dropped += 1;
            return;
        }
        let list = KvList { keys: request.keys, values: request.values, lens: request.lens };
        if let Err(reason) = check_request(&list, request.op, limits.range) {
            send_kv_response(id, Response::Refused(reason), limits, out);
            return;
        }
        if self.pending.len() >= limits.requests_pending_max as usize {
            send_kv_response(id, Response::Refused(Refusal::TooManyPending), limits, out);
            return;
        }
        self.pending.insert(id, Answer::Kv(request.op));
        out.event(Event::ServerRequest(ServerRequest {
            id,
            cmd: request.cmd,
            op: request.op,
            keys: list.keys,
            values: list.values,
            lens: list.lens,
        }));
    }

    /// The application's answer to a [`ServerRequest`]. An answer for a
    /// requester that died or was replaced meanwhile is dropped: nobody
    /// waits for it, and a slow handle did nothing wrong.
    pub(crate) fn respond(
        &mut self,
        id: ServerRequestId,
        response: Response,
        limits: Limits,
        membership: &Membership,
        out: &mut Outbox,
    ) -> Result<(), RequestError> {
        if self.take(id, |answer| matches!(answer, Answer::Kv(_)), membership)? {
            send_kv_response(id, response, limits, out);
        }
        Ok(())
    }

    /// Takes pending request `id` for an answer of the kind `fits` accepts:
    /// `Ok(true)` to send it, `Ok(false)` when its requester is gone (the
    /// answer is dropped), an error when no such request waits.
    fn take(
        &mut self,
        id: ServerRequestId,
        fits: impl Fn(Answer) -> bool,
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
        if self.take(id, |answer| answer == Answer::Simple, membership)? {
            let message = SimpleMsg { app: id.customer.app, customer: id.customer.customer, ts: id.ts.0, head, body };
            out.send(id.from, Message::SimpleResponse(message));
        }
        Ok(())
    }
}

/// Whether the process that sent request `id` died or was replaced. The
/// scheduler and this node itself are not in the table and never go.
fn requester_gone(id: ServerRequestId, membership: &Membership) -> bool {
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

fn send_kv_response(id: ServerRequestId, response: Response, limits: Limits, out: &mut Outbox) {
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
        responder.on_kv_request(worker(), push(7, &[1, 2]), limits(), &membership, &mut out, &mut stats);
        responder.on_kv_request(worker(), push(7, &[1, 2]), limits(), &membership, &mut out, &mut stats);
        assert_eq!(stats.duplicates_dropped, 1);
        let Some(Event::ServerRequest(request)) = out.pop_event() else { panic!("a server request") };
        assert!(out.pop_event().is_none());
        assert_eq!(responder.len(), 1);
        responder.respond(request.id, Response::ack(), limits(), &membership, &mut out).unwrap();
        assert_eq!(refusal(&mut out), None);
        let again = responder.respond(request.id, Response::ack(), limits(), &membership, &mut out);
        assert_eq!(again, Err(ApiMisuse::UnknownRequest.into()));
    }

    #[test]
    fn keys_outside_the_range_and_requests_beyond_the_cap_are_refused_with_a_reason() {
        let (membership, mut out, mut stats) = (membership(true), Outbox::default(), Stats::default());
        let mut responder = Responder::default();
        responder.on_kv_request(worker(), push(1, &[1, u64::MAX]), limits(), &membership, &mut out, &mut stats);
        let reason = refusal(&mut out).unwrap();
        assert!(reason.contains("outside this server's range [0, 9223372036854775807]"), "{reason}");
        for ts in 2..4 {
            responder.on_kv_request(worker(), push(ts, &[ts.into()]), limits(), &membership, &mut out, &mut stats);
        }
        responder.on_kv_request(worker(), push(4, &[4]), limits(), &membership, &mut out, &mut stats);
        assert!(refusal(&mut out).unwrap().contains("too many pending"));
        assert_eq!(responder.len(), 2);
    }

    #[test]
    fn an_answer_of_the_wrong_kind_is_refused_and_the_request_still_waits() {
        let (membership, mut out, mut stats) = (membership(true), Outbox::default(), Stats::default());
        let mut responder = Responder::default();
        responder.on_kv_request(worker(), push(1, &[1]), limits(), &membership, &mut out, &mut stats);
        let simple = SimpleMsg { app: 0, customer: 0, ts: 2, head: 0, body: Bytes::new() };
        responder.on_simple_request(worker(), Incarnation(0), simple, limits(), &mut out, &mut stats);
        let Some(Event::ServerRequest(kv)) = out.pop_event() else { panic!("a server request") };
        let Some(Event::SimpleRequest(simple)) = out.pop_event() else { panic!("a simple request") };
        let unknown = Err(ApiMisuse::UnknownRequest.into());
        assert_eq!(responder.respond(simple.id, Response::ack(), limits(), &membership, &mut out), unknown);
        assert_eq!(responder.simple_respond(kv.id, 0, Bytes::new(), &membership, &mut out), unknown);
        assert_eq!(responder.len(), 2, "both still wait for their answer");
        assert!(out.pop_message().is_none(), "nothing was sent");
    }

    #[test]
    fn requests_of_a_dead_sender_are_dropped_and_forgotten() {
        let (mut out, mut stats) = (Outbox::default(), Stats::default());
        let mut responder = Responder::default();
        responder.on_kv_request(worker(), push(1, &[1]), limits(), &membership(false), &mut out, &mut stats);
        assert_eq!(stats.dead_sender_drops, 1);
        assert_eq!(responder.len(), 0);
        responder.on_kv_request(worker(), push(1, &[1]), limits(), &membership(true), &mut out, &mut stats);
        assert_eq!(responder.len(), 1);
        responder.forget_from(worker());
        assert_eq!(responder.len(), 0);
    }
}
