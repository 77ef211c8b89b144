//! `network.list`: an applied project's WireGuard meshes — members, addresses, the daemon's
//! record, and each member's peers from `wg show` (handshake age, bytes) while the mesh is up
//! (`orchestrator::network::view`). Read-only.

use std::sync::Arc;
use std::time::Instant;

use harness_protocol::places::{NetworkListParams, NetworkListResult};
use harness_protocol::{ErrorCode, WireError};
use harness_server::RequestContext;

use crate::daemon::State;

pub async fn handle(
    state: Arc<State>,
    p: NetworkListParams,
    _ctx: RequestContext,
) -> Result<NetworkListResult, WireError> {
    let began = Instant::now();
    let project = state.orch.project(&p.project).ok_or_else(|| {
        WireError::new(
            ErrorCode::NotFound,
            format!("project {:?} is not applied in this daemon", p.project),
        )
    })?;
    let networks = orchestrator::network::view::view(&state.executor, &project, state.home.root())
        .await
        .map_err(|e| WireError::new(ErrorCode::Failed, e.to_string()))?;
    Ok(NetworkListResult {
        project: p.project,
        networks,
        elapsed_ms: super::millis(began.elapsed()),
    })
}
