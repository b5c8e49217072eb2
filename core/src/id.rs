//! Who is who: node ids, roles, groups, ranks and incarnations.
//!
//! Ids follow ps-lite's numbering so operators recognise them in logs:
//! the scheduler is 1, server of rank r is `8 + 2r`, worker of rank r is
//! `9 + 2r`. Groups are a bit set (scheduler 1, servers 2, workers 4) and
//! can be combined, as in ps-lite's `kScheduler + kServerGroup`.

use std::fmt;
use std::ops::BitOr;

/// The three kinds of node in a cluster.
///
/// ```
/// use pslite_core::{Group, Role};
/// // Printed as DMLC_ROLE spells it.
/// assert_eq!(Role::Server.to_string(), "server");
/// // Barriers and SimpleApp requests name groups of roles.
/// assert_eq!(Role::Worker.group(), Group::WORKERS);
/// assert!(Group::ALL.contains(Role::Scheduler));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Registers nodes, runs barriers, watches heartbeats.
    Scheduler,
    /// Owns one range of the key space and answers push and pull.
    Server,
    /// Computes gradients; pushes and pulls.
    Worker,
}

impl Role {
    pub(crate) const fn to_wire(self) -> u8 {
        match self {
            Self::Scheduler => 0,
            Self::Server => 1,
            Self::Worker => 2,
        }
    }

    pub(crate) const fn from_wire(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(Self::Scheduler),
            1 => Some(Self::Server),
            2 => Some(Self::Worker),
            _ => None,
        }
    }

    /// The group that holds exactly the nodes of this role.
    pub const fn group(self) -> Group {
        match self {
            Self::Scheduler => Group::SCHEDULER,
            Self::Server => Group::SERVERS,
            Self::Worker => Group::WORKERS,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Scheduler => "scheduler",
            Self::Server => "server",
            Self::Worker => "worker",
        })
    }
}

/// A node's position among the nodes of its role, dense from 0.
///
/// ```
/// use pslite_core::{NodeId, Rank, ServerRanges};
/// // The last server owns the top of the key space; its id follows its rank.
/// let owner = ServerRanges::equal(4).owner(u64::MAX);
/// assert_eq!(owner, Rank(3));
/// assert_eq!(NodeId::server(owner).get(), 14);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rank(pub u32);

/// How many times an id has been assigned: 0 on first registration, +1 each
/// time a restarted process takes a dead node's place. Frames carry the
/// sender's incarnation so messages from a former life are recognisable.
///
/// ```
/// use pslite_core::Incarnation;
/// let first = Incarnation::default();
/// assert_eq!(first.next(), Incarnation(1));
/// // Later lives compare greater, so frames from an earlier one are spotted.
/// assert!(first < first.next());
/// assert_eq!(Incarnation(u32::MAX).next(), Incarnation(u32::MAX), "saturates");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Incarnation(pub u32);

impl Incarnation {
    /// The incarnation that replaces this one.
    pub const fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }
}

/// A node's id, with ps-lite's numbering.
///
/// ```
/// use pslite_core::{NodeId, Rank, Role};
/// // ps-lite's numbering, as operators know it from logs.
/// let id = NodeId::worker(Rank(2));
/// assert_eq!(id.get(), 13);
/// assert_eq!((id.role(), id.rank()), (Some(Role::Worker), Rank(2)));
/// assert_eq!(NodeId::of(Role::Server, Rank(0)), NodeId::server(Rank(0)));
/// assert_eq!((NodeId::SCHEDULER.get(), NodeId::SCHEDULER.role()), (1, Some(Role::Scheduler)));
/// assert_eq!(NodeId::UNASSIGNED.role(), None);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(u32);

impl NodeId {
    /// The scheduler's fixed id.
    pub const SCHEDULER: Self = Self(1);
    /// Placeholder sender id of a node that is not registered yet.
    pub const UNASSIGNED: Self = Self(0);

    /// The id of the server of rank `rank`.
    pub const fn server(rank: Rank) -> Self {
        Self(8 + 2 * rank.0)
    }

    /// The id of the worker of rank `rank`.
    pub const fn worker(rank: Rank) -> Self {
        Self(9 + 2 * rank.0)
    }

    /// The id of the node of `role` and `rank`.
    pub const fn of(role: Role, rank: Rank) -> Self {
        match role {
            Role::Scheduler => Self::SCHEDULER,
            Role::Server => Self::server(rank),
            Role::Worker => Self::worker(rank),
        }
    }

    /// The raw number, as ps-lite prints it.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// Reads an id off the wire; `None` for numbers no node can have.
    ///
    /// ```
    /// use pslite_core::{NodeId, Rank};
    /// assert_eq!(NodeId::from_raw(13), Some(NodeId::worker(Rank(2))));
    /// // 2 to 7 are no node's: a frame naming one is malformed.
    /// assert_eq!(NodeId::from_raw(5), None);
    /// ```
    pub const fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            0 | 1 => Some(Self(raw)),
            n if n >= 8 => Some(Self(n)),
            _ => None,
        }
    }

    /// The role this id belongs to, `None` for [`NodeId::UNASSIGNED`].
    pub const fn role(self) -> Option<Role> {
        match self.0 {
            0 => None,
            1 => Some(Role::Scheduler),
            n if n % 2 == 0 => Some(Role::Server),
            _ => Some(Role::Worker),
        }
    }

    /// The rank within the role (0 for the scheduler).
    pub const fn rank(self) -> Rank {
        if self.0 < 8 {
            Rank(0)
        } else {
            Rank((self.0 - 8) / 2)
        }
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A set of roles, the target of barriers and group requests.
///
/// ```
/// use pslite_core::{Group, Role};
/// // ps-lite's kServerGroup + kWorkerGroup.
/// let group = Group::SERVERS | Group::WORKERS;
/// assert!(group.contains(Role::Server) && !group.contains(Role::Scheduler));
/// assert_eq!(group.bits(), 6);
/// assert_eq!(Group::from_bits(6), Some(group));
/// assert_eq!(Group::from_bits(8), None, "no such role");
/// assert_eq!(Group::all().count(), 7, "every non-empty set of the three roles");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Group(u8);

impl Group {
    /// The scheduler alone.
    pub const SCHEDULER: Self = Self(1);
    /// All servers.
    pub const SERVERS: Self = Self(2);
    /// All workers.
    pub const WORKERS: Self = Self(4);
    /// Everyone.
    pub const ALL: Self = Self(7);

    /// The raw bits (scheduler 1, servers 2, workers 4).
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Every group, in order of their bits.
    pub fn all() -> impl Iterator<Item = Self> {
        (1..=7).filter_map(Self::from_bits)
    }

    /// A group from raw bits; `None` when empty or with unknown bits.
    pub const fn from_bits(bits: u8) -> Option<Self> {
        if bits == 0 || bits & !7 != 0 {
            None
        } else {
            Some(Self(bits))
        }
    }

    /// Whether nodes of `role` are members.
    pub const fn contains(self, role: Role) -> bool {
        self.0 & role.group().0 != 0
    }
}

impl BitOr for Group {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names = Vec::new();
        for (role, name) in [(Role::Scheduler, "scheduler"), (Role::Server, "servers"), (Role::Worker, "workers")] {
            if self.contains(role) {
                names.push(name);
            }
        }
        write!(f, "{}", names.join("+"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_ps_lite_numbering() {
        assert_eq!(NodeId::server(Rank(0)).get(), 8);
        assert_eq!(NodeId::server(Rank(1)).get(), 10);
        assert_eq!(NodeId::worker(Rank(0)).get(), 9);
        assert_eq!(NodeId::worker(Rank(2)).get(), 13);
        assert_eq!(NodeId::worker(Rank(2)).role(), Some(Role::Worker));
        assert_eq!(NodeId::worker(Rank(2)).rank(), Rank(2));
        assert_eq!(NodeId::SCHEDULER.role(), Some(Role::Scheduler));
        assert_eq!(NodeId::from_raw(5), None);
    }

    #[test]
    fn groups_combine_and_reject_unknown_bits() {
        let g = Group::SERVERS | Group::WORKERS;
        assert!(g.contains(Role::Server) && g.contains(Role::Worker));
        assert!(!g.contains(Role::Scheduler));
        assert_eq!(Group::from_bits(0), None);
        assert_eq!(Group::from_bits(8), None);
        assert_eq!(format!("{g:?}"), "servers+workers");
    }
}
