//! The module's access logger (`envoy.access_loggers.dynamic_modules`, `logger_name:
//! veza_observability`). Envoy calls it once per request, at the end, where the filter's hooks
//! run at every stage of a request: a gateway whose `count_in_logger` names it (its
//! `logger_config`) has its requests counted here, each once, and runs the filter only on the
//! routes that need it.
//!
//! A logger counts through its gateway: that filter config's families, cores and series. It
//! finds the gateway by name when it first logs and again whenever the one it had is gone (a
//! configuration update makes the new filter config before the old one goes, so the newest of
//! a name is found). It holds the gateway's [`Gateway::open`] while it counts, so nothing
//! reaches Envoy's filter config once Envoy has destroyed it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, Weak};

use veza_observability_core::exchange::Exchange;

use crate::abi::{self, Buffer, EnvoyPtr, ModulePtr};
use crate::gateway::{self, Gateway, Slot};
use crate::hooks::{made_or_refused, report};
use crate::host::LogHost;

/// The `logger_name` this library answers to.
const LOGGER_NAME: &[u8] = b"veza_observability";

/// `envoy_dynamic_module_type_access_log_type`: the end of a downstream request, the one log
/// a request is counted at (periodic and upstream logs are not requests).
pub const DOWNSTREAM_END: u32 = 6;

/// The gateways that count in a logger, by that logger's name, newest last.
static GATEWAYS: Mutex<Vec<(String, Weak<Gateway>)>> = Mutex::new(Vec::new());

/// Main thread, a filter config made: its gateway, if an access logger counts for it.
pub fn register(gateway: &Arc<Gateway>) {
    let Some(name) = gateway.count_in_logger() else {
        return;
    };
    let mut gateways = gateway::lock(&GATEWAYS);
    gateways.retain(|(_, known)| known.strong_count() > 0);
    gateways.push((name, Arc::downgrade(gateway)));
}

/// The newest open gateway that counts in the logger `name`.
fn find(name: &str) -> Option<Arc<Gateway>> {
    let gateways = gateway::lock(&GATEWAYS);
    (gateways.iter().rev())
        .filter(|(known, _)| known == name)
        .filter_map(|(_, gateway)| gateway.upgrade())
        .find(|gateway| gateway.open().is_some())
}

/// One logger config: the name gateways count in it by.
struct LoggerConfig {
    name: String,
}

/// One worker's logger: Envoy makes one per worker thread, and calls it on that thread only.
struct Logger {
    name: String,
    gateway: Weak<Gateway>,
    /// The log has said there is no gateway to count for (once per worker).
    warned: bool,
}

/// The logger's configuration is the name a gateway's `count_in_logger` gives: 1 to 64
/// characters without control characters, as there.
fn logger_name(logger: &[u8], configuration: &[u8]) -> Result<String, String> {
    if logger != LOGGER_NAME {
        return Err(format!(
            "unknown logger_name {:?}: this module's is \"veza_observability\"",
            String::from_utf8_lossy(logger)
        ));
    }
    let name = std::str::from_utf8(configuration)
        .map_err(|_| "logger_config: the name is not UTF-8".to_owned())?;
    if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err(format!(
            "logger_config: {name:?} must be 1 to 64 characters without control characters, \
             the count_in_logger of the gateway it counts for"
        ));
    }
    Ok(name.to_owned())
}

/// Main thread: the logger's configuration; NULL refuses it.
///
/// # Safety
/// Envoy's buffers, valid during the call.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_access_logger_config_new(
    _config: EnvoyPtr,
    name: Buffer,
    configuration: Buffer,
) -> ModulePtr {
    // SAFETY: the caller's guarantee.
    let (name, configuration) = unsafe { (name.bytes(), configuration.bytes()) };
    match made_or_refused("the logger configuration", || {
        logger_name(name, configuration)
    }) {
        Some(name) => Box::into_raw(Box::new(LoggerConfig { name }))
            .cast_const()
            .cast(),
        None => std::ptr::null(),
    }
}

/// # Safety
/// A logger config this library made, destroyed once.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_access_logger_config_destroy(config: ModulePtr) {
    // SAFETY: the caller's guarantee.
    drop(unsafe { Box::from_raw(config.cast::<LoggerConfig>().cast_mut()) });
}

/// A worker's logger; NULL leaves that worker's requests unlogged here.
///
/// # Safety
/// A logger config this library made.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_access_logger_new(
    config: ModulePtr,
    _logger: EnvoyPtr,
) -> ModulePtr {
    // SAFETY: the caller's guarantee.
    let config = unsafe { &*config.cast::<LoggerConfig>() };
    let made = catch_unwind(|| Logger {
        name: config.name.clone(),
        gateway: Weak::new(),
        warned: false,
    });
    match made {
        Ok(logger) => Box::into_raw(Box::new(logger)).cast_const().cast(),
        Err(_) => std::ptr::null(),
    }
}

/// # Safety
/// A logger this library made, destroyed once.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_access_logger_destroy(logger: ModulePtr) {
    // SAFETY: the caller's guarantee.
    let logger = unsafe { Box::from_raw(logger.cast::<Logger>().cast_mut()) };
    let _ = catch_unwind(AssertUnwindSafe(|| drop(logger)));
}

/// Nothing is buffered here: each request is counted as it is logged.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_access_logger_flush(_logger: ModulePtr) {}

/// A worker thread: one logged request, counted once at its downstream end.
///
/// # Safety
/// Envoy's object for the logged request, and a logger this library made for this thread.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_access_logger_log(
    envoy: EnvoyPtr,
    logger: ModulePtr,
    log_type: u32,
) {
    if log_type != DOWNSTREAM_END || logger.is_null() {
        return;
    }
    // SAFETY: the caller's guarantee: this thread's logger, called on this thread only.
    let logger = unsafe { &mut *logger.cast::<Logger>().cast_mut() };
    // SAFETY: Envoy's object for the logged request, during the call.
    let worker =
        unsafe { abi::envoy_dynamic_module_callback_access_logger_get_worker_index(envoy) };
    // The gateway this logger counted for last, else (it closed, or there was none) the
    // newest open one of its name.
    let mut looked_up = false;
    loop {
        let gateway = match logger.gateway.upgrade() {
            Some(gateway) => gateway,
            None if looked_up => return,
            None => {
                looked_up = true;
                match find(&logger.name) {
                    Some(gateway) => {
                        logger.gateway = Arc::downgrade(&gateway);
                        gateway
                    }
                    None => return logger.warn_once(),
                }
            }
        };
        let slot = worker as usize;
        match catch_unwind(AssertUnwindSafe(|| count(&gateway, slot, envoy))) {
            Ok(true) => return,
            // Closed since this logger last counted: look for its successor.
            Ok(false) => logger.gateway = Weak::new(),
            Err(payload) => {
                let _ = catch_unwind(AssertUnwindSafe(|| {
                    report(&gateway, Some(slot), "access_log", payload.as_ref())
                }));
                return;
            }
        }
    }
}

impl Logger {
    fn warn_once(&mut self) {
        if !self.warned {
            self.warned = true;
            let why = format!(
                "veza-observability: no filter config counts in access logger {:?} \
                 (count_in_logger): its requests are not counted",
                self.name
            );
            abi::log(abi::LOG_WARN, &why);
        }
    }
}

/// Counts one request with the worker's core, if the filter config is still there.
fn count(gateway: &Gateway, worker: usize, envoy: EnvoyPtr) -> bool {
    let Some(_open) = gateway.open() else {
        return false;
    };
    if let Some((_, slot)) = gateway.slot(worker) {
        let mut slot = gateway::lock(slot);
        let Slot { worker, series, .. } = &mut *slot;
        let mut host = LogHost::new(gateway, series, gateway.config(), envoy);
        Exchange::new(0).logged(worker, &mut host);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::logger_name;

    #[test]
    fn the_logger_is_named_and_configured_with_a_gateways_name() {
        assert_eq!(
            logger_name(b"veza_observability", b"veza"),
            Ok("veza".to_owned())
        );
        assert_eq!(
            logger_name(b"other", b"veza"),
            Err("unknown logger_name \"other\": this module's is \"veza_observability\"".into())
        );
        for bad in [&b""[..], b"a\nb", &[b'x'; 65]] {
            let err = logger_name(b"veza_observability", bad).unwrap_err();
            assert!(err.starts_with("logger_config: "), "{err}");
        }
        assert_eq!(
            logger_name(b"veza_observability", b"\xff"),
            Err("logger_config: the name is not UTF-8".into())
        );
    }
}
