"""pslite: a parameter server for distributed machine learning (Python bindings).

Workers push and pull numpy arrays of values for sorted ``uint64`` keys;
servers each own a contiguous range of the key space and run a handle on
every request (by default, ``"sum"``: pushes add up, pulls return the sums).

Two ways to run a cluster:

- ``LocalCluster(servers, workers)``: everything in this process.
- ``start()`` / ``run_server()`` / ``run_scheduler()``: one node per process,
  configured by ps-lite's ``DMLC_*`` environment as ``pslite-launch`` sets it.

Every request returns a timestamp at once and ``wait``/``wait_pull`` complete
it (ps-lite's style); the ``*_wait`` forms do both. Calls that wait release
the GIL. Errors pslite reports raise ``PsliteError``.
"""

from types import TracebackType
from typing import Any, Callable, Optional, Sequence, Type, Union

import numpy as np
import numpy.typing as npt

__version__: str

Keys = Union[npt.NDArray[np.uint64], Sequence[int]]
"""Strictly ascending keys: a ``uint64`` array (or a list of non-negative ints).
Other integer arrays are refused rather than converted."""

Values = Union[
    npt.NDArray[np.float32],
    npt.NDArray[np.float64],
    npt.NDArray[np.int32],
    npt.NDArray[np.int64],
    npt.NDArray[np.uint8],
    Sequence[float],
]
"""Values, an equal number per key, in key order (a list becomes ``float32``).
Multi-dimensional arrays are read flat, in C order."""

DTypeLike = Union[npt.DTypeLike, None]
"""``np.float32`` (the default, also ``None``), ``np.float64``, ``np.int32``,
``np.int64`` or ``np.uint8``, or anything ``np.dtype()`` makes one of them."""

PyHandle = Callable[
    [npt.NDArray[np.uint64], npt.NDArray[Any], bool],
    Optional[npt.ArrayLike],
]
"""A server handle in Python: ``handle(keys, values, is_push)``.

Called for every request a server receives (its slice of the keys), holding
the GIL, on the server's own thread: slow, for experiments. ``values`` are the
pushed values, or an empty array of the dtype asked for on a pull;
``is_push`` is true for pushes and push_pulls. Return the values to answer a
pull or push_pull with (one per key, converted to the dtype asked for); the
return value of a plain push is ignored. An exception refuses the request:
the worker's wait raises ``PsliteError`` with its text.
"""

Handle = Union[str, PyHandle, None]
"""``"sum"`` (default; ``dtype=`` picks its value type), ``"sgd"``
(``learning_rate``), ``"adagrad"`` (``learning_rate``, ``epsilon``),
``"ftrl"`` (``alpha``, ``beta``, ``l1``, ``l2``), or a ``PyHandle``.
The optimizers hold float32 weights, take a float32 gradient per key on
push (``w -= learning_rate * g`` for sgd) and answer pulls with the weights;
options left out keep pslite-learn's defaults."""

class PsliteError(RuntimeError):
    """An error reported by pslite: a refused or failed request, a node that
    shut down, a bad ``DMLC_*`` setting. The message is the Rust error's text."""

class Node:
    """A running node: a server or the scheduler as ``start()`` returns
    them, and the base class of ``Worker``."""

    @property
    def role(self) -> str:
        """``"scheduler"``, ``"server"`` or ``"worker"``."""
    @property
    def id(self) -> int:
        """ps-lite's node id: scheduler 1, servers 8, 10, ..., workers 9, 11, ..."""
    @property
    def rank(self) -> Optional[int]:
        """Rank among the nodes of this role, from 0; ``None`` for the scheduler."""
    @property
    def num_servers(self) -> int:
        """Servers in the cluster."""
    @property
    def num_workers(self) -> int:
        """Workers in the cluster."""
    @property
    def replicas(self) -> int:
        """Copies of each key range."""
    def barrier(self, group: str) -> list[int]:
        """Waits until every node of ``group`` arrives: ``"all"``,
        ``"workers"``, ``"servers"``, ``"scheduler"``, or several joined by
        ``"+"`` (this node's role among them). Returns the ids of members it
        was released without (dead, not replaced within PS_RECOVERY_TIMEOUT)."""
    def finalize(self) -> list[int]:
        """A barrier over every node, then shutdown: call it once, at the end.
        Returns the ids of members the job finished without."""

class Worker(Node):
    """A worker: pushes and pulls numpy arrays (ps-lite's ``KVWorker``).

    ``push``, ``pull`` and ``push_pull`` return a timestamp as soon as the
    request is queued; ``wait`` / ``wait_pull`` complete it, so several
    requests can be in flight. Arrays are sent without a copy when
    C-contiguous: do not modify them until the request's wait returns.
    ``cmd`` is passed to the server's handle (the built-in ones take 0).
    """

    def push(self, keys: Keys, values: Values, *, cmd: int = 0) -> int:
        """Pushes ``values`` for ``keys``; returns the timestamp for ``wait``."""
    def pull(self, keys: Keys, dtype: DTypeLike = None, *, cmd: int = 0) -> int:
        """Starts a pull of ``keys`` as ``dtype``; returns the timestamp for ``wait_pull``."""
    def push_pull(self, keys: Keys, values: Values, *, cmd: int = 0) -> int:
        """Pushes, then pulls the new values, in one round trip; returns the
        timestamp for ``wait_pull``."""
    def wait(self, ts: int) -> None:
        """Waits for request ``ts``; raises ``PsliteError`` if it failed."""
    def wait_pull(self, ts: int) -> npt.NDArray[Any]:
        """Waits for a pull or push_pull; returns its values in key order
        (a new 1-D array of the dtype asked for)."""
    def push_wait(self, keys: Keys, values: Values, *, cmd: int = 0) -> None:
        """``push``, then ``wait``."""
    def pull_wait(self, keys: Keys, dtype: DTypeLike = None, *, cmd: int = 0) -> npt.NDArray[Any]:
        """``pull``, then ``wait_pull``."""
    def push_pull_wait(self, keys: Keys, values: Values, *, cmd: int = 0) -> npt.NDArray[Any]:
        """``push_pull``, then ``wait_pull``."""
    def barrier(self, group: str = "workers") -> list[int]:
        """A barrier over ``group`` (default: the workers); see ``Node.barrier``."""

class LocalCluster:
    """A whole cluster in this process, on loopback: ``servers`` servers
    running ``handle`` and ``workers`` workers, ready when constructed.

    ``replicas`` (1 to 3, at most ``servers``) keeps each key range on a
    chain of that many servers, as ``PS_REPLICAS`` does for launched
    processes: a push is acknowledged once every copy applied it, and
    pulls read the chain's tail. Built-in handles replicate; a callable
    cannot (it exports no state) and raises ``ValueError`` with
    ``replicas`` > 1.

    As a context manager it finalizes on exit, or aborts every node when
    the block raised.
    """

    def __init__(
        self,
        servers: int = 1,
        workers: int = 1,
        handle: Handle = None,
        *,
        dtype: DTypeLike = None,
        replicas: int = 1,
        **options: float,
    ) -> None: ...
    def worker(self, index: int) -> Worker:
        """The worker at ``index`` (start order; its ``rank`` may differ).
        A worker may be used from several threads at once. Finalize the
        cluster, not its workers: a worker's ``finalize`` waits for every node."""
    @property
    def num_servers(self) -> int:
        """Servers in the cluster."""
    @property
    def num_workers(self) -> int:
        """Workers in the cluster."""
    def finalize(self) -> list[int]:
        """Finalizes every node once the workers are done; returns the ids of
        members any node saw missing. Does nothing the second time."""
    def abort(self) -> None:
        """Stops every node at once, as a crash would; requests in flight fail."""
    def __enter__(self) -> "LocalCluster": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> bool: ...

def start(handle: Handle = None, *, dtype: DTypeLike = None, **options: float) -> Node:
    """Starts this process's node from ps-lite's environment (``DMLC_ROLE``,
    ``DMLC_PS_ROOT_URI``, ``DMLC_PS_ROOT_PORT``, ``DMLC_NUM_SERVER``,
    ``DMLC_NUM_WORKER``, ...) and waits until the cluster is ready.
    Returns a ``Worker`` on a worker, a ``Node`` on a server (running
    ``handle``) or on the scheduler. Call ``finalize()`` at the end."""

def run_server(handle: Handle = None, *, dtype: DTypeLike = None, **options: float) -> list[int]:
    """On a server started by a launcher: serves with ``handle`` until every
    node finalizes. Returns the ids of members the job finished without."""

def run_scheduler() -> list[int]:
    """On the scheduler started by a launcher: runs the cluster until every
    node finalizes. Returns the ids of members the job finished without."""

def role() -> Optional[str]:
    """This process's ``DMLC_ROLE`` (``"scheduler"``, ``"server"``,
    ``"worker"``), or ``None`` when not started by a launcher."""

def _bench_rust(n: int, rounds: int = 5) -> list[tuple[float, float]]:
    """``rounds`` times, through the Rust API on a fresh one-server
    one-worker local cluster: push ``n`` float32 ones to keys ``0..n`` and
    wait, then pull them. Returns each round's (push, pull) seconds; for
    ``bench.py``."""
