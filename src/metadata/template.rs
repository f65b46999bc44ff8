//! Local rendering of Jinja group files, for previews.
//!
//! Nodes get templates (`## template: jinja`) as stored and cloud-init renders
//! them with Jinja2 against its instance data. `openchami metadata group
//! render` renders them here first, against the node's meta-data, in the same
//! shape cloud-init builds (`ds.meta_data.*`, `v1.*` and its top-level
//! aliases, underscore aliases of hyphenated keys), with `trim_blocks` as
//! cloud-init sets it. Unlike cloud-init, an undefined variable is an error,
//! so a typo shows up before a boot rather than as `CI_MISSING_JINJA_VAR`.

use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Map, Value, json};

/// The header cloud-init looks for (case-insensitive, leading blanks ignored).
const JINJA_HEADER: &str = "## template: jinja";

/// Is `content` a Jinja template for cloud-init?
pub fn is_jinja(content: &str) -> bool {
    content
        .trim_start()
        .get(..JINJA_HEADER.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(JINJA_HEADER))
}

/// The instance data cloud-init would build from this meta-data on a
/// NoCloud node, as far as it is known before the node boots.
pub fn instance_data(meta_data: &Value) -> Value {
    let md = |k: &str| meta_data.get(k).cloned().unwrap_or(Value::Null);
    let v1 = json!({
        "cloud_name": "nocloud",
        "cloud_id": "nocloud",
        "platform": "nocloud",
        "instance_id": md("instance-id"),
        "local_hostname": md("local-hostname"),
        "availability_zone": meta_data.get("availability-zone").or_else(|| meta_data.get("availability_zone")).cloned().unwrap_or(Value::Null),
        "region": md("region"),
        "public_ssh_keys": meta_data.get("public-keys").cloned().unwrap_or(json!([])),
    });
    json!({"ds": {"meta_data": meta_data}, "v1": v1})
}

/// cloud-init's `convert_jinja_instance_data`: `-` keys get `_` aliases and
/// the keys of `v1` are copied to the top level.
fn jinja_vars(data: &Value) -> Value {
    fn convert(v: &Value, top: bool) -> Value {
        match v {
            Value::Object(m) => {
                let mut out = Map::new();
                for (k, v) in m {
                    let converted = convert(v, false);
                    if top
                        && k.len() > 1
                        && k.starts_with('v')
                        && k[1..].bytes().all(|b| b.is_ascii_digit())
                        && let Value::Object(inner) = &converted
                    {
                        for (ik, iv) in inner {
                            out.insert(ik.clone(), iv.clone());
                        }
                    }
                    if k.contains('-') {
                        out.insert(k.replace('-', "_"), converted.clone());
                    }
                    out.insert(k.clone(), converted);
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(|i| convert(i, false)).collect()),
            other => other.clone(),
        }
    }
    convert(data, true)
}

/// Renders a Jinja group file against `meta_data` (the node's meta-data,
/// parsed). The header line is dropped, as cloud-init does. `Err` carries
/// the template error with its line.
pub fn render(content: &str, meta_data: &Value) -> Result<String, String> {
    let body = content
        .trim_start()
        .split_once('\n')
        .map(|(_, rest)| rest)
        .unwrap_or("");
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_trim_blocks(true);
    env.add_template("group file", body)
        .map_err(|e| describe(&e))?;
    let tmpl = env.get_template("group file").map_err(|e| describe(&e))?;
    let vars = jinja_vars(&instance_data(meta_data));
    tmpl.render(minijinja::Value::from_serialize(&vars))
        .map_err(|e| describe(&e))
}

/// Renders a metadata-service group template against `ctx` as upstream's
/// pongo2 does: server-side, every byte of `content` a template, and an
/// unknown variable (or member of one) rendering empty.
pub fn render_lenient(content: &str, ctx: &Value) -> Result<String, String> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.set_keep_trailing_newline(true);
    env.add_template("group", content)
        .map_err(|e| describe(&e))?;
    let tmpl = env.get_template("group").map_err(|e| describe(&e))?;
    tmpl.render(minijinja::Value::from_serialize(ctx))
        .map_err(|e| describe(&e))
}

/// The error and where it is; line numbers count the header line, as an
/// editor showing the stored file does.
fn describe(e: &minijinja::Error) -> String {
    let mut s = e.kind().to_string();
    if let Some(d) = e.detail() {
        s.push_str(": ");
        s.push_str(d);
    }
    if let Some(line) = e.line() {
        s.push_str(&format!(" (line {})", line + 1));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md() -> Value {
        json!({
            "instance-id": "i-00000001",
            "local-hostname": "de01",
            "hostname": "de01",
            "cluster-name": "demo",
            "instance_data": {"v1": {
                "public_keys": ["ssh-ed25519 AAAA a@b"],
                "vendor_data": {"groups": {"compute": {"Description": "c", "syslog_server": "10.0.0.1"}}}
            }}
        })
    }

    #[test]
    fn detects_the_header() {
        assert!(is_jinja("## template: jinja\n#cloud-config\n"));
        assert!(is_jinja("  ## Template: Jinja\n"));
        assert!(!is_jinja("#cloud-config\n## template: jinja\n"));
    }

    #[test]
    fn renders_like_cloud_init() {
        let t = "## template: jinja\n#cloud-config\nhostname: {{ ds.meta_data.local_hostname }}\n\
                 {% if v1.cloud_name == 'nocloud' %}\nfqdn: {{ local_hostname }}.{{ ds.meta_data['cluster-name'] }}\n{% endif %}\n\
                 syslog: {{ ds.meta_data.instance_data.v1.vendor_data.groups.compute.syslog_server }}\n";
        assert_eq!(
            render(t, &md()).unwrap(),
            "#cloud-config\nhostname: de01\nfqdn: de01.demo\nsyslog: 10.0.0.1",
            "the trailing newline is dropped, as Jinja2 does"
        );
    }

    #[test]
    fn undefined_variables_are_errors() {
        let t = "## template: jinja\n#cloud-config\n\nx: {{ ds.meta_data.instance_data.v1.public_key }}\n";
        let e = render(t, &md()).unwrap_err();
        assert!(e.contains("undefined"), "{e}");
        assert!(e.contains("line 4"), "{e}");
        let t = "## template: jinja\n{% if %}\n";
        assert!(render(t, &md()).is_err());
    }
}
