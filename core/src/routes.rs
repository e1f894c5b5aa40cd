//! Route table: turns a raw request path into a bounded `endpoint` label.
//!
//! Templates use Gin's syntax, since the Veza backend is a Gin service: `:name` matches one
//! non-empty segment, `*name` (last segment only) matches the rest of the path. A static segment
//! wins over a parameter at the same position (`/api/v1/users/me` beats `/api/v1/users/:id`);
//! when the static branch fails deeper down, matching falls back to the parameter branch.
//! An entry may be limited to methods (`"DELETE /api/v1/shared-resources/:id"`), so two
//! templates with the same shape can carry different parameter names per method.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::labels::{Method, MethodSet};

/// Index of a template in [`RouteTable::templates`].
pub type EndpointId = u32;
/// Index of a service in [`RouteTable::services`].
pub type ServiceId = u8;

/// Longest template accepted, in bytes: templates become label values.
pub const MAX_TEMPLATE_LEN: usize = 256;
/// Most segments in a template; it also bounds the matcher's recursion depth.
pub const MAX_TEMPLATE_SEGMENTS: usize = 32;
/// Services are label values indexed by `u8`; one value is kept for "other".
pub const MAX_SERVICES: usize = 64;

/// What a path resolved to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteMatch {
    /// `None` when no template matched: the endpoint label is `other`.
    pub endpoint: Option<EndpointId>,
    /// `None` when neither a template nor a service prefix matched: the service label is `other`.
    pub service: Option<ServiceId>,
}

impl RouteMatch {
    /// Nothing matched: endpoint and service are `other`.
    pub const NONE: RouteMatch = RouteMatch {
        endpoint: None,
        service: None,
    };
}

#[derive(Debug)]
pub struct Template {
    pub text: String,
    pub service: ServiceId,
}

#[derive(Debug, Default)]
struct Node {
    statics: HashMap<Box<[u8]>, Node, BuildHasherDefault<SegmentHasher>>,
    param: Option<Box<Node>>,
    catch_all: Vec<Leaf>,
    leaves: Vec<Leaf>,
}

#[derive(Debug, Clone, Copy)]
struct Leaf {
    methods: MethodSet,
    endpoint: EndpointId,
}

/// FNV-1a over a path segment. The keys are the configuration's own static segments, so a
/// request cannot grow a bucket (what SipHash's keyed hashing protects against), and SipHash
/// was a sixth of the filter's own instructions per request.
#[derive(Default)]
struct SegmentHasher(u64);

impl Hasher for SegmentHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut hash = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &byte in bytes {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = hash;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A compiled route table. Built once per configuration, shared read-only by every request.
#[derive(Debug, Default)]
pub struct RouteTable {
    root: Node,
    templates: Vec<Template>,
    services: Vec<String>,
    /// (prefix, service), longest prefix first.
    prefixes: Vec<(Box<[u8]>, ServiceId)>,
}

impl RouteTable {
    pub fn templates(&self) -> &[Template] {
        &self.templates
    }

    pub fn services(&self) -> &[String] {
        &self.services
    }

    /// The id of the service with this label.
    #[cfg(test)]
    pub fn service_id(&self, name: &str) -> Option<ServiceId> {
        let index = self.services.iter().position(|s| s == name)?;
        ServiceId::try_from(index).ok()
    }

    /// The label text of a template.
    pub fn template_text(&self, endpoint: EndpointId) -> Option<&str> {
        self.templates
            .get(endpoint as usize)
            .map(|t| t.text.as_str())
    }

    pub fn service_name(&self, service: ServiceId) -> Option<&str> {
        self.services.get(service as usize).map(String::as_str)
    }

    /// Adds a service and returns its id.
    pub fn add_service(&mut self, name: &str) -> Result<ServiceId, String> {
        if self.services.len() >= MAX_SERVICES {
            return Err(format!("at most {MAX_SERVICES} services are supported"));
        }
        if self.services.iter().any(|s| s == name) {
            return Err(format!("service {name:?} is defined twice"));
        }
        let id = ServiceId::try_from(self.services.len())
            .map_err(|_| format!("at most {MAX_SERVICES} services are supported"))?;
        self.services.push(name.to_owned());
        Ok(id)
    }

    /// Declares that unmatched paths starting with `prefix` belong to `service`.
    pub fn add_prefix(&mut self, prefix: &str, service: ServiceId) -> Result<(), String> {
        if !prefix.starts_with('/') {
            return Err(format!("{prefix:?} must start with '/'"));
        }
        if self.prefixes.iter().any(|(p, _)| **p == *prefix.as_bytes()) {
            return Err(format!("prefix {prefix:?} is claimed twice"));
        }
        self.prefixes.push((prefix.as_bytes().into(), service));
        self.prefixes
            .sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Ok(())
    }

    /// Adds a route entry: `"/path/:param"` or `"GET,PUT /path/:param"`; its endpoint id.
    pub fn add_route(&mut self, entry: &str, service: ServiceId) -> Result<EndpointId, String> {
        let (methods, template) = split_methods(entry)?;
        let segments = parse_template(template)?;
        let endpoint = EndpointId::try_from(self.templates.len())
            .map_err(|_| "too many route templates".to_owned())?;

        let mut node = &mut self.root;
        let mut catch_all = false;
        for segment in &segments {
            node = match segment {
                Segment::Static(text) => node.statics.entry(text.as_bytes().into()).or_default(),
                Segment::Param => node.param.get_or_insert_with(Box::default),
                Segment::CatchAll => {
                    catch_all = true;
                    break;
                }
            };
        }
        let leaves = if catch_all {
            &mut node.catch_all
        } else {
            &mut node.leaves
        };
        if let Some(existing) = leaves.iter().find(|l| l.methods.overlaps(methods)) {
            let other = self
                .templates
                .get(existing.endpoint as usize)
                .map_or("", |t| t.text.as_str());
            return Err(format!(
                "{template:?} matches the same paths and methods as {other:?}"
            ));
        }
        leaves.push(Leaf { methods, endpoint });
        self.templates.push(Template {
            text: template.to_owned(),
            service,
        });
        Ok(endpoint)
    }

    /// Resolves a raw `:path` (query string and fragment included) for a method.
    pub fn resolve(&self, method: Method, raw_path: &[u8]) -> RouteMatch {
        let path = strip_query(raw_path);
        let endpoint = self.match_template(method, path);
        let service = match endpoint {
            Some(id) => self.templates.get(id as usize).map(|t| t.service),
            None => self
                .prefixes
                .iter()
                .find(|(prefix, _)| path.starts_with(prefix))
                .map(|(_, service)| *service),
        };
        RouteMatch { endpoint, service }
    }

    fn match_template(&self, method: Method, path: &[u8]) -> Option<EndpointId> {
        let rest = path.strip_prefix(b"/")?;
        // One trailing slash is ignored: Gin redirects it to the route without it.
        let rest = rest.strip_suffix(b"/").unwrap_or(rest);
        let mut segments: [&[u8]; MAX_TEMPLATE_SEGMENTS] = [&[]; MAX_TEMPLATE_SEGMENTS];
        let mut count = 0;
        if !rest.is_empty() {
            for segment in rest.split(|&b| b == b'/') {
                // Deeper than any template: only a catch-all could match; keep the remainder.
                let Some(slot) = segments.get_mut(count) else {
                    return self.match_deep(method, path);
                };
                *slot = segment;
                count += 1;
            }
        }
        let segments = segments.get(..count)?;
        match_node(&self.root, method, segments)
    }

    /// Paths with more segments than the matcher's fixed buffer: only catch-alls can match.
    fn match_deep(&self, method: Method, path: &[u8]) -> Option<EndpointId> {
        let rest = path.strip_prefix(b"/")?;
        let segments: Vec<&[u8]> = rest.split(|&b| b == b'/').collect();
        match_node(&self.root, method, &segments)
    }
}

fn match_node(node: &Node, method: Method, segments: &[&[u8]]) -> Option<EndpointId> {
    let Some((first, rest)) = segments.split_first() else {
        return pick(&node.leaves, method).or_else(|| pick(&node.catch_all, method));
    };
    if let Some(child) = node.statics.get(*first) {
        if let Some(found) = match_node(child, method, rest) {
            return Some(found);
        }
    }
    if let Some(child) = &node.param {
        if !first.is_empty() {
            if let Some(found) = match_node(child, method, rest) {
                return Some(found);
            }
        }
    }
    pick(&node.catch_all, method)
}

fn pick(leaves: &[Leaf], method: Method) -> Option<EndpointId> {
    leaves
        .iter()
        .find(|leaf| leaf.methods.contains(method))
        .map(|leaf| leaf.endpoint)
}

/// The path without its query string or fragment.
pub fn strip_query(raw_path: &[u8]) -> &[u8] {
    match raw_path.iter().position(|&b| b == b'?' || b == b'#') {
        Some(end) => raw_path.get(..end).unwrap_or(raw_path),
        None => raw_path,
    }
}

enum Segment<'a> {
    Static(&'a str),
    Param,
    CatchAll,
}

fn split_methods(entry: &str) -> Result<(MethodSet, &str), String> {
    let entry = entry.trim();
    match entry.split_once(' ') {
        None => Ok((MethodSet::ANY, entry)),
        Some((methods, template)) => Ok((MethodSet::parse_list(methods)?, template.trim())),
    }
}

fn parse_template(template: &str) -> Result<Vec<Segment<'_>>, String> {
    if !template.starts_with('/') {
        return Err(format!("template {template:?} must start with '/'"));
    }
    if template.len() > MAX_TEMPLATE_LEN {
        return Err(format!(
            "template {template:?} is longer than {MAX_TEMPLATE_LEN} bytes"
        ));
    }
    if let Some(bad) = template.chars().find(|&c| !is_template_char(c)) {
        return Err(format!(
            "template {template:?} contains {bad:?}; allowed are letters, digits and -._~!$&'()*+,:@/%"
        ));
    }
    let body = template.get(1..).unwrap_or_default();
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let raw: Vec<&str> = body.split('/').collect();
    if raw.len() > MAX_TEMPLATE_SEGMENTS {
        return Err(format!(
            "template {template:?} has more than {MAX_TEMPLATE_SEGMENTS} segments"
        ));
    }
    let last = raw.len() - 1;
    raw.iter()
        .enumerate()
        .map(|(index, segment)| {
            let position = index + 1;
            if segment.is_empty() {
                return Err(format!(
                    "template {template:?} has an empty segment at position {position}"
                ));
            }
            if let Some(name) = segment.strip_prefix(':') {
                check_param_name(template, position, name)?;
                Ok(Segment::Param)
            } else if let Some(name) = segment.strip_prefix('*') {
                check_param_name(template, position, name)?;
                if index != last {
                    return Err(format!(
                        "template {template:?}: catch-all '*{name}' must be the last segment"
                    ));
                }
                Ok(Segment::CatchAll)
            } else {
                Ok(Segment::Static(segment))
            }
        })
        .collect()
}

fn check_param_name(template: &str, position: usize, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!(
            "template {template:?}: parameter at segment {position} has no name"
        ));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!(
            "template {template:?}: parameter name {name:?} may use only letters, digits and '_'"
        ));
    }
    Ok(())
}

/// RFC 3986 path characters, minus `;` and `=` (the label encoding's separators).
fn is_template_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()*+,:@/%".contains(c)
}

#[cfg(test)]
mod tests;
