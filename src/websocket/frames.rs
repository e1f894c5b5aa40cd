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
pub mod tests {
    use super::*;

    /// One frame as a peer would send it; `mask` for client frames.
    pub fn frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = vec![(u8::from(fin) << 7) | opcode];
        let mask_bit = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            len @ 0..=125 => out.push(mask_bit | len as u8),
            len @ 126..=0xffff => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        match mask {
            Some(key) => {
                out.extend_from_slice(&key);
                out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
            }
            None => out.extend_from_slice(payload),
        }
        out
    }

    const KEY: Option<[u8; 4]> = Some([0x37, 0xfa, 0x21, 0x3d]);

    /// A message as read, kept past the reader's next frame.
    #[derive(Debug, PartialEq, Eq)]
    struct Read {
        kind: MessageKind,
        prefix: Vec<u8>,
    }

    impl From<Message<'_>> for Read {
        fn from(message: Message<'_>) -> Read {
            Read {
                kind: message.kind,
                prefix: message.prefix.to_vec(),
            }
        }
    }

    fn read_all(
        direction: Direction,
        stream: &[u8],
        chunk: usize,
    ) -> (Vec<Read>, Option<ProtocolError>) {
        let mut reader = FrameReader::new(direction);
        let mut messages = Vec::new();
        let mut error = None;
        for piece in stream.chunks(chunk.max(1)) {
            let mut source = piece;
            if let Some(e) = reader.feed(&mut source, &mut |m| messages.push(Read::from(m))) {
                assert!(error.is_none(), "an error is reported once");
                error = Some(e);
            }
        }
        (messages, error)
    }

    fn session() -> Vec<u8> {
        let mut stream = Vec::new();
        stream.extend(frame(
            true,
            0x1,
            br#"{"type":"SendMessage","conversation_id":"c1","content":"hi"}"#,
            KEY,
        ));
        stream.extend(frame(true, 0x2, &[1, 2, 3], KEY));
        // A text message in three fragments, a ping between the fragments.
        stream.extend(frame(false, 0x1, br#"{"type":"Join"#, KEY));
        stream.extend(frame(true, 0x9, b"ping payload", KEY));
        stream.extend(frame(
            false,
            0x0,
            br#"Conversation","conversation_id":"#,
            KEY,
        ));
        stream.extend(frame(true, 0x0, br#""c2"}"#, KEY));
        stream.extend(frame(true, 0xa, b"", KEY));
        stream.extend(frame(true, 0x2, &vec![7u8; 70_000], KEY));
        stream.extend(frame(true, 0x2, &vec![9u8; 300], KEY));
        stream.extend(frame(true, 0x8, &[0x03, 0xe8], KEY));
        stream
    }

    fn kinds(messages: &[Read]) -> Vec<&'static str> {
        messages.iter().map(|m| m.kind.label()).collect()
    }

    #[test]
    fn every_chunking_gives_the_same_messages() {
        let stream = session();
        let (expected, error) = read_all(Direction::Upstream, &stream, stream.len());
        assert_eq!(error, None);
        assert_eq!(
            kinds(&expected),
            ["text", "binary", "ping", "text", "pong", "binary", "binary", "close"]
        );
        assert_eq!(
            expected[0].prefix,
            br#"{"type":"SendMessage","conversation_id":"c1","content":"hi"}"#.to_vec()
        );
        assert_eq!(
            expected[3].prefix,
            br#"{"type":"JoinConversation","conversation_id":"c2"}"#.to_vec(),
            "fragments are unmasked and joined"
        );
        for chunk in [1, 2, 3, 7, 13, 100, 4096, 65_536] {
            let (messages, error) = read_all(Direction::Upstream, &stream, chunk);
            assert_eq!(error, None, "chunk {chunk}");
            assert_eq!(messages, expected, "chunk {chunk}");
        }
    }

    #[test]
    fn prefixes_are_bounded() {
        let long = format!(
            r#"{{"padding":"{}","type":"SendMessage"}}"#,
            "x".repeat(1000)
        );
        let stream = frame(true, 0x1, long.as_bytes(), KEY);
        let (messages, _) = read_all(Direction::Upstream, &stream, 10);
        assert_eq!(messages[0].prefix.len(), PREFIX_LEN);
        assert_eq!(messages[0].prefix, long.as_bytes()[..PREFIX_LEN].to_vec());
    }

    #[test]
    fn server_frames_are_unmasked() {
        let mut stream = frame(true, 0x1, br#"{"type":"ActionConfirmed"}"#, None);
        stream.extend(frame(true, 0x8, b"", None));
        let (messages, error) = read_all(Direction::Downstream, &stream, 5);
        assert_eq!(error, None);
        assert_eq!(kinds(&messages), ["text", "close"]);
        assert_eq!(
            read_all(Direction::Upstream, &stream, 5).1,
            Some(ProtocolError::Masking)
        );
        assert_eq!(
            read_all(Direction::Downstream, &frame(true, 0x1, b"x", KEY), 5).1,
            Some(ProtocolError::Masking)
        );
    }

    #[test]
    fn protocol_errors_stop_reading_once() {
        let cases: [(Vec<u8>, ProtocolError); 6] = [
            (vec![0xa1, 0x80, 0, 0, 0, 0], ProtocolError::ReservedBits), // RSV2
            (vec![0x83, 0x80, 0, 0, 0, 0], ProtocolError::ReservedOpcode),
            (frame(true, 0x0, b"x", KEY), ProtocolError::Continuation),
            (frame(false, 0x9, b"x", KEY), ProtocolError::ControlFrame),
            (
                frame(true, 0x9, &[0; 126], KEY),
                ProtocolError::ControlFrame,
            ),
            (
                [0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4].to_vec(),
                ProtocolError::Length,
            ),
        ];
        for (garbage, expected) in cases {
            let mut stream = frame(true, 0x1, b"ok", KEY);
            stream.extend(&garbage);
            stream.extend(frame(true, 0x1, b"after", KEY));
            let (messages, error) = read_all(Direction::Upstream, &stream, 3);
            assert_eq!(error, Some(expected), "{garbage:x?}");
            assert_eq!(
                kinds(&messages),
                ["text"],
                "nothing is read after the error"
            );
        }
        let mut nested = frame(false, 0x1, b"a", KEY);
        nested.extend(frame(true, 0x2, b"b", KEY));
        assert_eq!(
            read_all(Direction::Upstream, &nested, 64).1,
            Some(ProtocolError::Continuation)
        );
    }

    #[test]
    fn rsv1_frames_of_permessage_deflate_are_counted() {
        // FIN + RSV1 + text, as a compressing client sends it.
        let compressed = frame(true, 0x1, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], KEY);
        let mut stream = compressed.clone();
        stream[0] |= 0x40;
        let (messages, error) = read_all(Direction::Upstream, &stream, 4);
        assert_eq!(error, None);
        assert_eq!(kinds(&messages), ["text"]);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut state = 0x1234_5678_9abc_def0u64;
        for _ in 0..200 {
            let bytes: Vec<u8> = (0..512)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            for direction in [Direction::Upstream, Direction::Downstream] {
                let _ = read_all(direction, &bytes, (state % 17) as usize + 1);
            }
        }
    }
}
