//! The blocking API, called from an ordinary thread as ps-lite users do.

use pslite::blocking::Runtime;

#[test]
fn blocking_worker_pushes_waits_and_pulls() {
    let runtime = Runtime::new(2).unwrap();
    let cluster = runtime.local_cluster(2, 1).unwrap();
    let worker = runtime.worker(cluster.worker(0));
    let keys = [0, 42, u64::MAX];
    let ts = worker.push(&keys, &[1.0f32, 2.0, 3.0]).unwrap();
    worker.wait(ts).unwrap();
    assert_eq!(worker.pull::<f32>(&keys).unwrap(), vec![1.0, 2.0, 3.0]);
    assert_eq!(worker.push_pull(&keys, &[1.0f32, 1.0, 1.0]).unwrap(), vec![2.0, 3.0, 4.0]);
    // A caller mistake is an error, not a panic.
    assert!(worker.push(&[2, 1], &[1.0f32, 1.0]).is_err());
    assert!(runtime.block_on(cluster.finalize()).unwrap().is_complete(), "nobody was missing");
}
