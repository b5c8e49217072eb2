//! Starting a node and talking to its task.
//!
//! [`start`] binds the listener, builds the core `Node`, spawns the driver
//! and returns a cloneable [`NodeHandle`]. Methods send commands to the
//! driver, so callers never share the node: a request is queued without
//! waiting for an answer, and `wait` asks the driver only when the
//! request's outcome is not recorded yet (see `outcomes`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use pslite_core::{CustomerId, Group, KvHandle, Role, SimpleReply, Stats, Target, Timestamp};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::msg::{Command, Completion, Info, NodeEvent, SimpleHandler};
use crate::outcomes::SharedOutcomes;
use crate::settings::Settings;

/// The next timestamp of one customer; see [`NodeHandle::issue`].
pub(crate) type Clock = Arc<Mutex<u32>>;

/// Commands queued to the driver before callers wait.
const COMMAND_QUEUE: usize = 1024;
/// Reads queued from readers to the driver before readers wait; each
/// carries the frames one read completed (at most a read's worth of small
/// frames, or one large frame).
const INBOUND_QUEUE: usize = 512;

/// A running node. Clone it freely; the node lives until `finalize` or
/// until every handle is dropped.
#[derive(Clone, Debug)]
pub struct NodeHandle {
    commands: mpsc::Sender<Command>,
    info: watch::Receiver<Info>,
    events: broadcast::Sender<NodeEvent>,
    local_addr: SocketAddr,
    clocks: Arc<Mutex<BTreeMap<CustomerId, Clock>>>,
    outcomes: SharedOutcomes,
    tasks: Arc<[tokio::task::AbortHandle; 2]>,
}

/// Binds, builds the node and spawns its tasks on the current runtime.
/// Returns once the listener is bound (registration continues in the
/// background; see [`NodeHandle::wait_ready`]).
pub async fn start(settings: Settings) -> Result<NodeHandle> {
    start_with(settings, Vec::new(), None).await
}

/// [`start`] with server handles (by app id) and a SimpleApp handler
/// installed before the node can receive anything.
pub async fn start_with(
    settings: Settings,
    handles: Vec<(u32, Box<dyn KvHandle>)>,
    simple_handler: Option<SimpleHandler>,
) -> Result<NodeHandle> {
    settings.check()?;
    let mut core = settings.core.clone();
    let bind = if core.role == Role::Scheduler { core.scheduler_addr } else { settings.bind_addr };
    let listener = crate::socket::listen(bind)?;
    let bound = listener.local_addr()?;
    if core.role == Role::Scheduler {
        // Port 0 asked the OS for one; the scheduler's address is what it got.
        core.scheduler_addr = bound;
    }
    let advertised_ip = match settings.advertise_host {
        Some(ip) => ip,
        None if bound.ip().is_unspecified() => route_ip_towards(core.scheduler_addr)?,
        None => bound.ip(),
    };
    core.listen_addr = SocketAddr::new(advertised_ip, bound.port());
    let config = core.build()?;
    let seed = settings.seed.unwrap_or_else(entropy_seed);
    tracing::info!(role = %config.role, listen = %config.listen_addr, seed = format!("{seed:#x}"), "starting node");
    let epoch = tokio::time::Instant::now();
    let frame_len_max = config.frame_len_max;
    let role = config.role;
    let node = pslite_core::Node::new(config, seed, pslite_core::Instant::ZERO);
    let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
    let (command_tx, command_rx) = mpsc::channel(COMMAND_QUEUE);
    let initial = Info {
        id: node.id(),
        rank: node.rank(),
        role,
        phase: node.phase(),
        num_servers: node.num_servers(),
        num_workers: node.num_workers(),
        alive_servers: 0,
        alive_workers: 0,
    };
    let (info_tx, info_rx) = watch::channel(initial);
    let (events_tx, _) = broadcast::channel(256);
    let outcomes = SharedOutcomes::default();
    let mut driver = Driver::new(
        node,
        epoch,
        settings.token.clone(),
        inbound_tx.clone(),
        info_tx,
        events_tx.clone(),
        outcomes.clone(),
    );
    for (app, handle) in handles {
        driver.handles.insert(app, handle);
    }
    driver.simple_handler = simple_handler;
    let accept_token = settings.token;
    let accept_inbound = inbound_tx;
    // The driver holds the sender; when it ends, the listener stops too.
    let (driver_alive, mut driver_gone) = oneshot::channel::<()>();
    driver.alive = Some(driver_alive);
    let accept_task = tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        if let Err(error) = crate::socket::configure(&stream) {
                            tracing::debug!(%peer, %error, "could not configure socket");
                        }
                        tokio::spawn(crate::conn::read_loop(
                            stream, peer, accept_token.clone(), frame_len_max, accept_inbound.clone(),
                        ));
                    }
                    Err(error) => tracing::warn!(%error, "accept failed"),
                },
                // The node is gone: stop accepting.
                _ = &mut driver_gone => return,
            }
        }
    });
    let driver_task = tokio::spawn(driver.run(command_rx, inbound_rx));
    let tasks = Arc::new([driver_task.abort_handle(), accept_task.abort_handle()]);
    Ok(NodeHandle {
        commands: command_tx,
        info: info_rx,
        events: events_tx,
        local_addr: bound,
        clocks: Arc::default(),
        outcomes,
        tasks,
    })
}

/// The local address of the route to `target`: what a node bound to a
/// wildcard address advertises. No packet is sent.
fn route_ip_towards(target: SocketAddr) -> std::io::Result<IpAddr> {
    let any: SocketAddr = if target.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let probe = UdpSocket::bind(any)?;
    probe.connect(target)?;
    Ok(probe.local_addr()?.ip())
}

/// A seed from the OS's randomness (via the std hasher's random keys).
fn entropy_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::process::id())
}

impl NodeHandle {
    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.map_err(|_| Error::Shutdown)?;
        rx.await.map_err(|_| Error::Shutdown)
    }

    /// Waits until the cluster is formed (or the node stops).
    pub async fn wait_ready(&self) -> Result<()> {
        self.call(|reply| Command::WaitReady { reply }).await?
    }

    /// The timestamp counter of `customer`, shared by every handle of this
    /// node, so timestamps are unique per customer however many callers.
    pub(crate) fn clock(&self, customer: CustomerId) -> Clock {
        let mut clocks = self.clocks.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(clocks.entry(customer).or_default())
    }

    /// Queues the command `make` builds for the next timestamp of `clock`,
    /// and returns that timestamp: no round trip to the node's task.
    /// Taking the timestamp and queueing happen in one step under the
    /// clock's lock (after room in the queue is reserved, so nothing waits
    /// while holding it), so the task receives each customer's timestamps
    /// in order, which the record of outcomes relies on.
    pub(crate) async fn issue(&self, clock: &Clock, make: impl FnOnce(Timestamp) -> Command) -> Result<Timestamp> {
        let permit = self.commands.reserve().await.map_err(|_| Error::Shutdown)?;
        let mut next = clock.lock().unwrap_or_else(PoisonError::into_inner);
        let ts = Timestamp(*next);
        *next = next.wrapping_add(1);
        permit.send(make(ts));
        Ok(ts)
    }

    /// Waits for request `ts` of `customer`.
    pub async fn wait(&self, customer: CustomerId, ts: Timestamp) -> Result<Completion> {
        // Already in: no need to ask the node's task.
        let taken = self.outcomes.lock().take(customer, ts);
        match taken {
            Some(result) => result,
            None => self.call(|reply| Command::Wait { customer, ts, reply }).await?,
        }
    }

    /// Sends a SimpleApp request; returns its timestamp at once.
    pub async fn simple_request(
        &self,
        customer: CustomerId,
        target: impl Into<Target>,
        head: i32,
        body: Bytes,
    ) -> Result<Timestamp> {
        let target = target.into();
        let clock = self.clock(customer);
        self.issue(&clock, |ts| Command::Simple { customer, ts, target, head, body }).await
    }

    /// Sends a SimpleApp request and waits for every reply.
    pub async fn simple(
        &self,
        customer: CustomerId,
        target: impl Into<Target>,
        head: i32,
        body: Bytes,
    ) -> Result<Vec<SimpleReply>> {
        let ts = self.simple_request(customer, target, head, body).await?;
        match self.wait(customer, ts).await? {
            Completion::Simple(replies) => Ok(replies),
            Completion::Done | Completion::Pulled { .. } => {
                Err(Error::Request(pslite_core::ApiMisuse::UnknownRequest.into()))
            }
        }
    }

    /// A barrier over `group`; returns when every member arrived.
    pub async fn barrier(&self, group: Group) -> Result<()> {
        self.call(|reply| Command::Barrier { group, reply }).await?
    }

    /// A barrier over everyone, then shutdown. Returns once terminated.
    pub async fn finalize(&self) -> Result<()> {
        match self.call(|reply| Command::Finalize { reply }).await {
            Ok(result) => result,
            Err(Error::Shutdown) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Installs (or replaces) the server handle of application `app`;
    /// returns once the node uses it, so no request that arrives later
    /// meets the old one.
    pub async fn set_handle(&self, app: u32, handle: impl KvHandle) -> Result<()> {
        let handle: Box<dyn KvHandle> = Box::new(handle);
        self.call(|reply| Command::SetHandle { app, handle, reply }).await
    }

    /// Installs the SimpleApp handler; returns once the node uses it.
    pub async fn set_simple_handler(
        &self,
        handler: impl FnMut(&pslite_core::SimpleRequest) -> (i32, Bytes) + Send + 'static,
    ) -> Result<()> {
        let handler: SimpleHandler = Box::new(handler);
        self.call(|reply| Command::SetSimpleHandler { handler, reply }).await
    }

    /// The node's counters.
    pub async fn stats(&self) -> Result<Stats> {
        self.call(|reply| Command::Stats { reply }).await
    }

    /// Who this node is, as of now.
    pub fn info(&self) -> Info {
        *self.info.borrow()
    }

    /// Membership news from now on.
    pub fn events(&self) -> broadcast::Receiver<NodeEvent> {
        self.events.subscribe()
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops the node at once, as a crash would: no finalize, no goodbye.
    /// Its listener closes and its connections drop; peers find out through
    /// heartbeats. For failure tests and for abandoning a node.
    pub fn abort(&self) {
        for task in self.tasks.iter() {
            task.abort();
        }
    }

    /// Whether the node's task has ended.
    pub fn is_closed(&self) -> bool {
        self.commands.is_closed()
    }
}
