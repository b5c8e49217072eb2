//! The worker API: ps-lite's `KVWorker` over a running node.
//!
//! `push`, `pull` and `push_pull` return a timestamp as soon as the node
//! accepted the request (ps-lite semantics); `wait` resolves it. The
//! `z*` forms take `Bytes`-backed keys and values and never copy them on
//! the way to the socket (ps-lite's `ZPush`/`ZPull`). Each `KvWorker` is
//! one customer, so several in one process never see each other's
//! completions.

use pslite_core::{CustomerId, DType, Element, Keys, KvCall, KvList, KvOp, Lens, Timestamp, Values};

use crate::error::{Error, Result};
use crate::handle::{Clock, NodeHandle};
use crate::msg::{Command, Completion};

/// Pulled values with their keys.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The keys asked for.
    pub keys: Keys,
    /// Their values, in key order.
    pub values: Values,
    /// Per-key lengths, when they vary.
    pub lens: Option<Lens>,
}

impl Pulled {
    /// The values as a vector of `T`; an error if the server sent another type.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        self.values.to_vec().ok_or({
            Error::Request(pslite_core::RequestError::BadResponse {
                server: pslite_core::NodeId::UNASSIGNED,
                mismatch: pslite_core::Mismatch::ValueType,
            })
        })
    }
}

fn not_a_pull(ts: Timestamp) -> Error {
    Error::Request(pslite_core::ApiMisuse::WrongKind { ts: ts.0, expected: "pull" }.into())
}

/// A worker-side customer of a node.
#[derive(Clone, Debug)]
pub struct KvWorker {
    node: NodeHandle,
    customer: CustomerId,
    clock: Clock,
}

impl KvWorker {
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

    /// Pushes `values` (an equal number per key) for ascending `keys`.
    pub async fn push<T: Element>(&self, keys: &[u64], values: &[T]) -> Result<Timestamp> {
        self.zpush(0, Keys::from_slice(keys), Values::from_slice(values), None).await
    }

    /// Pushes with per-key lengths (variable-length values).
    pub async fn push_lens<T: Element>(&self, keys: &[u64], values: &[T], lens: &[u32]) -> Result<Timestamp> {
        self.zpush(0, Keys::from_slice(keys), Values::from_slice(values), Some(Lens::from_slice(lens))).await
    }

    /// Zero-copy push with a user command.
    pub async fn zpush(&self, cmd: i32, keys: Keys, values: Values, lens: Option<Lens>) -> Result<Timestamp> {
        self.request(cmd, KvOp::Push, keys, values, lens).await
    }

    /// Starts a pull of `keys` as `T`; resolve with [`wait_pull`](Self::wait_pull).
    pub async fn pull_ts<T: Element>(&self, keys: &[u64]) -> Result<Timestamp> {
        self.zpull(0, Keys::from_slice(keys), T::DTYPE).await
    }

    /// Zero-copy pull with a user command.
    pub async fn zpull(&self, cmd: i32, keys: Keys, dtype: DType) -> Result<Timestamp> {
        self.request(cmd, KvOp::Pull, keys, Values::empty(dtype), None).await
    }

    /// Pulls `keys` and waits for the values.
    pub async fn pull<T: Element>(&self, keys: &[u64]) -> Result<Vec<T>> {
        let ts = self.pull_ts::<T>(keys).await?;
        self.wait_pull(ts).await?.to_vec()
    }

    /// Pushes, then pulls the result, in one round trip.
    pub async fn push_pull<T: Element>(&self, keys: &[u64], values: &[T]) -> Result<Vec<T>> {
        let ts = self.zpush_pull(0, Keys::from_slice(keys), Values::from_slice(values), None).await?;
        self.wait_pull(ts).await?.to_vec()
    }

    /// Zero-copy push_pull; resolve with [`wait_pull`](Self::wait_pull).
    pub async fn zpush_pull(&self, cmd: i32, keys: Keys, values: Values, lens: Option<Lens>) -> Result<Timestamp> {
        self.request(cmd, KvOp::PushPull, keys, values, lens).await
    }

    /// Checks the request here, so caller mistakes fail the call itself,
    /// then queues it under a timestamp taken from the customer's clock:
    /// no round trip to the node's task. Anything the cluster does to the
    /// request is reported by `wait`.
    async fn request(&self, cmd: i32, op: KvOp, keys: Keys, values: Values, lens: Option<Lens>) -> Result<Timestamp> {
        let list = KvList { keys, values, lens };
        pslite_core::slice::check_request(op, &list).map_err(pslite_core::RequestError::from)?;
        let customer = self.customer;
        self.node.issue(&self.clock, |ts| Command::Kv { call: KvCall { customer, ts: Some(ts), cmd, op, list } }).await
    }

    /// Waits for request `ts`; an error if it failed.
    pub async fn wait(&self, ts: Timestamp) -> Result<()> {
        self.node.wait(self.customer, ts).await.map(|_| ())
    }

    /// Waits for a pull or push_pull and returns its values.
    pub async fn wait_pull(&self, ts: Timestamp) -> Result<Pulled> {
        match self.node.wait(self.customer, ts).await? {
            Completion::Pulled { keys, values, lens } => Ok(Pulled { keys, values, lens }),
            Completion::Done | Completion::Simple(_) => Err(not_a_pull(ts)),
        }
    }
}
