//! WebSocket metrics (the chat server's `/ws`, the backend's `/ws/chat`): an open connection's
//! frame readers, its chat messages and the rooms it has joined. Audio streams are in
//! [`super::streams`].
//!
//! A little over 500 lines: an open connection's metrics, its chat messages and its rooms
//! share one state per connection, which splitting would pass between files.
//!
//! Gauges here are moved by increments, never set: every worker adds its own +1/-1 (or its
//! bitrate change) to the one series, so the gateway-wide value is right without coordination.

use std::collections::HashMap;

use crate::config::Settings;
use crate::host::Host;
use crate::labels::Status;
use crate::routes::{EndpointId, ServiceId};
use crate::websocket::chat;
use crate::websocket::frames::{ByteSource, Direction, FrameReader, Message, MessageKind};

use super::http::{endpoint_label_of, service_label_of};
use super::names;
use super::registry::{CounterHandle, GaugeHandle, HistogramHandle, Operation, Registry};
use crate::shared::{keys, Members};

/// Longest conversation id or stream id kept; longer ones are not tracked.
pub const MAX_ID_LEN: usize = 128;
/// Conversations one connection can have joined that `chat_rooms_active` tracks.
pub const MAX_ROOMS_PER_CONNECTION: usize = 32;

impl Direction {
    pub fn label(self) -> &'static str {
        match self {
            Direction::Upstream => "client_to_server",
            Direction::Downstream => "server_to_client",
        }
    }

    fn index(self) -> usize {
        match self {
            Direction::Upstream => 0,
            Direction::Downstream => 1,
        }
    }
}

/// Where a message travelled: its connection's service, its direction, and whether the
/// connection carries the chat server's messages.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    pub service: Option<ServiceId>,
    pub direction: Direction,
    pub chat: bool,
}

/// What a chat client message did to its connection's conversations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomChange {
    Joined(String),
    Left(String),
}

/// One upgraded WebSocket connection as its metrics need it: a frame reader per direction and
/// the conversations it has joined, for as long as it is open.
#[derive(Debug)]
pub struct WebSocketConnection {
    service: Option<ServiceId>,
    /// Whether it carries the chat server's messages.
    chat: bool,
    opened_nanos: u64,
    readers: [FrameReader; 2],
    rooms: Vec<String>,
}

impl WebSocketConnection {
    pub fn new(service: Option<ServiceId>, chat: bool, opened_nanos: u64) -> WebSocketConnection {
        WebSocketConnection {
            service,
            chat,
            opened_nanos,
            readers: [
                FrameReader::new(Direction::Upstream),
                FrameReader::new(Direction::Downstream),
            ],
            rooms: Vec::new(),
        }
    }
}

#[derive(Default)]
struct ServiceMetrics {
    active: Option<GaugeHandle>,
    duration: Option<HistogramHandle>,
    messages: [[Option<CounterHandle>; 5]; 2],
    bytes: [Option<CounterHandle>; 2],
    protocol_errors: Option<CounterHandle>,
}

/// Where a service's metrics sit in [`ConnectionMetrics`]: 0 for requests no service
/// claims, then one slot per service id (at most 256).
fn service_slot(service: Option<ServiceId>) -> usize {
    service.map_or(0, |id| usize::from(id) + 1)
}

struct ChatMetrics {
    events: Vec<Option<CounterHandle>>,
    other: Option<CounterHandle>,
    sent: Option<CounterHandle>,
    rooms_active: Option<GaugeHandle>,
}

pub struct ConnectionMetrics {
    /// By [`service_slot`]: a frame costs two look-ups here, so no hashing.
    services: Vec<Option<ServiceMetrics>>,
    upgrades: HashMap<(Option<ServiceId>, Option<EndpointId>, Status), Option<CounterHandle>>,
    chat: Option<ChatMetrics>,
    rooms: Members,
}

impl Default for ConnectionMetrics {
    fn default() -> ConnectionMetrics {
        ConnectionMetrics::new()
    }
}

impl ConnectionMetrics {
    pub fn new() -> ConnectionMetrics {
        ConnectionMetrics {
            services: Vec::new(),
            upgrades: HashMap::new(),
            chat: None,
            rooms: Members::new(keys::ROOMS),
        }
    }

    /// Defines the WebSocket metrics of every service with a chat endpoint now rather than at
    /// its first upgrade, so that their series exist at 0 from the start: `rate()` and alerts
    /// see the first connection, and a hot restart's new process keeps the series when the old
    /// process's share of them goes.
    pub fn define_chat_services(
        &mut self,
        settings: &Settings,
        registry: &mut Registry,
        host: &mut dyn Host,
    ) {
        let templates = settings.routes.templates();
        for endpoint in &settings.websocket.chat_endpoints {
            if let Some(template) = templates.get(*endpoint as usize) {
                self.service(settings, registry, host, Some(template.service));
            }
        }
    }

    /// An upgrade attempt and its outcome (101, or the refusal).
    pub fn upgrade(
        &mut self,
        settings: &Settings,
        registry: &mut Registry,
        host: &mut dyn Host,
        service: Option<ServiceId>,
        endpoint: Option<EndpointId>,
        status: Status,
    ) {
        let handle = *self
            .upgrades
            .entry((service, endpoint, status))
            .or_insert_with(|| {
                registry.define_counter(
                    host,
                    names::WEBSOCKET_UPGRADES_TOTAL,
                    &[
                        (names::LABEL_SERVICE, service_label_of(settings, service)),
                        (names::LABEL_ENDPOINT, endpoint_label_of(settings, endpoint)),
                        (names::LABEL_STATUS, &status.label()),
                    ],
                )
            });
        if let Some(handle) = handle {
            registry.add(handle, 1);
        }
    }

    /// The service's WebSocket metrics, defined on first use. (The slot always exists after
    /// the resize; the `Option` is `get_mut`'s, kept rather than indexing.)
    fn service(
        &mut self,
        settings: &Settings,
        registry: &mut Registry,
        host: &mut dyn Host,
        service: Option<ServiceId>,
    ) -> Option<&ServiceMetrics> {
        let slot = service_slot(service);
        if self.services.len() <= slot {
            self.services.resize_with(slot + 1, || None);
        }
        let entry = self.services.get_mut(slot)?;
        Some(entry.get_or_insert_with(|| {
            let label = service_label_of(settings, service);
            let one = |registry: &mut Registry,
                       host: &mut dyn Host,
                       name: &str,
                       extra: &[(&str, &str)]| {
                let mut labels = vec![(names::LABEL_SERVICE, label)];
                labels.extend_from_slice(extra);
                registry.define_counter(host, name, &labels)
            };
            let mut metrics = ServiceMetrics {
                active: registry.define_gauge(
                    host,
                    names::WEBSOCKET_CONNECTIONS_ACTIVE,
                    &[(names::LABEL_SERVICE, label)],
                ),
                duration: registry.define_histogram(
                    host,
                    names::WEBSOCKET_CONNECTION_DURATION_SECONDS,
                    &[(names::LABEL_SERVICE, label)],
                ),
                protocol_errors: one(registry, host, names::WEBSOCKET_PROTOCOL_ERRORS_TOTAL, &[]),
                ..ServiceMetrics::default()
            };
            for direction in [Direction::Upstream, Direction::Downstream] {
                let d = direction.index();
                let dir = (names::LABEL_DIRECTION, direction.label());
                if let Some(slot) = metrics.bytes.get_mut(d) {
                    *slot = one(registry, host, names::WEBSOCKET_BYTES_TOTAL, &[dir]);
                }
                for (k, kind) in MessageKind::ALL.iter().enumerate() {
                    let handle = one(
                        registry,
                        host,
                        names::WEBSOCKET_MESSAGES_TOTAL,
                        &[dir, (names::LABEL_MESSAGE_TYPE, kind.label())],
                    );
                    if let Some(slot) = metrics.messages.get_mut(d).and_then(|row| row.get_mut(k)) {
                        *slot = handle;
                    }
                }
            }
            metrics
        }))
    }

    pub fn opened(
        &mut self,
        settings: &Settings,
        registry: &mut Registry,
        host: &mut dyn Host,
        service: Option<ServiceId>,
    ) {
        if let Some(active) = self
            .service(settings, registry, host, service)
            .and_then(|metrics| metrics.active)
        {
            registry.add_gauge(host, active, 1);
        }
    }

    pub fn closed(
        &mut self,
        settings: &Settings,
        registry: &mut Registry,
        host: &mut dyn Host,
        service: Option<ServiceId>,
        duration_nanos: u64,
    ) {
        let Some(metrics) = self.service(settings, registry, host, service) else {
            return;
        };
        let (active, duration) = (metrics.active, metrics.duration);
        if let Some(active) = active {
            registry.add_gauge(host, active, -1);
        }
        if let Some(duration) = duration {
            registry.observe(duration, duration_nanos);
        }
    }

    pub fn bytes(
        &mut self,
        settings: &Settings,
        registry: &mut Registry,
        host: &mut dyn Host,
        service: Option<ServiceId>,
        direction: Direction,
        bytes: u64,
    ) {
        if let Some(handle) = self
            .service(settings, registry, host, service)
            .and_then(|metrics| metrics.bytes.get(direction.index()).copied().flatten())
        {
            registry.add(handle, bytes);
        }
    }

    pub fn protocol_error(
        &mut self,
        settings: &Settings,
        registry: &mut Registry,
        host: &mut dyn Host,
        service: Option<ServiceId>,
    ) {
        if let Some(handle) = self
            .service(settings, registry, host, service)
            .and_then(|metrics| metrics.protocol_errors)
        {
            registry.add(handle, 1);
        }
    }

    /// A whole message; for chat connections, a client text message is also a chat event.
    pub fn message(
        &mut self,
        settings: &Settings,
        registry: &mut Registry,
        host: &mut dyn Host,
        origin: Origin,
        message: &Message<'_>,
    ) -> Option<RoomChange> {
        let Origin {
            service,
            direction,
            chat: chat_connection,
        } = origin;
        let kind = MessageKind::ALL.iter().position(|k| *k == message.kind);
        let handle = kind.and_then(|k| {
            self.service(settings, registry, host, service)?
                .messages
                .get(direction.index())
                .and_then(|row| row.get(k))
                .copied()
                .flatten()
        });
        if let Some(handle) = handle {
            registry.add(handle, 1);
        }
        if !chat_connection || direction != Direction::Upstream || message.kind != MessageKind::Text
        {
            return None;
        }
        let chat = self
            .chat
            .get_or_insert_with(|| define_chat(settings, registry, host));
        let event_type = chat::string_field(message.prefix, "type");
        let index = event_type.and_then(|t| {
            settings
                .websocket
                .chat_event_types
                .iter()
                .position(|known| known.as_bytes() == t)
        });
        let counter = match index {
            Some(i) => chat.events.get(i).copied().flatten(),
            None => chat.other,
        };
        if let Some(counter) = counter {
            registry.add(counter, 1);
        }
        let room = || {
            chat::string_field(message.prefix, "conversation_id")
                .filter(|id| !id.is_empty() && id.len() <= MAX_ID_LEN)
                .map(|id| String::from_utf8_lossy(id).into_owned())
        };
        match event_type {
            Some(b"SendMessage") => {
                if let Some(sent) = chat.sent {
                    registry.add(sent, 1);
                }
                None
            }
            Some(b"JoinConversation") => room().map(RoomChange::Joined),
            Some(b"LeaveConversation") => room().map(RoomChange::Left),
            _ => None,
        }
    }

    /// One body chunk of an upgraded connection, in one direction: its bytes, the messages that
    /// end in it, the conversations they join or leave, and the protocol error that stops the
    /// reading of that direction. Nothing is kept of the chunk itself.
    pub fn websocket_chunk(
        &mut self,
        settings: &Settings,
        registry: &mut Registry,
        host: &mut dyn Host,
        connection: &mut WebSocketConnection,
        direction: Direction,
        chunk: &mut dyn ByteSource,
    ) {
        let WebSocketConnection {
            service,
            chat,
            readers,
            rooms,
            ..
        } = connection;
        let service = *service;
        self.bytes(
            settings,
            registry,
            host,
            service,
            direction,
            chunk.size() as u64,
        );
        let Some(reader) = readers.get_mut(direction.index()) else {
            return;
        };
        if reader.failed().is_some() {
            return;
        }
        let origin = Origin {
            service,
            direction,
            chat: *chat,
        };
        let error = reader.feed(chunk, &mut |message| match self
            .message(settings, registry, host, origin, &message)
        {
            // A join that was not counted (the cap) is not left either.
            Some(RoomChange::Joined(room))
                if !rooms.contains(&room)
                    && rooms.len() < MAX_ROOMS_PER_CONNECTION
                    && self.room(settings, registry, host, &room, 1) =>
            {
                rooms.push(room);
            }
            Some(RoomChange::Left(room)) => {
                if let Some(at) = rooms.iter().position(|r| *r == room) {
                    rooms.swap_remove(at);
                    self.room(settings, registry, host, &room, -1);
                }
            }
            _ => {}
        });
        if error.is_some() {
            self.protocol_error(settings, registry, host, service);
        }
    }

    /// The connection ended: it leaves its conversations, and its lifetime is recorded.
    pub fn websocket_closed(
        &mut self,
        settings: &Settings,
        registry: &mut Registry,
        host: &mut dyn Host,
        connection: WebSocketConnection,
        now_nanos: u64,
    ) {
        for room in &connection.rooms {
            self.room(settings, registry, host, room, -1);
        }
        self.closed(
            settings,
            registry,
            host,
            connection.service,
            now_nanos.saturating_sub(connection.opened_nanos),
        );
    }

    /// A connection joined (+1) or left (-1) a conversation: `chat_rooms_active` counts the
    /// conversations joined by at least one connection, gateway-wide. Whether the change was
    /// counted.
    pub fn room(
        &mut self,
        settings: &Settings,
        registry: &mut Registry,
        host: &mut dyn Host,
        room: &str,
        delta: i64,
    ) -> bool {
        let change =
            match self
                .rooms
                .change(host, room, delta > 0, settings.websocket.max_tracked_rooms)
            {
                Ok(Some(change)) => change,
                Ok(None) => return false,
                Err(err) => {
                    registry.host_error(Operation::SharedData, err, keys::ROOMS);
                    return false;
                }
            };
        let chat = self
            .chat
            .get_or_insert_with(|| define_chat(settings, registry, host));
        if let (Some(gauge), true) = (chat.rooms_active, change != 0) {
            registry.add_gauge(host, gauge, change);
        }
        true
    }
}

fn define_chat(settings: &Settings, registry: &mut Registry, host: &mut dyn Host) -> ChatMetrics {
    let event = |registry: &mut Registry, host: &mut dyn Host, event_type: &str| {
        registry.define_counter(
            host,
            names::CHAT_EVENTS_TOTAL,
            &[(names::LABEL_TYPE, event_type)],
        )
    };
    ChatMetrics {
        events: settings
            .websocket
            .chat_event_types
            .iter()
            .map(|t| event(registry, host, t))
            .collect(),
        other: event(registry, host, names::OTHER),
        sent: registry.define_counter(host, names::CHAT_MESSAGES_SENT_TOTAL, &[]),
        rooms_active: registry.define_gauge(host, names::CHAT_ROOMS_ACTIVE, &[]),
    }
}

#[cfg(test)]
mod tests;
