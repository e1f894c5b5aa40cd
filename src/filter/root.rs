//! The root context: one per worker VM. It reads the plugin configuration into the core's
//! [`Worker`], and hands it Envoy's ticks and call answers.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, MapType};

use crate::worker::Worker;

use super::abi::{self, EnvoyHost};
use super::http::HttpFilter;

#[derive(Default)]
pub struct Root {
    worker: Option<Rc<Worker>>,
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, headers: usize, body_size: usize, _: usize) {
        let Some(worker) = &self.worker else { return };
        // No headers: the call failed without a response.
        let status = match headers {
            0 => Ok(None),
            _ => abi::header(MapType::HttpCallResponseHeaders, ":status"),
        };
        let body = abi::buffer(
            BufferType::HttpCallResponseBody,
            body_size.min(worker.call_body_limit(token)),
        );
        let now = abi::current_time_nanos().unwrap_or(0);
        worker.call_response(&mut EnvoyHost, token, status, body, now);
    }

    /// The plugin is going away (reconfiguration, shutdown): hand over what is pending.
    fn on_done(&mut self) -> bool {
        if let Some(worker) = &self.worker {
            worker.flush(&mut EnvoyHost);
        }
        true
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let bytes = match abi::buffer(BufferType::PluginConfiguration, plugin_configuration_size) {
            Ok(bytes) => bytes,
            Err(err) => {
                log::error!("veza-observability: cannot read the plugin configuration: {err}");
                return false;
            }
        };
        let now = abi::current_time_nanos().unwrap_or(0);
        let configured = Worker::configure(&mut EnvoyHost, bytes.as_deref(), now).and_then(|w| {
            veza_observability_core::config::counts_in_filter(&w.settings).map(|()| w)
        });
        let worker = match configured {
            Ok(worker) => worker,
            Err(err) => {
                log::error!("veza-observability: invalid plugin configuration: {err}");
                return false;
            }
        };
        // A reconfiguration keeps what the previous one counted.
        if let Some(previous) = &self.worker {
            previous.flush(&mut EnvoyHost);
        }
        let period = worker.tick_period_ms();
        if let Err(err) = abi::set_tick_period_ms(period) {
            log::error!("veza-observability: cannot set the tick period ({period} ms): {err}");
            return false;
        }
        log::info!("veza-observability: {}", worker.describe());
        self.worker = Some(Rc::new(worker));
        true
    }

    fn on_tick(&mut self) {
        if let Some(worker) = &self.worker {
            let now = abi::current_time_nanos().unwrap_or(0);
            worker.tick(&mut EnvoyHost, now);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(HttpFilter::new(context_id, self.worker.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
