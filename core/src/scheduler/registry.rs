//! Registration: collecting nodes, assigning ids, and replacing dead ones.
//!
//! Until the cluster is complete the scheduler only collects `Register`
//! messages, keyed by the sender's process instance so a retry is a no-op.
//! When `num_servers` servers and `num_workers` workers are present it
//! assigns ranks by sorting on `(role, listen address, instance)` — never by
//! arrival order, so the same cluster gets the same ids however the network
//! reorders — and broadcasts the table. Afterwards a `Register` from a new
//! instance takes the id of a dead node of its role with the next
//! incarnation; a retry from a known instance just gets the table again.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::id::{Incarnation, NodeId, Rank, Role};
use crate::node::{Event, Node, Phase, RoleState};
use crate::time::Instant;
use crate::timer::Timer;
use crate::wire::{Message, NodeEntry, NodeTableMsg, RegisterMsg};

/// Registrations before the cluster is complete.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    /// By instance, so retries are idempotent.
    waiting: BTreeMap<u64, RegisterMsg>,
}

impl Node {
    pub(crate) fn on_register(&mut self, now: Instant, register: RegisterMsg) {
        let RoleState::Scheduler(state) = &mut self.role_state else {
            self.stats.unexpected_drops += 1;
            return;
        };
        if register.role == Role::Scheduler {
            self.stats.unexpected_drops += 1;
            return;
        }
        if self.phase == Phase::Registering {
            let (servers, workers) = (self.config.num_servers, self.config.num_workers);
            let full = |waiting: &BTreeMap<u64, RegisterMsg>, role: Role| {
                let have = waiting.values().filter(|r| r.role == role).count() as u32;
                have >= if role == Role::Server { servers } else { workers }
            };
            let waiting = &mut state.registry.waiting;
            if !waiting.contains_key(&register.instance) && full(waiting, register.role) {
                // More nodes of this role than configured: not ours to place.
                self.stats.unexpected_drops += 1;
                return;
            }
            waiting.insert(register.instance, register);
            if full(waiting, Role::Server) && full(waiting, Role::Worker) {
                self.form_cluster(now);
            }
            return;
        }
        // Ready: a retry of a known instance, or a replacement.
        let known = self.membership.iter().find(|n| n.instance == register.instance).copied();
        if let Some(entry) = known {
            self.send_table_to(entry.id, entry.addr);
            return;
        }
        let dead = self.membership.iter().find(|n| !n.alive && n.id.role() == Some(register.role)).copied();
        let Some(dead) = dead else {
            self.stats.unexpected_drops += 1;
            return;
        };
        let entry = NodeEntry {
            id: dead.id,
            incarnation: dead.incarnation.next(),
            addr: register.listen_addr,
            instance: register.instance,
            alive: true,
        };
        self.membership.update(entry);
        self.reliable.forget_peer(dead.id, dead.incarnation);
        if let RoleState::Scheduler(state) = &mut self.role_state {
            state.heard_at.insert(entry.id, now);
        }
        self.events.push_back(Event::NodeRecovered { id: entry.id, incarnation: entry.incarnation });
        self.broadcast_table();
        self.on_member_recovered(now, entry.id);
    }

    /// Assigns ids to the complete set of registrations and announces them.
    fn form_cluster(&mut self, now: Instant) {
        let RoleState::Scheduler(state) = &mut self.role_state else {
            return;
        };
        let mut waiting: Vec<RegisterMsg> = std::mem::take(&mut state.registry.waiting).into_values().collect();
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
            state.heard_at.insert(id, now);
        }
        self.membership.install(nodes);
        self.phase = Phase::Ready;
        self.events.push_back(Event::ClusterReady);
        self.broadcast_table();
        self.start_liveness(now);
        self.timers.stop(Timer::RegisterRetry);
    }

    pub(crate) fn broadcast_table(&mut self) {
        let targets: Vec<(NodeId, SocketAddr)> =
            self.membership.iter().filter(|n| n.alive).map(|n| (n.id, n.addr)).collect();
        for (id, addr) in targets {
            self.send_table_to(id, addr);
        }
    }

    fn send_table_to(&mut self, id: NodeId, addr: SocketAddr) {
        let table = NodeTableMsg { epoch: self.membership.epoch(), nodes: self.membership.entries() };
        // The receiver may not know its id yet; it finds itself by instance.
        self.send_to_addr(id, addr, Message::NodeTable(table));
    }
}
