//! Starting and stopping the appliance.
//!
//! The one place that opens the store, bootstraps the CA and binds listeners,
//! so that `openchami serve`, the test harness and the benchmarks run exactly
//! the same start-up. Every task it spawns is tracked and watches one
//! cancellation token; stopping is cancelling that token and waiting.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ca::authority::{self, Authority, CertNames, HotCert};
use crate::ca::secret::SecretBox;
use crate::ca::token::TokenKeys;
use crate::config::{self, Config};
use crate::http::{self, AppState, Listener, Shared};
use crate::inventory::Store;
use crate::metrics::Metrics;

/// The database file inside the state directory.
pub const DB_FILE: &str = "openchami.db";

/// A running appliance.
pub struct App {
    pub state: AppState,
    /// Where the API listener is bound, if enabled.
    pub api_addr: Option<SocketAddr>,
    /// Where the node listeners are bound, the main one first.
    pub node_addrs: Vec<SocketAddr>,
    /// Where TFTP is bound, if enabled.
    pub tftp_addr: Option<SocketAddr>,
    /// The interfaces DHCP serves (none when off).
    pub dhcp_interfaces: Vec<String>,
    /// Where DNS is bound, UDP and TCP alike (none when off).
    pub dns_addrs: Vec<SocketAddr>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    /// Held while the appliance exists: one server per state directory.
    _state_lock: crate::statedir::StateLock,
}

impl App {
    /// Opens state, binds every enabled listener and starts serving.
    pub async fn start(config: Config) -> anyhow::Result<App> {
        let started = Instant::now();
        let state_dir = config.state_dir.clone();
        std::fs::create_dir_all(&state_dir)
            .with_context(|| format!("cannot create state directory {}", state_dir.display()))?;
        restrict_dir(&state_dir);
        crate::statedir::check_writable(&state_dir)?;
        let state_lock = crate::statedir::lock(&state_dir)?;

        // The store, the CA and the key files are independent and each waits
        // on a few fsyncs on first start: open them side by side.
        let db_path = state_dir.join(DB_FILE);
        let store_config = config.store.clone();
        let mut store_task = Some(tokio::task::spawn_blocking(move || {
            if store_config.url.is_empty() {
                return Store::open(&db_path);
            }
            let ca = (!store_config.ca_file.is_empty()).then(|| Path::new(&store_config.ca_file));
            Store::open_backend(Box::new(crate::inventory::postgres::Pg::connect(
                &store_config.url,
                ca,
            )?))
        }));
        // A shared store holds the keys every head uses: they must be in
        // `ca/` before anything below reads it.
        let mut opened = None;
        let mut kek = None;
        if let Some(task) = store_task.take_if(|_| !config.store.url.is_empty()) {
            let store = task.await.context("store start-up task failed")??;
            kek = crate::shared_keys::sync(&store, &config).await?;
            opened = Some(store);
        }
        let dir = state_dir.clone();
        let tokens_task = tokio::task::spawn_blocking(move || TokenKeys::load_or_create(&dir));
        let dir = state_dir.clone();
        let secrets_task = tokio::task::spawn_blocking(move || SecretBox::load_or_create(&dir));

        let api_listener = if config.api.enabled {
            Some(bind(config.api.listen).await?)
        } else {
            None
        };
        let mut node_listeners = Vec::new();
        if config.node.enabled {
            node_listeners.push(bind(config.node.listen).await?);
            for addr in &config.node.extra_listen {
                node_listeners.push(bind(*addr).await?);
            }
        }
        let api_addr = api_listener.as_ref().map(|l| l.local_addr()).transpose()?;
        let node_addrs = node_listeners
            .iter()
            .map(|l| l.local_addr())
            .collect::<Result<Vec<_>, _>>()?;

        let names = cert_names(&config, api_addr);
        let renew_names = names.clone();
        let dir = state_dir.clone();
        let authority = tokio::task::spawn_blocking(move || Authority::bootstrap(&dir, &names))
            .await
            .context("CA start-up task failed")??;
        let tokens = tokens_task.await.context("token key task failed")??;
        let secrets = secrets_task.await.context("secret key task failed")??;
        let store = match (opened, store_task) {
            (Some(store), _) => store,
            (None, Some(task)) => task.await.context("store start-up task failed")??,
            (None, None) => anyhow::bail!("the store was not opened"),
        };
        store.observe_commits(crate::mem::large_write_committed);
        let head = crate::statedir::head_id(&state_dir)?;
        store.set_lease_holder(&head, Duration::from_secs(config.store.lease_ttl_secs));

        let node_base = crate::boot::base::NodeBase::new(
            &config.node.advertise,
            node_addrs.first().copied().unwrap_or(config.node.listen),
        );
        let issuer = config.issuer();
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let secrets = Arc::new(secrets);
        let (discovery, power) = redfish_services(&store, &secrets, &config, &tasks, &shutdown)?;
        power
            .start()
            .await
            .context("cannot end power transitions left running")?;
        tasks.spawn(discovery.clone().take_over());
        let firmware = Arc::new(crate::firmware::Firmware::new(
            store.clone(),
            secrets.clone(),
            power.redfish_transport(),
            node_base.clone(),
            config.boot.artifacts_dir.clone(),
            tasks.clone(),
            shutdown.clone(),
        ));
        let consoles = crate::console::Consoles::new(
            store.clone(),
            secrets.clone(),
            config.console.clone(),
            &state_dir,
            tasks.clone(),
            shutdown.clone(),
        );
        consoles.start().with_context(|| {
            format!(
                "cannot create the console log directory under {}",
                state_dir.display()
            )
        })?;
        let trusted =
            Arc::new(crate::http::auth::Trusted::load(&config.auth.trusted_issuers).await);
        let state = AppState(Arc::new(Shared {
            trusted,
            store,
            root_pem: authority.root_pem().to_string(),
            root_fingerprint: authority.root_fingerprint(),
            tokens,
            secrets,
            discovery,
            power,
            firmware,
            consoles,
            ui: http::ui_session::UiState::new(shutdown.child_token()),
            issuer,
            node_base,
            metrics: Arc::new(Metrics::default()),
            boot_history: Default::default(),
            boot_steps: Default::default(),
            meta_cache: Default::default(),
            started,
            config,
        }));

        if let Some(kek) = kek {
            tasks.spawn(crate::shared_keys::follow(
                state.clone(),
                kek,
                shutdown.child_token(),
            ));
        }

        let grace = Duration::from_secs(state.config.http.shutdown_grace_secs);
        let fd_limit = raise_open_file_limit();
        let tftp_slots = if state.config.tftp_mode() == crate::config::TftpMode::Off {
            0
        } else {
            state.config.tftp.max_transfers
        };
        let (api_budget, node_budget) =
            connection_budgets(fd_limit, node_listeners.len(), tftp_slots);
        let http_cfg = &state.config.http;
        let limits = |name, budget: usize, per_peer| http::Limits {
            name,
            max_connections: http_cfg.max_connections.min(budget),
            per_peer,
            exempt: http_cfg.trusted_proxies.clone(),
            header_read_timeout: Duration::from_secs(http_cfg.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(http_cfg.idle_timeout_secs),
        };
        let api_limits = limits("api", api_budget, None);
        let node_limits = limits("node", node_budget, Some(http_cfg.max_connections_per_peer));
        tracing::info!(
            fd_limit,
            api_connections = api_limits.max_connections,
            node_connections = node_limits.max_connections,
            "connection limits"
        );
        let st = state.clone();
        let shed: http::Shed = Arc::new(move |listener, reason| {
            st.metrics.counter(
                "openchami_http_connections_shed_total",
                "HTTP connections closed by a limit (cap, per-address share, header or idle timeout), by listener and reason; reason peer_share_syn counts opening SYNs dropped in the kernel for an address at its share",
                &[("listener", listener), ("reason", reason)],
            )
        });
        if let Some(l) = api_listener {
            let cert = Arc::new(HotCert::new(authority.certified_key()?));
            let tls = authority::server_config_with(cert.clone())?;
            tasks.spawn(renew_certificate(
                state_dir.clone(),
                renew_names,
                authority.leaf_not_after(),
                cert,
                shutdown.child_token(),
            ));
            let router = http::router(state.clone(), Listener::Api);
            tracing::info!("listening for api (https) on {}", l.local_addr()?);
            tasks.spawn(http::serve(
                l,
                Some(tls),
                router,
                shutdown.child_token(),
                grace,
                api_limits,
                shed.clone(),
            ));
        }
        for iface in &state.config.boot.ipv6_ra_interfaces {
            let (sock, index) = crate::boot::ra::bind(iface)
                .with_context(|| format!("cannot send IPv6 router advertisements on {iface}"))?;
            tracing::info!("sending IPv6 router advertisements (router lifetime 0) on {iface}");
            let stop = shutdown.child_token();
            let iface = iface.clone();
            tasks.spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = crate::boot::ra::serve(iface, sock, index) => {}
                }
            });
        }
        let dhcp_interfaces = start_dhcp(&state, &tasks, &shutdown)?;
        let tftp_addr = start_tftp(&state, &dhcp_interfaces, &tasks, &shutdown)?;
        let dns_addrs = start_dns(&state, &tasks, &shutdown)?;
        log_node_bases(&state, &dhcp_interfaces);
        for problem in crate::boot::check::problems(
            &state.config,
            &crate::boot::check::Facts::of_host(&state.config),
        ) {
            tracing::warn!("configuration: {problem}");
        }
        for l in node_listeners {
            let router = http::router(state.clone(), Listener::Node);
            tracing::info!("listening for node (http) on {}", l.local_addr()?);
            tasks.spawn(http::serve(
                l,
                None,
                router,
                shutdown.child_token(),
                grace,
                node_limits.clone(),
                shed.clone(),
            ));
        }
        tasks.close();
        tracing::info!(
            state_dir = %state_dir.display(),
            root_fingerprint = %state.root_fingerprint,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "appliance ready"
        );
        Ok(App {
            state,
            api_addr,
            node_addrs,
            tftp_addr,
            dhcp_interfaces,
            dns_addrs,
            shutdown,
            tasks,
            _state_lock: state_lock,
        })
    }

    /// Asks every task to stop; [`App::wait`] returns when they have.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// A token that, when cancelled, stops the appliance.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits for every task to finish (after [`App::shutdown`]).
    pub async fn wait(&self) {
        self.tasks.wait().await;
    }

    pub fn state_dir(&self) -> PathBuf {
        self.state.config.state_dir.clone()
    }
}

/// Binds DHCP on the interfaces it may serve and spawns the server.
/// Enabled without a subnet, it serves nothing (and says so); enabled with
/// subnets but no interface to serve them on, start-up fails, since a DHCP
/// server that silently answers nobody is as bad as one answering everyone.
fn start_dhcp(
    state: &AppState,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<Vec<String>> {
    use crate::dhcp::{server, settings::Settings};
    let cfg = &state.config;
    if !cfg.dhcp.enabled {
        return Ok(Vec::new());
    }
    let mut settings = Settings::from_config(&cfg.dhcp, state.node_base.clone(), &cfg.cluster_name)
        .map_err(|e| anyhow::anyhow!(e))?;
    if cfg.dns.enabled {
        settings.dns_domain = crate::dns::settings::Settings::from_config(cfg)
            .ok()
            .map(|d| d.domain);
    }
    if settings.subnets.is_empty() {
        tracing::warn!("dhcp is enabled but no subnet is configured: serving nothing");
        return Ok(Vec::new());
    }
    let names = server::choose_interfaces(&settings, &server::interface_addresses());
    if names.is_empty() {
        anyhow::bail!(
            "dhcp: no interface has an address in a configured subnet; name one in dhcp.interfaces"
        );
    }
    let bound = server::bind(&names, cfg.dhcp.port, settings.proxy)
        .with_context(|| format!("cannot listen for dhcp on port {}", cfg.dhcp.port))?;
    for b in &bound {
        tracing::info!(
            "listening for dhcp on {} ({})",
            b.interface,
            b.socket.local_addr()?
        );
    }
    // A thread with a runtime of its own: the packet loop never waits
    // behind HTTP work, and a packet costs no wake-up of another worker.
    let (share_tx, share) = tokio::sync::watch::channel(Default::default());
    let leases = state.store.leases();
    if leases.shared() {
        tasks.spawn(server::follow_heads(
            leases,
            share_tx,
            shutdown.child_token(),
        ));
    }
    let st = server::Shared {
        store: state.store.clone(),
        metrics: state.metrics.clone(),
        boot_steps: state.boot_steps.clone(),
        share,
    };
    let stop = shutdown.child_token();
    let (done, finished) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("dhcp".into())
        .spawn(move || {
            let r = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .and_then(|rt| rt.block_on(server::serve(bound, settings, st, stop)));
            let _ = done.send(r);
        })
        .context("cannot start the dhcp thread")?;
    tasks.spawn(async move {
        match finished.await {
            Ok(Err(e)) => tracing::error!(error = %e, "dhcp server stopped"),
            Err(_) => tracing::error!("dhcp server thread ended abnormally"),
            Ok(Ok(())) => {}
        }
    });
    Ok(names)
}

/// Binds DNS on every address of the interfaces it serves and starts its
/// thread. Enabled with no interface to serve, start-up fails: nodes told
/// to use this resolver would get no answers.
fn start_dns(
    state: &AppState,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<Vec<SocketAddr>> {
    use crate::dns::{server, settings::Settings};
    let cfg = &state.config;
    if !cfg.dns.enabled {
        return Ok(Vec::new());
    }
    let settings = Settings::from_config(cfg).map_err(|e| anyhow::anyhow!(e))?;
    let addrs = server::interface_addresses();
    let names = server::choose_interfaces(&settings, &addrs);
    if names.is_empty() {
        anyhow::bail!(
            "dns: no interface has an address in a DHCP subnet or dns.networks; name one in dns.interfaces"
        );
    }
    let bound = server::bind(&names, &addrs, settings.port)
        .with_context(|| format!("cannot listen for dns on port {}", settings.port))?;
    let mut allowed = settings.networks.clone();
    for n in &names {
        for net in addrs.get(n).into_iter().flatten() {
            allowed.push(crate::dns::settings::Net::new(net.addr, net.prefix));
        }
    }
    let mut out = Vec::new();
    for b in &bound {
        let a = b.local_addr()?;
        tracing::info!("listening for dns on {} ({a}, udp and tcp)", b.interface);
        out.push(a);
    }
    let (store, metrics) = (state.store.clone(), state.metrics.clone());
    let stop = shutdown.child_token();
    let (done, finished) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("dns".into())
        .spawn(move || {
            let r = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .and_then(|rt| {
                    rt.block_on(server::serve(
                        bound, settings, allowed, store, metrics, stop,
                    ))
                });
            let _ = done.send(r);
        })
        .context("cannot start the dns thread")?;
    tasks.spawn(async move {
        match finished.await {
            Ok(Err(e)) => tracing::error!(error = %e, "dns server stopped"),
            Err(_) => tracing::error!("dns server thread ended abnormally"),
            Ok(Ok(())) => {}
        }
    });
    Ok(out)
}

/// Starts TFTP where [`Config::tftp_mode`] says: on `tftp.listen`, or on
/// each interface DHCP serves (bound to the device, so TFTP answers only
/// where DHCP sends firmware to it). Returns the first bound address.
fn start_tftp(
    state: &AppState,
    dhcp_interfaces: &[String],
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<SocketAddr>> {
    use crate::config::TftpMode;
    let cfg = &state.config;
    let sockets = match cfg.tftp_mode() {
        TftpMode::Off => return Ok(None),
        TftpMode::Listen => vec![(
            crate::boot::tftp::bind(cfg.tftp.listen, None)
                .with_context(|| format!("cannot listen for tftp on {}", cfg.tftp.listen))?,
            String::new(),
        )],
        TftpMode::DhcpInterfaces => {
            let addr = SocketAddr::from(([0, 0, 0, 0], cfg.tftp.listen.port()));
            let mut v = Vec::new();
            for name in dhcp_interfaces {
                let s = crate::boot::tftp::bind(addr, Some(name)).with_context(|| {
                    format!("cannot listen for tftp on {name} (dhcp hands out TFTP boot files; set tftp.enabled = false and dhcp.next_server to use another TFTP server)")
                })?;
                v.push((s, format!(" on {name}, for dhcp")));
            }
            v
        }
    };
    let settings = crate::boot::tftp::TftpSettings {
        root: cfg.tftp_root(),
        node_base: state.node_base.clone(),
        max_transfers: cfg.tftp.max_transfers,
        max_block_size: cfg.tftp.max_block_size,
        max_window_size: cfg.tftp.max_window_size,
        timeout: Duration::from_secs(cfg.tftp.timeout_secs),
        retries: cfg.tftp.retries,
        max_client_timeout: cfg.tftp.max_client_timeout_secs,
        max_transfers_per_client: cfg.tftp.max_transfers_per_client,
    };
    if let Err(e) = std::fs::create_dir_all(&settings.root) {
        tracing::warn!(root = %settings.root.display(), error = %e, "tftp: cannot create the root");
    }
    let mut first = None;
    for (socket, on) in sockets {
        let addr = socket.local_addr()?;
        tracing::info!("listening for tftp on {addr}{on}");
        first.get_or_insert(addr);
        let (settings, store, steps, metrics) = (
            settings.clone(),
            state.store.clone(),
            state.boot_steps.clone(),
            state.metrics.clone(),
        );
        let st = state.clone();
        let count: crate::boot::tftp::Count = Arc::new(move |reason| {
            st.metrics.add(
                "openchami_tftp_refusals_total",
                "TFTP requests refused, transfers taken over and options clamped, by reason",
                &[("reason", reason)],
                1,
            )
        });
        let stop = shutdown.child_token();
        tasks.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                r = crate::boot::tftp::serve(socket, settings, store, steps, metrics, count) => {
                    if let Err(e) = r {
                        tracing::error!(error = %e, "tftp server stopped");
                    }
                }
            }
        });
    }
    Ok(first)
}

/// Says, per interface nodes boot on, which base URL they are sent: the
/// interfaces DHCP serves, else every non-loopback interface with IPv4.
fn log_node_bases(state: &AppState, dhcp_interfaces: &[String]) {
    if !state.config.node.enabled {
        return;
    }
    let all = crate::dhcp::server::interface_addresses();
    let mut names: Vec<&String> = if dhcp_interfaces.is_empty() {
        all.iter()
            .filter(|(_, ips)| ips.iter().any(|ip| !ip.is_loopback()))
            .map(|(n, _)| n)
            .collect()
    } else {
        dhcp_interfaces.iter().collect()
    };
    names.sort();
    for name in names {
        for ip in all.get(name).into_iter().flatten() {
            tracing::info!(
                "nodes on {name} ({ip}) are sent {}",
                state.node_base.for_local(IpAddr::V4(*ip))
            );
        }
    }
}

/// The Redfish services (discovery and power) over one BMC client
/// configuration. Their tasks join `tasks` and stop with `shutdown`.
pub fn redfish_services(
    store: &Store,
    secrets: &Arc<SecretBox>,
    config: &Config,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<(Arc<crate::discover::Discovery>, Arc<crate::power::Power>)> {
    let r = &config.redfish;
    let ca_pem = if r.ca_file.as_os_str().is_empty() {
        None
    } else {
        Some(
            std::fs::read_to_string(&r.ca_file)
                .with_context(|| format!("cannot read redfish.ca_file {}", r.ca_file.display()))?,
        )
    };
    let transport = crate::redfish::Transport::new(crate::redfish::ClientOptions {
        ca_pem,
        request_timeout: Duration::from_secs(r.request_timeout_secs),
        connect_timeout: Duration::from_secs(config.discovery.connect_timeout_secs),
        retries: r.retries,
        max_in_flight: r.max_requests_per_bmc,
    })
    .map_err(anyhow::Error::msg)?;
    let discovery = Arc::new(crate::discover::Discovery::new(
        store.clone(),
        secrets.clone(),
        transport.clone(),
        config.discovery.clone(),
        tasks.clone(),
        shutdown.clone(),
    ));
    let power = Arc::new(crate::power::Power::new(
        store.clone(),
        secrets.clone(),
        transport,
        config.power.clone(),
        tasks.clone(),
        shutdown.clone(),
    ));
    Ok((discovery, power))
}

/// How often the listener certificate is checked for renewal.
const RENEW_CHECK: Duration = Duration::from_secs(6 * 3600);

/// Re-runs the CA bootstrap now and then: it reissues the listener
/// certificate at 2/3 of its life, and the new one is served at once.
async fn renew_certificate(
    dir: PathBuf,
    names: CertNames,
    mut not_after: i64,
    cert: Arc<HotCert>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RENEW_CHECK) => {}
        }
        let (d, n) = (dir.clone(), names.clone());
        match tokio::task::spawn_blocking(move || Authority::bootstrap(&d, &n)).await {
            Ok(Ok(a)) if a.leaf_not_after() != not_after => match a.certified_key() {
                Ok(k) => {
                    cert.replace(k);
                    not_after = a.leaf_not_after();
                    tracing::info!(not_after, "renewed the API certificate");
                }
                Err(e) => tracing::error!(error = %e, "cannot load the renewed API certificate"),
            },
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "API certificate renewal failed; will retry"),
            Err(e) => tracing::error!(error = %e, "API certificate renewal task failed"),
        }
    }
}

/// Pending connections the kernel queues per listener (capped by
/// `net.core.somaxconn`). Deeper than the usual 1024, so that while a flood
/// is being accepted and shed, a node's connection still finds room instead
/// of waiting out a SYN retransmission.
const LISTEN_BACKLOG: i32 = 4096;

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let listen = || -> std::io::Result<TcpListener> {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        s.bind(&addr.into())?;
        s.listen(LISTEN_BACKLOG)?;
        s.set_nonblocking(true)?;
        TcpListener::from_std(s.into())
    };
    listen().with_context(|| format!("cannot listen on {addr}"))
}

/// The state directory holds keys: only the service user may enter it.
fn restrict_dir(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot restrict state directory permissions");
    }
}

/// Names the API certificate must cover: configured names, the host name,
/// and the listener address when it is a specific one.
fn cert_names(config: &Config, api_addr: Option<SocketAddr>) -> CertNames {
    let mut names = CertNames {
        dns: Vec::new(),
        ips: Vec::new(),
    };
    for n in &config.api.names {
        match n.parse::<IpAddr>() {
            Ok(ip) => names.ips.push(ip),
            Err(_) => names.dns.push(n.clone()),
        }
    }
    let host = config::host_name();
    if let Some(short) = host.split('.').next()
        && short != host
    {
        names.dns.push(short.to_string());
    }
    names.dns.push(host);
    if let Some(addr) = api_addr
        && !addr.ip().is_unspecified()
    {
        names.ips.push(addr.ip());
    }
    names.dns.sort();
    names.dns.dedup();
    names.ips.sort();
    names.ips.dedup();
    names
}

/// Raises the soft limit on open files to the hard limit and returns the
/// limit in force. Discovery and power keep a few connections to each of
/// thousands of BMCs at once; the usual soft limit of 1024 would turn a
/// large crawl into EMFILE errors.
pub fn raise_open_file_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        let want = rustix::process::Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        };
        match setrlimit(Resource::Nofile, want) {
            Ok(()) => tracing::debug!(limit = ?lim.maximum, "raised the open-file limit"),
            Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Connections each HTTP listener may hold: (API, each node listener).
///
/// Descriptors are one table for the whole process. A quarter (at least
/// 512), plus one per TFTP transfer, stays with everything that is not an
/// HTTP connection: the store, key files, TFTP and DHCP sockets, Redfish
/// clients. Of the rest the API gets a quarter and the node listeners share
/// three. So a flood that fills one listener leaves the other, and the
/// store, their descriptors.
pub fn connection_budgets(
    fd_limit: u64,
    node_listeners: usize,
    tftp_transfers: usize,
) -> (usize, usize) {
    let limit = usize::try_from(fd_limit).unwrap_or(usize::MAX).min(1 << 24);
    let headroom = (limit / 4).max(512) + tftp_transfers;
    let usable = limit.saturating_sub(headroom);
    let api = usable / 4;
    let node = (usable - api) / node_listeners.max(1);
    (api.max(1), node.max(1))
}

#[cfg(test)]
mod tests {
    use super::connection_budgets;

    #[test]
    fn listeners_and_the_rest_never_share_a_descriptor() {
        // (fd limit, node listeners, TFTP transfers)
        for (limit, nodes, tftp) in [
            (1024, 1, 0),
            (4096, 1, 0),
            (4096, 2, 1000),
            (65536, 1, 1000),
            (524288, 3, 1000),
        ] {
            let (api, node) = connection_budgets(limit, nodes, tftp);
            let used = (api + node * nodes + tftp) as u64;
            assert!(
                used + 256 <= limit,
                "{limit}/{nodes}/{tftp}: {api} + {node}"
            );
            assert!(api >= 64 && node >= 64, "{limit}: {api} {node}");
        }
    }
}
