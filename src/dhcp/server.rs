//! The DHCP server: sockets, the lease table in memory, and persistence.
//!
//! One UDP socket per served interface, bound to `0.0.0.0:67` and to the
//! device (`SO_BINDTODEVICE`), so broadcasts are received, replies to
//! 255.255.255.255 leave by the interface the request came in on, and the
//! interface's own addresses say which subnet a direct client is on. An
//! interface is served only when named in `dhcp.interfaces` or when one of
//! its addresses lies in a configured subnet: never every interface.
//!
//! One task owns the lease table. Each packet is decoded, decided by the
//! pure policy, and the decision's lease changes are applied in memory at
//! once, so the next packet sees them. Durability follows RFC 2131 §3.1
//! ("the server commits the binding to persistent storage and responds with
//! DHCPACK") for pool addresses, batched: ACKs of new pool bindings wait in
//! a batch that is written through the store in one write (one SQLite
//! transaction, one fsync), and are sent when it has committed. While one
//! batch commits the next one fills, so under load many ACKs share an
//! fsync and the packet loop never waits for the disk. Offers are held in
//! memory only. Reservations are already durable in the inventory, so their
//! ACKs go out at once and their lease records (last seen, for
//! `openchami dhcp leases`) are written behind, only when the stored record
//! would otherwise be stale by more than half a lease. A pool binding whose
//! batch has committed is marked durable; until half its lease has passed
//! the policy answers renewals with it as it stands (see `policy::cached`),
//! so steady-state renewals cost no write at all.
//!
//! Several heads on one shared store serve the same pool: the batch's write
//! refuses a pool binding another head committed first (its ACK is then
//! withheld and the request decided again, now a NAK), and the table
//! follows the lease records every generation brings (see `records`).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::future::OptionFuture;
use tokio::io::ReadBuf;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::balance::Share;
use super::leases::{Change, Leases, Mac, State};
use super::policy::ReplyKind;
use super::records::{self, Intent};
use super::settings::Settings;
use crate::boot::steps::BootSteps;
use crate::inventory::model::Lease;
use crate::inventory::{Store, mac};
use crate::logging::{self, Access};
use crate::metrics::Metrics;

/// Packets handled per wake-up before other work (flushes, timers) runs.
const BURST: usize = 256;
/// How often expired leases are swept, addresses re-read, metrics published.
const TICK: Duration = Duration::from_secs(2);

/// IPv4 addresses per interface name, from the kernel.
pub fn interface_addresses() -> HashMap<String, Vec<Ipv4Addr>> {
    let mut out: HashMap<String, Vec<Ipv4Addr>> = HashMap::new();
    match if_addrs::get_if_addrs() {
        Ok(list) => {
            for i in list {
                if let if_addrs::IfAddr::V4(a) = i.addr {
                    out.entry(i.name).or_default().push(a.ip);
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "dhcp: cannot list interface addresses"),
    }
    out
}

/// The interfaces to serve: those named, else every non-loopback one with
/// an address in a configured subnet.
pub fn choose_interfaces(
    settings: &Settings,
    addrs: &HashMap<String, Vec<Ipv4Addr>>,
) -> Vec<String> {
    if !settings.interfaces.is_empty() {
        return settings.interfaces.clone();
    }
    let mut names: Vec<String> = addrs
        .iter()
        .filter(|(_, ips)| {
            ips.iter()
                .any(|ip| !ip.is_loopback() && settings.subnet_of(*ip).is_some())
        })
        .map(|(n, _)| n.clone())
        .collect();
    names.sort();
    names
}

/// A bound socket for one interface.
pub struct Bound {
    pub interface: String,
    pub socket: std::net::UdpSocket,
    /// The PXE port: replies go back to the sender.
    pub pxe_port: bool,
}

/// The proxyDHCP port PXE clients send their REQUEST to.
pub const PXE_PORT: u16 = 4011;

/// Has the kernel drop other heads' DISCOVERs on `sock`, and REQUESTs for
/// another server when `own` (the socket's addresses) is not empty (see
/// `balance::filter`); nothing with the whole share.
pub(super) fn set_filter(sock: &UdpSocket, share: Share, own: &[Ipv4Addr]) -> io::Result<()> {
    crate::bpf::attach(sock, super::balance::filter(share, own).as_deref())
}

/// Binds `0.0.0.0:port` on each interface, and the PXE port with `proxy`.
pub fn bind(interfaces: &[String], port: u16, proxy: bool) -> io::Result<Vec<Bound>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut out = Vec::new();
    let ports: &[u16] = if proxy { &[port, PXE_PORT] } else { &[port] };
    for (name, &port) in interfaces
        .iter()
        .flat_map(|n| ports.iter().map(move |p| (n, p)))
    {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_reuse_address(true)?;
        s.set_broadcast(true)?;
        s.bind_device(Some(name.as_bytes())).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot bind to interface {name}: {e}"))
        })?;
        if let Err(e) = s.set_recv_buffer_size(4 << 20) {
            tracing::debug!(error = %e, "dhcp: cannot enlarge the receive buffer");
        }
        let _ = s.set_send_buffer_size(4 << 20);
        s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())?;
        s.set_nonblocking(true)?;
        out.push(Bound {
            interface: name.clone(),
            socket: s.into(),
            pxe_port: port == PXE_PORT,
        });
    }
    Ok(out)
}

/// Counters kept locally and published to the metrics every tick.
#[derive(Default)]
struct Counters {
    offers: u64,
    acks: u64,
    naks: u64,
    malformed: u64,
    silent: u64,
    send_failed: u64,
    unpersisted: u64,
    /// ACKs withheld: another head bound the address first.
    refused: u64,
    /// Clients another head answers (see `balance`).
    elsewhere: u64,
}

impl Counters {
    fn publish(&mut self, m: &Metrics) {
        const REPLIES: &str = "openchami_dhcp_replies_total";
        const REPLIES_HELP: &str = "DHCP replies sent, by type.";
        const DROPS: &str = "openchami_dhcp_dropped_total";
        const DROPS_HELP: &str = "DHCP packets answered with silence, by reason.";
        for (n, label) in [
            (self.offers, "offer"),
            (self.acks, "ack"),
            (self.naks, "nak"),
        ] {
            if n > 0 {
                m.add(REPLIES, REPLIES_HELP, &[("type", label)], n);
            }
        }
        for (n, label) in [
            (self.malformed, "malformed"),
            (self.silent, "policy"),
            (self.send_failed, "send_failed"),
            (self.unpersisted, "not_persisted"),
            (self.refused, "refused_by_store"),
            (self.elsewhere, "another_head"),
        ] {
            if n > 0 {
                m.add(DROPS, DROPS_HELP, &[("reason", label)], n);
            }
        }
        *self = Counters::default();
    }
}

/// A reply that waits for its pool binding to commit.
struct Waiting {
    sock: usize,
    bytes: Vec<u8>,
    dest: SocketAddrV4,
    /// The binding it announces.
    binding: (Ipv4Addr, Mac),
    /// With several heads: the request and its sender, decided again if
    /// the binding is refused.
    request: Option<(Vec<u8>, SocketAddr)>,
}

/// Lease records to write and replies that wait for them.
#[derive(Default)]
struct Batch {
    /// Address → what to do with its record (the last decision wins).
    records: HashMap<Ipv4Addr, Intent>,
    replies: Vec<Waiting>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.records.is_empty() && self.replies.is_empty()
    }
}

fn lease_record(ip: Ipv4Addr, m: &[u8; 6], expires: i64) -> Lease {
    Lease {
        ip: IpAddr::V4(ip),
        mac: mac::to_colon(m),
        expires: chrono::DateTime::from_timestamp(expires, 0),
    }
}

/// What the DHCP server shares with the rest of the appliance: the
/// inventory and its leases, the metrics registry, and the boot-step record
/// a boot client's DISCOVER feeds. Named here rather than taken from the
/// HTTP side's state, so the packet loop depends on nothing it does not use.
#[derive(Clone)]
pub struct Shared {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub boot_steps: Arc<BootSteps>,
    /// This head's share of the clients, as [`follow_heads`] publishes it.
    pub share: tokio::sync::watch::Receiver<Share>,
}

/// Lease names under which each live head holds a lease on itself.
pub const HEAD_LEASE: &str = "head/";

/// Holds this head's `head/<id>` lease and publishes its share of the
/// clients among the heads holding theirs (see `balance`), every renewal
/// period, until `stop`. A head that cannot reach the database keeps the
/// share it had: the store still refuses any conflicting binding.
pub async fn follow_heads(
    leases: crate::inventory::leases::Leases,
    share: tokio::sync::watch::Sender<Share>,
    stop: CancellationToken,
) {
    let me = leases.holder().to_string();
    let name = format!("{HEAD_LEASE}{me}");
    let mut held = None;
    let mut every = tokio::time::interval(leases.renew_every());
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = every.tick() => {}
        }
        let lost = held
            .as_ref()
            .is_none_or(|h: &crate::inventory::leases::Held| h.lost().is_cancelled());
        if lost {
            held = match leases.claim(&name).await {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(error = %e, "dhcp: cannot claim this head's lease");
                    None
                }
            };
        }
        let live = match leases.live(HEAD_LEASE).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::debug!(error = %e, "dhcp: cannot list the live heads");
                continue;
            }
        };
        let ids = live.iter().filter_map(|r| r.name.strip_prefix(HEAD_LEASE));
        let now = Share::among(&me, ids);
        share.send_if_modified(|s| {
            let changed = *s != now;
            if changed {
                tracing::info!(from = ?*s, to = ?now, heads = live.len(), "dhcp: this head's share of the clients changed");
                *s = now;
            }
            changed
        });
    }
    if let Some(h) = held {
        h.release().await;
    }
}

/// The packet loop's state: what one task owns.
struct Server {
    settings: Settings,
    state: Shared,
    socks: Vec<Arc<UdpSocket>>,
    pxe_port: Vec<bool>,
    /// The served interfaces' addresses, by socket.
    local: Vec<Vec<Ipv4Addr>>,
    leases: Leases,
    batch: Batch,
    counters: Counters,
    handle_time: prometheus_client::metrics::histogram::Histogram,
}

impl Server {
    /// Gives every socket the kernel filter for the share and its
    /// addresses. REQUESTs naming another server are left to the policy in
    /// proxyDHCP mode (they name the site's DHCP server) and on the PXE
    /// port.
    fn set_filters(&self) {
        for (i, s) in self.socks.iter().enumerate() {
            let own: &[Ipv4Addr] = if self.settings.proxy || self.pxe_port[i] {
                &[]
            } else {
                &self.local[i]
            };
            if let Err(e) = set_filter(s, self.settings.share, own) {
                // The policy still leaves other heads' clients alone.
                tracing::warn!(error = %e, "dhcp: cannot set the socket filter");
            }
        }
    }

    /// Decides one packet from socket `i` and sends (or queues) the reply.
    fn step(
        &mut self,
        snap: &crate::inventory::Snapshot,
        i: usize,
        bytes: &[u8],
        peer: SocketAddr,
        now: i64,
    ) {
        let started = std::time::Instant::now();
        let handled = super::handle(
            bytes,
            snap,
            &self.settings,
            &self.leases,
            &self.local[i],
            now,
        );
        self.handle_time.observe(started.elapsed().as_secs_f64());
        let h = match handled {
            Err(why) => {
                self.counters.malformed += 1;
                tracing::debug!(%peer, why, "dhcp: dropped a packet");
                return;
            }
            Ok(h) => h,
        };
        if h.outcome.reason == super::policy::ANOTHER_HEAD {
            // Another head's client: its boot steps and log are that head's.
            self.counters.elsewhere += 1;
            return;
        }
        boot_step(&self.state, snap, &h);
        let mut waits_for = None;
        for c in &h.outcome.changes {
            record(&mut self.batch, snap, &self.leases, c, now);
            if let Change::Bind {
                ip,
                mac: m,
                pool: true,
                ..
            } = *c
            {
                waits_for = Some((ip, m));
            }
            super::commit(&mut self.leases, &self.settings, std::slice::from_ref(c));
        }
        let (Some((bytes_out, dest)), Some(kind)) = (h.reply, h.kind) else {
            self.counters.silent += 1;
            if logging::access_allowed(Access::Dhcp) {
                tracing::info!(
                    %peer,
                    mac = %mac::to_colon(&h.query.mac),
                    query = ?h.query.kind,
                    reason = h.outcome.reason,
                    "dhcp exchange: no reply"
                );
            }
            return;
        };
        let dest = match peer {
            SocketAddr::V4(p) if self.pxe_port[i] => p,
            _ => dest,
        };
        match kind {
            ReplyKind::Offer => self.counters.offers += 1,
            ReplyKind::Ack => self.counters.acks += 1,
            ReplyKind::Nak => self.counters.naks += 1,
        }
        if logging::access_allowed(Access::Dhcp) {
            tracing::info!(
                %peer,
                mac = %mac::to_colon(&h.query.mac),
                query = ?h.query.kind,
                reply = ?kind,
                yiaddr = ?h.outcome.reply.as_ref().map(|r| r.yiaddr),
                %dest,
                reason = h.outcome.reason,
                "dhcp exchange"
            );
        }
        match waits_for {
            Some(binding) => self.batch.replies.push(Waiting {
                sock: i,
                bytes: bytes_out,
                dest,
                binding,
                request: self.settings.several_heads.then(|| (bytes.to_vec(), peer)),
            }),
            None => {
                if self.socks[i].try_send_to(&bytes_out, dest.into()).is_err() {
                    self.counters.send_failed += 1;
                }
            }
        }
    }

    /// Takes a committed (or failed) batch back: the table learns what is
    /// now stored for every address written, and requests whose binding
    /// was refused are decided again against it.
    fn flushed(&mut self, done: Flushed) {
        self.counters.unpersisted += done.withheld;
        self.counters.send_failed += done.send_failed;
        let snap = self.state.store.snapshot();
        for ip in done.written {
            // A newer decision waits in the batch and will be synced after
            // it; a refused address is synced now, the store has spoken.
            let refused = done.refused.iter().any(|w| w.binding.0 == ip);
            if refused || !self.batch.records.contains_key(&ip) {
                records::sync(&mut self.leases, &snap, ip);
            }
        }
        self.counters.refused += done.refused.len() as u64;
        if !done.refused.is_empty() {
            tracing::info!(
                refused = done.refused.len(),
                "dhcp: pool bindings refused (another head bound the address first)"
            );
        }
        let now = chrono::Utc::now().timestamp();
        for w in done.refused {
            if let Some((bytes, peer)) = w.request {
                self.step(&snap, w.sock, &bytes, peer, now);
            }
        }
    }
}

/// Serves on `bound` until `stop` is cancelled.
pub async fn serve(
    bound: Vec<Bound>,
    mut settings: Settings,
    state: Shared,
    stop: CancellationToken,
) -> io::Result<()> {
    let names: Vec<String> = bound.iter().map(|b| b.interface.clone()).collect();
    let pxe_port: Vec<bool> = bound.iter().map(|b| b.pxe_port).collect();
    let socks: Vec<Arc<UdpSocket>> = bound
        .into_iter()
        .map(|b| UdpSocket::from_std(b.socket).map(Arc::new))
        .collect::<io::Result<_>>()?;
    let store = state.store.clone();
    // Other writers on the store are other heads serving the same pool.
    settings.several_heads = matches!(store.latest_generation().await, Ok(Some(_)));
    let several = settings.several_heads;
    let mut generations = store.subscribe();
    let snap = store.snapshot();
    let leases = Leases::load(snap.leases.values(), |ip, m| records::is_pool(&snap, ip, m));
    // The records the table last followed.
    let mut seen = snap.leases.clone();
    drop(snap);
    tracing::info!(
        leases = leases.len(),
        several_heads = several,
        "dhcp: lease table loaded"
    );
    let addrs_of = |names: &[String]| -> Vec<Vec<Ipv4Addr>> {
        let all = interface_addresses();
        names
            .iter()
            .map(|n| all.get(n).cloned().unwrap_or_default())
            .collect()
    };
    // A handle, not `Metrics::observe`: this runs for every packet.
    let handle_time = state.metrics.histogram(
        "openchami_dhcp_decision_duration_seconds",
        "Time to decode a DHCP packet, decide and encode the reply.",
        &[],
    );
    let mut srv = Server {
        settings,
        state,
        socks,
        pxe_port,
        local: addrs_of(&names),
        leases,
        batch: Batch::default(),
        counters: Counters::default(),
        handle_time,
    };
    let mut flushing: Option<tokio::task::JoinHandle<Flushed>> = None;
    // Addresses in the batch being written (followed once it has committed).
    let mut inflight: std::collections::HashSet<Ipv4Addr> = Default::default();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; 4096];
    let mut next = 0usize;
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            Some(r) = OptionFuture::from(flushing.as_mut()), if flushing.is_some() => {
                flushing = None;
                inflight.clear();
                if let Ok(done) = r {
                    srv.flushed(done);
                }
            }
            Ok(()) = srv.state.share.changed() => {
                srv.settings.share = *srv.state.share.borrow_and_update();
                srv.set_filters();
            }
            changed = generations.changed(), if several => {
                if changed.is_ok() {
                    let snap = store.snapshot();
                    let batch = &srv.batch;
                    records::follow(&mut srv.leases, &seen, &snap, |ip| {
                        batch.records.contains_key(&ip) || inflight.contains(&ip)
                    });
                    seen = snap.leases.clone();
                }
            }
            r = recv_any(&srv.socks, &mut buf, &mut next) => {
                let (n, peer, i) = match r {
                    Ok(x) => x,
                    Err(e) if transient(&e) => continue,
                    Err(e) => return Err(e),
                };
                let now = chrono::Utc::now().timestamp();
                let snap = store.snapshot();
                srv.step(&snap, i, &buf[..n], peer, now);
                for _ in 1..BURST {
                    match srv.socks[i].try_recv_from(&mut buf) {
                        Ok((n, peer)) => srv.step(&snap, i, &buf[..n], peer, now),
                        Err(_) => break,
                    }
                }
            }
            _ = tick.tick() => {
                let now = chrono::Utc::now().timestamp();
                let snap = store.snapshot();
                for ip in srv.leases.expired(now) {
                    if let Some(b) = srv.leases.get(ip)
                        && snap.leases.contains_key(&IpAddr::V4(ip))
                    {
                        srv.batch.records.insert(
                            ip,
                            Intent::Delete { mac: b.mac, ended_by: Some(now) },
                        );
                    }
                    srv.leases.apply(&Change::Free { ip });
                }
                let local = addrs_of(&names);
                if local != srv.local {
                    srv.local = local;
                    srv.set_filters();
                }
                srv.counters.publish(&srv.state.metrics);
            }
        }
        if flushing.is_none() && !srv.batch.is_empty() {
            let b = std::mem::take(&mut srv.batch);
            if several {
                inflight.extend(b.records.keys().copied());
            }
            flushing = Some(tokio::spawn(flush(
                b,
                store.clone(),
                srv.socks.clone(),
                several,
            )));
        }
    }
    if let Some(h) = flushing {
        let _ = h.await;
    }
    if !srv.batch.is_empty() {
        let _ = flush(srv.batch, store, srv.socks.clone(), several).await;
    }
    srv.counters.publish(&srv.state.metrics);
    Ok(())
}

/// Notes the request in the boot-step records ("where did node X stop?"):
/// a boot client's DISCOVER (PXE firmware or iPXE, whichever the PXE ROM
/// is) may start a new boot (the rule is in `boot::steps`).
fn boot_step(state: &Shared, snap: &crate::inventory::Snapshot, h: &super::Handled) {
    let q = &h.query;
    let boot_discover =
        q.kind == super::policy::Kind::Discover && (q.ipxe || q.pxe || q.arch.is_some());
    let reply = h.outcome.reply.as_ref();
    let ip = reply
        .map(|r| r.yiaddr)
        .filter(|ip| !ip.is_unspecified())
        .map(IpAddr::V4);
    let now_ms = chrono::Utc::now().timestamp_millis();
    state.boot_steps.dhcp(
        snap,
        &q.mac,
        ip,
        boot_discover,
        StepDetail {
            kind: q.kind,
            reply: reply.map(|r| (r.kind, r.boot_file.as_deref().unwrap_or(""))),
        },
        now_ms,
    );
}

/// A DHCP boot step's detail, `DISCOVER -> Offer file`, written only when
/// it differs from the one recorded.
struct StepDetail<'a> {
    kind: super::policy::Kind,
    reply: Option<(super::policy::ReplyKind, &'a str)>,
}

impl std::fmt::Display for StepDetail<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.reply {
            Some((kind, "")) => write!(f, "{:?} -> {kind:?}", self.kind),
            Some((kind, file)) => write!(f, "{:?} -> {kind:?} {file}", self.kind),
            None => write!(f, "{:?} -> no reply", self.kind),
        }
    }
}

/// Adds what `c` means for the stored lease records to the batch; `leases`
/// is the table before `c` applies.
fn record(
    batch: &mut Batch,
    snap: &crate::inventory::Snapshot,
    leases: &Leases,
    c: &Change,
    now: i64,
) {
    match *c {
        Change::Hold { .. } => {}
        Change::Bind {
            ip,
            mac: m,
            expires,
            pool,
        } => {
            if !pool {
                // Written behind, and only when the stored one is stale.
                let half = (expires - now) / 2;
                let fresh = snap.leases.get(&IpAddr::V4(ip)).is_some_and(|l| {
                    mac::parse(&l.mac).is_ok_and(|x| x == m)
                        && l.expires.is_some_and(|e| e.timestamp() >= expires - half)
                });
                if fresh && !batch.records.contains_key(&ip) {
                    return;
                }
            } else if let Some(prev) = leases.pool_address_of(&m)
                && prev != ip
            {
                // The MAC moves: its old record goes with it.
                batch.records.insert(
                    prev,
                    Intent::Delete {
                        mac: m,
                        ended_by: None,
                    },
                );
            }
            batch.records.insert(
                ip,
                Intent::Put {
                    lease: lease_record(ip, &m, expires),
                    pool,
                },
            );
        }
        Change::Free { ip } | Change::Decline { ip, .. } => {
            let Some(b) = leases.get(ip) else {
                return;
            };
            // An offer was never stored: only an ended record of the same
            // MAC may go (another head may have bound it meanwhile).
            let ended_by = (b.state != State::Bound).then_some(now);
            batch.records.insert(
                ip,
                Intent::Delete {
                    mac: b.mac,
                    ended_by,
                },
            );
        }
    }
}

/// What a flush did.
#[derive(Default)]
struct Flushed {
    /// Replies not sent because the write failed.
    withheld: u64,
    send_failed: u64,
    /// Addresses whose records were written (or left as they were).
    written: Vec<Ipv4Addr>,
    /// Replies not sent because their binding was refused.
    refused: Vec<Waiting>,
}

/// Writes the batch in one store write, then sends the replies that
/// waited for it, except those whose binding the store refused.
async fn flush(batch: Batch, store: Store, socks: Vec<Arc<UdpSocket>>, several: bool) -> Flushed {
    let Batch { records, replies } = batch;
    let written: Vec<Ipv4Addr> = records.keys().copied().collect();
    let r = if records.is_empty() {
        Ok(Vec::new())
    } else {
        store
            .write(move |t| Ok(records::write(t, records, several)))
            .await
    };
    match r {
        Ok(refused) => {
            let mut send_failed = 0;
            let mut not_sent = Vec::new();
            for w in replies {
                if refused.contains(&w.binding) {
                    not_sent.push(w);
                } else if socks[w.sock].try_send_to(&w.bytes, w.dest.into()).is_err() {
                    send_failed += 1;
                }
            }
            Flushed {
                withheld: 0,
                send_failed,
                written,
                refused: not_sent,
            }
        }
        Err(e) => {
            tracing::error!(error = %e, withheld = replies.len(), "dhcp: cannot persist leases; their ACKs are not sent");
            Flushed {
                withheld: replies.len() as u64,
                written,
                ..Flushed::default()
            }
        }
    }
}

/// Receives from whichever socket is ready first, taking turns.
async fn recv_any(
    socks: &[Arc<UdpSocket>],
    buf: &mut [u8],
    next: &mut usize,
) -> io::Result<(usize, SocketAddr, usize)> {
    std::future::poll_fn(|cx| {
        let n = socks.len();
        for k in 0..n {
            let i = (*next + k) % n;
            let mut rb = ReadBuf::new(buf);
            match socks[i].poll_recv_from(cx, &mut rb) {
                Poll::Ready(Ok(peer)) => {
                    *next = i + 1;
                    return Poll::Ready(Ok((rb.filled().len(), peer, i)));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
        }
        Poll::Pending
    })
    .await
}

fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::base::NodeBase;
    use crate::dhcp::settings::{DhcpConfig, DhcpSubnet};

    #[test]
    fn only_interfaces_in_a_subnet_or_named() {
        let c = DhcpConfig {
            subnets: vec![DhcpSubnet {
                cidr: "10.1.0.0/16".into(),
                ..DhcpSubnet::default()
            }],
            ..DhcpConfig::default()
        };
        let s =
            Settings::from_config(&c, NodeBase::new("", ([0, 0, 0, 0], 1).into()), "x").unwrap();
        let addrs: HashMap<String, Vec<Ipv4Addr>> = [
            ("lo", vec![Ipv4Addr::LOCALHOST]),
            ("eth0", vec![Ipv4Addr::new(192, 168, 1, 5)]),
            ("eth1", vec![Ipv4Addr::new(10, 1, 0, 1)]),
            ("br0", vec![]),
        ]
        .into_iter()
        .map(|(n, a)| (n.to_string(), a))
        .collect();
        assert_eq!(choose_interfaces(&s, &addrs), vec!["eth1".to_string()]);
        let mut named = s.clone();
        named.interfaces = vec!["br0".into()];
        assert_eq!(choose_interfaces(&named, &addrs), vec!["br0".to_string()]);
        let none = Settings::from_config(
            &DhcpConfig::default(),
            NodeBase::new("", ([0, 0, 0, 0], 1).into()),
            "x",
        )
        .unwrap();
        assert!(choose_interfaces(&none, &addrs).is_empty());
    }
}
