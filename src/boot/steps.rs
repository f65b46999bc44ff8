//! Where each node got to in its boot: the last time each step of the netboot
//! chain (DHCP, TFTP, boot script, kernel, initrd, cloud-init meta-data,
//! phone-home) was seen for it.
//!
//! A node that stops booting leaves no error behind: it just never asks for
//! the next thing. The only place that sees the whole chain is the appliance,
//! since it serves every step, so it keeps this small record and answers
//! "where did node X stop?" on a real cluster as well as timing the lab. It
//! is in memory on purpose, as `history` is: a diagnostic written on the hot
//! boot paths, which a restart may forget.
//!
//! Each protocol adapter calls one method with what it knows (a MAC, an
//! address); the record is keyed by the node's xname when the inventory knows
//! the caller, else by MAC, else by address, so unknown machines show up too.
//! Times are Unix milliseconds passed in by the caller; nothing here reads a
//! clock.
//!
//! A record holds one boot. A new boot is recognised at the first DHCP
//! DISCOVER of a boot client (PXE firmware, or iPXE: a client sending
//! option 93 or iPXE's user class) after the current boot fetched its boot
//! script or got further. That covers every firmware path with one rule:
//! legacy or UEFI PXE firmware (its DISCOVER comes before TFTP), a PXE ROM
//! that is iPXE itself (qemu's, many NICs': its first DISCOVER is the boot's
//! first packet), and the iPXE chained from TFTP, whose DISCOVER comes after
//! TFTP but before any script fetch of this boot and so never splits one.
//! The booted OS's DHCP (the kernel's `ip=dhcp`, dhclient) sends no option
//! 93 and is not iPXE, and renewals are REQUESTs, so they never start one.
//! A firmware retry before the script (a TFTP that failed) stays in the boot
//! it retries. No clock is involved, so a slow boot is never cut in two.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;

use serde::Serialize;

use super::params::component_of_mac;
use crate::inventory::{Model, mac};

/// Nodes (or unknown callers) kept at most, so a scan of unknown MACs cannot
/// grow the record without bound.
const MAX_NODES: usize = 200_000;

/// One step of the netboot chain, in boot order.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    Dhcp,
    Tftp,
    Script,
    Kernel,
    Initrd,
    MetaData,
    PhoneHome,
}

impl Step {
    pub const ALL: [Step; 7] = [
        Step::Dhcp,
        Step::Tftp,
        Step::Script,
        Step::Kernel,
        Step::Initrd,
        Step::MetaData,
        Step::PhoneHome,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::Dhcp => "dhcp",
            Step::Tftp => "tftp",
            Step::Script => "script",
            Step::Kernel => "kernel",
            Step::Initrd => "initrd",
            Step::MetaData => "meta-data",
            Step::PhoneHome => "phone-home",
        }
    }
}

/// When a step was seen during the current boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Seen {
    /// First time in this boot (Unix ms).
    pub first_ms: i64,
    /// Latest time (Unix ms).
    pub last_ms: i64,
    /// How often in this boot (DHCP runs several times per boot).
    pub count: u32,
    /// What was asked for: a file name, a DHCP message, a path.
    pub detail: String,
}

/// Everything seen for one node (or one unknown caller).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct NodeSteps {
    /// The node's xname; empty for a caller the inventory does not know.
    pub name: String,
    pub mac: String,
    pub ip: String,
    /// When this boot began (the first step recorded since the last reset).
    pub boot_started_ms: i64,
    /// The latest step seen, by time.
    pub last_step: Option<Step>,
    pub last_seen_ms: i64,
    pub steps: BTreeMap<Step, Seen>,
    /// Where to read the node's serial console, for a boot that has not
    /// phoned home (stopped, or still on its way) of a node that has a
    /// console; filled in by the API from the console service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub console: Option<ConsoleLog>,
    /// `ip` as an address, to see whether it changed without formatting.
    #[serde(skip)]
    pub last_ip: Option<IpAddr>,
}

/// A pointer to a node's console log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ConsoleLog {
    /// The API path that prints the log's end (a WebSocket, as
    /// `openchami console <xname> --tail --lines 100` reads it).
    pub tail: String,
    /// The log file on the appliance's host.
    pub log: String,
}

impl NodeSteps {
    /// Whether the boot is worth a look at the console: a known node whose
    /// boot has not reached phone-home, the last step.
    pub fn wants_console(&self) -> bool {
        !self.name.is_empty() && self.last_step != Some(Step::PhoneHome)
    }

    /// Points the record at `log`, the node's console log, when it wants it.
    pub fn point_to_console(&mut self, log: Option<&std::path::Path>) {
        self.console = match log {
            Some(p) if self.wants_console() => Some(ConsoleLog {
                tail: format!("/remote-console/consoles/{}?mode=tail&lines=100", self.name),
                log: p.display().to_string(),
            }),
            _ => None,
        };
    }
}

/// Who a caller is, as far as the inventory tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: Option<String>,
    pub mac: Option<String>,
    pub ip: Option<IpAddr>,
}

impl Caller {
    /// The record key: xname, else MAC, else address.
    fn key(&self) -> Option<String> {
        self.name
            .clone()
            .or_else(|| self.mac.clone())
            .or_else(|| self.ip.map(|i| i.to_string()))
    }
}

/// Resolves a caller from a MAC and/or an address: the MAC's inventory
/// interface, else the address (inventory interface, else DHCP lease).
pub fn caller(model: &Model, mac_in: Option<&str>, ip: Option<IpAddr>, now_secs: i64) -> Caller {
    let mac_n = mac_in.and_then(|m| mac::normalize(m).ok());
    let ip = ip.map(|ip| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    });
    if let Some(m) = &mac_n
        && let Some(c) = component_of_mac(model, m)
    {
        return Caller {
            name: Some(c.id.clone()),
            mac: mac_n,
            ip,
        };
    }
    // A MAC the inventory does not know is its own caller, even if the
    // address it uses belongs to a node (a pool address reused, a NAT).
    if let Some(addr) = ip.filter(|_| mac_n.is_none())
        && let Some((c, _)) = crate::metadata::identify::node_by_address(model, addr, now_secs)
    {
        let mac = super::params::first_mac(model, &c.id);
        return Caller {
            name: Some(c.id.clone()),
            mac,
            ip,
        };
    }
    Caller {
        name: None,
        mac: mac_n,
        ip,
    }
}

/// Which step an `/artifacts/` fetch is: the node's configured kernel or
/// initrd when the path matches one, else guessed from the file name.
pub fn artifact_step(model: &Model, caller: &Caller, path: &str) -> Step {
    let config = caller
        .name
        .as_ref()
        .and_then(|n| model.components.get(n))
        .and_then(|c| super::params::config_for(model, c, caller.mac.as_deref()));
    let ends = |url: &str| !url.is_empty() && url_path(url) == path;
    if let Some(b) = config {
        if ends(&b.kernel) {
            return Step::Kernel;
        }
        if ends(&b.initrd) {
            return Step::Initrd;
        }
    }
    let file = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    if file.contains("initrd") || file.contains("initramfs") || file.contains(".cpio") {
        Step::Initrd
    } else {
        Step::Kernel
    }
}

/// The path part of a URL (`http://h:1/a/b?q` → `/a/b`).
fn url_path(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    path.split(['?', '#']).next().unwrap_or(path)
}

/// The new-boot rule (module docs): a boot client's DISCOVER after the
/// current boot reached its boot script or a later step.
pub fn starts_new_boot(boot_discover: bool, mut seen: impl Iterator<Item = Step>) -> bool {
    boot_discover && seen.any(|s| s >= Step::Script)
}

#[derive(Default)]
struct Inner {
    by_key: HashMap<String, NodeSteps>,
    /// Where a step's detail is written before it is compared, so an
    /// unchanged detail costs no allocation.
    scratch: String,
}

/// The record; shared by every adapter (`Arc` in the app state).
#[derive(Default)]
pub struct BootSteps(Mutex<Inner>, tokio::sync::watch::Sender<u64>);

impl BootSteps {
    /// Records that `caller` reached `step` at `at_ms`.
    pub fn record(&self, caller: &Caller, step: Step, detail: &str, at_ms: i64) {
        self.record_inner(caller, step, detail, at_ms, false);
    }

    /// The hook the DHCP server calls for every request it answers.
    /// `boot_discover` is true for a DISCOVER from a boot client (PXE
    /// firmware or iPXE): that starts a new boot when the node's current one
    /// fetched its boot script or got further (see the module docs), so the
    /// record always shows one boot.
    ///
    /// It runs once per DHCP packet, so it resolves the MAC with one lookup
    /// and, for a node already recorded, allocates nothing.
    pub fn dhcp(
        &self,
        model: &Model,
        mac: &[u8; 6],
        ip: Option<IpAddr>,
        boot_discover: bool,
        detail: impl std::fmt::Display,
        at_ms: i64,
    ) {
        let name = model
            .interfaces
            .get(&mac::to_id(mac))
            .and_then(|i| model.components.get(&i.component_id))
            .map(|c| c.id.as_str());
        let colon = mac::to_colon(mac);
        let key = name.unwrap_or(&colon);
        self.update(
            key,
            name,
            Some(&colon),
            ip,
            Step::Dhcp,
            detail,
            at_ms,
            boot_discover,
        );
    }

    fn record_inner(&self, caller: &Caller, step: Step, detail: &str, at_ms: i64, new_boot: bool) {
        let Some(key) = caller.key() else {
            return;
        };
        self.update(
            &key,
            caller.name.as_deref(),
            caller.mac.as_deref(),
            caller.ip,
            step,
            detail,
            at_ms,
            new_boot,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn update(
        &self,
        key: &str,
        name: Option<&str>,
        mac: Option<&str>,
        ip: Option<IpAddr>,
        step: Step,
        detail: impl std::fmt::Display,
        at_ms: i64,
        new_boot: bool,
    ) {
        use std::fmt::Write as _;
        let Ok(mut guard) = self.0.lock() else {
            return;
        };
        let inner = &mut *guard;
        if !inner.by_key.contains_key(key) {
            if inner.by_key.len() >= MAX_NODES {
                return;
            }
            inner.by_key.insert(
                key.to_string(),
                NodeSteps {
                    name: name.unwrap_or_default().to_string(),
                    mac: String::new(),
                    ip: String::new(),
                    boot_started_ms: at_ms,
                    last_step: None,
                    last_seen_ms: at_ms,
                    steps: BTreeMap::new(),
                    console: None,
                    last_ip: None,
                },
            );
        }
        let Some(rec) = inner.by_key.get_mut(key) else {
            return;
        };
        if starts_new_boot(new_boot, rec.steps.keys().copied()) {
            rec.steps.clear();
            rec.boot_started_ms = at_ms;
        }
        if rec.steps.is_empty() {
            rec.boot_started_ms = at_ms;
        }
        if let Some(m) = mac
            && rec.mac != m
        {
            rec.mac.clear();
            rec.mac.push_str(m);
        }
        if let Some(ip) = ip
            && rec.last_ip != Some(ip)
        {
            rec.last_ip = Some(ip);
            rec.ip = ip.to_string();
        }
        let seen = rec.steps.entry(step).or_insert_with(|| Seen {
            first_ms: at_ms,
            last_ms: at_ms,
            count: 0,
            detail: String::new(),
        });
        seen.last_ms = seen.last_ms.max(at_ms);
        seen.count = seen.count.saturating_add(1);
        inner.scratch.clear();
        let _ = write!(inner.scratch, "{detail}");
        if seen.detail != inner.scratch {
            seen.detail.clone_from(&inner.scratch);
        }
        if at_ms >= rec.last_seen_ms || rec.last_step.is_none() {
            rec.last_seen_ms = at_ms;
            rec.last_step = Some(step);
        }
        drop(guard);
        self.1.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Counts the updates: the receiver wakes after each (many in between
    /// wake it once), for readers that follow boots without polling.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.1.subscribe()
    }

    /// The record of one node by xname, without scanning the others.
    pub fn of(&self, xname: &str) -> Option<NodeSteps> {
        self.0.lock().ok()?.by_key.get(xname).cloned()
    }

    /// The furthest step in boot order each recorded node reached in its
    /// current boot, and when it was last seen, by xname (unknown callers
    /// left out).
    pub fn last_steps(&self) -> HashMap<String, (Step, i64)> {
        let Ok(inner) = self.0.lock() else {
            return HashMap::new();
        };
        inner
            .by_key
            .values()
            .filter(|r| !r.name.is_empty())
            .filter_map(|r| {
                let furthest = *r.steps.keys().next_back()?;
                Some((r.name.clone(), (furthest, r.last_seen_ms)))
            })
            .collect()
    }

    /// Every record (or the one named `name`: xname, MAC or address), in key
    /// order.
    pub fn query(&self, name: Option<&str>) -> Vec<NodeSteps> {
        let Ok(inner) = self.0.lock() else {
            return Vec::new();
        };
        let mut v: Vec<(&String, &NodeSteps)> = inner
            .by_key
            .iter()
            .filter(|(k, r)| {
                name.is_none_or(|n| k.as_str() == n || r.mac.eq_ignore_ascii_case(n) || r.ip == n)
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v.into_iter().map(|(_, r)| r.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Store;
    use crate::inventory::model::{BootConfig, Component, EthernetInterface};
    use crate::inventory::model::{IpAddressMapping, Lease};

    #[test]
    fn a_boot_that_did_not_phone_home_points_to_the_console() {
        let rec = |name: &str, last: Option<Step>| NodeSteps {
            name: name.into(),
            mac: String::new(),
            ip: String::new(),
            boot_started_ms: 0,
            last_step: last,
            last_seen_ms: 0,
            steps: BTreeMap::new(),
            console: None,
            last_ip: None,
        };
        let log = std::path::Path::new("/var/lib/openchami/consoles/console.x1c0s0b0n0");
        // (case, xname, last step, console log, pointer?)
        let table = [
            (
                "stopped at the kernel",
                "x1c0s0b0n0",
                Some(Step::Kernel),
                Some(log),
                true,
            ),
            (
                "stopped at DHCP",
                "x1c0s0b0n0",
                Some(Step::Dhcp),
                Some(log),
                true,
            ),
            (
                "phoned home",
                "x1c0s0b0n0",
                Some(Step::PhoneHome),
                Some(log),
                false,
            ),
            ("no console", "x1c0s0b0n0", Some(Step::Kernel), None, false),
            ("unknown caller", "", Some(Step::Dhcp), Some(log), false),
        ];
        for (case, name, last, l, want) in table {
            let mut r = rec(name, last);
            r.point_to_console(l);
            assert_eq!(r.console.is_some(), want, "{case}");
            let v = serde_json::to_value(&r).unwrap();
            assert_eq!(v.get("console").is_some(), want, "{case}: {v}");
            if let Some(c) = r.console {
                assert_eq!(
                    c.tail,
                    "/remote-console/consoles/x1c0s0b0n0?mode=tail&lines=100"
                );
                assert_eq!(c.log, log.display().to_string());
            }
        }
    }

    async fn model() -> Store {
        let store = Store::open_in_memory().unwrap();
        store
            .write(|t| {
                let mut n = Component::new("x0c0s0b0n0".into(), "Node".into());
                n.nid = Some(1);
                n.state = "Ready".into();
                t.put_component(n);
                t.put_component(Component::new("x0c0s1b0n0".into(), "Node".into()));
                t.put_interface(EthernetInterface {
                    id: mac::id_of("52:54:00:00:00:01").unwrap(),
                    description: String::new(),
                    mac_address: "52:54:00:00:00:01".into(),
                    last_update: String::new(),
                    component_id: "x0c0s0b0n0".into(),
                    kind: String::new(),
                    ip_addresses: vec![IpAddressMapping {
                        ip_address: "10.0.0.1".into(),
                        network: String::new(),
                    }],
                });
                t.put_interface(EthernetInterface {
                    id: mac::id_of("52:54:00:00:00:02").unwrap(),
                    description: String::new(),
                    mac_address: "52:54:00:00:00:02".into(),
                    last_update: String::new(),
                    component_id: "x0c0s1b0n0".into(),
                    kind: String::new(),
                    ip_addresses: Vec::new(),
                });
                t.put_lease(Lease {
                    ip: "10.0.9.2".parse().unwrap(),
                    mac: "52:54:00:00:00:02".into(),
                    expires: None,
                });
                t.put_boot_config(BootConfig {
                    id: "b1".into(),
                    hosts: vec!["x0c0s0b0n0".into()],
                    macs: Vec::new(),
                    nids: Vec::new(),
                    kernel: "http://10.0.0.254:27778/artifacts/lab/vmlinuz".into(),
                    initrd: "http://10.0.0.254:27778/artifacts/lab/boot.img?v=1".into(),
                    params: String::new(),
                    cloud_init: serde_json::Value::Null,
                    bound: true,
                    groups: Vec::new(),
                    profile: String::new(),
                    priority: 0,
                    meta: Default::default(),
                    status: serde_json::Value::Null,
                });
                Ok(())
            })
            .await
            .unwrap();
        store
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[tokio::test]
    async fn callers_resolve_by_mac_then_address() {
        let store = model().await;
        let m = store.snapshot();
        let c = caller(&m, Some("52-54-00-00-00-01"), None, 0);
        assert_eq!(c.name.as_deref(), Some("x0c0s0b0n0"));
        assert_eq!(c.mac.as_deref(), Some("52:54:00:00:00:01"));
        let c = caller(&m, None, ip("10.0.0.1"), 0);
        assert_eq!(c.name.as_deref(), Some("x0c0s0b0n0"));
        assert_eq!(c.mac.as_deref(), Some("52:54:00:00:00:01"));
        let c = caller(&m, None, ip("::ffff:10.0.9.2"), 0);
        assert_eq!(c.name.as_deref(), Some("x0c0s1b0n0"), "by lease");
        assert_eq!(c.ip, ip("10.0.9.2"));
        let c = caller(&m, Some("02:00:00:00:00:99"), ip("10.0.0.77"), 0);
        assert_eq!(c.name, None);
        assert_eq!(c.key().as_deref(), Some("02:00:00:00:00:99"));
        assert_eq!(
            caller(&m, None, ip("10.0.0.77"), 0).key().as_deref(),
            Some("10.0.0.77")
        );
    }

    #[tokio::test]
    async fn artifacts_are_told_apart_by_the_boot_configuration() {
        let store = model().await;
        let m = store.snapshot();
        let c = caller(&m, None, ip("10.0.0.1"), 0);
        assert_eq!(
            artifact_step(&m, &c, "/artifacts/lab/vmlinuz"),
            Step::Kernel
        );
        assert_eq!(
            artifact_step(&m, &c, "/artifacts/lab/boot.img"),
            Step::Initrd
        );
        let unknown = caller(&m, None, ip("10.0.0.77"), 0);
        assert_eq!(
            artifact_step(&m, &unknown, "/artifacts/x/initramfs.gz"),
            Step::Initrd
        );
        assert_eq!(
            artifact_step(&m, &unknown, "/artifacts/x/bzImage"),
            Step::Kernel
        );
        assert_eq!(url_path("http://h:1/a/b?q=1#f"), "/a/b");
        assert_eq!(url_path("http://h:1"), "");
    }

    #[tokio::test]
    async fn one_boot_at_a_time() {
        let store = model().await;
        let m = store.snapshot();
        let s = BootSteps::default();
        let mac_s = "52:54:00:00:00:01";
        let mac = &mac::parse(mac_s).unwrap();
        s.dhcp(&m, mac, None, true, "DISCOVER", 1_000);
        s.dhcp(&m, mac, ip("10.0.0.1"), true, "REQUEST", 1_100);
        let c = caller(&m, Some(mac_s), None, 1);
        s.record(&c, Step::Tftp, "undionly.kpxe", 1_500);
        s.dhcp(&m, mac, ip("10.0.0.1"), false, "REQUEST", 2_000);
        s.record(&c, Step::Script, "bootscript", 2_100);
        s.record(
            &caller(&m, None, ip("10.0.0.1"), 2),
            Step::Kernel,
            "k",
            2_500,
        );
        let r = &s.query(Some("x0c0s0b0n0"))[0];
        assert_eq!(r.boot_started_ms, 1_000);
        assert_eq!(r.last_step, Some(Step::Kernel));
        assert_eq!(r.ip, "10.0.0.1");
        let d = &r.steps[&Step::Dhcp];
        assert_eq!((d.first_ms, d.last_ms, d.count), (1_000, 2_000, 3));
        // Found by MAC and by address as well as by name.
        assert_eq!(s.query(Some("52:54:00:00:00:01")).len(), 1);
        assert_eq!(s.query(Some("10.0.0.1")).len(), 1);
        // The next firmware DHCP starts a new boot: the old steps go.
        s.dhcp(&m, mac, None, true, "DISCOVER", 9_000);
        let r = &s.query(Some("x0c0s0b0n0"))[0];
        assert_eq!(r.boot_started_ms, 9_000);
        assert_eq!(
            r.steps.keys().copied().collect::<Vec<_>>(),
            vec![Step::Dhcp]
        );
        // A firmware retry before the script keeps the boot.
        s.record(&c, Step::Tftp, "undionly.kpxe", 9_500);
        s.dhcp(&m, mac, None, true, "DISCOVER", 9_800);
        assert_eq!(s.query(None)[0].steps.len(), 2);
        // Unknown callers are kept by MAC.
        s.dhcp(&m, &[2, 0, 0, 0, 0, 9], None, true, "DISCOVER", 10);
        assert_eq!(s.query(None).len(), 2);
        assert_eq!(s.query(Some("02:00:00:00:00:09"))[0].name, "");
    }

    /// What one boot looks like to the appliance, per firmware path:
    /// `(step, boot_discover)` in order; DHCP steps go through `dhcp`.
    fn boot_of(path: &str) -> Vec<(Step, bool)> {
        let os = [
            (Step::Kernel, false),
            (Step::Initrd, false),
            (Step::Dhcp, false), // the kernel's ip=dhcp
            (Step::MetaData, false),
        ];
        let head: &[(Step, bool)] = match path {
            // Legacy PXE ROM: DISCOVER, REQUEST, TFTP undionly, then iPXE.
            "bios-pxe" | "uefi-pxe" => &[
                (Step::Dhcp, true),
                (Step::Dhcp, false),
                (Step::Tftp, false),
                (Step::Dhcp, true),
                (Step::Dhcp, false),
                (Step::Script, false),
                (Step::Script, false),
            ],
            // The PXE ROM is iPXE: no TFTP, straight to the script.
            "ipxe-rom" => &[
                (Step::Dhcp, true),
                (Step::Dhcp, false),
                (Step::Script, false),
                (Step::Script, false),
            ],
            _ => unreachable!(),
        };
        head.iter().copied().chain(os).collect()
    }

    #[tokio::test]
    async fn every_firmware_path_starts_a_new_boot() {
        let store = model().await;
        let m = store.snapshot();
        let mac_s = "52:54:00:00:00:01";
        let mac = &mac::parse(mac_s).unwrap();
        let c = caller(&m, Some(mac_s), None, 0);
        for path in ["bios-pxe", "uefi-pxe", "ipxe-rom"] {
            let s = BootSteps::default();
            let events = boot_of(path);
            let mut starts = Vec::new();
            for boot in 0..2i64 {
                let t0 = 10_000 * (boot + 1);
                for (i, (step, discover)) in events.iter().enumerate() {
                    let at = t0 + i as i64;
                    match step {
                        Step::Dhcp => s.dhcp(&m, mac, ip("10.0.0.1"), *discover, "x", at),
                        _ => s.record(&c, *step, "x", at),
                    }
                }
                let r = &s.query(Some("x0c0s0b0n0"))[0];
                starts.push(r.boot_started_ms);
                let dhcp_packets = events.iter().filter(|(s, _)| *s == Step::Dhcp).count();
                assert_eq!(
                    r.steps[&Step::Dhcp].count as usize,
                    dhcp_packets,
                    "{path} boot {boot}: one boot's DHCP only"
                );
                assert_eq!(r.steps[&Step::Script].count, 2, "{path} boot {boot}");
                assert_eq!(r.steps[&Step::Kernel].count, 1, "{path} boot {boot}");
            }
            assert_eq!(starts, vec![10_000, 20_000], "{path}");
        }
        // The rule itself.
        assert!(!starts_new_boot(true, [Step::Dhcp, Step::Tftp].into_iter()));
        assert!(starts_new_boot(
            true,
            [Step::Dhcp, Step::Script].into_iter()
        ));
        assert!(!starts_new_boot(false, [Step::MetaData].into_iter()));
    }
}
