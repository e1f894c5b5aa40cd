use super::*;
use crate::host::memory::MemoryHost;

const HISTOGRAM: &str = names::WEBSOCKET_CONNECTION_DURATION_SECONDS;

fn bucket_name(le: &str, suffix: &str) -> String {
    if le.is_empty() {
        format!(r#"{HISTOGRAM}{suffix}{{service="api"}}"#)
    } else {
        format!(r#"{HISTOGRAM}{suffix}{{service="api",le="{le}"}}"#)
    }
}

#[test]
fn counters_aggregate_until_flush() {
    let mut host = MemoryHost::default();
    let mut registry = Registry::new(&mut host);
    let c = registry.define_counter(&mut host, "c", &[]).unwrap();
    let calls = host.hostcalls;
    for _ in 0..1000 {
        registry.add(c, 1);
    }
    assert_eq!(host.hostcalls, calls, "no hostcall before the flush");
    assert_eq!(host.counter("c"), Some(0));
    registry.flush(&mut host);
    assert_eq!(host.counter("c"), Some(1000));
    assert_eq!(host.hostcalls, calls + 1);
    registry.flush(&mut host);
    assert_eq!(host.hostcalls, calls + 1, "nothing pending, nothing sent");
}

fn errors(host: &MemoryHost, operation: &str) -> Option<u64> {
    host.series(
        "veza_observability_errors_total",
        &[("operation", operation)],
    )
}

#[test]
fn adding_zero_sends_nothing_to_the_host() {
    // Envoy refuses a counter increment of 0 (BadArgument): an empty body chunk adds 0
    // bytes, and that must not reach the host nor count as a failure.
    let mut host = MemoryHost::default();
    let mut registry = Registry::new(&mut host);
    let c = registry.define_counter(&mut host, "c", &[]).unwrap();
    let calls = host.hostcalls;
    registry.add(c, 0);
    registry.add(c, 0);
    registry.flush(&mut host);
    assert_eq!(host.hostcalls, calls, "no increment of 0");
    registry.add(c, 0);
    registry.add(c, 5);
    registry.add(c, 0);
    registry.flush(&mut host);
    assert_eq!(host.counter("c"), Some(5));
    assert_eq!(host.hostcalls, calls + 1);
    assert_eq!(errors(&host, "increment_metric"), Some(0));
}

#[test]
fn a_failed_flush_is_counted_in_that_same_flush() {
    let mut host = MemoryHost::default();
    let mut registry = Registry::new(&mut host);
    let c = registry.define_counter(&mut host, "c", &[]).unwrap();
    host.refuse_counter = Some("c".to_owned());
    registry.add(c, 1);
    registry.flush(&mut host);
    assert_eq!(errors(&host, "increment_metric"), Some(1));
    // A host refusing the error counter too: the count waits for the next flush.
    host.fail_increment = true;
    registry.add(c, 1);
    registry.flush(&mut host);
    assert_eq!(errors(&host, "increment_metric"), Some(1));
    host.fail_increment = false;
    registry.flush(&mut host);
    assert_eq!(errors(&host, "increment_metric"), Some(2));
}

#[test]
fn the_memory_host_refuses_a_zero_counter_increment_as_envoy_does() {
    let mut host = MemoryHost::default();
    let id = host.define_counter("c", &[]).unwrap();
    assert_eq!(host.increment_counter(id, 0), Err(HostError(2)));
    assert_eq!(host.increment_counter(id, 1), Ok(()));
}

#[test]
fn histogram_buckets_are_cumulative_and_in_seconds() {
    let mut host = MemoryHost::default();
    let mut registry = Registry::new(&mut host);
    let h = registry
        .define_histogram(&mut host, HISTOGRAM, &[("service", "api")])
        .unwrap();
    // 3 ms, exactly 5 ms (le is inclusive), 200 ms, 1.5 s, 30 s.
    for nanos in [
        3_000_000,
        5_000_000,
        200_000_000,
        1_500_000_000,
        30_000_000_000,
    ] {
        registry.observe(h, nanos);
    }
    registry.flush(&mut host);
    let bucket = |le: &str| host.counter(&bucket_name(le, "_bucket")).unwrap();
    assert_eq!(bucket("0.005"), 2);
    assert_eq!(bucket("0.01"), 2);
    assert_eq!(bucket("0.1"), 2);
    assert_eq!(bucket("0.25"), 3);
    assert_eq!(bucket("1"), 3);
    assert_eq!(bucket("2.5"), 4);
    assert_eq!(bucket("10"), 4);
    assert_eq!(bucket("+Inf"), 5);
    assert_eq!(host.counter(&bucket_name("", "_count")), Some(5));
    // 31.708 s rounds to 32, carrying -0.292 s; the microsecond sum is exact.
    assert_eq!(host.counter(&bucket_name("", "_sum")), Some(32));
    assert_eq!(
        host.counter(&bucket_name("", "_sum_microseconds")),
        Some(31_708_000)
    );
}

#[test]
fn the_microsecond_sum_carries_what_is_under_a_microsecond() {
    let mut host = MemoryHost::default();
    let mut registry = Registry::new(&mut host);
    let h = registry
        .define_histogram(&mut host, HISTOGRAM, &[("service", "api")])
        .unwrap();
    // 1,500 ns per flush, 1,000 flushes: 1,500 µs, never more than a microsecond behind.
    for i in 1..=1000u64 {
        registry.observe(h, 1500);
        registry.flush(&mut host);
        let micros = host.counter(&bucket_name("", "_sum_microseconds")).unwrap();
        assert_eq!(micros, i * 3 / 2, "after {i}");
    }
}

#[test]
fn sum_carries_fractions_across_flushes() {
    let mut host = MemoryHost::default();
    let mut registry = Registry::new(&mut host);
    let h = registry
        .define_histogram(&mut host, HISTOGRAM, &[("service", "api")])
        .unwrap();
    // 1,000 flushes of one 210 ms request each: 210 s in all, never more than 0.5 s off.
    for i in 1..=1000u64 {
        registry.observe(h, 210_000_000);
        registry.flush(&mut host);
        let exposed = host.counter(&bucket_name("", "_sum")).unwrap() as f64;
        let truth = i as f64 * 0.21;
        assert!(
            (exposed - truth).abs() <= 0.5,
            "after {i}: {exposed} vs {truth}"
        );
    }
    assert_eq!(host.counter(&bucket_name("", "_sum")), Some(210));
}

#[test]
fn host_failures_are_counted_and_never_fatal() {
    let mut host = MemoryHost::default();
    let mut registry = Registry::new(&mut host);
    let c = registry.define_counter(&mut host, "c", &[]).unwrap();
    host.fail_define = true;
    assert_eq!(registry.define_counter(&mut host, "d", &[]), None);
    assert_eq!(
        registry.define_histogram(&mut host, names::STREAM_DURATION_SECONDS, &[]),
        None
    );
    host.fail_define = false;
    registry.add(c, 1);
    registry.flush(&mut host);
    assert_eq!(errors(&host, "define_metric"), Some(2));
    host.fail_increment = true;
    registry.add(c, 1);
    registry.flush(&mut host);
    host.fail_increment = false;
    registry.flush(&mut host);
    assert_eq!(errors(&host, "increment_metric"), Some(1));
    assert_eq!(
        host.counter("c"),
        Some(1),
        "the failed delta is dropped, not retried forever"
    );
}
