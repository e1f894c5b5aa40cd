//! An RFC 6455 frame reader for one direction of an upgraded connection.
//!
//! It sees the bytes as Envoy delivers them (chunks cut anywhere, several frames per chunk),
//! reads only frame headers, skips payloads without holding them, and reports each whole
//! message once (a fragmented message when its last frame ends; control frames, which may
//! come between fragments, on their own). For text messages it keeps the first few payload
//! bytes, unmasked, so the chat sniffer can read a JSON `type`. A frame that breaks the
//! protocol stops the reading for good: the traffic itself is never touched.

/// Bytes of a text message's start kept for the chat sniffer.
pub const PREFIX_LEN: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to server: every frame must be masked.
    Upstream,
    /// Server to client: no frame may be masked.
    Downstream,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Text,
    Binary,
    Ping,
    Pong,
    Close,
}

impl MessageKind {
    pub const ALL: [MessageKind; 5] = [
        MessageKind::Text,
        MessageKind::Binary,
        MessageKind::Ping,
        MessageKind::Pong,
        MessageKind::Close,
    ];

    pub fn label(self) -> &'static str {
        match self {
            MessageKind::Text => "text",
            MessageKind::Binary => "binary",
            MessageKind::Ping => "ping",
            MessageKind::Pong => "pong",
            MessageKind::Close => "close",
        }
    }
}

/// Why reading stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    ReservedBits,
    ReservedOpcode,
    Masking,
    ControlFrame,
    Continuation,
    Length,
}

/// Where the reader pulls bytes from: a chunk it may read any range of.
pub trait ByteSource {
    /// The chunk's size in bytes.
    fn size(&self) -> usize;
    /// Up to `len` bytes at `offset` (fewer only at the chunk's end), borrowed: reading a
    /// frame header allocates nothing.
    fn read(&mut self, offset: usize, len: usize) -> &[u8];
    /// The first failure of the host's reads of this chunk (those reads gave nothing), for
    /// the caller to count once.
    fn failure(&self) -> Option<crate::host::HostError> {
        None
    }
}

impl ByteSource for &[u8] {
    fn size(&self) -> usize {
        <[u8]>::len(self)
    }

    fn read(&mut self, offset: usize, len: usize) -> &[u8] {
        let end = offset.saturating_add(len).min(<[u8]>::len(self));
        self.get(offset..end).unwrap_or_default()
    }
}

/// A message that ended: its kind and, for text, the first bytes of its payload. The prefix
/// is borrowed from the reader, which keeps one buffer for the connection's life: a frame
/// costs no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    pub kind: MessageKind,
    pub prefix: &'a [u8],
}

#[derive(Debug)]
enum State {
    /// Collecting a frame header (2 to 14 bytes).
    Header,
    /// Inside a frame's payload.
    Payload,
    Failed(ProtocolError),
}

#[derive(Debug)]
pub struct FrameReader {
    direction: Direction,
    state: State,
    header: [u8; 14],
    header_len: usize,
    /// The frame being read.
    opcode: u8,
    fin: bool,
    mask: [u8; 4],
    masked: bool,
    remaining: u64,
    /// Payload offset within the current message, for unmasking and the prefix.
    message_offset: u64,
    /// Offset within the current frame's payload (the mask index).
    frame_offset: u64,
    /// The data message in progress across fragments (text or binary).
    fragmented: Option<MessageKind>,
    prefix: Vec<u8>,
}

impl FrameReader {
    pub fn new(direction: Direction) -> FrameReader {
        FrameReader {
            direction,
            state: State::Header,
            header: [0; 14],
            header_len: 0,
            opcode: 0,
            fin: false,
            mask: [0; 4],
            masked: false,
            remaining: 0,
            message_offset: 0,
            frame_offset: 0,
            fragmented: None,
            prefix: Vec::new(),
        }
    }

    pub fn failed(&self) -> Option<ProtocolError> {
        match self.state {
            State::Failed(error) => Some(error),
            _ => None,
        }
    }

    /// Reads one chunk; calls `on_message` for each message that ends in it. Returns the
    /// error that stopped reading in this chunk, if any (reported once).
    pub fn feed(
        &mut self,
        source: &mut dyn ByteSource,
        on_message: &mut dyn FnMut(Message<'_>),
    ) -> Option<ProtocolError> {
        if self.failed().is_some() {
            return None;
        }
        let len = source.size();
        let mut offset = 0;
        while offset < len {
            match self.state {
                State::Failed(_) => break,
                State::Header => {
                    let want = self.header_needed() - self.header_len;
                    let bytes = source.read(offset, want);
                    if bytes.is_empty() {
                        break;
                    }
                    offset += bytes.len();
                    for &byte in bytes {
                        if let Some(slot) = self.header.get_mut(self.header_len) {
                            *slot = byte;
                            self.header_len += 1;
                        }
                    }
                    if self.header_len == self.header_needed() {
                        if let Err(error) = self.start_frame() {
                            self.state = State::Failed(error);
                            return Some(error);
                        }
                        if self.remaining == 0 {
                            self.end_frame(on_message);
                        } else {
                            self.state = State::Payload;
                        }
                    }
                }
                State::Payload => {
                    let available = (len - offset) as u64;
                    let take = self.remaining.min(available);
                    let wants_prefix = self.current_kind() == Some(MessageKind::Text)
                        && self.message_offset < PREFIX_LEN as u64;
                    if wants_prefix {
                        let room = PREFIX_LEN as u64 - self.message_offset;
                        let read = take.min(room) as usize;
                        let bytes = source.read(offset, read);
                        for &byte in bytes {
                            let key = self
                                .mask
                                .get((self.frame_offset % 4) as usize)
                                .copied()
                                .unwrap_or(0);
                            self.prefix
                                .push(if self.masked { byte ^ key } else { byte });
                            self.frame_offset += 1;
                            self.message_offset += 1;
                        }
                        self.frame_offset += take - read as u64;
                        self.message_offset += take - read as u64;
                    } else {
                        self.frame_offset += take;
                        // A control frame's payload is not part of the data message it
                        // interrupts.
                        if self.current_kind().is_some() {
                            self.message_offset += take;
                        }
                    }
                    offset += take as usize;
                    self.remaining -= take;
                    if self.remaining == 0 {
                        self.end_frame(on_message);
                    }
                }
            }
        }
        None
    }

    fn header_needed(&self) -> usize {
        if self.header_len < 2 {
            return 2;
        }
        let second = self.header.get(1).copied().unwrap_or(0);
        let extended = match second & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if second & 0x80 != 0 { 4 } else { 0 };
        2 + extended + mask
    }

    fn start_frame(&mut self) -> Result<(), ProtocolError> {
        let [first, second, rest @ ..] = self.header;
        self.header_len = 0;
        self.fin = first & 0x80 != 0;
        // RSV1 is permessage-deflate's; RSV2 and RSV3 have no extension that uses them.
        if first & 0x30 != 0 {
            return Err(ProtocolError::ReservedBits);
        }
        self.opcode = first & 0x0f;
        self.masked = second & 0x80 != 0;
        let must_mask = self.direction == Direction::Upstream;
        if self.masked != must_mask {
            return Err(ProtocolError::Masking);
        }
        // The masking key follows the extended length, if any.
        let (length, key_at) = match second & 0x7f {
            126 => {
                let [a, b, ..] = rest;
                (u64::from(u16::from_be_bytes([a, b])), 2)
            }
            127 => {
                let [a, b, c, d, e, f, g, h, ..] = rest;
                let length = u64::from_be_bytes([a, b, c, d, e, f, g, h]);
                if length >> 63 != 0 {
                    return Err(ProtocolError::Length);
                }
                (length, 8)
            }
            short => (u64::from(short), 0),
        };
        if self.masked {
            for (key, byte) in self.mask.iter_mut().zip(rest.iter().skip(key_at)) {
                *key = *byte;
            }
        }
        self.remaining = length;
        self.frame_offset = 0;
        match self.opcode {
            0x0 => {
                if self.fragmented.is_none() {
                    return Err(ProtocolError::Continuation);
                }
            }
            0x1 | 0x2 => {
                if self.fragmented.is_some() {
                    return Err(ProtocolError::Continuation);
                }
                self.fragmented = Some(if self.opcode == 0x1 {
                    MessageKind::Text
                } else {
                    MessageKind::Binary
                });
                self.message_offset = 0;
                self.prefix.clear();
            }
            0x8..=0xa => {
                if !self.fin || length > 125 {
                    return Err(ProtocolError::ControlFrame);
                }
            }
            _ => return Err(ProtocolError::ReservedOpcode),
        }
        Ok(())
    }

    /// The kind of the message the current frame's payload belongs to.
    fn current_kind(&self) -> Option<MessageKind> {
        match self.opcode {
            0x0..=0x2 => self.fragmented,
            _ => None,
        }
    }

    fn end_frame(&mut self, on_message: &mut dyn FnMut(Message<'_>)) {
        self.state = State::Header;
        let control = match self.opcode {
            0x8 => Some(MessageKind::Close),
            0x9 => Some(MessageKind::Ping),
            0xa => Some(MessageKind::Pong),
            _ => None,
        };
        if let Some(kind) = control {
            on_message(Message { kind, prefix: &[] });
            return;
        }
        if self.fin {
            if let Some(kind) = self.fragmented.take() {
                on_message(Message {
                    kind,
                    prefix: &self.prefix,
                });
                self.prefix.clear();
            }
        }
    }
}

#[cfg(test)]
pub mod tests;
