//! # pslite-core: the sans-IO protocol of the pslite parameter server
//!
//! Everything pslite decides — registration and ids, barriers, heartbeats
//! and failure detection, key slicing, request tracking, the wire codec —
//! lives in [`Node`], a state machine that never touches a socket, a
//! thread, a clock or global randomness. Time comes in as an argument,
//! randomness from a seed, and output goes out through `poll_*` calls. The
//! production shell (`pslite-io`) drives it with TCP and a real clock; the
//! simulator (`pslite-sim`) drives many of them with virtual time and
//! injected faults. Both run exactly this code.
//!
//! ## The run-loop contract
//!
//! 1. Create a node with [`Node::new`]`(config, seed, now)`. Every later
//!    `now` passed in must be no earlier than the one before (the node
//!    asserts it): pass a monotonic clock's reading, not wall-clock time.
//! 2. Feed it inputs: every complete frame from the network with
//!    [`Node::handle_frame`] (cut frames out of a byte stream with
//!    [`wire::FrameDecoder`]), and [`Node::handle_timeout`] when the instant
//!    last returned by [`Node::poll_timeout`] has come.
//! 3. Issue commands whenever the application wants: [`Node::push`],
//!    [`Node::pull`], [`Node::barrier`], [`Node::respond`], … They return
//!    at once; their outcome arrives later as an [`Event`].
//! 4. After **every** input and command, drain the outputs until empty:
//!    [`Node::poll_transmit`] (send each frame to its address),
//!    [`Node::poll_event`] (hand each event to the application), then ask
//!    [`Node::poll_timeout`] when to wake next.
//!
//! The node never blocks and never waits; a driver that follows the
//! contract cannot deadlock it.
//!
//! ## Module map
//!
//! The public surface is what users and the shells need: the types at the
//! crate root, [`kv`] (keys, values, the default store), [`wire`] (the
//! frame codec the shells cut streams with) and [`recycle`] (buffers the
//! shells reuse). Everything else is private to the protocol.
//!
//! Inside, the protocol lives in components that own their state and never
//! see the node; the node ties them together. Components write what they
//! want sent and reported to a shared outbox, and the node routes it.
//!
//! | module | owns |
//! |---|---|
//! | `node` | [`Node`]: identity, the current time, routing (addresses, reliable streams, encoding, loopback), dispatch of each message to its component, and the one fan-out of a peer's death or replacement |
//! | `requests` | requests this node waits on as a client: timestamps, slicing, tracking, deadlines, completion (KV and SimpleApp) |
//! | `responder` | requests this node must answer: checks, the pending table, answers |
//! | `barrier` | barriers this node entered, and what their end means |
//! | `liveness` | this node's heartbeats and its watch on the scheduler |
//! | `scheduler` | the scheduler's sub-machine: `registry` (ids, replacements), `barrier` (arrival counting, recovery deadlines), `liveness` (who was heard when), `placement` (how the replica table changes on deaths, restarts and catch-ups) |
//! | `reliable` | sequence numbers, ACKs, resends with backoff, duplicate windows |
//! | `membership` | the node table as last heard, and what changed between two ([`Membership`]) |
//! | `chains` | the replica table that travels with it: which servers hold each key range, head first, and who is learning it ([`Chains`]) |
//! | `outbox` | messages, events and settled requests, from components to the node |
//! | `event` | what a node hands its driver: [`Event`], [`Transmit`], [`Phase`], [`BarrierTicket`] |
//! | `timer` | the node's fixed timers |
//! | [`kv`], `slice`, `range` | keys, values and lists; the default store; cutting lists by server range ([`ServerRanges`]) and merging answers |
//! | [`wire`] | the frame codec and its limits |
//! | `config`, `error`, `id`, `stats`, `time`, `rng`, [`recycle`] | values every part shares |
//!
//! The simulator's checker also reads counters of the internal tables
//! (pending requests, unacked frames, duplicate filters, open barriers);
//! they exist only with the `inspect` feature.
//!
//! Components import value modules, never `node`; `core/tests/architecture.rs`
//! fails if one does, if anything but `node.rs` implements [`Node`], or if
//! the modules' imports form a cycle.
//!
//! ## Example
//!
//! A complete in-memory cluster of one scheduler, one server and one
//! worker, pushing and pulling once. Frames are delivered by hand.
//!
//! ```
//! use std::collections::VecDeque;
//! use std::net::SocketAddr;
//! use pslite_core::*;
//!
//! let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
//! let base = Config::builder(Role::Scheduler, addr(1)).cluster(1, 1).build().unwrap();
//! let now = Instant::ZERO;
//! let mut nodes = vec![
//!     Node::new(base.clone(), 1, now),
//!     Node::new(base.for_role(Role::Server, addr(2)), 2, now),
//!     Node::new(base.for_role(Role::Worker, addr(3)), 3, now),
//! ];
//! let mut events: Vec<(usize, Event)> = Vec::new();
//! // Drain every node; deliver frames by address until the network is quiet.
//! let mut run = |nodes: &mut Vec<Node>, events: &mut Vec<(usize, Event)>| loop {
//!     let mut wire = VecDeque::new();
//!     for (i, node) in nodes.iter_mut().enumerate() {
//!         while let Some(t) = node.poll_transmit() { wire.push_back(t); }
//!         while let Some(e) = node.poll_event() { events.push((i, e)); }
//!     }
//!     if wire.is_empty() { break; }
//!     for t in wire {
//!         let to = t.addr.port() as usize - 1;
//!         nodes[to].handle_frame(now, t.frame.to_bytes()).unwrap();
//!     }
//! };
//! run(&mut nodes, &mut events);
//! assert!(events.iter().any(|(i, e)| *i == 2 && *e == Event::ClusterReady));
//!
//! let keys = Keys::from_slice(&[1, u64::MAX]);
//! let ts = nodes[2]
//!     .push(now, CustomerId::DEFAULT, 0, keys.clone(), Values::from_slice(&[1.0f32, 2.0]), None)
//!     .unwrap();
//! // The server answers with the default handle.
//! let mut store = KvStore::<f32>::new();
//! loop {
//!     run(&mut nodes, &mut events);
//!     let requests: Vec<ServerRequest> = events.iter().filter_map(|(_, e)| match e {
//!         Event::ServerRequest(r) => Some(r.clone()),
//!         _ => None,
//!     }).collect();
//!     events.retain(|(_, e)| !matches!(e, Event::ServerRequest(_)));
//!     if requests.is_empty() { break; }
//!     for r in requests {
//!         let answer = store.handle(&r);
//!         nodes[1].respond(now, r.id, answer).unwrap();
//!     }
//! }
//! assert!(events.contains(&(2, Event::RequestDone { customer: CustomerId::DEFAULT, ts })));
//! assert_eq!(store.get(u64::MAX), Some(&[2.0f32][..]));
//! ```

// Every public item is documented: this crate is the user API.
#![warn(missing_docs)]

mod barrier;
mod chains;
mod config;
mod error;
mod event;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod id;
pub mod kv;
mod liveness;
mod membership;
mod node;
mod outbox;
mod range;
mod receipts;
pub mod recycle;
mod reliable;
mod replica;
mod requests;
mod responder;
mod rng;
mod scheduler;
mod simple;
/// Slicing by server range and merging answers: public for the benchmarks.
#[doc(hidden)]
pub mod slice;
mod slotted;
mod stats;
mod time;
mod timer;
pub mod wire;

#[cfg(test)]
mod tests;

pub use chains::{Chains, ChainsError, Members, RangeChain, REPLICAS_MAX};
pub use config::{BarrierPolicy, Config, ConfigBuilder, ConfigError};
pub use error::{ApiMisuse, Mismatch, RequestError};
pub use id::{Group, Incarnation, NodeId, Rank, Role};
pub use kv::list::{check_request, KvList};
pub use kv::store::{KvStore, StoreError};
pub use kv::{
    CustomerId, DType, Element, Keys, KvCall, KvHandle, Lens, Refusal, Response, ServerRequest, ServerRequestId,
    SimpleReply, SimpleRequest, Timestamp, Values,
};
pub use membership::Membership;
pub use node::{BarrierTicket, Event, ExportTicket, Node, Phase, Transmit};
pub use range::{KeyRange, RangesError, ServerRanges};
pub use rng::{splitmix64, Rng};
pub use simple::Target;
pub use stats::Stats;
pub use time::{Duration, Instant};
pub use wire::{DecodeError, Frame, FrameDecoder, KvOp};
