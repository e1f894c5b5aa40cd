//! WebSocket and audio-stream telemetry, end to end: the real Envoy with the real `.wasm`,
//! the stand-ins' chat server (axum and tungstenite) behind it, and a real WebSocket client
//! library (tungstenite) or raw bytes in front of it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use support::*;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::Message;

const UP: (&str, &str) = ("direction", "client_to_server");
const DOWN: (&str, &str) = ("direction", "server_to_client");

fn messages(envoy: &Envoy, service: &str, direction: (&str, &str), kind: &str) -> Option<f64> {
    envoy.value(
        "websocket_messages_total",
        &[("service", service), direction, ("message_type", kind)],
    )
}

/// Bytes of a frame on the wire with a short payload: masked from the client, not from the server.
fn wire(payload: usize, masked: bool) -> u64 {
    let extended = match payload {
        0..=125 => 0,
        126..=0xffff => 2,
        _ => 8,
    };
    (2 + extended + if masked { 4 } else { 0 } + payload) as u64
}

#[test]
fn a_scripted_chat_session_is_counted_exactly() {
    let (_standins, config, ports) = GatewayConfig::with_standins();
    let envoy = Envoy::start(&config, ports, 2);
    // The chat service's series exist before its first connection.
    let chat = [("service", "chat")];
    assert_eq!(
        envoy.value("websocket_connections_active", &chat),
        Some(0.0)
    );
    assert_eq!(
        envoy.value(
            "websocket_messages_total",
            &[
                ("service", "chat"),
                ("direction", "client_to_server"),
                ("message_type", "text")
            ]
        ),
        Some(0.0)
    );
    let (mut socket, response) =
        tungstenite::connect(envoy.url("/ws").replace("http", "ws")).unwrap();
    assert_eq!(response.status(), 101);
    let mut sent = 0u64;
    let mut received = 0u64;
    let mut read = |socket: &mut tungstenite::WebSocket<_>| {
        let message = socket
            .read()
            .unwrap_or_else(|e| panic!("read after {received} bytes: {e}"));
        received += wire(
            match &message {
                Message::Close(frame) => frame.as_ref().map_or(0, |f| 2 + f.reason.len()),
                other => other.len(),
            },
            false,
        );
        message
    };

    let connected = read(&mut socket);
    assert!(
        connected
            .to_text()
            .unwrap()
            .contains(r#""action":"connected""#),
        "{connected}"
    );
    let send_message = r#"{"type":"SendMessage","conversation_id":"c1","content":"hello"}"#;
    socket.send(Message::text(send_message)).unwrap();
    sent += wire(send_message.len(), true);
    assert!(read(&mut socket).to_text().unwrap().contains("NewMessage"));
    let join = r#"{"type":"JoinConversation","conversation_id":"c1"}"#;
    socket.send(Message::text(join)).unwrap();
    sent += wire(join.len(), true);
    assert!(read(&mut socket)
        .to_text()
        .unwrap()
        .contains("JoinConversation"));
    envoy.wait_for("chat_rooms_active", &[], 1.0);
    envoy.wait_for("websocket_connections_active", &[("service", "chat")], 1.0);

    socket.send(Message::binary(vec![1u8, 2, 3])).unwrap();
    sent += wire(3, true);
    assert_eq!(read(&mut socket), Message::binary(vec![1u8, 2, 3]));
    // One text message in two frames: counted once.
    let (first, rest) = (r#"{"type":"MarkAs"#, r#"Read","conversation_id":"c1"}"#);
    socket
        .send(Message::Frame(Frame::message(
            first.as_bytes().to_vec(),
            OpCode::Data(Data::Text),
            false,
        )))
        .unwrap();
    socket
        .send(Message::Frame(Frame::message(
            rest.as_bytes().to_vec(),
            OpCode::Data(Data::Continue),
            true,
        )))
        .unwrap();
    sent += wire(first.len(), true) + wire(rest.len(), true);
    assert!(read(&mut socket).to_text().unwrap().contains("MarkAsRead"));
    socket.send(Message::Ping(b"p".to_vec().into())).unwrap();
    sent += wire(1, true);
    assert_eq!(read(&mut socket), Message::Pong(b"p".to_vec().into()));
    socket.close(None).unwrap();
    sent += wire(0, true);
    assert!(matches!(read(&mut socket), Message::Close(_)));
    drop(socket);

    envoy.wait_websockets_closed("chat", 1.0);
    envoy.wait_for("chat_rooms_active", &[], 0.0);
    for (direction, kind, count) in [
        (UP, "text", 3.0),
        (UP, "binary", 1.0),
        (UP, "ping", 1.0),
        (UP, "pong", 0.0),
        (UP, "close", 1.0),
        (DOWN, "text", 4.0),
        (DOWN, "binary", 1.0),
        (DOWN, "ping", 0.0),
        (DOWN, "pong", 1.0),
        (DOWN, "close", 1.0),
    ] {
        assert_eq!(
            messages(&envoy, "chat", direction, kind),
            Some(count),
            "{direction:?} {kind}"
        );
    }
    assert_eq!(
        envoy.value("websocket_bytes_total", &[("service", "chat"), UP]),
        Some(sent as f64)
    );
    assert_eq!(
        envoy.value("websocket_bytes_total", &[("service", "chat"), DOWN]),
        Some(received as f64)
    );
    assert_eq!(
        envoy.value(
            "websocket_upgrades_total",
            &[("service", "chat"), ("endpoint", "/ws"), ("status", "101")]
        ),
        Some(1.0)
    );
    for (event, count) in [
        ("SendMessage", 1.0),
        ("JoinConversation", 1.0),
        ("MarkAsRead", 1.0),
        ("Ping", 0.0),
        ("other", 0.0),
    ] {
        assert_eq!(
            envoy.value("chat_events_total", &[("type", event)]),
            Some(count),
            "{event}"
        );
    }
    assert_eq!(envoy.value("chat_messages_sent_total", &[]), Some(1.0));
    assert_eq!(
        envoy.value("websocket_protocol_errors_total", &[("service", "chat")]),
        Some(0.0)
    );
    envoy.wait_for(
        "http_requests_total",
        &[
            ("method", "GET"),
            ("endpoint", "/ws"),
            ("status", "101"),
            ("service", "chat"),
        ],
        1.0,
    );
}

#[test]
fn frames_cut_anywhere_are_counted_and_garbage_stops_only_the_counting() {
    let (_standins, config, ports) = GatewayConfig::with_standins();
    let envoy = Envoy::start(&config, ports, 1);
    let mut stream = raw_websocket(envoy.ports.listener, "/ws/chat?token=t0k3n");
    let ping = br#"{"type":"Ping"}"#;
    // Three frames, one byte per TCP write.
    for _ in 0..3 {
        for byte in client_frame(0x81, ping) {
            stream.write_all(&[byte]).unwrap();
        }
    }
    // Five frames in one write.
    let burst: Vec<u8> = (0..5).flat_map(|_| client_frame(0x81, ping)).collect();
    stream.write_all(&burst).unwrap();
    // 70,000 bytes: a 64-bit length.
    stream
        .write_all(&client_frame(0x82, &vec![0x5a; 70_000]))
        .unwrap();
    let service = "backend-api";
    poll("the frames to be counted", Duration::from_secs(10), || {
        (messages(&envoy, service, UP, "binary") == Some(1.0)).then_some(())
    });
    assert_eq!(messages(&envoy, service, UP, "text"), Some(8.0));
    assert_eq!(
        envoy.value("chat_events_total", &[("type", "Ping")]),
        Some(8.0)
    );
    // RSV2 set: not a frame any extension defines. Counting stops; bytes still flow.
    stream.write_all(&client_frame(0xa1, b"x")).unwrap();
    stream.write_all(&client_frame(0x81, ping)).unwrap();
    envoy.wait_for(
        "websocket_protocol_errors_total",
        &[("service", service)],
        1.0,
    );
    assert_eq!(messages(&envoy, service, UP, "text"), Some(8.0));
    drop(stream);
    envoy.wait_for("websocket_connections_active", &[("service", service)], 0.0);
    assert_eq!(
        envoy.value("websocket_protocol_errors_total", &[("service", service)]),
        Some(1.0)
    );
}

#[test]
fn five_hundred_connections_a_third_reset_leave_no_gauge_behind() {
    let (_standins, config, ports) = GatewayConfig::with_standins();
    let envoy = Envoy::start(&config, ports, 2);
    let port = envoy.ports.listener;
    std::thread::scope(|scope| {
        for thread in 0..10 {
            scope.spawn(move || {
                for i in 0..50 {
                    let stream = raw_websocket(port, "/ws");
                    match (thread * 50 + i) % 3 {
                        // Reset: RST, no FIN, no close frame.
                        0 => {
                            let socket = socket2::Socket::from(stream);
                            socket.set_linger(Some(Duration::ZERO)).unwrap();
                            drop(socket);
                        }
                        // A clean close frame, then FIN.
                        1 => {
                            let mut stream = stream;
                            stream
                                .write_all(&client_frame(0x88, &[0x03, 0xe8]))
                                .unwrap();
                            drop(stream);
                        }
                        // FIN without a close frame.
                        _ => drop(stream),
                    }
                }
            });
        }
    });
    envoy.wait_websockets_closed("chat", 500.0);
    envoy.wait_for(
        "websocket_upgrades_total",
        &[("service", "chat"), ("endpoint", "/ws"), ("status", "101")],
        500.0,
    );
}

#[test]
fn refused_upgrades_are_counted_with_their_status() {
    let (_standins, config, ports) = GatewayConfig::with_standins();
    let envoy = Envoy::start(&config, ports, 1);
    let answer = raw_exchange(
        envoy.ports.listener,
        "GET /ws/chat?token=invalid HTTP/1.1\r\nhost: veza\r\nconnection: upgrade\r\nupgrade: websocket\r\n\
         sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    envoy.wait_for(
        "websocket_upgrades_total",
        &[
            ("service", "backend-api"),
            ("endpoint", "/ws/chat"),
            ("status", "401"),
        ],
        1.0,
    );
    // The API serves a chat endpoint, so its series exist from the start; a refusal opens
    // nothing.
    assert_eq!(
        envoy.value(
            "websocket_connections_active",
            &[("service", "backend-api")]
        ),
        Some(0.0)
    );
    assert!(
        !envoy.prometheus_text().contains("token"),
        "the token never reaches a label"
    );
    assert!(
        !envoy.flushed_log_text().contains("token=invalid"),
        "nor the log"
    );
}

fn stream_url(envoy: &Envoy, file: &str) -> String {
    envoy.url(&format!("/stream/{file}?expires=99999999999&sig=s3cr3t"))
}

#[test]
fn stream_sessions_bytes_and_durations() {
    let (_standins, config, ports) = GatewayConfig::with_standins();
    let envoy = Envoy::start(&config, ports, 2);
    let (status, body) = http_bytes("GET", &stream_url(&envoy, "full.mp3"), &[]);
    assert_eq!(
        (status, body.len()),
        (200, veza_standins::AUDIO_FILE_LEN as usize)
    );
    for (range, expected) in [("bytes=0-99", 100), ("bytes=100-199", 100)] {
        let (status, body) = http_bytes(
            "GET",
            &stream_url(&envoy, "session.mp3"),
            &[("range", range)],
        );
        assert_eq!((status, body.len()), (206, expected));
    }
    assert_eq!(
        http_bytes("GET", &envoy.url("/stream/nosig.mp3"), &[]).0,
        400
    );
    envoy.wait_for("stream_duration_seconds_count", &[], 3.0);
    assert_eq!(
        envoy.value("streams_started_total", &[]),
        Some(2.0),
        "the full GET and the Range from 0"
    );
    assert_eq!(
        envoy.value("stream_bytes_total", &[]),
        Some((veza_standins::AUDIO_FILE_LEN + 200) as f64)
    );
    assert_eq!(envoy.value("stream_sessions_active", &[]), Some(0.0));
    let text = envoy.prometheus_text();
    assert!(
        !text.contains("s3cr3t") && !text.contains("expires"),
        "signatures never reach a label"
    );
    assert!(!envoy.flushed_log_text().contains("s3cr3t"), "nor the log");
}

#[test]
fn a_slow_streams_bitrate_is_reported_while_it_plays_and_withdrawn_after() {
    let (_standins, config, ports) = GatewayConfig::with_standins();
    let envoy = Envoy::start(&config, ports, 1);
    let rate = 800_000.0;
    let url = stream_url(&envoy, "slow.mp3");
    std::thread::scope(|scope| {
        let listener = scope.spawn(|| {
            // 300,000 bytes at 100,000 bytes/s: three seconds of audio.
            http_bytes(
                "GET",
                &url,
                &[
                    ("range", "bytes=0-299999"),
                    ("x-standin-rate-bps", "800000"),
                ],
            )
        });
        let reported = poll(
            "the bitrate to be reported",
            Duration::from_secs(10),
            || {
                envoy
                    .value("stream_bitrate_bps", &[("stream_id", "slow.mp3")])
                    .filter(|v| *v > 0.0)
            },
        );
        assert!(
            (reported - rate).abs() / rate <= 0.10,
            "reported {reported} bps for {rate}"
        );
        assert_eq!(envoy.value("stream_sessions_active", &[]), Some(1.0));
        let (status, body) = listener.join().unwrap();
        assert_eq!((status, body.len()), (206, 300_000));
    });
    envoy.wait_for("stream_sessions_active", &[], 0.0);
    envoy.wait_for("stream_bitrate_bps", &[("stream_id", "slow.mp3")], 0.0);
}

#[test]
fn an_idle_timeout_closes_the_connection_and_the_gauge_follows() {
    let (_standins, config, ports) = GatewayConfig::with_standins();
    let config = config.replace_once(
        "route: { cluster: veza_chat, timeout: 0s, idle_timeout: 300s }",
        "route: { cluster: veza_chat, timeout: 0s, idle_timeout: 1s }",
    );
    let envoy = Envoy::start(&config, ports, 1);
    let mut stream = raw_websocket(envoy.ports.listener, "/ws");
    envoy.wait_for("websocket_connections_active", &[("service", "chat")], 1.0);
    // Say nothing: Envoy ends the stream after a second of silence.
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    envoy.wait_websockets_closed("chat", 1.0);
    assert_eq!(
        envoy.value(
            "websocket_connection_duration_seconds_bucket",
            &[("service", "chat"), ("le", "0.5")]
        ),
        Some(0.0),
        "the connection lived about a second"
    );
}
