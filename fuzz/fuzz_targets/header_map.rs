//! The ABI's serialized header map, as the host hands it over: never a panic, never a read
//! outside the buffer, on any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veza_observability::header_map::{self, Headers, Serialized};

fuzz_target!(|data: &[u8]| {
    let count = header_map::pairs(data).count();
    let map = Serialized(data);
    let [method, path] = map.find([":method", ":path"]);
    assert!(count > 0 || (method.is_none() && path.is_none()));
});
