//! The chat message sniffer (a JSON string field from a message's first bytes): never a
//! panic, and a value found lies within the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veza_observability::websocket::chat;

fuzz_target!(|data: &[u8]| {
    for key in ["type", "conversation_id"] {
        if let Some(value) = chat::string_field(data, key) {
            let start = value.as_ptr() as usize - data.as_ptr() as usize;
            assert!(start + value.len() <= data.len());
        }
    }
});
