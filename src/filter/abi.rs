//! The hostcalls the filter makes, declared here so that none of them can panic.
//!
//! The SDK's `proxy_wasm::hostcalls` wrappers `panic!` on any status they do not expect, and a
//! panic traps the VM. These return every non-Ok status as a [`HostError`] instead. Buffers the
//! host returns are allocated through the SDK's exported `proxy_on_memory_allocate`, which
//! hands out `Box<[u8]>` allocations; they are taken back as `Vec`s of that exact size.

use std::ptr::null_mut;

use proxy_wasm::types::{BufferType, MapType, MetricType};

use crate::header_map::Serialized;
use crate::host::{
    CallRefused, Calls, CasOutcome, HeaderMap, Host, HostError, Labels, MetricId, Property, Request,
};
use crate::stats_tags;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_define_metric(
        metric_type: MetricType,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> RawStatus;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> RawStatus;
    fn proxy_record_metric(metric_id: u32, value: u64) -> RawStatus;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> RawStatus;
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> RawStatus;
    fn proxy_get_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> RawStatus;
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> RawStatus;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> RawStatus;
    fn proxy_set_effective_context(context_id: u32) -> RawStatus;
    #[allow(clippy::too_many_arguments)]
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> RawStatus;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> RawStatus;
    fn proxy_get_buffer_bytes(
        buffer_type: BufferType,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> RawStatus;
    fn proxy_set_tick_period_milliseconds(period: u32) -> RawStatus;
    fn proxy_replace_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> RawStatus;
    fn proxy_add_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> RawStatus;
    fn proxy_remove_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
    ) -> RawStatus;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> RawStatus;
}

/// Statuses as plain numbers: the host may return values the SDK's `Status` enum lacks.
type RawStatus = u32;
const OK: RawStatus = 0;
const NOT_FOUND: RawStatus = 1;
const CAS_MISMATCH: RawStatus = 8;

fn check(status: RawStatus) -> Result<(), HostError> {
    match status {
        OK => Ok(()),
        other => Err(HostError(other)),
    }
}

/// Takes ownership of a host-allocated buffer.
///
/// # Safety
/// `data` must be null or come from `proxy_on_memory_allocate(size)`.
unsafe fn take_buffer(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        return Vec::new();
    }
    // SAFETY: the host allocated exactly `size` bytes through proxy_on_memory_allocate.
    unsafe { Vec::from_raw_parts(data, size, size) }
}

/// The data a hostcall returned through `data`/`size`: `None` when the host had none.
///
/// # Safety
/// As for [`take_buffer`]: `data` is null or the host's allocation of `size` bytes.
unsafe fn returned(
    status: RawStatus,
    data: *mut u8,
    size: usize,
) -> Result<Option<Vec<u8>>, HostError> {
    match status {
        OK if data.is_null() => Ok(None),
        // SAFETY: the caller's guarantee.
        OK => Ok(Some(unsafe { take_buffer(data, size) })),
        NOT_FOUND => Ok(None),
        other => Err(HostError(other)),
    }
}

/// A property path in the ABI's form: segments joined by NUL.
pub struct PropertyPath(&'static [u8]);

const REQUEST_DURATION: PropertyPath = PropertyPath(b"request\0duration");
const ROUTE_NAME: PropertyPath = PropertyPath(b"xds\0route_name");
const REQUEST_PROTOCOL: PropertyPath = PropertyPath(b"request\0protocol");

/// A property's raw bytes; `Ok(None)` when the host has no value for it.
pub fn property(path: &PropertyPath) -> Result<Option<Vec<u8>>, HostError> {
    let mut data = null_mut();
    let mut size = 0;
    // SAFETY: pointers are valid for the call; the buffer is the host's allocation.
    unsafe {
        let status = proxy_get_property(path.0.as_ptr(), path.0.len(), &mut data, &mut size);
        returned(status, data, size)
    }
}

/// The first value of a header in one of the current context's header maps.
pub fn header(map: MapType, name: &str) -> Result<Option<Vec<u8>>, HostError> {
    let mut data = null_mut();
    let mut size = 0;
    // SAFETY: pointers are valid for the call; the buffer is the host's allocation.
    unsafe {
        let status =
            proxy_get_header_map_value(map, name.as_ptr(), name.len(), &mut data, &mut size);
        returned(status, data, size)
    }
}

/// Every request header in the ABI's serialized form (see `crate::header_map`): one hostcall
/// for all of them.
pub fn request_headers() -> Result<Vec<u8>, HostError> {
    let mut data = null_mut();
    let mut size = 0;
    // SAFETY: pointers are valid for the call; the buffer is the host's allocation.
    let map = unsafe {
        let status = proxy_get_header_map_pairs(MapType::HttpRequestHeaders, &mut data, &mut size);
        returned(status, data, size)
    };
    Ok(map?.unwrap_or_default())
}

/// The host's clock, in nanoseconds since the epoch. Returns data without an allocation.
pub fn current_time_nanos() -> Result<u64, HostError> {
    let mut nanos = 0;
    // SAFETY: a valid pointer for the call.
    check(unsafe { proxy_get_current_time_nanoseconds(&mut nanos) })?;
    Ok(nanos)
}

/// Up to `size` bytes of one of the current context's buffers.
pub fn buffer(buffer_type: BufferType, size: usize) -> Result<Option<Vec<u8>>, HostError> {
    buffer_at(buffer_type, 0, size)
}

/// Up to `size` bytes at `start` of one of the current context's buffers.
pub fn buffer_at(
    buffer_type: BufferType,
    start: usize,
    size: usize,
) -> Result<Option<Vec<u8>>, HostError> {
    if size == 0 {
        return Ok(None);
    }
    let mut data = null_mut();
    let mut len = 0;
    // SAFETY: pointers are valid for the call; the buffer is the host's allocation.
    unsafe {
        let status = proxy_get_buffer_bytes(buffer_type, start, size, &mut data, &mut len);
        returned(status, data, len)
    }
}

/// Makes `context_id` the context later hostcalls act on (to answer a waiting request from
/// the root context). Fails when that request is gone.
pub fn set_effective_context(context_id: u32) -> Result<(), HostError> {
    // SAFETY: a plain value.
    check(unsafe { proxy_set_effective_context(context_id) })
}

/// Answers the effective context's request locally with a JSON body.
pub fn send_response(status: u32, content_type: &str, body: &str) -> Result<(), HostError> {
    let headers = crate::header_map::serialize(&[
        ("content-type", content_type.as_bytes()),
        ("cache-control", b"no-store"),
    ]);
    let details = b"veza_observability";
    // SAFETY: pointers are valid for the call.
    check(unsafe {
        proxy_send_local_response(
            status,
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    })
}

/// Sets a header (replacing every value it had).
pub fn set_header(map: MapType, name: &str, value: &[u8]) -> Result<(), HostError> {
    // SAFETY: pointers are valid for the call.
    check(unsafe {
        proxy_replace_header_map_value(map, name.as_ptr(), name.len(), value.as_ptr(), value.len())
    })
}

/// Adds a value to a header.
pub fn add_header(map: MapType, name: &str, value: &[u8]) -> Result<(), HostError> {
    // SAFETY: pointers are valid for the call.
    check(unsafe {
        proxy_add_header_map_value(map, name.as_ptr(), name.len(), value.as_ptr(), value.len())
    })
}

/// Removes every value of a header.
pub fn remove_header(map: MapType, name: &str) -> Result<(), HostError> {
    // SAFETY: pointers are valid for the call.
    check(unsafe { proxy_remove_header_map_value(map, name.as_ptr(), name.len()) })
}

/// Bytes of this VM's linear memory (it only grows: pages are never given back).
pub fn vm_memory_bytes() -> u64 {
    let pages = core::arch::wasm32::memory_size::<0>();
    (pages as u64).saturating_mul(65_536)
}

/// Sets the root context's tick period; 0 stops ticks.
pub fn set_tick_period_ms(period: u32) -> Result<(), HostError> {
    // SAFETY: a plain value.
    check(unsafe { proxy_set_tick_period_milliseconds(period) })
}

/// Defines a metric under the flat name its labels are encoded in (the ABI has no labels).
fn define_metric(kind: MetricType, name: &str, labels: &Labels<'_>) -> Result<MetricId, HostError> {
    let name = stats_tags::encode(name, labels);
    let mut id = 0;
    // SAFETY: pointers are valid for the call.
    check(unsafe { proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

/// [`Host`] over the real hostcalls.
pub struct EnvoyHost;

impl Host for EnvoyHost {
    fn define_counter(&mut self, name: &str, labels: &Labels<'_>) -> Result<MetricId, HostError> {
        define_metric(MetricType::Counter, name, labels)
    }

    fn increment_counter(&mut self, id: MetricId, delta: u64) -> Result<(), HostError> {
        let delta = i64::try_from(delta).unwrap_or(i64::MAX);
        // SAFETY: plain values.
        check(unsafe { proxy_increment_metric(id, delta) })
    }

    fn define_gauge(&mut self, name: &str, labels: &Labels<'_>) -> Result<MetricId, HostError> {
        define_metric(MetricType::Gauge, name, labels)
    }

    fn add_gauge(&mut self, id: MetricId, delta: i64) -> Result<(), HostError> {
        // SAFETY: plain values.
        check(unsafe { proxy_increment_metric(id, delta) })
    }

    fn set_gauge(&mut self, id: MetricId, value: u64) -> Result<(), HostError> {
        // SAFETY: plain values.
        check(unsafe { proxy_record_metric(id, value) })
    }

    fn get_shared(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError> {
        let mut data = null_mut();
        let mut size = 0;
        let mut cas = 0;
        // SAFETY: pointers are valid for the call; the buffer is the host's allocation.
        let value = unsafe {
            let status =
                proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas);
            returned(status, data, size)
        };
        Ok(value?.map(|value| (value, cas)))
    }

    fn set_shared(&mut self, key: &str, value: &[u8], cas: u32) -> Result<CasOutcome, HostError> {
        // SAFETY: pointers are valid for the call.
        let status = unsafe {
            proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
        };
        match status {
            OK => Ok(CasOutcome::Stored),
            CAS_MISMATCH => Ok(CasOutcome::Mismatch),
            other => Err(HostError(other)),
        }
    }
}

fn map_type(map: HeaderMap) -> MapType {
    match map {
        HeaderMap::Request => MapType::HttpRequestHeaders,
        HeaderMap::Response => MapType::HttpResponseHeaders,
    }
}

/// The current HTTP context's request, over the real hostcalls.
impl Request for EnvoyHost {
    fn now_nanos(&mut self) -> Result<u64, HostError> {
        current_time_nanos()
    }

    type Headers<'h> = Serialized<Vec<u8>>;
    /// The host hands the map over in memory it allocated in the VM, the core's to keep.
    fn request_headers(&mut self) -> Result<Serialized<Vec<u8>>, HostError> {
        request_headers().map(Serialized)
    }

    fn header(&mut self, map: HeaderMap, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        header(map_type(map), name)
    }

    fn set_header(&mut self, map: HeaderMap, name: &str, value: &[u8]) -> Result<(), HostError> {
        set_header(map_type(map), name, value)
    }

    fn add_header(&mut self, map: HeaderMap, name: &str, value: &[u8]) -> Result<(), HostError> {
        add_header(map_type(map), name, value)
    }

    fn remove_header(&mut self, map: HeaderMap, name: &str) -> Result<(), HostError> {
        remove_header(map_type(map), name)
    }

    /// Envoy clears it after every request-header write of a Wasm filter.
    fn clear_route_cache(&mut self) {}

    fn property(&mut self, property: Property) -> Result<Option<Vec<u8>>, HostError> {
        self::property(match property {
            Property::RequestDuration => &REQUEST_DURATION,
            Property::RouteName => &ROUTE_NAME,
            Property::RequestProtocol => &REQUEST_PROTOCOL,
        })
    }

    fn set_log_field(&mut self, key: &str, value: &[u8]) -> Result<(), HostError> {
        // Envoy keeps it as filter state `wasm.<key>`, which access log formats read.
        // SAFETY: pointers are valid for the call.
        check(unsafe { proxy_set_property(key.as_ptr(), key.len(), value.as_ptr(), value.len()) })
    }

    fn send_reply(&mut self, status: u32, content_type: &str, body: &str) -> Result<(), HostError> {
        send_response(status, content_type, body)
    }

    #[cfg(feature = "fault-injection")]
    fn trap(&mut self) {
        core::arch::wasm32::unreachable();
    }
}

/// The root context's calls, through the SDK so that their answers are routed back to it.
impl Calls for EnvoyHost {
    fn dispatch(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout_ms: u32,
    ) -> Result<u32, CallRefused> {
        let timeout = std::time::Duration::from_millis(u64::from(timeout_ms));
        match proxy_wasm::hostcalls::dispatch_http_call(
            cluster,
            headers.to_vec(),
            body,
            vec![],
            timeout,
        ) {
            Ok(token) => Ok(token),
            // Envoy's answer for a cluster it does not have.
            Err(proxy_wasm::types::Status::BadArgument) => Err(CallRefused::UnknownCluster),
            Err(_) => Err(CallRefused::Failed),
        }
    }

    fn answer(
        &mut self,
        context_id: u32,
        status: u32,
        content_type: &str,
        body: &str,
    ) -> Result<(), HostError> {
        set_effective_context(context_id)?;
        send_response(status, content_type, body)
    }

    fn memory_bytes(&self) -> Option<u64> {
        Some(vm_memory_bytes())
    }
}
