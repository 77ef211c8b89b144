//! `${svc.ip}`, `${svc.port}`, `${svc.ports.NAME}`, `${svc.host}`: what a consumer connects to.
//!
//! The answer depends on where both ends run, so every rule is a match on the pair of
//! [`Placement`]s. Only local processes exist today; remote hosts and containers (issue 6) add
//! placements and arms here, and nothing else needs to change.

use harness_config::{Project, Property, Service, ServiceKind, ServiceRef};

/// Where a service runs, as far as addressing is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// A process on the daemon's machine.
    Local,
}

impl Placement {
    /// The placement of a service, or why it has none yet.
    pub fn of(service: &Service) -> Result<Placement, String> {
        match (service.kind, &service.host) {
            (ServiceKind::Process, None) => Ok(Placement::Local),
            _ => Err(crate::runtime::UNSUPPORTED.to_owned()),
        }
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
        match &reference.property {
            Property::Ip => Ok(ip(&self.consumer, &placement).to_owned()),
            Property::Host => Ok(host(&self.consumer, &placement).to_owned()),
            Property::Port => {
                let port = provider
                    .ports
                    .first()
                    .ok_or_else(|| format!("{reference}: service {name:?} declares no ports"))?;
                Ok(reachable_port(&self.consumer, &placement, port).to_string())
            }
            Property::NamedPort(want) => {
                let port = provider
                    .ports
                    .iter()
                    .find(|p| p.name.as_deref() == Some(want.as_str()))
                    .ok_or_else(|| {
                        format!("{reference}: service {name:?} has no port named {want:?}")
                    })?;
                Ok(reachable_port(&self.consumer, &placement, port).to_string())
            }
        }
    }
}

/// The address a consumer at `from` uses to reach a provider at `to`.
fn ip(from: &Placement, to: &Placement) -> &'static str {
    match (from, to) {
        (Placement::Local, Placement::Local) => "127.0.0.1",
    }
}

/// The name of the provider's host as the consumer knows it.
fn host(from: &Placement, to: &Placement) -> &'static str {
    match (from, to) {
        (Placement::Local, Placement::Local) => "localhost",
    }
}

/// A process binds its port itself; `published` only matters for containers.
fn reachable_port(from: &Placement, to: &Placement, port: &harness_config::Port) -> u16 {
    match (from, to) {
        (Placement::Local, Placement::Local) => port.published.unwrap_or(port.port),
    }
}

/// The daemon checks health and serves endpoints from its own machine.
pub(crate) fn daemon_ip(of: &Placement) -> std::net::IpAddr {
    match of {
        Placement::Local => std::net::IpAddr::from([127, 0, 0, 1]),
    }
}
