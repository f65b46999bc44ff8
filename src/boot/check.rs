//! Configurations that start but cannot boot a node, named before a node
//! finds out.
//!
//! Each key may be valid on its own while the combination leaves firmware
//! with nothing: DHCP handing out TFTP files that nobody serves, iPXE sent
//! to a listener that is off or to a name it cannot resolve, no iPXE binary
//! to send. `serve --check-config` prints every problem and fails; `serve`
//! logs them as warnings and starts (a node listener alone is still useful).
//! The rules are a pure function of the configuration and a few facts about
//! the host, gathered separately, so each is a table test.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::config::{Config, TftpMode};
use crate::dhcp::settings::Cidr;

/// What the rules need to know about the host.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// IPv4 addresses per interface name.
    pub interfaces: HashMap<String, Vec<Ipv4Addr>>,
    /// Boot files (`undionly.kpxe`, ...) present in the TFTP root or the
    /// distribution's iPXE package.
    pub boot_files: Vec<String>,
}

/// The boot files firmware on x86-64 asks for, and who asks.
const NEEDED: &[(&str, &str)] = &[
    ("undionly.kpxe", "legacy-BIOS PXE"),
    ("ipxe-x86_64.efi", "x86-64 UEFI PXE"),
];

impl Facts {
    /// Reads the host: interface addresses, and which boot files exist.
    pub fn of_host(config: &Config) -> Facts {
        let root: PathBuf = config.tftp_root();
        let boot_files = super::tftp::PACKAGE_PATHS
            .iter()
            .filter(|(name, candidates)| {
                root.join(name).is_file()
                    || candidates.iter().any(|p| std::path::Path::new(p).is_file())
            })
            .map(|(name, _)| name.to_string())
            .collect();
        Facts {
            interfaces: crate::dhcp::server::interface_addresses(),
            boot_files,
        }
    }
}

/// Every problem found, one line each, naming the key to change.
pub fn problems(c: &Config, facts: &Facts) -> Vec<String> {
    let mut out = Vec::new();
    let dhcp = c.dhcp.enabled;
    if dhcp && c.dhcp.subnets.is_empty() {
        out.push(
            "dhcp.enabled = true but no [[dhcp.subnets]] is configured: DHCP answers nobody; add one (cidr, pool, routers)"
                .to_string(),
        );
    }
    let serves = dhcp && !c.dhcp.subnets.is_empty();
    if serves && c.dhcp.next_server.trim().is_empty() && c.tftp.enabled == Some(false) {
        out.push(
            "tftp.enabled = false, but DHCP hands PXE firmware an iPXE binary over TFTP from this host: remove tftp.enabled (TFTP then serves the DHCP interfaces) or set dhcp.next_server to the TFTP server that has the binaries"
                .to_string(),
        );
    }
    if serves && !c.node.enabled && c.node.advertise.is_empty() {
        out.push(
            "node.enabled = false, but DHCP sends iPXE to the node listener for its boot script: enable it, or set node.advertise to where the node routes are served"
                .to_string(),
        );
    }
    if serves && c.node.advertise.is_empty() && c.node.listen.ip().is_loopback() {
        out.push(format!(
            "node.listen is {}, which no node can reach: listen on 0.0.0.0 or the node network's address",
            c.node.listen
        ));
    }
    if !c.node.advertise.is_empty()
        && let Some(why) = super::base::unreachable_advertise(&c.node.advertise)
    {
        // A name resolves only where DHCP hands out a DNS server.
        let name_with_dns = !why.contains("is not an address")
            && (c.dns.enabled || c.dhcp.subnets.iter().all(|s| !s.dns.is_empty()))
            && serves;
        if !name_with_dns {
            out.push(format!("node.advertise = {:?}: {why}", c.node.advertise));
        }
    }
    let tftp_here = c.tftp_mode() != TftpMode::Off;
    if serves && tftp_here {
        for (file, who) in NEEDED {
            if !facts.boot_files.iter().any(|f| f == file) {
                out.push(format!(
                    "no {file} in the TFTP root ({}) or the iPXE package: {who} nodes get no boot loader; install the ipxe package (EL: ipxe-bootimgs-x86) or put {file} into tftp.root",
                    c.tftp_root().display()
                ));
            }
        }
    }
    if serves {
        out.extend(interface_problems(c, facts));
    }
    out
}

/// DHCP must have an interface to serve each subnet on (or relays).
fn interface_problems(c: &Config, facts: &Facts) -> Vec<String> {
    let mut out = Vec::new();
    if !c.dhcp.interfaces.is_empty() {
        for name in &c.dhcp.interfaces {
            if !facts.interfaces.contains_key(name) {
                out.push(format!(
                    "dhcp.interfaces names {name}, which this host does not have"
                ));
            }
        }
        return out;
    }
    let cidrs: Vec<Cidr> = c
        .dhcp
        .subnets
        .iter()
        .filter_map(|s| Cidr::parse(&s.cidr).ok())
        .collect();
    let any = facts
        .interfaces
        .values()
        .flatten()
        .any(|ip| !ip.is_loopback() && cidrs.iter().any(|n| n.contains(*ip)));
    if !any {
        out.push(format!(
            "no interface has an address in dhcp.subnets ({}): give the node-facing interface one, or name it in dhcp.interfaces",
            c.dhcp
                .subnets
                .iter()
                .map(|s| s.cidr.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's minimal DHCP configuration.
    const MINIMAL: &str = include_str!("../../examples/config-dhcp.toml");

    fn host() -> Facts {
        Facts {
            interfaces: [
                ("lo".to_string(), vec![Ipv4Addr::LOCALHOST]),
                ("eth1".to_string(), vec![Ipv4Addr::new(172, 16, 0, 254)]),
            ]
            .into_iter()
            .collect(),
            boot_files: vec!["undionly.kpxe".into(), "ipxe-x86_64.efi".into()],
        }
    }

    type Edit = fn(&mut Config);

    #[test]
    fn combinations_that_cannot_boot_are_named() {
        let no_ipxe = Facts {
            boot_files: Vec::new(),
            ..host()
        };
        let no_iface = Facts {
            interfaces: [("lo".to_string(), vec![Ipv4Addr::LOCALHOST])]
                .into_iter()
                .collect(),
            ..host()
        };
        // (change to the minimal config, host facts, what the first
        // problem names, or "" for none)
        let cases: &[(&str, Edit, &Facts, &str)] = &[
            ("minimal", |_| {}, &host(), ""),
            ("tftp on", |c| c.tftp.enabled = Some(true), &host(), ""),
            (
                "tftp off",
                |c| c.tftp.enabled = Some(false),
                &host(),
                "tftp.enabled",
            ),
            (
                "tftp elsewhere",
                |c| {
                    c.tftp.enabled = Some(false);
                    c.dhcp.next_server = "172.16.0.9".into();
                },
                &host(),
                "",
            ),
            (
                "no node listener",
                |c| c.node.enabled = false,
                &host(),
                "node.enabled",
            ),
            (
                "loopback listener",
                |c| c.node.listen = "127.0.0.1:27778".parse().unwrap(),
                &host(),
                "node.listen",
            ),
            (
                "advertised name",
                |c| c.node.advertise = "http://head:27778".into(),
                &host(),
                "node.advertise",
            ),
            (
                "advertised name with dns",
                |c| {
                    c.node.advertise = "http://head:27778".into();
                    c.dhcp.subnets[0].dns = vec![Ipv4Addr::new(172, 16, 0, 254)];
                },
                &host(),
                "",
            ),
            (
                "advertised head name with our dns",
                |c| {
                    c.node.advertise = "http://openchami.cluster:27778".into();
                    c.dns.enabled = true;
                },
                &host(),
                "",
            ),
            (
                "advertised loopback",
                |c| c.node.advertise = "http://127.0.0.1:27778".into(),
                &host(),
                "node.advertise",
            ),
            (
                "advertised address",
                |c| c.node.advertise = "http://172.16.0.254:27778".into(),
                &host(),
                "",
            ),
            ("no ipxe", |_| {}, &no_ipxe, "undionly.kpxe"),
            ("no interface", |_| {}, &no_iface, "dhcp.interfaces"),
            (
                "missing interface",
                |c| c.dhcp.interfaces = vec!["eth9".into()],
                &host(),
                "eth9",
            ),
            (
                "no subnet",
                |c| c.dhcp.subnets.clear(),
                &host(),
                "dhcp.subnets",
            ),
        ];
        for (what, edit, facts, key) in cases {
            let mut c = Config::parse(MINIMAL, "t").unwrap();
            edit(&mut c);
            let p = problems(&c, facts);
            if key.is_empty() {
                assert!(p.is_empty(), "{what}: {p:?}");
            } else {
                assert!(!p.is_empty() && p[0].contains(key), "{what}: {p:?}");
                assert!(p.iter().all(|l| !l.contains('\n')), "one line each: {p:?}");
            }
        }
        assert!(problems(&Config::default(), &Facts::default()).is_empty());
    }

    #[test]
    fn minimal_dhcp_serves_tftp_on_its_interfaces() {
        let modes: &[(Edit, TftpMode)] = &[
            (|_| {}, TftpMode::DhcpInterfaces),
            (|c| c.tftp.enabled = Some(false), TftpMode::Off),
            (|c| c.tftp.enabled = Some(true), TftpMode::Listen),
            (|c| c.dhcp.next_server = "172.16.0.9".into(), TftpMode::Off),
            (|c| c.dhcp.enabled = false, TftpMode::Off),
        ];
        for (i, (edit, want)) in modes.iter().enumerate() {
            let mut c = Config::parse(MINIMAL, "t").unwrap();
            edit(&mut c);
            assert_eq!(c.tftp_mode(), *want, "case {i}");
        }
        assert_eq!(Config::default().tftp_mode(), TftpMode::Off);
    }
}
