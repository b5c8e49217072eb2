//! A server dies in the middle of a run: waits end in errors, within the
//! failure timeout, and nothing hangs. Bounds here only turn a hang into a
//! failure; nothing sleeps to synchronise.

use std::time::Duration;

use pslite::{CustomerId, KvStore, KvWorker, LocalCluster, NodeEvent, RequestError};

/// Generous outer bound: far above heartbeat_timeout, so a loaded machine
/// cannot fail the test, but a hang still does.
const BOUND: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_turns_waits_into_errors() {
    let mut settings = LocalCluster::settings(2, 1);
    settings.core = settings.core.heartbeat(Duration::from_millis(200), Duration::from_millis(3000));
    let cluster =
        tokio::time::timeout(BOUND, LocalCluster::start_with(settings, Box::new(|_| KvStore::<f32>::new().into())))
            .await
            .expect("cluster formed")
            .unwrap();
    let worker = KvWorker::new(cluster.workers[0].clone(), CustomerId::DEFAULT);
    let keys = [1u64, u64::MAX];
    let ts = tokio::time::timeout(BOUND, worker.push(&keys, &[1.0f32, 1.0])).await.unwrap().unwrap();
    tokio::time::timeout(BOUND, worker.wait(ts)).await.unwrap().unwrap();

    let mut news = cluster.workers[0].events();
    let victim = cluster.servers[1].info().id;
    let victim_index = cluster.servers.iter().position(|s| s.info().id == victim).unwrap();
    cluster.servers[victim_index].abort();
    // Requests keep being issued until one fails; each wait must end.
    let outcome = tokio::time::timeout(BOUND, async {
        loop {
            match worker.push(&keys, &[1.0f32, 1.0]).await {
                Err(error) => return error,
                Ok(ts) => {
                    if let Err(error) = worker.wait(ts).await {
                        return error;
                    }
                }
            }
        }
    })
    .await
    .expect("a request to the dead server ended in an error within the bound");
    let dead = match outcome {
        pslite::Error::Request(RequestError::PeerDead(id)) => id,
        other => panic!("expected PeerDead, got {other:?}"),
    };
    assert!(dead == victim || cluster.servers.iter().any(|s| s.info().id == dead));
    // Every node hears of the death.
    let heard = tokio::time::timeout(BOUND, async {
        loop {
            if let Ok(NodeEvent::Dead(id)) = news.recv().await {
                return id;
            }
        }
    })
    .await
    .expect("the worker heard of the death");
    assert_eq!(heard, victim);
    // The live server still answers for its own keys.
    let survivor_keys = if victim.get() == 8 { [u64::MAX] } else { [1] };
    let value = tokio::time::timeout(BOUND, worker.pull_wait(&survivor_keys)).await.unwrap().unwrap();
    assert!(value[0] >= 1.0);
}
