//! # pslite
//!
//! A parameter server for distributed machine learning. This crate
//! re-exports the public API: the sans-IO protocol core
//! ([`pslite_core`]: ids, configuration, keys and values, the default
//! `KvStore` handle) and the production shell ([`pslite_io`]: nodes over
//! TCP, `KvWorker`, `LocalCluster`, `DMLC_*` configuration).

// Every public item is documented: this crate is the user API.
#![warn(missing_docs)]

pub use pslite_core::{self as core, *};
pub use pslite_io::{self as io, *};

/// README.md's Rust examples compile as doc tests, so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;
