//! Audio streams (`/stream/:filename`): which responses start a listening session, the
//! session as Envoy forwards it, and its bitrate window.
//!
//! Everything here measures what the gateway forwards, not what a listener has received: the
//! buffers between them (Envoy's, the kernel's) put the listener behind by a bounded amount
//! (docs/websockets-and-streams.md, "What the stream metrics measure"). Gauges are moved by
//! increments, never set, so every worker's share adds up on the one series.

use std::collections::HashMap;

use crate::config::Settings;
use crate::host::Host;
use crate::shared::{keys, Budget};

use super::connections::MAX_ID_LEN;
use super::names;
use super::registry::{CounterHandle, GaugeHandle, HistogramHandle, Operation, Registry};

/// How often a stream's bitrate gauge is brought up to date.
pub const BITRATE_WINDOW_NANOS: u64 = 1_000_000_000;

/// What the response to a GET of a stream endpoint is to the gateway. Decided by the response
/// alone, whatever the request's Range said: a server that cannot read a Range, or finds it
/// past the end of the file, answers 200 with the whole file, and that is a listening session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamResponse {
    /// Audio from the first byte (a 200, or a 206 whose `Content-Range` starts at byte 0): a
    /// listening session starts.
    Session,
    /// Audio from further in (a 206 from a later byte): the same session going on.
    Continuation,
    /// No audio (an error, a 304, a 416): no stream.
    NoAudio,
}

impl StreamResponse {
    pub fn classify(status: Option<u16>, content_range: Option<&[u8]>) -> StreamResponse {
        match status {
            Some(200) => StreamResponse::Session,
            Some(206) if content_range.and_then(first_byte_position) == Some(0) => {
                StreamResponse::Session
            }
            Some(206) => StreamResponse::Continuation,
            _ => StreamResponse::NoAudio,
        }
    }
}

/// The first byte's position in `Content-Range: bytes 0-99/1000` (RFC 9110 14.4; the unit is
/// case-insensitive); `None` for another unit or an unsatisfied range (`bytes */1000`).
fn first_byte_position(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    let unit = value.get(..5)?;
    let rest = value.get(5..)?;
    if !unit.eq_ignore_ascii_case(b"bytes") || !rest.first()?.is_ascii_whitespace() {
        return None;
    }
    let rest = rest.trim_ascii_start();
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || rest.get(digits) != Some(&b'-') {
        return None;
    }
    std::str::from_utf8(rest.get(..digits)?).ok()?.parse().ok()
}

/// The `stream_id` of a stream request: the path's last segment, without query or fragment.
pub fn stream_id(path: &[u8]) -> String {
    let path = crate::routes::strip_query(path);
    let last = path.rsplit(|&b| b == b'/').next().unwrap_or_default();
    String::from_utf8_lossy(last)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._~".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

struct Handles {
    started: Option<CounterHandle>,
    active: Option<GaugeHandle>,
    duration: Option<HistogramHandle>,
    bytes: Option<CounterHandle>,
}

/// The stream metrics of one worker VM.
pub struct StreamMetrics {
    /// Defined at the first stream, so a gateway that serves none shows none.
    handles: Option<Handles>,
    bitrates: HashMap<String, Option<GaugeHandle>>,
    stream_ids: Budget,
}

/// One stream response while Envoy forwards it: its start, and the bitrate it has reported.
#[derive(Debug)]
pub struct StreamSession {
    opened_nanos: u64,
    bitrate: Option<GaugeHandle>,
    reported_bps: i64,
    window_start_nanos: u64,
    window_bytes: u64,
}

impl Default for StreamMetrics {
    fn default() -> StreamMetrics {
        StreamMetrics::new()
    }
}

impl StreamMetrics {
    pub fn new() -> StreamMetrics {
        StreamMetrics {
            handles: None,
            bitrates: HashMap::new(),
            stream_ids: Budget::new(keys::STREAM_ID_SET, keys::STREAM_ID_PREFIX),
        }
    }

    fn handles(&mut self, registry: &mut Registry, host: &mut dyn Host) -> &Handles {
        self.handles.get_or_insert_with(|| Handles {
            started: registry.define_counter(host, names::STREAMS_STARTED_TOTAL, &[]),
            active: registry.define_gauge(host, names::STREAM_SESSIONS_ACTIVE, &[]),
            duration: registry.define_histogram(host, names::STREAM_DURATION_SECONDS, &[]),
            bytes: registry.define_counter(host, names::STREAM_BYTES_TOTAL, &[]),
        })
    }

    /// A stream endpoint's response headers: a session in flight, or `None` for no audio.
    pub fn opened(
        &mut self,
        settings: &Settings,
        registry: &mut Registry,
        host: &mut dyn Host,
        response: StreamResponse,
        stream_id: &str,
        now_nanos: u64,
    ) -> Option<StreamSession> {
        if response == StreamResponse::NoAudio {
            return None;
        }
        let handles = self.handles(registry, host);
        let (started, active) = (handles.started, handles.active);
        if let (Some(started), StreamResponse::Session) = (started, response) {
            registry.add(started, 1);
        }
        if let Some(active) = active {
            registry.add_gauge(host, active, 1);
        }
        let bitrate = self.bitrate_gauge(settings, registry, host, stream_id);
        Some(StreamSession {
            opened_nanos: now_nanos,
            bitrate,
            reported_bps: 0,
            window_start_nanos: now_nanos,
            window_bytes: 0,
        })
    }

    /// A body chunk Envoy forwarded; once a window has passed, the bitrate gauge moves by the
    /// change since this session last reported.
    pub fn forwarded(
        &mut self,
        registry: &mut Registry,
        host: &mut dyn Host,
        session: &mut StreamSession,
        bytes: u64,
        now_nanos: u64,
    ) {
        if let Some(counter) = self.handles(registry, host).bytes {
            registry.add(counter, bytes);
        }
        session.window_bytes += bytes;
        let elapsed = now_nanos.saturating_sub(session.window_start_nanos);
        if elapsed >= BITRATE_WINDOW_NANOS {
            let bps = i64::try_from(
                u128::from(session.window_bytes) * 8 * 1_000_000_000 / u128::from(elapsed),
            )
            .unwrap_or(i64::MAX);
            if let Some(gauge) = session.bitrate {
                registry.add_gauge(host, gauge, bps - session.reported_bps);
            }
            session.reported_bps = bps;
            session.window_start_nanos = now_nanos;
            session.window_bytes = 0;
        }
    }

    /// The session ended as Envoy sees it: its bitrate withdrawn, its duration observed.
    pub fn closed(
        &mut self,
        registry: &mut Registry,
        host: &mut dyn Host,
        session: StreamSession,
        now_nanos: u64,
    ) {
        if let Some(gauge) = session.bitrate {
            registry.add_gauge(host, gauge, -session.reported_bps);
        }
        let handles = self.handles(registry, host);
        let (active, duration) = (handles.active, handles.duration);
        if let Some(active) = active {
            registry.add_gauge(host, active, -1);
        }
        if let Some(duration) = duration {
            registry.observe(duration, now_nanos.saturating_sub(session.opened_nanos));
        }
    }

    /// The `stream_bitrate_bps` gauge of a stream id (`other` past the gateway-wide cap).
    fn bitrate_gauge(
        &mut self,
        settings: &Settings,
        registry: &mut Registry,
        host: &mut dyn Host,
        stream_id: &str,
    ) -> Option<GaugeHandle> {
        if let Some(gauge) = self.bitrates.get(stream_id) {
            return *gauge;
        }
        let (admitted, error) = if stream_id.len() <= MAX_ID_LEN {
            self.stream_ids
                .admit(host, stream_id, settings.streams.max_stream_ids)
        } else {
            (false, None)
        };
        if let Some(err) = error {
            registry.host_error(Operation::SharedData, err, keys::STREAM_ID_SET);
        }
        let label = if admitted { stream_id } else { names::OTHER };
        let gauge = registry.define_gauge(
            host,
            names::STREAM_BITRATE_BPS,
            &[(names::LABEL_STREAM_ID, label)],
        );
        // Refused ids share `other`; remember only the admitted ones (bounded by the cap).
        if admitted || self.bitrates.len() < settings.streams.max_stream_ids as usize {
            self.bitrates.insert(stream_id.to_owned(), gauge);
        }
        gauge
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::host::memory::MemoryHost;

    #[test]
    fn a_stream_response_starts_a_session_from_byte_0_whatever_the_request_asked() {
        use StreamResponse::{Continuation, NoAudio, Session};
        let classify = |status, range: Option<&str>| {
            StreamResponse::classify(Some(status), range.map(str::as_bytes))
        };
        // Every 200 is the whole file: no Range, or one the server could not read or found
        // past the end.
        assert_eq!(classify(200, None), Session);
        assert_eq!(classify(206, Some("bytes 0-99/1048576")), Session);
        assert_eq!(classify(206, Some("Bytes  00-99/1048576")), Session);
        assert_eq!(classify(206, Some("bytes 100-199/1048576")), Continuation);
        // A 206 without a readable Content-Range is audio, but not from the start.
        assert_eq!(classify(206, None), Continuation);
        assert_eq!(classify(206, Some("bytes */1048576")), Continuation);
        assert_eq!(classify(206, Some("items 0-9/10")), Continuation);
        assert_eq!(classify(206, Some("bytes0-9/10")), Continuation);
        assert_eq!(classify(206, Some("bytes -9/10")), Continuation);
        for status in [304, 400, 403, 404, 416, 500, 503] {
            assert_eq!(classify(status, None), NoAudio, "{status}");
        }
        assert_eq!(StreamResponse::classify(None, None), NoAudio);
    }

    #[test]
    fn stream_ids_are_capped_and_sanitized() {
        let settings = config::load(Some(br#"{"streams": {"max_stream_ids": 2}}"#)).unwrap();
        let mut host = MemoryHost::default();
        crate::shared::prepare(&mut host).unwrap();
        let mut registry = Registry::new(&mut host);
        let mut metrics = StreamMetrics::new();
        assert_eq!(
            stream_id(b"/stream/song.mp3?expires=1&sig=secret"),
            "song.mp3"
        );
        assert_eq!(stream_id(b"/stream/a%20b;.;x"), "a_20b_._x");
        for id in ["a.mp3", "b.mp3", "c.mp3", "a.mp3"] {
            let gauge = metrics
                .bitrate_gauge(&settings, &mut registry, &mut host, id)
                .unwrap();
            registry.add_gauge(&mut host, gauge, 1000);
        }
        assert_eq!(
            host.counter(r#"stream_bitrate_bps{stream_id="a.mp3"}"#),
            Some(2000)
        );
        assert_eq!(
            host.counter(r#"stream_bitrate_bps{stream_id="b.mp3"}"#),
            Some(1000)
        );
        assert_eq!(
            host.counter(r#"stream_bitrate_bps{stream_id="other"}"#),
            Some(1000)
        );
    }

    #[test]
    fn a_session_reports_what_it_forwards_each_second_and_withdraws_it_at_the_end() {
        let settings = config::load(None).unwrap();
        let mut host = MemoryHost::default();
        let mut registry = Registry::new(&mut host);
        let mut metrics = StreamMetrics::new();
        let second = BITRATE_WINDOW_NANOS;
        let gauge = |host: &MemoryHost| host.counter(r#"stream_bitrate_bps{stream_id="a.mp3"}"#);
        assert!(metrics
            .opened(
                &settings,
                &mut registry,
                &mut host,
                StreamResponse::NoAudio,
                "a.mp3",
                0
            )
            .is_none());
        let mut first = metrics
            .opened(
                &settings,
                &mut registry,
                &mut host,
                StreamResponse::Session,
                "a.mp3",
                0,
            )
            .unwrap();
        let mut second_response = metrics
            .opened(
                &settings,
                &mut registry,
                &mut host,
                StreamResponse::Continuation,
                "a.mp3",
                0,
            )
            .unwrap();
        assert_eq!(host.counter("stream_sessions_active"), Some(2));
        // 100,000 bytes within the first second: nothing reported before the window ends.
        metrics.forwarded(&mut registry, &mut host, &mut first, 60_000, second / 2);
        assert_eq!(gauge(&host), Some(0));
        metrics.forwarded(&mut registry, &mut host, &mut first, 40_000, second);
        assert_eq!(gauge(&host), Some(800_000));
        // The other response of the same stream adds its own; a slower second moves by the
        // difference only.
        metrics.forwarded(
            &mut registry,
            &mut host,
            &mut second_response,
            25_000,
            second,
        );
        assert_eq!(gauge(&host), Some(1_000_000));
        metrics.forwarded(&mut registry, &mut host, &mut first, 50_000, 3 * second);
        assert_eq!(gauge(&host), Some(400_000));
        // An empty chunk past the window reports 0 bps: the buffers are full, nothing moved.
        metrics.forwarded(
            &mut registry,
            &mut host,
            &mut second_response,
            0,
            4 * second,
        );
        assert_eq!(gauge(&host), Some(200_000));
        metrics.closed(&mut registry, &mut host, first, 5 * second);
        assert_eq!(gauge(&host), Some(0));
        metrics.closed(&mut registry, &mut host, second_response, 5 * second);
        assert_eq!(host.counter("stream_sessions_active"), Some(0));
        registry.flush(&mut host);
        assert_eq!(host.counter("streams_started_total"), Some(1));
        assert_eq!(host.counter("stream_bytes_total"), Some(175_000));
        assert_eq!(host.counter("stream_duration_seconds_count"), Some(2));
        assert_eq!(host.counter("stream_duration_seconds_sum"), Some(10));
    }
}
