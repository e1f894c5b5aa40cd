//! Labels for a host without them: the proxy-wasm ABI has no labels, a metric is one flat name,
//! which Envoy stores as `wasmcustom.<name>`. Labels are encoded Istio-style, `key=.=value;.;`
//! pairs followed by the metric name, and Envoy turns each pair back into a Prometheus label
//! with one `stats_config.stats_tags` regex per key: [`stats_tag_regex`] gives them, and every
//! Envoy config in this repository ships exactly those (a test checks it).

use veza_observability_core::host::Labels;
use veza_observability_core::metrics::names;

/// Every label key, in the order the stats_tags are listed in the Envoy configs.
pub const LABEL_KEYS: [&str; 13] = [
    names::LABEL_METHOD,
    names::LABEL_ENDPOINT,
    names::LABEL_STATUS,
    names::LABEL_SERVICE,
    names::LABEL_LE,
    names::LABEL_OPERATION,
    names::LABEL_DEPENDENCY,
    names::LABEL_DIRECTION,
    names::LABEL_MESSAGE_TYPE,
    names::LABEL_TYPE,
    names::LABEL_STREAM_ID,
    names::LABEL_REASON,
    names::LABEL_REQUIRED,
];

const PAIR_SEPARATOR: &str = "=.=";
const PAIR_TERMINATOR: &str = ";.;";

/// The `stats_tags` regex that extracts label `key` (first group removed, second the value).
/// It is anchored on the separator before the key (`wasmcustom.` or `;.;`), so a key that
/// ends another (`type`, `message_type`) never matches inside it.
pub fn stats_tag_regex(key: &str) -> String {
    format!(r"[.;]({key}=\.=(.*?);\.;)")
}

/// The flat name: encoded labels, then the name (last, so Envoy's suffix-based default tag
/// regexes never see a label value).
pub fn encode(name: &str, labels: &Labels<'_>) -> String {
    let mut encoded = String::with_capacity(
        name.len()
            + labels
                .iter()
                .map(|(k, v)| k.len() + v.len() + PAIR_SEPARATOR.len() + PAIR_TERMINATOR.len())
                .sum::<usize>(),
    );
    for (key, value) in labels {
        encoded.push_str(key);
        encoded.push_str(PAIR_SEPARATOR);
        encoded.push_str(value);
        encoded.push_str(PAIR_TERMINATOR);
    }
    encoded.push_str(name);
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_matches_the_stats_tag_regexes() {
        let name = encode(
            names::HTTP_REQUESTS_TOTAL,
            &[("method", "GET"), ("endpoint", "/api/v1/tracks/:id")],
        );
        assert_eq!(
            name,
            "method=.=GET;.;endpoint=.=/api/v1/tracks/:id;.;http_requests_total"
        );
        assert_eq!(stats_tag_regex("method"), r"[.;](method=\.=(.*?);\.;)");
    }

    #[test]
    fn every_declared_label_has_a_stats_tag() {
        for declared in names::declared([]) {
            for key in &declared.labels {
                assert!(LABEL_KEYS.contains(key), "{}: {key}", declared.name);
            }
        }
    }
}
