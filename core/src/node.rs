//! The per-process state machine: ps-lite's Postoffice and Van logic
//! without the threads.
//!
//! One type serves every role. The protocol lives in components that own
//! their state and never see the node (the module map in the crate docs
//! says which owns what); the node keeps what ties them together:
//!
//! * **identity and time**: who this process is (id, incarnation, rank,
//!   phase) and the `now` of the input being handled, taken once at each
//!   entry and never moving backwards;
//! * **routing**: every message a component writes to the outbox is
//!   addressed from the node table, numbered on its reliable stream,
//!   encoded, and queued for the driver (or handed back to the node itself
//!   through the loopback);
//! * **dispatch**: each decoded message goes to the one component it
//!   concerns;
//! * **fan-out**: a membership change (a death, a replacement) reaches
//!   every component that keeps state about peers, from one place.

use std::collections::VecDeque;
use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};

use crate::barrier::{Barriers, Purpose};
use crate::chains::Chains;
use crate::config::Config;
use crate::error::{ApiMisuse, RequestError};
pub use crate::event::{BarrierTicket, Event, ExportTicket, Phase, Transmit};
use crate::id::{Group, Incarnation, NodeId, Rank, Role};
use crate::kv::{CustomerId, DType, Keys, KvCall, Lens, Response, ServerRequestId, Timestamp, Values};
use crate::liveness::SchedulerWatch;
use crate::membership::{Change, Membership};
use crate::outbox::{Dest, Outbox};
use crate::range::ServerRanges;
use crate::receipts::{self, Receipts};
use crate::reliable::{Admission, Owner, Reliable};
use crate::replica::serve::{self, Serving, Then};
use crate::requests::{Cluster, Requests};
use crate::responder::{Limits, Responder};
use crate::rng::Rng;
use crate::scheduler::barrier::Rules;
use crate::scheduler::placement;
use crate::scheduler::registry::{self, Registered};
use crate::scheduler::Scheduler;
use crate::simple::Target;
use crate::slice::KvList;
use crate::stats::Stats;
use crate::time::Instant;
use crate::timer::{Timer, TimerTable};
use crate::wire::message::Envelope;
use crate::wire::{BarrierOutcome, DecodeError, Header, Kind, KvOp, Message, NodeTableMsg, RegisterMsg};

/// Capacity of each metadata scratch buffer ([`Message::encode_with`]):
/// one allocation per about 60 frames. A frame kept for resending keeps
/// its whole buffer, so it stays small.
const SCRATCH_BYTES: usize = 4 * 1024;

/// What the replicated ranges are handled against; `None` before the node
/// has its rank. A macro, not a method, so that it borrows only the fields
/// it reads and the serving component can be borrowed beside it.
macro_rules! serve_context {
    ($node:ident) => {{
        let limits = $node.limits();
        let lease = !$node.config.heartbeats || $node.watch.holds_lease($node.now, $node.config.read_lease());
        $node.rank.map(|me| serve::Context { me, membership: &$node.membership, now: $node.now, limits, lease })
    }};
}

/// The pslite protocol for one process. See the crate docs for the loop
/// that drives it.
#[derive(Debug)]
pub struct Node {
    config: Config,
    ranges: ServerRanges,
    rng: Rng,
    /// Drawn once per process: tells our retries apart from a restart.
    instance: u64,
    id: NodeId,
    incarnation: Incarnation,
    rank: Option<Rank>,
    phase: Phase,
    /// Why the node stopped, when an error stopped it.
    ended_by: Option<RequestError>,
    /// The `now` of the input or command being handled (the latest seen).
    now: Instant,
    /// When an unregistered node gives up on the scheduler.
    register_deadline: Instant,
    membership: Membership,
    timers: TimerTable,
    /// The scheduler's own sub-machine; `None` on every other role.
    scheduler: Option<Box<Scheduler>>,
    /// Whether the scheduler still answers (every role but the scheduler).
    watch: SchedulerWatch,
    /// Requests this node waits on. Every role has one: any node may send
    /// SimpleApp requests, and workers send KV requests too.
    requests: Requests,
    /// Requests this node must answer: KV requests on a server, SimpleApp
    /// requests on any role.
    responder: Responder<Then>,
    /// The replicated ranges this server holds a copy of (none with one
    /// copy of each range, or on other roles).
    serving: Serving,
    barriers: Barriers,
    reliable: Reliable,
    /// What components asked for, and the events for the application.
    out: Outbox,
    transmits: VecDeque<Transmit>,
    /// Messages to ourselves (a scheduler in its own barrier, a group
    /// request that includes the sender), handled before returning.
    loopback: VecDeque<Message>,
    /// Where frame metadata is written and split off from: one allocation
    /// per many frames, not one per frame.
    scratch: BytesMut,
    /// Receipts not sent yet, waiting for company.
    receipts: Receipts,
    stats: Stats,
}

impl Node {
    /// A node of `config.role`, seeded by `seed`, starting at `now`. A
    /// scheduler starts listening; any other role queues its registration.
    pub fn new(config: Config, seed: u64, now: Instant) -> Self {
        let mut rng = Rng::new(seed);
        let instance = rng.next_u64() | 1;
        let role = config.role;
        let register_deadline = now + config.register_timeout;
        let config_request_timeout = config.request_timeout;
        let pace = crate::replica::catch_up::Pace {
            chunk_keys: config.transfer_chunk_keys as usize,
            bytes_per_second: config.transfer_bytes_per_second,
            interval: config.heartbeat_interval,
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
            ended_by: None,
            now,
            register_deadline,
            membership: Membership::default(),
            timers: TimerTable::default(),
            scheduler: (role == Role::Scheduler).then(Box::default),
            watch: SchedulerWatch::new(now),
            requests: Requests::default(),
            responder: Responder::default(),
            serving: Serving::new(config_request_timeout, pace),
            barriers: Barriers::default(),
            reliable: Reliable::default(),
            out: Outbox::default(),
            transmits: VecDeque::new(),
            loopback: VecDeque::new(),
            scratch: BytesMut::with_capacity(SCRATCH_BYTES),
            receipts: Receipts::default(),
            stats: Stats::default(),
        };
        if role == Role::Scheduler {
            node.id = NodeId::SCHEDULER;
            node.rank = Some(Rank(0));
            node.out.event(Event::Registered { id: node.id, rank: Rank(0), incarnation: Incarnation(0) });
        } else {
            node.send_register();
            node.arm_register_retry();
            node.flush();
        }
        node
    }

    // ----- inputs -----

    /// Handles one complete frame received from any peer. Call it for
    /// every frame the shell's `FrameDecoder` cuts out, then drain the
    /// `poll_*` outputs. Malformed frames are counted and returned as an
    /// error; the node's state is untouched by them.
    ///
    /// # Panics
    ///
    /// If `now` is earlier than the `now` of an earlier call.
    pub fn handle_frame(&mut self, now: Instant, frame: Bytes) -> Result<(), DecodeError> {
        self.advance_to(now);
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
                Admission::New => self.send_ack(header.sender, header.seq, false),
                Admission::Duplicate => {
                    self.stats.duplicates_dropped += 1;
                    self.send_ack(header.sender, header.seq, true);
                    return Ok(());
                }
                Admission::TooFarAhead => {
                    self.stats.duplicates_dropped += 1;
                    return Ok(());
                }
            }
        }
        self.handle_message(header.sender, header.receiver, message);
        self.drain_loopback();
        Ok(())
    }

    /// Fires the timers due at `now`. Call it when the instant from
    /// [`poll_timeout`](Self::poll_timeout) has come (early calls are
    /// harmless).
    ///
    /// # Panics
    ///
    /// If `now` is earlier than the `now` of an earlier call.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance_to(now);
        if self.phase == Phase::Terminated {
            return;
        }
        // Decided before any timer runs, as for the fixed timers: a
        // deadline a scan sets now fires on the next call.
        let barriers_due = self.scheduler.as_ref().and_then(|s| s.arrivals.next_deadline()).is_some_and(|at| at <= now);
        for timer in self.timers.expire(now) {
            match timer {
                Timer::RegisterRetry => {
                    // Registered meanwhile: the retry has nothing to do.
                    if self.phase == Phase::Registering {
                        if now >= self.register_deadline {
                            self.out.event(Event::RegistrationFailed { scheduler: self.config.scheduler_addr });
                            self.terminate();
                        } else {
                            self.send_register();
                            self.arm_register_retry();
                        }
                    }
                }
                Timer::Heartbeat => self.on_heartbeat_timer(),
                Timer::LivenessScan => self.on_liveness_scan(),
            }
            self.flush();
        }
        let rules = self.rules();
        if let (true, Some(scheduler)) = (barriers_due, self.scheduler.as_mut()) {
            scheduler.arrivals.on_timeout(now, &self.membership, rules, &mut self.out);
            self.flush();
        }
        self.requests.expire(now, &mut self.out);
        self.flush();
        self.expire_resends();
        self.drain_loopback();
        self.send_receipts_due(now);
    }

    // ----- outputs -----

    /// The next frame to send, if any. Drain after every input and command.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.send_receipts_due(self.now);
        self.transmits.pop_front()
    }

    /// The next event for the application, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.out.pop_event()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next;
    /// `None` when nothing is scheduled.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase == Phase::Terminated {
            return None;
        }
        let barriers = self.scheduler.as_ref().and_then(|s| s.arrivals.next_deadline());
        let receipts = self.receipts.next_due();
        [self.timers.next(), self.requests.next_deadline(), self.reliable.next_deadline(), barriers, receipts]
            .into_iter()
            .flatten()
            .min()
    }

    // ----- commands available to every role -----

    /// Enters a barrier over `group`. `Event::BarrierReleased(ticket)` (or
    /// `BarrierFailed`) follows once every member arrived.
    pub fn barrier(&mut self, now: Instant, group: Group) -> Result<BarrierTicket, RequestError> {
        self.enter_barrier(now, group, Purpose::User)
    }

    /// A barrier over everyone, then termination: `Event::Terminated`.
    pub fn finalize(&mut self, now: Instant) -> Result<BarrierTicket, RequestError> {
        self.enter_barrier(now, Group::ALL, Purpose::Finalize)
    }

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
        self.advance_to(now);
        self.ensure_ready()?;
        let cluster = Cluster { config: &self.config, ranges: &self.ranges, membership: &self.membership, me: self.id };
        let ts = self.requests.simple(now, customer, ts, target.into(), head, body, cluster, &mut self.out)?;
        self.flush();
        self.drain_loopback();
        Ok(ts)
    }

    /// Answers a `SimpleRequest` with a head and a body (dropped once the
    /// node has terminated).
    pub fn simple_respond(
        &mut self,
        now: Instant,
        id: ServerRequestId,
        head: i32,
        body: Bytes,
    ) -> Result<(), RequestError> {
        self.advance_to(now);
        if self.phase == Phase::Terminated {
            // A stopped node answers nothing; the handle did nothing wrong.
            return Ok(());
        }
        self.responder.simple_respond(id, head, body, &self.membership, &mut self.out)?;
        self.flush();
        self.drain_loopback();
        Ok(())
    }

    // ----- worker commands -----

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
        self.advance_to(now);
        self.ensure_role(Role::Worker, "push/pull")?;
        self.ensure_ready()?;
        let cluster = Cluster { config: &self.config, ranges: &self.ranges, membership: &self.membership, me: self.id };
        let ts = self.requests.submit(now, call, cluster, &mut self.out)?;
        self.flush();
        Ok(ts)
    }

    // ----- server commands -----

    /// Answers a `ServerRequest`. Pulls (and push_pulls) must answer with
    /// one value run per requested key; a refusal fails the worker's request.
    /// Once the node has terminated, answers are dropped.
    pub fn respond(&mut self, now: Instant, id: ServerRequestId, response: Response) -> Result<(), RequestError> {
        self.respond_with_state(now, id, response, None)
    }

    /// [`respond`](Self::respond), with what the handle's
    /// [`export`](crate::KvHandle::export) returned for the request's
    /// keys right after it answered. With `replicas > 1` a push's answer
    /// needs it: the state goes down the range's chain to the other
    /// copies. Elsewhere it is ignored.
    pub fn respond_with_state(
        &mut self,
        now: Instant,
        id: ServerRequestId,
        response: Response,
        state: Option<KvList>,
    ) -> Result<(), RequestError> {
        self.advance_to(now);
        self.ensure_role(Role::Server, "respond")?;
        if self.phase == Phase::Terminated {
            // A stopped node answers nothing; the handle did nothing wrong.
            return Ok(());
        }
        let limits = self.limits();
        match self.responder.respond(id, &self.membership)? {
            Some(Then::Send) => crate::responder::send_kv_response(id, response, limits, &mut self.out),
            Some(then) => {
                let Some(cx) = serve_context!(self) else {
                    return Ok(());
                };
                self.serving.on_answer(id, then, response, state, cx, &mut self.out, &mut self.stats);
            }
            None => {
                if let (Some(state), Some(cx), true) = (state, serve_context!(self), self.serves_replicas()) {
                    self.serving.on_orphan_answer(id, state, cx, &mut self.out);
                }
            }
        }
        self.flush();
        Ok(())
    }

    /// The application read the chunk `ticket` of an
    /// [`Event::Export`] asked for: `state` is what
    /// [`KvHandle::export_range`](crate::KvHandle::export_range) returned
    /// (`None`: the handle cannot export; the read is tried again later).
    pub fn exported(&mut self, now: Instant, ticket: ExportTicket, state: Option<KvList>) -> Result<(), RequestError> {
        self.advance_to(now);
        self.ensure_role(Role::Server, "exported")?;
        if let (true, Some(cx)) = (self.serves_replicas(), serve_context!(self)) {
            self.serving.on_exported(ticket, state, cx, &mut self.out);
        }
        self.flush();
        Ok(())
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

    /// Why the node stopped, when an error stopped it: it was declared
    /// dead, replaced by a newer process, or its finalize failed. `None`
    /// while it runs, and after a clean finalize or the scheduler's
    /// `Terminate`. A shell reports it to a `finalize` that comes late.
    pub fn ended_by(&self) -> Option<&RequestError> {
        self.ended_by.as_ref()
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

    #[cfg(any(test, feature = "inspect"))]
    /// Requests this node still waits on (its own, as a client).
    pub fn requests_pending(&self) -> usize {
        self.requests.len()
    }

    /// Whether request `ts` of `customer` is still waiting for its outcome.
    /// Shells that record outcomes ask it to tell a pending request from
    /// one never issued.
    pub fn is_pending(&self, customer: CustomerId, ts: Timestamp) -> bool {
        self.requests.is_pending(customer, ts)
    }

    #[cfg(any(test, feature = "inspect"))]
    /// Server and simple requests this node still has to answer.
    pub fn responses_pending(&self) -> usize {
        self.responder.len()
    }

    #[cfg(any(test, feature = "inspect"))]
    /// What replication keeps on this node: on a server, answers owed,
    /// batches kept for a successor or held back, and messages waiting for
    /// a table or a read lease; on a worker, pulls held behind its pushes.
    /// Zero once a quiet cluster settled.
    pub fn replication_backlog(&self) -> usize {
        self.serving.backlog() + self.requests.held_pulls()
    }

    #[cfg(any(test, feature = "inspect"))]
    /// Frames sent and not yet acknowledged.
    pub fn frames_unacked(&self) -> usize {
        self.reliable.unacked_len()
    }

    #[cfg(any(test, feature = "inspect"))]
    /// Receiver incarnations this node numbers reliable frames for: one
    /// stream per peer at most, since a dead or replaced incarnation's
    /// stream is closed.
    pub fn send_streams(&self) -> usize {
        self.reliable.streams_len()
    }

    #[cfg(any(test, feature = "inspect"))]
    /// Sender incarnations this node keeps a duplicate filter for; each
    /// filter has a fixed size, so this bounds their memory.
    pub fn dedup_windows(&self) -> usize {
        self.reliable.windows_len()
    }

    /// The generation this node's next barrier over `group` will have. 0
    /// in a new cluster; for a replacement, where the survivors were when
    /// it registered, so a program that resumes can tell how many barriers
    /// the cluster passed without it.
    pub fn next_barrier_generation(&self, group: Group) -> u64 {
        self.barriers.next_generation(group)
    }

    #[cfg(any(test, feature = "inspect"))]
    /// Barriers entered and not ended.
    pub fn barriers_pending(&self) -> usize {
        self.barriers.len()
    }

    // ----- time, gates and routing -----

    /// Takes the `now` of an entry point. Time must never run backwards: a
    /// deadline computed from a later `now` would otherwise fire early or
    /// late, and traces would not compare.
    fn advance_to(&mut self, now: Instant) {
        assert!(now >= self.now, "time ran backwards: {now:?} after {:?}", self.now);
        self.now = now;
    }

    fn ensure_ready(&self) -> Result<(), RequestError> {
        match self.phase {
            Phase::Ready => Ok(()),
            Phase::Registering => Err(ApiMisuse::NotReady.into()),
            Phase::Terminated => Err(RequestError::Terminated),
        }
    }

    fn ensure_role(&self, role: Role, command: &'static str) -> Result<(), RequestError> {
        if self.config.role == role {
            Ok(())
        } else {
            Err(ApiMisuse::WrongRole { command, role: self.config.role }.into())
        }
    }

    /// What the scheduler's barrier counter needs of the configuration.
    fn rules(&self) -> Rules {
        Rules { policy: self.config.barrier_policy, recovery_timeout: self.config.recovery_timeout }
    }

    /// What the responder checks requests against.
    /// Whether this node serves replicated ranges now.
    fn serves_replicas(&self) -> bool {
        self.config.role == Role::Server && self.config.replicas > 1 && self.phase == Phase::Ready
    }

    fn limits(&self) -> Limits {
        Limits {
            range: self.rank.and_then(|rank| self.ranges.get(rank)),
            requests_pending_max: self.config.requests_pending_max,
            frame_len_max: self.config.frame_len_max,
        }
    }

    /// Whether a frame's sender may talk to us; counts the ones dropped.
    fn accepts_from(&mut self, header: &Header) -> bool {
        if self.phase == Phase::Terminated {
            return false;
        }
        if header.receiver != NodeId::UNASSIGNED && self.id != NodeId::UNASSIGNED {
            if header.receiver != self.id {
                self.stats.misrouted_drops += 1;
                return false;
            }
            if header.receiver_incarnation != self.incarnation {
                // Meant for a former process with our id: a resend that
                // outlived it, or a sender with an old table.
                self.stats.stale_receiver_drops += 1;
                return false;
            }
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
            // A former process asking to register is answered with the
            // table, so it learns it was replaced (a registration changes
            // nothing for a known id, and is never sequenced).
            Some(_) if header.kind == Kind::Register && header.seq == 0 && self.scheduler.is_some() => true,
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

    /// Hands one decoded message to the component it concerns.
    fn handle_message(&mut self, from: NodeId, to: NodeId, message: Message) {
        let now = self.now;
        match message {
            Message::Register(register) => self.on_register(from, register),
            Message::NodeTable(table) if from == NodeId::SCHEDULER => self.on_node_table(table, to),
            Message::Barrier { group, generation, finalize } => {
                let rules = self.rules();
                match self.scheduler.as_mut() {
                    Some(scheduler) => scheduler.arrivals.on_arrival(
                        now,
                        (from, group, generation, finalize),
                        &self.membership,
                        rules,
                        &mut self.out,
                        &mut self.stats,
                    ),
                    None => self.stats.unexpected_drops += 1,
                }
            }
            Message::BarrierRelease { group, generation, outcome } if from == NodeId::SCHEDULER => {
                self.on_barrier_release(BarrierTicket { group, generation }, outcome);
            }
            Message::Heartbeat { sent_at } => match self.scheduler.as_mut() {
                Some(scheduler) => {
                    let heartbeat = (from, sent_at);
                    scheduler.heard_at.on_heartbeat(now, heartbeat, &self.membership, &mut self.out, &mut self.stats);
                }
                None => self.stats.unexpected_drops += 1,
            },
            Message::HeartbeatAck { epoch, echo } if from == NodeId::SCHEDULER => {
                let sent_at = Instant::from_nanos(echo);
                if self.watch.on_heartbeat_ack(now, epoch, self.membership.epoch(), sent_at) {
                    // We missed a table; a repeated registration is answered with it.
                    let register = self.register_message();
                    self.out.send(NodeId::SCHEDULER, register);
                }
                if let (true, Some(cx)) = (self.serves_replicas(), serve_context!(self)) {
                    let held = self.serving.on_lease_renewed(cx, &mut self.out);
                    self.handle_held(held);
                }
            }
            Message::Terminate if from == NodeId::SCHEDULER => self.terminate(),
            Message::KvRequest(request) => {
                let incarnation = if self.config.role == Role::Server && self.phase == Phase::Ready {
                    crate::responder::requester(from, &self.membership, &mut self.stats)
                } else {
                    self.stats.unexpected_drops += 1;
                    None
                };
                let limits = self.limits();
                match (incarnation, serve_context!(self)) {
                    (Some(incarnation), Some(cx)) if self.config.replicas > 1 => self.serving.on_kv_request(
                        from,
                        incarnation,
                        request,
                        cx,
                        &mut self.responder,
                        &mut self.out,
                        &mut self.stats,
                    ),
                    (Some(incarnation), _) => {
                        let id = ServerRequestId {
                            from,
                            incarnation,
                            customer: CustomerId::new(request.app, request.customer),
                            ts: Timestamp(request.ts),
                            part: request.route.part,
                        };
                        let range = limits.range;
                        self.responder.on_kv_request(
                            id,
                            request,
                            range,
                            Then::Send,
                            limits,
                            &mut self.out,
                            &mut self.stats,
                        );
                    }
                    (None, _) => {}
                }
            }
            Message::KvResponse(response) => {
                let cluster =
                    Cluster { config: &self.config, ranges: &self.ranges, membership: &self.membership, me: self.id };
                self.requests.on_kv_response(from, response, cluster, &mut self.out, &mut self.stats);
            }
            Message::Replicate(_) | Message::Committed { .. } | Message::ResendFrom { .. }
                if !self.serves_replicas() || from.role() != Some(Role::Server) =>
            {
                self.stats.unexpected_drops += 1;
            }
            Message::Replicate(batch) => {
                if let Some(cx) = serve_context!(self) {
                    self.serving.on_replicate(from, batch, cx, &mut self.out, &mut self.stats);
                }
            }
            Message::Committed { range, seq } => {
                if let Some(cx) = serve_context!(self) {
                    self.serving.on_committed(from, range, seq, cx, &mut self.out, &mut self.stats);
                }
            }
            Message::ResendFrom { range, seq } => {
                if let Some(cx) = serve_context!(self) {
                    self.serving.on_resend_from(from, range, seq, cx, &mut self.out, &mut self.stats);
                }
            }
            Message::CaughtUp { range, source, learner } => self.on_caught_up(from, range, source, learner),
            Message::Transfer(_) | Message::Learned { .. }
                if !self.serves_replicas() || from.role() != Some(Role::Server) =>
            {
                self.stats.unexpected_drops += 1;
            }
            Message::Transfer(item) => {
                if let Some(cx) = serve_context!(self) {
                    self.serving.on_transfer(from, item, cx, &mut self.out, &mut self.stats);
                }
            }
            Message::Learned { range, start, stream, item, resend } => {
                if let Some(cx) = serve_context!(self) {
                    let report = (range, start, stream);
                    self.serving.on_learned(from, report, item, resend, cx, &mut self.out, &mut self.stats);
                }
            }

            Message::SimpleRequest(request) => {
                let incarnation = if from == self.id {
                    Some(self.incarnation)
                } else if from == NodeId::SCHEDULER {
                    Some(Incarnation(0))
                } else {
                    self.membership.get(from).map(|e| e.incarnation)
                };
                match incarnation {
                    // Declared dead, as for KV requests: nobody waits for
                    // the answer, which would open a stream to a process
                    // that is gone.
                    Some(_) if self.membership.get(from).is_some_and(|e| !e.alive) => {
                        self.stats.dead_sender_drops += 1;
                    }
                    Some(incarnation) => {
                        let limits = self.limits();
                        self.responder.on_simple_request(
                            from,
                            incarnation,
                            request,
                            limits,
                            &mut self.out,
                            &mut self.stats,
                        );
                    }
                    None => self.stats.unknown_sender_drops += 1,
                }
            }
            Message::SimpleResponse(response) => {
                self.requests.on_simple_response(from, response, &mut self.out, &mut self.stats);
            }
            Message::Ack { .. }
            | Message::NodeTable(_)
            | Message::BarrierRelease { .. }
            | Message::HeartbeatAck { .. }
            | Message::Terminate => {
                self.stats.unexpected_drops += 1;
            }
        }
        self.flush();
    }

    /// Sends what the components wrote to the outbox, in order, and stops
    /// resending the frames of requests that have their outcome.
    fn flush(&mut self) {
        let cluster = Cluster { config: &self.config, ranges: &self.ranges, membership: &self.membership, me: self.id };
        self.requests.pump(cluster, &mut self.out);
        while let Some((dest, message)) = self.out.pop_message() {
            match dest {
                Dest::Node(to) if to == self.id => self.loopback.push_back(message),
                Dest::Node(to) => {
                    // Components send only to ids the table holds; a
                    // forged table that left one out drops the message.
                    if let Some(addr) = self.addr_of(to) {
                        self.transmit(to, addr, message);
                    }
                }
                Dest::Addr(to, addr) => self.transmit(to, addr, message),
            }
        }
        // After the frames: a request can settle after one of its frames
        // was queued (a part sent again, then another part failing it),
        // and that frame must not be resent either.
        for (customer, ts) in self.out.take_settled() {
            self.reliable.forget_owner(customer, ts);
        }
    }

    /// Where `to` listens: the scheduler's configured address, or what the
    /// table says.
    fn addr_of(&self, to: NodeId) -> Option<SocketAddr> {
        if to == NodeId::SCHEDULER {
            Some(self.config.scheduler_addr)
        } else {
            self.membership.get(to).map(|entry| entry.addr)
        }
    }

    /// Numbers, encodes and queues one frame, after the receipts waiting
    /// for `to`, which go in the same write.
    fn transmit(&mut self, to: NodeId, addr: SocketAddr, message: Message) {
        if !matches!(message, Message::Ack { .. }) {
            if let Some(seqs) = self.receipts.take_for(to) {
                self.send_receipts(to, seqs);
            }
        }
        // The scheduler is never replaced; other receivers are as the
        // table names them (unknown before they register).
        let peer =
            if to == NodeId::SCHEDULER { Some(Incarnation(0)) } else { self.membership.get(to).map(|e| e.incarnation) };
        let seq = match peer.filter(|_| self.is_reliable(&message)) {
            Some(incarnation) => self.reliable.next_seq(to, incarnation),
            None => 0,
        };
        let receiver_incarnation = peer.unwrap_or(Incarnation(0));
        let envelope =
            Envelope { sender: self.id, incarnation: self.incarnation, receiver: to, receiver_incarnation, seq };
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
            self.reliable.track(self.now, seq, transmit.clone(), owner, self.config.resend_timeout);
        }
        self.transmits.push_back(transmit);
    }

    /// Whether `message` must be delivered reliably (numbered, acked,
    /// resent); not ACKs, heartbeats, registration and tables, which
    /// repeat anyway.
    fn is_reliable(&self, message: &Message) -> bool {
        if !self.config.resend || self.id == NodeId::UNASSIGNED {
            return false;
        }
        match message {
            Message::Register(_)
            | Message::NodeTable(_)
            | Message::Heartbeat { .. }
            | Message::HeartbeatAck { .. }
            | Message::Ack { .. } => false,
            Message::Barrier { .. }
            | Message::BarrierRelease { .. }
            | Message::Terminate
            | Message::KvRequest(_)
            | Message::KvResponse(_)
            | Message::SimpleRequest(_)
            | Message::SimpleResponse(_)
            | Message::Replicate(_)
            | Message::Committed { .. }
            | Message::ResendFrom { .. }
            | Message::Transfer(_)
            | Message::Learned { .. }
            | Message::CaughtUp { .. } => true,
        }
    }

    /// Queues a receipt. It leaves with the next frame to `to`, or with
    /// the others for `to` in one frame once the oldest has waited
    /// [`receipts::delay`]; at once when `now` (a duplicate: its sender is
    /// resending already).
    fn send_ack(&mut self, to: NodeId, seq: u64, now: bool) {
        let due = if now { self.now } else { self.now + receipts::delay(self.config.resend_timeout) };
        self.receipts.add(to, seq, due);
    }

    /// Queues as ACK frames the receipts due by `now`.
    fn send_receipts_due(&mut self, now: Instant) {
        for (to, seqs) in self.receipts.take_due(now) {
            self.send_receipts(to, seqs);
        }
    }

    /// Queues receipts for `to` as ACK frames.
    fn send_receipts(&mut self, to: NodeId, seqs: Vec<u64>) {
        let Some(addr) = self.addr_of(to) else {
            return;
        };
        for chunk in seqs.chunks(crate::wire::message::ACKS_PER_FRAME_MAX) {
            self.transmit(to, addr, Message::Ack { seqs: chunk.to_vec() });
        }
    }

    /// Resends what is due; fails requests whose frames ran out of attempts.
    fn expire_resends(&mut self) {
        let config = &self.config;
        let expired = self.reliable.expire(self.now, config.resend_timeout, config.resend_attempts_max, &mut self.rng);
        for transmit in expired.resend {
            self.stats.resends += 1;
            self.stats.frames_out += 1;
            self.stats.bytes_out += transmit.frame.len() as u64;
            self.transmits.push_back(transmit);
        }
        for (_, owner) in expired.failed {
            if let Some((customer, ts)) = owner {
                self.requests.fail(customer, ts, RequestError::ResendExhausted, &mut self.out);
            }
        }
        self.flush();
    }

    fn drain_loopback(&mut self) {
        // Bounded: each loopback message is handled once and handlers queue
        // at most a few more; the cap guards against a protocol bug looping.
        let mut budget = 1 << 16;
        while let Some(message) = self.loopback.pop_front() {
            assert!(budget > 0, "loopback did not settle: protocol loop");
            budget -= 1;
            let from = self.id;
            self.handle_message(from, from, message);
        }
    }

    // ----- registration -----

    fn register_message(&self) -> Message {
        Message::Register(RegisterMsg {
            role: self.config.role,
            listen_addr: self.config.listen_addr,
            instance: self.instance,
        })
    }

    fn send_register(&mut self) {
        let register = self.register_message();
        self.out.send_to_addr(NodeId::SCHEDULER, self.config.scheduler_addr, register);
    }

    /// Retries are spread by a seeded jitter of up to a quarter interval,
    /// so nodes started together do not register in lockstep forever. The
    /// last one fires at the deadline, which ends the attempt.
    fn arm_register_retry(&mut self) {
        let interval = self.config.register_retry_interval;
        let jitter = self.rng.jitter(interval / 4);
        let at = (self.now + interval + jitter).min(self.register_deadline);
        self.timers.set(Timer::RegisterRetry, at);
    }

    /// Scheduler: a node registers, or a replacement asks for a dead
    /// node's place.
    fn on_register(&mut self, from: NodeId, register: RegisterMsg) {
        let now = self.now;
        let Some(scheduler) = self.scheduler.as_mut() else {
            self.stats.unexpected_drops += 1;
            return;
        };
        if register.role == Role::Scheduler {
            self.stats.unexpected_drops += 1;
            return;
        }
        let registered = if self.phase == Phase::Registering {
            let counts = (self.config.num_servers, self.config.num_workers);
            scheduler.registry.on_register_forming(register, counts, &mut self.membership)
        } else {
            let arrivals = &scheduler.arrivals;
            scheduler.registry.on_register_running(from, register, &mut self.membership, arrivals, &mut self.out)
        };
        match registered {
            Registered::Waiting | Registered::Repeated => {}
            Registered::Refused => self.stats.unexpected_drops += 1,
            Registered::Formed => {
                for node in self.membership.iter() {
                    scheduler.heard_at.heard(node.id, now);
                }
                let epoch = self.membership.epoch();
                *self.membership.chains_mut() = Chains::initial(&self.ranges, self.config.replicas, epoch);
                self.phase = Phase::Ready;
                self.out.event(Event::ClusterReady);
                registry::broadcast_table(&self.membership, &scheduler.arrivals, &mut self.out);
                self.start_liveness();
                self.timers.stop(Timer::RegisterRetry);
            }
            Registered::Replaced { entry, predecessor } => {
                debug_assert_eq!(entry.incarnation, predecessor.next());
                scheduler.heard_at.heard(entry.id, now);
                // The fan-out first: the replacement's table says where
                // the survivors' barriers are once its predecessor's
                // arrivals no longer count.
                self.on_peer_replaced(entry.id, entry.incarnation);
                if let Some(scheduler) = self.scheduler.as_ref() {
                    registry::broadcast_table(&self.membership, &scheduler.arrivals, &mut self.out);
                }
            }
        }
    }

    /// Every other role: the scheduler's table, which gives us our id the
    /// first time and tells of deaths and replacements afterwards.
    fn on_node_table(&mut self, table: NodeTableMsg, to: NodeId) {
        if self.scheduler.is_some() {
            return;
        }
        // Our entry is the one with our process instance *and* our role: an
        // id of another role would make every id-derived decision wrong.
        let role = self.config.role;
        // Only a table addressed to that id gives it: one addressed to no
        // id answers a registration the scheduler could not place (a
        // former process at this address, say) and lacks what the node
        // needs to start with, such as its barrier generations.
        let mine = table
            .nodes
            .iter()
            .find(|n| n.instance == self.instance && n.id.role() == Some(role) && n.id == to)
            .copied();
        if self.phase == Phase::Registering && mine.is_none() {
            // A table that does not place us teaches us nothing yet; the
            // one that does brings everything.
            return;
        }
        let fits = if table.chains.is_empty() {
            // The scheduler always sends its replica table: one without
            // (a forged table) must not take away the one we hold.
            self.membership.chains().is_empty()
        } else {
            // Another cluster's table, or a corrupt one, would send keys
            // to servers that do not hold them.
            self.fits_our_cluster(&table.chains)
        };
        if !fits {
            self.stats.unexpected_drops += 1;
            return;
        }
        let old_chains = (self.config.replicas > 1).then(|| self.membership.chains().clone());
        let Some(changes) = self.membership.apply(table.epoch, table.nodes, table.chains) else {
            return;
        };
        self.watch.heard(self.now);
        if let (Phase::Registering, Some(mine)) = (self.phase, mine) {
            if !mine.alive {
                // Placed, then declared dead before this table arrived: a
                // new process will take the id; this one never starts.
                self.terminate_on(RequestError::PeerDead(mine.id));
                return;
            }
            self.id = mine.id;
            self.incarnation = mine.incarnation;
            self.rank = Some(mine.id.rank());
            self.phase = Phase::Ready;
            self.barriers.start_at(&table.generations);
            self.timers.stop(Timer::RegisterRetry);
            self.out.event(Event::Registered { id: mine.id, rank: mine.id.rank(), incarnation: mine.incarnation });
            self.out.event(Event::ClusterReady);
            self.start_liveness();
            self.on_chains_changed(old_chains);
            return;
        }
        for change in changes {
            match change {
                Change::Recovered(id, incarnation) if id == self.id => {
                    // Declared dead and replaced: a newer process does this
                    // one's work now, and this one must not touch anything.
                    self.terminate_on(RequestError::Replaced { incarnation });
                    break;
                }
                Change::Died(id, incarnation) if id == self.id => {
                    // The scheduler gave up on us (we were cut off or
                    // stalled): the others dropped our work and a new
                    // process may take our id, so this one stops.
                    self.reliable.forget_peer(id, incarnation);
                    self.out.event(Event::NodeDead { id, incarnation });
                    self.terminate_on(RequestError::PeerDead(id));
                    break;
                }
                Change::Died(id, incarnation) => self.on_peer_died(id, incarnation),
                // The table that reported the death may have been missed or
                // overtaken: the replacement is news of the death as well.
                Change::Recovered(id, incarnation) => self.on_peer_replaced(id, incarnation),
            }
        }
        self.on_chains_changed(old_chains);
    }

    /// A table was adopted (`old`: the replica table before it, when
    /// ranges are replicated): servers take their new places in the
    /// chains and handle what waited for this table; workers send parts
    /// again whose server left a chain.
    fn on_chains_changed(&mut self, old: Option<Chains>) {
        let Some(old) = old else {
            return;
        };
        if self.phase != Phase::Ready {
            return;
        }
        match self.config.role {
            Role::Server => {
                let Some(cx) = serve_context!(self) else {
                    return;
                };
                let ready = self.serving.on_table(&old, cx, &mut self.out);
                self.flush();
                self.handle_held(ready);
            }
            Role::Worker => {
                let cluster =
                    Cluster { config: &self.config, ranges: &self.ranges, membership: &self.membership, me: self.id };
                self.requests.on_table(cluster, &mut self.out);
            }
            Role::Scheduler => {}
        }
        self.flush();
    }

    /// Whether a replica table splits the keys as our configuration does,
    /// into as many copies.
    fn fits_our_cluster(&self, chains: &Chains) -> bool {
        chains.replicas() == self.config.replicas
            && chains.as_slice().iter().map(|c| c.range()).eq(self.ranges.as_slice().iter().copied())
    }

    /// Handles messages the serving component kept for later, unless
    /// their sender's process was replaced or declared dead meanwhile.
    fn handle_held(&mut self, held: Vec<serve::Held>) {
        for (from, incarnation, message) in held {
            let current = self.membership.get(from).is_some_and(|e| e.alive && e.incarnation == incarnation);
            if current {
                self.handle_message(from, self.id, message);
            } else {
                self.stats.dead_sender_drops += 1;
            }
        }
    }

    /// Server `from`, the tail of range `range` since `source`, reports
    /// that process `learner` of the range's learner caught up: it becomes
    /// the tail, unless the chain changed since (the reporter may not be
    /// its tail any more) or the learner is not that process any more.
    fn on_caught_up(&mut self, from: NodeId, range: u32, source: u64, learner: Incarnation) {
        let Some(scheduler) = self.scheduler.as_mut() else {
            self.stats.unexpected_drops += 1;
            return;
        };
        if from.role() != Some(Role::Server) {
            self.stats.unexpected_drops += 1;
            return;
        }
        let chain = self.membership.chains().as_slice().get(range as usize);
        let Some(rank) = chain
            .filter(|c| c.changed_at() == source && c.tail() == Some(from.rank()))
            .and_then(|c| c.learner())
            .filter(|&l| self.membership.get(NodeId::server(l)).is_some_and(|e| e.alive && e.incarnation == learner))
        else {
            return;
        };
        let epoch = self.membership.epoch() + 1;
        let (chains, alive) = self.membership.chains_and_live_servers();
        if placement::on_caught_up(chains, range as usize, rank, epoch, alive) {
            self.membership.bump();
            registry::broadcast_table(&self.membership, &scheduler.arrivals, &mut self.out);
        }
    }

    // ----- membership changes, fanned out -----

    /// Incarnation `incarnation` of `id` was declared dead: every component
    /// forgets what it kept for it. The one place for this, whether the
    /// scheduler declared the death or a table told of it.
    fn on_peer_died(&mut self, id: NodeId, incarnation: Incarnation) {
        debug_assert_ne!(id, self.id, "our own death ends our work instead");
        self.out.event(Event::NodeDead { id, incarnation });
        self.reliable.forget_peer(id, incarnation);
        self.requests.on_peer_dead(id, &mut self.out);
        self.responder.forget_from(id);
        self.serving.forget_worker(id, incarnation);
        let rules = self.rules();
        if let Some(scheduler) = self.scheduler.as_mut() {
            scheduler.arrivals.on_member_died(self.now, id, &self.membership, rules, &mut self.out);
            if id.role() == Some(Role::Server) {
                let epoch = self.membership.epoch();
                let (chains, alive) = self.membership.chains_and_live_servers();
                placement::on_server_died(chains, id.rank(), epoch, alive);
            }
        }
        // Before the next change moves the table on: what a component
        // queued goes out on the stream it was meant for.
        self.flush();
    }

    /// A new process holds `id` as `incarnation`: what was kept for the
    /// earlier ones is gone, and waits on them can never be answered.
    fn on_peer_replaced(&mut self, id: NodeId, incarnation: Incarnation) {
        self.out.event(Event::NodeRecovered { id, incarnation });
        self.reliable.forget_peer(id, Incarnation(incarnation.0.saturating_sub(1)));
        self.requests.on_peer_dead(id, &mut self.out);
        self.responder.forget_from(id);
        self.serving.forget_worker(id, Incarnation(incarnation.0.saturating_sub(1)));
        let rules = self.rules();
        if let Some(scheduler) = self.scheduler.as_mut() {
            scheduler.arrivals.on_member_recovered(self.now, id, &self.membership, rules);
            if id.role() == Some(Role::Server) {
                let epoch = self.membership.epoch();
                let (chains, alive) = self.membership.chains_and_live_servers();
                placement::on_server_restarted(chains, id.rank(), epoch, alive);
            }
        }
        self.flush();
    }

    // ----- liveness -----

    /// Arms the heartbeat timers once the node is part of a cluster.
    fn start_liveness(&mut self) {
        let now = self.now;
        self.watch.heard(now);
        if !self.config.heartbeats {
            return;
        }
        if self.scheduler.is_none() {
            self.watch.beat(self.now, &mut self.out);
            self.timers.set(Timer::Heartbeat, now + self.config.heartbeat_interval);
        }
        self.timers.set(Timer::LivenessScan, now + self.config.heartbeat_interval);
    }

    fn on_heartbeat_timer(&mut self) {
        // Armed only once ready; a terminated node fires no timers.
        debug_assert_eq!(self.phase, Phase::Ready);
        self.watch.beat(self.now, &mut self.out);
        self.timers.set(Timer::Heartbeat, self.now + self.config.heartbeat_interval);
        if self.serves_replicas() {
            let stall = self.config.resend_timeout.max(self.config.heartbeat_interval);
            if let Some(cx) = serve_context!(self) {
                self.serving.on_tick(stall, cx, &mut self.out);
            }
        }
    }

    /// The scheduler looks for silent nodes; every other node checks the
    /// scheduler is still there.
    fn on_liveness_scan(&mut self) {
        // Armed only once ready and with heartbeats on; a terminated node
        // fires no timers.
        debug_assert!(self.phase == Phase::Ready && self.config.heartbeats);
        let now = self.now;
        self.timers.set(Timer::LivenessScan, now + self.config.heartbeat_interval);
        let timeout = self.config.heartbeat_timeout;
        let Some(scheduler) = self.scheduler.as_ref() else {
            if self.watch.is_lost(now, timeout) {
                self.fail_all_pending(RequestError::SchedulerLost);
                // Ask again: a scheduler that declared us dead and gave
                // our id away answers with a table that says so.
                self.send_register();
            }
            return;
        };
        let silent = scheduler.heard_at.silent(now, timeout, &self.membership);
        if silent.is_empty() {
            return;
        }
        for mut entry in silent {
            entry.alive = false;
            self.membership.update(entry);
            self.on_peer_died(entry.id, entry.incarnation);
        }
        if let Some(scheduler) = self.scheduler.as_ref() {
            registry::broadcast_table(&self.membership, &scheduler.arrivals, &mut self.out);
        }
    }

    // ----- barriers and termination -----

    fn enter_barrier(&mut self, now: Instant, group: Group, purpose: Purpose) -> Result<BarrierTicket, RequestError> {
        self.advance_to(now);
        self.ensure_ready()?;
        let role = self.config.role;
        if !group.contains(role) {
            return Err(ApiMisuse::NotInGroup { group, role }.into());
        }
        let ticket = self.barriers.enter(group, purpose, &mut self.out)?;
        self.flush();
        self.drain_loopback();
        Ok(ticket)
    }

    fn on_barrier_release(&mut self, ticket: BarrierTicket, outcome: BarrierOutcome) {
        let released = !matches!(outcome, BarrierOutcome::MemberDied(_));
        let Some(purpose) = self.barriers.on_release(ticket, outcome, &mut self.out, &mut self.stats) else {
            return;
        };
        if purpose == Purpose::Finalize {
            if self.scheduler.is_some() && released {
                for id in self.membership.alive(Group::ALL) {
                    self.out.send(id, Message::Terminate);
                }
            }
            self.terminate();
        }
    }

    /// Fails every request and barrier this node waits on. A finalize
    /// among them cannot finish its handshake, so the node stops rather
    /// than wait for a barrier that will not come.
    fn fail_all_pending(&mut self, error: RequestError) {
        self.requests.fail_all(&error, &mut self.out);
        if self.barriers.fail_all(&error, &mut self.out) {
            self.ended_by.get_or_insert(error);
            self.terminate();
        }
    }

    /// Stops the node because of `error`: its pending work fails with it,
    /// and [`ended_by`](Self::ended_by) keeps it for whoever asks later.
    fn terminate_on(&mut self, error: RequestError) {
        self.ended_by.get_or_insert(error.clone());
        self.fail_all_pending(error);
        self.terminate();
    }

    /// Stops the node: pending work fails, no timers, no more input.
    fn terminate(&mut self) {
        if self.phase == Phase::Terminated {
            return;
        }
        // The phase changes first, so failing a finalize barrier below
        // does not terminate a second time.
        self.phase = Phase::Terminated;
        // No timer runs from now on: what was received is receipted now.
        self.send_receipts_due(Instant::FAR_FUTURE);
        self.responder.forget_all();
        self.serving.clear();
        self.fail_all_pending(RequestError::Terminated);
        self.out.event(Event::Terminated);
    }
}
