use super::*;
use crate::config;
use crate::host::memory::MemoryHost;
use crate::websocket::frames::Message;

fn text(json: &str) -> Message<'_> {
    Message {
        kind: MessageKind::Text,
        prefix: json.as_bytes(),
    }
}

#[test]
fn chat_events_rooms_and_messages() {
    let settings = config::load(None).unwrap();
    let mut host = MemoryHost::default();
    crate::shared::prepare(&mut host).unwrap();
    let mut registry = Registry::new(&mut host);
    let mut metrics = ConnectionMetrics::new();
    let chat = settings.routes.service_id("chat");
    let send = |metrics: &mut ConnectionMetrics,
                registry: &mut Registry,
                host: &mut MemoryHost,
                m: Message| {
        let origin = Origin {
            service: chat,
            direction: Direction::Upstream,
            chat: true,
        };
        metrics.message(&settings, registry, host, origin, &m)
    };
    assert_eq!(
        send(
            &mut metrics,
            &mut registry,
            &mut host,
            text(r#"{"type":"JoinConversation","conversation_id":"c1"}"#)
        ),
        Some(RoomChange::Joined("c1".into()))
    );
    assert_eq!(
        send(
            &mut metrics,
            &mut registry,
            &mut host,
            text(r#"{"type":"SendMessage","conversation_id":"c1","content":"x"}"#)
        ),
        None
    );
    assert_eq!(
        send(
            &mut metrics,
            &mut registry,
            &mut host,
            text(r#"{"type":"Dance"}"#)
        ),
        None
    );
    assert_eq!(
        send(&mut metrics, &mut registry, &mut host, text("not json")),
        None
    );
    assert_eq!(
        send(
            &mut metrics,
            &mut registry,
            &mut host,
            text(r#"{"type":"LeaveConversation","conversation_id":"c1"}"#)
        ),
        Some(RoomChange::Left("c1".into()))
    );
    metrics.room(&settings, &mut registry, &mut host, "c1", 1);
    metrics.room(&settings, &mut registry, &mut host, "c1", 1);
    metrics.room(&settings, &mut registry, &mut host, "c2", 1);
    assert_eq!(host.counter("chat_rooms_active"), Some(2));
    metrics.room(&settings, &mut registry, &mut host, "c1", -1);
    assert_eq!(host.counter("chat_rooms_active"), Some(2));
    metrics.room(&settings, &mut registry, &mut host, "c1", -1);
    metrics.room(&settings, &mut registry, &mut host, "c2", -1);
    assert_eq!(host.counter("chat_rooms_active"), Some(0));
    registry.flush(&mut host);
    let event = |t: &str| host.counter(&format!(r#"chat_events_total{{type="{t}"}}"#));
    assert_eq!(event("JoinConversation"), Some(1));
    assert_eq!(event("SendMessage"), Some(1));
    assert_eq!(event("LeaveConversation"), Some(1));
    assert_eq!(event("other"), Some(2));
    assert_eq!(host.counter("chat_messages_sent_total"), Some(1));
    assert_eq!(
        host.counter(r#"websocket_messages_total{service="chat",direction="client_to_server",message_type="text"}"#),
        Some(5)
    );
}

/// One chat connection fed chunk by chunk, with the host its metrics go to.
struct ChatSocket {
    settings: Settings,
    host: MemoryHost,
    registry: Registry,
    metrics: ConnectionMetrics,
    connection: Option<WebSocketConnection>,
}

impl ChatSocket {
    fn open() -> ChatSocket {
        let settings = config::load(None).unwrap();
        let mut host = MemoryHost::default();
        crate::shared::prepare(&mut host).unwrap();
        let mut registry = Registry::new(&mut host);
        let mut metrics = ConnectionMetrics::new();
        let chat = settings.routes.service_id("chat");
        metrics.opened(&settings, &mut registry, &mut host, chat);
        let connection = Some(WebSocketConnection::new(chat, true, 1_000_000_000));
        ChatSocket {
            settings,
            host,
            registry,
            metrics,
            connection,
        }
    }

    fn chunk(&mut self, direction: Direction, mut bytes: &[u8]) {
        let connection = self.connection.as_mut().unwrap();
        self.metrics.websocket_chunk(
            &self.settings,
            &mut self.registry,
            &mut self.host,
            connection,
            direction,
            &mut bytes,
        );
    }

    fn close(&mut self, now_nanos: u64) {
        let connection = self.connection.take().unwrap();
        self.metrics.websocket_closed(
            &self.settings,
            &mut self.registry,
            &mut self.host,
            connection,
            now_nanos,
        );
    }

    fn rooms(&self) -> Option<u64> {
        self.host.counter("chat_rooms_active")
    }
}

#[test]
fn a_connections_chunks_count_its_messages_rooms_bytes_and_first_protocol_error() {
    use crate::websocket::frames::tests::frame;
    use Direction::{Downstream, Upstream};
    let key = Some([0x11, 0x22, 0x33, 0x44]);
    let text = |json: String| frame(true, 0x1, json.as_bytes(), key);
    let mut socket = ChatSocket::open();
    // Forty conversations joined in one chunk: a connection's first 32 are tracked.
    let joins: Vec<u8> = (0..40)
        .flat_map(|i| {
            text(format!(
                r#"{{"type":"JoinConversation","conversation_id":"c{i}"}}"#
            ))
        })
        .collect();
    socket.chunk(Upstream, &joins);
    assert_eq!(socket.rooms(), Some(32));
    // Leaving a tracked one counts; leaving one past the cap changes nothing.
    let leaves: Vec<u8> = ["c0", "c39"]
        .iter()
        .flat_map(|id| {
            text(format!(
                r#"{{"type":"LeaveConversation","conversation_id":"{id}"}}"#
            ))
        })
        .collect();
    socket.chunk(Upstream, &leaves);
    assert_eq!(socket.rooms(), Some(31));
    // A server frame cut across two chunks is one message.
    let reply = frame(true, 0x2, &[9; 10], None);
    let (head, tail) = reply.split_at(3);
    socket.chunk(Downstream, head);
    // Envoy hands the filter empty chunks too (a flush, the end of a direction), also
    // right after a metrics flush, when nothing is pending.
    socket.registry.flush(&mut socket.host);
    socket.chunk(Downstream, &[]);
    socket.chunk(Upstream, &[]);
    socket.chunk(Downstream, tail);
    // An unmasked client frame stops the reading of that direction: one protocol error,
    // and what follows is counted in bytes only.
    let unmasked = frame(true, 0x2, b"x", None);
    let late = text(r#"{"type":"JoinConversation","conversation_id":"late"}"#.into());
    socket.chunk(Upstream, &unmasked);
    socket.chunk(Upstream, &late);
    assert_eq!(socket.rooms(), Some(31));
    socket.close(3_000_000_000);
    assert_eq!(socket.rooms(), Some(0));
    let ChatSocket {
        mut host,
        mut registry,
        ..
    } = socket;
    assert_eq!(
        host.counter(r#"websocket_connections_active{service="chat"}"#),
        Some(0)
    );
    registry.flush(&mut host);
    let counter = |name: &str, labels: &[(&str, &str)]| {
        let mut all = vec![("service", "chat")];
        all.extend_from_slice(labels);
        host.series(name, &all)
    };
    assert_eq!(
        counter(
            "websocket_messages_total",
            &[("direction", "client_to_server"), ("message_type", "text")]
        ),
        Some(42)
    );
    assert_eq!(
        counter(
            "websocket_messages_total",
            &[
                ("direction", "server_to_client"),
                ("message_type", "binary")
            ]
        ),
        Some(1)
    );
    assert_eq!(
        counter(
            "websocket_messages_total",
            &[
                ("direction", "client_to_server"),
                ("message_type", "binary")
            ]
        ),
        Some(0)
    );
    assert_eq!(counter("websocket_protocol_errors_total", &[]), Some(1));
    assert_eq!(
        host.errors(),
        0,
        "no hostcall refused, empty chunks included"
    );
    let client_bytes = joins.len() + leaves.len() + unmasked.len() + late.len();
    assert_eq!(
        counter(
            "websocket_bytes_total",
            &[("direction", "client_to_server")]
        ),
        Some(client_bytes as u64)
    );
    assert_eq!(
        counter(
            "websocket_bytes_total",
            &[("direction", "server_to_client")]
        ),
        Some(reply.len() as u64)
    );
}
