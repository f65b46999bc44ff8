//! A small block-style YAML writer whose output means the same to YAML 1.1
//! and YAML 1.2 readers.
//!
//! cloud-init reads meta-data with PyYAML, a YAML 1.1 reader: there, plain
//! `yes`, `on`, `off` are booleans, `0755` is octal and `12:30` is a base-60
//! integer. General-purpose emitters follow YAML 1.2 and leave such strings
//! unquoted, so a group's `mode: "0755"` would reach the node as 493. Here a
//! string is written plain only when it starts with a letter and holds
//! nothing a reader could take for anything but a string; every other string
//! is double-quoted with JSON escapes, which both versions read alike.
//! Writing directly (no intermediate tree of owned values) also keeps the
//! per-request cost of meta-data low.

use std::fmt::Write as _;

use serde_json::Value;

/// A value to write: borrowed JSON, or scalars and containers built in place.
pub enum Node<'a> {
    Str(&'a str),
    Owned(String),
    Int(i64),
    Json(&'a Value),
    Map(Vec<(&'a str, Node<'a>)>),
    Seq(Vec<Node<'a>>),
}

/// Words YAML 1.1 (or 1.2) resolves to booleans or null, compared case-insensitively.
const RESERVED: &[&str] = &[
    "y", "n", "yes", "no", "on", "off", "true", "false", "null", "nan", "inf",
];

/// Can `s` be written as a plain scalar that every reader takes as this string?
fn plain_ok(s: &str) -> bool {
    let b = s.as_bytes();
    let Some(&first) = b.first() else {
        return false;
    };
    if !first.is_ascii_alphabetic() || b.last() == Some(&b' ') || b.last() == Some(&b':') {
        return false;
    }
    if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(s)) {
        return false;
    }
    let mut prev = 0u8;
    for &c in b {
        let ok = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'_' | b'.' | b'/' | b'@' | b'+' | b'=' | b',' | b'(' | b')'
            )
            || (c == b' ' && prev != b' ')
            || c == b':';
        // ": " would start a mapping value ('#' and the other indicators are never plain).
        if !ok || (prev == b':' && c == b' ') {
            return false;
        }
        prev = c;
    }
    true
}

fn write_str(out: &mut String, s: &str) {
    if plain_ok(s) {
        out.push_str(s);
    } else {
        // JSON string syntax is valid double-quoted YAML in both versions.
        out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
    }
}

fn write_number(out: &mut String, n: &serde_json::Number) {
    if n.is_i64() || n.is_u64() {
        let _ = write!(out, "{n}");
        return;
    }
    match n.as_f64() {
        // YAML 1.1 floats need a dot and a signed exponent.
        Some(f) if f.is_finite() => {
            let s = format!("{f:?}");
            match s.split_once('e') {
                Some((m, e)) => {
                    let m = if m.contains('.') {
                        m.to_string()
                    } else {
                        format!("{m}.0")
                    };
                    let e = if e.starts_with('-') {
                        e.to_string()
                    } else {
                        format!("+{e}")
                    };
                    let _ = write!(out, "{m}e{e}");
                }
                None => out.push_str(&s),
            }
        }
        _ => out.push_str("null"),
    }
}

/// A scalar (or empty container) written on the current line, if `v` is one.
fn inline(out: &mut String, v: &Node<'_>) -> bool {
    match v {
        Node::Str(s) => write_str(out, s),
        Node::Owned(s) => write_str(out, s),
        Node::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Node::Json(j) => return inline_json(out, j),
        Node::Map(m) if m.is_empty() => out.push_str("{}"),
        Node::Seq(s) if s.is_empty() => out.push_str("[]"),
        Node::Map(_) | Node::Seq(_) => return false,
    }
    true
}

fn inline_json(out: &mut String, v: &Value) -> bool {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_str(out, s),
        Value::Object(m) if m.is_empty() => out.push_str("{}"),
        Value::Array(a) if a.is_empty() => out.push_str("[]"),
        Value::Object(_) | Value::Array(_) => return false,
    }
    true
}

fn indent(out: &mut String, n: usize) {
    for _ in 0..n {
        out.push(' ');
    }
}

/// Writes `key:` and its value at `level` (the value nested when it is a
/// non-empty container).
fn entry(out: &mut String, level: usize, key: &str, v: &Node<'_>) {
    indent(out, level);
    write_str(out, key);
    out.push(':');
    let mark = out.len();
    out.push(' ');
    if inline(out, v) {
        out.push('\n');
    } else {
        out.truncate(mark);
        out.push('\n');
        block(out, level + 2, v);
    }
}

fn entry_json(out: &mut String, level: usize, key: &str, v: &Value) {
    entry(out, level, key, &Node::Json(v));
}

/// Writes a non-empty container at `level`.
fn block(out: &mut String, level: usize, v: &Node<'_>) {
    match v {
        Node::Map(m) => {
            for (k, v) in m {
                entry(out, level, k, v);
            }
        }
        Node::Seq(items) => {
            for item in items {
                seq_item(out, level, item);
            }
        }
        Node::Json(Value::Object(m)) => {
            for (k, v) in m {
                entry_json(out, level, k, v);
            }
        }
        Node::Json(Value::Array(items)) => {
            for item in items {
                seq_item(out, level, &Node::Json(item));
            }
        }
        _ => {}
    }
}

/// `- item`; a nested container starts on the dash's line, indented by 2.
fn seq_item(out: &mut String, level: usize, v: &Node<'_>) {
    indent(out, level);
    out.push_str("- ");
    if inline(out, v) {
        out.push('\n');
        return;
    }
    let mut nested = String::new();
    block(&mut nested, 0, v);
    for (i, line) in nested.lines().enumerate() {
        if i > 0 {
            indent(out, level + 2);
        }
        out.push_str(line);
        out.push('\n');
    }
}

/// The document for a top-level mapping.
pub fn document(root: &Node<'_>) -> String {
    let mut out = String::with_capacity(2048);
    if !inline(&mut out, root) {
        block(&mut out, 0, root);
    } else {
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip(v: &Value) {
        let text = document(&Node::Json(v));
        let back: Value = serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{e}:\n{text}"));
        assert_eq!(&back, v, "\n{text}");
    }

    #[test]
    fn tricky_scalars_are_quoted() {
        for s in [
            "yes",
            "No",
            "ON",
            "off",
            "y",
            "n",
            "true",
            "null",
            "~",
            "",
            " lead",
            "trail ",
            "0755",
            "12:30",
            "52:54:00:12:34:56",
            "1e5",
            ".inf",
            "-1",
            "a: b",
            "a #b",
            "#x",
            "- x",
            "x:",
            "@x",
            "*x",
            "&x",
            "!x",
            "%x",
            "|",
            ">",
            "'q'",
            "\"q\"",
            "multi\nline",
            "tab\there",
            "ünïcode",
            "[a]",
            "{a: 1}",
            "a,b",
        ] {
            let mut out = String::new();
            write_str(&mut out, s);
            let first = out.as_bytes()[0];
            let plain = first != b'"';
            if plain {
                assert!(first.is_ascii_alphabetic(), "{s:?} written plain as {out}");
            }
            round_trip(&json!({ s: s }));
        }
        for s in [
            "compute nodes",
            "http://172.16.0.254:27778/cloud-init",
            "ssh-ed25519 AAAA+/= admin@head",
            "de01",
            "a:b",
        ] {
            let mut out = String::new();
            write_str(&mut out, s);
            assert_eq!(out, s, "plain");
        }
    }

    #[test]
    fn structures() {
        round_trip(&json!({
            "a": {"b": [1, 2.5, -3, 1e300, 2.0e-7, true, null, "x"], "c": {}, "d": []},
            "list": [{"k": "v", "k2": [1, {"z": 1}]}, [1, [2, 3]], "s", {}],
            "n": 0
        }));
        let text = document(&Node::Json(
            &json!({"k": [{"a": 1, "b": 2}], "m": {"x": "z"}}),
        ));
        assert_eq!(text, "k:\n  - a: 1\n    b: 2\nm:\n  x: z\n");
    }
}
