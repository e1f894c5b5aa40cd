use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};

use crate::config::EndpointSource;
use crate::host::HostError;
use crate::metrics::http::{Outcome, RequestRecord};
use crate::metrics::registry::{Operation, Registry};

use super::abi::{self, EnvoyHost};
use super::root::Plugin;

/// One request. Everything happens in `on_log`, which Envoy calls once per request, also for
/// requests answered before this filter ran and for resets.
pub struct HttpFilter {
    plugin: Option<Rc<Plugin>>,
}

impl HttpFilter {
    pub fn new(plugin: Option<Rc<Plugin>>) -> HttpFilter {
        HttpFilter { plugin }
    }
}

impl Context for HttpFilter {}

impl HttpContext for HttpFilter {
    fn on_log(&mut self) {
        let Some(plugin) = &self.plugin else { return };
        let Ok(mut state) = plugin.state.try_borrow_mut() else {
            return;
        };
        let state = &mut *state;
        let registry = &mut state.registry;
        let method = read(
            registry,
            Operation::GetHeader,
            abi::request_header(":method"),
        );
        let path = read(registry, Operation::GetHeader, abi::request_header(":path"));
        let status = read(
            registry,
            Operation::GetProperty,
            abi::property_u64(&abi::RESPONSE_CODE),
        );
        let duration = read(
            registry,
            Operation::GetProperty,
            abi::property_u64(&abi::REQUEST_DURATION),
        );
        let route_name = match plugin.settings.endpoint_source {
            EndpointSource::RouteName => read(
                registry,
                Operation::GetProperty,
                abi::property(&abi::ROUTE_NAME),
            ),
            EndpointSource::RouteTable => None,
        };
        let request = RequestRecord {
            method: method.as_deref().unwrap_or_default(),
            path: path.as_deref().unwrap_or_default(),
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
