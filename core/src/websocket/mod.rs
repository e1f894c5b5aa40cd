//! WebSocket telemetry: RFC 6455 frames read from the bytes Envoy passes through, and the chat
//! server's JSON messages recognised by their `type`.

pub mod chat;
pub mod frames;
