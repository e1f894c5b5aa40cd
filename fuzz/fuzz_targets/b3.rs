//! B3 single and multi headers: never a panic; a single header that parses re-emits as one
//! that parses back to the same trace and span.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veza_observability::trace::b3::{self, Multi, B3};

fuzz_target!(|data: &[u8]| {
    if let Some(B3::Context(incoming)) = b3::parse_single(data) {
        let span = incoming.parent.expect("a B3 context has a span");
        let mut emitted = Vec::new();
        b3::single(incoming.trace_id, span, None, incoming.sampled.unwrap_or(false), incoming.debug, |_, value| {
            emitted = value.to_vec();
        });
        match b3::parse_single(&emitted) {
            Some(B3::Context(again)) => {
                assert_eq!((again.trace_id, again.parent), (incoming.trace_id, incoming.parent));
            }
            other => panic!("{:?} parsed as {other:?}", String::from_utf8_lossy(&emitted)),
        }
    }
    let mut fields = data.split(|&b| b == b'\n');
    let multi = Multi {
        trace_id: fields.next(),
        span_id: fields.next(),
        sampled: fields.next(),
        flags: fields.next(),
    };
    let _ = b3::parse_multi(&multi);
});
