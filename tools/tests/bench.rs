//! `pslite-bench` keeps working: a short run of each mode, in one process
//! and as separate processes, must finish, exit 0 and print rows whose
//! figures parse. Nothing here judges speed (that is the bench's job, not
//! a test's); it guards the tool the Performance figures come from.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs the bench with `args` and returns its standard output after
/// checking it exited 0; a run that outlives `bound` fails the test. The
/// bench is bound to this test's thread ([`pslite_tools::parent`]) and its
/// children exit when it does (they watch their stdin), so whatever ends
/// the test ends them all.
fn bench(args: &[&str], bound: Duration) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pslite-bench"));
    command.args(args).stdout(Stdio::piped());
    let mut child = pslite_tools::parent::bind(&mut command).spawn().expect("pslite-bench starts");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        let _ = tx.send((child.wait(), out));
    });
    match rx.recv_timeout(bound) {
        Ok((status, out)) => {
            assert!(status.expect("wait for pslite-bench").success(), "pslite-bench {args:?} failed:\n{out}");
            out
        }
        // The panic ends this thread, and the kernel kills the bench.
        Err(_) => panic!("pslite-bench {args:?} did not finish within {bound:?}"),
    }
}

/// The requests/s of pslite, of the naive raw baseline and of the batched
/// one on the row of cluster `shape` (workers x servers), `mode` and `size`.
fn rates(out: &str, shape: &str, mode: &str, size: &str) -> (f64, f64, f64) {
    let row = out
        .lines()
        .find(|line| {
            let mut words = line.split_whitespace();
            words.next() == Some(shape) && words.next() == Some(mode) && words.next() == Some(size)
        })
        .unwrap_or_else(|| panic!("no {shape} {mode} {size} row in:\n{out}"));
    let columns: Vec<&str> = row.split('|').collect();
    let number = |column: &str, index: usize| -> f64 {
        column.split_whitespace().nth(index).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("bad row {row:?}"))
    };
    (number(columns[1], 2), number(columns[2], 1), number(columns[3], 0))
}

#[test]
fn the_table_measures_every_mode_beside_raw_tcp() {
    let out = bench(
        &["--mode", "push,pull,push-pull,push-then-pull", "--sizes", "1KiB", "--seconds", "0.05", "--repeat", "2"],
        Duration::from_secs(120),
    );
    for mode in ["Push", "Pull", "PushPull", "PushThenPull"] {
        let (ours, raw, batched) = rates(&out, "1x1", mode, "1KiB");
        assert!(ours > 0.0 && raw > 0.0 && batched > 0.0, "{mode}: no requests measured:\n{out}");
    }
    assert!(out.contains("in one process"), "{out}");
    assert!(out.contains("median of 2 round(s)"), "{out}");
}

#[test]
fn separate_processes_run_and_report_each_servers_peak_memory() {
    let out = bench(
        &[
            "--processes",
            "--servers",
            "2",
            "--mode",
            "push-pull",
            "--sizes",
            "4KiB",
            "--seconds",
            "0.05",
            "--repeat",
            "1",
        ],
        Duration::from_secs(120),
    );
    let (ours, raw, batched) = rates(&out, "1x2", "PushPull", "4KiB");
    assert!(ours > 0.0 && raw > 0.0 && batched > 0.0, "{out}");
    assert!(out.contains("separate processes"), "{out}");

    let out = bench(
        &["--processes", "--servers", "2", "--kv-app", "--kv-app-keys", "20000", "--repeat", "1"],
        Duration::from_secs(120),
    );
    let round = out.lines().find(|l| l.starts_with("round 1:")).unwrap_or_else(|| panic!("no round line:\n{out}"));
    assert!(round.contains("server 0") && round.contains("server 1"), "{round}");
    assert!(out.contains("median of 1 round(s)"), "{out}");
}

#[test]
fn batch_windows_and_cluster_shapes_each_get_a_row() {
    let args =
        ["--window", "batch", "--scaling", "--mode", "push", "--sizes", "4KiB", "--seconds", "0.05", "--repeat", "1"];
    let out = bench(&args, Duration::from_secs(180));
    assert!(out.contains("batch window"), "{out}");
    for shape in ["1x1", "4x1", "1x4", "4x4"] {
        let (ours, raw, batched) = rates(&out, shape, "Push", "4KiB");
        assert!(ours > 0.0 && raw > 0.0 && batched > 0.0, "{shape}: no requests measured:\n{out}");
    }
}

#[test]
fn kv_app_with_the_noop_handle_runs_beside_raw_tcp() {
    let out =
        bench(&["--kv-app", "--handle", "noop", "--kv-app-keys", "20000", "--repeat", "1"], Duration::from_secs(120));
    assert!(out.contains("no-op handle"), "{out}");
    assert!(out.contains("round 1 raw TCP:"), "{out}");
    assert!(out.contains("x raw"), "{out}");
    // The no-op handle is kv_app's; the table's pulls need a store.
    let refused = Command::new(env!("CARGO_BIN_EXE_pslite-bench")).args(["--handle", "noop"]).output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--kv-app"));
}

#[test]
fn replicas_rows_show_each_copy_count_beside_a_raw_chain_and_forward_every_pushed_byte() {
    let args = ["--replicas", "--mode", "push", "--sizes", "64KiB", "--seconds", "0.05", "--repeat", "1"];
    let out = bench(&args, Duration::from_secs(180));
    for replicas in 1..=3u32 {
        let row = out
            .lines()
            .find(|line| {
                let words: Vec<&str> = line.split_whitespace().take(4).collect();
                words == ["Push", "64KiB", "64", replicas.to_string().as_str()]
            })
            .unwrap_or_else(|| panic!("no R = {replicas} row in:\n{out}"));
        let columns: Vec<&str> = row.split('|').collect();
        let number = |column: usize, index: usize| -> f64 {
            let word = columns[column].split_whitespace().nth(index);
            word.and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("bad row {row:?}"))
        };
        let (rate, forwarded, raw_ratio, vs_raw) = (number(1, 2), number(2, 0), number(4, 0), number(4, 1));
        assert!(rate > 0.0 && raw_ratio > 0.0 && vs_raw > 0.0, "R = {replicas}: nothing measured: {row}");
        // Bytes, not time: every hop of the chain carries the pushed
        // values once. The slack covers framing and the untimed first
        // push of the round, whose bytes cross the chain but are not
        // counted as pushed; a hop that sent the values twice exceeds it.
        let hops = f64::from(replicas - 1);
        assert!((hops..hops + 0.5).contains(&forwarded), "R = {replicas}: {forwarded} forwarded per pushed byte");
        if replicas == 1 {
            assert_eq!((number(3, 0), raw_ratio), (1.0, 1.0), "R = 1 is its own baseline: {row}");
        }
    }
}
