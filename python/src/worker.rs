//! `Worker`: ps-lite's `KVWorker` over numpy arrays.
//!
//! Every request returns a timestamp as soon as the node has queued it,
//! and `wait` (or `wait_pull`) completes it, so a worker can keep several
//! requests in flight; the `*_wait` forms issue one request and wait for
//! it. It is a thin shell over the Rust `RawKvWorker`, whose element type
//! is chosen per call, as numpy's is per array.

use pslite_core::{Timestamp, Values};
use pslite_io::RawKvWorker;
use pyo3::prelude::*;
use pyo3::PyClassInitializer;

use crate::node::Node;
use crate::{arrays, block, py_error};

/// A worker: pushes and pulls numpy arrays.
#[pyclass(module = "pslite", extends = Node, frozen)]
#[derive(Debug)]
pub(crate) struct Worker {
    inner: RawKvWorker,
}

impl Worker {
    /// A Python `Worker` over `worker` (its node becomes the `Node` part).
    pub(crate) fn create(py: Python<'_>, worker: RawKvWorker) -> PyResult<Bound<'_, Self>> {
        let node = Node::new(worker.node().clone());
        Bound::new(py, PyClassInitializer::from(node).add_subclass(Self { inner: worker }))
    }
}

#[pymethods]
impl Worker {
    /// Pushes `values` for ascending uint64 `keys` (an equal number of
    /// values per key); returns the request's timestamp for `wait`.
    ///
    /// The arrays are sent without a copy when C-contiguous: do not modify
    /// them until `wait` returns (ps-lite's ZPush contract).
    #[pyo3(signature = (keys, values, *, cmd = 0))]
    fn push(&self, py: Python<'_>, keys: &Bound<'_, PyAny>, values: &Bound<'_, PyAny>, cmd: i32) -> PyResult<u32> {
        let (keys, values) = (arrays::keys(keys)?, arrays::values(values)?);
        let ts = block(py, self.inner.zpush(keys, values, None, cmd))?.map_err(py_error)?;
        Ok(ts.0)
    }

    /// Starts a pull of `keys` as `dtype` (default float32); returns the
    /// timestamp for `wait_pull`.
    #[pyo3(signature = (keys, dtype = None, *, cmd = 0))]
    fn pull(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        dtype: Option<&Bound<'_, PyAny>>,
        cmd: i32,
    ) -> PyResult<u32> {
        let (keys, dtype) = (arrays::keys(keys)?, arrays::parse_dtype(dtype)?);
        let ts = block(py, self.inner.zpull(keys, dtype, cmd))?.map_err(py_error)?;
        Ok(ts.0)
    }

    /// Pushes `values`, then pulls the keys' new values, in one round trip;
    /// returns the timestamp for `wait_pull`.
    #[pyo3(signature = (keys, values, *, cmd = 0))]
    fn push_pull(&self, py: Python<'_>, keys: &Bound<'_, PyAny>, values: &Bound<'_, PyAny>, cmd: i32) -> PyResult<u32> {
        let (keys, values) = (arrays::keys(keys)?, arrays::values(values)?);
        let ts = block(py, self.inner.zpush_pull(keys, values, None, cmd))?.map_err(py_error)?;
        Ok(ts.0)
    }

    /// Waits for request `ts`; raises `PsliteError` if it failed. A pull's
    /// values are dropped: use `wait_pull` for them.
    fn wait(&self, py: Python<'_>, ts: u32) -> PyResult<()> {
        block(py, self.inner.wait(Timestamp(ts)))?.map_err(py_error)
    }

    /// Waits for a pull or push_pull and returns its values, in key order
    /// (a new 1-D array of the dtype asked for).
    fn wait_pull<'py>(&self, py: Python<'py>, ts: u32) -> PyResult<Bound<'py, PyAny>> {
        let pulled = block(py, self.inner.wait_pull(Timestamp(ts)))?.map_err(py_error)?;
        Ok(arrays::to_array(py, &pulled.values))
    }

    /// `push`, then `wait`.
    #[pyo3(signature = (keys, values, *, cmd = 0))]
    fn push_wait(&self, py: Python<'_>, keys: &Bound<'_, PyAny>, values: &Bound<'_, PyAny>, cmd: i32) -> PyResult<()> {
        let (keys, values) = (arrays::keys(keys)?, arrays::values(values)?);
        let worker = &self.inner;
        block(py, async move { worker.wait(worker.zpush(keys, values, None, cmd).await?).await })?.map_err(py_error)
    }

    /// `pull`, then `wait_pull`: the values of `keys`.
    #[pyo3(signature = (keys, dtype = None, *, cmd = 0))]
    fn pull_wait<'py>(
        &self,
        py: Python<'py>,
        keys: &Bound<'py, PyAny>,
        dtype: Option<&Bound<'py, PyAny>>,
        cmd: i32,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (keys, dtype) = (arrays::keys(keys)?, arrays::parse_dtype(dtype)?);
        let worker = &self.inner;
        let values = block(py, async move { pulled(worker, worker.zpull(keys, dtype, cmd).await?).await })?;
        Ok(arrays::to_array(py, &values.map_err(py_error)?))
    }

    /// `push_pull`, then `wait_pull`: the keys' values after the push.
    #[pyo3(signature = (keys, values, *, cmd = 0))]
    fn push_pull_wait<'py>(
        &self,
        py: Python<'py>,
        keys: &Bound<'py, PyAny>,
        values: &Bound<'py, PyAny>,
        cmd: i32,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (keys, values) = (arrays::keys(keys)?, arrays::values(values)?);
        let worker = &self.inner;
        let values = block(py, async move { pulled(worker, worker.zpush_pull(keys, values, None, cmd).await?).await })?;
        Ok(arrays::to_array(py, &values.map_err(py_error)?))
    }

    /// A barrier over `group` (default: the workers); see `Node.barrier`.
    #[pyo3(signature = (group = "workers"))]
    fn barrier(self_: PyRef<'_, Self>, py: Python<'_>, group: &str) -> PyResult<Vec<u32>> {
        self_.as_super().barrier_over(py, group)
    }

    fn __repr__(&self) -> String {
        let info = self.inner.node().info();
        let rank = info.rank.map_or_else(|| "None".to_owned(), |rank| rank.0.to_string());
        format!("<pslite.Worker id={} rank={rank} of {}>", info.id.get(), info.num_workers)
    }
}

/// The values of pull `ts`.
async fn pulled(worker: &RawKvWorker, ts: Timestamp) -> pslite_io::Result<Values> {
    Ok(worker.wait_pull(ts).await?.values)
}
