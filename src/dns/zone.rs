//! What a DNS question gets: a pure function of one inventory snapshot, the
//! settings and the address the question arrived at.
//!
//! [`Zone::build`] indexes a snapshot once (names → addresses, addresses →
//! names), so an answer is a hash lookup; the server rebuilds the index when
//! the store's generation moves, which is why a node added, renamed or
//! re-addressed through any API is answered correctly on the next query and
//! the SOA serial is the generation. Names follow the rules the rest of the
//! appliance already uses: a node's host name is DHCP option 12's (a
//! `rule=` host name, else cloud-init's `local-hostname`), a BMC's is its
//! `rule=` host name; every component with an address is also found by its
//! xname. Questions outside the zones get [`Answer::Elsewhere`] (the server
//! forwards or refuses them).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;
use smallvec::SmallVec;

use super::settings::{Net, Settings, Static, in_zone, normalize};
use crate::dhcp::rules::{self, Target};
use crate::inventory::Model;
use crate::inventory::model::Component;
use crate::metadata::document;

/// SOA timers: refresh, retry, expire (no secondaries use them; resolvers
/// read only the minimum, the negative TTL).
const SOA_TIMERS: (i32, i32, i32) = (3600, 600, 86400);

/// Record data, in the zone's own terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum Data {
    A(Ipv4Addr),
    #[serde(rename = "AAAA")]
    Aaaa(Ipv6Addr),
    #[serde(rename = "CNAME")]
    Cname(String),
    #[serde(rename = "PTR")]
    Ptr(String),
    #[serde(rename = "NS")]
    Ns(String),
    #[serde(rename = "SOA")]
    Soa(Soa),
    #[serde(rename = "TXT")]
    Txt(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Soa {
    pub mname: String,
    pub rname: String,
    pub serial: u32,
    pub minimum: u32,
}

impl Soa {
    pub fn timers(&self) -> (i32, i32, i32) {
        SOA_TIMERS
    }
}

/// One resource record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Rr {
    pub name: String,
    pub ttl: u32,
    #[serde(flatten)]
    pub data: Data,
}

/// Query types the zone knows; others are answered with no data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QType {
    A,
    Aaaa,
    Cname,
    Ptr,
    Ns,
    Soa,
    Txt,
    Any,
    Other(u16),
}

impl QType {
    pub fn parse(s: &str) -> Option<QType> {
        Some(match s.to_ascii_uppercase().as_str() {
            "A" => QType::A,
            "AAAA" => QType::Aaaa,
            "CNAME" => QType::Cname,
            "PTR" => QType::Ptr,
            "NS" => QType::Ns,
            "SOA" => QType::Soa,
            "TXT" => QType::Txt,
            "ANY" => QType::Any,
            _ => return None,
        })
    }

    fn wants(self, d: &Data) -> bool {
        matches!(
            (self, d),
            (QType::Any, _)
                | (QType::A, Data::A(_))
                | (QType::Aaaa, Data::Aaaa(_))
                | (QType::Cname, Data::Cname(_))
                | (QType::Ptr, Data::Ptr(_))
                | (QType::Ns, Data::Ns(_))
                | (QType::Soa, Data::Soa(_))
                | (QType::Txt, Data::Txt(_))
        )
    }
}

/// The question: a name (any case, trailing dot or not) and a type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub name: String,
    pub qtype: QType,
}

/// Where a question arrived: the head's names answer with these.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Arrival {
    /// The address the query was sent to.
    pub local: Option<IpAddr>,
    /// Every address of that interface.
    pub interface: Vec<IpAddr>,
}

impl Arrival {
    fn v4(&self) -> Vec<Ipv4Addr> {
        match self.local {
            Some(IpAddr::V4(a)) => vec![a],
            _ => self
                .interface
                .iter()
                .filter_map(|a| match a {
                    IpAddr::V4(v) if !v.is_loopback() => Some(*v),
                    _ => None,
                })
                .collect(),
        }
    }

    fn v6(&self) -> Vec<Ipv6Addr> {
        match self.local {
            Some(IpAddr::V6(a)) if a.to_ipv4_mapped().is_none() => vec![a],
            _ => self
                .interface
                .iter()
                .filter_map(|a| match a {
                    IpAddr::V6(v) if !v.is_loopback() && !v.is_unicast_link_local() => Some(*v),
                    _ => None,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub enum Rcode {
    NoError,
    NxDomain,
}

/// What a question gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Ours: authoritative data or its absence (with the SOA).
    Zone {
        rcode: Rcode,
        answers: Vec<Rr>,
        authority: Vec<Rr>,
    },
    /// Not in any zone served here: forward or refuse.
    Elsewhere,
}

/// What one owner name holds.
#[derive(Debug, Clone, Default)]
struct Entry {
    v4: SmallVec<[Ipv4Addr; 2]>,
    v6: SmallVec<[Ipv6Addr; 1]>,
    cname: Option<String>,
    txt: Vec<String>,
    head: bool,
}

impl Entry {
    fn push(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(a) if !self.v4.contains(&a) => self.v4.push(a),
            IpAddr::V6(a) if !self.v6.contains(&a) => self.v6.push(a),
            _ => {}
        }
    }
}

/// One snapshot's names, indexed.
#[derive(Debug, Clone)]
pub struct Zone {
    pub generation: u64,
    apex: String,
    ttl: u32,
    mname: String,
    names: HashMap<String, Entry>,
    /// Names that exist only because a longer name does (RFC 8020: NODATA,
    /// not NXDOMAIN).
    between: HashSet<String>,
    ptr: HashMap<IpAddr, String>,
    networks: Vec<Net>,
}

/// The name a `rule=` or cloud-init host name takes in the zone: itself when
/// inside it, else its first label under the zone.
fn in_apex(host: &str, apex: &str) -> Option<String> {
    let n = normalize(host).ok()?;
    if in_zone(&n, apex) {
        return (n != apex).then_some(n);
    }
    let first = n.split('.').next()?;
    Some(format!("{first}.{apex}"))
}

/// The reverse name of `ip` (`4.3.2.1.in-addr.arpa`, nibbles for IPv6).
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(a) => {
            let mut s = String::with_capacity(72);
            for b in a.octets().iter().rev() {
                s.push(nibble(b & 0xf));
                s.push('.');
                s.push(nibble(b >> 4));
                s.push('.');
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}

fn nibble(n: u8) -> char {
    char::from_digit(u32::from(n), 16).unwrap_or('0')
}

/// The address a complete reverse name stands for.
pub fn parse_reverse(name: &str) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let o: Vec<u8> = rest
            .split('.')
            .map(|l| l.parse().ok().filter(|_| !l.starts_with('+')))
            .collect::<Option<_>>()?;
        if o.len() != 4 {
            return None;
        }
        return Some(IpAddr::V4(Ipv4Addr::new(o[3], o[2], o[1], o[0])));
    }
    let rest = name.strip_suffix(".ip6.arpa")?;
    let n: Vec<u8> = rest
        .split('.')
        .map(|l| {
            (l.len() == 1)
                .then(|| l.chars().next()?.to_digit(16))
                .flatten()
                .map(|d| d as u8)
        })
        .collect::<Option<_>>()?;
    if n.len() != 32 {
        return None;
    }
    let mut v: u128 = 0;
    for d in n.iter().rev() {
        v = (v << 4) | u128::from(*d);
    }
    Some(IpAddr::V6(Ipv6Addr::from(v)))
}

/// The reverse zone apex of a network: its octet (nibble) boundary at or
/// above the prefix.
fn reverse_apex(n: &Net) -> String {
    let full = reverse_name(n.addr);
    let (labels, keep) = match n.addr {
        IpAddr::V4(_) => (4usize, usize::from(n.prefix / 8)),
        IpAddr::V6(_) => (32usize, usize::from(n.prefix / 4)),
    };
    let drop = labels - keep;
    full.splitn(drop + 1, '.')
        .last()
        .unwrap_or(&full)
        .to_string()
}

impl Zone {
    /// Indexes `model` under `s`.
    pub fn build(model: &Model, generation: u64, s: &Settings) -> Zone {
        let apex = s.domain.clone();
        let mut names: HashMap<String, Entry> = HashMap::new();
        let mut ptr: HashMap<IpAddr, String> = HashMap::new();
        let mut add = |names: &mut HashMap<String, Entry>, name: &str, ip: IpAddr, primary| {
            names.entry(name.to_string()).or_default().push(ip);
            if primary {
                ptr.entry(ip).or_insert_with(|| name.to_string());
            }
        };
        let mut named = |comp: &Component, ip: IpAddr, names: &mut HashMap<String, Entry>| {
            let domain = s
                .subnet_domains
                .iter()
                .find(|(n, _)| n.contains(ip))
                .map_or("", |(_, d)| d.as_str());
            let rule = match ip {
                IpAddr::V4(v4) => {
                    rules::evaluate(
                        &s.rules,
                        &Target {
                            kind: &comp.kind,
                            id: &comp.id,
                            nid: comp.nid,
                            ip: v4,
                            global_domain: domain,
                        },
                    )
                    .hostname
                }
                IpAddr::V6(_) => None,
            };
            let host = rule.or_else(|| {
                comp.is_node()
                    .then(|| document::node_hostname(model, comp, &s.cluster_name))
            });
            let xname = in_apex(&comp.id, &apex);
            let host = host
                .and_then(|h| in_apex(&h, &apex))
                .filter(|h| Some(h) != xname.as_ref());
            if let Some(h) = &host {
                add(names, h, ip, true);
            }
            if let Some(x) = &xname {
                add(names, x, ip, host.is_none());
            }
        };
        for iface in model.interfaces.values() {
            let Some(comp) = model.component(&iface.component_id) else {
                continue;
            };
            for a in &iface.ip_addresses {
                if let Ok(ip) = a.ip_address.trim().parse::<IpAddr>() {
                    named(comp, ip, &mut names);
                }
            }
        }
        // BMCs known only as Redfish endpoints (discovered, not yet with
        // an interface record) still answer by xname and rule name.
        for ep in model.redfish_endpoints.values() {
            let Ok(ip) = ep.ip_address.trim().parse::<IpAddr>() else {
                continue;
            };
            let comp = model
                .component(&ep.id)
                .cloned()
                .unwrap_or_else(|| Component::new(ep.id.clone(), ep.kind.clone()));
            named(&comp, ip, &mut names);
        }
        for r in &s.records {
            match r {
                Static::Addr(n, ip) => {
                    let e = names.entry(n.clone()).or_default();
                    e.push(*ip);
                }
                Static::Cname(n, t) => {
                    // A CNAME owns its name alone (RFC 1034 §3.6.2).
                    names.insert(
                        n.clone(),
                        Entry {
                            cname: Some(t.clone()),
                            ..Entry::default()
                        },
                    );
                }
                Static::Txt(n, t) => names.entry(n.clone()).or_default().txt.push(t.clone()),
            }
        }
        for h in &s.head_names {
            names.insert(
                h.clone(),
                Entry {
                    head: true,
                    ..Entry::default()
                },
            );
        }
        let mut between = HashSet::new();
        for n in names.keys() {
            let mut rest = n.as_str();
            while let Some((_, up)) = rest.split_once('.') {
                if up.len() <= apex.len() {
                    break;
                }
                between.insert(up.to_string());
                rest = up;
            }
        }
        Zone {
            generation,
            mname: s
                .head_names
                .first()
                .cloned()
                .unwrap_or_else(|| format!("ns.{apex}")),
            apex,
            ttl: s.ttl,
            names,
            between,
            ptr,
            networks: s.networks.clone(),
        }
    }

    pub fn apex(&self) -> &str {
        &self.apex
    }

    fn soa(&self, owner: &str) -> Rr {
        Rr {
            name: owner.to_string(),
            ttl: self.ttl,
            data: Data::Soa(Soa {
                mname: self.mname.clone(),
                rname: format!("hostmaster.{}", self.apex),
                serial: self.generation as u32,
                minimum: self.ttl,
            }),
        }
    }

    fn rr(&self, name: &str, data: Data) -> Rr {
        Rr {
            name: name.to_string(),
            ttl: self.ttl,
            data,
        }
    }

    /// The records `name` owns, for the types `q` wants.
    fn owned(&self, name: &str, e: &Entry, q: QType, at: &Arrival, out: &mut Vec<Rr>) {
        let (v4, v6) = if e.head {
            (at.v4(), at.v6())
        } else {
            (e.v4.to_vec(), e.v6.to_vec())
        };
        let all = v4
            .into_iter()
            .map(Data::A)
            .chain(v6.into_iter().map(Data::Aaaa))
            .chain(e.cname.iter().cloned().map(Data::Cname))
            .chain(e.txt.iter().cloned().map(Data::Txt));
        out.extend(all.filter(|d| q.wants(d)).map(|d| self.rr(name, d)));
    }

    /// Answers `q` arriving at `at`.
    pub fn answer(&self, q: &Question, at: &Arrival) -> Answer {
        let name = q.name.trim_end_matches('.').to_ascii_lowercase();
        if in_zone(&name, &self.apex) {
            return self.forward(&name, q.qtype, at);
        }
        if let Some(ip) = parse_reverse(&name)
            && let Some(net) = self.networks.iter().find(|n| n.contains(ip))
        {
            let apex = reverse_apex(net);
            return match self.ptr.get(&ip) {
                Some(target) => {
                    let answers = if q.qtype.wants(&Data::Ptr(String::new())) {
                        vec![self.rr(&name, Data::Ptr(target.clone()))]
                    } else {
                        Vec::new()
                    };
                    let authority = if answers.is_empty() {
                        vec![self.soa(&apex)]
                    } else {
                        Vec::new()
                    };
                    Answer::Zone {
                        rcode: Rcode::NoError,
                        answers,
                        authority,
                    }
                }
                None => Answer::Zone {
                    rcode: Rcode::NxDomain,
                    answers: Vec::new(),
                    authority: vec![self.soa(&apex)],
                },
            };
        }
        if let Some(net) = self
            .networks
            .iter()
            .find(|n| in_zone(&name, &reverse_apex(n)))
            .filter(|_| parse_reverse(&name).is_none())
        {
            // The reverse apex itself, or a partial name under it.
            let apex = reverse_apex(net);
            let mut answers = Vec::new();
            if name == apex {
                let soa = self.soa(&apex);
                if q.qtype.wants(&soa.data) {
                    answers.push(soa);
                }
                if q.qtype.wants(&Data::Ns(String::new())) {
                    answers.push(self.rr(&apex, Data::Ns(self.mname.clone())));
                }
            }
            let authority = if answers.is_empty() {
                vec![self.soa(&apex)]
            } else {
                Vec::new()
            };
            return Answer::Zone {
                rcode: Rcode::NoError,
                answers,
                authority,
            };
        }
        Answer::Elsewhere
    }

    fn forward(&self, name: &str, qtype: QType, at: &Arrival) -> Answer {
        let mut answers = Vec::new();
        let exists = if name == self.apex {
            let soa = self.soa(&self.apex);
            if qtype.wants(&soa.data) {
                answers.push(soa);
            }
            if qtype.wants(&Data::Ns(String::new())) {
                answers.push(self.rr(&self.apex, Data::Ns(self.mname.clone())));
            }
            true
        } else if let Some(e) = self.names.get(name) {
            // A CNAME answers every type, followed inside the zone (RFC
            // 1034 §4.3.2) for a few hops.
            let (mut owner, mut cur) = (name, e);
            for _ in 0..8 {
                match &cur.cname {
                    Some(t) if qtype != QType::Any => {
                        answers.push(self.rr(owner, Data::Cname(t.clone())));
                        match self.names.get(t.as_str()) {
                            Some(te) if qtype != QType::Cname => (owner, cur) = (t, te),
                            _ => break,
                        }
                    }
                    _ => {
                        self.owned(owner, cur, qtype, at, &mut answers);
                        break;
                    }
                }
            }
            true
        } else {
            self.between.contains(name)
        };
        if !exists {
            return Answer::Zone {
                rcode: Rcode::NxDomain,
                answers,
                authority: vec![self.soa(&self.apex)],
            };
        }
        let authority = if answers.is_empty() {
            vec![self.soa(&self.apex)]
        } else {
            Vec::new()
        };
        Answer::Zone {
            rcode: Rcode::NoError,
            answers,
            authority,
        }
    }

    /// Every record served, sorted by name then type (for `dns zone`). Head
    /// names are listed with the addresses of `at`.
    pub fn records(&self, at: &Arrival) -> Vec<Rr> {
        let mut out = vec![
            self.soa(&self.apex),
            self.rr(&self.apex, Data::Ns(self.mname.clone())),
        ];
        let mut names: Vec<&String> = self.names.keys().collect();
        names.sort();
        for n in names {
            if let Some(e) = self.names.get(n) {
                self.owned(n, e, QType::Any, at, &mut out);
            }
        }
        let mut ptrs: Vec<(&IpAddr, &String)> = self
            .ptr
            .iter()
            .filter(|(ip, _)| self.networks.iter().any(|n| n.contains(**ip)))
            .collect();
        ptrs.sort();
        for (ip, n) in ptrs {
            out.push(self.rr(&reverse_name(*ip), Data::Ptr(n.clone())));
        }
        out
    }

    /// Names in the zone (not counting the head names and the apex).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::inventory::model::{EthernetInterface, IpAddressMapping};
    use std::sync::Arc;

    fn settings(extra: &str) -> Settings {
        let text = format!(
            "cluster_name = \"demo\"\n[dhcp]\nrules = [\"type:NodeBMC,hostname:bmc-{{id}}\"]\n[[dhcp.subnets]]\ncidr = \"172.16.0.0/24\"\ndomain = \"cluster\"\n[dns]\nnetworks = [\"fd00::/64\"]\n{extra}"
        );
        Settings::from_config(&Config::parse(&text, "t").unwrap()).unwrap()
    }

    fn model() -> Model {
        let mut m = Model::default();
        let mut node = Component::new("x1000c0s0b0n0".into(), "Node".into());
        node.nid = Some(1);
        let bmc = Component::new("x1000c0s0b0".into(), "NodeBMC".into());
        for c in [node, bmc] {
            m.components.insert(c.id.clone(), Arc::new(c));
        }
        for (id, comp, ips) in [
            (
                "525400000001",
                "x1000c0s0b0n0",
                vec!["172.16.0.1", "fd00::1"],
            ),
            ("525400000002", "x1000c0s0b0", vec!["172.16.0.101"]),
        ] {
            m.interfaces.insert(
                id.into(),
                Arc::new(EthernetInterface {
                    id: id.into(),
                    description: String::new(),
                    mac_address: id.into(),
                    last_update: String::new(),
                    component_id: comp.into(),
                    kind: String::new(),
                    ip_addresses: ips
                        .into_iter()
                        .map(|ip| IpAddressMapping {
                            ip_address: ip.into(),
                            network: String::new(),
                        })
                        .collect(),
                }),
            );
        }
        m
    }

    fn at() -> Arrival {
        Arrival {
            local: Some("172.16.0.254".parse().unwrap()),
            interface: vec!["172.16.0.254".parse().unwrap(), "fd00::fe".parse().unwrap()],
        }
    }

    fn ask(z: &Zone, name: &str, t: &str) -> (Option<Rcode>, Vec<String>, Vec<String>) {
        let q = Question {
            name: name.into(),
            qtype: QType::parse(t).unwrap(),
        };
        let show = |v: Vec<Rr>| {
            v.into_iter()
                .map(|r| match r.data {
                    Data::A(a) => a.to_string(),
                    Data::Aaaa(a) => a.to_string(),
                    Data::Cname(n) | Data::Ptr(n) | Data::Ns(n) | Data::Txt(n) => n,
                    Data::Soa(s) => format!("SOA {} {}", r.name, s.serial),
                })
                .collect()
        };
        match z.answer(&q, &at()) {
            Answer::Zone {
                rcode,
                answers,
                authority,
            } => (Some(rcode), show(answers), show(authority)),
            Answer::Elsewhere => (None, vec![], vec![]),
        }
    }

    #[test]
    fn questions_and_answers() {
        let s = settings(
            "[[dns.records]]\nname = \"s3.cluster\"\ntype = \"CNAME\"\nvalue = \"de0001.cluster\"\n[[dns.records]]\nname = \"www.svc.cluster\"\ntype = \"A\"\nvalue = \"172.16.0.9\"\n[[dns.records]]\nname = \"out.cluster\"\ntype = \"CNAME\"\nvalue = \"example.org\"\n",
        );
        let z = Zone::build(&model(), 7, &s);
        let ok = Some(Rcode::NoError);
        let nx = Some(Rcode::NxDomain);
        let soa = || vec!["SOA cluster 7".to_string()];
        let none = Vec::<String>::new;
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        for (name, t, want) in [
            // The node by host name (cloud-init's rule: de + NID) and xname.
            ("de0001.cluster", "A", (ok, v(&["172.16.0.1"]), none())),
            ("DE0001.Cluster.", "A", (ok, v(&["172.16.0.1"]), none())),
            ("de0001.cluster", "AAAA", (ok, v(&["fd00::1"]), none())),
            (
                "x1000c0s0b0n0.cluster",
                "A",
                (ok, v(&["172.16.0.1"]), none()),
            ),
            (
                "de0001.cluster",
                "ANY",
                (ok, v(&["172.16.0.1", "fd00::1"]), none()),
            ),
            ("de0001.cluster", "TXT", (ok, none(), soa())),
            // The BMC by xname and by its rule= host name.
            (
                "x1000c0s0b0.cluster",
                "A",
                (ok, v(&["172.16.0.101"]), none()),
            ),
            (
                "bmc-x1000c0s0b0.cluster",
                "A",
                (ok, v(&["172.16.0.101"]), none()),
            ),
            // The head: the address the query arrived at.
            ("openchami.cluster", "A", (ok, v(&["172.16.0.254"]), none())),
            ("openchami.cluster", "AAAA", (ok, v(&["fd00::fe"]), none())),
            // Static records, CNAMEs followed inside the zone only.
            (
                "s3.cluster",
                "A",
                (ok, v(&["de0001.cluster", "172.16.0.1"]), none()),
            ),
            ("s3.cluster", "CNAME", (ok, v(&["de0001.cluster"]), none())),
            ("out.cluster", "A", (ok, v(&["example.org"]), none())),
            ("www.svc.cluster", "A", (ok, v(&["172.16.0.9"]), none())),
            ("svc.cluster", "A", (ok, none(), soa())),
            // Apex and unknown names.
            ("cluster", "SOA", (ok, soa(), none())),
            ("cluster", "NS", (ok, v(&["openchami.cluster"]), none())),
            ("nid0002.cluster", "A", (nx, none(), soa())),
            // Reverse names in served networks.
            (
                "1.0.16.172.in-addr.arpa",
                "PTR",
                (ok, v(&["de0001.cluster"]), none()),
            ),
            (
                "101.0.16.172.in-addr.arpa",
                "PTR",
                (ok, v(&["bmc-x1000c0s0b0.cluster"]), none()),
            ),
            (
                "9.0.16.172.in-addr.arpa",
                "PTR",
                (nx, none(), v(&["SOA 0.16.172.in-addr.arpa 7"])),
            ),
            (
                "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa",
                "PTR",
                (ok, v(&["de0001.cluster"]), none()),
            ),
            (
                "0.16.172.in-addr.arpa",
                "SOA",
                (ok, v(&["SOA 0.16.172.in-addr.arpa 7"]), none()),
            ),
            // Not ours.
            ("example.org", "A", (None, none(), none())),
            ("1.0.0.10.in-addr.arpa", "PTR", (None, none(), none())),
        ] {
            assert_eq!(ask(&z, name, t), want, "{name} {t}");
        }
    }

    #[test]
    fn reverse_names_round_trip() {
        for ip in ["10.1.2.3", "fd00::1", "::ffff:1.2.3.4", "2001:db8::abcd"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(parse_reverse(&reverse_name(ip)), Some(ip));
        }
        for bad in [
            "1.2.3.in-addr.arpa",
            "1.2.3.256.in-addr.arpa",
            "x.ip6.arpa",
            "+1.2.3.4.in-addr.arpa",
        ] {
            assert_eq!(parse_reverse(bad), None, "{bad}");
        }
        assert_eq!(
            reverse_apex(&Net::parse("172.16.0.0/22").unwrap()),
            "16.172.in-addr.arpa"
        );
        assert_eq!(
            reverse_apex(&Net::parse("fd00::/64").unwrap()).len(),
            16 * 2 + 8
        );
    }

    #[test]
    fn a_renamed_node_answers_by_its_new_name() {
        let s = settings("");
        let mut m = model();
        let z = Zone::build(&m, 1, &s);
        assert_eq!(ask(&z, "de0001.cluster", "A").1, vec!["172.16.0.1"]);
        let mut n = (**m.components.get("x1000c0s0b0n0").unwrap()).clone();
        n.nid = Some(42);
        m.components.insert(n.id.clone(), Arc::new(n));
        let z = Zone::build(&m, 2, &s);
        assert_eq!(ask(&z, "de0001.cluster", "A").0, Some(Rcode::NxDomain));
        assert_eq!(ask(&z, "de0042.cluster", "A").1, vec!["172.16.0.1"]);
        assert_eq!(ask(&z, "cluster", "SOA").1, vec!["SOA cluster 2"]);
    }
}
