//! `harness config show`: the resolved configuration, secrets masked.

use super::{Status, load, load_options, load_project};
use crate::output::{Context, print_json};

pub fn run(ctx: &Context, show_secrets: bool, origins: bool) -> Status {
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
