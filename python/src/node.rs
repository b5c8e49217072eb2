//! Nodes started from ps-lite's environment, and what every node can do.
//!
//! A launcher (`pslite-launch`, dmlc-tracker) runs the same program once
//! per node with `DMLC_ROLE` and the cluster's address and size set;
//! [`start`] reads them ([`pslite_io::Settings::from_env`]) and starts
//! this process's node, returning once the cluster is ready. Servers and
//! the scheduler then usually just serve until every node finalizes,
//! which [`run_server`] and [`run_scheduler`] do in one call.

use pslite_core::{CustomerId, Group, Role};
use pslite_io::{KvServer, NodeHandle, RawKvWorker, Released, Settings};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::handles::HandleSpec;
use crate::worker::Worker;
use crate::{block, py_error, PsliteError};

/// A running node: a server or scheduler as returned by `start()`, and
/// the base class of `Worker`.
#[pyclass(module = "pslite", subclass, frozen)]
#[derive(Debug)]
pub(crate) struct Node {
    node: NodeHandle,
}

impl Node {
    pub(crate) fn new(node: NodeHandle) -> Self {
        Self { node }
    }

    /// A barrier over `group` (see [`parse_group`]); the ids of members
    /// that never arrived (dead and not replaced in time).
    pub(crate) fn barrier_over(&self, py: Python<'_>, group: &str) -> PyResult<Vec<u32>> {
        let group = parse_group(group)?;
        let released = block(py, self.node.barrier(group))?.map_err(py_error)?;
        Ok(missing(released))
    }
}

#[pymethods]
impl Node {
    /// "scheduler", "server" or "worker".
    #[getter]
    fn role(&self) -> String {
        self.node.info().role.to_string()
    }

    /// This node's id (ps-lite's: scheduler 1, servers 8, 10, ..., workers 9, 11, ...).
    #[getter]
    fn id(&self) -> u32 {
        self.node.info().id.get()
    }

    /// Rank among the nodes of its role, from 0; None for the scheduler.
    #[getter]
    fn rank(&self) -> Option<u32> {
        let info = self.node.info();
        if info.role == Role::Scheduler {
            return None;
        }
        info.rank.map(|rank| rank.0)
    }

    /// Servers in the cluster.
    #[getter]
    fn num_servers(&self) -> u32 {
        self.node.info().num_servers
    }

    /// Workers in the cluster.
    #[getter]
    fn num_workers(&self) -> u32 {
        self.node.info().num_workers
    }

    /// Waits until every node of `group` arrives: "all", "workers",
    /// "servers", "scheduler", or several joined by "+" (this node's role
    /// must be among them). Returns the ids of members it was released
    /// without (dead, and not replaced within PS_RECOVERY_TIMEOUT).
    fn barrier(&self, py: Python<'_>, group: &str) -> PyResult<Vec<u32>> {
        self.barrier_over(py, group)
    }

    /// A barrier over every node, then shutdown: call it once, at the end.
    /// Returns the ids of members the job finished without.
    fn finalize(&self, py: Python<'_>) -> PyResult<Vec<u32>> {
        let released = block(py, self.node.finalize())?.map_err(py_error)?;
        Ok(missing(released))
    }

    fn __repr__(&self) -> String {
        let info = self.node.info();
        let rank = info.rank.map_or_else(|| "None".to_owned(), |rank| rank.0.to_string());
        format!("<pslite node role={} id={} rank={rank}>", info.role, info.id.get())
    }
}

/// Starts this process's node from ps-lite's environment (`DMLC_ROLE`,
/// `DMLC_PS_ROOT_URI`, `DMLC_PS_ROOT_PORT`, `DMLC_NUM_SERVER`,
/// `DMLC_NUM_WORKER`, and the optional `DMLC_*` / `PS_*` variables) and
/// waits until the cluster is ready. Returns a `Worker` on a worker, a
/// `Node` on a server (running `handle`) or the scheduler.
#[pyfunction]
#[pyo3(signature = (handle = None, *, dtype = None, **options))]
pub(crate) fn start<'py>(
    py: Python<'py>,
    handle: Option<&Bound<'py, PyAny>>,
    dtype: Option<&Bound<'py, PyAny>>,
    options: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let spec = HandleSpec::parse(handle, dtype, options)?;
    let settings = Settings::from_env().map_err(py_error)?;
    let role = settings.core.role;
    let node = start_node(py, settings, &spec)?;
    if role == Role::Worker {
        return Ok(Worker::create(py, RawKvWorker::new(node, CustomerId::DEFAULT))?.into_any());
    }
    Ok(Bound::new(py, Node::new(node))?.into_any())
}

/// On a server started by a launcher: starts it with `handle` and serves
/// until every node finalizes. Returns the ids of members the job
/// finished without.
#[pyfunction]
#[pyo3(signature = (handle = None, *, dtype = None, **options))]
pub(crate) fn run_server(
    py: Python<'_>,
    handle: Option<&Bound<'_, PyAny>>,
    dtype: Option<&Bound<'_, PyAny>>,
    options: Option<&Bound<'_, PyDict>>,
) -> PyResult<Vec<u32>> {
    let spec = HandleSpec::parse(handle, dtype, options)?;
    run_as(py, Role::Server, &spec)
}

/// On the scheduler started by a launcher: starts it and runs the cluster
/// until every node finalizes. Returns the ids of members the job finished
/// without.
#[pyfunction]
pub(crate) fn run_scheduler(py: Python<'_>) -> PyResult<Vec<u32>> {
    run_as(py, Role::Scheduler, &HandleSpec::parse(None, None, None)?)
}

/// This process's `DMLC_ROLE` ("scheduler", "server" or "worker"), or None
/// when not started by a launcher.
#[pyfunction]
pub(crate) fn role() -> Option<String> {
    std::env::var("DMLC_ROLE").ok().map(|role| role.to_ascii_lowercase())
}

fn run_as(py: Python<'_>, role: Role, spec: &HandleSpec) -> PyResult<Vec<u32>> {
    let settings = Settings::from_env().map_err(py_error)?;
    if settings.core.role != role {
        return Err(PsliteError::new_err(format!("DMLC_ROLE is {}, not {role}", settings.core.role)));
    }
    let node = start_node(py, settings, spec)?;
    let released = block(py, node.finalize())?.map_err(py_error)?;
    Ok(missing(released))
}

/// Starts a node (a server runs a handle built from `spec`) and waits
/// until the cluster is ready.
fn start_node(py: Python<'_>, settings: Settings, spec: &HandleSpec) -> PyResult<NodeHandle> {
    let handle = match settings.core.role {
        Role::Server => {
            spec.check_replicas(settings.core.replicas)?;
            Some(spec.build(py))
        }
        _ => None,
    };
    let started = block(py, async move {
        let node = match handle {
            // Installed before any request can arrive.
            Some(handle) => KvServer::start(settings, handle).await?.node().clone(),
            None => pslite_io::start(settings).await?,
        };
        node.wait_ready().await?;
        Ok::<_, pslite_io::Error>(node)
    })?;
    started.map_err(py_error)
}

/// A group by name: "all", "workers", "servers", "scheduler", or several
/// joined by "+".
fn parse_group(name: &str) -> PyResult<Group> {
    let mut bits = 0;
    for part in name.split('+') {
        bits |= match part.trim().to_ascii_lowercase().as_str() {
            "all" => Group::ALL.bits(),
            "workers" => Group::WORKERS.bits(),
            "servers" => Group::SERVERS.bits(),
            "scheduler" => Group::SCHEDULER.bits(),
            _ => {
                return Err(PyValueError::new_err(format!(
                    "unknown group {name:?}: expected all, workers, servers, scheduler or a '+' of them"
                )))
            }
        };
    }
    Ok(Group::from_bits(bits).expect("a union of known groups"))
}

fn missing(released: Released) -> Vec<u32> {
    released.missing.iter().map(|id| id.get()).collect()
}
