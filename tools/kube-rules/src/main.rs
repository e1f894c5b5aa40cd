//! `make kube-rules`: writes monitoring/kubernetes/prometheusrule.yaml from the rule files.

use std::process::ExitCode;

fn main() -> ExitCode {
    let texts: Result<Vec<String>, String> = kube_rules::SOURCES
        .iter()
        .map(|path| std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}")))
        .collect();
    let written = texts.and_then(|texts| {
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let rule = kube_rules::prometheus_rule(&texts)?;
        std::fs::write(kube_rules::OUTPUT, rule).map_err(|e| format!("{}: {e}", kube_rules::OUTPUT))
    });
    match written {
        Ok(()) => {
            println!("wrote {}", kube_rules::OUTPUT);
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("kube-rules: {message}");
            ExitCode::FAILURE
        }
    }
}
