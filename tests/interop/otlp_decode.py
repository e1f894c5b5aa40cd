"""Decodes OTLP export bodies with OpenTelemetry's own proto definitions.

Reads a JSON list of request bodies on stdin; parses each into an ExportTraceServiceRequest
with protobuf's strict JSON parser (unknown fields, wrong types and bad enums fail), after the
one documented difference of OTLP JSON: ids are hex, not base64. With --protobuf, each body is
the hex of a binary protobuf export (Envoy's OpenTelemetry tracer). Prints the spans as JSON.
"""

import base64
import json
import sys

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def hex_ids_to_base64(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ID_FIELDS:
                if len(value) not in (16, 32) or value != value.lower():
                    raise ValueError(f"{key} {value!r} is not lowercase hex of 8 or 16 bytes")
                node[key] = base64.b64encode(bytes.fromhex(value)).decode()
            else:
                hex_ids_to_base64(value)
    elif isinstance(node, list):
        for item in node:
            hex_ids_to_base64(item)


def value_of(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind)


spans = []
for body in json.load(sys.stdin):
    if "--protobuf" in sys.argv:
        request = ExportTraceServiceRequest.FromString(bytes.fromhex(body))
    else:
        document = json.loads(body)
        hex_ids_to_base64(document)
        request = json_format.ParseDict(
            document, ExportTraceServiceRequest(), ignore_unknown_fields=False
        )
    for resource_spans in request.resource_spans:
        resource = {a.key: value_of(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    {
                        "service": resource.get("service.name"),
                        "scope": scope_spans.scope.name,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "trace_state": span.trace_state,
                        "name": span.name,
                        "kind": span.kind,
                        "start": span.start_time_unix_nano,
                        "end": span.end_time_unix_nano,
                        "attributes": {a.key: value_of(a.value) for a in span.attributes},
                        "status": span.status.code,
                    }
                )
json.dump(spans, sys.stdout)
