//! An Envoy process started from a [`GatewayConfig`], with its admin, stats and log; and
//! `envoy --mode validate`.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::exposition::{parse_exposition, Sample};
use crate::gateway_config::{GatewayConfig, Ports};
use crate::http::http;
use crate::{envoy_bin, poll, scratch_dir, ScratchDir, REPO};

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

pub struct Envoy {
    child: Child,
    pub ports: Ports,
    pub log: PathBuf,
    pub dir: ScratchDir,
    expected_errors: Vec<(String, f64)>,
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
            // The shipped access log goes to stdout.
            .stdout(Stdio::from(
                std::fs::File::create(dir.join("stdout")).unwrap(),
            ))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut envoy = Envoy {
            child,
            ports,
            log,
            dir,
            expected_errors: Vec::new(),
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

    /// The access log lines Envoy has written to its stdout so far, as JSON.
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.join("stdout"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
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

    /// How many of Envoy's threads have this name (`/proc/<pid>/task/*/comm`).
    pub fn threads_named(&self, name: &str) -> usize {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid())).unwrap();
        tasks
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.trim_end() == name)
            .count()
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
    /// Errors a test caused on purpose (a fault it injected), by operation, with their exact
    /// count: the closing check accepts those values and nothing else.
    pub fn expect_errors(&mut self, errors: &[(&str, f64)]) {
        self.expected_errors = errors.iter().map(|(o, v)| ((*o).to_owned(), *v)).collect();
    }

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
            .filter(|s| {
                !self.expected_errors.iter().any(|(operation, value)| {
                    s.label("operation") == operation && s.value == *value
                })
            })
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
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}
