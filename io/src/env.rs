//! ps-lite's environment variables, so the launchers people already use
//! (dmlc-tracker's local/ssh/mpi/yarn/kubernetes modes, MXNet's launch.py)
//! start pslite unchanged.
//!
//! | variable | meaning |
//! |---|---|
//! | `DMLC_ROLE` | `scheduler`, `server` or `worker` |
//! | `DMLC_PS_ROOT_URI`, `DMLC_PS_ROOT_PORT` | the scheduler's address |
//! | `DMLC_NUM_SERVER`, `DMLC_NUM_WORKER` | cluster size |
//! | `DMLC_NODE_HOST` | address to advertise (default: route to the scheduler) |
//! | `DMLC_INTERFACE` | accepted for compatibility; the advertised address is the one routing to the scheduler unless `DMLC_NODE_HOST` is set |
//! | `DMLC_PORT` | port to listen on (default: any) |
//! | `PS_HEARTBEAT_INTERVAL`, `PS_HEARTBEAT_TIMEOUT` | seconds; interval 0 turns heartbeats off (ps-lite's default is off, ours is on) |
//! | `PS_RESEND`, `PS_RESEND_TIMEOUT` | ACK and resend on (default) or off (`0`); first resend timeout in ms |
//! | `PS_VERBOSE` | 0, 1, 2: warn, info, debug (see [`verbosity`]) |
//! | `PS_CLUSTER_TOKEN` | shared secret checked on every connection |
//! | `PS_SEED` | seed of the core's randomness |

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use pslite_core::{ConfigError, Duration, Role};

use crate::settings::Settings;

/// Reads the environment through `get`, for tests; see [`Settings::from_env`].
pub fn settings_from(get: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
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
    }
    let any_ip: IpAddr = if scheduler_addr.is_ipv4() { [0, 0, 0, 0].into() } else { [0u16; 8].into() };
    let listen_port: u16 = match get("DMLC_PORT") {
        Some(p) => parse("DMLC_PORT", &p, "a port number")?,
        None => 0,
    };
    settings.bind_addr = if role == Role::Scheduler { scheduler_addr } else { SocketAddr::new(any_ip, listen_port) };
    if scheduler_addr.ip().is_loopback() && role != Role::Scheduler {
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
    /// value is an error naming the variable and what was expected.
    pub fn from_env() -> Result<Self, ConfigError> {
        settings_from(|name| std::env::var(name).ok())
    }
}

/// The tracing level `PS_VERBOSE` asks for: 0 (default) warn, 1 info, 2+ debug.
pub fn verbosity() -> tracing::Level {
    match std::env::var("PS_VERBOSE").ok().and_then(|v| v.parse::<u8>().ok()).unwrap_or(0) {
        0 => tracing::Level::WARN,
        1 => tracing::Level::INFO,
        _ => tracing::Level::DEBUG,
    }
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
        let s = settings_from(env(&pairs)).unwrap();
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
    }
}
