//! What every handler can reach, shared by both listeners.

use std::sync::Arc;
use std::time::Instant;

use crate::ca::secret::SecretBox;
use crate::ca::token::TokenKeys;
use crate::config::Config;
use crate::inventory::Store;
use crate::metrics::Metrics;

pub struct Shared {
    pub store: Store,
    pub config: Config,
    pub root_pem: String,
    pub root_fingerprint: String,
    pub tokens: TokenKeys,
    pub secrets: Arc<SecretBox>,
    /// Token issuer every request is checked against.
    pub issuer: String,
    /// Other issuers whose tokens are accepted, and failed token grants.
    pub trusted: Arc<super::auth::Trusted>,
    /// How nodes reach the node listener (see `boot::base`).
    pub node_base: crate::boot::base::NodeBase,
    /// Shared with the TFTP server, which counts outside any request.
    pub metrics: Arc<Metrics>,
    /// When each node last fetched its boot script.
    pub boot_history: crate::boot::history::History,
    /// Where each node got to in its boot (shared with TFTP and DHCP).
    pub boot_steps: Arc<crate::boot::steps::BootSteps>,
    /// Rendered meta-data per caller address, for the current snapshot.
    pub meta_cache: crate::metadata::cache::DocCache,
    pub started: Instant,
    /// Redfish discovery jobs.
    pub discovery: Arc<crate::discover::Discovery>,
    /// PCS power transitions and status.
    pub power: Arc<crate::power::Power>,
    /// Firmware inventories and update jobs.
    pub firmware: Arc<crate::firmware::Firmware>,
    /// Serial consoles: sessions, logs, viewers.
    pub consoles: Arc<crate::console::Consoles>,
    /// The status page's sessions and event streams.
    pub ui: super::ui_session::UiState,
}

/// Cheap to clone; handlers take it as `State<AppState>`.
#[derive(Clone)]
pub struct AppState(pub Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl Shared {
    /// The node base URL for a request that came in on the connection
    /// whose local address is `local` (loopback when unknown).
    pub fn node_base_for(&self, local: Option<&super::server::Local>) -> String {
        let ip = local.map_or(std::net::IpAddr::from([127, 0, 0, 1]), |l| l.0.ip());
        self.node_base.for_local(ip)
    }
}
