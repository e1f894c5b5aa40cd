//! The HTTP context: Envoy's callbacks for one request, handed to the core's
//! [`Exchange`] with [`EnvoyHost`] as the request's host.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType};

use crate::exchange::{Exchange, Next};
use crate::host::HostError;
use crate::websocket::frames::{ByteSource, Direction};
use crate::worker::Worker;

use super::abi::{self, EnvoyHost};

/// Body chunks up to this size are copied into the VM whole (one hostcall); larger ones are
/// read only where the core asks (frame headers).
const WHOLE_CHUNK_LIMIT: usize = 16 * 1024;

pub struct HttpFilter {
    /// `None` when the plugin is not configured: the request passes untouched.
    worker: Option<Rc<Worker>>,
    exchange: Exchange,
}

impl HttpFilter {
    pub fn new(context_id: u32, worker: Option<Rc<Worker>>) -> HttpFilter {
        HttpFilter {
            worker,
            exchange: Exchange::new(context_id),
        }
    }

    fn body(&mut self, direction: Direction, size: usize) {
        if let Some(worker) = &self.worker {
            if self.exchange.wants_body(direction) {
                let buffer = match direction {
                    Direction::Upstream => BufferType::HttpRequestBody,
                    Direction::Downstream => BufferType::HttpResponseBody,
                };
                let mut chunk = EnvoyBody::new(buffer, size);
                self.exchange
                    .body(worker, &mut EnvoyHost, direction, &mut chunk);
            }
        }
    }
}

impl Context for HttpFilter {}

impl HttpContext for HttpFilter {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let Some(worker) = &self.worker else {
            return Action::Continue;
        };
        match self.exchange.request_headers(worker, &mut EnvoyHost) {
            Next::Continue => Action::Continue,
            Next::Pause => Action::Pause,
        }
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        if let Some(worker) = &self.worker {
            self.exchange.response_headers(worker, &mut EnvoyHost);
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, _end_of_stream: bool) -> Action {
        self.body(Direction::Upstream, body_size);
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, _end_of_stream: bool) -> Action {
        self.body(Direction::Downstream, body_size);
        Action::Continue
    }

    fn on_log(&mut self) {
        if let Some(worker) = &self.worker {
            self.exchange.end(worker, &mut EnvoyHost);
        }
    }
}

/// A body chunk as the frame reader sees it.
struct EnvoyBody {
    buffer: BufferType,
    size: usize,
    /// The whole chunk (small chunks), or the last range read (large ones).
    bytes: Option<Vec<u8>>,
    failure: Option<HostError>,
}

impl EnvoyBody {
    fn new(buffer: BufferType, size: usize) -> EnvoyBody {
        EnvoyBody {
            buffer,
            size,
            bytes: None,
            failure: None,
        }
    }
}

impl EnvoyBody {
    /// The bytes read, or none, remembering the first failure for the core to count.
    fn keep(&mut self, read: Result<Option<Vec<u8>>, HostError>) -> Vec<u8> {
        match read {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(err) => {
                self.failure.get_or_insert(err);
                Vec::new()
            }
        }
    }
}

impl ByteSource for EnvoyBody {
    fn size(&self) -> usize {
        self.size
    }

    fn read(&mut self, offset: usize, len: usize) -> &[u8] {
        if self.size <= WHOLE_CHUNK_LIMIT {
            if self.bytes.is_none() {
                let whole = abi::buffer(self.buffer, self.size);
                self.bytes = Some(self.keep(whole));
            }
            let whole = self.bytes.as_deref().unwrap_or_default();
            let end = offset.saturating_add(len).min(whole.len());
            return whole.get(offset..end).unwrap_or_default();
        }
        let range = abi::buffer_at(self.buffer, offset, len);
        let range = self.keep(range);
        self.bytes.insert(range)
    }

    fn failure(&self) -> Option<HostError> {
        self.failure
    }
}
