//! The Rust half of `bench.py`: the same push and pull through the Rust
//! API, in this process and on the same runtime, so the script can give
//! the bindings' cost as a ratio taken in one run.

use std::time::Instant;

use pslite_io::LocalCluster;
use pyo3::prelude::*;

use crate::{block_once, py_error};

/// `rounds` times: push `n` float32 ones to keys `0..n` and wait, then pull
/// them back, on a fresh local cluster of one server and one worker.
/// Returns each round's (push, pull) seconds.
#[pyfunction]
#[pyo3(name = "_bench_rust", signature = (n, rounds = 5))]
pub(crate) fn bench_rust(py: Python<'_>, n: u64, rounds: usize) -> PyResult<Vec<(f64, f64)>> {
    let timed = block_once(py, move || async move {
        let cluster = LocalCluster::start(1, 1).await?;
        let worker = cluster.worker::<f32>(0);
        let keys: Vec<u64> = (0..n).collect();
        let values = vec![1.0f32; keys.len()];
        let mut times = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let start = Instant::now();
            worker.push_wait(&keys, &values).await?;
            let push = start.elapsed();
            let start = Instant::now();
            let pulled = worker.pull_wait(&keys).await?;
            let pull = start.elapsed();
            assert_eq!(pulled.len(), keys.len(), "one value per key");
            times.push((push.as_secs_f64(), pull.as_secs_f64()));
        }
        let _ = cluster.finalize().await?;
        Ok::<_, pslite_io::Error>(times)
    })?;
    timed.map_err(py_error)
}
