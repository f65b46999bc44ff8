//! What a DHCP packet gets: a pure function of the inventory snapshot, the
//! settings, the lease table, the packet's facts and the time.
//!
//! Nothing here reads a clock, a socket or the store, so every rule of
//! contract §7 is a unit or property test: known MACs get their inventory
//! address and nothing else, unknown MACs get a pool address no one else
//! holds, and a REQUEST is NAKed exactly when the address asked for is not
//! the one this client may have. The answer says which lease changes to
//! make; the server applies them (and persists what must be durable).

use std::net::Ipv4Addr;

use super::leases::{Change, Leases, Mac, State};
use super::rules::{self, Target};
use super::settings::{IGNORE_GROUP, Settings, Subnet};
use crate::inventory::Model;
use crate::inventory::mac;
use crate::metadata::document;

/// How long an offered pool address is held for the client's REQUEST.
pub const OFFER_HOLD_SECS: i64 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Discover,
    Request,
    Decline,
    Release,
    Inform,
}

/// The facts of a decoded client packet that matter to the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub kind: Kind,
    pub mac: Mac,
    pub ciaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    /// Option 50.
    pub requested: Option<Ipv4Addr>,
    /// Option 54.
    pub server_id: Option<Ipv4Addr>,
    /// Option 93, the first architecture listed.
    pub arch: Option<u16>,
    /// iPXE is asking (user class `iPXE`, or option 175 present).
    pub ipxe: bool,
    /// A PXE client (option 60 starts with `PXEClient`).
    pub pxe: bool,
    /// Seconds the client says it has been trying (`secs`).
    pub secs: u16,
    /// The client's bucket among the heads (see `balance`).
    pub bucket: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    Offer,
    Ack,
    Nak,
}

/// A reply, before encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub kind: ReplyKind,
    pub yiaddr: Ipv4Addr,
    pub server_id: Ipv4Addr,
    /// Absent for NAKs and INFORM answers.
    pub lease_secs: Option<u32>,
    pub mask: Option<Ipv4Addr>,
    pub routers: Vec<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: String,
    pub hostname: Option<String>,
    /// TFTP name (stage 1) or boot script URL (stage 2).
    pub boot_file: Option<String>,
    /// `siaddr` and option 66, with a boot file.
    pub next_server: Option<Ipv4Addr>,
    /// Option 56, for NAKs.
    pub message: Option<&'static str>,
    /// A proxyDHCP answer: option 60 `PXEClient` and option 43 telling
    /// the PXE client to use the boot file given, without discovery.
    pub proxy: bool,
}

/// What to do with a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub reply: Option<Reply>,
    pub changes: Vec<Change>,
    /// Why, in a few words, for logs and drop counters.
    pub reason: &'static str,
}

impl Outcome {
    fn silent(reason: &'static str) -> Outcome {
        Outcome {
            reply: None,
            changes: Vec::new(),
            reason,
        }
    }
}

/// Why a client another head answers gets nothing here.
pub const ANOTHER_HEAD: &str = "another head's client";

/// Load balancing among heads (see `balance`): only a client without an
/// address yet, asking no server in particular, is split.
fn answers(share: super::balance::Share, q: &Query) -> bool {
    let splits = match q.kind {
        Kind::Discover => true,
        Kind::Request => q.server_id.is_none() && q.ciaddr.is_unspecified(),
        _ => false,
    };
    !splits || share.answers(q.bucket, q.secs)
}

/// Everything besides the packet.
pub struct Context<'a> {
    pub model: &'a Model,
    pub settings: &'a Settings,
    pub leases: &'a Leases,
    /// IPv4 addresses of the interface the packet came in on.
    pub local: &'a [Ipv4Addr],
    /// Unix seconds.
    pub now: i64,
}

/// Stage 1 boot files by option 93 (contract §7). 9 is what old firmware
/// sends for x86-64 UEFI.
pub fn boot_file_for_arch(arch: u16) -> Option<&'static str> {
    match arch {
        0 => Some("undionly.kpxe"),
        6 => Some("ipxe-i386.efi"),
        7 | 9 => Some("ipxe-x86_64.efi"),
        10 => Some("ipxe-arm32.efi"),
        11 => Some("ipxe-arm64.efi"),
        _ => None,
    }
}

/// A MAC in the inventory, with what DHCP gives it in the selected subnet.
struct Known {
    ip: Ipv4Addr,
    hostname: Option<String>,
    routers: Option<Vec<Ipv4Addr>>,
    mask: Option<Ipv4Addr>,
}

enum Client {
    Known(Known),
    Unknown,
    Ignored,
}

/// The subnet a packet is for and our address facing the client or relay.
fn select<'s>(s: &'s Settings, q: &Query, local: &[Ipv4Addr]) -> Option<(&'s Subnet, Ipv4Addr)> {
    if !q.giaddr.is_unspecified() {
        let subnet = s.subnet_of(q.giaddr)?;
        return Some((subnet, *local.first()?));
    }
    local
        .iter()
        .find_map(|a| s.subnet_of(*a).map(|sub| (sub, *a)))
}

fn identify(ctx: &Context<'_>, subnet: &Subnet, m: &Mac) -> Client {
    let model = ctx.model;
    let Some(iface) = model.interfaces.get(&mac::to_id(m)) else {
        return Client::Unknown;
    };
    let Some(comp) = model.components.get(&iface.component_id) else {
        return Client::Unknown;
    };
    let Some(ip) = iface
        .ip_addresses
        .iter()
        .filter_map(|a| a.ip_address.parse::<Ipv4Addr>().ok())
        .find(|ip| subnet.cidr.contains(*ip))
    else {
        return Client::Unknown;
    };
    if model
        .group_labels_of(&comp.id)
        .is_some_and(|g| g.iter().any(|l| l == IGNORE_GROUP))
    {
        return Client::Ignored;
    }
    let verdict = rules::evaluate(
        &ctx.settings.rules,
        &Target {
            kind: &comp.kind,
            id: &comp.id,
            nid: comp.nid,
            ip,
            global_domain: &subnet.domain,
        },
    );
    if verdict.ignore {
        return Client::Ignored;
    }
    let hostname = verdict.hostname.or_else(|| {
        Some(if comp.is_node() {
            document::node_hostname(model, comp, &ctx.settings.cluster_name)
        } else {
            comp.id.clone()
        })
    });
    Client::Known(Known {
        ip,
        hostname,
        routers: verdict.routers,
        mask: verdict.netmask,
    })
}

/// Is `ip` free for `m` from the pool at `now`: in the pool, not an
/// inventory address, and held by nobody else.
fn pool_free_for(ctx: &Context<'_>, subnet: &Subnet, ip: Ipv4Addr, m: &Mac) -> bool {
    subnet.in_pool(ip)
        && !ctx
            .model
            .interfaces_by_ip
            .contains_key(&std::net::IpAddr::V4(ip))
        && ctx
            .leases
            .live(ip, ctx.now)
            .is_none_or(|b| b.mac == *m && b.state != State::Declined)
}

/// Lease caching: the seconds left on `m`'s acknowledged binding of `ip`,
/// if at least half a lease. Such a binding is answered as it stands (its
/// remaining time, no new write), so the client never holds the address
/// longer than the stored record says, and a client renewing early costs
/// no disk write. Kea's `cache-threshold` does the same.
fn cached(ctx: &Context<'_>, ip: Ipv4Addr, m: &Mac, lease_secs: u32) -> Option<u32> {
    if ctx.settings.several_heads {
        // Another head may have changed the binding: commit it again.
        return None;
    }
    let b = ctx.leases.live(ip, ctx.now)?;
    let left = b.expires - ctx.now;
    let reusable = b.state == State::Bound && b.durable && b.pool && b.mac == *m;
    (reusable && left >= i64::from(lease_secs) / 2)
        .then(|| u32::try_from(left).unwrap_or(lease_secs))
}

/// The pool address to offer `m`: the one it holds or held, else the one
/// it asks for, else the next free one after the cursor (with several
/// heads, after a point derived from the MAC, the same on every head).
fn pick(
    ctx: &Context<'_>,
    subnet: &Subnet,
    m: &Mac,
    requested: Option<Ipv4Addr>,
) -> Option<Ipv4Addr> {
    let (first, last) = subnet.pool?;
    if let Some(ip) = ctx.leases.pool_address_of(m)
        && pool_free_for(ctx, subnet, ip, m)
    {
        return Some(ip);
    }
    if let Some(ip) = requested
        && pool_free_for(ctx, subnet, ip, m)
    {
        return Some(ip);
    }
    let (a, b) = (u32::from(first), u32::from(last));
    let size = b - a + 1;
    let start = if ctx.settings.several_heads {
        super::records::pool_start(m, size)
    } else {
        ctx.leases.cursor(first) % size
    };
    (0..size)
        .map(|i| Ipv4Addr::from(a + (start + i) % size))
        .find(|ip| pool_free_for(ctx, subnet, *ip, m))
}

impl Reply {
    fn new(kind: ReplyKind, yiaddr: Ipv4Addr, server_id: Ipv4Addr) -> Reply {
        Reply {
            kind,
            yiaddr,
            server_id,
            lease_secs: None,
            mask: None,
            routers: Vec::new(),
            dns: Vec::new(),
            domain: String::new(),
            hostname: None,
            boot_file: None,
            next_server: None,
            message: None,
            proxy: false,
        }
    }
}

fn nak(server_id: Ipv4Addr, message: &'static str, changes: Vec<Change>) -> Outcome {
    let mut r = Reply::new(ReplyKind::Nak, Ipv4Addr::UNSPECIFIED, server_id);
    r.message = Some(message);
    Outcome {
        reply: Some(r),
        changes,
        reason: message,
    }
}

/// The configuration part of an OFFER/ACK.
fn fill(
    r: &mut Reply,
    ctx: &Context<'_>,
    subnet: &Subnet,
    q: &Query,
    known: Option<&Known>,
    lease_secs: Option<u32>,
) {
    r.lease_secs = lease_secs;
    r.mask = Some(known.and_then(|k| k.mask).unwrap_or(subnet.cidr.mask()));
    r.routers = known
        .and_then(|k| k.routers.clone())
        .unwrap_or_else(|| subnet.routers.clone());
    r.dns = subnet.dns.clone();
    r.domain = subnet.domain.clone();
    if let Some(domain) = &ctx.settings.dns_domain {
        // Our DNS serves the interface this reply leaves by.
        if r.dns.is_empty() {
            r.dns = vec![r.server_id];
        }
        if r.domain.is_empty() {
            r.domain = domain.clone();
        }
    }
    r.hostname = known.and_then(|k| k.hostname.clone());
    set_boot_file(r, ctx, q);
}

/// Stage 2 (iPXE): the boot script URL; stage 1: the binary for option 93.
fn set_boot_file(r: &mut Reply, ctx: &Context<'_>, q: &Query) {
    r.boot_file = if q.ipxe {
        // The address this request reached us at: no name to resolve.
        let base = ctx.settings.node_base.for_local(r.server_id.into());
        Some(format!(
            "{base}/boot/v1/bootscript?mac={}",
            mac::to_colon(&q.mac)
        ))
    } else {
        q.arch.and_then(boot_file_for_arch).map(str::to_string)
    };
    if r.boot_file.is_some() {
        r.next_server = Some(ctx.settings.next_server.unwrap_or(r.server_id));
    }
}

/// proxyDHCP: another server gives addresses; PXE and iPXE clients get
/// their boot file from us, offered (DISCOVER) and acknowledged (REQUEST,
/// on port 4011 or broadcast) without an address or lease.
fn proxy(ctx: &Context<'_>, q: &Query, server_id: Ipv4Addr) -> Outcome {
    if !(q.pxe || q.ipxe) {
        return Outcome::silent("proxy mode: not a PXE client");
    }
    let kind = match q.kind {
        Kind::Discover => ReplyKind::Offer,
        Kind::Request if q.server_id.is_none_or(|s| s == server_id) => ReplyKind::Ack,
        _ => return Outcome::silent("proxy mode: nothing to answer"),
    };
    let mut r = Reply::new(kind, Ipv4Addr::UNSPECIFIED, server_id);
    set_boot_file(&mut r, ctx, q);
    if r.boot_file.is_none() {
        return Outcome::silent("proxy mode: no boot file for this architecture");
    }
    r.proxy = true;
    Outcome {
        reply: Some(r),
        changes: Vec::new(),
        reason: "proxy boot options",
    }
}

/// A REQUEST naming another server: the client took that server's offer,
/// so this one's offer, if any, is freed.
fn chose_another_server(ctx: &Context<'_>, q: &Query) -> Outcome {
    let mut changes = Vec::new();
    if let Some(ip) = ctx.leases.pool_address_of(&q.mac)
        && ctx
            .leases
            .get(ip)
            .is_some_and(|b| b.state == State::Offered)
    {
        changes.push(Change::Free { ip });
    }
    Outcome {
        reply: None,
        changes,
        reason: "client chose another server",
    }
}

/// Decides what `q` gets.
pub fn decide(ctx: &Context<'_>, q: &Query) -> Outcome {
    if !answers(ctx.settings.share, q) {
        return Outcome::silent(ANOTHER_HEAD);
    }
    let Some((subnet, server_id)) = select(ctx.settings, q, ctx.local) else {
        return Outcome::silent("no configured subnet for the interface or relay");
    };
    // Before the inventory is asked: with several heads, half of all
    // REQUESTs a head hears name another head.
    if q.kind == Kind::Request
        && !ctx.settings.proxy
        && q.server_id.is_some_and(|sid| sid != server_id)
    {
        return chose_another_server(ctx, q);
    }
    let client = identify(ctx, subnet, &q.mac);
    let known = match client {
        Client::Ignored => return Outcome::silent("ignored by rule or dhcp-ignore group"),
        Client::Unknown if ctx.settings.known_only => {
            return Outcome::silent("unknown MAC in known-only mode");
        }
        Client::Known(k) => Some(k),
        Client::Unknown => None,
    };
    if ctx.settings.proxy {
        return proxy(ctx, q, server_id);
    }
    let now = ctx.now;
    // A pool address this MAC holds in this subnet, once it is known.
    let stale_pool = || -> Vec<Change> {
        match ctx.leases.pool_address_of(&q.mac) {
            Some(ip) if subnet.cidr.contains(ip) => vec![Change::Free { ip }],
            _ => Vec::new(),
        }
    };
    match q.kind {
        Kind::Discover => {
            if let Some(k) = &known {
                let mut r = Reply::new(ReplyKind::Offer, k.ip, server_id);
                fill(&mut r, ctx, subnet, q, Some(k), Some(subnet.lease_secs));
                let mut changes = stale_pool();
                // The inventory wins over a pool binding made before it.
                if let Some(b) = ctx.leases.live(k.ip, now)
                    && b.mac != q.mac
                {
                    changes.push(Change::Free { ip: k.ip });
                }
                return Outcome {
                    reply: Some(r),
                    changes,
                    reason: "offer reservation",
                };
            }
            let Some(ip) = pick(ctx, subnet, &q.mac, q.requested) else {
                return Outcome::silent(if subnet.pool.is_none() {
                    "unknown MAC and no pool in this subnet"
                } else {
                    "pool exhausted"
                });
            };
            let mut r = Reply::new(ReplyKind::Offer, ip, server_id);
            let secs = cached(ctx, ip, &q.mac, subnet.pool_lease_secs);
            fill(
                &mut r,
                ctx,
                subnet,
                q,
                None,
                Some(secs.unwrap_or(subnet.pool_lease_secs)),
            );
            let bound = ctx
                .leases
                .live(ip, now)
                .is_some_and(|b| b.state == State::Bound && b.mac == q.mac);
            let changes = if bound {
                Vec::new()
            } else {
                vec![Change::Hold {
                    ip,
                    mac: q.mac,
                    until: now + OFFER_HOLD_SECS,
                }]
            };
            Outcome {
                reply: Some(r),
                changes,
                reason: "offer pool address",
            }
        }
        Kind::Request => {
            let Some(target) = q
                .requested
                .or_else(|| (!q.ciaddr.is_unspecified()).then_some(q.ciaddr))
            else {
                return Outcome::silent("request names no address");
            };
            if let Some(k) = &known {
                if target != k.ip {
                    let mut changes = stale_pool();
                    if let Some(b) = ctx.leases.get(target)
                        && b.mac == q.mac
                        && !changes.contains(&Change::Free { ip: target })
                    {
                        changes.push(Change::Free { ip: target });
                    }
                    return nak(server_id, "address is not this client's", changes);
                }
                let mut r = Reply::new(ReplyKind::Ack, k.ip, server_id);
                fill(&mut r, ctx, subnet, q, Some(k), Some(subnet.lease_secs));
                let mut changes = stale_pool();
                changes.push(Change::Bind {
                    ip: k.ip,
                    mac: q.mac,
                    expires: now + i64::from(subnet.lease_secs),
                    pool: false,
                });
                return Outcome {
                    reply: Some(r),
                    changes,
                    reason: "ack reservation",
                };
            }
            if !pool_free_for(ctx, subnet, target, &q.mac) {
                return nak(server_id, "address not available", Vec::new());
            }
            let mut r = Reply::new(ReplyKind::Ack, target, server_id);
            if let Some(left) = cached(ctx, target, &q.mac, subnet.pool_lease_secs) {
                fill(&mut r, ctx, subnet, q, None, Some(left));
                return Outcome {
                    reply: Some(r),
                    changes: Vec::new(),
                    reason: "ack pool address (stored binding reused)",
                };
            }
            fill(&mut r, ctx, subnet, q, None, Some(subnet.pool_lease_secs));
            Outcome {
                reply: Some(r),
                changes: vec![Change::Bind {
                    ip: target,
                    mac: q.mac,
                    expires: now + i64::from(subnet.pool_lease_secs),
                    pool: true,
                }],
                reason: "ack pool address",
            }
        }
        Kind::Decline => {
            let ip = q.requested.unwrap_or(Ipv4Addr::UNSPECIFIED);
            match ctx.leases.get(ip) {
                Some(b) if b.mac == q.mac && b.pool => Outcome {
                    reply: None,
                    changes: vec![Change::Decline {
                        ip,
                        until: now + i64::from(subnet.pool_lease_secs),
                    }],
                    reason: "declined",
                },
                _ => Outcome::silent("decline of an address the client does not hold"),
            }
        }
        Kind::Release => match ctx.leases.get(q.ciaddr) {
            Some(b) if b.mac == q.mac => Outcome {
                reply: None,
                changes: vec![Change::Free { ip: q.ciaddr }],
                reason: "released",
            },
            _ => Outcome::silent("release of an address the client does not hold"),
        },
        Kind::Inform => {
            let mut r = Reply::new(ReplyKind::Ack, Ipv4Addr::UNSPECIFIED, server_id);
            fill(&mut r, ctx, subnet, q, known.as_ref(), None);
            Outcome {
                reply: Some(r),
                changes: Vec::new(),
                reason: "inform",
            }
        }
    }
}
