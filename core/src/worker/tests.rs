use super::*;
use crate::host::memory::{MemoryHost, MemoryRequest};

const SECOND: u64 = 1_000_000_000;

fn configure(host: &mut MemoryHost, json: &str) -> Result<Worker, ConfigError> {
    Worker::configure(host, Some(json.as_bytes()), 0)
}

#[test]
fn a_bad_configuration_is_refused_with_its_field_and_defines_nothing() {
    let mut host = MemoryHost::default();
    let err = configure(&mut host, r#"{"max_series": 0}"#).err().unwrap();
    assert_eq!(err.to_string(), "max_series: must be at least 1 (got 0)");
    assert!(host.counters().is_empty(), "{:?}", host.counters());
}

#[test]
fn the_tick_period_is_the_shortest_any_part_needs() {
    let mut host = MemoryHost::default();
    let period = |host: &mut MemoryHost, json| configure(host, json).unwrap().tick_period_ms();
    // The built-in /ready checks want 20 ms, or the flush's second where a waiting probe
    // wakes the worker itself.
    assert_eq!(period(&mut host, "{}"), 20);
    assert_eq!(
        configure(&mut host, "{}")
            .unwrap()
            .background_tick_period_ms(),
        1000
    );
    assert_eq!(
        configure(
            &mut host,
            r#"{"metrics_flush_interval_ms": 0, "active_users": {"enabled": false}}"#
        )
        .unwrap()
        .background_tick_period_ms(),
        1000,
        "background rounds"
    );
    assert_eq!(
        period(&mut host, r#"{"health": {"enabled": false}}"#),
        1000,
        "the metrics flush and active users"
    );
    assert_eq!(
        period(
            &mut host,
            r#"{"health": {"enabled": false}, "active_users": {"enabled": false}, "metrics_flush_interval_ms": 0}"#
        ),
        0,
        "nothing periodic"
    );
    assert_eq!(
        period(
            &mut host,
            r#"{"health": {"enabled": false}, "tracing": {"collector": {"cluster": "jaeger"}}}"#
        ),
        100,
        "a batch of spans waits at most 100 ms"
    );
}

#[test]
fn ticks_flush_on_the_interval_and_export_spans_to_the_collector() {
    let mut host = MemoryHost::default();
    let worker = configure(
        &mut host,
        r#"{"health": {"enabled": false}, "tracing": {"sampling_ratio": 1.0,
            "collector": {"cluster": "jaeger", "flush_interval_ms": 100}}}"#,
    )
    .unwrap();
    let mut exchange = crate::exchange::Exchange::new(1);
    host.request = MemoryRequest::with_headers(&[(":method", "GET"), (":path", "/api/v1/tracks")]);
    exchange.request_headers(&worker, &mut host);
    exchange.end(&worker, &mut host);
    // Counted in the worker, not yet handed to the host.
    assert_eq!(host.counter("trace_spans_exported_total"), Some(0));
    worker.tick(&mut host, SECOND / 2);
    assert_eq!(host.calls.len(), 1, "the span batch");
    let call = &host.calls[0];
    assert_eq!(call.cluster, "jaeger");
    assert!(call
        .headers
        .contains(&(":path".to_owned(), "/v1/traces".to_owned())));
    let body = String::from_utf8(call.body.clone().unwrap()).unwrap();
    assert!(body.contains(r#""name":"GET /api/v1/tracks""#), "{body}");
    worker.call_response(
        &mut host,
        1,
        Ok(Some(b"200".to_vec())),
        Ok(Some(b"".to_vec())),
        SECOND / 2,
    );
    worker.tick(&mut host, SECOND);
    assert_eq!(host.counter("trace_spans_exported_total"), Some(1));
}

#[test]
fn a_check_on_an_unknown_cluster_fails_the_round_at_once() {
    let mut host = MemoryHost::default();
    host.unknown_cluster = Some("nowhere".to_owned());
    let worker = configure(
        &mut host,
        r#"{"health": {"checks": [{"name": "db", "cluster": "nowhere"}]}}"#,
    )
    .unwrap();
    let mut probe = crate::exchange::Exchange::new(4);
    host.request = MemoryRequest::with_headers(&[(":method", "GET"), (":path", "/ready")]);
    probe.request_headers(&worker, &mut host);
    worker.tick(&mut host, SECOND);
    assert!(host.calls.is_empty());
    assert_eq!(
        host.answers,
        [(
            4,
            503,
            r#"{"status":"unready","checks":{"db":{"status":"unready","error":"unknown cluster"}}}"#
                .to_owned()
        )]
    );
}

#[test]
fn workers_share_one_start_time() {
    let mut host = MemoryHost::default();
    let first = Worker::configure(&mut host, None, 5 * SECOND).unwrap();
    let second = Worker::configure(&mut host, None, 9 * SECOND).unwrap();
    assert_eq!(
        (first.started_nanos, second.started_nanos),
        (5 * SECOND, 5 * SECOND)
    );
}

#[test]
fn a_call_answer_the_host_failed_to_read_is_counted_and_judged_without_it() {
    let mut host = MemoryHost::default();
    let worker = configure(
        &mut host,
        r#"{"health": {"checks": [{"name": "chat", "cluster": "veza_chat"}]}}"#,
    )
    .unwrap();
    let mut probe = crate::exchange::Exchange::new(2);
    host.request = MemoryRequest::with_headers(&[(":method", "GET"), (":path", "/ready")]);
    probe.request_headers(&worker, &mut host);
    worker.tick(&mut host, SECOND);
    worker.call_response(
        &mut host,
        1,
        Err(crate::host::HostError(10)),
        Err(crate::host::HostError(10)),
        SECOND,
    );
    worker.flush(&mut host);
    let errors = |operation| {
        host.series(
            "veza_observability_errors_total",
            &[("operation", operation)],
        )
    };
    assert_eq!(
        (errors("get_header"), errors("get_buffer")),
        (Some(1), Some(1))
    );
    // No status read: the call counts as failed with no response.
    assert_eq!(
        host.answers,
        [(
            2,
            503,
            r#"{"status":"unready","checks":{"chat":{"status":"unready","error":"reset"}}}"#
                .to_owned()
        )]
    );
}

/// Two checks, one optional, with background rounds every 10 s.
const BACKGROUND: &str = r#"{"health": {"check_interval_ms": 10000, "checks": [
    {"name": "db", "cluster": "veza_db"},
    {"name": "cache", "cluster": "veza_cache", "required": false}]}}"#;

fn answer_all(worker: &Worker, host: &mut MemoryHost, from: usize, status: &[u8], now: u64) {
    for token in from + 1..=host.calls.len() {
        worker.call_response(host, token as u32, Ok(Some(status.to_vec())), Ok(None), now);
    }
}

#[test]
fn dependencies_are_checked_at_start_up_and_reported_only_once_known() {
    let mut host = MemoryHost::default();
    let worker = configure(&mut host, BACKGROUND).unwrap();
    worker.flush(&mut host);
    assert_eq!(host.series("dependency_up", &[]), None, "not checked yet");
    // The first tick starts a round with no probe asking.
    worker.tick(&mut host, SECOND);
    let clusters: Vec<&str> = host.calls.iter().map(|c| c.cluster.as_str()).collect();
    assert_eq!(clusters, ["veza_db", "veza_cache"]);
    assert_eq!(host.series("dependency_up", &[]), None, "still in flight");
    answer_all(&worker, &mut host, 0, b"200", SECOND);
    assert_eq!(
        host.counter(r#"dependency_up{dependency="db",required="true"}"#),
        Some(1)
    );
    assert_eq!(
        host.counter(r#"dependency_up{dependency="cache",required="false"}"#),
        Some(1)
    );
    // Nothing more until the interval has passed; then the next round.
    worker.tick(&mut host, 10 * SECOND);
    assert_eq!(host.calls.len(), 2);
    worker.tick(&mut host, 11 * SECOND);
    assert_eq!(host.calls.len(), 4);
    answer_all(&worker, &mut host, 2, b"503", 11 * SECOND);
    assert_eq!(
        host.counter(r#"dependency_up{dependency="db",required="true"}"#),
        Some(0)
    );
    assert_eq!(host.errors(), 0);
}

#[test]
fn one_worker_runs_each_background_round_for_the_gateway() {
    let mut host = MemoryHost::default();
    let first = configure(&mut host, BACKGROUND).unwrap();
    let second = configure(&mut host, BACKGROUND).unwrap();
    first.tick(&mut host, SECOND);
    second.tick(&mut host, SECOND + 20_000_000);
    assert_eq!(
        host.calls.len(),
        2,
        "the second worker left it to the first"
    );
    answer_all(&first, &mut host, 0, b"200", 2 * SECOND);
    // The second worker looks again when the first one's interval ends, and runs that one.
    second.tick(&mut host, 10 * SECOND);
    assert_eq!(host.calls.len(), 2);
    second.tick(&mut host, 11 * SECOND);
    first.tick(&mut host, 11 * SECOND);
    assert_eq!(host.calls.len(), 4);
}

#[test]
fn without_an_interval_rounds_run_only_for_probes() {
    let mut host = MemoryHost::default();
    let worker = configure(
        &mut host,
        r#"{"health": {"check_interval_ms": 0, "checks": [{"name": "db", "cluster": "veza_db"}]}}"#,
    )
    .unwrap();
    worker.tick(&mut host, SECOND);
    worker.tick(&mut host, 100 * SECOND);
    assert!(host.calls.is_empty());
}

#[test]
fn a_round_for_probes_counts_as_the_background_round() {
    let mut host = MemoryHost::default();
    let worker = configure(&mut host, BACKGROUND).unwrap();
    let mut probe = crate::exchange::Exchange::new(7);
    host.request = MemoryRequest::with_headers(&[(":method", "GET"), (":path", "/ready")]);
    probe.request_headers(&worker, &mut host);
    worker.tick(&mut host, SECOND);
    answer_all(&worker, &mut host, 0, b"200", SECOND);
    assert_eq!(host.answers.len(), 1);
    worker.tick(&mut host, 2 * SECOND);
    assert_eq!(host.calls.len(), 2, "no background round right after it");
    worker.tick(&mut host, 11 * SECOND);
    assert_eq!(host.calls.len(), 4);
}

#[test]
fn scrapes_of_the_stats_listener_share_one_admin_call_and_get_exposition() {
    let mut host = MemoryHost::default();
    let worker = configure(
        &mut host,
        r#"{"exposition": {"admin_cluster": "envoy_admin"}}"#,
    )
    .unwrap();
    assert_eq!(worker.tick_period_ms(), 20);
    let mut scrapes = [1, 2].map(crate::exchange::Exchange::new);
    for scrape in &mut scrapes {
        host.request = MemoryRequest::with_headers(&[(":method", "GET"), (":path", "/metrics")]);
        assert_eq!(
            scrape.request_headers(&worker, &mut host),
            crate::exchange::Next::Pause
        );
    }
    // Anything else on the stats listener goes on to Envoy's own stats, uncounted.
    let mut other = crate::exchange::Exchange::new(3);
    host.request =
        MemoryRequest::with_headers(&[(":method", "GET"), (":path", "/stats/prometheus")]);
    assert_eq!(
        other.request_headers(&worker, &mut host),
        crate::exchange::Next::Continue
    );
    other.end(&worker, &mut host);
    worker.tick(&mut host, SECOND);
    assert_eq!(host.calls.len(), 1, "one admin call for both scrapes");
    assert_eq!(host.calls[0].cluster, "envoy_admin");
    assert!(host.calls[0]
        .headers
        .contains(&(":path".to_owned(), crate::exposition::ADMIN_PATH.to_owned())));
    assert_eq!(worker.call_body_limit(1), crate::exposition::MAX_ADMIN_BODY);
    let envoy = "# TYPE chat_rooms_active gauge\nchat_rooms_active{} 2\n";
    worker.call_response(
        &mut host,
        1,
        Ok(Some(b"200".to_vec())),
        Ok(Some(envoy.into())),
        SECOND,
    );
    let expected = "# HELP chat_rooms_active Distinct conversations joined through the gateway.\n\
                    # TYPE chat_rooms_active gauge\nchat_rooms_active 2\n";
    assert_eq!(
        host.answers,
        [(1, 200, expected.to_owned()), (2, 200, expected.to_owned())]
    );
    assert_eq!(host.answer_types[0], crate::exposition::CONTENT_TYPE);
    worker.flush(&mut host);
    assert_eq!(
        host.series("http_requests_total", &[]),
        None,
        "nothing counted"
    );
    assert_eq!(host.errors(), 0);
}

#[test]
fn a_scrape_is_told_when_the_admin_endpoint_cannot_answer() {
    let mut host = MemoryHost::default();
    host.unknown_cluster = Some("nowhere".to_owned());
    let worker = configure(&mut host, r#"{"exposition": {"admin_cluster": "nowhere"}}"#).unwrap();
    let mut scrape = crate::exchange::Exchange::new(5);
    host.request = MemoryRequest::with_headers(&[(":method", "GET"), (":path", "/metrics")]);
    scrape.request_headers(&worker, &mut host);
    worker.tick(&mut host, SECOND);
    assert_eq!(
        host.answers,
        [(5, 503, "the admin cluster is unknown to Envoy\n".to_owned())]
    );
    // An admin endpoint that answers an error, or Envoy's own timeout reply.
    let worker = configure(
        &mut host,
        r#"{"exposition": {"admin_cluster": "envoy_admin"}}"#,
    )
    .unwrap();
    for (context, status, body) in [(6, "500", ""), (7, "504", "upstream request timeout")] {
        let mut scrape = crate::exchange::Exchange::new(context);
        host.request = MemoryRequest::with_headers(&[(":method", "GET"), (":path", "/metrics")]);
        scrape.request_headers(&worker, &mut host);
        worker.tick(&mut host, SECOND);
        let token = host.calls.len() as u32;
        worker.call_response(
            &mut host,
            token,
            Ok(Some(status.into())),
            Ok(Some(body.into())),
            SECOND,
        );
    }
    assert_eq!(
        host.answers[1..],
        [
            (6, 502, "the admin endpoint answered 500\n".to_owned()),
            (7, 502, "the admin endpoint did not answer\n".to_owned())
        ]
    );
}
