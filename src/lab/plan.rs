//! Names and addresses of a lab, decided up front (pure), so every piece —
//! namespace, appliance config, inventory, qemu, BMCs — agrees on them.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The lab subnet. Each lab has its own namespace, so labs may share it.
pub const SUBNET: [u8; 3] = [10, 77, 0];
pub const PREFIX: u8 = 24;
/// The appliance's address on the lab bridge.
pub const SERVER_HOST: u8 = 1;
/// Node `i` gets `.NODE_BASE + i`, its BMC `.BMC_BASE + i`.
const NODE_BASE: u8 = 11;
const BMC_BASE: u8 = 101;
/// Dynamic addresses for unknown machines (the DHCP pool).
pub const POOL: (u8, u8) = (200, 250);
pub const MAX_NODES: usize = 80;
pub const BRIDGE: &str = "br0";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    /// SeaBIOS with qemu's iPXE option ROM.
    Bios,
    /// OVMF with its own UEFI PXE (no option ROM), as on real hardware.
    Uefi,
}

impl Firmware {
    pub fn name(self) -> &'static str {
        match self {
            Firmware::Bios => "bios",
            Firmware::Uefi => "uefi",
        }
    }
}

/// Which firmware the nodes get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirmwareMix {
    Bios,
    Uefi,
    /// Alternating, BIOS first.
    Mixed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabNode {
    pub xname: String,
    pub nid: i64,
    pub mac: String,
    pub ip: Ipv4Addr,
    pub tap: String,
    pub firmware: Firmware,
    pub bmc: String,
    pub bmc_ip: Ipv4Addr,
    pub bmc_mac: String,
}

/// A lab: what `lab up` decided, saved as `lab.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lab {
    /// Network namespace name.
    pub netns: String,
    pub dir: PathBuf,
    pub nodes: Vec<LabNode>,
    /// Seconds until the supervisor tears the lab down.
    pub ttl_secs: u64,
    /// Seconds a node's qemu may run per power-on.
    pub node_timeout_secs: u64,
    pub memory_mb: u32,
    /// Path of the qemu-system binary.
    pub qemu: PathBuf,
    /// Use KVM (else TCG).
    pub kvm: bool,
    /// The virtual BMCs' password (user `admin`), random per lab.
    pub bmc_password: String,
}

pub fn addr(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], host)
}

pub fn server_ip() -> Ipv4Addr {
    addr(SERVER_HOST)
}

/// The nodes of an `n`-node lab.
pub fn nodes(n: usize, mix: FirmwareMix) -> Vec<LabNode> {
    (0..n.min(MAX_NODES))
        .map(|i| {
            let firmware = match mix {
                FirmwareMix::Bios => Firmware::Bios,
                FirmwareMix::Uefi => Firmware::Uefi,
                FirmwareMix::Mixed if i % 2 == 0 => Firmware::Bios,
                FirmwareMix::Mixed => Firmware::Uefi,
            };
            LabNode {
                xname: format!("x1000c0s{i}b0n0"),
                nid: i as i64 + 1,
                // The virtual BMC reports these MACs (redfish::sim), so
                // discovery and the VM's NIC agree, as on hardware.
                mac: crate::redfish::sim::system_mac(i, 0),
                ip: addr(NODE_BASE + i as u8),
                tap: format!("tap{i}"),
                firmware,
                bmc: format!("x1000c0s{i}b0"),
                bmc_ip: addr(BMC_BASE + i as u8),
                bmc_mac: crate::redfish::sim::bmc_mac(i),
            }
        })
        .collect()
}

/// Short `ip netns` names only: interface and namespace names are limited.
pub fn valid_netns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_get_distinct_names_and_addresses() {
        let n = nodes(MAX_NODES + 5, FirmwareMix::Mixed);
        assert_eq!(n.len(), MAX_NODES);
        let mut seen = std::collections::HashSet::new();
        for x in &n {
            for v in [
                x.xname.clone(),
                x.mac.clone(),
                x.ip.to_string(),
                x.bmc_ip.to_string(),
                x.bmc_mac.clone(),
                x.tap.clone(),
            ] {
                assert!(seen.insert(v.clone()), "{v} twice");
            }
            assert!(x.ip.octets()[3] < POOL.0 && x.bmc_ip.octets()[3] < POOL.0);
            assert_ne!(x.ip, server_ip());
        }
        assert_eq!(n[0].firmware, Firmware::Bios);
        assert_eq!(n[1].firmware, Firmware::Uefi);
        assert_eq!(n[1].xname, "x1000c0s1b0n0");
        assert_eq!(n[1].bmc, "x1000c0s1b0");
        assert_eq!(n[1].nid, 2);
        assert!(
            nodes(3, FirmwareMix::Uefi)
                .iter()
                .all(|x| x.firmware == Firmware::Uefi)
        );
    }

    #[test]
    fn netns_names() {
        assert!(valid_netns_name("openchami-lab"));
        assert!(!valid_netns_name("a b"));
        assert!(!valid_netns_name(""));
        assert!(!valid_netns_name("../x"));
    }
}
