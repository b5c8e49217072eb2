//! The multi-process path: `pslite-launch` starts a scheduler, servers and
//! workers as separate processes of an example binary, and every process
//! must exit 0; and however the launcher ends, its processes end with it.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use pslite_tools::parent;

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

/// The launcher running `program` with `args` on 2 servers and 2 workers,
/// bound to this test's thread: a test that fails or is killed takes the
/// launcher, and with it the cluster, down.
fn launch(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> std::process::Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pslite-launch"));
    command.args(["--servers", "2", "--workers", "2", "--"]).arg(program).args(args);
    parent::bind(&mut command).spawn().expect("launcher starts")
}

#[test]
fn launch_runs_every_role_as_a_process_and_all_exit_zero() {
    let binary = example("push_pull");
    assert!(binary.exists(), "{} is missing: run `cargo test --workspace` (it builds the examples)", binary.display());
    assert!(finished_within(launch(&binary, &[]), Duration::from_secs(120)).success());
}

/// Waits for `child`; one that outlives `bound` fails the test (and dies
/// with it: it is bound to the test's thread).
pub fn finished_within(mut child: std::process::Child, bound: Duration) -> std::process::ExitStatus {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(bound) {
        Ok(status) => status.expect("wait for the launcher"),
        Err(_) => panic!("the launched cluster did not finish within {bound:?}"),
    }
}

#[test]
fn the_training_example_runs_as_one_process_per_node_through_the_launcher() {
    let binary = example("train");
    assert!(binary.exists(), "{} is missing: run `cargo test --workspace` (it builds the examples)", binary.display());
    let out = std::env::temp_dir().join(format!("pslite-train-launch-{}", std::process::id()));
    let out_arg = out.to_str().expect("a UTF-8 temporary directory");
    let child = launch(&binary, &["--examples", "6000", "--epochs", "1", "--out", out_arg]);
    assert!(finished_within(child, Duration::from_secs(180)).success());
    let summary = std::fs::read_to_string(out.join("summary.txt")).expect("the scheduler wrote a summary");
    assert!(summary.contains("held-out: log-loss"), "{summary}");
    let svg = std::fs::read_to_string(out.join("loss.svg")).expect("the scheduler drew the loss curve");
    assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"));
    let _ = std::fs::remove_dir_all(&out);
}

/// A launcher killed outright (SIGKILL: no handler, no cleanup) leaves no
/// process behind: each one it started gets the parent-death signal.
#[cfg(target_os = "linux")]
#[test]
fn the_processes_of_a_launcher_killed_with_sigkill_die_with_it() {
    let bound = Instant::now() + Duration::from_secs(60);
    // Processes that would otherwise run for ten minutes.
    let mut launcher = launch("sleep", &["600"]);
    let launcher_pid = launcher.id();
    let children = loop {
        let children: Vec<u32> = processes()
            .into_iter()
            .filter(|p| p.parent == launcher_pid && p.command == "sleep" && p.running)
            .map(|p| p.pid)
            .collect();
        if children.len() == 5 {
            break children;
        }
        assert!(Instant::now() < bound, "the launcher did not start 5 processes: {children:?}");
        std::thread::yield_now();
    };
    launcher.kill().expect("SIGKILL the launcher");
    launcher.wait().expect("reap the launcher");
    loop {
        let alive: Vec<u32> =
            processes().into_iter().filter(|p| children.contains(&p.pid) && p.running).map(|p| p.pid).collect();
        if alive.is_empty() {
            break;
        }
        assert!(Instant::now() < bound, "processes {alive:?} outlived their killed launcher");
        std::thread::yield_now();
    }
}

/// One process as `/proc/<pid>/stat` describes it.
#[cfg(target_os = "linux")]
#[derive(Debug)]
struct Process {
    pid: u32,
    parent: u32,
    command: String,
    /// Not exited (a zombie waiting to be reaped has exited).
    running: bool,
}

/// Every process of this machine (of this PID namespace).
#[cfg(target_os = "linux")]
fn processes() -> Vec<Process> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // `pid (command) state ppid ...`; the command may hold spaces.
            let (head, tail) = stat.rsplit_once(')')?;
            let command = head.split_once('(')?.1.to_owned();
            let mut fields = tail.split_whitespace();
            let state = fields.next()?;
            let parent = fields.next()?.parse().ok()?;
            Some(Process { pid, parent, command, running: state != "Z" && state != "X" })
        })
        .collect()
}
