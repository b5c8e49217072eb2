//! The server side of requests: surface them, remember them, answer them.
//!
//! A request from the wire is untrusted: its keys must be sorted, inside
//! this server's range, and fit its values, or it is refused with a reason
//! (the worker's request fails with it). Accepted requests are remembered
//! until the application calls `respond`, which is how a slow or
//! asynchronous handle can answer out of order. The table is bounded by
//! `requests_pending_max`; beyond it requests are refused, not queued.

use std::collections::BTreeMap;

use crate::error::{ApiMisuse, RequestError};
use crate::id::{NodeId, Role};
use crate::kv::{CustomerId, Response, ServerRequest, ServerRequestId, SimpleRequest, Timestamp, Values};
use crate::node::{Event, Node};
use crate::slice::{self, KvList};
use crate::time::Instant;
use crate::wire::{KvOp, KvRequestMsg, KvResponseMsg, Message, SimpleMsg};

/// Requests this node has to answer.
#[derive(Debug, Default)]
pub(crate) struct ServerState {
    pending: BTreeMap<ServerRequestId, Answer>,
}

/// What kind of answer a pending request expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Kv(KvOp),
    Simple,
}

impl ServerState {
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    /// Drops requests from `id`'s earlier incarnations (it died or was
    /// replaced; nobody waits for those answers).
    pub(crate) fn forget_from(&mut self, id: NodeId) {
        self.pending.retain(|k, _| k.from != id);
    }
}

impl Node {
    pub(crate) fn on_kv_request(&mut self, _now: Instant, from: NodeId, request: KvRequestMsg) {
        if self.config.role != Role::Server || self.phase != crate::node::Phase::Ready {
            self.stats.unexpected_drops += 1;
            return;
        }
        let incarnation = match self.membership.get(from) {
            Some(entry) if entry.alive => entry.incarnation,
            Some(_) => {
                // Declared dead: its requests are dropped, since nobody
                // will wait for the answers and a replacement starts over.
                self.stats.dead_sender_drops += 1;
                return;
            }
            None => {
                self.stats.unknown_sender_drops += 1;
                return;
            }
        };
        let id = ServerRequestId {
            from,
            incarnation,
            customer: CustomerId::new(request.app, request.customer),
            ts: Timestamp(request.ts),
        };
        if self.server.pending.contains_key(&id) {
            self.stats.duplicates_dropped += 1;
            return;
        }
        let list = KvList { keys: request.keys, values: request.values, lens: request.lens };
        if let Err(reason) = self.check_request(&list, request.op) {
            self.send_kv_response(id, Response::Refused(reason));
            return;
        }
        if self.server.pending.len() >= self.config.requests_pending_max as usize {
            self.send_kv_response(id, Response::Refused("server has too many pending requests".to_owned()));
            return;
        }
        self.server.pending.insert(id, Answer::Kv(request.op));
        self.events.push_back(Event::ServerRequest(ServerRequest {
            id,
            cmd: request.cmd,
            op: request.op,
            keys: list.keys,
            values: list.values,
            lens: list.lens,
        }));
    }

    fn check_request(&self, list: &KvList, op: KvOp) -> Result<(), String> {
        slice::check_keys(&list.keys).map_err(|e| e.to_string())?;
        if op.pushes() {
            slice::check_lengths(list).map_err(|e| e.to_string())?;
        } else if !list.values.is_empty() || list.lens.is_some() {
            return Err("a pull carries no values".to_owned());
        }
        let range = self.rank.and_then(|rank| self.ranges.get(rank)).ok_or("server has no range")?;
        if let (Some(first), Some(last)) = (list.keys.iter().next(), list.keys.iter().last()) {
            if !range.contains(first) || !range.contains(last) {
                return Err(format!("keys outside this server's range {range:?}"));
            }
        }
        Ok(())
    }

    /// Answers a `ServerRequest`. Pulls (and push_pulls) must answer with
    /// one value run per requested key; a refusal fails the worker's request.
    pub fn respond(&mut self, now: Instant, id: ServerRequestId, response: Response) -> Result<(), RequestError> {
        self.now_hint = now;
        self.ensure_role(Role::Server, "respond")?;
        match self.server.pending.get(&id) {
            Some(Answer::Kv(_)) => {}
            _ => return Err(ApiMisuse::UnknownRequest.into()),
        }
        self.server.pending.remove(&id);
        self.send_kv_response(id, response);
        Ok(())
    }

    fn send_kv_response(&mut self, id: ServerRequestId, response: Response) {
        if self.membership.get(id.from).map(|e| e.incarnation) != Some(id.incarnation) {
            // The requester was replaced meanwhile: the answer is for a
            // process that no longer exists.
            return;
        }
        // An answer the requester would refuse as too large (or that could
        // not be framed at all) becomes a refusal it can report.
        let frame_len_max = u64::from(self.config.frame_len_max);
        let too_large = matches!(&response, Response::Ok { values, lens }
            if (values.as_bytes().len() + lens.as_ref().map_or(0, |l| l.as_bytes().len()) + 256) as u64 > frame_len_max);
        let response =
            if too_large { Response::Refused("the answer exceeds frame_len_max".to_owned()) } else { response };
        let (error, values, lens) = match response {
            Response::Ok { values, lens } => (None, values, lens),
            Response::Refused(reason) => (Some(reason), Values::empty(crate::kv::DType::U8), None),
        };
        let message = KvResponseMsg {
            app: id.customer.app,
            customer: id.customer.customer,
            ts: id.ts.0,
            error,
            keys: crate::kv::Keys::default(),
            values,
            lens,
        };
        self.send(id.from, Message::KvResponse(message));
    }

    pub(crate) fn on_simple_request(&mut self, from: NodeId, request: SimpleMsg) {
        let incarnation = if from == NodeId::SCHEDULER || from == self.id {
            self.incarnation_of(from)
        } else {
            match self.membership.get(from) {
                Some(e) => e.incarnation,
                None => {
                    self.stats.unknown_sender_drops += 1;
                    return;
                }
            }
        };
        let id = ServerRequestId {
            from,
            incarnation,
            customer: CustomerId::new(request.app, request.customer),
            ts: Timestamp(request.ts),
        };
        if self.server.pending.contains_key(&id) {
            self.stats.duplicates_dropped += 1;
            return;
        }
        if self.server.pending.len() >= self.config.requests_pending_max as usize {
            self.stats.unexpected_drops += 1;
            return;
        }
        self.server.pending.insert(id, Answer::Simple);
        self.events.push_back(Event::SimpleRequest(SimpleRequest { id, head: request.head, body: request.body }));
    }

    /// Answers a `SimpleRequest` with a head and a body.
    pub fn simple_respond(
        &mut self,
        now: Instant,
        id: ServerRequestId,
        head: i32,
        body: bytes::Bytes,
    ) -> Result<(), RequestError> {
        self.now_hint = now;
        if self.server.pending.get(&id) != Some(&Answer::Simple) {
            return Err(ApiMisuse::UnknownRequest.into());
        }
        self.server.pending.remove(&id);
        let message = SimpleMsg { app: id.customer.app, customer: id.customer.customer, ts: id.ts.0, head, body };
        self.send(id.from, Message::SimpleResponse(message));
        self.drain_loopback(now);
        Ok(())
    }

    fn incarnation_of(&self, id: NodeId) -> crate::id::Incarnation {
        if id == self.id {
            self.incarnation
        } else {
            crate::id::Incarnation(0)
        }
    }
}
