//! The blocking API, called from an ordinary thread as ps-lite users do:
//! every async call has a blocking twin with the same name and meaning.

#[path = "common/watchdog.rs"]
mod watchdog;

use bytes::Bytes;
use pslite::blocking::Runtime;
use pslite::{CustomerId, DType, Group, Keys, Values};
use watchdog::bounded;

#[test]
fn blocking_worker_pushes_waits_and_pulls() {
    bounded(|| {
        let runtime = Runtime::new(2).unwrap();
        let cluster = runtime.local_cluster(2, 1).unwrap();
        let worker = cluster.worker::<f32>(0);
        let keys = [0, 42, u64::MAX];
        let ts = worker.push(&keys, &[1.0, 2.0, 3.0]).unwrap();
        worker.wait(ts).unwrap();
        assert_eq!(worker.pull_wait(&keys).unwrap(), vec![1.0, 2.0, 3.0]);
        let ts = worker.push_pull(&keys, &[1.0, 1.0, 1.0]).unwrap();
        let pulled = worker.wait_pull(ts).unwrap();
        assert_eq!(pulled.to_vec(), vec![2.0, 3.0, 4.0]);
        assert_eq!(pulled.keys().to_vec(), keys.to_vec());
        assert_eq!(worker.push_pull_wait(&keys, &[1.0; 3]).unwrap(), vec![3.0, 4.0, 5.0]);
        worker.push_wait(&keys[..1], &[10.0]).unwrap();
        // Variable lengths and the zero-copy forms.
        let ts = worker.push_with(&[7, 8], &[1.0, 2.0, 3.0], Some(&[1, 2]), 0).unwrap();
        worker.wait(ts).unwrap();
        let ts =
            worker.zpush(Keys::from_slice(&[7]), Values::from_slice(&[1.0f32]).as_bytes().clone(), None, 0).unwrap();
        worker.wait(ts).unwrap();
        let ts = worker.zpull(Keys::from_slice(&[0, 7]), 0).unwrap();
        assert_eq!(worker.wait_pull(ts).unwrap().to_vec(), vec![13.0, 2.0]);
        // A caller mistake is an error, not a panic.
        assert!(worker.push(&[2, 1], &[1.0, 1.0]).is_err());
        assert!(worker.zpush(Keys::from_slice(&[1]), Bytes::from_static(&[0; 3]), None, 0).is_err(), "not whole f32s");
        // The untyped worker on the same customer shares its timestamps.
        let raw = worker.raw();
        let ts = raw.zpull(Keys::from_slice(&[42]), DType::F32, 0).unwrap();
        assert_eq!(raw.wait_pull(ts).unwrap().values.to_vec::<f32>(), Some(vec![4.0]));
        let node = worker.node();
        assert!(node.barrier(Group::WORKERS).unwrap().is_complete());
        assert!(node.stats().unwrap().frames_out > 0);
        assert!(node.info().rank.is_some());
        assert!(cluster.finalize().unwrap().is_complete(), "nobody was missing");
    })
}

#[test]
fn blocking_node_runs_simple_requests_on_another_customer() {
    bounded(|| {
        let runtime = Runtime::new(2).unwrap();
        let cluster = runtime.local_cluster(1, 2).unwrap();
        cluster.server(0).set_simple_handler(|request| (request.head + 1, request.body.clone())).unwrap();
        let node = cluster.worker_node(0);
        let replies = node.simple(CustomerId::new(1, 0), Group::SERVERS, 41, Bytes::from_static(b"hi")).unwrap();
        assert_eq!(replies.len(), 1);
        assert_eq!((replies[0].head, &replies[0].body[..]), (42, &b"hi"[..]));
        assert!(cluster.finalize().unwrap().is_complete());
    })
}

#[test]
fn blocking_node_installs_a_threaded_handle_for_another_app() {
    use pslite::{KvStore, ServerHandle};
    let runtime = Runtime::new(2).unwrap();
    let cluster = runtime.local_cluster(1, 1).unwrap();
    cluster.server(0).set_handle(1, ServerHandle::threaded(KvStore::<f64>::new())).unwrap();
    let app1 = cluster.worker_node(0).worker::<f64>(CustomerId::new(1, 0));
    app1.push_wait(&[5, 6], &[0.25, 0.5]).unwrap();
    assert_eq!(app1.push_pull_wait(&[5, 6], &[0.25, 0.5]).unwrap(), vec![0.5, 1.0]);
    // App 0 keeps its own store.
    assert_eq!(cluster.worker::<f32>(0).pull_wait(&[5]).unwrap(), vec![0.0]);
    assert!(cluster.finalize().unwrap().is_complete());
}
