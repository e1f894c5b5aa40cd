//! `make dashboard`:
//!   dashboard render --prometheus URL --dashboard FILE --out FILE [--minutes N]
//!   dashboard traffic --gateway URL --seconds N [--pause-ms N]
//! `render` draws the dashboard's panels from a Prometheus; `traffic` sends the Veza mix
//! (API calls with signed-in users, logins good and bad, uploads, chat sessions, streams, a
//! few errors) through a gateway so a freshly started stack has something to show.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let option = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let result = match args.first().map(String::as_str) {
        Some("render") => render(
            &option("--prometheus").unwrap_or_else(|| "http://127.0.0.1:9090".into()),
            &option("--dashboard").unwrap_or_else(|| {
                "monitoring/grafana/dashboards/veza-platform-overview.json".into()
            }),
            &option("--out").unwrap_or_else(|| "build/dashboard/index.html".into()),
            option("--minutes")
                .and_then(|m| m.parse().ok())
                .unwrap_or(5.0),
        ),
        Some("traffic") => traffic(
            &option("--gateway").unwrap_or_else(|| "http://127.0.0.1:10000".into()),
            option("--seconds")
                .and_then(|s| s.parse().ok())
                .unwrap_or(60),
            option("--pause-ms")
                .and_then(|s| s.parse().ok())
                .unwrap_or(250),
        ),
        _ => Err("usage: dashboard render|traffic [options] (see the source's header)".into()),
    };
    if let Err(err) = result {
        eprintln!("dashboard: {err}");
        std::process::exit(1);
    }
}

fn render(prometheus: &str, dashboard: &str, out: &str, minutes: f64) -> Result<(), String> {
    let text = std::fs::read_to_string(dashboard).map_err(|e| format!("{dashboard}: {e}"))?;
    let dashboard: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{dashboard}: {e}"))?;
    let end = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs_f64();
    let start = end - minutes * 60.0;
    let step = (minutes * 60.0 / 120.0).max(1.0);
    let panels = dashboard::query_panels(prometheus, &dashboard, start, end, step)?;
    let title = dashboard
        .pointer("/title")
        .and_then(Value::as_str)
        .unwrap_or("dashboard");
    let page = dashboard::html(title, &panels, start, end, prometheus);
    if let Some(dir) = std::path::Path::new(out).parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(out, page).map_err(|e| format!("{out}: {e}"))?;
    let with_data = panels
        .iter()
        .filter(|p| p.series.iter().any(|s| !s.points.is_empty()))
        .count();
    println!("{out}: {} panels, {with_data} with data", panels.len());
    Ok(())
}

/// A token shaped like Veza's, naming `user` in `sub` (the gateway does not verify it).
fn token(user: u32) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"listener-{user}"}}"#));
    format!("{header}.{payload}.ZGVtbw")
}

/// The Veza mix, in rounds `pause_ms` apart; every round also asks for a path no route
/// template has, a different one each time.
fn traffic(gateway: &str, seconds: u64, pause_ms: u64) -> Result<(), String> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    // Requests that got no HTTP answer at all (refused, reset, timed out).
    let failures = std::cell::Cell::new(0u64);
    let send = |method: &str, path: &str, headers: &[(&str, &str)], body: &str| {
        let mut request = agent.request(method, &format!("{gateway}{path}"));
        for (name, value) in headers {
            request = request.set(name, value);
        }
        let response = if body.is_empty() {
            request.call()
        } else {
            request.send_string(body)
        };
        match response {
            Ok(r) | Err(ureq::Error::Status(_, r)) => {
                let _ = r.into_string();
            }
            Err(_) => failures.set(failures.get() + 1),
        }
    };
    let ws_url = gateway.replacen("http", "ws", 1);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut round: u32 = 0;
    let mut sent = 0u64;
    while Instant::now() < deadline {
        round += 1;
        // A changing set of about 20 signed-in listeners.
        for user in 0..12 {
            let bearer = format!("Bearer {}", token((round / 5 + user) % 20));
            let auth = [("authorization", bearer.as_str())];
            send("GET", &format!("/api/v1/tracks/{}", user + 1), &auth, "");
            send("GET", "/api/v1/tracks", &auth, "");
            send("GET", "/api/v1/users/me", &auth, "");
            sent += 3;
        }
        send("GET", "/ready", &[], "");
        send("GET", "/api/v1/search?q=jazz", &[], "");
        send("GET", "/api/messages/stats", &[], "");
        send(
            "GET",
            "/stream/demo.mp3?expires=99999999999&sig=demo",
            &[],
            "",
        );
        send(
            "GET",
            "/stream/demo.mp3?expires=99999999999&sig=demo",
            &[("range", "bytes=0-4095")],
            "",
        );
        send("GET", &format!("/api/v1/nope/{round}"), &[], "");
        sent += 5;
        let account =
            format!(r#"{{"email":"l{round}@veza.local","password":"pw","username":"l{round}"}}"#);
        if round.is_multiple_of(3) {
            send("POST", "/api/v1/auth/register", &[], &account);
            send("POST", "/api/v1/playlists", &[], r#"{"name":"mix"}"#);
            sent += 2;
        }
        send("POST", "/api/v1/auth/login", &[], &account);
        send("POST", "/api/v1/auth/login", &[], r#"{"password":"wrong"}"#);
        send("POST", "/api/v1/tracks", &[], "audio");
        sent += 3;
        if round % 10 < 2 {
            for _ in 0..5 {
                send("GET", "/api/v1/tags", &[("x-standin-status", "503")], "");
            }
            sent += 5;
        }
        if round.is_multiple_of(4) {
            if let Ok((mut chat, _)) = tungstenite::connect(format!("{ws_url}/ws")) {
                let _ = chat.send(tungstenite::Message::text(
                    r#"{"type":"JoinConversation","conversation_id":"lobby"}"#,
                ));
                let _ = chat.send(tungstenite::Message::text(
                    r#"{"type":"SendMessage","conversation_id":"lobby","content":"hello"}"#,
                ));
                let _ = chat.read();
                let _ = chat.close(None);
                while chat.read().is_ok() {}
            } else {
                failures.set(failures.get() + 1);
            }
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(pause_ms));
    }
    println!(
        "traffic: {sent} requests and sessions in {seconds} s, {} without an answer",
        failures.get()
    );
    Ok(())
}
