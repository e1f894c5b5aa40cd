//! A Prometheus process scraping a test's Envoy, and its query API.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::http::http;
use crate::{free_port, poll, scratch_dir, ScratchDir};

/// A real Prometheus scraping Envoy's admin endpoint every second.
pub struct Prometheus {
    child: Child,
    pub port: u16,
    dir: ScratchDir,
}

impl Prometheus {
    pub fn start(envoy_admin_port: u16) -> Prometheus {
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: veza-gateway\n    metrics_path: /stats/prometheus\n    \
             static_configs:\n      - targets: ['127.0.0.1:{envoy_admin_port}']\n"
        );
        Prometheus::start_with(&config, &[])
    }

    /// Prometheus with this `prometheus.yml` and these other files (rule files) beside it.
    pub fn start_with(config: &str, files: &[(&str, &str)]) -> Prometheus {
        let dir = scratch_dir("prometheus");
        let port = free_port();
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("prometheus.log")).unwrap(),
            ))
            .spawn()
            .expect("prometheus (Debian package `prometheus`) must be installed: run `make test`");
        let prometheus = Prometheus { child, port, dir };
        poll("Prometheus to be ready", Duration::from_secs(30), || {
            http("GET", &format!("http://127.0.0.1:{port}/-/ready"), &[], "")
                .is_ok_and(|(status, _)| status == 200)
                .then_some(())
        });
        prometheus
    }

    /// An instant query; returns (labels, value) per result.
    pub fn query(&self, promql: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let url = format!(
            "http://127.0.0.1:{}/api/v1/query?query={}",
            self.port,
            percent_encode(promql)
        );
        let (status, body) = http("GET", &url, &[], "").unwrap();
        assert_eq!(status, 200, "{promql}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        json["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let labels = r["metric"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                    .collect();
                let value = r["value"][1].as_str().unwrap().parse().unwrap();
                (labels, value)
            })
            .collect()
    }

    /// The names of the alerts in state `firing`.
    pub fn firing(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .query(r#"ALERTS{alertstate="firing"}"#)
            .into_iter()
            .map(|(labels, _)| labels["alertname"].clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The single value of a query that must return one series.
    pub fn scalar(&self, promql: &str) -> Option<f64> {
        let results = self.query(promql);
        assert!(results.len() <= 1, "{promql} returned {results:?}");
        results.first().map(|(_, v)| *v)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
            eprintln!("----- Prometheus log -----\n{log}\n----- end -----");
        }
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
