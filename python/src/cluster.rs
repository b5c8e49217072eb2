//! `LocalCluster`: a scheduler, servers and workers in this process, on
//! loopback (`pslite_io::LocalCluster`), for tests, notebooks and
//! experiments. Every node is a real node with its own sockets.

use std::sync::{Mutex, PoisonError};

use pslite_io::ServerHandle;
use pyo3::exceptions::PyIndexError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::handles::HandleSpec;
use crate::worker::Worker;
use crate::{block, block_once, py_error, PsliteError};

/// A whole cluster in this process: `servers` servers running `handle`
/// and `workers` workers, ready when the constructor returns. With
/// `replicas` > 1 each key range is kept by a chain of that many servers
/// (`PS_REPLICAS` for launched processes).
#[pyclass(module = "pslite", frozen)]
#[derive(Debug)]
pub(crate) struct LocalCluster {
    /// `None` once finalized or aborted.
    cluster: Mutex<Option<pslite_io::LocalCluster>>,
    num_servers: u32,
    num_workers: u32,
    replicas: u8,
}

impl LocalCluster {
    fn take(&self) -> Option<pslite_io::LocalCluster> {
        self.cluster.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

#[pymethods]
impl LocalCluster {
    #[new]
    #[pyo3(signature = (servers = 1, workers = 1, handle = None, *, dtype = None, replicas = 1, **options))]
    fn new(
        py: Python<'_>,
        servers: u32,
        workers: u32,
        handle: Option<&Bound<'_, PyAny>>,
        dtype: Option<&Bound<'_, PyAny>>,
        replicas: u8,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let spec = HandleSpec::parse(handle, dtype, options)?;
        spec.check_replicas(replicas)?;
        // Built here, holding the GIL (a Python handle takes a reference).
        let mut handles: Vec<ServerHandle> = (0..servers).map(|_| spec.build(py)).collect();
        let cluster = block_once(py, move || async move {
            let mut settings = pslite_io::LocalCluster::settings(servers, workers);
            // Checked with the rest of the settings when the nodes start.
            settings.core.replicas = replicas;
            // One handle per server rank, in rank order.
            handles.reverse();
            let factory = Box::new(move |_| handles.pop().expect("a handle per server"));
            pslite_io::LocalCluster::start_with(settings, factory).await
        })?
        .map_err(py_error)?;
        Ok(Self { cluster: Mutex::new(Some(cluster)), num_servers: servers, num_workers: workers, replicas })
    }

    /// The worker at `index` (start order, 0 to num_workers - 1; its
    /// `rank` may differ). Finalize the cluster, not its workers: a
    /// worker's `finalize` waits for every node.
    fn worker<'py>(&self, py: Python<'py>, index: usize) -> PyResult<Bound<'py, Worker>> {
        let worker = {
            let cluster = self.cluster.lock().unwrap_or_else(PoisonError::into_inner);
            let cluster = cluster.as_ref().ok_or_else(|| PsliteError::new_err("the cluster has shut down"))?;
            if index >= cluster.workers.len() {
                return Err(PyIndexError::new_err(format!(
                    "worker {index} of a cluster of {} workers",
                    cluster.workers.len()
                )));
            }
            cluster.raw_worker(index)
        };
        Worker::create(py, worker)
    }

    /// Servers in the cluster.
    #[getter]
    fn num_servers(&self) -> u32 {
        self.num_servers
    }

    /// Workers in the cluster.
    #[getter]
    fn num_workers(&self) -> u32 {
        self.num_workers
    }

    /// Copies of each key range.
    #[getter]
    fn replicas(&self) -> u8 {
        self.replicas
    }

    /// Finalizes every node (a barrier over all, then shutdown); call it
    /// once every worker is done. Returns the ids of members any node saw
    /// missing. Does nothing the second time.
    fn finalize(&self, py: Python<'_>) -> PyResult<Vec<u32>> {
        let Some(cluster) = self.take() else {
            return Ok(Vec::new());
        };
        let released = block(py, cluster.finalize())?.map_err(py_error)?;
        Ok(released.missing.iter().map(|id| id.get()).collect())
    }

    /// Stops every node at once, as a crash would (no finalize): requests
    /// in flight fail. For leaving a cluster after an error.
    fn abort(&self) {
        if let Some(cluster) = self.take() {
            cluster.nodes().for_each(pslite_io::NodeHandle::abort);
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Finalizes on a normal exit; aborts when the block raised, so that an
    /// error never waits on workers that will not finish.
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if exc_type.is_some_and(|t| !t.is_none()) {
            self.abort();
        } else {
            self.finalize(py)?;
        }
        Ok(false)
    }

    fn __repr__(&self) -> String {
        let state =
            if self.cluster.lock().unwrap_or_else(PoisonError::into_inner).is_some() { "running" } else { "shut down" };
        format!(
            "<pslite.LocalCluster servers={} workers={} replicas={} {state}>",
            self.num_servers, self.num_workers, self.replicas
        )
    }
}
