//! The multi-process path: `pslite-launch` starts a scheduler, servers and
//! workers as separate processes of an example binary, and every process
//! must exit 0.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Where cargo put the example binaries of this test build. They belong to
/// package `pslite`, not this one, so only a test run that includes it
/// (`cargo test --workspace`) builds them into the shared target directory.
fn example(name: &str) -> PathBuf {
    let mut dir = std::env::current_exe().expect("test binary path");
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("examples").join(name)
}

#[test]
fn launch_runs_every_role_as_a_process_and_all_exit_zero() {
    let binary = example("push_pull");
    assert!(binary.exists(), "{} is missing: run `cargo test --workspace` (it builds the examples)", binary.display());
    let child = Command::new(env!("CARGO_BIN_EXE_pslite-launch"))
        .args(["--servers", "2", "--workers", "2", "--"])
        .arg(&binary)
        .process_group(0)
        .spawn()
        .expect("launcher starts");
    assert!(finished_within(child, Duration::from_secs(120)).success());
}

/// Waits for `child`, killing it if it outlives `bound` (a hang must fail
/// the test rather than block CI).
pub fn finished_within(mut child: std::process::Child, bound: Duration) -> std::process::ExitStatus {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(bound) {
        Ok(status) => status.expect("wait for the launcher"),
        Err(_) => {
            // The launcher leads its own process group: stop all of it.
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status();
            panic!("the launched cluster did not finish within {bound:?}");
        }
    }
}

#[test]
fn the_training_example_runs_as_one_process_per_node_through_the_launcher() {
    let binary = example("train");
    assert!(binary.exists(), "{} is missing: run `cargo test --workspace` (it builds the examples)", binary.display());
    let out = std::env::temp_dir().join(format!("pslite-train-launch-{}", std::process::id()));
    let child = Command::new(env!("CARGO_BIN_EXE_pslite-launch"))
        .args(["--servers", "2", "--workers", "2", "--"])
        .arg(&binary)
        .args(["--examples", "6000", "--epochs", "1", "--out"])
        .arg(&out)
        .process_group(0)
        .spawn()
        .expect("launcher starts");
    assert!(finished_within(child, Duration::from_secs(180)).success());
    let summary = std::fs::read_to_string(out.join("summary.txt")).expect("the scheduler wrote a summary");
    assert!(summary.contains("held-out: log-loss"), "{summary}");
    let svg = std::fs::read_to_string(out.join("loss.svg")).expect("the scheduler drew the loss curve");
    assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"));
    let _ = std::fs::remove_dir_all(&out);
}
