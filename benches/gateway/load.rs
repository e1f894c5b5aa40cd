//! Load and what it costs: wrk and oha runs, the WebSocket echo, Envoy's CPU and memory from /proc.

use super::*;

pub(crate) fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// User + system CPU time of a process, in microseconds.
pub(crate) fn cpu_time_us(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    let hz = 100.0; // USER_HZ on Linux
    ticks * 1e6 / hz
}

/// Resident set size of a process, in bytes.
pub(crate) fn rss_bytes(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024.0
}

pub(crate) fn parse_duration_us(text: &str) -> f64 {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e6)
    } else {
        panic!("unknown duration {text}")
    };
    number.parse::<f64>().unwrap() * scale
}

/// What a browser adds to wrk's bare request (BENCH_BROWSER_HEADERS=1).
pub(crate) const BROWSER_HEADERS: [&str; 9] = [
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Accept: application/json",
    "Accept-Language: en-US,en;q=0.5",
    "Accept-Encoding: gzip, deflate, br",
    "Referer: https://veza.example.com/library",
    "Cookie: theme=dark; session=4f1c2a",
    "X-Forwarded-Proto: https",
    "Sec-Fetch-Mode: cors",
    "Sec-Fetch-Site: same-origin",
];

/// wrk on the load CPU: one thread, `connections` connections, for `seconds`.
pub(crate) fn wrk_command(url: &str, seconds: u64, connections: u64) -> Command {
    let mut command = Command::new("taskset");
    command
        .args(["-c", &LOAD_CPU.to_string(), "wrk", "-t1", "-c"])
        .arg(connections.to_string())
        .arg(format!("-d{seconds}s"));
    if env_number("BENCH_BROWSER_HEADERS", 0) == 1 {
        for header in BROWSER_HEADERS {
            command.arg("-H").arg(header);
        }
    }
    command.arg(url);
    command
}

/// wrk's output: (requests, requests/s, p50 µs, p99 µs).
pub(crate) fn parse_wrk(text: &str) -> (f64, f64, f64, f64) {
    let mut requests = 0.0;
    let mut rps = 0.0;
    let (mut p50, mut p99) = (0.0, 0.0);
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", value] => rps = value.parse().unwrap(),
            ["50%", value] => p50 = parse_duration_us(value),
            ["99%", value] => p99 = parse_duration_us(value),
            [count, "requests", "in", ..] => requests = count.parse().unwrap(),
            _ => {}
        }
    }
    assert!(requests > 0.0, "no requests in:\n{text}");
    (requests, rps, p50, p99)
}

/// Warm-up before a route's slices: connections, caches, metric definitions.
pub(crate) fn warm_up(envoy: &Envoy, route: Route, connections: u64) {
    let warm = wrk_command(&envoy.url(route.path()), 3, connections)
        .output()
        .unwrap();
    assert!(warm.status.success());
}

/// One slice of a form's measurement: wrk for `seconds`, and Envoy's CPU time over it.
pub(crate) fn wrk_slice(envoy: &Envoy, route: Route, seconds: u64, connections: u64) -> Slice {
    let url = envoy.url(route.path());
    let cpu_before = cpu_time_us(envoy.pid());
    let output = wrk_command(&url, seconds, connections)
        .arg("--latency")
        .output()
        .unwrap();
    let cpu_after = cpu_time_us(envoy.pid());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "wrk failed: {text}");
    assert!(
        !text.contains("Non-2xx"),
        "{} answered errors:\n{text}",
        route.name()
    );
    let (requests, rps, p50, p99) = parse_wrk(&text);
    Slice {
        requests,
        seconds: requests / rps,
        envoy_cpu_us: cpu_after - cpu_before,
        p50_us: p50,
        p99_us: p99,
    }
}

/// p99 latency in microseconds at a fixed request rate for `seconds` (oha, with latency
/// correction, so a stall counts against every request it delayed), and the rate oha
/// achieved: a gateway that cannot keep up falls behind the offered rate.
pub(crate) fn fixed_rate_p99_us(
    oha: &Path,
    envoy: &Envoy,
    route: Route,
    rate: f64,
    seconds: u64,
) -> (f64, f64) {
    let url = envoy.url(route.path());
    let output = Command::new("taskset")
        .args(["-c", &LOAD_CPU.to_string()])
        .arg(oha)
        .args([
            "--no-tui",
            "--output-format",
            "json",
            "--latency-correction",
        ])
        .args(["-c", "32", "-q"])
        .arg(format!("{rate:.0}"))
        .arg("-z")
        .arg(format!("{seconds}s"))
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "oha failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let statuses = &report["statusCodeDistribution"];
    assert!(
        statuses
            .as_object()
            .unwrap()
            .keys()
            .all(|code| code == "200"),
        "{} answered errors: {statuses}",
        route.name()
    );
    let achieved = report["summary"]["requestsPerSec"].as_f64().unwrap();
    let p99 = report["latencyPercentiles"]["p99"].as_f64().unwrap() * 1e6;
    (p99, achieved)
}

/// A form's WebSocket echo connections, open for the whole round, so that the round's slices
/// of each form alternate as the HTTP routes' do and measure messages, not handshakes. Each
/// message crosses Envoy twice (there and back).
pub(crate) struct EchoClients {
    pid: u32,
    sockets: Vec<tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>>,
}

impl EchoClients {
    pub(crate) fn open(envoy: &Envoy) -> EchoClients {
        let url = envoy.url("/ws").replace("http", "ws");
        let sockets = (0..WEBSOCKET_CONNECTIONS)
            .map(|_| {
                let (mut socket, _) = tungstenite::connect(url.as_str()).unwrap();
                let _connected = socket.read().unwrap();
                socket
            })
            .collect();
        EchoClients {
            pid: envoy.pid(),
            sockets,
        }
    }

    /// One slice: every connection echoes 32-byte binary messages for `seconds`, one at a
    /// time; Envoy's CPU time over it.
    pub(crate) fn slice(&mut self, seconds: u64) -> Slice {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(seconds);
        let cpu_before = cpu_time_us(self.pid);
        let messages: u64 = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .sockets
                .iter_mut()
                .map(|socket| {
                    scope.spawn(move || {
                        let payload = vec![0x2a_u8; 32];
                        let mut count = 0u64;
                        while Instant::now() < deadline {
                            socket
                                .send(tungstenite::Message::binary(payload.clone()))
                                .unwrap();
                            let echo = socket.read().unwrap();
                            assert!(echo.is_binary());
                            count += 1;
                        }
                        count
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        let cpu_after = cpu_time_us(self.pid);
        Slice {
            requests: messages as f64,
            seconds: started.elapsed().as_secs_f64(),
            envoy_cpu_us: cpu_after - cpu_before,
            p50_us: 0.0,
            p99_us: 0.0,
        }
    }
}

impl Drop for EchoClients {
    fn drop(&mut self) {
        for socket in &mut self.sockets {
            let _ = socket.close(None);
        }
    }
}

/// Makes `count` distinct `http_requests_total` series with the scale route table: templates
/// `s<i>`, two areas (answered 200 and 404), five methods.
pub(crate) fn warm_series(envoy: &Envoy, count: usize) {
    let methods = ["GET", "POST", "PUT", "DELETE", "PATCH"];
    let mut made = 0;
    'outer: for area in ["tracks", "gone"] {
        for method in methods {
            for template in 0..1000 {
                if made == count {
                    break 'outer;
                }
                let url = envoy.url(&format!("/api/v1/{area}/s{template}/1"));
                http(method, &url, &[], "").unwrap();
                made += 1;
            }
        }
    }
    assert_eq!(made, count, "the scale table makes at most 10,000 series");
    poll("the warm-up series", Duration::from_secs(30), || {
        let series = envoy.samples("http_requests_total").len();
        (series >= count).then_some(())
    });
}

/// The filter's own gauge of its VMs' linear memory (sum over workers; one worker here).
pub(crate) fn vm_memory_bytes(envoy: &Envoy) -> f64 {
    envoy
        .samples("veza_observability_vm_memory_bytes")
        .first()
        .map(|s| s.value)
        .expect("the filter publishes veza_observability_vm_memory_bytes")
}
