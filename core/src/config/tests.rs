use super::*;
use crate::labels::Method;

fn load_str(json: &str) -> Result<Settings, String> {
    load(Some(json.as_bytes())).map_err(|e| e.to_string())
}

#[test]
fn empty_configuration_serves_veza() {
    for input in [None, Some(&b""[..]), Some(b"  \n"), Some(b"{}")] {
        let settings = load(input).unwrap();
        assert_eq!(settings.max_series, DEFAULT_MAX_SERIES);
        assert_eq!(settings.flush_interval_ms, DEFAULT_FLUSH_INTERVAL_MS);
        assert_eq!(settings.endpoint_source, EndpointSource::RouteTable);
        assert_eq!(
            settings.routes.services(),
            ["backend-api", "chat", "stream", "gateway"]
        );
    }
}

#[test]
fn veza_routes_resolve_as_the_services_serve_them() {
    let settings = load(None).unwrap();
    let routes = &settings.routes;
    let cases = [
        (
            "GET",
            "/api/v1/tracks/42?x=1",
            "/api/v1/tracks/:id",
            "backend-api",
        ),
        ("POST", "/api/v1/tracks", "/api/v1/tracks", "backend-api"),
        ("GET", "/api/v1/users/me", "/api/v1/users/me", "backend-api"),
        (
            "GET",
            "/api/v1/users/7/avatar",
            "/api/v1/users/:id/avatar",
            "backend-api",
        ),
        (
            "GET",
            "/ws/chat?token=eyJ.secret",
            "/ws/chat",
            "backend-api",
        ),
        (
            "GET",
            "/api/v1/shared-resources/a.mp3",
            "/api/v1/shared-resources/:filename",
            "backend-api",
        ),
        (
            "DELETE",
            "/api/v1/shared-resources/9",
            "/api/v1/shared-resources/:id",
            "backend-api",
        ),
        ("GET", "/api/health", "/api/health", "backend-api"),
        ("GET", "/ws", "/ws", "chat"),
        ("POST", "/api/messages", "/api/messages", "chat"),
        ("GET", "/api/messages/stats", "/api/messages/stats", "chat"),
        ("GET", "/health", "/health", "chat"),
        (
            "GET",
            "/stream/song.mp3?expires=1&sig=abc",
            "/stream/:filename",
            "stream",
        ),
        ("GET", "/api/v2/unknown", "other", "backend-api"),
        ("GET", "/api/messages/unknown", "other", "chat"),
        ("POST", "/ws/chat", "other", "backend-api"),
        ("GET", "/favicon.ico", "other", "other"),
        ("GET", "/ready?verbose", "/ready", "gateway"),
        ("HEAD", "/live", "/live", "gateway"),
    ];
    for (method, path, endpoint, service) in cases {
        let found = routes.resolve(Method::parse(method.as_bytes()), path.as_bytes());
        let got_endpoint = found
            .endpoint
            .and_then(|e| routes.template_text(e))
            .unwrap_or("other");
        let got_service = found
            .service
            .and_then(|s| routes.service_name(s))
            .unwrap_or("other");
        assert_eq!(
            (got_endpoint, got_service),
            (endpoint, service),
            "{method} {path}"
        );
    }
}

#[test]
fn every_field_has_a_documented_default_and_can_be_set() {
    let settings = load_str(
        r#"{"max_series": 10, "metrics_flush_interval_ms": 0, "endpoint_source": "route_name",
            "services": [{"name": "api", "routes": ["/x/:id"], "prefixes": ["/x"]}]}"#,
    )
    .unwrap();
    assert_eq!(settings.max_series, 10);
    assert_eq!(settings.flush_interval_ms, 0);
    assert_eq!(settings.endpoint_source, EndpointSource::RouteName);
    // The one route, and /live and /ready under the `gateway` service.
    assert_eq!(settings.routes.templates().len(), 3);
}

#[test]
fn bad_configuration_names_the_field() {
    let cases = [
        ("{", "invalid configuration JSON: EOF while parsing an object"),
        ("[]", "the configuration must be a JSON object"),
        ("7", "the configuration must be a JSON object"),
        (r#"{"max_seriess": 5}"#, "max_seriess: invalid configuration JSON: unknown field `max_seriess`"),
        (r#"{"max_series": 0}"#, "max_series: must be at least 1 (got 0)"),
        (r#"{"max_series": 100001}"#, "max_series: must be at most 100000 (got 100001)"),
        (r#"{"websocket": {"max_tracked_rooms": 200000}}"#, "websocket.max_tracked_rooms: must be at most 100000 (got 200000)"),
        (r#"{"streams": {"max_stream_ids": 4294967295}}"#, "streams.max_stream_ids: must be at most 100000 (got 4294967295)"),
        (r#"{"max_series": -1}"#, "max_series: invalid configuration JSON: invalid value: integer `-1`, expected u32"),
        (r#"{"metrics_flush_interval_ms": 60001}"#, "metrics_flush_interval_ms: must be at most 60000 (got 60001)"),
        (r#"{"endpoint_source": "path"}"#, "endpoint_source: invalid configuration JSON: unknown variant `path`"),
        (r#"{"services": []}"#, "services: must name at least one service"),
        (r#"{"services": [{"name": "API"}]}"#, "services[0].name: \"API\" must be 1 to 64 characters"),
        (r#"{"services": [{"name": "other"}]}"#, "services[0].name: \"other\" is reserved"),
        (r#"{"services": [{"name": "a"}, {"name": "a"}]}"#, "services[1].name: service \"a\" is defined twice"),
        (r#"{"services": [{"name": "a", "routes": ["/ok", "/x/:"]}]}"#, "services[0].routes[1]: template \"/x/:\": parameter at segment 2 has no name"),
        (r#"{"services": [{"name": "a", "routes": [7]}]}"#, "services[0].routes[0]: invalid configuration JSON: invalid type: integer `7`, expected a string"),
        (r#"{"services": [{"name": "a", "prefixes": ["x"]}]}"#, "services[0].prefixes[0]: \"x\" must start with '/'"),
        (r#"{"services": [{"name": "a", "colour": 1}]}"#, "services[0].colour: invalid configuration JSON: unknown field `colour`"),
        (r#"{} {}"#, "invalid configuration JSON: trailing characters"),
        (r#"{"websocket": {"chat_endpoints": ["/chat"]}}"#, "websocket.chat_endpoints[0]: \"/chat\" is not a route template"),
        (r#"{"websocket": {"chat_event_types": ["Send Message"]}}"#, "websocket.chat_event_types[0]: \"Send Message\" must be"),
        (r#"{"streams": {"endpoints": ["/stream/:id"]}}"#, "streams.endpoints[0]: \"/stream/:id\" is not a route template"),
        (r#"{"count_in_logger": "veza"}"#, "count_in_logger: counting in the access logger needs tracing.enabled off"),
        (r#"{"count_in_logger": "veza", "tracing": {"enabled": false}, "access_log": {"enabled": true}}"#, "count_in_logger: counting in the access logger needs access_log.enabled off"),
        (r#"{"count_in_logger": "veza", "tracing": {"enabled": false}, "exposition": {"admin_cluster": "admin"}}"#, "count_in_logger: counting in the access logger needs exposition off"),
        (r#"{"count_in_logger": "", "tracing": {"enabled": false}}"#, "count_in_logger: \"\" must be 1 to 64 characters"),
    ];
    for (json, expected) in cases {
        let err = load_str(json).unwrap_err();
        assert!(
            err.starts_with(expected),
            "{json}\n got: {err}\nwant: {expected}"
        );
    }
}

#[test]
fn counting_in_the_logger_is_metrics_only() {
    let settings =
        load_str(r#"{"count_in_logger": "veza", "tracing": {"enabled": false}}"#).unwrap();
    assert_eq!(settings.count_in_logger.as_deref(), Some("veza"));
    assert_eq!(load(None).unwrap().count_in_logger, None);
    // The wasm build has no access logger of its own.
    assert_eq!(
        counts_in_filter(&settings).unwrap_err().to_string(),
        "count_in_logger: needs the native build's access logger: this build counts in the filter"
    );
    assert_eq!(counts_in_filter(&load(None).unwrap()), Ok(()));
}
