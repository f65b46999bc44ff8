//! coresmd's `rule=` lines, so a CoreDHCP site's rules migrate as they are.
//!
//! A rule is `key:value` pairs separated by commas: match keys (`type`,
//! `subnet`, `id`) and actions (`hostname`, `routers`, `netmask`/`cidr`,
//! `domain`, `domain_append`, `ignore`, `continue`, `name`, `log`). Rules
//! are tried in order; the first match ends evaluation unless it says
//! `continue:true`, and later matches then refine what earlier ones set.
//! Unknown and duplicate keys are errors, as in coresmd, so a typo is
//! caught when the config is loaded rather than on a node at 3 a.m.

use std::net::Ipv4Addr;

use super::settings::{Cidr, mask_bits};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainPart {
    Global,
    Rule,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rule {
    pub name: String,
    /// Component types, lower case; empty matches every type.
    pub types: Vec<String>,
    pub subnets: Vec<Cidr>,
    pub id: Option<String>,
    pub hostname: Option<String>,
    pub routers: Option<Vec<Ipv4Addr>>,
    pub netmask: Option<Ipv4Addr>,
    pub domain: Option<String>,
    /// `None`: coresmd's default (the rule's domain, else the global one).
    pub domain_append: Option<Vec<DomainPart>>,
    pub ignore: bool,
    pub cont: bool,
}

/// Splits on commas outside quotes and strips the quotes.
fn fields(line: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut parts = Vec::new();
    for ch in line.chars() {
        match (quote, ch) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => quote = Some(ch),
            (None, ',') => parts.push(std::mem::take(&mut cur)),
            (None, c) => cur.push(c),
        }
    }
    if quote.is_some() {
        return Err("unterminated quote".into());
    }
    parts.push(cur);
    for p in parts {
        let p = p.trim();
        if p.is_empty() {
            continue;
        }
        let (k, v) = p
            .split_once(':')
            .ok_or_else(|| format!("{p:?} is not key:value"))?;
        out.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    Ok(out)
}

fn ipv4s(v: &str) -> Result<Vec<Ipv4Addr>, String> {
    v.split('|')
        .map(|s| {
            s.trim()
                .parse::<Ipv4Addr>()
                .map_err(|_| format!("{s:?} is not an IPv4 address"))
        })
        .collect()
}

fn boolean(k: &str, v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{k}: {v:?} is not true or false")),
    }
}

/// Parses one rule; a leading `rule=` (as in a coresmd config) is allowed.
pub fn parse(line: &str) -> Result<Rule, String> {
    let body = line.trim();
    let body = body.strip_prefix("rule=").unwrap_or(body);
    let mut r = Rule::default();
    let mut seen: Vec<String> = Vec::new();
    let mut has_mask = false;
    for (k, v) in fields(body)? {
        if seen.contains(&k) {
            return Err(format!("duplicate key {k:?}"));
        }
        seen.push(k.clone());
        match k.as_str() {
            "type" => {
                r.types = v
                    .split('|')
                    .map(|t| t.trim().to_ascii_lowercase())
                    .filter(|t| !t.is_empty())
                    .collect();
                if r.types.is_empty() {
                    return Err("type: needs at least one type".into());
                }
            }
            "subnet" => {
                r.subnets = v.split('|').map(Cidr::parse).collect::<Result<_, _>>()?;
            }
            "id" => r.id = Some(v.to_ascii_lowercase()),
            "id_set" => return Err("id_set is reserved and not supported".into()),
            "hostname" => r.hostname = Some(v),
            "routers" => r.routers = Some(ipv4s(&v)?),
            "netmask" => {
                let m: Ipv4Addr = v
                    .parse()
                    .map_err(|_| format!("netmask: {v:?} is not a mask"))?;
                let bits = u32::from(m);
                if bits.leading_ones() + bits.trailing_zeros() != 32 {
                    return Err(format!("netmask: {v} is not contiguous"));
                }
                r.netmask = Some(m);
                has_mask = true;
            }
            "cidr" => {
                let n: u8 = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=32).contains(n))
                    .ok_or_else(|| format!("cidr: {v:?} must be 1 to 32"))?;
                r.netmask = Some(Ipv4Addr::from(mask_bits(n)));
                has_mask = true;
            }
            "domain" => r.domain = Some(v.trim_start_matches('.').to_string()),
            "domain_append" => {
                let parts = if v.eq_ignore_ascii_case("none") {
                    Vec::new()
                } else {
                    v.split('|')
                        .map(|p| match p.trim().to_ascii_lowercase().as_str() {
                            "global" => Ok(DomainPart::Global),
                            "rule" => Ok(DomainPart::Rule),
                            o => Err(format!("domain_append: {o:?} is not global, rule or none")),
                        })
                        .collect::<Result<_, _>>()?
                };
                r.domain_append = Some(parts);
            }
            "ignore" => r.ignore = boolean(&k, &v)?,
            "continue" => r.cont = boolean(&k, &v)?,
            "name" => r.name = v,
            "log" => {
                if !matches!(v.as_str(), "info" | "debug" | "none") {
                    return Err(format!("log: {v:?} is not info, debug or none"));
                }
            }
            other => return Err(format!("unknown key {other:?}")),
        }
    }
    if r.hostname.is_none()
        && r.routers.is_none()
        && r.netmask.is_none()
        && !r.ignore
        && r.domain.is_none()
        && r.domain_append.is_none()
    {
        return Err("a rule needs an action (hostname, routers, netmask, cidr, ignore)".into());
    }
    if !has_mask && let Some(first) = r.subnets.first() {
        r.netmask = Some(first.mask());
    }
    if r.name.is_empty() {
        r.name = format!("rule-{}", seen.join("-"));
    }
    Ok(r)
}

/// What the rules say about one component.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    pub hostname: Option<String>,
    pub routers: Option<Vec<Ipv4Addr>>,
    pub netmask: Option<Ipv4Addr>,
    pub ignore: bool,
    /// The name of the last rule that matched.
    pub matched: Option<String>,
}

/// The component a rule is matched against.
pub struct Target<'a> {
    pub kind: &'a str,
    pub id: &'a str,
    pub nid: Option<i64>,
    pub ip: Ipv4Addr,
    /// The subnet's domain, coresmd's global `domain=`.
    pub global_domain: &'a str,
}

/// `{Nd}` (NID zero-padded to N digits, e.g. `{04d}`) and `{id}`.
pub fn expand(pattern: &str, id: &str, nid: Option<i64>) -> String {
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut rest = pattern;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        let Some(end) = after.find('}') else {
            out.push_str(after);
            return out;
        };
        let token = &after[1..end];
        if token == "id" {
            out.push_str(id);
        } else if let Some(w) = token.strip_suffix('d')
            && !w.is_empty()
            && w.bytes().all(|b| b.is_ascii_digit())
        {
            let width: usize = w.parse().unwrap_or(0).min(20);
            out.push_str(&format!("{:0width$}", nid.unwrap_or(0)));
        } else {
            out.push_str(&after[..=end]);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

fn matches(r: &Rule, t: &Target<'_>) -> bool {
    (r.types.is_empty() || r.types.iter().any(|x| x.eq_ignore_ascii_case(t.kind)))
        && (r.subnets.is_empty() || r.subnets.iter().any(|c| c.contains(t.ip)))
        && r.id
            .as_deref()
            .is_none_or(|id| id.eq_ignore_ascii_case(t.id))
}

/// Applies `rules` in order to `t`.
pub fn evaluate(rules: &[Rule], t: &Target<'_>) -> Verdict {
    let mut v = Verdict::default();
    for r in rules {
        if !matches(r, t) {
            continue;
        }
        v.matched = Some(r.name.clone());
        if r.ignore {
            v.ignore = true;
        }
        if let Some(p) = &r.hostname {
            v.hostname = Some(with_domain(&expand(p, t.id, t.nid), r, t.global_domain));
        }
        if let Some(x) = &r.routers {
            v.routers = Some(x.clone());
        }
        if let Some(m) = r.netmask {
            v.netmask = Some(m);
        }
        if !r.cont {
            break;
        }
    }
    v
}

/// coresmd's domain suffix table.
fn with_domain(host: &str, r: &Rule, global: &str) -> String {
    let rule = r.domain.as_deref().unwrap_or("");
    let parts: Vec<&str> = match &r.domain_append {
        Some(order) => order
            .iter()
            .map(|p| match p {
                DomainPart::Global => global,
                DomainPart::Rule => rule,
            })
            .collect(),
        None if !rule.is_empty() => vec![rule],
        None => vec![global],
    };
    let mut out = host.to_string();
    for p in parts.into_iter().filter(|p| !p.is_empty()) {
        out.push('.');
        out.push_str(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t<'a>(kind: &'a str, id: &'a str, nid: i64, ip: &str, dom: &'a str) -> Target<'a> {
        Target {
            kind,
            id,
            nid: Some(nid),
            ip: ip.parse().unwrap(),
            global_domain: dom,
        }
    }

    #[test]
    fn patterns() {
        assert_eq!(expand("nid{04d}", "x", Some(7)), "nid0007");
        assert_eq!(
            expand("rack42-{id}", "x1c0s0b0n0", None),
            "rack42-x1c0s0b0n0"
        );
        assert_eq!(expand("n{02d}", "x", Some(123)), "n123");
        assert_eq!(expand("a{b}c{", "x", Some(1)), "a{b}c{");
    }

    #[test]
    fn coresmd_examples() {
        let rules: Vec<Rule> = [
            "rule=name:base,type:Node,hostname:nid{04d},continue:true",
            "type:Node,id:x1000c0s0b0n1,hostname:\"special\",domain_append:none",
            "type:NodeBMC,subnet:172.16.10.0/24,hostname:bmc10-{04d}",
            "type:NodeBMC|RouterBMC,hostname:bmc-{04d},routers:172.16.0.1|172.16.0.2,cidr:26",
            "type:HSNSwitch,ignore:true",
        ]
        .iter()
        .map(|r| parse(r).unwrap())
        .collect();
        let v = evaluate(&rules, &t("Node", "x1000c0s0b0n0", 1, "172.16.0.5", "lab"));
        assert_eq!(v.hostname.as_deref(), Some("nid0001.lab"));
        assert_eq!(v.matched.as_deref(), Some("base"));
        let v = evaluate(&rules, &t("Node", "x1000c0s0b0n1", 2, "172.16.0.6", "lab"));
        assert_eq!(v.hostname.as_deref(), Some("special"));
        let v = evaluate(&rules, &t("NodeBMC", "x1000c0s0b0", 7, "172.16.10.9", ""));
        assert_eq!(v.hostname.as_deref(), Some("bmc10-0007"));
        assert_eq!(v.netmask, Some(Ipv4Addr::new(255, 255, 255, 0)));
        let v = evaluate(&rules, &t("nodebmc", "x1000c0s0b0", 7, "172.16.11.9", ""));
        assert_eq!(v.hostname.as_deref(), Some("bmc-0007"));
        assert_eq!(v.routers.as_ref().map(Vec::len), Some(2));
        assert_eq!(v.netmask, Some(Ipv4Addr::new(255, 255, 255, 192)));
        assert!(evaluate(&rules, &t("HSNSwitch", "x1", 0, "1.1.1.1", "")).ignore);
        assert_eq!(
            evaluate(&rules, &t("Chassis", "x1", 0, "1.1.1.1", "")),
            Verdict::default()
        );
    }

    #[test]
    fn bad_rules() {
        for bad in [
            "type:Node",
            "type:Node,hostname:a,hostname:b",
            "colour:red,hostname:a",
            "id_set:x[1-3],hostname:a",
            "netmask:255.0.255.0",
            "cidr:33",
            "routers:1.2.3",
            "hostname:\"open",
            "type:,hostname:a",
            "continue:maybe,hostname:a",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
