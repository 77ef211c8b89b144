//! `${svc.ip}`, `${svc.port}`, `${svc.ports.NAME}`, `${svc.host}`: what a consumer connects to.
//!
//! The answer depends on where both ends run, so every rule is a match on the pair of
//! [`Placement`]s (docs/adr/0020-location-aware-addresses.md):
//!
//! - same machine, consumer not in a container: `127.0.0.1` (`localhost`);
//! - consumer in a container on a host's engine, provider on that host: the host's address;
//!   consumer in a container on the local engine, provider on this machine:
//!   `host.docker.internal` (added to every local container as the engine's gateway);
//! - different machines: the provider host's configured `address`; for a provider on the
//!   daemon's machine, the local address the daemon's machine uses towards the consumer's host
//!   (discovered from the routing table);
//! - a container's port is its published host port (a port that is not published cannot be
//!   referenced), a process's port is its own;
//! - two containers on one engine: the provider container's address on the engine's network
//!   (filled in when the consumer is launched, the provider running by then) and its own port;
//! - different machines that are both members of a `wireguard` network, the consumer not in a
//!   container, and either the provider names that network (`network:`) or one of the two is
//!   behind a jump host (the underlay does not route between them): the provider machine's mesh
//!   address (docs/adr/0034-wireguard-mesh.md); without a declared one, the automatic mesh's
//!   address where the underlay does not route between them (one is behind a jump host).

use std::net::{IpAddr, Ipv4Addr, UdpSocket};

use harness_config::{Project, Property, Service, ServiceKind, ServiceRef};

/// Where a service runs, as far as addressing is concerned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Placement {
    /// A process on the daemon's machine.
    Local,
    /// A process on hosts entry `host`, as `user` (through sudo) when set.
    Host { host: String, user: Option<String> },
    /// A container on the local engine (`host: None`) or on the engine of hosts entry `host`.
    Container { host: Option<String> },
}

impl Placement {
    /// The placement of a service, or why it has none.
    pub fn of(service: &Service) -> Result<Placement, String> {
        match (service.kind, &service.host) {
            (ServiceKind::Process, None) => Ok(Placement::Local),
            (ServiceKind::Process | ServiceKind::Remote, Some(h)) => Ok(Placement::Host {
                host: h.clone(),
                user: service.user.clone(),
            }),
            (ServiceKind::Docker, h) => Ok(Placement::Container { host: h.clone() }),
            (ServiceKind::Remote, None) => Err("type: remote needs host:".to_owned()),
            _ => Err(crate::runtime::UNSUPPORTED.to_owned()),
        }
    }

    /// The hosts entry of the machine it runs on; `None` for the daemon's machine.
    pub fn machine(&self) -> Option<&str> {
        match self {
            Placement::Local | Placement::Container { host: None } => None,
            Placement::Host { host, .. }
            | Placement::Container {
                host: Some(host), ..
            } => Some(host),
        }
    }

    fn in_container(&self) -> bool {
        matches!(self, Placement::Container { .. })
    }
}

/// The name local containers reach the daemon's machine by (`--add-host ...:host-gateway`).
pub(crate) const LOCAL_GATEWAY_NAME: &str = "host.docker.internal";

fn host_address<'p>(project: &'p Project, host: &str) -> Result<&'p str, String> {
    project
        .hosts
        .get(host)
        .map(|h| h.address.as_str())
        .ok_or_else(|| format!("host {host:?} is not defined under hosts:"))
}

/// The address this machine uses towards `host` (from the routing table: a UDP socket is
/// connected, which sends nothing).
fn local_address_towards(project: &Project, host: &str) -> Result<String, String> {
    let h = project
        .hosts
        .get(host)
        .ok_or_else(|| format!("host {host:?} is not defined under hosts:"))?;
    let found = (|| {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
        sock.connect((h.address.as_str(), h.port)).ok()?;
        sock.local_addr().ok().map(|a| a.ip())
    })();
    match found {
        Some(ip) if !ip.is_unspecified() && h.jump.is_none() => Ok(ip.to_string()),
        _ => Err(format!(
            "the daemon's machine has no address known to be reachable from host {host:?} \
             (behind a jump host, or no route); run the provider on a host instead"
        )),
    }
}

/// Resolves references for one consumer of one project.
pub struct Resolver<'a> {
    project: &'a Project,
    consumer: Placement,
}

impl<'a> Resolver<'a> {
    pub fn new(project: &'a Project, consumer: Placement) -> Self {
        Resolver { project, consumer }
    }

    /// The text that replaces `reference` for this consumer.
    pub fn resolve(&self, reference: &ServiceRef) -> Result<String, String> {
        let name = &reference.service;
        let provider = self
            .project
            .services
            .get(name)
            .ok_or_else(|| format!("{reference}: there is no service {name:?}"))?;
        let placement = Placement::of(provider).map_err(|e| format!("{reference}: {e}"))?;
        let e = |m: String| format!("{reference}: {m}");
        // Two containers on one engine talk container to container: the provider's address on
        // the engine's network (known once it runs, filled in at the consumer's launch) and
        // its own port.
        let same_engine = matches!(
            (&self.consumer, &placement),
            (Placement::Container { host: a }, Placement::Container { host: b }) if a == b
        );
        if matches!(reference.property, Property::Ip | Property::Host)
            && let Some((_, ip)) = through_mesh(self.project, &self.consumer, &placement, provider)
        {
            return Ok(ip.to_string());
        }
        match &reference.property {
            Property::Ip | Property::Host if same_engine => Ok(container_ip_marker(name)),
            Property::Port if same_engine => provider
                .ports
                .first()
                .map(|p| p.port.to_string())
                .ok_or_else(|| format!("{reference}: service {name:?} declares no ports")),
            Property::NamedPort(want) if same_engine => provider
                .ports
                .iter()
                .find(|p| p.name.as_deref() == Some(want.as_str()))
                .map(|p| p.port.to_string())
                .ok_or_else(|| format!("{reference}: service {name:?} has no port named {want:?}")),
            Property::Ip => ip(self.project, &self.consumer, &placement).map_err(e),
            Property::Host => host(self.project, &self.consumer, &placement).map_err(e),
            Property::Port => {
                let port = provider
                    .ports
                    .first()
                    .ok_or_else(|| format!("{reference}: service {name:?} declares no ports"))?;
                Ok(reachable_port(name, &placement, port)
                    .map_err(e)?
                    .to_string())
            }
            Property::NamedPort(want) => {
                let port = provider
                    .ports
                    .iter()
                    .find(|p| p.name.as_deref() == Some(want.as_str()))
                    .ok_or_else(|| {
                        format!("{reference}: service {name:?} has no port named {want:?}")
                    })?;
                Ok(reachable_port(name, &placement, port)
                    .map_err(e)?
                    .to_string())
            }
        }
    }
}

/// Stands for the address of container `service` on the consumer's engine until the consumer
/// is launched (see `runtime::container`).
pub(crate) const CONTAINER_IP_MARK: &str = "\u{1e}harness-container-ip:";

fn container_ip_marker(service: &str) -> String {
    format!("{CONTAINER_IP_MARK}{service}\u{1e}")
}

/// The address a consumer at `from` uses to reach a provider at `to`.
fn ip(project: &Project, from: &Placement, to: &Placement) -> Result<String, String> {
    match (from.machine(), to.machine()) {
        (None, None) if from.in_container() => Ok(LOCAL_GATEWAY_NAME.to_owned()),
        (None, None) => Ok("127.0.0.1".to_owned()),
        (Some(a), Some(b)) if a == b && !from.in_container() => Ok("127.0.0.1".to_owned()),
        (_, Some(b)) => host_address(project, b).map(str::to_owned),
        (Some(a), None) => local_address_towards(project, a),
    }
}

/// The name of the provider's host as the consumer knows it.
fn host(project: &Project, from: &Placement, to: &Placement) -> Result<String, String> {
    match (from.machine(), to.machine()) {
        (None, None) if !from.in_container() => Ok("localhost".to_owned()),
        (Some(a), Some(b)) if a == b && !from.in_container() => Ok("localhost".to_owned()),
        _ => ip(project, from, to),
    }
}

/// A process binds its port itself; a container is reached on its published port.
fn reachable_port(name: &str, to: &Placement, port: &harness_config::Port) -> Result<u16, String> {
    match to {
        Placement::Container { .. } => port.published.ok_or_else(|| {
            format!(
                "port {} of {name:?} is not published; write it as \"HOST_PORT:{}\" to reach it",
                port.port, port.port
            )
        }),
        _ => Ok(port.published.unwrap_or(port.port)),
    }
}

/// The mesh a consumer at `from` reaches a provider at `to` through, and the provider machine's
/// address on it; `None` when they talk over the underlay.
pub fn through_mesh(
    project: &Project,
    from: &Placement,
    to: &Placement,
    provider: &Service,
) -> Option<(String, std::net::Ipv4Addr)> {
    if from.in_container() || from.machine() == to.machine() {
        return None;
    }
    let jumped = |m: Option<&str>| {
        m.and_then(|h| project.hosts.get(h))
            .is_some_and(|h| h.jump.is_some())
    };
    let preferred: Vec<&str> = provider.network.as_deref().into_iter().collect();
    // (The interface names depend on the state dir, the addresses do not.)
    let (net, ip) = crate::network::mesh_address(
        project,
        std::path::Path::new(""),
        from.machine(),
        to.machine(),
        &preferred,
    )?;
    if net == crate::network::auto_name(project) && !project.networks.contains_key(&net) {
        // The automatic mesh only where the underlay does not route.
        return (!crate::network::underlay_routes(project, from.machine(), to.machine()))
            .then_some((net, ip));
    }
    let named = provider.network.as_deref() == Some(net.as_str());
    (named || jumped(from.machine()) || jumped(to.machine())).then_some((net, ip))
}

/// The address the daemon checks health at and lists as the endpoint: the mesh address when the
/// daemon reaches the service only through a mesh.
pub fn daemon_ip(project: &Project, of: &Placement) -> IpAddr {
    if let Some(h) = of.machine()
        && project.hosts.get(h).is_some_and(|h| h.jump.is_some())
        && let Some((_, ip)) =
            crate::network::mesh_address(project, std::path::Path::new(""), None, Some(h), &[])
    {
        return IpAddr::V4(ip);
    }
    of.machine()
        .and_then(|h| project.hosts.get(h))
        .and_then(|h| h.address.parse().ok())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// Where the registry says a service runs.
pub(crate) fn location(
    project: &Project,
    name: &str,
    of: &Placement,
) -> harness_protocol::Location {
    match of {
        Placement::Local => harness_protocol::Location::Local,
        Placement::Host { host, .. } => harness_protocol::Location::Host {
            name: host.clone(),
            address: project
                .hosts
                .get(host)
                .map(|h| h.address.clone())
                .unwrap_or_default(),
        },
        Placement::Container { host } => harness_protocol::Location::Container {
            engine: match host {
                None => "docker".to_owned(),
                Some(h) => format!("ssh://{h}"),
            },
            id: None,
            name: format!("harness.{}.{name}", project.name),
        },
    }
}
