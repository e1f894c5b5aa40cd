//! Independent implementations the filter is checked against: a service traced with the
//! OpenTelemetry Python SDK, an OTLP collector stand-in, and OpenTelemetry's proto
//! definitions to decode what the collector received.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{free_port, REPO};

/// tests/interop/otel_upstream.py on a free port, killed on drop.
pub struct OtelUpstream {
    child: Child,
    pub port: u16,
}

impl OtelUpstream {
    pub fn start() -> OtelUpstream {
        let port = free_port();
        let mut child = Command::new(format!("{REPO}/.venv/bin/python"))
            .arg(format!("{REPO}/tests/interop/otel_upstream.py"))
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the project's .venv with OpenTelemetry: run `make test`");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "ready",
            "the OpenTelemetry upstream did not start"
        );
        OtelUpstream { child, port }
    }
}

impl Drop for OtelUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How the collector stand-in answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Status(u16),
    /// Reads the request and never answers.
    Hang,
}

/// An OTLP/HTTP collector stand-in: records every POST body and answers from a script
/// (then with its default answer).
pub struct Collector {
    pub port: u16,
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
    script: Arc<Mutex<Vec<Answer>>>,
    stop: Arc<AtomicBool>,
}

impl Collector {
    pub fn start(script: &[Answer], default: Answer) -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script.iter().rev().copied().collect::<Vec<_>>()));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, s, st) = (bodies.clone(), script.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let (b, s, st) = (b.clone(), s.clone(), st.clone());
                std::thread::spawn(move || serve(stream, default, &s, &b, &st));
            }
        });
        Collector {
            port,
            bodies,
            script,
            stop,
        }
    }

    /// Every body received so far, as text (OTLP JSON, Zipkin JSON).
    pub fn bodies(&self) -> Vec<String> {
        self.raw_bodies()
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect()
    }

    /// Every body received so far, as sent (OTLP protobuf).
    pub fn raw_bodies(&self) -> Vec<Vec<u8>> {
        self.bodies.lock().unwrap().clone()
    }

    /// Script answers not yet used.
    pub fn script_left(&self) -> usize {
        self.script.lock().unwrap().len()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Reads one request; the next scripted answer (or the default) answers it.
fn serve(
    mut stream: TcpStream,
    default: Answer,
    script: &Mutex<Vec<Answer>>,
    bodies: &Mutex<Vec<Vec<u8>>>,
    stop: &AtomicBool,
) {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut data = Vec::new();
    let mut buffer = [0u8; 65536];
    let (head_end, length, chunked) = loop {
        let Ok(n) = stream.read(&mut buffer) else {
            return;
        };
        if n == 0 {
            return;
        }
        data.extend_from_slice(&buffer[..n]);
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            let chunked = head
                .lines()
                .any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"));
            break (end + 4, length, chunked);
        }
    };
    // Envoy's own exporters send their bodies chunked: the body is whole once its last chunk
    // (of size 0) has arrived.
    let body = loop {
        let whole = if chunked {
            dechunk(&data[head_end..])
        } else {
            data.get(head_end..head_end + length).map(<[u8]>::to_vec)
        };
        if let Some(body) = whole {
            break body;
        }
        let Ok(n) = stream.read(&mut buffer) else {
            return;
        };
        if n == 0 {
            return;
        }
        data.extend_from_slice(&buffer[..n]);
    };
    bodies.lock().unwrap().push(body);
    let answer = script.lock().unwrap().pop().unwrap_or(default);
    match answer {
        Answer::Status(status) => {
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
            );
        }
        Answer::Hang => {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// A chunked body's data (`<hex size>\r\n<data>\r\n`, until a chunk of size 0); `None`
/// until that last chunk has arrived.
fn dechunk(mut chunked: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = chunked.windows(2).position(|w| w == b"\r\n")?;
        let size_text = String::from_utf8_lossy(&chunked[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            return Some(body);
        }
        let start = line_end + 2;
        body.extend_from_slice(chunked.get(start..start + size)?);
        chunked = chunked.get(start + size + 2..)?;
    }
}

/// The spans of these export bodies, decoded by OpenTelemetry's proto definitions
/// (tests/interop/otlp_decode.py).
pub fn decode_otlp(bodies: &[String]) -> serde_json::Value {
    decode(bodies, &[])
}

/// The spans of OTLP protobuf export bodies (Envoy's OpenTelemetry tracer), decoded likewise.
pub fn decode_otlp_protobuf(bodies: &[Vec<u8>]) -> serde_json::Value {
    let hex: Vec<String> = bodies
        .iter()
        .map(|b| b.iter().map(|byte| format!("{byte:02x}")).collect())
        .collect();
    decode(&hex, &["--protobuf"])
}

fn decode(bodies: &[String], args: &[&str]) -> serde_json::Value {
    let mut child = Command::new(format!("{REPO}/.venv/bin/python"))
        .arg(format!("{REPO}/tests/interop/otlp_decode.py"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the project's .venv with opentelemetry-proto: run `make test`");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(bodies).unwrap().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "OTLP decoding failed: {}\n{bodies:?}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}
