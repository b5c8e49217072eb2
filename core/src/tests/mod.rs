//! In-memory cluster tests of the core, in the spirit of quinn-proto's
//! `Pair`: real nodes, frames as bytes, virtual time.

mod fuzz_corpus;
mod harness;
