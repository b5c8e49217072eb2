//! Tests of the core that need its private parts: replaying the fuzz
//! targets' corpora through `crate::fuzzing`, and the regressions they
//! found at the codec and single-node level.
//!
//! Cluster scenarios (registration, barriers, failures, the data plane,
//! loss and hostile peers) run on the simulator's cluster, in
//! `pslite-sim`'s scenario tests, with scripted faults and its checker.

mod fuzz_corpus;
