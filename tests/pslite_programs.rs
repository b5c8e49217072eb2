//! ps-lite's own test programs (`test_kv_app`, `test_kv_app_multi_workers`,
//! `test_simple_app`), their logic written against pslite's API in ps-lite's
//! blocking style: what a ps-lite user ports first, so it must read the same
//! and give the same answers.

#[path = "common/watchdog.rs"]
mod watchdog;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use pslite::blocking::{KvWorker, Runtime};
use pslite::{CustomerId, Group, Timestamp};
use watchdog::bounded;

/// ps-lite's key spacing: `kMaxKey / num * i + offset`, spread over every
/// server's range.
fn keys(num: u64, offset: u64) -> Vec<u64> {
    (0..num).map(|i| u64::MAX / num * i + offset).collect()
}

/// ps-lite's values: `rand() % 1000` from a per-worker seed (any
/// deterministic integers do; integers keep float sums exact).
fn values(num: usize, seed: u64) -> Vec<f32> {
    let mut rng = pslite::Rng::new(seed + 7);
    (0..num).map(|_| (rng.next_u64() % 1000) as f32).collect()
}

/// The body of `test_kv_app`'s worker: 50 pushes in flight, wait for all,
/// then one pull whose values must be 50 times what was pushed.
fn push_repeat_then_pull(kv: &KvWorker<f32>, offset: u64) {
    const NUM: usize = 10_000;
    const REPEAT: usize = 50;
    let keys = keys(NUM as u64, offset);
    let vals = values(NUM, offset);
    let ts: Vec<Timestamp> = (0..REPEAT).map(|_| kv.push(&keys, &vals).unwrap()).collect();
    for t in ts {
        kv.wait(t).unwrap();
    }
    let ts = kv.pull(&keys).unwrap();
    let rets = kv.wait_pull(ts).unwrap();
    assert_eq!(rets.keys().to_vec(), keys);
    let res: f32 = rets.to_vec().iter().zip(&vals).map(|(r, v)| (r - v * REPEAT as f32).abs()).sum();
    assert!(res / (REPEAT as f32) < 1e-5, "pulled sums differ from {REPEAT} pushes by {res}");
}

#[test]
fn test_kv_app_every_worker_pulls_what_it_pushed() {
    bounded(|| {
        let runtime = Runtime::new(2).unwrap();
        let cluster = runtime.local_cluster(2, 2).unwrap();
        std::thread::scope(|scope| {
            for index in 0..2 {
                let kv = cluster.worker::<f32>(index);
                scope.spawn(move || {
                    // ps-lite offsets keys by `MyRank()`, read right after start.
                    let rank = kv.node().info().rank.expect("a started worker knows its rank");
                    push_repeat_then_pull(&kv, u64::from(rank.0));
                });
            }
        });
        assert!(cluster.finalize().unwrap().is_complete());
    })
}

#[test]
fn test_kv_app_multi_workers_customers_of_one_node_stay_apart() {
    bounded(|| {
        let runtime = Runtime::new(2).unwrap();
        let cluster = runtime.local_cluster(1, 1).unwrap();
        let node = cluster.worker_node(0);
        std::thread::scope(|scope| {
            for customer in 0..4u32 {
                let kv = node.worker::<f32>(CustomerId::new(0, customer));
                scope.spawn(move || push_repeat_then_pull(&kv, u64::from(customer)));
            }
        });
        assert!(cluster.finalize().unwrap().is_complete());
    })
}

#[test]
fn test_simple_app_every_member_answers_every_request() {
    bounded(|| {
        const N: u32 = 100;
        let runtime = Runtime::new(2).unwrap();
        let cluster = runtime.local_cluster(2, 3).unwrap();
        let served = Arc::new(AtomicU32::new(0));
        let members: Vec<_> = (0..2).map(|i| cluster.server(i)).chain((0..3).map(|i| cluster.worker_node(i))).collect();
        for member in &members {
            let served = Arc::clone(&served);
            member
                .set_simple_handler(move |request| {
                    served.fetch_add(1, Ordering::Relaxed);
                    (request.head, request.body.clone())
                })
                .unwrap();
        }
        let scheduler = cluster.scheduler();
        let group = Group::from_bits(Group::SERVERS.bits() | Group::WORKERS.bits()).unwrap();
        let customer = CustomerId::DEFAULT;
        let ts: Vec<Timestamp> = (0..N)
            .map(|i| scheduler.simple_request(customer, group, i as i32, Bytes::from_static(b"test")).unwrap())
            .collect();
        for (i, t) in ts.into_iter().enumerate() {
            let pslite::Completion::Simple(replies) = scheduler.wait(customer, t).unwrap() else {
                panic!("a SimpleApp request completes with replies");
            };
            assert_eq!(replies.len(), members.len(), "every member answers request {i}");
            assert!(replies.iter().all(|r| r.head == i as i32 && &r.body[..] == b"test"));
        }
        assert_eq!(served.load(Ordering::Relaxed), N * members.len() as u32);
        assert!(cluster.finalize().unwrap().is_complete());
    })
}
