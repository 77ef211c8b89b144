//! `proxy:`, `subdomain:`, `proxy_port:`, `watch:`, `logging:` (the development loop).

use super::{Decoder, join};
use crate::diagnostic::Code;
use crate::model::{Logging, Proxy, ProxyPort, Watch, WatchAction};
use crate::node::{Node, Value};

pub(crate) const PROXY_KEYS: &[&str] = &["port", "bind"];
pub(crate) const WATCH_KEYS: &[&str] = &["paths", "ignore", "action", "debounce", "gitignore"];
pub(crate) const LOGGING_KEYS: &[&str] = &["max_size", "max_files"];

impl Decoder<'_> {
    /// `proxy: true`, `proxy: 8080` or `proxy: {port, bind}`.
    pub(super) fn proxy(&mut self, node: &Node, path: &str) -> Option<Proxy> {
        match &node.value {
            Value::Bool(true) | Value::Null => return Some(Proxy::default()),
            Value::Bool(false) => return None,
            Value::Int(_) => {
                return self.port_number(node, path).map(|port| Proxy {
                    port,
                    ..Proxy::default()
                });
            }
            _ => {}
        }
        let f = self.fields(node, path, PROXY_KEYS)?;
        let mut proxy = Proxy::default();
        if let Some(port) = f
            .get("port")
            .and_then(|n| self.port_number(n, &join(path, "port")))
        {
            proxy.port = port;
        }
        if let Some(n) = f.get("bind") {
            let bp = join(path, "bind");
            if let Some(bind) = self.text(n, &bp) {
                if bind.parse::<std::net::IpAddr>().is_ok() {
                    proxy.bind = bind;
                } else {
                    self.error_help(
                        Code::InvalidValue,
                        n.pos,
                        &bp,
                        format!("`{bind}` is not an IP address"),
                        "write 127.0.0.1 (this machine only, the default) or 0.0.0.0",
                    );
                }
            }
        }
        Some(proxy)
    }

    /// A DNS label: the proxy routes `<subdomain>.localhost`.
    pub(super) fn subdomain(&mut self, node: &Node, path: &str) -> Option<String> {
        let s = self.text(node, path)?;
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !ok {
            self.error_help(
                Code::InvalidValue,
                node.pos,
                path,
                format!("`{s}` is not a host name label"),
                "use letters, digits and `-` (the proxy routes `<subdomain>.localhost`)",
            );
            return None;
        }
        Some(s.to_ascii_lowercase())
    }

    pub(super) fn proxy_port(&mut self, node: &Node, path: &str) -> Option<ProxyPort> {
        match &node.value {
            Value::Int(_) => self.port_number(node, path).map(ProxyPort::Number),
            _ => {
                let s = self.text(node, path)?;
                Some(match s.parse::<u16>() {
                    Ok(n) if n > 0 => ProxyPort::Number(n),
                    _ => ProxyPort::Name(s),
                })
            }
        }
    }

    /// `watch: true`, `watch: [paths…]` or the full mapping.
    pub(super) fn watch(&mut self, node: &Node, path: &str) -> Option<Watch> {
        match &node.value {
            Value::Bool(true) | Value::Null => return Some(Watch::default()),
            Value::Bool(false) => return None,
            Value::Seq(_) => {
                return Some(Watch {
                    paths: self.texts(node, path),
                    ..Watch::default()
                });
            }
            _ => {}
        }
        let f = self.fields(node, path, WATCH_KEYS)?;
        let p = |k: &str| join(path, k);
        let mut watch = Watch::default();
        if let Some(n) = f.get("paths") {
            watch.paths = self.texts(n, &p("paths"));
        }
        if let Some(n) = f.get("ignore") {
            watch.ignore = self.texts(n, &p("ignore"));
        }
        if let Some(n) = f.get("action") {
            let ap = p("action");
            if matches!(&n.value, Value::Str(s) if s == "sync" || s == "sync+restart") {
                self.error_help(
                    Code::InvalidValue,
                    n.pos,
                    &ap,
                    "`sync` is not supported: harness runs services from their own files, so \
                     there is nothing to copy",
                    "use `action: restart` (the default) or `action: none`",
                );
            } else if let Some(a) = self.choice(
                n,
                &ap,
                &[
                    ("restart", WatchAction::Restart),
                    ("none", WatchAction::None),
                ],
            ) {
                watch.action = a;
            }
        }
        if let Some(d) = f
            .get("debounce")
            .and_then(|n| self.duration(n, &p("debounce")))
        {
            watch.debounce = d;
        }
        if let Some(b) = f
            .get("gitignore")
            .and_then(|n| self.boolean(n, &p("gitignore")))
        {
            watch.gitignore = b;
        }
        Some(watch)
    }

    pub(super) fn logging(&mut self, node: &Node, path: &str) -> Option<Logging> {
        let f = self.fields(node, path, LOGGING_KEYS)?;
        let mut logging = Logging::default();
        if let Some(n) = f.get("max_size") {
            logging.max_size = self.size(n, &join(path, "max_size"));
        }
        if let Some(n) = f.get("max_files") {
            logging.max_files = self.integer::<u32>(n, &join(path, "max_files"), "a whole number");
        }
        Some(logging)
    }

    /// Bytes: `1048576`, `512k`, `10m`, `1g` (powers of 1024; `kb`, `mib`... also read).
    fn size(&mut self, node: &Node, path: &str) -> Option<u64> {
        let text = match &node.value {
            Value::Int(i) => i.to_string(),
            _ => self.text(node, path)?,
        };
        let t = text.trim().to_ascii_lowercase();
        let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(digits);
        let shift = match unit.trim() {
            "" | "b" => Some(0),
            "k" | "kb" | "kib" => Some(10),
            "m" | "mb" | "mib" => Some(20),
            "g" | "gb" | "gib" => Some(30),
            _ => None,
        };
        match (num.parse::<u64>().ok(), shift) {
            (Some(n), Some(s)) if n > 0 => n.checked_mul(1 << s),
            _ => {
                self.error_help(
                    Code::InvalidValue,
                    node.pos,
                    path,
                    format!("`{text}` is not a size"),
                    "write a number of bytes or e.g. \"512k\", \"10m\", \"1g\"",
                );
                None
            }
        }
    }
}
