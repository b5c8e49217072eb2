//! Starting a node, and the accept loop that runs beside it.
//!
//! [`start_with`] binds the listener, builds the core `Node`, wires the
//! channels between the tasks, spawns the driver and the accept loop, and
//! returns a [`NodeHandle`]. The accept loop hands each accepted
//! connection to a reader task (in `conn`), which sends the driver what it
//! reads; it stops when the driver ends. After start-up nothing here talks
//! to the running tasks: the handle does.

use std::net::{IpAddr, SocketAddr, UdpSocket};

use pslite_core::Role;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::conn::ReaderSpares;
use crate::driver::Driver;
use crate::error::Result;
use crate::handle::NodeHandle;
use crate::msg::{Inbound, Info, KvServe, Published, SimpleHandler, SimpleServe};
use crate::outcomes::SharedOutcomes;
use crate::respond::ServerHandle;
use crate::settings::Settings;

/// Commands queued to the driver before callers wait.
const COMMAND_QUEUE: usize = 1024;
/// Reads queued from readers to the driver before readers wait; each
/// carries the frames one read completed (at most a read's worth of small
/// frames, or one large frame).
const INBOUND_QUEUE: usize = 512;

/// Binds, builds the node and spawns its tasks on the current runtime.
/// Returns once the listener is bound (registration continues in the
/// background; see [`NodeHandle::wait_ready`]).
///
/// A process started by `pslite-launch` (or any ps-lite launcher) reads
/// its role and the scheduler's address from the environment:
///
/// ```no_run
/// # async fn run() -> pslite_io::Result<()> {
/// use pslite_io::{KvWorker, Settings};
/// let node = pslite_io::start(Settings::from_env()?).await?;
/// node.wait_ready().await?;
/// // ps-lite's MyRank(): known once the node is ready, e.g. to pick a shard.
/// let rank = node.info().rank.expect("registered");
/// let worker = KvWorker::<f32>::new(node.clone(), pslite_core::CustomerId::DEFAULT);
/// worker.push_wait(&[u64::from(rank.0)], &[1.0]).await?;
/// node.finalize().await?;
/// # Ok(()) }
/// ```
pub async fn start(settings: Settings) -> Result<NodeHandle> {
    start_with(settings, Vec::new(), None).await
}

/// [`start`] with server handles (by app id, each in the mode its
/// [`ServerHandle`] says) and a SimpleApp handler, installed before the
/// node can receive anything.
///
/// ```no_run
/// # async fn run(model: impl pslite_core::KvHandle) -> pslite_io::Result<()> {
/// use pslite_core::KvStore;
/// use pslite_io::{ServerHandle, Settings};
/// // The sums on the node's task; the slow model on a thread of its own.
/// let handles = vec![(0, KvStore::<f32>::new().into()), (1, ServerHandle::threaded(model))];
/// let server = pslite_io::start_with(Settings::from_env()?, handles, None).await?;
/// // Serves until every node finalizes (which needs the cluster formed).
/// server.wait_ready().await?;
/// let released = server.finalize().await?;
/// assert!(released.is_complete(), "{:?} died and were not replaced", released.missing);
/// # Ok(()) }
/// ```
pub async fn start_with(
    settings: Settings,
    handles: Vec<(u32, ServerHandle)>,
    simple_handler: Option<SimpleHandler>,
) -> Result<NodeHandle> {
    let handles = handles.into_iter().map(|(app, handle)| Ok((app, handle.install(app)?))).collect::<Result<_>>()?;
    start_serving(settings, handles, simple_handler.map(SimpleServe::Inline)).await
}

/// [`start_with`] with handles the driver runs as it is told.
pub(crate) async fn start_serving(
    settings: Settings,
    handles: Vec<(u32, KvServe)>,
    simple_handler: Option<SimpleServe>,
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
    let listen_addr = SocketAddr::new(advertised_ip, bound.port());
    core.listen_addr = listen_addr;
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
    let published = Published { info: initial, epoch: 0, chains: pslite_core::Chains::default() };
    let (info_tx, info_rx) = watch::channel(published);
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
    // The driver holds the sender; when it ends, the listener stops too.
    let (driver_alive, driver_gone) = oneshot::channel::<()>();
    driver.alive = Some(driver_alive);
    // This node's readers share one count of spare buffers; see `conn`.
    let spares = ReaderSpares::default();
    let accept_task =
        tokio::spawn(accept_loop(listener, settings.token, frame_len_max, inbound_tx, spares, driver_gone));
    let driver_task = tokio::spawn(driver.run(command_rx, inbound_rx));
    let tasks = [driver_task.abort_handle(), accept_task.abort_handle()];
    Ok(NodeHandle::new(command_tx, info_rx, events_tx, bound, listen_addr, outcomes, tasks))
}

/// Accepts connections and spawns a reader for each, until the driver
/// ends (`driver_gone` resolves). The readers share the node's `spares`.
async fn accept_loop(
    listener: TcpListener,
    token: Option<String>,
    frame_len_max: u32,
    inbound: mpsc::Sender<Inbound>,
    spares: ReaderSpares,
    mut driver_gone: oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if let Err(error) = crate::socket::configure(&stream) {
                        tracing::debug!(%peer, %error, "could not configure socket");
                    }
                    let reader = crate::conn::read_loop(stream, peer, token.clone(), frame_len_max, inbound.clone(), spares.clone());
                    tokio::spawn(reader);
                }
                Err(error) => tracing::warn!(%error, "accept failed"),
            },
            // The node is gone: stop accepting.
            _ = &mut driver_gone => return,
        }
    }
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
