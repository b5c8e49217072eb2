//! The worker side of requests: timestamps, slicing, tracking, completion.
//!
//! A request is sliced by server range and one message goes to each server
//! that owns at least one key. The tracker remembers, per timestamp, which
//! servers have yet to answer and the parts collected so far; when the last
//! one arrives the parts are merged in rank order (hence key order) and one
//! event reports the whole request. Every pending request has a deadline
//! (`request_timeout`) and fails early when a server it waits on dies, so
//! no wait is unbounded. SimpleApp requests use the same tracker.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{ApiMisuse, RequestError};
use crate::id::{NodeId, Role};
use crate::kv::{CustomerId, DType, Keys, KvCall, Lens, SimpleReply, Timestamp, Values};
use crate::node::{Event, Node};
use crate::slice::{self, KvList};
use crate::time::Instant;
use crate::wire::{KvOp, KvRequestMsg, KvResponseMsg, Message, HEADER_LEN};
use smallvec::SmallVec;

use crate::slotted::SlottedMap;

/// Requests this node waits on, by customer and timestamp.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    next_ts: BTreeMap<CustomerId, u32>,
    /// A request's state is a few hundred bytes: kept out of the tree.
    pending: SlottedMap<(CustomerId, Timestamp), Pending>,
    deadlines: BTreeSet<(Instant, CustomerId, Timestamp)>,
}

#[derive(Debug)]
pub(crate) struct Pending {
    deadline: Instant,
    /// Targets still to answer, with the slot their answer fills.
    waiting: Targets,
    kind: PendingKind,
}

#[derive(Debug)]
// Nearly every pending request is a KV one: keeping its parts inline saves
// an allocation per request, which matters more than the size of the rare
// SimpleApp variant.
#[allow(clippy::large_enum_variant)]
pub(crate) enum PendingKind {
    Kv {
        op: KvOp,
        dtype: DType,
        /// The keys each slot asked for, to check answers against.
        asked: SmallVec<[Keys; 2]>,
        parts: SmallVec<[Option<KvList>; 2]>,
    },
    Simple {
        replies: Vec<Option<SimpleReply>>,
    },
}

/// Who a request still waits on, each with the slot its answer fills: a
/// list searched linearly, since a request goes to a few servers (one
/// for most), and kept inline so tracking a request allocates nothing.
#[derive(Debug, Default)]
pub(crate) struct Targets(SmallVec<[(NodeId, usize); 2]>);

impl Targets {
    /// Adds `id` (not already waited on) for `slot`.
    pub(crate) fn push(&mut self, id: NodeId, slot: usize) {
        debug_assert!(self.get(id).is_none(), "one slot per target");
        self.0.push((id, slot));
    }

    fn get(&self, id: NodeId) -> Option<&usize> {
        self.0.iter().find(|(target, _)| *target == id).map(|(_, slot)| slot)
    }

    fn remove(&mut self, id: NodeId) {
        self.0.retain(|(target, _)| *target != id);
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Tracker {
    /// Pending requests.
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    /// Every pending request, in key order.
    pub(crate) fn keys(&self) -> Vec<(CustomerId, Timestamp)> {
        self.pending.iter().map(|(key, _)| *key).collect()
    }

    pub(crate) fn get_mut(&mut self, customer: CustomerId, ts: Timestamp) -> Option<&mut Pending> {
        self.pending.get_mut(&(customer, ts))
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(at, _, _)| at)
    }

    /// The next timestamp of `customer`, never reused.
    /// Timestamps wrap after 2^32 requests (hours at full speed); a
    /// wrapped timestamp that is still pending is refused by `claim`.
    pub(crate) fn next_timestamp(&mut self, customer: CustomerId) -> Result<Timestamp, ApiMisuse> {
        let ts = Timestamp(*self.next_ts.entry(customer).or_insert(0));
        self.claim(customer, ts)?;
        Ok(ts)
    }

    /// The timestamp of a new request: the caller's choice if it made one
    /// (checked by `claim`), else the next of `customer`.
    pub(crate) fn take(&mut self, customer: CustomerId, ts: Option<Timestamp>) -> Result<Timestamp, ApiMisuse> {
        match ts {
            Some(ts) => self.claim(customer, ts).map(|()| ts),
            None => self.next_timestamp(customer),
        }
    }

    /// Takes `ts` for a new request of `customer`: refused while a request
    /// with that timestamp is pending; later assignments continue after it.
    pub(crate) fn claim(&mut self, customer: CustomerId, ts: Timestamp) -> Result<(), ApiMisuse> {
        if self.pending.contains_key(&(customer, ts)) {
            return Err(ApiMisuse::TimestampInUse { ts: ts.0 });
        }
        let next = self.next_ts.entry(customer).or_insert(0);
        if !ts.is_before(Timestamp(*next)) {
            *next = ts.0.wrapping_add(1);
        }
        Ok(())
    }

    pub(crate) fn insert(&mut self, customer: CustomerId, ts: Timestamp, pending: Pending) {
        self.deadlines.insert((pending.deadline, customer, ts));
        let previous = self.pending.insert((customer, ts), pending);
        assert!(previous.is_none(), "timestamps are never reused");
    }

    fn remove(&mut self, customer: CustomerId, ts: Timestamp) -> Option<Pending> {
        let pending = self.pending.remove(&(customer, ts))?;
        self.deadlines.remove(&(pending.deadline, customer, ts));
        Some(pending)
    }

    pub(crate) fn is_pending(&self, customer: CustomerId, ts: Timestamp) -> bool {
        self.pending.contains_key(&(customer, ts))
    }

    /// Pending requests waiting on `id`, in key order.
    fn waiting_on(&self, id: NodeId) -> Vec<(CustomerId, Timestamp)> {
        self.pending.iter().filter(|(_, p)| p.waiting.get(id).is_some()).map(|(k, _)| *k).collect()
    }
}

impl Pending {
    pub(crate) fn new(deadline: Instant, waiting: Targets, kind: PendingKind) -> Self {
        Self { deadline, waiting, kind }
    }
}

impl Node {
    /// Pushes `values` for `keys` (ascending, unique). `lens`, when given,
    /// holds the number of values of each key; otherwise every key gets
    /// `values.len() / keys.len()` values. Returns at once;
    /// `Event::RequestDone` or `RequestFailed` follows.
    pub fn push(
        &mut self,
        now: Instant,
        customer: CustomerId,
        cmd: i32,
        keys: Keys,
        values: Values,
        lens: Option<Lens>,
    ) -> Result<Timestamp, RequestError> {
        self.submit(now, KvCall { customer, ts: None, cmd, op: KvOp::Push, list: KvList { keys, values, lens } })
    }

    /// Pulls the values of `keys` as `dtype`. `Event::PullDone` follows.
    pub fn pull(
        &mut self,
        now: Instant,
        customer: CustomerId,
        cmd: i32,
        keys: Keys,
        dtype: DType,
    ) -> Result<Timestamp, RequestError> {
        let list = KvList { keys, values: Values::empty(dtype), lens: None };
        self.submit(now, KvCall { customer, ts: None, cmd, op: KvOp::Pull, list })
    }

    /// Pushes, then pulls the result in one round trip. `Event::PullDone`
    /// follows, with values that include this push.
    pub fn push_pull(
        &mut self,
        now: Instant,
        customer: CustomerId,
        cmd: i32,
        keys: Keys,
        values: Values,
        lens: Option<Lens>,
    ) -> Result<Timestamp, RequestError> {
        self.submit(now, KvCall { customer, ts: None, cmd, op: KvOp::PushPull, list: KvList { keys, values, lens } })
    }

    /// Push, pull or push_pull as one call. With `call.ts` set, the caller
    /// chose the timestamp (a shell that hands out timestamps itself, so
    /// callers need not wait for the node); it must not be pending.
    pub fn submit(&mut self, now: Instant, call: KvCall) -> Result<Timestamp, RequestError> {
        let KvCall { customer, ts, cmd, op, list } = call;
        self.now_hint = now;
        self.ensure_role(Role::Worker, "push/pull")?;
        self.ensure_ready()?;
        let keys_max = self.config.keys_per_request_max;
        if list.keys.len() > keys_max as usize {
            return Err(ApiMisuse::TooManyKeys { keys: list.keys.len(), max: keys_max }.into());
        }
        slice::check_request(op, &list)?;
        let frame_bytes = (HEADER_LEN + 64) as u64
            + list.keys.as_bytes().len() as u64
            + list.values.as_bytes().len() as u64
            + list.lens.as_ref().map_or(0, |l| l.as_bytes().len() as u64);
        if frame_bytes > u64::from(self.config.frame_len_max) {
            return Err(ApiMisuse::FrameTooLarge { bytes: frame_bytes, max: self.config.frame_len_max }.into());
        }
        self.check_pending_room()?;
        let parts = slice::slice(&self.ranges, &list);
        let ts = self.tracker.take(customer, ts)?;
        if parts.is_empty() {
            // Nothing to send (no keys): complete at once, as ps-lite does.
            self.events.push_back(match op {
                KvOp::Push => Event::RequestDone { customer, ts },
                KvOp::Pull | KvOp::PushPull => Event::PullDone {
                    customer,
                    ts,
                    keys: list.keys,
                    values: Values::empty(list.values.dtype()),
                    lens: None,
                },
            });
            return Ok(ts);
        }
        let mut waiting = Targets::default();
        let mut asked = SmallVec::with_capacity(parts.len());
        for (slot, part) in parts.iter().enumerate() {
            let server = NodeId::server(part.rank);
            if !self.membership.is_alive(server) {
                return Err(RequestError::PeerDead(server));
            }
            waiting.push(server, slot);
            asked.push(part.list.keys.clone());
        }
        let dtype = list.values.dtype();
        for part in parts.iter() {
            let message = KvRequestMsg {
                app: customer.app,
                customer: customer.customer,
                ts: ts.0,
                cmd,
                op,
                keys: part.list.keys.clone(),
                values: part.list.values.clone(),
                lens: part.list.lens.clone(),
            };
            self.send(NodeId::server(part.rank), Message::KvRequest(message));
        }
        let kind = PendingKind::Kv { op, dtype, parts: smallvec::smallvec![None; asked.len()], asked };
        self.tracker.insert(customer, ts, Pending::new(now + self.config.request_timeout, waiting, kind));
        Ok(ts)
    }

    pub(crate) fn check_pending_room(&self) -> Result<(), RequestError> {
        let max = self.config.requests_pending_max;
        if self.tracker.len() >= max as usize {
            return Err(ApiMisuse::TooManyPending { max }.into());
        }
        Ok(())
    }

    pub(crate) fn on_kv_response(&mut self, _now: Instant, from: NodeId, response: KvResponseMsg) {
        let customer = CustomerId::new(response.app, response.customer);
        let ts = Timestamp(response.ts);
        let Some(pending) = self.tracker.get_mut(customer, ts) else {
            self.stats.unexpected_drops += 1;
            return;
        };
        let (Some(&slot), PendingKind::Kv { op, dtype, asked, parts }) = (pending.waiting.get(from), &mut pending.kind)
        else {
            self.stats.unexpected_drops += 1;
            return;
        };
        if let Some(reason) = response.error {
            self.fail_request(customer, ts, RequestError::Refused { server: from, reason });
            return;
        }
        if op.pulls() {
            // Servers do not echo keys back (the worker has them); a
            // server that does must echo exactly what was asked.
            let echoed = !response.keys.is_empty();
            let problem_keys = echoed && response.keys != asked[slot];
            let answer = KvList { keys: asked[slot].clone(), values: response.values, lens: response.lens };
            let problem = if problem_keys {
                Some("keys differ from the keys asked for")
            } else if answer.values.dtype() != *dtype {
                Some("values of another type than asked for")
            } else if slice::check_lengths(&answer).is_err() {
                Some("values do not fit the keys")
            } else {
                None
            };
            if let Some(reason) = problem {
                self.fail_request(customer, ts, RequestError::BadResponse { server: from, reason });
                return;
            }
            parts[slot] = Some(answer);
        }
        pending.waiting.remove(from);
        if pending.waiting.is_empty() {
            self.complete_request(customer, ts);
        }
    }

    fn complete_request(&mut self, customer: CustomerId, ts: Timestamp) {
        let pending = self.tracker.remove(customer, ts).expect("completing a pending request");
        self.reliable.forget_owner(customer, ts);
        let event = match pending.kind {
            PendingKind::Kv { op: KvOp::Push, .. } => Event::RequestDone { customer, ts },
            PendingKind::Kv { parts, .. } => {
                let parts: SmallVec<[KvList; 2]> = parts.into_iter().map(|p| p.expect("every slot answered")).collect();
                match slice::merge(parts) {
                    Ok(list) => Event::PullDone { customer, ts, keys: list.keys, values: list.values, lens: list.lens },
                    Err(reason) => Event::RequestFailed {
                        customer,
                        ts,
                        error: RequestError::BadResponse { server: NodeId::UNASSIGNED, reason },
                    },
                }
            }
            PendingKind::Simple { replies } => Event::SimpleDone {
                customer,
                ts,
                replies: replies.into_iter().map(|r| r.expect("every target answered")).collect(),
            },
        };
        self.events.push_back(event);
    }

    pub(crate) fn fail_request(&mut self, customer: CustomerId, ts: Timestamp, error: RequestError) {
        if self.tracker.remove(customer, ts).is_some() {
            self.reliable.forget_owner(customer, ts);
            self.events.push_back(Event::RequestFailed { customer, ts, error });
        }
    }

    pub(crate) fn tracker_peer_dead(&mut self, id: NodeId) {
        for (customer, ts) in self.tracker.waiting_on(id) {
            self.fail_request(customer, ts, RequestError::PeerDead(id));
        }
    }

    pub(crate) fn tracker_fail_all(&mut self, error: &RequestError) {
        let all = self.tracker.keys();
        for (customer, ts) in all {
            self.fail_request(customer, ts, error.clone());
        }
    }

    pub(crate) fn expire_requests(&mut self, now: Instant) {
        while let Some(&(at, customer, ts)) = self.tracker.deadlines.first() {
            if at > now {
                break;
            }
            self.fail_request(customer, ts, RequestError::TimedOut);
        }
    }

    /// Records a SimpleApp answer.
    pub(crate) fn on_simple_reply(&mut self, from: NodeId, customer: CustomerId, ts: Timestamp, reply: SimpleReply) {
        let Some(pending) = self.tracker.get_mut(customer, ts) else {
            self.stats.unexpected_drops += 1;
            return;
        };
        let (Some(&slot), PendingKind::Simple { replies }) = (pending.waiting.get(from), &mut pending.kind) else {
            self.stats.unexpected_drops += 1;
            return;
        };
        replies[slot] = Some(reply);
        pending.waiting.remove(from);
        if pending.waiting.is_empty() {
            self.complete_request(customer, ts);
        }
    }
}
