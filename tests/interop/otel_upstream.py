"""A Veza service stand-in traced with the OpenTelemetry Python SDK and with Jaeger's own
Python client, for the interop tests.

Usage: otel_upstream.py PORT. For every request it extracts the incoming context with each of
OpenTelemetry's propagators (W3C tracecontext, Jaeger, B3 multi, B3 single) and with the
Jaeger client's codec; starts a SERVER span under the context the W3C propagator found
(ParentBased sampler: the parent's decision is honoured, new roots are never sampled) and a
Jaeger client span under what the Jaeger codec found (its sampler likewise never samples a
root); and answers JSON describing what each saw and the spans they started. The filter's
code is not involved in any of it.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from jaeger_client import Tracer as JaegerTracer
from jaeger_client.codecs import TextCodec
from jaeger_client.reporter import InMemoryReporter
from jaeger_client.sampler import ConstSampler
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

jaeger_tracer = JaegerTracer(
    service_name="veza-interop", reporter=InMemoryReporter(), sampler=ConstSampler(False)
)
jaeger_codec = TextCodec(
    url_encoding=True, trace_id_header="uber-trace-id", baggage_header_prefix="uberctx-"
)


def jaeger_client_view(carrier):
    """What Jaeger's client makes of the request: its context and the span it starts."""
    try:
        context = jaeger_codec.extract(carrier)
    except Exception as error:  # the client throws on malformed values
        return {"error": str(error)}
    if context is None:
        return None
    span = jaeger_tracer.start_span("GET", child_of=context)
    return {
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
        "sampled": bool(context.flags & 1),
        "baggage": context.baggage,
        "child": {
            "trace_id": format(span.context.trace_id, "032x"),
            "parent_span_id": format(span.context.parent_id, "016x"),
            "sampled": span.is_sampled(),
        },
    }


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
                "jaeger_client": jaeger_client_view(carrier),
                "span": child,
                "headers": {k: v for k, v in carrier.items() if k in TRACE_HEADERS},
            }
        ).encode()
        self.send_response(int(self.headers.get("x-upstream-status", "200")))
        self.send_header("content-type", "application/json")
        # Also in a header: Envoy drops the body of a refused WebSocket upgrade.
        self.send_header("x-seen-traceparent", carrier.get("traceparent", "none"))
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
