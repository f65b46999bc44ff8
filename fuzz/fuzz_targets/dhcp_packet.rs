//! Untrusted bytes through the whole DHCP path: decode, the policy over a
//! small inventory, encode. The lease table carries over between the
//! packets of one input (split on the 4-byte marker `\xff\xffNX`), so
//! sequences such as DISCOVER, REQUEST, RELEASE are explored too.
#![no_main]

use std::net::Ipv4Addr;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use openchami::config::{DhcpConfig, DhcpSubnet};
use openchami::dhcp::{commit, handle, leases::Leases, settings::Settings};
use openchami::inventory::model::{Component, EthernetInterface, IpAddressMapping};
use openchami::inventory::{Snapshot, Store};

fn world() -> &'static (Arc<Snapshot>, Settings) {
    static W: OnceLock<(Arc<Snapshot>, Settings)> = OnceLock::new();
    W.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let snap = rt.block_on(async {
            let store = Store::open_in_memory().expect("store");
            store
                .write(|t| {
                    for i in 1..=4u8 {
                        let id = format!("x0c0s{i}b0n0");
                        let mut c = Component::new(id.clone(), "Node".into());
                        c.nid = Some(i64::from(i));
                        t.put_component(c);
                        t.put_interface(EthernetInterface {
                            id: format!("0200000000{i:02x}"),
                            description: String::new(),
                            mac_address: format!("02:00:00:00:00:{i:02x}"),
                            last_update: String::new(),
                            component_id: id,
                            kind: String::new(),
                            ip_addresses: vec![IpAddressMapping {
                                ip_address: format!("10.0.0.{}", 10 + i),
                                network: String::new(),
                            }],
                        });
                    }
                    Ok(())
                })
                .await
                .expect("inventory");
            store.snapshot()
        });
        let cfg = DhcpConfig {
            enabled: true,
            rules: vec!["type:Node,hostname:nid{04d},continue:true".into()],
            subnets: vec![
                DhcpSubnet {
                    cidr: "10.0.0.0/24".into(),
                    pool: "10.0.0.100-10.0.0.103".into(),
                    ..DhcpSubnet::default()
                },
                DhcpSubnet {
                    cidr: "10.0.1.0/24".into(),
                    pool: "10.0.1.100-10.0.1.103".into(),
                    ..DhcpSubnet::default()
                },
            ],
            ..DhcpConfig::default()
        };
        let base = openchami::boot::base::NodeBase::new(
            "http://10.0.0.1:27778",
            ([0, 0, 0, 0], 27778).into(),
        );
        let settings = Settings::from_config(&cfg, base, "fuzz").expect("settings");
        (snap, settings)
    })
}

fuzz_target!(|data: &[u8]| {
    let (snap, settings) = world();
    let mut leases = Leases::default();
    let local = [Ipv4Addr::new(10, 0, 0, 1)];
    for (n, packet) in split(data).into_iter().enumerate() {
        if let Ok(h) = handle(packet, snap, settings, &leases, &local, n as i64 * 30) {
            commit(&mut leases, settings, &h.outcome.changes);
        }
    }
});

fn split(d: &[u8]) -> Vec<&[u8]> {
    const MARK: &[u8] = b"\xff\xffNX";
    let mut out = Vec::new();
    let mut rest = d;
    while let Some(at) = rest.windows(MARK.len()).position(|w| w == MARK) {
        out.push(&rest[..at]);
        rest = &rest[at + MARK.len()..];
    }
    out.push(rest);
    out
}
