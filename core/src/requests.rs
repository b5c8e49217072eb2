//! Requests this node waits on as a client: timestamps, slicing, tracking,
//! completion. ps-lite's `Customer`, for KV and SimpleApp requests alike.
//!
//! A KV request is sliced by server range and one message goes to each
//! server that owns at least one key. The tracker remembers, per
//! timestamp, which targets have yet to answer and the parts collected so
//! far; when the last one arrives the parts are merged in rank order (hence
//! key order) and one event reports the whole request. Every pending
//! request has a deadline (`request_timeout`) and fails early when a target
//! dies, so no wait is unbounded. Each outcome is also recorded as settled
//! in the outbox, so the node stops resending the request's frames.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use smallvec::SmallVec;

use crate::chains::RangeChain;
use crate::config::Config;
use crate::error::{ApiMisuse, Mismatch, RequestError};
use crate::event::Event;
use crate::id::{Incarnation, Rank};
use crate::id::{NodeId, Role};
use crate::kv::Lens;
use crate::kv::{CustomerId, DType, Keys, KvCall, SimpleReply, Timestamp, Values};
use crate::membership::Membership;
use crate::outbox::Outbox;
use crate::range::KeyRange;
use crate::range::ServerRanges;
use crate::replica::route::{self, ProgramOrder, Reroute};
use crate::simple::Target;
use crate::slice::{self, KvList};
use crate::slotted::SlottedMap;
use crate::stats::Stats;
use crate::time::Instant;
use crate::wire::{KvOp, KvRequestMsg, KvResponseMsg, KvRoute, Message, SimpleMsg, HEADER_LEN};

/// Requests this node waits on, by customer and timestamp, with their
/// deadlines.
#[derive(Debug, Default)]
pub(crate) struct Requests {
    next_ts: BTreeMap<CustomerId, u32>,
    /// Pull parts held behind this worker's pushes to their range
    /// (replicated ranges only).
    order: ProgramOrder<PartRef>,
    /// Pull parts the program order let go, to send at the next `pump`.
    released: Vec<PartRef>,
    /// A request's state is a few hundred bytes: kept out of the tree.
    pending: SlottedMap<(CustomerId, Timestamp), Pending>,
    deadlines: BTreeSet<(Instant, CustomerId, Timestamp)>,
}

#[derive(Debug)]
struct Pending {
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
enum PendingKind {
    Kv {
        op: KvOp,
        dtype: DType,
        /// The keys each slot asked for, to check answers against.
        asked: SmallVec<[Keys; 2]>,
        parts: SmallVec<[Option<KvList>; 2]>,
        /// With replicated ranges, where each slot's part is, to send it
        /// again; empty with one copy.
        routed: SmallVec<[Routed; 2]>,
    },
    Simple {
        replies: Vec<Option<SimpleReply>>,
    },
}

/// One part of a request, named for the program order.
type PartRef = (CustomerId, Timestamp, usize);

/// A part of a request to replicated ranges, kept to send it again.
#[derive(Debug)]
struct Routed {
    /// The range's index in the replica table.
    part: u32,
    /// The processes that held the range when the part was last sent.
    sent_while: SmallVec<[(Rank, Incarnation); 3]>,
    cmd: i32,
    values: Values,
    lens: Option<Lens>,
    at: Place,
}

/// Where a replicated part is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// Sent to this member of its range (the process, not only the rank).
    Sent(Rank, Incarnation),
    /// A pull behind this worker's pushes to the same range.
    Held,
    /// Redirected by a server whose table was newer than ours: sent again
    /// once ours is at least this new.
    Parked(u64),
    /// Answered.
    Done,
}

/// Who a request still waits on, each with the slot its answer fills: a
/// list searched linearly, since a request goes to a few servers (one
/// for most), and kept inline so tracking a request allocates nothing.
#[derive(Debug, Default)]
struct Targets(SmallVec<[(NodeId, u32, usize); 2]>);

impl Targets {
    /// Adds `id` (not already waited on for `part`) for `slot`.
    fn push(&mut self, id: NodeId, part: u32, slot: usize) {
        debug_assert!(self.get(id, part).is_none(), "one slot per target and part");
        self.0.push((id, part, slot));
    }

    fn get(&self, id: NodeId, part: u32) -> Option<&usize> {
        self.0.iter().find(|(target, p, _)| *target == id && *p == part).map(|(_, _, slot)| slot)
    }

    /// The slot of `part`, whoever it waits on.
    fn get_part(&self, part: u32) -> Option<&usize> {
        self.0.iter().find(|(_, p, _)| *p == part).map(|(_, _, slot)| slot)
    }

    fn remove_part(&mut self, part: u32) {
        self.0.retain(|(_, p, _)| *p != part);
    }

    fn waits_on(&self, id: NodeId) -> bool {
        self.0.iter().any(|(target, _, _)| *target == id)
    }

    fn remove(&mut self, id: NodeId, part: u32) {
        self.0.retain(|(target, p, _)| *target != id || *p != part);
    }

    /// The part of `slot` waits on `id` now.
    fn move_to(&mut self, slot: usize, id: NodeId) {
        if let Some(entry) = self.0.iter_mut().find(|(_, _, s)| *s == slot) {
            entry.0 = id;
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Requests {
    /// Pull parts held behind this worker's pushes.
    #[cfg(any(test, feature = "inspect"))]
    pub(crate) fn held_pulls(&self) -> usize {
        self.order.held() + self.released.len()
    }

    /// Pending requests.
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    /// Every pending request, in key order.
    fn keys(&self) -> Vec<(CustomerId, Timestamp)> {
        self.pending.iter().map(|(key, _)| *key).collect()
    }

    fn get_mut(&mut self, customer: CustomerId, ts: Timestamp) -> Option<&mut Pending> {
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

    fn insert(&mut self, customer: CustomerId, ts: Timestamp, pending: Pending) {
        self.deadlines.insert((pending.deadline, customer, ts));
        let previous = self.pending.insert((customer, ts), pending);
        assert!(previous.is_none(), "timestamps are never reused");
    }

    fn remove(&mut self, customer: CustomerId, ts: Timestamp) -> Option<Pending> {
        let pending = self.pending.remove(&(customer, ts))?;
        self.deadlines.remove(&(pending.deadline, customer, ts));
        if let PendingKind::Kv { op, routed, .. } = &pending.kind {
            if !routed.is_empty() {
                // Its pushes that are still out hold no pull up any more,
                // and its held pulls wait for nothing.
                for part in routed {
                    if op.pushes() && part.at != Place::Done {
                        let released = self.order.push_ended(part.part as usize);
                        self.released.extend(released);
                    }
                }
                self.order.forget(|&(c, t, _)| c == customer && t == ts);
                self.released.retain(|&(c, t, _)| c != customer || t != ts);
            }
        }
        Some(pending)
    }

    pub(crate) fn is_pending(&self, customer: CustomerId, ts: Timestamp) -> bool {
        self.pending.contains_key(&(customer, ts))
    }

    /// Pending requests waiting on `id`, in key order.
    fn waiting_on(&self, id: NodeId) -> Vec<(CustomerId, Timestamp)> {
        self.pending.iter().filter(|(_, p)| p.waiting.waits_on(id)).map(|(k, _)| *k).collect()
    }
}

impl Pending {
    fn new(deadline: Instant, waiting: Targets, kind: PendingKind) -> Self {
        Self { deadline, waiting, kind }
    }
}

/// What a new request is checked and routed against.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cluster<'a> {
    pub(crate) config: &'a Config,
    pub(crate) ranges: &'a ServerRanges,
    pub(crate) membership: &'a Membership,
    /// This node's id: a group request that includes it answers itself.
    pub(crate) me: NodeId,
}

impl Requests {
    /// Starts a push, pull or push_pull (see [`Node::submit`](crate::Node::submit)).
    pub(crate) fn submit(
        &mut self,
        now: Instant,
        call: KvCall,
        cluster: Cluster<'_>,
        out: &mut Outbox,
    ) -> Result<Timestamp, RequestError> {
        let KvCall { customer, ts, cmd, op, list } = call;
        let config = cluster.config;
        let keys_max = config.keys_per_request_max;
        if list.keys.len() > keys_max as usize {
            return Err(ApiMisuse::TooManyKeys { keys: list.keys.len(), max: keys_max }.into());
        }
        slice::check_request(op, &list)?;
        let frame_bytes = (HEADER_LEN + 64) as u64
            + list.keys.as_bytes().len() as u64
            + list.values.as_bytes().len() as u64
            + list.lens.as_ref().map_or(0, |l| l.as_bytes().len() as u64);
        if frame_bytes > u64::from(config.frame_len_max) {
            return Err(ApiMisuse::FrameTooLarge { bytes: frame_bytes, max: config.frame_len_max }.into());
        }
        self.check_room(config)?;
        let parts = slice::slice(cluster.ranges, &list);
        let replicated = config.replicas > 1;
        if replicated {
            for part in &parts {
                let chain = cluster.membership.chains().as_slice().get(part.rank.0 as usize);
                match chain {
                    Some(chain) if !chain.is_lost() => {}
                    _ => return Err(RequestError::RangeLost(cluster.ranges.get(part.rank).unwrap_or(KeyRange::FULL))),
                }
            }
        }
        let ts = self.take(customer, ts)?;
        if parts.is_empty() {
            // Nothing to send (no keys): complete at once, as ps-lite does.
            out.event(match op {
                KvOp::Push => Event::RequestDone { customer, ts },
                KvOp::Pull | KvOp::PushPull => Event::PullDone {
                    customer,
                    ts,
                    keys: list.keys,
                    values: Values::empty(list.values.dtype()),
                    lens: None,
                },
            });
            out.settled(customer, ts);
            return Ok(ts);
        }
        let dtype = list.values.dtype();
        if replicated {
            self.submit_replicated(now, (customer, ts, cmd, op, dtype), parts, cluster, out);
            return Ok(ts);
        }
        let mut waiting = Targets::default();
        let mut asked = SmallVec::with_capacity(parts.len());
        for (slot, part) in parts.iter().enumerate() {
            let server = NodeId::server(part.rank);
            if !cluster.membership.is_alive(server) {
                return Err(RequestError::PeerDead(server));
            }
            waiting.push(server, part.rank.0, slot);
            asked.push(part.list.keys.clone());
        }
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
                route: KvRoute { part: part.rank.0, ..KvRoute::default() },
            };
            out.send(NodeId::server(part.rank), Message::KvRequest(message));
        }
        let parts = smallvec::smallvec![None; asked.len()];
        let kind = PendingKind::Kv { op, dtype, parts, asked, routed: SmallVec::new() };
        self.insert(customer, ts, Pending::new(now + config.request_timeout, waiting, kind));
        Ok(ts)
    }

    /// The parts of a new request to replicated ranges go out: pushes to
    /// their ranges' heads, pulls to their tails unless this worker has
    /// a push to the same range out (then once it is answered).
    fn submit_replicated(
        &mut self,
        now: Instant,
        (customer, ts, cmd, op, dtype): (CustomerId, Timestamp, i32, KvOp, DType),
        parts: SmallVec<[slice::Part; 4]>,
        cluster: Cluster<'_>,
        out: &mut Outbox,
    ) {
        let mut waiting = Targets::default();
        let mut asked = SmallVec::with_capacity(parts.len());
        let mut routed = SmallVec::with_capacity(parts.len());
        for (slot, part) in parts.into_iter().enumerate() {
            waiting.push(NodeId::UNASSIGNED, part.rank.0, slot);
            asked.push(part.list.keys);
            routed.push(Routed {
                part: part.rank.0,
                sent_while: SmallVec::new(),
                cmd,
                values: part.list.values,
                lens: part.list.lens,
                at: Place::Held,
            });
        }
        let slots = asked.len();
        let kind = PendingKind::Kv { op, dtype, parts: smallvec::smallvec![None; slots], asked, routed };
        self.insert(customer, ts, Pending::new(now + cluster.config.request_timeout, waiting, kind));
        for slot in 0..slots {
            let range = self.routed(customer, ts, slot).map_or(0, |r| r.part as usize);
            if op.pushes() {
                self.order.push_sent(range);
                self.send_part(customer, ts, slot, cluster, out);
            } else if let Some(part) = self.order.pull(range, (customer, ts, slot)) {
                self.released.push(part);
            }
        }
        self.pump(cluster, out);
    }

    fn routed(&self, customer: CustomerId, ts: Timestamp, slot: usize) -> Option<&Routed> {
        match &self.pending.get(&(customer, ts))?.kind {
            PendingKind::Kv { routed, .. } => routed.get(slot),
            PendingKind::Simple { .. } => None,
        }
    }

    /// Sends (or sends again) part `slot` of a replicated request where
    /// the current table says, with the same id; fails the request when
    /// its range is lost.
    fn send_part(&mut self, customer: CustomerId, ts: Timestamp, slot: usize, cluster: Cluster<'_>, out: &mut Outbox) {
        let floor = self.floor(customer, ts);
        let Some(pending) = self.pending.get_mut(&(customer, ts)) else {
            return;
        };
        let PendingKind::Kv { op, asked, routed, .. } = &mut pending.kind else {
            return;
        };
        let Some(part) = routed.get_mut(slot) else {
            return;
        };
        let chains = cluster.membership.chains();
        let chain = chains.as_slice().get(part.part as usize);
        let Some(rank) = chain.and_then(|chain| route::target(chain, *op)) else {
            let range = chain.map_or(KeyRange::FULL, RangeChain::range);
            self.fail(customer, ts, RequestError::RangeLost(range), out);
            return;
        };
        let incarnation =
            |rank: Rank| cluster.membership.get(NodeId::server(rank)).map_or(Incarnation(0), |e| e.incarnation);
        part.at = Place::Sent(rank, incarnation(rank));
        part.sent_while = chain.map_or(&[][..], RangeChain::members).iter().map(|&r| (r, incarnation(r))).collect();
        let message = KvRequestMsg {
            app: customer.app,
            customer: customer.customer,
            ts: ts.0,
            cmd: part.cmd,
            op: *op,
            keys: asked[slot].clone(),
            values: part.values.clone(),
            lens: part.lens.clone(),
            route: KvRoute { part: part.part, epoch: cluster.membership.epoch(), floor: floor.0 },
        };
        pending.waiting.move_to(slot, NodeId::server(rank));
        out.send(NodeId::server(rank), Message::KvRequest(message));
    }

    /// The oldest request of `customer` still pending, `ts` or before.
    fn floor(&self, customer: CustomerId, ts: Timestamp) -> Timestamp {
        self.pending.keys_in((customer, Timestamp(0))..=(customer, Timestamp(u32::MAX))).fold(ts, |oldest, &(_, t)| {
            if t.is_before(oldest) {
                t
            } else {
                oldest
            }
        })
    }

    /// Sends the pull parts the program order let go.
    pub(crate) fn pump(&mut self, cluster: Cluster<'_>, out: &mut Outbox) {
        while !self.released.is_empty() {
            for (customer, ts, slot) in std::mem::take(&mut self.released) {
                self.send_part(customer, ts, slot, cluster, out);
            }
        }
    }

    /// A new table: replicated parts whose server left their range's
    /// chain go again to whoever holds that place now; parts a newer
    /// table was awaited for go where this one says.
    pub(crate) fn on_table(&mut self, cluster: Cluster<'_>, out: &mut Outbox) {
        let epoch = cluster.membership.epoch();
        let chains = cluster.membership.chains();
        let mut again = Vec::new();
        let mut lost = Vec::new();
        for (&(customer, ts), pending) in self.pending.iter() {
            let PendingKind::Kv { op, routed, .. } = &pending.kind else {
                continue;
            };
            for (slot, part) in routed.iter().enumerate() {
                let Some(chain) = chains.as_slice().get(part.part as usize) else {
                    continue;
                };
                let holds = |rank: Rank, incarnation: Incarnation| {
                    chain.holds(rank)
                        && cluster
                            .membership
                            .get(NodeId::server(rank))
                            .is_some_and(|e| e.alive && e.incarnation == incarnation)
                };
                match part.at {
                    Place::Sent(rank, incarnation) => {
                        match route::reroute(chain, *op, (rank, incarnation), &part.sent_while, holds) {
                            Reroute::Stay => {}
                            Reroute::To(_) => again.push((customer, ts, slot)),
                            Reroute::Lost => lost.push((customer, ts, chain.range())),
                        }
                    }
                    Place::Parked(at) if epoch >= at => again.push((customer, ts, slot)),
                    Place::Parked(_) | Place::Held | Place::Done => {}
                }
            }
        }
        for (customer, ts, range) in lost {
            self.fail(customer, ts, RequestError::RangeLost(range), out);
        }
        for (customer, ts, slot) in again {
            self.send_part(customer, ts, slot, cluster, out);
        }
        self.pump(cluster, out);
    }

    /// Starts a SimpleApp request (see [`Node::simple_request`](crate::Node::simple_request)).
    #[allow(clippy::too_many_arguments)] // one per field of the request, plus its context
    pub(crate) fn simple(
        &mut self,
        now: Instant,
        customer: CustomerId,
        ts: Option<Timestamp>,
        target: Target,
        head: i32,
        body: Bytes,
        cluster: Cluster<'_>,
        out: &mut Outbox,
    ) -> Result<Timestamp, RequestError> {
        self.check_room(cluster.config)?;
        let membership = cluster.membership;
        let targets: Vec<NodeId> = match target {
            Target::Node(id) if id == NodeId::SCHEDULER || id == cluster.me || membership.is_alive(id) => vec![id],
            Target::Node(id) => return Err(RequestError::PeerDead(id)),
            Target::Group(group) => {
                let mut ids: Vec<NodeId> = membership.alive(group).collect();
                if group.contains(Role::Scheduler) {
                    ids.insert(0, NodeId::SCHEDULER);
                }
                ids
            }
        };
        if targets.is_empty() {
            return Err(ApiMisuse::EmptyTarget.into());
        }
        let ts = self.take(customer, ts)?;
        let mut waiting = Targets::default();
        for (slot, &id) in targets.iter().enumerate() {
            waiting.push(id, 0, slot);
        }
        let kind = PendingKind::Simple { replies: vec![None; targets.len()] };
        self.insert(customer, ts, Pending::new(now + cluster.config.request_timeout, waiting, kind));
        for id in targets {
            let message =
                SimpleMsg { app: customer.app, customer: customer.customer, ts: ts.0, head, body: body.clone() };
            out.send(id, Message::SimpleRequest(message));
        }
        Ok(ts)
    }

    fn check_room(&self, config: &Config) -> Result<(), RequestError> {
        let max = config.requests_pending_max;
        if self.len() >= max as usize {
            return Err(ApiMisuse::TooManyPending { max }.into());
        }
        Ok(())
    }

    /// A server's answer to one part of a KV request.
    pub(crate) fn on_kv_response(
        &mut self,
        from: NodeId,
        response: KvResponseMsg,
        cluster: Cluster<'_>,
        out: &mut Outbox,
        stats: &mut Stats,
    ) {
        let customer = CustomerId::new(response.app, response.customer);
        let ts = Timestamp(response.ts);
        let Some(pending) = self.pending.get_mut(&(customer, ts)) else {
            stats.unexpected_drops += 1;
            return;
        };
        // With one copy of each range a server gets at most one part of a
        // request, which its id names; with several, the answer names it.
        let replicated = matches!(&pending.kind, PendingKind::Kv { routed, .. } if !routed.is_empty());
        let part = if replicated { response.part } else { from.rank().0 };
        // A replicated push is acknowledged by its range's tail, not the
        // head it went to; any member's answer is one the range agrees
        // on. A redirect comes only from where the part went.
        let slot = if replicated && response.redirect.is_none() {
            pending.waiting.get_part(part)
        } else {
            pending.waiting.get(from, part)
        };
        let (Some(&slot), PendingKind::Kv { op, dtype, asked, parts, routed }) = (slot, &mut pending.kind) else {
            stats.unexpected_drops += 1;
            return;
        };
        let op = *op;
        if replicated && !matches!(routed[slot].at, Place::Sent(..) | Place::Parked(_)) {
            // Held back, never sent: nobody can have answered it.
            stats.unexpected_drops += 1;
            return;
        }
        if let (Some(epoch), Some(routed)) = (response.redirect, routed.get_mut(slot)) {
            routed.at = Place::Parked(epoch);
            pending.waiting.move_to(slot, NodeId::UNASSIGNED);
            if cluster.membership.epoch() >= epoch {
                self.send_part(customer, ts, slot, cluster, out);
            }
            return;
        }
        if response.redirect.is_some() {
            stats.unexpected_drops += 1;
            return;
        }
        if let Some(reason) = response.error {
            self.fail(customer, ts, RequestError::Refused { server: from, reason }, out);
            return;
        }
        if op.pulls() {
            // Servers do not echo keys back (the worker has them); a
            // server that does must echo exactly what was asked.
            let echoed = !response.keys.is_empty();
            let problem_keys = echoed && response.keys != asked[slot];
            let answer = KvList { keys: asked[slot].clone(), values: response.values, lens: response.lens };
            let problem = if problem_keys {
                Some(Mismatch::Keys)
            } else if answer.values.dtype() != *dtype {
                Some(Mismatch::ValueType)
            } else if slice::check_lengths(&answer).is_err() {
                Some(Mismatch::Lengths)
            } else {
                None
            };
            if let Some(mismatch) = problem {
                self.fail(customer, ts, RequestError::BadResponse { server: from, mismatch }, out);
                return;
            }
            parts[slot] = Some(answer);
        }
        if replicated {
            pending.waiting.remove_part(part);
        } else {
            pending.waiting.remove(from, part);
        }
        if op.pushes() && !routed.is_empty() {
            routed[slot].at = Place::Done;
            let released = self.order.push_ended(part as usize);
            self.released.extend(released);
        }
        if pending.waiting.is_empty() {
            self.complete(customer, ts, out);
        }
    }

    /// A target's answer to a SimpleApp request.
    pub(crate) fn on_simple_response(
        &mut self,
        from: NodeId,
        response: SimpleMsg,
        out: &mut Outbox,
        stats: &mut Stats,
    ) {
        let customer = CustomerId::new(response.app, response.customer);
        let ts = Timestamp(response.ts);
        let reply = SimpleReply { from, head: response.head, body: response.body };
        let Some(pending) = self.get_mut(customer, ts) else {
            stats.unexpected_drops += 1;
            return;
        };
        let (Some(&slot), PendingKind::Simple { replies }) = (pending.waiting.get(from, 0), &mut pending.kind) else {
            stats.unexpected_drops += 1;
            return;
        };
        replies[slot] = Some(reply);
        pending.waiting.remove(from, 0);
        if pending.waiting.is_empty() {
            self.complete(customer, ts, out);
        }
    }

    fn complete(&mut self, customer: CustomerId, ts: Timestamp, out: &mut Outbox) {
        let pending = self.remove(customer, ts).expect("completing a pending request");
        out.settled(customer, ts);
        let event = match pending.kind {
            PendingKind::Kv { op: KvOp::Push, .. } => Event::RequestDone { customer, ts },
            PendingKind::Kv { parts, .. } => {
                let parts: SmallVec<[KvList; 2]> = parts.into_iter().map(|p| p.expect("every slot answered")).collect();
                match slice::merge(parts) {
                    Ok(list) => Event::PullDone { customer, ts, keys: list.keys, values: list.values, lens: list.lens },
                    Err(mismatch) => Event::RequestFailed {
                        customer,
                        ts,
                        error: RequestError::BadResponse { server: NodeId::UNASSIGNED, mismatch },
                    },
                }
            }
            PendingKind::Simple { replies } => Event::SimpleDone {
                customer,
                ts,
                replies: replies.into_iter().map(|r| r.expect("every target answered")).collect(),
            },
        };
        out.event(event);
    }

    /// Fails request `ts` of `customer`, if it is still pending.
    pub(crate) fn fail(&mut self, customer: CustomerId, ts: Timestamp, error: RequestError, out: &mut Outbox) {
        if self.remove(customer, ts).is_some() {
            out.settled(customer, ts);
            out.event(Event::RequestFailed { customer, ts, error });
        }
    }

    /// `id` died or was replaced: what waits on it can never complete.
    pub(crate) fn on_peer_dead(&mut self, id: NodeId, out: &mut Outbox) {
        for (customer, ts) in self.waiting_on(id) {
            // A part of a replicated range is sent again by `on_table`
            // instead, to the member that holds the place now.
            let rerouted = matches!(&self.pending.get(&(customer, ts)).map(|p| &p.kind),
                Some(PendingKind::Kv { routed, .. }) if !routed.is_empty());
            if !rerouted {
                self.fail(customer, ts, RequestError::PeerDead(id), out);
            }
        }
    }

    /// Fails every pending request with `error`.
    pub(crate) fn fail_all(&mut self, error: &RequestError, out: &mut Outbox) {
        for (customer, ts) in self.keys() {
            self.fail(customer, ts, error.clone(), out);
        }
    }

    /// Fails the requests whose deadline has come.
    pub(crate) fn expire(&mut self, now: Instant, out: &mut Outbox) {
        while let Some(&(at, customer, ts)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.fail(customer, ts, RequestError::TimedOut, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::config::Config;
    use crate::id::{Incarnation, Rank};
    use crate::outbox::Dest;
    use crate::wire::NodeEntry;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// A worker's view of a cluster of two live servers.
    fn setting() -> (Config, ServerRanges, Membership) {
        let config = Config::builder(Role::Worker, addr(1)).cluster(2, 1).build().unwrap();
        let ranges = config.server_ranges();
        let mut membership = Membership::default();
        let nodes = (0..2)
            .map(|rank| NodeEntry {
                id: NodeId::server(Rank(rank)),
                incarnation: Incarnation(0),
                addr: addr(10 + rank as u16),
                instance: u64::from(rank) + 1,
                alive: true,
            })
            .collect();
        membership.apply(1, nodes, crate::chains::Chains::default()).unwrap();
        (config, ranges, membership)
    }

    fn push(keys: &[u64], values: &[f32]) -> KvCall {
        let list = KvList { keys: Keys::from_slice(keys), values: Values::from_slice(values), lens: None };
        KvCall { customer: CustomerId::DEFAULT, ts: None, cmd: 0, op: KvOp::PushPull, list }
    }

    fn answer(ts: Timestamp, part: u32, values: &[f32]) -> KvResponseMsg {
        KvResponseMsg {
            app: 0,
            customer: 0,
            ts: ts.0,
            error: None,
            keys: Keys::default(),
            values: Values::from_slice(values),
            lens: None,
            part,
            redirect: None,
        }
    }

    #[test]
    fn a_request_across_two_ranges_completes_once_both_servers_answered_in_key_order() {
        let (config, ranges, membership) = setting();
        let cluster =
            Cluster { config: &config, ranges: &ranges, membership: &membership, me: NodeId::worker(Rank(0)) };
        let mut requests = Requests::default();
        let mut out = Outbox::default();
        let mut stats = Stats::default();
        let ts = requests.submit(Instant::ZERO, push(&[1, u64::MAX], &[1.0, 2.0]), cluster, &mut out).unwrap();
        let targets: Vec<Dest> = out.messages().map(|(dest, _)| *dest).collect();
        let servers = [NodeId::server(Rank(0)), NodeId::server(Rank(1))];
        assert_eq!(targets, vec![Dest::Node(servers[0]), Dest::Node(servers[1])]);
        // The higher range answers first; the result is still in key order.
        requests.on_kv_response(servers[1], answer(ts, 1, &[20.0]), cluster, &mut out, &mut stats);
        assert!(requests.is_pending(CustomerId::DEFAULT, ts));
        assert_eq!(out.events().count(), 0);
        requests.on_kv_response(servers[0], answer(ts, 0, &[10.0]), cluster, &mut out, &mut stats);
        assert!(!requests.is_pending(CustomerId::DEFAULT, ts));
        match out.pop_event() {
            Some(Event::PullDone { values, .. }) => assert_eq!(values.to_vec::<f32>(), Some(vec![10.0, 20.0])),
            other => panic!("expected PullDone, got {other:?}"),
        }
        assert_eq!(out.take_settled().collect::<Vec<_>>(), vec![(CustomerId::DEFAULT, ts)]);
        // A late duplicate answer is counted, not reported.
        requests.on_kv_response(servers[0], answer(ts, 0, &[10.0]), cluster, &mut out, &mut stats);
        assert_eq!(stats.unexpected_drops, 1);
        assert!(out.pop_event().is_none());
    }

    #[test]
    fn a_dead_target_fails_only_the_requests_waiting_on_it() {
        let (config, ranges, membership) = setting();
        let cluster =
            Cluster { config: &config, ranges: &ranges, membership: &membership, me: NodeId::worker(Rank(0)) };
        let mut requests = Requests::default();
        let mut out = Outbox::default();
        let low = requests.submit(Instant::ZERO, push(&[1], &[1.0]), cluster, &mut out).unwrap();
        let high = requests.submit(Instant::ZERO, push(&[u64::MAX], &[1.0]), cluster, &mut out).unwrap();
        let dead = NodeId::server(Rank(1));
        requests.on_peer_dead(dead, &mut out);
        let error = RequestError::PeerDead(dead);
        assert_eq!(out.pop_event(), Some(Event::RequestFailed { customer: CustomerId::DEFAULT, ts: high, error }));
        assert!(out.pop_event().is_none());
        assert!(requests.is_pending(CustomerId::DEFAULT, low));
    }

    #[test]
    fn requests_fail_at_their_deadline_and_not_before() {
        let (config, ranges, membership) = setting();
        let cluster =
            Cluster { config: &config, ranges: &ranges, membership: &membership, me: NodeId::worker(Rank(0)) };
        let mut requests = Requests::default();
        let mut out = Outbox::default();
        let ts = requests.submit(Instant::ZERO, push(&[1], &[1.0]), cluster, &mut out).unwrap();
        let deadline = Instant::ZERO + config.request_timeout;
        assert_eq!(requests.next_deadline(), Some(deadline));
        requests.expire(Instant::from_nanos(deadline.as_nanos() - 1), &mut out);
        assert!(requests.is_pending(CustomerId::DEFAULT, ts));
        requests.expire(deadline, &mut out);
        let error = RequestError::TimedOut;
        assert_eq!(out.pop_event(), Some(Event::RequestFailed { customer: CustomerId::DEFAULT, ts, error }));
        assert_eq!(requests.next_deadline(), None);
    }

    #[test]
    fn a_request_to_a_dead_server_is_refused_before_anything_is_sent() {
        let (config, ranges, mut membership) = setting();
        let mut entry = *membership.get(NodeId::server(Rank(1))).unwrap();
        entry.alive = false;
        membership.update(entry);
        let cluster =
            Cluster { config: &config, ranges: &ranges, membership: &membership, me: NodeId::worker(Rank(0)) };
        let mut requests = Requests::default();
        let mut out = Outbox::default();
        let result = requests.submit(Instant::ZERO, push(&[1, u64::MAX], &[1.0, 2.0]), cluster, &mut out);
        assert_eq!(result, Err(RequestError::PeerDead(NodeId::server(Rank(1)))));
        assert_eq!(out.messages().count(), 0);
        assert_eq!(requests.len(), 0);
    }
}
