//! A bound on a blocking test: its body runs on a thread of its own, and
//! a body that has not finished within the bound fails the test at once
//! (naming the bound) instead of hanging until the harness gives up. The
//! blocking API has no timeouts of its own to lean on.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::time::Duration;

/// Far above what any of these tests takes on a loaded machine.
pub(crate) const BOUND: Duration = Duration::from_secs(60);

/// Runs `body`, failing if it takes longer than [`BOUND`]; a panic in
/// `body` is the test's panic.
pub(crate) fn bounded<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(catch_unwind(AssertUnwindSafe(body)));
    });
    match rx.recv_timeout(BOUND) {
        Ok(Ok(out)) => out,
        Ok(Err(panic)) => resume_unwind(panic),
        Err(_) => panic!("the test did not finish within {BOUND:?}: a wait hung"),
    }
}
