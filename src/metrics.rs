//! Prometheus text exposition without a metrics framework.
//!
//! The appliance needs a handful of counters; a map behind a mutex held for
//! a few nanoseconds per request is simpler than a registry with macros, and
//! the text format is stable.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Counters keyed by metric name and rendered label set.
#[derive(Default)]
pub struct Metrics(Mutex<Inner>);

#[derive(Default, Clone)]
struct Inner {
    counters: BTreeMap<(&'static str, String), u64>,
    help: BTreeMap<&'static str, &'static str>,
}

impl Metrics {
    /// Adds `by` to counter `name{labels}`; labels are (key, value) pairs.
    pub fn add(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)], by: u64) {
        let mut rendered = String::with_capacity(96);
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                rendered.push(',');
            }
            let _ = write!(rendered, "{k}=\"{}\"", escape(v));
        }
        if let Ok(mut m) = self.0.lock() {
            m.help.entry(name).or_insert(help);
            *m.counters.entry((name, rendered)).or_insert(0) += by;
        }
    }

    /// The counters, plus `gauges` computed by the caller at scrape time.
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        let Inner { help, counters } = self.0.lock().map(|m| m.clone()).unwrap_or_default();
        let mut last = "";
        for ((name, labels), value) in &counters {
            if *name != last {
                let _ = writeln!(
                    out,
                    "# HELP {name} {}",
                    help.get(name).copied().unwrap_or("")
                );
                let _ = writeln!(out, "# TYPE {name} counter");
                last = name;
            }
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {value}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        }
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out
    }
}

/// Label values rarely need escaping; only those that do are copied.
fn escape(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return std::borrow::Cow::Borrowed(v);
    }
    std::borrow::Cow::Owned(
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_gauges() {
        let m = Metrics::default();
        m.add("x_total", "things", &[("code", "200")], 2);
        m.add("x_total", "things", &[("code", "200")], 1);
        let text = m.render(&[("g", "a gauge", 5.0)]);
        assert!(text.contains("x_total{code=\"200\"} 3"), "{text}");
        assert!(text.contains("# TYPE g gauge\ng 5"), "{text}");
        m.add("y_total", "odd", &[("route", "a\"b\\c\nd")], 1);
        let text = m.render(&[]);
        assert!(text.contains(r#"y_total{route="a\"b\\c\nd"} 1"#), "{text}");
    }
}
