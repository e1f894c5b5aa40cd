//! Every metric family the filter emits: names, kinds, label keys and help, declared once.
//!
//! Hosts get a series as a name and label pairs. How labels reach Prometheus is the host's
//! business: the proxy-wasm glue encodes them into the name for `stats_tags` to extract, a
//! host with real tags passes them as they are.

/// Counter: every HTTP request through the gateway. Labels: method, endpoint, status, service.
pub const HTTP_REQUESTS_TOTAL: &str = "http_requests_total";
/// Histogram in seconds: request duration. Labels: method, endpoint, service (+ le).
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "http_request_duration_seconds";
/// Gauge: 1 when the dependency's last check passed, else 0; absent until first checked.
/// Labels: dependency, required (`"false"` for an optional check, which never makes `/ready`
/// fail).
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
pub const ACTIVE_USERS: &str = "active_users";

/// Gauge: bytes of linear memory of the worker VM that flushed last (each sets its own size
/// with every metrics flush). Linear memory only grows, so a leak shows as a rising line.
pub const VM_MEMORY_BYTES: &str = "veza_observability_vm_memory_bytes";

/// Counter: spans the collector accepted.
pub const TRACE_SPANS_EXPORTED_TOTAL: &str = "trace_spans_exported_total";
/// Counter: spans dropped, never sent or never accepted. Label: reason.
pub const TRACE_SPANS_DROPPED_TOTAL: &str = "trace_spans_dropped_total";
/// Counter: export calls that did not succeed (each retry counts).
pub const TRACE_EXPORT_FAILURES_TOTAL: &str = "trace_export_failures_total";

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
pub const LABEL_REQUIRED: &str = "required";

/// The endpoint and service label for anything no route or prefix claims, and for overflow.
pub const OTHER: &str = "other";

/// What a family is in Prometheus terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    /// Built from counters: `_bucket` (with `le`), `_count` and `_sum` (see the registry).
    Histogram,
}

/// One metric family: its name, kind, label keys in the order the filter sets them, and its
/// `# HELP` text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

const fn family(
    name: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    help: &'static str,
) -> Family {
    Family {
        name,
        kind,
        labels,
        help,
    }
}

use Kind::{Counter, Gauge, Histogram};

/// Every family the filter emits besides the configured business counters (which have no
/// labels), declared once: a host that needs its metrics up front (Envoy's dynamic modules)
/// defines these, and the in-memory test host refuses any series that is not one of them.
#[rustfmt::skip]
pub const FAMILIES: [Family; 24] = [
    family(HTTP_REQUESTS_TOTAL, Counter, &[LABEL_METHOD, LABEL_ENDPOINT, LABEL_STATUS, LABEL_SERVICE], "HTTP requests through the gateway."),
    family(HTTP_REQUEST_DURATION_SECONDS, Histogram, &[LABEL_METHOD, LABEL_ENDPOINT, LABEL_SERVICE], "HTTP request duration at the gateway, first request byte to last response byte."),
    family(DEPENDENCY_UP, Gauge, &[LABEL_DEPENDENCY, LABEL_REQUIRED], "1 when the dependency's last check passed, else 0; required=\"false\" for an optional check."),
    family(DEPENDENCY_CHECK_DURATION_SECONDS, Histogram, &[LABEL_DEPENDENCY], "Duration of each dependency check."),
    family(WEBSOCKET_UPGRADES_TOTAL, Counter, &[LABEL_SERVICE, LABEL_ENDPOINT, LABEL_STATUS], "WebSocket upgrade attempts by outcome."),
    family(WEBSOCKET_CONNECTIONS_ACTIVE, Gauge, &[LABEL_SERVICE], "Open WebSocket connections."),
    family(WEBSOCKET_CONNECTION_DURATION_SECONDS, Histogram, &[LABEL_SERVICE], "WebSocket connection lifetimes."),
    family(WEBSOCKET_MESSAGES_TOTAL, Counter, &[LABEL_SERVICE, LABEL_DIRECTION, LABEL_MESSAGE_TYPE], "Whole WebSocket messages."),
    family(WEBSOCKET_BYTES_TOTAL, Counter, &[LABEL_SERVICE, LABEL_DIRECTION], "Bytes through upgraded connections."),
    family(WEBSOCKET_PROTOCOL_ERRORS_TOTAL, Counter, &[LABEL_SERVICE], "WebSocket connections whose frames stopped making sense."),
    family(CHAT_EVENTS_TOTAL, Counter, &[LABEL_TYPE], "Chat client messages by type."),
    family(CHAT_MESSAGES_SENT_TOTAL, Counter, &[], "Chat messages sent."),
    family(CHAT_ROOMS_ACTIVE, Gauge, &[], "Distinct conversations joined through the gateway."),
    family(STREAMS_STARTED_TOTAL, Counter, &[], "Listening sessions started."),
    family(STREAM_SESSIONS_ACTIVE, Gauge, &[], "Stream responses being forwarded."),
    family(STREAM_DURATION_SECONDS, Histogram, &[], "Stream response durations."),
    family(STREAM_BYTES_TOTAL, Counter, &[], "Stream response body bytes forwarded."),
    family(STREAM_BITRATE_BPS, Gauge, &[LABEL_STREAM_ID], "Bits per second forwarded over the last second, per stream."),
    family(FILTER_ERRORS_TOTAL, Counter, &[LABEL_OPERATION], "Host calls that failed inside the filter."),
    family(ACTIVE_USERS, Gauge, &[], "Distinct users seen in the sliding window (an estimate)."),
    family(VM_MEMORY_BYTES, Gauge, &[], "Memory of the filter instance that flushed last."),
    family(TRACE_SPANS_EXPORTED_TOTAL, Counter, &[], "Spans the collector accepted."),
    family(TRACE_SPANS_DROPPED_TOTAL, Counter, &[LABEL_REASON], "Spans dropped, never sent or never accepted."),
    family(TRACE_EXPORT_FAILURES_TOTAL, Counter, &[], "Span export calls that did not succeed."),
];

/// A histogram's sum in whole microseconds: Envoy counters are integers, and the `_sum` in
/// seconds moves only a second at a time. The stats listener's `/metrics` renders `_sum` from
/// it ([`crate::exposition`]).
pub const SUM_MICROSECONDS_SUFFIX: &str = "_sum_microseconds";

/// The suffixes of a histogram's counter series; `_bucket` carries `le` after its labels.
pub const HISTOGRAM_SUFFIXES: [&str; 4] = ["_bucket", "_count", "_sum", SUM_MICROSECONDS_SUFFIX];

/// One series name a host defines (a histogram is four), with its label keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    pub name: String,
    /// A gauge; otherwise a counter.
    pub gauge: bool,
    pub labels: Vec<&'static str>,
}

/// Every series name the host will be asked to define, with its label keys, built-in
/// families first, then the business counters: what a host that fixes its metrics when the
/// configuration loads defines.
pub fn declared<'a>(business: impl IntoIterator<Item = &'a str>) -> Vec<Declared> {
    let mut all = Vec::new();
    for family in FAMILIES {
        match family.kind {
            Kind::Counter | Kind::Gauge => all.push(Declared {
                name: family.name.to_owned(),
                gauge: family.kind == Kind::Gauge,
                labels: family.labels.to_vec(),
            }),
            Kind::Histogram => {
                for suffix in HISTOGRAM_SUFFIXES {
                    let mut labels = family.labels.to_vec();
                    if suffix == "_bucket" {
                        labels.push(LABEL_LE);
                    }
                    all.push(Declared {
                        name: format!("{}{suffix}", family.name),
                        gauge: false,
                        labels,
                    });
                }
            }
        }
    }
    all.extend(business.into_iter().map(|name| Declared {
        name: name.to_owned(),
        gauge: false,
        labels: Vec::new(),
    }));
    all
}

/// Whether `name` is a family the filter emits, or one of a histogram's series: a business
/// rule may not reuse it.
pub fn is_built_in(name: &str) -> bool {
    FAMILIES.iter().any(|family| {
        family.name == name
            || (family.kind == Kind::Histogram
                && HISTOGRAM_SUFFIXES
                    .iter()
                    .any(|suffix| name.strip_prefix(family.name) == Some(suffix)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_declared_once() {
        let all = declared(["user_logins_total"]);
        for (i, one) in all.iter().enumerate() {
            assert!(
                !all.iter().skip(i + 1).any(|other| other.name == one.name),
                "{}",
                one.name
            );
        }
        assert_eq!(all.len(), 24 + 4 * 3 + 1);
        let bucket = all
            .iter()
            .find(|d| d.name == "http_request_duration_seconds_bucket");
        assert_eq!(
            bucket.map(|d| d.labels.clone()),
            Some(vec!["method", "endpoint", "service", "le"])
        );
    }

    #[test]
    fn histogram_series_are_built_in() {
        assert!(is_built_in("stream_duration_seconds_sum"));
        assert!(is_built_in("stream_duration_seconds_sum_microseconds"));
        assert!(is_built_in("http_requests_total"));
        assert!(!is_built_in("http_requests_total_sum"));
        assert!(!is_built_in("user_logins_total"));
    }
}
