//! Operating the daemon: token scopes and named tokens, resource samples (`top`), and the daemon's
//! own figures (`daemon.stats`, `daemon.config`, `daemon.env`). ADR 0037.

use std::collections::BTreeMap;

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a token may do. Ordered: each scope includes the ones before it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Look: status, logs, events, health, top, daemon status and stats.
    Read,
    /// Also act on services: start, stop, restart, scale, watch, clear logs.
    Operate,
    /// Everything: exec, deploy, tokens, the daemon's environment, daemon stop, registry writes.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Operate, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Operate => "operate",
            Scope::Admin => "admin",
        }
    }

    /// Whether a token of this scope may call a method that needs `needed`.
    pub fn allows(self, needed: Scope) -> bool {
        self >= needed
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Scope::Read),
            "operate" => Ok(Scope::Operate),
            "admin" => Ok(Scope::Admin),
            other => Err(format!(
                "unknown scope {other:?}: expected read, operate or admin"
            )),
        }
    }
}

/// The name the owner's token (`$HARNESS_HOME/token`) acts under.
pub const OWNER: &str = "owner";

/// `token.create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TokenCreateParams {
    /// 1-64 of `A-Z a-z 0-9 . _ -`; not `owner`; unique.
    pub name: String,
    pub scope: Scope,
    /// Seconds until the token stops working; none: until revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_secs: Option<u64>,
}

/// A named token as `token.list` shows it: never its secret or hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TokenInfo {
    pub name: String,
    pub scope: Scope,
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// The token that created it.
    pub created_by: String,
    /// Whether `expires_at` has passed (an expired token is refused; revoke it to remove it).
    #[serde(default)]
    pub expired: bool,
}

/// `token.create`'s result: the only time the secret is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TokenCreateResult {
    pub token: TokenInfo,
    /// The bearer secret. Stored only as its SHA-256; it cannot be shown again.
    pub secret: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TokenListResult {
    pub tokens: Vec<TokenInfo>,
}

/// `token.revoke`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TokenRevokeParams {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TokenRevokeResult {
    pub name: String,
    /// Open connections of that token that were closed.
    pub connections_closed: u64,
}

/// `data` of a `forbidden` error: which scope the method needs and which the token has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ScopeRefusal {
    pub method: String,
    pub required_scope: Scope,
    pub token: String,
    pub token_scope: Scope,
}

// --- top -----------------------------------------------------------------------------------------

/// `top`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TopParams {
    /// Only this project; none: every project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
}

/// One service's resource usage. Every figure is `None` when it could not be read (host
/// unreachable, engine down, process gone): unknown, never zero.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ResourceSample {
    pub project: String,
    pub service: String,
    /// `local`, `ssh:HOST`, `docker:ENGINE`.
    pub place: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Percent of one core over the last sampling interval (200 = two cores busy).
    #[serde(default)]
    pub cpu_percent: Option<f64>,
    #[serde(default)]
    pub rss_bytes: Option<u64>,
    #[serde(default)]
    pub fds: Option<u64>,
    #[serde(default)]
    pub threads: Option<u64>,
    #[serde(default)]
    pub uptime_secs: Option<u64>,
    /// When it was taken.
    pub sampled_at: Timestamp,
    /// Why figures are missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TopResult {
    pub services: Vec<ResourceSample>,
    /// Milliseconds the sample took.
    pub elapsed_ms: u64,
}

// --- daemon stats, config, env ---------------------------------------------------------------------

/// SSH connections of the daemon to one host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SshHostStats {
    pub host: String,
    pub masters: u64,
    pub sessions: u64,
}

/// `daemon.stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DaemonStatsResult {
    pub uptime_ms: u64,
    pub requests_total: u64,
    /// Over the daemon's life.
    pub requests_per_sec: f64,
    pub events_total: u64,
    pub events_per_sec: f64,
    pub subscriptions: u64,
    pub connections: u64,
    pub connections_limit: u64,
    pub fds_used: u64,
    pub fds_limit: u64,
    /// Services the fd budget allows (ADR on fds).
    pub service_capacity: u64,
    pub rss_bytes: u64,
    pub store_bytes: u64,
    pub events_retained: u64,
    pub log_bytes: u64,
    pub services: u64,
    pub ssh: Vec<SshHostStats>,
}

/// Where a setting's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SettingSource {
    Flag,
    Env,
    ConfigFile,
    Default,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Setting {
    pub name: String,
    pub value: String,
    pub source: SettingSource,
    /// The flag, variable or file that set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DaemonConfigResult {
    pub settings: Vec<Setting>,
}

/// `daemon.env`: the daemon's environment, secret-looking values masked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DaemonEnvResult {
    pub env: BTreeMap<String, String>,
}
