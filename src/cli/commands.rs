//! Client commands: each one a few REST calls and a rendering.

use std::io::Read;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::client::Client;
use super::output::{Format, render, table};
use super::serve::load_config;
use super::{
    CaCmd, Command, Global, GroupCmd, ImportArgs, NodeAddArgs, NodeCmd, NodeSetArgs, TokenCmd,
};
use crate::ca::authority::fingerprint_pem;
use crate::ca::token::TokenKeys;
use crate::config::Config;

pub fn run(global: &Global, command: Command) -> anyhow::Result<()> {
    let config = load_config(global)?;
    match command {
        Command::Token(TokenCmd::Issue {
            ttl,
            sub,
            roles,
            scopes,
            bootstrap,
        }) => token_issue(&config, ttl.as_deref(), &sub, &roles, &scopes, bootstrap),
        Command::Token(TokenCmd::Rotate) => token_rotate(&config),
        Command::Ca(cmd) => ca(&config, cmd),
        Command::Store(cmd @ super::store::StoreCmd::Migrate { .. }) => {
            super::store::run(&config, cmd)
        }
        other => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let client = Client::from_global(global, &config)?;
            let out = rt.block_on(dispatch(&client, global.output, other))?;
            print!("{out}");
            Ok(())
        }
    }
}

/// Runs a client command and returns what it prints (tests call this).
pub async fn dispatch(client: &Client, format: Format, command: Command) -> anyhow::Result<String> {
    match command {
        Command::Node(cmd) => node(client, format, cmd).await,
        Command::Group(cmd) => group(client, format, cmd).await,
        Command::Import(args) => import(client, format, &args).await,
        Command::Boot(cmd) => super::boot::run(client, format, cmd).await,
        Command::Metadata(cmd) => super::metadata::run(client, format, cmd).await,
        Command::Dhcp(cmd) => super::dhcp::run(client, format, cmd).await,
        Command::Dns(cmd) => super::dns::run(client, format, cmd).await,
        Command::Firmware(cmd) => super::firmware::run(client, format, cmd).await,
        Command::Hw(cmd) => super::hw::run(client, format, cmd).await,
        Command::Console(args) => super::console::run(client, format, args).await,
        Command::Discover(cmd) => super::discover::run(client, format, cmd).await,
        Command::Power(cmd) => super::power::run(client, format, cmd).await,
        Command::Token(cmd) => token_grant(client, cmd).await,
        Command::Store(super::store::StoreCmd::Status) => {
            super::store::status(client, format).await
        }
        Command::Serve(_)
        | Command::SimBmc(_)
        | Command::Ca(_)
        | Command::Store(super::store::StoreCmd::Migrate { .. })
        | Command::Completions { .. }
        | Command::Lab(_)
        | Command::Generate(_) => Err(anyhow!("not a client command")),
    }
}

/// `90`, `90s`, `15m`, `12h`, `7d`.
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| anyhow!("invalid duration {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => bail!("invalid duration {s:?}: use a number with s, m, h or d"),
    };
    if secs == 0 {
        bail!("duration must be positive");
    }
    Ok(Duration::from_secs(secs))
}

fn token_issue(
    config: &Config,
    ttl: Option<&str>,
    sub: &str,
    roles: &[String],
    scopes: &[String],
    bootstrap: bool,
) -> anyhow::Result<()> {
    let ttl = match ttl {
        Some(t) => parse_duration(t)?,
        None => Duration::from_secs(config.auth.token_ttl_secs),
    };
    let key = config.state_dir.join("ca").join("token.key");
    if !key.exists() {
        bail!(
            "no signing key at {} (run this on the head node, as a user that can read the state dir, after the first `openchami serve`)",
            key.display()
        );
    }
    let keys = TokenKeys::load_or_create(&config.state_dir)?;
    let now = chrono::Utc::now().timestamp();
    if sub.is_empty() {
        bail!("--sub must not be empty");
    }
    let claims = crate::ca::token::Claims {
        sub: sub.to_string(),
        iss: config.issuer(),
        aud: vec![config.auth.audience.clone()],
        exp: now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
        iat: now,
        nbf: Some(now),
        roles: roles.to_vec(),
        scope: scopes.to_vec(),
        // A bootstrap token is one-time by its jti.
        jti: bootstrap.then(|| format!("bt-{}", uuid::Uuid::new_v4().simple())),
        token_use: bootstrap.then(|| "bootstrap".to_string()),
    };
    let token = keys.sign(&claims)?;
    println!("{token}");
    Ok(())
}

/// `token rotate`: on SQLite, in the state directory of a stopped
/// appliance (one that runs would keep signing with the old key); on a
/// shared store, through the database, which every running head follows.
fn token_rotate(config: &Config) -> anyhow::Result<()> {
    let dir = &config.state_dir;
    let kid = if config.store.url.is_empty() {
        let _lock = crate::statedir::lock(dir)
            .context("stop the appliance first: the state directory is in use")?;
        let keys = TokenKeys::load_or_create(dir)?;
        keys.rotate(dir)?;
        keys.current_kid()
    } else {
        let ca =
            (!config.store.ca_file.is_empty()).then(|| std::path::Path::new(&config.store.ca_file));
        let store = crate::inventory::Store::open_backend(Box::new(
            crate::inventory::postgres::Pg::connect(&config.store.url, ca)?,
        ))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(crate::shared_keys::rotate_shared(&store, config))?
    };
    println!("{kid}");
    Ok(())
}

/// A token argument, or standard input for `-`.
fn token_arg(arg: &str) -> anyhow::Result<String> {
    let t = if arg == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the token from standard input")?;
        s
    } else {
        arg.to_string()
    };
    let t = t.trim();
    if t.is_empty() {
        bail!("the token is empty");
    }
    Ok(t.to_string())
}

/// `token exchange` and `token refresh`: one form POST to /oauth/token,
/// the JSON reply printed as it came.
async fn token_grant(client: &Client, cmd: TokenCmd) -> anyhow::Result<String> {
    use crate::http::oauth::{BOOTSTRAP_TYPE, REFRESH, TOKEN_EXCHANGE};
    let form: Vec<(&str, String)> = match cmd {
        TokenCmd::Exchange { bootstrap } => vec![
            ("grant_type", TOKEN_EXCHANGE.to_string()),
            ("subject_token", token_arg(&bootstrap)?),
            ("subject_token_type", BOOTSTRAP_TYPE.to_string()),
        ],
        TokenCmd::Refresh { refresh_token } => vec![
            ("grant_type", REFRESH.to_string()),
            ("refresh_token", token_arg(&refresh_token)?),
        ],
        TokenCmd::Issue { .. } | TokenCmd::Rotate => {
            bail!("needs the state directory, not the API")
        }
    };
    let (status, v) = client.post_form("/oauth/token", &form).await?;
    if !status.is_success() {
        let error = v.get("error").and_then(Value::as_str).unwrap_or("error");
        let why = v
            .get("error_description")
            .and_then(Value::as_str)
            .unwrap_or_default();
        bail!("POST /oauth/token: {} {error}: {why}", status.as_u16());
    }
    Ok(format!("{}\n", serde_json::to_string_pretty(&v)?))
}

fn ca(config: &Config, cmd: CaCmd) -> anyhow::Result<()> {
    let default = config.state_dir.join("ca").join("root.crt");
    match cmd {
        CaCmd::Fingerprint { file } => {
            let path = file.unwrap_or(default);
            let pem = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            println!("SHA256 Fingerprint={}", fingerprint_pem(&pem)?);
        }
        CaCmd::Show => {
            let pem = std::fs::read_to_string(&default)
                .with_context(|| format!("cannot read {}", default.display()))?;
            print!("{pem}");
        }
    }
    Ok(())
}

pub(super) fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

const NODE_COLUMNS: &[(&str, &str)] = &[
    ("XNAME", "/ID"),
    ("NID", "/NID"),
    ("STATE", "/State"),
    ("ROLE", "/Role"),
    ("ENABLED", "/Enabled"),
    ("MAC", "/MAC"),
    ("IP", "/IP"),
    ("GROUPS", "/Groups"),
];

/// Nodes joined with their interfaces and groups, as the table shows them.
async fn node_rows(client: &Client, group: Option<&str>) -> anyhow::Result<Vec<Value>> {
    let mut path = "/hsm/v2/State/Components?type=Node&type=VirtualNode".to_string();
    if let Some(g) = group {
        path.push_str(&format!("&group={}", enc(g)));
    }
    let comps = client.get(&path).await?;
    let ifaces = interfaces(client, "").await?;
    let members = client.get("/hsm/v2/memberships").await?;
    let mut rows = Vec::new();
    for c in comps["Components"].as_array().cloned().unwrap_or_default() {
        let id = c["ID"].as_str().unwrap_or("").to_string();
        let mine: Vec<&Value> = ifaces
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|i| i["ComponentID"] == id.as_str())
                    .collect()
            })
            .unwrap_or_default();
        let macs: Vec<Value> = mine.iter().map(|i| i["MACAddress"].clone()).collect();
        let ips: Vec<Value> = mine
            .iter()
            .flat_map(|i| i["IPAddresses"].as_array().cloned().unwrap_or_default())
            .map(|a| a["IPAddress"].clone())
            .collect();
        let groups = members
            .as_array()
            .and_then(|a| a.iter().find(|m| m["id"] == id.as_str()))
            .map(|m| m["groupLabels"].clone())
            .unwrap_or(json!([]));
        let mut row = c.clone();
        row["MAC"] = Value::Array(macs);
        row["IP"] = Value::Array(ips);
        row["Groups"] = groups;
        rows.push(row);
    }
    Ok(rows)
}

async fn node(client: &Client, format: Format, cmd: NodeCmd) -> anyhow::Result<String> {
    match cmd {
        NodeCmd::List { group } => {
            let rows = node_rows(client, group.as_deref()).await?;
            Ok(render(
                format,
                NODE_COLUMNS,
                &rows,
                &Value::Array(rows.clone()),
            ))
        }
        NodeCmd::Show { xname } => {
            let c = client
                .get(&format!("/hsm/v2/State/Components/{}", enc(&xname)))
                .await?;
            let id = c["ID"].as_str().unwrap_or(&xname).to_string();
            let ifaces = interfaces(client, &format!("?ComponentID={}", enc(&id))).await?;
            let m = client
                .get(&format!("/hsm/v2/memberships/{}", enc(&id)))
                .await?;
            let raw = json!({"Component": c, "EthernetInterfaces": ifaces, "Groups": m["groupLabels"], "Partition": m["partitionName"]});
            if format != Format::Table {
                return Ok(render(format, &[], &[], &raw));
            }
            let mut rows = Vec::new();
            if let Some(obj) = c.as_object() {
                for (k, v) in obj {
                    rows.push(json!({"k": k, "v": v}));
                }
            }
            rows.push(json!({"k": "Groups", "v": m["groupLabels"]}));
            let mut out = table(&[("FIELD", "/k"), ("VALUE", "/v")], &rows);
            let ifrows: Vec<Value> = ifaces.as_array().cloned().unwrap_or_default();
            if !ifrows.is_empty() {
                let ifrows: Vec<Value> = ifrows
                    .into_iter()
                    .map(|mut i| {
                        let ips: Vec<Value> = i["IPAddresses"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default()
                            .into_iter()
                            .map(|a| a["IPAddress"].clone())
                            .collect();
                        i["IP"] = Value::Array(ips);
                        i
                    })
                    .collect();
                out.push_str(&table(
                    &[
                        ("MAC", "/MACAddress"),
                        ("IP", "/IP"),
                        ("DESCRIPTION", "/Description"),
                    ],
                    &ifrows,
                ));
            }
            Ok(out)
        }
        NodeCmd::Add(args) => node_add(client, &args).await,
        NodeCmd::Delete { xnames } => {
            let ifaces = interfaces(client, "").await?;
            let mut out = String::new();
            for x in xnames {
                let c = client
                    .get(&format!("/hsm/v2/State/Components/{}", enc(&x)))
                    .await?;
                let id = c["ID"].as_str().unwrap_or(&x).to_string();
                for i in ifaces
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|i| i["ComponentID"] == id.as_str())
                {
                    let iid = i["ID"].as_str().unwrap_or("");
                    client
                        .send(
                            Method::DELETE,
                            &format!("/hsm/v2/Inventory/EthernetInterfaces/{iid}"),
                            None,
                        )
                        .await?;
                }
                client
                    .send(
                        Method::DELETE,
                        &format!("/hsm/v2/State/Components/{}", enc(&id)),
                        None,
                    )
                    .await?;
                out.push_str(&format!("deleted {id}\n"));
            }
            Ok(out)
        }
        NodeCmd::Set(args) => node_set(client, &args).await,
    }
}

/// `Inventory/EthernetInterfaces` (with `query`), or `[]` from an appliance
/// or SMD that does not serve the route, so node listings still work there.
async fn interfaces(client: &Client, query: &str) -> anyhow::Result<Value> {
    let path = format!("/hsm/v2/Inventory/EthernetInterfaces{query}");
    let (status, v) = client.send_raw(Method::GET, &path, None).await?;
    if status == StatusCode::NOT_FOUND {
        return Ok(json!([]));
    }
    Client::result(&Method::GET, &path, status, v)
}

pub(super) async fn node_add(client: &Client, a: &NodeAddArgs) -> anyhow::Result<String> {
    // Check what can be checked here, so a typo gets a local message.
    let macs = a
        .macs
        .iter()
        .map(|m| crate::inventory::mac::normalize(m))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(ip) = &a.ip {
        if macs.is_empty() {
            bail!("--ip needs a --mac to bind it to");
        }
        ip.parse::<std::net::IpAddr>()
            .map_err(|_| anyhow!("invalid IP address {ip:?}"))?;
    }
    // One request, one write: a refusal leaves nothing half-made.
    let body = json!({
        "xname": a.xname, "nid": a.nid, "macs": macs, "ip": a.ip, "role": a.role,
        "subrole": a.subrole, "groups": a.groups, "state": a.state, "move_macs": a.move_macs,
    });
    let c = client
        .send(Method::POST, "/inventory/v1/nodes", Some(&body))
        .await?;
    let id = c["ID"].as_str().unwrap_or(&a.xname).to_string();
    Ok(format!("added {id} (NID {})\n", c["NID"]))
}

async fn node_set(client: &Client, a: &NodeSetArgs) -> anyhow::Result<String> {
    let base = format!("/hsm/v2/State/Components/{}", enc(&a.xname));
    let mut changed = Vec::new();
    // Identity first: it is what is most likely refused, before anything
    // else has changed.
    if !a.macs.is_empty() || a.ip.is_some() {
        let mut body = json!({"move_macs": a.move_macs});
        if !a.macs.is_empty() {
            body["macs"] = json!(a.macs);
        }
        if let Some(ip) = &a.ip {
            body["ip"] = json!(ip);
        }
        client
            .send(
                Method::PATCH,
                &format!("/inventory/v1/nodes/{}", enc(&a.xname)),
                Some(&body),
            )
            .await?;
        if !a.macs.is_empty() {
            changed.push("MACs");
        }
        if a.ip.is_some() {
            changed.push("IP");
        }
    }
    if let Some(n) = a.nid {
        client
            .send(
                Method::PATCH,
                &format!("{base}/NID"),
                Some(&json!({"NID": n})),
            )
            .await?;
        changed.push("NID");
    }
    if a.role.is_some() || a.subrole.is_some() {
        let c = client.get(&base).await?;
        let role = a
            .role
            .clone()
            .or_else(|| c["Role"].as_str().map(String::from))
            .unwrap_or_default();
        let mut body = json!({"Role": role});
        if let Some(s) = &a.subrole {
            body["SubRole"] = json!(s);
        }
        client
            .send(Method::PATCH, &format!("{base}/Role"), Some(&body))
            .await?;
        changed.push("Role");
    }
    if let Some(e) = a.enabled {
        client
            .send(
                Method::PATCH,
                &format!("{base}/Enabled"),
                Some(&json!({"Enabled": e})),
            )
            .await?;
        changed.push("Enabled");
    }
    if let Some(s) = &a.state {
        client
            .send(
                Method::PATCH,
                &format!("{base}/StateData"),
                Some(&json!({"State": s, "Force": a.force})),
            )
            .await?;
        changed.push("State");
    }
    if changed.is_empty() {
        bail!(
            "nothing to change: give --nid, --role, --subrole, --enabled, --state, --mac or --ip"
        );
    }
    Ok(format!("updated {} of {}\n", changed.join(", "), a.xname))
}

async fn group(client: &Client, format: Format, cmd: GroupCmd) -> anyhow::Result<String> {
    match cmd {
        GroupCmd::List => {
            let groups = client.get("/hsm/v2/groups").await?;
            let rows: Vec<Value> = groups
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|mut g| {
                    g["count"] = json!(g["members"]["ids"].as_array().map_or(0, Vec::len));
                    g
                })
                .collect();
            Ok(render(
                format,
                &[
                    ("LABEL", "/label"),
                    ("DESCRIPTION", "/description"),
                    ("MEMBERS", "/count"),
                    ("TAGS", "/tags"),
                ],
                &rows,
                &groups,
            ))
        }
        GroupCmd::Show { label } => {
            let g = client
                .get(&format!("/hsm/v2/groups/{}", enc(&label)))
                .await?;
            let rows: Vec<Value> = g["members"]["ids"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|id| json!({"id": id}))
                .collect();
            if format != Format::Table {
                return Ok(render(format, &[], &[], &g));
            }
            let mut out = format!(
                "group {} ({})\n",
                g["label"].as_str().unwrap_or(""),
                g["description"].as_str().unwrap_or("")
            );
            out.push_str(&table(&[("MEMBER", "/id")], &rows));
            Ok(out)
        }
        GroupCmd::Add {
            label,
            description,
            members,
            exclusive,
        } => {
            let mut body =
                json!({"label": label, "description": description, "members": {"ids": members}});
            if let Some(e) = exclusive {
                body["exclusiveGroup"] = json!(e);
            }
            client
                .send(Method::POST, "/hsm/v2/groups", Some(&body))
                .await?;
            Ok(format!("created group {}\n", label.to_lowercase()))
        }
        GroupCmd::Delete { label } => {
            client
                .send(
                    Method::DELETE,
                    &format!("/hsm/v2/groups/{}", enc(&label)),
                    None,
                )
                .await?;
            Ok(format!("deleted group {label}\n"))
        }
        GroupCmd::AddMember { label, xnames } => {
            for x in &xnames {
                client
                    .send(
                        Method::POST,
                        &format!("/hsm/v2/groups/{}/members", enc(&label)),
                        Some(&json!({"id": x})),
                    )
                    .await?;
            }
            Ok(format!("added {} to {label}\n", xnames.join(",")))
        }
        GroupCmd::RemoveMember { label, xnames } => {
            for x in &xnames {
                client
                    .send(
                        Method::DELETE,
                        &format!("/hsm/v2/groups/{}/members/{}", enc(&label), enc(x)),
                        None,
                    )
                    .await?;
            }
            Ok(format!("removed {} from {label}\n", xnames.join(",")))
        }
        GroupCmd::SetMembers { label, xnames } => {
            client
                .send(
                    Method::PUT,
                    &format!("/hsm/v2/groups/{}/members", enc(&label)),
                    Some(&json!({"group": label, "ids": xnames})),
                )
                .await?;
            Ok(format!("{label} now has {} members\n", xnames.len()))
        }
    }
}

/// Reads a cluster file (YAML, of which JSON is a subset) as JSON.
pub fn read_cluster_file(path: &std::path::Path) -> anyhow::Result<Value> {
    let text = if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
    };
    let v: Value = serde_yaml_ng::from_str(&text)
        .with_context(|| format!("{} is not valid YAML", path.display()))?;
    if !v.is_object() {
        bail!(
            "{} must hold a mapping with `nodes` (and optionally `bmcs`)",
            path.display()
        );
    }
    Ok(v)
}

async fn import(client: &Client, format: Format, args: &ImportArgs) -> anyhow::Result<String> {
    let body = read_cluster_file(&args.file)?;
    let path = if args.move_macs {
        "/inventory/v1/import?move_macs=true"
    } else {
        "/inventory/v1/import"
    };
    let summary = client.send(Method::POST, path, Some(&body)).await?;
    if format != Format::Table {
        return Ok(render(format, &[], &[], &summary));
    }
    let changed = summary["changed"].as_u64().unwrap_or(0);
    if changed == 0 {
        return Ok(format!(
            "nothing to change: {} nodes already match {}\n",
            summary["nodes"],
            args.file.display()
        ));
    }
    let rows: Vec<Value> = ["components", "interfaces", "endpoints", "groups"]
        .iter()
        .map(|k| json!({"kind": k, "created": summary["created"][k], "updated": summary["updated"][k]}))
        .collect();
    Ok(table(
        &[
            ("KIND", "/kind"),
            ("CREATED", "/created"),
            ("UPDATED", "/updated"),
        ],
        &rows,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("15m").unwrap().as_secs(), 900);
        assert_eq!(parse_duration("2d").unwrap().as_secs(), 172800);
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("3w").is_err());
    }
}
