//! Veza's dependencies, real, on free loopback ports: PostgreSQL and Redis from Debian's
//! packages with the real postgres_exporter and redis_exporter in front of them; and a
//! scripted HTTP server for the ways a dependency fails.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::{free_port, poll, scratch_dir, ScratchDir};

/// A child process killed on drop.
pub struct Daemon {
    child: Child,
    /// Where its log is, when the daemon has a directory of its own: removed after it ends.
    _dir: Option<ScratchDir>,
}

impl Daemon {
    /// A daemon with a directory of its own, its log `log` in it.
    fn spawn_in(what: &str, command: &mut Command, dir: ScratchDir, log: &str) -> Daemon {
        let mut daemon = Daemon::spawn(what, command, &dir.join(log));
        daemon._dir = Some(dir);
        daemon
    }

    fn spawn(what: &str, command: &mut Command, log: &Path) -> Daemon {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::fs::File::create(log).unwrap()))
            .stderr(Stdio::from(
                std::fs::File::create(log.with_extension("err")).unwrap(),
            ))
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {what} (run `make test`, which installs it): {e}")
            });
        Daemon { child, _dir: None }
    }

    fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_listening(what: &str, port: u16) {
    poll(
        &format!("{what} to listen on {port}"),
        Duration::from_secs(30),
        || TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ()),
    );
}

fn postgres_bin(name: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL (Debian package postgresql) must be installed: run `make test`")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    versions.sort();
    versions
        .last()
        .expect("no PostgreSQL version installed")
        .join("bin")
        .join(name)
}

/// PostgreSQL in a scratch directory, running as the `postgres` user (it refuses root).
pub struct Postgres {
    pub port: u16,
    dir: ScratchDir,
    server: Option<Daemon>,
}

impl Postgres {
    pub fn start() -> Postgres {
        let dir = scratch_dir("postgres");
        let status = Command::new("chown")
            .arg("postgres")
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success());
        let output = as_postgres(&postgres_bin("initdb"))
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-A", "trust", "-U", "postgres"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut postgres = Postgres {
            port: free_port(),
            dir,
            server: None,
        };
        postgres.resume();
        postgres
    }

    /// Starts the server again on the same data and port.
    pub fn resume(&mut self) {
        let mut command = as_postgres(&postgres_bin("postgres"));
        command
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.dir)
            .args(["-c", "listen_addresses=127.0.0.1"]);
        self.server = Some(Daemon::spawn(
            "postgres",
            &mut command,
            &self.dir.join("postgres.log"),
        ));
        wait_listening("PostgreSQL", self.port);
    }

    /// Fast shutdown (SIGINT): unlike the default smart shutdown it does not wait for the
    /// exporter's open connection to close.
    pub fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.signal("-INT");
            let _ = server.child.wait();
        }
        poll(
            "PostgreSQL to stop listening",
            Duration::from_secs(30),
            || {
                TcpStream::connect(("127.0.0.1", self.port))
                    .is_err()
                    .then_some(())
            },
        );
    }

    pub fn url(&self) -> String {
        format!(
            "postgresql://postgres@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `setpriv` execs the command as `postgres`, so the child's pid is the command's own.
fn as_postgres(program: &Path) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args([
            "--reuid=postgres",
            "--regid=postgres",
            "--clear-groups",
            "--",
        ])
        .arg(program);
    command
}

/// The real postgres_exporter in front of a PostgreSQL.
pub fn postgres_exporter(postgres: &Postgres) -> (Daemon, u16) {
    let port = free_port();
    let dir = scratch_dir("postgres-exporter");
    let mut command = Command::new("prometheus-postgres-exporter");
    command
        .env("DATA_SOURCE_NAME", postgres.url())
        .arg(format!("--web.listen-address=127.0.0.1:{port}"));
    let daemon = Daemon::spawn_in("postgres_exporter", &mut command, dir, "exporter.log");
    wait_listening("postgres_exporter", port);
    (daemon, port)
}

/// Redis and the real redis_exporter in front of it.
pub fn redis_with_exporter() -> (Daemon, Daemon, u16) {
    let dir = scratch_dir("redis");
    let redis_port = free_port();
    let mut command = Command::new("redis-server");
    command.args([
        "--port",
        &redis_port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]);
    command.current_dir(&dir);
    let redis = Daemon::spawn_in("redis-server", &mut command, dir, "redis.log");
    wait_listening("Redis", redis_port);
    let exporter_port = free_port();
    let mut command = Command::new("prometheus-redis-exporter");
    command
        .arg("-redis.addr")
        .arg(format!("redis://127.0.0.1:{redis_port}"))
        .arg("-web.listen-address")
        .arg(format!("127.0.0.1:{exporter_port}"));
    let dir = scratch_dir("redis-exporter");
    let exporter = Daemon::spawn_in("redis_exporter", &mut command, dir, "exporter.log");
    wait_listening("redis_exporter", exporter_port);
    (redis, exporter, exporter_port)
}

/// The Veza stand-ins backed by a real PostgreSQL (the backend's health checks it) and a
/// real Redis, each behind its real exporter, and the gateway config in front of them all.
pub struct VezaWithDatabases {
    pub postgres: Postgres,
    pub postgres_exporter_port: u16,
    pub redis_exporter_port: u16,
    pub standins: veza_standins::Standins,
    _daemons: [Daemon; 3],
}

impl VezaWithDatabases {
    pub fn start() -> (VezaWithDatabases, super::GatewayConfig, super::Ports) {
        let postgres = Postgres::start();
        let (pg_exporter, postgres_exporter_port) = postgres_exporter(&postgres);
        let (redis, redis_exporter, redis_exporter_port) = redis_with_exporter();
        let standins = veza_standins::spawn_with(
            veza_standins::Listeners::ephemeral().unwrap(),
            veza_standins::Options {
                database: Some(([127, 0, 0, 1], postgres.port).into()),
                ..Default::default()
            },
        )
        .unwrap();
        let (config, ports) = super::GatewayConfig::gateway_with(super::Upstreams {
            backend: standins.backend.port(),
            chat: standins.chat.port(),
            stream: standins.stream.port(),
            postgres_exporter: postgres_exporter_port,
            redis_exporter: redis_exporter_port,
        });
        let stack = VezaWithDatabases {
            postgres,
            postgres_exporter_port,
            redis_exporter_port,
            standins,
            _daemons: [pg_exporter, redis, redis_exporter],
        };
        (stack, config, ports)
    }
}

/// The real node_exporter (Debian's prometheus-node-exporter) on a free port.
pub fn node_exporter() -> (Daemon, u16) {
    let port = free_port();
    let dir = scratch_dir("node-exporter");
    let mut command = Command::new("prometheus-node-exporter");
    command.arg(format!("--web.listen-address=127.0.0.1:{port}"));
    let daemon = Daemon::spawn_in("node_exporter", &mut command, dir, "exporter.log");
    wait_listening("node_exporter", port);
    (daemon, port)
}

/// What a [`ScriptedServer`] does with each request.
#[derive(Clone)]
pub enum Script {
    /// Writes this raw HTTP response and closes.
    Respond(&'static str),
    /// Accepts, reads the request, and never answers.
    Hang,
}

/// A dependency that misbehaves on purpose; counts the requests that reached it.
pub struct ScriptedServer {
    pub port: u16,
    pub hits: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl ScriptedServer {
    pub fn start(script: Script) -> ScriptedServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (thread_hits, thread_stop) = (hits.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !thread_stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        stream
                            .set_read_timeout(Some(Duration::from_secs(5)))
                            .unwrap();
                        let mut request = Vec::new();
                        let mut buffer = [0u8; 1024];
                        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                            match stream.read(&mut buffer) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => request.extend_from_slice(&buffer[..n]),
                            }
                        }
                        thread_hits.fetch_add(1, Ordering::Relaxed);
                        match &script {
                            Script::Respond(response) => {
                                let _ = stream.write_all(response.as_bytes());
                            }
                            Script::Hang => held.push(stream),
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        ScriptedServer { port, hits, stop }
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
