//! What happens to the YAML tree between parsing and decoding: override files are merged
//! (`-f base.yaml -f override.yaml`), services outside the active profiles are dropped, and
//! `replicas: N` services become N services `name-1..N`.
//!
//! Working on the spanned tree keeps every value's own file, line and column, so diagnostics and
//! `config show --origins` still point at the file that set it.

use std::collections::{BTreeMap, BTreeSet};

use crate::diagnostic::{Code, Diagnostic, Severity};
use crate::node::{Node, Value};
use crate::template::is_service_name;

/// Lists that an override file extends instead of replacing, as Compose does; every other list
/// (`command`, `args`, health-check `command`...) is replaced.
const APPENDED: &[&str] = &[
    "ports",
    "volumes",
    "env_file",
    "dependencies",
    "profiles",
    "env",
    "depends_on",
];

/// Most instances of one service (hostile input must not make millions of services).
pub const MAX_REPLICAS: u32 = 1_000;

fn key_text(node: &Node) -> Option<String> {
    node.value.scalar_text()
}

/// Whether a key node is the scalar `name`, without copying it.
fn key_is(node: &Node, name: &str) -> bool {
    node.value.key_str().as_deref() == Some(name)
}

/// Below this many entries a mapping's keys are scanned rather than indexed.
const INDEX_FROM: usize = 16;

/// Merges `over` into `base` by Compose's rules: mappings deep-merged, the [`APPENDED`] lists
/// extended (without repeating an equal entry), everything else replaced by the later file.
pub(crate) fn merge(base: &mut Node, over: Node, key: &str) {
    match (&mut base.value, over.value) {
        (Value::Map(entries), Value::Map(more)) => {
            // Override files mostly list keys in the base's order: the entry after the last one
            // matched is tried first. Else a small mapping is scanned, and a large one (a
            // services map may hold thousands) indexed once.
            let mut index: Option<rustc_hash::FxHashMap<String, usize>> = None;
            let mut next = 0;
            for (k, v) in more {
                let name = k.value.key_str();
                let name = name.as_deref().unwrap_or_default();
                let found = if entries.get(next).is_some_and(|(bk, _)| key_is(bk, name)) {
                    Some(next)
                } else if entries.len() < INDEX_FROM {
                    entries.iter().position(|(bk, _)| key_is(bk, name))
                } else {
                    index
                        .get_or_insert_with(|| {
                            entries
                                .iter()
                                .enumerate()
                                .filter_map(|(i, (k, _))| Some((key_text(k)?, i)))
                                .collect()
                        })
                        .get(name)
                        .copied()
                };
                match found {
                    Some(i) => {
                        next = i + 1;
                        let Some((base_key, existing)) = entries.get_mut(i) else {
                            continue;
                        };
                        let over_pos = v.pos;
                        merge(existing, v, name);
                        // A replaced value is the override file's, key included.
                        if existing.pos == over_pos {
                            *base_key = k;
                        }
                    }
                    None => {
                        if let Some(index) = &mut index {
                            index.insert(name.to_owned(), entries.len());
                        }
                        entries.push((k, v));
                    }
                }
            }
        }
        (Value::Seq(items), Value::Seq(more)) if APPENDED.contains(&key) => {
            for item in more {
                if !items.iter().any(|i| i.value == item.value) {
                    items.push(item);
                }
            }
        }
        (_, value) => {
            *base = Node {
                value,
                pos: over.pos,
            }
        }
    }
}

fn get<'n>(node: &'n Node, key: &str) -> Option<&'n Node> {
    match &node.value {
        Value::Map(entries) => entries.iter().find(|(k, _)| key_is(k, key)).map(|(_, v)| v),
        _ => None,
    }
}

fn services_mut(root: &mut Node) -> Option<&mut Vec<(Node, Node)>> {
    let Value::Map(entries) = &mut root.value else {
        return None;
    };
    let (_, services) = entries.iter_mut().find(|(k, _)| key_is(k, "services"))?;
    match &mut services.value {
        Value::Map(s) => Some(s),
        _ => None,
    }
}

/// The profiles a service declares, when written as a list of strings.
fn profiles_of(service: &Node) -> Vec<String> {
    match get(service, "profiles").map(|n| &n.value) {
        Some(Value::Seq(items)) => items.iter().filter_map(|i| i.value.scalar_text()).collect(),
        Some(Value::Str(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// Drops the services whose `profiles:` names none of `active` (`*` activates all). Services
/// without `profiles:` always stay.
pub(crate) fn apply_profiles(root: &mut Node, active: &[String]) {
    if active.iter().any(|p| p == "*") {
        return;
    }
    if let Some(services) = services_mut(root) {
        services.retain(|(_, service)| {
            let profiles = profiles_of(service);
            profiles.is_empty() || profiles.iter().any(|p| active.contains(p))
        });
    }
}

/// The services that `replicas:` (or an override from `harness scale`) expands, with their count.
fn replica_counts(
    root: &Node,
    overrides: &BTreeMap<String, u32>,
    diags: &mut Vec<Diagnostic>,
    file_of: &dyn Fn(u16) -> std::path::PathBuf,
) -> BTreeMap<String, u32> {
    let mut counts = BTreeMap::new();
    let Some(Value::Map(services)) = get(root, "services").map(|n| &n.value) else {
        return counts;
    };
    for (k, service) in services {
        let Some(name) = key_text(k) else { continue };
        if let Some(n) = overrides.get(&name) {
            counts.insert(name, (*n).min(MAX_REPLICAS));
            continue;
        }
        let Some(node) = get(service, "replicas") else {
            continue;
        };
        let count = match &node.value {
            Value::Int(i) => u32::try_from(*i).ok(),
            Value::Str(s) => s.trim().parse().ok(),
            _ => None,
        };
        match count {
            Some(n) if n <= MAX_REPLICAS => {
                counts.insert(name, n);
            }
            Some(n) => diags.push(Diagnostic::new(
                Severity::Error,
                Code::InvalidValue,
                &file_of(node.pos.file),
                Some(node.pos),
                format!("services.{name}.replicas"),
                format!(
                    "`replicas: {n}` is more than the {MAX_REPLICAS} instances a service may have"
                ),
            )),
            None => diags.push(
                Diagnostic::new(
                    Severity::Error,
                    Code::InvalidValue,
                    &file_of(node.pos.file),
                    Some(node.pos),
                    format!("services.{name}.replicas"),
                    format!(
                        "`replicas` must be a whole number, found {}",
                        node.value.kind_name()
                    ),
                )
                .with_help("e.g. `replicas: 3` starts name-1, name-2 and name-3"),
            ),
        }
    }
    for name in overrides.keys() {
        if !services
            .iter()
            .any(|(k, _)| k.value.key_str().as_deref() == Some(name))
        {
            diags.push(Diagnostic::new(
                Severity::Error,
                Code::UnknownService,
                &file_of(0),
                None,
                format!("services.{name}"),
                format!("cannot scale `{name}`: there is no such service"),
            ));
        }
    }
    counts
}

pub(crate) fn instance_name(service: &str, index: u32) -> String {
    format!("{service}-{index}")
}

/// Expands replicated services into `name-1..N` and rewrites what refers to them:
/// `${name.ip}`, `${name.port}`... mean the first instance (inside an instance: itself),
/// `${name.endpoints}` the comma-separated `ip:port` of every instance, and a dependency on
/// `name` a dependency on every instance. Ports given as a range (`"8080-8082:80"`) give each
/// instance the next port of the range; port `0` picks a free local port.
pub(crate) fn expand_replicas(
    root: &mut Node,
    overrides: &BTreeMap<String, u32>,
    file_of: &dyn Fn(u16) -> std::path::PathBuf,
) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    let mut counts = replica_counts(root, overrides, &mut diags, file_of);
    short_port_ranges(root, &mut counts, &mut diags, file_of);
    let Some(services) = services_mut(root) else {
        return diags;
    };
    let existing: BTreeSet<String> = services.iter().filter_map(|(k, _)| key_text(k)).collect();
    let mut expanded = Vec::with_capacity(services.len());
    for (key, service) in std::mem::take(services) {
        let Some(name) = key_text(&key) else {
            expanded.push((key, service));
            continue;
        };
        let Some(&count) = counts.get(&name) else {
            let mut service = service;
            remove_key(&mut service, "replicas");
            rewrite_service(&mut service, &name, None, &counts, &mut diags, file_of);
            expanded.push((key, service));
            continue;
        };
        for index in 1..=count {
            let instance = instance_name(&name, index);
            if existing.contains(&instance) {
                diags.push(Diagnostic::new(
                    Severity::Error,
                    Code::InvalidValue,
                    &file_of(key.pos.file),
                    Some(key.pos),
                    format!("services.{name}.replicas"),
                    format!(
                        "replica `{instance}` of `{name}` would clash with the service of that name"
                    ),
                ));
                continue;
            }
            let mut copy = service.clone();
            remove_key(&mut copy, "replicas");
            rewrite_service(&mut copy, &name, Some(index), &counts, &mut diags, file_of);
            expanded.push((
                Node {
                    value: Value::Str(instance),
                    pos: key.pos,
                },
                copy,
            ));
        }
    }
    *services = expanded;
    diags
}

fn remove_key(node: &mut Node, key: &str) {
    if let Value::Map(entries) = &mut node.value {
        entries.retain(|(k, _)| k.value.key_str().as_deref() != Some(key));
    }
}

/// Rewrites one service (instance `index` of `own` when replicated).
fn rewrite_service(
    service: &mut Node,
    own: &str,
    index: Option<u32>,
    counts: &BTreeMap<String, u32>,
    diags: &mut Vec<Diagnostic>,
    file_of: &dyn Fn(u16) -> std::path::PathBuf,
) {
    // Port 0 is a free port of this machine: meaningless for a service on an SSH host.
    let remote = get(service, "host")
        .and_then(|h| h.value.scalar_text())
        .is_some_and(|h| h != "local" && h != "localhost");
    let Value::Map(entries) = &mut service.value else {
        return;
    };
    for (k, v) in entries.iter_mut() {
        match k.value.key_str().as_deref() {
            Some("dependencies" | "depends_on") => expand_dependencies(v, counts),
            Some("ports") => {
                if let Value::Seq(ports) = &mut v.value {
                    for port in ports {
                        // Left for the decoder to refuse, with the reason.
                        let result = if remote && has_zero_port(port) {
                            Ok(())
                        } else {
                            instance_port(port, index.unwrap_or(1) - 1)
                        };
                        if let Err(message) = result {
                            diags.push(Diagnostic::new(
                                Severity::Error,
                                Code::InvalidValue,
                                &file_of(port.pos.file),
                                Some(port.pos),
                                format!("services.{own}.ports"),
                                message,
                            ));
                        }
                    }
                }
            }
            _ => {}
        }
        rewrite_strings(v, own, index, counts);
    }
}

/// A dependency on a replicated service is one on each of its instances.
fn expand_dependencies(node: &mut Node, counts: &BTreeMap<String, u32>) {
    if counts.is_empty() {
        return;
    }
    let instances = |name: &str| -> Option<Vec<String>> {
        counts
            .get(name)
            .map(|n| (1..=*n).map(|i| instance_name(name, i)).collect())
    };
    match &mut node.value {
        Value::Seq(items) => {
            let mut out = Vec::new();
            for item in std::mem::take(items) {
                match item.value.scalar_text().as_deref().and_then(instances) {
                    Some(names) => out.extend(names.into_iter().map(|n| Node {
                        value: Value::Str(n),
                        pos: item.pos,
                    })),
                    None => out.push(item),
                }
            }
            *items = out;
        }
        Value::Map(entries) => {
            let mut out = Vec::new();
            for (k, v) in std::mem::take(entries) {
                match k.value.key_str().as_deref().and_then(instances) {
                    Some(names) => out.extend(names.into_iter().map(|n| {
                        (
                            Node {
                                value: Value::Str(n),
                                pos: k.pos,
                            },
                            v.clone(),
                        )
                    })),
                    None => out.push((k, v)),
                }
            }
            *entries = out;
        }
        _ => {}
    }
}

/// A port range too short for the count (`"18501-18503:80"` with 5 instances) is one error, at
/// the range: the count is then cut to the range's size, so that the instances beyond it do not
/// add follow-on errors (`is not a port`, `web-4 declares no ports`) and the load still fails.
fn short_port_ranges(
    root: &Node,
    counts: &mut BTreeMap<String, u32>,
    diags: &mut Vec<Diagnostic>,
    file_of: &dyn Fn(u16) -> std::path::PathBuf,
) {
    let Some(Value::Map(services)) = get(root, "services").map(|n| &n.value) else {
        return;
    };
    for (k, service) in services {
        let Some(name) = key_text(k) else { continue };
        let Some(count) = counts.get_mut(&name) else {
            continue;
        };
        let Some(Value::Seq(ports)) = get(service, "ports").map(|n| &n.value) else {
            continue;
        };
        for port in ports {
            let mut ranges = Vec::new();
            port_ranges(port, &mut ranges);
            for (low, high) in ranges {
                let size = high.min(u32::from(u16::MAX)).saturating_sub(low) + 1;
                if high < low || size >= *count {
                    continue;
                }
                diags.push(Diagnostic::new(
                    Severity::Error,
                    Code::InvalidValue,
                    &file_of(port.pos.file),
                    Some(port.pos),
                    format!("services.{name}.ports"),
                    format!(
                        "the port range {low}-{high} has no port for instance {}: its {size} \
                         ports are fewer than the {} instances of `{name}`",
                        size + 1,
                        *count
                    ),
                ));
                *count = size;
            }
        }
    }
}

/// The `low-high` ranges written in one `ports:` entry (published and container side).
fn port_ranges(port: &Node, out: &mut Vec<(u32, u32)>) {
    match &port.value {
        Value::Str(text) => {
            for part in text.split(':') {
                if let Some((low, high)) = part.trim().split_once('-')
                    && let (Ok(low), Ok(high)) = (low.trim().parse(), high.trim().parse())
                {
                    out.push((low, high));
                }
            }
        }
        Value::Map(entries) => {
            for (k, v) in entries {
                if matches!(k.value.key_str().as_deref(), Some("port" | "published")) {
                    port_ranges(v, out);
                }
            }
        }
        _ => {}
    }
}

/// Sets the ports of instance `offset` (0-based): a range gives the `offset`-th port, 0 a free one.
fn instance_port(port: &mut Node, offset: u32) -> Result<(), String> {
    match &mut port.value {
        Value::Int(0) => {
            port.value = Value::Int(free_port()?.into());
            Ok(())
        }
        Value::Str(text) => {
            let (published, target) = match text.split_once(':') {
                Some((p, t)) => (Some(p.to_owned()), t.to_owned()),
                None => (None, text.clone()),
            };
            let pick = |part: &str| -> Result<String, String> {
                let part = part.trim();
                if part == "0" {
                    return free_port().map(|p| p.to_string());
                }
                let Some((low, high)) = part.split_once('-') else {
                    return Ok(part.to_owned());
                };
                let (Ok(low), Ok(high)) = (low.trim().parse::<u32>(), high.trim().parse::<u32>())
                else {
                    return Ok(part.to_owned());
                };
                let port = low + offset;
                if port > high || port > u32::from(u16::MAX) {
                    return Err(format!(
                        "the port range {low}-{high} has no port for instance {}",
                        offset + 1
                    ));
                }
                Ok(port.to_string())
            };
            *text = match published {
                Some(p) => format!("{}:{}", pick(&p)?, pick(&target)?),
                None => pick(&target)?,
            };
            Ok(())
        }
        Value::Map(entries) => {
            for (k, v) in entries.iter_mut() {
                if matches!(k.value.key_str().as_deref(), Some("port" | "published")) {
                    instance_port(v, offset)?;
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn has_zero_port(port: &Node) -> bool {
    match &port.value {
        Value::Int(0) => true,
        Value::Str(s) => s.split(':').any(|p| p.trim() == "0"),
        Value::Map(entries) => entries.iter().any(|(k, v)| {
            matches!(k.value.key_str().as_deref(), Some("port" | "published")) && has_zero_port(v)
        }),
        _ => false,
    }
}

/// A port free on this machine now (`0` in `ports:`); the service binds it soon after.
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port for `0`: {e}"))
}

fn rewrite_strings(node: &mut Node, own: &str, index: Option<u32>, counts: &BTreeMap<String, u32>) {
    match &mut node.value {
        // Only references to replicated services and `.endpoints` change (without replicas,
        // most strings with `${` need no look).
        Value::Str(s) if s.contains("${") && (!counts.is_empty() || s.contains(".endpoints")) => {
            if let Some(new) = rewrite_refs(s, own, index, counts) {
                *s = new;
            }
        }
        Value::Seq(items) => items
            .iter_mut()
            .for_each(|n| rewrite_strings(n, own, index, counts)),
        Value::Map(entries) => entries
            .iter_mut()
            .for_each(|(_, v)| rewrite_strings(v, own, index, counts)),
        _ => {}
    }
}

/// `${svc.endpoints}` and references to replicated services, rewritten; `None` if unchanged.
fn rewrite_refs(
    text: &str,
    own: &str,
    index: Option<u32>,
    counts: &BTreeMap<String, u32>,
) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$$") {
            out.push_str("$$");
            rest = tail;
            continue;
        }
        let reference = after
            .strip_prefix("${")
            .and_then(|body| {
                body.find(['}', '{'])
                    .filter(|&c| body.as_bytes()[c] == b'}')
                    .map(|c| &body[..c])
            })
            .and_then(|body| body.split_once('.').map(|(s, p)| (body, s, p)))
            .filter(|(_, service, _)| is_service_name(service));
        let Some((body, service, property)) = reference else {
            out.push('$');
            rest = &after[1..];
            continue;
        };
        let instance = |i: u32| instance_name(service, i);
        let replaced = match (property, counts.get(service)) {
            ("endpoints", None) => Some(format!("${{{service}.ip}}:${{{service}.port}}")),
            ("endpoints", Some(n)) => Some(
                (1..=*n)
                    .map(|i| format!("${{{0}.ip}}:${{{0}.port}}", instance(i)))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            (_, Some(_)) => {
                let which = if service == own {
                    index.unwrap_or(1)
                } else {
                    1
                };
                Some(format!("${{{}.{property}}}", instance(which)))
            }
            (_, None) => None,
        };
        match replaced {
            Some(r) => {
                out.push_str(&r);
                changed = true;
            }
            None => out.push_str(&after[..body.len() + 3]),
        }
        rest = &after[body.len() + 3..];
    }
    out.push_str(rest);
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_to_replicas() {
        let counts = BTreeMap::from([("web".to_owned(), 3)]);
        let r = |t: &str, own: &str, i| rewrite_refs(t, own, i, &counts);
        assert_eq!(
            r("${web.endpoints}", "c", None).unwrap(),
            "${web-1.ip}:${web-1.port},${web-2.ip}:${web-2.port},${web-3.ip}:${web-3.port}"
        );
        assert_eq!(
            r("x ${web.ip}:${web.port}", "c", None).unwrap(),
            "x ${web-1.ip}:${web-1.port}"
        );
        assert_eq!(
            r("--port ${web.port}", "web", Some(2)).unwrap(),
            "--port ${web-2.port}"
        );
        assert_eq!(
            r("${db.endpoints}", "c", None).unwrap(),
            "${db.ip}:${db.port}"
        );
        assert_eq!(
            r("$${web.ip} ${db.ip} ${A:-${web.ip}}", "c", None).unwrap(),
            "$${web.ip} ${db.ip} ${A:-${web-1.ip}}"
        );
        assert_eq!(r("${db.ip} $HOME", "c", None), None);
    }

    #[test]
    fn port_ranges_and_zero() {
        let mut p = Node {
            value: Value::Str("8080-8082:80".into()),
            pos: Default::default(),
        };
        instance_port(&mut p, 2).unwrap();
        assert_eq!(p.value, Value::Str("8082:80".into()));
        let mut p = Node {
            value: Value::Str("8080-8081".into()),
            pos: Default::default(),
        };
        assert!(instance_port(&mut p, 2).unwrap_err().contains("instance 3"));
        let mut p = Node {
            value: Value::Int(0),
            pos: Default::default(),
        };
        instance_port(&mut p, 0).unwrap();
        assert!(matches!(p.value, Value::Int(n) if n > 0));
    }
}
