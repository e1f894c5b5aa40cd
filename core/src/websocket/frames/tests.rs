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
