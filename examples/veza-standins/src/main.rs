//! `veza-standins [--backend ADDR] [--chat ADDR] [--stream ADDR] [--jitter-ms N] [--database ADDR]`
//!
//! Serves the Veza backend API, chat server and stream server routes until interrupted.
//! Defaults are the services' own addresses: 127.0.0.1:8080, :3001, :3002.

use std::net::TcpListener;
use std::process::ExitCode;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("veza-standins: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut backend = "127.0.0.1:8080".to_owned();
    let mut chat = "127.0.0.1:3001".to_owned();
    let mut stream = "127.0.0.1:3002".to_owned();
    let mut jitter_ms = 0;
    let mut database = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--backend" => backend = value()?,
            "--chat" => chat = value()?,
            "--stream" => stream = value()?,
            "--jitter-ms" => {
                jitter_ms = value()?.parse().map_err(|e| format!("--jitter-ms: {e}"))?
            }
            "--database" => {
                database = Some(value()?.parse().map_err(|e| format!("--database: {e}"))?)
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let bind =
        |addr: &str| TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"));
    let listeners = veza_standins::Listeners {
        backend: bind(&backend)?,
        chat: bind(&chat)?,
        stream: bind(&stream)?,
    };
    let options = veza_standins::Options {
        jitter_ms,
        database,
    };
    let standins = veza_standins::spawn_with(listeners, options).map_err(|e| e.to_string())?;
    println!(
        "veza-standins: backend API on {}, chat on {}, stream on {}",
        standins.backend, standins.chat, standins.stream
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .map_err(|e| e.to_string())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        Ok::<(), String>(())
    })?;
    drop(standins);
    Ok(())
}
