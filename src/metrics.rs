//! `/metrics`: counters and latency histograms in the Prometheus text format.
//!
//! Built on `prometheus-client` (a registry per appliance, no global state,
//! no protobuf). The rest of the code names a metric where it counts it,
//! with [`Metrics::add`] or [`Metrics::observe`]; the family is registered
//! the first time its name is seen. That keeps counting a one-line matter
//! at the site of the event, as it was with the hand-written map this
//! replaced, while the encoding (escaping, histogram buckets, `_total`
//! suffixes) is the client library's.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A label set in the order the caller gave it.
type Labels = Vec<(String, String)>;
type Counters = Family<Labels, Counter>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;
type Gauges = Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>;

/// Latency buckets in seconds: 0.5 ms (a DHCP reply, a cached boot script)
/// to 30 s (a large TFTP transfer, an import).
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS.iter().copied())
}

/// The appliance's metrics; cheap to share behind an `Arc`.
pub struct Metrics(Mutex<Inner>);

struct Inner {
    registry: Registry,
    counters: HashMap<&'static str, Counters>,
    histograms: HashMap<&'static str, Histograms>,
    gauges: HashMap<String, Gauges>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        // Process-wide counters kept by the logging module, which runs
        // before any appliance exists.
        registry.register(
            "openchami_log_write_failures",
            "Log lines that could not be written (stderr full, closed or gone).",
            crate::logging::WRITE_FAILURES.clone(),
        );
        registry.register(
            "openchami_log_lines_suppressed",
            "Access log lines dropped by the per-kind rate limit.",
            crate::logging::SUPPRESSED.clone(),
        );
        Metrics(Mutex::new(Inner {
            registry,
            counters: HashMap::new(),
            histograms: HashMap::new(),
            gauges: HashMap::new(),
        }))
    }
}

fn labels(labels: &[(&str, &str)]) -> Labels {
    labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Metrics {
    /// Adds `by` to counter `name{labels}`; labels are (key, value) pairs.
    /// Counter names end in `_total`, as Prometheus expects.
    pub fn add(&self, name: &'static str, help: &'static str, labels_: &[(&str, &str)], by: u64) {
        self.counter(name, help, labels_).inc_by(by);
    }

    /// The counter `name{labels}` itself, for a hot path that counts with
    /// one atomic add instead of looking it up each time.
    pub fn counter(
        &self,
        name: &'static str,
        help: &'static str,
        labels_: &[(&str, &str)],
    ) -> Counter {
        let family = {
            let Ok(mut m) = self.0.lock() else {
                return Counter::default();
            };
            let m = &mut *m;
            m.counters
                .entry(name)
                .or_insert_with(|| {
                    let f = Counters::default();
                    // The library appends `_total` itself.
                    let base = name.strip_suffix("_total").unwrap_or(name);
                    m.registry.register(base, help, f.clone());
                    f
                })
                .clone()
        };
        family.get_or_create_owned(&labels(labels_))
    }

    /// Records a duration in histogram `name{labels}` (name ends in
    /// `_seconds`).
    pub fn observe(
        &self,
        name: &'static str,
        help: &'static str,
        labels_: &[(&str, &str)],
        took: Duration,
    ) {
        self.histogram(name, help, labels_)
            .observe(took.as_secs_f64());
    }

    /// The histogram `name{labels}` itself, for a hot loop that observes
    /// without looking it up each time.
    pub fn histogram(
        &self,
        name: &'static str,
        help: &'static str,
        labels_: &[(&str, &str)],
    ) -> Histogram {
        let family = {
            let Ok(mut m) = self.0.lock() else {
                return latency_histogram();
            };
            let m = &mut *m;
            m.histograms
                .entry(name)
                .or_insert_with(|| {
                    let f =
                        Histograms::new_with_constructor(latency_histogram as fn() -> Histogram);
                    m.registry.register(name, help, f.clone());
                    f
                })
                .clone()
        };
        family.get_or_create_owned(&labels(labels_))
    }

    /// Every metric, plus `gauges` computed by the caller at scrape time,
    /// in the Prometheus text format (version 0.0.4).
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let Ok(mut m) = self.0.lock() else {
            return String::new();
        };
        let m = &mut *m;
        for (name, help, value) in gauges {
            let family = m
                .gauges
                .entry(name.to_string())
                .or_insert_with(|| {
                    let f = Gauges::default();
                    m.registry.register(*name, *help, f.clone());
                    f
                })
                .clone();
            family.get_or_create(&Vec::new()).set(*value);
        }
        let mut out = String::new();
        if let Err(e) = prometheus_text::encode(&mut out, &m.registry) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }
}

/// The media type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let m = Metrics::default();
        m.add("x_total", "things", &[("code", "200")], 2);
        m.add("x_total", "things", &[("code", "200")], 1);
        m.observe(
            "y_seconds",
            "latency",
            &[("route", "/a")],
            Duration::from_millis(3),
        );
        let text = m.render(&[("g", "a gauge", 5.0)]);
        assert!(text.contains("x_total{code=\"200\"} 3"), "{text}");
        assert!(text.contains("# TYPE x_total counter"), "{text}");
        assert!(text.contains("# TYPE g gauge\ng 5"), "{text}");
        assert!(text.contains("# TYPE y_seconds histogram"), "{text}");
        assert!(
            text.contains("y_seconds_bucket{route=\"/a\",le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(text.contains("y_seconds_count{route=\"/a\"} 1"), "{text}");
        assert!(
            text.contains("openchami_log_write_failures_total "),
            "{text}"
        );
        let c = m.counter("x_total", "things", &[("code", "200")]);
        c.inc();
        assert!(m.render(&[]).contains("x_total{code=\"200\"} 4"));
        m.add("z_total", "odd", &[("route", "a\"b\\c\nd")], 1);
        let text = m.render(&[("g", "a gauge", 6.0)]);
        assert!(text.contains(r#"z_total{route="a\"b\\c\nd"} 1"#), "{text}");
        assert!(text.contains("\ng 6"), "{text}");
        check_exposition(&text);
    }

    /// A strict reading of the text format: every line a comment of the
    /// two known kinds or a sample `name{labels} value`, every sample under
    /// a TYPE of its family.
    pub fn check_exposition(text: &str) {
        let mut typed: Vec<(String, String)> = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# ") {
                let mut it = rest.splitn(3, ' ');
                let (kind, name) = (it.next().unwrap(), it.next().unwrap());
                assert!(matches!(kind, "HELP" | "TYPE"), "{line}");
                if kind == "TYPE" {
                    let t = it.next().unwrap();
                    assert!(matches!(t, "counter" | "gauge" | "histogram"), "{line}");
                    typed.push((name.to_string(), t.to_string()));
                }
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok() || value == "+Inf", "{line}");
            let name = series.split('{').next().unwrap();
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "{line}"
            );
            let (family, kind) = typed.last().expect("a TYPE before samples");
            let ok = match kind.as_str() {
                "histogram" => ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| name == format!("{family}{s}")),
                _ => name == family,
            };
            assert!(ok, "{line} outside its family {family}");
        }
    }
}
