use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use crate::config::{self, Settings};
use crate::metrics::http::HttpMetrics;
use crate::metrics::registry::Registry;

use super::abi::{self, EnvoyHost};
use super::http::HttpFilter;

/// What one configuration of the plugin shares with its HTTP contexts.
pub struct Plugin {
    pub settings: Settings,
    pub state: RefCell<State>,
}

/// Mutable per-VM state. Callbacks never nest, so a borrow never finds it taken; if one did,
/// the request's metrics would be skipped rather than the VM trapped.
pub struct State {
    pub registry: Registry,
    pub http: HttpMetrics,
}

#[derive(Default)]
pub struct Root {
    plugin: Option<Rc<Plugin>>,
}

impl Root {
    fn flush(&self) {
        if let Some(plugin) = &self.plugin {
            if let Ok(mut state) = plugin.state.try_borrow_mut() {
                state.registry.flush(&mut EnvoyHost);
            }
        }
    }
}

impl Context for Root {
    /// The plugin is going away (reconfiguration, shutdown): hand over what is pending.
    fn on_done(&mut self) -> bool {
        self.flush();
        true
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let bytes = match abi::plugin_configuration(plugin_configuration_size) {
            Ok(bytes) => bytes,
            Err(err) => {
                log::error!("veza-observability: cannot read the plugin configuration: {err}");
                return false;
            }
        };
        let settings = match config::load(bytes.as_deref()) {
            Ok(settings) => settings,
            Err(err) => {
                log::error!("veza-observability: invalid plugin configuration: {err}");
                return false;
            }
        };
        // A reconfiguration keeps what the previous one counted.
        self.flush();
        let mut host = EnvoyHost;
        let registry = Registry::new(&mut host);
        let http = HttpMetrics::new(&mut host);
        let period = settings.flush_interval_ms;
        if let Err(err) = abi::set_tick_period_ms(period) {
            log::error!(
                "veza-observability: cannot set the metrics flush tick ({period} ms): {err}"
            );
            return false;
        }
        log::info!(
            "veza-observability: configured {} services, {} route templates, max_series {}, metrics flushed {}",
            settings.routes.services().len(),
            settings.routes.templates().len(),
            settings.max_series,
            if period == 0 { "after every request".to_owned() } else { format!("every {period} ms") },
        );
        self.plugin = Some(Rc::new(Plugin {
            settings,
            state: RefCell::new(State { registry, http }),
        }));
        true
    }

    fn on_tick(&mut self) {
        self.flush();
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(HttpFilter::new(self.plugin.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
