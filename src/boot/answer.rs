//! What a booting caller gets: the decision of §4.2–4.4 and §4.6 of the
//! contract, as a pure function of the snapshot and the request.

use super::params::{bootable, component_of_mac, config_for, first_mac};
use super::script::{self, BootSpec, Identity};
use crate::inventory::model::{BootConfig, BootTarget, Component};
use crate::inventory::{Model, mac, xname};

/// How the caller named itself (`mac` > `name` > `nid`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Mac(String),
    Name(String),
    Nid(i64),
}

/// A parsed bootscript request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptRequest {
    pub selector: Selector,
    pub arch: Option<String>,
    pub retry: u32,
    pub json: bool,
}

/// The answer, before HTTP encoding.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// 200 `text/plain` iPXE script.
    Script(String),
    /// 200 JSON.
    Json(serde_json::Value),
    /// 404 with a reason.
    NotFound(String),
}

/// The answer and the name to record in the endpoint history.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub answer: Answer,
    pub who: String,
}

impl ScriptRequest {
    /// Parses query values; `Err` is a 400 message.
    pub fn parse(
        mac_q: Option<&str>,
        name: Option<&str>,
        nid: Option<&str>,
        arch: Option<&str>,
        retry: Option<&str>,
        json: Option<&str>,
    ) -> Result<ScriptRequest, String> {
        let selector = if let Some(m) = mac_q.filter(|s| !s.is_empty()) {
            Selector::Mac(mac::normalize(m).map_err(|e| e.to_string())?)
        } else if let Some(n) = name.filter(|s| !s.is_empty()) {
            Selector::Name(xname::normalize(n).map_err(|e| e.to_string())?)
        } else if let Some(n) = nid.filter(|s| !s.is_empty()) {
            Selector::Nid(
                n.trim()
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| format!("nid must be a non-negative number, got {n:?}"))?,
            )
        } else {
            return Err("name the node with mac=, name= or nid=".into());
        };
        let retry = match retry {
            None | Some("") => 0,
            Some(r) => r
                .trim()
                .parse::<i64>()
                .map_err(|_| format!("retry must be a number, got {r:?}"))?
                .clamp(0, script::MAX_RETRY as i64) as u32,
        };
        let arch = arch
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| {
                if a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    Ok(a.to_string())
                } else {
                    Err(format!("invalid arch {a:?}"))
                }
            })
            .transpose()?;
        Ok(ScriptRequest {
            selector,
            arch,
            retry,
            json: matches!(json, Some("1") | Some("true")),
        })
    }
}

fn spec(b: &BootConfig) -> BootSpec {
    BootSpec {
        kernel: b.kernel.clone(),
        initrd: b.initrd.clone(),
        params: b.params.clone(),
    }
}

fn find<'m>(model: &'m Model, sel: &Selector) -> Option<&'m Component> {
    match sel {
        Selector::Mac(m) => component_of_mac(model, m),
        Selector::Name(x) => model.component(x),
        Selector::Nid(n) => model.component_by_nid(*n),
    }
}

/// The boot configuration and identity a known, bootable node gets.
pub fn known<'m>(
    model: &'m Model,
    c: &Component,
    mac_q: Option<&str>,
) -> Option<(&'m BootConfig, Identity)> {
    if !bootable(model, c) {
        return None;
    }
    let cfg = config_for(model, c, mac_q)?;
    let who = Identity {
        xname: Some(c.id.clone()),
        nid: c.nid,
        mac: mac_q.map(String::from).or_else(|| first_mac(model, &c.id)),
    };
    Some((cfg, who))
}

/// `GET /boot/v1/bootscript`.
pub fn bootscript(
    model: &Model,
    req: &ScriptRequest,
    node_base: &str,
    now_unix: i64,
    jitter: f64,
) -> Outcome {
    let mac_q = match &req.selector {
        Selector::Mac(m) => Some(m.as_str()),
        _ => None,
    };
    if let Some(c) = find(model, &req.selector) {
        let answer = match known(model, c, mac_q) {
            Some((cfg, who)) if req.json => {
                Answer::Json(script::script_json(&spec(cfg), &who, node_base))
            }
            Some((cfg, who)) => Answer::Script(script::boot_script(
                &spec(cfg),
                &who,
                node_base,
                req.retry,
                jitter,
            )),
            None if !bootable(model, c) => Answer::NotFound(format!(
                "{} is not bootable (disabled, empty or not a node)",
                c.id
            )),
            None => Answer::NotFound(format!("{} has no boot parameters with a kernel", c.id)),
        };
        return Outcome {
            answer,
            who: c.id.clone(),
        };
    }
    let who = match &req.selector {
        Selector::Mac(m) => m.clone(),
        Selector::Name(x) => x.clone(),
        Selector::Nid(n) => format!("nid{n}"),
    };
    let Some(mac) = mac_q else {
        return Outcome {
            answer: Answer::NotFound(format!("{who} is not in the inventory")),
            who,
        };
    };
    if req.json {
        return Outcome {
            answer: Answer::NotFound(format!("{mac} is not in the inventory")),
            who,
        };
    }
    let answer = match &req.arch {
        None => Answer::Script(script::arch_probe(mac, node_base, now_unix)),
        Some(arch) => {
            let tag = BootTarget::Host(format!("Unknown-{arch}"));
            match model
                .boot_targets
                .get(&tag)
                .and_then(|id| model.boot_configs.get(id))
                .filter(|b| !b.kernel.is_empty())
            {
                Some(cfg) => {
                    let who = Identity {
                        xname: None,
                        nid: None,
                        mac: Some(mac.to_string()),
                    };
                    Answer::Script(script::boot_script(
                        &spec(cfg),
                        &who,
                        node_base,
                        req.retry,
                        jitter,
                    ))
                }
                None => Answer::Script(script::wait_and_reboot(
                    &format!(
                        "{mac} is not in the inventory and nothing is configured for Unknown-{arch}"
                    ),
                    req.retry,
                    jitter,
                )),
            }
        }
    };
    Outcome { answer, who }
}

/// `GET /boot/v1/bootparams` for the node `c`.
pub fn kexec(model: &Model, c: &Component, mac_q: Option<&str>, node_base: &str) -> Answer {
    match known(model, c, mac_q) {
        Some((cfg, who)) => Answer::Json(script::kexec_params(&spec(cfg), &who, node_base)),
        None => Answer::NotFound(format!("{} has no boot parameters with a kernel", c.id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_and_bad_queries() {
        let r = ScriptRequest::parse(
            Some("52-54-00-BE-EF-01"),
            Some("x0c0s0b0n0"),
            None,
            None,
            Some("5000"),
            Some("1"),
        )
        .unwrap();
        assert_eq!(r.selector, Selector::Mac("52:54:00:be:ef:01".into()));
        assert_eq!(r.retry, script::MAX_RETRY);
        assert!(r.json);
        assert!(ScriptRequest::parse(None, None, None, None, None, None).is_err());
        assert!(ScriptRequest::parse(Some("zz"), None, None, None, None, None).is_err());
        assert!(ScriptRequest::parse(None, Some("nonsense"), None, None, None, None).is_err());
        assert!(ScriptRequest::parse(None, None, Some("x"), None, None, None).is_err());
        assert!(ScriptRequest::parse(None, None, Some("3"), Some("a b"), None, None).is_err());
        assert_eq!(
            ScriptRequest::parse(None, None, Some("3"), None, Some("-4"), None)
                .unwrap()
                .retry,
            0
        );
    }

    #[test]
    fn unknown_mac_probes_then_waits() {
        let m = Model::default();
        let mut req =
            ScriptRequest::parse(Some("52:54:00:00:00:01"), None, None, None, None, None).unwrap();
        let o = bootscript(&m, &req, "http://h:27778", 100, 0.0);
        assert!(matches!(&o.answer, Answer::Script(s) if s.contains("arch=${buildarch}&ts=100")));
        req.arch = Some("x86_64".into());
        let o = bootscript(&m, &req, "http://h:27778", 100, 0.0);
        assert!(matches!(&o.answer, Answer::Script(s) if s.contains("reboot")));
        req.json = true;
        assert!(matches!(
            bootscript(&m, &req, "http://h:27778", 100, 0.0).answer,
            Answer::NotFound(_)
        ));
    }
}
