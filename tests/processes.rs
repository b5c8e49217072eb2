//! Nodes as separate OS processes of the `job` example (`common::procs`),
//! on loopback and, as root, each in a network namespace of its own with
//! its own address (`common::netns`), so address advertisement and
//! partitions behave as between machines. Every wait has a deadline;
//! nothing sleeps to synchronise.
//!
//! After a death the job goes on: a waiting push fails with `PeerDead`
//! naming the dead node, a replacement process started with the same
//! environment takes its id and the job's work, and the job finishes with
//! every process exiting 0. A node cut off long enough to be replaced
//! learns it once the cut heals and exits with an error.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::netns::Net;
use common::procs::{deadline, job_example, unconfigured, Event, Job, JobSpec, Proc};

/// Outer bound of one test. These jobs take a few seconds at most; the
/// bound only turns a hang into a failure, with every node's output.
const BOUND: Duration = Duration::from_secs(25);

/// Heartbeats that declare a silent node dead within 3.2 s instead of the
/// default 5.5 s: short enough for a quick test, long enough that a node
/// stalled by a loaded machine is not taken for dead.
fn fast_detection(spec: JobSpec) -> JobSpec {
    spec.env("PS_HEARTBEAT_INTERVAL", "0.2").env("PS_HEARTBEAT_TIMEOUT", "3")
}

/// What a worker of the `job` example pulls after `rounds` rounds of each
/// of `workers` workers over `servers` servers, worked out here rather
/// than taken from the example: worker `r` pushes `(r + 1) * (i + 1)` to
/// the `i`-th of `2 * servers` keys in every round.
fn expected_sums(servers: u32, workers: u32, rounds: u32) -> String {
    let per_round: u32 = (1..=workers).sum();
    let sums: Vec<String> = (1..=2 * servers).map(|i| (rounds * per_round * i).to_string()).collect();
    sums.join(",")
}

/// The id `node` registered with.
fn id_of(job: &mut Job, node: &str, deadline: Instant) -> u32 {
    job.first(node, "ready", deadline).parsed("id")
}

/// The scheduler declares node `id` dead. (Whether the others hear of it
/// before the scheduler ends the job, as it does today when a death fails
/// the final barrier, is for the core to settle.)
fn declared_dead(job: &mut Job, id: u32, deadline: Instant) {
    job.expect_where("scheduler", &format!("the death of node {id}"), deadline, |e| {
        e.name == "dead" && e.parsed::<u32>("id") == id
    });
}

/// The outcome of the round `worker` is asked for now: its `push-ok` or
/// `error` line.
fn round(job: &mut Job, worker: &str, deadline: Instant) -> Event {
    job.send(worker, "round");
    job.expect_where(worker, "the round's outcome", deadline, |e| e.name == "push-ok" || e.name == "error")
}

/// Whether `event` is an error naming node `id` dead.
fn peer_dead(event: &Event, id: u32) -> bool {
    event.name == "error" && event.get("kind") == "peer-dead" && event.parsed::<u32>("node") == id
}

#[test]
fn a_job_of_separate_processes_sums_exactly_and_every_process_exits_zero() {
    let deadline = deadline(BOUND);
    let mut job = Job::start(JobSpec::new(2, 2).env("JOB_ROUNDS", "10"), deadline);
    for worker in ["worker0", "worker1"] {
        let pulled = job.expect(worker, "pulled", deadline);
        assert_eq!(pulled.get("values"), expected_sums(2, 2, 10), "{worker}");
    }
    job.expect_all_exit_zero(deadline);
    for node in ["scheduler", "server0", "server1", "worker0", "worker1"] {
        assert_eq!(job.node(node).seen("finalized").len(), 1, "{node} passed the final barrier");
    }
}

/// Milliseconds since `start`, for the timeline a run prints.
fn ms(start: Instant) -> u128 {
    start.elapsed().as_millis()
}

#[test]
fn a_server_killed_with_sigkill_is_replaced_and_the_job_finishes_with_every_process_exiting_zero() {
    let deadline = deadline(BOUND);
    let spec = fast_detection(JobSpec::new(2, 1)).env("JOB_ROUNDS", "commanded");
    let mut job = Job::start(spec, deadline);
    let victim = id_of(&mut job, "server1", deadline);
    let first = round(&mut job, "worker0", deadline);
    job.ensure(first.name == "push-ok", format!("the first round: {first:?}"));
    let start = Instant::now();
    job.kill("server1", deadline);
    // The next push waits on the dead server and fails once it is declared
    // dead; its part on the live server was applied.
    let second = round(&mut job, "worker0", deadline);
    job.ensure(peer_dead(&second, victim), format!("the push to the killed server {victim}: {second:?}"));
    let failed_at = ms(start);
    declared_dead(&mut job, victim, deadline);
    let declared_at = ms(start);
    job.replace("server1", deadline);
    let replacement = id_of(&mut job, "server1", deadline);
    job.ensure(replacement == victim, format!("the replacement took id {replacement}, not {victim}"));
    let registered_at = ms(start);
    job.expect_where("worker0", "news of the replacement", deadline, |e| {
        e.name == "recovered" && e.parsed::<u32>("id") == victim
    });
    let third = round(&mut job, "worker0", deadline);
    job.ensure(third.name == "push-ok", format!("the round after the replacement: {third:?}"));
    let succeeded_at = ms(start);
    job.send("worker0", "finish");
    // Keys of the live server hold all three rounds; the replaced server's
    // range restarted empty and holds the third only. (Worker 0 pushes
    // i + 1 to the i-th key: keys 0, 1 on rank 0, keys 2, 3 on rank 1.)
    let victim_rank: u32 = job.first("server1", "ready", deadline).parsed("rank");
    let expected = if victim_rank == 0 { "1,2,9,12" } else { "3,6,3,4" };
    let pulled = job.expect("worker0", "pulled", deadline);
    job.ensure(pulled.get("values") == expected, format!("the sums (replaced rank {victim_rank}): {pulled:?}"));
    job.expect_all_exit_zero(deadline);
    for node in ["scheduler", "server0", "server1", "worker0"] {
        let finalized = job.first(node, "finalized", deadline);
        job.ensure(finalized.get("missing").is_empty(), format!("{node} finished without {finalized:?}"));
    }
    eprintln!(
        "timeline (ms after the kill): push failed {failed_at}, death declared {declared_at}, \
         replacement registered {registered_at}, first push after it {succeeded_at}, all exited {}",
        ms(start)
    );
}

#[test]
fn a_worker_killed_with_sigkill_is_replaced_and_the_survivor_finishes_with_it() {
    let deadline = deadline(BOUND);
    let spec = fast_detection(JobSpec::new(1, 2)).env("JOB_ROUNDS", "commanded");
    let mut job = Job::start(spec, deadline);
    let victim = id_of(&mut job, "worker1", deadline);
    for worker in ["worker0", "worker1"] {
        let first = round(&mut job, worker, deadline);
        job.ensure(first.name == "push-ok", format!("{worker}'s first round: {first:?}"));
    }
    job.kill("worker1", deadline);
    // The replacement starts at once, before the death is declared: it is
    // not placed until then, and keeps asking.
    job.replace("worker1", deadline);
    declared_dead(&mut job, victim, deadline);
    // The survivor keeps working, then waits in the workers' barrier for
    // the replacement (PS_RECOVERY_TIMEOUT, 60 s by default).
    let second = round(&mut job, "worker0", deadline);
    job.ensure(second.name == "push-ok", format!("the survivor's round after the death: {second:?}"));
    job.send("worker0", "finish");
    let replacement = id_of(&mut job, "worker1", deadline);
    job.ensure(replacement == victim, format!("the replacement took id {replacement}, not {victim}"));
    let again = round(&mut job, "worker1", deadline);
    job.ensure(again.name == "push-ok", format!("the replacement's round: {again:?}"));
    job.send("worker1", "finish");
    // Worker r pushes (r + 1)(i + 1) to key i: two rounds of worker 0 and
    // two of worker 1's rank (one before the kill, one after), each
    // applied once.
    for worker in ["worker0", "worker1"] {
        let released = job.expect(worker, "released", deadline);
        job.ensure(released.get("missing").is_empty(), format!("{worker}'s barrier: {released:?}"));
        let pulled = job.expect(worker, "pulled", deadline);
        job.ensure(pulled.get("values") == "6,12", format!("{worker}'s sums: {pulled:?}"));
    }
    job.expect_all_exit_zero(deadline);
}

#[test]
fn a_node_whose_scheduler_never_answers_exits_with_an_error_naming_the_address() {
    let deadline = deadline(BOUND);
    // A port nobody listens on: taken from the OS, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut command = unconfigured(job_example());
    command
        .env("DMLC_ROLE", "server")
        .env("DMLC_PS_ROOT_URI", "127.0.0.1")
        .env("DMLC_PS_ROOT_PORT", port.to_string())
        .env("DMLC_NUM_SERVER", "1")
        .env("DMLC_NUM_WORKER", "1")
        .env("PS_REGISTER_TIMEOUT", "2");
    let mut node = Proc::spawn("server", command).expect("the example starts");
    let error =
        node.next_event("a registration error", deadline, |e| e.name == "error").unwrap_or_else(|p| panic!("{p}"));
    assert_eq!((error.get("op"), error.get("kind")), ("register", "registration-failed"), "{error:?}");
    assert!(error.get("error").contains(&format!("127.0.0.1:{port}")), "{error:?}");
    let status = node.wait_exit(deadline).unwrap_or_else(|p| panic!("{p}"));
    assert_eq!(status.code(), Some(1));
}

#[test]
fn a_node_given_an_unknown_dmlc_interface_exits_with_an_error_naming_the_variable_and_the_interface() {
    let deadline = deadline(BOUND);
    let mut command = unconfigured(job_example());
    command
        .env("DMLC_ROLE", "worker")
        .env("DMLC_PS_ROOT_URI", "127.0.0.1")
        .env("DMLC_PS_ROOT_PORT", "9")
        .env("DMLC_NUM_SERVER", "1")
        .env("DMLC_NUM_WORKER", "1")
        .env("DMLC_INTERFACE", "nosuchif0");
    let mut node = Proc::spawn("worker", command).expect("the example starts");
    let error =
        node.next_event("a configuration error", deadline, |e| e.name == "error").unwrap_or_else(|p| panic!("{p}"));
    assert_eq!((error.get("op"), error.get("kind")), ("configure", "config"), "{error:?}");
    assert!(error.get("error").contains("DMLC_INTERFACE: no interface \\\"nosuchif0\\\""), "{error:?}");
    let status = node.wait_exit(deadline).unwrap_or_else(|p| panic!("{p}"));
    assert_eq!(status.code(), Some(1));
}

/// A net with one host per node of `spec`, each node running in its own
/// host's namespace, `DMLC_NODE_HOST` unset; `None` where namespaces are
/// unavailable (the reason is printed).
fn spread(test: &str, spec: JobSpec) -> Option<(Net, JobSpec)> {
    let mut net = Net::or_skip(test)?;
    let mut spec = spec;
    for name in spec.names() {
        net.add_host(&name);
        spec = spec.prefix(&name, net.exec(&name));
    }
    let scheduler = net.address("scheduler");
    Some((net, spec.scheduler_host(scheduler)))
}

#[test]
fn in_namespaces_every_node_advertises_its_own_address_and_the_job_completes() {
    let spec = JobSpec::new(2, 2).env("JOB_ROUNDS", "10");
    let Some((net, spec)) = spread("the job across namespaces", spec) else { return };
    let deadline = deadline(BOUND);
    let names = spec.names();
    let mut job = Job::start(spec, deadline);
    for name in &names {
        let advertised: SocketAddr = job.first(name, "listening", deadline).parsed("advertised");
        assert_eq!(advertised.ip(), net.address(name), "{name} advertises the address of its own host");
    }
    for worker in ["worker0", "worker1"] {
        let pulled = job.expect(worker, "pulled", deadline);
        assert_eq!(pulled.get("values"), expected_sums(2, 2, 10), "{worker}");
    }
    job.expect_all_exit_zero(deadline);
}

/// Server0's host also has a cable straight to the scheduler's, and its
/// route to the scheduler runs over it, so by default it would advertise
/// an address that only the scheduler can reach. `DMLC_INTERFACE=eth0`
/// makes it advertise its bridge address, and the worker's pushes, which
/// dial that address, can only succeed if it did.
#[test]
fn dmlc_interface_chooses_the_advertised_address_on_a_host_with_two_interfaces() {
    let spec = JobSpec::new(1, 1).env("JOB_ROUNDS", "3").node_env("server0", "DMLC_INTERFACE", "eth0");
    let Some((mut net, spec)) = spread("DMLC_INTERFACE across namespaces", spec) else { return };
    let (scheduler, server) = (net.address("scheduler"), net.address("server0"));
    let (scheduler_side, server_side) = (Ipv4Addr::new(10, 77, 1, 1), Ipv4Addr::new(10, 77, 1, 2));
    net.add_link(("scheduler", "mgmt", scheduler_side), ("server0", "mgmt", server_side));
    net.ip("server0", &["route", "add", &format!("{scheduler}/32"), "via", &scheduler_side.to_string()]);
    assert_eq!(net.route_source("server0", scheduler), server_side, "the route alone would pick the other interface");
    assert!(!net.routes_to("worker0", server_side), "the worker cannot reach that one");
    let deadline = deadline(BOUND);
    let mut job = Job::start(spec, deadline);
    let advertised: SocketAddr = job.first("server0", "listening", deadline).parsed("advertised");
    assert_eq!(advertised.ip(), server);
    let pulled = job.expect("worker0", "pulled", deadline);
    assert_eq!(pulled.get("values"), expected_sums(1, 1, 3));
    job.expect_all_exit_zero(deadline);
}

/// A partition, not a crash: server1's cable goes down while its process
/// lives on. The scheduler declares it dead, a push waiting on it fails
/// with `PeerDead`, a replacement started on the same host takes its id and
/// the job goes on. The cut-off server never serves stale data: it exits
/// with an error, either when it loses the scheduler while waiting in
/// `finalize` (a final barrier it cannot finish) or, once the cable is
/// back, when the scheduler's answer tells it it was replaced.
#[test]
fn a_server_cut_off_by_a_partition_is_replaced_and_exits_with_an_error() {
    let spec = fast_detection(JobSpec::new(2, 1)).env("JOB_ROUNDS", "commanded");
    let Some((net, spec)) = spread("the partition across namespaces", spec) else { return };
    let deadline = deadline(BOUND);
    let mut job = Job::start(spec, deadline);
    let victim = id_of(&mut job, "server1", deadline);
    let first = round(&mut job, "worker0", deadline);
    job.ensure(first.name == "push-ok", format!("the first round: {first:?}"));
    net.cut("server1");
    let second = round(&mut job, "worker0", deadline);
    job.ensure(peer_dead(&second, victim), format!("the push to the cut-off server {victim}: {second:?}"));
    declared_dead(&mut job, victim, deadline);
    // The cut-off process lives on; a replacement starts beside it, and
    // reaches the others only once the cable is back.
    let mut cut_off = job.start_beside("server1");
    net.heal("server1");
    let replacement = id_of(&mut job, "server1", deadline);
    job.ensure(replacement == victim, format!("the replacement took id {replacement}, not {victim}"));
    job.expect_where("worker0", "news of the replacement", deadline, |e| {
        e.name == "recovered" && e.parsed::<u32>("id") == victim
    });
    let third = round(&mut job, "worker0", deadline);
    job.ensure(third.name == "push-ok", format!("the round after the replacement: {third:?}"));
    let error = cut_off.next_event("the cut-off server's error", deadline, |e| e.name == "error");
    let error = error.unwrap_or_else(|problem| job.fail(&problem));
    job.ensure(
        matches!(error.get("kind"), "replaced" | "peer-dead" | "scheduler-lost"),
        format!("the cut-off server's error says it was cut off or written off: {error:?}"),
    );
    let status = cut_off.wait_exit(deadline).unwrap_or_else(|problem| job.fail(&problem));
    job.ensure(!status.success(), format!("the cut-off server exited with {status}"));
    job.send("worker0", "finish");
    job.expect_all_exit_zero(deadline);
}
