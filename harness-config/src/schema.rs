//! The services.yaml file format as types, for the JSON Schema that editors use
//! (`harness config schema`).
//!
//! These mirror what the decoder accepts, shorthands and ADR-007 forms included; a test keeps
//! their keys equal to the decoder's.

#![allow(dead_code)]

use std::collections::BTreeMap;

use schemars::JsonSchema;

/// The JSON Schema of services.yaml.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(File);
    let mut value = serde_json::to_value(schema).unwrap_or_default();
    // Extension keys (`x-anything`) are allowed wherever keys are checked, as in Compose.
    let extensions = serde_json::json!({ "^x-": {} });
    value["patternProperties"] = extensions.clone();
    if let Some(defs) = value.get_mut("$defs").and_then(|d| d.as_object_mut()) {
        for def in defs.values_mut() {
            if def.get("additionalProperties") == Some(&serde_json::Value::Bool(false)) {
                def["patternProperties"] = extensions.clone();
            }
        }
    }
    value
}

/// A harness services.yaml.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields, title = "harness services.yaml")]
struct File {
    /// Format version, e.g. "1.0".
    version: Option<Scalar>,
    /// Project name; defaults to the directory name.
    name: Option<String>,
    description: Option<String>,
    /// ADR-007 defaults for every service.
    settings: Option<Settings>,
    /// SSH hosts by name.
    hosts: Option<BTreeMap<String, Host>>,
    /// ADR-007 networks.
    networks: Option<BTreeMap<String, Network>>,
    /// Files of KEY=VALUE lines that feed `${VAR}` substitution.
    env_file: Option<OneOrMany>,
    /// The daemon's one-port HTTP proxy: `true`, a port, or `{port, bind}`.
    proxy: Option<ProxySpec>,
    services: BTreeMap<String, Service>,
}

/// ADR-007 `settings:`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct Settings {
    /// Recorded only: the daemon's log level is its own setting.
    log_level: Option<LogLevel>,
    /// Interval of health checks that set none.
    health_check_interval: Option<DurationSpec>,
    /// `startup_timeout` of services that set none.
    startup_timeout: Option<DurationSpec>,
    /// Stop timeout of services that set none.
    shutdown_timeout: Option<DurationSpec>,
}

#[derive(JsonSchema)]
#[schemars(rename_all = "lowercase")]
enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(JsonSchema)]
#[schemars(untagged)]
enum ProxySpec {
    On(bool),
    Port(u16),
    Full(Proxy),
}

/// Routes `http://<svc>.localhost:PORT` to the services.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct Proxy {
    /// Default 7080.
    port: Option<u16>,
    /// Default 127.0.0.1.
    bind: Option<String>,
}

#[derive(JsonSchema)]
#[schemars(untagged)]
enum WatchSpec {
    On(bool),
    Paths(Vec<String>),
    Full(Watch),
}

/// What a change of the service's files does.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct Watch {
    /// Default: the working_dir, else the folder of services.yaml.
    paths: Option<Vec<String>>,
    /// gitignore-style patterns.
    ignore: Option<Vec<String>>,
    action: Option<WatchAction>,
    /// Default 100ms.
    debounce: Option<DurationSpec>,
    /// Honour .gitignore files (default true).
    gitignore: Option<bool>,
}

#[derive(JsonSchema)]
#[schemars(rename_all = "lowercase")]
enum WatchAction {
    Restart,
    None,
}

/// Rotation of the service's log file.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct Logging {
    /// Bytes, or "512k", "10m", "1g".
    max_size: Option<Scalar>,
    max_files: Option<u32>,
}

#[derive(JsonSchema)]
#[schemars(untagged)]
enum Scalar {
    Text(String),
    Number(f64),
}

#[derive(JsonSchema)]
#[schemars(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// A machine reached over SSH.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct Host {
    address: String,
    /// SSH port, default 22.
    port: Option<u16>,
    user: Option<String>,
    identity_file: Option<String>,
    /// A jump host: another hosts entry or user@host[:port].
    jump: Option<String>,
    known_hosts: Option<KnownHosts>,
    /// Whether services with `user:` may run here via sudo (default true).
    sudo: Option<bool>,
    /// Docker engine for docker services on this host.
    docker_host: Option<String>,
}

#[derive(JsonSchema)]
#[schemars(rename_all = "kebab-case")]
enum KnownHosts {
    Strict,
    AcceptNew,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct Network {
    #[schemars(rename = "type")]
    kind: Option<NetworkKind>,
    /// ADDRESS/PREFIX, e.g. 10.10.0.0/24.
    subnet: Option<String>,
    /// `wireguard` networks: recorded, not read (harness generates each member's configuration).
    config_path: Option<String>,
    /// Members; in a `wireguard` network `host: local` is the daemon's machine and other hosts
    /// name a `hosts:` entry or an address. Mesh addresses are given in this order.
    nodes: Option<Vec<NetworkNode>>,
    /// `wireguard` networks: the UDP port each member listens on (default 51820).
    listen_port: Option<u16>,
    /// `wireguard` networks: the interfaces' MTU, 1280-9000 (default 1420).
    mtu: Option<u16>,
}

#[derive(JsonSchema)]
#[schemars(rename_all = "lowercase")]
enum NetworkKind {
    Local,
    Lan,
    /// A WireGuard mesh among `nodes`, brought up by the daemon (needs `subnet` and `nodes`).
    Wireguard,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct NetworkNode {
    host: String,
    name: Option<String>,
    ssh_user: Option<String>,
    ssh_key: Option<String>,
    /// Packages may be deployed to this node.
    package_deploy: Option<bool>,
}

/// A service. Strings may hold `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR:+alt}`,
/// `${VAR:?message}` (Compose's forms), `$$`, and service references `${svc.ip}`,
/// `${svc.port}`, `${svc.host}`, `${svc.ports.NAME}`, `${svc.endpoints}`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct Service {
    /// Inferred when absent: image → docker, package → package, host → remote, else process.
    #[schemars(rename = "type")]
    kind: Option<ServiceKind>,
    binary: Option<String>,
    args: Option<Vec<Scalar>>,
    /// A shell string (run by sh -c) or an argv list.
    command: Option<OneOrMany>,
    /// Docker: replaces the image's entrypoint; `command` gives its arguments.
    entrypoint: Option<OneOrMany>,
    working_dir: Option<String>,
    env: Option<Env>,
    env_file: Option<OneOrMany>,
    /// A hosts entry, or `local` (default).
    host: Option<String>,
    /// Run as this user via sudo.
    user: Option<String>,
    /// ADR-007 network name.
    network: Option<String>,
    image: Option<String>,
    ports: Option<Vec<PortSpec>>,
    volumes: Option<Vec<String>>,
    package: Option<String>,
    version: Option<Scalar>,
    /// Package: where it is installed on the host.
    install_path: Option<String>,
    /// Start this service only when one of these profiles is active (`--profile`).
    profiles: Option<Vec<String>>,
    /// Run N instances NAME-1..NAME-N (`${NAME.endpoints}` lists them all).
    replicas: Option<u32>,
    /// Services started before this one (condition `started`).
    dependencies: Option<Vec<String>>,
    depends_on: Option<DependsOn>,
    health_check: Option<HealthCheck>,
    restart: Option<RestartSpec>,
    stop: Option<Stop>,
    /// ADR-007 name of `stop.timeout`.
    shutdown_timeout: Option<DurationSpec>,
    startup_timeout: Option<DurationSpec>,
    /// The proxy routes `<subdomain>.localhost` here (default: the service's name).
    subdomain: Option<String>,
    /// The port (number or name) the proxy routes to (default: the first).
    proxy_port: Option<Scalar>,
    watch: Option<WatchSpec>,
    logging: Option<Logging>,
}

#[derive(JsonSchema)]
#[schemars(rename_all = "lowercase")]
enum ServiceKind {
    Process,
    Docker,
    Remote,
    Package,
}

#[derive(JsonSchema)]
#[schemars(untagged)]
enum Env {
    Map(BTreeMap<String, Option<Scalar>>),
    /// NAME=value items.
    List(Vec<String>),
}

#[derive(JsonSchema)]
#[schemars(untagged)]
enum PortSpec {
    Number(u16),
    /// "8080" or "published:port", e.g. "8080:80".
    Text(String),
    Full(Port),
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct Port {
    /// For `${svc.ports.NAME}`.
    name: Option<String>,
    port: PortNumber,
    published: Option<PortNumber>,
}

/// A port number, or text that becomes one after substitution (`${API_PORT:-8080}`).
#[derive(JsonSchema)]
#[schemars(untagged)]
enum PortNumber {
    Number(u16),
    Text(String),
}

#[derive(JsonSchema)]
#[schemars(untagged)]
enum DependsOn {
    List(Vec<String>),
    Map(BTreeMap<String, DependencySpec>),
}

#[derive(JsonSchema)]
#[schemars(untagged)]
enum DependencySpec {
    Condition(Condition),
    Long(LongDependency),
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct LongDependency {
    condition: Condition,
}

#[derive(JsonSchema)]
#[schemars(rename_all = "snake_case")]
enum Condition {
    Started,
    Healthy,
    CompletedSuccessfully,
    ServiceStarted,
    ServiceHealthy,
    ServiceCompletedSuccessfully,
}

/// One of `command` (+ `args`), `http` or `tcp`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct HealthCheck {
    /// With no args, run through sh -c.
    command: Option<OneOrMany>,
    args: Option<Vec<Scalar>>,
    /// URL to GET; 2xx/3xx is healthy.
    http: Option<String>,
    tcp: Option<TcpSpec>,
    interval: Option<DurationSpec>,
    timeout: Option<DurationSpec>,
    retries: Option<u32>,
    start_period: Option<DurationSpec>,
}

#[derive(JsonSchema)]
#[schemars(untagged)]
enum TcpSpec {
    Port(PortNumber),
    Full(Tcp),
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct Tcp {
    port: PortNumber,
    host: Option<String>,
    timeout: Option<DurationSpec>,
}

/// "2s", "500ms", "1m30s", or an integer number of seconds.
#[derive(JsonSchema)]
#[schemars(untagged)]
enum DurationSpec {
    Seconds(u64),
    Text(#[schemars(regex(pattern = r"^\s*([0-9.]+(ns|us|µs|ms|s|m|h))+\s*$"))] String),
}

#[derive(JsonSchema)]
#[schemars(untagged)]
enum RestartSpec {
    Policy(RestartPolicy),
    /// Compose's `on-failure:N`: at most N restarts.
    OnFailureCount(#[schemars(regex(pattern = r"^on-failure:[0-9]+$"))] String),
    Full(Restart),
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct Restart {
    policy: Option<RestartPolicy>,
    max_restarts: Option<u32>,
    backoff: Option<Backoff>,
    /// Also restart when the health check turns unhealthy.
    on_unhealthy: Option<bool>,
}

#[derive(JsonSchema)]
#[schemars(rename_all = "kebab-case")]
enum RestartPolicy {
    No,
    OnFailure,
    Always,
    UnlessStopped,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct Backoff {
    initial: Option<DurationSpec>,
    max: Option<DurationSpec>,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct Stop {
    /// e.g. SIGTERM, SIGINT.
    signal: Option<String>,
    timeout: Option<DurationSpec>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::*;

    fn keys(schema: &serde_json::Value, def: &str) -> Vec<String> {
        let obj = if def.is_empty() {
            schema
        } else {
            &schema["$defs"][def]
        };
        let mut keys: Vec<String> = obj["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{def} has no properties"))
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    }

    fn sorted(k: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = k.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn schema_keys_match_the_decoder() {
        let s = json_schema();
        assert_eq!(keys(&s, ""), sorted(PROJECT_KEYS));
        assert_eq!(keys(&s, "Host"), sorted(HOST_KEYS));
        assert_eq!(keys(&s, "Network"), sorted(NETWORK_KEYS));
        assert_eq!(keys(&s, "NetworkNode"), sorted(NODE_KEYS));
        assert_eq!(keys(&s, "Service"), sorted(SERVICE_KEYS));
        assert_eq!(keys(&s, "Port"), sorted(PORT_KEYS));
        assert_eq!(keys(&s, "HealthCheck"), sorted(HEALTH_KEYS));
        assert_eq!(keys(&s, "Tcp"), sorted(TCP_KEYS));
        assert_eq!(keys(&s, "Restart"), sorted(RESTART_KEYS));
        assert_eq!(keys(&s, "Backoff"), sorted(BACKOFF_KEYS));
        assert_eq!(keys(&s, "Stop"), sorted(STOP_KEYS));
        assert_eq!(keys(&s, "Settings"), sorted(SETTINGS_KEYS));
        assert_eq!(s["patternProperties"], serde_json::json!({"^x-": {}}));
        assert_eq!(
            s["$defs"]["Service"]["patternProperties"],
            serde_json::json!({"^x-": {}})
        );
        assert_eq!(keys(&s, "LongDependency"), sorted(DEPENDS_ON_LONG_KEYS));
        assert_eq!(keys(&s, "Proxy"), sorted(PROXY_KEYS));
        assert_eq!(keys(&s, "Watch"), sorted(WATCH_KEYS));
        assert_eq!(keys(&s, "Logging"), sorted(LOGGING_KEYS));
        assert_eq!(s["additionalProperties"], serde_json::json!(false));
    }

    /// A port may be written as `${API_PORT:-8080}` (examples/services.yaml does): the schema
    /// editors use must not flag it (it allowed only integers).
    #[test]
    fn ports_may_be_substituted_text() {
        let s = json_schema();
        let number = &s["$defs"]["PortNumber"];
        let types: Vec<&str> = number["anyOf"]
            .as_array()
            .unwrap_or_else(|| panic!("{number:#}"))
            .iter()
            .filter_map(|t| t["type"].as_str())
            .collect();
        assert!(
            types.contains(&"string") && types.contains(&"integer"),
            "{number:#}"
        );
        for (def, field) in [("Port", "port"), ("Port", "published"), ("Tcp", "port")] {
            let text = s["$defs"][def]["properties"][field].to_string();
            assert!(text.contains("PortNumber"), "{def}.{field}: {text}");
        }
    }
}
