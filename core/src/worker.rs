//! One worker of the gateway: the compiled configuration and the state every request of that
//! worker shares (metrics, health rounds, the span queue, active users). A host creates one per
//! worker (a proxy-wasm root context, a native module's per-thread state), drives it with
//! ticks and call answers, and hands it to each request's [`crate::exchange::Exchange`].

use std::cell::RefCell;

use crate::active_users::ActiveUsers;
use crate::config::{self, ConfigError, Settings};
use crate::exposition::Scrapes;
use crate::health::{self, CallResult, Failure, Health};
use crate::host::{CallRefused, Calls, Host, HostError};
use crate::labels;
use crate::metrics::business::BusinessMetrics;
use crate::metrics::connections::ConnectionMetrics;
use crate::metrics::http::HttpMetrics;
use crate::metrics::names;
use crate::metrics::registry::{GaugeHandle, HistogramHandle, Operation, Registry};
use crate::metrics::streams::StreamMetrics;
use crate::shared::{self, keys, Update};
use crate::trace::export::Exporter;

/// Tick period while health checks are configured: a waiting `/ready` probe starts its round
/// within one tick.
const HEALTH_TICK_MS: u32 = 20;
/// Longest wait before a full batch of spans is sent.
const EXPORT_TICK_MS: u32 = 100;
/// Tick period for `active_users` when metrics are flushed after every request.
const ACTIVE_USERS_TICK_MS: u32 = 1000;
/// Most bytes of a call's response body read (an exporter's page is about 100 KB), except the
/// admin page the exposition reads ([`Worker::call_body_limit`]).
pub const MAX_CALL_BODY: usize = 1 << 20;
/// Tick period of the stats listener's filter: a scrape's admin call starts within one tick.
const EXPOSITION_TICK_MS: u32 = 20;
/// Tick period for health checks and scrapes on a host that ticks the worker as soon as a
/// probe or a scrape starts waiting: background rounds and call expiry only.
const BACKGROUND_TICK_MS: u32 = 1000;

/// A configured worker. Its state sits behind a `RefCell`: callbacks never nest, so a borrow
/// never finds it taken; if one did, the work would be skipped rather than the worker stopped.
pub struct Worker {
    pub settings: Settings,
    /// When the first worker of this gateway was configured: `/live`'s uptime.
    pub started_nanos: u64,
    pub state: RefCell<State>,
    last_flush_nanos: std::cell::Cell<u64>,
}

/// Mutable per-worker state.
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
    /// Per health check: `dependency_up` (defined at the first result, so never reported
    /// down before it was checked) and `dependency_check_duration_seconds`.
    dependency_metrics: Vec<(Option<Option<GaugeHandle>>, Option<HistogramHandle>)>,
    /// When this worker next asks whether a background health round is due.
    next_check_nanos: u64,
    /// `veza_observability_vm_memory_bytes`, defined at the first flush of a host that has a
    /// figure of its own (a wasm VM; not a native module, whose memory is Envoy's).
    memory: Option<Option<GaugeHandle>>,
    /// Scrapes of the stats listener's `/metrics` waiting for the admin call.
    pub scrapes: Scrapes,
    /// Envoy's tracer was seen replacing the filter's context (logged once per worker).
    pub tracer_conflict_logged: bool,
}

impl Worker {
    /// Reads and compiles the plugin configuration and defines the metrics. An invalid
    /// configuration is refused with the field it is in; nothing is defined then.
    pub fn configure(
        host: &mut dyn Host,
        configuration: Option<&[u8]>,
        now: u64,
    ) -> Result<Worker, ConfigError> {
        let settings = config::load(configuration)?;
        let mut registry = Registry::new(host);
        let http = HttpMetrics::new();
        let mut connections = ConnectionMetrics::new();
        connections.define_chat_services(&settings, &mut registry, host);
        let streams = StreamMetrics::new();
        let business = BusinessMetrics::new(&settings.business, &mut registry, host);
        let exporter = settings
            .tracing
            .collector
            .clone()
            .map(|collector| Exporter::new(collector, &mut registry, host, now));
        let active_users = settings
            .active_users
            .enabled
            .then(|| ActiveUsers::new(&settings.active_users, &mut registry, host));
        let dependency_metrics = settings
            .health
            .checks
            .iter()
            .map(|check| {
                let duration = registry.define_histogram(
                    host,
                    names::DEPENDENCY_CHECK_DURATION_SECONDS,
                    &[(names::LABEL_DEPENDENCY, check.name.as_str())],
                );
                (None, duration)
            })
            .collect();
        let started_nanos = first_start(host, now);
        if let Err(err) = shared::prepare(host) {
            // The budgets then hold per worker.
            registry.host_error(Operation::SharedData, err, "the budgets' sets");
        }
        Ok(Worker {
            settings,
            started_nanos,
            last_flush_nanos: std::cell::Cell::new(now),
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
                next_check_nanos: 0,
                memory: None,
                scrapes: Scrapes::default(),
                tracer_conflict_logged: false,
            }),
        })
    }

    /// How often the host should call [`Worker::tick`]: the shortest period any part needs,
    /// 0 (never) when none needs one.
    pub fn tick_period_ms(&self) -> u32 {
        self.period_ms(HEALTH_TICK_MS, EXPOSITION_TICK_MS)
    }

    /// The period for a host that also calls [`Worker::tick`] as soon as a request pauses
    /// for it ([`crate::exchange::Next::Pause`] without a reply: a `/ready` probe waiting for
    /// a round, a scrape waiting for its call). A waiting probe then needs no fast tick, and
    /// the periodic work alone sets the period.
    pub fn background_tick_period_ms(&self) -> u32 {
        self.period_ms(BACKGROUND_TICK_MS, BACKGROUND_TICK_MS)
    }

    fn period_ms(&self, health_ms: u32, exposition_ms: u32) -> u32 {
        let settings = &self.settings;
        let health_active = settings.health.enabled && !settings.health.checks.is_empty();
        [
            settings.flush_interval_ms,
            if health_active { health_ms } else { 0 },
            if settings.exposition.is_some() {
                exposition_ms
            } else {
                0
            },
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
        .unwrap_or(0)
    }

    /// The line the host logs once configured.
    pub fn describe(&self) -> String {
        let settings = &self.settings;
        format!(
            "configured {} services, {} route templates, max_series {}, metrics flushed {}, {} health checks",
            settings.routes.services().len(),
            settings.routes.templates().len(),
            settings.max_series,
            match settings.flush_interval_ms {
                0 => "after every request".to_owned(),
                ms => format!("every {ms} ms"),
            },
            if settings.health.enabled { settings.health.checks.len() } else { 0 },
        ) + &match &settings.count_in_logger {
            Some(name) => format!(", requests counted in access logger {name:?}"),
            None => String::new(),
        }
    }

    /// Hands what is pending to the host: a reconfiguration or shutdown keeps what this worker
    /// counted.
    pub fn flush(&self, host: &mut dyn Calls) {
        if let Ok(mut state) = self.state.try_borrow_mut() {
            state.flush(host);
        }
    }

    /// The periodic work: the metrics flush (with the active-user gauge), the span export, and
    /// `/ready` rounds, started for waiting probes and ended when their calls time out.
    pub fn tick(&self, host: &mut dyn Calls, now: u64) {
        let flush_due = now.saturating_sub(self.last_flush_nanos.get())
            >= u64::from(self.settings.flush_interval_ms) * 1_000_000;
        let Ok(mut state) = self.state.try_borrow_mut() else {
            return;
        };
        if flush_due || self.settings.flush_interval_ms == 0 {
            let State {
                registry,
                active_users,
                ..
            } = &mut *state;
            if let Some(active_users) = active_users {
                active_users.publish(registry, host, now);
            }
            state.flush(host);
            self.last_flush_nanos.set(now);
        }
        if let State {
            exporter: Some(exporter),
            registry,
            ..
        } = &mut *state
        {
            exporter.tick(registry, now, &mut |collector, body| {
                let headers = [
                    (":method", "POST"),
                    (":path", collector.path.as_str()),
                    (":authority", collector.authority.as_str()),
                    ("content-type", "application/json"),
                ];
                host.dispatch(
                    &collector.cluster,
                    &headers,
                    Some(body),
                    collector.timeout_ms,
                )
                .ok()
            });
        }
        if let (Some(exposition), true) = (&self.settings.exposition, state.scrapes.wants_call()) {
            let headers = [
                (":method", "GET"),
                (":path", crate::exposition::ADMIN_PATH),
                (":authority", exposition.admin_cluster.as_str()),
            ];
            match host.dispatch(
                &exposition.admin_cluster,
                &headers,
                None,
                exposition.timeout_ms,
            ) {
                Ok(token) => state.scrapes.calling(token),
                Err(refused) => {
                    let why = match refused {
                        CallRefused::UnknownCluster => "the admin cluster is unknown to Envoy",
                        CallRefused::Failed => "the admin call could not be made",
                    };
                    let (answer, waiters) = state.scrapes.refused(why);
                    answer_all(host, &answer, &waiters);
                }
            }
        }
        let settings = &self.settings.health;
        if state.health.wants_round() {
            // A round for probes refreshes the dependencies as well as a background one.
            self.claim_round(host, &mut state, now);
            self.start_round(host, &mut state, now);
        } else if self.background_round_due(host, &mut state, now) {
            self.start_round(host, &mut state, now);
        }
        if state.health.round_in_flight() && state.health.expire(settings, now) {
            self.finish_round(host, &mut state, now);
        }
    }

    /// A host's hook failed (a native hook that panicked, caught at the FFI boundary): logged
    /// once, counted in `veza_observability_errors_total{operation="hook"}`.
    pub fn hook_failed(&self, hook: &str, why: &str) {
        if let Ok(mut state) = self.state.try_borrow_mut() {
            state.registry.host_error(Operation::Hook, why, hook);
        }
    }

    /// The families a host that fixes its metrics when the configuration loads defines for
    /// these settings: every declared family and business counter, less the label-less
    /// families of features the settings leave off. A host that defines a label-less family
    /// shows it at once, so these would be series the filter never counts in.
    pub fn families(settings: &Settings) -> Vec<names::Declared> {
        let mut off = Vec::new();
        if settings.tracing.collector.is_none() {
            off.extend([
                names::TRACE_SPANS_EXPORTED_TOTAL,
                names::TRACE_EXPORT_FAILURES_TOTAL,
            ]);
        }
        if !settings.active_users.enabled {
            off.push(names::ACTIVE_USERS);
        }
        let business = settings
            .business
            .rules
            .iter()
            .map(|rule| rule.counter.as_str());
        names::declared(business)
            .into_iter()
            .filter(|family| !off.contains(&family.name.as_str()))
            .collect()
    }

    /// How much of a call's response body the host should read: the admin page of the
    /// exposition is larger than any other answer.
    pub fn call_body_limit(&self, token: u32) -> usize {
        match self.state.try_borrow() {
            Ok(state) if state.scrapes.owns(token) => crate::exposition::MAX_ADMIN_BODY,
            _ => MAX_CALL_BODY,
        }
    }

    /// The answer to one of this worker's calls, as the host read it: `status` is `None` when
    /// the call failed with no response, `body` at most [`MAX_CALL_BODY`] bytes. A read the
    /// host failed is counted, and the answer judged without it.
    pub fn call_response(
        &self,
        host: &mut dyn Calls,
        token: u32,
        status: Result<Option<Vec<u8>>, HostError>,
        body: Result<Option<Vec<u8>>, HostError>,
        now: u64,
    ) {
        let Ok(mut state) = self.state.try_borrow_mut() else {
            return;
        };
        let status = state
            .registry
            .read(Operation::GetHeader, status)
            .map(|code| labels::status_code_from_header(&code));
        let body = state
            .registry
            .read(Operation::GetBuffer, body)
            .unwrap_or_default();
        let body = body.as_slice();
        if state.scrapes.owns(token) {
            // Envoy's own replies (timeout, no connection) are no answer from the admin.
            let answer = status
                .and_then(|s| u16::try_from(s).ok())
                .filter(|&s| health::check::envoy_local_reply(s, body).is_none());
            let (answer, waiters) = state.scrapes.answered(answer, body);
            answer_all(host, &answer, &waiters);
            return;
        }
        if let State {
            exporter: Some(exporter),
            registry,
            ..
        } = &mut *state
        {
            if exporter.owns(token) {
                // Envoy's own replies (timeout, no connection) mean the collector never
                // answered; any status outside u16 is no HTTP answer either.
                let answer = status
                    .and_then(|s| u16::try_from(s).ok())
                    .filter(|&s| health::check::envoy_local_reply(s, body).is_none());
                exporter.responded(registry, now, answer);
                return;
            }
        }
        let result = status.map(|code| CallResult {
            status: u16::try_from(code).unwrap_or(0),
            body,
        });
        if state
            .health
            .responded(&self.settings.health, token, result, now)
        {
            self.finish_round(host, &mut state, now);
        }
    }
}

impl State {
    /// Hands the aggregated metrics to the host, with the worker's memory size.
    fn flush(&mut self, host: &mut dyn Calls) {
        if let Some(bytes) = host.memory_bytes() {
            let registry = &mut self.registry;
            let gauge = *self
                .memory
                .get_or_insert_with(|| registry.define_gauge(host, names::VM_MEMORY_BYTES, &[]));
            if let Some(gauge) = gauge {
                self.registry.set_gauge(host, gauge, bytes);
            }
        }
        self.registry.flush(host);
    }
}

/// A per-worker generator of ids (wyrand), seeded from the system's random source (WASI's
/// `random_get`, which Envoy serves from BoringSSL). The ids need to be unique, not secret.
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

/// Answers every waiting scrape; one that went away cannot be.
fn answer_all(host: &mut dyn Calls, answer: &crate::exposition::Answer, waiters: &[u32]) {
    for &waiter in waiters {
        let _ = host.answer(waiter, answer.status, answer.content_type(), &answer.body);
    }
}

/// The time the first worker of this gateway configured the filter, shared by all workers so
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

mod health_rounds;

#[cfg(test)]
mod tests;
