//! The daemon closes a connection whose message is over its limit, and the CLI would only see
//! "connection closed". So the CLI measures a request before sending it and refuses one that is
//! too large, naming the limit and the largest fields (`validate` reports the same error).

use std::path::Path;

use harness_config::{Code, Diagnostic, Project, Severity};
use serde_json::Value;

/// Room for the request's envelope (id, method name) around its params.
const ENVELOPE: usize = 256;

/// The largest message the daemon accepts.
pub fn limit() -> usize {
    harness_server::ServerConfig::default().max_message_size
}

/// Whether a request whose params encode to `params_len` bytes is within the limit.
pub fn fits(params_len: usize) -> bool {
    params_len.saturating_add(ENVELOPE) <= limit()
}

/// Refuses (prints the error, returns true) a request of `what` whose params encode to
/// `params_len` bytes when it is over the limit; for requests that carry no project.
pub fn refuse(what: &str, params_len: usize) -> bool {
    if fits(params_len) {
        return false;
    }
    crate::errln!(
        "error: {what}: the request encodes to {}, over the daemon's request limit of {}; \
         nothing was sent",
        bytes(params_len.saturating_add(ENVELOPE)),
        bytes(limit())
    );
    crate::errln!("  help: pass large data through stdin or a file instead of arguments");
    true
}

/// The error for a request whose params encode to `params_len` bytes, if it is over the limit.
/// `project` is what the request carries, to name its largest fields.
pub fn check(file: &Path, project: &Project, params_len: usize) -> Option<Diagnostic> {
    if fits(params_len) {
        return None;
    }
    let limit = limit();
    let size = params_len + ENVELOPE;
    let mut fields = Vec::new();
    if let Ok(value) = serde_json::to_value(project) {
        leaves(&value, &mut String::new(), &mut fields);
    }
    fields.sort_by_key(|f| std::cmp::Reverse(f.1));
    let largest: Vec<String> = fields
        .iter()
        .enumerate()
        .take_while(|(i, (_, len))| *i == 0 || (*i < 3 && *len >= limit / 16))
        .map(|(_, f)| f)
        .map(|(path, len)| format!("{path} ({})", bytes(*len)))
        .collect();
    // A field worth naming is a sizeable part of the limit; else the project is large as a whole.
    let big = fields.first().is_some_and(|f| f.1 >= limit / 16);
    let path = if big {
        fields.first().map(|f| f.0.clone()).unwrap_or_default()
    } else {
        "services".to_owned()
    };
    let why = if big {
        format!("largest fields: {}", largest.join(", "))
    } else {
        format!(
            "no field is large: it is its {} services together",
            project.services.len()
        )
    };
    let help = if big {
        "keep large data out of services.yaml: put it in a file the service reads \
         (pass its path in env or args)"
    } else {
        "split the services into several projects (each its own services.yaml and `name:`)"
    };
    Some(Diagnostic {
        severity: Severity::Error,
        code: Code::TooLarge,
        message: format!(
            "project {:?} encodes to {}, over the daemon's request limit of {}; {why}",
            project.name,
            bytes(size),
            bytes(limit),
        ),
        file: file.to_owned(),
        line: None,
        column: None,
        path,
        help: Some(help.to_owned()),
        span: None,
    })
}

/// Prints `d` on stderr, with what to do next.
pub fn print(d: &Diagnostic) {
    crate::errln!("error: {}: {}", d.file.display(), d.message);
    if let Some(help) = &d.help {
        crate::errln!("  help: {help}");
    }
}

/// Every string (and other scalar) of `value` with its dotted path and encoded length.
fn leaves(value: &Value, path: &mut String, out: &mut Vec<(String, usize)>) {
    let len = path.len();
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                leaves(v, path, out);
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                path.push_str(&format!("[{i}]"));
                leaves(v, path, out);
                path.truncate(len);
            }
        }
        Value::String(s) => out.push((path.clone(), s.len())),
        other => out.push((path.clone(), other.to_string().len())),
    }
}

/// `1.5 MiB`, `12 KiB`, `300 B`.
fn bytes(n: usize) -> String {
    const KIB: f64 = 1024.0;
    let f = n as f64;
    if f >= KIB * KIB {
        format!("{:.1} MiB", f / (KIB * KIB))
    } else if f >= KIB {
        format!("{:.1} KiB", f / KIB)
    } else {
        format!("{n} B")
    }
}
