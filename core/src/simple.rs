//! SimpleApp: a request with an integer head and a byte body, to one node
//! or a whole group, answered by each target with a head and a body.
//!
//! It rides on the same tracker as KV requests, so it has the same bounds:
//! a deadline, and early failure when a target dies. ps-lite uses it for
//! control commands between workers and servers; our training example uses
//! it for progress reports to the scheduler.

use crate::id::{Group, NodeId};

/// Who a SimpleApp request goes to.
///
/// ```
/// use pslite_core::{Group, NodeId, Rank, Target};
/// // Requests take either, converted with `into()`.
/// let one: Target = NodeId::server(Rank(0)).into();
/// let all: Target = (Group::SERVERS | Group::WORKERS).into();
/// assert_eq!(one, Target::Node(NodeId::server(Rank(0))));
/// assert!(matches!(all, Target::Group(group) if group.bits() == 6));
/// ```
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
