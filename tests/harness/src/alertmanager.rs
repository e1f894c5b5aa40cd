//! An Alertmanager process, as Prometheus' alert receiver in a test.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::http::http;
use crate::{free_port, poll, scratch_dir, ScratchDir};

/// A real Alertmanager (Debian's `prometheus-alertmanager`) running `alertmanager.yml`, alone
/// (no cluster peers).
pub struct Alertmanager {
    child: Child,
    pub port: u16,
    dir: ScratchDir,
}

impl Alertmanager {
    pub fn start(config: &str) -> Alertmanager {
        let dir = scratch_dir("alertmanager");
        let port = free_port();
        std::fs::write(dir.join("alertmanager.yml"), config).unwrap();
        let child = Command::new("prometheus-alertmanager")
            .arg(format!(
                "--config.file={}",
                dir.join("alertmanager.yml").display()
            ))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("alertmanager.log")).unwrap(),
            ))
            .spawn()
            .expect(
                "prometheus-alertmanager (its Debian package) must be installed: run `make test`",
            );
        let alertmanager = Alertmanager { child, port, dir };
        poll("Alertmanager to be ready", Duration::from_secs(30), || {
            http("GET", &format!("http://127.0.0.1:{port}/-/ready"), &[], "")
                .is_ok_and(|(status, _)| status == 200)
                .then_some(())
        });
        alertmanager
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log =
                std::fs::read_to_string(self.dir.join("alertmanager.log")).unwrap_or_default();
            eprintln!("----- Alertmanager log -----\n{log}\n----- end -----");
        }
    }
}
