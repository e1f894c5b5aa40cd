use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use crate::config::EndpointSource;
use crate::header_map;
use crate::host::HostError;
use crate::labels;
use crate::metrics::http::{Outcome, RequestRecord};
use crate::metrics::registry::{Operation, Registry};

use super::abi::{self, EnvoyHost};
use super::root::Plugin;

/// One request. The work happens in `on_log`, which Envoy calls once per request, also for
/// requests answered before this filter ran and for resets.
pub struct HttpFilter {
    plugin: Option<Rc<Plugin>>,
    /// Host clock when the request headers reached the filter. The duration is taken from two
    /// clock reads, which return no data to allocate; `request.duration` is read only for
    /// requests this filter never saw start.
    started_nanos: Option<u64>,
}

impl HttpFilter {
    pub fn new(plugin: Option<Rc<Plugin>>) -> HttpFilter {
        HttpFilter {
            plugin,
            started_nanos: None,
        }
    }
}

impl Context for HttpFilter {}

impl HttpContext for HttpFilter {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        self.started_nanos = abi::current_time_nanos().ok();
        Action::Continue
    }

    fn on_log(&mut self) {
        let Some(plugin) = &self.plugin else { return };
        let Ok(mut state) = plugin.state.try_borrow_mut() else {
            return;
        };
        let state = &mut *state;
        let registry = &mut state.registry;
        let headers = read(
            registry,
            Operation::GetHeader,
            abi::request_headers().map(Some),
        )
        .unwrap_or_default();
        let [method, path] = header_map::find(&headers, [":method", ":path"]);
        // `:status` rather than the `response.code` property: a header read costs about a
        // third of a property read. No response headers means no response was sent.
        let status = read(
            registry,
            Operation::GetHeader,
            abi::response_header(":status"),
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
