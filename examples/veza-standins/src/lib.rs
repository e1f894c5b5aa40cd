//! Stand-ins for the three Veza services, answering the routes their code really serves (see
//! docs/configuration.md) with the statuses those handlers give.
//!
//! Two request headers let a test or a demo choose an outcome on any route:
//! `x-standin-status: 503` answers with that status, `x-standin-delay-ms: 200` waits first.
//! With `jitter_ms` set, every answer also waits a random 0..jitter_ms, so latency panels show
//! something other than a flat line.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower_http::compression::CompressionLayer;

/// Size of the audio files the stream stand-in serves.
pub const AUDIO_FILE_LEN: u64 = 1 << 20;
/// Size of the files whose name starts with [`LONG_FILE_PREFIX`]: past [`MAX_RANGE_SIZE`].
pub const LONG_AUDIO_FILE_LEN: u64 = 12 << 20;
pub const LONG_FILE_PREFIX: &str = "long-";
/// The stream server's `MAX_RANGE_SIZE` default: a Range asking for more is refused with 416.
pub const MAX_RANGE_SIZE: u64 = 10 << 20;

/// Requests each stand-in has answered.
#[derive(Default, Debug)]
pub struct Hits {
    pub backend: AtomicU64,
    pub chat: AtomicU64,
    pub stream: AtomicU64,
}

/// How the stand-ins behave beyond their routes.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Every answer waits a random 0..jitter_ms first.
    pub jitter_ms: u64,
    /// PostgreSQL's address: the backend's `/api/health` answers 503 while it refuses
    /// connections, as the real handler does when its database is unreachable.
    pub database: Option<SocketAddr>,
}

#[derive(Clone)]
struct Shared {
    jitter_ms: u64,
    database: Option<SocketAddr>,
    hits: Arc<Hits>,
    /// Which of `hits` this service counts in.
    counter: fn(&Hits) -> &AtomicU64,
}

/// The running stand-ins; dropping it stops them.
pub struct Standins {
    pub backend: SocketAddr,
    pub chat: SocketAddr,
    pub stream: SocketAddr,
    pub hits: Arc<Hits>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Standins {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Listeners for the three services; bind port 0 for ephemeral ports.
pub struct Listeners {
    pub backend: std::net::TcpListener,
    pub chat: std::net::TcpListener,
    pub stream: std::net::TcpListener,
}

impl Listeners {
    pub fn ephemeral() -> std::io::Result<Listeners> {
        let bind = || std::net::TcpListener::bind("127.0.0.1:0");
        Ok(Listeners {
            backend: bind()?,
            chat: bind()?,
            stream: bind()?,
        })
    }
}

/// Starts the stand-ins on their own runtime thread.
pub fn spawn(listeners: Listeners, jitter_ms: u64) -> std::io::Result<Standins> {
    spawn_with(
        listeners,
        Options {
            jitter_ms,
            ..Options::default()
        },
    )
}

/// As [`spawn`], with every option.
pub fn spawn_with(listeners: Listeners, options: Options) -> std::io::Result<Standins> {
    let backend = listeners.backend.local_addr()?;
    let chat = listeners.chat.local_addr()?;
    let stream = listeners.stream.local_addr()?;
    for listener in [&listeners.backend, &listeners.chat, &listeners.stream] {
        listener.set_nonblocking(true)?;
    }
    let hits = Arc::new(Hits::default());
    let shared = Shared {
        jitter_ms: options.jitter_ms,
        database: options.database,
        hits: hits.clone(),
        counter: |h| &h.backend,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        runtime.block_on(async move {
            let serve = |listener: std::net::TcpListener, app: Router| async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => {
                        let _ = axum::serve(listener, app).await;
                    }
                    Err(err) => eprintln!("veza-standins: {err}"),
                }
            };
            let servers = tokio::spawn(async move {
                tokio::join!(
                    serve(listeners.backend, backend_app(shared.clone())),
                    serve(listeners.chat, chat_app(shared.clone())),
                    serve(listeners.stream, stream_app(shared)),
                );
            });
            let _ = stopped.await;
            servers.abort();
        });
        runtime.shutdown_timeout(Duration::from_secs(1));
    });
    Ok(Standins {
        backend,
        chat,
        stream,
        hits,
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// Applies `x-standin-delay-ms`, `x-standin-status` and the jitter to every route.
async fn control(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    (shared.counter)(&shared.hits).fetch_add(1, Ordering::Relaxed);
    // Read before any await: a borrowed request body is not Sync.
    let header_number = |headers: &HeaderMap, name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let mut delay = header_number(request.headers(), "x-standin-delay-ms").unwrap_or(0);
    if shared.jitter_ms > 0 {
        delay += pseudo_random() % shared.jitter_ms;
    }
    let forced = header_number(request.headers(), "x-standin-status")
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok());
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    match forced {
        // These statuses carry no body (RFC 9110); a proxy treats one as a protocol error.
        Some(
            status
            @ (StatusCode::NO_CONTENT | StatusCode::RESET_CONTENT | StatusCode::NOT_MODIFIED),
        ) => status.into_response(),
        Some(status) => (status, Json(json!({"status": status.as_u16()}))).into_response(),
        None => next.run(request).await,
    }
}

fn pseudo_random() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0x2545_F491_4F6C_DD1D);
    let mut x = STATE.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^ (x >> 33)
}

fn with_control(
    router: Router<Shared>,
    mut shared: Shared,
    counter: fn(&Hits) -> &AtomicU64,
) -> Router {
    shared.counter = counter;
    router
        .layer(middleware::from_fn_with_state(shared.clone(), control))
        .with_state(shared)
}

fn ok(body: Value) -> Response {
    (StatusCode::OK, Json(body)).into_response()
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"error": "not found"}))).into_response()
}

// ---------------------------------------------------------------- backend API (Gin, :8080)

fn backend_app(shared: Shared) -> Router {
    let listing = || {
        get(|| async { ok(json!({"items": []})) })
            .post(|| async { (StatusCode::CREATED, Json(json!({"id": 1}))) })
    };
    let router = Router::new()
        .route("/api/v1/auth/register", post(register))
        .route("/api/v1/auth/signup", post(register))
        .route("/api/v1/auth/login", post(login))
        .route(
            "/api/v1/auth/refresh",
            post(|| async { ok(json!({"access_token": "t2"})) }),
        )
        .route(
            "/api/v1/auth/logout",
            post(|| async { ok(json!({"message": "logged out"})) }),
        )
        .route("/api/v1/auth/me", get(me))
        .route("/api/v1/users/me", get(me))
        .route(
            "/api/v1/users/{id}",
            get(|Path(id): Path<String>| async move { numeric(&id, json!({"id": id})) }),
        )
        .route(
            "/api/v1/tracks",
            get(|| async { ok(json!({"tracks": []})) }).post(upload_track),
        )
        .route(
            "/api/v1/tracks/{id}",
            get(|Path(id): Path<String>| async move {
                numeric(&id, json!({"id": id, "title": "Track"}))
            })
            .put(|Path(id): Path<String>| async move { numeric(&id, json!({"id": id})) })
            .delete(|Path(id): Path<String>| async move { numeric(&id, json!({"deleted": id})) }),
        )
        .route("/api/v1/listings", listing())
        .route("/api/v1/rooms", listing())
        .route("/api/v1/chat/rooms", listing())
        .route("/api/v1/playlists", listing())
        .route(
            "/api/v1/search",
            get(|| async { ok(json!({"results": []})) }),
        )
        .route("/api/v1/tags", get(|| async { ok(json!({"tags": []})) }))
        .route("/api/health", get(api_health))
        .route("/ws/chat", get(ws_chat))
        .fallback(|| async { not_found() });
    with_control(router, shared, |h| &h.backend)
}

async fn api_health(State(shared): State<Shared>) -> Response {
    let Some(database) = shared.database else {
        return ok(json!({"status": "ok"}));
    };
    let reachable = tokio::time::timeout(
        Duration::from_millis(500),
        tokio::net::TcpStream::connect(database),
    )
    .await
    .is_ok_and(|connected| connected.is_ok());
    if reachable {
        ok(json!({"status": "ok", "database": "connected"}))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "error", "database": "unreachable"})),
        )
            .into_response()
    }
}

fn numeric(id: &str, body: Value) -> Response {
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) {
        ok(body)
    } else {
        not_found()
    }
}

/// Registration answers 200 (not 201), as the Veza handler does.
async fn register(body: String) -> Response {
    if body.trim().is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid request"})),
        )
            .into_response();
    }
    ok(json!({"message": "user created"}))
}

async fn login(body: String) -> Response {
    if body.contains("wrong") {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid credentials"})),
        )
            .into_response();
    }
    let email = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v.get("email").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| "listener@veza.local".to_owned());
    ok(json!({"access_token": access_token(&email), "refresh_token": "r1"}))
}

/// A token shaped like Veza's (HS256 JWT, the user in `sub`); the signature is not real.
pub fn access_token(subject: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload =
        URL_SAFE_NO_PAD.encode(json!({"sub": subject, "exp": 4_102_444_800u64}).to_string());
    format!("{header}.{payload}.c3RhbmQtaW4")
}

async fn me(headers: HeaderMap) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer "));
    if bearer {
        ok(json!({"id": 1, "username": "listener"}))
    } else {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "unauthorized"})),
        )
            .into_response()
    }
}

async fn upload_track(body: axum::body::Bytes) -> Response {
    (
        StatusCode::CREATED,
        Json(json!({"id": 1, "size": body.len()})),
    )
        .into_response()
}

async fn ws_chat(
    Query(query): Query<std::collections::HashMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    if query
        .get("token")
        .is_none_or(|t| t.is_empty() || t == "invalid")
    {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid token"})),
        )
            .into_response();
    }
    upgrade.on_upgrade(chat_session)
}

// ---------------------------------------------------------------- chat server (axum, :3001)

fn chat_app(shared: Shared) -> Router {
    let router = Router::new()
        .route(
            "/health",
            get(|| async { ok(json!({"status": "healthy"})) }),
        )
        .route(
            "/api/messages",
            get(|| async { ok(json!({"messages": []})) })
                .post(|| async { (StatusCode::CREATED, Json(json!({"id": 1}))) }),
        )
        .route(
            "/api/messages/stats",
            get(|| async { ok(json!({"total": 0})) }),
        )
        .route(
            "/ws",
            any(|upgrade: WebSocketUpgrade| async move { upgrade.on_upgrade(chat_session) }),
        )
        .fallback(|| async { not_found() });
    with_control(router, shared, |h| &h.chat)
}

/// The chat server's protocol: JSON text frames with a PascalCase `type`.
async fn chat_session(mut socket: WebSocket) {
    let connected = json!({"type": "ActionConfirmed", "action": "connected", "success": true});
    if socket
        .send(Message::Text(connected.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    while let Some(Ok(message)) = socket.recv().await {
        let reply = match message {
            Message::Text(text) => chat_reply(&text),
            Message::Binary(bytes) => Some(Message::Binary(bytes)),
            // The chat server leaves its loop on a client's Close and drops the socket: the
            // reply tungstenite queued is never sent, so the client's Close gets none back.
            Message::Close(_) => return,
            Message::Ping(_) | Message::Pong(_) => None,
        };
        if let Some(reply) = reply {
            if socket.send(reply).await.is_err() {
                break;
            }
        }
    }
}

fn chat_reply(text: &str) -> Option<Message> {
    let parsed: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let reply = match parsed.get("type").and_then(Value::as_str) {
        Some("Ping") => json!({"type": "Pong"}),
        Some("SendMessage") => json!({
            "type": "NewMessage",
            "conversation_id": parsed.get("conversation_id"),
            "content": parsed.get("content"),
        }),
        Some(action @ ("JoinConversation" | "LeaveConversation" | "MarkAsRead")) => {
            json!({"type": "ActionConfirmed", "action": action, "success": true})
        }
        _ => json!({"type": "Error", "message": "unknown message type"}),
    };
    Some(Message::Text(reply.to_string().into()))
}

// ---------------------------------------------------------------- stream server (axum, :3002)

fn stream_app(shared: Shared) -> Router {
    let router = Router::new()
        .route(
            "/health",
            get(|| async { ok(json!({"status": "healthy"})) }),
        )
        .route("/stream/{filename}", get(stream_file))
        .fallback(|| async { not_found() });
    // The stream server compresses what it serves when the request accepts it, audio
    // included: the gateway then forwards (and counts) gzip bytes.
    with_control(router, shared, |h| &h.stream).layer(CompressionLayer::new().gzip(true))
}

/// Signed audio: `expires` (unix seconds, in the future) and `sig` are required; `sig=bad`
/// stands for a signature that does not verify; `missing.mp3` does not exist. The body goes
/// out as fast as the connection takes it, as the real server sends it: how fast a listener
/// plays is the client's pace, not the server's.
async fn stream_file(
    Path(filename): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let expires = query.get("expires").and_then(|e| e.parse::<u64>().ok());
    let (Some(expires), Some(sig)) = (expires, query.get("sig")) else {
        return (StatusCode::BAD_REQUEST, "missing expires or sig").into_response();
    };
    if sig == "bad" || expires < now {
        return (StatusCode::FORBIDDEN, "invalid signature").into_response();
    }
    if filename == "missing.mp3" {
        return not_found();
    }
    let len = if filename.starts_with(LONG_FILE_PREFIX) {
        LONG_AUDIO_FILE_LEN
    } else {
        AUDIO_FILE_LEN
    };
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, end) = match range.map(|r| parse_range(r, len)) {
        // No Range, one it cannot read, or one starting past the end: the whole file.
        None | Some(None) => (StatusCode::OK, 0, len - 1),
        Some(Some((start, end))) if end - start + 1 > MAX_RANGE_SIZE => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{len}"))],
            )
                .into_response()
        }
        Some(Some((start, end))) => (StatusCode::PARTIAL_CONTENT, start, end),
    };
    let body: Vec<u8> = (start..=end).map(|i| (i % 251) as u8).collect();
    let mut response = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "audio/mpeg")
        .header(header::ACCEPT_RANGES, "bytes");
    if status == StatusCode::PARTIAL_CONTENT {
        response = response.header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}"));
    }
    response
        .body(Body::from(body))
        .unwrap_or_else(|_| not_found())
}

/// `bytes=a-b` or `bytes=a-` within a file of `len` bytes, the end clamped to the file's;
/// `None` for anything else, a start past the end included.
fn parse_range(value: &str, len: u64) -> Option<(u64, u64)> {
    let (start, end) = value.strip_prefix("bytes=")?.split_once('-')?;
    let start: u64 = start.parse().ok()?;
    let end = if end.is_empty() {
        len - 1
    } else {
        end.parse::<u64>().ok()?.min(len - 1)
    };
    (start <= end).then_some((start, end))
}
