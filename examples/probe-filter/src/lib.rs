//! The empty filter plus only the hostcalls named in its plugin configuration, made where this
//! project's filter makes them. `make bench` runs it once per hostcall kind, so the cost of each
//! kind shows as the difference to the empty filter. Configuration: a comma-separated list of
//!
//! - `time`: the host clock when the request starts and when it is logged;
//! - `time10`: the host clock ten times at each of those points: the cheapest hostcall there
//!   is (no strings, no buffer handed back), so its cost per call is the crossing itself;
//! - `pairs`: every request header in one call;
//! - `set1`, `set2`: one or two request headers written (trace headers);
//! - `add1`: one request header added (`proxy_add_header_map_value`, no look-up for an
//!   existing one);
//! - `setpairs`: every request header read, then written back with the two trace headers
//!   added, in one call;
//! - `status`: the response `:status`, when the request is logged;
//! - `code`: the `response.code` property instead, when the request is logged;
//! - `absent`: a response header that is not there, when the request is logged: the same
//!   call as `status`, but the host has no value to hand back, so it allocates nothing in the
//!   VM.
//!
//! A benchmark tool, not shipped: it uses the SDK's hostcall wrappers, which panic on an
//! unexpected status.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType};

#[derive(Default)]
struct Probes {
    /// Clock reads at the request's start and again when it is logged.
    clock_reads: usize,
    pairs: bool,
    sets: usize,
    adds: usize,
    set_pairs: bool,
    status: bool,
    code: bool,
    absent: bool,
}

#[derive(Default)]
struct ProbeRoot {
    probes: Rc<Probes>,
}

struct ProbeHttp {
    probes: Rc<Probes>,
}

impl Context for ProbeRoot {}
impl Context for ProbeHttp {}

impl RootContext for ProbeRoot {
    fn on_configure(&mut self, size: usize) -> bool {
        let text = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size)
            .ok()
            .flatten()
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let mut probes = Probes::default();
        for probe in text.split(',').map(str::trim) {
            match probe {
                "time" => probes.clock_reads = 1,
                "time10" => probes.clock_reads = 10,
                "pairs" => probes.pairs = true,
                "set1" => probes.sets = 1,
                "set2" => probes.sets = 2,
                "add1" => probes.adds = 1,
                "setpairs" => probes.set_pairs = true,
                "status" => probes.status = true,
                "code" => probes.code = true,
                "absent" => probes.absent = true,
                "" => {}
                other => {
                    log::error!("probe-filter: unknown probe {other:?}");
                    return false;
                }
            }
        }
        self.probes = Rc::new(probes);
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(ProbeHttp {
            probes: self.probes.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

const TRACE_HEADERS: [(&str, &str); 2] = [
    (
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
    ),
    (
        "uber-trace-id",
        "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:0",
    ),
];

impl HttpContext for ProbeHttp {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        for _ in 0..self.probes.clock_reads {
            let _ = hostcalls::get_current_time();
        }
        if self.probes.pairs {
            let _ = hostcalls::get_map(MapType::HttpRequestHeaders);
        }
        if self.probes.set_pairs {
            if let Ok(mut headers) = hostcalls::get_map(MapType::HttpRequestHeaders) {
                headers.extend(
                    TRACE_HEADERS
                        .iter()
                        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned())),
                );
                let pairs: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_str()))
                    .collect();
                let _ = hostcalls::set_map(MapType::HttpRequestHeaders, pairs);
            }
        }
        for (name, value) in TRACE_HEADERS.iter().take(self.probes.sets) {
            let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value));
        }
        for (name, value) in TRACE_HEADERS.iter().take(self.probes.adds) {
            let _ = hostcalls::add_map_value(MapType::HttpRequestHeaders, name, value);
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        for _ in 0..self.probes.clock_reads {
            let _ = hostcalls::get_current_time();
        }
        if self.probes.status {
            let _ = hostcalls::get_map_value(MapType::HttpResponseHeaders, ":status");
        }
        if self.probes.absent {
            let _ = hostcalls::get_map_value(MapType::HttpResponseHeaders, "x-veza-absent");
        }
        if self.probes.code {
            let _ = hostcalls::get_property(vec!["response", "code"]);
        }
    }
}

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::<ProbeRoot>::default() });
}}
