//! Real TCP on 127.0.0.1 (ports from the OS): the shell and the core
//! together. Waits are bounded from outside only to turn a hang into a
//! failure; nothing sleeps to synchronise.

use std::time::Duration;

use pslite::{CustomerId, KvWorker, LocalCluster, Role};

const BOUND: Duration = Duration::from_secs(60);

async fn bounded<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, future).await.expect("operation did not finish in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_cluster_sums_pushes_across_range_boundaries() {
    let cluster = bounded(LocalCluster::start(2, 3)).await.unwrap();
    let boundary = u64::MAX / 2;
    let keys = [0, 7, boundary - 1, boundary, boundary + 1, u64::MAX];
    for (i, node) in cluster.workers.iter().enumerate() {
        let worker = KvWorker::new(node.clone(), CustomerId::DEFAULT);
        let values: Vec<f32> = keys.iter().map(|_| (i + 1) as f32).collect();
        let ts = bounded(worker.push(&keys, &values)).await.unwrap();
        bounded(worker.wait(ts)).await.unwrap();
    }
    let pulled: Vec<f32> = bounded(cluster.worker(0).pull(&keys)).await.unwrap();
    assert_eq!(pulled, vec![6.0; keys.len()]);
    let after = bounded(cluster.worker(1).push_pull(&keys, &[1.0f32; 6])).await.unwrap();
    assert_eq!(after, vec![7.0; keys.len()]);
    let infos: Vec<_> = cluster.nodes().map(|n| n.info()).collect();
    assert_eq!(infos.iter().filter(|i| i.role == Role::Worker).count(), 3);
    let mut ids: Vec<u32> = infos.iter().map(|i| i.id.get()).collect();
    ids.sort();
    assert_eq!(ids, vec![1, 8, 9, 10, 11, 13]);
    bounded(cluster.finalize()).await.unwrap();
}
