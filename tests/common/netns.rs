//! Several hosts on one machine: a network namespace per host, cabled to
//! a bridge, for tests where address advertisement and partitions must
//! behave as on separate machines.
//!
//! A [`Net`] makes a "switch" namespace holding a bridge, and for every
//! host a namespace of its own whose `eth0` is one end of a veth pair; the
//! other end is a port of the bridge. Hosts get consecutive addresses of
//! [`SUBNET`]. Nothing is created in, or changed on, the machine's own
//! namespace: every interface lives in a namespace made here, and every
//! namespace is named after this process (`pslite-test-PID-N-...`) and
//! deleted on drop. Namespaces left by a test process that was killed are
//! deleted by the next [`Net::new`] that finds their process gone.
//!
//! It needs root and iproute2's `ip`; [`Net::new`] says why it cannot run
//! otherwise, so the test can print the reason and skip.
//!
//! ```ignore
//! let Some(mut net) = Net::or_skip("job in namespaces") else { return };
//! let scheduler_ip = net.add_host("scheduler");
//! let spec = JobSpec::new(1, 1).scheduler_host(scheduler_ip).prefix("scheduler", net.exec("scheduler"));
//! net.cut("server0"); // its cable to the bridge goes down: a partition
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The hosts' network: `10.77.0.0/24`, one address per host from `.1`.
/// Every test has its own switch, so tests running at once may reuse it.
pub(crate) const SUBNET: [u8; 3] = [10, 77, 0];
const PREFIX_LEN: u8 = 24;
/// Names of this module's namespaces start with this.
const NAME_PREFIX: &str = "pslite-test-";

/// Nets made by this process so far, to name each one apart.
static NETS: AtomicU32 = AtomicU32::new(0);

/// A host: its namespace, its address on the bridge and the name of the
/// bridge port its cable ends in (in the switch's namespace).
#[derive(Debug)]
struct Host {
    namespace: String,
    ip: Ipv4Addr,
    port: String,
}

/// Namespaces cabled to a bridge; dropping it deletes them.
#[derive(Debug)]
pub(crate) struct Net {
    /// `pslite-test-PID-N`: what every namespace of this net is named after.
    tag: String,
    switch: String,
    hosts: BTreeMap<String, Host>,
    /// Every namespace created, switch first, for the teardown.
    namespaces: Vec<String>,
}

impl Net {
    /// A net with a switch and no hosts, or the reason this machine cannot
    /// have one (not root, no `ip`, no namespaces).
    pub(crate) fn new() -> Result<Self, String> {
        if !is_root() {
            return Err("not running as root, so no network namespaces".to_owned());
        }
        match Command::new("ip").arg("-V").output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => return Err(format!("`ip -V` failed: {}", String::from_utf8_lossy(&out.stderr).trim())),
            Err(error) => return Err(format!("no iproute2 `ip` command: {error}")),
        }
        remove_orphaned_namespaces();
        let tag = format!("{NAME_PREFIX}{}-{}", std::process::id(), NETS.fetch_add(1, Ordering::Relaxed));
        let switch = format!("{tag}-switch");
        run("ip", &["netns", "add", &switch]).map_err(|error| format!("`ip netns add` failed: {error}"))?;
        let net = Self { tag, switch: switch.clone(), hosts: BTreeMap::new(), namespaces: vec![switch] };
        net.ip_in_switch(&["link", "add", "br0", "type", "bridge"]);
        net.ip_in_switch(&["link", "set", "br0", "up"]);
        Ok(net)
    }

    /// [`Net::new`], or `None` after printing why the test is skipped
    /// (past the test harness's capture, so a skip shows in the log).
    pub(crate) fn or_skip(test: &str) -> Option<Self> {
        match Self::new() {
            Ok(net) => Some(net),
            Err(reason) => {
                let _ = writeln!(std::io::stderr(), "skipped {test}: {reason}");
                None
            }
        }
    }

    /// Adds host `name` in a namespace of its own, cabled to the bridge
    /// through its `eth0`; returns its address.
    pub(crate) fn add_host(&mut self, name: &str) -> Ipv4Addr {
        let index = self.hosts.len();
        let octet = u8::try_from(index + 1).ok().filter(|&o| o < 255).expect("at most 254 hosts");
        let ip = Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], octet);
        let namespace = self.namespace(name);
        let port = format!("port{index}");
        self.ip_in_switch(&["link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &namespace]);
        self.ip_in_switch(&["link", "set", &port, "master", "br0", "up"]);
        self.ip_in(&namespace, &["addr", "add", &format!("{ip}/{PREFIX_LEN}"), "dev", "eth0"]);
        self.ip_in(&namespace, &["link", "set", "eth0", "up"]);
        self.ip_in(&namespace, &["link", "set", "lo", "up"]);
        self.hosts.insert(name.to_owned(), Host { namespace, ip, port });
        ip
    }

    /// A second cable, straight from host `a` to host `b`, with interface
    /// `a_if` at address `a_ip` in `a` and `b_if` at `b_ip` in `b`, both in
    /// one /24: a network only these two share.
    pub(crate) fn add_link(
        &mut self,
        (a, a_if, a_ip): (&str, &str, Ipv4Addr),
        (b, b_if, b_ip): (&str, &str, Ipv4Addr),
    ) {
        let (a_ns, b_ns) = (self.host(a).namespace.clone(), self.host(b).namespace.clone());
        self.ip_in(&a_ns, &["link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b_ns]);
        for (ns, interface, ip) in [(&a_ns, a_if, a_ip), (&b_ns, b_if, b_ip)] {
            self.ip_in(ns, &["addr", "add", &format!("{ip}/24"), "dev", interface]);
            self.ip_in(ns, &["link", "set", interface, "up"]);
        }
    }

    /// Host `name`'s address on the bridge.
    pub(crate) fn address(&self, name: &str) -> Ipv4Addr {
        self.host(name).ip
    }

    /// Whether host `name` has a route to `to` at all.
    pub(crate) fn routes_to(&self, name: &str, to: Ipv4Addr) -> bool {
        let mut args = vec!["-n", &self.host(name).namespace, "route", "get"];
        let to = to.to_string();
        args.push(&to);
        run("ip", &args).is_ok()
    }

    /// Runs `ip ARGS` in host `name`'s namespace and returns its output.
    pub(crate) fn ip(&self, name: &str, args: &[&str]) -> String {
        self.ip_in(&self.host(name).namespace, args)
    }

    /// The source address host `name` uses towards `to`: what a node there
    /// advertises when it follows the route.
    pub(crate) fn route_source(&self, name: &str, to: Ipv4Addr) -> Ipv4Addr {
        let route = self.ip(name, &["-o", "route", "get", &to.to_string()]);
        let mut words = route.split_whitespace();
        words
            .by_ref()
            .find(|&word| word == "src")
            .and_then(|_| words.next())
            .and_then(|ip| ip.parse().ok())
            .unwrap_or_else(|| panic!("no source address in {route:?}"))
    }

    /// The command prefix that runs a program in host `name`'s namespace.
    pub(crate) fn exec(&self, name: &str) -> Vec<String> {
        ["ip", "netns", "exec", &self.host(name).namespace].map(str::to_owned).to_vec()
    }

    /// Cuts host `name` off: the bridge's end of its cable goes down, so
    /// whatever it sends or is sent is lost, while the host itself, its
    /// processes and its sockets live on (a partition, not a crash).
    pub(crate) fn cut(&self, name: &str) {
        self.ip_in_switch(&["link", "set", &self.host(name).port, "down"]);
    }

    /// Mends what [`Net::cut`] did.
    pub(crate) fn heal(&self, name: &str) {
        self.ip_in_switch(&["link", "set", &self.host(name).port, "up"]);
    }

    fn namespace(&mut self, name: &str) -> String {
        let namespace = format!("{}-{name}", self.tag);
        run("ip", &["netns", "add", &namespace]).unwrap_or_else(|error| panic!("{error}"));
        self.namespaces.push(namespace.clone());
        namespace
    }

    fn host(&self, name: &str) -> &Host {
        self.hosts.get(name).unwrap_or_else(|| panic!("no host {name:?}"))
    }

    fn ip_in_switch(&self, args: &[&str]) -> String {
        self.ip_in(&self.switch, args)
    }

    fn ip_in(&self, namespace: &str, args: &[&str]) -> String {
        let mut all = vec!["-n", namespace];
        all.extend_from_slice(args);
        run("ip", &all).unwrap_or_else(|error| panic!("{error}"))
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Hosts first: deleting a namespace deletes its ends of the cables.
        for namespace in self.namespaces.iter().rev() {
            if let Err(error) = run("ip", &["netns", "delete", namespace]) {
                let _ = writeln!(std::io::stderr(), "cannot delete namespace {namespace}: {error}");
            }
        }
    }
}

/// Runs a command; its stdout, or an error naming it and its stderr.
fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program).args(args).output().map_err(|error| format!("{program}: {error}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!("`{program} {}` failed ({}): {}", args.join(" "), out.status, stderr.trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether this process runs as root (effective uid 0).
fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status.lines().find_map(|line| line.strip_prefix("Uid:")).and_then(|ids| ids.split_whitespace().nth(1));
    euid == Some("0")
}

/// Deletes the namespaces of test processes that no longer run (killed
/// before their `Net` was dropped), so they do not pile up on a machine.
fn remove_orphaned_namespaces() {
    let Ok(listed) = run("ip", &["netns", "list"]) else { return };
    for line in listed.lines() {
        let Some(namespace) = line.split_whitespace().next() else { continue };
        let pid = namespace.strip_prefix(NAME_PREFIX).and_then(|rest| rest.split('-').next());
        let Some(pid) = pid.filter(|pid| pid.parse::<u32>().is_ok()) else { continue };
        if !std::path::Path::new("/proc").join(pid).exists() {
            let _ = run("ip", &["netns", "delete", namespace]);
        }
    }
}
