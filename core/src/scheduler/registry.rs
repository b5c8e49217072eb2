//! Registration: collecting nodes, assigning ids, and replacing dead ones.
//!
//! Until the cluster is complete the scheduler only collects `Register`
//! messages, keyed by the sender's process instance so a retry is a no-op.
//! When `num_servers` servers and `num_workers` workers are present it
//! assigns ranks by sorting on `(role, listen address, instance)` — never by
//! arrival order, so the same cluster gets the same ids however the network
//! reorders — and installs the table. Afterwards a `Register` from a new
//! instance takes the id of a dead node of its role with the next
//! incarnation; a retry from a known instance just gets the table again.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::barrier::Arrivals;
use crate::id::{Incarnation, NodeId, Rank, Role};
use crate::membership::Membership;
use crate::outbox::Outbox;
use crate::wire::{Message, NodeEntry, NodeTableMsg, RegisterMsg};

/// Registrations before the cluster is complete.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    /// By instance, so retries are idempotent.
    waiting: BTreeMap<u64, RegisterMsg>,
}

/// What a registration changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Registered {
    /// Collected; the cluster is not complete yet.
    Waiting,
    /// The cluster is complete: every node has its id in the installed table.
    Formed,
    /// A known process asked again; it was sent the table.
    Repeated,
    /// A new process took the place of dead `predecessor`: `entry` is in
    /// the table now.
    Replaced {
        /// The new entry.
        entry: NodeEntry,
        /// The incarnation that died.
        predecessor: Incarnation,
    },
    /// Not ours to place: a surplus node, or no dead node of its role.
    Refused,
}

impl Registry {
    /// A registration while the cluster forms: collected, and once
    /// complete, turned into the first table.
    pub(crate) fn on_register_forming(
        &mut self,
        register: RegisterMsg,
        (servers, workers): (u32, u32),
        membership: &mut Membership,
    ) -> Registered {
        let full = |waiting: &BTreeMap<u64, RegisterMsg>, role: Role| {
            let have = waiting.values().filter(|r| r.role == role).count() as u32;
            have >= if role == Role::Server { servers } else { workers }
        };
        if !self.waiting.contains_key(&register.instance) && full(&self.waiting, register.role) {
            // More nodes of this role than configured: not ours to place.
            return Registered::Refused;
        }
        self.waiting.insert(register.instance, register);
        if !(full(&self.waiting, Role::Server) && full(&self.waiting, Role::Worker)) {
            return Registered::Waiting;
        }
        let mut waiting: Vec<RegisterMsg> = std::mem::take(&mut self.waiting).into_values().collect();
        waiting.sort_by_key(|r| (r.role, r.listen_addr, r.instance));
        let mut next_rank: BTreeMap<Role, u32> = BTreeMap::new();
        let mut nodes = Vec::with_capacity(waiting.len());
        for register in waiting {
            let rank = next_rank.entry(register.role).or_insert(0);
            let id = NodeId::of(register.role, Rank(*rank));
            *rank += 1;
            nodes.push(NodeEntry {
                id,
                incarnation: Incarnation(0),
                addr: register.listen_addr,
                instance: register.instance,
                alive: true,
            });
        }
        membership.install(nodes);
        Registered::Formed
    }

    /// A registration once the cluster runs: a retry of a known instance
    /// (answered with the table), or a replacement of a dead node.
    pub(crate) fn on_register_running(
        &mut self,
        sender: NodeId,
        register: RegisterMsg,
        membership: &mut Membership,
        arrivals: &Arrivals,
        out: &mut Outbox,
    ) -> Registered {
        let known = membership.iter().find(|n| n.instance == register.instance).copied();
        if let Some(entry) = known {
            send_table_to(membership, arrivals, entry.id, entry.addr, out);
            return Registered::Repeated;
        }
        // Only a new process (it has no id yet) may take a dead node's
        // place; one that has an id and an instance we no longer know is a
        // former process, replaced while it was cut off.
        let fresh = sender == NodeId::UNASSIGNED;
        let dead = membership.iter().find(|n| !n.alive && n.id.role() == Some(register.role)).copied();
        let Some(dead) = dead.filter(|_| fresh) else {
            // No place for it. It may be a process cut off long enough to
            // be replaced: the table tells it so (addressed to no id, since
            // its own id belongs to another process now).
            send_table_to(membership, arrivals, NodeId::UNASSIGNED, register.listen_addr, out);
            return Registered::Refused;
        };
        let entry = NodeEntry {
            id: dead.id,
            incarnation: dead.incarnation.next(),
            addr: register.listen_addr,
            instance: register.instance,
            alive: true,
        };
        membership.update(entry);
        Registered::Replaced { entry, predecessor: dead.incarnation }
    }
}

/// Sends the table to every live node.
pub(crate) fn broadcast_table(membership: &Membership, arrivals: &Arrivals, out: &mut Outbox) {
    for node in membership.iter().filter(|n| n.alive) {
        send_table_to(membership, arrivals, node.id, node.addr, out);
    }
}

/// Sends the table to `id`, with the barrier generations it starts at
/// should the table be the one that registers it.
fn send_table_to(membership: &Membership, arrivals: &Arrivals, id: NodeId, addr: SocketAddr, out: &mut Outbox) {
    let generations = arrivals.generations_for(id);
    let table = NodeTableMsg {
        epoch: membership.epoch(),
        nodes: membership.entries(),
        generations,
        chains: membership.chains().clone(),
    };
    // The receiver may not know its id yet; it finds itself by instance.
    out.send_to_addr(id, addr, Message::NodeTable(table));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Dest;

    fn register(role: Role, port: u16, instance: u64) -> RegisterMsg {
        RegisterMsg { role, listen_addr: SocketAddr::from(([10, 0, 0, 1], port)), instance }
    }

    #[test]
    fn ranks_follow_role_address_and_instance_whatever_the_arrival_order() {
        let nodes = [register(Role::Worker, 5, 1), register(Role::Server, 9, 2), register(Role::Server, 3, 3)];
        let mut tables = Vec::new();
        for order in [[0, 1, 2], [2, 1, 0], [1, 0, 2]] {
            let (mut registry, mut membership) = (Registry::default(), Membership::default());
            let mut last = Registered::Waiting;
            for &i in &order {
                last = registry.on_register_forming(nodes[i].clone(), (2, 1), &mut membership);
            }
            assert_eq!(last, Registered::Formed);
            tables.push(membership.entries());
        }
        assert!(tables.windows(2).all(|pair| pair[0] == pair[1]), "{tables:?}");
        let by_instance: Vec<(u64, NodeId)> = tables[0].iter().map(|n| (n.instance, n.id)).collect();
        let expected = [(3, NodeId::server(Rank(0))), (2, NodeId::server(Rank(1))), (1, NodeId::worker(Rank(0)))];
        assert!(expected.iter().all(|pair| by_instance.contains(pair)), "{by_instance:?}");
    }

    #[test]
    fn a_surplus_node_is_refused_while_forming() {
        let (mut registry, mut membership) = (Registry::default(), Membership::default());
        assert_eq!(
            registry.on_register_forming(register(Role::Server, 1, 1), (1, 1), &mut membership),
            Registered::Waiting
        );
        assert_eq!(
            registry.on_register_forming(register(Role::Server, 2, 2), (1, 1), &mut membership),
            Registered::Refused
        );
        assert_eq!(
            registry.on_register_forming(register(Role::Server, 1, 1), (1, 1), &mut membership),
            Registered::Waiting
        );
    }

    #[test]
    fn a_new_process_takes_a_dead_nodes_id_with_the_next_incarnation() {
        let (mut registry, mut membership, mut out) = (Registry::default(), Membership::default(), Outbox::default());
        registry.on_register_forming(register(Role::Server, 1, 1), (1, 1), &mut membership);
        registry.on_register_forming(register(Role::Worker, 2, 2), (1, 1), &mut membership);
        // No dead server: a newcomer has no place, and is sent the table
        // (addressed to no id) so a replaced process learns it; a known
        // instance gets the table too.
        assert_eq!(
            registry.on_register_running(
                NodeId::UNASSIGNED,
                register(Role::Server, 3, 3),
                &mut membership,
                &Arrivals::default(),
                &mut out
            ),
            Registered::Refused
        );
        let told = out.pop_message();
        assert!(
            matches!(told, Some((Dest::Addr(NodeId::UNASSIGNED, addr), Message::NodeTable(_))) if addr.port() == 3),
            "{told:?}"
        );
        assert_eq!(
            registry.on_register_running(
                NodeId::UNASSIGNED,
                register(Role::Worker, 2, 2),
                &mut membership,
                &Arrivals::default(),
                &mut out
            ),
            Registered::Repeated
        );
        assert!(
            matches!(out.pop_message(), Some((Dest::Addr(id, _), Message::NodeTable(_))) if id == NodeId::worker(Rank(0)))
        );
        let server = NodeId::server(Rank(0));
        let mut entry = *membership.get(server).unwrap();
        entry.alive = false;
        membership.update(entry);
        let epoch = membership.epoch();
        let replaced = registry.on_register_running(
            NodeId::UNASSIGNED,
            register(Role::Server, 3, 3),
            &mut membership,
            &Arrivals::default(),
            &mut out,
        );
        let Registered::Replaced { entry, predecessor } = replaced else { panic!("{replaced:?}") };
        assert_eq!((entry.id, entry.incarnation, predecessor), (server, Incarnation(1), Incarnation(0)));
        assert_eq!(membership.get(server), Some(&entry));
        assert_eq!(membership.epoch(), epoch + 1);
    }

    #[test]
    fn a_former_process_with_an_id_takes_no_dead_nodes_place() {
        let (mut registry, mut membership, mut out) = (Registry::default(), Membership::default(), Outbox::default());
        registry.on_register_forming(register(Role::Server, 1, 1), (2, 1), &mut membership);
        registry.on_register_forming(register(Role::Server, 2, 2), (2, 1), &mut membership);
        registry.on_register_forming(register(Role::Worker, 3, 3), (2, 1), &mut membership);
        let dead = NodeId::server(Rank(1));
        let mut entry = *membership.get(dead).unwrap();
        entry.alive = false;
        membership.update(entry);
        // Server 0's former process (replaced while cut off) asks again
        // with an instance the table no longer holds: it is told, not placed.
        let stale = registry.on_register_running(
            NodeId::server(Rank(0)),
            register(Role::Server, 9, 9),
            &mut membership,
            &Arrivals::default(),
            &mut out,
        );
        assert_eq!(stale, Registered::Refused);
        assert!(matches!(out.pop_message(), Some((Dest::Addr(NodeId::UNASSIGNED, _), Message::NodeTable(_)))));
        assert!(!membership.get(dead).unwrap().alive, "the dead slot waits for a new process");
    }
}
