//! Server handles: built in, chosen by name, or a Python callable.
//!
//! | name | handle | options |
//! |---|---|---|
//! | `"sum"` (default) | `KvStore` of `dtype` (default float32): sums pushes, pulls the sums | none |
//! | `"sgd"` | `OptimizerStore` running `Sgd` | `learning_rate` |
//! | `"adagrad"` | `OptimizerStore` running `AdaGrad` | `learning_rate`, `epsilon` |
//! | `"ftrl"` | `OptimizerStore` running `Ftrl` | `alpha`, `beta`, `l1`, `l2` |
//!
//! Options left out keep `pslite_learn::optim`'s defaults. The built-in
//! handles run on the server node's task; a callable runs on a thread of
//! its own (`ServerHandle::threaded`), so that waiting for the GIL never
//! holds up the node's other work or its heartbeats; see [`PyHandle`].

use std::cell::Cell;

use bytes::Bytes;
use pslite_core::{DType, KvHandle, KvStore, Refusal, Response, ServerRequest, Values};
use pslite_io::ServerHandle;
use pslite_learn::optim::{AdaGrad, Ftrl, Optimizer, OptimizerStore, Sgd};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::arrays;
use crate::py_error;

/// A server handle as asked for, checked, ready to build once per server.
#[derive(Debug)]
pub(crate) enum HandleSpec {
    /// The default store, summing values of this type.
    Sum(DType),
    /// A server-side optimizer (float32 weights).
    Optimizer(Optimizer),
    /// A Python callable.
    Python(Py<PyAny>),
}

impl HandleSpec {
    /// The handle `handle` names (`None` is `"sum"`), with `dtype` (sum
    /// only) and the rule's `options` (optimizers only).
    pub(crate) fn parse(
        handle: Option<&Bound<'_, PyAny>>,
        dtype: Option<&Bound<'_, PyAny>>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let options = options.filter(|options| !options.is_empty());
        let dtype = dtype.filter(|dtype| !dtype.is_none());
        let name = match handle {
            None => "sum".to_owned(),
            Some(handle) if handle.is_none() => "sum".to_owned(),
            Some(handle) => match handle.extract::<String>() {
                Ok(name) => name.to_ascii_lowercase(),
                Err(_) if handle.is_callable() => {
                    if let Some(options) = options {
                        let names: Vec<String> = options.keys().extract()?;
                        return Err(PyTypeError::new_err(format!(
                            "a callable handle takes no options, got {}",
                            names.join(", ")
                        )));
                    }
                    if dtype.is_some() {
                        return Err(PyTypeError::new_err(
                            "dtype is for the 'sum' handle; a callable answers pulls in the dtype they ask for",
                        ));
                    }
                    return Ok(Self::Python(handle.clone().unbind()));
                }
                Err(_) => {
                    return Err(PyTypeError::new_err(format!(
                        "handle must be a name ('sum', 'sgd', 'adagrad', 'ftrl') or a callable, not {}",
                        handle.get_type().name()?
                    )))
                }
            },
        };
        if name == "sum" {
            if let Some(options) = options {
                let names: Vec<String> = options.keys().extract()?;
                return Err(PyTypeError::new_err(format!(
                    "the 'sum' handle takes no options, got {}",
                    names.join(", ")
                )));
            }
            return Ok(Self::Sum(arrays::parse_dtype(dtype)?));
        }
        let mut optimizer: Optimizer = name.parse().map_err(py_error)?;
        if dtype.is_some_and(|dtype| arrays::parse_dtype(Some(dtype)).ok() != Some(DType::F32)) {
            return Err(PyValueError::new_err(format!("the '{name}' handle holds float32 weights")));
        }
        if let Some(options) = options {
            for (key, value) in options.iter() {
                let key: String = key.extract()?;
                let value: f32 = value.extract()?;
                set_option(&mut optimizer, &key, value)?;
            }
        }
        optimizer.check().map_err(py_error)?;
        Ok(Self::Optimizer(optimizer))
    }

    /// Refuses a callable with `replicas` > 1 before any node starts: a
    /// chain's members install the state its head's handle exports, and a
    /// callable exports nothing, so its pushes would be refused one by one.
    pub(crate) fn check_replicas(&self, replicas: u8) -> PyResult<()> {
        match self {
            Self::Python(_) if replicas > 1 => Err(PyValueError::new_err(format!(
                "a callable handle cannot be replicated (replicas={replicas}): chain members install the state \
                 the head's handle exports, and a callable exports none; use replicas=1 or a built-in handle"
            ))),
            _ => Ok(()),
        }
    }

    /// A new handle for one server.
    pub(crate) fn build(&self, py: Python<'_>) -> ServerHandle {
        match self {
            Self::Sum(DType::F32) => ServerHandle::inline(KvStore::<f32>::new()),
            Self::Sum(DType::F64) => ServerHandle::inline(KvStore::<f64>::new()),
            Self::Sum(DType::I32) => ServerHandle::inline(KvStore::<i32>::new()),
            Self::Sum(DType::I64) => ServerHandle::inline(KvStore::<i64>::new()),
            Self::Sum(DType::U8) => ServerHandle::inline(KvStore::<u8>::new()),
            Self::Optimizer(optimizer) => {
                ServerHandle::inline(OptimizerStore::new(*optimizer).expect("parameters checked in parse"))
            }
            Self::Python(callable) => ServerHandle::threaded(PyHandle { callable: callable.clone_ref(py) }),
        }
    }
}

/// Sets one option of `optimizer`; a `TypeError` naming the rule's
/// options for any other name.
fn set_option(optimizer: &mut Optimizer, key: &str, value: f32) -> PyResult<()> {
    let slot = match (optimizer as &mut Optimizer, key) {
        (Optimizer::Sgd(Sgd { learning_rate }), "learning_rate") => learning_rate,
        (Optimizer::AdaGrad(AdaGrad { learning_rate, .. }), "learning_rate") => learning_rate,
        (Optimizer::AdaGrad(AdaGrad { epsilon, .. }), "epsilon") => epsilon,
        (Optimizer::Ftrl(Ftrl { alpha, .. }), "alpha") => alpha,
        (Optimizer::Ftrl(Ftrl { beta, .. }), "beta") => beta,
        (Optimizer::Ftrl(Ftrl { l1, .. }), "l1") => l1,
        (Optimizer::Ftrl(Ftrl { l2, .. }), "l2") => l2,
        (optimizer, _) => {
            let takes = match optimizer {
                Optimizer::Sgd(_) => "learning_rate",
                Optimizer::AdaGrad(_) => "learning_rate, epsilon",
                Optimizer::Ftrl(_) => "alpha, beta, l1, l2",
            };
            return Err(PyTypeError::new_err(format!(
                "unknown option {key:?} for the '{}' handle; it takes {takes}",
                optimizer.name()
            )));
        }
    };
    *slot = value;
    Ok(())
}

/// A server handle written in Python: `callable(keys, values, is_push)`.
///
/// It runs on a thread of its own and takes the GIL for every request, so
/// it is for experiments, not speed: the server's requests queue while it
/// runs, and while any other Python thread holds the GIL. `keys` is the
/// server's slice of a request's keys (uint64), `values` a new array with
/// the pushed values (empty, in the dtype asked for, for a pull), and
/// `is_push` whether values are to be applied (a push or a push_pull). It
/// returns the values to answer a pull or push_pull with (anything
/// numpy turns into an array, converted to the dtype asked for); what it
/// returns for a plain push is ignored. An exception refuses the request:
/// the worker's `wait` raises `PsliteError` with the exception's text.
struct PyHandle {
    callable: Py<PyAny>,
}

impl std::fmt::Debug for PyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PyHandle").finish_non_exhaustive()
    }
}

thread_local! {
    /// Whether this thread is running a Python handle.
    static IN_HANDLE: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread runs a Python handle: a pslite call that blocks
/// from there could wait on the very server it is serving.
pub(crate) fn in_handle() -> bool {
    IN_HANDLE.with(Cell::get)
}

impl KvHandle for PyHandle {
    fn handle(&mut self, request: &ServerRequest) -> Response {
        IN_HANDLE.with(|flag| flag.set(true));
        let answer = Python::try_attach(|py| self.call(py, request).map_err(|error| error.to_string()));
        match answer {
            Some(Ok(response)) => response,
            Some(Err(reason)) => Response::Refused(Refusal::Handle(format!("Python handle: {reason}"))),
            None => Response::Refused(Refusal::Handle("Python handle: the interpreter is shutting down".to_owned())),
        }
    }
}

impl PyHandle {
    fn call(&self, py: Python<'_>, request: &ServerRequest) -> PyResult<Response> {
        if request.lens.is_some() {
            return Err(PyValueError::new_err("per-key lengths are not passed to Python handles"));
        }
        let keys = arrays::keys_to_array(py, &request.keys);
        let values = arrays::to_array(py, &request.values);
        let answer = self.callable.bind(py).call1((keys, values, request.op.pushes()))?;
        if !request.op.pulls() {
            return Ok(Response::ack());
        }
        if answer.is_none() {
            return Err(PyValueError::new_err("returned None for a pull; return one value per key"));
        }
        let dtype = arrays::dtype_name(request.values.dtype());
        let answer = arrays::values(&py.import("numpy")?.call_method1("asarray", (answer, dtype))?)?;
        // Copied, not shared: the handle may return an array it keeps and
        // change it in place while the answer still waits to be written.
        let values = Values::from_bytes(answer.dtype(), Bytes::copy_from_slice(answer.as_bytes()));
        Ok(Response::Ok { values: values.expect("whole elements"), lens: None })
    }
}
