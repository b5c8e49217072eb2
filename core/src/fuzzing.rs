//! Bodies of the cargo-fuzz targets in `fuzz/`.
//!
//! They live in the library, not in the fuzz crate, so that every ordinary
//! build type-checks them and `cargo test` replays the committed corpus
//! through them (see `tests/fuzz_corpus.rs`): a target that stops compiling
//! or starts failing is noticed without a nightly toolchain or a fuzzer.
//! Each body takes arbitrary bytes and panics only when an invariant of the
//! core is broken; bad input itself must never panic.
//!
//! - [`frame_decode`]: bytes cut into frames by [`FrameDecoder`](crate::wire::FrameDecoder)
//!   and decoded; decoded frames re-encode to the same bytes.
//! - [`node_inputs`]: a scheduler, a server and a worker fed frames,
//!   timeouts and commands chosen by the input, with the node invariants
//!   checked after every step.
//! - [`slice`]: keys, values and lengths through the slicing checks,
//!   `slice` and `merge`.

mod decisions;
mod frame_decode;
pub(crate) mod node_inputs;
mod slice;

pub use frame_decode::frame_decode;
pub use node_inputs::node_inputs;
pub use slice::slice;
