//! `hosts.check`: each host of a project — reachable, authenticated, `sudo -n`, docker, latency —
//! checked from the daemon's machine with connections of its own (`orchestrator::hosts`).
//! Read-only. The project is the services file the CLI sent, or an applied one (the dashboard).

use std::sync::Arc;
use std::time::Instant;

use harness_protocol::places::{HostsCheckParams, HostsCheckResult};
use harness_protocol::{ErrorCode, WireError};
use harness_server::RequestContext;

use crate::daemon::State;

pub async fn handle(
    state: Arc<State>,
    p: HostsCheckParams,
    _ctx: RequestContext,
) -> Result<HostsCheckResult, WireError> {
    let began = Instant::now();
    let project = match super::drift::definition(p.definition).await? {
        Some((project, _dir)) => Arc::new(project),
        None => {
            let name = p.project.ok_or_else(|| {
                WireError::new(
                    ErrorCode::InvalidParams,
                    "hosts.check needs `project` (an applied project) or `definition`",
                )
            })?;
            state.orch.project(&name).ok_or_else(|| {
                WireError::new(
                    ErrorCode::NotFound,
                    format!("project {name:?} is not applied in this daemon"),
                )
            })?
        }
    };
    let hosts = orchestrator::hosts::check(&project).await;
    Ok(HostsCheckResult {
        project: project.name.clone(),
        hosts,
        elapsed_ms: super::millis(began.elapsed()),
    })
}
