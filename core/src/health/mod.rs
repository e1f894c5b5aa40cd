//! `/live` and `/ready` answered at the gateway.
//!
//! `/live` says the gateway's filter runs. `/ready` runs the configured checks: one HTTP call
//! per check through an Envoy cluster, each with its own timeout, judged by status class and
//! optionally a body substring, a JSON field or a Prometheus sample (`pg_up 1` from an
//! exporter). The answer has the shape of Veza's own ReadyHandler.
//!
//! Probe storms cost one round of calls per cache period per worker: a fresh report is served
//! from memory, and every probe that arrives while a round runs waits for that same round.
//! This module is the state machine; the glue dispatches the calls and answers the probes.

pub mod check;
pub mod config;

pub use check::{CallResult, Failure, Outcome};
pub use config::{Check, HealthSettings};

use crate::routes::RouteMatch;

/// Probes waiting for a round, per worker; past this, a probe gets 503 at once.
pub const MAX_WAITERS: usize = 4096;

/// The content type of the `/live` and `/ready` answers.
pub const CONTENT_TYPE: &str = "application/json";

/// What a request is to the health endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Live,
    Ready,
    /// Anything else: the request goes on to the services.
    Other,
}

/// One finished round.
#[derive(Debug, Clone)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
    pub completed_nanos: u64,
}

impl Report {
    pub fn ready(&self, settings: &HealthSettings) -> bool {
        settings
            .checks
            .iter()
            .zip(&self.outcomes)
            .all(|(check, outcome)| !check.required || outcome.failure.is_none())
    }

    pub fn http_status(&self, settings: &HealthSettings) -> u32 {
        if self.ready(settings) {
            200
        } else {
            503
        }
    }

    /// `{"status":"ready","checks":{"database":{"status":"unready","error":"timeout"}}}`, checks
    /// in configuration order; optional checks say so.
    pub fn to_json(&self, settings: &HealthSettings) -> String {
        let mut json = String::with_capacity(64 + 48 * self.outcomes.len());
        json.push_str(r#"{"status":"#);
        json.push_str(if self.ready(settings) {
            r#""ready""#
        } else {
            r#""unready""#
        });
        json.push_str(r#","checks":{"#);
        for (index, (check, outcome)) in settings.checks.iter().zip(&self.outcomes).enumerate() {
            if index > 0 {
                json.push(',');
            }
            push_json_string(&mut json, &check.name);
            json.push_str(r#":{"status":"#);
            match &outcome.failure {
                None => json.push_str(r#""ready""#),
                Some(failure) => {
                    json.push_str(r#""unready","error":"#);
                    let mut error = failure.category();
                    if settings.expose_errors {
                        if let Some(detail) = &outcome.detail {
                            error.push_str(": ");
                            error.push_str(detail);
                        }
                    }
                    push_json_string(&mut json, &error);
                }
            }
            if !check.required {
                json.push_str(r#","optional":true"#);
            }
            json.push('}');
        }
        json.push_str("}}");
        json
    }
}

fn push_json_string(json: &mut String, text: &str) {
    match serde_json::to_string(text) {
        Ok(quoted) => json.push_str(&quoted),
        Err(_) => json.push_str(r#""""#),
    }
}

/// A check's call as dispatched: its token, or the reason it never left.
#[derive(Debug)]
struct Pending {
    token: Option<u32>,
    outcome: Option<Outcome>,
    duration_nanos: u64,
}

#[derive(Debug)]
struct Round {
    started_nanos: u64,
    pending: Vec<Pending>,
}

/// Per-worker health state.
#[derive(Debug, Default)]
pub struct Health {
    cached: Option<Report>,
    round: Option<Round>,
    waiters: Vec<u32>,
}

/// What to send a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u32,
    pub body: String,
}

/// A finished round: the report, and per check how long its call took.
pub struct Finished<'a> {
    pub report: &'a Report,
    pub durations_nanos: Vec<u64>,
    pub waiters: Vec<u32>,
}

impl Health {
    /// Which of the gateway's own endpoints a request is, from its route match: `/live` and
    /// `/ready` are routes of the `gateway` service in the route table (GET and HEAD, query
    /// and one trailing slash ignored, as every route), so the request the filter answers is
    /// exactly the one counted under `service="gateway"`.
    pub fn classify(settings: &HealthSettings, route: RouteMatch, authority: &[u8]) -> Endpoint {
        let endpoint = settings.route_endpoint(route);
        if endpoint == Endpoint::Other {
            return Endpoint::Other;
        }
        if settings.authorities.is_empty() {
            return endpoint;
        }
        let host = strip_port(authority);
        if settings
            .authorities
            .iter()
            .any(|allowed| allowed.as_bytes().eq_ignore_ascii_case(host))
        {
            endpoint
        } else {
            Endpoint::Other
        }
    }

    /// The answer to `/live`.
    pub fn live(now_nanos: u64, started_nanos: u64) -> Answer {
        let uptime = go_duration(now_nanos.saturating_sub(started_nanos));
        Answer {
            status: 200,
            body: format!(
                r#"{{"status":"alive","timestamp":{},"uptime":"{uptime}"}}"#,
                now_nanos / 1_000_000_000
            ),
        }
    }

    /// A `/ready` probe: the answer now if a fresh report exists, else `None` and the probe
    /// waits for the next round (`context_id` is answered by [`Health::finish`]).
    pub fn ready(
        &mut self,
        settings: &HealthSettings,
        now_nanos: u64,
        context_id: u32,
    ) -> Option<Answer> {
        if let Some(report) = &self.cached {
            let age = now_nanos.saturating_sub(report.completed_nanos);
            if age < settings.cache_nanos {
                return Some(answer(settings, report));
            }
        }
        if self.waiters.len() >= MAX_WAITERS {
            return Some(Answer {
                status: 503,
                body: r#"{"status":"unready","checks":{},"error":"too many probes waiting"}"#
                    .to_owned(),
            });
        }
        self.waiters.push(context_id);
        None
    }

    /// A waiting probe went away before its answer.
    pub fn forget(&mut self, context_id: u32) {
        self.waiters.retain(|&id| id != context_id);
    }

    /// Whether the root should start a round now.
    pub fn wants_round(&self) -> bool {
        !self.waiters.is_empty() && self.round.is_none()
    }

    pub fn round_in_flight(&self) -> bool {
        self.round.is_some()
    }

    /// Starts a round; the glue then dispatches every check and reports each with
    /// [`Health::dispatched`].
    pub fn start_round(&mut self, settings: &HealthSettings, now_nanos: u64) {
        self.round = Some(Round {
            started_nanos: now_nanos,
            pending: settings
                .checks
                .iter()
                .map(|_| Pending {
                    token: None,
                    outcome: None,
                    duration_nanos: 0,
                })
                .collect(),
        });
    }

    /// The dispatch of check `index`: its token, or the failure that kept it from leaving.
    pub fn dispatched(&mut self, index: usize, result: Result<u32, Failure>) {
        let Some(pending) = self
            .round
            .as_mut()
            .and_then(|round| round.pending.get_mut(index))
        else {
            return;
        };
        match result {
            Ok(token) => pending.token = Some(token),
            Err(failure) => {
                pending.outcome = Some(Outcome {
                    failure: Some(failure),
                    detail: None,
                })
            }
        }
    }

    /// A call's response (`result` is `None` when the call failed with no response).
    /// Returns true when the round is complete.
    pub fn responded(
        &mut self,
        settings: &HealthSettings,
        token: u32,
        result: Option<CallResult<'_>>,
        now_nanos: u64,
    ) -> bool {
        let Some(round) = self.round.as_mut() else {
            return false;
        };
        let started = round.started_nanos;
        if let Some((index, pending)) = round
            .pending
            .iter_mut()
            .enumerate()
            .find(|(_, p)| p.token == Some(token) && p.outcome.is_none())
        {
            if let Some(check) = settings.checks.get(index) {
                pending.outcome = Some(check::evaluate(check, result));
                pending.duration_nanos = now_nanos.saturating_sub(started);
            }
        }
        self.round_complete()
    }

    pub fn round_complete(&self) -> bool {
        self.round
            .as_ref()
            .is_some_and(|round| round.pending.iter().all(|p| p.outcome.is_some()))
    }

    /// Guards against a call whose answer never comes (Envoy enforces each call's timeout;
    /// this is the backstop): checks still pending well past their timeout are timeouts.
    pub fn expire(&mut self, settings: &HealthSettings, now_nanos: u64) -> bool {
        const GRACE_NANOS: u64 = 2_000_000_000;
        let Some(round) = self.round.as_mut() else {
            return false;
        };
        let elapsed = now_nanos.saturating_sub(round.started_nanos);
        for (pending, check) in round.pending.iter_mut().zip(&settings.checks) {
            let deadline = u64::from(check.timeout_ms) * 1_000_000 + GRACE_NANOS;
            if pending.outcome.is_none() && elapsed > deadline {
                pending.outcome = Some(Outcome {
                    failure: Some(Failure::Timeout),
                    detail: Some("no answer from the host".to_owned()),
                });
                pending.duration_nanos = elapsed;
            }
        }
        self.round_complete()
    }

    /// Ends a complete round: caches its report and hands over the probes to answer.
    pub fn finish(&mut self, now_nanos: u64) -> Option<Finished<'_>> {
        if !self.round_complete() {
            return None;
        }
        let round = self.round.take()?;
        let mut outcomes = Vec::with_capacity(round.pending.len());
        let mut durations_nanos = Vec::with_capacity(round.pending.len());
        for pending in round.pending {
            outcomes.push(pending.outcome.unwrap_or(Outcome {
                failure: Some(Failure::Timeout),
                detail: None,
            }));
            durations_nanos.push(pending.duration_nanos);
        }
        let report = self.cached.insert(Report {
            outcomes,
            completed_nanos: now_nanos,
        });
        Some(Finished {
            report,
            durations_nanos,
            waiters: std::mem::take(&mut self.waiters),
        })
    }
}

pub fn answer(settings: &HealthSettings, report: &Report) -> Answer {
    Answer {
        status: report.http_status(settings),
        body: report.to_json(settings),
    }
}

/// The host of an `:authority`, without its port.
pub fn strip_port(authority: &[u8]) -> &[u8] {
    // `[::1]:80` keeps its brackets; `host:80` loses the port.
    if authority.starts_with(b"[") {
        return match authority.iter().position(|&b| b == b']') {
            Some(end) => authority.get(..=end).unwrap_or(authority),
            None => authority,
        };
    }
    match authority.iter().rposition(|&b| b == b':') {
        Some(colon) => authority.get(..colon).unwrap_or(authority),
        None => authority,
    }
}

/// Go's `time.Duration.String()` form, as the seed's LiveHandler prints uptime, to the
/// millisecond: `750ms`, `42.5s`, `3m7s`, `26h3m0.25s`.
pub fn go_duration(nanos: u64) -> String {
    let millis = nanos / 1_000_000;
    if millis < 1000 {
        return format!("{millis}ms");
    }
    let hours = millis / 3_600_000;
    let minutes = millis / 60_000 % 60;
    let seconds = millis / 1000 % 60;
    let fraction = millis % 1000;
    let mut text = String::new();
    if hours > 0 {
        text.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        text.push_str(&format!("{minutes}m"));
    }
    if fraction == 0 {
        text.push_str(&format!("{seconds}s"));
    } else {
        let fraction = format!("{fraction:03}");
        text.push_str(&format!("{seconds}.{}s", fraction.trim_end_matches('0')));
    }
    text
}

#[cfg(test)]
mod tests;
