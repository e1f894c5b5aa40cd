use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType};

use crate::active_users::identity::{self, Credentials};
use crate::config::business::UserSource;
use crate::config::EndpointSource;
use crate::header_map;
use crate::health::{Endpoint, Health};
use crate::host::HostError;
use crate::labels::{self, Method, Status};
use crate::metrics::connections::WebSocketConnection;
use crate::metrics::http::RequestRecord;
use crate::metrics::registry::{Operation, Registry};
use crate::metrics::streams::{self, StreamResponse, StreamSession};
use crate::routes;
use crate::routes::RouteMatch;
use crate::trace::export::SpanRecord;
use crate::trace::{self, TraceHeaders};
use crate::websocket::frames::{ByteSource, Direction};

use super::abi::{self, EnvoyHost};
use super::root::{Plugin, State};

/// Body chunks up to this size are copied into the VM whole (one hostcall); larger ones are
/// read only where frame headers are.
const WHOLE_CHUNK_LIMIT: usize = 16 * 1024;

/// One request. `/live` and `/ready` are answered in `on_http_request_headers`; the metrics
/// are recorded in `on_log`, which Envoy calls once per request, also for requests answered
/// before this filter ran and for resets, and, for an upgraded connection, when it ends.
pub struct HttpFilter {
    context_id: u32,
    plugin: Option<Rc<Plugin>>,
    /// Host clock when the request headers reached the filter. The duration is taken from two
    /// clock reads, which return no data to allocate; `request.duration` is read only for
    /// requests this filter never saw start.
    started_nanos: Option<u64>,
    /// Parsed once from the request headers (one hostcall for all of them); `route` is
    /// `None` for a request this filter never saw start, which `on_log` reads then.
    method: Method,
    route: Option<RouteMatch>,
    waiting_for_ready: bool,
    /// A WebSocket upgrade request, until its outcome is counted.
    upgrade_pending: bool,
    stream_request: Option<StreamRequest>,
    connection: Option<Connection>,
    /// Sent back in the configured response header.
    trace_id: Option<crate::trace::TraceId>,
    /// The gateway's span, until `on_log` queues it for export.
    span: Option<PendingSpan>,
}

/// Longest text kept in a span attribute (paths, user agents, hosts).
const MAX_SPAN_TEXT: usize = 512;

/// What the request headers said about a sampled request's span.
struct PendingSpan {
    trace_id: trace::TraceId,
    span_id: trace::SpanId,
    parent: Option<trace::SpanId>,
    tracestate: Option<String>,
    method: &'static str,
    path: String,
    scheme: String,
    server_address: String,
    user_agent: Option<String>,
    start_unix_nanos: u64,
}

/// A GET of a stream endpoint, until its response headers say whether it streams.
struct StreamRequest {
    stream_id: String,
}

/// A long exchange in progress: an upgraded WebSocket or a stream response.
enum Connection {
    WebSocket(WebSocketConnection),
    Stream(StreamSession),
}

impl HttpFilter {
    pub fn new(context_id: u32, plugin: Option<Rc<Plugin>>) -> HttpFilter {
        HttpFilter {
            context_id,
            plugin,
            started_nanos: None,
            method: Method::Get,
            route: None,
            waiting_for_ready: false,
            upgrade_pending: false,
            stream_request: None,
            connection: None,
            trace_id: None,
            span: None,
        }
    }

    /// Replaces the request's trace headers with the gateway's context. Returns the decision,
    /// and the span to export when it is sampled and a collector is configured.
    fn propagate_trace(
        plugin: &Plugin,
        headers: &[u8],
        method: Method,
        now: u64,
    ) -> Option<(trace::TraceId, Option<PendingSpan>)> {
        let settings = &plugin.settings.tracing;
        let incoming = TraceHeaders::collect(header_map::pairs(headers), settings);
        let Ok(mut state) = plugin.state.try_borrow_mut() else {
            return None;
        };
        let state = &mut *state;
        let decision = trace::decide(settings, &incoming, &mut state.trace_ids);
        let outgoing = trace::outgoing(settings, &decision);
        let request = MapType::HttpRequestHeaders;
        for (name, value) in &outgoing {
            if let Err(err) = abi::set_header(request, name, value.as_bytes()) {
                state.registry.host_error(Operation::SetHeader, err, name);
            }
        }
        for name in trace::stale(incoming.present, &outgoing) {
            if let Err(err) = abi::remove_header(request, name) {
                state.registry.host_error(Operation::SetHeader, err, name);
            }
        }
        let span = (decision.sampled && settings.collector.is_some()).then(|| {
            // Envoy keeps an HTTP/1 `Host` as `:authority`.
            let [path, scheme, authority, user_agent] =
                header_map::find(headers, [":path", ":scheme", ":authority", "user-agent"]);
            let text = |bytes: Option<&[u8]>, max: usize| {
                bytes.map(|b| String::from_utf8_lossy(b.get(..max).unwrap_or(b)).into_owned())
            };
            PendingSpan {
                trace_id: decision.trace_id,
                span_id: decision.span_id,
                parent: decision.parent,
                tracestate: decision.tracestate.clone(),
                method: method.as_str(),
                path: text(path.map(routes::strip_query), MAX_SPAN_TEXT).unwrap_or_default(),
                scheme: text(scheme, 16).unwrap_or_else(|| "http".to_owned()),
                server_address: text(authority.map(crate::health::strip_port), MAX_SPAN_TEXT)
                    .unwrap_or_default(),
                user_agent: text(user_agent, MAX_SPAN_TEXT),
                start_unix_nanos: now,
            }
        });
        Some((decision.trace_id, span))
    }

    fn service(&self) -> Option<crate::routes::ServiceId> {
        self.route.and_then(|r| r.service)
    }

    fn on_body(&mut self, direction: Direction, size: usize) {
        let Some(plugin) = &self.plugin else {
            return;
        };
        let Ok(mut state) = plugin.state.try_borrow_mut() else {
            return;
        };
        let State {
            registry,
            connections,
            streams,
            ..
        } = &mut *state;
        let settings = &plugin.settings;
        let mut host = EnvoyHost;
        match &mut self.connection {
            Some(Connection::WebSocket(connection)) => {
                let buffer = match direction {
                    Direction::Upstream => BufferType::HttpRequestBody,
                    Direction::Downstream => BufferType::HttpResponseBody,
                };
                connections.websocket_chunk(
                    settings,
                    registry,
                    &mut host,
                    connection,
                    direction,
                    &mut EnvoyBody::new(buffer, size),
                );
            }
            Some(Connection::Stream(session)) if direction == Direction::Downstream => {
                // A failed clock read only delays the bitrate to the next chunk.
                let now = abi::current_time_nanos().unwrap_or(0);
                streams.forwarded(registry, &mut host, session, size as u64, now);
            }
            _ => {}
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
        let settings = &plugin.settings;
        let health = &settings.health;
        let mut endpoint = Endpoint::Other;
        if let Some(headers) = &headers {
            let [method, path, authority, upgrade, authorization] = header_map::find(
                headers,
                [":method", ":path", ":authority", "upgrade", "authorization"],
            );
            let (method, path) = (method.unwrap_or_default(), path.unwrap_or_default());
            #[cfg(feature = "fault-injection")]
            if let Some(trap) = &settings.trap_header {
                if header_map::find(headers, [trap.as_str()])[0].is_some() {
                    log::error!("veza-observability: trapping the VM, as fault_injection asks");
                    core::arch::wasm32::unreachable();
                }
            }
            if settings.active_users.enabled {
                let header = match &settings.active_users.source {
                    UserSource::Header(name) => header_map::find(headers, [name.as_str()])[0],
                    UserSource::Jwt { .. } => None,
                };
                let credentials = Credentials {
                    authorization,
                    path,
                    header,
                };
                if let Some(user) = identity::user_hash(&settings.active_users.source, &credentials)
                {
                    if let Ok(mut state) = plugin.state.try_borrow_mut() {
                        let State {
                            registry,
                            active_users,
                            ..
                        } = &mut *state;
                        if let Some(active_users) = active_users {
                            active_users.observe(registry, &mut EnvoyHost, now.unwrap_or(0), user);
                        }
                    }
                }
            }
            if health.enabled {
                endpoint = Health::classify(health, method, path, authority.unwrap_or_default());
            }
            self.method = Method::parse(method);
            let route = settings.routes.resolve(self.method, path);
            self.route = Some(route);
            self.upgrade_pending = upgrade.is_some_and(|u| u.eq_ignore_ascii_case(b"websocket"));
            let stream = route
                .endpoint
                .is_some_and(|e| settings.streams.endpoints.contains(&e))
                && method == b"GET";
            if stream {
                self.stream_request = Some(StreamRequest {
                    stream_id: streams::stream_id(path),
                });
            }
        }
        let tracing = &settings.tracing;
        let traced = match endpoint {
            Endpoint::Other => tracing.websocket || !self.upgrade_pending,
            Endpoint::Live | Endpoint::Ready => tracing.health,
        };
        if let (true, true, Some(headers)) = (traced, tracing.enabled, &headers) {
            if let Some((trace_id, span)) =
                HttpFilter::propagate_trace(plugin, headers, self.method, now.unwrap_or(0))
            {
                if tracing.response_header.is_some() {
                    self.trace_id = Some(trace_id);
                }
                self.span = span;
            }
        }
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

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        if let (Some(trace_id), Some(plugin)) = (self.trace_id.take(), &self.plugin) {
            if let Some(name) = &plugin.settings.tracing.response_header {
                let _ = abi::set_header(MapType::HttpResponseHeaders, name, &trace_id.hex());
            }
        }
        if !self.upgrade_pending && self.stream_request.is_none() {
            return Action::Continue;
        }
        let Some(plugin) = self.plugin.clone() else {
            return Action::Continue;
        };
        let Ok(mut state) = plugin.state.try_borrow_mut() else {
            return Action::Continue;
        };
        let State {
            registry,
            connections,
            streams,
            ..
        } = &mut *state;
        let settings = &plugin.settings;
        let mut host = EnvoyHost;
        let status = read(
            registry,
            Operation::GetHeader,
            abi::header(MapType::HttpResponseHeaders, ":status"),
        )
        .map(|code| labels::status_code_from_header(&code));
        let now = abi::current_time_nanos().unwrap_or(0);
        let route = self.route.unwrap_or(RouteMatch::NONE);
        if self.upgrade_pending {
            self.upgrade_pending = false;
            connections.upgrade(
                settings,
                registry,
                &mut host,
                route.service,
                route.endpoint,
                Status::from_code(status),
            );
            if status == Some(101) {
                connections.opened(settings, registry, &mut host, route.service);
                let chat = route
                    .endpoint
                    .is_some_and(|e| settings.websocket.chat_endpoints.contains(&e));
                self.connection = Some(Connection::WebSocket(WebSocketConnection::new(
                    route.service,
                    chat,
                    now,
                )));
            }
        } else if let Some(stream) = self.stream_request.take() {
            let content_range = match status {
                Some(206) => read(
                    registry,
                    Operation::GetHeader,
                    abi::header(MapType::HttpResponseHeaders, "content-range"),
                ),
                _ => None,
            };
            let status = status.and_then(|s| u16::try_from(s).ok());
            let response = StreamResponse::classify(status, content_range.as_deref());
            self.connection = streams
                .opened(
                    settings,
                    registry,
                    &mut host,
                    response,
                    &stream.stream_id,
                    now,
                )
                .map(Connection::Stream);
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, _end_of_stream: bool) -> Action {
        if matches!(self.connection, Some(Connection::WebSocket { .. })) {
            self.on_body(Direction::Upstream, body_size);
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, _end_of_stream: bool) -> Action {
        if self.connection.is_some() {
            self.on_body(Direction::Downstream, body_size);
        }
        Action::Continue
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
        // A request this filter never saw start (answered before it ran): read its headers now.
        let fallback_headers = match self.route {
            Some(_) => Vec::new(),
            None => read(
                registry,
                Operation::GetHeader,
                abi::request_headers().map(Some),
            )
            .unwrap_or_default(),
        };
        let (method, path) = match self.route {
            Some(_) => (self.method, &b""[..]),
            None => {
                let [method, path] = header_map::find(&fallback_headers, [":method", ":path"]);
                (
                    Method::parse(method.unwrap_or_default()),
                    path.unwrap_or_default(),
                )
            }
        };
        // `:status` rather than the `response.code` property: a header read costs about a
        // third of a property read. No response headers means no response was sent.
        let status = read(
            registry,
            Operation::GetHeader,
            abi::header(MapType::HttpResponseHeaders, ":status"),
        )
        .map(|code| labels::status_code_from_header(&code));
        let now = abi::current_time_nanos();
        let duration = match (self.started_nanos, now) {
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
            method,
            path,
            route_name: route_name.as_deref(),
            route: self.route,
            status,
            duration_nanos: duration,
        };
        let mut host = EnvoyHost;
        let settings = &plugin.settings;
        // The HTTP exchange itself; an upgraded connection is counted, not timed, here.
        let route = state.http.record(settings, registry, &mut host, &request);
        if let (Some(pending), Some(exporter)) = (self.span.take(), state.exporter.as_mut()) {
            let protocol = read(
                registry,
                Operation::GetProperty,
                abi::property(&abi::REQUEST_PROTOCOL),
            );
            let span = SpanRecord {
                trace_id: pending.trace_id,
                span_id: pending.span_id,
                parent: pending.parent,
                tracestate: pending.tracestate,
                method: pending.method,
                route: route
                    .endpoint
                    .and_then(|e| settings.routes.template_text(e))
                    .map(str::to_owned),
                path: pending.path,
                scheme: pending.scheme,
                server_address: pending.server_address,
                user_agent: pending.user_agent,
                protocol_version: protocol.as_deref().and_then(protocol_version),
                status: status.and_then(|s| u16::try_from(s).ok()).unwrap_or(0),
                start_unix_nanos: pending.start_unix_nanos,
                end_unix_nanos: now.as_ref().copied().unwrap_or(pending.start_unix_nanos),
            };
            exporter.push(registry, span);
        }
        state
            .business
            .record(&settings.business, registry, method, route.endpoint, status);
        let service = self.service();
        let now = now.unwrap_or(0);
        if self.upgrade_pending {
            // No response headers came (the upstream failed first): the attempt's outcome.
            let route = self.route.unwrap_or(RouteMatch::NONE);
            state.connections.upgrade(
                settings,
                registry,
                &mut host,
                service,
                route.endpoint,
                Status::from_code(status),
            );
        }
        match self.connection.take() {
            Some(Connection::WebSocket(connection)) => {
                state
                    .connections
                    .websocket_closed(settings, registry, &mut host, connection, now);
            }
            Some(Connection::Stream(session)) => {
                state.streams.closed(registry, &mut host, session, now);
            }
            None => {}
        }
        if settings.flush_interval_ms == 0 {
            registry.flush(&mut host);
        }
    }
}

/// A body chunk as the frame reader sees it.
struct EnvoyBody {
    buffer: BufferType,
    size: usize,
    /// The whole chunk (small chunks), or the last range read (large ones).
    bytes: Option<Vec<u8>>,
}

impl EnvoyBody {
    fn new(buffer: BufferType, size: usize) -> EnvoyBody {
        EnvoyBody {
            buffer,
            size,
            bytes: None,
        }
    }
}

impl ByteSource for EnvoyBody {
    fn size(&self) -> usize {
        self.size
    }

    fn read(&mut self, offset: usize, len: usize) -> &[u8] {
        if self.size <= WHOLE_CHUNK_LIMIT {
            let (buffer, size) = (self.buffer, self.size);
            let whole = self.bytes.get_or_insert_with(|| {
                abi::buffer(buffer, size).ok().flatten().unwrap_or_default()
            });
            let end = offset.saturating_add(len).min(whole.len());
            return whole.get(offset..end).unwrap_or_default();
        }
        let range = abi::buffer_at(self.buffer, offset, len).ok().flatten();
        self.bytes.insert(range.unwrap_or_default())
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

/// `HTTP/1.1` to `1.1`, `HTTP/2` to `2`.
fn protocol_version(protocol: &[u8]) -> Option<String> {
    let version = protocol.strip_prefix(b"HTTP/")?;
    std::str::from_utf8(version).ok().map(str::to_owned)
}
