//! The monitoring pack on a real stack: Envoy with the filter in front of the Veza stand-ins,
//! PostgreSQL and Redis behind their real exporters, node_exporter, Prometheus running the
//! shipped `prometheus.yml`, `recording_rules.yml` and `alert_rules.yml`, and Alertmanager
//! running the shipped `alertmanager.yml` with a webhook stand-in for its receivers (targets
//! moved to this test's ports, intervals, `for:` durations and group timers shortened by the
//! same factor, nothing else changed). Every dashboard query and every recording rule is run
//! against what Prometheus scraped; a PostgreSQL outage pages once.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use tungstenite::Message;
use veza_test_harness::dependencies::*;
use veza_test_harness::interop::{Answer, Collector};
use veza_test_harness::*;

/// `text` with every `from` replaced, failing when there is none (the shipped file changed).
fn replace_all(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "{from:?} is no longer in the shipped file"
    );
    text.replace(from, to)
}

fn shipped(path: &str) -> String {
    std::fs::read_to_string(format!("{REPO}/monitoring/{path}")).unwrap()
}

/// The shipped Prometheus config, scraping this test's ports every second.
fn prometheus_config(stats: u16, postgres: u16, redis: u16, node: u16, alerts: u16) -> String {
    let mut config = shipped("prometheus.yml");
    // The gateway every second; the exporters every 3 s, with the 3 s timeout that follows
    // from the global interval: postgres_exporter takes about a second to report a database
    // it cannot reach, and a 1 s timeout would turn pg_up 0 into a failed scrape.
    config = replace_all(&config, "scrape_interval: 10s", "scrape_interval: 1s");
    config = replace_all(&config, "scrape_interval: 15s", "scrape_interval: 3s");
    config = replace_all(&config, "scrape_interval: 30s", "scrape_interval: 3s");
    config = replace_all(
        &config,
        "evaluation_interval: 15s",
        "evaluation_interval: 1s",
    );
    config = replace_all(&config, "scrape_timeout: 5s", "scrape_timeout: 1s");
    for (from, port) in [
        (19001, stats),
        (9187, postgres),
        (9121, redis),
        (9100, node),
        (9093, alerts),
    ] {
        config = replace_all(
            &config,
            &format!("'localhost:{from}'"),
            &format!("'127.0.0.1:{port}'"),
        );
    }
    config
}

/// Minutes of the shipped files become this many seconds here.
const SECONDS_PER_MINUTE: u64 = 2;

/// The shipped rules with every `for:` shortened, in the same proportions: which alert fires
/// first is the shipped rules' order.
fn alert_rules() -> String {
    let mut rules = shipped("alert_rules.yml");
    for minutes in [1, 2, 5, 10] {
        rules = replace_all(
            &rules,
            &format!("for: {minutes}m"),
            &format!("for: {}s", minutes * SECONDS_PER_MINUTE),
        );
    }
    assert!(!rules
        .lines()
        .any(|l| l.trim_start().starts_with("for:") && l.trim_end().ends_with('m')));
    rules
}

/// The shipped Alertmanager config, its timers shortened in the same proportions and its
/// receivers pointed at the webhook stand-in.
fn alertmanager_config(webhook: u16) -> String {
    let mut config = shipped("alertmanager.yml");
    config = replace_all(&config, "group_wait: 30s", "group_wait: 1s");
    config = replace_all(
        &config,
        "group_interval: 5m",
        &format!("group_interval: {}s", 5 * SECONDS_PER_MINUTE),
    );
    replace_all(
        &config,
        "http://127.0.0.1:5001/",
        &format!("http://127.0.0.1:{webhook}/"),
    )
}

/// One webhook notification: receiver, status, and its alerts' names and labels.
struct Notification {
    receiver: String,
    status: String,
    alerts: Vec<serde_json::Value>,
}

impl Notification {
    fn parse(body: &str) -> Notification {
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        Notification {
            receiver: json["receiver"].as_str().unwrap().to_owned(),
            status: json["status"].as_str().unwrap().to_owned(),
            alerts: json["alerts"].as_array().unwrap().clone(),
        }
    }

    fn names(&self) -> Vec<&str> {
        self.alerts
            .iter()
            .map(|a| a["labels"]["alertname"].as_str().unwrap())
            .collect()
    }
}

/// Every query of the dashboard, with Grafana's variables as a user would have them: all
/// services, a one-minute rate interval.
fn dashboard_queries() -> Vec<(String, String)> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&shipped("grafana/dashboards/veza-platform-overview.json")).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$service", ".*");
            assert!(!expr.contains('$'), "an unknown variable in {expr}");
            let title = format!("{} / {}", panel["title"].as_str().unwrap(), target["refId"]);
            queries.push((title, expr));
        }
    }
    queries
}

#[test]
fn the_pack_works_on_a_real_stack() {
    let (mut stack, config, ports) = VezaWithDatabases::start();
    let (pg_exporter_port, redis_exporter_port) =
        (stack.postgres_exporter_port, stack.redis_exporter_port);
    let (_node_exporter, node_exporter_port) = node_exporter();
    // Spans of a tenth of the requests to a collector that accepts them.
    let collector = Collector::start(&[], Answer::Status(200));
    // The gateway's background checks every second, as the other intervals here are cut.
    let config = config.add_cluster("jaeger", collector.port).plugin_configuration(
        r#"{"health": {"check_interval_ms": 1000}, "tracing": {"sampling_ratio": 0.1, "collector": {"cluster": "jaeger", "flush_interval_ms": 200}}}"#,
    );
    let envoy = Envoy::start(&config, ports, 2);
    // Alertmanager's receivers: a webhook stand-in recording each notification.
    let webhook = Collector::start(&[], Answer::Status(200));
    let alertmanager = Alertmanager::start(&alertmanager_config(webhook.port));
    let prometheus = Prometheus::start_with(
        &prometheus_config(
            envoy.ports.stats,
            pg_exporter_port,
            redis_exporter_port,
            node_exporter_port,
            alertmanager.port,
        ),
        &[
            ("recording_rules.yml", &shipped("recording_rules.yml")),
            ("alert_rules.yml", &alert_rules()),
        ],
    );

    // Every job's target is up.
    let up = poll("every target to be up", Duration::from_secs(20), || {
        let up = prometheus.query("up");
        (up.len() == 4 && up.iter().all(|(_, v)| *v == 1.0)).then_some(up)
    });
    let mut jobs: Vec<&str> = up.iter().map(|(l, _)| l["job"].as_str()).collect();
    jobs.sort();
    assert_eq!(jobs, ["node", "postgres", "redis", "veza-gateway"]);

    // Traffic: a readiness probe, the business events, a chat session, streams, then 5xx.
    let get = |path: &str, headers: &[(&str, &str)]| {
        http("GET", &envoy.url(path), headers, "").unwrap().0
    };
    let post = |path: &str, headers: &[(&str, &str)], body: &str| {
        http("POST", &envoy.url(path), headers, body).unwrap().0
    };
    // rate() cannot see the increment that created a series: what a panel shows as a rate
    // or quantile happens again after Prometheus has scraped it once, as it would over time.
    let scraped = |what: &str, promql: &str| {
        poll(
            &format!("Prometheus to scrape {what}"),
            Duration::from_secs(20),
            || prometheus.scalar(promql).filter(|v| *v >= 1.0).map(|_| ()),
        )
    };
    assert_eq!(get("/ready", &[]), 200);
    scraped(
        "a /ready round",
        r#"max(dependency_check_duration_seconds_count)"#,
    );
    for n in 0..3 {
        let account = format!(r#"{{"email":"u{n}@veza.local","password":"pw","username":"u{n}"}}"#);
        assert_eq!(post("/api/v1/auth/register", &[], &account), 200);
        assert_eq!(post("/api/v1/auth/login", &[], &account), 200);
        let bearer = format!(
            "Bearer {}",
            veza_standins::access_token(&format!("u{n}@veza.local"))
        );
        assert_eq!(
            post("/api/v1/tracks", &[("authorization", &bearer)], "audio"),
            201
        );
        assert_eq!(get("/api/v1/tracks/1", &[("authorization", &bearer)]), 200);
    }
    assert_eq!(
        post("/api/v1/auth/login", &[], r#"{"password":"wrong"}"#),
        401
    );
    assert_eq!(post("/api/v1/playlists", &[], r#"{"name":"night"}"#), 201);
    let stream = "/stream/night.mp3?expires=99999999999&sig=s";
    assert_eq!(http_bytes("GET", &envoy.url(stream), &[]).0, 200);
    scraped("a stream", "sum(stream_duration_seconds_count)");
    // The readiness cache (1 s) has expired by now: a second round.
    assert_eq!(get("/ready", &[]), 200);
    assert_eq!(
        http_bytes("GET", &envoy.url(stream), &[("range", "bytes=0-99")]).0,
        206
    );
    let refused = raw_exchange(
        envoy.ports.listener,
        "GET /ws/chat?token=invalid HTTP/1.1\r\nhost: veza\r\nconnection: upgrade\r\nupgrade: websocket\r\n\
         sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    // A chat session left open, so the WebSocket gauges have a value while Prometheus looks.
    let (mut chat, _) = tungstenite::connect(envoy.url("/ws").replace("http", "ws")).unwrap();
    chat.send(Message::text(
        r#"{"type":"JoinConversation","conversation_id":"c1"}"#,
    ))
    .unwrap();
    chat.send(Message::text(
        r#"{"type":"SendMessage","conversation_id":"c1","content":"hi"}"#,
    ))
    .unwrap();
    for _ in 0..2 {
        chat.read().unwrap();
    }
    // Then the backend starts failing. rate() cannot see the increment that created a series,
    // so the first 503 must be scraped before the burst, as it would be in a real outage.
    let failing = || assert_eq!(get("/api/v1/tags", &[("x-standin-status", "503")]), 503);
    failing();
    poll(
        "Prometheus to scrape the first 503",
        Duration::from_secs(20),
        || {
            (prometheus.scalar(r#"sum(http_requests_total{status="503"})"#) == Some(1.0))
                .then_some(())
        },
    );
    for _ in 0..20 {
        failing();
    }

    // The business counters, as Prometheus has them.
    for (metric, expected) in [
        ("user_registrations_total", 3.0),
        ("user_logins_total", 3.0),
        ("user_logins_failed_total", 1.0),
        ("tracks_uploaded_total", 3.0),
        ("playlists_created_total", 1.0),
        ("streams_started_total", 2.0),
        ("chat_messages_sent_total", 1.0),
        ("active_users", 3.0),
    ] {
        poll(
            &format!("Prometheus to have {metric} = {expected}"),
            Duration::from_secs(20),
            || (prometheus.scalar(metric) == Some(expected)).then_some(()),
        );
    }

    // HighErrorRate fires for the backend only.
    poll("HighErrorRate to fire", Duration::from_secs(30), || {
        prometheus
            .firing()
            .contains(&"HighErrorRate".to_owned())
            .then_some(())
    });
    let services: Vec<String> = prometheus
        .query(r#"ALERTS{alertname="HighErrorRate",alertstate="firing"}"#)
        .into_iter()
        .map(|(labels, _)| labels["service"].clone())
        .collect();
    assert_eq!(services, ["backend-api"]);
    // It pages: a critical alert reaches the pager receiver through Alertmanager.
    poll(
        "the page for HighErrorRate",
        Duration::from_secs(30),
        || {
            webhook
                .bodies()
                .iter()
                .map(|b| Notification::parse(b))
                .any(|n| n.receiver == "pager" && n.names() == ["HighErrorRate"])
                .then_some(())
        },
    );

    // Every dashboard query parses and returns data (a number: a quantile of no increase
    // is NaN).
    let empty: Vec<String> = dashboard_queries()
        .into_iter()
        .filter(|(_, expr)| !prometheus.query(expr).iter().any(|(_, v)| v.is_finite()))
        .map(|(title, expr)| format!("{title}: {expr}"))
        .collect();
    assert!(
        empty.is_empty(),
        "dashboard queries without data:\n{}",
        empty.join("\n")
    );

    // `make dashboard` draws every panel from the same Prometheus, none empty.
    let dashboard: serde_json::Value =
        serde_json::from_str(&shipped("grafana/dashboards/veza-platform-overview.json")).unwrap();
    let end = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let url = format!("http://127.0.0.1:{}", prometheus.port);
    let panels = dashboard::query_panels(&url, &dashboard, end - 120.0, end, 2.0).unwrap();
    assert_eq!(panels.len(), 35);
    let page = dashboard::html("Veza", &panels, end - 120.0, end, &url);
    let blank: Vec<&str> = panels
        .iter()
        .filter(|p| p.series.iter().all(|s| s.points.is_empty()))
        .map(|p| p.title.as_str())
        .collect();
    assert!(blank.is_empty(), "panels rendered without data: {blank:?}");
    assert_eq!(
        page.matches("<svg").count(),
        28,
        "one chart per time-series panel"
    );
    chat.close(None).unwrap();

    // The spec's system, database and Redis names, as recording rules over the exporters.
    let recorded: Vec<String> = shipped("recording_rules.yml")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record: "))
        .map(str::to_owned)
        .collect();
    assert_eq!(recorded.len(), 9);
    for name in recorded {
        poll(
            &format!("{name} to have a value"),
            Duration::from_secs(20),
            || {
                let values = prometheus.query(&name);
                (!values.is_empty() && values.iter().all(|(_, v)| v.is_finite())).then_some(())
            },
        );
    }

    // PostgreSQL stops: the exporter reports it and PostgresDown fires; nothing else about
    // the database is needed to see it. One page: the gateway's checks of the database and
    // the backend (which needs it) are inhibited, or at most a ticket for the database.
    let before = webhook.bodies().len();
    let since = |webhook: &Collector| -> Vec<Notification> {
        webhook.bodies()[before..]
            .iter()
            .map(|b| Notification::parse(b))
            .collect()
    };
    stack.postgres.stop();
    poll("PostgresDown to fire", Duration::from_secs(30), || {
        prometheus
            .firing()
            .contains(&"PostgresDown".to_owned())
            .then_some(())
    });
    let firing = prometheus.firing();
    assert!(
        !firing.contains(&"ServiceDown".to_owned()),
        "the exporters still answer: {firing:?}"
    );
    poll("the page for PostgresDown", Duration::from_secs(30), || {
        since(&webhook)
            .iter()
            .any(|n| n.receiver == "pager" && n.names() == ["PostgresDown"])
            .then_some(())
    });
    // The gateway's checks fail too, and stay silenced while PostgreSQL is down.
    poll(
        "DependencyUnready for the database and the backend",
        Duration::from_secs(30),
        || {
            let firing =
                prometheus.query(r#"ALERTS{alertname="DependencyUnready",alertstate="firing"}"#);
            let mut dependencies: Vec<String> = firing
                .into_iter()
                .map(|(l, _)| l["dependency"].clone())
                .collect();
            dependencies.sort();
            (dependencies == ["backend-api", "database"]).then_some(())
        },
    );

    // Recovery resolves the page.
    stack.postgres.resume();
    poll(
        "the page for PostgresDown to resolve",
        Duration::from_secs(60),
        || {
            since(&webhook)
                .iter()
                .any(|n| {
                    n.receiver == "pager" && n.status == "resolved" && n.names() == ["PostgresDown"]
                })
                .then_some(())
        },
    );
    poll("DependencyUnready to end", Duration::from_secs(30), || {
        prometheus
            .query(r#"ALERTS{alertname="DependencyUnready"}"#)
            .is_empty()
            .then_some(())
    });
    let notifications = since(&webhook);
    let pages: Vec<Vec<&str>> = notifications
        .iter()
        .filter(|n| n.receiver == "pager" && n.status == "firing")
        .map(Notification::names)
        .collect();
    assert_eq!(pages, [["PostgresDown"]], "one page for the outage");
    for notification in &notifications {
        for alert in &notification.alerts {
            let labels = &alert["labels"];
            if labels["alertname"] == "DependencyUnready" {
                assert_eq!(
                    (notification.receiver.as_str(), &labels["dependency"]),
                    ("tickets", &serde_json::json!("database")),
                    "only the database's check may reach anyone, as a ticket"
                );
            }
        }
    }
}
