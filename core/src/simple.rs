//! SimpleApp: a request with an integer head and a byte body, to one node
//! or a whole group, answered by each target with a head and a body.
//!
//! It rides on the same tracker as KV requests, so it has the same bounds:
//! a deadline, and early failure when a target dies. ps-lite uses it for
//! control commands between workers and servers; our training example uses
//! it for progress reports to the scheduler.

use bytes::Bytes;

use crate::error::{ApiMisuse, RequestError};
use crate::id::{Group, NodeId, Role};
use crate::kv::worker::{Pending, PendingKind, Targets};
use crate::kv::{CustomerId, SimpleReply, Timestamp};
use crate::node::Node;
use crate::time::Instant;
use crate::wire::{Message, SimpleMsg};

/// Who a SimpleApp request goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// One node.
    Node(NodeId),
    /// Every live member of a group.
    Group(Group),
}

impl From<NodeId> for Target {
    fn from(id: NodeId) -> Self {
        Self::Node(id)
    }
}

impl From<Group> for Target {
    fn from(group: Group) -> Self {
        Self::Group(group)
    }
}

impl Node {
    /// Sends `head` and `body` to `target`. `Event::SimpleDone` follows with
    /// one reply per target (ordered by id), or `RequestFailed`.
    pub fn simple_request(
        &mut self,
        now: Instant,
        customer: CustomerId,
        target: impl Into<Target>,
        head: i32,
        body: Bytes,
    ) -> Result<Timestamp, RequestError> {
        self.simple_request_as(now, customer, None, target, head, body)
    }

    /// [`simple_request`](Self::simple_request) with a caller-chosen
    /// timestamp (see [`Node::submit`]).
    pub fn simple_request_as(
        &mut self,
        now: Instant,
        customer: CustomerId,
        ts: Option<Timestamp>,
        target: impl Into<Target>,
        head: i32,
        body: Bytes,
    ) -> Result<Timestamp, RequestError> {
        self.now_hint = now;
        self.ensure_ready()?;
        self.check_pending_room()?;
        let targets: Vec<NodeId> = match target.into() {
            Target::Node(id) if id == NodeId::SCHEDULER || id == self.id || self.membership.is_alive(id) => vec![id],
            Target::Node(id) => return Err(RequestError::PeerDead(id)),
            Target::Group(group) => {
                let mut ids: Vec<NodeId> = self.membership.alive(group).collect();
                if group.contains(Role::Scheduler) {
                    ids.insert(0, NodeId::SCHEDULER);
                }
                ids
            }
        };
        if targets.is_empty() {
            return Err(ApiMisuse::EmptyTarget.into());
        }
        let ts = self.tracker.take(customer, ts)?;
        let mut waiting = Targets::default();
        for (slot, &id) in targets.iter().enumerate() {
            waiting.push(id, slot);
        }
        let kind = PendingKind::Simple { replies: vec![None; targets.len()] };
        self.tracker.insert(customer, ts, Pending::new(now + self.config.request_timeout, waiting, kind));
        for id in targets {
            let message =
                SimpleMsg { app: customer.app, customer: customer.customer, ts: ts.0, head, body: body.clone() };
            self.send(id, Message::SimpleRequest(message));
        }
        self.drain_loopback(now);
        Ok(ts)
    }

    pub(crate) fn on_simple_response(&mut self, from: NodeId, response: SimpleMsg) {
        let customer = CustomerId::new(response.app, response.customer);
        let reply = SimpleReply { from, head: response.head, body: response.body };
        self.on_simple_reply(from, customer, Timestamp(response.ts), reply);
    }
}
