use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, MapType, Status};

use crate::active_users::ActiveUsers;
use crate::config::tracing::CollectorSettings;
use crate::config::{self, Settings};
use crate::health::{self, CallResult, Failure, Health};
use crate::host::Host;
use crate::labels;
use crate::metrics::business::BusinessMetrics;
use crate::metrics::connections::ConnectionMetrics;
use crate::metrics::http::HttpMetrics;
use crate::metrics::names;
use crate::metrics::registry::{GaugeHandle, HistogramHandle, Registry};
use crate::metrics::streams::StreamMetrics;
use crate::shared::keys;
use crate::trace::export::Exporter;

use super::abi::{self, EnvoyHost};
use super::http::HttpFilter;

/// Tick period while health checks are configured: a waiting `/ready` probe starts its round
/// within one tick.
const HEALTH_TICK_MS: u32 = 20;
/// Longest wait before a full batch of spans is sent.
const EXPORT_TICK_MS: u32 = 100;
/// Tick period for `active_users_total` when metrics are flushed after every request.
const ACTIVE_USERS_TICK_MS: u32 = 1000;
/// Most bytes of a check's response body read (an exporter's page is about 100 KB).
const MAX_CHECK_BODY: usize = 1 << 20;

/// What one configuration of the plugin shares with its HTTP contexts.
pub struct Plugin {
    pub settings: Settings,
    pub started_nanos: u64,
    pub state: RefCell<State>,
}

/// Mutable per-VM state. Callbacks never nest, so a borrow never finds it taken; if one did,
/// the work would be skipped rather than the VM trapped.
pub struct State {
    pub registry: Registry,
    pub http: HttpMetrics,
    pub connections: ConnectionMetrics,
    pub streams: StreamMetrics,
    pub business: BusinessMetrics,
    /// `None` when `active_users` is disabled.
    pub active_users: Option<ActiveUsers>,
    pub health: Health,
    /// Trace and span ids.
    pub trace_ids: TraceIds,
    /// The span exporter, when a collector is configured.
    pub exporter: Option<Exporter>,
    /// Per health check: `dependency_up` and `dependency_check_duration_seconds`.
    pub dependency_metrics: Vec<(Option<GaugeHandle>, Option<HistogramHandle>)>,
    /// `veza_observability_vm_memory_bytes`.
    pub vm_memory: Option<GaugeHandle>,
}

impl State {
    /// Hands the aggregated metrics to Envoy, with the VM's memory size.
    fn flush(&mut self) {
        let mut host = EnvoyHost;
        if let Some(gauge) = self.vm_memory {
            self.registry
                .set_gauge(&mut host, gauge, abi::vm_memory_bytes());
        }
        self.registry.flush(&mut host);
    }
}

pub struct Root {
    plugin: Option<Rc<Plugin>>,
    last_flush_nanos: u64,
}

impl Root {
    pub fn new() -> Root {
        Root {
            plugin: None,
            last_flush_nanos: 0,
        }
    }

    fn flush(&self) {
        if let Some(plugin) = &self.plugin {
            if let Ok(mut state) = plugin.state.try_borrow_mut() {
                state.flush();
            }
        }
    }
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, headers: usize, body_size: usize, _: usize) {
        let Some(plugin) = &self.plugin else { return };
        let Ok(mut state) = plugin.state.try_borrow_mut() else {
            return;
        };
        // No headers: the call failed without a response.
        let status = if headers == 0 {
            None
        } else {
            abi::header(MapType::HttpCallResponseHeaders, ":status")
                .ok()
                .flatten()
                .map(|code| labels::status_code_from_header(&code))
        };
        let body = abi::buffer(
            BufferType::HttpCallResponseBody,
            body_size.min(MAX_CHECK_BODY),
        )
        .ok()
        .flatten()
        .unwrap_or_default();
        if let State {
            exporter: Some(exporter),
            registry,
            ..
        } = &mut *state
        {
            if exporter.owns(token) {
                let now = abi::current_time_nanos().unwrap_or(0);
                // Envoy's own replies (timeout, no connection) mean the collector never
                // answered; any status outside u16 is no HTTP answer either.
                let answer = status
                    .and_then(|s| u16::try_from(s).ok())
                    .filter(|&s| health::check::envoy_local_reply(s, &body).is_none());
                exporter.responded(registry, now, answer);
                return;
            }
        }
        let result = status.map(|code| CallResult {
            status: u16::try_from(code).unwrap_or(0),
            body: &body,
        });
        let now = abi::current_time_nanos().unwrap_or(0);
        if state
            .health
            .responded(&plugin.settings.health, token, result, now)
        {
            finish_round(plugin, &mut state, now);
        }
    }

    /// The plugin is going away (reconfiguration, shutdown): hand over what is pending.
    fn on_done(&mut self) -> bool {
        self.flush();
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
        let mut registry = Registry::new(&mut host);
        let http = HttpMetrics::new(&mut host);
        let mut connections = ConnectionMetrics::new(&mut host);
        connections.define_chat_services(&settings, &mut registry, &mut host);
        let streams = StreamMetrics::new(&mut host);
        let business = BusinessMetrics::new(&settings.business, &mut registry, &mut host);
        let exporter = settings.tracing.collector.clone().map(|collector| {
            let now = abi::current_time_nanos().unwrap_or(0);
            Exporter::new(collector, &mut registry, &mut host, now)
        });
        let active_users = settings
            .active_users
            .enabled
            .then(|| ActiveUsers::new(&settings.active_users, &mut registry, &mut host));
        let dependency_metrics = settings
            .health
            .checks
            .iter()
            .map(|check| {
                let up = registry.define_gauge(&mut host, &health::dependency_up_name(check));
                let duration = registry.define_histogram(
                    &mut host,
                    names::DEPENDENCY_CHECK_DURATION_SECONDS,
                    &health::dependency_duration_labels(check),
                );
                (up, duration)
            })
            .collect();
        let vm_memory = registry.define_gauge(&mut host, names::VM_MEMORY_BYTES);
        let now = abi::current_time_nanos().unwrap_or(0);
        let started_nanos = first_start(&mut host, now);
        let health_active = settings.health.enabled && !settings.health.checks.is_empty();
        // The shortest period any part needs; 0 (no tick) when none needs one.
        let period = [
            settings.flush_interval_ms,
            if health_active { HEALTH_TICK_MS } else { 0 },
            if settings.active_users.enabled {
                ACTIVE_USERS_TICK_MS
            } else {
                0
            },
            settings
                .tracing
                .collector
                .as_ref()
                .map_or(0, |c| c.flush_interval_ms.min(EXPORT_TICK_MS)),
        ]
        .into_iter()
        .filter(|&ms| ms > 0)
        .min()
        .unwrap_or(0);
        if let Err(err) = abi::set_tick_period_ms(period) {
            log::error!("veza-observability: cannot set the tick period ({period} ms): {err}");
            return false;
        }
        log::info!(
            "veza-observability: configured {} services, {} route templates, max_series {}, metrics flushed {}, {} health checks",
            settings.routes.services().len(),
            settings.routes.templates().len(),
            settings.max_series,
            match settings.flush_interval_ms {
                0 => "after every request".to_owned(),
                ms => format!("every {ms} ms"),
            },
            if settings.health.enabled { settings.health.checks.len() } else { 0 },
        );
        self.last_flush_nanos = now;
        self.plugin = Some(Rc::new(Plugin {
            settings,
            started_nanos,
            state: RefCell::new(State {
                registry,
                http,
                connections,
                streams,
                business,
                active_users,
                health: Health::default(),
                trace_ids: TraceIds::seeded(now),
                exporter,
                dependency_metrics,
                vm_memory,
            }),
        }));
        true
    }

    fn on_tick(&mut self) {
        let Some(plugin) = self.plugin.clone() else {
            return;
        };
        let now = abi::current_time_nanos().unwrap_or(0);
        let flush_due = now.saturating_sub(self.last_flush_nanos)
            >= u64::from(plugin.settings.flush_interval_ms) * 1_000_000;
        let Ok(mut state) = plugin.state.try_borrow_mut() else {
            return;
        };
        if flush_due || plugin.settings.flush_interval_ms == 0 {
            let State {
                registry,
                active_users,
                ..
            } = &mut *state;
            if let Some(active_users) = active_users {
                active_users.publish(registry, &mut EnvoyHost, now);
            }
            state.flush();
            self.last_flush_nanos = now;
        }
        if let State {
            exporter: Some(exporter),
            registry,
            ..
        } = &mut *state
        {
            exporter.tick(registry, now, &mut export);
        }
        let settings = &plugin.settings.health;
        if state.health.wants_round() {
            state.health.start_round(settings, now);
            for (index, check) in settings.checks.iter().enumerate() {
                state.health.dispatched(index, dispatch(check));
            }
        }
        if state.health.round_in_flight() && state.health.expire(settings, now) {
            finish_round(&plugin, &mut state, now);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(HttpFilter::new(context_id, self.plugin.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One check's call, through the SDK so its answer is routed back to this root context.
fn dispatch(check: &health::Check) -> Result<u32, Failure> {
    let headers = vec![
        (":method", check.method.as_str()),
        (":path", check.path.as_str()),
        (":authority", check.authority.as_str()),
    ];
    let timeout = Duration::from_millis(u64::from(check.timeout_ms));
    match proxy_wasm::hostcalls::dispatch_http_call(&check.cluster, headers, None, vec![], timeout)
    {
        Ok(token) => Ok(token),
        // Envoy's answer for a cluster it does not have.
        Err(Status::BadArgument) => Err(Failure::UnknownCluster),
        Err(_) => Err(Failure::DispatchFailed),
    }
}

/// One export call, through the SDK so its answer is routed back to this root context.
fn export(collector: &CollectorSettings, body: &[u8]) -> Option<u32> {
    let headers = vec![
        (":method", "POST"),
        (":path", collector.path.as_str()),
        (":authority", collector.authority.as_str()),
        ("content-type", "application/json"),
    ];
    let timeout = Duration::from_millis(u64::from(collector.timeout_ms));
    proxy_wasm::hostcalls::dispatch_http_call(
        &collector.cluster,
        headers,
        Some(body),
        vec![],
        timeout,
    )
    .ok()
}

/// Records a complete round's metrics and answers every probe that waited for it.
fn finish_round(plugin: &Plugin, state: &mut State, now: u64) {
    let State {
        registry,
        health,
        dependency_metrics,
        ..
    } = state;
    let Some(finished) = health.finish(now) else {
        return;
    };
    let mut host = EnvoyHost;
    for ((outcome, duration), (up, histogram)) in finished
        .report
        .outcomes
        .iter()
        .zip(&finished.durations_nanos)
        .zip(dependency_metrics.iter())
    {
        if let Some(up) = up {
            registry.set_gauge(&mut host, *up, u64::from(outcome.failure.is_none()));
        }
        if let Some(histogram) = histogram {
            registry.observe(*histogram, *duration);
        }
    }
    let answer = health::answer(&plugin.settings.health, finished.report);
    for waiter in finished.waiters {
        // A probe that went away cannot be answered; nothing to do for it.
        if abi::set_effective_context(waiter).is_ok() {
            let _ = abi::send_json_response(answer.status, &answer.body);
        }
    }
}

/// A per-VM generator of ids (wyrand), seeded from WASI's `random_get`, which Envoy serves
/// from BoringSSL. The ids need to be unique, not secret.
pub struct TraceIds(fastrand::Rng);

impl TraceIds {
    fn seeded(now: u64) -> TraceIds {
        let mut seed = [0u8; 8];
        let seed = match getrandom::fill(&mut seed) {
            Ok(()) => u64::from_le_bytes(seed),
            Err(err) => {
                log::warn!(
                    "veza-observability: no random seed from the host ({err}); using the clock"
                );
                now
            }
        };
        TraceIds(fastrand::Rng::with_seed(seed))
    }
}

impl crate::trace::IdSource for TraceIds {
    fn next_u64(&mut self) -> u64 {
        self.0.u64(..)
    }
}

/// The time the first worker of this Envoy configured the filter, shared by all workers so
/// `/live` reports one uptime.
fn first_start(host: &mut dyn Host, now: u64) -> u64 {
    if let Ok(Some((bytes, _))) = host.get_shared(keys::STARTED) {
        if let Ok(bytes) = <[u8; 8]>::try_from(bytes.as_slice()) {
            return u64::from_le_bytes(bytes);
        }
    }
    let _ = host.set_shared(keys::STARTED, &now.to_le_bytes(), 0);
    now
}
