//! WireGuard meshes (`networks:` of `type: wireguard`): which machine is which member, its mesh
//! address and interface ([`plan`]), bringing the mesh up and down on every member through
//! command-executor ([`mesh`]), and what they look like now ([`view`]). docs/adr/0034-wireguard-mesh.md.

pub mod mesh;
pub mod plan;
pub mod view;

pub use mesh::{
    KEY_DIR, MemberState, MeshState, down, load_state, missing_members, read_state, recorded,
    root_target, state_path, up,
};
pub use plan::{
    AUTO_RANGE, Member, MeshPlan, auto_name, auto_port, auto_subnet, automatic_members,
    mesh_address, plan, underlay_routes, wireguard_networks,
};

/// Something about a mesh failed; always names the network and, when it is about one member,
/// the host.
#[derive(Debug, Clone, thiserror::Error)]
#[error("network {network:?}{}: {message}", host.as_ref().map(|h| format!(", host {h:?}")).unwrap_or_default())]
pub struct MeshError {
    pub network: String,
    pub host: Option<String>,
    pub message: String,
}

impl MeshError {
    pub fn new(network: &str, host: Option<&str>, message: impl Into<String>) -> Self {
        MeshError {
            network: network.to_owned(),
            host: host.map(str::to_owned),
            message: message.into(),
        }
    }
}
