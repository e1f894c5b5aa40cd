//! A whole request's trace headers (any names, values, repeats) through the decision: never a
//! panic, and every header the gateway writes is one that its own parsers accept, carrying
//! the decision's ids.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veza_observability::config;
use veza_observability::trace::{self, jaeger, w3c, IdSource, TraceHeaders};

const NAMES: [&str; 12] = [
    "traceparent", "tracestate", "uber-trace-id", "jaeger-debug-id", "b3", "x-b3-traceid",
    "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags", "x-debug", "other",
];

struct Ids(u64);

impl IdSource for Ids {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0
    }
}

thread_local! {
    static SETTINGS: config::Settings = config::load(Some(
        br#"{"tracing": {"sampling_ratio": 0.5, "outgoing": ["traceparent", "uber-trace-id", "b3"],
             "debug_credential": {"header": "x-debug", "value": "0123456789abcdef"}}}"#,
    ))
    .expect("the configuration loads");
}

fuzz_target!(|data: &[u8]| SETTINGS.with(|settings| check(settings, data)));

fn check(settings: &config::Settings, data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else { return };
    let tracing = &settings.tracing;
    // Each line is a header: the first byte picks its name.
    let pairs: Vec<(&[u8], &[u8])> = rest
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let (&name, value) = line.split_first()?;
            Some((NAMES[usize::from(name) % NAMES.len()].as_bytes(), value))
        })
        .collect();
    let headers = TraceHeaders::collect(pairs.into_iter(), tracing);
    let decision = trace::decide(tracing, &headers, &mut Ids(u64::from(selector)));
    assert_ne!(decision.trace_id.0, 0);
    assert_ne!(decision.span_id.0, 0);
    trace::outgoing(tracing, &decision, |name, bytes| {
        match name {
            "traceparent" => {
                let parsed = w3c::parse_traceparent(bytes).expect("our traceparent parses");
                assert_eq!(parsed.trace_id, decision.trace_id);
                assert_eq!(parsed.parent, Some(decision.span_id));
                assert_eq!(parsed.sampled, Some(decision.sampled));
            }
            "uber-trace-id" => {
                let parsed = jaeger::parse(bytes).expect("our uber-trace-id parses");
                assert_eq!(parsed.trace_id, decision.trace_id);
                assert_eq!(parsed.sampled, Some(decision.sampled));
            }
            "tracestate" => assert!(w3c::combine_tracestate(&[bytes]).is_some()),
            _ => assert!(bytes.iter().all(|b| b.is_ascii_hexdigit()), "{name}: {bytes:?}"),
        }
    });
}
