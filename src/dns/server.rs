//! The DNS server: sockets, the zone cache, forwarding and rate limits.
//!
//! Interfaces are chosen as DHCP chooses them (named, else those with an
//! address in a served network; never every interface), and a UDP socket
//! and a TCP listener are bound to each of their addresses, so the address
//! a query arrived at is the socket's own: the head's names answer with it,
//! and every network sees a head it can reach; addresses an interface gains
//! or loses later are followed every two seconds. One thread with a runtime of
//! its own runs every socket, so the query path never waits behind HTTP
//! work. The zone index is rebuilt on the first query after the store's
//! generation moves. Names outside the zones go to hickory-resolver (its
//! cache, per-attempt timeouts and a cap on lookups in flight) only for
//! clients inside the served networks; everyone else is refused.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hickory_proto::op::{Message, ResponseCode};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::rrl::{Rrl, Verdict};
use super::settings::{Net, Settings};
use super::zone::{Arrival, Zone};
use super::{Forward, Handled, Transport, handle, respond};
use crate::inventory::{Snapshot, Store};
use crate::metrics::Metrics;

/// Queries handled per wake-up of a UDP socket before others get a turn.
const BURST: usize = 256;
/// Forwarded lookups in flight at once; more get SERVFAIL.
const MAX_FORWARDS: usize = 1024;
/// TCP connections open at once; more are closed when accepted.
const MAX_TCP: usize = 256;
/// A TCP connection with no complete query for this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);
const TICK: Duration = Duration::from_secs(2);

/// The zone of the latest snapshot, rebuilt when the generation moves.
pub struct ZoneCache {
    settings: Arc<Settings>,
    zone: ArcSwap<Zone>,
}

impl ZoneCache {
    pub fn new(settings: Arc<Settings>) -> ZoneCache {
        let empty = Zone::build(&Default::default(), u64::MAX, &settings);
        ZoneCache {
            settings,
            zone: ArcSwap::from_pointee(empty),
        }
    }

    pub fn get(&self, snap: &Snapshot) -> Arc<Zone> {
        let z = self.zone.load_full();
        if z.generation == snap.generation {
            return z;
        }
        let z = Arc::new(Zone::build(&snap.model, snap.generation, &self.settings));
        self.zone.store(z.clone());
        z
    }
}

/// Addresses (with prefix lengths) per interface name, from the kernel.
pub fn interface_addresses() -> HashMap<String, Vec<Net>> {
    let mut out: HashMap<String, Vec<Net>> = HashMap::new();
    match if_addrs::get_if_addrs() {
        Ok(list) => {
            for i in list {
                let (ip, p) = match i.addr {
                    if_addrs::IfAddr::V4(a) => (IpAddr::V4(a.ip), a.prefixlen),
                    if_addrs::IfAddr::V6(a) => (IpAddr::V6(a.ip), a.prefixlen),
                };
                out.entry(i.name).or_default().push(Net {
                    addr: ip,
                    prefix: p,
                });
            }
        }
        Err(e) => tracing::warn!(error = %e, "dns: cannot list interface addresses"),
    }
    out
}

/// The interfaces to serve: those named, else every non-loopback one with
/// an address in a served network.
pub fn choose_interfaces(s: &Settings, addrs: &HashMap<String, Vec<Net>>) -> Vec<String> {
    if !s.interfaces.is_empty() {
        return s.interfaces.clone();
    }
    let mut names: Vec<String> = addrs
        .iter()
        .filter(|(_, nets)| {
            nets.iter()
                .any(|n| !n.addr.is_loopback() && s.serves(n.addr))
        })
        .map(|(n, _)| n.clone())
        .collect();
    names.sort();
    names
}

/// The sockets of one served address.
pub struct Bound {
    pub interface: String,
    pub udp: std::net::UdpSocket,
    pub tcp: std::net::TcpListener,
    /// Every address of the interface (for the head's names).
    pub interface_addrs: Vec<IpAddr>,
}

impl Bound {
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.udp.local_addr()
    }
}

fn usable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(_) => true,
        // Link-local addresses need a scope; nodes are not sent them.
        IpAddr::V6(v6) => !v6.is_unicast_link_local(),
    }
}

/// Binds UDP and TCP on `port` of every usable address of `interfaces`.
pub fn bind(
    interfaces: &[String],
    addrs: &HashMap<String, Vec<Net>>,
    port: u16,
) -> io::Result<Vec<Bound>> {
    let mut out = Vec::new();
    for name in interfaces {
        let all = addresses_of(addrs, name);
        let ips: Vec<IpAddr> = all.iter().copied().filter(|ip| usable(*ip)).collect();
        if ips.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!("interface {name} has no address to serve DNS on"),
            ));
        }
        for ip in ips {
            out.push(bind_one(name, ip, port, &all)?);
        }
    }
    Ok(out)
}

fn addresses_of(addrs: &HashMap<String, Vec<Net>>, name: &str) -> Vec<IpAddr> {
    addrs
        .get(name)
        .into_iter()
        .flatten()
        .map(|n| n.addr)
        .collect()
}

/// A UDP socket and a TCP listener on `ip:port`.
fn bind_one(name: &str, ip: IpAddr, port: u16, all: &[IpAddr]) -> io::Result<Bound> {
    use socket2::{Domain, Protocol, Socket, Type};
    let at = SocketAddr::new(ip, port);
    let domain = if ip.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let u = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if ip.is_ipv6() {
        u.set_only_v6(true)?;
    }
    let _ = u.set_recv_buffer_size(4 << 20);
    let _ = u.set_send_buffer_size(4 << 20);
    u.bind(&at.into())
        .map_err(|e| io::Error::new(e.kind(), format!("udp {at}: {e}")))?;
    u.set_nonblocking(true)?;
    let t = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    if ip.is_ipv6() {
        t.set_only_v6(true)?;
    }
    t.set_reuse_address(true)?;
    // The same port as the UDP socket (port 0 in tests).
    let at = SocketAddr::new(ip, u.local_addr()?.as_socket().map_or(port, |a| a.port()));
    t.bind(&at.into())
        .map_err(|e| io::Error::new(e.kind(), format!("tcp {at}: {e}")))?;
    t.listen(128)?;
    t.set_nonblocking(true)?;
    Ok(Bound {
        interface: name.to_string(),
        udp: u.into(),
        tcp: t.into(),
        interface_addrs: all.to_vec(),
    })
}

/// Counters kept locally and published to the metrics every tick.
#[derive(Default)]
struct Counters {
    answered: AtomicU64,
    forwarded: AtomicU64,
    refused: AtomicU64,
    dropped: AtomicU64,
    error: AtomicU64,
    rate_limited: AtomicU64,
    failed: AtomicU64,
}

impl Counters {
    fn publish(&self, m: &Metrics) {
        for (what, c) in [
            ("answered", &self.answered),
            ("forwarded", &self.forwarded),
            ("refused", &self.refused),
            ("dropped", &self.dropped),
            ("error", &self.error),
            ("rate_limited", &self.rate_limited),
            ("failed", &self.failed),
        ] {
            let n = c.swap(0, Ordering::Relaxed);
            if n > 0 {
                m.add(
                    "openchami_dns_queries_total",
                    "DNS queries by outcome: answered from the zone, forwarded, refused, dropped (not a query), error (FORMERR, NOTIMP, BADVERS), rate_limited, failed (upstream or send)",
                    &[("outcome", what)],
                    n,
                );
            }
        }
    }
}

/// What every socket task shares.
struct Ctx {
    store: Store,
    cache: ZoneCache,
    /// Clients that may recurse: the served networks and the served
    /// interfaces' own networks.
    allowed: Vec<Net>,
    resolver: Option<TokioResolver>,
    forwards: Arc<Semaphore>,
    rrl: Mutex<Rrl>,
    counters: Counters,
}

impl Ctx {
    fn may_recurse(&self, peer: IpAddr) -> bool {
        self.resolver.is_some() && self.allowed.iter().any(|n| n.contains(peer))
    }

    fn zone(&self) -> Arc<Zone> {
        self.cache.get(&self.store.snapshot())
    }

    fn note(&self, h: &Handled) {
        let c = match h {
            Handled::Reply(_, "authoritative") => &self.counters.answered,
            Handled::Reply(_, "not ours, no recursion") => &self.counters.refused,
            Handled::Reply(..) => &self.counters.error,
            Handled::Drop(_) => &self.counters.dropped,
            Handled::Forward(_) => return,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

fn resolver(s: &Settings) -> Option<TokioResolver> {
    if s.upstreams.is_empty() {
        return None;
    }
    let servers = s
        .upstreams
        .iter()
        .map(|u| {
            let mut udp = ConnectionConfig::udp();
            udp.port = u.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = u.port();
            NameServerConfig::new(u.ip(), true, vec![udp, tcp])
        })
        .collect();
    let mut opts = ResolverOpts::default();
    opts.timeout = s.upstream_timeout;
    opts.attempts = 2;
    opts.cache_size = s.cache_size;
    opts.use_hosts_file = ResolveHosts::Never;
    opts.preserve_intermediates = true;
    opts.ndots = 0;
    opts.recursion_desired = true;
    let b = TokioResolver::builder_with_config(
        ResolverConfig::from_name_servers(servers),
        TokioRuntimeProvider::default(),
    )
    .with_options(opts);
    match b.build() {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::error!(error = %e, "dns: cannot build the forwarding resolver; other names are refused");
            None
        }
    }
}

/// Asks the upstreams and encodes their answer for `f`'s client.
async fn forward(ctx: &Ctx, f: &Forward) -> Option<Vec<u8>> {
    let r = ctx.resolver.as_ref()?;
    let deadline = ctx_deadline(ctx);
    let looked = tokio::time::timeout(deadline, r.lookup(f.name.clone(), f.qtype)).await;
    let (code, answers, authority) = match looked {
        Ok(Ok(l)) => (ResponseCode::NoError, l.answers().to_vec(), Vec::new()),
        Ok(Err(NetError::Dns(DnsError::NoRecordsFound(nr)))) => (
            nr.response_code,
            Vec::new(),
            nr.soa
                .map(|s| vec![(*s).into_record_of_rdata()])
                .unwrap_or_default(),
        ),
        Ok(Err(NetError::Dns(DnsError::ResponseCode(c)))) => (c, Vec::new(), Vec::new()),
        Ok(Err(e)) => {
            tracing::debug!(name = %f.name, error = %e, "dns: forwarding failed");
            ctx.counters.failed.fetch_add(1, Ordering::Relaxed);
            (ResponseCode::ServFail, Vec::new(), Vec::new())
        }
        Err(_) => {
            ctx.counters.failed.fetch_add(1, Ordering::Relaxed);
            (ResponseCode::ServFail, Vec::new(), Vec::new())
        }
    };
    ctx.counters.forwarded.fetch_add(1, Ordering::Relaxed);
    respond(&f.request, code, answers, authority, false, true, f.limit)
}

fn ctx_deadline(ctx: &Ctx) -> Duration {
    ctx.cache.settings.upstream_timeout * 3 + Duration::from_secs(1)
}

/// The truncated form of a reply (header, question, OPT; TC set).
fn slipped(reply: &[u8]) -> Option<Vec<u8>> {
    Message::from_vec(reply).ok()?.truncate().to_vec().ok()
}

/// Sends `reply` to `peer` if the rate limit lets it.
fn send_limited(ctx: &Ctx, sock: &UdpSocket, reply: &[u8], peer: SocketAddr) {
    let verdict = match ctx.rrl.lock() {
        Ok(mut r) => r.check(peer.ip(), Instant::now()),
        Err(_) => Verdict::Send,
    };
    let sent = match verdict {
        Verdict::Send => sock.try_send_to(reply, peer).is_ok(),
        Verdict::Slip => {
            ctx.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
            slipped(reply).is_some_and(|b| sock.try_send_to(&b, peer).is_ok())
        }
        Verdict::Drop => {
            ctx.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    if !sent && verdict == Verdict::Send {
        ctx.counters.failed.fetch_add(1, Ordering::Relaxed);
    }
}

async fn serve_udp(ctx: Arc<Ctx>, sock: Arc<UdpSocket>, at: Arrival, stop: CancellationToken) {
    let mut buf = vec![0u8; 4096];
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => return,
            r = sock.recv_from(&mut buf) => r,
        };
        let mut next = Some(first);
        let mut n = 0;
        while let Some(r) = next.take() {
            match r {
                Ok((len, peer)) => udp_query(&ctx, &sock, &at, &buf[..len], peer),
                Err(e) => tracing::debug!(error = %e, "dns: udp receive"),
            }
            n += 1;
            if n < BURST {
                next = match sock.try_recv_from(&mut buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
                    r => Some(r),
                };
            }
        }
        tokio::task::yield_now().await;
    }
}

fn udp_query(ctx: &Arc<Ctx>, sock: &Arc<UdpSocket>, at: &Arrival, bytes: &[u8], peer: SocketAddr) {
    let zone = ctx.zone();
    let h = handle(bytes, &zone, at, ctx.may_recurse(peer.ip()), Transport::Udp);
    ctx.note(&h);
    match h {
        Handled::Reply(b, _) => send_limited(ctx, sock, &b, peer),
        Handled::Drop(why) => tracing::debug!(%peer, why, "dns: dropped a packet"),
        Handled::Forward(f) => {
            let Ok(permit) = ctx.forwards.clone().try_acquire_owned() else {
                ctx.counters.failed.fetch_add(1, Ordering::Relaxed);
                if let Some(b) = respond(
                    &f.request,
                    ResponseCode::ServFail,
                    Vec::new(),
                    Vec::new(),
                    false,
                    true,
                    f.limit,
                ) {
                    send_limited(ctx, sock, &b, peer);
                }
                return;
            };
            let (ctx, sock) = (ctx.clone(), sock.clone());
            tokio::spawn(async move {
                if let Some(b) = forward(&ctx, &f).await {
                    send_limited(&ctx, &sock, &b, peer);
                }
                drop(permit);
            });
        }
    }
}

async fn serve_tcp(ctx: Arc<Ctx>, l: TcpListener, at: Arrival, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_TCP));
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = l.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "dns: tcp accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let (ctx, at, stop) = (ctx.clone(), at.clone(), stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tcp_connection(&ctx, stream, peer, &at) => {}
            }
            drop(permit);
        });
    }
}

/// Length-prefixed queries, answered in order, until the client closes or
/// idles (RFC 7766).
async fn tcp_connection(ctx: &Ctx, mut s: TcpStream, peer: SocketAddr, at: &Arrival) {
    let mut buf = vec![0u8; 65535];
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, s.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let n = usize::from(u16::from_be_bytes(len));
        match tokio::time::timeout(TCP_IDLE, s.read_exact(&mut buf[..n])).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let zone = ctx.zone();
        let h = handle(
            &buf[..n],
            &zone,
            at,
            ctx.may_recurse(peer.ip()),
            Transport::Tcp,
        );
        ctx.note(&h);
        let reply = match h {
            Handled::Reply(b, _) => b,
            Handled::Drop(_) => return,
            Handled::Forward(f) => match forward(ctx, &f).await {
                Some(b) => b,
                None => return,
            },
        };
        let Ok(l) = u16::try_from(reply.len()) else {
            return;
        };
        let mut out = Vec::with_capacity(reply.len() + 2);
        out.extend_from_slice(&l.to_be_bytes());
        out.extend_from_slice(&reply);
        if s.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// Serves on `bound` until `stop` is cancelled.
pub async fn serve(
    bound: Vec<Bound>,
    settings: Settings,
    allowed: Vec<Net>,
    store: Store,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> io::Result<()> {
    let settings = Arc::new(settings);
    let ctx = Arc::new(Ctx {
        store,
        cache: ZoneCache::new(settings.clone()),
        allowed,
        resolver: resolver(&settings),
        forwards: Arc::new(Semaphore::new(MAX_FORWARDS)),
        rrl: Mutex::new(Rrl::new(settings.rrl_per_sec, settings.rrl_slip)),
        counters: Counters::default(),
    });
    let z = ctx.zone();
    tracing::info!(
        names = z.len(),
        serial = z.generation,
        "dns: zone {} loaded",
        z.apex()
    );
    let mut tasks = tokio::task::JoinSet::new();
    let mut names: Vec<String> = bound.iter().map(|b| b.interface.clone()).collect();
    names.dedup();
    // Each served address's tasks stop with their own token when the
    // address goes away.
    let mut served: HashMap<IpAddr, CancellationToken> = HashMap::new();
    for b in bound {
        let ip = b.local_addr()?.ip();
        let token = stop.child_token();
        start(&ctx, b, &token, &mut tasks)?;
        served.insert(ip, token);
    }
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {
                ctx.counters.publish(&metrics);
                follow_addresses(&ctx, &names, settings.port, &stop, &mut served, &mut tasks);
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    ctx.counters.publish(&metrics);
    Ok(())
}

/// Spawns the UDP and TCP tasks of one bound address.
fn start(
    ctx: &Arc<Ctx>,
    b: Bound,
    token: &CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) -> io::Result<()> {
    let at = Arrival {
        local: Some(b.local_addr()?.ip()),
        interface: b.interface_addrs.clone(),
    };
    let udp = Arc::new(UdpSocket::from_std(b.udp)?);
    let tcp = TcpListener::from_std(b.tcp)?;
    tasks.spawn(serve_udp(ctx.clone(), udp, at.clone(), token.clone()));
    tasks.spawn(serve_tcp(ctx.clone(), tcp, at, token.clone()));
    Ok(())
}

/// Serves addresses the interfaces gained since the last look and stops
/// serving those they lost, as DHCP follows its interfaces' addresses.
fn follow_addresses(
    ctx: &Arc<Ctx>,
    names: &[String],
    port: u16,
    stop: &CancellationToken,
    served: &mut HashMap<IpAddr, CancellationToken>,
    tasks: &mut tokio::task::JoinSet<()>,
) {
    let addrs = interface_addresses();
    let now: Vec<(&String, Vec<IpAddr>)> =
        names.iter().map(|n| (n, addresses_of(&addrs, n))).collect();
    served.retain(|ip, token| {
        let kept = now.iter().any(|(_, all)| all.contains(ip));
        if !kept {
            token.cancel();
            tracing::info!("dns: {ip} is no longer on a served interface; not serving it");
        }
        kept
    });
    for (name, all) in &now {
        for ip in all.iter().copied().filter(|ip| usable(*ip)) {
            if served.contains_key(&ip) {
                continue;
            }
            // A new address may still be tentative (IPv6 DAD): next tick.
            match bind_one(name, ip, port, all) {
                Ok(b) => {
                    let token = stop.child_token();
                    match start(ctx, b, &token, tasks) {
                        Ok(()) => {
                            tracing::info!("listening for dns on {name} ({ip}, udp and tcp)");
                            served.insert(ip, token);
                        }
                        Err(e) => {
                            tracing::debug!(%ip, error = %e, "dns: cannot serve a new address")
                        }
                    }
                }
                Err(e) => tracing::debug!(%ip, error = %e, "dns: cannot bind a new address yet"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn only_interfaces_in_a_served_network_or_named() {
        let c = Config::parse(
            "[[dhcp.subnets]]\ncidr = \"10.1.0.0/16\"\n[dns]\nnetworks = [\"fd00::/64\"]\n",
            "t",
        )
        .unwrap();
        let s = Settings::from_config(&c).unwrap();
        let net = |a: &str, p| Net {
            addr: a.parse().unwrap(),
            prefix: p,
        };
        let addrs: HashMap<String, Vec<Net>> = [
            ("lo", vec![net("127.0.0.1", 8)]),
            ("eth0", vec![net("192.168.1.5", 24)]),
            ("eth1", vec![net("10.1.0.1", 16)]),
            ("eth2", vec![net("fd00::1", 64)]),
        ]
        .into_iter()
        .map(|(n, a)| (n.to_string(), a))
        .collect();
        assert_eq!(choose_interfaces(&s, &addrs), vec!["eth1", "eth2"]);
        let mut named = s.clone();
        named.interfaces = vec!["eth0".into()];
        assert_eq!(choose_interfaces(&named, &addrs), vec!["eth0"]);
    }
}
