//! Envoy's dynamic-module ABI, the subset this filter uses: checked against Envoy 1.40.0, whose
//! `envoy_dynamic_module_on_program_init` expects ABI version `v0.2.0`.
//!
//! Envoy resolves the hooks this library exports with `dlsym` when a filter config or an
//! access logger config is created (a missing one refuses the config), and the dynamic linker
//! binds the callbacks declared here when the library is loaded (a missing one refuses the
//! load). A changed signature is not detected by either, so these declarations are pinned to
//! that Envoy version, and the tests load the library into that Envoy. Envoy's C enums are
//! `int`-sized.

#![allow(non_camel_case_types)]

use std::ffi::c_void;

/// The ABI version string `envoy_dynamic_module_on_program_init` returns.
pub const ABI_VERSION: &std::ffi::CStr = c"v0.2.0";

/// A byte range: `envoy_dynamic_module_type_{envoy,module}_buffer`. Envoy's ranges are valid
/// only during the hook they are handed to.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Buffer {
    pub ptr: *const u8,
    pub len: usize,
}

impl Buffer {
    pub const EMPTY: Buffer = Buffer {
        ptr: std::ptr::null(),
        len: 0,
    };

    pub fn of(bytes: &[u8]) -> Buffer {
        Buffer {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        }
    }

    /// The bytes, empty for a null range.
    ///
    /// # Safety
    /// The range must be valid for `'a`: Envoy's, within the hook that received it.
    pub unsafe fn bytes<'a>(self) -> &'a [u8] {
        if self.ptr.is_null() || self.len == 0 {
            return &[];
        }
        // SAFETY: the caller's guarantee.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// One header: `envoy_dynamic_module_type_{envoy,module}_http_header`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Header {
    pub key: Buffer,
    pub value: Buffer,
}

impl Header {
    pub const EMPTY: Header = Header {
        key: Buffer::EMPTY,
        value: Buffer::EMPTY,
    };

    pub fn of(key: &[u8], value: &[u8]) -> Header {
        Header {
            key: Buffer::of(key),
            value: Buffer::of(value),
        }
    }
}

/// `*_envoy_ptr`: Envoy's objects, opaque here.
pub type EnvoyPtr = *mut c_void;
/// `*_module_ptr`: this library's objects as Envoy holds them.
pub type ModulePtr = *const c_void;

pub type HeaderType = u32;
pub const REQUEST_HEADER: HeaderType = 0;
pub const RESPONSE_HEADER: HeaderType = 2;

pub type BodyType = u32;
pub const RECEIVED_REQUEST_BODY: BodyType = 0;
pub const RECEIVED_RESPONSE_BODY: BodyType = 2;

pub type AttributeId = u32;
pub const ATTRIBUTE_REQUEST_PROTOCOL: AttributeId = 10;
pub const ATTRIBUTE_ROUTE_NAME: AttributeId = 61;
/// Integer: the response code; absent until a response was sent.
pub const ATTRIBUTE_RESPONSE_CODE: AttributeId = 15;

pub type LogLevel = u32;
pub const LOG_DEBUG: LogLevel = 1;
pub const LOG_INFO: LogLevel = 2;
pub const LOG_WARN: LogLevel = 3;
pub const LOG_ERROR: LogLevel = 4;

/// `envoy_dynamic_module_type_metrics_result`: 0 is success.
pub type MetricsResult = u32;
pub const METRICS_SUCCESS: MetricsResult = 0;

/// `envoy_dynamic_module_type_http_callout_init_result`.
pub type CalloutInit = u32;
pub const CALLOUT_SUCCESS: CalloutInit = 0;
pub const CALLOUT_CLUSTER_NOT_FOUND: CalloutInit = 2;

/// `envoy_dynamic_module_type_http_callout_result`: 0 is a response.
pub type CalloutResult = u32;

pub type HeadersStatus = u32;
pub const HEADERS_CONTINUE: HeadersStatus = 0;
pub const HEADERS_STOP_ITERATION: HeadersStatus = 1;
pub type BodyStatus = u32;
pub const BODY_CONTINUE: BodyStatus = 0;
pub type TrailersStatus = u32;
pub const TRAILERS_CONTINUE: TrailersStatus = 0;

type Define =
    unsafe extern "C" fn(EnvoyPtr, Buffer, *const Buffer, usize, *mut usize) -> MetricsResult;
/// One update of a metric series: (Envoy's object, family id, label values, count, value).
pub type Update = unsafe extern "C" fn(EnvoyPtr, usize, *const Buffer, usize, u64) -> MetricsResult;

extern "C" {
    pub fn envoy_dynamic_module_callback_log(level: LogLevel, message: Buffer);
    pub fn envoy_dynamic_module_callback_get_concurrency() -> u32;

    // Metric families: defined only while the filter config is created.
    pub fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: EnvoyPtr,
        name: Buffer,
        label_names: *const Buffer,
        label_count: usize,
        id: *mut usize,
    ) -> MetricsResult;
    pub fn envoy_dynamic_module_callback_http_filter_config_define_gauge(
        config: EnvoyPtr,
        name: Buffer,
        label_names: *const Buffer,
        label_count: usize,
        id: *mut usize,
    ) -> MetricsResult;

    // Updates from a request (its worker thread) ...
    pub fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter: EnvoyPtr,
        id: usize,
        label_values: *const Buffer,
        label_count: usize,
        value: u64,
    ) -> MetricsResult;
    pub fn envoy_dynamic_module_callback_http_filter_set_gauge(
        filter: EnvoyPtr,
        id: usize,
        label_values: *const Buffer,
        label_count: usize,
        value: u64,
    ) -> MetricsResult;
    pub fn envoy_dynamic_module_callback_http_filter_increment_gauge(
        filter: EnvoyPtr,
        id: usize,
        label_values: *const Buffer,
        label_count: usize,
        value: u64,
    ) -> MetricsResult;
    pub fn envoy_dynamic_module_callback_http_filter_decrement_gauge(
        filter: EnvoyPtr,
        id: usize,
        label_values: *const Buffer,
        label_count: usize,
        value: u64,
    ) -> MetricsResult;
    // ... and from the filter config (the main thread).
    pub fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
        config: EnvoyPtr,
        id: usize,
        label_values: *const Buffer,
        label_count: usize,
        value: u64,
    ) -> MetricsResult;
    pub fn envoy_dynamic_module_callback_http_filter_config_set_gauge(
        config: EnvoyPtr,
        id: usize,
        label_values: *const Buffer,
        label_count: usize,
        value: u64,
    ) -> MetricsResult;
    pub fn envoy_dynamic_module_callback_http_filter_config_increment_gauge(
        config: EnvoyPtr,
        id: usize,
        label_values: *const Buffer,
        label_count: usize,
        value: u64,
    ) -> MetricsResult;
    pub fn envoy_dynamic_module_callback_http_filter_config_decrement_gauge(
        config: EnvoyPtr,
        id: usize,
        label_values: *const Buffer,
        label_count: usize,
        value: u64,
    ) -> MetricsResult;

    // Headers: reads point into Envoy's header map (no copy).
    pub fn envoy_dynamic_module_callback_http_get_header(
        filter: EnvoyPtr,
        header_type: HeaderType,
        key: Buffer,
        value: *mut Buffer,
        index: usize,
        count: *mut usize,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_get_headers_size(
        filter: EnvoyPtr,
        header_type: HeaderType,
    ) -> usize;
    pub fn envoy_dynamic_module_callback_http_get_headers(
        filter: EnvoyPtr,
        header_type: HeaderType,
        headers: *mut Header,
    ) -> bool;
    /// Replaces every value; a null `value.ptr` removes the header.
    pub fn envoy_dynamic_module_callback_http_set_header(
        filter: EnvoyPtr,
        header_type: HeaderType,
        key: Buffer,
        value: Buffer,
    ) -> bool;
    /// Adds a value to a header (`set_header` first removes every value there is).
    pub fn envoy_dynamic_module_callback_http_add_header(
        filter: EnvoyPtr,
        header_type: HeaderType,
        key: Buffer,
        value: Buffer,
    ) -> bool;
    /// Makes Envoy match the route again (after the filter rewrote request headers), as a
    /// wasm filter's header write does by itself.
    pub fn envoy_dynamic_module_callback_http_clear_route_cache(filter: EnvoyPtr);
    pub fn envoy_dynamic_module_callback_http_send_response(
        filter: EnvoyPtr,
        status: u32,
        headers: *const Header,
        header_count: usize,
        body: Buffer,
        details: Buffer,
    );
    pub fn envoy_dynamic_module_callback_http_get_body_chunks_size(
        filter: EnvoyPtr,
        body_type: BodyType,
    ) -> usize;
    pub fn envoy_dynamic_module_callback_http_get_body_chunks(
        filter: EnvoyPtr,
        body_type: BodyType,
        chunks: *mut Buffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_filter_get_attribute_int(
        filter: EnvoyPtr,
        attribute: AttributeId,
        value: *mut u64,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        filter: EnvoyPtr,
        attribute: AttributeId,
        value: *mut Buffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_filter_get_worker_index(filter: EnvoyPtr) -> u32;
    pub fn envoy_dynamic_module_callback_http_set_filter_state_bytes(
        filter: EnvoyPtr,
        key: Buffer,
        value: Buffer,
    ) -> bool;

    // Waking a paused request from any thread: its hook then runs on its worker.
    pub fn envoy_dynamic_module_callback_http_filter_scheduler_new(filter: EnvoyPtr)
        -> *mut c_void;
    pub fn envoy_dynamic_module_callback_http_filter_scheduler_commit(
        scheduler: *mut c_void,
        event: u64,
    );
    pub fn envoy_dynamic_module_callback_http_filter_scheduler_delete(scheduler: *mut c_void);

    // Events for the filter config, committed from any thread, run on the main thread.
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(
        config: EnvoyPtr,
    ) -> *mut c_void;
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
        scheduler: *mut c_void,
        event: u64,
    );
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(
        scheduler: *mut c_void,
    );
    /// An HTTP call owned by the filter config: main thread only. `headers` must hold
    /// `:method`, `:path` and `:authority`.
    pub fn envoy_dynamic_module_callback_http_filter_config_http_callout(
        config: EnvoyPtr,
        callout_id: *mut u64,
        cluster: Buffer,
        headers: *const Header,
        header_count: usize,
        body: Buffer,
        timeout_ms: u64,
    ) -> CalloutInit;

    // The access logger (`envoy.access_loggers.dynamic_modules`): its calls take the logger's
    // object for one logged request (valid during `on_access_logger_log`), and read what
    // Envoy logged.
    pub fn envoy_dynamic_module_callback_access_logger_get_headers_size(
        logger: EnvoyPtr,
        header_type: HeaderType,
    ) -> usize;
    pub fn envoy_dynamic_module_callback_access_logger_get_headers(
        logger: EnvoyPtr,
        header_type: HeaderType,
        headers: *mut Header,
    ) -> bool;
    /// 0 when no response was sent.
    pub fn envoy_dynamic_module_callback_access_logger_get_response_code(logger: EnvoyPtr) -> u32;
    pub fn envoy_dynamic_module_callback_access_logger_get_route_name(
        logger: EnvoyPtr,
        value: *mut Buffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_access_logger_get_timing_info(
        logger: EnvoyPtr,
        timing: *mut TimingInfo,
    );
    pub fn envoy_dynamic_module_callback_access_logger_get_worker_index(logger: EnvoyPtr) -> u32;
}

/// `envoy_dynamic_module_type_timing_info`: the request's start and its durations from it, in
/// nanoseconds, -1 where Envoy has none. Envoy 1.40 writes these eight fields.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct TimingInfo {
    pub start_time_unix_ns: i64,
    /// From the first request byte to the request's completion: Envoy's `%DURATION%`.
    pub request_complete_duration_ns: i64,
    pub other: [i64; 6],
}

/// The define callbacks by metric kind.
pub fn define(gauge: bool) -> Define {
    if gauge {
        envoy_dynamic_module_callback_http_filter_config_define_gauge
    } else {
        envoy_dynamic_module_callback_http_filter_config_define_counter
    }
}

/// Sends one line to Envoy's log (component `dynamic_modules`).
pub fn log(level: LogLevel, message: &str) {
    // SAFETY: the message outlives the call.
    unsafe { envoy_dynamic_module_callback_log(level, Buffer::of(message.as_bytes())) }
}
