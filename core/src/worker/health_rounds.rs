//! A worker's `/ready` rounds: when one starts (for probes, at start-up, every
//! `check_interval_ms`), its calls, and what a finished round records and answers. Part of
//! [`Worker`], apart for its size.

use super::*;

impl Worker {
    /// Whether this worker runs the gateway's next background round now: at start-up, then
    /// every `check_interval_ms`, claimed by one worker through shared data so the gateway
    /// runs one round per interval whatever its number of workers.
    pub(super) fn background_round_due(
        &self,
        host: &mut dyn Calls,
        state: &mut State,
        now: u64,
    ) -> bool {
        let settings = &self.settings.health;
        let interval = settings.check_interval_nanos;
        if !settings.enabled
            || settings.checks.is_empty()
            || interval == 0
            || now < state.next_check_nanos
            || state.health.round_in_flight()
        {
            return false;
        }
        let claim = shared::update(host, keys::HEALTH_ROUND, |value| {
            let last = value.map(shared::decode_u64);
            match last {
                Some(last) if now.saturating_sub(last) < interval => Update::Keep(Some(last)),
                _ => Update::Write(now.to_le_bytes().to_vec(), None),
            }
        });
        match claim {
            // Another worker ran it: look again when its interval ends.
            Ok(Some(Some(last))) => {
                state.next_check_nanos = last.saturating_add(interval);
                false
            }
            Ok(Some(None)) => {
                state.next_check_nanos = now.saturating_add(interval);
                true
            }
            // Other workers kept winning: one of them runs it.
            Ok(None) => {
                state.next_check_nanos = now.saturating_add(interval);
                false
            }
            // Without shared data, each worker keeps its own dependencies fresh.
            Err(err) => {
                state
                    .registry
                    .host_error(Operation::SharedData, err, keys::HEALTH_ROUND);
                state.next_check_nanos = now.saturating_add(interval);
                true
            }
        }
    }

    /// Records a round started for probes as the gateway's latest, so background rounds wait
    /// a whole interval after it.
    pub(super) fn claim_round(&self, host: &mut dyn Calls, state: &mut State, now: u64) {
        let interval = self.settings.health.check_interval_nanos;
        if interval == 0 {
            return;
        }
        state.next_check_nanos = now.saturating_add(interval);
        let claimed = shared::update(host, keys::HEALTH_ROUND, |_| {
            Update::Write(now.to_le_bytes().to_vec(), ())
        });
        if let Err(err) = claimed {
            state
                .registry
                .host_error(Operation::SharedData, err, keys::HEALTH_ROUND);
        }
    }

    /// Starts a round: one call per check.
    pub(super) fn start_round(&self, host: &mut dyn Calls, state: &mut State, now: u64) {
        let settings = &self.settings.health;
        state.health.start_round(settings, now);
        for (index, check) in settings.checks.iter().enumerate() {
            let headers = [
                (":method", check.method.as_str()),
                (":path", check.path.as_str()),
                (":authority", check.authority.as_str()),
            ];
            let token = host
                .dispatch(&check.cluster, &headers, None, check.timeout_ms)
                .map_err(|refused| match refused {
                    CallRefused::UnknownCluster => Failure::UnknownCluster,
                    CallRefused::Failed => Failure::DispatchFailed,
                });
            state.health.dispatched(index, token);
        }
    }

    /// Records a complete round's metrics and answers every probe that waited for it.
    pub(super) fn finish_round(&self, host: &mut dyn Calls, state: &mut State, now: u64) {
        let State {
            registry,
            health,
            dependency_metrics,
            ..
        } = state;
        let Some(finished) = health.finish(now) else {
            return;
        };
        for (((outcome, duration), (up, histogram)), check) in finished
            .report
            .outcomes
            .iter()
            .zip(&finished.durations_nanos)
            .zip(dependency_metrics.iter_mut())
            .zip(&self.settings.health.checks)
        {
            let up = up.get_or_insert_with(|| {
                let required = if check.required { "true" } else { "false" };
                registry.define_gauge(
                    host,
                    names::DEPENDENCY_UP,
                    &[
                        (names::LABEL_DEPENDENCY, check.name.as_str()),
                        (names::LABEL_REQUIRED, required),
                    ],
                )
            });
            if let Some(up) = up {
                registry.set_gauge(host, *up, u64::from(outcome.failure.is_none()));
            }
            if let Some(histogram) = histogram {
                registry.observe(*histogram, *duration);
            }
        }
        let answer = health::answer(&self.settings.health, finished.report);
        for waiter in finished.waiters {
            // A probe that went away cannot be answered; nothing to do for it.
            let _ = host.answer(waiter, answer.status, health::CONTENT_TYPE, &answer.body);
        }
    }
}
