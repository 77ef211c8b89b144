//! The members of a mesh, their interfaces and addresses, decided from the services file alone
//! (so the address resolver and the CLI compute the same answer as the daemon).

use std::net::Ipv4Addr;
use std::path::Path;

use harness_config::subnet::Subnet;
use harness_config::{LOCAL_NODE, NetworkKind, Project, WIREGUARD_MTU, WIREGUARD_PORT};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::MeshError;

/// One member of a mesh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    /// `local` (the daemon's machine) or the hosts entry.
    pub name: String,
    /// The interface on that machine: `hw` + 8 hex digits of (state dir, project, network) + the
    /// member's index, so members that share a /var/run (and so wireguard-go's UAPI socket
    /// directory) never collide, nor do two daemons or projects.
    pub interface: String,
    /// The member's mesh address: the `index`-th address of the subnet.
    pub address: Ipv4Addr,
    /// The member that relays for this one (its hosts entry's `jump:`), if any.
    pub relay: Option<String>,
}

impl Member {
    pub fn is_local(&self) -> bool {
        self.name == LOCAL_NODE
    }
}

/// A mesh as the services file describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MeshPlan {
    pub network: String,
    pub subnet: String,
    pub prefix: u8,
    pub listen_port: u16,
    pub mtu: u16,
    pub members: Vec<Member>,
}

impl MeshPlan {
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }
}

/// The plan of wireguard network `network` of `project`, for the daemon whose state directory is
/// `state_dir`.
pub fn plan(project: &Project, network: &str, state_dir: &Path) -> Result<MeshPlan, MeshError> {
    let e = |m: String| MeshError::new(network, None, m);
    let net = project
        .networks
        .get(network)
        .ok_or_else(|| e("no such network".into()))?;
    if net.kind != NetworkKind::Wireguard {
        return Err(e("not a `wireguard` network".into()));
    }
    let subnet = Subnet::parse(net.subnet.as_deref().unwrap_or_default())
        .map_err(|why| e(format!("subnet: {why}")))?;
    let id = {
        let mut h = Sha256::new();
        h.update(state_dir.as_os_str().as_encoded_bytes());
        h.update([0]);
        h.update(project.name.as_bytes());
        h.update([0]);
        h.update(network.as_bytes());
        hex::encode(&h.finalize()[..4])
    };
    let names: Vec<String> = net.nodes.iter().map(member_name).collect();
    let mut members = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let address = subnet.host(i as u32).ok_or_else(|| {
            e(format!(
                "subnet {subnet} holds {} member addresses, the network has {} nodes",
                subnet.capacity(),
                names.len()
            ))
        })?;
        let relay = if name == LOCAL_NODE {
            None
        } else {
            let host = project.hosts.get(name).ok_or_else(|| {
                MeshError::new(network, Some(name), "is not defined under hosts:")
            })?;
            match &host.jump {
                None => None,
                Some(j) if names.contains(j) => Some(j.clone()),
                Some(j) => {
                    return Err(MeshError::new(
                        network,
                        Some(name),
                        format!(
                            "is reached through jump host {j:?}, which is not a node of the network: \
                             add it to `nodes` so it relays the mesh for {name:?}"
                        ),
                    ));
                }
            }
        };
        members.push(Member {
            name: name.clone(),
            interface: format!("hw{id}{i}"),
            address,
            relay,
        });
    }
    // A relay must itself be reachable directly (one hop of relaying).
    for m in &members {
        if let Some(r) = &m.relay
            && members.iter().any(|o| &o.name == r && o.relay.is_some())
        {
            return Err(MeshError::new(
                network,
                Some(&m.name),
                format!(
                    "its jump host {r:?} is itself behind a jump host: one hop of relaying is supported"
                ),
            ));
        }
    }
    Ok(MeshPlan {
        network: network.to_owned(),
        subnet: subnet.to_string(),
        prefix: subnet.prefix,
        listen_port: net.listen_port.unwrap_or(WIREGUARD_PORT),
        mtu: net.mtu.unwrap_or(WIREGUARD_MTU),
        members,
    })
}

/// A node's member name: `local`, or the hosts entry it is (decode adds one per node name).
fn member_name(node: &harness_config::NetworkNode) -> String {
    if node.host == LOCAL_NODE {
        LOCAL_NODE.to_owned()
    } else {
        node.name.clone()
    }
}

/// The wireguard network both machines are members of (`None` = the daemon's machine), with
/// their mesh addresses, preferring `preferred` (a service's `network:`).
pub fn mesh_address(
    project: &Project,
    state_dir: &Path,
    a: Option<&str>,
    b: Option<&str>,
    preferred: &[&str],
) -> Option<(String, Ipv4Addr)> {
    let name = |m: Option<&str>| m.unwrap_or(LOCAL_NODE).to_owned();
    let (a, b) = (name(a), name(b));
    let mut nets: Vec<&String> = project
        .networks
        .iter()
        .filter(|(_, n)| n.kind == NetworkKind::Wireguard)
        .map(|(k, _)| k)
        .collect();
    nets.sort_by_key(|n| !preferred.contains(&n.as_str()));
    for net in nets {
        let Ok(p) = plan(project, net, state_dir) else {
            continue;
        };
        if p.member(&a).is_some()
            && let Some(m) = p.member(&b)
        {
            return Some((net.clone(), m.address));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(yaml: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("services.yaml");
        std::fs::write(&path, yaml).unwrap();
        let loaded = harness_config::load(&path);
        loaded
            .project
            .unwrap_or_else(|| panic!("{:?}", loaded.errors))
    }

    const HOSTS: &str = "name: p
hosts:
  h1: {address: 198.18.0.11}
  h2: {address: 198.18.0.12}
  h4: {address: 198.19.0.14, jump: h1}
";

    #[test]
    fn members_get_addresses_in_order_and_a_relay_from_their_jump_host() {
        let p = project(&format!(
            "{HOSTS}networks:
  mesh: {{type: wireguard, subnet: 10.5.0.0/29, nodes: [{{host: local}}, {{host: h1}}, {{host: h2}}, {{host: h4}}]}}
services:
  a: {{command: 'true'}}
"
        ));
        let plan = plan(&p, "mesh", Path::new("/state")).unwrap();
        let got: Vec<(&str, String, Option<&str>)> = plan
            .members
            .iter()
            .map(|m| (m.name.as_str(), m.address.to_string(), m.relay.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("local", "10.5.0.1".to_owned(), None),
                ("h1", "10.5.0.2".to_owned(), None),
                ("h2", "10.5.0.3".to_owned(), None),
                ("h4", "10.5.0.4".to_owned(), Some("h1")),
            ]
        );
        assert_eq!((plan.listen_port, plan.mtu), (51820, 1420));
        // Interface names fit Linux's 15 characters, differ per member and per state dir.
        assert!(plan.members.iter().all(|m| m.interface.len() <= 15));
        let other = super::plan(&p, "mesh", Path::new("/other")).unwrap();
        assert_ne!(plan.members[0].interface, other.members[0].interface);
        assert_ne!(plan.members[0].interface, plan.members[1].interface);
        // The resolver's view: the mesh address of h4 for a consumer here.
        assert_eq!(
            mesh_address(&p, Path::new(""), None, Some("h4"), &[]),
            Some(("mesh".to_owned(), Ipv4Addr::new(10, 5, 0, 4)))
        );
    }

    #[test]
    fn a_jump_host_outside_the_mesh_is_refused_naming_it() {
        let p = project(&format!(
            "{HOSTS}networks:
  mesh: {{type: wireguard, subnet: 10.5.0.0/24, nodes: [{{host: local}}, {{host: h4}}]}}
services:
  a: {{command: 'true'}}
"
        ));
        let e = plan(&p, "mesh", Path::new("/state")).unwrap_err();
        assert_eq!(e.host.as_deref(), Some("h4"));
        assert!(e.to_string().contains("jump host \"h1\""), "{e}");
    }
}
