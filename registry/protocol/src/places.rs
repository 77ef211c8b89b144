//! Where services run: `hosts.check` (each host's reachability, latency, sudo and docker) and
//! `network.list` (a project's WireGuard meshes with each member's peers as `wg show` reports
//! them). Both are read-only; the CLI (`harness hosts check`) and the web dashboard (ADR 0039)
//! show the same results.

use serde::{Deserialize, Serialize};

use crate::drift::DriftDefinition;

/// `hosts.check` params: the hosts of an applied project, or of the services file sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HostsCheckParams {
    /// An applied project (the dashboard). Ignored when `definition` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The services file the CLI read (as `drift` sends it): its hosts, applied or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<DriftDefinition>,
}

/// `hosts.check` result: one report per hosts entry, in the order of the file's `hosts:` keys
/// (sorted by name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HostsCheckResult {
    pub project: String,
    pub hosts: Vec<HostReport>,
    pub elapsed_ms: u64,
}

/// One host: reachable, authenticated, `sudo -n`, docker (and as whom), latency, and a hint for
/// each failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HostReport {
    pub host: String,
    pub address: String,
    pub port: u16,
    pub user: Option<String>,
    pub reachable: bool,
    pub authenticated: bool,
    /// `sudo -n true` as root succeeded.
    pub sudo: Option<bool>,
    /// Whether docker services on this host need sudo (the host says `sudo: true`).
    pub sudo_required: bool,
    pub docker: Option<DockerReport>,
    /// Round trip of one command over the established connection, in milliseconds.
    pub latency_ms: Option<f64>,
    /// Time to connect and authenticate, in milliseconds.
    pub connect_ms: Option<f64>,
    pub ok: bool,
    pub problems: Vec<HostProblem>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DockerReport {
    pub reachable: bool,
    /// The user the docker CLI ran as (`root` through sudo).
    pub as_user: Option<String>,
    pub server_version: Option<String>,
    /// Docker services of the project run on this host.
    pub required: bool,
}

/// A failed check: `config`, `reachable`, `authenticated`, `sudo`, `docker` or `wireguard`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HostProblem {
    pub check: String,
    pub error: String,
    pub hint: String,
}

/// `network.list` params.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NetworkListParams {
    /// An applied project.
    pub project: String,
}

/// `network.list` result: the project's `wireguard` networks (none is an empty list).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NetworkListResult {
    pub project: String,
    pub networks: Vec<MeshView>,
    pub elapsed_ms: u64,
}

/// One mesh: its plan, whether the daemon holds a record of it being up, and each member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MeshView {
    pub network: String,
    pub subnet: String,
    pub listen_port: u16,
    /// The daemon holds a record of this mesh being up.
    pub up: bool,
    pub members: Vec<MeshMemberView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MeshMemberView {
    /// `local` (the daemon's machine) or a hosts entry.
    pub member: String,
    pub interface: String,
    /// Mesh address with prefix (`10.77.0.2/24`).
    pub address: String,
    /// The member that relays for it, if any.
    pub relay: Option<String>,
    /// From the daemon's record of the mesh (absent while it is not up).
    pub public_key: Option<String>,
    pub endpoint: Option<String>,
    /// `kernel` or `wireguard-go`.
    pub mode: Option<String>,
    /// `wg show` answered for the interface (asked only while the mesh is up).
    pub interface_up: bool,
    /// Why `wg show` did not answer.
    pub error: Option<String>,
    pub peers: Vec<MeshPeerView>,
}

/// A peer as `wg show IFACE dump` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MeshPeerView {
    pub public_key: String,
    /// The member with that public key, when the mesh record knows it.
    pub member: Option<String>,
    pub endpoint: Option<String>,
    pub allowed_ips: String,
    /// Seconds since the latest handshake; `None` when there was none.
    pub handshake_age_s: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}
