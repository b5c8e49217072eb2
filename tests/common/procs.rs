//! Clusters of separate OS processes, for tests that kill nodes for real.
//!
//! A [`Job`] runs every node of a cluster as its own process of the `job`
//! example (built by `cargo test --workspace`; this module builds
//! nothing): it starts the scheduler on a port the OS picks and learns the
//! port from the scheduler's `listening` line, then starts the servers and
//! workers with ps-lite's `DMLC_*` environment. Each process's stdout
//! lines arrive through a channel, so a test waits for an event with a
//! deadline instead of sleeping; any node can be killed with SIGKILL and
//! replaced by a new process with the same command and environment.
//!
//! Cleanup: dropping a [`Proc`] (and so a [`Job`]) kills its process and
//! reaps it. Every node also runs with `JOB_CONTROL=stdin`, so if the test
//! process itself dies, the nodes see their stdin close and exit. Nodes
//! are started directly (`ip netns exec` execs its program in place), so
//! the one pid is the whole node and no process group is needed.
//!
//! ```ignore
//! let deadline = Instant::now() + BOUND;
//! let mut job = Job::start(JobSpec::new(2, 2).env("JOB_ROUNDS", "10"), deadline);
//! job.expect("worker0", "sums-exact", deadline);
//! job.expect_all_exit_zero(deadline);
//! ```

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often a wait for an exit looks again once the child's stdout has
/// closed (there is nothing else to wait on): polling with a deadline.
const EXIT_POLL: Duration = Duration::from_millis(5);
/// Lines of a child's stderr shown when a test fails.
const STDERR_TAIL: usize = 40;

/// What to run so that the `job` example is built and current.
const BUILD_IT: &str = "`cargo test --workspace` builds it; before a narrower `cargo test`, run \
                        `cargo build -p pslite --example job`";

/// Where cargo put the `job` example of this test build. `cargo test
/// --workspace` (and `cargo test -p pslite`) builds the examples into the
/// target directory next to the test binaries, but a run of this test
/// target alone does not (`--example job` would build a test harness of
/// it instead), so the binary may be missing or older than the code: both
/// fail here rather than test yesterday's node.
pub(crate) fn job_example() -> PathBuf {
    let mut dir = std::env::current_exe().expect("the test binary's path");
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let binary = dir.join("examples").join("job");
    let built = std::fs::metadata(&binary).and_then(|meta| meta.modified());
    let Ok(built) = built else { panic!("{} is missing: {BUILD_IT}", binary.display()) };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let sources = ["src", "io/src", "core/src", "examples/job.rs"].map(|path| root.join(path));
    if let Some(newer) = sources.iter().find_map(|path| newer_file(path, built)) {
        panic!("{} is older than {}: {BUILD_IT}", binary.display(), newer.display());
    }
    binary
}

/// A file at or under `path` modified after `than`.
fn newer_file(path: &std::path::Path, than: std::time::SystemTime) -> Option<PathBuf> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_dir() {
        let entries = std::fs::read_dir(path).ok()?;
        return entries.flatten().find_map(|entry| newer_file(&entry.path(), than));
    }
    meta.modified().ok().filter(|&modified| modified > than).map(|_| path.to_owned())
}

/// A command for `program` that inherits none of the test's own `DMLC_*`,
/// `PS_*` or `JOB_*` variables, so only what the test sets configures it.
pub(crate) fn unconfigured(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new(program);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if ["DMLC_", "PS_", "JOB_"].iter().any(|prefix| name.starts_with(prefix)) {
            command.env_remove(&*name);
        }
    }
    command
}

/// One progress line of the `job` example: `event NAME key=value ...`.
#[derive(Clone, Debug)]
pub(crate) struct Event {
    /// The event's name (`push-ok`, `error`, ...).
    pub(crate) name: String,
    fields: BTreeMap<String, String>,
    line: String,
}

impl Event {
    /// Reads a line; `None` for lines that are not events.
    pub(crate) fn parse(line: &str) -> Option<Self> {
        let rest = line.strip_prefix("event ")?;
        let (name, mut rest) = rest.split_once(' ').unwrap_or((rest, ""));
        let mut fields = BTreeMap::new();
        while !rest.is_empty() {
            let (key, after) = rest.split_once('=')?;
            let (value, after) = match after.strip_prefix('"') {
                // A quoted string ends at the first quote not escaped;
                // escapes stay as written (tests match substrings).
                Some(quoted) => {
                    let mut escaped = false;
                    let end = quoted.char_indices().find_map(|(i, c)| {
                        let close = c == '"' && !escaped;
                        escaped = c == '\\' && !escaped;
                        close.then_some(i)
                    })?;
                    (&quoted[..end], &quoted[end + 1..])
                }
                None => after.split_once(' ').unwrap_or((after, "")),
            };
            fields.insert(key.to_owned(), value.to_owned());
            rest = after.trim_start();
        }
        Some(Self { name: name.to_owned(), fields, line: line.to_owned() })
    }

    /// Field `key`; a missing one fails the test, naming the line.
    pub(crate) fn get(&self, key: &str) -> &str {
        self.fields.get(key).unwrap_or_else(|| panic!("no {key:?} in {:?}", self.line))
    }

    /// Field `key`, parsed.
    pub(crate) fn parsed<T: std::str::FromStr>(&self, key: &str) -> T {
        let value = self.get(key);
        value.parse().unwrap_or_else(|_| panic!("{key}={value:?} does not parse, in {:?}", self.line))
    }
}

/// A child process whose stdout lines come through a channel and whose
/// stderr is kept for the report when a test fails.
#[derive(Debug)]
pub(crate) struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Every stdout line received so far.
    transcript: Vec<String>,
    /// How many lines of `transcript` the waits have gone past.
    cursor: usize,
    stderr: Arc<Mutex<String>>,
    exit: Option<ExitStatus>,
}

impl Proc {
    /// Starts `command` with its stdin, stdout and stderr piped.
    pub(crate) fn spawn(name: &str, mut command: Command) -> std::io::Result<Self> {
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn()?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        // Readers end when the child closes its end, at the latest when
        // it dies; nothing joins them.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut err_pipe = child.stderr.take().expect("piped stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = err_pipe.read(&mut chunk) {
                sink.lock().unwrap_or_else(PoisonError::into_inner).push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        let stdin = child.stdin.take();
        Ok(Self { name: name.to_owned(), child, stdin, lines, transcript: Vec::new(), cursor: 0, stderr, exit: None })
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the next line at or after the cursor that is an event
    /// `pred` accepts, and moves the cursor past it. Fails at the deadline
    /// or when the child's stdout closes first.
    pub(crate) fn next_event(
        &mut self,
        what: &str,
        deadline: Instant,
        pred: impl Fn(&Event) -> bool,
    ) -> Result<Event, String> {
        let (event, at) = self.find_from(self.cursor, what, deadline, pred)?;
        self.cursor = at + 1;
        Ok(event)
    }

    /// The first event named `name` the process printed, waiting for it if
    /// it has not come yet; the cursor stays where it is.
    pub(crate) fn first_event(&mut self, name: &str, deadline: Instant) -> Result<Event, String> {
        self.find_from(0, name, deadline, |e| e.name == name).map(|(event, _)| event)
    }

    /// The first event from line `from` on that `pred` accepts, and its
    /// line's index, receiving lines until the deadline.
    fn find_from(
        &mut self,
        mut from: usize,
        what: &str,
        deadline: Instant,
        pred: impl Fn(&Event) -> bool,
    ) -> Result<(Event, usize), String> {
        loop {
            while from < self.transcript.len() {
                if let Some(event) = Event::parse(&self.transcript[from]).filter(&pred) {
                    return Ok((event, from));
                }
                from += 1;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.transcript.push(line),
                Err(RecvTimeoutError::Timeout) => return Err(format!("{}: no {what} by the deadline", self.name)),
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.try_wait().ok().flatten();
                    let status = status.map_or_else(|| "still running".to_owned(), |s| s.to_string());
                    return Err(format!("{}: stdout closed ({status}) before {what}", self.name));
                }
            }
        }
    }

    /// Every event named `name` received so far, whatever the cursor.
    pub(crate) fn seen(&mut self, name: &str) -> Vec<Event> {
        self.transcript.extend(self.lines.try_iter());
        self.transcript.iter().filter_map(|line| Event::parse(line)).filter(|e| e.name == name).collect()
    }

    /// Writes one line to the child's stdin (a command to the job).
    pub(crate) fn send(&mut self, line: &str) -> std::io::Result<()> {
        let stdin = self.stdin.as_mut().ok_or_else(|| std::io::Error::other("stdin closed"))?;
        writeln!(stdin, "{line}")?;
        stdin.flush()
    }

    /// SIGKILL (what `kill -9` sends), then reaps the process.
    pub(crate) fn kill(&mut self, deadline: Instant) -> Result<ExitStatus, String> {
        if self.exit.is_none() {
            // An error here means it already exited; the wait reaps it.
            let _ = self.child.kill();
        }
        self.wait_exit(deadline)
    }

    /// Waits for the process to end, collecting its stdout meanwhile.
    pub(crate) fn wait_exit(&mut self, deadline: Instant) -> Result<ExitStatus, String> {
        loop {
            if let Some(status) = self.exit {
                return Ok(status);
            }
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.exit = Some(status);
                    self.transcript.extend(self.lines.try_iter());
                    continue;
                }
                Ok(None) => {}
                Err(error) => return Err(format!("{}: wait failed: {error}", self.name)),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("{}: still running at the deadline", self.name));
            }
            match self.lines.recv_timeout(left.min(EXIT_POLL * 10)) {
                Ok(line) => self.transcript.push(line),
                Err(RecvTimeoutError::Timeout) => {}
                // Stdout closed but the process not reaped yet: std offers
                // no wait with a timeout, so `try_wait` is polled (above)
                // at this pace until the deadline. The pause paces the
                // poll; it decides nothing.
                Err(RecvTimeoutError::Disconnected) => std::thread::sleep(left.min(EXIT_POLL)),
            }
        }
    }

    /// What the process printed, for a failing test's message.
    pub(crate) fn report(&mut self) -> String {
        self.transcript.extend(self.lines.try_iter());
        let status = match self.exit {
            Some(status) => status.to_string(),
            None => "running".to_owned(),
        };
        let stderr = self.stderr.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let lines: Vec<&str> = stderr.lines().collect();
        let tail = lines[lines.len().saturating_sub(STDERR_TAIL)..].join("\n    ");
        format!(
            "--- {} (pid {}, {status})\n  stdout:\n    {}\n  stderr (last {STDERR_TAIL} lines):\n    {tail}\n",
            self.name,
            self.pid(),
            self.transcript.join("\n    ")
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a [`Job`] runs and where: cluster size, the environment of every
/// node and of single nodes, and a command to put before the program of
/// a node (such as `ip netns exec NAME`).
#[derive(Clone, Debug)]
pub(crate) struct JobSpec {
    program: PathBuf,
    servers: u32,
    workers: u32,
    scheduler_host: IpAddr,
    env: Vec<(String, String)>,
    node_env: BTreeMap<String, Vec<(String, String)>>,
    prefix: BTreeMap<String, Vec<String>>,
}

impl JobSpec {
    /// A cluster of `servers` and `workers` running the `job` example on
    /// loopback, every node under `JOB_CONTROL=stdin`.
    pub(crate) fn new(servers: u32, workers: u32) -> Self {
        Self {
            program: job_example(),
            servers,
            workers,
            scheduler_host: Ipv4Addr::LOCALHOST.into(),
            env: vec![("JOB_CONTROL".to_owned(), "stdin".to_owned())],
            node_env: BTreeMap::new(),
            prefix: BTreeMap::new(),
        }
    }

    /// The scheduler's address for `DMLC_PS_ROOT_URI` (and where it binds).
    pub(crate) fn scheduler_host(mut self, host: impl Into<IpAddr>) -> Self {
        self.scheduler_host = host.into();
        self
    }

    /// Sets `name=value` for every node.
    pub(crate) fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets `name=value` for `node` only (after the shared environment).
    pub(crate) fn node_env(mut self, node: &str, name: &str, value: &str) -> Self {
        self.node_env.entry(node.to_owned()).or_default().push((name.to_owned(), value.to_owned()));
        self
    }

    /// Runs `node` as `prefix... program` (for example in a namespace).
    pub(crate) fn prefix(mut self, node: &str, prefix: Vec<String>) -> Self {
        self.prefix.insert(node.to_owned(), prefix);
        self
    }

    /// The nodes' names: `scheduler`, `server0`, ..., `worker0`, ... (the
    /// index is the start order; ranks are the scheduler's to give).
    pub(crate) fn names(&self) -> Vec<String> {
        let mut names = vec!["scheduler".to_owned()];
        names.extend((0..self.servers).map(|i| format!("server{i}")));
        names.extend((0..self.workers).map(|i| format!("worker{i}")));
        names
    }

    /// The command that runs `node` against a scheduler on `port`.
    fn command(&self, node: &str, port: u16) -> Command {
        let role = node.trim_end_matches(|c: char| c.is_ascii_digit());
        let mut command = match self.prefix.get(node) {
            Some(prefix) => {
                let mut command = unconfigured(&prefix[0]);
                command.args(&prefix[1..]).arg(&self.program);
                command
            }
            None => unconfigured(&self.program),
        };
        command
            .env("DMLC_ROLE", role)
            .env("DMLC_PS_ROOT_URI", self.scheduler_host.to_string())
            .env("DMLC_PS_ROOT_PORT", port.to_string())
            .env("DMLC_NUM_SERVER", self.servers.to_string())
            .env("DMLC_NUM_WORKER", self.workers.to_string());
        for (name, value) in self.env.iter().chain(self.node_env.get(node).into_iter().flatten()) {
            command.env(name, value);
        }
        command
    }
}

/// A running cluster of processes; dropping it kills every one.
#[derive(Debug)]
pub(crate) struct Job {
    spec: JobSpec,
    port: u16,
    procs: BTreeMap<String, Proc>,
    /// Processes that were killed or replaced, kept for the report.
    retired: Vec<Proc>,
}

impl Job {
    /// Starts the scheduler on a port the OS picks, learns the port from
    /// its `listening` line, then starts every server and worker.
    pub(crate) fn start(spec: JobSpec, deadline: Instant) -> Self {
        let mut job = Self { spec, port: 0, procs: BTreeMap::new(), retired: Vec::new() };
        job.spawn("scheduler");
        let listening = job.expect("scheduler", "listening", deadline);
        let addr: SocketAddr = listening.parsed("addr");
        job.port = addr.port();
        for name in job.spec.names().into_iter().skip(1) {
            job.spawn(&name);
        }
        job
    }

    fn spawn(&mut self, name: &str) {
        let command = self.spec.command(name, self.port);
        let proc = Proc::spawn(name, command).unwrap_or_else(|error| panic!("cannot start {name}: {error}"));
        if let Some(old) = self.procs.insert(name.to_owned(), proc) {
            self.retired.push(old);
        }
    }

    /// Starts a new process for `name` beside the one running now, which
    /// goes on and is handed back (a node cut off by a partition, say,
    /// whose replacement runs while it still lives); waits go to the new
    /// process from now on.
    pub(crate) fn start_beside(&mut self, name: &str) -> Proc {
        let command = self.spec.command(name, self.port);
        let proc = Proc::spawn(name, command).unwrap_or_else(|error| panic!("cannot start {name}: {error}"));
        self.procs.insert(name.to_owned(), proc).unwrap_or_else(|| panic!("no node {name:?} ran"))
    }

    /// The process running `name` now.
    pub(crate) fn node(&mut self, name: &str) -> &mut Proc {
        self.procs.get_mut(name).unwrap_or_else(|| panic!("no node {name:?}"))
    }

    /// Waits for the next event `event` of `node`; fails the test, with
    /// every node's output, at the deadline.
    pub(crate) fn expect(&mut self, node: &str, event: &str, deadline: Instant) -> Event {
        self.expect_where(node, event, deadline, |e| e.name == event)
    }

    /// Waits for the next event of `node` that `pred` accepts.
    pub(crate) fn expect_where(
        &mut self,
        node: &str,
        what: &str,
        deadline: Instant,
        pred: impl Fn(&Event) -> bool,
    ) -> Event {
        match self.node(node).next_event(what, deadline, pred) {
            Ok(event) => event,
            Err(problem) => self.fail(&problem),
        }
    }

    /// The first event `event` that `node` printed, whenever it came.
    pub(crate) fn first(&mut self, node: &str, event: &str, deadline: Instant) -> Event {
        match self.node(node).first_event(event, deadline) {
            Ok(event) => event,
            Err(problem) => self.fail(&problem),
        }
    }

    /// Sends a command line to `node`'s stdin.
    pub(crate) fn send(&mut self, node: &str, line: &str) {
        if let Err(error) = self.node(node).send(line) {
            self.fail(&format!("{node}: cannot send {line:?}: {error}"));
        }
    }

    /// Kills `node` with SIGKILL and reaps it.
    pub(crate) fn kill(&mut self, node: &str, deadline: Instant) {
        if let Err(problem) = self.node(node).kill(deadline) {
            self.fail(&problem);
        }
    }

    /// Starts a new process for `node` with the same command and
    /// environment (killing the old one first if it still runs); waits go
    /// to the new process from now on.
    pub(crate) fn replace(&mut self, node: &str, deadline: Instant) {
        self.kill(node, deadline);
        self.spawn(node);
    }

    /// Every node must exit with status 0 by the deadline.
    pub(crate) fn expect_all_exit_zero(&mut self, deadline: Instant) {
        let mut problems = Vec::new();
        for (name, proc) in &mut self.procs {
            match proc.wait_exit(deadline) {
                Ok(status) if status.success() => {}
                Ok(status) => problems.push(format!("{name} exited with {status}")),
                Err(problem) => problems.push(problem),
            }
        }
        if !problems.is_empty() {
            self.fail(&problems.join("; "));
        }
    }

    /// Fails the test, with what every process printed, unless `holds`.
    pub(crate) fn ensure(&mut self, holds: bool, problem: impl std::fmt::Display) {
        if !holds {
            self.fail(&problem.to_string());
        }
    }

    /// Fails the test with `problem` and what every process printed.
    pub(crate) fn fail(&mut self, problem: &str) -> ! {
        let mut report = String::new();
        for proc in self.retired.iter_mut().chain(self.procs.values_mut()) {
            report.push_str(&proc.report());
        }
        panic!("{problem}\n{report}");
    }
}

/// The deadline `bound` from now.
pub(crate) fn deadline(bound: Duration) -> Instant {
    Instant::now() + bound
}

#[test]
fn event_lines_parse_into_names_and_fields_with_quoted_strings() {
    let line = r#"event error op=push kind=peer-dead node=10 error="node \"10\" is dead" after=x"#;
    let event = Event::parse(line).expect("an event");
    assert_eq!(event.name, "error");
    assert_eq!((event.get("op"), event.get("kind"), event.parsed::<u32>("node")), ("push", "peer-dead", 10));
    assert_eq!(event.get("error"), r#"node \"10\" is dead"#);
    assert_eq!(event.get("after"), "x");
    assert_eq!(Event::parse("event finalized").expect("an event").name, "finalized");
    assert!(Event::parse("running 1 test").is_none());
}
