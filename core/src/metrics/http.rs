//! `http_requests_total{method,endpoint,status,service}` and
//! `http_request_duration_seconds{method,endpoint,service}` for every request.
//!
//! Each distinct label set is resolved once per VM (route match already done by the caller,
//! labels formatted, metrics defined, admission checked) and cached under a packed integer key,
//! so a repeat request costs a hash lookup and two in-memory adds.
//!
//! Cardinality: Envoy never frees a wasm metric, so the number of `http_requests_total` label
//! sets is capped gateway-wide (`max_series`), through a counter in Envoy's shared data that
//! every worker VM sees. A label set that arrives after the cap is recorded in its service's
//! overflow series `{method="OTHER",endpoint="other",status="<class>xx"}`: totals and error
//! ratios stay right, and at most 7 overflow series exist per service.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::config::{EndpointSource, Settings};
use crate::host::Host;
use crate::labels::{Method, Status};
use crate::routes::{EndpointId, RouteMatch, ServiceId, MAX_TEMPLATE_LEN};

use super::names;
use super::registry::{CounterHandle, HistogramHandle, Operation, Registry};
use crate::shared::{keys, Budget};

/// What the glue read for one finished request.
#[derive(Debug, Clone, Copy)]
pub struct RequestRecord<'a> {
    pub method: Method,
    /// Envoy's route name, read only with `endpoint_source: route_name`.
    pub route_name: Option<&'a [u8]>,
    /// The route table's match of the request's method and path.
    pub route: RouteMatch,
    /// The response status; `None` when no response was sent.
    pub status: Option<u64>,
    /// The request's duration in nanoseconds.
    pub duration_nanos: Option<u64>,
}

/// Label sets refused by the cap that a VM remembers, so a refused set costs no hostcall
/// the next time; past this, refusals are checked again each time.
const REFUSED_CACHE_LIMIT: usize = 4096;

/// Endpoint label space: route templates by index, then interned route names, and `other`.
const ENDPOINT_OTHER: u32 = u32::MAX;
const SERVICE_OTHER: u8 = u8::MAX;

#[derive(Clone, Copy)]
struct Series {
    requests: CounterHandle,
    /// `None` for a histogram the host refused to define.
    duration: Option<HistogramHandle>,
    /// The endpoint and service it was defined with: the request's, or its overflow's.
    endpoint: u32,
    service: u8,
}

/// What [`HttpMetrics::record`] counted: the route match, and which series.
#[derive(Debug, Clone, Copy)]
pub struct Counted {
    endpoint: u32,
    service: u8,
}

pub struct HttpMetrics {
    series: IntMap<Option<Series>>,
    histograms: IntMap<Option<HistogramHandle>>,
    refused: IntMap<()>,
    route_names: HashMap<Box<[u8]>, u32>,
    route_name_labels: Vec<String>,
    budget: Budget,
}

impl Default for HttpMetrics {
    fn default() -> HttpMetrics {
        HttpMetrics::new()
    }
}

impl HttpMetrics {
    pub fn new() -> HttpMetrics {
        HttpMetrics {
            budget: Budget::new(keys::SERIES_SET, keys::SERIES_PREFIX),
            series: IntMap::default(),
            histograms: IntMap::default(),
            refused: IntMap::default(),
            route_names: HashMap::new(),
            route_name_labels: Vec::new(),
        }
    }

    pub fn record(
        &mut self,
        settings: &Settings,
        registry: &mut Registry,
        host: &mut dyn Host,
        request: &RequestRecord<'_>,
    ) -> Counted {
        let (method, route) = (request.method, request.route);
        let endpoint = match settings.endpoint_source {
            EndpointSource::RouteTable => route.endpoint.unwrap_or(ENDPOINT_OTHER),
            EndpointSource::RouteName => self.route_name_endpoint(settings, request.route_name),
        };
        let service = route.service.unwrap_or(SERVICE_OTHER);
        let status = Status::from_code(request.status);
        let labels = LabelSet {
            method,
            endpoint,
            service,
            status,
        };

        let series = match self.series.get(&labels.key()) {
            Some(series) => *series,
            None => self.resolve(settings, registry, host, labels),
        };
        // A `101 Switching Protocols` is counted but not timed: its duration is the whole
        // connection, which the WebSocket metrics time.
        let upgraded = status.code() == Some(101);
        if let Some(series) = series {
            registry.add(series.requests, 1);
            if let (false, Some(histogram), Some(nanos)) =
                (upgraded, series.duration, request.duration_nanos)
            {
                registry.observe(histogram, nanos);
            }
        }
        let (endpoint, service) = series.map_or((endpoint, service), |s| (s.endpoint, s.service));
        Counted { endpoint, service }
    }

    /// The `endpoint` and `service` labels of the series a request was counted in.
    pub fn labels<'s>(&'s self, settings: &'s Settings, counted: Counted) -> (&'s str, &'s str) {
        (
            self.endpoint_label(settings, counted.endpoint),
            service_label(settings, counted.service),
        )
    }

    /// First sight of a label set in this VM: admit it (or overflow) and define its metrics.
    fn resolve(
        &mut self,
        settings: &Settings,
        registry: &mut Registry,
        host: &mut dyn Host,
        labels: LabelSet,
    ) -> Option<Series> {
        let key = labels.key();
        let admitted = !self.refused.contains_key(&key)
            && self.admit(settings, registry, host, &self.marker(settings, labels));
        let labels = if admitted {
            labels
        } else {
            if self.refused.len() < REFUSED_CACHE_LIMIT {
                self.refused.insert(key, ());
            }
            let overflow = labels.overflow();
            if let Some(series) = self.series.get(&overflow.key()) {
                return *series;
            }
            overflow
        };
        let status = labels.status.label();
        let [method, endpoint, service] = self.label_values(settings, labels);
        let requests = registry.define_counter(
            host,
            names::HTTP_REQUESTS_TOTAL,
            &[
                (names::LABEL_METHOD, method),
                (names::LABEL_ENDPOINT, endpoint),
                (names::LABEL_STATUS, &status),
                (names::LABEL_SERVICE, service),
            ],
        );
        let series = requests.map(|requests| Series {
            requests,
            duration: self.histogram(settings, registry, host, labels),
            endpoint: labels.endpoint,
            service: labels.service,
        });
        // A failed define is cached too: the failure was logged and counted once.
        self.series.insert(labels.key(), series);
        series
    }

    fn histogram(
        &mut self,
        settings: &Settings,
        registry: &mut Registry,
        host: &mut dyn Host,
        labels: LabelSet,
    ) -> Option<HistogramHandle> {
        let key = labels.histogram_key();
        if let Some(handle) = self.histograms.get(&key) {
            return *handle;
        }
        let [method, endpoint, service] = self.label_values(settings, labels);
        let handle = registry.define_histogram(
            host,
            names::HTTP_REQUEST_DURATION_SECONDS,
            &[
                (names::LABEL_METHOD, method),
                (names::LABEL_ENDPOINT, endpoint),
                (names::LABEL_SERVICE, service),
            ],
        );
        self.histograms.insert(key, handle);
        handle
    }

    /// Admits a new label set under the gateway-wide cap.
    fn admit(
        &mut self,
        settings: &Settings,
        registry: &mut Registry,
        host: &mut dyn Host,
        name: &str,
    ) -> bool {
        let (admitted, error) = self.budget.admit(host, name, settings.max_series);
        if let Some(err) = error {
            registry.host_error(Operation::SharedData, err, keys::SERIES_SET);
        }
        admitted
    }

    /// The label set's key in the gateway-wide budget: its four label values, each after its
    /// length, so no two sets share a key whatever their values hold.
    fn marker(&self, settings: &Settings, labels: LabelSet) -> String {
        let [method, endpoint, service] = self.label_values(settings, labels);
        let mut marker = String::new();
        for value in [method, endpoint, &labels.status.label(), service] {
            marker.push_str(&value.len().to_string());
            marker.push(':');
            marker.push_str(value);
        }
        marker
    }

    /// The `method`, `endpoint` and `service` label values of a label set.
    fn label_values<'s>(&'s self, settings: &'s Settings, labels: LabelSet) -> [&'s str; 3] {
        [
            labels.method.as_str(),
            self.endpoint_label(settings, labels.endpoint),
            service_label(settings, labels.service),
        ]
    }

    fn endpoint_label<'s>(&'s self, settings: &'s Settings, endpoint: u32) -> &'s str {
        if endpoint == ENDPOINT_OTHER {
            return names::OTHER;
        }
        let templates = settings.routes.templates().len();
        match (endpoint as usize).checked_sub(templates) {
            None => settings
                .routes
                .template_text(endpoint as EndpointId)
                .unwrap_or(names::OTHER),
            Some(index) => self
                .route_name_labels
                .get(index)
                .map_or(names::OTHER, String::as_str),
        }
    }

    /// Route names are interned up to `max_series` distinct names; later ones are `other`.
    fn route_name_endpoint(&mut self, settings: &Settings, route_name: Option<&[u8]>) -> u32 {
        let Some(name) = route_name.filter(|n| !n.is_empty()) else {
            return ENDPOINT_OTHER;
        };
        if let Some(id) = self.route_names.get(name) {
            return *id;
        }
        if self.route_name_labels.len() >= settings.max_series as usize {
            return ENDPOINT_OTHER;
        }
        let id = settings.routes.templates().len() + self.route_name_labels.len();
        let Ok(id) = u32::try_from(id) else {
            return ENDPOINT_OTHER;
        };
        self.route_name_labels.push(sanitize_route_name(name));
        self.route_names.insert(name.into(), id);
        id
    }
}

/// The `service` label of a route match.
pub fn service_label_of(settings: &Settings, service: Option<ServiceId>) -> &str {
    service.map_or(names::OTHER, |service| service_label(settings, service))
}

/// The `endpoint` label of a route-table match.
pub fn endpoint_label_of(settings: &Settings, endpoint: Option<EndpointId>) -> &str {
    endpoint
        .and_then(|endpoint| settings.routes.template_text(endpoint))
        .unwrap_or(names::OTHER)
}

fn service_label(settings: &Settings, service: u8) -> &str {
    if service == SERVICE_OTHER {
        return names::OTHER;
    }
    settings
        .routes
        .service_name(service as ServiceId)
        .unwrap_or(names::OTHER)
}

/// Route names come from Envoy's config, not from clients, but still become label values:
/// bounded, and only characters safe in a label (and in the proxy-wasm glue's encoding).
fn sanitize_route_name(name: &[u8]) -> String {
    name.iter()
        .take(MAX_TEMPLATE_LEN)
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-._~/:@!$&'()*+,%".contains(&b) {
                b as char
            } else {
                '_'
            }
        })
        .collect()
}

#[derive(Debug, Clone, Copy)]
struct LabelSet {
    method: Method,
    endpoint: u32,
    service: u8,
    status: Status,
}

impl LabelSet {
    fn key(self) -> u64 {
        u64::from(self.endpoint)
            | u64::from(self.service) << 32
            | u64::from(self.method as u8) << 40
            | u64::from(self.status.packed()) << 48
    }

    fn histogram_key(self) -> u64 {
        u64::from(self.endpoint)
            | u64::from(self.service) << 32
            | u64::from(self.method as u8) << 40
    }

    fn overflow(self) -> LabelSet {
        LabelSet {
            method: Method::Other,
            endpoint: ENDPOINT_OTHER,
            service: self.service,
            status: self.status.class(),
        }
    }
}

/// Keys are already well-mixed packed integers: a multiply is all the hashing they need.
#[derive(Default)]
struct IntHasher(u64);

impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = (value ^ value >> 29).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type IntMap<V> = HashMap<u64, V, BuildHasherDefault<IntHasher>>;

#[cfg(test)]
mod tests;
