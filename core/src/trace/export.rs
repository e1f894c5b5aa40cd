//! The gateway's spans to Jaeger (or any OTLP/HTTP collector) as OTLP JSON.
//!
//! Finished sampled requests queue their span in the worker's VM; the root context sends a
//! batch on its tick when the batch is full or the flush interval has passed, one call at a
//! time, never from the request path. The queue is bounded: a span that finds it full is
//! dropped and counted. A batch answered 429, 502, 503 or 504 is sent again (up to
//! `max_retries`, backing off); any other failure drops it, counted by reason.

use std::collections::VecDeque;
use std::fmt::Write as _;

use crate::config::tracing::CollectorSettings;
use crate::host::Host;
use crate::metrics::names;
use crate::metrics::registry::{CounterHandle, Registry};

use super::{SpanId, TraceId};

/// One finished request as a SERVER span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanRecord {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent: Option<SpanId>,
    pub tracestate: Option<String>,
    pub method: &'static str,
    /// The route template, when one matched.
    pub route: Option<String>,
    /// The path without its query string (which may carry tokens).
    pub path: String,
    pub scheme: String,
    pub server_address: String,
    pub user_agent: Option<String>,
    /// `1.1`, `2`, `3`.
    pub protocol_version: Option<String>,
    /// 0 when no response was sent.
    pub status: u16,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
}

/// Why spans were dropped (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The VM's queue was full.
    QueueFull,
    /// The collector answered a status that is not retried (400, 500, ...).
    Rejected,
    /// No answer: the collector cluster is unknown, unreachable, reset or timed out.
    ExportFailed,
    /// Still 429/502/503/504 after every retry.
    RetriesExhausted,
    /// Envoy's tracer replaced the context the filter wrote: the service continued Envoy's
    /// span, and the filter's would be an orphan (set `tracing.propagation` to `"envoy"`).
    EnvoyTracer,
}

impl DropReason {
    pub const ALL: [DropReason; 5] = [
        DropReason::QueueFull,
        DropReason::Rejected,
        DropReason::ExportFailed,
        DropReason::RetriesExhausted,
        DropReason::EnvoyTracer,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::Rejected => "rejected",
            DropReason::ExportFailed => "export_failed",
            DropReason::RetriesExhausted => "retries_exhausted",
            DropReason::EnvoyTracer => "envoy_tracer",
        }
    }
}

struct Batch {
    spans: Vec<SpanRecord>,
    /// Sends so far.
    attempts: u32,
}

struct InFlight {
    token: u32,
    batch: Batch,
}

pub struct Exporter {
    settings: CollectorSettings,
    queue: VecDeque<SpanRecord>,
    in_flight: Option<InFlight>,
    /// A batch waiting to be sent again, and not before when.
    retry: Option<(Batch, u64)>,
    last_send_nanos: u64,
    exported: Option<CounterHandle>,
    failures: Option<CounterHandle>,
    dropped: [Option<CounterHandle>; DropReason::ALL.len()],
}

/// The answer to an export call: its status, or `None` when the call failed without one.
pub type ExportResult = Option<u16>;

impl Exporter {
    /// `now`: a batch that is not full goes one flush interval after this, or after the
    /// previous send.
    pub fn new(
        settings: CollectorSettings,
        registry: &mut Registry,
        host: &mut dyn Host,
        now: u64,
    ) -> Exporter {
        let dropped = DropReason::ALL.map(|reason| {
            registry.define_counter(
                host,
                names::TRACE_SPANS_DROPPED_TOTAL,
                &[(names::LABEL_REASON, reason.label())],
            )
        });
        Exporter {
            settings,
            queue: VecDeque::new(),
            in_flight: None,
            retry: None,
            last_send_nanos: now,
            exported: registry.define_counter(host, names::TRACE_SPANS_EXPORTED_TOTAL, &[]),
            failures: registry.define_counter(host, names::TRACE_EXPORT_FAILURES_TOTAL, &[]),
            dropped,
        }
    }

    /// Spans held in this VM (queued, in flight, waiting to be retried).
    pub fn held(&self) -> usize {
        self.queue.len()
            + self.in_flight.as_ref().map_or(0, |f| f.batch.spans.len())
            + self.retry.as_ref().map_or(0, |(b, _)| b.spans.len())
    }

    /// The collector this exporter sends to.
    pub fn settings(&self) -> &CollectorSettings {
        &self.settings
    }

    /// A span not exported, for `reason`.
    pub fn discard(&mut self, registry: &mut Registry, reason: DropReason) {
        self.drop_spans(registry, reason, 1);
    }

    pub fn push(&mut self, registry: &mut Registry, span: SpanRecord) {
        if self.queue.len() >= self.settings.max_queue {
            self.drop_spans(registry, DropReason::QueueFull, 1);
            return;
        }
        self.queue.push_back(span);
    }

    /// On the root's tick: sends the next batch when one is due. `send` dispatches the body
    /// to this exporter's collector and returns the call's token, or `None` when the call
    /// could not be made.
    pub fn tick(
        &mut self,
        registry: &mut Registry,
        now: u64,
        send: &mut dyn FnMut(&CollectorSettings, &[u8]) -> Option<u32>,
    ) {
        if self.in_flight.is_some() {
            return;
        }
        let batch = match self.retry.take() {
            Some((batch, not_before)) if now >= not_before => batch,
            Some(waiting) => {
                self.retry = Some(waiting);
                return;
            }
            None => {
                let full = self.queue.len() >= self.settings.batch_size;
                let due = now.saturating_sub(self.last_send_nanos)
                    >= u64::from(self.settings.flush_interval_ms) * 1_000_000;
                if self.queue.is_empty() || !(full || due) {
                    return;
                }
                let count = self.queue.len().min(self.settings.batch_size);
                Batch {
                    spans: self.queue.drain(..count).collect(),
                    attempts: 0,
                }
            }
        };
        self.last_send_nanos = now;
        let body = encode(&self.settings.service_name, &batch.spans);
        match send(&self.settings, body.as_bytes()) {
            Some(token) => {
                self.in_flight = Some(InFlight {
                    token,
                    batch: Batch {
                        attempts: batch.attempts + 1,
                        ..batch
                    },
                })
            }
            None => {
                self.fail(registry);
                self.drop_spans(registry, DropReason::ExportFailed, batch.spans.len());
            }
        }
    }

    /// Whether `token` is this exporter's call.
    pub fn owns(&self, token: u32) -> bool {
        self.in_flight.as_ref().is_some_and(|f| f.token == token)
    }

    pub fn responded(&mut self, registry: &mut Registry, now: u64, result: ExportResult) {
        let Some(InFlight { batch, .. }) = self.in_flight.take() else {
            return;
        };
        let count = batch.spans.len();
        match result {
            Some(200..=299) => {
                if let Some(exported) = self.exported {
                    registry.add(exported, count as u64);
                }
            }
            Some(429 | 502 | 503 | 504) => {
                self.fail(registry);
                if batch.attempts > self.settings.max_retries {
                    self.drop_spans(registry, DropReason::RetriesExhausted, count);
                } else {
                    // The backoff, then twice it, four times, ...
                    let backoff = u64::from(self.settings.retry_backoff_ms)
                        * 1_000_000
                        * (1u64 << (batch.attempts - 1).min(6));
                    self.retry = Some((batch, now.saturating_add(backoff)));
                }
            }
            Some(_) => {
                self.fail(registry);
                self.drop_spans(registry, DropReason::Rejected, count);
            }
            None => {
                self.fail(registry);
                self.drop_spans(registry, DropReason::ExportFailed, count);
            }
        }
    }

    fn fail(&mut self, registry: &mut Registry) {
        if let Some(failures) = self.failures {
            registry.add(failures, 1);
        }
    }

    fn drop_spans(&mut self, registry: &mut Registry, reason: DropReason, count: usize) {
        let index = DropReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        if let Some(Some(counter)) = self.dropped.get(index) {
            registry.add(*counter, count as u64);
        }
    }
}

/// An OTLP `ExportTraceServiceRequest` in OTLP's JSON encoding: ids as lowercase hex,
/// enums as integers, 64-bit integers as decimal strings, lowerCamelCase keys.
pub fn encode(service_name: &str, spans: &[SpanRecord]) -> String {
    let mut json = String::with_capacity(256 + spans.len() * 640);
    json.push_str(r#"{"resourceSpans":[{"resource":{"attributes":["#);
    string_attribute(&mut json, "service.name", service_name);
    json.push_str(r#"]},"scopeSpans":[{"scope":{"name":"veza-observability","version":""#);
    json.push_str(env!("CARGO_PKG_VERSION"));
    json.push_str(r#""},"spans":["#);
    for (index, span) in spans.iter().enumerate() {
        if index > 0 {
            json.push(',');
        }
        encode_span(&mut json, span);
    }
    json.push_str("]}]}]}");
    json
}

fn encode_span(json: &mut String, span: &SpanRecord) {
    json.push_str(r#"{"traceId":""#);
    let _ = write!(json, "{}", span.trace_id);
    json.push_str(r#"","spanId":""#);
    let _ = write!(json, "{}", span.span_id);
    json.push('"');
    if let Some(parent) = span.parent {
        json.push_str(r#","parentSpanId":""#);
        let _ = write!(json, "{parent}");
        json.push('"');
    }
    if let Some(state) = &span.tracestate {
        json.push_str(r#","traceState":"#);
        push_string(json, state);
    }
    json.push_str(r#","name":"#);
    let name = match &span.route {
        Some(route) => format!("{} {route}", span.method),
        None => span.method.to_owned(),
    };
    push_string(json, &name);
    // SPAN_KIND_SERVER.
    json.push_str(r#","kind":2,"startTimeUnixNano":""#);
    json.push_str(&span.start_unix_nanos.to_string());
    json.push_str(r#"","endTimeUnixNano":""#);
    json.push_str(&span.end_unix_nanos.to_string());
    json.push_str(r#"","attributes":["#);
    string_attribute(json, "http.request.method", span.method);
    json.push(',');
    string_attribute(json, "url.path", &span.path);
    json.push(',');
    string_attribute(json, "url.scheme", &span.scheme);
    if let Some(route) = &span.route {
        json.push(',');
        string_attribute(json, "http.route", route);
    }
    if span.status != 0 {
        json.push_str(r#",{"key":"http.response.status_code","value":{"intValue":""#);
        json.push_str(&span.status.to_string());
        json.push_str(r#""}}"#);
    }
    json.push(',');
    string_attribute(json, "server.address", &span.server_address);
    if let Some(agent) = &span.user_agent {
        json.push(',');
        string_attribute(json, "user_agent.original", agent);
    }
    if let Some(version) = &span.protocol_version {
        json.push(',');
        string_attribute(json, "network.protocol.version", version);
    }
    json.push(']');
    // STATUS_CODE_ERROR for 5xx (server spans), and for no response at all; else unset.
    if span.status >= 500 || span.status == 0 {
        json.push_str(r#","status":{"code":2}"#);
    } else {
        json.push_str(r#","status":{}"#);
    }
    json.push('}');
}

fn string_attribute(json: &mut String, key: &str, value: &str) {
    json.push_str(r#"{"key":"#);
    push_string(json, key);
    json.push_str(r#","value":{"stringValue":"#);
    push_string(json, value);
    json.push_str("}}");
}

fn push_string(json: &mut String, value: &str) {
    // serde_json escapes exactly as JSON requires; a str always serializes.
    json.push_str(&serde_json::to_string(value).unwrap_or_else(|_| "\"\"".to_owned()));
}

#[cfg(test)]
mod tests;
