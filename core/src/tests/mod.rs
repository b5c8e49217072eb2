//! In-memory cluster tests of the core, in the spirit of quinn-proto's
//! `Pair`: real nodes, frames as bytes, virtual time.

mod control;
mod failure;
mod fuzz_corpus;
mod harness;
mod hostile;
mod kv;
mod liveness;
mod reliability;
