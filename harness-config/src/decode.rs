//! From the spanned YAML tree to the typed [`Project`], collecting every problem on the way.
//!
//! Hand-written rather than derived so that one run reports all unknown keys, wrong types and
//! `${...}` errors with their positions, and accepts the shorthand and ADR-007 forms.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::diagnostic::{Code, Diagnostic, Severity};
use crate::duration::parse_duration;
use crate::model::*;
use crate::node::{Node, Pos, Value};
use crate::template::{
    Template, TemplateError, VarLookup, is_service_name, substitute, substitute_plain,
};

pub(crate) const PROJECT_KEYS: &[&str] = &[
    "version",
    "name",
    "description",
    "settings",
    "hosts",
    "networks",
    "env_file",
    "proxy",
    "services",
];
pub(crate) const SETTINGS_KEYS: &[&str] = &[
    "log_level",
    "health_check_interval",
    "startup_timeout",
    "shutdown_timeout",
];
pub(crate) const HOST_KEYS: &[&str] = &[
    "address",
    "port",
    "user",
    "identity_file",
    "jump",
    "known_hosts",
    "sudo",
    "docker_host",
];
pub(crate) const NETWORK_KEYS: &[&str] = &[
    "type",
    "subnet",
    "config_path",
    "nodes",
    "listen_port",
    "mtu",
];
pub(crate) const NODE_KEYS: &[&str] = &["host", "name", "ssh_user", "ssh_key", "package_deploy"];
pub(crate) const SERVICE_KEYS: &[&str] = &[
    "type",
    "binary",
    "args",
    "command",
    "entrypoint",
    "working_dir",
    "env",
    "env_file",
    "host",
    "user",
    "network",
    "image",
    "ports",
    "volumes",
    "package",
    "version",
    "dependencies",
    "depends_on",
    "health_check",
    "restart",
    "stop",
    "shutdown_timeout",
    "startup_timeout",
    "subdomain",
    "proxy_port",
    "watch",
    "logging",
    "install_path",
    "profiles",
    "replicas",
];
pub(crate) const PORT_KEYS: &[&str] = &["name", "port", "published"];
pub(crate) const HEALTH_KEYS: &[&str] = &[
    "command",
    "args",
    "http",
    "tcp",
    "interval",
    "timeout",
    "retries",
    "start_period",
];
pub(crate) const TCP_KEYS: &[&str] = &["port", "host", "timeout"];
pub(crate) const RESTART_KEYS: &[&str] = &["policy", "max_restarts", "backoff", "on_unhealthy"];
pub(crate) const BACKOFF_KEYS: &[&str] = &["initial", "max"];
pub(crate) const STOP_KEYS: &[&str] = &["signal", "timeout"];
pub(crate) const DEPENDS_ON_LONG_KEYS: &[&str] = &["condition"];

const SIGNALS: &[&str] = &[
    "HUP", "INT", "QUIT", "ABRT", "KILL", "USR1", "USR2", "PIPE", "ALRM", "TERM", "CONT", "STOP",
    "TSTP", "WINCH",
];

/// Where things are, for diagnostics found after decoding (cycles, unknown services...).
///
/// A field path is recorded for every field decoded (37,000 in a 1,000-service file), so the
/// paths are kept one after another in one string, and the table holds their ranges: no
/// allocation per path. (A table of std and rustc-hash only: a new dependency would change the
/// symbol names that `harness/harnessd.order` lists, ADR 0041.)
#[derive(Default, Debug)]
pub(crate) struct Positions {
    /// Every recorded path, one after another.
    text: String,
    /// (start, end) of a path in `text`, its position, and the next entry whose path has the
    /// same hash.
    entries: Vec<(usize, usize, Pos, Option<usize>)>,
    /// A path's hash → its first entry.
    by_hash: rustc_hash::FxHashMap<u64, usize>,
    /// (service, dependency) → the field that created the dependency.
    pub dep_origin: HashMap<(String, String), String>,
    /// Every service reference with the field it is in.
    pub refs: Vec<(String, crate::template::ServiceRef)>,
}

fn path_hash(path: &str) -> u64 {
    use std::hash::BuildHasher;
    rustc_hash::FxBuildHasher.hash_one(path)
}

impl Positions {
    /// Room for about `n` recorded paths.
    pub fn with_capacity(n: usize) -> Self {
        let mut by_hash = rustc_hash::FxHashMap::default();
        by_hash.reserve(n);
        Positions {
            // Paths of a services file average about 30 bytes.
            text: String::with_capacity(n.saturating_mul(32)),
            entries: Vec::with_capacity(n),
            by_hash,
            ..Positions::default()
        }
    }

    /// The entry of `path`, whose hash is `hash`.
    fn entry(&self, hash: u64, path: &str) -> Option<usize> {
        let mut at = self.by_hash.get(&hash).copied();
        while let Some(i) = at {
            let (start, end, _, next) = self.entries.get(i)?;
            if self.text.get(*start..*end) == Some(path) {
                return Some(i);
            }
            at = *next;
        }
        None
    }

    fn get(&self, path: &str) -> Option<Pos> {
        let i = self.entry(path_hash(path), path)?;
        self.entries.get(i).map(|e| e.2)
    }

    /// Records `parent.key` (`key` alone when `parent` is empty), or `parent` + `suffix` when
    /// `dot` is false, without building the path as a string of its own. A later record of the
    /// same path wins.
    pub fn record(&mut self, parent: &str, dot: bool, suffix: &str, pos: Pos) {
        let start = self.text.len();
        self.text.push_str(parent);
        if dot && !parent.is_empty() {
            self.text.push('.');
        }
        self.text.push_str(suffix);
        let hash = path_hash(&self.text[start..]);
        self.insert(start, hash, pos);
    }

    /// Adds the path `text[start..]`, whose hash is `hash`, or sets its position if it is there.
    fn insert(&mut self, start: usize, hash: u64, pos: Pos) {
        let end = self.text.len();
        let path = &self.text[start..end];
        let mut at = self.by_hash.get(&hash).copied();
        while let Some(i) = at {
            let Some((s, e, _, next)) = self.entries.get(i) else {
                break;
            };
            if self.text.get(*s..*e) == Some(path) {
                if let Some(entry) = self.entries.get_mut(i) {
                    entry.2 = pos;
                }
                self.text.truncate(start);
                return;
            }
            at = *next;
        }
        let first = self.by_hash.insert(hash, self.entries.len());
        self.entries.push((start, end, pos, first));
    }

    /// Whether `path` itself was written in a file (a field of a list item written in a short
    /// form, such as `ports: [8080]`, counts as written with its item).
    pub fn is_recorded(&self, path: &str) -> bool {
        self.get(path).is_some()
            || path
                .rsplit_once('.')
                .is_some_and(|(parent, _)| parent.ends_with(']') && self.get(parent).is_some())
    }

    /// The position of `path`, or of its nearest recorded parent.
    pub fn find(&self, path: &str) -> Option<Pos> {
        let mut p = path;
        loop {
            if let Some(pos) = self.get(p) {
                return Some(pos);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

/// Variables for substitution: the process environment, then `.env`, then the top-level
/// `env_file`s (a later one before an earlier one).
pub(crate) struct Layered<'a> {
    pub process: &'a dyn VarLookup,
    pub dotenv: Dotenv,
    pub files: Vec<HashMap<String, String>>,
}

/// `.env` beside the project file: read when first needed (a variable the process environment
/// does not have), or at once ([`Dotenv::load`]). A file already substituted (what the daemon
/// receives) never reads it, so variables that only the client's environment had cannot fail
/// there.
pub(crate) struct Dotenv {
    path: PathBuf,
    state: std::cell::OnceCell<HashMap<String, String>>,
    error: std::cell::RefCell<Option<Diagnostic>>,
}

impl Dotenv {
    pub fn new(path: PathBuf) -> Self {
        Dotenv {
            path,
            state: std::cell::OnceCell::new(),
            error: std::cell::RefCell::new(None),
        }
    }

    /// Reads the file now (if not read yet), looking variables up in `env`.
    pub fn load(&self, env: &dyn VarLookup) -> &HashMap<String, String> {
        self.state.get_or_init(|| {
            if !self.path.is_file() {
                return HashMap::new();
            }
            match read_env_file(&self.path, env) {
                Ok(vars) => vars.into_iter().collect(),
                Err(d) => {
                    *self.error.borrow_mut() = Some(*d);
                    HashMap::new()
                }
            }
        })
    }

    /// The problem reading the file, if it was read and had one.
    pub fn take_error(&self) -> Option<Diagnostic> {
        self.error.borrow_mut().take()
    }
}

impl VarLookup for Layered<'_> {
    fn var(&self, name: &str) -> Option<String> {
        self.process
            .var(name)
            .or_else(|| self.dotenv.load(self.process).get(name).cloned())
            .or_else(|| self.files.iter().rev().find_map(|f| f.get(name).cloned()))
    }
}

mod devloop;
#[cfg(test)]
pub(crate) use devloop::{LOGGING_KEYS, PROXY_KEYS, WATCH_KEYS};
/// Reads an env file by Compose's rules; its problems become diagnostics naming its own
/// file:line:col.
pub(crate) fn read_env_file(
    path: &Path,
    vars: &dyn VarLookup,
) -> Result<Vec<(String, String)>, Box<Diagnostic>> {
    let text = read_capped(path).map_err(|e| {
        Box::new(Diagnostic::new(
            Severity::Error,
            Code::Io,
            path,
            None,
            "",
            format!("cannot read env file {}: {e}", path.display()),
        ))
    })?;
    crate::dotenv::parse(&text, vars).map_err(|e| {
        Box::new(Diagnostic::new(
            Severity::Error,
            Code::EnvFile,
            path,
            Some(Pos {
                line: e.line,
                column: e.column,
                ..Pos::default()
            }),
            "",
            e.message,
        ))
    })
}

pub(crate) struct Decoder<'a> {
    /// The loaded files: the first, then the override files ([`Pos::file`] indexes this).
    pub files: &'a [PathBuf],
    /// Their YAML texts, to point `${...}` errors at the expression inside a scalar.
    pub sources: Vec<&'a str>,
    /// Top-level `settings:`, the defaults of every service.
    pub settings: Settings,
    pub base_dir: &'a Path,
    pub vars: Layered<'a>,
    pub diags: Vec<Diagnostic>,
    pub positions: Positions,
}

/// The keys of a mapping, checked against the known ones.
struct Fields<'n> {
    entries: Vec<(&'n str, &'n Node, &'n Node)>,
}

impl<'n> Fields<'n> {
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, _, v)| *v)
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        let mut joined = String::with_capacity(path.len() + 1 + key.len());
        joined.push_str(path);
        joined.push('.');
        joined.push_str(key);
        joined
    }
}

/// `path[i]`.
fn index_path(path: &str, i: usize) -> String {
    let mut digits = [0u8; 20];
    let mut n = i;
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let digits = std::str::from_utf8(&digits[at..]).unwrap_or("0");
    let mut p = String::with_capacity(path.len() + digits.len() + 2);
    p.push_str(path);
    p.push('[');
    p.push_str(digits);
    p.push(']');
    p
}

/// The closest known word, if close enough to be what the user meant.
pub(crate) fn suggest<'k>(word: &str, known: impl IntoIterator<Item = &'k str>) -> Option<&'k str> {
    known
        .into_iter()
        .map(|k| (strsim::jaro_winkler(word, k), k))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

/// What to write instead of a Compose key harness does not support; `None` for keys that are
/// not Compose's (those get a spelling suggestion instead).
pub(crate) fn compose_key_help(key: &str, path: &str) -> Option<&'static str> {
    let service = path.starts_with("services.") && path.matches('.').count() == 1;
    let top = path.is_empty();
    Some(match key {
        "environment" if service => "harness calls it `env:` (a mapping or a list of NAME=value)",
        "healthcheck" if service => {
            "use `health_check:` with one of `command`, `http` or `tcp`, and `interval`, `timeout`, `retries`, `start_period`"
        }
        "build" if service => {
            "harness runs images but does not build them: run `docker build` first and set `image:`"
        }
        "container_name" if service => {
            "harness names containers after the project and the service; drop the key"
        }
        "networks" if service => "name one ADR-007 network with `network:`",
        "network_mode" if service => {
            "containers use the engine's default network; services reach each other with `${service.ip}`"
        }
        "expose" | "links" | "external_links" if service => {
            "list the port under `ports:`; others reach it with `${service.ip}:${service.port}`"
        }
        "deploy" | "scale" if service => {
            "use `replicas:` for instances and `restart:` for restart policies"
        }
        "stop_signal" if service => "use `stop: {signal: SIGINT}`",
        "stop_grace_period" if service => "use `stop: {timeout: 10s}` (or `shutdown_timeout: 10s`)",
        "hostname" | "domainname" | "extra_hosts" | "dns" | "dns_search" | "mac_address"
            if service =>
        {
            "harness does not set container networking details; services find each other with `${service.ip}`"
        }
        "labels" | "annotations" if service => "harness labels its containers itself; drop the key",
        "secrets" | "configs" => {
            "mount the files with `volumes:` or pass values through `env:` / `env_file:`"
        }
        "cap_add" | "cap_drop" | "privileged" | "security_opt" | "devices" | "sysctls"
        | "ulimits" | "tmpfs" | "ipc" | "pid" | "init" | "tty" | "stdin_open" | "platform"
        | "pull_policy" | "runtime" | "shm_size" | "mem_limit" | "cpus"
            if service =>
        {
            "harness does not pass this Docker option; run such a container with `command:` calling `docker run` yourself"
        }
        "volumes" if top => {
            "Docker creates named volumes on first use: name them in each service's `volumes:` (`data:/var/lib/data`)"
        }
        "include" if top => {
            "give the files with repeated `-f`: `harness -f base.yaml -f more.yaml`"
        }
        _ => return None,
    })
}

impl<'a> Decoder<'a> {
    /// The file a node came from.
    fn file(&self, pos: Pos) -> &'a Path {
        let files = self.files;
        files
            .get(usize::from(pos.file))
            .or(files.first())
            .map_or(Path::new(""), PathBuf::as_path)
    }

    fn error(&mut self, code: Code, pos: Pos, path: &str, message: impl Into<String>) {
        self.diags.push(Diagnostic::new(
            Severity::Error,
            code,
            self.file(pos),
            Some(pos),
            path,
            message,
        ));
    }

    fn error_help(
        &mut self,
        code: Code,
        pos: Pos,
        path: &str,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.diags.push(
            Diagnostic::new(
                Severity::Error,
                code,
                self.file(pos),
                Some(pos),
                path,
                message,
            )
            .with_help(help),
        );
    }

    fn wrong_type(&mut self, node: &Node, path: &str, expected: &str) {
        self.error(
            Code::WrongType,
            node.pos,
            path,
            format!(
                "`{}` must be {expected}, found {}",
                path.rsplit('.').next().unwrap_or(path),
                node.value.kind_name()
            ),
        );
    }

    fn record(&mut self, path: &str, pos: Pos) {
        self.positions.record(path, false, "", pos);
    }

    /// A mapping whose keys must all be in `known`; unknown ones are reported with a suggestion.
    fn fields<'n>(&mut self, node: &'n Node, path: &str, known: &[&str]) -> Option<Fields<'n>> {
        let Value::Map(entries) = &node.value else {
            self.wrong_type(node, path, "a mapping");
            return None;
        };
        let mut fields = Fields {
            entries: Vec::with_capacity(entries.len()),
        };
        for (key, value) in entries {
            let Value::Str(name) = &key.value else {
                self.error(
                    Code::WrongType,
                    key.pos,
                    path,
                    format!("keys must be strings, found {}", key.value.kind_name()),
                );
                continue;
            };
            // Extension keys (`x-common:` holding a YAML anchor) are for the file's author.
            if name.starts_with("x-") {
                continue;
            }
            if !known.contains(&name.as_str()) {
                let field_path = join(path, name);
                let message = format!("unknown key `{name}`");
                if let Some(help) = compose_key_help(name, path) {
                    self.error_help(
                        Code::UnknownKey,
                        key.pos,
                        &field_path,
                        format!("{message}: harness does not support Compose's `{name}` here"),
                        help,
                    );
                    continue;
                }
                match suggest(name, known.iter().copied()) {
                    Some(s) => self.error_help(
                        Code::UnknownKey,
                        key.pos,
                        &field_path,
                        format!("{message}: did you mean `{s}`?"),
                        format!("rename `{name}` to `{s}`"),
                    ),
                    None => self.error_help(
                        Code::UnknownKey,
                        key.pos,
                        &field_path,
                        message,
                        format!("known keys here: {}", known.join(", ")),
                    ),
                }
                continue;
            }
            self.positions.record(path, true, name, value.pos);
            fields.entries.push((name, key, value));
        }
        Some(fields)
    }

    /// Entries of a mapping with free-form keys (service names, host names, env names).
    fn entries<'n>(&mut self, node: &'n Node, path: &str) -> Vec<(String, &'n Node, &'n Node)> {
        match &node.value {
            Value::Map(entries) => entries
                .iter()
                .filter_map(|(k, v)| match k.value.scalar_text() {
                    Some(name) => {
                        self.positions.record(path, true, &name, k.pos);
                        Some((name, k, v))
                    }
                    None => {
                        self.error(Code::WrongType, k.pos, path, "keys must be strings");
                        None
                    }
                })
                .collect(),
            Value::Null => Vec::new(),
            _ => {
                self.wrong_type(node, path, "a mapping");
                Vec::new()
            }
        }
    }

    fn items<'n>(&mut self, node: &'n Node, path: &str) -> &'n [Node] {
        match &node.value {
            Value::Seq(items) => items,
            Value::Null => &[],
            _ => {
                self.wrong_type(node, path, "a list");
                &[]
            }
        }
    }

    fn raw_string(&mut self, node: &Node, path: &str) -> Option<String> {
        match node.value.scalar_text() {
            Some(s) => Some(s),
            None => {
                self.wrong_type(node, path, "a string");
                None
            }
        }
    }

    fn report_template_errors(&mut self, node: &Node, path: &str, errors: Vec<TemplateError>) {
        for e in errors {
            let help = match &e.kind {
                crate::template::TemplateErrorKind::UnsetVariable(name) => Some(format!(
                    "set {name} in the environment or .env, or give a default: ${{{name}:-value}}"
                )),
                crate::template::TemplateErrorKind::Unclosed => {
                    Some("write `$$` for a literal `$`".to_owned())
                }
                _ => None,
            };
            let pos = self.position_in_scalar(node, e.offset);
            let d = Diagnostic::new(
                Severity::Error,
                Code::Substitution,
                self.file(pos),
                Some(pos),
                path,
                e.kind.to_string(),
            );
            self.diags.push(match help {
                Some(h) => d.with_help(h),
                None => d,
            });
        }
    }

    /// The position of byte `offset` of a string scalar's value, when the source spells the
    /// value verbatim on one line (plain or quoted without escapes); else the scalar's start.
    fn position_in_scalar(&self, node: &Node, offset: usize) -> Pos {
        let (Value::Str(value), Some(start)) = (&node.value, node.pos.offset) else {
            return node.pos;
        };
        let start = start as usize;
        let source = self
            .sources
            .get(usize::from(node.pos.file))
            .copied()
            .unwrap_or_default();
        let quoted = matches!(source.as_bytes().get(start), Some(b'"' | b'\''));
        let body = start + usize::from(quoted);
        let verbatim =
            !value.contains('\n') && source.get(body..body + value.len()) == Some(value.as_str());
        let Some(prefix) = value.get(..offset).filter(|_| verbatim) else {
            return node.pos;
        };
        let len = value[offset..].find('}').map_or(1, |i| i + 1);
        Pos {
            line: node.pos.line,
            column: node
                .pos
                .column
                .saturating_add(u32::from(quoted))
                .saturating_add(u32::try_from(prefix.chars().count()).unwrap_or(0)),
            offset: crate::node::offset32(Some(body + offset)),
            len: u32::try_from(len).unwrap_or(u32::MAX),
            file: node.pos.file,
        }
    }

    /// A string fixed at load: variables substituted, service references refused.
    fn text(&mut self, node: &Node, path: &str) -> Option<String> {
        let raw = self.raw_string(node, path)?;
        // Nothing to substitute: the text as it is (what substitution would give).
        if !raw.contains('$') {
            return Some(raw);
        }
        match substitute_plain(&raw, &self.vars) {
            Ok(s) => Some(s),
            Err(errors) => {
                self.report_template_errors(node, path, errors);
                None
            }
        }
    }

    /// A string that may hold service references.
    fn template(&mut self, node: &Node, path: &str) -> Option<Template> {
        let raw = self.raw_string(node, path)?;
        if !raw.contains('$') {
            return Some(Template::literal(raw));
        }
        match substitute(&raw, &self.vars) {
            Ok(t) => {
                for r in t.references() {
                    self.positions.refs.push((path.to_owned(), r.clone()));
                }
                Some(t)
            }
            Err(errors) => {
                self.report_template_errors(node, path, errors);
                None
            }
        }
    }

    fn templates(&mut self, node: &Node, path: &str) -> Vec<Template> {
        let items = self.items(node, path);
        items
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                let p = index_path(path, i);
                let template = self.template(n, &p);
                self.record(&p, n.pos);
                template
            })
            .collect()
    }

    fn texts(&mut self, node: &Node, path: &str) -> Vec<String> {
        let items = self.items(node, path);
        items
            .iter()
            .enumerate()
            .filter_map(|(i, n)| self.text(n, &index_path(path, i)))
            .collect()
    }

    fn integer<T: TryFrom<i128>>(&mut self, node: &Node, path: &str, what: &str) -> Option<T> {
        let value = match &node.value {
            Value::Int(i) => Some(*i),
            Value::Str(_) => self
                .text(node, path)
                .and_then(|s| s.trim().parse::<i128>().ok()),
            _ => None,
        };
        match value.and_then(|v| T::try_from(v).ok()) {
            Some(v) => Some(v),
            None => {
                self.error(
                    Code::InvalidValue,
                    node.pos,
                    path,
                    format!(
                        "`{}` must be {what}, found {}",
                        path.rsplit('.').next().unwrap_or(path),
                        node.value
                            .scalar_text()
                            .map(|s| format!("`{s}`"))
                            .unwrap_or_else(|| node.value.kind_name().to_owned())
                    ),
                );
                None
            }
        }
    }

    fn port_number(&mut self, node: &Node, path: &str) -> Option<u16> {
        let port: u16 = self.integer(node, path, "a port number (1-65535)")?;
        if port == 0 {
            self.error_help(
                Code::InvalidValue,
                node.pos,
                path,
                "port 0 (any free port) is chosen on this machine, so a service on an SSH host cannot use it",
                "give the port number",
            );
            return None;
        }
        Some(port)
    }

    fn boolean(&mut self, node: &Node, path: &str) -> Option<bool> {
        match &node.value {
            Value::Bool(b) => Some(*b),
            _ => {
                self.wrong_type(node, path, "true or false");
                None
            }
        }
    }

    fn duration(&mut self, node: &Node, path: &str) -> Option<std::time::Duration> {
        let text = match &node.value {
            Value::Int(i) if *i >= 0 => i.to_string(),
            Value::Str(_) => self.text(node, path)?,
            _ => {
                self.error_help(
                    Code::BadDuration,
                    node.pos,
                    path,
                    format!("expected a duration, found {}", node.value.kind_name()),
                    "write \"2s\", \"500ms\", \"1m30s\" or an integer number of seconds",
                );
                return None;
            }
        };
        match parse_duration(&text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error_help(
                    Code::BadDuration,
                    node.pos,
                    path,
                    e,
                    "write \"2s\", \"500ms\", \"1m30s\" or an integer number of seconds",
                );
                None
            }
        }
    }

    /// One of `choices`, e.g. a restart policy.
    fn choice<T: Copy>(&mut self, node: &Node, path: &str, choices: &[(&str, T)]) -> Option<T> {
        let text = self.text(node, path)?;
        if let Some((_, v)) = choices.iter().find(|(name, _)| *name == text) {
            return Some(*v);
        }
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        let message = format!("`{text}` is not one of: {}", names.join(", "));
        match suggest(&text, names.iter().copied()) {
            Some(s) => self.error_help(
                Code::InvalidValue,
                node.pos,
                path,
                message,
                format!("did you mean `{s}`?"),
            ),
            None => self.error(Code::InvalidValue, node.pos, path, message),
        }
        None
    }

    fn env_files(&mut self, node: &Node, path: &str) -> Vec<Vec<(String, String)>> {
        let files: Vec<(String, Pos)> = match &node.value {
            Value::Seq(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, n)| self.text(n, &format!("{path}[{i}]")).map(|s| (s, n.pos)))
                .collect(),
            _ => self
                .text(node, path)
                .map(|s| vec![(s, node.pos)])
                .unwrap_or_default(),
        };
        let mut out = Vec::new();
        for (file, pos) in files {
            let full = self.base_dir.join(&file);
            match read_env_file(&full, &self.vars) {
                Ok(vars) => out.push(vars),
                Err(d) if d.code == Code::Io => self.error(Code::Io, pos, path, d.message),
                Err(d) => self.diags.push(*d),
            }
        }
        out
    }

    pub fn project(&mut self, root: &Node, default_name: String) -> Option<Project> {
        if root.value == Value::Null {
            self.error_help(
                Code::MissingField,
                root.pos,
                "",
                "the file is empty",
                "declare at least `services:`",
            );
            return None;
        }
        let fields = self.fields(root, "", PROJECT_KEYS)?;
        // env_file comes first: it feeds the substitution of everything else.
        if let Some(n) = fields.get("env_file") {
            for file in self.env_files(n, "env_file") {
                // One at a time: a later file may use the variables of an earlier one.
                self.vars.files.push(file.into_iter().collect());
            }
        }
        if let Some(n) = fields.get("settings") {
            self.settings = self.settings(n, "settings");
        }
        let name = fields
            .get("name")
            .and_then(|n| self.text(n, "name"))
            .unwrap_or(default_name);
        let version = fields.get("version").and_then(|n| self.text(n, "version"));
        let description = fields
            .get("description")
            .and_then(|n| self.text(n, "description"));

        let mut hosts = BTreeMap::new();
        if let Some(n) = fields.get("hosts") {
            for (name, key, value) in self.entries(n, "hosts") {
                let path = join("hosts", &name);
                if !is_service_name(&name) {
                    self.error(
                        Code::InvalidValue,
                        key.pos,
                        &path,
                        format!("host name `{name}` may hold only letters, digits, `-` and `_`"),
                    );
                }
                if let Some(h) = self.host(value, &path) {
                    hosts.insert(name, h);
                }
            }
        }

        let mut networks = BTreeMap::new();
        let mut subnets: Vec<(String, crate::subnet::Subnet, NetworkKind, Pos)> = Vec::new();
        if let Some(n) = fields.get("networks") {
            for (name, key, value) in self.entries(n, "networks") {
                let path = join("networks", &name);
                if let Some(net) = self.network(value, &path) {
                    let pos = map_get(value, "subnet").map_or(key.pos, |n| n.pos);
                    self.mesh_checks(&net, &path, value, key.pos, pos);
                    if let Some(s) = net
                        .subnet
                        .as_deref()
                        .and_then(|t| crate::subnet::Subnet::parse(t).ok())
                    {
                        subnets.push((name.clone(), s, net.kind, pos));
                    }
                    networks.insert(name, net);
                }
            }
        }
        // A mesh's subnet may not overlap another network's: its routes would capture that
        // network's traffic.
        for (i, (a, sa, ka, _)) in subnets.iter().enumerate() {
            for (b, sb, kb, pb) in &subnets[i + 1..] {
                if (*ka == NetworkKind::Wireguard || *kb == NetworkKind::Wireguard)
                    && sa.overlaps(sb)
                {
                    self.error_help(
                        Code::InvalidValue,
                        *pb,
                        &join(&join("networks", b), "subnet"),
                        format!("network `{b}`: subnet {sb} overlaps subnet {sa} of network `{a}`"),
                        "give each network its own address range",
                    );
                }
            }
        }
        // ADR-007 lan nodes are SSH hosts under their name (a mesh's `local` node is the daemon's
        // machine, not a host).
        for net in networks.values() {
            for node in &net.nodes {
                if net.kind == NetworkKind::Wireguard && node.host == crate::LOCAL_NODE {
                    continue;
                }
                hosts.entry(node.name.clone()).or_insert_with(|| Host {
                    address: node.host.clone(),
                    port: 22,
                    user: node.ssh_user.clone(),
                    identity_file: node.ssh_key.clone(),
                    jump: None,
                    known_hosts: KnownHosts::default(),
                    sudo: true,
                    docker_host: None,
                });
            }
        }

        let mut services = BTreeMap::new();
        match fields.get("services") {
            Some(n) => {
                for (name, key, value) in self.entries(n, "services") {
                    let path = join("services", &name);
                    if !is_service_name(&name) {
                        self.error_help(
                            Code::InvalidValue,
                            key.pos,
                            &path,
                            format!("service name `{name}` may hold only letters, digits, `-` and `_`"),
                            "dots separate the property in `${service.ip}`, so names cannot hold them",
                        );
                    }
                    if let Some(s) = self.service(&name, value, &path) {
                        services.insert(name, s);
                    }
                }
            }
            None => self.error_help(
                Code::MissingField,
                root.pos,
                "services",
                "no `services:` section",
                "declare the services to run under `services:`",
            ),
        }
        // ADR-007 services may name a lan node by its address: use the node's hosts entry.
        for service in services.values_mut() {
            let Some(host) = &service.host else { continue };
            if hosts.contains_key(host) {
                continue;
            }
            let node = networks
                .values()
                .flat_map(|n| &n.nodes)
                .find(|node| &node.host == host);
            if let Some(node) = node {
                service.host = Some(node.name.clone());
            }
        }
        let proxy = fields.get("proxy").and_then(|n| self.proxy(n, "proxy"));
        Some(Project {
            name,
            version,
            description,
            settings: self.settings.clone(),
            hosts,
            networks,
            proxy,
            services,
        })
    }

    fn settings(&mut self, node: &Node, path: &str) -> Settings {
        let Some(f) = self.fields(node, path, SETTINGS_KEYS) else {
            return Settings::default();
        };
        let p = |k: &str| join(path, k);
        const LEVELS: &[(&str, &str)] = &[
            ("trace", "trace"),
            ("debug", "debug"),
            ("info", "info"),
            ("warn", "warn"),
            ("error", "error"),
        ];
        Settings {
            log_level: f
                .get("log_level")
                .and_then(|n| self.choice(n, &p("log_level"), LEVELS))
                .map(str::to_owned),
            health_check_interval: f
                .get("health_check_interval")
                .and_then(|n| self.duration(n, &p("health_check_interval"))),
            startup_timeout: f
                .get("startup_timeout")
                .and_then(|n| self.duration(n, &p("startup_timeout"))),
            shutdown_timeout: f
                .get("shutdown_timeout")
                .and_then(|n| self.duration(n, &p("shutdown_timeout"))),
        }
    }

    fn host(&mut self, node: &Node, path: &str) -> Option<Host> {
        let f = self.fields(node, path, HOST_KEYS)?;
        let address = match f.get("address") {
            Some(n) => self.text(n, &join(path, "address")),
            None => {
                self.error(
                    Code::MissingField,
                    node.pos,
                    path,
                    "a host needs an `address`",
                );
                None
            }
        };
        let port = f
            .get("port")
            .and_then(|n| self.port_number(n, &join(path, "port")))
            .unwrap_or(22);
        let user = f
            .get("user")
            .and_then(|n| self.text(n, &join(path, "user")));
        let identity_file = f
            .get("identity_file")
            .and_then(|n| self.text(n, &join(path, "identity_file")))
            .map(PathBuf::from);
        let jump = f
            .get("jump")
            .and_then(|n| self.text(n, &join(path, "jump")));
        let known_hosts = f
            .get("known_hosts")
            .and_then(|n| {
                self.choice(
                    n,
                    &join(path, "known_hosts"),
                    &[
                        ("strict", KnownHosts::Strict),
                        ("accept-new", KnownHosts::AcceptNew),
                    ],
                )
            })
            .unwrap_or_default();
        let sudo = f
            .get("sudo")
            .and_then(|n| self.boolean(n, &join(path, "sudo")))
            .unwrap_or(true);
        let docker_host = f
            .get("docker_host")
            .and_then(|n| self.text(n, &join(path, "docker_host")));
        Some(Host {
            address: address?,
            port,
            user,
            identity_file,
            jump,
            known_hosts,
            sudo,
            docker_host,
        })
    }

    fn network(&mut self, node: &Node, path: &str) -> Option<Network> {
        let f = self.fields(node, path, NETWORK_KEYS)?;
        let kind = match f.get("type") {
            Some(n) => self.choice(
                n,
                &join(path, "type"),
                &[
                    ("local", NetworkKind::Local),
                    ("lan", NetworkKind::Lan),
                    ("wireguard", NetworkKind::Wireguard),
                ],
            )?,
            None => NetworkKind::Local,
        };
        let subnet = f.get("subnet").and_then(|n| {
            let sp = join(path, "subnet");
            let text = self.text(n, &sp)?;
            match check_cidr(&text) {
                Ok(()) => Some(text),
                Err(why) => {
                    self.error_help(
                        Code::InvalidValue,
                        n.pos,
                        &sp,
                        format!("`{text}` is not a subnet: {why}"),
                        "write ADDRESS/PREFIX, e.g. 10.10.0.0/24 or fd00::/64",
                    );
                    None
                }
            }
        });
        let config_path = f
            .get("config_path")
            .and_then(|n| self.text(n, &join(path, "config_path")))
            .map(PathBuf::from);
        let listen_port = f.get("listen_port").and_then(|n| {
            self.integer::<u16>(n, &join(path, "listen_port"), "a port number (1-65535)")
                .filter(|p| *p > 0)
        });
        let mtu = f.get("mtu").and_then(|n| {
            let mp = join(path, "mtu");
            let v = self.integer::<u16>(n, &mp, "an MTU (1280-9000)")?;
            if (1280..=9000).contains(&v) {
                Some(v)
            } else {
                self.error(
                    Code::InvalidValue,
                    n.pos,
                    &mp,
                    format!("`mtu` must be 1280 to 9000, found {v}"),
                );
                None
            }
        });
        if kind != NetworkKind::Wireguard {
            for key in ["listen_port", "mtu"] {
                if let Some(n) = f.get(key) {
                    self.error(
                        Code::InvalidValue,
                        n.pos,
                        &join(path, key),
                        format!("`{key}` applies only to a `wireguard` network"),
                    );
                }
            }
        }
        let mut nodes = Vec::new();
        if let Some(n) = f.get("nodes") {
            let np = join(path, "nodes");
            for (i, item) in self.items(n, &np).iter().enumerate() {
                let ip = format!("{np}[{i}]");
                let Some(nf) = self.fields(item, &ip, NODE_KEYS) else {
                    continue;
                };
                let host = nf
                    .get("host")
                    .and_then(|n| self.text(n, &join(&ip, "host")));
                let name = nf
                    .get("name")
                    .and_then(|n| self.text(n, &join(&ip, "name")));
                let ssh_user = nf
                    .get("ssh_user")
                    .and_then(|n| self.text(n, &join(&ip, "ssh_user")));
                let ssh_key = nf
                    .get("ssh_key")
                    .and_then(|n| self.text(n, &join(&ip, "ssh_key")))
                    .map(PathBuf::from);
                let package_deploy = nf
                    .get("package_deploy")
                    .and_then(|n| self.boolean(n, &join(&ip, "package_deploy")));
                match host {
                    Some(host) => nodes.push(NetworkNode {
                        name: name.unwrap_or_else(|| host.clone()),
                        host,
                        ssh_user,
                        ssh_key,
                        package_deploy,
                    }),
                    None => self.error(
                        Code::MissingField,
                        item.pos,
                        &ip,
                        "a network node needs a `host`",
                    ),
                }
            }
        }
        Some(Network {
            kind,
            subnet,
            config_path,
            listen_port,
            mtu,
            nodes,
        })
    }

    /// A `wireguard` network: a subnet that holds every member, members named once.
    fn mesh_checks(&mut self, net: &Network, path: &str, node: &Node, key: Pos, subnet_pos: Pos) {
        if net.kind != NetworkKind::Wireguard {
            return;
        }
        let Some(text) = net.subnet.as_deref() else {
            self.error_help(
                Code::MissingField,
                key,
                path,
                format!(
                    "network `{}`: a `wireguard` network needs `subnet`",
                    path_tail(path)
                ),
                "the mesh addresses come from it, e.g. `subnet: 10.90.0.0/24`",
            );
            return;
        };
        let sp = join(path, "subnet");
        let subnet = match crate::subnet::Subnet::parse(text) {
            Ok(s) => s,
            Err(why) => {
                self.error(
                    Code::InvalidValue,
                    subnet_pos,
                    &sp,
                    format!("`{text}`: {why}"),
                );
                return;
            }
        };
        if net.nodes.is_empty() {
            let pos = map_get(node, "nodes").map_or(key, |n| n.pos);
            self.error_help(
                Code::MissingField,
                pos,
                &join(path, "nodes"),
                format!("network `{}`: a `wireguard` network needs `nodes`", path_tail(path)),
                "list the members: `- host: local` for this machine, `- host: NAME` for a hosts entry",
            );
        }
        let members = net.nodes.len() as u64;
        if members > subnet.capacity() {
            self.error_help(
                Code::InvalidValue,
                subnet_pos,
                &sp,
                format!(
                    "network `{}`: subnet {subnet} holds {} member address{} (network and broadcast \
                     addresses are never used), but the network has {members} nodes",
                    path_tail(path),
                    subnet.capacity(),
                    if subnet.capacity() == 1 { "" } else { "es" }
                ),
                "use a shorter prefix, e.g. /24",
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for node in &net.nodes {
            if !seen.insert(node.name.as_str()) {
                self.error(
                    Code::InvalidValue,
                    key,
                    &join(path, "nodes"),
                    format!(
                        "network `{}`: node `{}` is listed twice",
                        path_tail(path),
                        node.name
                    ),
                );
            }
        }
    }

    fn service(&mut self, name: &str, node: &Node, path: &str) -> Option<Service> {
        // The references this service's fields add are the ones pushed from here on.
        let refs_before = self.positions.refs.len();
        let f = self.fields(node, path, SERVICE_KEYS)?;
        let p = |k: &str| join(path, k);
        let explicit_kind = f.get("type").and_then(|n| {
            self.choice(
                n,
                &p("type"),
                &[
                    ("process", ServiceKind::Process),
                    ("docker", ServiceKind::Docker),
                    ("remote", ServiceKind::Remote),
                    ("package", ServiceKind::Package),
                ],
            )
        });
        let binary = f.get("binary").and_then(|n| self.template(n, &p("binary")));
        let args = f
            .get("args")
            .map(|n| self.templates(n, &p("args")))
            .unwrap_or_default();
        let command = f.get("command").and_then(|n| match &n.value {
            Value::Seq(_) => Some(Command::Argv(self.templates(n, &p("command")))),
            _ => self.template(n, &p("command")).map(Command::Shell),
        });
        let entrypoint = f
            .get("entrypoint")
            .map(|n| match &n.value {
                Value::Seq(_) => self.texts(n, &p("entrypoint")),
                _ => self.text(n, &p("entrypoint")).into_iter().collect(),
            })
            .unwrap_or_default();
        let working_dir = f
            .get("working_dir")
            .and_then(|n| self.template(n, &p("working_dir")));

        let mut env = BTreeMap::new();
        if let Some(n) = f.get("env_file") {
            // A later file wins, as in Compose; `env:` wins over all of them.
            for file in self.env_files(n, &p("env_file")) {
                for (k, v) in file {
                    env.insert(k, Template::literal(v));
                }
            }
        }
        if let Some(n) = f.get("env") {
            self.env(n, &p("env"), &mut env);
        }

        let host = f
            .get("host")
            .and_then(|n| self.text(n, &p("host")))
            .filter(|h| h != "local" && h != "localhost");
        let user = f.get("user").and_then(|n| self.text(n, &p("user")));
        let network = f.get("network").and_then(|n| self.text(n, &p("network")));
        let image = f.get("image").and_then(|n| self.text(n, &p("image")));
        let ports = f
            .get("ports")
            .map(|n| self.ports(n, &p("ports")))
            .unwrap_or_default();
        let volumes = f
            .get("volumes")
            .map(|n| self.texts(n, &p("volumes")))
            .unwrap_or_default();
        let package = f.get("package").and_then(|n| self.text(n, &p("package")));
        let version = f.get("version").and_then(|n| self.text(n, &p("version")));
        let install_path = f
            .get("install_path")
            .and_then(|n| self.text(n, &p("install_path")));
        // Applied before decoding (see `layers`); checked here for their form.
        if let Some(n) = f.get("profiles") {
            for (i, item) in self.items(n, &p("profiles")).iter().enumerate() {
                let ip = format!("{}[{i}]", p("profiles"));
                if let Some(name) = self.raw_string(item, &ip)
                    && !is_service_name(&name)
                {
                    self.error(
                        Code::InvalidValue,
                        item.pos,
                        &ip,
                        format!("profile `{name}` may hold only letters, digits, `-` and `_`"),
                    );
                }
            }
        }

        let mut depends_on = BTreeMap::new();
        if let Some(n) = f.get("dependencies") {
            let dp = p("dependencies");
            for (i, item) in self.items(n, &dp).iter().enumerate() {
                let ip = index_path(&dp, i);
                self.record(&ip, item.pos);
                if let Some(dep) = self.text(item, &ip) {
                    self.positions
                        .dep_origin
                        .insert((name.to_owned(), dep.clone()), ip);
                    depends_on.insert(dep, Condition::Started);
                }
            }
        }
        if let Some(n) = f.get("depends_on") {
            self.depends_on(name, n, &p("depends_on"), &mut depends_on);
        }

        let health_check = f
            .get("health_check")
            .and_then(|n| self.health_check(n, &p("health_check")));
        let restart = f
            .get("restart")
            .and_then(|n| self.restart(n, &p("restart")))
            .unwrap_or_default();
        let mut stop = f
            .get("stop")
            .and_then(|n| self.stop(n, &p("stop")))
            .unwrap_or_default();
        let stop_timeout_set = f
            .get("stop")
            .and_then(|n| match &n.value {
                Value::Map(entries) => Some(entries),
                _ => None,
            })
            .is_some_and(|e| {
                e.iter()
                    .any(|(k, _)| k.value == Value::Str("timeout".into()))
            });
        if let Some(n) = f.get("shutdown_timeout") {
            // ADR-007's name for the stop timeout.
            if stop_timeout_set {
                self.error(
                    Code::InvalidValue,
                    n.pos,
                    &p("shutdown_timeout"),
                    "`shutdown_timeout` and `stop.timeout` are the same setting: keep one",
                );
            } else if let Some(d) = self.duration(n, &p("shutdown_timeout")) {
                stop.timeout = d;
            }
        } else if !stop_timeout_set && let Some(d) = self.settings.shutdown_timeout {
            stop.timeout = d;
        }
        let startup_timeout = f
            .get("startup_timeout")
            .and_then(|n| self.duration(n, &p("startup_timeout")))
            .or(self.settings.startup_timeout);
        let subdomain = f
            .get("subdomain")
            .and_then(|n| self.subdomain(n, &p("subdomain")));
        let proxy_port = f
            .get("proxy_port")
            .and_then(|n| self.proxy_port(n, &p("proxy_port")));
        let watch = f.get("watch").and_then(|n| self.watch(n, &p("watch")));
        let logging = f
            .get("logging")
            .and_then(|n| self.logging(n, &p("logging")))
            .unwrap_or_default();

        let kind = explicit_kind.unwrap_or(if image.is_some() {
            ServiceKind::Docker
        } else if package.is_some() {
            ServiceKind::Package
        } else if host.is_some() {
            ServiceKind::Remote
        } else {
            ServiceKind::Process
        });

        let mut service = Service {
            kind,
            binary,
            args,
            command,
            entrypoint,
            working_dir,
            env,
            host,
            user,
            network,
            image,
            ports,
            volumes,
            package,
            version,
            install_path,
            depends_on,
            health_check,
            restart,
            stop,
            startup_timeout,
            subdomain,
            proxy_port,
            watch,
            logging,
        };
        // A reference is an implicit `started` dependency on the referenced service.
        let prefix = format!("{path}.");
        let refs: Vec<(String, String)> = self
            .positions
            .refs
            .get(refs_before..)
            .unwrap_or_default()
            .iter()
            .filter(|(field, _)| field.starts_with(&prefix))
            .map(|(field, r)| (field.clone(), r.service.clone()))
            .collect();
        for (field, target) in refs {
            if target != name {
                service
                    .depends_on
                    .entry(target.clone())
                    .or_insert(Condition::Started);
                self.positions
                    .dep_origin
                    .entry((name.to_owned(), target))
                    .or_insert(field);
            }
        }
        Some(service)
    }

    fn env(&mut self, node: &Node, path: &str, env: &mut BTreeMap<String, Template>) {
        match &node.value {
            // The compose list form: `- NAME=value`.
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    let ip = index_path(path, i);
                    let Some(t) = self.raw_string(item, &ip) else {
                        continue;
                    };
                    let Some((k, _)) = t.split_once('=') else {
                        self.error(
                            Code::InvalidValue,
                            item.pos,
                            &ip,
                            format!("`{t}` is not NAME=value"),
                        );
                        continue;
                    };
                    let k = k.to_owned();
                    let value_node = Node {
                        value: Value::Str(t[k.len() + 1..].to_owned()),
                        pos: item.pos,
                    };
                    if let Some(v) = self.template(&value_node, &ip) {
                        env.insert(k, v);
                    }
                }
            }
            _ => {
                for (k, _, v) in self.entries(node, path) {
                    let vp = join(path, &k);
                    let value = if v.value == Value::Null {
                        Some(Template::default())
                    } else {
                        self.template(v, &vp)
                    };
                    if let Some(value) = value {
                        env.insert(k, value);
                    }
                }
            }
        }
    }

    fn ports(&mut self, node: &Node, path: &str) -> Vec<Port> {
        let mut ports = Vec::new();
        for (i, item) in self.items(node, path).iter().enumerate() {
            let ip = index_path(path, i);
            self.record(&ip, item.pos);
            let port = match &item.value {
                Value::Int(_) => self.port_number(item, &ip).map(|port| Port {
                    name: None,
                    port,
                    published: None,
                }),
                Value::Str(_) => self.text(item, &ip).and_then(|text| {
                    let (published, port) = match text.split_once(':') {
                        Some((p, c)) => (Some(p), c),
                        None => (None, text.as_str()),
                    };
                    let parse = |s: &str| s.trim().parse::<u16>().ok().filter(|p| *p != 0);
                    match (published.map(parse), parse(port)) {
                        (None, Some(port)) => Some(Port {
                            name: None,
                            port,
                            published: None,
                        }),
                        (Some(Some(published)), Some(port)) => Some(Port {
                            name: None,
                            port,
                            published: Some(published),
                        }),
                        _ => {
                            self.error_help(
                                Code::InvalidValue,
                                item.pos,
                                &ip,
                                format!("`{text}` is not a port"),
                                "write 8080, \"8080:80\" (published:port) or {name, port, published}",
                            );
                            None
                        }
                    }
                }),
                Value::Map(_) => {
                    let f = self.fields(item, &ip, PORT_KEYS);
                    f.and_then(|f| {
                        let name = f.get("name").and_then(|n| self.text(n, &join(&ip, "name")));
                        let published = f
                            .get("published")
                            .and_then(|n| self.port_number(n, &join(&ip, "published")));
                        let port = match f.get("port") {
                            Some(n) => self.port_number(n, &join(&ip, "port")),
                            None => {
                                self.error(
                                    Code::MissingField,
                                    item.pos,
                                    &ip,
                                    "a port needs `port`",
                                );
                                None
                            }
                        };
                        if let Some(n) = &name
                            && !is_service_name(n)
                        {
                            self.error(
                                Code::InvalidValue,
                                item.pos,
                                &join(&ip, "name"),
                                format!("port name `{n}` may hold only letters, digits, `-` and `_`"),
                            );
                        }
                        Some(Port {
                            name,
                            port: port?,
                            published,
                        })
                    })
                }
                _ => {
                    self.wrong_type(item, &ip, "a port number, \"published:port\" or a mapping");
                    None
                }
            };
            ports.extend(port);
        }
        ports
    }

    fn depends_on(
        &mut self,
        name: &str,
        node: &Node,
        path: &str,
        out: &mut BTreeMap<String, Condition>,
    ) {
        const CONDITIONS: &[(&str, Condition)] = &[
            ("started", Condition::Started),
            ("service_started", Condition::Started),
            ("healthy", Condition::Healthy),
            ("service_healthy", Condition::Healthy),
            ("completed_successfully", Condition::CompletedSuccessfully),
            (
                "service_completed_successfully",
                Condition::CompletedSuccessfully,
            ),
        ];
        if let Value::Seq(items) = &node.value {
            for (i, item) in items.iter().enumerate() {
                let ip = index_path(path, i);
                self.record(&ip, item.pos);
                if let Some(dep) = self.text(item, &ip) {
                    self.positions
                        .dep_origin
                        .insert((name.to_owned(), dep.clone()), ip);
                    out.insert(dep, Condition::Started);
                }
            }
            return;
        }
        for (dep, _, value) in self.entries(node, path) {
            let dp = join(path, &dep);
            let condition = match &value.value {
                Value::Null => Some(Condition::Started),
                // The compose long form: `db: {condition: service_healthy}`.
                Value::Map(_) => self
                    .fields(value, &dp, DEPENDS_ON_LONG_KEYS)
                    .and_then(|f| f.get("condition"))
                    .map_or(Some(Condition::Started), |n| {
                        self.choice(n, &join(&dp, "condition"), CONDITIONS)
                    }),
                _ => self.choice(value, &dp, CONDITIONS),
            };
            if let Some(c) = condition {
                self.positions
                    .dep_origin
                    .insert((name.to_owned(), dep.clone()), dp);
                out.insert(dep, c);
            }
        }
    }

    fn health_check(&mut self, node: &Node, path: &str) -> Option<HealthCheck> {
        let f = self.fields(node, path, HEALTH_KEYS)?;
        let p = |k: &str| join(path, k);
        let mut tcp_timeout = None;
        let mut probes = Vec::new();
        if let Some(n) = f.get("command") {
            let (command, mut args) = match &n.value {
                Value::Seq(_) => {
                    let mut all = self.templates(n, &p("command"));
                    if all.is_empty() {
                        self.error(Code::InvalidValue, n.pos, &p("command"), "empty command");
                        (None, Vec::new())
                    } else {
                        let first = all.remove(0);
                        (Some(first), all)
                    }
                }
                _ => (self.template(n, &p("command")), Vec::new()),
            };
            if let Some(a) = f.get("args") {
                args.extend(self.templates(a, &p("args")));
            }
            probes.push(command.map(|command| Probe::Command { command, args }));
        } else if let Some(a) = f.get("args") {
            self.error(
                Code::MissingField,
                a.pos,
                &p("args"),
                "`args` without `command`",
            );
        }
        if let Some(n) = f.get("http") {
            probes.push(
                self.template(n, &p("http"))
                    .map(|http| Probe::Http { http }),
            );
        }
        if let Some(n) = f.get("tcp") {
            let tp = p("tcp");
            let tcp = match &n.value {
                Value::Int(_) | Value::Str(_) => self
                    .port_number(n, &tp)
                    .map(|port| TcpProbe { port, host: None }),
                _ => self.fields(n, &tp, TCP_KEYS).and_then(|tf| {
                    let host = tf
                        .get("host")
                        .and_then(|h| self.template(h, &join(&tp, "host")));
                    tcp_timeout = tf
                        .get("timeout")
                        .and_then(|t| self.duration(t, &join(&tp, "timeout")));
                    match tf.get("port") {
                        Some(pn) => self
                            .port_number(pn, &join(&tp, "port"))
                            .map(|port| TcpProbe { port, host }),
                        None => {
                            self.error(Code::MissingField, n.pos, &tp, "`tcp` needs a `port`");
                            None
                        }
                    }
                }),
            };
            probes.push(tcp.map(|tcp| Probe::Tcp { tcp }));
        }
        let interval = f
            .get("interval")
            .and_then(|n| self.duration(n, &p("interval")));
        let timeout = f
            .get("timeout")
            .and_then(|n| self.duration(n, &p("timeout")));
        let retries = f
            .get("retries")
            .and_then(|n| self.integer::<u32>(n, &p("retries"), "a whole number"));
        let start_period = f
            .get("start_period")
            .and_then(|n| self.duration(n, &p("start_period")));
        if probes.len() != 1 {
            self.error_help(
                Code::InvalidValue,
                node.pos,
                path,
                if probes.is_empty() {
                    "a health check needs `command`, `http` or `tcp`"
                } else {
                    "a health check takes only one of `command`, `http` and `tcp`"
                },
                "e.g. `http: http://localhost:8080/health` or `tcp: {port: 5432}`",
            );
            return None;
        }
        let probe = probes.pop().flatten()?;
        Some(HealthCheck {
            probe,
            interval: interval
                .or(self.settings.health_check_interval)
                .unwrap_or(HealthCheck::DEFAULT_INTERVAL),
            timeout: timeout
                .or(tcp_timeout)
                .unwrap_or(HealthCheck::DEFAULT_TIMEOUT),
            retries: retries.unwrap_or(HealthCheck::DEFAULT_RETRIES),
            start_period: start_period.unwrap_or_default(),
        })
    }

    fn restart(&mut self, node: &Node, path: &str) -> Option<Restart> {
        const POLICIES: &[(&str, RestartPolicy)] = &[
            ("no", RestartPolicy::No),
            ("on-failure", RestartPolicy::OnFailure),
            ("always", RestartPolicy::Always),
            ("unless-stopped", RestartPolicy::UnlessStopped),
        ];
        if let Value::Str(text) = &node.value {
            // Compose's `on-failure:N`: at most N restarts.
            if let Some(n) = text
                .strip_prefix("on-failure:")
                .and_then(|n| n.trim().parse::<u32>().ok())
            {
                return Some(Restart {
                    policy: RestartPolicy::OnFailure,
                    max_restarts: Some(n),
                    ..Restart::default()
                });
            }
            return self.choice(node, path, POLICIES).map(|policy| Restart {
                policy,
                ..Restart::default()
            });
        }
        let f = self.fields(node, path, RESTART_KEYS)?;
        let p = |k: &str| join(path, k);
        let policy = f
            .get("policy")
            .and_then(|n| self.choice(n, &p("policy"), POLICIES))
            .unwrap_or_default();
        let max_restarts = f
            .get("max_restarts")
            .and_then(|n| self.integer::<u32>(n, &p("max_restarts"), "a whole number"));
        let mut backoff = Backoff::default();
        if let Some(n) = f.get("backoff") {
            let bp = p("backoff");
            if let Some(bf) = self.fields(n, &bp, BACKOFF_KEYS) {
                if let Some(d) = bf
                    .get("initial")
                    .and_then(|n| self.duration(n, &join(&bp, "initial")))
                {
                    backoff.initial = d;
                }
                if let Some(d) = bf
                    .get("max")
                    .and_then(|n| self.duration(n, &join(&bp, "max")))
                {
                    backoff.max = d;
                }
                if backoff.max < backoff.initial {
                    self.error(
                        Code::InvalidValue,
                        n.pos,
                        &bp,
                        "backoff `max` is shorter than `initial`",
                    );
                }
            }
        }
        let on_unhealthy = f
            .get("on_unhealthy")
            .and_then(|n| self.boolean(n, &p("on_unhealthy")))
            .unwrap_or(false);
        Some(Restart {
            policy,
            max_restarts,
            backoff,
            on_unhealthy,
        })
    }

    fn stop(&mut self, node: &Node, path: &str) -> Option<Stop> {
        let f = self.fields(node, path, STOP_KEYS)?;
        let mut stop = Stop::default();
        if let Some(n) = f.get("signal") {
            let sp = join(path, "signal");
            if let Some(s) = self.text(n, &sp) {
                let upper = s.to_ascii_uppercase();
                let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
                if SIGNALS.contains(&bare) {
                    stop.signal = format!("SIG{bare}");
                } else {
                    self.error_help(
                        Code::InvalidValue,
                        n.pos,
                        &sp,
                        format!("`{s}` is not a signal name"),
                        format!("use one of: SIG{}", SIGNALS.join(", SIG")),
                    );
                }
            }
        }
        if let Some(d) = f
            .get("timeout")
            .and_then(|n| self.duration(n, &join(path, "timeout")))
        {
            stop.timeout = d;
        }
        Some(stop)
    }
}

/// `ADDRESS/PREFIX` with a prefix that fits the address family.
/// The value under `key` of a mapping node, without reporting anything.
fn map_get<'n>(node: &'n Node, key: &str) -> Option<&'n Node> {
    let Value::Map(entries) = &node.value else {
        return None;
    };
    entries
        .iter()
        .find(|(k, _)| matches!(&k.value, Value::Str(s) if s.as_str() == key))
        .map(|(_, v)| v)
}

fn path_tail(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}

fn check_cidr(text: &str) -> Result<(), String> {
    let (address, prefix) = text
        .split_once('/')
        .ok_or_else(|| "no `/PREFIX`".to_owned())?;
    let address: std::net::IpAddr = address
        .parse()
        .map_err(|_| format!("`{address}` is not an IP address"))?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    match prefix.parse::<u8>() {
        Ok(p) if p <= max => Ok(()),
        _ => Err(format!("the prefix must be 0 to {max}")),
    }
}

/// Reads at most `MAX_FILE_BYTES` + 1 bytes, so a huge file is refused without reading it all.
pub(crate) fn read_capped(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    file.take(crate::MAX_FILE_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| e.to_string())?;
    if buf.len() as u64 > crate::MAX_FILE_BYTES {
        return Err(format!(
            "the file is larger than the {} MiB limit",
            crate::MAX_FILE_BYTES >> 20
        ));
    }
    String::from_utf8(buf).map_err(|e| format!("not UTF-8 text: {e}"))
}

#[cfg(test)]
mod positions_tests {
    use super::*;

    #[test]
    fn positions_keep_paths_in_one_string_and_answer_with_the_nearest_parent() {
        let mut p = Positions::with_capacity(4);
        let at = |line| Pos {
            line,
            column: 1,
            ..Pos::default()
        };
        p.record("services", true, "api", at(1));
        p.record("", true, "services", at(2));
        p.record("services.api.ports[0]", false, "", at(3));
        // Recorded again: the later position wins.
        p.record("services.api", false, "", at(4));
        let line = |path: &str| p.find(path).map(|pos| pos.line);
        assert_eq!(line("services.api"), Some(4));
        assert_eq!(line("services"), Some(2));
        assert_eq!(line("services.api.ports[0].port"), Some(3));
        assert_eq!(line("services.api.env.X"), Some(4));
        assert_eq!(line("other"), None);
        assert!(p.is_recorded("services.api.ports[0].port"));
        assert!(!p.is_recorded("services.api.env"));
    }

    /// Paths whose hashes are equal are told apart by their text.
    #[test]
    fn positions_with_the_same_hash_are_kept_apart() {
        let mut p = Positions::default();
        let at = |line| Pos {
            line,
            ..Pos::default()
        };
        for (path, line) in [("a.x", 1), ("b.y", 2), ("a.x", 3), ("c", 4)] {
            let start = p.text.len();
            p.text.push_str(path);
            p.insert(start, 7, at(line));
        }
        let line = |path: &str| {
            p.entry(7, path)
                .and_then(|i| p.entries.get(i))
                .map(|e| e.2.line)
        };
        assert_eq!(
            (line("a.x"), line("b.y"), line("c")),
            (Some(3), Some(2), Some(4))
        );
        assert_eq!(line("d"), None);
        assert_eq!(p.text, "a.xb.yc");
    }
}
