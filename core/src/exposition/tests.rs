use super::*;

/// What Envoy 1.40's admin `/stats/prometheus?filter=^wasmcustom\.` prints for the filter's
/// metrics: every family a counter or gauge, buckets in string order, `le` first.
const ENVOY: &str = r#"# TYPE dependency_check_duration_seconds_bucket counter
dependency_check_duration_seconds_bucket{le="+Inf",dependency="chat"} 2
dependency_check_duration_seconds_bucket{le="0.005",dependency="chat"} 1
dependency_check_duration_seconds_bucket{le="0.01",dependency="chat"} 2
dependency_check_duration_seconds_bucket{le="10",dependency="chat"} 2
dependency_check_duration_seconds_bucket{le="2.5",dependency="chat"} 2
# TYPE dependency_check_duration_seconds_count counter
dependency_check_duration_seconds_count{dependency="chat"} 2
# TYPE dependency_check_duration_seconds_sum counter
dependency_check_duration_seconds_sum{dependency="chat"} 0
# TYPE dependency_check_duration_seconds_sum_microseconds counter
dependency_check_duration_seconds_sum_microseconds{dependency="chat"} 7250
# TYPE http_requests_total counter
http_requests_total{method="GET",endpoint="/live",status="200",service="gateway"} 3
http_requests_total{method="GET",endpoint="/api/v1/tracks/:id",status="503",service="backend-api"} 1
# TYPE user_logins_total counter
user_logins_total{} 4
# TYPE dependency_up gauge
dependency_up{dependency="chat",required="true"} 1
"#;

#[test]
fn histograms_are_histograms_with_help_types_and_numeric_buckets() {
    assert_eq!(
        render(ENVOY),
        r#"# HELP http_requests_total HTTP requests through the gateway.
# TYPE http_requests_total counter
http_requests_total{method="GET",endpoint="/api/v1/tracks/:id",status="503",service="backend-api"} 1
http_requests_total{method="GET",endpoint="/live",status="200",service="gateway"} 3
# HELP dependency_up 1 when the dependency's last check passed, else 0; required="false" for an optional check.
# TYPE dependency_up gauge
dependency_up{dependency="chat",required="true"} 1
# HELP dependency_check_duration_seconds Duration of each dependency check.
# TYPE dependency_check_duration_seconds histogram
dependency_check_duration_seconds_bucket{dependency="chat",le="0.005"} 1
dependency_check_duration_seconds_bucket{dependency="chat",le="0.01"} 2
dependency_check_duration_seconds_bucket{dependency="chat",le="2.5"} 2
dependency_check_duration_seconds_bucket{dependency="chat",le="10"} 2
dependency_check_duration_seconds_bucket{dependency="chat",le="+Inf"} 2
dependency_check_duration_seconds_sum{dependency="chat"} 0.007250
dependency_check_duration_seconds_count{dependency="chat"} 2
# HELP user_logins_total A business counter of the filter's configuration.
# TYPE user_logins_total counter
user_logins_total 4
"#
    );
}

#[test]
fn label_values_are_written_back_as_envoy_escaped_them() {
    let envoy =
        "# TYPE stream_bitrate_bps gauge\nstream_bitrate_bps{stream_id=\"a\\\"b,c=d\\\\\"} 5\n";
    let out = render(envoy);
    assert!(
        out.ends_with("stream_bitrate_bps{stream_id=\"a\\\"b,c=d\\\\\"} 5\n"),
        "{out}"
    );
}

#[test]
fn lines_that_are_not_samples_are_skipped() {
    for line in [
        "",
        "x",
        "x{a=\"1\" 1",
        "x{a=1} 1",
        "{a=\"1\"} 1",
        "x{a=\"1\"}",
    ] {
        assert_eq!(parse_sample(line), None, "{line:?}");
    }
    assert_eq!(render("garbage\n# TYPE\nx{"), "");
}
