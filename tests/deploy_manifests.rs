//! The deployment manifests under examples/istio, examples/envoy-gateway and
//! monitoring/kubernetes: each custom resource is valid against the CRD schema its project
//! publishes (kept in tests/fixtures/crds, with their sources), with unknown fields refused as
//! `kubectl --validate=strict` refuses them; the plugin configurations they carry load in the
//! filter; the stats_tags they add are exactly those of envoy/envoy.yaml; the PrometheusRule
//! is the shipped rule files, regenerated.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};

use serde_json::Value;
use veza_test_harness::REPO;

const MANIFEST_DIRS: [&str; 3] = [
    "examples/istio",
    "examples/envoy-gateway",
    "monitoring/kubernetes",
];

fn schemas_dir() -> PathBuf {
    Path::new(REPO).join("tests/fixtures/crds")
}

fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|document| {
            let value: serde_norway::Value = serde::Deserialize::deserialize(document).unwrap();
            serde_json::to_value(value).unwrap()
        })
        .filter(|value| !value.is_null())
        .collect()
}

/// (apiVersion, kind) → the version's openAPIV3Schema, from every CRD in the schemas folder.
fn crd_schemas() -> Vec<(String, String, Value)> {
    let mut schemas = Vec::new();
    for entry in std::fs::read_dir(schemas_dir()).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_str().unwrap().ends_with(".crd.yaml") {
            continue;
        }
        for crd in yaml_documents(&path) {
            let group = crd["spec"]["group"].as_str().unwrap();
            let kind = crd["spec"]["names"]["kind"].as_str().unwrap();
            for version in crd["spec"]["versions"].as_array().unwrap() {
                let api_version = format!("{group}/{}", version["name"].as_str().unwrap());
                let schema = version["schema"]["openAPIV3Schema"].clone();
                schemas.push((api_version, kind.to_owned(), schema));
            }
        }
    }
    schemas
}

/// Fields the schema does not declare, where it does not allow unknown ones: what
/// `kubectl --validate=strict` and the API server's strict field validation refuse.
fn unknown_fields(schema: &Value, value: &Value, path: &str, found: &mut Vec<String>) {
    if schema["x-kubernetes-preserve-unknown-fields"] == true {
        return;
    }
    match value {
        Value::Object(map) => {
            let properties = schema["properties"].as_object();
            let additional = &schema["additionalProperties"];
            for (key, child) in map {
                // Every object has these at its root whether its schema lists them or not.
                if path.is_empty() && ["apiVersion", "kind", "metadata"].contains(&key.as_str()) {
                    continue;
                }
                let child_path = format!("{path}.{key}");
                match properties.and_then(|p| p.get(key)) {
                    Some(child_schema) => unknown_fields(child_schema, child, &child_path, found),
                    None if additional.is_object() => {
                        unknown_fields(additional, child, &child_path, found)
                    }
                    None if additional == &Value::Bool(true) => {}
                    // metadata is typed `object` with no properties in CRD schemas.
                    None if properties.is_none() => {}
                    None => found.push(child_path),
                }
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                unknown_fields(&schema["items"], item, &format!("{path}[{index}]"), found);
            }
        }
        _ => {}
    }
}

/// Schema errors and unknown fields of one custom resource; empty when valid.
fn problems(schemas: &[(String, String, Value)], resource: &Value) -> Vec<String> {
    let api_version = resource["apiVersion"].as_str().unwrap_or_default();
    let kind = resource["kind"].as_str().unwrap_or_default();
    let Some((_, _, schema)) = schemas
        .iter()
        .find(|(v, k, _)| v == api_version && k == kind)
    else {
        return vec![format!("no published schema for {api_version} {kind}")];
    };
    let validator = jsonschema::validator_for(schema).unwrap();
    let mut found: Vec<String> = validator
        .iter_errors(resource)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    let mut unknown = Vec::new();
    unknown_fields(schema, resource, "", &mut unknown);
    found.extend(unknown.into_iter().map(|p| format!("{p}: unknown field")));
    found
}

fn manifests() -> Vec<(PathBuf, Value)> {
    let mut all = Vec::new();
    for dir in MANIFEST_DIRS {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(Path::new(REPO).join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        paths.sort();
        for path in paths {
            for document in yaml_documents(&path) {
                all.push((path.clone(), document));
            }
        }
    }
    all
}

fn is_custom_resource(resource: &Value) -> bool {
    resource["apiVersion"].as_str().is_some_and(|v| {
        v.starts_with("extensions.istio.io/")
            || v.starts_with("gateway.envoyproxy.io/")
            || v.starts_with("monitoring.coreos.com/")
    })
}

#[test]
fn every_custom_resource_is_valid_against_its_published_schema() {
    let schemas = crd_schemas();
    let mut kinds = Vec::new();
    for (path, resource) in manifests().iter().filter(|(_, r)| is_custom_resource(r)) {
        let found = problems(&schemas, resource);
        assert!(found.is_empty(), "{}: {found:#?}", path.display());
        kinds.push(resource["kind"].as_str().unwrap().to_owned());
    }
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "EnvoyExtensionPolicy",
            "EnvoyProxy",
            "PodMonitor",
            "PrometheusRule",
            "WasmPlugin"
        ]
    );
}

#[test]
fn the_validation_refuses_what_kubernetes_would() {
    let schemas = crd_schemas();
    let (_, plugin) = manifests()
        .into_iter()
        .find(|(_, r)| r["kind"] == "WasmPlugin")
        .unwrap();
    let mut typo = plugin.clone();
    typo["spec"]["failStrategi"] = Value::from("FAIL_OPEN");
    assert_eq!(
        problems(&schemas, &typo),
        [".spec.failStrategi: unknown field"]
    );
    let mut bad_enum = plugin.clone();
    bad_enum["spec"]["phase"] = Value::from("METRICS");
    let found = problems(&schemas, &bad_enum);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("/spec/phase: "), "{found:?}");
    let mut wrong_type = plugin;
    wrong_type["spec"]["priority"] = Value::from("high");
    assert_eq!(problems(&schemas, &wrong_type).len(), 1);
}

#[test]
fn the_plugin_configurations_load_in_the_filter() {
    let mut checked = 0;
    for (path, resource) in manifests() {
        let config = match resource["kind"].as_str() {
            Some("WasmPlugin") => &resource["spec"]["pluginConfig"],
            Some("EnvoyExtensionPolicy") => &resource["spec"]["wasm"][0]["config"],
            _ => continue,
        };
        let json = serde_json::to_vec(config).unwrap();
        let loaded = veza_observability::config::load(Some(&json));
        assert!(loaded.is_ok(), "{}: {:?}", path.display(), loaded.err());
        checked += 1;
    }
    assert_eq!(checked, 2);
}

#[test]
fn the_stats_tags_they_add_are_the_gateways() {
    let gateway =
        &yaml_documents(&Path::new(REPO).join("envoy/envoy.yaml"))[0]["stats_config"]["stats_tags"];
    assert_eq!(
        gateway.as_array().unwrap().len(),
        veza_observability::stats_tags::LABEL_KEYS.len()
    );
    let mut checked = 0;
    for (path, resource) in manifests() {
        let bootstrap: Value = match resource["kind"].as_str() {
            Some("ConfigMap") => {
                serde_json::from_str(resource["data"]["custom_bootstrap.json"].as_str().unwrap())
                    .unwrap()
            }
            Some("EnvoyProxy") => {
                assert_eq!(resource["spec"]["bootstrap"]["type"], "Merge");
                let value = resource["spec"]["bootstrap"]["value"].as_str().unwrap();
                serde_json::to_value(serde_norway::from_str::<serde_norway::Value>(value).unwrap())
                    .unwrap()
            }
            _ => continue,
        };
        assert_eq!(
            &bootstrap["stats_config"]["stats_tags"],
            gateway,
            "{}",
            path.display()
        );
        checked += 1;
    }
    assert_eq!(checked, 2);
}

#[test]
fn sidecars_are_annotated_for_the_overrides_and_scraping() {
    let (_, patch) = manifests()
        .into_iter()
        .find(|(p, _)| p.ends_with("pod-annotations.yaml"))
        .unwrap();
    let annotations = &patch["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(
        annotations["sidecar.istio.io/bootstrapOverride"],
        "veza-observability-stats-tags"
    );
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], "15020");
    let proxy: serde_norway::Value =
        serde_norway::from_str(annotations["proxy.istio.io/config"].as_str().unwrap()).unwrap();
    let proxy = serde_json::to_value(proxy).unwrap();
    assert_eq!(
        proxy["proxyStatsMatcher"]["inclusionPrefixes"],
        serde_json::json!(["wasmcustom."])
    );
    let values = &yaml_documents(&Path::new(REPO).join("examples/istio/istiod-values.yaml"))[0];
    assert_eq!(
        values["meshConfig"]["defaultConfig"]["proxyStatsMatcher"], proxy["proxyStatsMatcher"],
        "the mesh-wide matcher is the annotation's"
    );
    let (_, config_map) = manifests()
        .into_iter()
        .find(|(_, r)| r["kind"] == "ConfigMap")
        .unwrap();
    assert_eq!(
        config_map["metadata"]["name"],
        "veza-observability-stats-tags"
    );
}

/// The PrometheusRule is the rule files, as `make kube-rules` writes it: one source of truth.
#[test]
fn the_prometheus_rule_is_the_shipped_rule_files() {
    let texts: Vec<String> = kube_rules::SOURCES
        .iter()
        .map(|path| std::fs::read_to_string(Path::new(REPO).join(path)).unwrap())
        .collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let expected = kube_rules::prometheus_rule(&texts).unwrap();
    let committed = std::fs::read_to_string(Path::new(REPO).join(kube_rules::OUTPUT)).unwrap();
    assert!(
        committed == expected,
        "{} is not current: run `make kube-rules`",
        kube_rules::OUTPUT
    );
    let rule = &yaml_documents(&Path::new(REPO).join(kube_rules::OUTPUT))[0];
    let rules: usize = rule["spec"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["rules"].as_array().unwrap().len())
        .sum();
    assert_eq!(rules, 9 + 15, "every recording rule and every alert");
}

/// The PodMonitor scrapes the stats listener's /metrics under the job the rules expect.
#[test]
fn the_pod_monitor_scrapes_the_stats_listener() {
    let monitor =
        &yaml_documents(&Path::new(REPO).join("monitoring/kubernetes/podmonitor.yaml"))[0];
    let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["port"], "stats");
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(endpoint["relabelings"][0]["targetLabel"], "job");
    assert_eq!(endpoint["relabelings"][0]["replacement"], "veza-gateway");
    let envoy = std::fs::read_to_string(Path::new(REPO).join("envoy/envoy.yaml")).unwrap();
    assert!(envoy.contains("  - name: stats\n    address: { socket_address: { address: 127.0.0.1, port_value: 19001 } }"));
}
