//! Where components put what they want done: messages to send, events for
//! the application, and requests whose outcome is known.
//!
//! Components never send or encode anything themselves: they do not know
//! addresses, sequence numbers or the node's own id. They write here, and
//! the node turns each message into a frame (or a loopback delivery) right
//! after the component returns, in the order written. That keeps the
//! routing, the reliable stream and the encoding in one place, and lets a
//! component be driven in a unit test with nothing but an `Outbox`.

use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::event::Event;
use crate::id::NodeId;
use crate::kv::{CustomerId, Timestamp};
use crate::wire::Message;

/// Where a message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dest {
    /// A node by id, reached at the address the node table gives (or the
    /// configured one, for the scheduler).
    Node(NodeId),
    /// A node at an address of our choosing: registration (we have no table
    /// yet) and tables (the receiver may not know its id yet).
    Addr(NodeId, SocketAddr),
}

/// The shared output of every component of one node.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    messages: VecDeque<(Dest, Message)>,
    events: VecDeque<Event>,
    /// Requests of this node (as a client) that completed or failed: the
    /// node stops resending their frames.
    settled: Vec<(CustomerId, Timestamp)>,
}

impl Outbox {
    /// Queues `message` for node `to`.
    pub(crate) fn send(&mut self, to: NodeId, message: Message) {
        self.messages.push_back((Dest::Node(to), message));
    }

    /// Queues `message` for `to` at `addr`.
    pub(crate) fn send_to_addr(&mut self, to: NodeId, addr: SocketAddr, message: Message) {
        self.messages.push_back((Dest::Addr(to, addr), message));
    }

    /// Reports `event` to the application.
    pub(crate) fn event(&mut self, event: Event) {
        self.events.push_back(event);
    }

    /// Records that request `ts` of `customer` has its outcome.
    pub(crate) fn settled(&mut self, customer: CustomerId, ts: Timestamp) {
        self.settled.push((customer, ts));
    }

    /// The oldest message not yet sent.
    pub(crate) fn pop_message(&mut self) -> Option<(Dest, Message)> {
        self.messages.pop_front()
    }

    /// The oldest event not yet reported.
    pub(crate) fn pop_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Takes the requests settled since the last call.
    pub(crate) fn take_settled(&mut self) -> std::vec::Drain<'_, (CustomerId, Timestamp)> {
        self.settled.drain(..)
    }

    /// Whether events wait to be reported (for components' tests).
    #[cfg(test)]
    pub(crate) fn events(&self) -> impl Iterator<Item = &Event> {
        self.events.iter()
    }

    /// Messages waiting to be sent (for components' tests).
    #[cfg(test)]
    pub(crate) fn messages(&self) -> impl Iterator<Item = &(Dest, Message)> {
        self.messages.iter()
    }
}
