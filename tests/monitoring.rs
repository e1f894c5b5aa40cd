//! The monitoring pack under monitoring/: Prometheus' own tool checks the config and the
//! rules, and runs the rules' unit tests (each alert fires when it should, and only then).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::process::Command;

use support::REPO;

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
    assert_eq!(alerts.len(), 9);
    for alert in alerts {
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "{alert} has no test"
        );
    }
}
