//! The policy against a small inventory: contract §7 case by case, then
//! property tests over random packet sequences, then random bytes through
//! the whole decode → decide → encode path.

use std::net::{IpAddr, Ipv4Addr};

use dhcproto::v4::{DhcpOption, Message, MessageType};
use dhcproto::{Encodable, Encoder};
use proptest::prelude::*;

use super::leases::{Change, Leases, Mac, State};
use super::policy::{ANOTHER_HEAD, Context, Kind, Outcome, Query, ReplyKind, decide};
use super::settings::Settings;
use super::settings::{DhcpConfig, DhcpSubnet};
use super::{commit, handle};
use crate::boot::base::NodeBase;
use crate::inventory::model::{Component, EthernetInterface, Group, IpAddressMapping, Members};
use crate::inventory::{Snapshot, Store, mac};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const RELAY: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);

fn m(last: u8) -> Mac {
    [2, 0, 0, 0, 0, last]
}

fn unknown(i: u8) -> Mac {
    [2, 0, 0, 0, 1, i]
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, last)
}

fn iface(mac: Mac, comp: &str, addr: Ipv4Addr) -> EthernetInterface {
    EthernetInterface {
        id: mac::to_id(&mac),
        description: String::new(),
        mac_address: mac::to_colon(&mac),
        last_update: String::new(),
        component_id: comp.into(),
        kind: String::new(),
        ip_addresses: vec![IpAddressMapping {
            ip_address: addr.to_string(),
            network: String::new(),
        }],
    }
}

/// Nodes 1–4 at .11–.14, node 5 at .100 (inside the pool), a BMC (MAC 6,
/// .20) and a node in `dhcp-ignore` (MAC 7, .21).
fn inventory(
    extra: impl FnOnce(&mut crate::inventory::Txn<'_>) + Send + 'static,
) -> std::sync::Arc<Snapshot> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Store::open_in_memory().unwrap();
        store
            .write(move |t| {
                for (i, last) in [(1, 11), (2, 12), (3, 13), (4, 14), (5, 100)] {
                    let id = format!("x0c0s{i}b0n0");
                    let mut c = Component::new(id.clone(), "Node".into());
                    c.nid = Some(i);
                    t.put_component(c);
                    t.put_interface(iface(m(i as u8), &id, ip(last)));
                }
                t.put_component(Component::new("x0c0s1b0".into(), "NodeBMC".into()));
                t.put_interface(iface(m(6), "x0c0s1b0", ip(20)));
                let mut c = Component::new("x0c0s7b0n0".into(), "Node".into());
                c.nid = Some(7);
                t.put_component(c);
                t.put_interface(iface(m(7), "x0c0s7b0n0", ip(21)));
                t.put_group(Group {
                    label: "dhcp-ignore".into(),
                    description: String::new(),
                    tags: Vec::new(),
                    exclusive_group: String::new(),
                    members: Members {
                        ids: vec!["x0c0s7b0n0".into()],
                    },
                });
                extra(t);
                Ok(())
            })
            .await
            .unwrap();
        store.snapshot()
    })
}

fn settings(f: impl FnOnce(&mut DhcpConfig)) -> Settings {
    let mut c = DhcpConfig {
        enabled: true,
        subnets: vec![
            DhcpSubnet {
                cidr: "10.0.0.0/24".into(),
                pool: "10.0.0.100-10.0.0.107".into(),
                routers: vec![SERVER],
                dns: vec![SERVER],
                domain: "cluster".into(),
                ..DhcpSubnet::default()
            },
            DhcpSubnet {
                cidr: "10.0.1.0/24".into(),
                pool: "10.0.1.50-10.0.1.59".into(),
                routers: vec![RELAY],
                ..DhcpSubnet::default()
            },
        ],
        ..DhcpConfig::default()
    };
    f(&mut c);
    Settings::from_config(
        &c,
        NodeBase::new("http://10.0.0.1:27778", ([0, 0, 0, 0], 27778).into()),
        "demo",
    )
    .unwrap()
}

fn q(kind: Kind, mac: Mac) -> Query {
    Query {
        kind,
        mac,
        ciaddr: Ipv4Addr::UNSPECIFIED,
        giaddr: Ipv4Addr::UNSPECIFIED,
        requested: None,
        server_id: None,
        arch: None,
        ipxe: false,
        pxe: false,
        secs: 0,
        bucket: 0,
    }
}

fn ask(snap: &Snapshot, s: &Settings, l: &Leases, now: i64, query: &Query) -> Outcome {
    decide(
        &Context {
            model: snap,
            settings: s,
            leases: l,
            local: &[SERVER],
            now,
        },
        query,
    )
}

#[test]
fn known_mac_gets_its_reservation_hostname_and_boot_files() {
    let snap = inventory(|_| {});
    let s = settings(|_| {});
    let l = Leases::default();
    let o = ask(&snap, &s, &l, 0, &q(Kind::Discover, m(1)));
    let r = o.reply.unwrap();
    assert_eq!(
        (r.kind, r.yiaddr, r.server_id),
        (ReplyKind::Offer, ip(11), SERVER)
    );
    assert_eq!(
        r.hostname.as_deref(),
        Some("de0001"),
        "§5.3: cluster demo, NID 1"
    );
    assert_eq!(r.lease_secs, Some(3600));
    assert_eq!(r.mask, Some(Ipv4Addr::new(255, 255, 255, 0)));
    assert_eq!(
        (r.routers.clone(), r.dns.clone()),
        (vec![SERVER], vec![SERVER])
    );
    assert_eq!(r.domain, "cluster");
    assert_eq!(
        r.boot_file, None,
        "no option 93, no user class: no boot file"
    );

    for (arch, file) in [
        (0, "undionly.kpxe"),
        (7, "ipxe-x86_64.efi"),
        (9, "ipxe-x86_64.efi"),
        (11, "ipxe-arm64.efi"),
    ] {
        let mut d = q(Kind::Discover, m(1));
        d.arch = Some(arch);
        let r = ask(&snap, &s, &l, 0, &d).reply.unwrap();
        assert_eq!(r.boot_file.as_deref(), Some(file), "arch {arch}");
        assert_eq!(r.next_server, Some(SERVER));
    }
    let mut d = q(Kind::Discover, m(1));
    d.arch = Some(7);
    d.ipxe = true;
    let r = ask(&snap, &s, &l, 0, &d).reply.unwrap();
    assert_eq!(
        r.boot_file.as_deref(),
        Some("http://10.0.0.1:27778/boot/v1/bootscript?mac=02:00:00:00:00:01")
    );

    let r = ask(&snap, &s, &l, 0, &q(Kind::Discover, m(6)))
        .reply
        .unwrap();
    assert_eq!(
        r.hostname.as_deref(),
        Some("x0c0s1b0"),
        "non-nodes: the xname"
    );
    let o = ask(&snap, &s, &l, 0, &q(Kind::Discover, m(7)));
    assert!(o.reply.is_none(), "dhcp-ignore members get silence");

    let mut req = q(Kind::Request, m(1));
    req.requested = Some(ip(11));
    req.server_id = Some(SERVER);
    let o = ask(&snap, &s, &l, 0, &req);
    assert_eq!(o.reply.unwrap().kind, ReplyKind::Ack);
    assert!(
        !o.changes.iter().any(Change::must_persist),
        "reservations are durable already"
    );
    req.requested = Some(ip(99));
    assert_eq!(
        ask(&snap, &s, &l, 0, &req).reply.unwrap().kind,
        ReplyKind::Nak
    );
}

#[test]
fn hostname_follows_cloud_init_and_rules() {
    let snap = inventory(|t| {
        t.put_instance_info(crate::inventory::model::InstanceInfo {
            id: "x0c0s2b0n0".into(),
            hostname: "custom".into(),
            ..Default::default()
        });
    });
    let s = settings(|_| {});
    let l = Leases::default();
    let r = ask(&snap, &s, &l, 0, &q(Kind::Discover, m(2)))
        .reply
        .unwrap();
    assert_eq!(
        r.hostname.as_deref(),
        Some("custom"),
        "instance-info wins, as in meta-data"
    );
    let s = settings(|c| {
        c.rules = vec![
            "type:Node,hostname:nid{03d},routers:10.0.0.254,domain_append:none".into(),
            "id:x0c0s3b0n0,ignore:true".into(),
        ]
    });
    let r = ask(&snap, &s, &l, 0, &q(Kind::Discover, m(1)))
        .reply
        .unwrap();
    assert_eq!(r.hostname.as_deref(), Some("nid001"));
    assert_eq!(r.routers, vec![Ipv4Addr::new(10, 0, 0, 254)]);
}

#[test]
fn unknown_mac_gets_a_pool_address_and_is_naked_once_enrolled() {
    let snap = inventory(|_| {});
    let s = settings(|_| {});
    let mut l = Leases::default();
    let mut d = q(Kind::Discover, unknown(1));
    d.ipxe = true;
    let o = ask(&snap, &s, &l, 0, &d);
    let r = o.reply.clone().unwrap();
    assert_eq!(r.yiaddr, ip(101), ".100 belongs to node 5");
    assert_eq!(r.lease_secs, Some(300));
    assert_eq!(r.hostname, None);
    assert!(
        r.boot_file
            .unwrap()
            .ends_with("bootscript?mac=02:00:00:00:01:01")
    );
    commit(&mut l, &s, &o.changes);
    let mut req = q(Kind::Request, unknown(1));
    req.requested = Some(ip(101));
    req.server_id = Some(SERVER);
    let o = ask(&snap, &s, &l, 10, &req);
    assert_eq!(o.reply.as_ref().unwrap().kind, ReplyKind::Ack);
    assert!(
        o.changes.iter().any(Change::must_persist),
        "pool ACKs wait for the store"
    );
    commit(&mut l, &s, &o.changes);
    assert_eq!(l.live(ip(101), 10).unwrap().state, State::Bound);

    // Another unknown MAC gets the next address; the first keeps its own.
    let o = ask(&snap, &s, &l, 20, &q(Kind::Discover, unknown(2)));
    assert_eq!(o.reply.unwrap().yiaddr, ip(102));
    let o = ask(&snap, &s, &l, 20, &q(Kind::Discover, unknown(1)));
    assert_eq!(o.reply.unwrap().yiaddr, ip(101));

    // Renewing while still unknown: ACK, same address. Early in the lease
    // the stored binding is reused as it stands (no write, its time left).
    let mut renew = q(Kind::Request, unknown(1));
    renew.ciaddr = ip(101);
    let o = ask(&snap, &s, &l, 30, &renew);
    assert!(
        o.changes.iter().any(Change::must_persist),
        "not reused before its write has committed"
    );
    l.mark_durable(ip(101), &unknown(1), 310);
    let o = ask(&snap, &s, &l, 30, &renew);
    assert!(o.changes.is_empty(), "{o:?}");
    let r = o.reply.unwrap();
    assert_eq!((r.kind, r.lease_secs), (ReplyKind::Ack, Some(280)));
    let o = ask(&snap, &s, &l, 200, &renew);
    assert_eq!(
        o.reply.unwrap().lease_secs,
        Some(300),
        "past half the lease: renewed"
    );
    assert!(o.changes.iter().any(Change::must_persist));

    // Enrolled with .15: the next REQUEST is NAKed and the pool address freed.
    let enrolled = inventory(|t| {
        t.put_component(Component::new("x0c0s9b0n0".into(), "Node".into()));
        t.put_interface(iface(unknown(1), "x0c0s9b0n0", ip(15)));
    });
    let o = ask(&enrolled, &s, &l, 40, &renew);
    assert_eq!(o.reply.unwrap().kind, ReplyKind::Nak);
    assert!(o.changes.contains(&Change::Free { ip: ip(101) }));
    commit(&mut l, &s, &o.changes);
    assert!(l.get(ip(101)).is_none());
    let r = ask(&enrolled, &s, &l, 41, &q(Kind::Discover, unknown(1)))
        .reply
        .unwrap();
    assert_eq!(r.yiaddr, ip(15));

    // Expired pool leases are free again.
    let o = ask(&snap, &s, &l, 20, &q(Kind::Discover, unknown(3)));
    commit(&mut l, &s, &o.changes);
    assert!(l.expired(20 + 61).contains(&o.reply.unwrap().yiaddr));
}

#[test]
fn relays_select_their_subnet_and_known_only_is_silent() {
    let snap = inventory(|_| {});
    let s = settings(|_| {});
    let l = Leases::default();
    let mut d = q(Kind::Discover, unknown(1));
    d.giaddr = RELAY;
    let r = ask(&snap, &s, &l, 0, &d).reply.unwrap();
    assert_eq!(r.yiaddr, Ipv4Addr::new(10, 0, 1, 50));
    assert_eq!(r.routers, vec![RELAY]);
    assert_eq!(r.server_id, SERVER, "our address facing the relay");
    d.giaddr = Ipv4Addr::new(192, 168, 0, 1);
    assert!(
        ask(&snap, &s, &l, 0, &d).reply.is_none(),
        "relay from an unconfigured subnet"
    );
    // A known MAC without an address in the relay's subnet is unknown there.
    let mut k = q(Kind::Discover, m(1));
    k.giaddr = RELAY;
    assert_eq!(
        ask(&snap, &s, &l, 0, &k).reply.unwrap().yiaddr,
        Ipv4Addr::new(10, 0, 1, 50)
    );

    let s = settings(|c| c.known_only = true);
    assert!(
        ask(&snap, &s, &l, 0, &q(Kind::Discover, unknown(1)))
            .reply
            .is_none()
    );
    assert!(
        ask(&snap, &s, &l, 0, &q(Kind::Discover, m(1)))
            .reply
            .is_some()
    );
}

#[test]
fn our_dns_is_the_default_dns_server_and_domain() {
    let snap = inventory(|_| {});
    let l = Leases::default();
    // Subnet 0 names its own server and domain; subnet 1 names neither.
    for (dns_on, giaddr, want_dns, want_domain) in [
        (false, Ipv4Addr::UNSPECIFIED, vec![SERVER], "cluster"),
        (false, RELAY, vec![], ""),
        (true, Ipv4Addr::UNSPECIFIED, vec![SERVER], "cluster"),
        (true, RELAY, vec![SERVER], "hpc.example"),
    ] {
        let mut s = settings(|_| {});
        if dns_on {
            s.dns_domain = Some("hpc.example".into());
        }
        let mut d = q(Kind::Discover, unknown(1));
        d.giaddr = giaddr;
        let r = ask(&snap, &s, &l, 0, &d).reply.unwrap();
        assert_eq!(r.dns, want_dns, "dns on: {dns_on}, giaddr {giaddr}");
        assert_eq!(r.domain, want_domain, "dns on: {dns_on}, giaddr {giaddr}");
    }
}

#[test]
fn pool_exhaustion_is_silence_and_release_frees() {
    let snap = inventory(|_| {});
    let s = settings(|_| {});
    let mut l = Leases::default();
    let mut got = Vec::new();
    for i in 0..8 {
        let o = ask(&snap, &s, &l, 0, &q(Kind::Discover, unknown(i)));
        if let Some(r) = &o.reply {
            got.push(r.yiaddr);
        }
        commit(&mut l, &s, &o.changes);
    }
    assert_eq!(got.len(), 7, "8 pool addresses, one is node 5's");
    assert!(
        ask(&snap, &s, &l, 0, &q(Kind::Discover, unknown(9)))
            .reply
            .is_none()
    );
    let mut rel = q(Kind::Release, unknown(0));
    rel.ciaddr = got[0];
    let o = ask(&snap, &s, &l, 1, &rel);
    commit(&mut l, &s, &o.changes);
    assert_eq!(
        ask(&snap, &s, &l, 1, &q(Kind::Discover, unknown(9)))
            .reply
            .unwrap()
            .yiaddr,
        got[0]
    );
}

#[test]
fn proxy_mode_gives_boot_options_only_to_pxe_clients() {
    let snap = inventory(|_| {});
    let s = settings(|c| c.proxy = true);
    let l = Leases::default();
    assert!(
        ask(&snap, &s, &l, 0, &q(Kind::Discover, unknown(1)))
            .reply
            .is_none(),
        "not PXE"
    );
    let mut d = q(Kind::Discover, unknown(1));
    d.pxe = true;
    d.arch = Some(7);
    let o = ask(&snap, &s, &l, 0, &d);
    let r = o.reply.unwrap();
    assert_eq!(
        (r.kind, r.yiaddr),
        (ReplyKind::Offer, Ipv4Addr::UNSPECIFIED)
    );
    assert_eq!(r.boot_file.as_deref(), Some("ipxe-x86_64.efi"));
    assert!(r.proxy && r.lease_secs.is_none() && r.hostname.is_none());
    assert!(o.changes.is_empty(), "no lease is made");
    d.kind = Kind::Request;
    d.ipxe = true;
    let r = ask(&snap, &s, &l, 0, &d).reply.unwrap();
    assert_eq!(r.kind, ReplyKind::Ack);
    assert!(r.boot_file.unwrap().contains("/boot/v1/bootscript?mac="));
}

/// Without `node.advertise`, iPXE is sent to the address of the interface
/// its request arrived on (or faces its relay): never a host name.
#[test]
fn ipxe_is_sent_to_the_address_it_asked_on() {
    let snap = inventory(|_| {});
    let l = Leases::default();
    let other = Ipv4Addr::new(10, 0, 0, 2);
    for (advertise, listen, local, giaddr, want) in [
        ("", "0.0.0.0:27778", SERVER, None, "http://10.0.0.1:27778"),
        ("", "0.0.0.0:27778", other, None, "http://10.0.0.2:27778"),
        ("", "0.0.0.0:8080", SERVER, None, "http://10.0.0.1:8080"),
        (
            "",
            "0.0.0.0:27778",
            SERVER,
            Some(RELAY),
            "http://10.0.0.1:27778",
        ),
        ("", "10.0.0.9:27778", SERVER, None, "http://10.0.0.9:27778"),
        (
            "http://192.0.2.1:1",
            "0.0.0.0:27778",
            SERVER,
            None,
            "http://192.0.2.1:1",
        ),
    ] {
        let mut s = settings(|_| {});
        s.node_base = NodeBase::new(advertise, listen.parse().unwrap());
        let mut d = q(Kind::Discover, m(1));
        d.ipxe = true;
        if let Some(g) = giaddr {
            d.giaddr = g;
        }
        let o = decide(
            &Context {
                model: &snap,
                settings: &s,
                leases: &l,
                local: &[local],
                now: 0,
            },
            &d,
        );
        let file = o.reply.and_then(|r| r.boot_file).unwrap_or_default();
        assert_eq!(
            file.split("/boot/").next(),
            Some(want),
            "{advertise:?} {listen} {local} {giaddr:?}"
        );
    }
}

// ------------------------------------------------------------- properties

#[derive(Debug, Clone)]
enum Op {
    Discover(usize),
    /// Request the last offered address (SELECTING, to us or another server).
    Select(usize, bool),
    /// INIT-REBOOT asking for one of a few addresses.
    Reboot(usize, u8),
    Release(usize),
    Decline(usize),
    Wait(i64),
    /// The pending batch commits.
    Flush,
}

/// Known MACs 1–5 (node 5's address lies in the pool), BMC 6, ignored 7,
/// unknown MACs 100–111: more than the pool holds.
const MACS: usize = 19;

fn mac_at(i: usize) -> Mac {
    if i < 7 {
        m(i as u8 + 1)
    } else {
        unknown((i - 7) as u8)
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..MACS).prop_map(Op::Discover),
        3 => (0..MACS, any::<bool>()).prop_map(|(i, b)| Op::Select(i, b)),
        2 => (0..MACS, prop::sample::select(vec![11u8, 12, 20, 100, 101, 102, 103, 107, 150])).prop_map(|(i, a)| Op::Reboot(i, a)),
        1 => (0..MACS).prop_map(Op::Release),
        1 => (0..MACS).prop_map(Op::Decline),
        1 => (1i64..400).prop_map(Op::Wait),
        2 => Just(Op::Flush),
    ]
}

fn reservation(snap: &Snapshot, mac: &Mac) -> Option<Ipv4Addr> {
    let i = snap.interfaces.get(&mac::to_id(mac))?;
    i.ip_addresses.first()?.ip_address.parse().ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn policy_invariants(ops in prop::collection::vec(op(), 1..120), several_heads in any::<bool>()) {
        let snap = inventory(|_| {});
        let mut s = settings(|_| {});
        s.several_heads = several_heads;
        let mut l = Leases::default();
        let mut now = 1_000i64;
        let mut offered: Vec<Option<Ipv4Addr>> = vec![None; MACS];
        let mut held: Vec<Option<Ipv4Addr>> = vec![None; MACS];
        for op in ops {
            let (i, query) = match op {
                Op::Wait(d) => { now += d; continue; }
                Op::Flush => {
                    let bound: Vec<_> = l.iter().map(|(ip, b)| (*ip, b.mac, b.expires)).collect();
                    for (ip, mac, exp) in bound {
                        l.mark_durable(ip, &mac, exp);
                    }
                    continue;
                }
                Op::Discover(i) => (i, q(Kind::Discover, mac_at(i))),
                Op::Select(i, ours) => {
                    let mut r = q(Kind::Request, mac_at(i));
                    r.requested = offered[i].or(Some(ip(101)));
                    r.server_id = Some(if ours { SERVER } else { Ipv4Addr::new(10, 0, 0, 2) });
                    (i, r)
                }
                Op::Reboot(i, a) => {
                    let mut r = q(Kind::Request, mac_at(i));
                    r.requested = Some(ip(a));
                    (i, r)
                }
                Op::Release(i) => {
                    let mut r = q(Kind::Release, mac_at(i));
                    r.ciaddr = held[i].unwrap_or(ip(101));
                    (i, r)
                }
                Op::Decline(i) => {
                    let mut r = q(Kind::Decline, mac_at(i));
                    r.requested = held[i].or(offered[i]);
                    (i, r)
                }
            };
            let mac = mac_at(i);
            let o = ask(&snap, &s, &l, now, &query);
            let resv = reservation(&snap, &mac);
            let known = i < 7;
            if i == 6 {
                prop_assert!(o.reply.is_none() && o.changes.is_empty(), "ignored MAC answered");
            }
            if let Some(r) = &o.reply {
                match r.kind {
                    ReplyKind::Offer | ReplyKind::Ack => {
                        let y = r.yiaddr;
                        if known {
                            prop_assert_eq!(Some(y), resv, "known MAC got another address");
                        } else {
                            prop_assert!(s.subnets[0].in_pool(y), "{} outside the pool", y);
                            prop_assert!(!snap.interfaces_by_ip.contains_key(&IpAddr::V4(y)), "inventory address {} given away", y);
                            if let Some(b) = l.live(y, now) {
                                prop_assert_eq!(b.mac, mac, "{} offered to two MACs", y);
                            }
                        }
                    }
                    ReplyKind::Nak => {}
                }
            }
            // NAK exactly when the address asked for is not this client's.
            if query.kind == Kind::Request && query.server_id.is_none_or(|x| x == SERVER) {
                let target = query.requested.unwrap_or(query.ciaddr);
                let should_nak = if i == 6 { false } else if known {
                    Some(target) != resv
                } else {
                    !(s.subnets[0].in_pool(target)
                        && !snap.interfaces_by_ip.contains_key(&IpAddr::V4(target))
                        && l.live(target, now).is_none_or(|b| b.mac == mac && b.state != State::Declined))
                };
                let nak = o.reply.as_ref().is_some_and(|r| r.kind == ReplyKind::Nak);
                prop_assert_eq!(nak, should_nak, "query {:?} outcome {:?}", query, o);
                if !should_nak && i != 6 {
                    prop_assert_eq!(o.reply.as_ref().map(|r| r.kind), Some(ReplyKind::Ack));
                }
            }
            commit(&mut l, &s, &o.changes);
            if let Some(r) = &o.reply {
                match r.kind {
                    ReplyKind::Offer => offered[i] = Some(r.yiaddr),
                    ReplyKind::Ack => held[i] = Some(r.yiaddr),
                    ReplyKind::Nak => held[i] = None,
                }
                if !known && r.kind != ReplyKind::Nak {
                    let b = l.live(r.yiaddr, now);
                    prop_assert!(b.is_some_and(|b| b.mac == mac), "pool reply without a binding");
                }
            }
            // The table never has one MAC on two pool addresses.
            let mut macs: Vec<Mac> = l.iter().filter(|(_, b)| b.pool && b.state != State::Declined).map(|(_, b)| b.mac).collect();
            let n = macs.len();
            macs.sort();
            macs.dedup();
            prop_assert_eq!(n, macs.len(), "a MAC holds two pool addresses");
        }
    }
}

// ------------------------------------------------------------ random bytes

fn packet(kind: MessageType, mac: Mac, opts: Vec<DhcpOption>) -> Vec<u8> {
    let mut msg = Message::new(
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac,
    );
    msg.opts_mut().insert(DhcpOption::MessageType(kind));
    for o in opts {
        msg.opts_mut().insert(o);
    }
    let mut b = Vec::new();
    msg.encode(&mut Encoder::new(&mut b)).unwrap();
    b
}

/// xorshift64*, so failures reproduce.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn random_bytes_never_panic_and_valid_packets_round_trip() {
    let snap = inventory(|_| {});
    let s = settings(|_| {});
    let l = Leases::default();
    let good = packet(
        MessageType::Discover,
        m(1),
        vec![
            DhcpOption::ClientSystemArchitecture(7u16.into()),
            DhcpOption::UserClass(b"iPXE".to_vec()),
        ],
    );
    let h = handle(&good, &snap, &s, &l, &[SERVER], 0).unwrap();
    let (bytes, dest) = h.reply.unwrap();
    assert_eq!(dest.port(), 68);
    assert!(bytes.len() >= 300);
    let back = super::packet::decode(&bytes);
    assert!(back.is_err(), "a reply is not a request");

    let mut rng = Noise(0x5eed);
    let mut answered = 0;
    for round in 0..20_000 {
        let mut b = if round % 2 == 0 {
            let len = (rng.next() % 700) as usize;
            (0..len).map(|_| rng.next() as u8).collect::<Vec<u8>>()
        } else {
            good.clone()
        };
        if round % 2 == 1 {
            // Flip a few bytes of a valid packet, or cut it short.
            for _ in 0..(rng.next() % 6) {
                let at = (rng.next() as usize) % b.len();
                b[at] = rng.next() as u8;
            }
            if rng.next().is_multiple_of(4) {
                b.truncate((rng.next() as usize) % b.len());
            }
        }
        if let Ok(h) = handle(&b, &snap, &s, &l, &[SERVER], 0) {
            answered += usize::from(h.reply.is_some());
        }
    }
    assert!(answered > 0, "some mutated packets are still valid");
}

#[test]
fn ipxe_is_told_not_to_wait_for_proxy_dhcp_and_firmware_is_not() {
    let snap = inventory(|_| {});
    let s = settings(|_| {});
    let l = Leases::default();
    let reply_opts = |opts: Vec<DhcpOption>| {
        let p = packet(MessageType::Discover, m(1), opts);
        let (bytes, _) = handle(&p, &snap, &s, &l, &[SERVER], 0)
            .unwrap()
            .reply
            .unwrap();
        let msg =
            <Message as dhcproto::Decodable>::decode(&mut dhcproto::Decoder::new(&bytes)).unwrap();
        msg.opts()
            .get(dhcproto::v4::OptionCode::Unknown(175))
            .map(|o| {
                let mut b = Vec::new();
                o.encode(&mut Encoder::new(&mut b)).unwrap();
                b
            })
    };
    let ipxe = reply_opts(vec![
        DhcpOption::ClientSystemArchitecture(0u16.into()),
        DhcpOption::UserClass(b"iPXE".to_vec()),
    ]);
    // Option 175, length 3, encapsulated 176 = 1.
    assert_eq!(ipxe, Some(vec![175, 3, 176, 1, 1]));
    let firmware = reply_opts(vec![DhcpOption::ClientSystemArchitecture(0u16.into())]);
    assert_eq!(firmware, None);
}

/// Several heads: a head answers a client without an address only for its
/// own buckets (or once the client has waited), and everything else as
/// before (see `balance`).
#[test]
fn a_head_answers_its_share_of_new_clients() {
    use super::balance::{MAX_SECS, Share};
    let snap = inventory(|_| {});
    let l = Leases::default();
    // Bucket 0 is this head's of two; bucket 1 the other's.
    let share = Share::Part { index: 0, of: 2 };
    let base = |kind, bucket: u8| Query {
        bucket,
        ..q(kind, m(1))
    };
    let cases: &[(&str, Share, Query, bool)] = &[
        ("own bucket", share, base(Kind::Discover, 0), true),
        ("other bucket", share, base(Kind::Discover, 1), false),
        ("one head", Share::All, base(Kind::Discover, 1), true),
        (
            "waited long enough",
            share,
            Query {
                secs: MAX_SECS + 1,
                ..base(Kind::Discover, 1)
            },
            true,
        ),
        ("init-reboot", share, base(Kind::Request, 1), false),
        (
            "selecting: names a server",
            share,
            Query {
                server_id: Some(SERVER),
                requested: Some(ip(11)),
                ..base(Kind::Request, 1)
            },
            true,
        ),
        (
            "renewing: has an address",
            share,
            Query {
                ciaddr: ip(11),
                ..base(Kind::Request, 1)
            },
            true,
        ),
    ];
    for (what, share, query, answered) in cases {
        let s = Settings {
            share: *share,
            ..settings(|_| {})
        };
        let o = ask(&snap, &s, &l, 0, query);
        assert_eq!(o.reason != ANOTHER_HEAD, *answered, "{what}: {o:?}");
        if !answered {
            assert!(o.reply.is_none() && o.changes.is_empty(), "{what}");
        }
    }
}

/// The socket filter on a real kernel socket (loopback): another head's
/// DISCOVERs and REQUESTs naming another server never arrive; REQUESTs
/// naming this one or none, this head's DISCOVERs and a client that has
/// waited do; with the whole share again, everything does.
#[test]
fn the_kernel_drops_other_heads_discovers() {
    use super::balance::{MAX_SECS, Share, bucket};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let rx = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let share = Share::Part { index: 1, of: 2 };
        super::server::set_filter(&rx, share, &[Ipv4Addr::LOCALHOST]).unwrap();
        // The first MAC of `2:0:0:0:0:k` that is this head's, or not.
        let first = |mine: bool| -> Mac {
            (0..=255u8)
                .map(|k| [2, 0, 0, 0, 0, k])
                .find(|mac| share.answers(bucket(mac), 0) == mine)
                .unwrap()
        };
        let (ours, theirs) = (first(true), first(false));
        let sid = |ip: [u8; 4]| vec![DhcpOption::ServerIdentifier(ip.into())];
        let msg_with = |mac: Mac, t: MessageType, secs: u16, opts: Vec<DhcpOption>| {
            let mut b = packet(t, mac, opts);
            // `secs`, at offset 8 of the fixed header.
            b[8..10].copy_from_slice(&secs.to_be_bytes());
            b
        };
        let msg = |mac: Mac, t: MessageType, secs: u16| msg_with(mac, t, secs, Vec::new());
        // (what, packet, arrives), sent in order.
        let cases = [
            (
                "another head's DISCOVER",
                msg(theirs, MessageType::Discover, 0),
                false,
            ),
            (
                "this head's DISCOVER",
                msg(ours, MessageType::Discover, 0),
                true,
            ),
            (
                "another head's REQUEST",
                msg(theirs, MessageType::Request, 0),
                true,
            ),
            (
                "another head's client that waited",
                msg(theirs, MessageType::Discover, MAX_SECS + 1),
                true,
            ),
            (
                "a REQUEST naming another server",
                msg_with(ours, MessageType::Request, 0, sid([10, 1, 250, 2])),
                false,
            ),
            (
                "a REQUEST naming this server",
                msg_with(theirs, MessageType::Request, 0, sid([127, 0, 0, 1])),
                true,
            ),
        ];
        let to = rx.local_addr().unwrap();
        let mut buf = [0u8; 1500];
        for (what, pkt, arrives) in &cases {
            tx.send_to(pkt, to).unwrap();
            // A marker after it: when the marker arrives, the packet has
            // arrived before it or never will.
            tx.send_to(b"marker", to).unwrap();
            let (n, _) = rx.recv_from(&mut buf).await.unwrap();
            if *arrives {
                assert_eq!(&buf[..n], &pkt[..], "{what} arrives");
                let (n, _) = rx.recv_from(&mut buf).await.unwrap();
                assert_eq!(&buf[..n], b"marker");
            } else {
                assert_eq!(&buf[..n], b"marker", "{what} is dropped");
            }
        }
        super::server::set_filter(&rx, Share::All, &[Ipv4Addr::LOCALHOST]).unwrap();
        let (_, pkt, _) = &cases[0];
        tx.send_to(pkt, to).unwrap();
        let (n, _) = rx.recv_from(&mut buf).await.unwrap();
        assert_eq!(
            &buf[..n],
            &pkt[..],
            "with the whole share, everything arrives"
        );
    });
}
