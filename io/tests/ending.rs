//! What `finalize` says about a node that already stopped: how it ended,
//! never a made-up success. Bounds only turn a hang into a failure.

use std::net::Ipv4Addr;
use std::time::Duration;

use pslite_core::Role;
use pslite_io::{Error, LocalCluster, Settings};

const BOUND: Duration = Duration::from_secs(60);

/// Returns once `node`'s task has ended (`what` names it in a failure);
/// yields meanwhile, bounded so a task that never ends fails the test.
async fn until_closed(node: &pslite_io::NodeHandle, what: &str) {
    let ended = tokio::time::timeout(BOUND, async {
        while !node.is_closed() {
            tokio::task::yield_now().await;
        }
    });
    ended.await.unwrap_or_else(|_| panic!("{what}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalize_after_a_failed_registration_reports_the_missing_scheduler() {
    // An address nobody listens on: bound by the OS, then closed.
    let closed = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap();
    let mut settings = Settings::new(Role::Worker, closed).cluster(1, 1);
    settings.core.register_retry_interval = Duration::from_millis(20);
    settings.core.register_timeout = Duration::from_millis(200);
    let node = pslite_io::start(settings).await.unwrap();
    let ready = tokio::time::timeout(BOUND, node.wait_ready()).await.expect("registration gives up");
    assert!(matches!(ready, Err(Error::RegistrationFailed { scheduler }) if scheduler == closed), "{ready:?}");
    // Once the node's task has stopped, finalize still says why.
    until_closed(&node, "the node's task ends").await;
    let finalized = tokio::time::timeout(BOUND, node.finalize()).await.unwrap();
    assert!(matches!(finalized, Err(Error::RegistrationFailed { scheduler }) if scheduler == closed), "{finalized:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalize_again_after_a_clean_finalize_repeats_its_report_and_an_aborted_node_says_shutdown() {
    let cluster = tokio::time::timeout(BOUND, LocalCluster::start(1, 1)).await.unwrap().unwrap();
    let worker = cluster.workers[0].clone();
    assert!(tokio::time::timeout(BOUND, cluster.finalize()).await.unwrap().unwrap().is_complete());
    until_closed(&worker, "the worker's task ends after finalize").await;
    assert!(worker.finalize().await.unwrap().is_complete(), "a second finalize repeats the first's report");

    let cluster = tokio::time::timeout(BOUND, LocalCluster::start(1, 1)).await.unwrap().unwrap();
    let aborted = cluster.workers[0].clone();
    aborted.abort();
    // The rest of that cluster is simply dropped.
    until_closed(&aborted, "an aborted node's task ends").await;
    assert!(matches!(aborted.finalize().await, Err(Error::Shutdown)), "a crash reports no success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_given_up_on_leaves_the_outcome_for_the_next_wait() {
    use pslite_core::{Response, Values};
    use pslite_io::{KvWorker, Responder, ServerHandle};
    let cluster = tokio::time::timeout(BOUND, LocalCluster::start(1, 1)).await.unwrap().unwrap();
    // Pulls on app 1 are held here until the test answers them.
    let (held_tx, mut held) = tokio::sync::mpsc::unbounded_channel::<Responder>();
    let handle = ServerHandle::deferred(move |_request, responder| {
        let _ = held_tx.send(responder);
    });
    cluster.servers[0].set_handle(1, handle).await.unwrap();
    let worker = KvWorker::<f32>::new(cluster.workers[0].clone(), pslite_core::CustomerId::new(1, 0));
    let ts = worker.pull(&[7]).await.unwrap();
    let responder = tokio::time::timeout(BOUND, held.recv()).await.unwrap().unwrap();
    // The answer is held, so this wait cannot finish: it is given up on.
    assert!(tokio::time::timeout(Duration::ZERO, worker.wait_pull(ts)).await.is_err());
    responder.respond(Response::Ok { values: Values::from_slice(&[4.5f32]), lens: None }).unwrap();
    let pulled = tokio::time::timeout(BOUND, worker.wait_pull(ts)).await.unwrap().unwrap();
    assert_eq!(pulled.to_vec(), vec![4.5], "the outcome waited for the next wait");
    assert!(tokio::time::timeout(BOUND, cluster.finalize()).await.unwrap().unwrap().is_complete());
}
