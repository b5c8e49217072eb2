//! Everything needed to start one node: the core's protocol settings plus
//! what only the shell knows (where to bind, what to advertise, the cluster
//! token, the seed).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use pslite_core::{Config, ConfigBuilder, ConfigError, Role};

/// Settings of one node. Build with [`Settings::new`] or read ps-lite's
/// environment with [`Settings::from_env`](crate::env).
///
/// ```
/// use pslite_core::{Duration, Role};
/// use pslite_io::Settings;
/// let scheduler = "10.0.0.1:9091".parse().unwrap();
/// let mut settings = Settings::new(Role::Server, scheduler).cluster(2, 8).token("s3cret");
/// settings.core = settings.core.heartbeat(Duration::from_secs(1), Duration::from_secs(10));
/// assert_eq!(settings.for_role(Role::Worker).core.num_workers, 8);
/// ```
#[derive(Clone, Debug)]
pub struct Settings {
    /// Protocol settings (role, scheduler address, cluster size, timeouts).
    pub core: ConfigBuilder,
    /// Address to bind the listener to; port 0 lets the OS choose. The
    /// scheduler binds to the scheduler address instead.
    pub bind_addr: SocketAddr,
    /// Address other nodes use to reach this one; `None` advertises the
    /// bound address (or, when bound to a wildcard, the local address of
    /// the route towards the scheduler).
    pub advertise_host: Option<IpAddr>,
    /// Shared secret every connection must present before any frame.
    pub token: Option<String>,
    /// Seed of the core's randomness; `None` draws one (and logs it, so an
    /// incident can be replayed in the simulator).
    pub seed: Option<u64>,
}

/// Longest token accepted, in bytes (a hello is read before any check).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> pslite_io::Result<()> {
/// use pslite_io::{Error, LocalCluster, TOKEN_LEN_MAX};
/// // Checked at start, before any connection is made.
/// let settings = LocalCluster::settings(1, 1).token("x".repeat(TOKEN_LEN_MAX + 1));
/// assert!(matches!(pslite_io::start(settings).await, Err(Error::Config(_))));
/// # Ok(()) }
/// ```
pub const TOKEN_LEN_MAX: usize = 256;

impl Settings {
    /// A node of `role` in a cluster whose scheduler is at `scheduler_addr`.
    pub fn new(role: Role, scheduler_addr: SocketAddr) -> Self {
        Self {
            core: Config::builder(role, scheduler_addr),
            bind_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            advertise_host: None,
            token: None,
            seed: None,
        }
    }

    /// Sets the cluster size.
    pub fn cluster(mut self, num_servers: u32, num_workers: u32) -> Self {
        self.core = self.core.cluster(num_servers, num_workers);
        self
    }

    /// Sets the cluster token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The same cluster seen from a node of another role.
    pub fn for_role(&self, role: Role) -> Self {
        let mut settings = self.clone();
        settings.core.role = role;
        settings
    }

    /// Checks the settings that the core does not own.
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        if let Some(token) = &self.token {
            if token.len() > TOKEN_LEN_MAX {
                return Err(ConfigError::Environment {
                    variable: "PS_CLUSTER_TOKEN",
                    problem: format!("{} bytes, at most {TOKEN_LEN_MAX} allowed", token.len()),
                });
            }
        }
        Ok(())
    }
}
