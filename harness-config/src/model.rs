//! The typed project: what the user asked for, normalized.
//!
//! Every compat or shorthand form is gone here: `dependencies:` lists and service references are
//! folded into [`Service::depends_on`], durations are [`Duration`]s, ports are [`Port`]s, variables
//! are substituted. Serializing gives a services.yaml that loads back to the same model
//! (`harness config show`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::duration::serde_duration;
use crate::template::Template;

mod devloop;
pub use devloop::{Logging, Proxy, ProxyPort, Watch, WatchAction};

/// Plain strings are substituted at load too, so `$` must come back as `$$` to load unchanged.
mod escaped {
    use std::path::PathBuf;

    use serde::Serializer;

    use crate::template::escape_dollars;

    pub fn string<S: Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&escape_dollars(v))
    }

    pub fn option<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => string(v, s),
            None => s.serialize_none(),
        }
    }

    pub fn path<S: Serializer>(v: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => string(&v.to_string_lossy(), s),
            None => s.serialize_none(),
        }
    }

    pub fn list<S: Serializer>(v: &[String], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|x| escape_dollars(x)))
    }
}

/// A whole services.yaml.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Project {
    /// Project name; defaults to the name of the directory holding services.yaml.
    #[serde(serialize_with = "escaped::string")]
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "escaped::option")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "escaped::option")]
    pub description: Option<String>,
    /// ADR-007 `settings:`; already applied to every service as its defaults.
    #[serde(skip_serializing_if = "Settings::is_empty")]
    pub settings: Settings,
    /// SSH hosts by name. Nodes of `lan` networks are added here under their `name`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub hosts: BTreeMap<String, Host>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, Network>,
    /// The daemon's one-port HTTP proxy to the services, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<Proxy>,
    pub services: BTreeMap<String, Service>,
}

/// A machine reached over SSH.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Host {
    #[serde(serialize_with = "escaped::string")]
    pub address: String,
    pub port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "escaped::option")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "escaped::path")]
    pub identity_file: Option<PathBuf>,
    /// A jump host: another hosts entry or `user@host[:port]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "escaped::option")]
    pub jump: Option<String>,
    pub known_hosts: KnownHosts,
    /// Whether `user:` services may run here through sudo.
    pub sudo: bool,
    /// The Docker engine to use for docker services on this host (e.g. `unix:///run/docker.sock`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "escaped::option")]
    pub docker_host: Option<String>,
}

/// How to treat an unknown SSH host key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum KnownHosts {
    /// Refuse hosts whose key is not already known.
    #[default]
    Strict,
    /// Record the key of a host seen for the first time; refuse a changed key.
    AcceptNew,
}

/// An ADR-007 network.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Network {
    #[serde(rename = "type")]
    pub kind: NetworkKind,
    /// The network's address range (`10.0.0.0/24`), validated as CIDR; kept for the networking
    /// layer, which does not exist yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "escaped::option")]
    pub subnet: Option<String>,
    /// `wireguard`: recorded, not read: harness generates each member's configuration itself
    /// (docs/adr/0034-wireguard-mesh.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "escaped::path")]
    pub config_path: Option<PathBuf>,
    /// `wireguard`: the UDP port every member listens on (default [`WIREGUARD_PORT`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen_port: Option<u16>,
    /// `wireguard`: the mesh interfaces' MTU (default [`WIREGUARD_MTU`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    /// `wireguard`: the members, in address order; `host: local` is the daemon's machine.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NetworkNode>,
}

/// The `listen_port` of a `wireguard` network that does not set one.
pub const WIREGUARD_PORT: u16 = 51820;
/// The `mtu` of a `wireguard` network that does not set one (wg-quick's default).
pub const WIREGUARD_MTU: u16 = 1420;
/// The `host` of a `wireguard` network node that stands for the daemon's machine.
pub const LOCAL_NODE: &str = "local";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkKind {
    Local,
    Lan,
    /// A WireGuard mesh among `nodes`, brought up by the daemon (docs/adr/0034-wireguard-mesh.md).
    Wireguard,
}

/// ADR-007 top-level `settings:`: defaults for every service.
#[derive(Clone, Debug, PartialEq, Default, Serialize)]
pub struct Settings {
    /// `trace`, `debug`, `info`, `warn` or `error`; recorded, not applied (the daemon's log
    /// level is its own setting).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    /// Interval of health checks that set none.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "serde_duration::option"
    )]
    pub health_check_interval: Option<Duration>,
    /// `startup_timeout` of services that set none.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "serde_duration::option"
    )]
    pub startup_timeout: Option<Duration>,
    /// Stop timeout of services that set none.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "serde_duration::option"
    )]
    pub shutdown_timeout: Option<Duration>,
}

impl Settings {
    pub fn is_empty(&self) -> bool {
        self == &Settings::default()
    }
}

/// A machine of a `lan` network, in ADR-007 spelling.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NetworkNode {
    #[serde(serialize_with = "escaped::string")]
    pub host: String,
    #[serde(serialize_with = "escaped::string")]
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "escaped::option")]
    pub ssh_user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "escaped::path")]
    pub ssh_key: Option<PathBuf>,
    /// ADR-007: packages may be deployed to this node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package_deploy: Option<bool>,
}

/// How a service runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    /// A local process (possibly as another user via sudo).
    Process,
    /// A container, on the local engine or a host's `docker_host`.
    Docker,
    /// A process on an SSH host.
    Remote,
    /// A deployed package on a host.
    Package,
}

/// One service.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Service {
    #[serde(rename = "type")]
    pub kind: ServiceKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary: Option<Template>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<Template>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Command>,
    /// Docker: replaces the image's entrypoint (`command` becomes its arguments). Fixed at
    /// load: no service references.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[serde(serialize_with = "escaped::list")]
    pub entrypoint: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<Template>,
    /// Environment, with `env_file` contents merged under the `env:` entries.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, Template>,
    /// A hosts entry; `None` is this machine.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "escaped::option")]
    pub host: Option<String>,
    /// Run as this user, through sudo.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "escaped::option")]
    pub user: Option<String>,
    /// ADR-007 network name, kept for reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "escaped::option")]
    pub network: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "escaped::option")]
    pub image: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[serde(serialize_with = "escaped::list")]
    pub volumes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "escaped::option")]
    pub package: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "escaped::option")]
    pub version: Option<String>,
    /// Package: where it is installed on the host (ADR-007).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "escaped::option")]
    pub install_path: Option<String>,
    /// Explicit dependencies (from `dependencies:` or `depends_on:`) and implicit `started`
    /// ones from service references.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub depends_on: BTreeMap<String, Condition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    pub restart: Restart,
    pub stop: Stop,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "serde_duration::option"
    )]
    pub startup_timeout: Option<Duration>,
    /// The proxy routes `<subdomain>.localhost` here; default: the service's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "escaped::option")]
    pub subdomain: Option<String>,
    /// The port the proxy routes to; default: the first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_port: Option<ProxyPort>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch: Option<Watch>,
    #[serde(skip_serializing_if = "is_default_logging")]
    pub logging: Logging,
}

fn is_default_logging(l: &Logging) -> bool {
    *l == Logging::default()
}

impl Service {
    /// The ports bound on the service's host, for conflict checks: a container's ports are
    /// published only when `published` says so; a process binds its port itself.
    pub fn host_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.ports.iter().filter_map(move |p| match self.kind {
            ServiceKind::Docker => p.published,
            _ => Some(p.published.unwrap_or(p.port)),
        })
    }

    /// Every service reference in the service's templates.
    pub fn templates(&self) -> Vec<&Template> {
        let mut out: Vec<&Template> = Vec::new();
        out.extend(self.binary.iter());
        out.extend(self.args.iter());
        if let Some(cmd) = &self.command {
            match cmd {
                Command::Shell(t) => out.push(t),
                Command::Argv(v) => out.extend(v.iter()),
            }
        }
        out.extend(self.working_dir.iter());
        out.extend(self.env.values());
        if let Some(hc) = &self.health_check {
            match &hc.probe {
                Probe::Command { command, args } => {
                    out.push(command);
                    out.extend(args.iter());
                }
                Probe::Http { http } => out.push(http),
                Probe::Tcp { tcp } => out.extend(tcp.host.iter()),
            }
        }
        out
    }
}

/// `command:` as a shell string (run by `sh -c`) or an argv list.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Command {
    Shell(Template),
    Argv(Vec<Template>),
}

/// A port the service listens on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Port {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "escaped::option")]
    pub name: Option<String>,
    /// The port the service listens on (inside the container for docker).
    pub port: u16,
    /// The host port it is published on (`"8080:80"` publishes 80 on 8080).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub published: Option<u16>,
}

/// When a dependency counts as ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// The process is running.
    #[default]
    Started,
    /// Its health check passes.
    Healthy,
    /// It exited with status 0 (one-shot jobs such as migrations).
    CompletedSuccessfully,
}

/// How to tell a service works.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HealthCheck {
    #[serde(flatten)]
    pub probe: Probe,
    #[serde(with = "serde_duration")]
    pub interval: Duration,
    #[serde(with = "serde_duration")]
    pub timeout: Duration,
    /// Consecutive failures before the service counts as unhealthy.
    pub retries: u32,
    /// Failures during this time after start do not count.
    #[serde(with = "serde_duration")]
    pub start_period: Duration,
}

impl HealthCheck {
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
    pub const DEFAULT_RETRIES: u32 = 3;
}

/// The check itself.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Probe {
    /// Run a command where the service runs; exit 0 is healthy.
    Command {
        command: Template,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        args: Vec<Template>,
    },
    /// GET the URL; a 2xx or 3xx answer is healthy.
    Http { http: Template },
    /// Connect to the port.
    Tcp { tcp: TcpProbe },
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TcpProbe {
    pub port: u16,
    /// Defaults to the service's own address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<Template>,
}

/// What to do when the service exits.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Restart {
    pub policy: RestartPolicy,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_restarts: Option<u32>,
    pub backoff: Backoff,
    /// Also restart (through the backoff) when the health check turns unhealthy.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub on_unhealthy: bool,
}

impl Default for Restart {
    fn default() -> Self {
        Restart {
            policy: RestartPolicy::No,
            max_restarts: None,
            backoff: Backoff::default(),
            on_unhealthy: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    No,
    OnFailure,
    Always,
    UnlessStopped,
}

/// Delay between restarts: doubles from `initial` up to `max`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Backoff {
    #[serde(with = "serde_duration")]
    pub initial: Duration,
    #[serde(with = "serde_duration")]
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

/// How to stop the service: `signal`, then SIGKILL after `timeout`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stop {
    /// Signal name, e.g. `SIGTERM`, `SIGINT`.
    pub signal: String,
    #[serde(with = "serde_duration")]
    pub timeout: Duration,
}

impl Default for Stop {
    fn default() -> Self {
        Stop {
            signal: "SIGTERM".into(),
            timeout: Duration::from_secs(10),
        }
    }
}
