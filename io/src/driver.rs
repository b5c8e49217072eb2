//! The node task: the one owner of a core `Node`.
//!
//! It waits on five things — inbound frames, answers of server handles
//! that answer later, application commands, the core's next timeout and
//! shutdown — feeds whichever comes to the node, then drains the node's
//! outputs: frames to per-peer writers, events to waiting callers and to
//! the server handles. The shell makes no protocol decisions; it only
//! moves bytes and wakes callers.
//!
//! `start` builds and spawns it. Handles reach it only through the
//! commands in `msg` (and read the outcomes it records, see `outcomes`);
//! it spawns the writers in `conn` and hears from them and from the
//! readers through `msg` too, as it hears the answers of deferred and
//! threaded handles (see `respond`).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bytes::Bytes;
use pslite_core::{
    BarrierTicket, CustomerId, Event, Frame, Group, Instant, Node, Phase, Refusal, RequestError, Response, Timestamp,
};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::conn;
use crate::error::Error;
use crate::msg::{
    Answer, AnswerSender, Command, Completion, Ended, Inbound, Info, Job, KvServe, NodeEvent, Published, Released,
    SimpleServe,
};
use crate::outcomes::SharedOutcomes;

/// How many inputs of one kind (frames, answers or commands) are handled
/// before the others, the timers and the writers get a turn.
const INPUTS_PER_WAKE_MAX: usize = 1024;

pub(crate) struct Driver {
    pub(crate) node: Node,
    pub(crate) epoch: tokio::time::Instant,
    pub(crate) token: Option<String>,
    pub(crate) inbound_tx: mpsc::Sender<Inbound>,
    pub(crate) handles: BTreeMap<u32, KvServe>,
    pub(crate) simple_handler: Option<SimpleServe>,
    /// Handed to deferred handles with each request, for their answers.
    answers: AnswerSender,
    /// The other end, until `run` takes it.
    answers_rx: Option<mpsc::UnboundedReceiver<Answer>>,
    pub(crate) info: watch::Sender<Published>,
    pub(crate) events: broadcast::Sender<NodeEvent>,
    /// See [`Driver::now`].
    now: Instant,
    writers: BTreeMap<SocketAddr, conn::Writer>,
    /// Frames of the current drain, per peer, sent once it ends: one queue
    /// operation per peer and drain rather than per frame.
    outgoing: BTreeMap<SocketAddr, Vec<Frame>>,
    /// Writer tasks, awaited at shutdown so the last frames (a barrier
    /// release, a Terminate) leave before the process may exit.
    writer_tasks: Vec<tokio::task::JoinHandle<()>>,
    waiters: BTreeMap<(CustomerId, Timestamp), oneshot::Sender<Result<Completion, Error>>>,
    /// Outcomes nobody waited for yet, shared with the handles.
    outcomes: SharedOutcomes,
    barrier_waiters: BTreeMap<BarrierTicket, oneshot::Sender<Result<Released, Error>>>,
    ready_waiters: Vec<oneshot::Sender<Result<(), Error>>>,
    terminated_waiters: Vec<oneshot::Sender<Result<Released, Error>>>,
    /// This node's finalize barrier, once entered.
    finalize_ticket: Option<BarrierTicket>,
    /// How the finalize barrier ended, for every `finalize` caller.
    finalized: Option<Result<Released, RequestError>>,
    /// Set when no scheduler answered in time: `wait_ready` says so.
    registration_failed: Option<SocketAddr>,
    /// Dropped when the driver ends, which stops the listener.
    pub(crate) alive: Option<oneshot::Sender<()>>,
}

impl Driver {
    pub(crate) fn new(
        node: Node,
        epoch: tokio::time::Instant,
        token: Option<String>,
        inbound_tx: mpsc::Sender<Inbound>,
        info: watch::Sender<Published>,
        events: broadcast::Sender<NodeEvent>,
        outcomes: SharedOutcomes,
    ) -> Self {
        let (answers, answers_rx) = mpsc::unbounded_channel();
        Self {
            node,
            epoch,
            token,
            inbound_tx,
            handles: BTreeMap::new(),
            simple_handler: None,
            answers,
            answers_rx: Some(answers_rx),
            info,
            events,
            now: Instant::ZERO,
            writers: BTreeMap::new(),
            outgoing: BTreeMap::new(),
            writer_tasks: Vec::new(),
            waiters: BTreeMap::new(),
            outcomes,
            barrier_waiters: BTreeMap::new(),
            ready_waiters: Vec::new(),
            terminated_waiters: Vec::new(),
            finalize_ticket: None,
            finalized: None,
            registration_failed: None,
            alive: None,
        }
    }

    /// The time of the current wake-up: read once per wake and shared by
    /// every input it handles (reading the clock per frame showed in
    /// profiles, and the core only needs it to the scale of its timeouts).
    fn now(&self) -> Instant {
        self.now
    }

    fn read_clock(&mut self) -> Instant {
        let nanos = tokio::time::Instant::now().saturating_duration_since(self.epoch).as_nanos();
        self.now = Instant::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        self.now
    }

    pub(crate) async fn run(mut self, mut commands: mpsc::Receiver<Command>, mut inbound: mpsc::Receiver<Inbound>) {
        let mut answers = self.answers_rx.take().expect("a driver runs once");
        self.drain().await;
        loop {
            if self.node.phase() == Phase::Terminated {
                break;
            }
            // The select below prefers input; under a steady stream of it the
            // timers must still fire (heartbeats, resends, deadlines).
            let now = self.read_clock();
            if self.node.poll_timeout().is_some_and(|at| at <= now) {
                self.node.handle_timeout(now);
                self.drain().await;
                continue;
            }
            let deadline = self.node.poll_timeout();
            let sleep_until = deadline.map(|at| self.epoch + std::time::Duration::from_nanos(at.as_nanos()));
            tokio::select! {
                biased;
                input = inbound.recv() => {
                    let Some(input) = input else { break };
                    self.read_clock();
                    // Counted in frames, not messages: one read can bring
                    // hundreds of small frames.
                    let mut handled = self.on_inbound(input);
                    while handled < INPUTS_PER_WAKE_MAX {
                        match inbound.try_recv() {
                            Ok(input) => handled += self.on_inbound(input),
                            Err(_) => break,
                        }
                    }
                }
                // Never `None`: the driver holds a sender itself.
                Some(answer) = answers.recv() => {
                    self.read_clock();
                    self.on_answer(answer);
                    for _ in 1..INPUTS_PER_WAKE_MAX {
                        match answers.try_recv() {
                            Ok(answer) => self.on_answer(answer),
                            Err(_) => break,
                        }
                    }
                }
                command = commands.recv() => {
                    let Some(command) = command else {
                        // Every handle is gone: nobody can use this node.
                        break;
                    };
                    self.read_clock();
                    self.on_command(command);
                    for _ in 1..INPUTS_PER_WAKE_MAX {
                        match commands.try_recv() {
                            Ok(command) => self.on_command(command),
                            Err(_) => break,
                        }
                    }
                }
                () = sleep(sleep_until), if sleep_until.is_some() => {
                    let now = self.read_clock();
                    self.node.handle_timeout(now);
                }
            }
            self.drain().await;
        }
        // From here on a late answer fails (`Error::Shutdown`) rather than
        // waiting in a queue nobody reads.
        answers.close();
        self.shutdown().await;
    }

    /// Handles one input; returns how many frames (or events) it held.
    fn on_inbound(&mut self, input: Inbound) -> usize {
        match input {
            Inbound::Frames(frames) => {
                let now = self.now();
                let count = frames.len();
                for frame in frames {
                    if let Err(error) = self.node.handle_frame(now, frame) {
                        tracing::warn!(%error, "dropped an undecodable frame");
                    }
                }
                count
            }
            Inbound::LinkLost(addr) => {
                // Frames queued for it are gone; the core's timeouts and
                // heartbeats decide what that means. A report from an old
                // writer must not remove a newer one for the same peer: the
                // failed writer has closed its queue, a live one has not.
                if self.writers.get(&addr).is_some_and(conn::Writer::is_closed) {
                    self.writers.remove(&addr);
                }
                1
            }
        }
    }

    /// Passes a deferred handle's answer to the node.
    fn on_answer(&mut self, answer: Answer) {
        let now = self.now();
        let (id, result) = match answer {
            Answer::Kv { id, response, state } => (id, self.node.respond_with_state(now, id, response, state)),
            Answer::Simple { id, head, body } => (id, self.node.simple_respond(now, id, head, body)),
            Answer::Exported { ticket, state } => {
                if let Err(error) = self.node.exported(now, ticket, state) {
                    tracing::error!(%error, "a chunk read was refused by the node");
                }
                return;
            }
        };
        if let Err(error) = result {
            tracing::error!(%error, ?id, "a deferred answer was refused by the node");
        }
    }

    fn on_command(&mut self, command: Command) {
        let now = self.now();
        let node = &mut self.node;
        match command {
            Command::Kv { call } => {
                let customer = call.customer;
                let ts = call.ts.expect("the handle chooses timestamps");
                if let Err(error) = node.submit(now, call) {
                    self.complete(customer, ts, Err(error.into()));
                }
            }
            Command::Simple { customer, ts, target, head, body } => {
                if let Err(error) = node.simple_request_as(now, customer, Some(ts), target, head, body) {
                    self.complete(customer, ts, Err(error.into()));
                }
            }
            Command::Wait { customer, ts, reply } => {
                let taken = self.outcomes.lock().take(customer, ts);
                if let Some(result) = taken {
                    let _ = reply.send(result);
                } else if node.is_pending(customer, ts) {
                    // A second wait on the same request while the first
                    // still listens is a caller mistake; a first wait that
                    // was dropped (timed out, interrupted) gives way.
                    match self.waiters.get(&(customer, ts)) {
                        Some(first) if !first.is_closed() => {
                            let misuse = pslite_core::ApiMisuse::AlreadyWaited { ts: ts.0 };
                            let _ = reply.send(Err(RequestError::ApiMisuse(misuse).into()));
                        }
                        _ => {
                            self.waiters.insert((customer, ts), reply);
                        }
                    }
                } else {
                    // Never issued, or its outcome was already taken by an
                    // earlier wait: nothing would ever answer.
                    let misuse = pslite_core::ApiMisuse::UnknownTimestamp { ts: ts.0 };
                    let _ = reply.send(Err(RequestError::ApiMisuse(misuse).into()));
                }
            }
            Command::Barrier { group, reply } => match node.barrier(now, group) {
                Ok(ticket) => {
                    self.barrier_waiters.insert(ticket, reply);
                }
                Err(error) => {
                    let _ = reply.send(Err(error.into()));
                }
            },
            Command::Finalize { reply } => match node.finalize(now) {
                Ok(ticket) => {
                    self.finalize_ticket = Some(ticket);
                    self.terminated_waiters.push(reply);
                }
                Err(_) if node.phase() == Phase::Terminated => {
                    let _ = reply.send(self.ended().outcome());
                }
                // Already finalizing: wait with the first caller.
                Err(RequestError::Terminated) => self.terminated_waiters.push(reply),
                // Not ready (or another refusal): nothing will end it.
                Err(error) => {
                    let _ = reply.send(Err(error.into()));
                }
            },
            Command::WaitReady { reply } => match node.phase() {
                Phase::Ready => {
                    let _ = reply.send(Ok(()));
                }
                Phase::Registering => self.ready_waiters.push(reply),
                Phase::Terminated => {
                    let _ = reply.send(Err(self.not_ready()));
                }
            },
            Command::SetHandle { app, handle, reply } => {
                self.handles.insert(app, handle);
                let _ = reply.send(());
            }
            Command::SetSimpleHandler { handler, reply } => {
                self.simple_handler = Some(handler);
                let _ = reply.send(());
            }
            Command::Stats { reply } => {
                let _ = reply.send(node.stats().clone());
            }
            Command::NextBarrierGeneration { group, reply } => {
                let _ = reply.send(node.next_barrier_generation(group));
            }
        }
    }

    /// Moves every output of the node to where it goes.
    async fn drain(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(transmit) = self.node.poll_transmit() {
                progressed = true;
                self.outgoing.entry(transmit.addr).or_default().push(transmit.frame);
            }
            while let Some(event) = self.node.poll_event() {
                progressed = true;
                self.on_event(event);
            }
            if !progressed {
                break;
            }
        }
        while let Some((addr, frames)) = self.outgoing.pop_first() {
            self.transmit(addr, frames).await;
        }
        self.publish_info();
    }

    async fn transmit(&mut self, addr: SocketAddr, frames: Vec<Frame>) {
        let writer = match self.writers.get(&addr) {
            Some(writer) if !writer.is_closed() => writer.clone(),
            _ => {
                self.writer_tasks.retain(|task| !task.is_finished());
                let (writer, task) = conn::Writer::spawn(addr, self.token.clone(), self.inbound_tx.clone());
                self.writer_tasks.push(task);
                self.writers.insert(addr, writer.clone());
                writer
            }
        };
        // Waiting here is the backpressure: a slow peer slows its sender.
        if !writer.send(frames).await {
            self.writers.remove(&addr);
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Registered { .. } => {}
            Event::ClusterReady => {
                // What `wait_ready` callers read next (id, rank) must be
                // out before they are woken, not at the end of the drain.
                self.publish_info();
                for waiter in self.ready_waiters.drain(..) {
                    let _ = waiter.send(Ok(()));
                }
            }
            Event::RequestDone { customer, ts } => self.complete(customer, ts, Ok(Completion::Done)),
            Event::PullDone { customer, ts, keys, values, lens } => {
                self.complete(customer, ts, Ok(Completion::Pulled { keys, values, lens }));
            }
            Event::SimpleDone { customer, ts, replies } => {
                self.complete(customer, ts, Ok(Completion::Simple(replies)));
            }
            Event::RequestFailed { customer, ts, error } => self.complete(customer, ts, Err(error.into())),
            Event::ServerRequest(request) => {
                let app = request.id.customer.app;
                let id = request.id;
                // With several copies of each range, a push's answer takes
                // the state it left on its keys down the chain.
                let export = self.node.config().replicas > 1 && request.op.pushes();
                let (response, state) = match self.handles.get_mut(&app) {
                    Some(KvServe::Inline(handle)) => {
                        let response = handle.handle(&request);
                        let state = if export { handle.export(&request.keys) } else { None };
                        (response, state)
                    }
                    Some(KvServe::Threaded(jobs)) => {
                        // The answer comes back through `answers`.
                        // The answer comes back through `answers`.
                        jobs(Job::Request { request, answers: self.answers.clone(), export });
                        return;
                    }
                    Some(KvServe::Deferred(_)) if export => {
                        // Its answers come from anywhere, in any order: the
                        // copies could not follow the order it applied in.
                        let reason = Refusal::Handle("a deferred handle cannot serve replicated ranges".into());
                        (Response::Refused(reason), None)
                    }
                    Some(KvServe::Deferred(handle)) => {
                        // The answer comes back through `answers`.
                        handle(request, self.answers.clone());
                        return;
                    }
                    None => (Response::Refused(Refusal::NoHandle { app }), None),
                };
                let now = self.now();
                if let Err(error) = self.node.respond_with_state(now, id, response, state) {
                    tracing::error!(%error, "respond failed");
                }
            }
            Event::Export { ticket, app, keys, keys_max, bytes_max } => {
                let state = match self.handles.get_mut(&app) {
                    Some(KvServe::Inline(handle)) => handle.export_range(keys, keys_max, bytes_max),
                    Some(KvServe::Threaded(jobs)) => {
                        let answers = self.answers.clone();
                        jobs(Job::Export { ticket, keys, keys_max, bytes_max, answers });
                        return;
                    }
                    Some(KvServe::Deferred(_)) | None => {
                        tracing::error!(app, "no handle that can export a replicated range");
                        None
                    }
                };
                let now = self.now();
                if let Err(error) = self.node.exported(now, ticket, state) {
                    tracing::error!(%error, "a chunk read was refused by the node");
                }
            }
            Event::Forget { range } => {
                for (app, serve) in self.handles.iter_mut() {
                    let result = match serve {
                        KvServe::Inline(handle) => handle.forget_range(range),
                        KvServe::Threaded(jobs) => {
                            jobs(Job::Forget(range));
                            Ok(())
                        }
                        KvServe::Deferred(_) => Ok(()),
                    };
                    if let Err(error) = result {
                        tracing::error!(%error, app, "a partial copy of a range could not be dropped");
                    }
                }
            }
            Event::Install { app, state, .. } => match self.handles.get_mut(&app) {
                Some(KvServe::Inline(handle)) => {
                    if let Err(error) = handle.install(&state) {
                        tracing::error!(%error, app, "a replicated state could not be installed");
                    }
                }
                Some(KvServe::Threaded(jobs)) => jobs(Job::Install(state)),
                Some(KvServe::Deferred(_)) | None => {
                    tracing::error!(app, "no handle that can install a replicated state");
                }
            },
            Event::SimpleRequest(request) => {
                let (head, body) = match self.simple_handler.as_mut() {
                    Some(SimpleServe::Inline(handler)) => handler(&request),
                    Some(SimpleServe::Deferred(handler)) => {
                        handler(request, self.answers.clone());
                        return;
                    }
                    None => (request.head, Bytes::new()),
                };
                let now = self.now();
                if let Err(error) = self.node.simple_respond(now, request.id, head, body) {
                    tracing::error!(%error, "simple_respond failed");
                }
            }
            Event::BarrierReleased { ticket, missing } => {
                if missing.is_empty() {
                    tracing::debug!(?ticket, "barrier released");
                } else {
                    tracing::warn!(?ticket, ?missing, "barrier released without dead members");
                }
                if self.finalize_ticket == Some(ticket) {
                    self.finalized = Some(Ok(Released { missing }));
                } else if let Some(waiter) = self.barrier_waiters.remove(&ticket) {
                    let _ = waiter.send(Ok(Released { missing }));
                }
            }
            Event::BarrierFailed(ticket, error) => {
                if self.finalize_ticket == Some(ticket) {
                    self.finalized = Some(Err(error));
                } else if let Some(waiter) = self.barrier_waiters.remove(&ticket) {
                    let _ = waiter.send(Err(error.into()));
                }
            }
            Event::RegistrationFailed { scheduler } => {
                tracing::error!(%scheduler, "no scheduler answered; giving up");
                self.registration_failed = Some(scheduler);
                for waiter in self.ready_waiters.drain(..) {
                    let _ = waiter.send(Err(Error::RegistrationFailed { scheduler }));
                }
            }
            Event::NodeDead { id, incarnation } => {
                tracing::warn!(node = %id, incarnation = incarnation.0, "node declared dead");
                let _ = self.events.send(NodeEvent::Dead(id));
            }
            Event::NodeRecovered { id, incarnation } => {
                tracing::info!(node = %id, incarnation = incarnation.0, "node recovered");
                let _ = self.events.send(NodeEvent::Recovered(id));
            }
            Event::Terminated => {
                let _ = self.events.send(NodeEvent::Terminated);
            }
        }
    }

    fn complete(&mut self, customer: CustomerId, ts: Timestamp, result: Result<Completion, Error>) {
        match self.waiters.remove(&(customer, ts)) {
            Some(waiter) => {
                // A wait dropped before the outcome came (timed out,
                // interrupted) leaves it for the next wait.
                if let Err(result) = waiter.send(result) {
                    let node = &self.node;
                    self.outcomes.lock().record(customer, ts, result, |ts| node.is_pending(customer, ts));
                }
            }
            None => {
                let node = &self.node;
                self.outcomes.lock().record(customer, ts, result, |ts| node.is_pending(customer, ts));
            }
        }
    }

    fn publish_info(&mut self) {
        let node = &self.node;
        let info = Info {
            id: node.id(),
            rank: node.rank(),
            role: node.role(),
            phase: node.phase(),
            num_servers: node.num_servers(),
            num_workers: node.num_workers(),
            alive_servers: node.membership().alive(Group::SERVERS).count() as u32,
            alive_workers: node.membership().alive(Group::WORKERS).count() as u32,
        };
        let epoch = node.membership().epoch();
        self.info.send_if_modified(|current| {
            // The replica table changes only with the epoch: compared (and
            // copied) only then, not after every input.
            let table_changed = current.epoch != epoch;
            if table_changed {
                current.epoch = epoch;
                current.chains = node.membership().chains().clone();
            }
            let changed = current.info != info || table_changed;
            current.info = info;
            changed
        });
    }

    /// Fails everything still waiting, lets writers flush and close, and
    /// only then tells `finalize` callers the node is done.
    async fn shutdown(&mut self) {
        for (_, waiter) in std::mem::take(&mut self.waiters) {
            let _ = waiter.send(Err(RequestError::Terminated.into()));
        }
        for (_, waiter) in std::mem::take(&mut self.barrier_waiters) {
            let _ = waiter.send(Err(RequestError::Terminated.into()));
        }
        for waiter in std::mem::take(&mut self.ready_waiters) {
            let _ = waiter.send(Err(self.not_ready()));
        }
        // Dropping the senders ends each writer after it flushed its queue.
        self.writers.clear();
        // A writer stuck connecting to a dead peer must not hold the
        // shutdown forever: after the failure timeout its frames are moot.
        let flush_bound = self.node.config().heartbeat_timeout;
        let writers = std::mem::take(&mut self.writer_tasks);
        let _ = tokio::time::timeout(flush_bound, async {
            for task in writers {
                let _ = task.await;
            }
        })
        .await;
        let ended = self.ended();
        self.outcomes.lock().set_ended(ended.clone());
        for waiter in std::mem::take(&mut self.terminated_waiters) {
            let _ = waiter.send(ended.clone().outcome());
        }
        self.alive = None;
        self.publish_info();
    }

    /// How the node ended, for `finalize` callers. A finalize cut short by
    /// the scheduler's `Terminate` (the release itself was lost) counts as
    /// released, with nobody known to be missing; a node that stopped
    /// without finalizing reports why.
    fn ended(&self) -> Ended {
        if let Some(scheduler) = self.registration_failed {
            return Ended::NoScheduler(scheduler);
        }
        match (&self.finalized, self.node.ended_by()) {
            (Some(Ok(released)), _) => Ended::Finalized(released.clone()),
            (Some(Err(RequestError::Terminated)), None) | (None, None) => Ended::Finalized(Released::default()),
            (Some(Err(error)), None) | (_, Some(error)) => Ended::Failed(error.clone()),
        }
    }

    /// Why a node that stopped never became ready.
    fn not_ready(&self) -> Error {
        match self.registration_failed {
            Some(scheduler) => Error::RegistrationFailed { scheduler },
            None => Error::Shutdown,
        }
    }
}

async fn sleep(until: Option<tokio::time::Instant>) {
    match until {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
