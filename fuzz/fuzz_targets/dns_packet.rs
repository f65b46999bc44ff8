//! Untrusted bytes through the whole DNS path: decode, the zone of a small
//! inventory, encode, over both transports and with recursion allowed or
//! not. Nothing may panic, and every reply must decode again.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use openchami::config::Config;
use openchami::dns::settings::Settings;
use openchami::dns::zone::{Arrival, Zone};
use openchami::dns::{Handled, Transport, handle};
use openchami::inventory::Model;
use openchami::inventory::model::{Component, EthernetInterface, IpAddressMapping};

fn zone() -> &'static Zone {
    static Z: OnceLock<Zone> = OnceLock::new();
    Z.get_or_init(|| {
        let c = Config::parse(
            "[[dhcp.subnets]]\ncidr = \"10.0.0.0/24\"\n[dns]\nnetworks = [\"fd00::/64\"]\n",
            "fuzz",
        )
        .expect("config");
        let s = Settings::from_config(&c).expect("settings");
        let mut m = Model::default();
        for i in 1..=4u8 {
            let id = format!("x0c0s{i}b0n0");
            let mut comp = Component::new(id.clone(), "Node".into());
            comp.nid = Some(i64::from(i));
            m.components.insert(id.clone(), std::sync::Arc::new(comp));
            m.interfaces.insert(
                format!("0200000000{i:02x}"),
                std::sync::Arc::new(EthernetInterface {
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
                }),
            );
        }
        Zone::build(&m, 1, &s)
    })
}

fuzz_target!(|data: &[u8]| {
    let at = Arrival {
        local: Some("10.0.0.1".parse().expect("ip")),
        interface: vec!["fd00::1".parse().expect("ip")],
    };
    for (t, recursion) in [(Transport::Udp, false), (Transport::Tcp, true)] {
        if let Handled::Reply(b, _) = handle(data, zone(), &at, recursion, t) {
            assert!(hickory_proto::op::Message::from_vec(&b).is_ok());
        }
    }
});
