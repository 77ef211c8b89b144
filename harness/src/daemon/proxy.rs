//! The daemon's side of the one-port proxy (crate `proxy`): which port to bind, and the routing
//! table, built from the registry (where each service runs and its state) and the applied
//! projects (`subdomain:`, `proxy_port:`).
//!
//! Each service is routed as `<subdomain>.<project>.localhost` and, when no other project has the
//! same subdomain, as `<subdomain>.localhost`; the subdomain defaults to the service's name. The
//! address is the one the daemon's machine uses (ADR 0020): `127.0.0.1` for a local process or a
//! container of the local engine (its published port), the host's address for a remote one.
//! The table is rebuilt only when the registry has new events (a state change), so a request
//! costs one lookup.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use harness_config::{Project, ProxyPort};
use harness_protocol::{ServiceEntry, ServiceState};
use harness_store::Store;
use orchestrator::Orchestrator;
use proxy::{BoxFuture, Lookup, Proxy, RouteInfo, Routes};

/// The proxy the daemon runs, once a project asks for one.
pub struct ProxySlot {
    orch: Orchestrator,
    store: Store,
    running: async_lock::Mutex<Option<Proxy>>,
}

impl ProxySlot {
    pub fn new(orch: Orchestrator, store: Store) -> ProxySlot {
        ProxySlot {
            orch,
            store,
            running: async_lock::Mutex::new(None),
        }
    }

    /// Binds the proxy `project` asks for, unless one runs. One daemon has one proxy: a project
    /// that asks for another port is told which one serves.
    pub async fn ensure(&self, project: &Project) -> Result<Option<SocketAddr>, String> {
        let Some(want) = &project.proxy else {
            return Ok(None);
        };
        let mut running = self.running.lock().await;
        if let Some(p) = running.as_ref() {
            if p.local_addr().port() != want.port {
                tracing::warn!(
                    project = %project.name,
                    asked = want.port,
                    serving = %p.local_addr(),
                    "the proxy already listens on another port"
                );
            }
            return Ok(Some(p.local_addr()));
        }
        let ip: std::net::IpAddr = want
            .bind
            .parse()
            .map_err(|e| format!("proxy.bind {:?}: {e}", want.bind))?;
        let table = Arc::new(Table {
            orch: self.orch.clone(),
            store: self.store.clone(),
            cache: Mutex::new(None),
        });
        let p = Proxy::bind(SocketAddr::new(ip, want.port), table)
            .await
            .map_err(|e| format!("proxy: {e}"))?;
        let addr = p.local_addr();
        tracing::info!(%addr, "proxy listening");
        *running = Some(p);
        Ok(Some(addr))
    }
}

struct Table {
    orch: Orchestrator,
    store: Store,
    /// The routes as of registry event `seq`.
    cache: Mutex<Option<(u64, Arc<Built>)>>,
}

#[derive(Default)]
struct Built {
    by_host: BTreeMap<String, Lookup>,
}

impl Routes for Table {
    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Lookup> {
        Box::pin(async move {
            let built = self.built().await;
            let name = host.strip_suffix(".localhost").unwrap_or(host);
            match built.by_host.get(name) {
                Some(l) => l.clone(),
                None => Lookup::Unknown {
                    routes: built
                        .by_host
                        .iter()
                        .map(|(h, l)| RouteInfo {
                            host: format!("{h}.localhost"),
                            target: match l {
                                Lookup::Ready { upstreams, .. } => upstreams
                                    .iter()
                                    .map(ToString::to_string)
                                    .collect::<Vec<_>>()
                                    .join(", "),
                                Lookup::Unavailable { reason, .. } => reason.clone(),
                                Lookup::Unknown { .. } => String::new(),
                            },
                        })
                        .collect(),
                },
            }
        })
    }
}

impl Table {
    async fn built(&self) -> Arc<Built> {
        let seq = self.store.last_seq();
        if let Ok(c) = self.cache.lock()
            && let Some((at, b)) = c.as_ref()
            && *at == seq
        {
            return b.clone();
        }
        let entries = self.store.list(None).await.unwrap_or_default();
        let built = Arc::new(build(&self.orch, &entries));
        if let Ok(mut c) = self.cache.lock() {
            *c = Some((seq, built.clone()));
        }
        built
    }
}

fn build(orch: &Orchestrator, entries: &[ServiceEntry]) -> Built {
    let mut projects: BTreeMap<&str, Option<Arc<Project>>> = BTreeMap::new();
    let mut full: BTreeMap<String, Lookup> = BTreeMap::new();
    let mut short: BTreeMap<String, Vec<Lookup>> = BTreeMap::new();
    for e in entries {
        let project = projects
            .entry(e.project.as_str())
            .or_insert_with(|| orch.project(&e.project));
        let Some(def) = project.as_ref().and_then(|p| p.services.get(&e.name)) else {
            continue;
        };
        let sub = def
            .subdomain
            .clone()
            .unwrap_or_else(|| e.name.to_ascii_lowercase());
        // The endpoints are in the order of `ports:`; `proxy_port` picks one by port or name.
        let index = match &def.proxy_port {
            None => Some(0),
            Some(ProxyPort::Number(n)) => def
                .ports
                .iter()
                .position(|p| p.port == *n || p.published == Some(*n)),
            Some(ProxyPort::Name(n)) => def.ports.iter().position(|p| p.name.as_deref() == Some(n)),
        };
        let lookup = match (index.and_then(|i| e.endpoints.get(i)), &e.state) {
            (None, _) => Lookup::Unavailable {
                service: e.name.clone(),
                reason: match &def.proxy_port {
                    None => "it declares no ports".to_owned(),
                    Some(_) => "its proxy_port is not one of its ports".to_owned(),
                },
                retry_after: None,
            },
            (Some(ep), ServiceState::Running) => Lookup::Ready {
                service: e.name.clone(),
                upstreams: vec![SocketAddr::new(ep.ip, ep.port)],
            },
            (Some(_), ServiceState::Pending | ServiceState::Starting) => Lookup::Unavailable {
                service: e.name.clone(),
                reason: "it is starting".to_owned(),
                retry_after: Some(1),
            },
            (Some(_), ServiceState::Restarting { .. }) => Lookup::Unavailable {
                service: e.name.clone(),
                reason: "it is restarting".to_owned(),
                retry_after: Some(1),
            },
            (Some(_), state) => Lookup::Unavailable {
                service: e.name.clone(),
                reason: format!("it is {}", state.name()),
                retry_after: None,
            },
        };
        short.entry(sub.clone()).or_default().push(lookup.clone());
        full.insert(format!("{sub}.{}", e.project.to_ascii_lowercase()), lookup);
    }
    for (sub, mut lookups) in short {
        if lookups.len() == 1 {
            full.entry(sub).or_insert_with(|| lookups.remove(0));
        }
    }
    Built { by_host: full }
}
