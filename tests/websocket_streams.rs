//! WebSocket and audio-stream telemetry, end to end: the real Envoy with the real `.wasm`,
//! the stand-ins' chat server (axum and tungstenite) behind it, and a real WebSocket client
//! library (tungstenite) or raw bytes in front of it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{Read, Write};
use std::time::Duration;

use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::Message;
use veza_test_harness::*;

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
    // The chat server answers a Close with none of its own: it drops the connection.
    let after_close = socket.read();
    assert!(after_close.is_err(), "{after_close:?}");
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
        (DOWN, "close", 0.0),
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
fn stream_sessions_are_decided_by_the_response_and_bytes_counted_as_on_the_wire() {
    let (_standins, config, ports) = GatewayConfig::with_standins();
    let envoy = Envoy::start(&config, ports, 2);
    let file = veza_standins::AUDIO_FILE_LEN as usize;
    let (mut forwarded, mut sessions, mut streams) = (0, 0, 0);
    // (file, Range) → (status, body bytes), and whether a session starts.
    for (name, range, status, bytes, session) in [
        // No Range: the whole file.
        ("full.mp3", None, 200, file, true),
        // A browser's first request, then the next range of the same file.
        ("session.mp3", Some("bytes=0-99"), 206, 100, true),
        ("session.mp3", Some("bytes=100-199"), 206, 100, false),
        ("session.mp3", Some("bytes=0-"), 206, file, true),
        // A Range the server cannot read, or past the end: 200 and the whole file, which
        // is a session whatever the request asked.
        ("odd.mp3", Some("bytes=abc"), 200, file, true),
        ("past.mp3", Some("bytes=999999999-"), 200, file, true),
        // bytes=0- on a file over the server's MAX_RANGE_SIZE: refused, no stream at all.
        ("long-mix.mp3", Some("bytes=0-"), 416, 0, false),
    ] {
        let headers: Vec<_> = range.map(|r| ("range", r)).into_iter().collect();
        let (got_status, body) = http_bytes("GET", &stream_url(&envoy, name), &headers);
        assert_eq!(
            (got_status, body.len()),
            (status, bytes),
            "{name} {range:?}"
        );
        sessions += u32::from(session);
        if status != 416 {
            streams += 1;
            forwarded += body.len();
        }
    }
    // The request accepts gzip: the server compresses, and the gateway counts what it
    // forwarded, the compressed bytes.
    let (status, gzipped) = http_bytes(
        "GET",
        &stream_url(&envoy, "gzip.mp3"),
        &[("accept-encoding", "gzip")],
    );
    assert_eq!(status, 200);
    assert!(gzipped.starts_with(&[0x1f, 0x8b]), "a gzip body");
    assert!(gzipped.len() < file / 10, "{} bytes", gzipped.len());
    forwarded += gzipped.len();
    sessions += 1;
    streams += 1;
    assert_eq!(
        http_bytes("GET", &envoy.url("/stream/nosig.mp3"), &[]).0,
        400
    );
    envoy.wait_for("stream_duration_seconds_count", &[], f64::from(streams));
    assert_eq!((streams, sessions), (7, 6));
    assert_eq!(
        envoy.value("streams_started_total", &[]),
        Some(f64::from(sessions)),
        "every 200 and every 206 from byte 0"
    );
    assert_eq!(
        envoy.value("stream_bytes_total", &[]),
        Some(forwarded as f64)
    );
    assert_eq!(envoy.value("stream_sessions_active", &[]), Some(0.0));
    let text = envoy.prometheus_text();
    assert!(
        !text.contains("s3cr3t") && !text.contains("expires"),
        "signatures never reach a label"
    );
    assert!(!envoy.flushed_log_text().contains("s3cr3t"), "nor the log");
}

/// The stream server sends as fast as the connection takes it; this listener reads 64 KiB
/// every 20 ms (about 3 MB/s). The gateway's session ends when Envoy has forwarded the last
/// byte, ahead of the listener by at most the buffers between them (docs/websockets-and-streams.md, "What the stream
/// metrics measure"): Envoy's buffer limit on each side, the kernel's send buffer for the
/// listener's socket, and the listener's receive buffer. The bitrate gauge follows the bytes
/// forwarded and goes back to 0.
fn full_speed_stream_to_a_slow_listener(config: GatewayConfig, ports: Ports) -> (usize, usize) {
    let envoy = Envoy::start(&config, ports, 1);
    let total = veza_standins::LONG_AUDIO_FILE_LEN as usize;
    let path = "/stream/long-slow.mp3?expires=99999999999&sig=s";
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    let receive_buffer = socket.recv_buffer_size().unwrap();
    let address: std::net::SocketAddr = ([127, 0, 0, 1], envoy.ports.listener).into();
    socket.connect(&address.into()).unwrap();
    let mut stream = std::net::TcpStream::from(socket);
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: veza\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let received = std::sync::atomic::AtomicUsize::new(0);
    let received_at_end = std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                let n = stream.read(&mut chunk).unwrap();
                if n == 0 {
                    break;
                }
                received.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
                // The listener's pace, not a wait for anything.
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        envoy.wait_for("stream_sessions_active", &[], 1.0);
        poll("a bitrate", Duration::from_secs(10), || {
            envoy
                .value("stream_bitrate_bps", &[("stream_id", "long-slow.mp3")])
                .filter(|bps| *bps > 0.0)
        });
        poll("the session to end", Duration::from_secs(60), || {
            (envoy.value("stream_sessions_active", &[]) == Some(0.0)).then_some(())
        });
        let at_end = received.load(std::sync::atomic::Ordering::SeqCst);
        reader.join().unwrap();
        at_end
    });
    let headers = received.into_inner() - total;
    envoy.wait_for("stream_bitrate_bps", &[("stream_id", "long-slow.mp3")], 0.0);
    // Counters reach Envoy on the filter's flush; the gauges above, straight away.
    envoy.wait_for("stream_bytes_total", &[], total as f64);
    assert_eq!(envoy.value("streams_started_total", &[]), Some(1.0));
    let behind = total + headers - received_at_end;
    assert!(
        behind > 0,
        "the session ended with the listener at {received_at_end} bytes"
    );
    eprintln!("the session ended {behind} bytes ahead of the listener");
    (behind, receive_buffer + headers)
}

#[test]
fn a_full_speed_stream_to_a_slow_listener_ends_within_the_buffers_bound() {
    let (_standins, config, ports) = GatewayConfig::with_standins();
    let (behind, listener) = full_speed_stream_to_a_slow_listener(config, ports);
    // The shipped gateway sets no buffer limits (Envoy's 1 MiB each side) and no send buffer
    // (the kernel grows it up to tcp_wmem's maximum).
    let send_buffer_max: usize = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .unwrap()
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    let bound = 2 * (1 << 20) + send_buffer_max + listener;
    assert!(
        behind <= bound,
        "{behind} bytes still on their way when the session ended, over the {bound}-byte bound"
    );
}

#[test]
fn smaller_buffers_at_the_gateway_shrink_the_streams_lag() {
    let (_standins, config, ports) = GatewayConfig::with_standins();
    // 64 KiB each side, and a 64 KiB send buffer on the listener's sockets (SOL_SOCKET,
    // SO_SNDBUF; the kernel doubles it for its bookkeeping and then does not grow it).
    let limit = 64 * 1024;
    let config = config
        .replace_once(
            "  - name: veza_gateway\n",
            &format!(
                "  - name: veza_gateway\n    per_connection_buffer_limit_bytes: {limit}\n    \
                 socket_options: [{{ level: 1, name: 7, int_value: {limit} }}]\n"
            ),
        )
        .replace_once(
            "  - name: veza_stream\n",
            &format!("  - name: veza_stream\n    per_connection_buffer_limit_bytes: {limit}\n"),
        );
    let (behind, listener) = full_speed_stream_to_a_slow_listener(config, ports);
    let bound = 2 * limit + 2 * limit + listener;
    assert!(
        behind <= bound,
        "{behind} bytes still on their way when the session ended, over the {bound}-byte bound"
    );
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
