//! Faults, end to end through the real Envoy: a VM trap (injected by the test-only
//! `fault_injection.trap_header`, in the module built with the `fault-injection` feature)
//! under the shipped failure policy and under FAIL_OPEN. Dead upstreams, hanging dependencies and a black-holed span collector are in
//! http_metrics.rs, health.rs and span_export.rs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use veza_test_harness::*;

const TRAP: &str = r#"{"fault_injection": {"trap_header": "x-veza-test-trap"}}"#;
const TRAP_LOG: &str =
    "Function: proxy_on_request_headers failed: Uncaught RuntimeError: unreachable";

fn counted(envoy: &Envoy) -> f64 {
    envoy
        .samples("http_requests_total")
        .iter()
        .map(|s| s.value)
        .sum()
}

fn get(envoy: &Envoy, headers: &[(&str, &str)]) -> u16 {
    http("GET", &envoy.url("/api/v1/tracks/1"), headers, "")
        .unwrap()
        .0
}

fn stat(envoy: &Envoy, name: &str) -> Option<f64> {
    envoy.samples(name).first().map(|s| s.value)
}

/// Three requests counted, then the trap: the request the VM dies in gets Envoy's 503.
fn trap(envoy: &Envoy) {
    for _ in 0..3 {
        assert_eq!(get(envoy, &[]), 200);
    }
    poll(
        "the first requests to be counted",
        Duration::from_secs(10),
        || (counted(envoy) == 3.0).then_some(()),
    );
    assert_eq!(get(envoy, &[("x-veza-test-trap", "1")]), 503);
}

#[test]
fn the_shipped_policy_reloads_a_trapped_vm_and_telemetry_goes_on() {
    let (_standins, config, ports) = GatewayConfig::with_standins();
    let envoy = Envoy::start(
        &config.with_fault_injection().plugin_configuration(TRAP),
        ports,
        1,
    );
    trap(&envoy);
    // Requests in the reload backoff (10 ms, shipped) fail; then a fresh VM serves.
    poll(
        "a request to be served again",
        Duration::from_secs(5),
        || (get(&envoy, &[]) == 200).then_some(()),
    );
    for _ in 0..5 {
        assert_eq!(get(&envoy, &[]), 200);
    }
    // The fresh VM counts them: three before the trap, six after.
    poll(
        "the requests after the trap to be counted",
        Duration::from_secs(10),
        || (counted(&envoy) == 9.0).then_some(()),
    );
    assert_eq!(
        stat(&envoy, "envoy_wasm_veza_observability_vm_reload_success"),
        Some(1.0)
    );
    let log = envoy.flushed_log_text();
    assert!(log.contains(TRAP_LOG), "no trap in Envoy's log");
    assert!(log.contains("veza-observability: trapping the VM, as fault_injection asks"));
}

#[test]
fn fail_open_keeps_traffic_flowing_without_telemetry() {
    let (_standins, config, ports) = GatewayConfig::with_standins();
    let config = config
        // The gateway's filter (the stats listener's has no reload_config).
        .replace_once(
            "failure_policy: FAIL_RELOAD\n                reload_config",
            "failure_policy: FAIL_OPEN\n                reload_config",
        )
        .with_fault_injection()
        .plugin_configuration(TRAP);
    let envoy = Envoy::start(&config, ports, 1);
    trap(&envoy);
    for _ in 0..5 {
        assert_eq!(get(&envoy, &[]), 200);
    }
    // Nothing counts them any more: wait two flush intervals and look again.
    let log = envoy.flushed_log_text();
    assert!(log.contains(TRAP_LOG), "no trap in Envoy's log");
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(counted(&envoy), 3.0);
    assert_eq!(
        stat(&envoy, "envoy_wasm_veza_observability_vm_reload_success"),
        Some(0.0)
    );
}
