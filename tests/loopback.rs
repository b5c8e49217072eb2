//! Real TCP on 127.0.0.1 (ports from the OS): the shell and the core
//! together. Waits are bounded from outside only to turn a hang into a
//! failure; nothing sleeps to synchronise.

use std::time::Duration;

use pslite::{CustomerId, KvWorker, LocalCluster, Role};

const BOUND: Duration = Duration::from_secs(60);

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
    let pulled: Vec<f32> = bounded(cluster.worker(0).pull_wait(&keys)).await.unwrap();
    assert_eq!(pulled, vec![6.0; keys.len()]);
    let after = bounded(cluster.worker(1).push_pull_wait(&keys, &[1.0f32; 6])).await.unwrap();
    assert_eq!(after, vec![7.0; keys.len()]);
    let infos: Vec<_> = cluster.nodes().map(|n| n.info()).collect();
    assert_eq!(infos.iter().filter(|i| i.role == Role::Worker).count(), 3);
    let mut ids: Vec<u32> = infos.iter().map(|i| i.id.get()).collect();
    ids.sort();
    assert_eq!(ids, vec![1, 8, 9, 10, 11, 13]);
    assert!(bounded(cluster.finalize()).await.unwrap().is_complete(), "nobody was missing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variable_lengths_zero_copy_and_two_customers_on_one_node() {
    use pslite::{Keys, Lens, Values};
    let cluster = bounded(LocalCluster::start(2, 1)).await.unwrap();
    let node = cluster.workers[0].clone();
    let first = KvWorker::new(node.clone(), CustomerId::new(0, 0));
    let second = KvWorker::<f32>::new(node.clone(), CustomerId::new(0, 1));
    let keys = [3, u64::MAX / 2 + 5, u64::MAX];
    let lens = [2u32, 0, 3];
    let values = [1.0f32, 2.0, 3.0, 4.0, 5.0];
    let ts = bounded(first.push_with(&keys, &values, Some(&lens), 0)).await.unwrap();
    bounded(first.wait(ts)).await.unwrap();
    // The same timestamp number exists for the second customer, unrelated.
    let ts2 = bounded(second.zpush(Keys::from_slice(&[1]), Values::from_slice(&[9.0f32]).as_bytes().clone(), None, 0))
        .await
        .unwrap();
    assert_eq!(ts, ts2, "timestamps are per customer");
    bounded(second.wait(ts2)).await.unwrap();
    let ts = bounded(first.zpush_pull(
        Keys::from_slice(&keys),
        Values::from_slice(&values).as_bytes().clone(),
        Some(Lens::from_slice(&lens)),
        0,
    ))
    .await
    .unwrap();
    let pulled = bounded(first.wait_pull(ts)).await.unwrap();
    assert_eq!(pulled.to_vec(), vec![2.0f32, 4.0, 6.0, 8.0, 10.0]);
    assert_eq!(pulled.lens().map(|l| l.to_vec()), Some(lens.to_vec()));
    assert_eq!(bounded(second.pull_wait(&[1])).await.unwrap(), vec![9.0]);
    assert!(bounded(cluster.finalize()).await.unwrap().is_complete(), "nobody was missing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_app_reaches_every_member_of_a_group() {
    use bytes::Bytes;
    use pslite::Group;
    let cluster = bounded(LocalCluster::start(2, 2)).await.unwrap();
    for node in &cluster.servers {
        bounded(node.set_simple_handler(|r| (r.head * 10, r.body.clone()))).await.unwrap();
    }
    let worker = &cluster.workers[0];
    let replies =
        bounded(worker.simple(CustomerId::new(1, 0), Group::SERVERS, 4, Bytes::from_static(b"hi"))).await.unwrap();
    let from: Vec<u32> = replies.iter().map(|r| r.from.get()).collect();
    assert_eq!(from, vec![8, 10]);
    assert!(replies.iter().all(|r| r.head == 40 && r.body == "hi"));
    let everyone = bounded(worker.simple(CustomerId::new(1, 0), Group::ALL, 1, Bytes::new())).await.unwrap();
    assert_eq!(everyone.len(), 5, "scheduler, 2 servers, 2 workers (the sender included)");
    assert!(bounded(cluster.finalize()).await.unwrap().is_complete(), "nobody was missing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalize_before_the_cluster_forms_is_an_error_not_a_hang() {
    let scheduler_settings = LocalCluster::settings(1, 1);
    let scheduler = bounded(pslite::start(scheduler_settings.clone())).await.unwrap();
    let mut worker_settings = scheduler_settings.for_role(Role::Worker);
    worker_settings.core.scheduler_addr = scheduler.local_addr();
    let worker = bounded(pslite::start(worker_settings)).await.unwrap();
    // No server ever joins, so the cluster never forms.
    let result = bounded(worker.finalize()).await;
    assert!(
        matches!(result, Err(pslite::Error::Request(pslite::RequestError::ApiMisuse(pslite::ApiMisuse::NotReady)))),
        "{result:?}"
    );
    worker.abort();
    scheduler.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_nobody_waits_for_complete_and_an_unknown_wait_is_an_error() {
    let cluster = bounded(LocalCluster::start(1, 1)).await.unwrap();
    let worker = cluster.worker(0);
    let mut first = None;
    let mut last = None;
    for i in 0..2000u64 {
        let ts = bounded(worker.push(&[i % 7, u64::MAX], &[1.0f32, 1.0])).await.unwrap();
        first.get_or_insert(ts);
        last = Some(ts);
    }
    // Waiting late, in any order, still reports success.
    bounded(worker.wait(last.unwrap())).await.unwrap();
    bounded(worker.wait(first.unwrap())).await.unwrap();
    assert_eq!(bounded(worker.pull_wait(&[u64::MAX])).await.unwrap(), vec![2000.0]);
    // A timestamp that was never issued cannot complete: an error, not a hang.
    let never = pslite::Timestamp(1_000_000);
    assert!(matches!(
        bounded(worker.wait(never)).await,
        Err(pslite::Error::Request(pslite::RequestError::ApiMisuse(pslite::ApiMisuse::UnknownTimestamp {
            ts: 1_000_000
        })))
    ));
    assert!(bounded(cluster.finalize()).await.unwrap().is_complete(), "nobody was missing");
}

/// Many tasks share one customer, and half of their pushes are refused by
/// the store (a key's length is fixed by its first push): every wait must
/// report its own request's outcome, whether `wait` finds it already
/// recorded or asks the node's task, and however the tasks interleave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_of_one_customer_each_get_their_own_outcome() {
    let cluster = bounded(LocalCluster::start(1, 1)).await.unwrap();
    let worker = cluster.worker(0);
    bounded(async { worker.wait(worker.push(&[7], &[0.0f32]).await.unwrap()).await }).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let worker = worker.clone();
            tokio::spawn(async move {
                let mut accepted = 0u32;
                for round in 0..30u32 {
                    let mut issued = Vec::new();
                    for i in 0..10u32 {
                        // One value per key is accepted, two are refused.
                        let refused = (task + round + i) % 2 == 0;
                        let values: &[f32] = if refused { &[1.0, 1.0] } else { &[1.0] };
                        issued.push((worker.push(&[7], values).await.unwrap(), refused));
                        accepted += u32::from(!refused);
                    }
                    // The last first: by the time it is answered the others
                    // mostly are too, and their waits find recorded outcomes.
                    let (last, refused) = issued.pop().unwrap();
                    assert_eq!(worker.wait(last).await.is_err(), refused, "task {task}, round {round}, last");
                    for (i, (ts, refused)) in issued.into_iter().enumerate() {
                        let outcome = worker.wait(ts).await;
                        assert_eq!(outcome.is_err(), refused, "task {task}, round {round}, push {i}: {outcome:?}");
                    }
                }
                accepted
            })
        })
        .collect();
    let mut accepted = 0;
    for task in tasks {
        accepted += bounded(task).await.unwrap();
    }
    assert_eq!(bounded(worker.pull_wait(&[7])).await.unwrap(), vec![accepted as f32]);
    assert!(bounded(cluster.finalize()).await.unwrap().is_complete(), "nobody was missing");
}

/// `info()` right after `wait_ready` is what the caller acts on (a worker
/// takes its rank to pick its part of the data), so it must already hold
/// the id and rank. Several small clusters, because a stale read depends
/// on how the node's task and the caller interleave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_wait_ready_returns_every_node_knows_its_id_and_rank() {
    for _ in 0..10 {
        let scheduler_settings = LocalCluster::settings(1, 2);
        let scheduler = bounded(pslite::start(scheduler_settings.clone())).await.unwrap();
        let mut settings = scheduler_settings.for_role(Role::Worker);
        settings.core.scheduler_addr = scheduler.local_addr();
        let server = bounded(pslite::start(settings.for_role(Role::Server))).await.unwrap();
        let workers =
            [bounded(pslite::start(settings.clone())).await.unwrap(), bounded(pslite::start(settings)).await.unwrap()];
        let nodes = [&scheduler, &server, &workers[0], &workers[1]];
        let infos = bounded(async {
            let ready = nodes.map(|node| async move {
                node.wait_ready().await.unwrap();
                node.info()
            });
            let [a, b, c, d] = ready;
            let (a, b, c, d) = tokio::join!(a, b, c, d);
            [a, b, c, d]
        })
        .await;
        for info in infos {
            assert!(info.id != pslite::NodeId::UNASSIGNED && info.rank.is_some(), "{info:?}");
        }
        for node in nodes {
            node.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_tells_the_generation_of_its_next_barrier() {
    let cluster = bounded(LocalCluster::start(1, 2)).await.unwrap();
    let workers: Vec<_> = cluster.workers.clone();
    for worker in &workers {
        assert_eq!(bounded(worker.next_barrier_generation(pslite::Group::WORKERS)).await.unwrap(), 0);
    }
    let barriers: Vec<_> = workers
        .iter()
        .map(|w| {
            let w = w.clone();
            tokio::spawn(async move { w.barrier(pslite::Group::WORKERS).await })
        })
        .collect();
    for barrier in barriers {
        assert!(bounded(barrier).await.unwrap().unwrap().is_complete());
    }
    for worker in &workers {
        assert_eq!(bounded(worker.next_barrier_generation(pslite::Group::WORKERS)).await.unwrap(), 1);
        assert_eq!(bounded(worker.next_barrier_generation(pslite::Group::ALL)).await.unwrap(), 0);
    }
    assert!(bounded(cluster.finalize()).await.unwrap().is_complete());
}

/// A typed worker and a raw one share a customer: waiting for `i32`s on a
/// pull the raw one issued for `f32`s is the caller's mistake, named as
/// such (not blamed on a server), and the values stay readable as issued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_another_value_type_than_issued_is_a_misuse() {
    let cluster = bounded(LocalCluster::start(1, 1)).await.unwrap();
    let (typed, raw) = (cluster.worker::<i32>(0), cluster.raw_worker(0));
    let keys = pslite::Keys::from_slice(&[3]);
    let ts = bounded(raw.zpull(keys.clone(), pslite::DType::F32, 0)).await.unwrap();
    let error = bounded(typed.wait_pull(ts)).await.unwrap_err();
    assert!(
        matches!(error, pslite::Error::ValueType { asked: pslite::DType::I32, issued: pslite::DType::F32 }),
        "{error}"
    );
    let ts = bounded(raw.zpull(keys, pslite::DType::F32, 0)).await.unwrap();
    assert_eq!(bounded(cluster.worker::<f32>(0).wait_pull(ts)).await.unwrap().to_vec(), [0.0]);
    assert!(bounded(cluster.finalize()).await.unwrap().is_complete());
}
