//! Renders the Grafana dashboard's panels from a Prometheus into one self-contained HTML page
//! (inline SVG, no script), for people who would rather look than read and have no Grafana.
//!
//! Each panel's queries run as Grafana would run them: `$service` is every service and
//! `$__rate_interval` is one minute; `{{label}}` legends are filled in.

use std::fmt::Write as _;

use serde_json::Value;

/// A query's result: one named line per series, points as (unix seconds, value).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// What a panel showed.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedPanel {
    pub title: String,
    pub kind: String,
    pub unit: String,
    pub series: Vec<Series>,
}

/// Grafana's variables as a first visit has them.
pub fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$service", ".*")
}

/// Fills `{{label}}` placeholders from a series' labels.
pub fn legend(format: &str, labels: &serde_json::Map<String, Value>) -> String {
    let mut out = String::new();
    let mut rest = format;
    while let Some((before, after)) = rest.split_once("{{") {
        out.push_str(before);
        let Some((key, after)) = after.split_once("}}") else {
            out.push_str("{{");
            out.push_str(after);
            return out;
        };
        out.push_str(labels.get(key.trim()).and_then(Value::as_str).unwrap_or(""));
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Runs `query_range` for every target of every non-row panel.
pub fn query_panels(
    prometheus: &str,
    dashboard: &Value,
    start: f64,
    end: f64,
    step: f64,
) -> Result<Vec<RenderedPanel>, String> {
    let agent = ureq::AgentBuilder::new()
        .timeout(std::time::Duration::from_secs(30))
        .build();
    let mut panels = Vec::new();
    for panel in dashboard
        .pointer("/panels")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let kind = panel
            .pointer("/type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if kind == "row" {
            continue;
        }
        let mut series = Vec::new();
        for target in panel
            .pointer("/targets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let expr = substitute(
                target
                    .pointer("/expr")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            );
            let response = agent
                .get(&format!("{prometheus}/api/v1/query_range"))
                .query("query", &expr)
                .query("start", &start.to_string())
                .query("end", &end.to_string())
                .query("step", &step.to_string())
                .call()
                .map_err(|e| format!("{expr}: {e}"))?;
            let text = response.into_string().map_err(|e| format!("{expr}: {e}"))?;
            let body: Value = serde_json::from_str(&text).map_err(|e| format!("{expr}: {e}"))?;
            let format = target
                .pointer("/legendFormat")
                .and_then(Value::as_str)
                .unwrap_or_default();
            for result in body
                .pointer("/data/result")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let empty = serde_json::Map::new();
                let labels = result
                    .pointer("/metric")
                    .and_then(Value::as_object)
                    .unwrap_or(&empty);
                let points = result
                    .pointer("/values")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|point| {
                        let time = point.get(0)?.as_f64()?;
                        let value: f64 = point.get(1)?.as_str()?.parse().ok()?;
                        value.is_finite().then_some((time, value))
                    })
                    .collect();
                series.push(Series {
                    name: legend(format, labels),
                    points,
                });
            }
        }
        panels.push(RenderedPanel {
            title: panel
                .pointer("/title")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            kind: kind.to_owned(),
            unit: panel
                .pointer("/fieldConfig/defaults/unit")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            series,
        });
    }
    Ok(panels)
}

/// A value in a panel's unit, short.
pub fn format_value(value: f64, unit: &str) -> String {
    let scaled = |value: f64, suffix: &str| {
        let (value, prefix) = match value.abs() {
            v if v >= 1e9 => (value / 1e9, "G"),
            v if v >= 1e6 => (value / 1e6, "M"),
            v if v >= 1e3 => (value / 1e3, "k"),
            _ => (value, ""),
        };
        format!("{} {prefix}{suffix}", trim_number(value))
            .trim_end()
            .to_owned()
    };
    match unit {
        "percentunit" => format!("{}%", trim_number(value * 100.0)),
        "s" if value != 0.0 && value.abs() < 1.0 => format!("{} ms", trim_number(value * 1000.0)),
        "s" => format!("{} s", trim_number(value)),
        "reqps" => scaled(value, "req/s"),
        "Bps" => scaled(value, "B/s"),
        "bps" => scaled(value, "b/s"),
        _ => scaled(value, ""),
    }
}

fn trim_number(value: f64) -> String {
    let text = if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    };
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

const WIDTH: f64 = 560.0;
const HEIGHT: f64 = 180.0;
const COLORS: [&str; 8] = [
    "#7eb26d", "#eab839", "#6ed0e0", "#ef843c", "#e24d42", "#1f78c1", "#ba43a9", "#705da0",
];

/// One time-series panel as SVG: a line per series, the value range on the left.
pub fn svg(panel: &RenderedPanel, start: f64, end: f64) -> String {
    let values = panel
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1));
    let (low, high) = values.fold((0.0f64, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let high = if high <= low { low + 1.0 } else { high };
    let x = |t: f64| 60.0 + (t - start) / (end - start).max(1.0) * (WIDTH - 70.0);
    let y = |v: f64| 10.0 + (high - v) / (high - low) * (HEIGHT - 30.0);
    let mut out = format!(
        r##"<svg viewBox="0 0 {WIDTH} {HEIGHT}" xmlns="http://www.w3.org/2000/svg" role="img"><rect width="100%" height="100%" fill="#181b1f"/>"##
    );
    for (value, at) in [(high, y(high)), (low, y(low))] {
        let _ = write!(
            out,
            r##"<line x1="60" x2="{}" y1="{at:.1}" y2="{at:.1}" stroke="#333"/><text x="55" y="{:.1}" fill="#aaa" font-size="10" text-anchor="end">{}</text>"##,
            WIDTH - 10.0,
            at + 3.0,
            escape(&format_value(value, &panel.unit))
        );
    }
    for (index, series) in panel.series.iter().enumerate() {
        let color = COLORS.get(index % COLORS.len()).copied().unwrap_or("#fff");
        let points: Vec<String> = series
            .points
            .iter()
            .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
            .collect();
        let _ = write!(
            out,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"><title>{}</title></polyline>"#,
            points.join(" "),
            escape(&series.name)
        );
    }
    out.push_str("</svg>");
    out
}

/// The whole page.
pub fn html(title: &str, panels: &[RenderedPanel], start: f64, end: f64, source: &str) -> String {
    let mut out = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title><style>\
         body{{background:#111217;color:#ccccdc;font-family:sans-serif;margin:16px}}\
         .grid{{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:12px}}\
         .panel{{background:#181b1f;border:1px solid #2c3235;padding:8px}}\
         h2{{font-size:14px;margin:0 0 6px}}.stat{{font-size:36px;margin:12px 0}}\
         .legend{{font-size:11px;color:#aaa}}.legend span{{margin-right:10px}}</style></head><body>\
         <h1>{}</h1><p>From {} over the last {:.0} minutes.</p><div class=\"grid\">",
        escape(title),
        escape(title),
        escape(source),
        (end - start) / 60.0
    );
    for panel in panels {
        let _ = write!(
            out,
            "<div class=\"panel\"><h2>{}</h2>",
            escape(&panel.title)
        );
        if panel.series.iter().all(|s| s.points.is_empty()) {
            out.push_str("<p class=\"legend\">no data</p></div>");
            continue;
        }
        if panel.kind == "stat" {
            for series in &panel.series {
                let last = series.points.last().map_or(0.0, |p| p.1);
                let _ = write!(
                    out,
                    "<div class=\"stat\">{}</div><div class=\"legend\">{}</div>",
                    escape(&format_value(last, &panel.unit)),
                    escape(&series.name)
                );
            }
        } else {
            out.push_str(&svg(panel, start, end));
            out.push_str("<div class=\"legend\">");
            for (index, series) in panel.series.iter().enumerate() {
                let color = COLORS.get(index % COLORS.len()).copied().unwrap_or("#fff");
                let last = series.points.last().map_or(0.0, |p| p.1);
                let _ = write!(
                    out,
                    "<span style=\"color:{color}\">&#9632; {} ({})</span>",
                    escape(&series.name),
                    escape(&format_value(last, &panel.unit))
                );
            }
            out.push_str("</div>");
        }
        out.push_str("</div>");
    }
    out.push_str("</div></body></html>\n");
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn legends_take_their_labels() {
        let labels = serde_json::json!({"method": "GET", "endpoint": "/api/v1/tracks/:id"});
        let labels = labels.as_object().unwrap();
        assert_eq!(
            legend("{{method}} {{endpoint}}", labels),
            "GET /api/v1/tracks/:id"
        );
        assert_eq!(legend("p95", labels), "p95");
        assert_eq!(legend("{{missing}}!", labels), "!");
        assert_eq!(legend("{{method", labels), "{{method");
    }

    #[test]
    fn values_are_shown_in_their_unit() {
        assert_eq!(format_value(0.0523, "percentunit"), "5.23%");
        assert_eq!(format_value(0.0042, "s"), "4.2 ms");
        assert_eq!(format_value(1.5, "s"), "1.5 s");
        assert_eq!(format_value(12_500.0, "reqps"), "12.5 kreq/s");
        assert_eq!(format_value(3.0, "short"), "3");
        assert_eq!(format_value(128_000.0, "bps"), "128 kb/s");
    }

    #[test]
    fn a_panel_draws_one_line_per_series_scaled_to_the_range() {
        let panel = RenderedPanel {
            title: "Requests <all>".into(),
            kind: "timeseries".into(),
            unit: "reqps".into(),
            series: vec![Series {
                name: "backend-api".into(),
                points: vec![(0.0, 0.0), (60.0, 10.0)],
            }],
        };
        let svg = svg(&panel, 0.0, 60.0);
        assert!(svg.contains(r#"points="60.0,160.0 550.0,10.0""#), "{svg}");
        assert!(
            svg.contains(">10 req/s<") && svg.contains(">0 req/s<"),
            "{svg}"
        );
        let page = html("Veza", &[panel], 0.0, 60.0, "http://prometheus");
        assert!(page.contains("<h2>Requests &lt;all&gt;</h2>"));
        assert!(page.contains("&#9632; backend-api (10 req/s)"));
    }
}
