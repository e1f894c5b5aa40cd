//! The monitoring pack under monitoring/: Prometheus' own tool checks the config and the
//! rules, and runs the rules' unit tests (each alert fires when it should, and only then);
//! Alertmanager's checks its config and routes; every alert has a runbook.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::process::Command;

use veza_test_harness::REPO;

fn shipped(name: &str) -> String {
    std::fs::read_to_string(format!("{REPO}/monitoring/{name}")).unwrap()
}

/// Each alert of the rules with its `severity` label.
fn alerts_and_severities() -> Vec<(String, String)> {
    let rules: serde_json::Value = serde_norway::from_str(&shipped("alert_rules.yml")).unwrap();
    rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|group| group["rules"].as_array().unwrap())
        .filter(|rule| rule.get("alert").is_some())
        .map(|rule| {
            (
                rule["alert"].as_str().unwrap().to_owned(),
                rule["labels"]["severity"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn amtool(args: &[&str]) -> String {
    let output = Command::new("amtool")
        .args(args)
        .current_dir(format!("{REPO}/monitoring"))
        .output()
        .expect(
            "amtool (Debian package prometheus-alertmanager) must be installed: run `make test`",
        );
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "amtool {args:?}:\n{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    text
}

#[test]
fn the_alertmanager_config_checks_and_routes_by_severity() {
    let text = amtool(&["check-config", "alertmanager.yml"]);
    assert!(text.contains("SUCCESS"), "{text}");
    assert!(text.contains("7 inhibit rules"), "{text}");
    let route = |labels: &[&str]| {
        let mut args = vec!["config", "routes", "test", "--config.file=alertmanager.yml"];
        args.extend_from_slice(labels);
        amtool(&args).trim().to_owned()
    };
    // The exporters' alerts page for the database and Redis; the gateway's check of them
    // is a ticket. Every other critical alert pages, every other one is a ticket.
    for dependency in ["database", "redis"] {
        let labels = format!("dependency={dependency}");
        assert_eq!(
            route(&["alertname=DependencyUnready", "severity=critical", &labels]),
            "tickets"
        );
    }
    assert_eq!(
        route(&[
            "alertname=DependencyUnready",
            "severity=critical",
            "dependency=chat"
        ]),
        "pager"
    );
    let alerts = alerts_and_severities();
    assert_eq!(alerts.len(), 15);
    for (alert, severity) in alerts {
        let receiver = route(&[
            &format!("alertname={alert}"),
            &format!("severity={severity}"),
        ]);
        let expected = if severity == "critical" {
            "pager"
        } else {
            "tickets"
        };
        assert_eq!(receiver, expected, "{alert} ({severity})");
    }
}

/// Every alert's runbook is a heading of docs/runbooks.md (GitHub's anchor of `## Name` is
/// `#name`).
#[test]
fn every_alert_has_a_runbook_that_exists() {
    let runbooks = std::fs::read_to_string(format!("{REPO}/docs/runbooks.md")).unwrap();
    let anchors: Vec<String> = runbooks
        .lines()
        .filter_map(|line| line.strip_prefix("## "))
        .map(|heading| heading.trim().to_lowercase())
        .collect();
    let rules: serde_json::Value = serde_norway::from_str(&shipped("alert_rules.yml")).unwrap();
    let mut checked = 0;
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let Some(alert) = rule["alert"].as_str() else {
                continue;
            };
            let url = rule["annotations"]["runbook_url"].as_str();
            let anchor = url.and_then(|u| u.strip_prefix("docs/runbooks.md#"));
            assert!(
                anchor.is_some_and(|a| anchors.iter().any(|h| h == a)),
                "{alert}: runbook_url {url:?} is not a heading of docs/runbooks.md"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 15);
}

fn promtool(args: &[&str]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(format!("{REPO}/monitoring"))
        .output()
        .expect("promtool (Debian package prometheus) must be installed: run `make test`");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn the_prometheus_config_and_its_rules_check() {
    let text = promtool(&["check", "config", "prometheus.yml"]);
    assert!(text.contains("SUCCESS: 9 rules found"), "{text}");
    assert!(text.contains("SUCCESS: 15 rules found"), "{text}");
}

#[test]
fn every_alert_fires_when_it_should_and_only_then() {
    let text = promtool(&["test", "rules", "alert_rules_test.yml"]);
    assert!(text.contains("SUCCESS"), "{text}");
    // Every alert of the rules has a test.
    let rules = std::fs::read_to_string(format!("{REPO}/monitoring/alert_rules.yml")).unwrap();
    let tests = std::fs::read_to_string(format!("{REPO}/monitoring/alert_rules_test.yml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(alerts.len(), 15);
    for alert in alerts {
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "{alert} has no test"
        );
    }
}

/// The dashboard is on Grafana's current model (its queries are run against a real
/// Prometheus in monitoring_stack.rs).
#[test]
fn the_dashboard_uses_the_current_model() {
    let path = format!("{REPO}/monitoring/grafana/dashboards/veza-platform-overview.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(dashboard["title"], "Veza Platform Overview");
    assert_eq!(dashboard["uid"], "veza-platform-overview");
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 39);
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert_eq!(variables[0]["name"], "datasource");
    assert_eq!(variables[0]["type"], "datasource");
    assert_eq!(variables[0]["query"], "prometheus");

    let panels = dashboard["panels"].as_array().unwrap();
    let mut ids = std::collections::BTreeSet::new();
    let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap();
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "duplicate id: {title}"
        );
        let kind = panel["type"].as_str().unwrap();
        *kinds.entry(kind).or_default() += 1;
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
        assert!(
            x + w <= 24 && grid["h"].as_u64().unwrap() > 0,
            "{title} off the grid"
        );
        if kind == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        assert!(
            panel["fieldConfig"]["defaults"]["unit"].is_string(),
            "{title} has no unit"
        );
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} has no query");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
            assert!(
                target["expr"].as_str().is_some_and(|e| !e.is_empty()),
                "{title}"
            );
        }
    }
    // Time series and stat panels only: the graph panel is gone from Grafana.
    assert_eq!(
        kinds.keys().copied().collect::<Vec<_>>(),
        ["row", "stat", "timeseries"]
    );
}

/// The provisioning files point Grafana at the dashboard folder and the Prometheus.
#[test]
fn grafana_provisioning_is_complete() {
    let read = |path: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(format!("{REPO}/monitoring/grafana/{path}")).unwrap();
        serde_norway::from_str(&text).unwrap()
    };
    let datasources = read("provisioning/datasources/prometheus.yml");
    assert_eq!(datasources["apiVersion"], 1);
    assert_eq!(datasources["datasources"][0]["type"], "prometheus");
    let providers = read("provisioning/dashboards/veza.yml");
    assert_eq!(providers["providers"][0]["type"], "file");
    assert_eq!(
        providers["providers"][0]["options"]["path"],
        "/var/lib/grafana/dashboards/veza"
    );
}
