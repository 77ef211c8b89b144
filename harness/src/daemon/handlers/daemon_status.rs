//! `daemon.status`: who and where the daemon is, and what it looks after.

use std::sync::Arc;

use harness_protocol::wire::DaemonStatusResult;
use harness_protocol::{Empty, ServiceState, WireError};
use harness_server::RequestContext;

use crate::daemon::{State, wire_error};

pub async fn handle(
    state: Arc<State>,
    _p: Empty,
    _ctx: RequestContext,
) -> Result<DaemonStatusResult, WireError> {
    let services = state.orch.status(None).await.map_err(wire_error)?;
    let mut projects = state.orch.projects();
    for s in &services {
        if !projects.contains(&s.project) {
            projects.push(s.project.clone());
        }
    }
    projects.sort();
    Ok(DaemonStatusResult {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at: state.started_at,
        uptime_ms: u64::try_from(state.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        url: state.url.lock().map(|u| u.clone()).unwrap_or_default(),
        home: state.home.root().display().to_string(),
        projects,
        running: services
            .iter()
            .filter(|s| s.state == ServiceState::Running)
            .count(),
        services: services.len(),
        connections: state.connections(),
        open_files_limit: state.fds.limit,
        max_services: state.fds.max_services,
    })
}
