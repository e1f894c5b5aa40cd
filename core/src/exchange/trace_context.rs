//! One request's trace context: the filter's propagation, the read-back of what the service
//! received, and the access log's fields. Part of [`Exchange`], apart for its size.

use super::*;

/// The trace context to write on a request: decided from its headers, written after them.
pub(super) struct TraceWrite {
    decision: trace::Decision,
    /// The owned trace headers the request carried (bits of [`trace::OWNED_HEADERS`]).
    present: u16,
}

impl Exchange {
    /// Decides the gateway's trace context from the trace headers the request carried
    /// (`incoming`, collected from `headers`), and begins the span to export when it is
    /// sampled and a collector is configured.
    pub(super) fn decide_trace(
        &mut self,
        worker: &Worker,
        incoming: &TraceHeaders,
        headers: &impl Headers,
        method: Method,
        now: u64,
    ) -> Option<TraceWrite> {
        let settings = &worker.settings.tracing;
        let decision = {
            let mut state = worker.state.try_borrow_mut().ok()?;
            trace::decide(settings, incoming, &mut state.trace_ids)
        };
        self.seen = Some((decision.trace_id, decision.span_id));
        // Only where it changes something: a span to export, a log line to write. Without
        // Envoy's tracer the read finds what the filter wrote.
        self.read_back =
            (decision.sampled && settings.collector.is_some()) || worker.settings.access_log;
        if decision.sampled && settings.collector.is_some() {
            // Envoy keeps an HTTP/1 `Host` as `:authority`.
            let [path, scheme, authority, user_agent] =
                headers.find([":path", ":scheme", ":authority", "user-agent"]);
            let text = |bytes: Option<&[u8]>, max: usize| {
                bytes.map(|b| String::from_utf8_lossy(b.get(..max).unwrap_or(b)).into_owned())
            };
            self.span = Some(Box::new(SpanRecord {
                trace_id: decision.trace_id,
                span_id: decision.span_id,
                parent: decision.parent,
                tracestate: decision.tracestate.clone(),
                method: method.as_str(),
                route: None,
                path: text(path.map(routes::strip_query), MAX_SPAN_TEXT).unwrap_or_default(),
                scheme: text(scheme, 16).unwrap_or_else(|| "http".to_owned()),
                server_address: text(authority.map(health::strip_port), MAX_SPAN_TEXT)
                    .unwrap_or_default(),
                user_agent: text(user_agent, MAX_SPAN_TEXT),
                protocol_version: None,
                status: 0,
                start_unix_nanos: now,
                end_unix_nanos: now,
            }));
        }
        Some(TraceWrite {
            decision,
            present: incoming.present,
        })
    }

    /// Replaces the request's trace headers with the gateway's context.
    pub(super) fn write_trace<R: Request>(worker: &Worker, host: &mut R, trace: &TraceWrite) {
        let settings = &worker.settings.tracing;
        let Ok(mut state) = worker.state.try_borrow_mut() else {
            return;
        };
        let registry = &mut state.registry;
        let mut written = 0;
        trace::outgoing(settings, &trace.decision, |name, value| {
            let bit = trace::owned_bit(name);
            written |= bit;
            // Most requests carry no trace context: adding is then enough, and cheaper.
            let result = if trace::carried(trace.present, bit) {
                host.set_header(HeaderMap::Request, name, value)
            } else {
                host.add_header(HeaderMap::Request, name, value)
            };
            if let Err(err) = result {
                registry.host_error(Operation::SetHeader, err, name);
            }
        });
        for name in trace::stale(trace.present, written) {
            if let Err(err) = host.remove_header(HeaderMap::Request, name) {
                registry.host_error(Operation::SetHeader, err, name);
            }
        }
        // A header was written, or one the request carried was removed as stale.
        if settings.clear_route_cache && (written | trace.present) != 0 {
            host.clear_route_cache();
        }
    }

    /// The context the service received, read when Envoy logs the request: only then does a
    /// filter see the request headers as the router sent them, with what Envoy's tracer wrote.
    /// Where that replaced the filter's context, the filter's span would be an orphan (the
    /// service's parent is Envoy's span): it is counted as dropped, not exported.
    pub(super) fn read_trace_back<R: Request>(&mut self, state: &mut State, host: &mut R) {
        let received = match host.request_headers() {
            Ok(headers) => trace::received(headers.pairs()),
            Err(err) => {
                state
                    .registry
                    .host_error(Operation::GetHeader, err, "the request headers");
                return;
            }
        };
        let Some(received) = received else {
            return;
        };
        if self.seen.is_some_and(|written| written != received) {
            let State {
                registry, exporter, ..
            } = state;
            if let (Some(_), Some(exporter)) = (self.span.take(), exporter.as_mut()) {
                exporter.discard(registry, DropReason::EnvoyTracer);
            }
            if !state.tracer_conflict_logged {
                state.tracer_conflict_logged = true;
                log::warn!(
                    "veza-observability: Envoy's tracer replaced the trace context this filter wrote; set tracing.propagation to \"envoy\" (docs/tracing.md)"
                );
            }
        }
        self.seen = Some(received);
    }

    /// The access log's fields: the `endpoint` and `service` labels of the series the request
    /// was counted in, and the context the service received. Set while Envoy logs the
    /// request, before its access logs format.
    pub(super) fn log_fields<R: Request>(
        &self,
        registry: &mut Registry,
        host: &mut R,
        endpoint: &str,
        service: &str,
    ) {
        let mut set = |key: &str, value: &[u8]| {
            if let Err(err) = host.set_log_field(key, value) {
                registry.host_error(Operation::SetProperty, err, key);
            }
        };
        set(access_log::SERVICE, service.as_bytes());
        set(access_log::ENDPOINT, endpoint.as_bytes());
        if let Some((trace_id, span_id)) = self.seen {
            set(access_log::TRACE_ID, &trace_id.hex());
            set(access_log::SPAN_ID, &span_id.hex());
        }
    }
}
