//! Safety invariants, checked after every simulator event.
//!
//! The checker is told what happened, one observation at a time (a request
//! was issued, a server applied a push, a barrier ended, a process
//! crashed), and keeps a reference model next to the cluster. It never
//! looks at the simulator's internals, so tests can hand it made-up
//! histories and see that each kind of bad history is reported.
//!
//! What it holds the cluster to:
//!
//! * **Identity**: no two live processes share `(id, incarnation)`; every
//!   table at one epoch is the same everywhere and names every id of the
//!   cluster; every node's key ranges are the reference partition.
//! * **Requests**: timestamps increase per process and customer; every
//!   completion names a pending request; none completes twice.
//! * **Aggregation**: a store applies a push at most once and only the
//!   values the worker sent; an acknowledged push was applied for every one
//!   of its keys; a store's contents ([`KvStore::get`]) equal the sum of
//!   what it applied. A completed pull agrees with the model at some moment
//!   between issue and completion: for a store that served it, the value of
//!   each key lies between the sum of that store's pushes acknowledged
//!   before the pull was issued and the sum of all pushes it applied by
//!   completion. Failed or unanswered pushes may count or not. Values are
//!   positive, so those sums bound every state the store went through; a
//!   store that restarted empty is a different store, which is what keeps
//!   the lower bound sound when a server loses its data. The model keeps
//!   exact sums; whether a value fits one is [`ValueMode::fits`]'s call:
//!   exactly for integer values, within f32 rounding for fractions.
//! * **Barriers**: a release means every member of the group entered the
//!   barrier, or was declared dead by the scheduler while it waited.
//! * **Bounded waiting**: every request ends within `request_timeout` (plus
//!   pauses of its own node); a request or barrier that depends on a
//!   crashed node ends within the failure-detection bound
//!   ([`Config::failure_detection_bound`]) plus `2 × delay_max` of the
//!   crash, extended past any pause, clog, partition or reset that touches
//!   the requester, the crashed node or the scheduler (those can
//!   legitimately hide a death for a while).
//!
//! Scenario tests may also drive nodes by hand and forge frames
//! ([`Sim::with_node`](crate::Sim::with_node),
//! [`Sim::inject_frame`](crate::Sim::inject_frame)); what they do that way
//! is outside the model, and the simulator holds only what the checker was
//! told about to it.
//!
//! [`Config::failure_detection_bound`]: pslite_core::Config::failure_detection_bound

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use pslite_core::wire::NodeEntry;
use pslite_core::{
    BarrierPolicy, BarrierTicket, Chains, CustomerId, Duration, Group, Incarnation, Instant, KeyRange, KvList, KvStore,
    Mismatch, NodeId, Rank, RequestError, Role, ServerRanges, ServerRequestId, Timestamp,
};

use crate::queue::Slot;
use crate::values::{Sum, ValueMode};

mod deadlines;
mod placement;
pub mod wire;

/// A broken invariant, in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// What went wrong, naming the invariant first.
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)
    }
}

fn violation<T>(what: String) -> Result<T, Violation> {
    Err(Violation { what })
}

/// The result of one check.
pub type Check = Result<(), Violation>;

/// A request, named as the server sees it: the requesting process's id and
/// incarnation (unique over a run: the scheduler never hands one out
/// twice), its customer and timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestKey {
    /// Requesting node.
    pub node: NodeId,
    /// Its incarnation.
    pub incarnation: Incarnation,
    /// Customer.
    pub customer: CustomerId,
    /// Timestamp.
    pub ts: Timestamp,
}

impl From<ServerRequestId> for RequestKey {
    fn from(id: ServerRequestId) -> Self {
        Self { node: id.from, incarnation: id.incarnation, customer: id.customer, ts: id.ts }
    }
}

impl fmt::Display for RequestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request {}@{} app {} customer {} ts {}",
            self.node, self.incarnation.0, self.customer.app, self.customer.customer, self.ts.0
        )
    }
}

/// One server process's store: the slot and which process in it. A
/// restarted server starts empty, so it is a new store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StoreId {
    /// The slot.
    pub slot: Slot,
    /// The process in the slot (0 for the first, +1 per restart).
    pub life: u32,
}

impl fmt::Display for StoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "store of slot {} life {}", self.slot, self.life)
    }
}

/// What a request asked for.
#[derive(Clone, Debug, PartialEq)]
pub enum Issued {
    /// A push of one value per key.
    Push {
        /// Keys, ascending.
        keys: Vec<u64>,
        /// Values, positive, of the checker's [`ValueMode`].
        values: Vec<f32>,
    },
    /// A pull.
    Pull {
        /// Keys, ascending.
        keys: Vec<u64>,
    },
    /// A push, then a pull of the same keys.
    PushPull {
        /// Keys, ascending.
        keys: Vec<u64>,
        /// Values, positive, of the checker's [`ValueMode`].
        values: Vec<f32>,
    },
    /// A SimpleApp request.
    Simple,
}

impl Issued {
    fn keys(&self) -> &[u64] {
        match self {
            Self::Push { keys, .. } | Self::Pull { keys } | Self::PushPull { keys, .. } => keys,
            Self::Simple => &[],
        }
    }

    fn pushed(&self, key: u64) -> Option<f32> {
        match self {
            Self::Push { keys, values } | Self::PushPull { keys, values } => {
                keys.binary_search(&key).ok().map(|i| values[i])
            }
            Self::Pull { .. } | Self::Simple => None,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Push { .. } => "push",
            Self::Pull { .. } => "pull",
            Self::PushPull { .. } => "push_pull",
            Self::Simple => "simple request",
        }
    }
}

/// How a request ended, as its node reported it.
#[derive(Clone, Copy, Debug)]
pub enum Completion<'a> {
    /// `RequestDone`.
    Done,
    /// `PullDone` with one value per key.
    Pulled {
        /// Keys.
        keys: &'a [u64],
        /// Values.
        values: &'a [f32],
    },
    /// `SimpleDone`.
    SimpleDone,
    /// `RequestFailed`.
    Failed(&'a RequestError),
}

/// The time limits the checker enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Longest life of any request, slack included.
    pub request: Duration,
    /// Longest wait on a crashed node, from the crash (the failure-detection
    /// bound, two network delays and slack).
    pub crash: Duration,
    /// Whether crash bounds are checked (not when frames can be lost: then
    /// a death announcement can be lost too).
    pub crash_checked: bool,
    /// The first resend delay of a frame, jitter included: what a frame
    /// lost on a cut link waits at least before it comes again.
    pub resend: Duration,
    /// How long a barrier that waits for recovery (a finalize, or any
    /// barrier under `WaitForRecovery`) waits for a dead member's
    /// replacement before it goes on without it.
    pub recovery: Duration,
    /// What ordinary barriers do on a death.
    pub barrier_policy: BarrierPolicy,
    /// How soon a node that lost the scheduler fails new work: it fails
    /// pending work at every liveness scan (heartbeat interval + slack).
    /// A node the scheduler declared dead hears no news any more, so this,
    /// not the crash bound, limits its waits.
    pub lost_scan: Duration,
    /// How long after being declared dead a node has surely lost the
    /// scheduler (the failure-detection bound, one more interval for its
    /// own scan, and slack).
    pub lost_after: Duration,
    /// The scheduler's slot.
    pub scheduler_slot: Slot,
}

/// Something that can legitimately hold up failure detection or the news
/// of it: a pause of one node, or a clog, cut or reset of one link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Disturbance {
    /// The node paused, or one end of the link.
    pub slot: Slot,
    /// The other end of the link; `None` for a pause.
    pub peer: Option<Slot>,
    /// When it began.
    pub from: Instant,
    /// When it ends.
    pub until: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Pending,
    Acked(Instant),
    Failed(Instant),
    /// The requesting process crashed first: nobody will know.
    Lost,
}

#[derive(Clone, Copy, Debug)]
struct CrashBound {
    crashed_at: Instant,
    crashed_slot: Slot,
}

#[derive(Debug)]
struct RequestRecord {
    slot: Slot,
    issued_at: Instant,
    issued: Issued,
    targets: Vec<NodeId>,
    fate: Fate,
    /// Stores that applied it, with the keys each applied.
    applied: Vec<(StoreId, Vec<u64>)>,
    /// Stores that served a part, with the part's keys.
    served: Vec<(StoreId, KeyRange)>,
    /// Servers that answered it: a crash of one of them no longer holds
    /// the request up.
    answered: Vec<NodeId>,
    crash: Option<CrashBound>,
    /// Servers that answered it with an answer that does not fit, and how.
    corrupted: Vec<(NodeId, Mismatch)>,
    /// A part of it reached a server that dropped it (not ready, or not
    /// knowing the sender yet): only a resend brings it again, if any, and
    /// only the request timeout bounds the wait.
    part_lost: bool,
}

#[derive(Debug)]
struct BarrierRecord {
    slot: Slot,
    entered_at: Instant,
    crash: Option<CrashBound>,
    /// A finalize: it waits for recovery whatever the policy.
    finalize: bool,
}

impl BarrierRecord {
    /// Whether a dead member's absence holds this barrier up to the
    /// recovery timeout (rather than ending it at the death).
    fn waits_for_recovery(&self, policy: BarrierPolicy) -> bool {
        self.finalize || policy == BarrierPolicy::WaitForRecovery
    }

    /// Whether a member's arrival still counts after it died.
    fn keeps_arrivals(&self, policy: BarrierPolicy) -> bool {
        self.finalize || policy != BarrierPolicy::FailOnDeath
    }
}

/// One member's latest entry into a barrier: by which incarnation, when,
/// and from which slot.
type Entry = (Incarnation, Instant, Slot);

/// Where one member stands with a barrier, for its deadline.
#[derive(Clone, Copy, Debug)]
enum MemberState {
    /// Its current incarnation arrived at this moment, from this slot.
    Arrived(Instant, Slot),
    /// It crashed, and is not declared dead yet.
    Crashed(CrashBound),
    /// Declared dead at this moment, and not replaced.
    Dead(Instant),
    /// Alive and not arrived: the barrier waits for it, however long.
    Awaited,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Waiter {
    Request(RequestKey),
    Barrier(NodeId, Incarnation, BarrierTicket),
}

#[derive(Clone, Copy, Debug)]
struct Down {
    slot: Slot,
    incarnation: Incarnation,
    crashed_at: Instant,
}

#[derive(Clone, Copy, Debug)]
struct Contribution {
    request: RequestKey,
    /// Exactly what the worker pushed.
    value: f32,
}

/// A chunk's app, keys and values' bits.
type ChunkContent = (u32, Vec<u64>, Vec<u8>);

fn chunk_content(app: u32, state: &KvList) -> ChunkContent {
    (app, state.keys.iter().collect(), state.values.as_bytes().to_vec())
}

/// The reference model and the invariants over it.
#[derive(Debug)]
pub struct Checker {
    bounds: Bounds,
    ranges: ServerRanges,
    servers: u32,
    workers: u32,
    replicas: u8,
    requests: BTreeMap<RequestKey, RequestRecord>,
    last_ts: BTreeMap<(NodeId, Incarnation, CustomerId), Timestamp>,
    /// What each store applied, per app and key.
    contributions: BTreeMap<(StoreId, u32, u64), Vec<Contribution>>,
    /// Per range, when a table last showed it with no member: pushes
    /// issued before are gone with every copy, and a copy made since (a
    /// learner's, from the range started afresh) does not hold them.
    lost_at: BTreeMap<usize, Instant>,
    /// What each chunk read for a transfer held, per key, by the chunk's
    /// app and content (the learner's install names nothing else); the
    /// latest read of equal content last.
    chunks: BTreeMap<ChunkContent, Vec<Vec<Vec<Contribution>>>>,
    /// The server id each store held when it first applied or served.
    store_owner: BTreeMap<StoreId, NodeId>,
    /// Per barrier, who entered it: each id's latest incarnation to do
    /// so, and when.
    barriers_entered: BTreeMap<(Group, u64), BTreeMap<NodeId, Entry>>,
    /// Processes that entered their final barrier, with when and from
    /// where: no ordinary barrier waits for them any more.
    finalizing: BTreeMap<(NodeId, Incarnation), (Instant, Slot)>,
    barriers_pending: BTreeMap<(NodeId, Incarnation, BarrierTicket), BarrierRecord>,
    /// Per id, the intervals during which the scheduler held it dead.
    dead: BTreeMap<NodeId, Vec<(Instant, Option<Instant>)>>,
    /// Crashed processes the scheduler has not declared dead yet.
    down: BTreeMap<NodeId, Down>,
    /// Incarnations the scheduler declared dead.
    declared_dead: BTreeMap<(NodeId, Incarnation), Instant>,
    /// The latest incarnation of each id the scheduler handed out.
    incarnations: BTreeMap<NodeId, Incarnation>,
    disturbances: Vec<Disturbance>,
    deadlines: BTreeSet<(Instant, Waiter)>,
    tables: BTreeMap<u64, Vec<NodeEntry>>,
    placement: placement::Placement,
    /// Each server id's running process: its store, and when it started.
    live_stores: BTreeMap<NodeId, (StoreId, Instant, Incarnation)>,
    /// A test forged frames: members may have lied about batches and
    /// commits, so what copies hold is no longer held to the model.
    forged: bool,
    /// What workers push, and so how a value is held to a sum.
    values: ValueMode,
}

/// Most disturbances remembered; the oldest are forgotten beyond it (only
/// waits that started before them could need them).
const DISTURBANCES_MAX: usize = 4096;

impl Checker {
    /// A checker for a cluster of `servers` servers and `workers` workers
    /// partitioned by `ranges`, each range kept `replicas` times.
    pub fn new(bounds: Bounds, ranges: ServerRanges, servers: u32, workers: u32, replicas: u8) -> Self {
        assert_eq!(ranges.len(), servers as usize, "one range per server");
        Self {
            placement: placement::Placement::new(replicas, ranges.clone()),
            bounds,
            ranges,
            servers,
            workers,
            replicas,
            requests: BTreeMap::new(),
            last_ts: BTreeMap::new(),
            contributions: BTreeMap::new(),
            lost_at: BTreeMap::new(),
            chunks: BTreeMap::new(),
            store_owner: BTreeMap::new(),
            barriers_entered: BTreeMap::new(),
            finalizing: BTreeMap::new(),
            barriers_pending: BTreeMap::new(),
            dead: BTreeMap::new(),
            down: BTreeMap::new(),
            declared_dead: BTreeMap::new(),
            incarnations: BTreeMap::new(),
            disturbances: Vec::new(),
            deadlines: BTreeSet::new(),
            tables: BTreeMap::new(),
            live_stores: BTreeMap::new(),
            forged: false,
            values: ValueMode::Integers,
        }
    }

    /// This checker for pushes of `values` (integers unless told).
    pub fn with_values(mut self, values: ValueMode) -> Self {
        self.values = values;
        self
    }

    // ----- requests -----

    /// A worker process at `slot` issued a request waiting on `targets`.
    pub fn request_issued(
        &mut self,
        at: Instant,
        slot: Slot,
        request: RequestKey,
        issued: Issued,
        targets: Vec<NodeId>,
    ) -> Check {
        let stream = (request.node, request.incarnation, request.customer);
        if let Some(&last) = self.last_ts.get(&stream) {
            if request.ts <= last {
                return violation(format!(
                    "timestamps: {request} issued after ts {} of the same process and customer",
                    last.0
                ));
            }
        }
        self.last_ts.insert(stream, request.ts);
        if let Issued::Push { keys, values } | Issued::PushPull { keys, values } = &issued {
            assert_eq!(keys.len(), values.len(), "one value per key");
            let mode = self.values;
            assert!(values.iter().all(|v| mode.admits(*v)), "pushed values are {mode}, at least 1: {values:?}");
        }
        assert!(issued.keys().windows(2).all(|w| w[0] < w[1]), "keys ascending");
        let crash = if self.replicas > 1 && !matches!(issued, Issued::Simple) {
            // A copy may answer only once the copies after it have, so a
            // request may wait on any server that is down: the latest
            // crash bounds it.
            self.down
                .iter()
                .filter(|(id, _)| id.role() == Some(Role::Server))
                .map(|(_, down)| down)
                .max_by_key(|down| down.crashed_at)
                .map(|down| CrashBound { crashed_at: down.crashed_at, crashed_slot: down.slot })
        } else {
            targets
                .iter()
                .find_map(|id| self.down.get(id))
                .map(|down| CrashBound { crashed_at: down.crashed_at, crashed_slot: down.slot })
        };
        // Held behind a part that was lost (see `request_part_lost`).
        let part_lost = self.replicas > 1
            && self.requests.iter().any(|(key, r)| {
                key.node == request.node
                    && key.incarnation == request.incarnation
                    && r.fate == Fate::Pending
                    && r.part_lost
            });
        let crash = if part_lost { None } else { crash };
        let record = RequestRecord {
            slot,
            issued_at: at,
            issued,
            targets,
            fate: Fate::Pending,
            applied: Vec::new(),
            served: Vec::new(),
            answered: Vec::new(),
            crash,
            corrupted: Vec::new(),
            part_lost,
        };
        if self.requests.insert(request, record).is_some() {
            return violation(format!("timestamps: {request} issued twice"));
        }
        self.arm(Waiter::Request(request));
        Ok(())
    }

    /// The requesting node reported the end of `request`.
    pub fn request_completed(&mut self, at: Instant, request: RequestKey, completion: Completion<'_>) -> Check {
        let Some(record) = self.requests.get_mut(&request) else {
            return violation(format!("requests: completion of {request}, which was never issued"));
        };
        match record.fate {
            Fate::Pending => {}
            Fate::Lost => {
                return violation(format!("requests: {request} completed after its process crashed"));
            }
            Fate::Acked(_) | Fate::Failed(_) => {
                return violation(format!("requests: {request} completed twice"));
            }
        }
        record.fate = match completion {
            Completion::Failed(_) => Fate::Failed(at),
            _ => Fate::Acked(at),
        };
        let kind = record.issued.name();
        if let Completion::Failed(RequestError::BadResponse { server, mismatch }) = completion {
            if !record.corrupted.contains(&(*server, *mismatch)) {
                return violation(format!(
                    "requests: {request} failed with a bad response ({mismatch}) from {server}, \
                     which answered it as asked (corrupted: {:?})",
                    record.corrupted
                ));
            }
        }
        // With several copies a corrupted answer may come from a server the
        // part already moved on from (after a failover): dropped unread.
        if let (Some((server, mismatch)), false, 1) =
            (record.corrupted.first(), matches!(completion, Completion::Failed(_)), self.replicas)
        {
            return violation(format!(
                "requests: {request} completed although server {server} answered it with {mismatch}"
            ));
        }
        match (&record.issued, completion) {
            (_, Completion::Failed(_)) => Ok(()),
            (Issued::Push { .. }, Completion::Done) => {
                self.check_applied_everywhere(request)?;
                self.check_on_every_copy(request)
            }
            (Issued::Simple, Completion::SimpleDone) => Ok(()),
            (Issued::Pull { .. }, Completion::Pulled { keys, values }) => self.check_pull(at, request, keys, values),
            (Issued::PushPull { .. }, Completion::Pulled { keys, values }) => {
                self.check_applied_everywhere(request)?;
                self.check_on_every_copy(request)?;
                self.check_pull(at, request, keys, values)
            }
            (_, other) => violation(format!("requests: {request} ({kind}) completed as {other:?}")),
        }
    }

    /// The process at `slot` (holding `identity` once registered) stopped.
    /// Its pending requests are lost; what waits on it gets a crash bound.
    pub fn process_crashed(&mut self, at: Instant, slot: Slot, identity: Option<(NodeId, Incarnation)>) {
        let lost: Vec<RequestKey> =
            self.requests.iter().filter(|(_, r)| r.slot == slot && r.fate == Fate::Pending).map(|(k, _)| *k).collect();
        for key in lost {
            if let Some(record) = self.requests.get_mut(&key) {
                record.fate = Fate::Lost;
            }
        }
        self.barriers_pending.retain(|_, b| b.slot != slot);
        self.live_stores.retain(|_, (store, _, _)| store.slot != slot);
        let Some((id, incarnation)) = identity else {
            return;
        };
        if self.declared_dead.contains_key(&(id, incarnation))
            || self.incarnations.get(&id).is_some_and(|current| *current > incarnation)
        {
            // Already out of the cluster: nothing waits on this process any
            // more, whatever waits on its id waits on its successor.
            return;
        }
        self.down.insert(id, Down { slot, incarnation, crashed_at: at });
        let bound = CrashBound { crashed_at: at, crashed_slot: slot };
        let mut armed = Vec::new();
        // With several copies a part that waited on a crashed server moves
        // to whoever holds its place, who may crash in turn: the latest
        // crash bounds a request that depends on one. (A head's answer
        // also waits on the copies after it; a request the crash of one of
        // those holds up keeps the request timeout as its bound.)
        let replicated = self.replicas > 1 && id.role() == Some(Role::Server);
        for (key, record) in &mut self.requests {
            let kv = !matches!(record.issued, Issued::Simple);
            let waits = record.targets.contains(&id) && !record.answered.contains(&id);
            let has_crash = record.crash.is_some();
            let depends = if replicated && kv { waits || has_crash } else { waits && !has_crash };
            if record.fate == Fate::Pending && depends && !record.part_lost {
                record.crash = Some(bound);
                armed.push(Waiter::Request(*key));
            }
        }
        let role = id.role().expect("registered ids have a role");
        let policy = self.bounds.barrier_policy;
        for (key, barrier) in &mut self.barriers_pending {
            let ticket = key.2;
            // Unless deaths fail barriers, the scheduler counts an arrival
            // of the dead member as it is: only barriers it had not
            // entered depend on it.
            let entered =
                self.barriers_entered.get(&(ticket.group, ticket.generation)).is_some_and(|e| e.contains_key(&id));
            if !ticket.group.contains(role) || (barrier.keeps_arrivals(policy) && entered) {
                continue;
            }
            // A barrier that goes on among the live may depend on several
            // deaths in turn: each one is a reason to look again.
            if barrier.crash.is_none() {
                barrier.crash = Some(bound);
            }
            armed.push(Waiter::Barrier(key.0, key.1, key.2));
        }
        for waiter in armed {
            self.arm(waiter);
        }
    }

    // ----- servers -----

    /// `store`, held by server `server`, applied the push part of
    /// `request`: `values[i]` added to `keys[i]` of application `app`.
    pub fn push_applied(
        &mut self,
        store: StoreId,
        server: NodeId,
        request: RequestKey,
        range: KeyRange,
        keys: &[u64],
        values: &[f32],
    ) -> Check {
        self.note_owner(store, server)?;
        let Some(record) = self.requests.get_mut(&request) else {
            return violation(format!("aggregation: {store} applied {request}, which no worker issued"));
        };
        // With several copies one store may hold two parts of a request
        // (it heads one range and follows in another): twice means a key twice.
        if record.applied.iter().any(|(s, held)| *s == store && held.iter().any(|k| keys.contains(k))) {
            return violation(format!("aggregation: {request} applied twice by {store} (server {server})"));
        }
        if self.replicas == 1 && self.ranges.get(server.rank()) != Some(range) {
            return violation(format!("aggregation: server {server} applied a part for range {range:?}, not its own"));
        }
        for (&key, &value) in keys.iter().zip(values) {
            match record.issued.pushed(key) {
                Some(sent) if sent == value => {}
                Some(sent) => {
                    return violation(format!(
                        "aggregation: {store} applied {value} to key {key} for {request}, the worker pushed {sent}"
                    ));
                }
                None => {
                    return violation(format!(
                        "aggregation: {store} applied key {key} for {request}, which does not push it"
                    ));
                }
            }
            if !range.contains(key) {
                return violation(format!("aggregation: server {server} applied key {key} outside its part's range"));
            }
        }
        record.applied.push((store, keys.to_vec()));
        record.answered.push(server);
        let app = request.customer.app;
        for (&key, &value) in keys.iter().zip(values) {
            self.contributions.entry((store, app, key)).or_default().push(Contribution { request, value });
        }
        Ok(())
    }

    /// Server `id` runs as a new process, whose store is `store`, from `at`.
    pub fn server_started(&mut self, id: NodeId, incarnation: Incarnation, store: StoreId, at: Instant) {
        // A process that registers late as an incarnation replaced already
        // (it was paused, say) is not the id's store.
        if self.live_stores.get(&id).is_none_or(|&(_, _, known)| known <= incarnation) {
            self.live_stores.insert(id, (store, at, incarnation));
        }
    }

    /// The key range of part `part` of a request (the index of the range).
    pub fn part_range(&self, part: u32) -> KeyRange {
        self.ranges.get(Rank(part)).unwrap_or(KeyRange::FULL)
    }

    /// `store`, held by server `server`, installed a replicated state that
    /// includes the push part `part` of `request`: it holds that part from
    /// now on, as if it had applied it.
    pub fn push_installed(
        &mut self,
        store: StoreId,
        server: NodeId,
        request: RequestKey,
        part: u32,
        installed: &[u64],
    ) -> Check {
        self.note_owner(store, server)?;
        let range = self.part_range(part);
        let Some(record) = self.requests.get_mut(&request) else {
            return violation(format!("replication: {store} installed {request}, which no worker issued"));
        };

        let (keys, values): (Vec<u64>, Vec<f32>) = match &record.issued {
            Issued::Push { keys, values } | Issued::PushPull { keys, values } => {
                // A learner installs only the keys a chunk covered already.
                let kept = |k: &u64| range.contains(*k) && installed.binary_search(k).is_ok();
                keys.iter().zip(values).filter(|(k, _)| kept(k)).map(|(k, v)| (*k, *v)).unzip()
            }
            _ => return violation(format!("replication: {store} installed {request}, which pushes nothing")),
        };
        if record.applied.iter().any(|(s, held)| *s == store && held.iter().any(|k| keys.contains(k))) {
            return violation(format!("replication: {request} installed twice by {store} (server {server})"));
        }
        let app = request.customer.app;
        for (&key, &value) in keys.iter().zip(&values) {
            self.contributions.entry((store, app, key)).or_default().push(Contribution { request, value });
        }
        record.applied.push((store, keys));
        Ok(())
    }

    /// A chunk `state` of app `app` was read from `store` for a transfer:
    /// what it holds of each key is what the store had applied then.
    pub fn chunk_read(&mut self, store: StoreId, app: u32, state: &KvList) {
        let held = state.keys.iter().map(|key| self.contributions.get(&(store, app, key)).cloned().unwrap_or_default());
        let held: Vec<Vec<Contribution>> = held.collect();
        self.chunks.entry(chunk_content(app, state)).or_default().push(held);
    }

    /// `store`, held by server `server`, installed a chunk of a transfer:
    /// its keys hold from now on exactly what the chunk's source had
    /// applied, whatever the store held of them before.
    pub fn chunk_installed(&mut self, store: StoreId, server: NodeId, app: u32, state: &KvList) -> Check {
        self.note_owner(store, server)?;
        let Some(held) = self.chunks.get(&chunk_content(app, state)).and_then(|reads| reads.last()).cloned() else {
            return violation(format!("replication: {store} (server {server}) installed a chunk no tail read"));
        };
        for (key, contributions) in state.keys.iter().zip(held) {
            self.replace_contributions(store, app, key, contributions);
        }
        Ok(())
    }

    /// `store` dropped what it held of app `app` in `range`.
    pub fn range_forgotten(&mut self, store: StoreId, app: u32, range: KeyRange) {
        let keys: Vec<u64> = self
            .contributions
            .range((store, app, range.start())..=(store, app, range.end_inclusive()))
            .map(|(&(_, _, key), _)| key)
            .collect();
        for key in keys {
            self.replace_contributions(store, app, key, Vec::new());
        }
    }

    /// `store`'s key `key` of app `app` now holds exactly `contributions`.
    fn replace_contributions(&mut self, store: StoreId, app: u32, key: u64, contributions: Vec<Contribution>) {
        for old in self.contributions.remove(&(store, app, key)).unwrap_or_default() {
            if let Some(record) = self.requests.get_mut(&old.request) {
                for (_, held) in record.applied.iter_mut().filter(|(s, _)| *s == store) {
                    held.retain(|k| *k != key);
                }
            }
        }
        for c in &contributions {
            if let Some(record) = self.requests.get_mut(&c.request) {
                record.applied.push((store, vec![key]));
            }
        }
        if !contributions.is_empty() {
            self.contributions.insert((store, app, key), contributions);
        }
    }

    /// `store`, held by server `server`, answered part `range` of
    /// `request` with values.
    pub fn pull_served(&mut self, store: StoreId, server: NodeId, request: RequestKey, range: KeyRange) -> Check {
        self.note_owner(store, server)?;
        let Some(record) = self.requests.get_mut(&request) else {
            return violation(format!("pulls: {store} served {request}, which no worker issued"));
        };
        record.served.push((store, range));
        record.answered.push(server);
        Ok(())
    }

    /// Server `server` answered `request` with an answer that does not fit
    /// it (`mismatch`): the request must not complete.
    pub fn answer_corrupted(&mut self, request: RequestKey, server: NodeId, mismatch: Mismatch) {
        if let Some(record) = self.requests.get_mut(&request).filter(|r| r.fate == Fate::Pending) {
            record.corrupted.push((server, mismatch));
        }
    }

    /// A part of `request` was dropped by its server, which was not ready
    /// for it or did not know its sender yet: no crash bounds the request
    /// any more, only its timeout. (With one copy the part's server is the one whose death
    /// fails the request; with several, a part lost this way keeps it
    /// waiting while its other parts move on.)
    ///
    /// With several copies a worker holds its pulls behind its pushes to
    /// the same range, so its other requests may wait on the lost part
    /// too: every request of the process pending now or issued while this
    /// one is pending is bounded by its timeout only.
    pub fn request_part_lost(&mut self, request: RequestKey) {
        let replicated = self.replicas > 1;
        for (key, record) in &mut self.requests {
            let same_process = key.node == request.node && key.incarnation == request.incarnation;
            let held = replicated && same_process && record.fate == Fate::Pending;
            if *key == request || held {
                record.part_lost = true;
                record.crash = None;
            }
        }
    }

    /// `node` answered `request` (a SimpleApp request, say): its crash no
    /// longer holds the request up.
    pub fn request_answered(&mut self, request: RequestKey, node: NodeId) {
        if let Some(record) = self.requests.get_mut(&request) {
            record.answered.push(node);
        }
    }

    /// Compares `kv` (application `app` of `store`) with the model, for
    /// every key in `keys` that the store's server owns.
    pub fn check_store(&self, store: StoreId, app: u32, kv: &KvStore<f32>, keys: &[u64]) -> Check {
        let Some(&owner) = self.store_owner.get(&store) else {
            return Ok(());
        };
        // With one copy a store holds its server's range; with several,
        // the keys of every range its server is a member of.
        let range = if self.replicas == 1 {
            self.ranges.get(owner.rank()).expect("server ids have ranges")
        } else {
            KeyRange::FULL
        };
        for &key in keys.iter().filter(|k| range.contains(**k)) {
            let expected = self.applied_sum(store, app, key);
            let actual = kv.get(key);
            let fits = match actual {
                None => expected.terms == 0,
                Some([value]) => self.values.fits(*value, expected, expected),
                Some(_) => false,
            };
            if !fits {
                return violation(format!(
                    "aggregation: key {key} app {app} in {store} (server {owner}) holds {actual:?}, \
                     the pushes it applied sum to {}",
                    self.show(expected)
                ));
            }
        }
        Ok(())
    }

    // ----- barriers -----

    /// A process entered a barrier (`finalize`: its final one).
    pub fn barrier_entered(
        &mut self,
        at: Instant,
        slot: Slot,
        node: NodeId,
        incarnation: Incarnation,
        ticket: BarrierTicket,
        finalize: bool,
    ) -> Check {
        self.barriers_entered
            .entry((ticket.group, ticket.generation))
            .or_default()
            .insert(node, (incarnation, at, slot));
        if finalize {
            self.finalizing.insert((node, incarnation), (at, slot));
        }
        let record = BarrierRecord { slot, entered_at: at, crash: None, finalize };
        if self.barriers_pending.insert((node, incarnation, ticket), record).is_some() {
            return violation(format!("barriers: node {node} entered {ticket:?} twice"));
        }
        // Members waiting since a crash may have waited for this arrival.
        let waiting: Vec<Waiter> = self
            .barriers_pending
            .iter()
            .filter(|(key, record)| key.2 == ticket && record.crash.is_some())
            .map(|(key, _)| Waiter::Barrier(key.0, key.1, key.2))
            .collect();
        for waiter in waiting {
            self.arm(waiter);
        }
        Ok(())
    }

    /// A process's barrier ended: released without the `missing` members
    /// named (`Some`), or failed (`None`).
    pub fn barrier_ended(
        &mut self,
        at: Instant,
        node: NodeId,
        incarnation: Incarnation,
        ticket: BarrierTicket,
        missing: Option<&[NodeId]>,
    ) -> Check {
        let Some(record) = self.barriers_pending.remove(&(node, incarnation, ticket)) else {
            return violation(format!("barriers: node {node} got the end of {ticket:?}, which it is not in"));
        };
        let Some(missing) = missing else {
            return Ok(());
        };
        let entered = self.barriers_entered.get(&(ticket.group, ticket.generation));
        // A late arrival is answered with how the barrier ended before it
        // came: a missing member was dead at some point since the barrier
        // opened, not necessarily while this member waited.
        let opened_at = entered.and_then(|e| e.values().map(|&(_, at, _)| at).min()).unwrap_or(record.entered_at);
        let members = self.members(ticket.group);
        for &member in &members {
            let arrived = entered.is_some_and(|e| e.contains_key(&member));
            let listed = missing.contains(&member);
            if !arrived && !listed {
                return violation(format!(
                    "barriers: {ticket:?} released at node {node} before member {member} entered it, \
                     without naming it missing ({missing:?})"
                ));
            }
            let current = self.incarnations.get(&member).copied().unwrap_or(Incarnation(0));
            let finalizing = !record.finalize && self.finalizing.contains_key(&(member, current));
            if listed && !finalizing && !self.was_dead_during(member, opened_at.min(record.entered_at), at) {
                return violation(format!(
                    "barriers: {ticket:?} released at node {node} without member {member}, which was alive throughout"
                ));
            }
            // A barrier that waits for recovery gives a dead member's
            // replacement the whole recovery timeout from the death (by the
            // scheduler's clock, which may run a little fast).
            let recovery = self.bounds.recovery - self.bounds.recovery / 1000;
            let waited = |since: Instant| at >= since + recovery;
            let deaths = self.dead.get(&member).map_or(&[][..], Vec::as_slice);
            if listed
                && !finalizing
                && record.waits_for_recovery(self.bounds.barrier_policy)
                && !deaths.iter().any(|&(since, _)| since <= at && waited(since))
            {
                return violation(format!(
                    "barriers: {ticket:?} released at node {node} without member {member} before the recovery \
                     timeout ({:?}) since its death ran out (deaths: {deaths:?})",
                    self.bounds.recovery
                ));
            }
        }
        if let Some(stranger) = missing.iter().find(|id| !members.contains(id)) {
            return violation(format!("barriers: {ticket:?} at node {node} names {stranger} missing, no member"));
        }
        Ok(())
    }

    // ----- membership -----

    /// The scheduler declared `id` (in `incarnation`) dead.
    pub fn node_declared_dead(&mut self, at: Instant, id: NodeId, incarnation: Incarnation) {
        self.declared_dead.entry((id, incarnation)).or_insert(at);
        // Barriers that go on among the live may have waited for this.
        let role = id.role();
        let waiting: Vec<Waiter> = self
            .barriers_pending
            .iter()
            .filter(|(key, record)| record.crash.is_some() && role.is_some_and(|r| key.2.group.contains(r)))
            .map(|(key, _)| Waiter::Barrier(key.0, key.1, key.2))
            .collect();
        let intervals = self.dead.entry(id).or_default();
        if intervals.last().is_none_or(|(_, until)| until.is_some()) {
            intervals.push((at, None));
        }
        if self.down.get(&id).is_some_and(|d| d.incarnation == incarnation) {
            self.down.remove(&id);
        }
        for waiter in waiting {
            self.arm(waiter);
        }
    }

    /// The scheduler gave `id` to a new process, as `incarnation`.
    pub fn node_recovered(&mut self, at: Instant, id: NodeId, incarnation: Incarnation) {
        self.incarnations.insert(id, incarnation);
        if let Some((_, until)) = self.dead.get_mut(&id).and_then(|v| v.last_mut()) {
            if until.is_none() {
                *until = Some(at);
            }
        }
    }

    /// The process at `slot`, `node` in `incarnation`, failed its work at
    /// `at` because it took the scheduler for lost. That must have a cause
    /// within the last failure-detection period: a pause of either, a link
    /// between them clogged, cut or reset, frames that can be lost anyway,
    /// or the scheduler having declared the process dead (it answers a dead
    /// node's heartbeats no more).
    pub fn scheduler_lost(&self, at: Instant, slot: Slot, node: NodeId, incarnation: Incarnation) -> Check {
        let scheduler = self.bounds.scheduler_slot;
        let since = Instant::from_nanos(at.as_nanos().saturating_sub(self.bounds.lost_after.as_nanos() as u64));
        let between = |d: &Disturbance| match d.peer {
            None => d.slot == slot || d.slot == scheduler,
            Some(peer) => (d.slot == slot && peer == scheduler) || (d.slot == scheduler && peer == slot),
        };
        let disturbed = self.disturbances.iter().any(|d| between(d) && d.from <= at && d.until >= since);
        if disturbed || !self.bounds.crash_checked || self.declared_dead.contains_key(&(node, incarnation)) {
            return Ok(());
        }
        violation(format!(
            "liveness: node {node} (slot {slot}) took the scheduler for lost at {at:?}, \
             with nothing between them since {since:?}"
        ))
    }

    /// Something held up frames or a node from `from` to `until`.
    pub fn disturbance(&mut self, disturbance: Disturbance) {
        if self.disturbances.len() == DISTURBANCES_MAX {
            self.disturbances.remove(0);
        }
        self.disturbances.push(disturbance);
    }

    /// No two live processes share an id and incarnation.
    pub fn check_identities(&self, live: &mut [(NodeId, Incarnation)]) -> Check {
        live.sort_unstable();
        if let Some(pair) = live.windows(2).find(|w| w[0] == w[1]) {
            return violation(format!(
                "identity: two live processes are node {} incarnation {}",
                pair[0].0, pair[0].1 .0
            ));
        }
        Ok(())
    }

    /// A node's table at `epoch` is the one everybody else had at that
    /// epoch, and lists every id of the cluster; its replica table too, and
    /// that changed from the epochs before and after only as it may.
    pub fn check_table(
        &mut self,
        at: Instant,
        node: NodeId,
        epoch: u64,
        entries: Vec<NodeEntry>,
        chains: &Chains,
    ) -> Check {
        if self.placement.latest_epoch().is_none_or(|latest| epoch > latest) {
            // The scheduler's node reports a table first, as it makes it:
            // a range with no member lost what it held then.
            for (index, chain) in chains.as_slice().iter().enumerate() {
                if chain.is_lost() {
                    self.lost_at.insert(index, at);
                }
            }
        }
        let ids: Vec<NodeId> = entries.iter().map(|e| e.id).collect();
        if ids != self.members(Group::SERVERS | Group::WORKERS) {
            return violation(format!("identity: table at epoch {epoch} of node {node} lists ids {ids:?}"));
        }
        match self.tables.get(&epoch) {
            Some(known) if *known != entries => {
                return violation(format!(
                    "identity: node {node} holds another table at epoch {epoch} than others did:\n  {entries:?}\n  {known:?}"
                ))
            }
            Some(_) => {}
            None => {
                self.tables.insert(epoch, entries.clone());
            }
        }
        self.placement.check(node, epoch, &entries, chains, &self.tables)
    }

    /// A node's key ranges are the cluster's partition, and that is a
    /// partition: one range per server, contiguous, from 0 to `u64::MAX`
    /// (checked here by hand rather than trusting the core's own check).
    pub fn check_ranges(&self, node: NodeId, ranges: &ServerRanges) -> Check {
        if *ranges != self.ranges {
            return violation(format!("ranges: node {node} has {ranges:?}, the cluster has {:?}", self.ranges));
        }
        let slice = ranges.as_slice();
        let contiguous = slice.windows(2).all(|w| w[0].end_inclusive().checked_add(1) == Some(w[1].start()));
        let covers = slice.first().is_some_and(|r| r.start() == 0)
            && slice.last().is_some_and(|r| r.end_inclusive() == u64::MAX);
        if slice.len() != self.servers as usize || !contiguous || !covers {
            return violation(format!(
                "ranges: {ranges:?} of node {node} do not partition [0, u64::MAX] among {} servers",
                self.servers
            ));
        }
        Ok(())
    }

    /// Whether `request` was issued through the checker: requests a test
    /// made by hand on a node are outside the model.
    pub fn knows_request(&self, request: RequestKey) -> bool {
        self.requests.contains_key(&request)
    }

    /// A test put made-up frames on the wire: a forged batch or commit
    /// report makes copies differ or acknowledges too early, which no
    /// honest member does, so replication's promises are not checked from
    /// then on (the rest of the model still is).
    pub fn frames_forged(&mut self) {
        self.forged = true;
    }

    /// Frames may be lost from now on (a scenario test dropped some or
    /// turned loss on): a death's announcement can be lost too, so crash
    /// bounds are no longer checked, as for plans that lose frames.
    pub fn frames_lost(&mut self) {
        self.bounds.crash_checked = false;
    }

    /// Requests issued and not ended, for `pending` reports.
    pub fn requests_pending(&self) -> usize {
        self.requests.values().filter(|r| r.fate == Fate::Pending).count()
    }

    // ----- internals -----

    /// Where `member` stands with barrier `ticket`, the most lenient
    /// reading first: a crash or a death may have kept its arrival from
    /// ever counting (a frame lost, or dropped as a dead node's), so they
    /// bound the wait rather than the arrival. Arrivals count for the
    /// incarnation that made them: a replacement arrives itself.
    fn member_state(&self, member: NodeId, ticket: BarrierTicket, finalize: bool) -> MemberState {
        if let Some(down) = self.down.get(&member) {
            return MemberState::Crashed(CrashBound { crashed_at: down.crashed_at, crashed_slot: down.slot });
        }
        if let Some(&(since, None)) = self.dead.get(&member).and_then(|v| v.last()) {
            return MemberState::Dead(since);
        }
        let current = self.incarnations.get(&member).copied().unwrap_or(Incarnation(0));
        if let Some(&(at, slot)) = self.finalizing.get(&(member, current)).filter(|_| !finalize) {
            // In its final barrier: no ordinary barrier waits for it.
            return MemberState::Arrived(at, slot);
        }
        let entered = self.barriers_entered.get(&(ticket.group, ticket.generation)).and_then(|e| e.get(&member));
        match entered {
            Some(&(incarnation, at, slot))
                if incarnation == current && !self.declared_dead.contains_key(&(member, incarnation)) =>
            {
                MemberState::Arrived(at, slot)
            }
            _ => MemberState::Awaited,
        }
    }

    fn members(&self, group: Group) -> Vec<NodeId> {
        let mut ids = Vec::new();
        if group.contains(Role::Scheduler) {
            ids.push(NodeId::SCHEDULER);
        }
        if group.contains(Role::Server) {
            ids.extend((0..self.servers).map(|r| NodeId::server(Rank(r))));
        }
        if group.contains(Role::Worker) {
            ids.extend((0..self.workers).map(|r| NodeId::worker(Rank(r))));
        }
        ids.sort();
        ids
    }

    fn was_dead_during(&self, id: NodeId, from: Instant, to: Instant) -> bool {
        self.dead.get(&id).is_some_and(|intervals| {
            intervals.iter().any(|&(start, end)| start <= to && end.is_none_or(|end| end >= from))
        })
    }

    fn note_owner(&mut self, store: StoreId, server: NodeId) -> Check {
        match self.store_owner.get(&store) {
            Some(&owner) if owner != server => {
                violation(format!("identity: {store} answered as server {server}, earlier as server {owner}"))
            }
            Some(_) => Ok(()),
            None => {
                self.store_owner.insert(store, server);
                Ok(())
            }
        }
    }

    fn check_applied_everywhere(&self, request: RequestKey) -> Check {
        let record = &self.requests[&request];
        for &key in record.issued.keys() {
            if !record.applied.iter().any(|(_, keys)| keys.contains(&key)) {
                return violation(format!(
                    "aggregation: {request} was acknowledged but no store applied its key {key}"
                ));
            }
        }
        Ok(())
    }

    /// With several copies, an acknowledged push is on every copy of its
    /// ranges: each member of each range's chain in the newest table
    /// applied (at the head) or installed its part, unless the member's
    /// process is down or started after the push was issued (a range that
    /// lost every copy starts afresh, without it).
    fn check_on_every_copy(&self, request: RequestKey) -> Check {
        if self.replicas == 1 || self.forged {
            return Ok(());
        }
        let Some(chains) = self.placement.latest() else {
            return Ok(());
        };
        let record = &self.requests[&request];
        for (index, chain) in chains.as_slice().iter().enumerate() {
            let range = chain.range();
            let keys: Vec<u64> = record.issued.keys().iter().copied().filter(|k| range.contains(*k)).collect();
            if keys.is_empty() {
                continue;
            }
            for &rank in chain.members() {
                let server = NodeId::server(rank);
                let Some(&(store, started, _)) = self.live_stores.get(&server) else {
                    continue;
                };
                let lost_since = self.lost_at.get(&index).is_some_and(|&at| at > record.issued_at);
                if self.down.contains_key(&server) || started > record.issued_at || lost_since {
                    continue;
                }
                let holds = |key: &u64| record.applied.iter().any(|(s, held)| *s == store && held.contains(key));
                if let Some(key) = keys.iter().find(|k| !holds(k)) {
                    return violation(format!(
                        "replication: {request} was acknowledged but {store} (server {server}, a member of \
                         range {index}) does not hold its key {key}"
                    ));
                }
            }
        }
        Ok(())
    }

    fn check_pull(&self, now: Instant, request: RequestKey, keys: &[u64], values: &[f32]) -> Check {
        let record = &self.requests[&request];
        if keys != record.issued.keys() || values.len() != keys.len() {
            return violation(format!(
                "pulls: {request} asked for {} keys and got {} keys with {} values",
                record.issued.keys().len(),
                keys.len(),
                values.len()
            ));
        }
        let app = request.customer.app;
        for (&key, &value) in keys.iter().zip(values) {
            let owner = NodeId::server(self.ranges.owner(key));
            let mut windows = Vec::new();
            let served = || record.served.iter().filter(|(_, range)| range.contains(key)).map(|(s, _)| *s);
            for store in served() {
                let (mut low, high) = self.window(store, app, key, record.issued_at, now);
                if self.replicas > 1 && !self.forged {
                    low = low.max(self.acked_before(store, app, key, record.issued_at));
                }
                if self.values.fits(value, low, high) {
                    windows.clear();
                    break;
                }
                let missing =
                    if self.replicas > 1 { self.acked_not_held(store, app, key, record.issued_at) } else { Vec::new() };
                let missing =
                    if missing.is_empty() { String::new() } else { format!(" (acknowledged, not held: {missing:?})") };
                windows.push(format!("[{low}, {}] at {store}{missing}", self.show(high)));
            }
            if served().next().is_none() {
                return violation(format!(
                    "pulls: {request} got key {key} = {value}, but it was never served (range owner {owner})"
                ));
            }
            if !windows.is_empty() {
                return violation(format!(
                    "pulls: {request} got key {key} = {value}, outside every window {}",
                    windows.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// With several copies, a tail holds every push acknowledged anywhere:
    /// the sum of the pushes to `key` acknowledged before `issued_at`
    /// that were issued after `store`'s process started (those before may
    /// have been lost with every copy of their range, which a store that
    /// started later cannot hold).
    fn acked_before(&self, store: StoreId, app: u32, key: u64, issued_at: Instant) -> Sum {
        let Some(started) = self.copy_started(store, key) else {
            return Sum::default();
        };
        let acked = self.requests.iter().filter(|(k, r)| {
            k.customer.app == app && r.issued_at >= started && matches!(r.fate, Fate::Acked(at) if at < issued_at)
        });
        Sum::of(acked.filter_map(|(_, r)| r.issued.pushed(key)))
    }

    /// Since when `store`'s copy of `key`'s range can hold every push: its
    /// process's start, or the range's last loss if later.
    fn copy_started(&self, store: StoreId, key: u64) -> Option<Instant> {
        let &(_, started, _) = self.live_stores.values().find(|(s, _, _)| *s == store)?;
        let range = self.ranges.owner(key).0 as usize;
        Some(self.lost_at.get(&range).map_or(started, |&lost| lost.max(started)))
    }

    /// The pushes `acked_before` counts that `store` does not hold.
    fn acked_not_held(&self, store: StoreId, app: u32, key: u64, issued_at: Instant) -> Vec<String> {
        let Some(started) = self.copy_started(store, key) else {
            return Vec::new();
        };
        self.requests
            .iter()
            .filter(|(k, r)| {
                k.customer.app == app
                    && r.issued_at >= started
                    && matches!(r.fate, Fate::Acked(at) if at < issued_at)
                    && r.issued.pushed(key).is_some()
                    && !r.applied.iter().any(|(s, held)| *s == store && held.contains(&key))
            })
            .map(|(k, r)| format!("{k} acked at {:?}", r.fate))
            .collect()
    }

    /// The sum of `store`'s pushes to `key` acknowledged before `issued_at`,
    /// and the sum of all it applied by `now`.
    fn window(&self, store: StoreId, app: u32, key: u64, issued_at: Instant, now: Instant) -> (Sum, Sum) {
        let Some(contributions) = self.contributions.get(&(store, app, key)) else {
            return (Sum::default(), Sum::default());
        };
        let mut low = Sum::default();
        let mut high = Sum::default();
        for c in contributions {
            let record = &self.requests[&c.request];
            if record.issued_at <= now {
                high = high.plus(c.value);
            }
            if matches!(record.fate, Fate::Acked(at) if at < issued_at) {
                low = low.plus(c.value);
            }
        }
        (low, high)
    }

    /// The exact sum of what `store` applied to `key` of app `app`.
    fn applied_sum(&self, store: StoreId, app: u32, key: u64) -> Sum {
        self.contributions.get(&(store, app, key)).map_or(Sum::default(), |c| Sum::of(c.iter().map(|c| c.value)))
    }

    /// `sum` in a report, with the rounding the value mode allows it.
    fn show(&self, sum: Sum) -> String {
        let slack = self.values.slack(sum);
        if slack == 0.0 {
            return sum.to_string();
        }
        format!("{sum} ± {slack:.1e} ({} pushes)", sum.terms)
    }
}
