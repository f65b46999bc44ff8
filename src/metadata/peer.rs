//! metadata-service `WireGuardPeer` resources: what a peer spec must be and
//! how a stored peer is shown.
//!
//! `ochami metadata peer …` manages them, so they are accepted, checked and
//! kept as upstream keeps them. The appliance runs no WireGuard device
//! (upstream's `/wg-init` and tunnel-only mode are not built), so a peer is
//! a record only: its status says so rather than claim it is applied.
//! Pure: the adapter writes what [`peer_spec`] returns.

use std::net::IpAddr;

use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::v2::{self, Kind, description, get_ci, invalid, put_nonempty, spec_str};
use crate::inventory::DomainError;
use crate::inventory::model::MetadataRecord;

/// Why the status says what it says.
pub const NOT_APPLIED: &str =
    "stored only: this appliance runs no WireGuard device, so the peer is not configured anywhere";

/// Is `s` an IPv4 or IPv6 network in CIDR notation (Go's `net.ParseCIDR`:
/// host bits may be set)?
pub fn is_cidr(s: &str) -> bool {
    let Some((addr, len)) = s.split_once('/') else {
        return false;
    };
    let Ok(ip) = addr.parse::<IpAddr>() else {
        return false;
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    !len.is_empty()
        && len.bytes().all(|b| b.is_ascii_digit())
        && len.len() <= 3
        && len.parse::<u32>().is_ok_and(|l| l <= max)
}

/// A WireGuard public key: base64 of 32 bytes.
pub fn is_public_key(s: &str) -> bool {
    base64::engine::general_purpose::STANDARD
        .decode(s.as_bytes())
        .is_ok_and(|b| b.len() == 32)
}

/// The stored form of a peer spec: `description`, `public_key` and
/// `allowed_ip` (both required) checked.
pub fn peer_spec(spec: &Map<String, Value>) -> Result<Value, DomainError> {
    let desc = description(spec)?;
    let key = spec_str(spec, "public_key")?;
    let allowed = spec_str(spec, "allowed_ip")?;
    if key.is_empty() {
        return Err(invalid("public_key is required"));
    }
    if !is_public_key(&key) {
        return Err(invalid(format!(
            "public_key {key:?} is not a WireGuard key (base64 of 32 bytes)"
        )));
    }
    if allowed.is_empty() {
        return Err(invalid("allowed_ip is required (CIDR)"));
    }
    if !is_cidr(&allowed) {
        return Err(invalid(format!(
            "allowed_ip must be a valid CIDR (like 10.42.1.1/32), got {allowed:?}"
        )));
    }
    let mut s = Map::new();
    put_nonempty(&mut s, "description", &desc);
    s.insert("public_key".into(), json!(key));
    s.insert("allowed_ip".into(), json!(allowed));
    Ok(Value::Object(s))
}

/// The public key a spec holds (as stored by [`peer_spec`]).
pub fn public_key(spec: &Value) -> &str {
    spec.as_object()
        .and_then(|m| get_ci(m, "public_key"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The WireGuardPeer resource of a stored record.
pub fn peer_resource(r: &MetadataRecord) -> Value {
    v2::envelope(
        Kind::WireGuardPeer,
        &r.meta.name,
        Some(&r.meta),
        r.spec.clone(),
        json!({
            "phase": "Pending",
            "message": NOT_APPLIED,
            "ready": false,
            "version": r.generation.to_string(),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

    #[test]
    fn cidrs_as_go_parses_them() {
        for (s, ok) in [
            ("10.42.1.1/32", true),
            ("10.42.1.0/24", true),
            ("10.42.1.1/24", true),
            ("0.0.0.0/0", true),
            ("fd00::1/128", true),
            ("10.42.1.1", false),
            ("10.42.1.1/33", false),
            ("10.42.1.1/", false),
            ("10.42.1.1/+8", false),
            ("fd00::/129", false),
            ("host/24", false),
            ("", false),
        ] {
            assert_eq!(is_cidr(s), ok, "{s}");
        }
    }

    #[test]
    fn specs_are_checked() {
        let spec = |v: Value| v.as_object().cloned().unwrap();
        let ok = peer_spec(&spec(
            json!({"public_key": KEY, "allowed_ip": "10.42.1.1/32", "description": " a "}),
        ))
        .unwrap();
        assert_eq!(
            ok,
            json!({"description": "a", "public_key": KEY, "allowed_ip": "10.42.1.1/32"})
        );
        for (bad, says) in [
            (
                json!({"allowed_ip": "10.42.1.1/32"}),
                "public_key is required",
            ),
            (json!({"public_key": KEY}), "allowed_ip is required"),
            (
                json!({"public_key": "c2hvcnQ=", "allowed_ip": "10.42.1.1/32"}),
                "not a WireGuard key",
            ),
            (
                json!({"public_key": "not base64!", "allowed_ip": "10.42.1.1/32"}),
                "not a WireGuard key",
            ),
            (
                json!({"public_key": KEY, "allowed_ip": "10.42.1.1"}),
                "valid CIDR",
            ),
            (
                json!({"public_key": KEY, "allowed_ip": 7}),
                "must be a string",
            ),
            (
                json!({"public_key": KEY, "allowed_ip": "10.0.0.1/32", "description": "d".repeat(201)}),
                "200",
            ),
        ] {
            let e = peer_spec(&spec(bad.clone())).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
