//! Heartbeats and failure detection, both halves.
//!
//! Every node sends `Heartbeat` to the scheduler each `heartbeat_interval`;
//! the scheduler answers with its membership epoch (so a node that missed a
//! table notices and asks again) and scans at the same cadence. A node
//! silent for `heartbeat_timeout` is declared dead: the epoch is bumped and
//! the new table broadcast, which fails requests waiting on it everywhere.
//! The other direction matters as much: a node that hears nothing from the
//! scheduler for `heartbeat_timeout` fails its own pending work with
//! `SchedulerLost`, since it can no longer learn who is alive.
//!
//! Bounds, from a crash at `t`: the scheduler declares the node dead by
//! `t + heartbeat_timeout + heartbeat_interval` (the last heartbeat was sent
//! no earlier than `t - heartbeat_interval`, and scans run every interval);
//! requests waiting on it fail one network delay later.

use crate::error::RequestError;
use crate::id::NodeId;
use crate::node::{Event, Node, Phase, RoleState};
use crate::time::Instant;
use crate::timer::Timer;
use crate::wire::{Message, NodeEntry};

impl Node {
    /// Arms the heartbeat timers once the node is part of a cluster.
    pub(crate) fn start_liveness(&mut self, now: Instant) {
        self.scheduler_heard_at = now;
        if !self.config.heartbeats {
            return;
        }
        if !matches!(self.role_state, RoleState::Scheduler(_)) {
            self.send(NodeId::SCHEDULER, Message::Heartbeat);
            self.timers.set(Timer::Heartbeat, now + self.config.heartbeat_interval);
        }
        self.timers.set(Timer::LivenessScan, now + self.config.heartbeat_interval);
    }

    pub(crate) fn on_heartbeat_timer(&mut self, now: Instant) {
        if self.phase != Phase::Ready {
            return;
        }
        self.send(NodeId::SCHEDULER, Message::Heartbeat);
        self.timers.set(Timer::Heartbeat, now + self.config.heartbeat_interval);
    }

    pub(crate) fn on_heartbeat(&mut self, now: Instant, from: NodeId) {
        let alive = self.membership.is_alive(from);
        let RoleState::Scheduler(state) = &mut self.role_state else {
            self.stats.unexpected_drops += 1;
            return;
        };
        if !alive {
            // A node we declared dead (or never knew) keeps talking: it is
            // not answered, so it times us out and stops its work.
            self.stats.unexpected_drops += 1;
            return;
        }
        state.heard_at.insert(from, now);
        let epoch = self.membership.epoch();
        self.send(from, Message::HeartbeatAck { epoch });
    }

    pub(crate) fn on_heartbeat_ack(&mut self, now: Instant, epoch: u64) {
        self.scheduler_heard_at = now;
        self.scheduler_lost = false;
        if epoch > self.membership.epoch() {
            // We missed a table; a repeated registration is answered with it.
            let register = Message::Register(crate::wire::RegisterMsg {
                role: self.config.role,
                listen_addr: self.config.listen_addr,
                instance: self.instance,
            });
            self.send(NodeId::SCHEDULER, register);
        }
    }

    pub(crate) fn on_liveness_scan(&mut self, now: Instant) {
        if self.phase != Phase::Ready || !self.config.heartbeats {
            return;
        }
        self.timers.set(Timer::LivenessScan, now + self.config.heartbeat_interval);
        let timeout = self.config.heartbeat_timeout;
        let RoleState::Scheduler(state) = &self.role_state else {
            if now.saturating_since(self.scheduler_heard_at) >= timeout {
                // At every scan while the silence lasts, not only the first:
                // work started after that (a barrier has no deadline of its
                // own) must not wait forever either.
                self.scheduler_lost = true;
                self.fail_all_pending(RequestError::SchedulerLost);
            }
            return;
        };
        let silent: Vec<NodeEntry> = self
            .membership
            .iter()
            .filter(|n| n.alive)
            .filter(|n| state.heard_at.get(&n.id).is_none_or(|&at| now.saturating_since(at) >= timeout))
            .copied()
            .collect();
        if silent.is_empty() {
            return;
        }
        for mut entry in silent {
            entry.alive = false;
            self.membership.update(entry);
            self.events.push_back(Event::NodeDead { id: entry.id, incarnation: entry.incarnation });
            self.reliable.forget_peer(entry.id, entry.incarnation);
            self.tracker_peer_dead(entry.id);
            self.server.forget_from(entry.id);
            self.on_barrier_member_died(now, entry.id);
        }
        self.broadcast_table();
    }
}
