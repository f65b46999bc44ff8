//! Which xname a discovered BMC gets.
//!
//! In order: an operator's map (magellan's `--bmc-id-map` format), then the
//! xname of an existing endpoint with the same MAC, IP address or FQDN (so
//! re-running discovery never renames a BMC), then a rule over the IPv4
//! address. Upstream's rule takes the slot from the top octet and drops the
//! third one, so 10.0.1.5 and 10.0.2.5 collide; this one uses every bit.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use serde_json::Value;

use crate::inventory::Model;
use crate::inventory::components::parse_xname;

/// magellan's `{"map_key": "bmc-ip-addr", "id_map": {"172.16.0.101": "x1000c0s0b0"}}`,
/// or a bare `{"172.16.0.101": "x1000c0s0b0"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdMap(pub HashMap<String, String>);

impl IdMap {
    pub fn parse(v: &Value) -> Result<IdMap, String> {
        let obj = v
            .as_object()
            .ok_or("the BMC ID map must be a JSON object")?;
        let map = match obj.get("id_map") {
            Some(m) => {
                if let Some(k) = obj.get("map_key").and_then(Value::as_str)
                    && k != "bmc-ip-addr"
                {
                    return Err(format!(
                        "BMC ID map key {k:?} is not supported (only bmc-ip-addr)"
                    ));
                }
                m.as_object().ok_or("id_map must be an object")?
            }
            None => obj,
        };
        let mut out = HashMap::new();
        for (k, v) in map {
            let x = v
                .as_str()
                .ok_or_else(|| format!("BMC ID map entry {k:?} must be a string"))?;
            let (x, kind) = parse_xname(x).map_err(|e| e.to_string())?;
            if !kind.is_controller() {
                return Err(format!("BMC ID map entry {k:?}: {x} is not a BMC xname"));
            }
            out.insert(k.trim().to_string(), x);
        }
        Ok(IdMap(out))
    }

    /// The xname for `addr` (`ip` or `ip:port`): the full address first.
    pub fn lookup(&self, addr: &str, ip: Option<IpAddr>) -> Option<&String> {
        self.0
            .get(addr)
            .or_else(|| ip.and_then(|i| self.0.get(&i.to_string())))
    }
}

/// The rule for an IPv4 BMC: `x<(i>>19)&8191>c<(i>>16)&7>s<(i>>8)&255>b<i&255>`.
pub fn from_ipv4(a: Ipv4Addr) -> String {
    let i = u32::from(a);
    format!(
        "x{}c{}s{}b{}",
        (i >> 19) & 8191,
        (i >> 16) & 7,
        (i >> 8) & 255,
        i & 255
    )
}

/// The xname of an existing endpoint that is this BMC: same MAC, IP address
/// or FQDN.
pub fn existing(m: &Model, addr: &str, ip: Option<IpAddr>, mac: Option<&str>) -> Option<String> {
    // An address with a port names one BMC of several on an IP: only the
    // same address matches it.
    let ip = ip
        .filter(|_| addr.parse::<IpAddr>().is_ok())
        .map(|i| i.to_string());
    m.redfish_endpoints
        .values()
        .find(|e| {
            mac.is_some_and(|mac| !e.mac_addr.is_empty() && e.mac_addr.eq_ignore_ascii_case(mac))
                || e.fqdn.eq_ignore_ascii_case(addr)
                || ip.as_deref().is_some_and(|i| e.ip_address == i)
        })
        .map(|e| e.id.clone())
}

/// Why no xname: the map does not list the BMC, or there is no rule for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unnamed {
    NotInMap,
    NoRule,
}

/// Picks the xname (see the module docs).
pub fn choose(
    map: Option<&IdMap>,
    m: &Model,
    addr: &str,
    ip: Option<IpAddr>,
    mac: Option<&str>,
) -> Result<String, Unnamed> {
    if let Some(map) = map {
        return map.lookup(addr, ip).cloned().ok_or(Unnamed::NotInMap);
    }
    if let Some(x) = existing(m, addr, ip, mac) {
        return Ok(x);
    }
    match ip {
        Some(IpAddr::V4(a)) => Ok(from_ipv4(a)),
        _ => Err(Unnamed::NoRule),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn the_rule_uses_every_octet() {
        assert_eq!(from_ipv4("172.16.0.101".parse().unwrap()), "x5506c0s0b101");
        assert_ne!(
            from_ipv4("10.0.1.5".parse().unwrap()),
            from_ipv4("10.0.2.5".parse().unwrap())
        );
    }

    proptest! {
        #[test]
        fn rule_names_are_bmc_xnames_and_distinct(a: u32, b: u32) {
            let (xa, kind) = parse_xname(&from_ipv4(Ipv4Addr::from(a))).unwrap();
            prop_assert!(kind.is_controller());
            prop_assert_eq!(&xa, &from_ipv4(Ipv4Addr::from(a)));
            if a != b {
                prop_assert_ne!(from_ipv4(Ipv4Addr::from(a)), from_ipv4(Ipv4Addr::from(b)));
            }
        }
    }

    #[test]
    fn maps_in_magellan_format() {
        let m = IdMap::parse(&json!({"map_key": "bmc-ip-addr",
            "id_map": {"172.16.0.101": "X1000C0S0B0", "127.0.0.1:8443": "x1c0s0b0"}}))
        .unwrap();
        assert_eq!(
            m.lookup("172.16.0.101", "172.16.0.101".parse().ok()),
            Some(&"x1000c0s0b0".to_string())
        );
        assert_eq!(
            m.lookup("127.0.0.1:8443", "127.0.0.1".parse().ok()),
            Some(&"x1c0s0b0".to_string())
        );
        assert!(IdMap::parse(&json!({"10.0.0.1": "x1000c0s0b0n0"})).is_err());
        assert!(IdMap::parse(&json!({"map_key": "mac", "id_map": {}})).is_err());
        let model = Model::default();
        assert_eq!(
            choose(Some(&m), &model, "10.9.9.9", None, None),
            Err(Unnamed::NotInMap)
        );
        assert_eq!(
            choose(None, &model, "bmc", None, None),
            Err(Unnamed::NoRule)
        );
    }
}
