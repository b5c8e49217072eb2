//! Cluster configuration, validated once so the protocol never meets a
//! nonsensical limit at runtime.
//!
//! A [`ConfigBuilder`] holds plain, public settings; [`ConfigBuilder::build`]
//! checks them and returns a [`Config`], which reads like the builder (it
//! derefs to it) but can no longer be changed. Names carry their unit or
//! qualifier last (`heartbeat_timeout`, `frame_len_max`).

use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Deref;

use crate::chains::REPLICAS_MAX;
use crate::id::Role;
use crate::range::{KeyRange, RangesError, ServerRanges};
use crate::time::Duration;

/// What an ordinary barrier does when one of its members dies before
/// arriving (`finalize` always waits for recovery). The scheduler's
/// barrier module documents the semantics in full.
///
/// ```
/// use pslite_core::{BarrierPolicy, Config, Role};
/// // As PS_BARRIER_POLICY spells them.
/// assert_eq!("elastic".parse(), Ok(BarrierPolicy::Elastic));
/// assert!("hope".parse::<BarrierPolicy>().is_err());
/// let mut builder = Config::builder(Role::Worker, "127.0.0.1:9091".parse().unwrap());
/// assert_eq!(builder.barrier_policy, BarrierPolicy::WaitForRecovery, "the default");
/// builder.barrier_policy = BarrierPolicy::FailOnDeath;
/// assert!(builder.build().is_ok());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarrierPolicy {
    /// Fail the barrier for everyone waiting: for jobs where a step
    /// without every member means nothing.
    FailOnDeath,
    /// Wait for the member's replacement up to `recovery_timeout` after
    /// the death, then release among the live members and report who was
    /// missing. The default: a standard job survives a death, and a
    /// restarted process rejoins at the barrier the survivors wait in.
    WaitForRecovery,
    /// Release among the live members at once, reporting who was missing.
    Elastic,
}

impl std::str::FromStr for BarrierPolicy {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fail" => Ok(Self::FailOnDeath),
            "wait" => Ok(Self::WaitForRecovery),
            "elastic" => Ok(Self::Elastic),
            _ => Err("one of fail, wait, elastic"),
        }
    }
}

/// Settings before validation. Every field is public; [`build`](Self::build)
/// checks them together.
///
/// ```
/// use pslite_core::{ConfigBuilder, ConfigError, Duration, Role};
/// let mut builder = ConfigBuilder::new(Role::Server, "10.0.0.1:9091".parse().unwrap()).cluster(4, 16);
/// // Any field can be set directly; `build` checks them all together.
/// builder.request_timeout = Duration::from_secs(30);
/// builder.requests_pending_max = 0;
/// assert_eq!(builder.build().unwrap_err(), ConfigError::ZeroLimit { field: "requests_pending_max" });
/// ```
#[derive(Clone, Debug)]
pub struct ConfigBuilder {
    /// This node's role.
    pub role: Role,
    /// Where the scheduler listens (ps-lite's DMLC_PS_ROOT_URI/PORT).
    pub scheduler_addr: SocketAddr,
    /// Where this node can be reached; the shell fills in the bound port.
    pub listen_addr: SocketAddr,
    /// Servers in the cluster (DMLC_NUM_SERVER).
    pub num_servers: u32,
    /// Workers in the cluster (DMLC_NUM_WORKER).
    pub num_workers: u32,
    /// Whether heartbeats and failure detection run (PS_HEARTBEAT_*).
    pub heartbeats: bool,
    /// How often every node tells the scheduler it is alive.
    pub heartbeat_interval: Duration,
    /// Silence after which the scheduler declares a node dead, and after
    /// which a node that hears nothing from the scheduler gives up on it.
    pub heartbeat_timeout: Duration,
    /// Whether frames are acknowledged and resent (ps-lite's PS_RESEND).
    /// Needed for exactly-once pushes when connections break or frames are
    /// lost; costs one small ACK frame per frame.
    pub resend: bool,
    /// First resend delay of an unacknowledged frame (doubles per attempt).
    pub resend_timeout: Duration,
    /// Resends of one frame before its requests fail.
    pub resend_attempts_max: u32,
    /// Upper bound on any single request, whatever happens.
    pub request_timeout: Duration,
    /// How often an unanswered registration is repeated.
    pub register_retry_interval: Duration,
    /// How long a node tries to register before it gives up and stops
    /// (`PS_REGISTER_TIMEOUT`). Long enough for launchers that start every
    /// role at once, short enough that nothing waits forever on a
    /// scheduler that is not there.
    pub register_timeout: Duration,
    /// How long a barrier (and `finalize`, always) waits for a dead
    /// member's replacement before it goes on without it
    /// (`PS_RECOVERY_TIMEOUT`).
    pub recovery_timeout: Duration,
    /// Largest frame accepted from the wire, header included.
    pub frame_len_max: u32,
    /// Most keys one request may carry.
    pub keys_per_request_max: u32,
    /// Requests a node may have outstanding at once.
    pub requests_pending_max: u32,
    /// What ordinary barriers do when a member dies (`PS_BARRIER_POLICY`).
    pub barrier_policy: BarrierPolicy,
    /// Explicit key ranges, one per server in rank order; `None` splits the
    /// key space equally.
    pub server_ranges: Option<Vec<KeyRange>>,
    /// Copies kept of each key range, `1..=3` and at most `num_servers`
    /// (`PS_REPLICAS`). The scheduler places ranges on chains of this many
    /// servers (see [`Chains`]); a push goes to its range's head and is
    /// acknowledged once every member applied it, a pull is served by the
    /// tail, and a server's death moves its place on without failing the
    /// requests that waited on it. With 1, ps-lite's behaviour: a dead
    /// server's range is lost. A restarted server learns each range it
    /// left from the range's tail while pushes go on, then joins the chain
    /// as its tail: the range is back to this many copies.
    ///
    /// [`Chains`]: crate::Chains
    pub replicas: u8,
    /// Most keys in one chunk of a range sent to a server catching up
    /// (chunks also stay under a quarter of `frame_len_max` and 1 MiB of
    /// values). Small chunks interleave more finely with pushes; large
    /// ones cost handles that find a range's keys by a scan fewer scans.
    pub transfer_chunk_keys: u32,
    /// Bytes per second a range's tail sends to a server catching up, at
    /// most: training keeps the rest of the bandwidth.
    pub transfer_bytes_per_second: u64,
}

/// Validated configuration. Reads like [`ConfigBuilder`] (through `Deref`)
/// but cannot be changed after validation.
///
/// ```
/// use pslite_core::{Config, Instant, Node, Role};
/// let scheduler = "127.0.0.1:9091".parse().unwrap();
/// // Only a validated configuration starts a node.
/// let config = Config::builder(Role::Worker, scheduler).cluster(2, 8).build().unwrap();
/// assert_eq!(config.num_workers, 8, "read through to the settings");
/// let node = Node::new(config, 1, Instant::ZERO);
/// assert_eq!(node.num_servers(), 2);
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    settings: ConfigBuilder,
}

/// Why a configuration was refused.
///
/// ```
/// use pslite_core::{Config, ConfigError, Role};
/// let refused = Config::builder(Role::Worker, "127.0.0.1:9091".parse().unwrap()).cluster(2, 0).build();
/// // The error names the setting, for a message the operator can act on.
/// assert_eq!(refused.unwrap_err(), ConfigError::ZeroCount { field: "num_workers" });
/// assert_eq!(ConfigError::ZeroCount { field: "num_workers" }.to_string(), "num_workers must be at least 1");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A count that must be positive is zero.
    #[error("{field} must be at least 1")]
    ZeroCount {
        /// The offending field.
        field: &'static str,
    },
    /// A limit or duration that must be positive is zero.
    #[error("{field} must be non-zero")]
    ZeroLimit {
        /// The offending field.
        field: &'static str,
    },
    /// Heartbeats would time out before the next one is due.
    #[error("heartbeat_interval ({interval:?}) must be shorter than heartbeat_timeout ({timeout:?})")]
    HeartbeatTimeoutTooShort {
        /// The configured interval.
        interval: Duration,
        /// The configured timeout.
        timeout: Duration,
    },
    /// `frame_len_max` is below what a control frame needs.
    #[error("frame_len_max {len} is below the minimum of {min}")]
    FrameLenTooSmall {
        /// The configured cap.
        len: u32,
        /// The smallest usable cap.
        min: u32,
    },
    /// The registration timeout would not allow a single retry.
    #[error("register_timeout ({timeout:?}) must be at least register_retry_interval ({retry:?})")]
    RegisterTimeoutTooShort {
        /// The retry interval.
        retry: Duration,
        /// The timeout.
        timeout: Duration,
    },
    /// Explicit ranges, but not one per server.
    #[error("server_ranges: {ranges} ranges given for {servers} servers")]
    RangeCount {
        /// Ranges given.
        ranges: usize,
        /// Servers configured.
        servers: u32,
    },
    /// A replica count outside `1..=REPLICAS_MAX`, or above the number of
    /// servers that would hold the copies.
    #[error("replicas must be in 1..={max} and at most num_servers ({servers}), not {replicas}")]
    Replicas {
        /// The configured count.
        replicas: u8,
        /// Servers configured.
        servers: u32,
        /// [`REPLICAS_MAX`](crate::REPLICAS_MAX).
        max: u8,
    },
    /// Explicit ranges that do not partition the key space.
    #[error("server_ranges: {0}")]
    Ranges(#[from] RangesError),
    /// A value from the environment could not be used.
    #[error("{variable}: {problem}")]
    Environment {
        /// The variable's name.
        variable: &'static str,
        /// What was wrong and what was expected.
        problem: String,
    },
}

/// Smallest `frame_len_max` that still fits a node table of a small cluster.
pub(crate) const FRAME_LEN_MIN: u32 = 64 * 1024;

impl ConfigBuilder {
    /// Defaults for a node of `role` joining the scheduler at `scheduler_addr`.
    ///
    /// ```
    /// use pslite_core::{ConfigBuilder, Role};
    /// let defaults = ConfigBuilder::new(Role::Worker, "127.0.0.1:9091".parse().unwrap());
    /// // Safe defaults: failures are detected, lost frames resent.
    /// assert!(defaults.heartbeats && defaults.resend);
    /// assert!(defaults.build().is_ok());
    /// ```
    pub fn new(role: Role, scheduler_addr: SocketAddr) -> Self {
        Self {
            role,
            scheduler_addr,
            listen_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            num_servers: 1,
            num_workers: 1,
            heartbeats: true,
            heartbeat_interval: Duration::from_millis(500),
            heartbeat_timeout: Duration::from_secs(5),
            resend: true,
            resend_timeout: Duration::from_millis(1000),
            resend_attempts_max: 10,
            request_timeout: Duration::from_secs(120),
            register_retry_interval: Duration::from_millis(500),
            register_timeout: Duration::from_secs(300),
            recovery_timeout: Duration::from_secs(60),
            frame_len_max: 1 << 30,
            keys_per_request_max: 1 << 27,
            requests_pending_max: 1 << 16,
            barrier_policy: BarrierPolicy::WaitForRecovery,
            server_ranges: None,
            replicas: 1,
            transfer_chunk_keys: 1 << 16,
            transfer_bytes_per_second: 256 << 20,
        }
    }

    /// Sets the number of servers and workers.
    ///
    /// ```
    /// use pslite_core::{ConfigBuilder, Role};
    /// let builder = ConfigBuilder::new(Role::Worker, "127.0.0.1:9091".parse().unwrap()).cluster(2, 8);
    /// // Every node of a cluster must be given the same size.
    /// assert_eq!((builder.num_servers, builder.num_workers), (2, 8));
    /// assert_eq!(builder.build().unwrap().server_ranges().len(), 2);
    /// ```
    pub fn cluster(mut self, num_servers: u32, num_workers: u32) -> Self {
        self.num_servers = num_servers;
        self.num_workers = num_workers;
        self
    }

    /// Sets this node's listen address.
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use pslite_core::{ConfigBuilder, Role};
    /// // What peers dial: a driver sets the address it actually listens on.
    /// let listening: SocketAddr = "10.0.0.7:41000".parse().unwrap();
    /// let config = ConfigBuilder::new(Role::Server, "10.0.0.1:9091".parse().unwrap()).listen_addr(listening).build();
    /// assert_eq!(config.unwrap().listen_addr, listening);
    /// ```
    pub fn listen_addr(mut self, addr: SocketAddr) -> Self {
        self.listen_addr = addr;
        self
    }

    /// Sets heartbeat interval and timeout.
    ///
    /// ```
    /// use pslite_core::{ConfigBuilder, ConfigError, Duration, Role};
    /// let builder = ConfigBuilder::new(Role::Worker, "127.0.0.1:9091".parse().unwrap());
    /// // A timeout shorter than the interval would declare everyone dead.
    /// let refused = builder.heartbeat(Duration::from_secs(2), Duration::from_secs(1)).build();
    /// assert!(matches!(refused, Err(ConfigError::HeartbeatTimeoutTooShort { .. })));
    /// ```
    pub fn heartbeat(mut self, interval: Duration, timeout: Duration) -> Self {
        self.heartbeat_interval = interval;
        self.heartbeat_timeout = timeout;
        self
    }

    /// Checks every setting and freezes them.
    ///
    /// ```
    /// use pslite_core::{ConfigBuilder, Role};
    /// let config = ConfigBuilder::new(Role::Worker, "127.0.0.1:9091".parse().unwrap()).cluster(3, 1).build().unwrap();
    /// // Read through the validated config; to change it, go back to a builder.
    /// assert_eq!(config.num_servers, 3);
    /// let changed = config.into_builder().cluster(4, 1).build().unwrap();
    /// assert_eq!(changed.server_ranges().len(), 4);
    /// ```
    pub fn build(self) -> Result<Config, ConfigError> {
        for (field, count) in [("num_servers", self.num_servers), ("num_workers", self.num_workers)] {
            if count == 0 {
                return Err(ConfigError::ZeroCount { field });
            }
        }
        for (field, duration) in [
            ("heartbeat_interval", self.heartbeat_interval),
            ("heartbeat_timeout", self.heartbeat_timeout),
            ("resend_timeout", self.resend_timeout),
            ("request_timeout", self.request_timeout),
            ("register_retry_interval", self.register_retry_interval),
            ("register_timeout", self.register_timeout),
        ] {
            if duration.is_zero() {
                return Err(ConfigError::ZeroLimit { field });
            }
        }
        for (field, limit) in [
            ("resend_attempts_max", self.resend_attempts_max),
            ("keys_per_request_max", self.keys_per_request_max),
            ("requests_pending_max", self.requests_pending_max),
            ("transfer_chunk_keys", self.transfer_chunk_keys),
            ("transfer_bytes_per_second", u32::try_from(self.transfer_bytes_per_second).unwrap_or(u32::MAX)),
        ] {
            if limit == 0 {
                return Err(ConfigError::ZeroLimit { field });
            }
        }
        if self.heartbeat_interval >= self.heartbeat_timeout {
            return Err(ConfigError::HeartbeatTimeoutTooShort {
                interval: self.heartbeat_interval,
                timeout: self.heartbeat_timeout,
            });
        }
        if self.register_timeout < self.register_retry_interval {
            return Err(ConfigError::RegisterTimeoutTooShort {
                retry: self.register_retry_interval,
                timeout: self.register_timeout,
            });
        }
        if self.frame_len_max < FRAME_LEN_MIN {
            return Err(ConfigError::FrameLenTooSmall { len: self.frame_len_max, min: FRAME_LEN_MIN });
        }
        if !(1..=REPLICAS_MAX).contains(&self.replicas) || u32::from(self.replicas) > self.num_servers {
            return Err(ConfigError::Replicas {
                replicas: self.replicas,
                servers: self.num_servers,
                max: REPLICAS_MAX,
            });
        }
        if let Some(ranges) = &self.server_ranges {
            if ranges.len() != self.num_servers as usize {
                return Err(ConfigError::RangeCount { ranges: ranges.len(), servers: self.num_servers });
            }
            ServerRanges::from_ranges(ranges.clone())?;
        }
        Ok(Config { settings: self })
    }
}

impl Config {
    /// Starts a builder; see [`ConfigBuilder::new`].
    ///
    /// ```
    /// use pslite_core::{Config, Duration, Role};
    /// let scheduler = "127.0.0.1:9091".parse().unwrap();
    /// let config = Config::builder(Role::Worker, scheduler)
    ///     .cluster(2, 4)
    ///     .heartbeat(Duration::from_millis(500), Duration::from_secs(5))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(config.server_ranges().len(), 2);
    /// // Nonsense is refused with a reason, not accepted to fail later.
    /// assert!(Config::builder(Role::Worker, scheduler).cluster(0, 4).build().is_err());
    /// ```
    pub fn builder(role: Role, scheduler_addr: SocketAddr) -> ConfigBuilder {
        ConfigBuilder::new(role, scheduler_addr)
    }

    /// The key ranges this configuration implies.
    ///
    /// ```
    /// use pslite_core::{Config, KeyRange, Rank, Role};
    /// let mut builder = Config::builder(Role::Worker, "127.0.0.1:9091".parse().unwrap()).cluster(2, 1);
    /// // Keys below 1000 on server 0, the rest on server 1.
    /// builder.server_ranges = Some(vec![KeyRange::new(0, 999).unwrap(), KeyRange::new(1000, u64::MAX).unwrap()]);
    /// assert_eq!(builder.build().unwrap().server_ranges().owner(1000), Rank(1));
    /// ```
    pub fn server_ranges(&self) -> ServerRanges {
        match &self.settings.server_ranges {
            Some(ranges) => {
                ServerRanges::from_ranges(ranges.clone()).expect("ranges were validated by ConfigBuilder::build")
            }
            None => ServerRanges::equal(self.settings.num_servers),
        }
    }

    /// A copy with another role and listen address: the same cluster seen
    /// from another node (used by local clusters and tests).
    ///
    /// ```
    /// use pslite_core::{Config, Role};
    /// let scheduler_addr = "127.0.0.1:9091".parse().unwrap();
    /// let scheduler = Config::builder(Role::Scheduler, scheduler_addr).cluster(2, 4).build().unwrap();
    /// let worker = scheduler.for_role(Role::Worker, "127.0.0.1:41000".parse().unwrap());
    /// // The same cluster, already validated: only the role and address differ.
    /// assert_eq!((worker.role, worker.num_workers), (Role::Worker, 4));
    /// ```
    pub fn for_role(&self, role: Role, listen_addr: SocketAddr) -> Self {
        let mut settings = self.settings.clone();
        settings.role = role;
        settings.listen_addr = listen_addr;
        Self { settings }
    }

    /// Back to a builder, to change and re-validate.
    ///
    /// ```
    /// use pslite_core::{Config, ConfigError, Role};
    /// let config = Config::builder(Role::Worker, "127.0.0.1:9091".parse().unwrap()).build().unwrap();
    /// let mut builder = config.into_builder();
    /// builder.frame_len_max = 1024;
    /// // Changes are checked again.
    /// assert!(matches!(builder.build(), Err(ConfigError::FrameLenTooSmall { .. })));
    /// ```
    pub fn into_builder(self) -> ConfigBuilder {
        self.settings
    }

    /// The longest the scheduler takes to declare a crashed node dead,
    /// counted from the crash: `heartbeat_timeout + heartbeat_interval`.
    ///
    /// A node that crashes at `t` sent its last heartbeat no earlier than
    /// `t - heartbeat_interval`, so it has been silent for
    /// `heartbeat_timeout` by `t + heartbeat_timeout` at the latest; the
    /// scheduler scans for silent nodes every `heartbeat_interval`, so the
    /// next scan, no later than `t + heartbeat_timeout +
    /// heartbeat_interval`, declares the death. A wait on the dead node ends
    /// when the news reaches the waiter, one network delay after that (and a
    /// heartbeat still on the wire at the crash can add one more): callers
    /// add their network's delays on top of this.
    ///
    /// ```
    /// use pslite_core::{Config, Duration, Role};
    /// let config = Config::builder(Role::Worker, "127.0.0.1:9091".parse().unwrap())
    ///     .heartbeat(Duration::from_millis(500), Duration::from_secs(5))
    ///     .build()
    ///     .unwrap();
    /// // How long a test must wait, at most, before a killed node is known dead.
    /// assert_eq!(config.failure_detection_bound(), Duration::from_millis(5500));
    /// ```
    pub fn failure_detection_bound(&self) -> Duration {
        self.heartbeat_timeout + self.heartbeat_interval
    }

    /// How long after sending a heartbeat the scheduler answered a server
    /// may still serve pulls as a range's tail: the scheduler declares it
    /// dead (and hands the tail's place on) no sooner than
    /// `heartbeat_timeout` after hearing that heartbeat, so a server cut
    /// off from the scheduler stops answering before another one starts.
    /// Shorter than the timeout by 0.2%, for the two clocks' rate drift.
    ///
    /// ```
    /// use pslite_core::{Config, Duration, Role};
    /// let config = Config::builder(Role::Server, "127.0.0.1:9091".parse().unwrap())
    ///     .heartbeat(Duration::from_millis(500), Duration::from_secs(5))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(config.read_lease(), Duration::from_millis(4990));
    /// ```
    pub fn read_lease(&self) -> Duration {
        self.heartbeat_timeout - self.heartbeat_timeout / 500
    }
}

impl Deref for Config {
    type Target = ConfigBuilder;
    fn deref(&self) -> &ConfigBuilder {
        &self.settings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder() -> ConfigBuilder {
        Config::builder(Role::Worker, SocketAddr::from((Ipv4Addr::LOCALHOST, 9000)))
    }

    #[test]
    fn defaults_are_valid() {
        let config = builder().build().expect("defaults validate");
        assert!(config.heartbeats);
        assert_eq!(config.server_ranges().len(), 1);
    }

    #[test]
    fn each_bad_setting_is_named() {
        assert_eq!(builder().cluster(0, 1).build().unwrap_err(), ConfigError::ZeroCount { field: "num_servers" });
        let err = builder().heartbeat(Duration::from_secs(2), Duration::from_secs(1)).build().unwrap_err();
        assert!(matches!(err, ConfigError::HeartbeatTimeoutTooShort { .. }));
        let mut b = builder();
        b.resend_attempts_max = 0;
        assert_eq!(b.build().unwrap_err(), ConfigError::ZeroLimit { field: "resend_attempts_max" });
        let mut b = builder();
        b.frame_len_max = 10;
        assert!(matches!(b.build().unwrap_err(), ConfigError::FrameLenTooSmall { .. }));
        let mut b = builder().cluster(2, 1);
        b.server_ranges = Some(vec![KeyRange::FULL]);
        assert_eq!(b.build().unwrap_err(), ConfigError::RangeCount { ranges: 1, servers: 2 });
        let mut b = builder().cluster(2, 1);
        b.server_ranges = Some(vec![KeyRange::FULL, KeyRange::FULL]);
        assert!(matches!(b.build().unwrap_err(), ConfigError::Ranges(_)));
        for (replicas, servers) in [(0, 1), (4, 4), (3, 2)] {
            let mut b = builder().cluster(servers, 1);
            b.replicas = replicas;
            assert_eq!(b.build().unwrap_err(), ConfigError::Replicas { replicas, servers, max: 3 });
        }
        let mut b = builder().cluster(3, 1);
        b.replicas = 3;
        assert_eq!(b.build().unwrap().replicas, 3);
    }
}
