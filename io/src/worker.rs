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
        if raw.values.dtype() != T::DTYPE {
            return Err(Error::Request(pslite_core::RequestError::BadResponse {
                server: pslite_core::NodeId::UNASSIGNED,
                mismatch: pslite_core::Mismatch::ValueType,
            }));
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
    pub fn as_slice(&self) -> Option<&[T]> {
        self.values.as_slice()
    }

    /// The untyped buffer, to hand on without copying (say, to a `zpush`).
    pub fn values(&self) -> &Values {
        &self.values
    }
}

/// What a pull brought back on a [`RawKvWorker`], of the type asked for.
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
    pub async fn zpush(&self, keys: Keys, values: Values, lens: Option<Lens>, cmd: i32) -> Result<Timestamp> {
        self.request(cmd, KvOp::Push, keys, values, lens).await
    }

    /// Pulls `keys` as `dtype` (ps-lite's `ZPull`); resolve with
    /// [`wait_pull`](Self::wait_pull).
    pub async fn zpull(&self, keys: Keys, dtype: DType, cmd: i32) -> Result<Timestamp> {
        self.request(cmd, KvOp::Pull, keys, Values::empty(dtype), None).await
    }

    /// Pushes, then pulls the same keys in one round trip (ps-lite's
    /// `ZPushPull`); resolve with [`wait_pull`](Self::wait_pull).
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
    pub async fn wait(&self, ts: Timestamp) -> Result<()> {
        self.node.wait(self.customer, ts).await.map(|_| ())
    }

    /// Waits for a pull or push_pull and returns what it brought back.
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
    pub fn new(node: NodeHandle, customer: CustomerId) -> Self {
        Self::from_raw(RawKvWorker::new(node, customer))
    }

    /// The typed view of `raw`'s customer; both can be used side by side.
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
    pub async fn push(&self, keys: &[u64], values: &[T]) -> Result<Timestamp> {
        self.push_with(keys, values, None, 0).await
    }

    /// Pushes with per-key value counts `lens` (variable-length values)
    /// and a user command `cmd` for the server's handle.
    pub async fn push_with(&self, keys: &[u64], values: &[T], lens: Option<&[u32]>, cmd: i32) -> Result<Timestamp> {
        let lens = lens.map(Lens::from_slice);
        self.raw.zpush(Keys::from_slice(keys), Values::from_slice(values), lens, cmd).await
    }

    /// Zero-copy push: `values` holds little-endian `T`s (what
    /// [`Values::as_bytes`] gives), shared with the socket writer.
    pub async fn zpush(&self, keys: Keys, values: Bytes, lens: Option<Lens>, cmd: i32) -> Result<Timestamp> {
        self.raw.zpush(keys, typed_values::<T>(values)?, lens, cmd).await
    }

    /// Starts a pull of `keys`; resolve with [`wait_pull`](Self::wait_pull).
    pub async fn pull(&self, keys: &[u64]) -> Result<Timestamp> {
        self.pull_with(keys, 0).await
    }

    /// A pull with a user command `cmd` for the server's handle.
    pub async fn pull_with(&self, keys: &[u64], cmd: i32) -> Result<Timestamp> {
        self.zpull(Keys::from_slice(keys), cmd).await
    }

    /// Zero-copy pull of `keys`.
    pub async fn zpull(&self, keys: Keys, cmd: i32) -> Result<Timestamp> {
        self.raw.zpull(keys, T::DTYPE, cmd).await
    }

    /// Pushes, then pulls the result, in one round trip; resolve with
    /// [`wait_pull`](Self::wait_pull).
    pub async fn push_pull(&self, keys: &[u64], values: &[T]) -> Result<Timestamp> {
        self.push_pull_with(keys, values, None, 0).await
    }

    /// [`push_pull`](Self::push_pull) with per-key lengths and a command.
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
    pub async fn zpush_pull(&self, keys: Keys, values: Bytes, lens: Option<Lens>, cmd: i32) -> Result<Timestamp> {
        self.raw.zpush_pull(keys, typed_values::<T>(values)?, lens, cmd).await
    }

    /// Waits for request `ts`; an error if it failed (a dead server, a
    /// timeout, a refusal). Each timestamp can be waited for once.
    pub async fn wait(&self, ts: Timestamp) -> Result<()> {
        self.raw.wait(ts).await
    }

    /// Waits for a pull or push_pull and returns what it brought back.
    pub async fn wait_pull(&self, ts: Timestamp) -> Result<Pulled<T>> {
        Pulled::typed(self.raw.wait_pull(ts).await?)
    }

    /// Pushes and waits until every server applied the push.
    pub async fn push_wait(&self, keys: &[u64], values: &[T]) -> Result<()> {
        let ts = self.push(keys, values).await?;
        self.wait(ts).await
    }

    /// Pulls and waits for the values.
    pub async fn pull_wait(&self, keys: &[u64]) -> Result<Vec<T>> {
        let ts = self.pull(keys).await?;
        Ok(self.wait_pull(ts).await?.to_vec())
    }

    /// Pushes, pulls the result in the same round trip, and waits for it.
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
