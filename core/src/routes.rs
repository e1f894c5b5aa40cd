//! Route table: turns a raw request path into a bounded `endpoint` label.
//!
//! Templates use Gin's syntax, since the Veza backend is a Gin service: `:name` matches one
//! non-empty segment, `*name` (last segment only) matches the rest of the path. A static segment
//! wins over a parameter at the same position (`/api/v1/users/me` beats `/api/v1/users/:id`);
//! when the static branch fails deeper down, matching falls back to the parameter branch.
//! An entry may be limited to methods (`"DELETE /api/v1/shared-resources/:id"`), so two
//! templates with the same shape can carry different parameter names per method.

use std::collections::BTreeMap;
use std::sync::OnceLock;

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

/// The tree templates are added to; [`Matcher`] is what requests are matched against.
#[derive(Debug, Default)]
struct Node {
    statics: BTreeMap<Box<[u8]>, Node>,
    param: Option<Box<Node>>,
    catch_all: Vec<Leaf>,
    leaves: Vec<Leaf>,
}

#[derive(Debug, Clone, Copy)]
struct Leaf {
    methods: MethodSet,
    endpoint: EndpointId,
}

/// A compiled route table. Built once per configuration, shared read-only by every request.
#[derive(Debug, Default)]
pub struct RouteTable {
    root: Node,
    /// The tree in the form requests are matched against, made on first use after a change
    /// ([`RouteTable::prepare`] makes it at configuration time).
    matcher: OnceLock<Matcher>,
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
        self.matcher = OnceLock::new();
        self.templates.push(Template {
            text: template.to_owned(),
            service,
        });
        Ok(endpoint)
    }

    /// Makes the matcher now, so that no request pays for it.
    pub fn prepare(&self) {
        self.matcher();
    }

    fn matcher(&self) -> &Matcher {
        self.matcher.get_or_init(|| Matcher::new(&self.root))
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
        let first = (!rest.is_empty()).then_some(0);
        self.matcher().find(method, rest, first)
    }
}

/// A path's bytes eight at a time. Segments are shorter than a vector register, where
/// `memchr` and `position` look at one byte per step; a word at a time finds a separator in one
/// step for most segments, and the same word is the segment's key in the route tree.
mod words {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;

    /// The eight bytes of `bytes` from `at`, little-endian, zero-padded past its end.
    #[inline]
    pub(super) fn at(bytes: &[u8], at: usize) -> u64 {
        if let Some(eight) = bytes.get(at..).and_then(|rest| rest.first_chunk::<8>()) {
            return u64::from_le_bytes(*eight);
        }
        // Near the end: the last eight bytes, shifted down past the ones before `at`.
        let left = bytes.len().saturating_sub(at);
        if let Some(last) = bytes
            .len()
            .checked_sub(8)
            .and_then(|start| bytes.get(start..)?.first_chunk::<8>())
        {
            return u64::from_le_bytes(*last)
                .checked_shr(8 * (8 - left as u32))
                .unwrap_or(0);
        }
        short(bytes.get(at..).unwrap_or_default())
    }

    /// The word of a path shorter than eight bytes (`/live`, `/ready`): out of line, as the
    /// API's paths are longer.
    #[cold]
    #[inline(never)]
    fn short(bytes: &[u8]) -> u64 {
        let mut word = [0; 8];
        for (to, from) in word.iter_mut().zip(bytes) {
            *to = *from;
        }
        u64::from_le_bytes(word)
    }

    /// The high bit of every byte of `word` equal to `byte`. Exact for the lowest such byte
    /// (the first in the path); a byte above it may be flagged wrongly, which no caller reads.
    #[inline]
    pub(super) fn equal(word: u64, byte: u8) -> u64 {
        let x = word ^ (ONES * u64::from(byte));
        x.wrapping_sub(ONES) & !x & HIGHS
    }

    /// The first byte of `bytes` from `start` that `found` flags in its word. The padding past
    /// the end is NULs, which no caller looks for.
    #[inline]
    pub(super) fn find(
        bytes: &[u8],
        mut start: usize,
        found: impl Fn(u64) -> u64,
    ) -> Option<usize> {
        while start < bytes.len() {
            let flags = found(at(bytes, start));
            if flags != 0 {
                return Some(start + (flags.trailing_zeros() / 8) as usize);
            }
            start += 8;
        }
        None
    }

    /// `word` with only its first `len` bytes (all eight from eight on).
    #[inline]
    pub(super) fn first(word: u64, len: usize) -> u64 {
        if len >= 8 {
            return word;
        }
        word & u64::MAX.checked_shr(64 - 8 * len as u32).unwrap_or(0)
    }
}

/// The segment of `path` (segments joined by `/`) that starts at `at`, its [`head`], and where
/// the next one starts (`None` after the last). Inlined, as is [`Matcher::child`]: as calls,
/// their register saves and returned tuples cost nearly a quarter of the lookup.
#[inline(always)]
fn segment(path: &[u8], at: usize) -> (&[u8], u64, Option<usize>) {
    let word = words::at(path, at);
    let end = match words::equal(word, b'/') {
        0 if path.len() <= at + 8 => None,
        0 => long_segment_end(path, at),
        // A flagged byte is in the path: the padding past its end is NULs.
        flags => Some(at + (flags.trailing_zeros() / 8) as usize),
    };
    let segment = path.get(at..end.unwrap_or(path.len())).unwrap_or_default();
    (
        segment,
        words::first(word, segment.len()),
        end.map(|end| end + 1),
    )
}

/// Where a segment longer than eight bytes ends: out of line, since the walk's code is cold
/// at each request and most segments end in their first word.
#[inline(never)]
fn long_segment_end(path: &[u8], at: usize) -> Option<usize> {
    words::find(path, at + 8, |word| words::equal(word, b'/'))
}

/// The route tree laid out for matching: every node, edge and leaf in one array each, a static
/// segment's first eight bytes in its edge. A lookup reads a few adjacent cache lines where a
/// tree of maps reads one or more allocations per segment; on a gateway the table is cold at
/// every request, and those misses were most of its cost. A node's static children are found
/// through a small hash table of its own: one probe for most segments, however wide the node
/// (the API version's node has dozens of children).
#[derive(Debug, Default)]
struct Matcher {
    nodes: Vec<FlatNode>,
    /// Each node's static children.
    edges: Vec<Edge>,
    /// Each node's hash table: indexes into `edges`, [`Matcher::NONE`] for an empty slot.
    slots: Vec<u32>,
    /// For each edge, where the bytes of its segment after the eighth start in `tails`.
    tail_at: Vec<u32>,
    tails: Vec<u8>,
    /// Each node's leaves, then its catch-all leaves.
    leaves: Vec<Leaf>,
}

#[derive(Debug, Default, Clone, Copy)]
struct FlatNode {
    /// Where the node's hash table starts in `slots`.
    slots: u32,
    /// Its size less one (a power of two, at least twice the node's static children, so a
    /// probe always ends at an empty slot); 0 when the node has none.
    slot_mask: u32,
    /// The parameter child, [`Matcher::NONE`] if none.
    param: u32,
    leaves: u32,
    leaf_count: u16,
    catch_all_count: u16,
}

#[derive(Debug, Clone, Copy)]
struct Edge {
    /// The segment's [`head`]: with its length, what a probe compares first.
    head: u64,
    len: u32,
    child: u32,
}

/// A segment's first eight bytes as one word (little-endian, zero-padded): its key in its
/// node's hash table, with its length.
fn head(segment: &[u8]) -> u64 {
    words::first(words::at(segment, 0), segment.len())
}

/// Where a segment's probe starts: its head and length mixed by a multiply (Fibonacci
/// hashing), the table's bits taken from the top. The tables are made from the configuration,
/// so no request can lengthen a probe.
fn slot_of(head: u64, len: usize, mask: u32) -> usize {
    let mixed = (head ^ len as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed >> 32) as usize & mask as usize
}

/// An index into one of the matcher's arrays. Tables are bounded by their templates (at most
/// 32 segments of 256 bytes each) far below `u32::MAX` entries.
fn index(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(Matcher::NONE)
}

impl Matcher {
    const ROOT: u32 = 0;
    const NONE: u32 = u32::MAX;

    fn new(root: &Node) -> Matcher {
        let mut matcher = Matcher::default();
        matcher.nodes.push(FlatNode::default());
        matcher.fill(Matcher::ROOT, root);
        matcher
    }

    /// Lays out `node` at `at` (already reserved), then its children.
    fn fill(&mut self, at: u32, node: &Node) {
        let slots = index(self.slots.len());
        let slot_mask = match node.statics.len() {
            0 => 0,
            n => index((2 * n).next_power_of_two() - 1),
        };
        if slot_mask != 0 {
            self.slots
                .resize(self.slots.len() + slot_mask as usize + 1, Matcher::NONE);
        }
        let mut children = Vec::with_capacity(node.statics.len() + 1);
        for (segment, child) in &node.statics {
            let child_at = index(self.nodes.len());
            let edge_at = index(self.edges.len());
            self.nodes.push(FlatNode::default());
            let edge = Edge {
                head: head(segment),
                len: index(segment.len()),
                child: child_at,
            };
            self.edges.push(edge);
            self.tail_at.push(index(self.tails.len()));
            self.tails
                .extend_from_slice(segment.get(8..).unwrap_or_default());
            // Linear probing from the segment's slot; the table is at most half full.
            let mut at = slot_of(edge.head, segment.len(), slot_mask);
            while let Some(slot) = self.slots.get_mut(slots as usize + at) {
                if *slot == Matcher::NONE {
                    *slot = edge_at;
                    break;
                }
                at = (at + 1) & slot_mask as usize;
            }
            children.push((child_at, child));
        }
        let param = match &node.param {
            Some(child) => {
                let child_at = index(self.nodes.len());
                self.nodes.push(FlatNode::default());
                children.push((child_at, &**child));
                child_at
            }
            None => Matcher::NONE,
        };
        let leaves = index(self.leaves.len());
        self.leaves.extend_from_slice(&node.leaves);
        self.leaves.extend_from_slice(&node.catch_all);
        if let Some(slot) = self.nodes.get_mut(at as usize) {
            *slot = FlatNode {
                slots,
                slot_mask,
                param,
                leaves,
                leaf_count: u16::try_from(node.leaves.len()).unwrap_or(u16::MAX),
                catch_all_count: u16::try_from(node.catch_all.len()).unwrap_or(u16::MAX),
            };
        }
        for (child_at, child) in children {
            self.fill(child_at, child);
        }
    }

    /// The template matching the segments of `path` from `at` (`None`: no segment left),
    /// split as they are reached (no buffer, and no bound on their number: matching stops at
    /// the tree's depth). A static segment is tried before the parameter, and a failure deeper down falls
    /// back to it, then to a catch-all.
    fn find(&self, method: Method, path: &[u8], at: Option<usize>) -> Option<EndpointId> {
        self.descend(method, path, at)
            .or_else(|| self.search(Matcher::ROOT, method, path, at))
    }

    /// The first choice at every segment (the static child, else the parameter), in a loop:
    /// when it ends in a match, that is the one [`Matcher::search`] finds first, since the
    /// search takes the same choices first. Most paths end here, without the search's
    /// recursion.
    fn descend(&self, method: Method, path: &[u8], mut at: Option<usize>) -> Option<EndpointId> {
        let mut node = self.nodes.get(Matcher::ROOT as usize)?;
        loop {
            let (own, catch_all) = self.leaves(node);
            let Some(start) = at else {
                return pick(own, method).or_else(|| pick(catch_all, method));
            };
            let (segment, head, next) = segment(path, start);
            let child = match self.child(node, segment, head) {
                Some(child) => child,
                None if node.param != Matcher::NONE && !segment.is_empty() => node.param,
                None => return pick(catch_all, method),
            };
            node = self.nodes.get(child as usize)?;
            at = next;
        }
    }

    /// Every choice, depth first, below node `node_at`, for the segments from `at`.
    fn search(
        &self,
        node_at: u32,
        method: Method,
        path: &[u8],
        at: Option<usize>,
    ) -> Option<EndpointId> {
        let node = self.nodes.get(node_at as usize)?;
        let (own, catch_all) = self.leaves(node);
        let Some(start) = at else {
            return pick(own, method).or_else(|| pick(catch_all, method));
        };
        let (segment, head, next) = segment(path, start);
        if let Some(child) = self.child(node, segment, head) {
            if let Some(found) = self.search(child, method, path, next) {
                return Some(found);
            }
        }
        if node.param != Matcher::NONE && !segment.is_empty() {
            if let Some(found) = self.search(node.param, method, path, next) {
                return Some(found);
            }
        }
        pick(catch_all, method)
    }

    /// A node's own leaves and its catch-all leaves.
    fn leaves(&self, node: &FlatNode) -> (&[Leaf], &[Leaf]) {
        let leaves = self.leaves.get(node.leaves as usize..).unwrap_or_default();
        let (own, rest) = leaves.split_at(usize::from(node.leaf_count).min(leaves.len()));
        let catch_all = rest
            .get(..usize::from(node.catch_all_count))
            .unwrap_or_default();
        (own, catch_all)
    }

    /// The static child of `node` for `segment` (whose [`head`] is `head`): its node's hash
    /// table probed from the segment's slot to the first empty one.
    #[inline(always)]
    fn child(&self, node: &FlatNode, segment: &[u8], head: u64) -> Option<u32> {
        if node.slot_mask == 0 {
            return None;
        }
        let table = self
            .slots
            .get(node.slots as usize..=node.slots as usize + node.slot_mask as usize)?;
        let len = segment.len();
        let mut at = slot_of(head, len, node.slot_mask);
        loop {
            let edge_at = *table.get(at)?;
            if edge_at == Matcher::NONE {
                return None;
            }
            let edge = self.edges.get(edge_at as usize)?;
            if edge.head == head
                && edge.len as usize == len
                && (len <= 8 || self.tail(edge_at as usize, edge) == segment.get(8..)?)
            {
                return Some(edge.child);
            }
            at = (at + 1) & node.slot_mask as usize;
        }
    }

    /// The bytes after the eighth of edge number `at`'s segment.
    fn tail(&self, at: usize, edge: &Edge) -> &[u8] {
        let long = (edge.len as usize).saturating_sub(8);
        if long == 0 {
            return &[];
        }
        let start = self.tail_at.get(at).copied().unwrap_or(0) as usize;
        self.tails.get(start..start + long).unwrap_or_default()
    }
}

fn pick(leaves: &[Leaf], method: Method) -> Option<EndpointId> {
    leaves
        .iter()
        .find(|leaf| leaf.methods.contains(method))
        .map(|leaf| leaf.endpoint)
}

/// The path without its query string or fragment.
pub fn strip_query(raw_path: &[u8]) -> &[u8] {
    match words::find(raw_path, 0, |word| {
        words::equal(word, b'?') | words::equal(word, b'#')
    }) {
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
