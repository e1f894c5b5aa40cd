//! One filter config: what Envoy creates on the main thread and hands to every request on
//! every worker, so it is `Send + Sync` by construction.
//!
//! - Per worker, a [`Slot`]: that worker's core ([`Worker`]) and its series, behind its own
//!   lock. Its requests take it on their worker thread; the main thread takes it for the
//!   worker's ticks and call answers. The two rarely meet, so the lock is almost never
//!   contended.
//! - Gateway-wide: the shared data (active users, the `/ready` round's claim, the start time),
//!   the calls in flight, and the requests paused until the main thread answers them; each
//!   behind its own lock, held only to read or write one entry.
//! - The ticker: the ABI has no timer, so a thread of this library asks Envoy to run the tick
//!   on the main thread every tick period, and is stopped and joined when the config goes.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use veza_observability_core::metrics::names;
use veza_observability_core::worker::{Worker, MAX_CALL_BODY};

use crate::abi::{self, EnvoyPtr};
use crate::host::{now_nanos, MainHost};
use crate::metrics::{Families, SeriesTable};
use crate::shared::SharedData;

/// The config event that runs the ticks.
pub const EVENT_TICK: u64 = 1;

/// One Envoy worker's core and the series it defined.
pub struct Slot {
    pub worker: Worker,
    pub series: SeriesTable,
}

thread_local! {
    /// The count of requests made on this thread (one Envoy worker's).
    static NEXT_REQUEST: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// A request id unique in the gateway while it lives: the worker's slot in the high bits, a
/// count of that worker's requests below. A worker's requests all run on its one thread, so
/// the count needs no lock.
pub fn request_id(slot: usize) -> u32 {
    let count = NEXT_REQUEST.with(|next| {
        let count = next.get().wrapping_add(1) & 0x00ff_ffff;
        next.set(count);
        count.max(1)
    });
    ((slot & 0xff) as u32) << 24 | count
}

/// Has Envoy run [`EVENT_TICK`] on the main thread; from any thread. `scheduler` is the
/// config's scheduler (0 when Envoy gave none), alive for the call.
fn commit_tick(scheduler: usize) {
    if scheduler == 0 {
        return;
    }
    // SAFETY: the caller's guarantee: a live config scheduler.
    unsafe {
        abi::envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
            scheduler as *mut c_void,
            EVENT_TICK,
        );
    }
}

/// An answer for a paused request, handed from the main thread to the request's worker.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u32,
    pub content_type: String,
    pub body: String,
}

/// A paused request, as the main thread reaches it.
#[derive(Default)]
pub struct Waiter {
    inner: Mutex<WaiterState>,
}

#[derive(Default)]
struct WaiterState {
    /// Envoy's scheduler for the request; `None` once the request is gone. Deleted under this
    /// lock, so no commit can follow the delete.
    scheduler: Option<usize>,
    reply: Option<Reply>,
}

impl Waiter {
    /// The answer, on the request's worker, once the main thread gave one.
    pub fn take_reply(&self) -> Option<Reply> {
        lock(&self.inner).reply.take()
    }

    /// The request is gone: Envoy's scheduler is deleted.
    pub fn close(&self) {
        if let Some(scheduler) = lock(&self.inner).scheduler.take() {
            // SAFETY: Envoy's scheduler, deleted once (it is taken out first).
            unsafe {
                abi::envoy_dynamic_module_callback_http_filter_scheduler_delete(
                    scheduler as *mut c_void,
                );
            }
        }
    }
}

/// A call's answer that arrived while the main thread held the worker it belongs to (Envoy
/// may answer a call before the call returns): delivered after.
struct Answer {
    callout: u64,
    status: Option<Vec<u8>>,
    body: Vec<u8>,
}

/// The ticker thread and how to stop it.
struct Ticker {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

pub struct Gateway {
    /// Envoy's filter config (main-thread object), as an address.
    config: usize,
    /// Envoy's scheduler for config events.
    scheduler: usize,
    families: Families,
    shared: SharedData,
    slots: Vec<Mutex<Slot>>,
    /// Calls in flight: Envoy's callout id → (slot, the core's token).
    calls: Mutex<HashMap<u64, (usize, u32)>>,
    /// Requests paused until the main thread answers them, by request id.
    waiting: Mutex<HashMap<u32, Arc<Waiter>>>,
    /// Set while the main thread runs a worker's core: answers then wait in `queued`.
    busy: AtomicBool,
    queued: Mutex<Vec<Answer>>,
    ticker: Mutex<Option<Ticker>>,
    /// Whether Envoy's filter config is still there: false from [`Gateway::close`] on. The
    /// module's access logger, which may outlive it, holds it for reading while it counts
    /// through the config.
    open: RwLock<bool>,
}

/// A lock that a panic elsewhere poisoned still guards consistent data here: every critical
/// section of this module leaves its data whole, so the poison is ignored.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Gateway {
    /// Compiles the configuration once per worker and defines every family. An invalid
    /// configuration is refused with the field it is in.
    pub fn new(config: EnvoyPtr, bytes: &[u8], workers: usize) -> Result<Gateway, String> {
        let settings = veza_observability_core::config::load(Some(bytes))
            .map_err(|err| format!("invalid plugin configuration: {err}"))?;
        // No VM here: the module's memory is Envoy's (`server.memory_allocated` counts it).
        let declared: Vec<_> = Worker::families(&settings)
            .into_iter()
            .filter(|family| family.name != names::VM_MEMORY_BYTES)
            .collect();
        let families = Families::define(config, &declared)?;
        // SAFETY: Envoy's config object, on the main thread.
        let scheduler =
            unsafe { abi::envoy_dynamic_module_callback_http_filter_config_scheduler_new(config) };
        let mut gateway = Gateway {
            config: config as usize,
            scheduler: scheduler as usize,
            families,
            shared: SharedData::default(),
            slots: Vec::new(),
            calls: Mutex::default(),
            waiting: Mutex::default(),
            busy: AtomicBool::new(false),
            queued: Mutex::default(),
            ticker: Mutex::new(None),
            open: RwLock::new(true),
        };
        let now = now_nanos();
        for index in 0..workers.max(1) {
            let mut series = SeriesTable::default();
            let mut host = MainHost::new(&gateway, &mut series, config, index);
            let worker = Worker::configure(&mut host, Some(bytes), now)
                .map_err(|err| format!("invalid plugin configuration: {err}"))?;
            gateway.slots.push(Mutex::new(Slot { worker, series }));
        }
        Ok(gateway)
    }

    /// Envoy's filter config, for metric updates made off the main thread (by the access
    /// logger, while [`Gateway::open`] holds).
    pub fn config(&self) -> EnvoyPtr {
        self.config as EnvoyPtr
    }

    /// Held while the filter config is there: `None` once it is gone.
    pub fn open(&self) -> Option<RwLockReadGuard<'_, bool>> {
        let open = self.open.read().unwrap_or_else(PoisonError::into_inner);
        (*open).then_some(open)
    }

    /// The name of the access logger that counts this gateway's requests, if one does.
    pub fn count_in_logger(&self) -> Option<String> {
        let slot = lock(self.slots.first()?);
        slot.worker.settings.count_in_logger.clone()
    }

    pub fn families(&self) -> &Families {
        &self.families
    }

    pub fn shared(&self) -> &SharedData {
        &self.shared
    }

    /// The slot of Envoy's worker `index`.
    pub fn slot(&self, index: usize) -> Option<(usize, &Mutex<Slot>)> {
        let index = index % self.slots.len().max(1);
        Some((index, self.slots.get(index)?))
    }

    pub fn describe(&self) -> String {
        match self.slots.first() {
            Some(slot) => format!(
                "{} ({} workers)",
                lock(slot).worker.describe(),
                self.slots.len()
            ),
            None => "no workers".to_owned(),
        }
    }

    /// Starts the ticker, once the gateway has its final address.
    pub fn start_ticker(&self) {
        let period = self
            .slots
            .first()
            .map_or(0, |slot| lock(slot).worker.background_tick_period_ms());
        if period == 0 {
            return;
        }
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let scheduler = self.scheduler;
        let signal = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("veza-ticker".to_owned())
            .spawn(move || {
                let (stopped, wake) = &*signal;
                let mut stopped = lock(stopped);
                loop {
                    let period = Duration::from_millis(u64::from(period));
                    stopped = wake
                        .wait_timeout(stopped, period)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                    if *stopped {
                        return;
                    }
                    // The scheduler outlives this thread: it is deleted only after the
                    // thread is joined.
                    commit_tick(scheduler);
                }
            });
        match thread {
            Ok(thread) => {
                *lock(&self.ticker) = Some(Ticker {
                    stop,
                    thread: Some(thread),
                })
            }
            Err(err) => abi::log(
                abi::LOG_ERROR,
                &format!(
                    "veza-observability: no ticker thread ({err}): no flush, no /ready rounds"
                ),
            ),
        }
    }

    /// Main thread: every worker's periodic work.
    pub fn tick(&self) {
        let now = now_nanos();
        for (index, slot) in self.slots.iter().enumerate() {
            self.busy.store(true, Ordering::Relaxed);
            {
                let mut slot = lock(slot);
                let Slot { worker, series, .. } = &mut *slot;
                let mut host = MainHost::new(self, series, self.config as EnvoyPtr, index);
                worker.tick(&mut host, now);
            }
            self.busy.store(false, Ordering::Relaxed);
            self.deliver_queued();
        }
    }

    /// Main thread: a call was made for `slot`; the core's token for it.
    pub fn calling(&self, callout: u64, slot: usize) -> u32 {
        // The core's tokens are u32; Envoy's ids count up from 1 per config.
        let token = (callout & u64::from(u32::MAX)) as u32;
        lock(&self.calls).insert(callout, (slot, token));
        token
    }

    /// Main thread: a call's answer.
    pub fn call_answered(&self, callout: u64, status: Option<Vec<u8>>, body: Vec<u8>) {
        let answer = Answer {
            callout,
            status,
            body,
        };
        if self.busy.load(Ordering::Relaxed) {
            lock(&self.queued).push(answer);
        } else {
            self.deliver(answer);
        }
    }

    fn deliver_queued(&self) {
        let queued = std::mem::take(&mut *lock(&self.queued));
        for answer in queued {
            self.deliver(answer);
        }
    }

    fn deliver(&self, answer: Answer) {
        let Some((index, token)) = lock(&self.calls).remove(&answer.callout) else {
            return;
        };
        let Some(slot) = self.slots.get(index) else {
            return;
        };
        self.busy.store(true, Ordering::Relaxed);
        {
            let mut slot = lock(slot);
            let Slot { worker, series, .. } = &mut *slot;
            let mut body = answer.body;
            body.truncate(worker.call_body_limit(token));
            let mut host = MainHost::new(self, series, self.config as EnvoyPtr, index);
            worker.call_response(
                &mut host,
                token,
                Ok(answer.status),
                Ok(Some(body)),
                now_nanos(),
            );
        }
        self.busy.store(false, Ordering::Relaxed);
        self.deliver_queued();
    }

    /// Worker thread: `request` pauses until [`Gateway::answer`] wakes it through Envoy's
    /// scheduler for it.
    pub fn wait(&self, request: u32, filter: EnvoyPtr) -> Arc<Waiter> {
        // SAFETY: Envoy's filter, during its hook.
        let scheduler =
            unsafe { abi::envoy_dynamic_module_callback_http_filter_scheduler_new(filter) };
        let waiter = Arc::new(Waiter {
            inner: Mutex::new(WaiterState {
                scheduler: (!scheduler.is_null()).then_some(scheduler as usize),
                reply: None,
            }),
        });
        lock(&self.waiting).insert(request, Arc::clone(&waiter));
        waiter
    }

    /// Any thread: runs the ticks on the main thread now. A request that pauses for the main
    /// thread (a `/ready` probe, a scrape) wakes it, so the ticker need not tick fast.
    pub fn wake(&self) {
        // The scheduler lives until the config is destroyed, after every request.
        commit_tick(self.scheduler);
    }

    /// Worker thread: the paused request is gone.
    pub fn forget(&self, request: u32, waiter: &Waiter) {
        lock(&self.waiting).remove(&request);
        waiter.close();
    }

    /// Main thread: answers a paused request on its worker. `None` when it is gone.
    pub fn answer(&self, request: u32, reply: Reply) -> Option<()> {
        let waiter = lock(&self.waiting).remove(&request)?;
        let mut state = lock(&waiter.inner);
        let scheduler = state.scheduler?;
        state.reply = Some(reply);
        // SAFETY: the scheduler is deleted only under this lock, after which it is `None`.
        unsafe {
            abi::envoy_dynamic_module_callback_http_filter_scheduler_commit(
                scheduler as *mut c_void,
                0,
            );
        }
        Some(())
    }

    /// Main thread, the config going away: stop the ticker, hand over what each worker
    /// counted, and release Envoy's scheduler.
    pub fn close(&self) {
        // Waits for an access logger counting through the config, and stops the next.
        *self.open.write().unwrap_or_else(PoisonError::into_inner) = false;
        if let Some(mut ticker) = lock(&self.ticker).take() {
            let (stopped, wake) = &*ticker.stop;
            *lock(stopped) = true;
            wake.notify_all();
            if let Some(thread) = ticker.thread.take() {
                let _ = thread.join();
            }
        }
        for (index, slot) in self.slots.iter().enumerate() {
            let mut slot = lock(slot);
            let Slot { worker, series, .. } = &mut *slot;
            let mut host = MainHost::new(self, series, self.config as EnvoyPtr, index);
            worker.flush(&mut host);
        }
        // SAFETY: Envoy's scheduler, deleted once, after the ticker thread that used it ended.
        unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_scheduler_delete(
                self.scheduler as *mut c_void,
            );
        }
    }

    /// The most of a call's body the core reads.
    pub const MAX_BODY: usize =
        if veza_observability_core::exposition::MAX_ADMIN_BODY > MAX_CALL_BODY {
            veza_observability_core::exposition::MAX_ADMIN_BODY
        } else {
            MAX_CALL_BODY
        };
}
