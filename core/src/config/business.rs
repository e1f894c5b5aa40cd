//! Business metrics at the edge: counters from request outcomes (`user_logins_total` is a
//! `POST /api/v1/auth/login` answered 2xx) and the distinct-user gauge `active_users`.

use serde::Deserialize;

use crate::config::ConfigError;

use crate::labels::{Method, MethodSet, StatusPattern};
use crate::metrics::names;
use crate::routes::{EndpointId, RouteTable};

const MAX_RULES: usize = 64;
const MAX_COUNTER_NAME_LEN: usize = 128;
const MIN_WINDOW_SECONDS: u32 = 10;
const MAX_WINDOW_SECONDS: u32 = 86_400;

/// One rule: requests with this method, to one of these route templates, answered with one of
/// these statuses, add one to `counter`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusinessRuleConfig {
    /// A Prometheus metric name, label-less, e.g. `user_logins_total`.
    pub counter: String,
    /// `"POST"`, or several: `"POST,PUT"`.
    pub method: String,
    /// Route templates of `services[].routes`, e.g. `"/api/v1/auth/login"`.
    pub endpoints: Vec<String>,
    /// Status classes (`"2xx"`) or exact codes (`"401"`).
    pub status: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActiveUsersConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Where a request's user comes from.
    #[serde(default)]
    pub source: UserSource,
    /// A user counts as active for this long after their last request.
    #[serde(default = "default_window_seconds")]
    pub window_seconds: u32,
}

impl Default for ActiveUsersConfig {
    fn default() -> ActiveUsersConfig {
        ActiveUsersConfig {
            enabled: true,
            source: UserSource::default(),
            window_seconds: default_window_seconds(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum UserSource {
    /// A claim of the bearer token (`Authorization: Bearer`, or the `token` query parameter of
    /// a WebSocket upgrade, as Veza's chat uses), read without verifying the signature.
    Jwt {
        #[serde(default = "default_claim")]
        claim: String,
        #[serde(default = "default_query_parameter")]
        query_parameter: Option<String>,
    },
    /// A header the services or an auth filter in front set, e.g. `x-user-id`.
    Header(String),
}

impl Default for UserSource {
    fn default() -> UserSource {
        UserSource::Jwt {
            claim: default_claim(),
            query_parameter: default_query_parameter(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_window_seconds() -> u32 {
    300
}

fn default_claim() -> String {
    "sub".to_owned()
}

fn default_query_parameter() -> Option<String> {
    Some("token".to_owned())
}

/// The rules for the Veza backend: what the seed's business counters mean at the edge.
pub fn veza_rules() -> Vec<BusinessRuleConfig> {
    let rule = |counter: &str, endpoints: &[&str], status: &[&str]| BusinessRuleConfig {
        counter: counter.to_owned(),
        method: "POST".to_owned(),
        endpoints: endpoints.iter().map(|e| (*e).to_owned()).collect(),
        status: status.iter().map(|s| (*s).to_owned()).collect(),
    };
    vec![
        rule(
            names::USER_REGISTRATIONS_TOTAL,
            &["/api/v1/auth/register", "/api/v1/auth/signup"],
            &["2xx"],
        ),
        rule(names::USER_LOGINS_TOTAL, &["/api/v1/auth/login"], &["2xx"]),
        rule(
            names::USER_LOGINS_FAILED_TOTAL,
            &["/api/v1/auth/login"],
            &["401"],
        ),
        rule(names::TRACKS_UPLOADED_TOTAL, &["/api/v1/tracks"], &["2xx"]),
        rule(
            names::PLAYLISTS_CREATED_TOTAL,
            &["/api/v1/playlists"],
            &["2xx"],
        ),
    ]
}

/// A compiled rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusinessRule {
    pub counter: String,
    pub methods: MethodSet,
    /// Classes as bits 1..=5, exact codes listed.
    status_classes: u8,
    status_codes: Vec<u16>,
}

impl BusinessRule {
    pub fn matches(&self, method: Method, status: Option<u64>) -> bool {
        let Some(code) = status.and_then(|s| u16::try_from(s).ok()) else {
            return false;
        };
        self.methods.contains(method)
            && (100..=599).contains(&code)
            && (self.status_classes & (1 << (code / 100)) != 0 || self.status_codes.contains(&code))
    }
}

#[derive(Debug, Default)]
pub struct BusinessSettings {
    pub rules: Vec<BusinessRule>,
    /// Per endpoint id, the indices of the rules that name it.
    by_endpoint: Vec<Vec<u16>>,
}

impl BusinessSettings {
    /// The rules that name `endpoint`.
    pub fn rules_for(&self, endpoint: EndpointId) -> &[u16] {
        self.by_endpoint
            .get(endpoint as usize)
            .map_or(&[], Vec::as_slice)
    }

    /// Distinct counter names, in rule order.
    pub fn counters(&self) -> Vec<&str> {
        let mut seen: Vec<&str> = Vec::new();
        for rule in &self.rules {
            if !seen.contains(&rule.counter.as_str()) {
                seen.push(&rule.counter);
            }
        }
        seen
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveUsersSettings {
    pub enabled: bool,
    pub source: UserSource,
    pub window_seconds: u32,
}

/// Compiles the rules; errors name the field relative to `business_metrics`.
pub fn compile_rules(
    routes: &RouteTable,
    rules: Vec<BusinessRuleConfig>,
) -> Result<BusinessSettings, ConfigError> {
    if rules.len() > MAX_RULES {
        return Err(ConfigError::at(
            String::new(),
            format!("at most {MAX_RULES} rules (got {})", rules.len()),
        ));
    }
    let mut settings = BusinessSettings {
        rules: Vec::with_capacity(rules.len()),
        by_endpoint: vec![Vec::new(); routes.templates().len()],
    };
    for (index, rule) in rules.into_iter().enumerate() {
        let field = |name: &str| format!("[{index}].{name}");
        check_counter_name(&rule.counter).map_err(|m| ConfigError::at(field("counter"), m))?;
        let methods =
            MethodSet::parse_list(&rule.method).map_err(|m| ConfigError::at(field("method"), m))?;
        if rule.endpoints.is_empty() {
            return Err(ConfigError::at(
                field("endpoints"),
                "must name at least one route template".into(),
            ));
        }
        if rule.status.is_empty() {
            return Err(ConfigError::at(
                field("status"),
                "must name at least one status".into(),
            ));
        }
        let mut status_classes = 0u8;
        let mut status_codes = Vec::new();
        for (i, status) in rule.status.iter().enumerate() {
            match StatusPattern::parse(status) {
                Ok(StatusPattern::Class(class)) => status_classes |= 1 << class,
                Ok(StatusPattern::Code(code)) => status_codes.push(code),
                Err(message) => {
                    return Err(ConfigError::at(format!("[{index}].status[{i}]"), message))
                }
            }
        }
        let rule_index = u16::try_from(index).unwrap_or(u16::MAX);
        for (i, endpoint) in rule.endpoints.iter().enumerate() {
            let mut found = false;
            for (id, template) in routes.templates().iter().enumerate() {
                if template.text == *endpoint {
                    found = true;
                    if let Some(list) = settings.by_endpoint.get_mut(id) {
                        list.push(rule_index);
                    }
                }
            }
            if !found {
                return Err(ConfigError::at(
                    format!("[{index}].endpoints[{i}]"),
                    format!("{endpoint:?} is not a route template of services[].routes"),
                ));
            }
        }
        settings.rules.push(BusinessRule {
            counter: rule.counter,
            methods,
            status_classes,
            status_codes,
        });
    }
    Ok(settings)
}

/// The Veza rules whose templates the route table has (the user may have replaced the routes).
pub fn compile_default_rules(routes: &RouteTable) -> BusinessSettings {
    let rules = veza_rules()
        .into_iter()
        .filter_map(|mut rule| {
            rule.endpoints
                .retain(|e| routes.templates().iter().any(|t| t.text == *e));
            (!rule.endpoints.is_empty()).then_some(rule)
        })
        .collect();
    compile_rules(routes, rules).unwrap_or_default()
}

pub fn compile_active_users(config: ActiveUsersConfig) -> Result<ActiveUsersSettings, ConfigError> {
    if !(MIN_WINDOW_SECONDS..=MAX_WINDOW_SECONDS).contains(&config.window_seconds) {
        return Err(ConfigError::at(
            "window_seconds".into(),
            format!(
                "must be from {MIN_WINDOW_SECONDS} to {MAX_WINDOW_SECONDS} (got {})",
                config.window_seconds
            ),
        ));
    }
    let source = match config.source {
        UserSource::Header(name) => UserSource::Header(
            super::header_name(&name)
                .map_err(|message| ConfigError::at("source.header".to_owned(), message))?,
        ),
        UserSource::Jwt {
            claim,
            query_parameter,
        } => {
            if claim.is_empty() || claim.len() > 64 {
                return Err(ConfigError::at(
                    "source.jwt.claim".into(),
                    "must be 1 to 64 characters".into(),
                ));
            }
            if let Some(parameter) = &query_parameter {
                let valid = !parameter.is_empty()
                    && parameter.len() <= 64
                    && parameter
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if !valid {
                    return Err(ConfigError::at(
                        "source.jwt.query_parameter".into(),
                        format!("{parameter:?} must be 1 to 64 letters, digits, '-' or '_'"),
                    ));
                }
            }
            UserSource::Jwt {
                claim,
                query_parameter,
            }
        }
    };
    Ok(ActiveUsersSettings {
        enabled: config.enabled,
        source,
        window_seconds: config.window_seconds,
    })
}

fn check_counter_name(name: &str) -> Result<(), String> {
    let mut bytes = name.bytes();
    let valid = name.len() <= MAX_COUNTER_NAME_LEN
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid {
        return Err(format!(
            "{name:?} must be a Prometheus metric name: a letter or '_', then letters, digits or '_' (at most {MAX_COUNTER_NAME_LEN})"
        ));
    }
    if names::is_built_in(name) {
        return Err(format!("{name:?} is a metric the filter already emits"));
    }
    Ok(())
}
