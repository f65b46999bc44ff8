//! One TOML file, every key optional.
//!
//! The appliance must start with no file at all (`systemctl start` on a fresh
//! head node), so every section has embedded defaults. Unknown keys are
//! rejected by name: a misspelt `dhcp.enable` silently ignored is how a
//! cluster ends up without DHCP, or with it where it must not be.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The `[dhcp]` section is owned by the DHCP service, with its checks.
pub use crate::dhcp::settings::{DhcpConfig, DhcpSubnet};

/// The file read when present and no `--config` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/openchami/config.toml";
/// Where state lives when neither the file nor `--state-dir` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/openchami";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Database, CA and keys live here.
    pub state_dir: PathBuf,
    /// Cluster name: cloud-init `cluster-name`, token files, CLI environment.
    pub cluster_name: String,
    pub api: ApiConfig,
    pub node: NodeConfig,
    pub auth: AuthConfig,
    pub http: HttpConfig,
    pub metrics: MetricsConfig,
    pub boot: BootServiceConfig,
    pub dhcp: DhcpConfig,
    pub dns: DnsConfig,
    pub tftp: TftpConfig,
    pub redfish: RedfishConfig,
    pub discovery: DiscoveryConfig,
    pub power: PowerConfig,
    pub console: ConsoleConfig,
    pub store: StoreConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            cluster_name: "openchami".into(),
            api: ApiConfig::default(),
            node: NodeConfig::default(),
            auth: AuthConfig::default(),
            http: HttpConfig::default(),
            metrics: MetricsConfig::default(),
            boot: BootServiceConfig::default(),
            dhcp: DhcpConfig::default(),
            dns: DnsConfig::default(),
            tftp: TftpConfig::default(),
            redfish: RedfishConfig::default(),
            discovery: DiscoveryConfig::default(),
            power: PowerConfig::default(),
            console: ConsoleConfig::default(),
            store: StoreConfig::default(),
        }
    }
}

/// The HTTPS listener serving every API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// Extra DNS names and IP addresses for the server certificate.
    pub names: Vec<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            enabled: true,
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            names: Vec::new(),
        }
    }
}

/// The plain-HTTP listener for firmware and booting nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// More node ports, e.g. 8081, so stored kernel command lines keep working.
    pub extra_listen: Vec<SocketAddr>,
    /// The base URL nodes use to reach this listener, e.g.
    /// `http://172.16.0.254:27778`. Empty: the listen address when it is a
    /// specific one, else, per request, the address of our interface or
    /// connection facing the node (see `boot::base`).
    pub advertise: String,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            enabled: true,
            listen: SocketAddr::from(([0, 0, 0, 0], 27778)),
            extra_listen: Vec::new(),
            advertise: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Token issuer; empty means the API base, `https://<host name>:<port>`.
    pub issuer: String,
    pub audience: String,
    /// Lifetime of tokens minted by `openchami token issue`, in seconds.
    pub token_ttl_secs: u64,
    /// Lifetime of access tokens `/oauth/token` hands out for a bootstrap
    /// token, in seconds.
    pub exchange_ttl_secs: u64,
    /// Lifetime of the refresh-token family an exchange starts, in
    /// seconds: rotating a refresh token does not extend it.
    pub refresh_ttl_secs: u64,
    /// Other issuers whose tokens the API accepts (a site's own identity
    /// provider), each with the audience its tokens must name and where
    /// its keys are.
    pub trusted_issuers: Vec<TrustedIssuer>,
}

/// An issuer trusted besides the appliance (`[[auth.trusted_issuers]]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustedIssuer {
    /// Compared with the token's `iss` exactly.
    pub issuer: String,
    /// One of the token's `aud` values must be this.
    pub audience: String,
    /// A JWKS document on disk (re-read when a token names an unknown key).
    pub jwks_file: String,
    /// Or a JWKS URL (`http://` or `https://`), fetched at start and when a
    /// token names an unknown key (at most once every 30 s).
    pub jwks_url: String,
    /// CA certificates (PEM) for an `https` `jwks_url`; empty: the
    /// system's bundle.
    pub ca_file: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            issuer: String::new(),
            audience: "openchami".into(),
            token_ttl_secs: 3600,
            exchange_ttl_secs: 3600,
            refresh_ttl_secs: 86400,
            trusted_issuers: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Larger request bodies are refused with 413.
    pub max_body_bytes: usize,
    /// Every request gets at most this long.
    pub request_timeout_secs: u64,
    /// On SIGTERM, in-flight requests get this long to finish.
    pub shutdown_grace_secs: u64,
    /// Requests served at once per listener; more wait.
    pub max_in_flight: usize,
    /// Peers whose `X-Forwarded-For` is believed (reverse proxies); they
    /// are also exempt from `max_connections_per_peer`.
    pub trusted_proxies: Vec<IpAddr>,
    /// Connections open at once per listener, further bounded by a share
    /// of the process's file descriptors; more are closed when accepted.
    pub max_connections: usize,
    /// Connections open at once from one client address on the node
    /// listener.
    pub max_connections_per_peer: usize,
    /// A request head must be complete this long after its first byte.
    pub header_read_timeout_secs: u64,
    /// A connection with no request running and no bytes moving is closed
    /// after this long.
    pub idle_timeout_secs: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: 16 * 1024 * 1024,
            request_timeout_secs: 60,
            shutdown_grace_secs: 10,
            max_in_flight: 1024,
            trusted_proxies: Vec::new(),
            max_connections: 16384,
            max_connections_per_peer: 256,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `/metrics` without a token (for a Prometheus without one).
    pub anonymous: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BootServiceConfig {
    /// A directory served read-only under `/artifacts/` on both listeners
    /// (kernels, initrds, images), so a lab needs no other web server.
    /// Empty: not served.
    pub artifacts_dir: PathBuf,
    /// Interfaces to send "no router here" IPv6 router advertisements on, so
    /// iPXE does not wait for IPv6 autoconfiguration (see `boot::ra`).
    pub ipv6_ra_interfaces: Vec<String>,
}

/// The authoritative DNS server for the inventory (`[dns]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Off until configured: port 53 usually belongs to a site resolver.
    pub enabled: bool,
    /// Interfaces served, by name. Empty: every interface with an address
    /// inside a DHCP subnet or one of `networks`, and no other.
    pub interfaces: Vec<String>,
    /// UDP and TCP port (53; another port only for tests).
    pub port: u16,
    /// The cluster zone: nodes are `<host name>.<domain>` and
    /// `<xname>.<domain>`.
    pub domain: String,
    /// Names of the head node, answered with the address of the interface
    /// a query arrived on. Each must lie inside `domain`.
    pub head_names: Vec<String>,
    /// TTL of every answer from the inventory, and the negative TTL.
    pub ttl_secs: u32,
    /// More networks served besides the DHCP subnets (IPv4 or IPv6 CIDRs):
    /// their reverse names are answered here and their clients may recurse.
    pub networks: Vec<String>,
    /// Resolvers other names are forwarded to (`ip` or `ip:port`). Empty:
    /// other names are refused.
    pub upstreams: Vec<String>,
    /// Time an upstream gets per attempt, milliseconds.
    pub upstream_timeout_ms: u64,
    /// Forwarded answers cached, in records.
    pub cache_size: u64,
    /// Response-rate limit per client address over UDP (answers per
    /// second, with a burst of as many); 0 turns it off. TCP is not limited.
    pub rrl_per_sec: u32,
    /// Of the answers over the limit, every `rrl_slip`-th goes out truncated
    /// (so a real client retries over TCP) and the rest are dropped; 0: drop all.
    pub rrl_slip: u32,
    /// Extra static records inside `domain`.
    pub records: Vec<DnsRecord>,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            enabled: false,
            interfaces: Vec::new(),
            port: 53,
            domain: "cluster".into(),
            head_names: vec!["openchami.cluster".into()],
            ttl_secs: 60,
            networks: Vec::new(),
            upstreams: Vec::new(),
            upstream_timeout_ms: 2000,
            cache_size: 4096,
            rrl_per_sec: 100,
            rrl_slip: 2,
            records: Vec::new(),
        }
    }
}

/// A static record (`[[dns.records]]`): `type` is A, AAAA, CNAME or TXT.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsRecord {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TftpConfig {
    /// Unset: served on the interfaces DHCP serves whenever DHCP hands out
    /// TFTP boot files (enabled, with a subnet, no `dhcp.next_server`).
    /// `true`: served on `listen`. `false`: never.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    pub listen: SocketAddr,
    /// Files served; empty means `<state_dir>/tftp`. Missing iPXE binaries
    /// are taken from the distribution's iPXE package.
    pub root: PathBuf,
    /// Transfers running at once. When all are taken, a new request takes
    /// over the oldest transfer not yet acknowledged, else it is refused
    /// with an error packet.
    pub max_transfers: usize,
    /// Transfers one client address may run at once; more are refused.
    pub max_transfers_per_client: usize,
    /// Largest `blksize` granted (RFC 2348); 1468 fits an Ethernet frame.
    pub max_block_size: u16,
    /// Largest `windowsize` granted (RFC 7440).
    pub max_window_size: u16,
    /// Seconds to wait for an ACK before resending.
    pub timeout_secs: u64,
    /// Largest `timeout` option a client is granted (RFC 2349); a larger
    /// one is left out of the OACK and `timeout_secs` applies.
    pub max_client_timeout_secs: u8,
    /// Resends before a transfer is abandoned with an error packet.
    pub retries: u32,
}

impl Default for TftpConfig {
    fn default() -> Self {
        TftpConfig {
            enabled: None,
            listen: SocketAddr::from(([0, 0, 0, 0], 69)),
            root: PathBuf::new(),
            max_transfers: 1000,
            max_transfers_per_client: 8,
            max_block_size: 1468,
            max_window_size: 64,
            timeout_secs: 3,
            max_client_timeout_secs: 10,
            retries: 5,
        }
    }
}

/// How the appliance talks to BMCs (discovery and power alike).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedfishConfig {
    /// PEM file of the CAs BMC certificates must chain to. Empty: any
    /// certificate is accepted, as BMCs ship self-signed ones.
    pub ca_file: PathBuf,
    /// Per request; BMCs can be slow (magellan's 5 s is too short).
    pub request_timeout_secs: u64,
    /// Extra attempts after a timeout or 5xx; 401/403 are never retried.
    pub retries: u32,
    /// Requests in flight per BMC; more overwhelm small BMCs.
    pub max_requests_per_bmc: usize,
}

impl Default for RedfishConfig {
    fn default() -> Self {
        RedfishConfig {
            ca_file: PathBuf::new(),
            request_timeout_secs: 30,
            retries: 2,
            max_requests_per_bmc: 4,
        }
    }
}

/// `discover scan` and `discover collect`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoveryConfig {
    /// The port scanned when a target names none.
    pub port: u16,
    /// Addresses probed at once.
    pub scan_concurrency: usize,
    /// TCP connect timeout of a probe.
    pub connect_timeout_secs: u64,
    /// BMCs crawled at once.
    pub collect_concurrency: usize,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            port: 443,
            scan_concurrency: 256,
            connect_timeout_secs: 5,
            collect_concurrency: 1024,
        }
    }
}

/// PCS power transitions and the power-state sampler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PowerConfig {
    /// How often a transition polls `PowerState` to confirm a change.
    pub poll_interval_secs: u64,
    /// How often every node's power state is read into the inventory; 0 = never.
    pub sample_interval_secs: u64,
    /// After the deadline, how long a ForceOff escalation gets to take effect.
    pub escalation_secs: u64,
    /// BMCs a transition or a sample talks to at once.
    pub concurrency: usize,
}

impl Default for PowerConfig {
    fn default() -> Self {
        PowerConfig {
            poll_interval_secs: 5,
            sample_interval_secs: 30,
            escalation_secs: 30,
            concurrency: 1024,
        }
    }
}

/// Where the inventory is kept: SQLite in the state directory (one head
/// node), or a PostgreSQL database shared by several heads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `postgres://user:password@host/db?sslmode=require` (libpq's URL
    /// form); empty = SQLite in `state_dir`.
    pub url: String,
    /// PEM certificates trusted for the database's TLS certificate; empty =
    /// the system's. Unused over a Unix socket.
    pub ca_file: String,
    /// Seconds a head's lease on once-only work (a power transition, the
    /// power sampler, a discovery job, a console) lives without renewal:
    /// how long work waits after its head dies before another takes it.
    pub lease_ttl_secs: u64,
    /// The key-encryption key the heads of a shared store seal the root CA,
    /// token keys and BMC-credential sealing key with in the database: the
    /// same file (32 bytes, mode 0600) on every head; empty =
    /// `<state_dir>/kek.key`. Unused with SQLite.
    pub kek_file: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: String::new(),
            ca_file: String::new(),
            lease_ttl_secs: 15,
            kek_file: String::new(),
        }
    }
}

impl StoreConfig {
    /// Where the key-encryption key is.
    pub fn kek_path(&self, state_dir: &std::path::Path) -> std::path::PathBuf {
        if self.kek_file.is_empty() {
            state_dir.join("kek.key")
        } else {
            std::path::PathBuf::from(&self.kek_file)
        }
    }
}

/// Serial consoles: one session per BMC (SSH, or IPMI serial-over-LAN
/// through `ipmitool`), logged under the state directory
/// (`consoles/console.<xname>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Keep a console session open to every enrolled node's BMC.
    pub enabled: bool,
    /// The BMC's console SSH port (OpenBMC's host console: 2200).
    pub ssh_port: u16,
    /// Run this on the BMC instead of a shell (a vendor's console command,
    /// such as `console -f` or `SMASH: start /system1/sol1`); empty = shell.
    pub command: String,
    /// Ask the BMC for a terminal (what console programs expect); off only
    /// for consoles that are plain streams.
    pub pty: bool,
    /// A log file is rotated when it reaches this size.
    pub log_max_bytes: u64,
    /// Rotated files kept per node (`console.<xname>.1` is the newest).
    pub log_keep: u32,
    /// First and longest wait between reconnection attempts.
    pub backoff_min_secs: u64,
    pub backoff_max_secs: u64,
    /// How often the inventory is checked for added or removed consoles.
    pub refresh_secs: u64,
    /// TCP connect and SSH handshake deadline (for IPMI: until the SOL
    /// payload is active).
    pub connect_timeout_secs: u64,
    /// The IPMI serial-over-LAN client run for IPMI consoles (a path, or a
    /// name looked up on `PATH`).
    pub ipmitool: String,
    /// The RMCP+ cipher suite IPMI consoles ask for (3: HMAC-SHA1 and
    /// AES-CBC-128, which every IPMI 2.0 BMC has; 17: HMAC-SHA256).
    pub ipmi_cipher_suite: u8,
    /// Per-BMC choices, by BMC xname (`[console.bmcs.x1000c0s0b0]`:
    /// `backend = "ssh" | "ipmi"`, `port`, `command`), over what discovery
    /// found.
    pub bmcs: std::collections::BTreeMap<String, crate::console::targets::Override>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            enabled: true,
            ssh_port: 22,
            command: String::new(),
            pty: true,
            log_max_bytes: 4 << 20,
            log_keep: 3,
            backoff_min_secs: 1,
            backoff_max_secs: 300,
            refresh_secs: 10,
            connect_timeout_secs: 10,
            ipmitool: "ipmitool".into(),
            ipmi_cipher_suite: 3,
            bmcs: std::collections::BTreeMap::new(),
        }
    }
}

/// Where TFTP is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TftpMode {
    Off,
    /// On `tftp.listen`, as configured.
    Listen,
    /// On the interfaces DHCP serves, because DHCP hands out TFTP files.
    DhcpInterfaces,
}

impl Config {
    /// DHCP names TFTP boot files for PXE firmware and names no other
    /// server for them: this appliance must serve them.
    pub fn dhcp_hands_out_tftp_files(&self) -> bool {
        self.dhcp.enabled
            && !self.dhcp.subnets.is_empty()
            && self.dhcp.next_server.trim().is_empty()
    }

    /// Where TFTP is served (see [`TftpConfig::enabled`]).
    pub fn tftp_mode(&self) -> TftpMode {
        match self.tftp.enabled {
            Some(true) => TftpMode::Listen,
            Some(false) => TftpMode::Off,
            None if self.dhcp_hands_out_tftp_files() => TftpMode::DhcpInterfaces,
            None => TftpMode::Off,
        }
    }

    /// The TFTP root, as configured or under the state directory.
    pub fn tftp_root(&self) -> PathBuf {
        if self.tftp.root.as_os_str().is_empty() {
            self.state_dir.join("tftp")
        } else {
            self.tftp.root.clone()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0}: {1}")]
    Parse(String, String),
    #[error("{0}: {1}")]
    Invalid(String, String),
}

impl Config {
    /// Parses TOML text; `origin` names the source in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text)
            .map_err(|e| ConfigError::Parse(origin.into(), flatten(&e.to_string())))?;
        cfg.validate()
            .map_err(|m| ConfigError::Invalid(origin.into(), m))?;
        Ok(cfg)
    }

    /// Reads `path` if given (it must exist), else the default file if it
    /// exists, else the embedded defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Config::parse(&text, &path.display().to_string()),
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                Ok(Config::default())
            }
            Err(e) => Err(ConfigError::Read(path.display().to_string(), e)),
        }
    }

    fn validate(&self) -> Result<(), String> {
        if !self.store.url.is_empty()
            && !["postgres://", "postgresql://"]
                .iter()
                .any(|p| self.store.url.starts_with(p))
        {
            return Err("store.url must be a postgres:// URL (or empty for SQLite)".into());
        }
        if self.store.lease_ttl_secs == 0 {
            return Err("store.lease_ttl_secs must be at least 1".into());
        }
        for (i, t) in self.auth.trusted_issuers.iter().enumerate() {
            let what = format!("auth.trusted_issuers[{i}]");
            if t.issuer.trim().is_empty() || t.audience.trim().is_empty() {
                return Err(format!("{what} needs an issuer and an audience"));
            }
            if t.jwks_file.is_empty() == t.jwks_url.is_empty() {
                return Err(format!(
                    "{what} needs exactly one of jwks_file and jwks_url"
                ));
            }
            let url_ok = t.jwks_url.is_empty()
                || t.jwks_url.starts_with("http://")
                || t.jwks_url.starts_with("https://");
            if !url_ok {
                return Err(format!(
                    "{what}.jwks_url must be an http:// or https:// URL"
                ));
            }
        }
        if self.auth.exchange_ttl_secs == 0 {
            return Err("auth.exchange_ttl_secs must be positive".into());
        }
        if self.auth.refresh_ttl_secs == 0 {
            return Err("auth.refresh_ttl_secs must be positive".into());
        }
        let c = &self.console;
        if c.log_max_bytes < 4096 {
            return Err("console.log_max_bytes must be at least 4096".into());
        }
        if c.backoff_min_secs == 0 || c.backoff_max_secs < c.backoff_min_secs {
            return Err(
                "console.backoff_min_secs must be positive and at most console.backoff_max_secs"
                    .into(),
            );
        }
        if c.refresh_secs == 0 || c.connect_timeout_secs == 0 {
            return Err(
                "console.refresh_secs and console.connect_timeout_secs must be positive".into(),
            );
        }
        if let Some(k) = c
            .bmcs
            .keys()
            .find(|k| crate::inventory::xname::normalize(k).is_err())
        {
            return Err(format!("console.bmcs: {k:?} is not a BMC xname"));
        }
        if c.ipmitool.trim().is_empty() {
            return Err("console.ipmitool must name a program".into());
        }
        if self.cluster_name.trim().is_empty() {
            return Err("cluster_name must not be empty".into());
        }
        if self.http.max_body_bytes == 0 {
            return Err("http.max_body_bytes must be positive".into());
        }
        if !(8..=65464).contains(&self.tftp.max_block_size) {
            return Err("tftp.max_block_size must be between 8 and 65464".into());
        }
        if !(1..=64).contains(&self.tftp.max_window_size) {
            return Err("tftp.max_window_size must be between 1 and 64".into());
        }
        if !(1..=255).contains(&self.tftp.timeout_secs) {
            return Err("tftp.timeout_secs must be between 1 and 255".into());
        }
        if self.tftp.max_client_timeout_secs == 0 {
            return Err("tftp.max_client_timeout_secs must be between 1 and 255".into());
        }
        if self.tftp.max_transfers == 0 || self.tftp.max_transfers_per_client == 0 {
            return Err(
                "tftp.max_transfers and tftp.max_transfers_per_client must be positive".into(),
            );
        }
        if self.redfish.max_requests_per_bmc == 0
            || self.discovery.scan_concurrency == 0
            || self.discovery.collect_concurrency == 0
            || self.power.concurrency == 0
        {
            return Err("redfish, discovery and power concurrency limits must be positive".into());
        }
        if self.power.poll_interval_secs == 0 || self.redfish.request_timeout_secs == 0 {
            return Err(
                "power.poll_interval_secs and redfish.request_timeout_secs must be positive".into(),
            );
        }
        if self.http.max_in_flight == 0 {
            return Err("http.max_in_flight must be positive".into());
        }
        let h = &self.http;
        if h.max_connections == 0
            || h.max_connections_per_peer == 0
            || h.header_read_timeout_secs == 0
            || h.idle_timeout_secs == 0
        {
            return Err("http.max_connections, max_connections_per_peer, header_read_timeout_secs and idle_timeout_secs must be positive".into());
        }
        crate::dhcp::settings::Settings::check(&self.dhcp)?;
        crate::dns::settings::Settings::from_config(self)?;
        let adv = &self.node.advertise;
        if !(adv.is_empty() || adv.starts_with("http://") || adv.starts_with("https://")) {
            return Err(format!(
                "node.advertise must be an http:// URL, got {:?}",
                self.node.advertise
            ));
        }
        Ok(())
    }

    /// The token issuer, as configured or derived from the host name.
    pub fn issuer(&self) -> String {
        if self.auth.issuer.is_empty() {
            format!("https://{}:{}", host_name(), self.api.listen.port())
        } else {
            self.auth.issuer.clone()
        }
    }
}

/// TOML errors span several lines with a source excerpt; operators get one.
fn flatten(msg: &str) -> String {
    let lines: Vec<&str> = msg
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let head = lines.first().copied().unwrap_or("invalid TOML");
    let tail = lines.last().copied().unwrap_or("");
    if lines.len() > 1 {
        format!("{head} {tail}")
    } else {
        head.to_string()
    }
}

/// The host's name without glibc (the binary is static; NSS is not there).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(Config::parse("", "t").unwrap(), Config::default());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::parse("[dhcp]\nenable = true\n", "cfg.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("enable"), "{err}");
        assert!(err.starts_with("cfg.toml"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
        let err = Config::parse("colour = 1\n", "t").unwrap_err().to_string();
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn listeners_can_be_switched_off() {
        let c = Config::parse("[api]\nenabled = false\n[node]\nenabled = false\n", "t").unwrap();
        assert!(!c.api.enabled && !c.node.enabled);
    }

    #[test]
    fn every_example_config_parses() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).unwrap();
                Config::parse(&text, &path.display().to_string()).unwrap();
                seen += 1;
            }
        }
        assert!(seen >= 1, "no example configs found in {}", dir.display());
    }

    #[test]
    fn trusted_issuers_are_checked() {
        let ok = "[[auth.trusted_issuers]]\nissuer = \"https://idp\"\naudience = \"a\"\njwks_file = \"/k.json\"\n";
        assert_eq!(
            Config::parse(ok, "t").unwrap().auth.trusted_issuers[0].jwks_file,
            "/k.json"
        );
        for (text, says) in [
            (
                "[[auth.trusted_issuers]]\nissuer = \"i\"\njwks_file = \"/k\"\n",
                "audience",
            ),
            (
                "[[auth.trusted_issuers]]\nissuer = \"i\"\naudience = \"a\"\n",
                "exactly one",
            ),
            (
                "[[auth.trusted_issuers]]\nissuer = \"i\"\naudience = \"a\"\njwks_file = \"/k\"\njwks_url = \"http://x/\"\n",
                "exactly one",
            ),
            (
                "[[auth.trusted_issuers]]\nissuer = \"i\"\naudience = \"a\"\njwks_url = \"ftp://x/\"\n",
                "jwks_url",
            ),
            ("[auth]\nexchange_ttl_secs = 0\n", "exchange_ttl_secs"),
            ("[auth]\nrefresh_ttl_secs = 0\n", "refresh_ttl_secs"),
        ] {
            let e = Config::parse(text, "t").unwrap_err().to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn the_documented_example_is_the_defaults() {
        let text = include_str!("../examples/config.toml");
        assert_eq!(
            Config::parse(text, "examples/config.toml").unwrap(),
            Config::default()
        );
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(Config::parse("[api]\nlisten = \"nope\"\n", "t").is_err());
        assert!(Config::parse("[node]\nadvertise = \"ftp://x\"\n", "t").is_err());
        assert!(Config::parse("cluster_name = \"\"\n", "t").is_err());
    }
}
