//! The core's host traits over the dynamic-module ABI. [`NativeHost`] is one worker's view of
//! metrics and shared data through one of Envoy's objects: a request's filter on its worker
//! thread, or the filter config on the main thread. [`RequestHost`] adds one request;
//! [`MainHost`] adds the calls only the main thread may make.

use veza_observability_core::header_map::Headers;
use veza_observability_core::host::{
    CallRefused, Calls, CasOutcome, HeaderMap, Host, HostError, Labels, MetricId, Property, Request,
};

use std::mem::MaybeUninit;

use crate::abi::{self, Buffer, EnvoyPtr, Header};
use crate::gateway::{Gateway, Reply};
use crate::metrics::SeriesTable;

/// Request headers read without a heap allocation.
const HEADERS_ON_STACK: usize = 48;

/// Envoy refused a request-side call: reported as proxy-wasm's `InternalFailure` would be.
const REFUSED: HostError = HostError(10);

/// Which of Envoy's objects metric updates go through.
#[derive(Clone, Copy)]
enum Target {
    /// A request's filter: its worker thread.
    Filter(EnvoyPtr),
    /// The filter config: the main thread.
    Config(EnvoyPtr),
}

/// Metrics and shared data for one worker's core.
pub struct NativeHost<'a> {
    gateway: &'a Gateway,
    series: &'a mut SeriesTable,
    target: Target,
}

impl NativeHost<'_> {
    fn update(
        &self,
        id: MetricId,
        on_filter: abi::Update,
        on_config: abi::Update,
        value: u64,
    ) -> Result<(), HostError> {
        match self.target {
            Target::Filter(filter) => self.series.update(id, filter, on_filter, value),
            Target::Config(config) => self.series.update(id, config, on_config, value),
        }
    }
}

impl Host for NativeHost<'_> {
    /// Defines the series and shows it at 0 at once, as a wasm host's defined metric is.
    fn define_counter(&mut self, name: &str, labels: &Labels<'_>) -> Result<MetricId, HostError> {
        let id = self
            .series
            .define(self.gateway.families(), name, false, labels)?;
        self.increment_counter(id, 0)?;
        Ok(id)
    }

    fn increment_counter(&mut self, id: MetricId, delta: u64) -> Result<(), HostError> {
        self.update(
            id,
            abi::envoy_dynamic_module_callback_http_filter_increment_counter,
            abi::envoy_dynamic_module_callback_http_filter_config_increment_counter,
            delta,
        )
    }

    fn define_gauge(&mut self, name: &str, labels: &Labels<'_>) -> Result<MetricId, HostError> {
        let id = self
            .series
            .define(self.gateway.families(), name, true, labels)?;
        // Envoy creates a tagged gauge only when its value changes: up and down again shows
        // it at 0 now, as a wasm host's defined gauge is, without touching what other
        // workers added to it.
        self.add_gauge(id, 1)?;
        self.add_gauge(id, -1)?;
        Ok(id)
    }

    fn set_gauge(&mut self, id: MetricId, value: u64) -> Result<(), HostError> {
        self.update(
            id,
            abi::envoy_dynamic_module_callback_http_filter_set_gauge,
            abi::envoy_dynamic_module_callback_http_filter_config_set_gauge,
            value,
        )
    }

    fn add_gauge(&mut self, id: MetricId, delta: i64) -> Result<(), HostError> {
        if delta >= 0 {
            self.update(
                id,
                abi::envoy_dynamic_module_callback_http_filter_increment_gauge,
                abi::envoy_dynamic_module_callback_http_filter_config_increment_gauge,
                delta.unsigned_abs(),
            )
        } else {
            self.update(
                id,
                abi::envoy_dynamic_module_callback_http_filter_decrement_gauge,
                abi::envoy_dynamic_module_callback_http_filter_config_decrement_gauge,
                delta.unsigned_abs(),
            )
        }
    }

    fn get_shared(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError> {
        self.gateway.shared().get(key)
    }

    fn set_shared(&mut self, key: &str, value: &[u8], cas: u32) -> Result<CasOutcome, HostError> {
        self.gateway.shared().set(key, value, cas)
    }
}

/// `Host` for a host that adds to [`NativeHost`] (its `host` field): metrics and shared data
/// are the same whatever Envoy object the updates go through.
macro_rules! delegate_host {
    ($host:ident) => {
        impl Host for $host<'_> {
            fn define_counter(
                &mut self,
                name: &str,
                labels: &Labels<'_>,
            ) -> Result<MetricId, HostError> {
                self.host.define_counter(name, labels)
            }
            fn increment_counter(&mut self, id: MetricId, delta: u64) -> Result<(), HostError> {
                self.host.increment_counter(id, delta)
            }
            fn define_gauge(
                &mut self,
                name: &str,
                labels: &Labels<'_>,
            ) -> Result<MetricId, HostError> {
                self.host.define_gauge(name, labels)
            }
            fn set_gauge(&mut self, id: MetricId, value: u64) -> Result<(), HostError> {
                self.host.set_gauge(id, value)
            }
            fn add_gauge(&mut self, id: MetricId, delta: i64) -> Result<(), HostError> {
                self.host.add_gauge(id, delta)
            }
            fn get_shared(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError> {
                self.host.get_shared(key)
            }
            fn set_shared(
                &mut self,
                key: &str,
                value: &[u8],
                cas: u32,
            ) -> Result<CasOutcome, HostError> {
                self.host.set_shared(key, value, cas)
            }
        }
    };
}

/// One request on its worker thread.
pub struct RequestHost<'a> {
    host: NativeHost<'a>,
    filter: EnvoyPtr,
    /// A local reply was sent in this hook: a paused request that needs no waking.
    pub replied: bool,
    headers: HeaderList,
}

/// Where Envoy lists the request headers: most requests have a few dozen, listed without a
/// heap allocation and left uninitialised (Envoy writes each entry; zeroing 1.5 KiB of stack
/// cost a quarter of the hook's cache misses).
struct HeaderList {
    on_stack: MaybeUninit<[Header; HEADERS_ON_STACK]>,
    on_heap: Vec<Header>,
}

/// How one of Envoy's objects lists a header map: its size, then every entry.
type ListSize = unsafe extern "C" fn(EnvoyPtr, abi::HeaderType) -> usize;
type List = unsafe extern "C" fn(EnvoyPtr, abi::HeaderType, *mut Header) -> bool;

impl HeaderList {
    fn new() -> HeaderList {
        HeaderList {
            on_stack: MaybeUninit::uninit(),
            on_heap: Vec::new(),
        }
    }

    /// The request headers of `envoy` (a filter or a logged request), read in place.
    ///
    /// # Safety
    /// `envoy` is Envoy's object for the running hook, and `size` and `list` its calls.
    unsafe fn read(
        &mut self,
        envoy: EnvoyPtr,
        size: ListSize,
        list: List,
    ) -> Result<EnvoyHeaders<'_>, HostError> {
        // SAFETY: the caller's guarantee; Envoy writes `count` entries into an array of that
        // many.
        unsafe {
            let count = size(envoy, abi::REQUEST_HEADER);
            if count == 0 {
                return Ok(EnvoyHeaders { entries: &[] });
            }
            let array: *mut Header = if count <= HEADERS_ON_STACK {
                self.on_stack.as_mut_ptr().cast()
            } else {
                self.on_heap.resize(count, Header::EMPTY);
                self.on_heap.as_mut_ptr()
            };
            if !list(envoy, abi::REQUEST_HEADER, array) {
                return Err(REFUSED);
            }
            Ok(EnvoyHeaders {
                entries: std::slice::from_raw_parts(array, count),
            })
        }
    }
}

impl<'a> RequestHost<'a> {
    pub fn new(gateway: &'a Gateway, series: &'a mut SeriesTable, filter: EnvoyPtr) -> Self {
        RequestHost {
            host: NativeHost {
                gateway,
                series,
                target: Target::Filter(filter),
            },
            filter,
            replied: false,
            headers: HeaderList::new(),
        }
    }
}

/// The request headers read in place: each entry points into Envoy's header map, which stays
/// as it is while this lives, since it borrows the [`RequestHost`] every write goes through,
/// and the host lives only during the hook.
pub struct EnvoyHeaders<'h> {
    entries: &'h [Header],
}

impl Headers for EnvoyHeaders<'_> {
    fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        // SAFETY: the map is unchanged while `self` lives (above).
        (self.entries.iter()).map(|entry| unsafe { (entry.key.bytes(), entry.value.bytes()) })
    }
}

delegate_host!(RequestHost);

fn header_type(map: HeaderMap) -> abi::HeaderType {
    match map {
        HeaderMap::Request => abi::REQUEST_HEADER,
        HeaderMap::Response => abi::RESPONSE_HEADER,
    }
}

/// The clock the core's durations and windows use: nanoseconds since the epoch.
///
/// `clock_gettime` itself: `SystemTime::now` and `duration_since` are out-of-line in std and
/// cost 14 instruction-cache misses per request for two readings, this a few.
pub fn now_nanos() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer for the call.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) } != 0 {
        return 0;
    }
    let seconds = u64::try_from(now.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(now.tv_nsec).unwrap_or(0);
    seconds.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// Envoy's header writes: set (replace, or remove with a null value) and add.
type HeaderWrite = unsafe extern "C" fn(EnvoyPtr, abi::HeaderType, Buffer, Buffer) -> bool;

impl RequestHost<'_> {
    /// One header write.
    fn write_header(
        &mut self,
        write: HeaderWrite,
        map: HeaderMap,
        name: &str,
        value: Buffer,
    ) -> Result<(), HostError> {
        // SAFETY: Envoy's filter during its hook; the buffers live through the call.
        let done = unsafe {
            write(
                self.filter,
                header_type(map),
                Buffer::of(name.as_bytes()),
                value,
            )
        };
        done.then_some(()).ok_or(REFUSED)
    }
}

impl Request for RequestHost<'_> {
    fn now_nanos(&mut self) -> Result<u64, HostError> {
        Ok(now_nanos())
    }

    type Headers<'h>
        = EnvoyHeaders<'h>
    where
        Self: 'h;

    fn request_headers(&mut self) -> Result<EnvoyHeaders<'_>, HostError> {
        // SAFETY: `filter` is Envoy's object for the running hook, and these its calls.
        unsafe {
            self.headers.read(
                self.filter,
                abi::envoy_dynamic_module_callback_http_get_headers_size,
                abi::envoy_dynamic_module_callback_http_get_headers,
            )
        }
    }

    fn header(&mut self, map: HeaderMap, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        let mut value = Buffer::EMPTY;
        let mut count = 0usize;
        // SAFETY: valid pointers for the call; the value is copied before the hook returns.
        unsafe {
            let found = abi::envoy_dynamic_module_callback_http_get_header(
                self.filter,
                header_type(map),
                Buffer::of(name.as_bytes()),
                &mut value,
                0,
                &mut count,
            );
            Ok((found && count > 0).then(|| value.bytes().to_vec()))
        }
    }

    fn set_header(&mut self, map: HeaderMap, name: &str, value: &[u8]) -> Result<(), HostError> {
        let set = abi::envoy_dynamic_module_callback_http_set_header;
        self.write_header(set, map, name, Buffer::of(value))
    }

    fn add_header(&mut self, map: HeaderMap, name: &str, value: &[u8]) -> Result<(), HostError> {
        let add = abi::envoy_dynamic_module_callback_http_add_header;
        self.write_header(add, map, name, Buffer::of(value))
    }

    fn remove_header(&mut self, map: HeaderMap, name: &str) -> Result<(), HostError> {
        // A set with a null value removes the header.
        let set = abi::envoy_dynamic_module_callback_http_set_header;
        self.write_header(set, map, name, Buffer::EMPTY)
    }

    fn clear_route_cache(&mut self) {
        // SAFETY: Envoy's filter, during its hook.
        unsafe { abi::envoy_dynamic_module_callback_http_clear_route_cache(self.filter) }
    }

    fn property(&mut self, property: Property) -> Result<Option<Vec<u8>>, HostError> {
        let attribute = match property {
            // Not an attribute in this ABI: the core falls back to what it measured itself.
            Property::RequestDuration => return Ok(None),
            Property::RouteName => abi::ATTRIBUTE_ROUTE_NAME,
            Property::RequestProtocol => abi::ATTRIBUTE_REQUEST_PROTOCOL,
        };
        let mut value = Buffer::EMPTY;
        // SAFETY: a valid pointer for the call; the value is copied before the hook returns.
        unsafe {
            let found = abi::envoy_dynamic_module_callback_http_filter_get_attribute_string(
                self.filter,
                attribute,
                &mut value,
            );
            Ok(found.then(|| value.bytes().to_vec()))
        }
    }

    fn response_code(&mut self) -> Result<Option<u64>, HostError> {
        let mut code = 0;
        // SAFETY: a valid pointer for the call.
        let found = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_get_attribute_int(
                self.filter,
                abi::ATTRIBUTE_RESPONSE_CODE,
                &mut code,
            )
        };
        Ok(found.then_some(code))
    }

    fn set_log_field(&mut self, key: &str, value: &[u8]) -> Result<(), HostError> {
        // Filter state under the key itself, which access log formats read.
        // SAFETY: valid buffers for the call.
        let done = unsafe {
            abi::envoy_dynamic_module_callback_http_set_filter_state_bytes(
                self.filter,
                Buffer::of(key.as_bytes()),
                Buffer::of(value),
            )
        };
        done.then_some(()).ok_or(REFUSED)
    }

    fn send_reply(&mut self, status: u32, content_type: &str, body: &str) -> Result<(), HostError> {
        send_response(self.filter, status, content_type, body);
        self.replied = true;
        Ok(())
    }

    #[cfg(feature = "fault-injection")]
    #[allow(
        clippy::panic,
        reason = "the test-only fault: a panic for the hook's guard"
    )]
    fn trap(&mut self) {
        panic!("fault injection: the trap header");
    }
}

/// Answers a request locally.
pub fn send_response(filter: EnvoyPtr, status: u32, content_type: &str, body: &str) {
    let headers = [
        Header::of(b"content-type", content_type.as_bytes()),
        Header::of(b"cache-control", b"no-store"),
    ];
    // SAFETY: valid buffers for the call; `filter` is Envoy's object for the running hook.
    unsafe {
        abi::envoy_dynamic_module_callback_http_send_response(
            filter,
            status,
            headers.as_ptr(),
            headers.len(),
            Buffer::of(body.as_bytes()),
            Buffer::of(b"veza_observability"),
        );
    }
}

/// One request as Envoy logs it, on its worker thread, for the module's access logger: it
/// reads what Envoy logged and changes nothing. Metric updates go through the filter config
/// the logger counts for, whose families they are.
pub struct LogHost<'a> {
    host: NativeHost<'a>,
    logger: EnvoyPtr,
    headers: HeaderList,
}

impl<'a> LogHost<'a> {
    pub fn new(
        gateway: &'a Gateway,
        series: &'a mut SeriesTable,
        config: EnvoyPtr,
        logger: EnvoyPtr,
    ) -> Self {
        LogHost {
            host: NativeHost {
                gateway,
                series,
                target: Target::Config(config),
            },
            logger,
            headers: HeaderList::new(),
        }
    }
}

delegate_host!(LogHost);

impl Request for LogHost<'_> {
    fn now_nanos(&mut self) -> Result<u64, HostError> {
        Ok(now_nanos())
    }

    type Headers<'h>
        = EnvoyHeaders<'h>
    where
        Self: 'h;

    fn request_headers(&mut self) -> Result<EnvoyHeaders<'_>, HostError> {
        // SAFETY: `logger` is Envoy's object for the logged request, and these its calls.
        unsafe {
            self.headers.read(
                self.logger,
                abi::envoy_dynamic_module_callback_access_logger_get_headers_size,
                abi::envoy_dynamic_module_callback_access_logger_get_headers,
            )
        }
    }

    /// The logged request is only counted: nothing else of it is read.
    fn header(&mut self, _: HeaderMap, _: &str) -> Result<Option<Vec<u8>>, HostError> {
        Err(REFUSED)
    }

    fn set_header(&mut self, _: HeaderMap, _: &str, _: &[u8]) -> Result<(), HostError> {
        Err(REFUSED)
    }

    fn add_header(&mut self, _: HeaderMap, _: &str, _: &[u8]) -> Result<(), HostError> {
        Err(REFUSED)
    }

    fn remove_header(&mut self, _: HeaderMap, _: &str) -> Result<(), HostError> {
        Err(REFUSED)
    }

    fn clear_route_cache(&mut self) {}

    fn property(&mut self, property: Property) -> Result<Option<Vec<u8>>, HostError> {
        match property {
            Property::RequestDuration => {
                let mut timing = abi::TimingInfo::default();
                // SAFETY: Envoy's logger during the hook; Envoy writes the struct's fields.
                unsafe {
                    abi::envoy_dynamic_module_callback_access_logger_get_timing_info(
                        self.logger,
                        &mut timing,
                    );
                }
                let nanos = u64::try_from(timing.request_complete_duration_ns).ok();
                Ok(nanos.map(|n| n.to_le_bytes().to_vec()))
            }
            Property::RouteName => {
                let mut value = Buffer::EMPTY;
                // SAFETY: a valid pointer for the call; the value is copied before the hook
                // returns.
                unsafe {
                    let found = abi::envoy_dynamic_module_callback_access_logger_get_route_name(
                        self.logger,
                        &mut value,
                    );
                    Ok(found.then(|| value.bytes().to_vec()))
                }
            }
            // For spans only, which this host has none of.
            Property::RequestProtocol => Ok(None),
        }
    }

    fn response_code(&mut self) -> Result<Option<u64>, HostError> {
        // SAFETY: Envoy's logger during the hook.
        let code = unsafe {
            abi::envoy_dynamic_module_callback_access_logger_get_response_code(self.logger)
        };
        Ok((code != 0).then_some(u64::from(code)))
    }

    fn set_log_field(&mut self, _: &str, _: &[u8]) -> Result<(), HostError> {
        Err(REFUSED)
    }

    fn send_reply(&mut self, _: u32, _: &str, _: &str) -> Result<(), HostError> {
        Err(REFUSED)
    }

    #[cfg(feature = "fault-injection")]
    #[allow(
        clippy::panic,
        reason = "the test-only fault: a panic for the logger's guard"
    )]
    fn trap(&mut self) {
        panic!("fault injection: the trap header, logged");
    }
}

/// One worker's core on the main thread: its ticks, its calls and their answers.
pub struct MainHost<'a> {
    host: NativeHost<'a>,
    config: EnvoyPtr,
    slot: usize,
}

impl<'a> MainHost<'a> {
    pub fn new(
        gateway: &'a Gateway,
        series: &'a mut SeriesTable,
        config: EnvoyPtr,
        slot: usize,
    ) -> Self {
        MainHost {
            host: NativeHost {
                gateway,
                series,
                target: Target::Config(config),
            },
            config,
            slot,
        }
    }
}

delegate_host!(MainHost);

impl Calls for MainHost<'_> {
    fn dispatch(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout_ms: u32,
    ) -> Result<u32, CallRefused> {
        let headers: Vec<Header> = headers
            .iter()
            .map(|(k, v)| Header::of(k.as_bytes(), v.as_bytes()))
            .collect();
        let mut id = 0u64;
        // SAFETY: valid buffers for the call; the main thread, as the ABI requires.
        let result = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_http_callout(
                self.config,
                &mut id,
                Buffer::of(cluster.as_bytes()),
                headers.as_ptr(),
                headers.len(),
                body.map_or(Buffer::EMPTY, Buffer::of),
                u64::from(timeout_ms),
            )
        };
        match result {
            abi::CALLOUT_SUCCESS => Ok(self.host.gateway.calling(id, self.slot)),
            abi::CALLOUT_CLUSTER_NOT_FOUND => Err(CallRefused::UnknownCluster),
            _ => Err(CallRefused::Failed),
        }
    }

    fn answer(
        &mut self,
        context_id: u32,
        status: u32,
        content_type: &str,
        body: &str,
    ) -> Result<(), HostError> {
        let reply = Reply {
            status,
            content_type: content_type.to_owned(),
            body: body.to_owned(),
        };
        self.host
            .gateway
            .answer(context_id, reply)
            .ok_or(HostError(1))
    }

    /// No VM here: the process's memory is Envoy's own `server.memory_allocated`.
    fn memory_bytes(&self) -> Option<u64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::{EnvoyHeaders, Header, Headers};
    use crate::abi::Buffer;

    /// Envoy's list read as the core reads any map: in order, an empty value (Envoy may give
    /// it as a null pointer) as empty, the first of repeated names found.
    #[test]
    fn envoy_headers_read_as_listed() {
        let entries = [
            Header::of(b":path", b"/api/v1/tracks/1"),
            Header::of(b"x-dup", b"one"),
            Header {
                key: Buffer::of(b"x-empty"),
                value: Buffer::EMPTY,
            },
            Header::of(b"x-dup", b"two"),
        ];
        let headers = EnvoyHeaders { entries: &entries };
        let pairs: Vec<(&[u8], &[u8])> = headers.pairs().collect();
        assert_eq!(
            pairs,
            [
                (&b":path"[..], &b"/api/v1/tracks/1"[..]),
                (b"x-dup", b"one"),
                (b"x-empty", b""),
                (b"x-dup", b"two"),
            ]
        );
        assert_eq!(
            headers.find(["x-dup", "x-empty", ":method"]),
            [Some(&b"one"[..]), Some(&b""[..]), None]
        );
        assert_eq!(EnvoyHeaders { entries: &[] }.pairs().count(), 0);
    }

    fn std_nanos() -> u128 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    }

    /// The same clock as std's `SystemTime`, read between two of its readings.
    #[test]
    fn now_nanos_reads_the_system_clock() {
        let before = std_nanos();
        let now = u128::from(super::now_nanos());
        let after = std_nanos();
        assert!(
            before <= now && now <= after,
            "{before} <= {now} <= {after}"
        );
    }
}
