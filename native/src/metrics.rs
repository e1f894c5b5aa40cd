//! Metric families as this ABI wants them: every family defined, with its label names, while
//! the filter config is created (a later define is refused), and each series named by label
//! values when it is updated. The core asks for series one at a time ([`Host`]'s
//! `define_counter`); a [`SeriesTable`] remembers each one's family and label values.
//!
//! [`Host`]: veza_observability_core::host::Host

use std::collections::HashMap;

use veza_observability_core::host::{HostError, Labels, MetricId};
use veza_observability_core::metrics::names::Declared;

use crate::abi::{self, Buffer, EnvoyPtr};

/// Most labels a family has (the HTTP histogram's buckets: method, endpoint, service, le).
pub const MAX_LABELS: usize = 8;

/// `HostError`s in the core's terms: the series is unknown, or its labels do not fit.
const NOT_FOUND: HostError = HostError(1);
const BAD_ARGUMENT: HostError = HostError(2);

/// One family as Envoy defined it.
#[derive(Debug, Clone, Copy)]
struct Family {
    id: usize,
    gauge: bool,
    labels: usize,
}

/// Every family of one filter config, by name. Built on the main thread and read-only after.
#[derive(Debug, Default)]
pub struct Families {
    by_name: HashMap<String, Family>,
}

impl Families {
    /// Defines every declared family. A refusal names the family: the config is refused then.
    pub fn define(config: EnvoyPtr, declared: &[Declared]) -> Result<Families, String> {
        let mut by_name = HashMap::with_capacity(declared.len());
        for family in declared {
            if family.labels.len() > MAX_LABELS {
                return Err(format!("{} has too many labels", family.name));
            }
            let names: Vec<Buffer> = family
                .labels
                .iter()
                .map(|l| Buffer::of(l.as_bytes()))
                .collect();
            let mut id = 0usize;
            let define = abi::define(family.gauge);
            // SAFETY: the buffers outlive the call; `config` is Envoy's, during config creation.
            let result = unsafe {
                define(
                    config,
                    Buffer::of(family.name.as_bytes()),
                    names.as_ptr(),
                    names.len(),
                    &mut id,
                )
            };
            if result != abi::METRICS_SUCCESS {
                return Err(format!(
                    "Envoy refused to define {} (result {result})",
                    family.name
                ));
            }
            by_name.insert(
                family.name.clone(),
                Family {
                    id,
                    gauge: family.gauge,
                    labels: family.labels.len(),
                },
            );
        }
        Ok(Families { by_name })
    }
}

/// One series: its family's id and its label values.
#[derive(Debug)]
struct Series {
    family: usize,
    values: Box<[Box<str>]>,
}

/// The series one worker's core has asked for, by the id the core holds. It grows only when the
/// core admits a new series, which its series budget bounds.
#[derive(Debug, Default)]
pub struct SeriesTable {
    series: Vec<Series>,
}

impl SeriesTable {
    pub fn define(
        &mut self,
        families: &Families,
        name: &str,
        gauge: bool,
        labels: &Labels<'_>,
    ) -> Result<MetricId, HostError> {
        let family = families.by_name.get(name).ok_or(NOT_FOUND)?;
        if family.gauge != gauge || family.labels != labels.len() {
            return Err(BAD_ARGUMENT);
        }
        let id = MetricId::try_from(self.series.len()).map_err(|_| BAD_ARGUMENT)?;
        self.series.push(Series {
            family: family.id,
            values: labels.iter().map(|(_, value)| Box::from(*value)).collect(),
        });
        Ok(id)
    }

    /// Applies one update to a series through `update` on Envoy's object `target`.
    pub fn update(
        &self,
        id: MetricId,
        target: EnvoyPtr,
        update: abi::Update,
        value: u64,
    ) -> Result<(), HostError> {
        let series = self.series.get(id as usize).ok_or(NOT_FOUND)?;
        let mut values = [Buffer::EMPTY; MAX_LABELS];
        for (slot, value) in values.iter_mut().zip(series.values.iter()) {
            *slot = Buffer::of(value.as_bytes());
        }
        let count = series.values.len().min(MAX_LABELS);
        // SAFETY: the label buffers outlive the call; `target` is Envoy's object for this hook.
        let result = unsafe { update(target, series.family, values.as_ptr(), count, value) };
        match result {
            abi::METRICS_SUCCESS => Ok(()),
            1 => Err(NOT_FOUND),
            _ => Err(BAD_ARGUMENT),
        }
    }
}
