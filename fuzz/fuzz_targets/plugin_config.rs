//! The plugin configuration: any bytes load or are refused with an error; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veza_observability::config;

fuzz_target!(|data: &[u8]| {
    if let Err(err) = config::load(Some(data)) {
        assert!(!err.to_string().is_empty());
    }
});
