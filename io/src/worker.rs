//! The worker API: ps-lite's `KVWorker` over a running node.
//!
//! Every request — `push`, `pull`, `push_pull`, their `_with` forms (per-key
//! lengths, a user command) and their zero-copy `z*` forms — returns a
//! [`Timestamp`] as soon as the node accepted it, exactly as in ps-lite;
//! [`wait`](KvWorker::wait) or [`wait_pull`](KvWorker::wait_pull) completes
//! it. Methods that issue and wait in one call end in `_wait`.
//!
//! [`KvWorker<T>`] fixes the element type, so pushing `f64`s to an `f32`
//! worker does not compile; [`RawKvWorker`] is the escape hatch for apps
//! that mix types, choosing the type per call. Each worker is one
//! customer, so several in one process never see each other's
//! completions; clones share it.

use std::marker::PhantomData;

use bytes::Bytes;
use pslite_core::{CustomerId, DType, Element, Keys, KvCall, KvList, KvOp, Lens, Timestamp, Values};

use crate::error::{Error, Result};
use crate::handle::{Clock, NodeHandle};
use crate::msg::{Command, Completion};

/// What a pull (or push_pull) brought back, of element type `T`: checked
/// when the answer arrived, so reading it cannot fail.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> pslite_io::Result<()> {
/// # let cluster = pslite_io::LocalCluster::start(1, 1).await?;
/// # let worker = cluster.worker::<f32>(0);
///
/// use pslite_core::Lens;
/// // Key 3 holds two values, key 8 one.
/// worker.wait(worker.push_with(&[3, 8], &[1.0, 2.0, 3.0], Some(&[2, 1]), 0).await?).await?;
/// let pulled = worker.wait_pull(worker.pull(&[3, 8]).await?).await?;
/// assert_eq!(pulled.keys().to_vec(), [3, 8]);
/// assert_eq!(pulled.lens().map(Lens::to_vec), Some(vec![2, 1]));
/// assert_eq!(pulled.to_vec(), [1.0, 2.0, 3.0]);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Pulled<T> {
    keys: Keys,
    values: Values,
    lens: Option<Lens>,
    element: PhantomData<fn() -> T>,
}

impl<T: Element> Pulled<T> {
    /// The answer of `raw` as `T`; an error if the servers sent another type.
    fn typed(raw: RawPulled) -> Result<Self> {
        // The core checked the servers' answers against the request, so
        // another type here is the caller's: it issued the request as one.
        if raw.values.dtype() != T::DTYPE {
            return Err(Error::ValueType { asked: T::DTYPE, issued: raw.values.dtype() });
        }
        Ok(Self { keys: raw.keys, values: raw.values, lens: raw.lens, element: PhantomData })
    }

    /// The keys asked for, ascending.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Per-key value counts, when the servers' values vary in length
    /// (ps-lite's `lens`); `None` when every key has the same number.
    pub fn lens(&self) -> Option<&Lens> {
        self.lens.as_ref()
    }

    /// The values in key order, copied out.
    pub fn to_vec(&self) -> Vec<T> {
        self.values.iter::<T>().collect()
    }

    /// The values in place, without a copy, when the buffer allows it
    /// (see [`Values::as_slice`]); otherwise use [`to_vec`](Self::to_vec).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// # let cluster = pslite_io::LocalCluster::start(1, 1).await?;
    /// # let worker = cluster.worker::<f32>(0);
    ///
    /// worker.push_wait(&[1, 2, 3], &[1.0, 2.0, 3.0]).await?;
    /// let pulled = worker.wait_pull(worker.pull(&[1, 2, 3]).await?).await?;
    /// let sum: f32 = match pulled.as_slice() {
    ///     Some(values) => values.iter().sum(),
    ///     None => pulled.to_vec().iter().sum(), // not aligned where it landed
    /// };
    /// assert_eq!(sum, 6.0);
    /// # Ok(()) }
    /// ```
    pub fn as_slice(&self) -> Option<&[T]> {
        self.values.as_slice()
    }

    /// The untyped buffer, to hand on without copying (say, to a `zpush`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// # let cluster = pslite_io::LocalCluster::start(1, 1).await?;
    /// # let worker = cluster.worker::<f32>(0);
    ///
    /// worker.push_wait(&[1, 2], &[1.0, 2.0]).await?;
    /// let pulled = worker.wait_pull(worker.pull(&[1, 2]).await?).await?;
    /// // Push back what came in, as it came: its buffer is shared, not copied.
    /// let bytes = pulled.values().as_bytes().clone();
    /// worker.wait(worker.zpush(pulled.keys().clone(), bytes, None, 0).await?).await?;
    /// assert_eq!(worker.pull_wait(&[1, 2]).await?, [2.0, 4.0]);
    /// # Ok(()) }
    /// ```
    pub fn values(&self) -> &Values {
        &self.values
    }
}

/// What a pull brought back on a [`RawKvWorker`], of the type asked for.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> pslite_io::Result<()> {
/// # let cluster = pslite_io::LocalCluster::start(1, 1).await?;
/// # let raw = cluster.raw_worker(0);
///
/// use pslite_core::{DType, Keys, Values};
/// let keys = Keys::from_slice(&[4]);
/// raw.wait(raw.zpush(keys.clone(), Values::from_slice(&[2.5f32]), None, 0).await?).await?;
/// let pulled = raw.wait_pull(raw.zpull(keys, DType::F32, 0).await?).await?;
/// // The values are of the type asked for; read them as that.
/// assert_eq!(pulled.values.dtype(), DType::F32);
/// assert_eq!(pulled.values.get::<f32>(0), Some(2.5));
/// assert!(pulled.lens.is_none(), "one value per key");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RawPulled {
    /// The keys asked for.
    pub keys: Keys,
    /// Their values, in key order.
    pub values: Values,
    /// Per-key lengths, when they vary.
    pub lens: Option<Lens>,
}

fn not_a_pull(ts: Timestamp) -> Error {
    Error::Request(pslite_core::ApiMisuse::WrongKind { ts: ts.0, expected: "pull" }.into())
}

/// A worker whose element type is chosen per call: for apps that keep
/// several types on one customer. Prefer [`KvWorker<T>`].
///
/// ```no_run
/// # async fn run(cluster: pslite_io::LocalCluster) -> pslite_io::Result<()> {
/// use pslite_core::{DType, Keys, Values};
/// let worker = cluster.raw_worker(0);
/// let keys = Keys::from_slice(&[3, 7]);
/// let ts = worker.zpush(keys.clone(), Values::from_slice(&[1.0f32, 2.0]), None, 0).await?;
/// worker.wait(ts).await?;
/// let pulled = worker.wait_pull(worker.zpull(keys, DType::F32, 0).await?).await?;
/// assert_eq!(pulled.values.to_vec::<f32>(), Some(vec![1.0, 2.0]));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct RawKvWorker {
    node: NodeHandle,
    customer: CustomerId,
    clock: Clock,
}

impl RawKvWorker {
    /// Customer `customer` of `node` (which must be a worker).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// # let cluster = pslite_io::LocalCluster::start(1, 1).await?;
    ///
    /// use pslite_core::{CustomerId, DType, Keys};
    /// use pslite_io::RawKvWorker;
    /// let node = cluster.workers[0].clone();
    /// let (a, b) = (CustomerId::new(0, 1), CustomerId::new(0, 2));
    /// let (table_a, table_b) = (RawKvWorker::new(node.clone(), a), RawKvWorker::new(node, b));
    /// assert_eq!((table_a.customer(), table_b.customer()), (a, b));
    /// // Each customer counts its own timestamps and waits for its own requests.
    /// let ts_a = table_a.zpull(Keys::from_slice(&[1]), DType::F32, 0).await?;
    /// let ts_b = table_b.zpull(Keys::from_slice(&[1]), DType::F32, 0).await?;
    /// assert_eq!(ts_a, ts_b);
    /// table_a.wait(ts_a).await?;
    /// table_b.wait(ts_b).await?;
    /// # Ok(()) }
    /// ```
    pub fn new(node: NodeHandle, customer: CustomerId) -> Self {
        let clock = node.clock(customer);
        Self { node, customer, clock }
    }

    /// The node behind this worker.
    pub fn node(&self) -> &NodeHandle {
        &self.node
    }

    /// This worker's customer id.
    pub fn customer(&self) -> CustomerId {
        self.customer
    }

    /// Pushes `values` for ascending `keys` without copying them (ps-lite's
    /// `ZPush`): an equal number of values per key, or `lens[i]` for key
    /// `i`. `cmd` reaches the server's handle (0 for the default).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// # let cluster = pslite_io::LocalCluster::start(1, 1).await?;
    /// # let raw = cluster.raw_worker(0);
    ///
    /// use pslite_core::{DType, Keys, Lens, Values};
    /// let keys = Keys::from_slice(&[3, 8]);
    /// // Variable-length values: two for key 3, one for key 8.
    /// let (values, lens) = (Values::from_slice(&[1.0f32, 2.0, 3.0]), Lens::from_slice(&[2, 1]));
    /// let ts = raw.zpush(keys.clone(), values, Some(lens), 0).await?;
    /// raw.wait(ts).await?;
    /// let pulled = raw.wait_pull(raw.zpull(keys, DType::F32, 0).await?).await?;
    /// assert_eq!(pulled.lens.map(|lens| lens.to_vec()), Some(vec![2, 1]));
    /// # Ok(()) }
    /// ```
    pub async fn zpush(&self, keys: Keys, values: Values, lens: Option<Lens>, cmd: i32) -> Result<Timestamp> {
        self.request(cmd, KvOp::Push, keys, values, lens).await
    }

    /// Pulls `keys` as `dtype` (ps-lite's `ZPull`); resolve with
    /// [`wait_pull`](Self::wait_pull).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// # let cluster = pslite_io::LocalCluster::start(1, 1).await?;
    /// # let raw = cluster.raw_worker(0);
    ///
    /// use pslite_core::{DType, Keys, RequestError};
    /// use pslite_io::Error;
    /// let keys = Keys::from_slice(&[1, 2]);
    /// // Never pushed: the default store answers zeros.
    /// let pulled = raw.wait_pull(raw.zpull(keys.clone(), DType::F32, 0).await?).await?;
    /// assert_eq!(pulled.values.to_vec::<f32>(), Some(vec![0.0, 0.0]));
    /// // The type must be the servers': they refuse to answer f32s as f64s.
    /// let refused = raw.wait_pull(raw.zpull(keys, DType::F64, 0).await?).await;
    /// assert!(matches!(refused, Err(Error::Request(RequestError::Refused { .. }))));
    /// # Ok(()) }
    /// ```
    pub async fn zpull(&self, keys: Keys, dtype: DType, cmd: i32) -> Result<Timestamp> {
        self.request(cmd, KvOp::Pull, keys, Values::empty(dtype), None).await
    }

    /// Pushes, then pulls the same keys in one round trip (ps-lite's
    /// `ZPushPull`); resolve with [`wait_pull`](Self::wait_pull).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// # let cluster = pslite_io::LocalCluster::start(1, 1).await?;
    /// # let raw = cluster.raw_worker(0);
    ///
    /// use pslite_core::{Keys, Values};
    /// let keys = Keys::from_slice(&[5]);
    /// raw.wait(raw.zpush(keys.clone(), Values::from_slice(&[1.0f32]), None, 0).await?).await?;
    /// // One round trip: the sum after this push comes back.
    /// let pulled = raw.wait_pull(raw.zpush_pull(keys, Values::from_slice(&[0.5f32]), None, 0).await?).await?;
    /// assert_eq!(pulled.values.to_vec::<f32>(), Some(vec![1.5]));
    /// # Ok(()) }
    /// ```
    pub async fn zpush_pull(&self, keys: Keys, values: Values, lens: Option<Lens>, cmd: i32) -> Result<Timestamp> {
        self.request(cmd, KvOp::PushPull, keys, values, lens).await
    }

    /// Checks the request here, so caller mistakes fail the call itself,
    /// then queues it under a timestamp taken from the customer's clock:
    /// no round trip to the node's task. Anything the cluster does to the
    /// request is reported by `wait`.
    async fn request(&self, cmd: i32, op: KvOp, keys: Keys, values: Values, lens: Option<Lens>) -> Result<Timestamp> {
        let list = KvList { keys, values, lens };
        pslite_core::check_request(op, &list).map_err(pslite_core::RequestError::from)?;
        let customer = self.customer;
        self.node.issue(&self.clock, |ts| Command::Kv { call: KvCall { customer, ts: Some(ts), cmd, op, list } }).await
    }

    /// Waits for request `ts`; an error if it failed. Each timestamp can
    /// be waited for once.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// # let cluster = pslite_io::LocalCluster::start(1, 1).await?;
    /// # let raw = cluster.raw_worker(0);
    ///
    /// use pslite_core::{Keys, RequestError, Values};
    /// use pslite_io::Error;
    /// // f64s for a store of f32s: accepted here, refused by the server, and
    /// // the refusal comes with the wait.
    /// let ts = raw.zpush(Keys::from_slice(&[1]), Values::from_slice(&[1.0f64]), None, 0).await?;
    /// assert!(matches!(raw.wait(ts).await, Err(Error::Request(RequestError::Refused { .. }))));
    /// # Ok(()) }
    /// ```
    pub async fn wait(&self, ts: Timestamp) -> Result<()> {
        self.node.wait(self.customer, ts).await.map(|_| ())
    }

    /// Waits for a pull or push_pull and returns what it brought back.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// # let cluster = pslite_io::LocalCluster::start(1, 1).await?;
    /// # let raw = cluster.raw_worker(0);
    ///
    /// use pslite_core::{ApiMisuse, Keys, RequestError, Values};
    /// use pslite_io::Error;
    /// let ts = raw.zpush(Keys::from_slice(&[1]), Values::from_slice(&[1.0f32]), None, 0).await?;
    /// // A push brings nothing back: waiting for values is a mistake.
    /// let misuse = raw.wait_pull(ts).await;
    /// assert!(matches!(misuse, Err(Error::Request(RequestError::ApiMisuse(ApiMisuse::WrongKind { .. })))));
    /// # Ok(()) }
    /// ```
    pub async fn wait_pull(&self, ts: Timestamp) -> Result<RawPulled> {
        match self.node.wait(self.customer, ts).await? {
            Completion::Pulled { keys, values, lens } => Ok(RawPulled { keys, values, lens }),
            Completion::Done | Completion::Simple(_) => Err(not_a_pull(ts)),
        }
    }
}

/// ps-lite's `KVWorker<Val>`: pushes and pulls values of `T` (`f32`, `f64`,
/// `i32`, `i64` or `u8`) on one customer of a worker node.
///
/// ```no_run
/// # async fn run(cluster: pslite_io::LocalCluster) -> pslite_io::Result<()> {
/// let worker = cluster.worker::<f32>(0);
/// let keys = [1, 5, u64::MAX];
/// // Issue, then wait, as in ps-lite ...
/// let ts = worker.push(&keys, &[1.0, 2.0, 3.0]).await?;
/// worker.wait(ts).await?;
/// let ts = worker.pull(&keys).await?;
/// assert_eq!(worker.wait_pull(ts).await?.to_vec(), vec![1.0, 2.0, 3.0]);
/// // ... or both in one call.
/// assert_eq!(worker.push_pull_wait(&keys, &[1.0; 3]).await?, vec![2.0, 3.0, 4.0]);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct KvWorker<T> {
    raw: RawKvWorker,
    element: PhantomData<fn() -> T>,
}

// Derived `Clone` would ask `T: Clone` of the marker alone.
impl<T> Clone for KvWorker<T> {
    fn clone(&self) -> Self {
        Self { raw: self.raw.clone(), element: PhantomData }
    }
}

impl<T: Element> KvWorker<T> {
    /// Customer `customer` of `node` (which must be a worker).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// # let cluster = pslite_io::LocalCluster::start(1, 1).await?;
    ///
    /// use pslite_core::CustomerId;
    /// use pslite_io::KvWorker;
    /// // Two tables on one node, each its own customer of application 0.
    /// let weights = KvWorker::<f32>::new(cluster.workers[0].clone(), CustomerId::new(0, 0));
    /// let counts = KvWorker::<f32>::new(cluster.workers[0].clone(), CustomerId::new(0, 1));
    /// assert_ne!(weights.customer(), counts.customer());
    /// assert_eq!(weights.node().info().id, counts.node().info().id);
    /// # Ok(()) }
    /// ```
    pub fn new(node: NodeHandle, customer: CustomerId) -> Self {
        Self::from_raw(RawKvWorker::new(node, customer))
    }

    /// The typed view of `raw`'s customer; both can be used side by side.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// # let cluster = pslite_io::LocalCluster::start(1, 1).await?;
    ///
    /// use pslite_core::{DType, Keys};
    /// use pslite_io::KvWorker;
    /// let raw = cluster.raw_worker(0);
    /// let typed = KvWorker::<f32>::from_raw(raw.clone());
    /// typed.push_wait(&[1], &[2.0]).await?;
    /// // Same customer: the raw view reads what the typed one wrote.
    /// assert_eq!(typed.raw().customer(), raw.customer());
    /// let pulled = raw.wait_pull(raw.zpull(Keys::from_slice(&[1]), DType::F32, 0).await?).await?;
    /// assert_eq!(pulled.values.to_vec::<f32>(), Some(vec![2.0]));
    /// # Ok(()) }
    /// ```
    pub fn from_raw(raw: RawKvWorker) -> Self {
        Self { raw, element: PhantomData }
    }

    /// The untyped worker on the same customer.
    pub fn raw(&self) -> &RawKvWorker {
        &self.raw
    }

    /// The node behind this worker.
    pub fn node(&self) -> &NodeHandle {
        self.raw.node()
    }

    /// This worker's customer id.
    pub fn customer(&self) -> CustomerId {
        self.raw.customer()
    }

    /// Pushes `values` (an equal number per key) for strictly ascending `keys`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// # let cluster = pslite_io::LocalCluster::start(1, 1).await?;
    /// # let worker = cluster.worker::<f32>(0);
    ///
    /// // Both pushes are in flight at once; the default store sums them.
    /// let first = worker.push(&[1, 2], &[1.0, 2.0]).await?;
    /// let second = worker.push(&[1, 2], &[10.0, 20.0]).await?;
    /// worker.wait(first).await?;
    /// worker.wait(second).await?;
    /// assert_eq!(worker.pull_wait(&[1, 2]).await?, [11.0, 22.0]);
    /// # Ok(()) }
    /// ```
    pub async fn push(&self, keys: &[u64], values: &[T]) -> Result<Timestamp> {
        self.push_with(keys, values, None, 0).await
    }

    /// Pushes with per-key value counts `lens` (variable-length values)
    /// and a user command `cmd` for the server's handle.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// # let cluster = pslite_io::LocalCluster::start(1, 1).await?;
    /// # let worker = cluster.worker::<f32>(0);
    ///
    /// // Key 3 holds two values, key 8 one.
    /// worker.wait(worker.push_with(&[3, 8], &[1.0, 2.0, 3.0], Some(&[2, 1]), 0).await?).await?;
    /// assert_eq!(worker.pull_wait(&[3, 8]).await?, [1.0, 2.0, 3.0]);
    /// // Lengths that do not add up to the values fail the call itself.
    /// assert!(worker.push_with(&[3, 8], &[1.0, 2.0], Some(&[2, 1]), 0).await.is_err());
    /// # Ok(()) }
    /// ```
    pub async fn push_with(&self, keys: &[u64], values: &[T], lens: Option<&[u32]>, cmd: i32) -> Result<Timestamp> {
        let lens = lens.map(Lens::from_slice);
        self.raw.zpush(Keys::from_slice(keys), Values::from_slice(values), lens, cmd).await
    }

    /// Zero-copy push: `values` holds little-endian `T`s (what
    /// [`Values::as_bytes`] gives), shared with the socket writer.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// # let cluster = pslite_io::LocalCluster::start(1, 1).await?;
    /// # let worker = cluster.worker::<f32>(0);
    ///
    /// use bytes::Bytes;
    /// use pslite_core::{Keys, Values};
    /// // Bytes from anywhere (a file, another pull), sent without a copy.
    /// let bytes = Values::from_slice(&[1.5f32, 2.5]).as_bytes().clone();
    /// worker.wait(worker.zpush(Keys::from_slice(&[1, 2]), bytes, None, 0).await?).await?;
    /// assert_eq!(worker.pull_wait(&[1, 2]).await?, [1.5, 2.5]);
    /// // Six bytes are not whole f32s: refused before anything is sent.
    /// assert!(worker.zpush(Keys::from_slice(&[1]), Bytes::from_static(&[0; 6]), None, 0).await.is_err());
    /// # Ok(()) }
    /// ```
    pub async fn zpush(&self, keys: Keys, values: Bytes, lens: Option<Lens>, cmd: i32) -> Result<Timestamp> {
        self.raw.zpush(keys, typed_values::<T>(values)?, lens, cmd).await
    }

    /// Starts a pull of `keys`; resolve with [`wait_pull`](Self::wait_pull).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// # let cluster = pslite_io::LocalCluster::start(1, 1).await?;
    /// # let worker = cluster.worker::<f32>(0);
    ///
    /// worker.push_wait(&[1, 2], &[1.0, 2.0]).await?;
    /// // Several pulls in flight; waits may come in any order.
    /// let first = worker.pull(&[1]).await?;
    /// let second = worker.pull(&[2]).await?;
    /// assert_eq!(worker.wait_pull(second).await?.to_vec(), [2.0]);
    /// assert_eq!(worker.wait_pull(first).await?.to_vec(), [1.0]);
    /// # Ok(()) }
    /// ```
    pub async fn pull(&self, keys: &[u64]) -> Result<Timestamp> {
        self.pull_with(keys, 0).await
    }

    /// A pull with a user command `cmd` for the server's handle.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// # let cluster = pslite_io::LocalCluster::start(1, 1).await?;
    ///
    /// use pslite_core::{Response, Values};
    /// use pslite_io::ServerHandle;
    /// // A handle that answers every key with the command it was sent.
    /// let handle = ServerHandle::deferred(|request, responder| {
    ///     let values = Values::from_slice(&vec![request.cmd; request.keys.len()]);
    ///     let _ = responder.respond(Response::Ok { values, lens: None });
    /// });
    /// cluster.servers[0].set_handle(0, handle).await?;
    /// let worker = cluster.worker::<i32>(0);
    /// assert_eq!(worker.wait_pull(worker.pull_with(&[1, 2], 7).await?).await?.to_vec(), [7, 7]);
    /// # Ok(()) }
    /// ```
    pub async fn pull_with(&self, keys: &[u64], cmd: i32) -> Result<Timestamp> {
        self.zpull(Keys::from_slice(keys), cmd).await
    }

    /// Zero-copy pull of `keys`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// # let cluster = pslite_io::LocalCluster::start(1, 1).await?;
    /// # let worker = cluster.worker::<f32>(0);
    ///
    /// use pslite_core::Keys;
    /// // Built once, shared by every pull: each clone only counts a reference.
    /// let keys = Keys::from_slice(&[1, 5, 9]);
    /// for _ in 0..3 {
    ///     let ts = worker.zpull(keys.clone(), 0).await?;
    ///     assert_eq!(worker.wait_pull(ts).await?.to_vec(), [0.0; 3]);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn zpull(&self, keys: Keys, cmd: i32) -> Result<Timestamp> {
        self.raw.zpull(keys, T::DTYPE, cmd).await
    }

    /// Pushes, then pulls the result, in one round trip; resolve with
    /// [`wait_pull`](Self::wait_pull).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// # let cluster = pslite_io::LocalCluster::start(1, 1).await?;
    /// # let worker = cluster.worker::<f32>(0);
    ///
    /// // A gradient in, the model after it out, in one round trip.
    /// let ts = worker.push_pull(&[1, 2], &[0.5, -0.5]).await?;
    /// assert_eq!(worker.wait_pull(ts).await?.to_vec(), [0.5, -0.5]);
    /// let ts = worker.push_pull(&[1, 2], &[0.5, -0.5]).await?;
    /// assert_eq!(worker.wait_pull(ts).await?.to_vec(), [1.0, -1.0]);
    /// # Ok(()) }
    /// ```
    pub async fn push_pull(&self, keys: &[u64], values: &[T]) -> Result<Timestamp> {
        self.push_pull_with(keys, values, None, 0).await
    }

    /// [`push_pull`](Self::push_pull) with per-key lengths and a command.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// # let cluster = pslite_io::LocalCluster::start(1, 1).await?;
    /// # let worker = cluster.worker::<f32>(0);
    ///
    /// use pslite_core::Lens;
    /// let ts = worker.push_pull_with(&[3, 8], &[1.0, 2.0, 3.0], Some(&[2, 1]), 0).await?;
    /// let pulled = worker.wait_pull(ts).await?;
    /// // The lengths come back with the values.
    /// assert_eq!(pulled.lens().map(Lens::to_vec), Some(vec![2, 1]));
    /// assert_eq!(pulled.to_vec(), [1.0, 2.0, 3.0]);
    /// # Ok(()) }
    /// ```
    pub async fn push_pull_with(
        &self,
        keys: &[u64],
        values: &[T],
        lens: Option<&[u32]>,
        cmd: i32,
    ) -> Result<Timestamp> {
        let lens = lens.map(Lens::from_slice);
        self.raw.zpush_pull(Keys::from_slice(keys), Values::from_slice(values), lens, cmd).await
    }

    /// Zero-copy push_pull; `values` as for [`zpush`](Self::zpush).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// # let cluster = pslite_io::LocalCluster::start(1, 1).await?;
    /// # let worker = cluster.worker::<f32>(0);
    ///
    /// use pslite_core::{Keys, Values};
    /// let keys = Keys::from_slice(&[1, 2]);
    /// let delta = Values::from_slice(&[1.0f32, 1.0]).as_bytes().clone();
    /// // The same bytes pushed twice, shared rather than copied.
    /// worker.wait(worker.zpush(keys.clone(), delta.clone(), None, 0).await?).await?;
    /// let ts = worker.zpush_pull(keys, delta, None, 0).await?;
    /// assert_eq!(worker.wait_pull(ts).await?.to_vec(), [2.0, 2.0]);
    /// # Ok(()) }
    /// ```
    pub async fn zpush_pull(&self, keys: Keys, values: Bytes, lens: Option<Lens>, cmd: i32) -> Result<Timestamp> {
        self.raw.zpush_pull(keys, typed_values::<T>(values)?, lens, cmd).await
    }

    /// Waits for request `ts`; an error if it failed (a dead server, a
    /// timeout, a refusal). Each timestamp can be waited for once.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// # let cluster = pslite_io::LocalCluster::start(1, 1).await?;
    /// # let worker = cluster.worker::<f32>(0);
    ///
    /// // Keep a window of requests in flight, and wait for each in turn.
    /// let mut in_flight = Vec::new();
    /// for key in 0..4 {
    ///     in_flight.push(worker.push(&[key], &[1.0]).await?);
    /// }
    /// for ts in in_flight {
    ///     worker.wait(ts).await?;
    /// }
    /// assert_eq!(worker.pull_wait(&[0, 1, 2, 3]).await?, [1.0; 4]);
    /// # Ok(()) }
    /// ```
    pub async fn wait(&self, ts: Timestamp) -> Result<()> {
        self.raw.wait(ts).await
    }

    /// Waits for a pull or push_pull and returns what it brought back.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// # let cluster = pslite_io::LocalCluster::start(1, 1).await?;
    ///
    /// use pslite_core::RequestError;
    /// use pslite_io::Error;
    /// // The default store holds f32s; a worker of another type is refused.
    /// let wrong = cluster.worker::<f64>(0);
    /// let ts = wrong.pull(&[1]).await?;
    /// assert!(matches!(wrong.wait_pull(ts).await, Err(Error::Request(RequestError::Refused { .. }))));
    /// # Ok(()) }
    /// ```
    pub async fn wait_pull(&self, ts: Timestamp) -> Result<Pulled<T>> {
        Pulled::typed(self.raw.wait_pull(ts).await?)
    }

    /// Pushes and waits until every server applied the push.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// # let cluster = pslite_io::LocalCluster::start(1, 1).await?;
    /// # let worker = cluster.worker::<f32>(0);
    ///
    /// // Returns once applied, so whatever comes next sees the push.
    /// worker.push_wait(&[7], &[0.25]).await?;
    /// assert_eq!(worker.pull_wait(&[7]).await?, [0.25]);
    /// # Ok(()) }
    /// ```
    pub async fn push_wait(&self, keys: &[u64], values: &[T]) -> Result<()> {
        let ts = self.push(keys, values).await?;
        self.wait(ts).await
    }

    /// Pulls and waits for the values.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// # let cluster = pslite_io::LocalCluster::start(1, 1).await?;
    /// # let worker = cluster.worker::<f32>(0);
    ///
    /// // Keys never pushed pull as zeros: a model starts at zero.
    /// assert_eq!(worker.pull_wait(&[1, u64::MAX]).await?, [0.0, 0.0]);
    /// # Ok(()) }
    /// ```
    pub async fn pull_wait(&self, keys: &[u64]) -> Result<Vec<T>> {
        let ts = self.pull(keys).await?;
        Ok(self.wait_pull(ts).await?.to_vec())
    }

    /// Pushes, pulls the result in the same round trip, and waits for it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pslite_io::Result<()> {
    /// let cluster = pslite_io::LocalCluster::start(1, 2).await?;
    /// let (a, b) = (cluster.worker::<f32>(0), cluster.worker::<f32>(1));
    /// assert_eq!(a.push_pull_wait(&[9], &[1.0]).await?, [1.0]);
    /// // The other worker's answer includes the first one's push.
    /// assert_eq!(b.push_pull_wait(&[9], &[1.0]).await?, [2.0]);
    /// # Ok(()) }
    /// ```
    pub async fn push_pull_wait(&self, keys: &[u64], values: &[T]) -> Result<Vec<T>> {
        let ts = self.push_pull(keys, values).await?;
        Ok(self.wait_pull(ts).await?.to_vec())
    }
}

/// `bytes` as values of `T`; a caller error when they are not whole `T`s.
fn typed_values<T: Element>(bytes: Bytes) -> Result<Values> {
    let got = bytes.len();
    Values::from_bytes(T::DTYPE, bytes).ok_or_else(|| {
        let misuse = pslite_core::ApiMisuse::LengthMismatch {
            what: "value bytes not a whole number of elements",
            expected: (got - got % T::DTYPE.size()) as u64,
            got: got as u64,
        };
        Error::Request(misuse.into())
    })
}
