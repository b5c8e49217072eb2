//! Replicated key ranges (`PS_REPLICAS`) across separate OS processes of
//! the `job` example (`tests/common/procs.rs`): a server killed with
//! SIGKILL in the middle of a job costs no push. Every wait has a
//! deadline; nothing sleeps to synchronise.
//!
//! With `PS_REPLICAS=2` each key range lives on a chain of two servers
//! (range `i` on ranks `i` and `i + 1`, mod the server count), so a dead
//! server leaves every range one copy: a push waiting on it is sent again
//! to the range's new head or answered once the shorter chain applied it,
//! and completes Ok where without replication it fails with `PeerDead`
//! (`tests/processes.rs`). A replacement started with the same environment
//! takes the dead server's id, learns its ranges from their tails while
//! the workers go on pushing, and joins their chains as the tail: every
//! range is back to two copies, and the final pulls (from the tails, the
//! replacement among them) count every acknowledged push once.

#[allow(dead_code)] // `tests/processes.rs` uses the rest.
#[path = "common/procs.rs"]
mod procs;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use procs::{deadline, Event, Job, JobSpec};

/// Outer bound of the test. The job takes a few seconds; the bound only
/// turns a hang into a failure, with every node's output.
const BOUND: Duration = Duration::from_secs(60);

/// `PS_HEARTBEAT_TIMEOUT` and `PS_HEARTBEAT_INTERVAL`, as in
/// `tests/processes.rs`: a killed node is declared dead within 3.2 s, and
/// a node stalled by a loaded machine is not taken for dead.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);
const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(200);

/// What a push waiting on a killed server may take beyond the failure
/// detection bound (`heartbeat_timeout + heartbeat_interval`): the resend
/// to the new head, the shorter chain's hops, and a loaded machine's
/// delays. A deadline, not a measurement: it only turns a push that never
/// completes (until `request_timeout`, 120 s) into a failure.
const SLACK: Duration = Duration::from_secs(12);

const SERVERS: u32 = 3;
const WORKERS: [&str; 2] = ["worker0", "worker1"];
/// The server process killed and replaced. Ranks are the scheduler's to
/// give, but with three servers in a ring of chains every rank heads one
/// range and is the tail of another, so which one it is does not matter.
const VICTIM: &str = "server1";

/// The job of `tests/processes.rs`'s survival tests with `replicas` copies
/// of every range: the workers push one round per `round` command.
fn replicated(replicas: u8) -> JobSpec {
    JobSpec::new(SERVERS, WORKERS.len() as u32)
        .env("JOB_ROUNDS", "commanded")
        .env("PS_REPLICAS", &replicas.to_string())
        .env("PS_HEARTBEAT_INTERVAL", &HEARTBEAT_INTERVAL.as_secs_f64().to_string())
        .env("PS_HEARTBEAT_TIMEOUT", &HEARTBEAT_TIMEOUT.as_secs_f64().to_string())
}

/// What a worker of the `job` example pulls when the worker of rank `r`
/// had `acknowledged[r]` rounds acknowledged, worked out here rather than
/// taken from the example: worker `r` pushes `(r + 1) * (i + 1)` to the
/// `i`-th of `2 * servers` keys in every round. Unacknowledged rounds are
/// none here: every round must complete Ok.
fn expected_sums(servers: u32, acknowledged: &BTreeMap<u32, u32>) -> String {
    let per_round: u32 = acknowledged.iter().map(|(rank, rounds)| (rank + 1) * rounds).sum();
    let sums: Vec<String> = (1..=2 * servers).map(|i| (per_round * i).to_string()).collect();
    sums.join(",")
}

/// The next outcome of `worker`'s rounds, in the order it was asked for
/// them: its `push-ok` or `error` line.
fn outcome(job: &mut Job, worker: &str, deadline: Instant) -> Event {
    job.expect_where(worker, "a round's outcome", deadline, |e| e.name == "push-ok" || e.name == "error")
}

/// Asks every worker for a round and requires each to be acknowledged,
/// counting it.
fn rounds_ok(job: &mut Job, acknowledged: &mut BTreeMap<String, u32>, when: &str, deadline: Instant) {
    for worker in WORKERS {
        job.send(worker, "round");
    }
    for worker in WORKERS {
        let event = outcome(job, worker, deadline);
        job.ensure(event.name == "push-ok", format!("{worker}'s round {when}: {event:?}"));
        *acknowledged.entry(worker.to_owned()).or_default() += 1;
    }
}

/// Milliseconds since `start`, for the timeline a run prints.
fn ms(start: Instant) -> u128 {
    start.elapsed().as_millis()
}

#[test]
fn with_two_replicas_a_server_killed_with_sigkill_mid_job_loses_no_acknowledged_push_and_waiting_rounds_complete_ok() {
    let deadline = deadline(BOUND);
    let mut job = Job::start(replicated(2), deadline);
    let victim: u32 = job.first(VICTIM, "ready", deadline).parsed("id");
    let mut acknowledged: BTreeMap<String, u32> = BTreeMap::new();
    rounds_ok(&mut job, &mut acknowledged, "with every chain whole", deadline);

    // One round of each worker is in flight when the server dies (or done
    // already, or not started yet: whichever, it must be acknowledged), and
    // one more is asked for once the process is gone. Every push has keys in every range,
    // and the victim heads one range and is the tail of another, so that
    // second round waits on the dead server whatever its rank.
    for worker in WORKERS {
        job.send(worker, "round");
    }
    let killed_at = Instant::now();
    job.kill(VICTIM, deadline);
    for worker in WORKERS {
        job.send(worker, "round");
    }
    let settle_by = (killed_at + HEARTBEAT_TIMEOUT + HEARTBEAT_INTERVAL + SLACK).min(deadline);
    for worker in WORKERS {
        for when in ["in flight at the kill", "sent after the kill"] {
            let event = outcome(&mut job, worker, settle_by);
            job.ensure(event.name == "push-ok", format!("{worker}'s round {when} (victim {victim}): {event:?}"));
            *acknowledged.entry(worker.to_owned()).or_default() += 1;
        }
    }
    let settled_at = ms(killed_at);
    job.expect_where("scheduler", &format!("the death of node {victim}"), deadline, |e| {
        e.name == "dead" && e.parsed::<u32>("id") == victim
    });
    let declared_at = ms(killed_at);
    rounds_ok(&mut job, &mut acknowledged, "on the shortened chains", deadline);

    job.replace(VICTIM, deadline);
    let replacement: u32 = job.first(VICTIM, "ready", deadline).parsed("id");
    job.ensure(replacement == victim, format!("the replacement took id {replacement}, not {victim}"));
    let registered_at = ms(killed_at);
    for worker in WORKERS {
        job.expect_where(worker, "news of the replacement", deadline, |e| {
            e.name == "recovered" && e.parsed::<u32>("id") == victim
        });
    }
    rounds_ok(&mut job, &mut acknowledged, "after the replacement registered", deadline);
    // The replacement catches up and joins: every range has two copies
    // again (the scheduler reports each change of the counts).
    job.expect_where("scheduler", "every range back to two copies", deadline, |e| {
        e.name == "copies" && e.get("values").split(',').all(|n| n == "2")
    });
    let whole_at = ms(killed_at);
    rounds_ok(&mut job, &mut acknowledged, "with the replacement in every chain", deadline);
    for worker in WORKERS {
        job.send(worker, "finish");
    }

    // Every acknowledged round of every worker, each applied once, on the
    // servers that survived.
    let mut by_rank = BTreeMap::new();
    for (worker, rounds) in &acknowledged {
        let rank: u32 = job.first(worker, "ready", deadline).parsed("rank");
        by_rank.insert(rank, *rounds);
    }
    let expected = expected_sums(SERVERS, &by_rank);
    for worker in WORKERS {
        let released = job.expect(worker, "released", deadline);
        job.ensure(released.get("missing").is_empty(), format!("{worker}'s barrier: {released:?}"));
        let pulled = job.expect(worker, "pulled", deadline);
        job.ensure(
            pulled.get("values") == expected,
            format!("{worker}'s sums, {expected} expected from the rounds acknowledged ({acknowledged:?}): {pulled:?}"),
        );
    }
    job.expect_all_exit_zero(deadline);
    let mut names = vec!["scheduler".to_owned()];
    names.extend((0..SERVERS).map(|i| format!("server{i}")));
    names.extend(WORKERS.map(str::to_owned));
    for node in &names {
        let errors = job.node(node).seen("error");
        job.ensure(errors.is_empty(), format!("{node} reported errors: {errors:?}"));
        let finalized = job.first(node, "finalized", deadline);
        job.ensure(finalized.get("missing").is_empty(), format!("{node} finished without {finalized:?}"));
    }
    eprintln!(
        "timeline (ms after the kill): waiting rounds acknowledged {settled_at}, death declared {declared_at}, \
         replacement registered {registered_at}, every range back to two copies {whole_at}, all exited {}",
        ms(killed_at)
    );
}
