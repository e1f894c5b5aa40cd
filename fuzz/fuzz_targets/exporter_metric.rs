//! The Prometheus text reader of `/ready`'s exporter checks (`pg_up 1` in a page): never a
//! panic on any page.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veza_observability::health::check;

fuzz_target!(|data: &[u8]| {
    for metric in ["pg_up", "redis_up", "up"] {
        let _ = check::prometheus_sample(data, metric);
    }
});
