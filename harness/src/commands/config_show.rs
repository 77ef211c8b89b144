//! `harness config show`: the resolved configuration, secrets masked; `--resolved`: what each
//! service's `${svc.ip}`-style references resolve to for it, direct or through a mesh.

use super::{Status, load, load_options, load_project};
use crate::output::{Context, print_json};

pub fn run(ctx: &Context, show_secrets: bool, origins: bool) -> Status {
    super::heap::prepare_for_large_load();
    let project = match load_project(ctx) {
        Ok(p) => p,
        Err(status) => return status,
    };
    let loaded = if origins {
        Some(load(ctx, &load_options(ctx)))
    } else {
        None
    };
    let mut value = match serde_json::to_value(&project) {
        Ok(v) => v,
        Err(e) => {
            crate::errln!("error: cannot encode the configuration: {e}");
            return Status::Failed;
        }
    };
    if !show_secrets {
        harness_config::mask_secrets(&mut value);
    }
    if let Some(loaded) = &loaded {
        let mut lines = Vec::new();
        origin_lines(loaded, "", &value, &mut lines);
        if ctx.json() {
            print_json(&lines);
        } else {
            for l in &lines {
                crate::outln!("{}: {}  # {}", l.path, l.value, l.origin);
            }
        }
        return Status::Ok;
    }
    if ctx.json() {
        print_json(&value);
        return Status::Ok;
    }
    match serde_saphyr::to_string(&value) {
        Ok(yaml) => {
            crate::out!("{yaml}");
            Status::Ok
        }
        Err(e) => {
            crate::errln!("error: cannot encode the configuration as YAML: {e}");
            Status::Failed
        }
    }
}

/// One value of `config show --origins`.
#[derive(serde::Serialize)]
struct Origin {
    path: String,
    value: serde_json::Value,
    /// `file:line:col`; `default (in file:line:col)` for a default, with its nearest written
    /// parent; `default` when no file has one.
    origin: String,
}

/// Every leaf value with the place that set it (the nearest written parent for defaults).
fn origin_lines(
    loaded: &harness_config::Loaded,
    path: &str,
    value: &serde_json::Value,
    out: &mut Vec<Origin>,
) {
    let child = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                origin_lines(loaded, &child(k), v, out);
            }
        }
        serde_json::Value::Array(items) if !items.is_empty() => {
            for (i, v) in items.iter().enumerate() {
                origin_lines(loaded, &format!("{path}[{i}]"), v, out);
            }
        }
        _ => out.push(Origin {
            path: path.to_owned(),
            value: value.clone(),
            origin: loaded
                .origin(path)
                .map(|(file, line, col, written)| {
                    let at = format!("{}:{line}:{col}", file.display());
                    if written {
                        at
                    } else {
                        format!("default (in {at})")
                    }
                })
                .unwrap_or_else(|| "default".to_owned()),
        }),
    }
}

/// One row of `config show --resolved`.
#[derive(serde::Serialize)]
struct ResolvedRef {
    /// The consumer.
    service: String,
    /// `${api.ip}`, or `endpoint` for the address the daemon checks health at and lists.
    reference: String,
    /// What it resolves to for this consumer (`None` when it cannot: see `error`).
    value: Option<String>,
    /// `direct` (the underlay, ADR 0020), `mesh` (a WireGuard mesh address, ADR 0034),
    /// `engine` (the provider container's address on the engine both run on, known at launch),
    /// or `port` (a port, the same whichever way).
    via: &'static str,
    /// The mesh, when `via` is `mesh`.
    network: Option<String>,
    error: Option<String>,
}

/// `config show --resolved`: per service, every `${P.ip}`, `${P.host}`, `${P.port}` and
/// `${P.ports.NAME}` it holds as the resolver answers it for that service's placement, and the
/// daemon's endpoint of each service with ports.
pub fn resolved(ctx: &Context) -> Status {
    use harness_config::Property;
    use orchestrator::addresses::{Placement, Resolver, daemon_ip, through_mesh};
    let project = match load_project(ctx) {
        Ok(p) => p,
        Err(status) => return status,
    };
    let mut rows = Vec::new();
    for (name, svc) in &project.services {
        let at = Placement::of(svc);
        let mut refs: Vec<&harness_config::ServiceRef> = svc
            .templates()
            .into_iter()
            .flat_map(|t| t.references())
            .collect();
        refs.sort();
        refs.dedup();
        for r in refs {
            let mut row = ResolvedRef {
                service: name.clone(),
                reference: r.to_string(),
                value: None,
                via: "direct",
                network: None,
                error: None,
            };
            let consumer = match &at {
                Ok(p) => p.clone(),
                Err(e) => {
                    row.error = Some(e.clone());
                    rows.push(row);
                    continue;
                }
            };
            let provider = project.services.get(&r.service);
            let to = provider.and_then(|p| Placement::of(p).ok());
            let is_address = matches!(r.property, Property::Ip | Property::Host);
            if !is_address {
                row.via = "port";
            } else if let (Some(p), Some(to)) = (provider, &to) {
                if let Some((net, _)) = through_mesh(&project, &consumer, to, p) {
                    row.via = "mesh";
                    row.network = Some(net);
                } else if matches!(
                    (&consumer, to),
                    (Placement::Container { host: a }, Placement::Container { host: b }) if a == b
                ) {
                    row.via = "engine";
                }
            }
            match Resolver::new(&project, consumer).resolve(r) {
                Ok(v) if row.via == "engine" && is_address => {
                    drop(v);
                    row.value = Some("<its container address on the engine, at launch>".into());
                }
                Ok(v) => row.value = Some(v),
                Err(e) => row.error = Some(e),
            }
            rows.push(row);
        }
        if let Ok(p) = &at
            && !svc.ports.is_empty()
        {
            let ip = daemon_ip(&project, p);
            let mesh = p.machine().and_then(|h| {
                orchestrator::network::mesh_address(
                    &project,
                    std::path::Path::new(""),
                    None,
                    Some(h),
                    &[],
                )
                .filter(|(_, m)| std::net::IpAddr::V4(*m) == ip)
            });
            rows.push(ResolvedRef {
                service: name.clone(),
                reference: "endpoint".into(),
                value: Some(ip.to_string()),
                via: if mesh.is_some() { "mesh" } else { "direct" },
                network: mesh.map(|(n, _)| n),
                error: None,
            });
        }
    }
    if ctx.json() {
        print_json(&rows);
        return Status::Ok;
    }
    if rows.is_empty() {
        crate::outln!("no service references an address, and no service has ports");
        return Status::Ok;
    }
    let mut t = crate::output::table(ctx.color_out);
    t.set_header(["service", "reference", "resolves to", "via"]);
    for r in &rows {
        t.add_row([
            r.service.clone(),
            r.reference.clone(),
            match (&r.value, &r.error) {
                (Some(v), _) => v.clone(),
                (None, Some(e)) => format!("error: {e}"),
                (None, None) => String::new(),
            },
            match &r.network {
                Some(n) => format!("{} {n}", r.via),
                None => r.via.to_owned(),
            },
        ]);
    }
    crate::outln!("{t}");
    if rows.iter().any(|r| r.error.is_some()) {
        return Status::Invalid;
    }
    Status::Ok
}
