//! The local development loop's settings: the one-port proxy, file watching, log rotation.

use std::time::Duration;

use serde::Serialize;

use crate::duration::serde_duration;

/// `proxy:` — the daemon's one HTTP port that routes `<svc>.localhost` to services.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Proxy {
    pub port: u16,
    /// The address the port is bound on.
    pub bind: String,
}

impl Proxy {
    pub const DEFAULT_PORT: u16 = 7080;
    pub const DEFAULT_BIND: &'static str = "127.0.0.1";
}

impl Default for Proxy {
    fn default() -> Self {
        Proxy {
            port: Proxy::DEFAULT_PORT,
            bind: Proxy::DEFAULT_BIND.to_owned(),
        }
    }
}

/// Which of a service's ports the proxy routes to (`proxy_port:`): a number or a port's name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ProxyPort {
    Number(u16),
    Name(String),
}

/// `watch:` — what a change of the service's files does (Compose `develop.watch` as the model).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Watch {
    /// Files or folders, relative to the folder of services.yaml; default: the service's
    /// `working_dir`, else that folder.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// gitignore-style patterns that cause nothing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ignore: Vec<String>,
    pub action: WatchAction,
    /// A burst of changes closer together than this is one change.
    #[serde(with = "serde_duration")]
    pub debounce: Duration,
    /// Honour `.gitignore` files (and `.git/` is never watched).
    pub gitignore: bool,
}

impl Watch {
    pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(100);
}

impl Default for Watch {
    fn default() -> Self {
        Watch {
            paths: Vec::new(),
            ignore: Vec::new(),
            action: WatchAction::Restart,
            debounce: Watch::DEFAULT_DEBOUNCE,
            gitignore: true,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WatchAction {
    /// Restart the service.
    #[default]
    Restart,
    /// Watch, record the change as an event, do nothing else.
    None,
}

/// `logging:` — rotation of the service's log file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
pub struct Logging {
    /// Rotate when the file passes this many bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u64>,
    /// Rotated files kept besides the current one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_files: Option<u32>,
}
