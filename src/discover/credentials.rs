//! BMC credentials: a `default` and per-BMC entries (by xname, IP address or
//! MAC), sealed at rest with the appliance's secret key and never returned.
//!
//! The order a BMC's credentials are looked for in: its own entry, the
//! user and password stored on its RedfishEndpoint (set by the last
//! discovery that worked, or by whoever posted the endpoint), a default
//! given for one discovery run, then the stored `default`. magellan posts
//! endpoints without a password; they fall through to the store.

use std::net::IpAddr;

use crate::ca::secret::SecretBox;
use crate::inventory::components::parse_xname;
use crate::inventory::model::{BmcCredential, RedfishEndpoint};
use crate::inventory::{DomainError, Model, mac};
use crate::redfish::Credentials;

pub const DEFAULT: &str = "default";

/// The canonical key: `default`, an xname, an IP address or a MAC.
pub fn key(raw: &str) -> Result<String, DomainError> {
    let t = raw.trim();
    if t.eq_ignore_ascii_case(DEFAULT) {
        return Ok(DEFAULT.into());
    }
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    if let Ok(m) = mac::normalize(t) {
        return Ok(m);
    }
    if let Ok((x, _)) = parse_xname(t) {
        return Ok(x);
    }
    Err(DomainError::Invalid(format!(
        "{t:?} is not `default`, an xname, an IP address or a MAC"
    )))
}

/// A stored entry, opened.
fn open(secrets: &SecretBox, c: &BmcCredential) -> Option<Credentials> {
    match secrets.open(&c.password) {
        Ok(password) => Some(Credentials {
            username: c.username.clone(),
            password,
        }),
        Err(e) => {
            tracing::error!(key = %c.key, error = %e, "cannot unseal a stored BMC password");
            None
        }
    }
}

/// The credentials to try for a BMC known by `names` (xname, IP, MAC, in any
/// order; unknown ones skipped), see the module docs for the order.
pub fn resolve(
    m: &Model,
    secrets: &SecretBox,
    names: &[String],
    endpoint: Option<&RedfishEndpoint>,
    run_default: Option<&Credentials>,
) -> Option<Credentials> {
    for n in names {
        if let Ok(k) = key(n)
            && k != DEFAULT
            && let Some(c) = m.bmc_credentials.get(&k)
        {
            return open(secrets, c);
        }
    }
    if let Some(e) = endpoint
        && !e.password.is_empty()
        && let Ok(password) = secrets.open(&e.password)
    {
        let username = if e.user.is_empty() {
            m.bmc_credentials
                .get(DEFAULT)
                .map(|d| d.username.clone())
                .unwrap_or_default()
        } else {
            e.user.clone()
        };
        return Some(Credentials { username, password });
    }
    if let Some(d) = run_default {
        return Some(d.clone());
    }
    let mut d = open(secrets, m.bmc_credentials.get(DEFAULT)?)?;
    // An endpoint posted with a user but no password (magellan) keeps its user.
    if let Some(e) = endpoint
        && !e.user.is_empty()
    {
        d.username = e.user.clone();
    }
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_canonical() {
        assert_eq!(key("Default").unwrap(), "default");
        assert_eq!(key("X1000C0S0B0").unwrap(), "x1000c0s0b0");
        assert_eq!(key("52-54-00-AA-BB-CC").unwrap(), "52:54:00:aa:bb:cc");
        assert_eq!(key(" 10.0.0.1 ").unwrap(), "10.0.0.1");
        assert!(key("nope").is_err());
    }

    #[test]
    fn order_of_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let sb = SecretBox::load_or_create(dir.path()).unwrap();
        let mut m = Model::default();
        let put = |m: &mut Model, k: &str, u: &str| {
            m.bmc_credentials.insert(
                k.into(),
                BmcCredential {
                    key: k.into(),
                    username: u.into(),
                    password: sb.seal(&format!("{u}-pw")).unwrap(),
                },
            );
        };
        put(&mut m, "default", "dflt");
        let names = vec!["x1c0s0b1".to_string(), "10.0.0.1".to_string()];
        assert_eq!(
            resolve(&m, &sb, &names, None, None).unwrap().username,
            "dflt"
        );
        let run = Credentials {
            username: "run".into(),
            password: "p".into(),
        };
        assert_eq!(
            resolve(&m, &sb, &names, None, Some(&run)).unwrap().username,
            "run"
        );
        put(&mut m, "10.0.0.1", "byip");
        let c = resolve(&m, &sb, &names, None, Some(&run)).unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("byip", "byip-pw")
        );
        assert!(resolve(&Model::default(), &sb, &names, None, None).is_none());
    }
}
