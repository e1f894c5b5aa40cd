//! The functions Envoy calls. Each one runs its work inside [`guard`]: a panic stops at this
//! boundary, the request goes on as if the filter were absent, and the panic is counted in
//! `veza_observability_errors_total{operation="hook"}` and logged once per worker.
//!
//! Lifetimes are Envoy's: the gateway (the filter config's object) outlives every request
//! made with it, and a request's filter object lives from `http_filter_new` to
//! `http_filter_destroy`.

use std::any::Any;
use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use veza_observability_core::exchange::{Exchange, Next};
use veza_observability_core::websocket::frames::Direction;
use veza_observability_core::worker::Worker;

use crate::abi::{self, Buffer, EnvoyPtr, Header, ModulePtr};
use crate::body::Chunk;
use crate::gateway::{self, Gateway, Slot, Waiter, EVENT_TICK};
use crate::host::{self, RequestHost};

/// One request.
struct Filter {
    gateway: *const Gateway,
    slot: usize,
    request: u32,
    exchange: Exchange,
    /// Set while the request is paused for the main thread's answer.
    waiter: Option<Arc<Waiter>>,
    /// The exchange has work at the response headers (most requests have none, and then the
    /// hook takes no lock).
    response_work: bool,
    /// A hook of this request panicked: it is let through untouched from then on.
    failed: bool,
}

impl Filter {
    fn gateway(&self) -> &Gateway {
        // SAFETY: Envoy keeps the filter config alive while any of its requests lives.
        unsafe { &*self.gateway }
    }
}

/// Filters kept for reuse on each worker thread. Envoy makes and destroys one per request, and
/// a library's allocation goes through `malloc`, whose code Envoy (allocating through
/// `operator new`) leaves cold: 20 instruction-cache misses per request for the pair.
const KEPT_FILTERS: usize = 64;

thread_local! {
    #[allow(
        clippy::vec_box,
        reason = "Envoy holds each filter's address: the boxes, not the Vec, are the filters"
    )]
    static FREE_FILTERS: RefCell<Vec<Box<MaybeUninit<Filter>>>> = const { RefCell::new(Vec::new()) };
}

/// A filter on the heap, in a box this thread freed if it has one.
fn make_filter(filter: Filter) -> *mut Filter {
    let kept = FREE_FILTERS
        .try_with(|free| free.try_borrow_mut().ok()?.pop())
        .ok()
        .flatten();
    let mut boxed = kept.unwrap_or_else(|| Box::new(MaybeUninit::uninit()));
    boxed.write(filter);
    Box::into_raw(boxed).cast()
}

/// Drops a filter made by [`make_filter`] and keeps its box for the thread's next request.
///
/// # Safety
/// `filter` came from [`make_filter`] and is not used again.
unsafe fn free_filter(filter: *mut Filter) {
    // SAFETY: the caller's guarantee; a panic while dropping leaks the box, no more.
    let dropped = catch_unwind(AssertUnwindSafe(|| unsafe {
        std::ptr::drop_in_place(filter)
    }));
    if dropped.is_err() {
        return;
    }
    // SAFETY: the box `make_filter` made, its content dropped.
    let boxed = unsafe { Box::from_raw(filter.cast::<MaybeUninit<Filter>>()) };
    let _ = FREE_FILTERS.try_with(|free| {
        if let Ok(mut free) = free.try_borrow_mut() {
            if free.len() < KEPT_FILTERS {
                free.push(boxed);
            }
        }
    });
}

/// What a panic said, for the log.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned())
}

/// Main thread: a config Envoy asked for, or NULL to refuse it, with the error or the
/// panic that refused it in Envoy's log.
pub(crate) fn made_or_refused<T, E: std::fmt::Display>(
    what: &str,
    make: impl FnOnce() -> Result<T, E>,
) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(make)) {
        Ok(Ok(made)) => Some(made),
        Ok(Err(err)) => {
            abi::log(abi::LOG_ERROR, &format!("veza-observability: {err}"));
            None
        }
        Err(payload) => {
            abi::log(
                abi::LOG_ERROR,
                &format!(
                    "veza-observability: {what} panicked ({})",
                    panic_message(payload.as_ref())
                ),
            );
            None
        }
    }
}

/// Counts a hook's panic; the registry logs the first of each worker, as for any failed
/// host call.
pub(crate) fn report(
    gateway: &Gateway,
    slot: Option<usize>,
    hook: &str,
    payload: &(dyn Any + Send),
) {
    let why = format!(
        "panicked ({}), the request went on untouched",
        panic_message(payload)
    );
    if let Some((_, slot)) = gateway.slot(slot.unwrap_or(0)) {
        gateway::lock(slot).worker.hook_failed(hook, &why);
    }
}

/// Runs one request hook; a panic lets the request through (`fallback`).
///
/// # Safety
/// `module` is a filter this library created and Envoy has not destroyed.
unsafe fn guard<T>(
    module: ModulePtr,
    hook: &str,
    fallback: T,
    work: impl FnOnce(&mut Filter) -> T,
) -> T {
    // A filter that could not be made (http_filter_new returned null) lets requests through.
    if module.is_null() {
        return fallback;
    }
    if cfg!(feature = "hooks-only") {
        return fallback;
    }
    // SAFETY: the caller's guarantee; Envoy calls one request's hooks on one thread.
    let filter = unsafe { &mut *(module as *mut Filter) };
    if filter.failed {
        return fallback;
    }
    match catch_unwind(AssertUnwindSafe(|| work(&mut *filter))) {
        Ok(value) => value,
        Err(payload) => {
            filter.failed = true;
            let gateway = filter.gateway();
            let _ = catch_unwind(AssertUnwindSafe(|| {
                report(gateway, Some(filter.slot), hook, payload.as_ref())
            }));
            fallback
        }
    }
}

/// The slot of the filter's worker, locked, with a host for the request.
fn with_core<T>(
    filter: &mut Filter,
    envoy: EnvoyPtr,
    work: impl FnOnce(&mut Exchange, &Worker, &mut RequestHost<'_>) -> T,
) -> Option<T> {
    // SAFETY: as in `Filter::gateway`; the reference does not borrow `filter`.
    let gateway: &Gateway = unsafe { &*filter.gateway };
    let (_, slot) = gateway.slot(filter.slot)?;
    let mut slot = gateway::lock(slot);
    let Slot { worker, series, .. } = &mut *slot;
    let mut host = RequestHost::new(gateway, series, envoy);
    Some(work(&mut filter.exchange, worker, &mut host))
}

// ---------------------------------------------------------------------------- program

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const std::ffi::c_char {
    let _ = catch_unwind(crate::logger::install);
    abi::ABI_VERSION.as_ptr()
}

// ---------------------------------------------------------------------------- filter config

/// Main thread: compiles the configuration and defines the metrics; NULL refuses the config.
///
/// # Safety
/// Envoy's pointers, valid during the call.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config: EnvoyPtr,
    _name: Buffer,
    configuration: Buffer,
) -> ModulePtr {
    // SAFETY: Envoy's buffer, during the call.
    let bytes = unsafe { configuration.bytes() };
    let created = made_or_refused("configuration", || {
        // SAFETY: a call on the main thread, as the ABI allows.
        let workers = unsafe { abi::envoy_dynamic_module_callback_get_concurrency() };
        Gateway::new(config, bytes, workers as usize)
    });
    let Some(gateway) = created else {
        return std::ptr::null();
    };
    abi::log(
        abi::LOG_INFO,
        &format!("veza-observability: {}", gateway.describe()),
    );
    let gateway = Arc::new(gateway);
    gateway.start_ticker();
    crate::access_logger::register(&gateway);
    Arc::into_raw(gateway).cast()
}

/// Main thread: the config goes (listener drain, update, shutdown).
///
/// # Safety
/// A gateway this library created, destroyed once.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: ModulePtr) {
    // SAFETY: the caller's guarantee: the gateway made in config_new, no request left. An
    // access logger may still hold it: it counts through it no more once it is closed.
    let gateway = unsafe { Arc::from_raw(config.cast::<Gateway>()) };
    let _ = catch_unwind(AssertUnwindSafe(|| gateway.close()));
    drop(gateway);
}

/// Main thread: the ticker's events.
///
/// # Safety
/// A gateway this library created.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    _config: EnvoyPtr,
    module: ModulePtr,
    event: u64,
) {
    // SAFETY: the caller's guarantee.
    let gateway = unsafe { &*(module as *const Gateway) };
    if event == EVENT_TICK {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| gateway.tick())) {
            let _ = catch_unwind(AssertUnwindSafe(|| {
                report(gateway, None, "tick", payload.as_ref())
            }));
        }
    }
}

/// Main thread: the answer to a call of a worker's core.
///
/// # Safety
/// A gateway this library created; Envoy's headers and body, valid during the call.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    _config: EnvoyPtr,
    module: ModulePtr,
    callout: u64,
    _result: abi::CalloutResult,
    headers: *const Header,
    header_count: usize,
    body: *const Buffer,
    body_count: usize,
) {
    // SAFETY: the caller's guarantee.
    let gateway = unsafe { &*(module as *const Gateway) };
    let done = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: Envoy's arrays, valid during the call (null when empty).
        let (headers, chunks) = unsafe { (slice(headers, header_count), slice(body, body_count)) };
        // No `:status`: the call failed without a response.
        let status = headers
            .iter()
            // SAFETY: Envoy's buffers, valid during the call.
            .find(|h| unsafe { h.key.bytes() } == b":status")
            .map(|h| unsafe { h.value.bytes() }.to_vec());
        let mut bytes = Vec::new();
        for chunk in chunks {
            // SAFETY: as above.
            let chunk = unsafe { chunk.bytes() };
            let room = Gateway::MAX_BODY.saturating_sub(bytes.len());
            bytes.extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
        }
        gateway.call_answered(callout, status, bytes);
    }));
    if let Err(payload) = done {
        let _ = catch_unwind(AssertUnwindSafe(|| {
            report(gateway, None, "call answer", payload.as_ref())
        }));
    }
}

/// An array Envoy handed in, empty when null.
///
/// # Safety
/// `ptr` is null or valid for `count` elements during the caller's hook.
unsafe fn slice<'a, T>(ptr: *const T, count: usize) -> &'a [T] {
    if ptr.is_null() || count == 0 {
        return &[];
    }
    // SAFETY: the caller's guarantee.
    unsafe { std::slice::from_raw_parts(ptr, count) }
}

// ---------------------------------------------------------------------------- per route

/// What a route's `typed_per_filter_config` enables the filter with: nothing of its own (the
/// filter is configured once, for the gateway), so every route gets the same marker.
static ROUTE_ENABLES: u8 = 0;

/// Main thread: a route enables the filter (where the HTTP connection manager has it
/// `disabled` by default, as counting in the access logger does).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(
    _name: Buffer,
    _configuration: Buffer,
) -> ModulePtr {
    (&ROUTE_ENABLES as *const u8).cast()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(_config: ModulePtr) {
}

// ---------------------------------------------------------------------------- requests

/// Worker thread: a new request.
///
/// # Safety
/// A gateway this library created; Envoy's filter object.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: ModulePtr,
    envoy: EnvoyPtr,
) -> ModulePtr {
    let gateway = config as *const Gateway;
    let made = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the caller's guarantee.
        let gateway_ref = unsafe { &*gateway };
        // SAFETY: Envoy's filter, during the call.
        let worker =
            unsafe { abi::envoy_dynamic_module_callback_http_filter_get_worker_index(envoy) };
        let (slot, _) = gateway_ref.slot(worker as usize)?;
        let request = gateway::request_id(slot);
        Some(make_filter(Filter {
            gateway,
            slot,
            request,
            exchange: Exchange::new(request),
            waiter: None,
            response_work: false,
            failed: false,
        }))
    }));
    match made {
        Ok(Some(filter)) => filter.cast_const().cast(),
        // Envoy then runs the request without this filter.
        Ok(None) | Err(_) => std::ptr::null(),
    }
}

/// # Safety
/// Envoy's filter and this library's, for the running request.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    envoy: EnvoyPtr,
    module: ModulePtr,
    _end_of_stream: bool,
) -> abi::HeadersStatus {
    // SAFETY: the caller's guarantee.
    unsafe {
        guard(module, "request_headers", abi::HEADERS_CONTINUE, |filter| {
            let request = filter.request;
            let gateway: &Gateway = &*filter.gateway;
            let Some((next, waiter, response_work)) =
                with_core(filter, envoy, |exchange, worker, host| {
                    let next = exchange.request_headers(worker, host);
                    let response_work = exchange.wants_response_headers(worker);
                    // Registered before the worker's lock is released, so the main thread's
                    // answer always finds it.
                    let waiter = (next == Next::Pause && !host.replied)
                        .then(|| gateway.wait(request, envoy));
                    (next, waiter, response_work)
                })
            else {
                return abi::HEADERS_CONTINUE;
            };
            // With the worker's lock released: the tick takes it.
            if waiter.is_some() {
                gateway.wake();
            }
            filter.waiter = waiter;
            filter.response_work = response_work;
            match next {
                Next::Continue => abi::HEADERS_CONTINUE,
                Next::Pause => abi::HEADERS_STOP_ITERATION,
            }
        })
    }
}

/// Worker thread: the main thread answered the paused request.
///
/// # Safety
/// Envoy's filter and this library's, for the running request.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    envoy: EnvoyPtr,
    module: ModulePtr,
    _event: u64,
) {
    // SAFETY: the caller's guarantee.
    unsafe {
        guard(module, "scheduled", (), |filter| {
            let reply = filter.waiter.as_ref().and_then(|w| w.take_reply());
            if let Some(reply) = reply {
                host::send_response(envoy, reply.status, &reply.content_type, &reply.body);
            }
        })
    }
}

/// # Safety
/// Envoy's filter and this library's, for the running request.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    envoy: EnvoyPtr,
    module: ModulePtr,
    _end_of_stream: bool,
) -> abi::HeadersStatus {
    // SAFETY: the caller's guarantee.
    unsafe {
        guard(
            module,
            "response_headers",
            abi::HEADERS_CONTINUE,
            |filter| {
                if filter.response_work {
                    with_core(filter, envoy, |exchange, worker, host| {
                        exchange.response_headers(worker, host);
                    });
                }
                abi::HEADERS_CONTINUE
            },
        )
    }
}

/// A body chunk in `direction`, when the exchange wants it.
///
/// # Safety
/// Envoy's filter and this library's, for the running request.
unsafe fn body(
    envoy: EnvoyPtr,
    module: ModulePtr,
    direction: Direction,
    hook: &str,
) -> abi::BodyStatus {
    // SAFETY: the caller's guarantee.
    unsafe {
        guard(module, hook, abi::BODY_CONTINUE, |filter| {
            if filter.exchange.wants_body(direction) {
                let body_type = match direction {
                    Direction::Upstream => abi::RECEIVED_REQUEST_BODY,
                    Direction::Downstream => abi::RECEIVED_RESPONSE_BODY,
                };
                let mut chunk = Chunk::received(envoy, body_type);
                with_core(filter, envoy, |exchange, worker, host| {
                    exchange.body(worker, host, direction, &mut chunk);
                });
            }
            abi::BODY_CONTINUE
        })
    }
}

/// # Safety
/// Envoy's filter and this library's, for the running request.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    envoy: EnvoyPtr,
    module: ModulePtr,
    _end_of_stream: bool,
) -> abi::BodyStatus {
    // SAFETY: the caller's guarantee.
    unsafe { body(envoy, module, Direction::Upstream, "request_body") }
}

/// # Safety
/// Envoy's filter and this library's, for the running request.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    envoy: EnvoyPtr,
    module: ModulePtr,
    _end_of_stream: bool,
) -> abi::BodyStatus {
    // SAFETY: the caller's guarantee.
    unsafe { body(envoy, module, Direction::Downstream, "response_body") }
}

/// Once per request, before the access logs: also for requests answered before this filter
/// ran, and at the end of an upgraded connection.
///
/// # Safety
/// Envoy's filter and this library's, for the running request.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    envoy: EnvoyPtr,
    module: ModulePtr,
) {
    // SAFETY: the caller's guarantee.
    unsafe {
        guard(module, "stream_complete", (), |filter| {
            if let Some(waiter) = filter.waiter.take() {
                filter.gateway().forget(filter.request, &waiter);
            }
            with_core(filter, envoy, |exchange, worker, host| {
                exchange.end(worker, host);
            });
        })
    }
}

/// # Safety
/// This library's filter, destroyed once.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_destroy(module: ModulePtr) {
    if module.is_null() {
        return;
    }
    let filter = module as *mut Filter;
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the caller's guarantee: the filter made in http_filter_new, alive.
        let filter = unsafe { &*filter };
        if let Some(waiter) = &filter.waiter {
            filter.gateway().forget(filter.request, waiter);
        }
    }));
    // SAFETY: the caller's guarantee: destroyed once, not used after.
    unsafe { free_filter(filter) };
}

// Hooks Envoy requires of every HTTP filter module; this filter has nothing to do in them.

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    _envoy: EnvoyPtr,
    _module: ModulePtr,
) -> abi::TrailersStatus {
    abi::TRAILERS_CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _envoy: EnvoyPtr,
    _module: ModulePtr,
) -> abi::TrailersStatus {
    abi::TRAILERS_CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _envoy: EnvoyPtr,
    _module: ModulePtr,
    _callout: u64,
    _result: abi::CalloutResult,
    _headers: *const Header,
    _header_count: usize,
    _body: *const Buffer,
    _body_count: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _envoy: EnvoyPtr,
    _module: ModulePtr,
    _stream: u64,
    _headers: *const Header,
    _header_count: usize,
    _end_of_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _envoy: EnvoyPtr,
    _module: ModulePtr,
    _stream: u64,
    _data: *const Buffer,
    _data_count: usize,
    _end_of_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _envoy: EnvoyPtr,
    _module: ModulePtr,
    _stream: u64,
    _trailers: *const Header,
    _trailer_count: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _envoy: EnvoyPtr,
    _module: ModulePtr,
    _stream: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _envoy: EnvoyPtr,
    _module: ModulePtr,
    _stream: u64,
    _reason: u32,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _envoy: EnvoyPtr,
    _module: ModulePtr,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _envoy: EnvoyPtr,
    _module: ModulePtr,
) {
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(request: u32) -> Filter {
        Filter {
            gateway: std::ptr::null(),
            slot: 0,
            request,
            exchange: Exchange::new(request),
            waiter: None,
            response_work: false,
            failed: false,
        }
    }

    /// A destroyed filter's memory is the next one this thread makes, holding the new filter.
    #[test]
    fn a_destroyed_filter_is_reused_by_the_threads_next_request() {
        let first = make_filter(filter(1));
        // SAFETY: made above, not used after.
        unsafe { free_filter(first) };
        let second = make_filter(filter(2));
        assert_eq!(second, first);
        // SAFETY: made above.
        assert_eq!(unsafe { (*second).request }, 2);
        // SAFETY: made above, not used after.
        unsafe { free_filter(second) };
    }

    /// However many requests end at once, a thread keeps at most `KEPT_FILTERS` boxes.
    #[test]
    fn a_thread_keeps_a_bounded_number_of_filters() {
        let made: Vec<*mut Filter> = (0..KEPT_FILTERS as u32 + 8)
            .map(|i| make_filter(filter(i)))
            .collect();
        for filter in made {
            // SAFETY: made above, each freed once.
            unsafe { free_filter(filter) };
        }
        assert_eq!(FREE_FILTERS.with(|free| free.borrow().len()), KEPT_FILTERS);
    }
}
