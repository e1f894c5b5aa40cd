//! HTTP clients: a pooled one (ureq) for ordinary requests, raw sockets for what a client
//! library would not send.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

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
