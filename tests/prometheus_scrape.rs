//! A real Prometheus scraping the real gateway: the seed's PromQL works on what the filter
//! emits, with seconds as the unit, and no relabelling or recording rules.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use veza_test_harness::*;

const DELAY_MS: &str = "200";
const REQUESTS: usize = 400;
const CLIENTS: usize = 20;

#[test]
fn prometheus_reads_request_counts_quantiles_and_means_in_seconds() {
    let (_standins, config, ports) = GatewayConfig::with_standins();
    let envoy = Envoy::start(&config, ports, 2);
    let prometheus = Prometheus::start(envoy.ports.admin);
    let url = envoy.url("/api/v1/tracks/1");
    let slow = [("x-standin-delay-ms", DELAY_MS)];

    // One request first, so every series exists before the load and rate() sees all of it.
    assert_eq!(http("GET", &url, &slow, "").unwrap().0, 200);
    poll(
        "Prometheus to scrape the first request",
        Duration::from_secs(20),
        || {
            prometheus
                .scalar("sum(http_requests_total)")
                .filter(|v| *v == 1.0)
        },
    );

    std::thread::scope(|scope| {
        for _ in 0..CLIENTS {
            scope.spawn(|| {
                for _ in 0..REQUESTS / CLIENTS {
                    assert_eq!(http("GET", &url, &slow, "").unwrap().0, 200);
                }
            });
        }
    });
    let total = (REQUESTS + 1) as f64;
    poll(
        "Prometheus to scrape every request",
        Duration::from_secs(20),
        || {
            prometheus
                .scalar("sum(http_requests_total)")
                .filter(|v| *v == total)
        },
    );
    // The _sum counter moves in whole seconds: wait for the scrape that holds the last flush.
    poll(
        "the last _sum flush to be scraped",
        Duration::from_secs(10),
        || {
            let count = prometheus.scalar("sum(http_request_duration_seconds_count)")?;
            (count == total).then_some(())
        },
    );

    let labelled = prometheus.query(r#"http_requests_total{endpoint="/api/v1/tracks/:id"}"#);
    assert_eq!(labelled.len(), 1);
    let (labels, value) = &labelled[0];
    assert_eq!(value, &total);
    assert_eq!(labels["method"], "GET");
    assert_eq!(labels["status"], "200");
    assert_eq!(labels["service"], "backend-api");
    assert_eq!(labels["job"], "veza-gateway");

    // Every request took 200 ms and a little: all land in the (0.1, 0.25] bucket.
    let in_bucket = prometheus
        .scalar(r#"sum(http_request_duration_seconds_bucket{le="0.25"}) - sum(http_request_duration_seconds_bucket{le="0.1"})"#)
        .unwrap();
    assert_eq!(in_bucket, total);
    let p95 = prometheus
        .scalar("histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket[1m])))")
        .unwrap();
    assert!(p95 > 0.1 && p95 <= 0.25, "p95 = {p95}");

    let mean = prometheus
        .scalar("sum(rate(http_request_duration_seconds_sum[1m])) / sum(rate(http_request_duration_seconds_count[1m]))")
        .unwrap();
    let truth = 0.2;
    assert!(
        (mean - truth).abs() / truth <= 0.05,
        "mean from _sum/_count = {mean}"
    );
    let cumulative_mean = prometheus
        .scalar("sum(http_request_duration_seconds_sum) / sum(http_request_duration_seconds_count)")
        .unwrap();
    assert!(
        (cumulative_mean - truth).abs() / truth <= 0.05,
        "cumulative mean = {cumulative_mean}"
    );
}
