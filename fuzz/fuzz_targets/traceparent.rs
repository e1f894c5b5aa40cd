//! `traceparent` and `tracestate`: never a panic; a value that parses re-emits as the same
//! context, in the one form every parser accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veza_observability::trace::w3c;

fuzz_target!(|data: &[u8]| {
    if let Some(incoming) = w3c::parse_traceparent(data) {
        let parent = incoming.parent.expect("a traceparent has a parent");
        let sampled = incoming.sampled.expect("a traceparent has a decision");
        let emitted = w3c::traceparent(incoming.trace_id, parent, sampled);
        assert_eq!(emitted.as_bytes().len(), 55);
        assert!(emitted.as_bytes().iter().all(|&b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || b == b'-'));
        assert_eq!(w3c::parse_traceparent(emitted.as_bytes()), Some(incoming));
    }
    let parts: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    if let Some(state) = w3c::combine_tracestate(&parts) {
        assert!(state.bytes().all(|b| (0x20..0x7f).contains(&b)));
        assert!(state.len() <= 8192);
    }
});
