use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};

use crate::config::EndpointSource;
use crate::header_map;
use crate::health::{Endpoint, Health};
use crate::host::HostError;
use crate::labels;
use crate::metrics::http::{Outcome, RequestRecord};
use crate::metrics::registry::{Operation, Registry};

use super::abi::{self, EnvoyHost};
use super::root::Plugin;

/// One request: `/live` and `/ready` are answered in `on_http_request_headers`; the metrics
/// are recorded in `on_log`, which Envoy calls once per request, also for requests answered
/// before this filter ran and for resets.
pub struct HttpFilter {
    context_id: u32,
    plugin: Option<Rc<Plugin>>,
    /// Host clock when the request headers reached the filter. The duration is taken from two
    /// clock reads, which return no data to allocate; `request.duration` is read only for
    /// requests this filter never saw start.
    started_nanos: Option<u64>,
    /// The request headers, read once (one hostcall) and used again in `on_log`.
    request_headers: Option<Vec<u8>>,
    waiting_for_ready: bool,
}

impl HttpFilter {
    pub fn new(context_id: u32, plugin: Option<Rc<Plugin>>) -> HttpFilter {
        HttpFilter {
            context_id,
            plugin,
            started_nanos: None,
            request_headers: None,
            waiting_for_ready: false,
        }
    }
}

impl Context for HttpFilter {}

impl HttpContext for HttpFilter {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let now = abi::current_time_nanos().ok();
        self.started_nanos = now;
        let Some(plugin) = &self.plugin else {
            return Action::Continue;
        };
        // A failed read leaves `request_headers` empty: `on_log` reads again and counts it.
        let headers = abi::request_headers().ok();
        let health = &plugin.settings.health;
        let endpoint = match &headers {
            Some(headers) if health.enabled => {
                let [method, path, authority] =
                    header_map::find(headers, [":method", ":path", ":authority"]);
                Health::classify(
                    health,
                    method.unwrap_or_default(),
                    path.unwrap_or_default(),
                    authority.unwrap_or_default(),
                )
            }
            _ => Endpoint::Other,
        };
        self.request_headers = headers;
        let now = now.unwrap_or(0);
        let answer = match endpoint {
            Endpoint::Other => return Action::Continue,
            Endpoint::Live => Some(Health::live(now, plugin.started_nanos)),
            Endpoint::Ready => match plugin.state.try_borrow_mut() {
                Ok(mut state) => state.health.ready(health, now, self.context_id),
                Err(_) => return Action::Continue,
            },
        };
        match answer {
            Some(answer) => {
                let _ = abi::send_json_response(answer.status, &answer.body);
            }
            // The root context answers when the round it starts on its next tick completes.
            None => self.waiting_for_ready = true,
        }
        Action::Pause
    }

    fn on_log(&mut self) {
        let Some(plugin) = &self.plugin else { return };
        let Ok(mut state) = plugin.state.try_borrow_mut() else {
            return;
        };
        let state = &mut *state;
        if self.waiting_for_ready {
            state.health.forget(self.context_id);
        }
        let registry = &mut state.registry;
        let headers = match self.request_headers.take() {
            Some(headers) => headers,
            None => read(
                registry,
                Operation::GetHeader,
                abi::request_headers().map(Some),
            )
            .unwrap_or_default(),
        };
        let [method, path] = header_map::find(&headers, [":method", ":path"]);
        // `:status` rather than the `response.code` property: a header read costs about a
        // third of a property read. No response headers means no response was sent.
        let status = read(
            registry,
            Operation::GetHeader,
            abi::header(MapType::HttpResponseHeaders, ":status"),
        )
        .map(|code| labels::status_code_from_header(&code));
        let duration = match (self.started_nanos, abi::current_time_nanos()) {
            (Some(start), Ok(now)) => Some(now.saturating_sub(start)),
            _ => read(
                registry,
                Operation::GetProperty,
                abi::property_u64(&abi::REQUEST_DURATION),
            ),
        };
        let route_name = match plugin.settings.endpoint_source {
            EndpointSource::RouteName => read(
                registry,
                Operation::GetProperty,
                abi::property(&abi::ROUTE_NAME),
            ),
            EndpointSource::RouteTable => None,
        };
        let request = RequestRecord {
            method: method.unwrap_or_default(),
            path: path.unwrap_or_default(),
            route_name: route_name.as_deref(),
            status,
            duration_nanos: duration,
        };
        let mut host = EnvoyHost;
        match state
            .http
            .record(&plugin.settings, registry, &mut host, &request)
        {
            Outcome::Exchange => {}
            // The connection's own metrics (WebSocket) start from this outcome.
            Outcome::Upgraded => {}
        }
        if plugin.settings.flush_interval_ms == 0 {
            registry.flush(&mut host);
        }
    }
}

/// A hostcall's value, or `None` after logging and counting its failure.
fn read<T>(
    registry: &mut Registry,
    operation: Operation,
    result: Result<Option<T>, HostError>,
) -> Option<T> {
    result.unwrap_or_else(|err| {
        registry.host_error(operation, err, "a request");
        None
    })
}
