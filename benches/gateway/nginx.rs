//! nginx: the fast upstream of the proxied route and the span collector stand-in.

use super::*;

pub(crate) struct Nginx {
    pub(crate) child: Child,
    pub(crate) port: u16,
    /// Its config and logs, removed after it stops.
    _dir: ScratchDir,
}

impl Nginx {
    pub(crate) fn start() -> Nginx {
        let dir = scratch_dir("nginx");
        let port = free_port();
        let config = format!(
            "daemon off;\nworker_processes 1;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {dir};\n  proxy_temp_path {dir};\n\
             fastcgi_temp_path {dir};\n  uwsgi_temp_path {dir};\n  scgi_temp_path {dir};\n\
             keepalive_requests 1000000;\n\
             server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"ok\"; }} }}\n}}\n",
            dir = dir.display()
        );
        std::fs::write(dir.join("nginx.conf"), config).unwrap();
        let child = Command::new("taskset")
            .args(["-c", &LOAD_CPU.to_string(), "nginx", "-c"])
            .arg(dir.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx (Debian package nginx) must be installed: run make bench");
        poll("nginx to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        });
        Nginx {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-QUIT")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}
