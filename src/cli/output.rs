//! Rendering client results: a table for people, JSON or YAML for scripts.

use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{ContentArrangement, Table};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

/// Renders `rows` (objects) with `columns` as (header, key) for tables, or
/// `raw` as JSON/YAML.
pub fn render(format: Format, columns: &[(&str, &str)], rows: &[Value], raw: &Value) -> String {
    match format {
        Format::Json => {
            let mut s = serde_json::to_string_pretty(raw).unwrap_or_default();
            s.push('\n');
            s
        }
        Format::Yaml => serde_yaml_ng::to_string(raw).unwrap_or_default(),
        Format::Table => table(columns, rows),
    }
}

pub fn table(columns: &[(&str, &str)], rows: &[Value]) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(columns.iter().map(|(h, _)| *h));
    for row in rows {
        t.add_row(
            columns
                .iter()
                .map(|(_, k)| cell(row.pointer(k).unwrap_or(&Value::Null))),
        );
    }
    let mut s = t.to_string();
    s.push('\n');
    s
}

/// A JSON value as a table cell: strings bare, lists comma-joined.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}
