//! Server handles that take long, on real TCP over loopback.
//!
//! Run off the node's task (threaded or deferred), a slow handle delays
//! neither the node's heartbeats nor other applications' requests; run
//! inline, the very same handle gets its server declared dead, which is
//! what makes the first test mean something. Answers may come later, out
//! of order, or never (a dropped responder refuses), and no wait hangs.
//!
//! The handles sleep because slowness is what is under test; nothing
//! sleeps to synchronise (a gate and channels order the steps), and no
//! assertion is about time. Waits are bounded from outside only to turn
//! a hang into a failure.

use std::time::Duration;

use bytes::Bytes;
use pslite_core::{CustomerId, Group, KvHandle, KvOp, KvStore, RequestError, Response, ServerRequest, Values};
use pslite_io::{Error, KvWorker, LocalCluster, NodeEvent, Responder, ServerHandle, Settings};
use tokio::sync::{broadcast, mpsc, oneshot};

/// Far above anything a loaded machine needs, so only a hang fails.
const BOUND: Duration = Duration::from_secs(60);
/// How long the slow handle takes per request.
const SLOW: Duration = Duration::from_secs(2);
/// A server silent for this long is declared dead: well under [`SLOW`],
/// so one slow request run inline silences its server long enough.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(1000);
const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(200);

/// Application 1: the slow one (application 0 is the default store).
const SLOW_APP: CustomerId = CustomerId::new(1, 0);
const KEYS: [u64; 2] = [1, u64::MAX];

#[track_caller]
fn bounded<T>(future: impl std::future::Future<Output = T>) -> impl std::future::Future<Output = T> {
    let caller = std::panic::Location::caller();
    async move {
        match tokio::time::timeout(BOUND, future).await {
            Ok(out) => out,
            Err(_) => panic!("operation at {caller} did not finish in {BOUND:?}"),
        }
    }
}

fn settings(servers: u32, workers: u32) -> Settings {
    let mut settings = LocalCluster::settings(servers, workers);
    settings.core = settings.core.heartbeat(HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT);
    settings
}

async fn start(servers: u32, workers: u32) -> LocalCluster {
    let factory = Box::new(|_| ServerHandle::from(KvStore::<f32>::new()));
    bounded(LocalCluster::start_with(settings(servers, workers), factory)).await.unwrap()
}

/// The default store, slowed: each request first reports that it
/// started, then waits for the test to open the gate (dropping its
/// sender opens it for good), then takes [`SLOW`].
struct SlowStore {
    store: KvStore<f32>,
    started: mpsc::UnboundedSender<KvOp>,
    gate: std::sync::mpsc::Receiver<()>,
}

impl KvHandle for SlowStore {
    fn handle(&mut self, request: &ServerRequest) -> Response {
        let _ = self.started.send(request.op);
        let _ = self.gate.recv();
        std::thread::sleep(SLOW);
        self.store.handle(request)
    }
}

/// A slow store, the receiver of its start reports, and its gate.
fn slow_store() -> (SlowStore, mpsc::UnboundedReceiver<KvOp>, std::sync::mpsc::Sender<()>) {
    let (started, started_rx) = mpsc::unbounded_channel();
    let (gate, gate_rx) = std::sync::mpsc::channel();
    (SlowStore { store: KvStore::new(), started, gate: gate_rx }, started_rx, gate)
}

/// Every node's membership news, from now on.
fn news(cluster: &LocalCluster) -> Vec<broadcast::Receiver<NodeEvent>> {
    cluster.nodes().map(|node| node.events()).collect()
}

/// Panics if any node heard of a death.
fn assert_nobody_died(news: &mut [broadcast::Receiver<NodeEvent>]) {
    for receiver in news {
        loop {
            match receiver.try_recv() {
                Ok(NodeEvent::Dead(id)) => panic!("{id} was declared dead"),
                Ok(_) => {}
                Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed) => break,
                Err(error) => panic!("membership news lost: {error}"),
            }
        }
    }
}

/// Pushes `value` on application 0 and pulls it back.
async fn serve_app0_round(worker: &KvWorker<f32>, round: f32) {
    let ts = bounded(worker.push(&KEYS, &[1.0f32, 1.0])).await.unwrap();
    bounded(worker.wait(ts)).await.unwrap();
    assert_eq!(bounded(worker.pull_wait(&KEYS)).await.unwrap(), vec![round; 2]);
}

fn refusal_reason(error: Error) -> String {
    match error {
        Error::Request(RequestError::Refused { reason, .. }) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_threaded_handle_delays_neither_heartbeats_nor_other_apps() {
    let cluster = start(1, 1).await;
    let mut news = news(&cluster);
    let (slow, mut started, gate) = slow_store();
    bounded(cluster.servers[0].set_handle(SLOW_APP.app, ServerHandle::threaded(slow))).await.unwrap();
    let slow_worker = KvWorker::<f32>::new(cluster.workers[0].clone(), SLOW_APP);
    let first = bounded(slow_worker.push(&KEYS, &[1.0f32, 2.0])).await.unwrap();
    let second = bounded(slow_worker.push(&KEYS, &[10.0f32, 20.0])).await.unwrap();
    let pull = bounded(slow_worker.pull(&KEYS)).await.unwrap();

    // The slow handle holds the first request at its gate, so every
    // round of application 0 below completes while it is outstanding.
    assert_eq!(bounded(started.recv()).await, Some(KvOp::Push));
    let app0 = cluster.worker(0);
    for round in 1..=3 {
        serve_app0_round(&app0, round as f32).await;
    }

    // Open: three requests in a row at SLOW each, several heartbeat
    // timeouts without the handle letting go.
    drop(gate);
    bounded(slow_worker.wait(first)).await.unwrap();
    bounded(slow_worker.wait(second)).await.unwrap();
    let pulled = bounded(slow_worker.wait_pull(pull)).await.unwrap();
    assert_eq!(pulled.to_vec(), vec![11.0, 22.0], "the handle saw both pushes, in order");
    assert_eq!(started.try_recv().ok(), Some(KvOp::Push));
    assert_eq!(started.try_recv().ok(), Some(KvOp::Pull));

    assert_nobody_died(&mut news);
    assert_eq!(cluster.scheduler.info().alive_servers, 1);
    assert!(bounded(cluster.finalize()).await.unwrap().is_complete(), "nobody was missing");
}

/// The control for the test above: the same handle inline blocks its
/// node's task, heartbeats stop, and the scheduler declares the server
/// dead. If this stopped happening, the test above would prove nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_slow_handle_inline_gets_its_server_declared_dead() {
    let cluster = start(1, 1).await;
    let mut scheduler_news = cluster.scheduler.events();
    let (slow, _started, gate) = slow_store();
    drop(gate);
    bounded(cluster.servers[0].set_handle(SLOW_APP.app, slow)).await.unwrap();
    let slow_worker = KvWorker::<f32>::new(cluster.workers[0].clone(), SLOW_APP);
    // Two requests: the server's task is held for twice SLOW.
    for _ in 0..2 {
        bounded(slow_worker.push(&KEYS, &[1.0f32, 2.0])).await.unwrap();
    }
    let dead = bounded(async {
        loop {
            if let NodeEvent::Dead(id) = scheduler_news.recv().await.expect("the scheduler's news") {
                return id;
            }
        }
    })
    .await;
    assert_eq!(dead, cluster.servers[0].info().id);
    for node in cluster.nodes() {
        node.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_handle_answers_out_of_order_from_another_thread() {
    let cluster = start(1, 1).await;
    let (queue, mut taken) = mpsc::unbounded_channel::<(ServerRequest, Responder)>();
    let deferred = ServerHandle::deferred(move |request, responder| {
        queue.send((request, responder)).expect("the test holds the queue");
    });
    bounded(cluster.servers[0].set_handle(SLOW_APP.app, deferred)).await.unwrap();
    let worker = KvWorker::<f32>::new(cluster.workers[0].clone(), SLOW_APP);
    let keys = [3u64, 5, 7];
    let mut pulls = Vec::new();
    for key in keys {
        pulls.push(bounded(worker.pull(&[key])).await.unwrap());
    }
    let mut held = Vec::new();
    for _ in keys {
        held.push(bounded(taken.recv()).await.expect("a request"));
    }
    // Nothing is answered yet, and application 0 is served meanwhile.
    serve_app0_round(&cluster.worker(0), 1.0).await;

    // The last request first, from a thread of the test's own.
    let answered = std::thread::spawn(move || {
        held.into_iter()
            .rev()
            .map(|(request, responder)| {
                let key = request.keys.get(0);
                let response = Response::Ok { values: Values::from_slice(&[key as f32 * 10.0]), lens: None };
                (key, responder.respond(response))
            })
            .collect::<Vec<_>>()
    })
    .join()
    .expect("the answering thread");
    let order: Vec<u64> = answered.iter().map(|(key, _)| *key).collect();
    assert_eq!(order, vec![7, 5, 3]);
    assert!(answered.iter().all(|(_, result)| result.is_ok()), "{answered:?}");
    for (key, ts) in keys.into_iter().zip(pulls) {
        let pulled = bounded(worker.wait_pull(ts)).await.unwrap();
        assert_eq!(pulled.to_vec(), vec![key as f32 * 10.0]);
    }
    assert!(bounded(cluster.finalize()).await.unwrap().is_complete(), "nobody was missing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_responder_fails_the_wait_instead_of_hanging() {
    let cluster = start(1, 1).await;
    let forgetful = ServerHandle::deferred(|_request, responder| drop(responder));
    bounded(cluster.servers[0].set_handle(SLOW_APP.app, forgetful)).await.unwrap();
    let worker = KvWorker::<f32>::new(cluster.workers[0].clone(), SLOW_APP);
    let ts = bounded(worker.push(&KEYS, &[1.0f32, 1.0])).await.unwrap();
    let reason = refusal_reason(bounded(worker.wait(ts)).await.unwrap_err());
    assert!(reason.contains("without answering"), "{reason}");
    assert!(bounded(cluster.finalize()).await.unwrap().is_complete(), "nobody was missing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_threaded_handle_refuses_and_its_node_serves_on() {
    struct Buggy;
    impl KvHandle for Buggy {
        fn handle(&mut self, _request: &ServerRequest) -> Response {
            panic!("a bug in the handle (this panic is expected by the test)");
        }
    }
    let cluster = start(1, 1).await;
    bounded(cluster.servers[0].set_handle(SLOW_APP.app, ServerHandle::threaded(Buggy))).await.unwrap();
    let worker = KvWorker::<f32>::new(cluster.workers[0].clone(), SLOW_APP);
    // The request it panicked on, then one after its thread is gone.
    for _ in 0..2 {
        let ts = bounded(worker.push(&KEYS, &[1.0f32, 1.0])).await.unwrap();
        let reason = refusal_reason(bounded(worker.wait(ts)).await.unwrap_err());
        assert!(reason.contains("without answering"), "{reason}");
    }
    serve_app0_round(&cluster.worker(0), 1.0).await;
    assert!(bounded(cluster.finalize()).await.unwrap().is_complete(), "nobody was missing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_responder_that_outlives_its_node_reports_shutdown() {
    let cluster = start(1, 1).await;
    let (queue, mut taken) = mpsc::unbounded_channel::<Responder>();
    let keeper = ServerHandle::deferred(move |_request, responder| {
        queue.send(responder).expect("the test holds the queue");
    });
    bounded(cluster.servers[0].set_handle(SLOW_APP.app, keeper)).await.unwrap();
    let worker = KvWorker::<f32>::new(cluster.workers[0].clone(), SLOW_APP);
    let ts = bounded(worker.push(&KEYS, &[1.0f32, 1.0])).await.unwrap();
    let responder = bounded(taken.recv()).await.expect("a request");
    let waiter = tokio::spawn(async move { worker.wait(ts).await });
    // Every node's finalize returns once its task has stopped.
    assert!(bounded(cluster.finalize()).await.unwrap().is_complete(), "nobody was missing");
    assert!(matches!(responder.respond(Response::ack()), Err(Error::Shutdown)));
    let outcome = bounded(waiter).await.expect("the waiting task");
    assert!(outcome.is_err(), "the unanswered push ended in an error: {outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_threaded_handle_ends_when_replaced_and_when_its_node_ends() {
    /// A store that says so when it is dropped, which its thread does as
    /// it ends.
    struct Watched {
        store: KvStore<f32>,
        _alive: oneshot::Sender<()>,
    }
    impl KvHandle for Watched {
        fn handle(&mut self, request: &ServerRequest) -> Response {
            self.store.handle(request)
        }
    }
    let watched = || {
        let (alive, gone) = oneshot::channel();
        (Watched { store: KvStore::new(), _alive: alive }, gone)
    };
    let cluster = start(1, 1).await;
    let server = &cluster.servers[0];
    let worker = KvWorker::<f32>::new(cluster.workers[0].clone(), SLOW_APP);

    let (first, first_gone) = watched();
    bounded(server.set_handle(SLOW_APP.app, ServerHandle::threaded(first))).await.unwrap();
    assert_eq!(bounded(worker.push_pull_wait(&KEYS, &[1.0f32, 2.0])).await.unwrap(), vec![1.0, 2.0]);
    let (second, second_gone) = watched();
    bounded(server.set_handle(SLOW_APP.app, ServerHandle::threaded(second))).await.unwrap();
    assert!(bounded(first_gone).await.is_err(), "the replaced handle's thread ended");
    assert_eq!(bounded(worker.push_pull_wait(&KEYS, &[1.0f32, 2.0])).await.unwrap(), vec![1.0, 2.0]);

    server.abort();
    assert!(bounded(second_gone).await.is_err(), "the thread ended with its node");
    for node in cluster.nodes() {
        node.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_threaded_simple_handler_answers_from_its_thread() {
    let cluster = start(2, 1).await;
    for server in &cluster.servers {
        bounded(server.set_threaded_simple_handler(|request| {
            let on = std::thread::current().name().unwrap_or_default().to_owned();
            (request.head * 10, Bytes::from(on))
        }))
        .await
        .unwrap();
    }
    let worker = &cluster.workers[0];
    let replies =
        bounded(worker.simple(CustomerId::new(2, 0), Group::SERVERS, 4, Bytes::from_static(b"hi"))).await.unwrap();
    assert_eq!(replies.len(), 2);
    assert!(replies.iter().all(|reply| reply.head == 40 && reply.body == "pslite-simple-handler"), "{replies:?}");
    assert!(bounded(cluster.finalize()).await.unwrap().is_complete(), "nobody was missing");
}
