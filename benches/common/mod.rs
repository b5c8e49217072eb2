//! What the benchmarks share: every case is timed next to a baseline that
//! moves the same bytes with the plainest code there is (a memcpy, a
//! summing loop), and the ratio between the two is printed at the end of a
//! group. An absolute GiB/s says little about a machine we do not know; the
//! ratio to what the hardware does in the same run says how far from the
//! limit we are.

// Each bench uses a different part of this module.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Bencher, Criterion};

/// Criterion as these benches run it: 20 samples rather than 100, because
/// the large cases take milliseconds each and the machine is shared, so the
/// default would stretch a run far beyond its measurement time. Command-line
/// flags still override this.
pub(crate) fn criterion() -> Criterion {
    Criterion::default().sample_size(20).configure_from_args()
}

/// How much one iteration of a case processes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Work {
    /// Bytes touched.
    pub(crate) bytes: u64,
    /// Elements (keys or values), when counting them means something.
    pub(crate) elements: Option<u64>,
}

impl Work {
    pub(crate) fn bytes(bytes: usize) -> Self {
        Self { bytes: bytes as u64, elements: None }
    }

    pub(crate) fn elements(elements: usize, bytes: usize) -> Self {
        Self { bytes: bytes as u64, elements: Some(elements as u64) }
    }
}

/// Mean time per iteration of every case timed so far, by name.
///
/// Criterion keeps its estimates to itself, so each routine is timed here
/// too (through `iter_custom`, with the same iterations criterion asks
/// for) and the mean over all of them is what the ratio is computed from.
/// It includes the warm-up, which is short next to the measurement.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    timings: RefCell<BTreeMap<String, (u64, Duration)>>,
}

impl Ledger {
    /// Runs `routine` as criterion asks and remembers its time under `name`.
    pub(crate) fn iter<O>(&self, bencher: &mut Bencher<'_>, name: &str, mut routine: impl FnMut() -> O) {
        bencher.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(routine());
            }
            let elapsed = start.elapsed();
            let mut timings = self.timings.borrow_mut();
            let entry = timings.entry(name.to_owned()).or_default();
            entry.0 += iters;
            entry.1 += elapsed;
            elapsed
        });
    }

    /// Prints `subject` next to `baseline`, both doing `work` per iteration,
    /// and their throughput ratio. Silent when either was filtered out or
    /// when criterion only checks that the benches run (`cargo test`).
    pub(crate) fn compare(&self, subject: &str, baseline: &str, work: Work) {
        if !measuring() {
            return;
        }
        let timings = self.timings.borrow();
        let mean = |name: &str| timings.get(name).map(|&(iters, total)| total.as_secs_f64() / iters as f64);
        let (Some(subject_time), Some(baseline_time)) = (mean(subject), mean(baseline)) else {
            return;
        };
        println!(
            "ratio {subject}: {} vs {baseline}: {} = {:.3}x",
            rate(work, subject_time),
            rate(work, baseline_time),
            baseline_time / subject_time,
        );
    }
}

fn rate(work: Work, seconds: f64) -> String {
    let gib = work.bytes as f64 / seconds / f64::from(1u32 << 30);
    match work.elements {
        Some(elements) => format!("{:.1} Melem/s ({gib:.2} GiB/s)", elements as f64 / seconds / 1e6),
        None => format!("{gib:.2} GiB/s"),
    }
}

/// Whether this is a measuring run, by criterion's own rule: `cargo bench`
/// passes `--bench`; `cargo test --benches` does not and only runs each
/// routine once, which makes no ratio worth printing.
fn measuring() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    has("--bench") && !has("--test") && !has("--list") && !args.iter().any(|a| a.starts_with("--profile-time"))
}
