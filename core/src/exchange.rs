//! One request through the gateway, from its headers to the end Envoy logs: every decision the
//! filter makes about a request. A host calls [`Exchange`] from its callbacks with the
//! request's [`Request`] (the host's view of the request) and does what it returns.
//!
//! - Request headers: the user (active users), `/live` and `/ready`, the route, a WebSocket
//!   upgrade or a stream request, the trace context written on the request and the span begun.
//! - Response headers: the trace id header, the upgrade's outcome, whether a stream starts.
//! - Body chunks: WebSocket frames and stream bytes.
//! - The end (also for requests answered before the filter ran, and for resets): the HTTP
//!   metrics, business rules, the span queued for export, connections closed.

use crate::access_log;
use crate::active_users::identity::{self, Credentials};
use crate::config::business::UserSource;
use crate::config::tracing::Propagation;
use crate::config::{EndpointSource, Settings};
use crate::header_map::Headers;
use crate::health::{self, Endpoint, Health};
use crate::host::{HeaderMap, Property, Request};
use crate::labels::{self, Method, Status};
use crate::metrics::connections::WebSocketConnection;
use crate::metrics::http::RequestRecord;
use crate::metrics::registry::Operation;
use crate::metrics::registry::Registry;
use crate::metrics::streams::{self, StreamResponse, StreamSession};
use crate::routes::{self, RouteMatch, ServiceId};
use crate::trace::export::{DropReason, SpanRecord};
use crate::trace::{self, TraceHeaders};
use crate::websocket::frames::{ByteSource, Direction};
use crate::worker::{State, Worker};

/// Longest text kept in a span attribute (paths, user agents, hosts).
const MAX_SPAN_TEXT: usize = 512;

/// What the host does with the request after its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Pass it on.
    Continue,
    /// Hold it: it was answered here (`/live`, a cached `/ready`), or it waits for the
    /// worker's `/ready` round, which answers it by its context id.
    Pause,
}

/// One request's state between the host's callbacks.
#[derive(Default)]
pub struct Exchange {
    context_id: u32,
    /// Host clock when the request headers reached the filter. The duration is taken from two
    /// clock reads; `request.duration` is read only for requests this filter never saw start.
    started_nanos: Option<u64>,
    /// Parsed once from the request headers (one read for all of them); `route` is `None` for
    /// a request this filter never saw start, which [`Exchange::end`] reads then.
    method: Option<Method>,
    route: Option<RouteMatch>,
    waiting_for_ready: bool,
    /// Made by the module's access logger ([`Exchange::logged`]): the one exchange that counts
    /// the request when `count_in_logger` is set.
    logged: bool,
    /// A WebSocket upgrade request, until its outcome is counted.
    upgrade_pending: bool,
    /// A GET of a stream endpoint, until its response headers say whether it streams: the
    /// stream's id.
    stream_request: Option<String>,
    /// Boxed, as is the span: most requests have neither, and a request's state is made and
    /// dropped once per request (576 bytes inline, 9 cache lines to write).
    connection: Option<Box<Connection>>,
    /// The context the service received, as far as the filter knows it: what it wrote, or
    /// (read back after the router) what Envoy's tracer wrote.
    seen: Option<(trace::TraceId, trace::SpanId)>,
    /// Read the request's trace headers again when the response comes: Envoy's tracer
    /// writes its context at the router, after this filter.
    read_back: bool,
    /// The gateway's span, until the end queues it for export (its route, protocol, status
    /// and end are filled in then).
    span: Option<Box<SpanRecord>>,
}

// Made whole when a request starts and dropped when it ends: two cache lines at most.
const _: () = assert!(std::mem::size_of::<Exchange>() <= 128);

/// A long exchange in progress: an upgraded WebSocket or a stream response.
enum Connection {
    WebSocket(WebSocketConnection),
    Stream(StreamSession),
}

impl Exchange {
    pub fn new(context_id: u32) -> Exchange {
        Exchange {
            context_id,
            ..Exchange::default()
        }
    }

    /// On the stats listener, a GET of the exposition path: it waits for the worker's admin
    /// call.
    fn scrape<R: Request>(&mut self, worker: &Worker, host: &mut R) -> Next {
        let Ok(mut state) = worker.state.try_borrow_mut() else {
            return Next::Continue;
        };
        if state.scrapes.wait(self.context_id) {
            return Next::Pause;
        }
        // A reply that fails leaves the request to Envoy's timeout; nothing else to do.
        let _ = host.send_reply(503, crate::exposition::TEXT, "too many scrapes waiting\n");
        Next::Pause
    }

    /// The request headers: read them once, decide, write the trace context, and answer
    /// `/live` and `/ready` here.
    pub fn request_headers<R: Request>(&mut self, worker: &Worker, host: &mut R) -> Next {
        let now = host.now_nanos().ok();
        self.started_nanos = now;
        // A failed read leaves the route unknown: the end reads again and counts it.
        let Ok(headers) = host.request_headers() else {
            return Next::Continue;
        };
        // Everything the headers decide is taken from them before the host is called again:
        // the host may lend its own header map, which the trace write changes.
        let settings = &worker.settings;
        let tracing = &settings.tracing;
        // One walk of the headers: the names below, the user's header when active users come
        // from one (an empty name finds nothing), the trap header of a fault-injection build,
        // and the trace headers when the filter propagates (collected before it knows whether
        // the request is traced: most are).
        let user_header = user_header(settings);
        let propagates = tracing.enabled && tracing.propagation == Propagation::Filter;
        let mut incoming = TraceHeaders::default();
        #[cfg(feature = "fault-injection")]
        let mut trap = false;
        let [method, path, authority, upgrade, authorization, user_header] = headers
            .find_and_visit(
                [
                    ":method",
                    ":path",
                    ":authority",
                    "upgrade",
                    "authorization",
                    user_header,
                ],
                |name, value| {
                    #[cfg(feature = "fault-injection")]
                    if (settings.trap_header.as_ref()).is_some_and(|t| t.as_bytes() == name) {
                        trap = true;
                    }
                    if propagates {
                        incoming.observe(name, value, tracing.debug_credential.as_ref());
                    }
                },
            );
        let (method, path) = (method.unwrap_or_default(), path.unwrap_or_default());
        if let Some(exposition) = &settings.exposition {
            let wanted = (method == b"GET" || method == b"HEAD")
                && routes::strip_query(path) == exposition.path.as_bytes();
            drop(headers);
            // Anything else goes on to Envoy's own stats, uncounted.
            return if wanted {
                self.scrape(worker, host)
            } else {
                Next::Continue
            };
        }
        // Where the module's access logger counts the request, it observes the user too.
        let user = match settings.count_in_logger {
            None => user_of(settings, authorization, path, user_header),
            Some(_) => None,
        };
        let health = &settings.health;
        let method = Method::parse(method);
        self.method = Some(method);
        let (route, endpoint) = route_of(settings, method, path, authority);
        self.route = Some(route);
        self.upgrade_pending = upgrade.is_some_and(|u| u.eq_ignore_ascii_case(b"websocket"));
        let stream = route
            .endpoint
            .is_some_and(|e| settings.streams.endpoints.contains(&e))
            && method == Method::Get;
        if stream {
            self.stream_request = Some(streams::stream_id(path));
        }
        let traced = match endpoint {
            Endpoint::Other => tracing.websocket || !self.upgrade_pending,
            Endpoint::Live | Endpoint::Ready => tracing.health,
        };
        let mut trace = None;
        if traced && tracing.enabled {
            match tracing.propagation {
                Propagation::Filter => {
                    trace =
                        self.decide_trace(worker, &incoming, &headers, method, now.unwrap_or(0));
                }
                // The filter writes nothing; the access log wants what Envoy's tracer wrote.
                Propagation::Envoy => self.read_back = settings.access_log,
            }
        }
        // The headers are done with: from here on the host is called.
        drop(headers);
        #[cfg(feature = "fault-injection")]
        if trap {
            log::error!("veza-observability: trapping the VM, as fault_injection asks");
            host.trap();
        }
        if let Some(user) = user {
            observe_user(worker, host, now.unwrap_or(0), user);
        }
        if let Some(trace) = trace {
            Self::write_trace(worker, host, &trace);
        }
        let now = now.unwrap_or(0);
        let answer = match endpoint {
            Endpoint::Other => return Next::Continue,
            Endpoint::Live => Some(Health::live(now, worker.started_nanos)),
            Endpoint::Ready => match worker.state.try_borrow_mut() {
                Ok(mut state) => state.health.ready(health, now, self.context_id),
                Err(_) => return Next::Continue,
            },
        };
        match answer {
            Some(answer) => {
                // A reply the host refuses leaves the request to Envoy's own handling.
                let _ = host.send_reply(answer.status, health::CONTENT_TYPE, &answer.body);
            }
            // The worker answers when the round it starts on its next tick completes.
            None => self.waiting_for_ready = true,
        }
        Next::Pause
    }

    /// Whether [`Exchange::response_headers`] has anything to do for this request, as its
    /// request headers left it: a host may skip the call (and its locks) otherwise.
    pub fn wants_response_headers(&self, worker: &Worker) -> bool {
        (self.seen.is_some() && worker.settings.tracing.response_header.is_some())
            || self.upgrade_pending
            || self.stream_request.is_some()
    }

    /// The response headers: the trace id header, and for an upgrade or a stream request what
    /// the response makes of it.
    pub fn response_headers<R: Request>(&mut self, worker: &Worker, host: &mut R) {
        let settings = &worker.settings;
        if let (Some((trace_id, _)), Some(name)) = (self.seen, &settings.tracing.response_header) {
            // Best effort: a refused header changes nothing the filter counts.
            let _ = host.set_header(HeaderMap::Response, name, &trace_id.hex());
        }
        if !self.upgrade_pending && self.stream_request.is_none() {
            return;
        }
        let Ok(mut state) = worker.state.try_borrow_mut() else {
            return;
        };
        let State {
            registry,
            connections,
            streams,
            ..
        } = &mut *state;
        let status = registry
            .read(
                Operation::GetHeader,
                host.header(HeaderMap::Response, ":status"),
            )
            .map(|code| labels::status_code_from_header(&code));
        let now = host.now_nanos().unwrap_or(0);
        let route = self.route.unwrap_or(RouteMatch::NONE);
        if self.upgrade_pending {
            self.upgrade_pending = false;
            connections.upgrade(
                settings,
                registry,
                host,
                route.service,
                route.endpoint,
                Status::from_code(status),
            );
            if status == Some(101) {
                connections.opened(settings, registry, host, route.service);
                let chat = route
                    .endpoint
                    .is_some_and(|e| settings.websocket.chat_endpoints.contains(&e));
                self.connection = Some(Box::new(Connection::WebSocket(WebSocketConnection::new(
                    route.service,
                    chat,
                    now,
                ))));
            }
        } else if let Some(stream_id) = self.stream_request.take() {
            let content_range = match status {
                Some(206) => registry.read(
                    Operation::GetHeader,
                    host.header(HeaderMap::Response, "content-range"),
                ),
                _ => None,
            };
            let status = status.and_then(|s| u16::try_from(s).ok());
            let response = StreamResponse::classify(status, content_range.as_deref());
            self.connection = streams
                .opened(settings, registry, host, response, &stream_id, now)
                .map(|session| Box::new(Connection::Stream(session)));
        }
    }

    /// Whether body chunks in `direction` matter to this exchange (the host need not call
    /// [`Exchange::body`] otherwise).
    pub fn wants_body(&self, direction: Direction) -> bool {
        match self.connection.as_deref() {
            Some(Connection::WebSocket(_)) => true,
            Some(Connection::Stream(_)) => direction == Direction::Downstream,
            None => false,
        }
    }

    /// A body chunk of an upgraded WebSocket or a stream response.
    pub fn body<R: Request>(
        &mut self,
        worker: &Worker,
        host: &mut R,
        direction: Direction,
        chunk: &mut dyn ByteSource,
    ) {
        let Ok(mut state) = worker.state.try_borrow_mut() else {
            return;
        };
        let State {
            registry,
            connections,
            streams,
            ..
        } = &mut *state;
        match self.connection.as_deref_mut() {
            Some(Connection::WebSocket(connection)) => {
                connections.websocket_chunk(
                    &worker.settings,
                    registry,
                    host,
                    connection,
                    direction,
                    chunk,
                );
                if let Some(err) = chunk.failure() {
                    registry.host_error(Operation::GetBuffer, err, "a WebSocket body chunk");
                }
            }
            Some(Connection::Stream(session)) if direction == Direction::Downstream => {
                // A failed clock read only delays the bitrate to the next chunk.
                let now = host.now_nanos().unwrap_or(0);
                streams.forwarded(registry, host, session, chunk.size() as u64, now);
            }
            _ => {}
        }
    }

    /// The request as the module's access logger sees it, once, at Envoy's access-log stage:
    /// the counting half of a request, for a gateway whose `count_in_logger` names that logger.
    /// Its route and user come from the request headers as [`Exchange::request_headers`]
    /// takes them; it answers nothing, writes nothing and tracks no connection (the filter
    /// does that on the routes that enable it), and its duration is Envoy's.
    pub fn logged<R: Request>(&mut self, worker: &Worker, host: &mut R) {
        self.logged = true;
        let settings = &worker.settings;
        // A failed read leaves the route unknown: the end reads again and counts it.
        let (user, _trap) = match host.request_headers() {
            Ok(headers) => {
                let [method, path, authority, authorization, user_header] = headers.find([
                    ":method",
                    ":path",
                    ":authority",
                    "authorization",
                    user_header(settings),
                ]);
                #[cfg(feature = "fault-injection")]
                let trap = (settings.trap_header.as_deref())
                    .is_some_and(|name| headers.find([name]) != [None]);
                #[cfg(not(feature = "fault-injection"))]
                let trap = false;
                let method = Method::parse(method.unwrap_or_default());
                let path = path.unwrap_or_default();
                self.method = Some(method);
                self.route = Some(route_of(settings, method, path, authority).0);
                (user_of(settings, authorization, path, user_header), trap)
            }
            Err(_) => (None, false),
        };
        #[cfg(feature = "fault-injection")]
        if _trap {
            host.trap();
        }
        if let Some(user) = user {
            let now = host.now_nanos().unwrap_or(0);
            observe_user(worker, host, now, user);
        }
        self.end(worker, host);
    }

    /// The end of the request as Envoy logs it, once per request: also for requests answered
    /// before the filter ran (no route), for dead upstreams, for resets and, for an upgraded
    /// connection, when it closes.
    pub fn end<R: Request>(&mut self, worker: &Worker, host: &mut R) {
        let Ok(mut state) = worker.state.try_borrow_mut() else {
            return;
        };
        let state = &mut *state;
        if worker.settings.exposition.is_some() {
            // The stats listener counts nothing; a scrape that went away stops waiting.
            state.scrapes.forget(self.context_id);
            return;
        }
        if self.waiting_for_ready {
            state.health.forget(self.context_id);
        }
        if std::mem::take(&mut self.read_back) {
            self.read_trace_back(state, host);
        }
        let settings = &worker.settings;
        let registry = &mut state.registry;
        // A request this filter never saw start (answered before it ran): its method and route
        // from its headers, read now.
        let (method, route) = match (self.method, self.route) {
            (Some(method), Some(route)) => (method, route),
            _ => {
                let headers = registry.read(Operation::GetHeader, host.request_headers().map(Some));
                let [method, path] = (headers.as_ref())
                    .map_or([None, None], |headers| headers.find([":method", ":path"]));
                let method = Method::parse(method.unwrap_or_default());
                (
                    method,
                    settings.routes.resolve(method, path.unwrap_or_default()),
                )
            }
        };
        let status = registry.read(Operation::GetHeader, host.response_code());
        let now = host.now_nanos();
        let duration = match (self.started_nanos, now) {
            (Some(start), Ok(now)) => Some(now.saturating_sub(start)),
            _ => registry
                .read(
                    Operation::GetProperty,
                    host.property(Property::RequestDuration),
                )
                .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
                .map(u64::from_le_bytes),
        };
        // Counted once: by the filter, or by the module's access logger when it counts.
        if settings.count_in_logger.is_none() || self.logged {
            let route_name = match settings.endpoint_source {
                EndpointSource::RouteName => {
                    registry.read(Operation::GetProperty, host.property(Property::RouteName))
                }
                EndpointSource::RouteTable => None,
            };
            let request = RequestRecord {
                method,
                route_name: route_name.as_deref(),
                route,
                status,
                duration_nanos: duration,
            };
            // The HTTP exchange itself; an upgraded connection is counted, not timed, here.
            let counted = state.http.record(settings, registry, host, &request);
            if settings.access_log {
                let (endpoint, service) = state.http.labels(settings, counted);
                self.log_fields(registry, host, endpoint, service);
            }
            if let (Some(mut span), Some(exporter)) = (self.span.take(), state.exporter.as_mut()) {
                let protocol = registry.read(
                    Operation::GetProperty,
                    host.property(Property::RequestProtocol),
                );
                span.route = route
                    .endpoint
                    .and_then(|e| settings.routes.template_text(e))
                    .map(str::to_owned);
                span.protocol_version = protocol.as_deref().and_then(protocol_version);
                span.status = status.and_then(|s| u16::try_from(s).ok()).unwrap_or(0);
                if let Ok(now) = now {
                    span.end_unix_nanos = now;
                }
                exporter.push(registry, *span);
            }
            state
                .business
                .record(&settings.business, registry, method, route.endpoint, status);
        }
        let now = now.unwrap_or(0);
        if self.upgrade_pending {
            // No response headers came (the upstream failed first): the attempt's outcome.
            let route = self.route.unwrap_or(RouteMatch::NONE);
            state.connections.upgrade(
                settings,
                registry,
                host,
                self.service(),
                route.endpoint,
                Status::from_code(status),
            );
        }
        match self.connection.take().map(|connection| *connection) {
            Some(Connection::WebSocket(connection)) => {
                state
                    .connections
                    .websocket_closed(settings, registry, host, connection, now);
            }
            Some(Connection::Stream(session)) => {
                state.streams.closed(registry, host, session, now);
            }
            None => {}
        }
        if settings.flush_interval_ms == 0 {
            registry.flush(host);
        }
    }

    fn service(&self) -> Option<ServiceId> {
        self.route.and_then(|r| r.service)
    }
}

/// The request header active users come from, when they come from one ("" finds nothing).
fn user_header(settings: &Settings) -> &str {
    match &settings.active_users.source {
        UserSource::Header(name) if settings.active_users.enabled => name.as_str(),
        _ => "",
    }
}

/// The user a request counts for in active users, from its credentials.
fn user_of(
    settings: &Settings,
    authorization: Option<&[u8]>,
    path: &[u8],
    header: Option<&[u8]>,
) -> Option<u64> {
    if !settings.active_users.enabled {
        return None;
    }
    let credentials = Credentials {
        authorization,
        path,
        header,
    };
    identity::user_hash(&settings.active_users.source, &credentials)
}

/// The request's route, and whether it is the gateway's `/live` or `/ready`.
fn route_of(
    settings: &Settings,
    method: Method,
    path: &[u8],
    authority: Option<&[u8]>,
) -> (RouteMatch, Endpoint) {
    let health = &settings.health;
    let route = settings.routes.resolve(method, path);
    let endpoint = Health::classify(health, route, authority.unwrap_or_default());
    if endpoint == Endpoint::Other && health.route_endpoint(route) != Endpoint::Other {
        // `/live` for another authority goes on to the services: not the gateway's.
        return (RouteMatch::NONE, endpoint);
    }
    (route, endpoint)
}

fn observe_user<R: Request>(worker: &Worker, host: &mut R, now: u64, user: u64) {
    if let Ok(mut state) = worker.state.try_borrow_mut() {
        let State {
            registry,
            active_users,
            ..
        } = &mut *state;
        if let Some(active_users) = active_users {
            active_users.observe(registry, host, now, user);
        }
    }
}

/// `HTTP/1.1` to `1.1`, `HTTP/2` to `2`.
fn protocol_version(protocol: &[u8]) -> Option<String> {
    let version = protocol.strip_prefix(b"HTTP/")?;
    std::str::from_utf8(version).ok().map(str::to_owned)
}

mod trace_context;

#[cfg(test)]
mod tests;
