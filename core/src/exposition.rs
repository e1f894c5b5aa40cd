//! The filter's own metrics as proper Prometheus exposition, for the stats listener's
//! `/metrics`.
//!
//! Envoy stores the filter's metrics as flat counters and gauges, and prints a histogram
//! built from counters as three unrelated counter families (`# TYPE x_bucket counter`), its
//! buckets in string order, without `# HELP`. A filter configured with `exposition` answers
//! `/metrics` instead: it reads the gateway-wide values from Envoy's admin endpoint (one call
//! through a cluster, `/stats/prometheus` restricted to the filter's metrics) and renders them
//! here: `# HELP` and `# TYPE` per family, histograms as `TYPE histogram` with `_bucket` in
//! numeric `le` order, `_sum` in seconds with its fraction (from the microsecond sum the
//! registry keeps), `_count`, and labels in each family's declared order.

use std::collections::BTreeMap;

use crate::metrics::names::{self, Family, Kind, FAMILIES, HISTOGRAM_SUFFIXES};
use crate::metrics::registry::DEFAULT_BUCKETS;

/// The admin path the filter asks for: every metric the filter defined. The admin `filter`
/// regex sees the name before tags are extracted: `wasmcustom.<name>` for the wasm build,
/// `veza.<name>` for the native build (its `metrics_namespace`).
pub const ADMIN_PATH: &str = "/stats/prometheus?filter=%5E%28wasmcustom%7Cveza%29%5C.";

/// The exposition format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The content type of a scrape's error answers.
pub const TEXT: &str = "text/plain; charset=utf-8";

/// One sample of Envoy's output: name, label pairs as printed (values still quoted and
/// escaped, so they are written back exactly), value as printed.
#[derive(Debug, Clone, PartialEq)]
struct Sample<'a> {
    name: &'a str,
    labels: Vec<(&'a str, &'a str)>,
    value: &'a str,
}

/// Parses `name{k="v",...} value` (or `name value`); `None` for anything else.
fn parse_sample(line: &str) -> Option<Sample<'_>> {
    let (series, value) = line.trim_end().rsplit_once(' ')?;
    let (name, labels) = match series.split_once('{') {
        None => (series, Vec::new()),
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
    };
    if name.is_empty() || value.is_empty() {
        return None;
    }
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// `k="v",k2="v2"` into pairs, each value with its quotes, escapes kept.
fn parse_labels(mut text: &str) -> Option<Vec<(&str, &str)>> {
    let mut labels = Vec::new();
    while !text.is_empty() {
        let (key, rest) = text.split_once('=')?;
        let bytes = rest.as_bytes();
        if bytes.first() != Some(&b'"') {
            return None;
        }
        // The closing quote: the first one not escaped by a backslash.
        let mut end = None;
        let mut escaped = false;
        for (i, &b) in bytes.iter().enumerate().skip(1) {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let end = end?;
        labels.push((key, rest.get(..=end)?));
        text = rest.get(end + 1..)?;
        text = text.strip_prefix(',').unwrap_or(text);
    }
    Some(labels)
}

/// A histogram series: its labels without `le`, buckets by bound, count and sums.
#[derive(Default)]
struct HistogramSeries<'a> {
    buckets: Vec<(usize, &'a str, &'a str)>,
    count: Option<&'a str>,
    sum_seconds: Option<&'a str>,
    sum_micros: Option<u64>,
}

/// The labels of a sample in `order` (a family's declared keys), then any others as printed.
fn ordered<'a>(labels: &[(&'a str, &'a str)], order: &[&str]) -> Vec<(&'a str, &'a str)> {
    let mut out: Vec<(&str, &str)> = order
        .iter()
        .filter_map(|key| labels.iter().find(|(k, _)| k == key).copied())
        .collect();
    out.extend(labels.iter().filter(|(k, _)| !order.contains(k)).copied());
    out
}

fn write_labels(out: &mut String, labels: &[(&str, &str)]) {
    if labels.is_empty() {
        return;
    }
    out.push('{');
    for (i, (key, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(key);
        out.push('=');
        out.push_str(value);
    }
    out.push('}');
}

fn write_sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: &str) {
    out.push_str(name);
    write_labels(out, labels);
    out.push(' ');
    out.push_str(value);
    out.push('\n');
}

fn write_header(out: &mut String, name: &str, help: &str, kind: &str) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
}

/// A bucket's place in numeric order: its index among the registry's bounds, `+Inf` (and
/// anything unknown) last. No float parsing: it would cost the module tens of kilobytes.
fn bound(quoted: &str) -> usize {
    let text = quoted.trim_matches('"');
    DEFAULT_BUCKETS
        .iter()
        .position(|(le, _)| *le == text)
        .unwrap_or(DEFAULT_BUCKETS.len())
}

/// Samples by metric name.
type ByName<'a> = BTreeMap<&'a str, Vec<Sample<'a>>>;

/// Renders Envoy's `/stats/prometheus` text for the filter's metrics as exposition.
pub fn render(envoy: &str) -> String {
    // Envoy's own `# TYPE` for names the filter does not declare (business counters).
    let mut envoy_types: BTreeMap<&str, &str> = BTreeMap::new();
    let mut by_name: ByName<'_> = BTreeMap::new();
    for line in envoy.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, kind)) = rest.split_once(' ') {
                envoy_types.insert(name, kind.trim());
            }
        } else if !line.starts_with('#') {
            if let Some(sample) = parse_sample(line) {
                by_name.entry(sample.name).or_default().push(sample);
            }
        }
    }
    let mut out = String::with_capacity(envoy.len());
    for family in FAMILIES {
        match family.kind {
            Kind::Histogram => render_histogram(&mut out, &family, &mut by_name),
            Kind::Counter => render_flat(&mut out, &family, "counter", &mut by_name),
            Kind::Gauge => render_flat(&mut out, &family, "gauge", &mut by_name),
        }
    }
    // What is left are the configured business counters.
    for (name, samples) in by_name {
        let kind = match envoy_types.get(name) {
            Some(&"gauge") => "gauge",
            _ => "counter",
        };
        write_header(
            &mut out,
            name,
            "A business counter of the filter's configuration.",
            kind,
        );
        for sample in samples {
            write_sample(&mut out, name, &sample.labels, sample.value);
        }
    }
    out
}

fn render_flat(out: &mut String, family: &Family, kind: &str, by_name: &mut ByName<'_>) {
    let Some(samples) = by_name.remove(family.name) else {
        return;
    };
    let mut lines: Vec<(Vec<(&str, &str)>, &str)> = samples
        .iter()
        .map(|sample| (ordered(&sample.labels, family.labels), sample.value))
        .collect();
    lines.sort_by(|a, b| a.0.cmp(&b.0));
    write_header(out, family.name, family.help, kind);
    for (labels, value) in lines {
        write_sample(out, family.name, &labels, value);
    }
}

fn render_histogram(out: &mut String, family: &Family, by_name: &mut ByName<'_>) {
    let [bucket, count, sum, sum_micros] =
        HISTOGRAM_SUFFIXES.map(|suffix| format!("{}{suffix}", family.name));
    let mut series: BTreeMap<Vec<(&str, &str)>, HistogramSeries<'_>> = BTreeMap::new();
    for name in [&bucket, &count, &sum, &sum_micros] {
        for sample in by_name.remove(name.as_str()).unwrap_or_default() {
            let le = sample.labels.iter().find(|(k, _)| *k == names::LABEL_LE);
            let without_le: Vec<(&str, &str)> = sample
                .labels
                .iter()
                .filter(|(k, _)| *k != names::LABEL_LE)
                .copied()
                .collect();
            let entry = series
                .entry(ordered(&without_le, family.labels))
                .or_default();
            if name == &bucket {
                if let Some((_, le)) = le {
                    entry.buckets.push((bound(le), le, sample.value));
                }
            } else if name == &count {
                entry.count = Some(sample.value);
            } else if name == &sum {
                entry.sum_seconds = Some(sample.value);
            } else {
                entry.sum_micros = sample.value.parse().ok();
            }
        }
    }
    if series.is_empty() {
        return;
    }
    write_header(out, family.name, family.help, "histogram");
    for (labels, mut histogram) in series {
        histogram.buckets.sort_by_key(|bucket| bucket.0);
        for (_, le, value) in &histogram.buckets {
            let mut with_le = labels.clone();
            with_le.push((names::LABEL_LE, le));
            write_sample(out, &bucket, &with_le, value);
        }
        // The microsecond sum when Envoy has it; whole seconds otherwise.
        let sum_value = match (histogram.sum_micros, histogram.sum_seconds) {
            (Some(micros), _) => format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000),
            (None, Some(seconds)) => seconds.to_owned(),
            (None, None) => "0".to_owned(),
        };
        write_sample(out, &sum, &labels, &sum_value);
        write_sample(out, &count, &labels, histogram.count.unwrap_or("0"));
    }
}

/// Scrapes waiting for the admin call, per worker; past this, a scrape gets 503 at once.
pub const MAX_WAITERS: usize = 64;

/// Most bytes of the admin page read: the filter's metrics at the default series cap are a
/// few megabytes of text.
pub const MAX_ADMIN_BODY: usize = 32 << 20;

/// A worker's scrapes of `/metrics`: every scrape that arrives while the admin call runs
/// waits for that call and gets its answer.
#[derive(Default)]
pub struct Scrapes {
    waiters: Vec<u32>,
    call: Option<u32>,
}

/// What a scrape gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u32,
    pub body: String,
}

impl Answer {
    /// The exposition format for the metrics, plain text for an error.
    pub fn content_type(&self) -> &'static str {
        match self.status {
            200 => CONTENT_TYPE,
            _ => TEXT,
        }
    }
}

impl Scrapes {
    /// A scrape: it waits (`true`), or there are too many waiting already (`false`).
    pub fn wait(&mut self, context_id: u32) -> bool {
        if self.waiters.len() >= MAX_WAITERS {
            return false;
        }
        self.waiters.push(context_id);
        true
    }

    /// A waiting scrape went away.
    pub fn forget(&mut self, context_id: u32) {
        self.waiters.retain(|&id| id != context_id);
    }

    /// Whether the worker should call the admin endpoint now.
    pub fn wants_call(&self) -> bool {
        !self.waiters.is_empty() && self.call.is_none()
    }

    pub fn calling(&mut self, token: u32) {
        self.call = Some(token);
    }

    pub fn owns(&self, token: u32) -> bool {
        self.call == Some(token)
    }

    /// The admin call's answer (`status` `None`: no answer at all): what every waiting scrape
    /// gets, and who they are.
    pub fn answered(&mut self, status: Option<u16>, body: &[u8]) -> (Answer, Vec<u32>) {
        self.call = None;
        let answer = match status {
            Some(200) => Answer {
                status: 200,
                body: render(&String::from_utf8_lossy(body)),
            },
            Some(status) => Answer {
                status: 502,
                body: format!("the admin endpoint answered {status}\n"),
            },
            None => Answer {
                status: 502,
                body: "the admin endpoint did not answer\n".to_owned(),
            },
        };
        (answer, std::mem::take(&mut self.waiters))
    }

    /// The admin call could not be made: every waiting scrape gets this.
    pub fn refused(&mut self, why: &str) -> (Answer, Vec<u32>) {
        self.call = None;
        let answer = Answer {
            status: 503,
            body: format!("{why}\n"),
        };
        (answer, std::mem::take(&mut self.waiters))
    }
}

#[cfg(test)]
mod tests;
