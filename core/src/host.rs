//! The host as the core sees it: the few capabilities the filter needs from Envoy.
//!
//! The proxy-wasm glue (`filter::abi` in the `veza-observability` crate) implements them over
//! the hostcalls; unit tests use [`memory::MemoryHost`].

/// A metric id as returned by the host's `define_metric`.
pub type MetricId = u32;

/// A non-Ok proxy-wasm status from a hostcall, kept as its raw number for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError(pub u32);

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.0 {
            1 => "NotFound",
            2 => "BadArgument",
            3 => "SerializationFailure",
            4 => "ParseFailure",
            6 => "InvalidMemoryAccess",
            7 => "Empty",
            8 => "CasMismatch",
            10 => "InternalFailure",
            11 => "BrokenConnection",
            12 => "Unimplemented",
            _ => "status",
        };
        write!(f, "{name} ({})", self.0)
    }
}

/// Outcome of a compare-and-swap write to shared data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasOutcome {
    Stored,
    Mismatch,
}

/// A series' labels: keys in the order its family declares them
/// ([`crate::metrics::names::FAMILIES`]), with their values.
pub type Labels<'a> = [(&'a str, &'a str)];

pub trait Host {
    /// Defines (or looks up) one series of a counter family. Envoy returns a new id on every
    /// call, so callers cache the id.
    fn define_counter(&mut self, name: &str, labels: &Labels<'_>) -> Result<MetricId, HostError>;
    fn increment_counter(&mut self, id: MetricId, delta: u64) -> Result<(), HostError>;
    fn define_gauge(&mut self, name: &str, labels: &Labels<'_>) -> Result<MetricId, HostError>;
    fn set_gauge(&mut self, id: MetricId, value: u64) -> Result<(), HostError>;
    /// Adds to a gauge (negative subtracts): increments from every worker add up.
    fn add_gauge(&mut self, id: MetricId, delta: i64) -> Result<(), HostError>;
    /// Process-wide data shared by every worker's VM: value and CAS token.
    fn get_shared(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError>;
    /// Writes shared data; `cas` 0 writes unconditionally.
    fn set_shared(&mut self, key: &str, value: &[u8], cas: u32) -> Result<CasOutcome, HostError>;
}

/// Which of a request's header maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderMap {
    Request,
    Response,
}

/// The request properties the filter reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Property {
    /// Nanoseconds, 8 bytes little-endian: for requests answered before the filter saw them.
    RequestDuration,
    /// The route's `name`, when `endpoint_source` is `route_name`.
    RouteName,
    /// `HTTP/1.1`, `HTTP/2`: the span's protocol version.
    RequestProtocol,
}

/// One request as the host holds it while the core's [`crate::exchange::Exchange`] runs:
/// what the exchange reads and writes. The core asks for each value when it needs it, so a
/// host makes exactly the calls the request needs.
pub trait Request: Host {
    /// The host's clock, in nanoseconds since the epoch.
    fn now_nanos(&mut self) -> Result<u64, HostError>;
    /// The request headers as this host lends them: they borrow the host, so the core's next
    /// call into it (which may change the map) ends the loan.
    type Headers<'h>: crate::header_map::Headers
    where
        Self: 'h;
    /// Every request header, read in one call.
    fn request_headers(&mut self) -> Result<Self::Headers<'_>, HostError>;
    /// The first value of a header.
    fn header(&mut self, map: HeaderMap, name: &str) -> Result<Option<Vec<u8>>, HostError>;
    /// Replaces every value of a header.
    fn set_header(&mut self, map: HeaderMap, name: &str, value: &[u8]) -> Result<(), HostError>;
    /// Adds a value to a header the request does not carry: in Envoy a quarter of the cost
    /// of a replace, which first looks for values to remove.
    fn add_header(&mut self, map: HeaderMap, name: &str, value: &[u8]) -> Result<(), HostError>;
    fn remove_header(&mut self, map: HeaderMap, name: &str) -> Result<(), HostError>;
    /// Has the host match the request's route again once this hook returns (its request
    /// headers changed). A host that always does so after a request-header write does nothing.
    fn clear_route_cache(&mut self);
    fn property(&mut self, property: Property) -> Result<Option<Vec<u8>>, HostError>;
    /// The response's status code; `None` when no response was sent. Read from `:status`
    /// (in wasm a header read costs about a third of a property read); a host with a cheaper
    /// integer read of the code gives that instead.
    fn response_code(&mut self) -> Result<Option<u64>, HostError> {
        Ok(self
            .header(HeaderMap::Response, ":status")?
            .map(|code| crate::labels::status_code_from_header(&code)))
    }
    /// Sets one of the access log's fields ([`crate::access_log`]) for this request.
    fn set_log_field(&mut self, key: &str, value: &[u8]) -> Result<(), HostError>;
    /// Answers the request here instead of passing it on.
    fn send_reply(&mut self, status: u32, content_type: &str, body: &str) -> Result<(), HostError>;
    /// Ends the VM as a bug would: the fault-injection tests of Envoy's failure policy.
    #[cfg(feature = "fault-injection")]
    fn trap(&mut self);
}

/// Why the host did not make an outgoing call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallRefused {
    /// The host has no cluster of that name.
    UnknownCluster,
    /// Any other refusal.
    Failed,
}

/// What a worker needs beyond metrics and shared data: outgoing calls, answers to requests
/// that waited for them, and its own memory size.
pub trait Calls: Host {
    /// Starts an HTTP call to `cluster`; its answer comes back to the worker with the token.
    fn dispatch(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout_ms: u32,
    ) -> Result<u32, CallRefused>;
    /// Answers a request that waited (a `/ready` probe, a scrape), by its context id.
    fn answer(
        &mut self,
        context_id: u32,
        status: u32,
        content_type: &str,
        body: &str,
    ) -> Result<(), HostError>;
    /// The worker's memory, where the host has a figure of its own (a wasm VM's linear memory).
    fn memory_bytes(&self) -> Option<u64>;
}

#[cfg(test)]
pub mod memory {
    //! An in-memory host with Envoy's semantics where the core depends on them: counters are
    //! looked up by name (two defines of one name share the value), ids are never reused.

    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    pub struct MemoryHost {
        /// Series by id, in the Prometheus text form `name{key="value",…}`.
        names: Vec<String>,
        values: HashMap<String, Series>,
        shared: HashMap<String, (Vec<u8>, u32)>,
        pub hostcalls: u64,
        /// Shared-data reads (`get_shared` takes `&self`).
        pub shared_reads: std::cell::Cell<u64>,
        pub fail_define: bool,
        pub fail_increment: bool,
        /// Increments of this one counter fail, the others go through.
        pub refuse_counter: Option<String>,
        /// The request the exchange under test runs on.
        pub request: MemoryRequest,
        /// The outgoing calls made, in order, and the answers given to waiting requests.
        pub calls: Vec<Call>,
        pub answers: Vec<(u32, u32, String)>,
        /// The content type of each answer.
        pub answer_types: Vec<String>,
        /// Calls to this cluster are refused as an unknown cluster.
        pub unknown_cluster: Option<String>,
    }

    /// A [`MemoryRequest`]'s request headers as the core reads them.
    pub struct InMemory<'a>(&'a [(String, Vec<u8>)]);

    impl crate::header_map::Headers for InMemory<'_> {
        fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
            self.0.iter().map(|(k, v)| (k.as_bytes(), v.as_slice()))
        }
    }

    /// What Envoy holds for one request, as plain data.
    #[derive(Default, Debug)]
    pub struct MemoryRequest {
        pub now_nanos: u64,
        pub request_headers: Vec<(String, Vec<u8>)>,
        pub response_headers: Vec<(String, Vec<u8>)>,
        pub properties: Vec<(Property, Vec<u8>)>,
        /// The local reply sent, if any.
        pub reply: Option<(u32, String)>,
        /// The access log's fields set for this request.
        pub log_fields: Vec<(String, String)>,
        /// How many times the route cache was cleared.
        pub route_cache_clears: u32,
    }

    impl MemoryRequest {
        pub fn with_headers(pairs: &[(&str, &str)]) -> MemoryRequest {
            MemoryRequest {
                request_headers: pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
                    .collect(),
                ..MemoryRequest::default()
            }
        }

        fn map(&self, map: HeaderMap) -> &Vec<(String, Vec<u8>)> {
            match map {
                HeaderMap::Request => &self.request_headers,
                HeaderMap::Response => &self.response_headers,
            }
        }

        fn map_mut(&mut self, map: HeaderMap) -> &mut Vec<(String, Vec<u8>)> {
            match map {
                HeaderMap::Request => &mut self.request_headers,
                HeaderMap::Response => &mut self.response_headers,
            }
        }

        fn find(&self, map: HeaderMap, name: &str) -> Option<&[u8]> {
            self.map(map)
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_slice())
        }

        /// Every value of a header as text, for assertions.
        pub fn values(&self, map: HeaderMap, name: &str) -> Vec<String> {
            self.map(map)
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .collect()
        }

        /// A header's value as text, for assertions.
        pub fn value(&self, map: HeaderMap, name: &str) -> Option<String> {
            self.find(map, name)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        }
    }

    /// One series as a host with real labels holds it.
    #[derive(Debug, Clone)]
    struct Series {
        name: String,
        labels: Vec<(String, String)>,
        value: u64,
    }

    /// The Prometheus text form of a series, its key here.
    fn text_form(name: &str, labels: &Labels<'_>) -> String {
        if labels.is_empty() {
            return name.to_owned();
        }
        let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        format!("{name}{{{}}}", pairs.join(","))
    }

    /// The label keys `name` must be defined with: its family's, or none for a business
    /// counter. A series outside the declared families is a bug in the core.
    fn check_declared(name: &str, labels: &Labels<'_>) {
        let keys: Vec<&str> = labels.iter().map(|(k, _)| *k).collect();
        let declared = crate::metrics::names::declared([name]);
        let family = declared.iter().find(|d| d.name == name);
        let expected = family.map(|d| d.labels.clone()).unwrap_or_default();
        assert_eq!(keys, expected, "{name} defined with undeclared labels");
    }

    /// One outgoing call: cluster, headers, body.
    #[derive(Debug, Clone)]
    pub struct Call {
        pub cluster: String,
        pub headers: Vec<(String, String)>,
        pub body: Option<Vec<u8>>,
    }

    impl MemoryHost {
        /// Forgets a shared-data key: what another worker sees before a write lands.
        pub fn remove_shared(&mut self, key: &str) {
            self.shared.remove(key);
        }

        /// The value of a series by its Prometheus text form (`name{key="value",…}`, keys
        /// in their family's order), if defined.
        pub fn counter(&self, text: &str) -> Option<u64> {
            self.values.get(text).map(|series| series.value)
        }

        /// The value of the one series of `metric` whose labels include every one of
        /// `labels`; `None` when there is none. Labels that match several series are a
        /// mistake in the test.
        pub fn series(&self, metric: &str, labels: &[(&str, &str)]) -> Option<u64> {
            let mut found = self.values.values().filter(|series| {
                series.name == metric
                    && labels
                        .iter()
                        .all(|(k, v)| series.labels.iter().any(|(sk, sv)| sk == k && sv == v))
            });
            let first = found.next().map(|series| series.value);
            assert!(
                found.next().is_none(),
                "{metric} {labels:?} names several series"
            );
            first
        }

        fn value_mut(&mut self, id: MetricId) -> Result<&mut u64, HostError> {
            let text = self.names.get(id as usize).ok_or(HostError(1))?;
            self.values
                .get_mut(text)
                .map(|series| &mut series.value)
                .ok_or(HostError(1))
        }

        /// The filter's failed hostcalls, over every operation.
        pub fn errors(&self) -> u64 {
            self.values
                .values()
                .filter(|series| series.name == crate::metrics::names::FILTER_ERRORS_TOTAL)
                .map(|series| series.value)
                .sum()
        }

        /// Every defined series in its text form with its value, sorted.
        pub fn counters(&self) -> Vec<(String, u64)> {
            let mut all: Vec<_> = self
                .values
                .iter()
                .map(|(k, series)| (k.clone(), series.value))
                .collect();
            all.sort();
            all
        }
    }

    impl Host for MemoryHost {
        fn define_counter(
            &mut self,
            name: &str,
            labels: &Labels<'_>,
        ) -> Result<MetricId, HostError> {
            self.hostcalls += 1;
            check_declared(name, labels);
            if self.fail_define {
                return Err(HostError(2));
            }
            let text = text_form(name, labels);
            self.values.entry(text.clone()).or_insert_with(|| Series {
                name: name.to_owned(),
                labels: labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                value: 0,
            });
            self.names.push(text);
            Ok(self.names.len() as MetricId - 1)
        }

        fn increment_counter(&mut self, id: MetricId, delta: u64) -> Result<(), HostError> {
            self.hostcalls += 1;
            if self.fail_increment {
                return Err(HostError(10));
            }
            // As Envoy's `Context::incrementMetric`: a counter takes only positive offsets.
            if delta == 0 {
                return Err(HostError(2));
            }
            let text = self.names.get(id as usize).ok_or(HostError(1))?;
            if self.refuse_counter.as_ref() == Some(text) {
                return Err(HostError(10));
            }
            *self.value_mut(id)? += delta;
            Ok(())
        }

        fn define_gauge(&mut self, name: &str, labels: &Labels<'_>) -> Result<MetricId, HostError> {
            self.define_counter(name, labels)
        }

        fn set_gauge(&mut self, id: MetricId, value: u64) -> Result<(), HostError> {
            self.hostcalls += 1;
            *self.value_mut(id)? = value;
            Ok(())
        }

        fn add_gauge(&mut self, id: MetricId, delta: i64) -> Result<(), HostError> {
            self.hostcalls += 1;
            let value = self.value_mut(id)?;
            *value = value.saturating_add_signed(delta);
            Ok(())
        }

        fn get_shared(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError> {
            self.shared_reads.set(self.shared_reads.get() + 1);
            Ok(self.shared.get(key).cloned())
        }

        fn set_shared(
            &mut self,
            key: &str,
            value: &[u8],
            cas: u32,
        ) -> Result<CasOutcome, HostError> {
            self.hostcalls += 1;
            let entry = self.shared.entry(key.to_owned()).or_insert((Vec::new(), 0));
            if cas != 0 && cas != entry.1 {
                return Ok(CasOutcome::Mismatch);
            }
            entry.0 = value.to_vec();
            entry.1 += 1;
            Ok(CasOutcome::Stored)
        }
    }

    impl Request for MemoryHost {
        fn now_nanos(&mut self) -> Result<u64, HostError> {
            Ok(self.request.now_nanos)
        }

        type Headers<'h> = InMemory<'h>;
        fn request_headers(&mut self) -> Result<InMemory<'_>, HostError> {
            Ok(InMemory(&self.request.request_headers))
        }

        fn header(&mut self, map: HeaderMap, name: &str) -> Result<Option<Vec<u8>>, HostError> {
            Ok(self.request.find(map, name).map(<[u8]>::to_vec))
        }

        fn set_header(
            &mut self,
            map: HeaderMap,
            name: &str,
            value: &[u8],
        ) -> Result<(), HostError> {
            let map = self.request.map_mut(map);
            map.retain(|(k, _)| k != name);
            map.push((name.to_owned(), value.to_vec()));
            Ok(())
        }

        fn add_header(
            &mut self,
            map: HeaderMap,
            name: &str,
            value: &[u8],
        ) -> Result<(), HostError> {
            self.request
                .map_mut(map)
                .push((name.to_owned(), value.to_vec()));
            Ok(())
        }

        fn remove_header(&mut self, map: HeaderMap, name: &str) -> Result<(), HostError> {
            self.request.map_mut(map).retain(|(k, _)| k != name);
            Ok(())
        }

        fn clear_route_cache(&mut self) {
            self.request.route_cache_clears += 1;
        }

        fn property(&mut self, property: Property) -> Result<Option<Vec<u8>>, HostError> {
            Ok(self
                .request
                .properties
                .iter()
                .find(|(p, _)| *p == property)
                .map(|(_, v)| v.clone()))
        }

        fn set_log_field(&mut self, key: &str, value: &[u8]) -> Result<(), HostError> {
            self.request.log_fields.retain(|(k, _)| k != key);
            self.request
                .log_fields
                .push((key.to_owned(), String::from_utf8_lossy(value).into_owned()));
            Ok(())
        }

        fn send_reply(&mut self, status: u32, _: &str, body: &str) -> Result<(), HostError> {
            self.request.reply = Some((status, body.to_owned()));
            Ok(())
        }

        #[cfg(feature = "fault-injection")]
        fn trap(&mut self) {
            panic!("the VM traps");
        }
    }

    impl Calls for MemoryHost {
        fn dispatch(
            &mut self,
            cluster: &str,
            headers: &[(&str, &str)],
            body: Option<&[u8]>,
            _timeout_ms: u32,
        ) -> Result<u32, CallRefused> {
            if self.unknown_cluster.as_deref() == Some(cluster) {
                return Err(CallRefused::UnknownCluster);
            }
            self.calls.push(Call {
                cluster: cluster.to_owned(),
                headers: headers
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                body: body.map(<[u8]>::to_vec),
            });
            Ok(u32::try_from(self.calls.len()).unwrap_or(u32::MAX))
        }

        fn answer(
            &mut self,
            context_id: u32,
            status: u32,
            content_type: &str,
            body: &str,
        ) -> Result<(), HostError> {
            self.answers.push((context_id, status, body.to_owned()));
            self.answer_types.push(content_type.to_owned());
            Ok(())
        }

        fn memory_bytes(&self) -> Option<u64> {
            None
        }
    }
}
