//! The stats listener of `envoy/envoy.yaml`: `/metrics` is the filter's metrics as proper
//! Prometheus exposition (what `promtool check metrics` and Prometheus' metadata see as
//! histograms), with the same values as Envoy's own `/stats/prometheus`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use veza_test_harness::*;

/// `GET /metrics` on the stats listener: the response's head and body.
fn scrape(envoy: &Envoy) -> (String, String) {
    let response = raw_exchange(
        envoy.ports.stats,
        "GET /metrics HTTP/1.1\r\nhost: stats\r\nconnection: close\r\n\r\n",
    );
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.to_lowercase(), body.to_owned())
}

fn promtool_check_metrics(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) must be installed: run `make test`");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), said)
}

#[test]
fn metrics_on_the_stats_listener_are_proper_exposition_with_envoys_values() {
    let (_standins, config, ports) = GatewayConfig::with_standins();
    let envoy = Envoy::start(&config, ports, 2);
    // Ten requests of about 30 ms: a third of a second in all, which a `_sum` kept in whole
    // seconds shows as 0.
    let slow = [("x-standin-delay-ms", "30")];
    for _ in 0..10 {
        assert_eq!(
            http("GET", &envoy.url("/api/v1/tracks/1"), &slow, "")
                .unwrap()
                .0,
            200
        );
    }
    let tracks = [
        ("method", "GET"),
        ("endpoint", "/api/v1/tracks/:id"),
        ("service", "backend-api"),
    ];
    envoy.wait_for("http_request_duration_seconds_count", &tracks, 10.0);

    let (head, body) = scrape(&envoy);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    // Prometheus' own linter finds nothing to say.
    let (ok, said) = promtool_check_metrics(&body);
    assert!(
        ok && said.trim().is_empty(),
        "promtool check metrics:\n{said}\n{body}"
    );

    // Histograms are histograms, with HELP, and their buckets in numeric order.
    for family in [
        "http_request_duration_seconds",
        "dependency_check_duration_seconds",
        "websocket_connection_duration_seconds",
    ] {
        assert!(
            body.contains(&format!("# TYPE {family} histogram\n")),
            "{family}"
        );
        assert!(body.contains(&format!("# HELP {family} ")), "{family}");
        assert!(
            !body.contains(&format!("# TYPE {family}_bucket")),
            "{family}"
        );
    }
    let buckets: Vec<String> = parse_exposition(&body, "http_request_duration_seconds_bucket")
        .into_iter()
        .filter(|s| tracks.iter().all(|(k, v)| s.label(k) == *v))
        .map(|s| s.label("le").to_owned())
        .collect();
    assert_eq!(
        buckets,
        ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"]
    );
    // _sum in seconds with its fraction: Envoy's whole-second counter says 0, the exposition
    // the exact microsecond sum.
    let value = |text: &str, metric: &str| {
        parse_exposition(text, metric)
            .into_iter()
            .find(|s| tracks.iter().all(|(k, v)| s.label(k) == *v))
            .map(|s| s.value)
            .unwrap()
    };
    let admin = envoy.prometheus_text();
    let sum = value(&body, "http_request_duration_seconds_sum");
    assert_eq!(value(&admin, "http_request_duration_seconds_sum"), 0.0);
    assert_eq!(
        sum,
        value(&admin, "http_request_duration_seconds_sum_microseconds") / 1e6
    );
    assert!((0.3..1.0).contains(&sum), "{sum}");
    assert_eq!(value(&body, "http_request_duration_seconds_count"), 10.0);
    // Every request count as Envoy has it, labels and all.
    assert_eq!(
        parse_exposition(&body, "http_requests_total"),
        parse_exposition(&admin, "http_requests_total")
    );
    assert!(
        !body.contains("_sum_microseconds"),
        "internal series stay out"
    );

    // Envoy's own stats stay reachable on the stats listener.
    let (status, envoy_stats) = http(
        "GET",
        &format!("http://127.0.0.1:{}/stats/prometheus", envoy.ports.stats),
        &[],
        "",
    )
    .unwrap();
    assert_eq!(status, 200);
    assert!(envoy_stats.contains("envoy_server_uptime"), "{envoy_stats}");

    // A real Prometheus scraping /metrics records the families as histograms.
    let config = format!(
        "global:\n  scrape_interval: 1s\n\
         scrape_configs:\n  - job_name: veza-gateway\n    metrics_path: /metrics\n    \
         static_configs:\n      - targets: ['127.0.0.1:{}']\n",
        envoy.ports.stats
    );
    let prometheus = Prometheus::start_with(&config, &[]);
    let kind = poll("Prometheus' metadata", Duration::from_secs(20), || {
        let url = format!(
            "http://127.0.0.1:{}/api/v1/metadata?metric=http_request_duration_seconds",
            prometheus.port
        );
        let (_, text) = http("GET", &url, &[], "").unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        json["data"]["http_request_duration_seconds"][0]["type"]
            .as_str()
            .map(str::to_owned)
    });
    assert_eq!(kind, "histogram");
    // The metadata can be served before the scrape's samples are queryable.
    let count = poll("the scraped count", Duration::from_secs(20), || {
        prometheus
            .scalar(r#"sum(http_request_duration_seconds_count{endpoint="/api/v1/tracks/:id"})"#)
    });
    assert_eq!(count, 10.0);
}
