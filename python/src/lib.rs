//! # pslite for Python
//!
//! The `pslite` extension module: pslite's io shell driven from Python.
//! Every node of a process runs on one shared tokio runtime (created on
//! first use); every call that waits on it releases the GIL, so Python
//! threads, and server handles written in Python, keep running meanwhile.
//!
//! - [`cluster`]: `LocalCluster`, a whole cluster in this process.
//! - [`node`]: `start`, `run_server`, `run_scheduler` for processes started
//!   by `pslite-launch` (or any launcher that sets ps-lite's `DMLC_*`
//!   environment), and the `Node` they return.
//! - [`worker`]: `Worker`, ps-lite's `KVWorker` over numpy arrays.
//! - [`handles`]: server handles chosen by name, or written in Python.
//! - [`arrays`]: numpy arrays to and from pslite's keys and values.
//! - [`bench`]: the Rust half of `bench.py`'s comparison.
//!
//! Errors the Rust API reports become `pslite.PsliteError` (a
//! `RuntimeError`) carrying the error's `Display` text; bad arguments are
//! `TypeError` or `ValueError`, as in any Python API.
//!
//! The runtime does not survive `fork`: start worker processes with
//! `pslite-launch` or multiprocessing's `spawn` method, not by forking a
//! process that already used pslite.

mod arrays;
mod bench;
mod cluster;
mod handles;
mod node;
mod worker;

use std::future::Future;
use std::sync::OnceLock;

use pyo3::prelude::*;

pyo3::create_exception!(
    pslite,
    PsliteError,
    pyo3::exceptions::PyRuntimeError,
    "An error reported by pslite: a refused or failed request, a node that shut down, a bad DMLC_* setting. \
     The message is the Rust error's text."
);

/// How often a blocked call looks up from the runtime to let Python
/// handle signals (Ctrl-C raises `KeyboardInterrupt` within this time).
const SIGNAL_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Runtime worker threads at most: a node's work is its one driver task
/// plus a reader and writer per connection, so a few threads suffice even
/// for a local cluster.
const RUNTIME_THREADS_MAX: usize = 4;

/// A Rust error as a `PsliteError` with its text.
pub(crate) fn py_error(error: impl std::fmt::Display) -> PyErr {
    PsliteError::new_err(error.to_string())
}

/// The process's runtime, started on first use.
fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    let threads = std::thread::available_parallelism().map_or(1, usize::from).min(RUNTIME_THREADS_MAX);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("pslite")
        .enable_all()
        .build()
        .map_err(py_error)?;
    // Two first callers may both build one; the loser's is dropped unused.
    Ok(RUNTIME.get_or_init(|| runtime))
}

/// Refuses to block a runtime thread, or the thread of a server handle
/// written in Python: a worker call from there could wait on itself.
fn check_not_on_runtime() -> PyResult<()> {
    if handles::in_handle() || tokio::runtime::Handle::try_current().is_ok() {
        return Err(PsliteError::new_err("a pslite call cannot block inside a server handle"));
    }
    Ok(())
}

/// Runs `future` to completion on the runtime with the GIL released,
/// looking up every [`SIGNAL_CHECK_INTERVAL`] so Ctrl-C interrupts a long
/// wait (dropping the future: a request already issued still completes
/// on the node, and its outcome waits for a later `wait`).
pub(crate) fn block<F>(py: Python<'_>, future: F) -> PyResult<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    check_not_on_runtime()?;
    let runtime = runtime()?;
    let mut future = std::pin::pin!(future);
    loop {
        // The timer must be made inside the runtime, hence the async block.
        let step = py
            .detach(|| runtime.block_on(async { tokio::time::timeout(SIGNAL_CHECK_INTERVAL, future.as_mut()).await }));
        match step {
            Ok(output) => return Ok(output),
            Err(_elapsed) => py.check_signals()?,
        }
    }
}

/// [`block`] for a future that is not `Send` (it is built and run inside
/// the released section), without the signal checks.
pub(crate) fn block_once<F, Fut>(py: Python<'_>, make: F) -> PyResult<Fut::Output>
where
    F: FnOnce() -> Fut + Send,
    Fut: Future,
    Fut::Output: Send,
{
    check_not_on_runtime()?;
    let runtime = runtime()?;
    Ok(py.detach(|| runtime.block_on(make())))
}

/// pslite: a parameter server for distributed machine learning.
///
/// `LocalCluster(servers, workers)` runs a whole cluster in this process;
/// `start()`, `run_server()` and `run_scheduler()` run one node per
/// process, configured by the `DMLC_*` environment `pslite-launch` sets.
/// Workers push and pull numpy arrays for sorted uint64 keys; every request
/// returns a timestamp and `wait`/`wait_pull` complete it. Errors pslite
/// reports raise `PsliteError`.
#[pymodule]
#[pyo3(name = "pslite")]
fn pslite_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Log the io shell's warnings (a node gone, a barrier released without
    // someone) to stderr at the level PS_VERBOSE asks for, as the Rust
    // tools do. A program that installed a subscriber keeps its own.
    let _ =
        tracing_subscriber::fmt().with_max_level(pslite_io::env::verbosity()).with_writer(std::io::stderr).try_init();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("PsliteError", m.py().get_type::<PsliteError>())?;
    m.add_class::<cluster::LocalCluster>()?;
    m.add_class::<node::Node>()?;
    m.add_class::<worker::Worker>()?;
    m.add_function(wrap_pyfunction!(node::start, m)?)?;
    m.add_function(wrap_pyfunction!(node::run_server, m)?)?;
    m.add_function(wrap_pyfunction!(node::run_scheduler, m)?)?;
    m.add_function(wrap_pyfunction!(node::role, m)?)?;
    m.add_function(wrap_pyfunction!(bench::bench_rust, m)?)?;
    Ok(())
}
