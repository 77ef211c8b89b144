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
    /// Not declared under `networks:`: brought up because consumers cannot reach a provider on
    /// the underlay ([`automatic_members`]).
    pub automatic: bool,
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

/// The name the automatic mesh goes by: `auto`, or `harness-auto` when a network called `auto`
/// is declared.
pub fn auto_name(project: &Project) -> &'static str {
    if project.networks.contains_key("auto") {
        "harness-auto"
    } else {
        "auto"
    }
}

/// Where automatic meshes take their subnets from: project P gets `10.213.H.0/24`, H the first
/// byte of SHA-256(P's name), and listens on UDP `51821 + H`, so two projects on one machine
/// rarely share either (one in 256); a declared `wireguard` network holding the same machines is
/// the override.
pub const AUTO_RANGE: &str = "10.213.0.0/16";

fn auto_byte(project: &Project) -> u8 {
    Sha256::digest(project.name.as_bytes())[0]
}

/// The automatic mesh's subnet for `project`.
pub fn auto_subnet(project: &Project) -> Subnet {
    Subnet {
        network: Ipv4Addr::new(10, 213, auto_byte(project), 0),
        prefix: 24,
    }
}

/// The automatic mesh's UDP port for `project`.
pub fn auto_port(project: &Project) -> u16 {
    51821 + u16::from(auto_byte(project))
}

/// The project's wireguard networks: the declared ones, then the automatic one when some pair
/// of machines needs it.
pub fn wireguard_networks(project: &Project) -> Vec<String> {
    let mut out: Vec<String> = project
        .networks
        .iter()
        .filter(|(_, n)| n.kind == NetworkKind::Wireguard)
        .map(|(k, _)| k.clone())
        .collect();
    if !automatic_members(project).is_empty() {
        out.push(auto_name(project).to_owned());
    }
    out
}

/// Whether machine `a` reaches machine `b` on the underlay (`None` = the daemon's machine), as
/// far as the services file tells: a host with `jump: J` is on another segment than every
/// machine but J and the other hosts behind J. Addresses alone are not judged.
pub fn underlay_routes(project: &Project, a: Option<&str>, b: Option<&str>) -> bool {
    if a == b {
        return true;
    }
    let jump = |m: Option<&str>| {
        m.and_then(|h| project.hosts.get(h))
            .and_then(|h| h.jump.as_deref())
    };
    match (jump(a), jump(b)) {
        (None, None) => true,
        (Some(ja), Some(jb)) => ja == jb,
        (Some(ja), None) => b == Some(ja),
        (None, Some(jb)) => a == Some(jb),
    }
}

/// A declared wireguard network both machines are members of.
fn declared_mesh_holds(project: &Project, a: &str, b: &str) -> bool {
    project
        .networks
        .values()
        .filter(|n| n.kind == NetworkKind::Wireguard)
        .any(|n| {
            let has = |m: &str| n.nodes.iter().any(|node| member_name(node) == m);
            has(a) && has(b)
        })
}

/// The machines of the automatic mesh (`local` = the daemon's machine): both ends of every pair
/// of consumer and provider that do not reach each other on the underlay ([`underlay_routes`])
/// and are not both members of a declared wireguard network, and the jump host of each such
/// machine (it relays). A consumer is a process whose templates hold `${P.ip}` or `${P.host}`
/// (a consumer in a container keeps the direct address, ADR 0020), or the daemon for a service
/// with an http or tcp health check. Empty when no host has `jump:`.
pub fn automatic_members(project: &Project) -> std::collections::BTreeSet<String> {
    use crate::addresses::Placement;
    use harness_config::{Probe, Property};
    let mut out = std::collections::BTreeSet::new();
    if project.hosts.values().all(|h| h.jump.is_none()) {
        return out;
    }
    let name = |m: Option<&str>| m.unwrap_or(LOCAL_NODE).to_owned();
    let mut need = |a: Option<&str>, b: Option<&str>| {
        if underlay_routes(project, a, b) || declared_mesh_holds(project, &name(a), &name(b)) {
            return;
        }
        for m in [a, b] {
            out.insert(name(m));
            if let Some(j) = m
                .and_then(|h| project.hosts.get(h))
                .and_then(|h| h.jump.clone())
            {
                out.insert(j);
            }
        }
    };
    for svc in project.services.values() {
        let Ok(at) = Placement::of(svc) else { continue };
        if matches!(
            svc.health_check.as_ref().map(|h| &h.probe),
            Some(Probe::Http { .. } | Probe::Tcp { .. })
        ) {
            need(None, at.machine());
        }
        if matches!(at, Placement::Container { .. }) {
            continue;
        }
        for t in svc.templates() {
            for r in t.references() {
                if !matches!(r.property, Property::Ip | Property::Host) {
                    continue;
                }
                let Some(p) = project.services.get(&r.service) else {
                    continue;
                };
                if let Ok(to) = Placement::of(p) {
                    need(at.machine(), to.machine());
                }
            }
        }
    }
    out
}

/// The plan of wireguard network `network` of `project` (a declared one, or the automatic one
/// under [`auto_name`]), for the daemon whose state directory is `state_dir`.
pub fn plan(project: &Project, network: &str, state_dir: &Path) -> Result<MeshPlan, MeshError> {
    let e = |m: String| MeshError::new(network, None, m);
    let id = {
        let mut h = Sha256::new();
        h.update(state_dir.as_os_str().as_encoded_bytes());
        h.update([0]);
        h.update(project.name.as_bytes());
        h.update([0]);
        h.update(network.as_bytes());
        hex::encode(&h.finalize()[..4])
    };
    let Some(net) = project.networks.get(network) else {
        if network != auto_name(project) {
            return Err(e("no such network".into()));
        }
        return auto_plan(project, network, &id);
    };
    if net.kind != NetworkKind::Wireguard {
        return Err(e("not a `wireguard` network".into()));
    }
    let subnet = Subnet::parse(net.subnet.as_deref().unwrap_or_default())
        .map_err(|why| e(format!("subnet: {why}")))?;
    let names: Vec<(u32, String)> = net
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (i as u32, member_name(n)))
        .collect();
    let members = members(project, network, &subnet, &id, &names)?;
    Ok(MeshPlan {
        network: network.to_owned(),
        automatic: false,
        subnet: subnet.to_string(),
        prefix: subnet.prefix,
        listen_port: net.listen_port.unwrap_or(WIREGUARD_PORT),
        mtu: net.mtu.unwrap_or(WIREGUARD_MTU),
        members,
    })
}

/// The automatic mesh: [`automatic_members`], each at its machine's index (local 0, then the
/// `hosts:` entries in name order), so a machine keeps its address whichever others join.
fn auto_plan(project: &Project, network: &str, id: &str) -> Result<MeshPlan, MeshError> {
    let subnet = auto_subnet(project);
    for (other, n) in &project.networks {
        if let Some(s) = n.subnet.as_deref().and_then(|s| Subnet::parse(s).ok())
            && s.overlaps(&subnet)
        {
            return Err(MeshError::new(
                network,
                None,
                format!(
                    "the automatic mesh's subnet {subnet} overlaps subnet {s} of network                      `{other}`: declare a `wireguard` network holding the machines instead"
                ),
            ));
        }
    }
    let wanted = automatic_members(project);
    if wanted.is_empty() {
        return Err(MeshError::new(
            network,
            None,
            "no such network (no automatic mesh is needed: every consumer reaches its providers \
             on the underlay)",
        ));
    }
    let names: Vec<(u32, String)> = std::iter::once(LOCAL_NODE)
        .chain(project.hosts.keys().map(String::as_str))
        .enumerate()
        .filter(|(_, n)| wanted.contains(*n))
        .map(|(i, n)| (i as u32, n.to_owned()))
        .collect();
    let members = members(project, network, &subnet, id, &names)?;
    Ok(MeshPlan {
        network: network.to_owned(),
        automatic: true,
        subnet: subnet.to_string(),
        prefix: subnet.prefix,
        listen_port: auto_port(project),
        mtu: WIREGUARD_MTU,
        members,
    })
}

/// The members named `names` (with their address index), their relays checked.
fn members(
    project: &Project,
    network: &str,
    subnet: &Subnet,
    id: &str,
    names: &[(u32, String)],
) -> Result<Vec<Member>, MeshError> {
    let e = |m: String| MeshError::new(network, None, m);
    let mut members = Vec::new();
    for (i, name) in names {
        let address = subnet.host(*i).ok_or_else(|| {
            e(format!(
                "subnet {subnet} holds {} member addresses, the network needs address {} for {name:?}",
                subnet.capacity(),
                i + 1,
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
                Some(j) if names.iter().any(|(_, n)| n == j) => Some(j.clone()),
                Some(j) => {
                    return Err(MeshError::new(
                        network,
                        Some(name),
                        format!(
                            "is reached through jump host {j:?}, which is not a node of the network: \
                             add it to `nodes` (a hosts entry) so it relays the mesh for {name:?}"
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
    Ok(members)
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
    let mut nets = wireguard_networks(project);
    nets.sort_by_key(|n| !preferred.contains(&n.as_str()));
    for net in &nets {
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

    use crate::test_project as project;

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

    #[test]
    fn an_automatic_mesh_holds_exactly_the_machines_the_underlay_does_not_join() {
        let p = project(&format!(
            "{HOSTS}  h5: {{address: 198.19.0.15, jump: h1}}
services:
  api4: {{host: h4, command: 'true', ports: [8080]}}
  on5: {{host: h5, command: 'true', env: {{A: '${{api4.ip}}'}}}}
  on1: {{host: h1, command: 'true', env: {{A: '${{api4.ip}}'}}}}
  on2: {{host: h2, command: 'true', env: {{A: '${{on1.ip}}'}}}}
  here: {{command: 'true', env: {{A: '${{api4.host}}:${{api4.port}}'}}}}
"
        ));
        // h5 and h1 reach h4 on the underlay (same segment, its jump host); here does not.
        let want: Vec<&str> = vec!["h1", "h4", "local"];
        assert_eq!(automatic_members(&p).iter().collect::<Vec<_>>(), want);
        assert_eq!(wireguard_networks(&p), ["auto"]);
        let plan = plan(&p, "auto", Path::new("/state")).unwrap();
        assert!(plan.automatic);
        let sub = auto_subnet(&p);
        assert_eq!(plan.subnet, sub.to_string());
        // Addresses by machine index: local 0, then hosts in name order (h1 1, h2 2, h4 3).
        let got: Vec<(&str, Ipv4Addr, Option<&str>)> = plan
            .members
            .iter()
            .map(|m| (m.name.as_str(), m.address, m.relay.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("local", sub.host(0).unwrap(), None),
                ("h1", sub.host(1).unwrap(), None),
                ("h4", sub.host(3).unwrap(), Some("h1")),
            ]
        );
        assert_eq!(plan.listen_port, auto_port(&p));
        // The consumer here gets h4's mesh address; h1 and h5 keep the underlay.
        assert_eq!(
            mesh_address(&p, Path::new(""), None, Some("h4"), &[]),
            Some(("auto".to_owned(), sub.host(3).unwrap()))
        );
        assert!(underlay_routes(&p, Some("h5"), Some("h4")));
        assert!(underlay_routes(&p, Some("h1"), Some("h4")));
        assert!(!underlay_routes(&p, None, Some("h4")));
        assert!(!underlay_routes(&p, Some("h2"), Some("h4")));
    }

    #[test]
    fn no_automatic_mesh_without_a_jump_host_or_when_a_declared_one_holds_the_pair() {
        let flat = project(
            "name: p
hosts:
  h1: {address: 198.18.0.11}
services:
  a: {host: h1, command: 'true'}
  b: {command: 'true', env: {A: '${a.ip}'}}
",
        );
        assert!(automatic_members(&flat).is_empty());
        assert!(wireguard_networks(&flat).is_empty());
        let declared = project(&format!(
            "{HOSTS}networks:
  mesh: {{type: wireguard, subnet: 10.5.0.0/29, nodes: [{{host: local}}, {{host: h1}}, {{host: h4}}]}}
services:
  api4: {{host: h4, command: 'true'}}
  here: {{command: 'true', env: {{A: '${{api4.ip}}'}}}}
"
        ));
        assert!(automatic_members(&declared).is_empty());
        assert_eq!(wireguard_networks(&declared), ["mesh"]);
        let e = plan(&declared, "auto", Path::new("/s")).unwrap_err();
        assert!(e.to_string().contains("no such network"), "{e}");
    }
}
