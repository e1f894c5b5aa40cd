//! Business counters from request outcomes: each configured rule adds one to its counter
//! when a request's method, route template and status match it.

use crate::config::business::BusinessSettings;
use crate::host::Host;
use crate::labels::Method;
use crate::routes::EndpointId;

use super::registry::{CounterHandle, Registry};

pub struct BusinessMetrics {
    /// Per rule, the index of its counter in `counters` (rules may share a counter).
    counter_of_rule: Vec<usize>,
    counters: Vec<Option<CounterHandle>>,
}

impl BusinessMetrics {
    /// Defines every rule's counter now, so each series exists (at 0) before its first event
    /// and `increase()` sees the first one.
    pub fn new(
        settings: &BusinessSettings,
        registry: &mut Registry,
        host: &mut dyn Host,
    ) -> BusinessMetrics {
        let names = settings.counters();
        let counters = names
            .iter()
            .map(|name| registry.define_counter(host, name, &[]))
            .collect();
        let counter_of_rule = settings
            .rules
            .iter()
            .map(|rule| {
                names
                    .iter()
                    .position(|name| *name == rule.counter)
                    .unwrap_or(0)
            })
            .collect();
        BusinessMetrics {
            counter_of_rule,
            counters,
        }
    }

    /// One finished request. A counter is added to once per request, however many of its
    /// rules match.
    pub fn record(
        &self,
        settings: &BusinessSettings,
        registry: &mut Registry,
        method: Method,
        endpoint: Option<EndpointId>,
        status: Option<u64>,
    ) {
        let Some(endpoint) = endpoint else { return };
        let mut counted: u64 = 0;
        for &rule_index in settings.rules_for(endpoint) {
            let rule_index = usize::from(rule_index);
            let (Some(rule), Some(&counter)) = (
                settings.rules.get(rule_index),
                self.counter_of_rule.get(rule_index),
            ) else {
                continue;
            };
            let bit = 1u64.checked_shl(counter as u32).unwrap_or(0);
            if counted & bit != 0 || !rule.matches(method, status) {
                continue;
            }
            counted |= bit;
            if let Some(Some(handle)) = self.counters.get(counter) {
                registry.add(*handle, 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::host::memory::MemoryHost;
    use crate::metrics::names;

    fn run(config_json: &str, requests: &[(Method, &str, u64)]) -> Vec<(String, u64)> {
        let settings = config::load(Some(config_json.as_bytes())).unwrap();
        let mut host = MemoryHost::default();
        let mut registry = Registry::new(&mut host);
        let business = BusinessMetrics::new(&settings.business, &mut registry, &mut host);
        for &(method, path, status) in requests {
            let route = settings.routes.resolve(method, path.as_bytes());
            business.record(
                &settings.business,
                &mut registry,
                method,
                route.endpoint,
                Some(status),
            );
        }
        registry.flush(&mut host);
        host.counters()
            .into_iter()
            .filter(|(name, _)| !name.contains(names::FILTER_ERRORS_TOTAL))
            .collect()
    }

    #[test]
    fn veza_rules_count_what_the_seed_names() {
        use Method::*;
        let counters = run(
            "{}",
            &[
                (Post, "/api/v1/auth/register", 200),
                (Post, "/api/v1/auth/signup", 201),
                (Post, "/api/v1/auth/register", 409),
                (Post, "/api/v1/auth/login", 200),
                (Post, "/api/v1/auth/login", 200),
                (Post, "/api/v1/auth/login", 401),
                (Post, "/api/v1/auth/login", 401),
                (Post, "/api/v1/auth/login", 401),
                (Post, "/api/v1/auth/login", 500),
                (Get, "/api/v1/auth/login", 200),
                (Post, "/api/v1/tracks", 201),
                (Post, "/api/v1/tracks?draft=1", 200),
                (Get, "/api/v1/tracks", 200),
                (Post, "/api/v1/tracks/9", 200),
                (Post, "/api/v1/playlists", 200),
                (Post, "/api/v1/playlists", 400),
            ],
        );
        let expected = [
            (names::PLAYLISTS_CREATED_TOTAL, 1),
            (names::TRACKS_UPLOADED_TOTAL, 2),
            (names::USER_LOGINS_FAILED_TOTAL, 3),
            (names::USER_LOGINS_TOTAL, 2),
            (names::USER_REGISTRATIONS_TOTAL, 2),
        ]
        .map(|(name, value)| (name.to_owned(), value));
        assert_eq!(counters, expected);
    }

    #[test]
    fn configured_rules_replace_the_defaults_and_share_counters() {
        use Method::*;
        let config = r#"{"business_metrics": [
            {"counter": "auth_attempts_total", "method": "POST", "endpoints": ["/api/v1/auth/login"], "status": ["2xx", "4xx"]},
            {"counter": "auth_attempts_total", "method": "POST", "endpoints": ["/api/v1/auth/login", "/api/v1/auth/refresh"], "status": ["200", "401"]},
            {"counter": "uploads_rejected_total", "method": "POST,PUT", "endpoints": ["/api/v1/tracks", "/api/v1/tracks/:id"], "status": ["413", "5xx"]}
        ]}"#;
        let counters = run(
            config,
            &[
                (Post, "/api/v1/auth/login", 200),
                (Post, "/api/v1/auth/login", 401),
                (Post, "/api/v1/auth/login", 429),
                (Post, "/api/v1/auth/refresh", 200),
                (Post, "/api/v1/auth/refresh", 403),
                (Post, "/api/v1/tracks", 413),
                (Put, "/api/v1/tracks/3", 503),
                (Delete, "/api/v1/tracks/3", 503),
            ],
        );
        assert_eq!(
            counters,
            [
                ("auth_attempts_total".to_owned(), 4),
                ("uploads_rejected_total".to_owned(), 2)
            ]
        );
        assert_eq!(
            run(
                r#"{"business_metrics": []}"#,
                &[(Post, "/api/v1/auth/login", 200)]
            ),
            []
        );
    }

    #[test]
    fn bad_rules_are_refused_naming_the_field() {
        let rule = |body: &str| format!(r#"{{"business_metrics": [{body}]}}"#);
        let cases = [
            (
                rule(r#"{"counter": "logins-total", "method": "POST", "endpoints": ["/api/v1/auth/login"], "status": ["2xx"]}"#),
                "business_metrics[0].counter: \"logins-total\" must be a Prometheus metric name",
            ),
            (
                rule(r#"{"counter": "http_requests_total", "method": "POST", "endpoints": ["/api/v1/auth/login"], "status": ["2xx"]}"#),
                "business_metrics[0].counter: \"http_requests_total\" is a metric the filter already emits",
            ),
            (
                rule(r#"{"counter": "x_total", "method": "POST,FETCH", "endpoints": ["/api/v1/auth/login"], "status": ["2xx"]}"#),
                "business_metrics[0].method: \"FETCH\" is not a standard HTTP method",
            ),
            (
                rule(r#"{"counter": "x_total", "method": "POST", "endpoints": ["/api/v1/auth/login", "/api/v1/nope"], "status": ["2xx"]}"#),
                "business_metrics[0].endpoints[1]: \"/api/v1/nope\" is not a route template of services[].routes",
            ),
            (
                rule(r#"{"counter": "x_total", "method": "POST", "endpoints": ["/api/v1/auth/login"], "status": ["2xx", "6xx"]}"#),
                "business_metrics[0].status[1]: \"6xx\" must be a class",
            ),
            (
                rule(r#"{"counter": "x_total", "method": "POST", "endpoints": ["/api/v1/auth/login"], "status": ["0200"]}"#),
                "business_metrics[0].status[0]: \"0200\" must be a class",
            ),
            (
                rule(r#"{"counter": "x_total", "method": "POST", "endpoints": [], "status": ["2xx"]}"#),
                "business_metrics[0].endpoints: must name at least one route template",
            ),
            (
                rule(r#"{"counter": "x_total", "method": "POST", "endpoint": ["/api/v1/auth/login"], "status": ["2xx"]}"#),
                "business_metrics[0].endpoint: invalid configuration JSON: unknown field `endpoint`",
            ),
            (
                r#"{"active_users": {"window_seconds": 5}}"#.to_owned(),
                "active_users.window_seconds: must be from 10 to 86400 (got 5)",
            ),
            (
                r#"{"active_users": {"source": {"header": "x user"}}}"#.to_owned(),
                "active_users.source.header: \"x user\" is not an HTTP header name",
            ),
            (
                r#"{"active_users": {"source": {"jwt": {"claim": ""}}}}"#.to_owned(),
                "active_users.source.jwt.claim: must be 1 to 64 characters",
            ),
            (
                r#"{"active_users": {"source": "cookie"}}"#.to_owned(),
                "active_users.source: invalid configuration JSON: unknown variant `cookie`",
            ),
        ];
        for (json, expected) in cases {
            let err = config::load(Some(json.as_bytes())).unwrap_err().to_string();
            assert!(
                err.starts_with(expected),
                "{json}\n  gave: {err}\n  want: {expected}"
            );
        }
    }
}
