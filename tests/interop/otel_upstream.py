"""A Veza service stand-in traced with the OpenTelemetry Python SDK, for the interop tests.

Usage: otel_upstream.py PORT. For every request it extracts the incoming context with each of
OpenTelemetry's own propagators (W3C tracecontext, Jaeger, B3 multi, B3 single), starts a
SERVER span under the context the W3C propagator found (ParentBased sampler: the parent's
decision is honoured, new roots are never sampled), and answers JSON describing what each
propagator saw and the span it started. The filter's code is not involved in any of it.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry import trace
from opentelemetry.propagators.b3 import B3MultiFormat, B3SingleFormat
from opentelemetry.propagators.jaeger import JaegerPropagator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

PROPAGATORS = {
    "tracecontext": TraceContextTextMapPropagator(),
    "jaeger": JaegerPropagator(),
    "b3multi": B3MultiFormat(),
    "b3single": B3SingleFormat(),
}

provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF))
tracer = provider.get_tracer("veza-interop")


def describe(span_context):
    if not span_context.is_valid:
        return None
    return {
        "trace_id": format(span_context.trace_id, "032x"),
        "span_id": format(span_context.span_id, "016x"),
        "sampled": span_context.trace_flags.sampled,
    }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        carrier = {name.lower(): value for name, value in self.headers.items()}
        seen = {}
        for name, propagator in PROPAGATORS.items():
            context = propagator.extract(carrier)
            seen[name] = describe(trace.get_current_span(context).get_span_context())
        parent = PROPAGATORS["tracecontext"].extract(carrier)
        with tracer.start_as_current_span("GET", context=parent, kind=trace.SpanKind.SERVER) as span:
            child = describe(span.get_span_context())
            # A span the sampler dropped is a NonRecordingSpan, which keeps no parent.
            parent_context = getattr(span, "parent", None)
            child["parent_span_id"] = (
                format(parent_context.span_id, "016x") if parent_context is not None else None
            )
            child["recording"] = span.is_recording()
        body = json.dumps(
            {
                "propagators": seen,
                "span": child,
                "headers": {k: v for k, v in carrier.items() if k in TRACE_HEADERS},
            }
        ).encode()
        self.send_response(int(self.headers.get("x-upstream-status", "200")))
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


TRACE_HEADERS = {
    "traceparent", "tracestate", "uber-trace-id", "jaeger-debug-id", "b3", "x-b3-traceid",
    "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags", "uberctx-user",
    "baggage", "x-request-id",
}

if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    print("ready", flush=True)
    server.serve_forever()
