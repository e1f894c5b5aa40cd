//! `uber-trace-id`: never a panic; a value that parses re-emits in the full-width form with
//! parent 0 and flags 0, 1 or 3, which parses back to the same context.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veza_observability::trace::jaeger;

fuzz_target!(|data: &[u8]| {
    if let Some(incoming) = jaeger::parse(data) {
        let parent = incoming.parent.expect("a Jaeger context has a span");
        let sampled = incoming.sampled.expect("a Jaeger context has flags");
        let emitted = jaeger::uber_trace_id(incoming.trace_id, parent, sampled, incoming.debug);
        let text = emitted.as_str();
        assert!(text.ends_with(":0:0") || text.ends_with(":0:1") || text.ends_with(":0:3"));
        assert_eq!(jaeger::parse(emitted.as_bytes()), Some(incoming));
    }
});
