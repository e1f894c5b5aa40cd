//! `make run`'s script (scripts/run-gateway.sh) as a newcomer meets it: with no Veza service
//! running, it starts the stand-ins and Envoy with the filter on the ports the environment
//! names, the demo traffic shows up in the Prometheus text, and Ctrl-C (SIGINT to the
//! terminal's process group) stops every process it started. Once per build `VEZA_BUILD`
//! can name: the .wasm, the native module, and the native module counting in its access
//! logger.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use veza_test_harness::{free_port, http, parse_exposition, poll, scratch_dir, REPO};

fn listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[test]
fn make_run_serves_the_wasm_gateway_with_stand_ins_and_ctrl_c_stops_everything() {
    serves_and_stops("wasm");
}

#[test]
fn make_run_serves_the_native_gateway_with_stand_ins_and_ctrl_c_stops_everything() {
    serves_and_stops("native");
}

#[test]
fn make_run_serves_the_metrics_only_native_gateway_and_ctrl_c_stops_everything() {
    serves_and_stops("native-metrics");
}

fn serves_and_stops(build: &str) {
    let standins = Path::new(REPO).join("target/debug/veza-standins");
    assert!(
        standins.exists(),
        "no {}: run `make test` (it builds the stand-ins for this test)",
        standins.display()
    );
    let [gateway, admin, stats, backend, chat, stream] = [(); 6].map(|()| free_port());
    // Its own directory for the generated config and Envoy's log: a developer's `make run`
    // may be using build/.
    let run_dir = scratch_dir(&format!("make-run-{build}"));
    let output_path = run_dir.join("output");
    let output = std::fs::File::create(&output_path).unwrap();
    let mut script = Command::new("bash");
    script
        .arg(Path::new(REPO).join("scripts/run-gateway.sh"))
        .env("VEZA_GATEWAY_PORT", gateway.to_string())
        .env("VEZA_ADMIN_PORT", admin.to_string())
        .env("VEZA_STATS_PORT", stats.to_string())
        .env("VEZA_BACKEND_PORT", backend.to_string())
        .env("VEZA_CHAT_PORT", chat.to_string())
        .env("VEZA_STREAM_PORT", stream.to_string())
        .env("VEZA_RUN_DIR", &run_dir)
        .env("VEZA_BUILD", build)
        .stdout(output.try_clone().unwrap())
        .stderr(output)
        .stdin(Stdio::null())
        // Its own process group, as a terminal's foreground job has.
        .process_group(0);
    // SAFETY: signal() is async-signal-safe. A terminal's job gets SIGINT at its default
    // disposition; this test may itself run with SIGINT ignored (a background CI shell), and
    // bash cannot trap a signal that was ignored when it started.
    unsafe {
        script.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut child = script.spawn().unwrap();
    let group = i32::try_from(child.id()).unwrap();
    let guard = GroupGuard {
        group,
        log: run_dir.join("envoy-run.log"),
    };

    // The demo traffic, counted by the filter under its templates and services.
    let tracks = poll(
        "the demo traffic in the stats listener's /metrics",
        Duration::from_secs(60),
        || {
            let url = format!("http://127.0.0.1:{stats}/metrics");
            let (_, text) = http("GET", &url, &[], "").ok()?;
            parse_exposition(&text, "http_requests_total")
                .into_iter()
                .find(|s| s.label("endpoint") == "/api/v1/tracks/:id")
        },
    );
    assert_eq!(tracks.label("service"), "backend-api");
    assert_eq!(tracks.label("method"), "GET");
    assert_eq!(tracks.label("status"), "200");
    // Envoy's JSON access log goes to the run directory, not over the terminal. The
    // gateways with the filter on every request log its endpoint, service and trace ids;
    // the metrics-only one logs Envoy's own fields.
    let metrics_only = build == "native-metrics";
    let backend_host = format!("127.0.0.1:{backend}");
    let line = poll(
        "the access log line of the demo traffic",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(run_dir.join("access-log.json"))
                .ok()?
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|l| {
                    if metrics_only {
                        l["upstream_host"] == backend_host.as_str()
                    } else {
                        l["endpoint"] == "/api/v1/tracks/:id"
                    }
                })
        },
    );
    if metrics_only {
        assert!(line.get("trace_id").is_none(), "{line}");
    } else {
        assert_eq!(line["service"], "backend-api");
        assert_eq!(line["method"], "GET");
        let trace_id = line["trace_id"].as_str().unwrap_or_default();
        assert_eq!(trace_id.len(), 32, "{line}");
        assert!(trace_id.bytes().all(|b| b.is_ascii_hexdigit()), "{line}");
    }
    assert_eq!(
        http("GET", &format!("http://127.0.0.1:{gateway}/live"), &[], "")
            .unwrap()
            .0,
        200
    );
    for port in [gateway, admin, stats, backend, chat, stream] {
        assert!(listening(port), "nothing on {port}");
    }

    // Ctrl-C.
    // SAFETY: killpg with a valid group id and signal number.
    assert_eq!(unsafe { libc::killpg(group, libc::SIGINT) }, 0);
    let status = poll("make run's script to exit", Duration::from_secs(20), || {
        child.try_wait().unwrap()
    });
    let output = std::fs::read_to_string(&output_path).unwrap();
    assert!(status.success(), "{status}\n{output}");
    assert!(
        output.contains(&format!("{build} build (envoy/")),
        "{output}"
    );
    assert!(output.contains("\nstopped\n"), "{output}");
    assert!(
        output.contains(&format!("http://127.0.0.1:{gateway}/live")),
        "{output}"
    );
    assert!(
        output.contains(&format!("http://127.0.0.1:{stats}/metrics")),
        "{output}"
    );
    // Every process it started is gone: nothing answers on any of the ports.
    for port in [gateway, admin, stats, backend, chat, stream] {
        poll(
            &format!("port {port} to close"),
            Duration::from_secs(10),
            || (!listening(port)).then_some(()),
        );
    }
    // The demo traffic's last `sleep 1` may outlive its loop by up to a second.
    poll(
        "every process of make run's group to exit",
        Duration::from_secs(5),
        || {
            // SAFETY: signal 0 only asks whether any process of the group is left.
            (unsafe { libc::killpg(group, 0) } == -1).then_some(())
        },
    );
    drop(guard);
}

/// On failure: prints Envoy's log and kills whatever the script left.
struct GroupGuard {
    group: i32,
    log: PathBuf,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("--- {}\n{log}", self.log.display());
            // SAFETY: killpg with a valid group id and signal number.
            unsafe {
                libc::killpg(self.group, libc::SIGKILL);
            }
        }
    }
}
