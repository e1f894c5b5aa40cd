//! The RFC 6455 frame reader fed arbitrary bytes in arbitrary chunkings: never a panic, the
//! same messages and the same error however the bytes are cut.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veza_observability::websocket::frames::{Direction, FrameReader, MessageKind};

/// Feeds `stream` in chunks of the sizes in `cuts` (cycled); no cuts: one chunk. Each message
/// as its kind and prefix.
fn read_all(
    stream: &[u8],
    cuts: &[u8],
    direction: Direction,
) -> (Vec<(MessageKind, Vec<u8>)>, bool) {
    let mut reader = FrameReader::new(direction);
    let mut messages = Vec::new();
    let mut offset = 0;
    let mut cut = cuts.iter().cycle();
    while offset < stream.len() {
        let size = cut.next().map_or(stream.len(), |&c| usize::from(c).max(1));
        let end = (offset + size).min(stream.len());
        let mut chunk = &stream[offset..end];
        reader.feed(&mut chunk, &mut |m| messages.push((m.kind, m.prefix.to_vec())));
        offset = end;
    }
    (messages, reader.failed().is_some())
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let (cuts, stream) = rest.split_at(usize::from(split % 16).min(rest.len()));
    let direction = if split & 0x80 == 0 { Direction::Upstream } else { Direction::Downstream };
    let whole = read_all(stream, &[], direction);
    let pieces = read_all(stream, if cuts.is_empty() { &[1] } else { cuts }, direction);
    assert_eq!(whole, pieces);
});
