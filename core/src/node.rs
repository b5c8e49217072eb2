//! The per-process state machine: ps-lite's Postoffice and Van logic
//! without the threads.
//!
//! One type serves every role; what only one role has lives in
//! [`RoleState`]. Inputs arrive through `handle_*`, commands return at once,
//! and everything the node wants done comes out through `poll_*`. The
//! protocol pieces are `impl Node` blocks in their own modules
//! (`scheduler::*`, `kv::worker`, `kv::server`, `simple`, `liveness`), so
//! each concept is read in one place while the state stays in one struct.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};

use crate::config::Config;
use crate::error::{ApiMisuse, RequestError};
use crate::id::{Group, Incarnation, NodeId, Rank, Role};
use crate::kv::server::ServerState;
use crate::kv::worker::Tracker;
use crate::kv::{CustomerId, Keys, Lens, ServerRequest, SimpleReply, SimpleRequest, Timestamp, Values};
use crate::membership::{Change, Membership};
use crate::range::ServerRanges;
use crate::reliable::{Admission, Owner, Reliable};
use crate::rng::Rng;
use crate::scheduler::SchedulerState;
use crate::stats::Stats;
use crate::time::Instant;
use crate::timer::{Timer, TimerTable};
use crate::wire::message::Envelope;
use crate::wire::{BarrierOutcome, DecodeError, Frame, Header, Message, NodeTableMsg, RegisterMsg};

/// A frame to send: the shell writes `frame` to `addr`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The receiving node ([`NodeId::UNASSIGNED`] if it has no id yet).
    pub to: NodeId,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The encoded frame.
    pub frame: Frame,
}

/// Where a node is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Waiting for the cluster to form.
    Registering,
    /// Running.
    Ready,
    /// Finished (after `finalize`, a `Terminate`, or a fatal loss).
    Terminated,
}

/// Names one barrier this node entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BarrierTicket {
    /// The group.
    pub group: Group,
    /// This node's count of barriers on `group`, from 0.
    pub generation: u64,
}

/// What happened, for the application.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// This node has its id and rank.
    Registered {
        /// The id.
        id: NodeId,
        /// The rank within its role.
        rank: Rank,
        /// Its incarnation (0 unless it replaced a dead node).
        incarnation: Incarnation,
    },
    /// Every node is registered; requests may flow.
    ClusterReady,
    /// A push (or a request without data back) completed.
    RequestDone {
        /// The customer.
        customer: CustomerId,
        /// The request.
        ts: Timestamp,
    },
    /// A pull or push_pull completed, with values in key order.
    PullDone {
        /// The customer.
        customer: CustomerId,
        /// The request.
        ts: Timestamp,
        /// The keys asked for.
        keys: Keys,
        /// Their values.
        values: Values,
        /// Per-key lengths, when they vary.
        lens: Option<Lens>,
    },
    /// A request failed; it will never complete.
    RequestFailed {
        /// The customer.
        customer: CustomerId,
        /// The request.
        ts: Timestamp,
        /// Why.
        error: RequestError,
    },
    /// A server must answer this with `respond`.
    ServerRequest(ServerRequest),
    /// This node must answer this with `simple_respond`.
    SimpleRequest(SimpleRequest),
    /// Every target answered a SimpleApp request.
    SimpleDone {
        /// The customer.
        customer: CustomerId,
        /// The request.
        ts: Timestamp,
        /// One reply per target, ordered by node id.
        replies: Vec<SimpleReply>,
    },
    /// Every member arrived.
    BarrierReleased(BarrierTicket),
    /// The barrier cannot complete.
    BarrierFailed(BarrierTicket, RequestError),
    /// The scheduler declared a node dead.
    NodeDead {
        /// The node.
        id: NodeId,
        /// The incarnation that died.
        incarnation: Incarnation,
    },
    /// A restarted process took a dead node's id.
    NodeRecovered {
        /// The id.
        id: NodeId,
        /// The new incarnation.
        incarnation: Incarnation,
    },
    /// The node stopped; no more events follow.
    Terminated,
}

/// State only one role has.
#[derive(Debug)]
pub(crate) enum RoleState {
    Scheduler(Box<SchedulerState>),
    Server,
    Worker,
}

/// Capacity of each metadata scratch buffer ([`Message::encode_with`]):
/// one allocation per about 60 frames. A frame kept for resending keeps
/// its whole buffer, so it stays small.
const SCRATCH_BYTES: usize = 4 * 1024;

/// The pslite protocol for one process. See the crate docs for the loop
/// that drives it.
#[derive(Debug)]
pub struct Node {
    pub(crate) config: Config,
    pub(crate) ranges: ServerRanges,
    pub(crate) rng: Rng,
    /// Drawn once per process: tells our retries apart from a restart.
    pub(crate) instance: u64,
    pub(crate) id: NodeId,
    pub(crate) incarnation: Incarnation,
    pub(crate) rank: Option<Rank>,
    pub(crate) phase: Phase,
    pub(crate) membership: Membership,
    pub(crate) timers: TimerTable,
    pub(crate) role_state: RoleState,
    pub(crate) tracker: Tracker,
    pub(crate) server: ServerState,
    /// Barriers entered and not yet ended.
    pub(crate) barriers: BTreeMap<BarrierTicket, BarrierPurpose>,
    /// Next generation per group.
    pub(crate) barrier_generations: BTreeMap<Group, u64>,
    pub(crate) scheduler_heard_at: Instant,
    /// Whether the scheduler has been silent for `heartbeat_timeout`
    /// (pending work is failed at every scan until it is heard again).
    pub(crate) scheduler_lost: bool,
    pub(crate) transmits: VecDeque<Transmit>,
    pub(crate) events: VecDeque<Event>,
    /// Messages to ourselves (a scheduler in its own barrier, a group
    /// request that includes the sender), handled before returning.
    pub(crate) loopback: VecDeque<Message>,
    /// Where frame metadata is written and split off from: one allocation
    /// per many frames, not one per frame.
    scratch: BytesMut,
    pub(crate) reliable: Reliable,
    /// Receipts not sent yet, by peer.
    pub(crate) acks_pending: BTreeMap<NodeId, Vec<u64>>,
    /// The `now` of the input or command being handled: sends schedule
    /// their resend from it without threading `now` through every helper.
    pub(crate) now_hint: Instant,
    pub(crate) stats: Stats,
}

/// Why a barrier was entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BarrierPurpose {
    User,
    Finalize,
}

impl Node {
    /// A node of `config.role`, seeded by `seed`, starting at `now`. A
    /// scheduler starts listening; any other role queues its registration.
    pub fn new(config: Config, seed: u64, now: Instant) -> Self {
        let mut rng = Rng::new(seed);
        let instance = rng.next_u64() | 1;
        let role = config.role;
        let role_state = match role {
            Role::Scheduler => RoleState::Scheduler(Box::default()),
            Role::Server => RoleState::Server,
            Role::Worker => RoleState::Worker,
        };
        let mut node = Self {
            ranges: config.server_ranges(),
            config,
            rng,
            instance,
            id: NodeId::UNASSIGNED,
            incarnation: Incarnation(0),
            rank: None,
            phase: Phase::Registering,
            membership: Membership::default(),
            timers: TimerTable::default(),
            role_state,
            tracker: Tracker::default(),
            server: ServerState::default(),
            barriers: BTreeMap::new(),
            barrier_generations: BTreeMap::new(),
            scheduler_heard_at: now,
            scheduler_lost: false,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            loopback: VecDeque::new(),
            scratch: BytesMut::with_capacity(SCRATCH_BYTES),
            reliable: Reliable::default(),
            acks_pending: BTreeMap::new(),
            now_hint: now,
            stats: Stats::default(),
        };
        if role == Role::Scheduler {
            node.id = NodeId::SCHEDULER;
            node.rank = Some(Rank(0));
            node.events.push_back(Event::Registered { id: node.id, rank: Rank(0), incarnation: Incarnation(0) });
        } else {
            node.send_register();
            node.arm_register_retry(now);
        }
        node
    }

    // ----- inputs -----

    /// Handles one complete frame received from any peer. Call it for
    /// every frame the shell's `FrameDecoder` cuts out, then drain the
    /// `poll_*` outputs. Malformed frames are counted and returned as an
    /// error; the node's state is untouched by them.
    pub fn handle_frame(&mut self, now: Instant, frame: Bytes) -> Result<(), DecodeError> {
        self.now_hint = now;
        self.stats.frames_in += 1;
        self.stats.bytes_in += frame.len() as u64;
        let decoded = Header::decode(&frame, self.config.frame_len_max)
            .and_then(|header| Message::decode(&header, &frame).map(|m| (header, m)));
        let (header, message) = match decoded {
            Ok(decoded) => decoded,
            Err(error) => {
                self.stats.decode_errors += 1;
                return Err(error);
            }
        };
        if !self.accepts_from(&header) {
            return Ok(());
        }
        if let Message::Ack { seqs } = message {
            for seq in seqs {
                if !self.reliable.acknowledge(header.sender, seq) {
                    self.stats.duplicates_dropped += 1;
                }
            }
            return Ok(());
        }
        if header.seq != 0 && self.id == NodeId::UNASSIGNED {
            // Sequenced frames go to registered nodes only; before we have
            // an id, one can only be meant for a former process at this
            // address. Admitting it would mark its sequence number as seen
            // and swallow the frame of that number in our own stream.
            self.stats.unexpected_drops += 1;
            return Ok(());
        }
        if header.seq != 0 {
            match self.reliable.admit(header.sender, header.incarnation, header.seq) {
                Admission::New => self.send_ack(header.sender, header.seq),
                Admission::Duplicate => {
                    self.stats.duplicates_dropped += 1;
                    self.send_ack(header.sender, header.seq);
                    return Ok(());
                }
                Admission::TooFarAhead => {
                    self.stats.duplicates_dropped += 1;
                    return Ok(());
                }
            }
        }
        self.handle_message(now, header.sender, message);
        self.drain_loopback(now);
        Ok(())
    }

    /// Fires the timers due at `now`. Call it when the instant from
    /// [`poll_timeout`](Self::poll_timeout) has come (early calls are
    /// harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now_hint = now;
        if self.phase == Phase::Terminated {
            return;
        }
        for timer in self.timers.expire(now) {
            match timer {
                Timer::RegisterRetry => {
                    if self.phase == Phase::Registering && self.id == NodeId::UNASSIGNED {
                        self.send_register();
                        self.arm_register_retry(now);
                    }
                }
                Timer::Heartbeat => self.on_heartbeat_timer(now),
                Timer::LivenessScan => self.on_liveness_scan(now),
                Timer::BarrierDeadline => self.on_barrier_deadline(now),
            }
        }
        self.expire_requests(now);
        self.expire_resends(now);
        self.drain_loopback(now);
    }

    // ----- outputs -----

    /// The next frame to send, if any. Drain after every input and command.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if !self.acks_pending.is_empty() {
            self.flush_acks();
        }
        self.transmits.pop_front()
    }

    /// The next event for the application, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next;
    /// `None` when nothing is scheduled.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase == Phase::Terminated {
            return None;
        }
        [self.timers.next(), self.tracker.next_deadline(), self.reliable.next_deadline()].into_iter().flatten().min()
    }

    // ----- commands available to every role -----

    /// Enters a barrier over `group`. `Event::BarrierReleased(ticket)` (or
    /// `BarrierFailed`) follows once every member arrived.
    pub fn barrier(&mut self, now: Instant, group: Group) -> Result<BarrierTicket, RequestError> {
        self.enter_barrier(now, group, BarrierPurpose::User)
    }

    /// A barrier over everyone, then termination: `Event::Terminated`.
    pub fn finalize(&mut self, now: Instant) -> Result<BarrierTicket, RequestError> {
        self.enter_barrier(now, Group::ALL, BarrierPurpose::Finalize)
    }

    // ----- getters -----

    /// This node's id ([`NodeId::UNASSIGNED`] until registered).
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// This node's rank within its role, once registered.
    pub fn rank(&self) -> Option<Rank> {
        self.rank
    }

    /// This node's role.
    pub fn role(&self) -> Role {
        self.config.role
    }

    /// This node's incarnation.
    pub fn incarnation(&self) -> Incarnation {
        self.incarnation
    }

    /// Where in its life the node is.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Servers in the cluster.
    pub fn num_servers(&self) -> u32 {
        self.config.num_servers
    }

    /// Workers in the cluster.
    pub fn num_workers(&self) -> u32 {
        self.config.num_workers
    }

    /// The key range of every server.
    pub fn server_ranges(&self) -> &ServerRanges {
        &self.ranges
    }

    /// The node table as last heard.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Counters of what crossed this node.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Requests this node still waits on (its own, as a client).
    pub fn requests_pending(&self) -> usize {
        self.tracker.len()
    }

    /// Whether request `ts` of `customer` is still waiting for its outcome.
    pub fn is_pending(&self, customer: CustomerId, ts: Timestamp) -> bool {
        self.tracker.is_pending(customer, ts)
    }

    /// Server and simple requests this node still has to answer.
    pub fn responses_pending(&self) -> usize {
        self.server.len()
    }

    /// Frames sent and not yet acknowledged.
    pub fn frames_unacked(&self) -> usize {
        self.reliable.unacked_len()
    }

    /// Sender incarnations this node keeps a duplicate filter for; each
    /// filter has a fixed size ([`reliable::DedupWindow::memory_bytes`](crate::reliable::DedupWindow::memory_bytes)).
    pub fn dedup_windows(&self) -> usize {
        self.reliable.windows_len()
    }

    /// Scheduler only: what `id`'s barrier generation 0 on `group` is in
    /// the scheduler's numbering (non-zero for a replacement, which counts
    /// afresh while the survivors went on). Checkers use it to compare
    /// tickets of different processes; 0 on other roles.
    pub fn barrier_generation_offset(&self, id: NodeId, group: Group) -> u64 {
        match &self.role_state {
            RoleState::Scheduler(state) => state.barriers.offset(id, group),
            _ => 0,
        }
    }

    /// Barriers entered and not ended.
    pub fn barriers_pending(&self) -> usize {
        self.barriers.len()
    }

    // ----- internals shared by the protocol modules -----

    /// Whether a frame's sender may talk to us; counts the ones dropped.
    fn accepts_from(&mut self, header: &Header) -> bool {
        if self.phase == Phase::Terminated {
            return false;
        }
        if header.receiver != NodeId::UNASSIGNED && self.id != NodeId::UNASSIGNED && header.receiver != self.id {
            self.stats.misrouted_drops += 1;
            return false;
        }
        let sender = header.sender;
        if sender == NodeId::SCHEDULER || sender == NodeId::UNASSIGNED {
            // The scheduler is never replaced, so it has incarnation 0;
            // unassigned senders can only register, which is never
            // sequenced. Anything else would open duplicate filters at will.
            let plausible = header.incarnation == Incarnation(0) && (sender == NodeId::SCHEDULER || header.seq == 0);
            if !plausible {
                self.stats.unexpected_drops += 1;
            }
            return plausible;
        }
        match self.membership.get(sender) {
            Some(entry) if header.incarnation < entry.incarnation => {
                self.stats.stale_incarnation_drops += 1;
                false
            }
            Some(entry) if header.incarnation == entry.incarnation => true,
            _ => {
                // Unknown to us, or newer than our table: we cannot answer
                // it reliably yet. The scheduler's next table will tell.
                self.stats.unknown_sender_drops += 1;
                false
            }
        }
    }

    pub(crate) fn handle_message(&mut self, now: Instant, from: NodeId, message: Message) {
        match message {
            Message::Register(register) => self.on_register(now, register),
            Message::NodeTable(table) if from == NodeId::SCHEDULER => self.on_node_table(now, table),
            Message::Barrier { group, generation } => self.on_barrier_arrival(now, from, group, generation),
            Message::BarrierRelease { group, generation, outcome } if from == NodeId::SCHEDULER => {
                self.on_barrier_release(now, BarrierTicket { group, generation }, outcome);
            }
            Message::Heartbeat => self.on_heartbeat(now, from),
            Message::HeartbeatAck { epoch } if from == NodeId::SCHEDULER => self.on_heartbeat_ack(now, epoch),
            Message::Terminate if from == NodeId::SCHEDULER => self.terminate(),
            Message::KvRequest(request) => self.on_kv_request(now, from, request),
            Message::KvResponse(response) => self.on_kv_response(now, from, response),
            Message::SimpleRequest(request) => self.on_simple_request(from, request),
            Message::SimpleResponse(response) => self.on_simple_response(from, response),
            Message::Ack { .. }
            | Message::NodeTable(_)
            | Message::BarrierRelease { .. }
            | Message::HeartbeatAck { .. }
            | Message::Terminate => {
                self.stats.unexpected_drops += 1;
            }
        }
    }

    /// Queues `message` for `to`; messages to ourselves go to the loopback.
    pub(crate) fn send(&mut self, to: NodeId, message: Message) {
        if to == self.id {
            self.loopback.push_back(message);
            return;
        }
        let addr = if to == NodeId::SCHEDULER {
            self.config.scheduler_addr
        } else {
            match self.membership.get(to) {
                Some(entry) => entry.addr,
                None => {
                    self.stats.unknown_sender_drops += 1;
                    return;
                }
            }
        };
        self.send_to_addr(to, addr, message);
    }

    pub(crate) fn send_to_addr(&mut self, to: NodeId, addr: SocketAddr, message: Message) {
        let peer_incarnation = self.reliable_incarnation_of(to, &message);
        let seq = match peer_incarnation {
            Some(incarnation) => self.reliable.next_seq(to, incarnation),
            None => 0,
        };
        let envelope = Envelope { sender: self.id, incarnation: self.incarnation, receiver: to, seq };
        let frame = message.encode_with(envelope, &mut self.scratch);
        self.stats.frames_out += 1;
        self.stats.bytes_out += frame.len() as u64;
        let transmit = Transmit { to, addr, frame };
        if seq != 0 {
            let owner: Owner = match &message {
                Message::KvRequest(m) => Some((CustomerId::new(m.app, m.customer), Timestamp(m.ts))),
                Message::SimpleRequest(m) => Some((CustomerId::new(m.app, m.customer), Timestamp(m.ts))),
                _ => None,
            };
            self.reliable.track(self.now_hint, seq, transmit.clone(), owner, self.config.resend_timeout);
        }
        self.transmits.push_back(transmit);
    }

    /// The incarnation of the stream `message` to `to` goes on, when it
    /// must be delivered reliably; `None` for frames that are not acked
    /// (ACKs, heartbeats, registration and tables, which repeat anyway).
    fn reliable_incarnation_of(&self, to: NodeId, message: &Message) -> Option<Incarnation> {
        if !self.config.resend || self.id == NodeId::UNASSIGNED {
            return None;
        }
        match message {
            Message::Register(_)
            | Message::NodeTable(_)
            | Message::Heartbeat
            | Message::HeartbeatAck { .. }
            | Message::Ack { .. } => None,
            Message::Barrier { .. }
            | Message::BarrierRelease { .. }
            | Message::Terminate
            | Message::KvRequest(_)
            | Message::KvResponse(_)
            | Message::SimpleRequest(_)
            | Message::SimpleResponse(_) => {
                if to == NodeId::SCHEDULER {
                    Some(Incarnation(0))
                } else {
                    self.membership.get(to).map(|e| e.incarnation)
                }
            }
        }
    }

    /// Queues a receipt; receipts leave together, one frame per peer, when
    /// the driver next polls for transmits.
    fn send_ack(&mut self, to: NodeId, seq: u64) {
        self.acks_pending.entry(to).or_default().push(seq);
    }

    fn flush_acks(&mut self) {
        for (to, seqs) in std::mem::take(&mut self.acks_pending) {
            for chunk in seqs.chunks(crate::wire::message::ACKS_PER_FRAME_MAX) {
                self.send(to, Message::Ack { seqs: chunk.to_vec() });
            }
        }
    }

    /// Resends what is due; fails requests whose frames ran out of attempts.
    fn expire_resends(&mut self, now: Instant) {
        let expired =
            self.reliable.expire(now, self.config.resend_timeout, self.config.resend_attempts_max, &mut self.rng);
        for transmit in expired.resend {
            self.stats.resends += 1;
            self.stats.frames_out += 1;
            self.stats.bytes_out += transmit.frame.len() as u64;
            self.transmits.push_back(transmit);
        }
        for (_, owner) in expired.failed {
            if let Some((customer, ts)) = owner {
                self.fail_request(customer, ts, RequestError::ResendExhausted);
            }
        }
    }

    pub(crate) fn drain_loopback(&mut self, now: Instant) {
        // Bounded: each loopback message is handled once and handlers queue
        // at most a few more; the cap guards against a protocol bug looping.
        let mut budget = 1 << 16;
        while let Some(message) = self.loopback.pop_front() {
            assert!(budget > 0, "loopback did not settle: protocol loop");
            budget -= 1;
            let from = self.id;
            self.handle_message(now, from, message);
        }
    }

    pub(crate) fn ensure_ready(&self) -> Result<(), RequestError> {
        match self.phase {
            Phase::Ready => Ok(()),
            Phase::Registering => Err(ApiMisuse::NotReady.into()),
            Phase::Terminated => Err(RequestError::Terminated),
        }
    }

    pub(crate) fn ensure_role(&self, role: Role, command: &'static str) -> Result<(), RequestError> {
        if self.config.role == role {
            Ok(())
        } else {
            Err(ApiMisuse::WrongRole { command, role: self.config.role }.into())
        }
    }

    // ----- registration (node side) -----

    /// Retries are spread by a seeded jitter of up to a quarter interval,
    /// so nodes started together do not register in lockstep forever.
    fn arm_register_retry(&mut self, now: Instant) {
        let interval = self.config.register_retry_interval;
        let jitter = self.rng.jitter(interval / 4);
        self.timers.set(Timer::RegisterRetry, now + interval + jitter);
    }

    fn send_register(&mut self) {
        let register =
            RegisterMsg { role: self.config.role, listen_addr: self.config.listen_addr, instance: self.instance };
        let addr = self.config.scheduler_addr;
        self.send_to_addr(NodeId::SCHEDULER, addr, Message::Register(register));
    }

    fn on_node_table(&mut self, now: Instant, table: NodeTableMsg) {
        if self.config.role == Role::Scheduler {
            return;
        }
        // Our entry is the one with our process instance *and* our role: an
        // id of another role would make every id-derived decision wrong.
        let role = self.config.role;
        let mine = table.nodes.iter().find(|n| n.instance == self.instance && n.id.role() == Some(role)).copied();
        let Some(changes) = self.membership.apply(table.epoch, table.nodes) else {
            return;
        };
        self.scheduler_heard_at = now;
        if self.phase == Phase::Registering {
            let Some(mine) = mine else {
                return;
            };
            self.id = mine.id;
            self.incarnation = mine.incarnation;
            self.rank = Some(mine.id.rank());
            self.phase = Phase::Ready;
            self.timers.stop(Timer::RegisterRetry);
            self.events.push_back(Event::Registered {
                id: mine.id,
                rank: mine.id.rank(),
                incarnation: mine.incarnation,
            });
            self.events.push_back(Event::ClusterReady);
            self.start_liveness(now);
            return;
        }
        for change in changes {
            match change {
                Change::Died(id, incarnation) => {
                    self.reliable.forget_peer(id, incarnation);
                    if id == self.id {
                        // The scheduler gave up on us; our work cannot be
                        // trusted by others any more.
                        self.fail_all_pending(RequestError::PeerDead(id));
                        if self.phase == Phase::Terminated {
                            // That ended a pending finalize: nothing may
                            // follow `Terminated`.
                            break;
                        }
                    }
                    self.events.push_back(Event::NodeDead { id, incarnation });
                    self.tracker_peer_dead(id);
                }
                Change::Recovered(id, incarnation) => {
                    self.reliable.forget_peer(id, Incarnation(incarnation.0.saturating_sub(1)));
                    self.server.forget_from(id);
                    self.events.push_back(Event::NodeRecovered { id, incarnation });
                    // The table that reported the death may have been missed
                    // or overtaken: requests to the old incarnation can never
                    // be answered, so they fail now, as on the death.
                    self.tracker_peer_dead(id);
                }
            }
        }
    }

    // ----- barriers (node side) -----

    fn enter_barrier(
        &mut self,
        now: Instant,
        group: Group,
        purpose: BarrierPurpose,
    ) -> Result<BarrierTicket, RequestError> {
        self.now_hint = now;
        self.ensure_ready()?;
        let role = self.config.role;
        if !group.contains(role) {
            return Err(ApiMisuse::NotInGroup { group, role }.into());
        }
        if purpose == BarrierPurpose::Finalize && self.barriers.values().any(|p| *p == BarrierPurpose::Finalize) {
            return Err(RequestError::Terminated);
        }
        let generation = self.barrier_generations.entry(group).or_insert(0);
        let ticket = BarrierTicket { group, generation: *generation };
        *generation += 1;
        self.barriers.insert(ticket, purpose);
        self.send(NodeId::SCHEDULER, Message::Barrier { group, generation: ticket.generation });
        self.drain_loopback(now);
        Ok(ticket)
    }

    fn on_barrier_release(&mut self, _now: Instant, ticket: BarrierTicket, outcome: BarrierOutcome) {
        let Some(purpose) = self.barriers.remove(&ticket) else {
            self.stats.unexpected_drops += 1;
            return;
        };
        match outcome {
            BarrierOutcome::Released => self.events.push_back(Event::BarrierReleased(ticket)),
            BarrierOutcome::MemberDied(id) => {
                self.events.push_back(Event::BarrierFailed(ticket, RequestError::PeerDead(id)));
            }
        }
        if purpose == BarrierPurpose::Finalize {
            if self.config.role == Role::Scheduler && outcome == BarrierOutcome::Released {
                let everyone: Vec<NodeId> = self.membership.alive(Group::ALL).collect();
                for id in everyone {
                    self.send(id, Message::Terminate);
                }
            }
            self.terminate();
        }
    }

    pub(crate) fn fail_barriers(&mut self, error: &RequestError) {
        let barriers = std::mem::take(&mut self.barriers);
        let finalizing = barriers.values().any(|p| *p == BarrierPurpose::Finalize);
        for ticket in barriers.into_keys() {
            self.events.push_back(Event::BarrierFailed(ticket, error.clone()));
        }
        if finalizing {
            // The node was shutting down; it cannot finish the handshake,
            // so it stops rather than wait for a barrier that will not come.
            self.terminate();
        }
    }

    pub(crate) fn fail_all_pending(&mut self, error: RequestError) {
        self.tracker_fail_all(&error);
        self.fail_barriers(&error);
    }

    /// Stops the node: pending work fails, no timers, no more input.
    pub(crate) fn terminate(&mut self) {
        if self.phase == Phase::Terminated {
            return;
        }
        // The phase changes first, so failing a finalize barrier below
        // does not terminate a second time.
        self.phase = Phase::Terminated;
        self.fail_all_pending(RequestError::Terminated);
        self.events.push_back(Event::Terminated);
    }
}
