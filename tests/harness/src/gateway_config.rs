//! Envoy configs derived from the shipped ones by exact, counted substitutions.

use std::path::Path;

use veza_standins::Listeners;

use crate::{
    fault_injection_native_path, fault_injection_wasm_path, free_port, native_path, wasm_path,
    Build, REPO,
};

/// Where the repository keeps Envoy configs.
pub const SHIPPED_CONFIG_DIRS: [&str; 2] = ["envoy", "examples/func-e"];

/// An Envoy config derived from a shipped one by exact, counted substitutions: a change to
/// the shipped file that breaks a substitution fails loudly instead of testing something else.
#[derive(Clone)]
pub struct GatewayConfig {
    pub text: String,
}

/// Where the gateway's clusters point.
pub struct Upstreams {
    pub backend: u16,
    pub chat: u16,
    pub stream: u16,
    pub postgres_exporter: u16,
    pub redis_exporter: u16,
}

impl Upstreams {
    /// The three services on these ports; the exporters' clusters point at ports nobody
    /// listens on.
    pub fn services(backend: u16, chat: u16, stream: u16) -> Upstreams {
        Upstreams {
            backend,
            chat,
            stream,
            postgres_exporter: free_port(),
            redis_exporter: free_port(),
        }
    }

    /// The stand-ins' services, with no exporters.
    pub fn standins(standins: &veza_standins::Standins) -> Upstreams {
        Upstreams::services(
            standins.backend.port(),
            standins.chat.port(),
            standins.stream.port(),
        )
    }
}

#[derive(Clone, Copy)]
pub struct Ports {
    pub listener: u16,
    pub admin: u16,
    /// The stats listener (`/metrics`), in configs that have one (envoy/envoy.yaml).
    pub stats: u16,
}

impl GatewayConfig {
    /// A config as shipped, loading the module under test (shipped configs name the module
    /// `make wasm` or `make native` builds, or the packaged one).
    pub fn shipped(relative: &str) -> GatewayConfig {
        let text = std::fs::read_to_string(Path::new(REPO).join(relative)).unwrap();
        let native = "filename: build/libveza_observability.so";
        if text.contains(native) {
            return GatewayConfig { text }
                .replace_once(native, &format!("filename: {}", native_path().display()));
        }
        let module = ["build/", "build/package/"]
            .iter()
            .map(|dir| format!("filename: {dir}veza_observability.wasm"))
            .find(|line| text.contains(line.as_str()))
            .unwrap_or_else(|| panic!("{relative} loads no veza_observability.wasm"));
        GatewayConfig { text }
            .replace_once(&module, &format!("filename: {}", wasm_path().display()))
    }

    /// Every Envoy config this repository ships: `envoy/*.yaml` and the examples'.
    pub fn all_shipped() -> Vec<String> {
        let mut configs = Vec::new();
        for dir in SHIPPED_CONFIG_DIRS {
            for entry in std::fs::read_dir(Path::new(REPO).join(dir)).unwrap() {
                let name = entry.unwrap().file_name().into_string().unwrap();
                if name.ends_with(".yaml") {
                    configs.push(format!("{dir}/{name}"));
                }
            }
        }
        configs.sort();
        configs
    }

    /// The Veza gateway with its three upstreams and fresh listener and admin ports; the
    /// exporters' clusters point at ports nobody listens on.
    pub fn gateway(backend: u16, chat: u16, stream: u16) -> (GatewayConfig, Ports) {
        GatewayConfig::gateway_with(Upstreams::services(backend, chat, stream))
    }

    /// The Veza stand-ins on ephemeral ports and the gateway config in front of them.
    pub fn with_standins() -> (veza_standins::Standins, GatewayConfig, Ports) {
        GatewayConfig::with_standins_from(Build::selected().gateway_config())
    }

    /// The Veza stand-ins on ephemeral ports and the shipped config `relative` in front of
    /// them.
    pub fn with_standins_from(relative: &str) -> (veza_standins::Standins, GatewayConfig, Ports) {
        let standins = veza_standins::spawn(Listeners::ephemeral().unwrap(), 0).unwrap();
        let (config, ports) = GatewayConfig::gateway_from(relative, Upstreams::standins(&standins));
        (standins, config, ports)
    }

    /// A shipped config with its listener (10000), admin (9901, also the stats listener's
    /// admin cluster) and stats listener (19001, where there is one) on fresh ports.
    pub fn shipped_on_fresh_ports(relative: &str) -> (GatewayConfig, Ports) {
        let ports = Ports {
            listener: free_port(),
            admin: free_port(),
            stats: free_port(),
        };
        let shipped = GatewayConfig::shipped(relative);
        let mut moves = vec![(10000, ports.listener), (9901, ports.admin)];
        if shipped.text.contains("port_value: 19001 }") {
            moves.push((19001, ports.stats));
        }
        (shipped.ports(&moves), ports)
    }

    /// The gateway of the build the suite runs with, in front of `upstreams`.
    pub fn gateway_with(upstreams: Upstreams) -> (GatewayConfig, Ports) {
        GatewayConfig::gateway_from(Build::selected().gateway_config(), upstreams)
    }

    /// The shipped gateway config `relative` in front of `upstreams`.
    pub fn gateway_from(relative: &str, upstreams: Upstreams) -> (GatewayConfig, Ports) {
        let (config, ports) = GatewayConfig::shipped_on_fresh_ports(relative);
        let config = config.ports(&[
            (8080, upstreams.backend),
            (3001, upstreams.chat),
            (3002, upstreams.stream),
            (9187, upstreams.postgres_exporter),
            (9121, upstreams.redis_exporter),
        ]);
        (config, ports)
    }

    pub fn replace_once(mut self, from: &str, to: &str) -> GatewayConfig {
        let count = self.text.matches(from).count();
        assert_eq!(count, 1, "expected {from:?} exactly once in the config");
        self.text = self.text.replacen(from, to, 1);
        self
    }

    /// Moves each `(default, port)` wherever the config has it (the admin port is the
    /// admin's and the admin cluster's), in one pass: a port just written is never taken for
    /// a default moved after it.
    pub fn ports(mut self, moves: &[(u16, u16)]) -> GatewayConfig {
        const FIELD: &str = "port_value: ";
        let mut found = vec![false; moves.len()];
        let mut pieces = self.text.split(FIELD);
        let mut text = pieces.next().unwrap_or_default().to_owned();
        for piece in pieces {
            text.push_str(FIELD);
            let digits = piece.find(" }").map_or(piece, |end| &piece[..end]);
            let to = digits.parse::<u16>().ok().and_then(|port| {
                let at = moves.iter().position(|(default, _)| *default == port)?;
                found[at] = true;
                Some(moves[at].1)
            });
            match to {
                Some(to) => {
                    text.push_str(&to.to_string());
                    text.push_str(&piece[digits.len()..]);
                }
                None => text.push_str(piece),
            }
        }
        for ((default, _), found) in moves.iter().zip(found) {
            assert!(found, "expected \"{FIELD}{default} }}\" in the config");
        }
        self.text = text;
        self
    }

    /// Appends a STATIC cluster (clusters are the config's last section).
    pub fn add_cluster(mut self, name: &str, port: u16) -> GatewayConfig {
        assert!(
            self.text.trim_end().ends_with('}'),
            "clusters must end the config"
        );
        self.text.push_str(&format!(
            "  - name: {name}\n    type: STATIC\n    connect_timeout: 1s\n    load_assignment:\n      \
             cluster_name: {name}\n      endpoints:\n      - lb_endpoints:\n        - endpoint: \
             {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}\n"
        ));
        self
    }

    /// Loads the module built with the test-only `fault-injection` feature instead.
    pub fn with_fault_injection(self) -> GatewayConfig {
        let (shipped, faults) = match Build::selected() {
            Build::Wasm => (wasm_path(), fault_injection_wasm_path()),
            Build::Native => (native_path(), fault_injection_native_path()),
        };
        let shipped = format!("filename: {}", shipped.display());
        let faults = format!("filename: {}", faults.display());
        self.replace_once(&shipped, &faults)
    }

    /// Replaces the gateway filter's JSON configuration: the gateway ships the defaults with
    /// the access log's fields on, the bench config `{}`.
    pub fn plugin_configuration(self, json: &str) -> GatewayConfig {
        let shipped = ["{\"access_log\": {\"enabled\": true}}", "{}"]
            .iter()
            .map(|value| format!("value: |\n                    {value}\n"))
            .find(|from| self.text.contains(from.as_str()))
            .unwrap_or_else(|| panic!("no plugin configuration to replace"));
        self.replace_once(&shipped, &format!("value: |\n                    {json}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::GatewayConfig;

    /// A port written for one default is not moved again when it is another default: the
    /// listener put on 19001 stays there while the stats listener leaves 19001.
    #[test]
    fn ports_move_in_one_pass() {
        let config = GatewayConfig {
            text: "a: { port_value: 10000 }\nb: { port_value: 9901 }\nc: { port_value: 19001 }\n\
                   d: { port_value: 9901 }\ne: { port_value: 8080 }\n"
                .to_owned(),
        };
        let moved = config.ports(&[(10000, 19001), (9901, 20001), (19001, 20002)]);
        assert_eq!(
            moved.text,
            "a: { port_value: 19001 }\nb: { port_value: 20001 }\nc: { port_value: 20002 }\n\
             d: { port_value: 20001 }\ne: { port_value: 8080 }\n"
        );
    }
}
