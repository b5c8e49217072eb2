//! What the multi-process tests share: clusters of processes (`procs`)
//! and hosts made of network namespaces (`netns`).

pub(crate) mod netns;
pub(crate) mod procs;
