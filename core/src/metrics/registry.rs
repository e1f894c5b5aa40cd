//! The per-VM metric registry: defines each metric once, caches its id, and aggregates
//! increments in VM memory until [`Registry::flush`] hands the deltas to Envoy.
//!
//! Aggregating keeps hostcalls off the request path: a request touches only VM memory, and a
//! flush (on the root context's tick, or after every request when the flush interval is 0)
//! makes one `increment_metric` per changed counter.
//!
//! Histograms are Prometheus histograms built from counters (`_bucket{le}`, `_count`, `_sum`),
//! because Envoy's wasm histograms take unit-less integers and print their buckets in whatever
//! unit was recorded. A `_sum` in seconds must be a whole number of seconds (Envoy counters are
//! integers): each series keeps the sub-second remainder and carries it into the next flush,
//! so the exposed `_sum` is never more than half a second away from the true sum, per series and
//! per worker VM, however many requests it has seen.

use crate::host::{Host, HostError, Labels, MetricId};

use super::names;

/// Prometheus' default buckets (client_golang `DefBuckets`), the seed's choice, in seconds.
pub const DEFAULT_BUCKETS: [(&str, u64); 11] = [
    ("0.005", 5_000_000),
    ("0.01", 10_000_000),
    ("0.025", 25_000_000),
    ("0.05", 50_000_000),
    ("0.1", 100_000_000),
    ("0.25", 250_000_000),
    ("0.5", 500_000_000),
    ("1", 1_000_000_000),
    ("2.5", 2_500_000_000),
    ("5", 5_000_000_000),
    ("10", 10_000_000_000),
];
/// Buckets including `+Inf`.
const BUCKETS: usize = DEFAULT_BUCKETS.len() + 1;
const NANOS_PER_SECOND: i64 = 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterHandle(u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistogramHandle(u32);

/// A gauge: set straight through (gauges here change once per health round, not per request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GaugeHandle(MetricId);

struct Counter {
    id: MetricId,
    pending: u64,
}

struct Histogram {
    bucket_ids: [MetricId; BUCKETS],
    count_id: MetricId,
    sum_id: MetricId,
    /// The sum in microseconds ([`names::SUM_MICROSECONDS_SUFFIX`]).
    sum_micros_id: MetricId,
    /// Observations per bucket since the last flush, not cumulative: one add per request.
    pending: [u64; BUCKETS],
    pending_nanos: u64,
    /// Nanoseconds observed but not yet in the `_sum` counter (negative after rounding up).
    carry_nanos: i64,
    /// Nanoseconds observed but not yet in the microsecond sum (under a microsecond).
    carry_sub_micro: u64,
    dirty: bool,
}

/// Hostcalls the filter counts failures of, in `veza_observability_errors_total{operation}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Operation {
    DefineMetric,
    IncrementMetric,
    GetProperty,
    GetHeader,
    /// A body read: a call's answer.
    GetBuffer,
    SetHeader,
    SharedData,
    /// Filter state for the access log.
    SetProperty,
    /// A hook of the native build that panicked: caught at the FFI boundary, the request
    /// let through.
    Hook,
}

impl Operation {
    const ALL: [Operation; 9] = [
        Operation::DefineMetric,
        Operation::IncrementMetric,
        Operation::GetProperty,
        Operation::GetHeader,
        Operation::GetBuffer,
        Operation::SetHeader,
        Operation::SharedData,
        Operation::SetProperty,
        Operation::Hook,
    ];

    fn label(self) -> &'static str {
        match self {
            Operation::DefineMetric => "define_metric",
            Operation::IncrementMetric => "increment_metric",
            Operation::GetProperty => "get_property",
            Operation::GetHeader => "get_header",
            Operation::GetBuffer => "get_buffer",
            Operation::SetHeader => "set_header",
            Operation::SharedData => "shared_data",
            Operation::SetProperty => "set_property",
            Operation::Hook => "hook",
        }
    }
}

#[derive(Default)]
pub struct Registry {
    counters: Vec<Counter>,
    dirty_counters: Vec<u32>,
    histograms: Vec<Histogram>,
    dirty_histograms: Vec<u32>,
    error_counters: [Option<CounterHandle>; Operation::ALL.len()],
    error_logged: [bool; Operation::ALL.len()],
}

impl Registry {
    pub fn new(host: &mut dyn Host) -> Registry {
        let mut registry = Registry::default();
        for operation in Operation::ALL {
            let handle = registry.define_counter(
                host,
                names::FILTER_ERRORS_TOTAL,
                &[(names::LABEL_OPERATION, operation.label())],
            );
            if let Some(slot) = registry.error_counters.get_mut(operation as usize) {
                *slot = handle;
            }
        }
        registry
    }

    /// Defines one series of a counter family. `None` if the host refused (logged, counted).
    pub fn define_counter(
        &mut self,
        host: &mut dyn Host,
        name: &str,
        labels: &Labels<'_>,
    ) -> Option<CounterHandle> {
        let id = match host.define_counter(name, labels) {
            Ok(id) => id,
            Err(err) => {
                self.host_error(Operation::DefineMetric, err, name);
                return None;
            }
        };
        let handle = CounterHandle(u32::try_from(self.counters.len()).ok()?);
        self.counters.push(Counter { id, pending: 0 });
        Some(handle)
    }

    pub fn define_gauge(
        &mut self,
        host: &mut dyn Host,
        name: &str,
        labels: &Labels<'_>,
    ) -> Option<GaugeHandle> {
        match host.define_gauge(name, labels) {
            Ok(id) => Some(GaugeHandle(id)),
            Err(err) => {
                self.host_error(Operation::DefineMetric, err, name);
                None
            }
        }
    }

    pub fn set_gauge(&mut self, host: &mut dyn Host, gauge: GaugeHandle, value: u64) {
        if let Err(err) = host.set_gauge(gauge.0, value) {
            self.host_error(Operation::IncrementMetric, err, "a gauge");
        }
    }

    pub fn add_gauge(&mut self, host: &mut dyn Host, gauge: GaugeHandle, delta: i64) {
        if let Err(err) = host.add_gauge(gauge.0, delta) {
            self.host_error(Operation::IncrementMetric, err, "a gauge");
        }
    }

    /// Defines the counters of one histogram series; `labels` without `le`.
    pub fn define_histogram(
        &mut self,
        host: &mut dyn Host,
        name: &str,
        labels: &Labels<'_>,
    ) -> Option<HistogramHandle> {
        let mut define = |suffix: &str, le: Option<&str>| -> Option<MetricId> {
            let full = format!("{name}{suffix}");
            let result = match le {
                Some(le) => {
                    let mut with_le = labels.to_vec();
                    with_le.push((names::LABEL_LE, le));
                    host.define_counter(&full, &with_le)
                }
                None => host.define_counter(&full, labels),
            };
            match result {
                Ok(id) => Some(id),
                Err(err) => {
                    self.host_error(Operation::DefineMetric, err, &full);
                    None
                }
            }
        };
        let mut bucket_ids = [0; BUCKETS];
        for (slot, (le, _)) in bucket_ids.iter_mut().zip(DEFAULT_BUCKETS) {
            *slot = define("_bucket", Some(le))?;
        }
        if let Some(last) = bucket_ids.last_mut() {
            *last = define("_bucket", Some("+Inf"))?;
        }
        let count_id = define("_count", None)?;
        let sum_id = define("_sum", None)?;
        let sum_micros_id = define(names::SUM_MICROSECONDS_SUFFIX, None)?;
        let handle = HistogramHandle(u32::try_from(self.histograms.len()).ok()?);
        self.histograms.push(Histogram {
            bucket_ids,
            count_id,
            sum_id,
            sum_micros_id,
            pending: [0; BUCKETS],
            pending_nanos: 0,
            carry_nanos: 0,
            carry_sub_micro: 0,
            dirty: false,
        });
        Some(handle)
    }

    /// Adds to a counter. A 0 is no change and is dropped here: Envoy refuses a counter
    /// increment of 0 (`BadArgument`), so it must never reach a flush.
    pub fn add(&mut self, handle: CounterHandle, delta: u64) {
        if delta == 0 {
            return;
        }
        if let Some(counter) = self.counters.get_mut(handle.0 as usize) {
            if counter.pending == 0 {
                self.dirty_counters.push(handle.0);
            }
            counter.pending = counter.pending.saturating_add(delta);
        }
    }

    /// Records one observation, in nanoseconds.
    pub fn observe(&mut self, handle: HistogramHandle, nanos: u64) {
        let Some(histogram) = self.histograms.get_mut(handle.0 as usize) else {
            return;
        };
        let bucket = DEFAULT_BUCKETS
            .iter()
            .position(|&(_, bound)| nanos <= bound)
            .unwrap_or(DEFAULT_BUCKETS.len());
        if let Some(slot) = histogram.pending.get_mut(bucket) {
            *slot += 1;
        }
        histogram.pending_nanos = histogram.pending_nanos.saturating_add(nanos);
        if !histogram.dirty {
            histogram.dirty = true;
            self.dirty_histograms.push(handle.0);
        }
    }

    /// Hands every pending delta to the host. A failure is counted in the same flush, so
    /// `veza_observability_errors_total` is never a flush behind what it counts.
    pub fn flush(&mut self, host: &mut dyn Host) {
        let mut failure = self.flush_counters(host, false);
        for index in self.dirty_histograms.drain(..) {
            if let Some(histogram) = self.histograms.get_mut(index as usize) {
                if let Err(err) = histogram.flush(host) {
                    failure = Some(err);
                }
            }
        }
        if let Some(err) = failure {
            self.host_error(Operation::IncrementMetric, err, "flush");
            // Only the error counter is pending now. If the host refuses it too, it stays
            // pending for the next flush: an error count is the one delta never dropped.
            let _ = self.flush_counters(host, true);
        }
    }

    /// Sends each pending counter delta; a refused delta is dropped unless `keep_refused`.
    fn flush_counters(&mut self, host: &mut dyn Host, keep_refused: bool) -> Option<HostError> {
        let mut failure = None;
        let mut refused = Vec::new();
        for index in self.dirty_counters.drain(..) {
            if let Some(counter) = self.counters.get_mut(index as usize) {
                let delta = std::mem::take(&mut counter.pending);
                if delta > 0 {
                    if let Err(err) = host.increment_counter(counter.id, delta) {
                        failure = Some(err);
                        if keep_refused {
                            counter.pending = delta;
                            refused.push(index);
                        }
                    }
                }
            }
        }
        self.dirty_counters.extend(refused);
        failure
    }

    /// A host call's value, or `None` after logging and counting its failure.
    pub fn read<T>(
        &mut self,
        operation: Operation,
        result: Result<Option<T>, HostError>,
    ) -> Option<T> {
        result.unwrap_or_else(|err| {
            self.host_error(operation, err, "a host call");
            None
        })
    }

    /// Logs the first failure of each operation, counts every one, and carries on.
    pub fn host_error(&mut self, operation: Operation, err: impl std::fmt::Display, subject: &str) {
        let index = operation as usize;
        if let Some(logged) = self.error_logged.get_mut(index) {
            if !*logged {
                *logged = true;
                log::error!(
                    "{} failed with {err} for {subject}; further failures of this call are only counted in {}",
                    operation.label(),
                    names::FILTER_ERRORS_TOTAL
                );
            }
        }
        if let Some(Some(handle)) = self.error_counters.get(index).copied() {
            self.add(handle, 1);
        }
    }
}

impl Histogram {
    fn flush(&mut self, host: &mut dyn Host) -> Result<(), HostError> {
        self.dirty = false;
        let pending = std::mem::take(&mut self.pending);
        let nanos = std::mem::take(&mut self.pending_nanos);
        let mut result = Ok(());
        let mut cumulative = 0;
        for (id, count) in self.bucket_ids.iter().zip(pending) {
            cumulative += count;
            if cumulative > 0 {
                if let Err(err) = host.increment_counter(*id, cumulative) {
                    result = Err(err);
                }
            }
        }
        if cumulative > 0 {
            if let Err(err) = host.increment_counter(self.count_id, cumulative) {
                result = Err(err);
            }
        }
        let total = self
            .carry_nanos
            .saturating_add(i64::try_from(nanos).unwrap_or(i64::MAX));
        let seconds = total.saturating_add(NANOS_PER_SECOND / 2) / NANOS_PER_SECOND;
        if seconds > 0 {
            match host.increment_counter(self.sum_id, seconds.unsigned_abs()) {
                Ok(()) => self.carry_nanos = total - seconds * NANOS_PER_SECOND,
                Err(err) => {
                    self.carry_nanos = total;
                    result = Err(err);
                }
            }
        } else {
            self.carry_nanos = total;
        }
        let exact = self.carry_sub_micro.saturating_add(nanos);
        let micros = exact / 1000;
        if micros > 0 {
            match host.increment_counter(self.sum_micros_id, micros) {
                Ok(()) => self.carry_sub_micro = exact % 1000,
                Err(err) => {
                    self.carry_sub_micro = exact;
                    result = Err(err);
                }
            }
        } else {
            self.carry_sub_micro = exact;
        }
        result
    }
}

#[cfg(test)]
mod tests;
