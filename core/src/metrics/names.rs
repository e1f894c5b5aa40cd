//! Every metric name and label key the filter emits, and how labels are encoded.
//!
//! The proxy-wasm ABI has no labels: a metric is one flat name, which Envoy stores as
//! `wasmcustom.<name>`. Labels are encoded Istio-style, `key=.=value;.;` pairs followed by the
//! metric name, and Envoy turns each pair back into a Prometheus label with one
//! `stats_config.stats_tags` regex per key: [`stats_tag_regex`] gives them, and every Envoy
//! config in this repository ships exactly those (a test checks it).

/// Counter: every HTTP request through the gateway. Labels: method, endpoint, status, service.
pub const HTTP_REQUESTS_TOTAL: &str = "http_requests_total";
/// Histogram in seconds: request duration. Labels: method, endpoint, service (+ le).
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "http_request_duration_seconds";
/// Gauge: 1 when the dependency's last `/ready` check passed, else 0. Label: dependency.
pub const DEPENDENCY_UP: &str = "dependency_up";
/// Histogram in seconds: how long each dependency check took. Label: dependency (+ le).
pub const DEPENDENCY_CHECK_DURATION_SECONDS: &str = "dependency_check_duration_seconds";
/// Counter: WebSocket upgrade attempts and their outcome. Labels: service, endpoint, status.
pub const WEBSOCKET_UPGRADES_TOTAL: &str = "websocket_upgrades_total";
/// Gauge: open WebSocket connections (+1 on 101, -1 when the connection ends). Label: service.
pub const WEBSOCKET_CONNECTIONS_ACTIVE: &str = "websocket_connections_active";
/// Histogram in seconds: WebSocket connection lifetimes. Label: service (+ le).
pub const WEBSOCKET_CONNECTION_DURATION_SECONDS: &str = "websocket_connection_duration_seconds";
/// Counter: whole WebSocket messages. Labels: service, direction, message_type.
pub const WEBSOCKET_MESSAGES_TOTAL: &str = "websocket_messages_total";
/// Counter: bytes through upgraded connections. Labels: service, direction.
pub const WEBSOCKET_BYTES_TOTAL: &str = "websocket_bytes_total";
/// Counter: connections whose frames stopped making sense (reading stops). Label: service.
pub const WEBSOCKET_PROTOCOL_ERRORS_TOTAL: &str = "websocket_protocol_errors_total";
/// Counter: chat client messages by JSON type. Label: type.
pub const CHAT_EVENTS_TOTAL: &str = "chat_events_total";
/// Counter: chat messages sent (`SendMessage`).
pub const CHAT_MESSAGES_SENT_TOTAL: &str = "chat_messages_sent_total";
/// Gauge: distinct conversations joined through the gateway.
pub const CHAT_ROOMS_ACTIVE: &str = "chat_rooms_active";
/// Counter: listening sessions started (a 200, or a 206 from byte 0, on a stream endpoint).
pub const STREAMS_STARTED_TOTAL: &str = "streams_started_total";
/// Gauge: stream responses Envoy is still forwarding.
pub const STREAM_SESSIONS_ACTIVE: &str = "stream_sessions_active";
/// Histogram in seconds: stream response durations.
pub const STREAM_DURATION_SECONDS: &str = "stream_duration_seconds";
/// Counter: stream response body bytes the gateway forwarded (as on the wire).
pub const STREAM_BYTES_TOTAL: &str = "stream_bytes_total";
/// Gauge: bits per second the gateway forwarded over the last second, per stream. Label: stream_id.
pub const STREAM_BITRATE_BPS: &str = "stream_bitrate_bps";
/// Counter: hostcalls that failed inside the filter. Label: operation.
pub const FILTER_ERRORS_TOTAL: &str = "veza_observability_errors_total";
/// Counter (default business rule): registrations answered 2xx.
pub const USER_REGISTRATIONS_TOTAL: &str = "user_registrations_total";
/// Counter (default business rule): logins answered 2xx.
pub const USER_LOGINS_TOTAL: &str = "user_logins_total";
/// Counter (default business rule): logins answered 401.
pub const USER_LOGINS_FAILED_TOTAL: &str = "user_logins_failed_total";
/// Counter (default business rule): track uploads answered 2xx.
pub const TRACKS_UPLOADED_TOTAL: &str = "tracks_uploaded_total";
/// Counter (default business rule): playlists created (answered 2xx).
pub const PLAYLISTS_CREATED_TOTAL: &str = "playlists_created_total";
/// Gauge: distinct users seen in the sliding window, gateway-wide (a HyperLogLog estimate).
pub const ACTIVE_USERS_TOTAL: &str = "active_users_total";

/// Gauge: bytes of linear memory of the worker VM that flushed last (each sets its own size
/// with every metrics flush). Linear memory only grows, so a leak shows as a rising line.
pub const VM_MEMORY_BYTES: &str = "veza_observability_vm_memory_bytes";

/// Counter: spans the collector accepted.
pub const TRACE_SPANS_EXPORTED_TOTAL: &str = "trace_spans_exported_total";
/// Counter: spans dropped, never sent or never accepted. Label: reason.
pub const TRACE_SPANS_DROPPED_TOTAL: &str = "trace_spans_dropped_total";
/// Counter: export calls that did not succeed (each retry counts).
pub const TRACE_EXPORT_FAILURES_TOTAL: &str = "trace_export_failures_total";

/// Names the filter emits itself; business rules may not reuse them.
pub const BUILT_IN: [&str; 25] = [
    VM_MEMORY_BYTES,
    TRACE_SPANS_EXPORTED_TOTAL,
    TRACE_SPANS_DROPPED_TOTAL,
    TRACE_EXPORT_FAILURES_TOTAL,
    HTTP_REQUESTS_TOTAL,
    HTTP_REQUEST_DURATION_SECONDS,
    DEPENDENCY_UP,
    DEPENDENCY_CHECK_DURATION_SECONDS,
    WEBSOCKET_UPGRADES_TOTAL,
    WEBSOCKET_CONNECTIONS_ACTIVE,
    WEBSOCKET_CONNECTION_DURATION_SECONDS,
    WEBSOCKET_MESSAGES_TOTAL,
    WEBSOCKET_BYTES_TOTAL,
    WEBSOCKET_PROTOCOL_ERRORS_TOTAL,
    CHAT_EVENTS_TOTAL,
    CHAT_MESSAGES_SENT_TOTAL,
    CHAT_ROOMS_ACTIVE,
    STREAMS_STARTED_TOTAL,
    STREAM_SESSIONS_ACTIVE,
    STREAM_DURATION_SECONDS,
    STREAM_BYTES_TOTAL,
    STREAM_BITRATE_BPS,
    FILTER_ERRORS_TOTAL,
    ACTIVE_USERS_TOTAL,
    // Histogram series names a rule could collide with.
    "http_request_duration_seconds_bucket",
];

pub const LABEL_METHOD: &str = "method";
pub const LABEL_ENDPOINT: &str = "endpoint";
pub const LABEL_STATUS: &str = "status";
pub const LABEL_SERVICE: &str = "service";
pub const LABEL_LE: &str = "le";
pub const LABEL_OPERATION: &str = "operation";
pub const LABEL_DEPENDENCY: &str = "dependency";
pub const LABEL_DIRECTION: &str = "direction";
pub const LABEL_MESSAGE_TYPE: &str = "message_type";
pub const LABEL_TYPE: &str = "type";
pub const LABEL_STREAM_ID: &str = "stream_id";
pub const LABEL_REASON: &str = "reason";

/// Every label key, in the order the stats_tags are listed in the Envoy configs.
pub const LABEL_KEYS: [&str; 12] = [
    LABEL_METHOD,
    LABEL_ENDPOINT,
    LABEL_STATUS,
    LABEL_SERVICE,
    LABEL_LE,
    LABEL_OPERATION,
    LABEL_DEPENDENCY,
    LABEL_DIRECTION,
    LABEL_MESSAGE_TYPE,
    LABEL_TYPE,
    LABEL_STREAM_ID,
    LABEL_REASON,
];

/// The endpoint and service label for anything no route or prefix claims, and for overflow.
pub const OTHER: &str = "other";

const PAIR_SEPARATOR: &str = "=.=";
const PAIR_TERMINATOR: &str = ";.;";

/// The `stats_tags` regex that extracts label `key` (first group removed, second the value).
/// It is anchored on the separator before the key (`wasmcustom.` or `;.;`), so a key that
/// ends another (`type`, `message_type`) never matches inside it.
pub fn stats_tag_regex(key: &str) -> String {
    format!(r"[.;]({key}=\.=(.*?);\.;)")
}

/// Appends one encoded `key=.=value;.;` pair.
pub fn push_label(encoded: &mut String, key: &str, value: &str) {
    encoded.push_str(key);
    encoded.push_str(PAIR_SEPARATOR);
    encoded.push_str(value);
    encoded.push_str(PAIR_TERMINATOR);
}

/// The full metric name: encoded labels, then the name (last, so Envoy's suffix-based default
/// tag regexes never see a label value).
pub fn encode(name: &str, labels: &[(&str, &str)]) -> String {
    let mut encoded = String::with_capacity(
        name.len()
            + labels
                .iter()
                .map(|(k, v)| k.len() + v.len() + 6)
                .sum::<usize>(),
    );
    for (key, value) in labels {
        push_label(&mut encoded, key, value);
    }
    encoded.push_str(name);
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_matches_the_stats_tag_regexes() {
        let name = encode(
            HTTP_REQUESTS_TOTAL,
            &[("method", "GET"), ("endpoint", "/api/v1/tracks/:id")],
        );
        assert_eq!(
            name,
            "method=.=GET;.;endpoint=.=/api/v1/tracks/:id;.;http_requests_total"
        );
        assert_eq!(stats_tag_regex("method"), r"[.;](method=\.=(.*?);\.;)");
    }
}
