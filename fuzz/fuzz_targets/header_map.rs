//! The ABI's serialized header map, as the host hands it over: never a panic, never a read
//! outside the buffer, on any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veza_observability::header_map;

fuzz_target!(|data: &[u8]| {
    let count = header_map::pairs(data).count();
    let [method, path] = header_map::find(data, [":method", ":path"]);
    assert!(count > 0 || (method.is_none() && path.is_none()));
});
