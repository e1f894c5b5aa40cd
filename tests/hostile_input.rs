//! Hostile input through the real Envoy with the real `.wasm`: every request still gets an
//! answer, the labels are the ones docs/metrics.md's label rules promise, series stay bounded,
//! and the filter reports no failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;

use veza_test_harness::*;

/// The status line's code of a raw exchange.
fn status_of(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

fn raw(envoy: &Envoy, request: &[u8]) -> u16 {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", envoy.ports.listener)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    status_of(&String::from_utf8_lossy(&answer))
}

fn get(envoy: &Envoy, target: &str, extra: &str) -> u16 {
    raw(
        envoy,
        format!("GET {target} HTTP/1.1\r\nhost: veza\r\nconnection: close\r\n{extra}\r\n")
            .as_bytes(),
    )
}

type Series = BTreeMap<(String, String, String, String), f64>;

fn requests(envoy: &Envoy) -> Series {
    envoy
        .samples("http_requests_total")
        .into_iter()
        .map(|s| {
            (
                (
                    s.label("method").to_owned(),
                    s.label("endpoint").to_owned(),
                    s.label("status").to_owned(),
                    s.label("service").to_owned(),
                ),
                s.value,
            )
        })
        .collect()
}

fn key(
    method: &str,
    endpoint: &str,
    status: &str,
    service: &str,
) -> (String, String, String, String) {
    (
        method.into(),
        endpoint.into(),
        status.into(),
        service.into(),
    )
}

#[test]
fn hostile_requests_get_answers_and_the_documented_labels() {
    let (_standins, config, ports) = GatewayConfig::with_standins();
    let envoy = Envoy::start(&config, ports, 2);

    // A 60 KB header value: over Envoy's 60 KB header limit.
    let huge = format!("x-huge: {}\r\n", "a".repeat(60 * 1024));
    assert_eq!(get(&envoy, "/api/v1/tracks/1", &huge), 431);
    // 150 headers: over Envoy's 100.
    let flood: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    assert_eq!(get(&envoy, "/api/v1/tracks/1", &flood), 431);
    // Control bytes in a header value, invalid UTF-8 and control bytes in the path.
    assert_eq!(get(&envoy, "/api/v1/tracks/1", "x-bad: a\x01b\r\n"), 400);
    assert_eq!(
        raw(
            &envoy,
            b"GET /api/v1/tracks/\xff\xfe HTTP/1.1\r\nhost: veza\r\nconnection: close\r\n\r\n"
        ),
        400
    );
    assert_eq!(
        raw(
            &envoy,
            b"GET /api/v1/tracks/\x01 HTTP/1.1\r\nhost: veza\r\nconnection: close\r\n\r\n"
        ),
        400
    );
    // Encoded dot segments, doubled slashes, a trailing slash, another case.
    assert_eq!(get(&envoy, "/api/v1/tracks/%2e%2e/x", ""), 404);
    assert_eq!(get(&envoy, "//api//v1/tracks/1", ""), 404);
    assert_eq!(get(&envoy, "/api/v1/tracks/1/", ""), 404);
    assert_eq!(get(&envoy, "/API/V1/TRACKS/1", ""), 404);
    // Methods that are not HTTP's: one Envoy refuses, one it passes on (WebDAV's).
    assert_eq!(
        raw(
            &envoy,
            b"FROB /api/v1/tracks/1 HTTP/1.1\r\nhost: veza\r\nconnection: close\r\n\r\n"
        ),
        400
    );
    assert_eq!(
        raw(
            &envoy,
            b"PROPFIND /api/v1/tracks/1 HTTP/1.1\r\nhost: veza\r\nconnection: close\r\n\r\n"
        ),
        405
    );
    // Repeated trace headers: a fresh trace, the request served.
    assert_eq!(
        get(
            &envoy,
            "/api/v1/tracks/2",
            "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\
             traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\
             uber-trace-id: garbage\r\nb3: garbage\r\n"
        ),
        200
    );
    // A Range that lies: past the end of the file. The stream server answers with the whole
    // file, as it does for a Range it cannot read.
    assert_eq!(
        get(
            &envoy,
            "/stream/lie.mp3?expires=99999999999&sig=s",
            "range: bytes=999999999-\r\n"
        ),
        200
    );
    // And the gateway still serves.
    assert_eq!(get(&envoy, "/api/v1/tracks/3", ""), 200);

    let expected: Series = [
        // Refused by Envoy's codec before the request was read (too large, malformed, FROB):
        // nothing to match, so every label is the catch-all.
        (key("OTHER", "other", "431", "other"), 2.0),
        (key("OTHER", "other", "400", "other"), 4.0),
        // `%2e%2e` is a segment like any other, so `/api/v1/tracks/%2e%2e/x` has one too many.
        (key("GET", "other", "404", "backend-api"), 1.0),
        // `//api//v1/...` and `/API/V1/...`: no route in Envoy, no template, no prefix.
        (key("GET", "other", "404", "other"), 2.0),
        // One trailing slash is ignored by the matcher (the stand-in answers 404 for it).
        (key("GET", "/api/v1/tracks/:id", "404", "backend-api"), 1.0),
        // PROPFIND reaches the service: its method label is OTHER, its template the path's.
        (
            key("OTHER", "/api/v1/tracks/:id", "405", "backend-api"),
            1.0,
        ),
        (key("GET", "/api/v1/tracks/:id", "200", "backend-api"), 2.0),
        (key("GET", "/stream/:filename", "200", "stream"), 1.0),
    ]
    .into_iter()
    .collect();
    let got = poll("the counters to settle", Duration::from_secs(15), || {
        let got = requests(&envoy);
        (got.values().sum::<f64>() >= 14.0).then_some(got)
    });
    assert_eq!(got, expected);
    // The lying Range got the whole file: a 200, so a listening session.
    envoy.wait_for("streams_started_total", &[], 1.0);
    let errors: f64 = envoy
        .samples("veza_observability_errors_total")
        .iter()
        .map(|s| s.value)
        .sum();
    assert_eq!(errors, 0.0, "no hostcall failed");
}

#[test]
fn reserved_bits_bad_opcodes_and_a_10_mb_message() {
    let (_standins, config, ports) = GatewayConfig::with_standins();
    let envoy = Envoy::start(&config, ports, 1);
    let service = "backend-api";
    let errors = |envoy: &Envoy| {
        envoy
            .samples("websocket_protocol_errors_total")
            .iter()
            .filter(|s| s.label("service") == service)
            .map(|s| s.value)
            .sum::<f64>()
    };
    // RSV2 set (no extension uses it), then a reserved opcode (0x3): each connection stops
    // being counted once, and its bytes still flow. (RSV1 is permessage-deflate's.)
    for first_byte in [0xa1u8, 0x83] {
        let mut stream = raw_websocket(envoy.ports.listener, "/ws/chat?token=t0k3n");
        stream.write_all(&client_frame(first_byte, b"{}")).unwrap();
        stream.flush().unwrap();
        drop(stream);
    }
    poll("both protocol errors", Duration::from_secs(10), || {
        (errors(&envoy) == 2.0).then_some(())
    });

    // One 10 MB text message, in 1 MB fragments: one message, every byte counted, and the
    // gateway keeps serving.
    let mut stream = raw_websocket(envoy.ports.listener, "/ws/chat?token=t0k3n");
    let chunk = vec![b'a'; 1024 * 1024];
    let mut wire = 0u64;
    for i in 0..10 {
        let opcode = if i == 0 { 0x01 } else { 0x00 };
        let fin = if i == 9 { 0x80 } else { 0x00 };
        let frame = client_frame(fin | opcode, &chunk);
        wire += frame.len() as u64;
        stream.write_all(&frame).unwrap();
    }
    stream.flush().unwrap();
    let text_messages = |envoy: &Envoy| {
        envoy
            .samples("websocket_messages_total")
            .iter()
            .filter(|s| {
                s.label("service") == service
                    && s.label("direction") == "client_to_server"
                    && s.label("message_type") == "text"
            })
            .map(|s| s.value)
            .sum::<f64>()
    };
    poll("the 10 MB message", Duration::from_secs(20), || {
        (text_messages(&envoy) == 1.0).then_some(())
    });
    let bytes = envoy
        .samples("websocket_bytes_total")
        .iter()
        .filter(|s| s.label("service") == service && s.label("direction") == "client_to_server")
        .map(|s| s.value)
        .sum::<f64>();
    assert!(bytes >= wire as f64, "{bytes} of {wire} bytes");
    assert_eq!(errors(&envoy), 2.0);
    drop(stream);
    assert_eq!(
        http("GET", &envoy.url("/api/v1/tracks/1"), &[], "")
            .unwrap()
            .0,
        200
    );
}

#[test]
fn a_hundred_thousand_distinct_paths_make_three_series() {
    let (_standins, config, ports) = GatewayConfig::with_standins();
    let envoy = Envoy::start(&config, ports, 2);
    // A third each: a template with a new id, an unknown path under the backend's prefix,
    // a path no route has. Four clients on keep-alive connections.
    let total: u32 = 100_000;
    let clients = 4;
    std::thread::scope(|scope| {
        for client in 0..clients {
            let envoy = &envoy;
            scope.spawn(move || {
                for i in (client..total).step_by(clients as usize) {
                    let (path, expected) = match i % 3 {
                        0 => (format!("/api/v1/tracks/{i}?t={i}"), 200),
                        1 => (format!("/api/v1/unknown-{i}/x"), 404),
                        _ => (format!("/nowhere-{i}"), 404),
                    };
                    let (status, _) = http("GET", &envoy.url(&path), &[], "").unwrap();
                    assert_eq!(status, expected, "{path}");
                }
            });
        }
    });
    let third = f64::from(total / 3);
    let expected: Series = [
        (
            key("GET", "/api/v1/tracks/:id", "200", "backend-api"),
            third + 1.0,
        ),
        (key("GET", "other", "404", "backend-api"), third),
        (key("GET", "other", "404", "other"), third),
    ]
    .into_iter()
    .collect();
    let got = poll(
        "every request to be counted",
        Duration::from_secs(30),
        || {
            let got = requests(&envoy);
            (got.values().sum::<f64>() >= f64::from(total)).then_some(got)
        },
    );
    assert_eq!(got, expected);
    assert_eq!(
        envoy.samples("http_request_duration_seconds_count").len(),
        3
    );
}
