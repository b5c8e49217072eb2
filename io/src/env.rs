//! ps-lite's environment variables, so the launchers people already use
//! (dmlc-tracker's local/ssh/mpi/yarn/kubernetes modes, MXNet's launch.py)
//! start pslite unchanged.
//!
//! | variable | meaning |
//! |---|---|
//! | `DMLC_ROLE` | `scheduler`, `server` or `worker` |
//! | `DMLC_PS_ROOT_URI`, `DMLC_PS_ROOT_PORT` | the scheduler's address |
//! | `DMLC_NUM_SERVER`, `DMLC_NUM_WORKER` | cluster size |
//! | `DMLC_NODE_HOST` | address to advertise (default: see below) |
//! | `DMLC_INTERFACE` | advertise this interface's IPv4 address (IPv6 when the scheduler's is), unless `DMLC_NODE_HOST` is set |
//! | `DMLC_PORT` | port to listen on (default: any) |
//! | `PS_HEARTBEAT_INTERVAL`, `PS_HEARTBEAT_TIMEOUT` | seconds; interval 0 turns heartbeats off (ps-lite's default is off, ours is on) |
//! | `PS_RESEND`, `PS_RESEND_TIMEOUT` | ACK and resend on (default) or off (`0`); first resend timeout in ms |
//! | `PS_REPLICAS` | copies of each key range, 1 (default) to 3: with more, pushes survive a server's death (see `Config::replicas`) |
//! | `PS_RECOVERY_TIMEOUT` | seconds a barrier, and `finalize`, waits for a dead member's replacement (default 60) |
//! | `PS_BARRIER_POLICY` | what a death does to an ordinary barrier: `wait` (default: wait for the replacement up to the recovery timeout, then go on without), `elastic` (go on at once), `fail` |
//! | `PS_REGISTER_TIMEOUT` | seconds a node tries to register before it gives up (default 300) |
//! | `PS_VERBOSE` | 0, 1, 2: warn, info, debug (see [`verbosity`]) |
//! | `PS_CLUSTER_TOKEN` | shared secret checked on every connection |
//! | `PS_SEED` | seed of the core's randomness |
//!
//! The address a node advertises is what its peers dial, so it must be one
//! they can reach: `DMLC_NODE_HOST` if set, else the address of
//! `DMLC_INTERFACE` if set (for a machine with several networks where
//! the one towards the scheduler is not the one the job should use), else
//! the local address of the route towards the scheduler. A node listens on
//! every address, except that with the scheduler on loopback and nothing
//! else to advertise it listens on loopback only, so a local test cluster
//! is not reachable from the network.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use pslite_core::{ConfigError, Duration, Role};

use crate::settings::Settings;

/// Reads the environment through `get`, for tests; see [`Settings::from_env`].
/// `DMLC_INTERFACE` is looked up among this machine's interfaces.
///
/// ```
/// let env = |name: &str| match name {
///     "DMLC_ROLE" => Some("worker".to_owned()),
///     "DMLC_PS_ROOT_URI" => Some("127.0.0.1".to_owned()),
///     "DMLC_PS_ROOT_PORT" => Some("9091".to_owned()),
///     "DMLC_NUM_SERVER" => Some("2".to_owned()),
///     "DMLC_NUM_WORKER" => Some("4".to_owned()),
///     _ => None,
/// };
/// let settings = pslite_io::env::settings_from(env).unwrap();
/// assert_eq!(settings.core.num_servers, 2);
/// assert_eq!(settings.core.scheduler_addr.port(), 9091);
/// // A bad value names the variable.
/// let bad = pslite_io::env::settings_from(|name| (name == "DMLC_ROLE").then(|| "chef".to_owned()));
/// assert!(bad.unwrap_err().to_string().contains("DMLC_ROLE"));
/// ```
pub fn settings_from(get: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
    settings_with_interfaces(get, machine_interfaces)
}

/// An interface's name and one of its addresses: what `DMLC_INTERFACE`
/// is looked up in (an interface with several addresses appears once per
/// address, in the system's order).
type InterfaceAddr = (String, IpAddr);

/// This machine's interface addresses.
fn machine_interfaces() -> std::io::Result<Vec<InterfaceAddr>> {
    Ok(if_addrs::get_if_addrs()?.into_iter().map(|interface| (interface.name, interface.addr.ip())).collect())
}

/// [`settings_from`] with the interface list from `interfaces`, so tests
/// can give a machine any interfaces. The list is read only when
/// `DMLC_INTERFACE` decides the advertised address.
fn settings_with_interfaces(
    get: impl Fn(&str) -> Option<String>,
    interfaces: impl FnOnce() -> std::io::Result<Vec<InterfaceAddr>>,
) -> Result<Settings, ConfigError> {
    let required = |variable: &'static str| {
        get(variable).ok_or(ConfigError::Environment { variable, problem: "not set".to_owned() })
    };
    let role = match required("DMLC_ROLE")?.to_ascii_lowercase().as_str() {
        "scheduler" => Role::Scheduler,
        "server" => Role::Server,
        "worker" => Role::Worker,
        other => {
            return Err(ConfigError::Environment {
                variable: "DMLC_ROLE",
                problem: format!("{other:?}: expected scheduler, server or worker"),
            })
        }
    };
    let host = required("DMLC_PS_ROOT_URI")?;
    let port: u16 = parse("DMLC_PS_ROOT_PORT", &required("DMLC_PS_ROOT_PORT")?, "a port number")?;
    let scheduler_addr = (host.as_str(), port).to_socket_addrs().ok().and_then(|mut addrs| addrs.next()).ok_or(
        ConfigError::Environment {
            variable: "DMLC_PS_ROOT_URI",
            problem: format!("{host:?} does not resolve to an address"),
        },
    )?;
    let num_servers = parse("DMLC_NUM_SERVER", &required("DMLC_NUM_SERVER")?, "a positive integer")?;
    let num_workers = parse("DMLC_NUM_WORKER", &required("DMLC_NUM_WORKER")?, "a positive integer")?;
    let mut settings = Settings::new(role, scheduler_addr).cluster(num_servers, num_workers);
    if let Some(host) = get("DMLC_NODE_HOST") {
        let ip: IpAddr = parse("DMLC_NODE_HOST", &host, "an IP address")?;
        settings.advertise_host = Some(ip);
    } else if let Some(name) = get("DMLC_INTERFACE") {
        let interfaces = interfaces().map_err(|error| ConfigError::Environment {
            variable: "DMLC_INTERFACE",
            problem: format!("cannot list this machine's interfaces to find {name:?}: {error}"),
        })?;
        settings.advertise_host = Some(interface_ip(&name, scheduler_addr.is_ipv4(), &interfaces)?);
    }
    let any_ip: IpAddr = if scheduler_addr.is_ipv4() { [0, 0, 0, 0].into() } else { [0u16; 8].into() };
    let listen_port: u16 = match get("DMLC_PORT") {
        Some(p) => parse("DMLC_PORT", &p, "a port number")?,
        None => 0,
    };
    settings.bind_addr = if role == Role::Scheduler { scheduler_addr } else { SocketAddr::new(any_ip, listen_port) };
    // Listening on loopback only keeps a local cluster off the network, but
    // a node told to advertise another address must be reachable there.
    let advertises_loopback = settings.advertise_host.is_none_or(|ip| ip.is_loopback());
    if scheduler_addr.ip().is_loopback() && role != Role::Scheduler && advertises_loopback {
        settings.bind_addr = SocketAddr::new(scheduler_addr.ip(), listen_port);
    }
    let interval =
        get("PS_HEARTBEAT_INTERVAL").map(|v| parse::<f64>("PS_HEARTBEAT_INTERVAL", &v, "seconds")).transpose()?;
    let timeout =
        get("PS_HEARTBEAT_TIMEOUT").map(|v| parse::<f64>("PS_HEARTBEAT_TIMEOUT", &v, "seconds")).transpose()?;
    if let Some(interval) = interval {
        if interval <= 0.0 {
            settings.core.heartbeats = false;
        } else {
            settings.core.heartbeat_interval = seconds("PS_HEARTBEAT_INTERVAL", interval)?;
        }
    }
    if let Some(timeout) = timeout {
        settings.core.heartbeat_timeout = seconds("PS_HEARTBEAT_TIMEOUT", timeout)?;
    }
    if let Some(resend) = get("PS_RESEND") {
        let resend: u32 = parse("PS_RESEND", &resend, "0 or 1")?;
        settings.core.resend = resend != 0;
    }
    if let Some(ms) = get("PS_RESEND_TIMEOUT") {
        let ms: u64 = parse("PS_RESEND_TIMEOUT", &ms, "milliseconds")?;
        settings.core.resend_timeout = Duration::from_millis(ms);
    }
    if let Some(replicas) = get("PS_REPLICAS") {
        settings.core.replicas = parse("PS_REPLICAS", &replicas, "1, 2 or 3")?;
    }
    if let Some(timeout) = get("PS_RECOVERY_TIMEOUT") {
        let timeout: f64 = parse("PS_RECOVERY_TIMEOUT", &timeout, "seconds")?;
        settings.core.recovery_timeout = seconds("PS_RECOVERY_TIMEOUT", timeout)?;
    }
    if let Some(timeout) = get("PS_REGISTER_TIMEOUT") {
        let timeout: f64 = parse("PS_REGISTER_TIMEOUT", &timeout, "seconds")?;
        settings.core.register_timeout = seconds("PS_REGISTER_TIMEOUT", timeout)?;
    }
    if let Some(policy) = get("PS_BARRIER_POLICY") {
        settings.core.barrier_policy = parse("PS_BARRIER_POLICY", &policy, "wait, elastic or fail")?;
    }
    if let Some(v) = get("PS_VERBOSE") {
        let _: u8 = parse("PS_VERBOSE", &v, "0, 1 or 2")?;
    }
    settings.token = get("PS_CLUSTER_TOKEN");
    if let Some(seed) = get("PS_SEED") {
        settings.seed = Some(parse_seed(&seed)?);
    }
    settings.check()?;
    // Validate the core settings now, so a bad value is reported with its name.
    settings.core.clone().build()?;
    Ok(settings)
}

impl Settings {
    /// Reads ps-lite's `DMLC_*` and `PS_*` variables; a missing or invalid
    /// value is an error naming the variable and what was expected. See
    /// [`settings_from`] for an example.
    ///
    /// ```
    /// use pslite_io::Settings;
    /// // Nothing set: the error names the first variable missing.
    /// std::env::remove_var("DMLC_ROLE");
    /// let error = Settings::from_env().unwrap_err();
    /// assert_eq!(error.to_string(), "DMLC_ROLE: not set");
    /// ```
    pub fn from_env() -> Result<Self, ConfigError> {
        settings_from(|name| std::env::var(name).ok())
    }
}

/// The tracing level `PS_VERBOSE` asks for: 0 (default) warn, 1 info, 2+ debug.
///
/// ```
/// std::env::set_var("PS_VERBOSE", "1");
/// assert_eq!(pslite_io::env::verbosity(), tracing::Level::INFO);
/// // Unset (or unreadable), only warnings.
/// std::env::remove_var("PS_VERBOSE");
/// assert_eq!(pslite_io::env::verbosity(), tracing::Level::WARN);
/// ```
pub fn verbosity() -> tracing::Level {
    match std::env::var("PS_VERBOSE").ok().and_then(|v| v.parse::<u8>().ok()).unwrap_or(0) {
        0 => tracing::Level::WARN,
        1 => tracing::Level::INFO,
        _ => tracing::Level::DEBUG,
    }
}

/// The address of interface `name` to advertise: its first IPv4 address
/// (first IPv6 one that is not link-local when `ipv4` is false, since a
/// link-local address means nothing without its interface). ps-lite
/// takes the first IPv4 address too.
fn interface_ip(name: &str, ipv4: bool, interfaces: &[InterfaceAddr]) -> Result<IpAddr, ConfigError> {
    let family = if ipv4 { "IPv4" } else { "IPv6" };
    let fits = |ip: &IpAddr| match ip {
        IpAddr::V4(_) => ipv4,
        IpAddr::V6(v6) => !ipv4 && !v6.is_unicast_link_local(),
    };
    let mut others = Vec::new();
    for (interface, ip) in interfaces {
        if interface == name && fits(ip) {
            return Ok(*ip);
        }
        if interface == name {
            others.push(ip.to_string());
        }
    }
    let problem = if others.is_empty() {
        // getifaddrs lists no interface that has no address at all, so
        // "unknown" and "without any address" look the same from here.
        let mut usable: Vec<&str> =
            interfaces.iter().filter(|(_, ip)| fits(ip)).map(|(interface, _)| interface.as_str()).collect();
        usable.dedup();
        let usable = if usable.is_empty() { "none".to_owned() } else { usable.join(", ") };
        format!("no interface {name:?} with an address on this machine (interfaces with an {family} address: {usable})")
    } else {
        format!("interface {name:?} has no usable {family} address (it has {})", others.join(", "))
    };
    Err(ConfigError::Environment { variable: "DMLC_INTERFACE", problem })
}

fn parse<T: std::str::FromStr>(variable: &'static str, value: &str, expected: &str) -> Result<T, ConfigError> {
    value
        .trim()
        .parse()
        .map_err(|_| ConfigError::Environment { variable, problem: format!("{value:?} is not {expected}") })
}

fn parse_seed(value: &str) -> Result<u64, ConfigError> {
    let trimmed = value.trim();
    let parsed = match trimmed.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => trimmed.parse().ok(),
    };
    parsed.ok_or(ConfigError::Environment { variable: "PS_SEED", problem: format!("{value:?} is not a u64") })
}

fn seconds(variable: &'static str, value: f64) -> Result<Duration, ConfigError> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| ConfigError::Environment { variable, problem: format!("{value} is not a valid duration") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.get(name).cloned()
    }

    const BASE: [(&str, &str); 5] = [
        ("DMLC_ROLE", "worker"),
        ("DMLC_PS_ROOT_URI", "127.0.0.1"),
        ("DMLC_PS_ROOT_PORT", "9091"),
        ("DMLC_NUM_SERVER", "2"),
        ("DMLC_NUM_WORKER", "3"),
    ];

    #[test]
    fn reads_ps_lite_variables() {
        let mut pairs = BASE.to_vec();
        pairs.extend([("PS_HEARTBEAT_INTERVAL", "1"), ("PS_HEARTBEAT_TIMEOUT", "10"), ("PS_SEED", "0x10")]);
        pairs.extend([("PS_RECOVERY_TIMEOUT", "2.5"), ("PS_REGISTER_TIMEOUT", "30"), ("PS_BARRIER_POLICY", "elastic")]);
        let s = settings_from(env(&pairs)).unwrap();
        assert_eq!(s.core.recovery_timeout, Duration::from_millis(2500));
        assert_eq!(s.core.register_timeout, Duration::from_secs(30));
        assert_eq!(s.core.barrier_policy, pslite_core::BarrierPolicy::Elastic);
        assert_eq!(s.core.role, Role::Worker);
        assert_eq!(s.core.scheduler_addr, "127.0.0.1:9091".parse().unwrap());
        assert_eq!((s.core.num_servers, s.core.num_workers), (2, 3));
        assert_eq!(s.core.heartbeat_timeout, Duration::from_secs(10));
        assert_eq!(s.seed, Some(16));
    }

    #[test]
    fn errors_name_the_variable_and_the_expectation() {
        let missing = settings_from(env(&BASE[..4])).unwrap_err();
        assert_eq!(missing, ConfigError::Environment { variable: "DMLC_NUM_WORKER", problem: "not set".into() });
        let mut pairs = BASE.to_vec();
        pairs[0] = ("DMLC_ROLE", "boss");
        let err = settings_from(env(&pairs)).unwrap_err().to_string();
        assert!(err.starts_with("DMLC_ROLE:") && err.contains("expected scheduler, server or worker"), "{err}");
        let mut pairs = BASE.to_vec();
        pairs[2] = ("DMLC_PS_ROOT_PORT", "http");
        assert!(settings_from(env(&pairs)).unwrap_err().to_string().contains("DMLC_PS_ROOT_PORT"));
        let mut pairs = BASE.to_vec();
        pairs[3] = ("DMLC_NUM_SERVER", "0");
        assert_eq!(settings_from(env(&pairs)).unwrap_err(), ConfigError::ZeroCount { field: "num_servers" });
        let mut pairs = BASE.to_vec();
        pairs.push(("PS_BARRIER_POLICY", "hope"));
        let err = settings_from(env(&pairs)).unwrap_err().to_string();
        assert!(err.starts_with("PS_BARRIER_POLICY:") && err.contains("wait, elastic or fail"), "{err}");
        let mut pairs = BASE.to_vec();
        pairs.push(("PS_REGISTER_TIMEOUT", "0"));
        let err = settings_from(env(&pairs)).unwrap_err();
        assert_eq!(err, ConfigError::ZeroLimit { field: "register_timeout" });
    }

    /// A machine with a management network towards the scheduler and a
    /// data network the job should use.
    fn two_networks() -> std::io::Result<Vec<InterfaceAddr>> {
        Ok(vec![
            ("lo".to_owned(), "127.0.0.1".parse().unwrap()),
            ("mgmt".to_owned(), "10.0.0.5".parse().unwrap()),
            ("data".to_owned(), "fe80::1".parse().unwrap()),
            ("data".to_owned(), "192.168.7.5".parse().unwrap()),
            ("data".to_owned(), "192.168.8.5".parse().unwrap()),
            ("data".to_owned(), "2001:db8::5".parse().unwrap()),
            ("v6only".to_owned(), "2001:db8::6".parse().unwrap()),
        ])
    }

    fn on_network(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut pairs = BASE.to_vec();
        pairs[1] = ("DMLC_PS_ROOT_URI", "10.0.0.1");
        pairs.extend_from_slice(extra);
        pairs
    }

    #[test]
    fn dmlc_interface_advertises_the_first_ipv4_address_of_that_interface_and_listens_everywhere() {
        let s = settings_with_interfaces(env(&on_network(&[("DMLC_INTERFACE", "data")])), two_networks).unwrap();
        assert_eq!(s.advertise_host, Some("192.168.7.5".parse().unwrap()));
        assert_eq!(s.bind_addr, "0.0.0.0:0".parse().unwrap());
    }

    #[test]
    fn dmlc_interface_takes_a_global_ipv6_address_when_the_scheduler_is_ipv6() {
        let mut pairs = on_network(&[("DMLC_INTERFACE", "data")]);
        pairs[1] = ("DMLC_PS_ROOT_URI", "2001:db8::1");
        let s = settings_with_interfaces(env(&pairs), two_networks).unwrap();
        assert_eq!(s.advertise_host, Some("2001:db8::5".parse().unwrap()));
    }

    #[test]
    fn dmlc_node_host_wins_over_dmlc_interface_without_listing_interfaces() {
        let pairs = on_network(&[("DMLC_INTERFACE", "nonexistent0"), ("DMLC_NODE_HOST", "10.0.0.9")]);
        let s = settings_with_interfaces(env(&pairs), || panic!("interfaces listed although DMLC_NODE_HOST is set"))
            .unwrap();
        assert_eq!(s.advertise_host, Some("10.0.0.9".parse().unwrap()));
    }

    #[test]
    fn an_unknown_interface_is_an_error_naming_the_variable_the_interface_and_the_alternatives() {
        let pairs = on_network(&[("DMLC_INTERFACE", "eth7")]);
        let err = settings_with_interfaces(env(&pairs), two_networks).unwrap_err().to_string();
        assert!(err.starts_with("DMLC_INTERFACE: no interface \"eth7\""), "{err}");
        assert!(err.contains("IPv4 address: lo, mgmt, data)"), "{err}");
    }

    #[test]
    fn an_interface_without_an_address_of_the_schedulers_family_is_an_error_naming_what_it_has() {
        let pairs = on_network(&[("DMLC_INTERFACE", "v6only")]);
        let err = settings_with_interfaces(env(&pairs), two_networks).unwrap_err().to_string();
        assert_eq!(err, "DMLC_INTERFACE: interface \"v6only\" has no usable IPv4 address (it has 2001:db8::6)");
    }

    #[test]
    fn failing_to_list_interfaces_is_an_error_naming_the_variable() {
        let pairs = on_network(&[("DMLC_INTERFACE", "data")]);
        let err =
            settings_with_interfaces(env(&pairs), || Err(std::io::Error::other("no netlink"))).unwrap_err().to_string();
        assert!(err.starts_with("DMLC_INTERFACE: cannot list") && err.contains("no netlink"), "{err}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn dmlc_interface_reads_this_machines_interfaces() {
        // Every Linux machine, and every network namespace, has `lo`.
        let mut pairs = BASE.to_vec();
        pairs.push(("DMLC_INTERFACE", "lo"));
        let s = settings_from(env(&pairs)).unwrap();
        assert_eq!(s.advertise_host, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(s.bind_addr, "127.0.0.1:0".parse().unwrap());
    }

    #[test]
    fn with_a_loopback_scheduler_a_node_listens_on_loopback_unless_it_advertises_another_address() {
        let s = settings_from(env(&BASE)).unwrap();
        assert_eq!((s.advertise_host, s.bind_addr), (None, "127.0.0.1:0".parse().unwrap()));
        let mut pairs = BASE.to_vec();
        pairs.extend([("DMLC_NODE_HOST", "10.0.0.9"), ("DMLC_PORT", "7000")]);
        let s = settings_from(env(&pairs)).unwrap();
        assert_eq!(s.bind_addr, "0.0.0.0:7000".parse().unwrap());
    }
}
