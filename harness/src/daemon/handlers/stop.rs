//! `stop`: services of a project, dependents first, nothing left behind.

use std::sync::Arc;
use std::time::Duration;

use harness_protocol::WireError;
use harness_protocol::wire::{StopParams, StopResult, StoppedOutcome};
use harness_server::RequestContext;
use orchestrator::StopOptions;

use crate::daemon::{State, wire_error};

pub async fn handle(
    state: Arc<State>,
    p: StopParams,
    ctx: RequestContext,
) -> Result<StopResult, WireError> {
    use crate::daemon::operations as ops;
    let op = ops::begin(
        &state,
        &ctx,
        harness_protocol::operation::OperationKind::Stop,
        Some(p.project.clone()),
        p.services.clone(),
        serde_json::json!({
            "services": p.services,
            "force": p.force,
            "timeout_ms": p.timeout_ms,
            "remove": p.remove,
        }),
    )
    .await;
    let result = stop(&state, p, &op).await;
    ops::finish(&op, &result);
    result
}

async fn stop(
    state: &State,
    p: StopParams,
    op: &orchestrator::OperationLog,
) -> Result<StopResult, WireError> {
    if p.services.is_empty() {
        state.unwatch(&p.project);
    }
    let opts = StopOptions {
        services: p.services,
        force: p.force,
        timeout: p.timeout_ms.map(Duration::from_millis),
        remove: p.remove,
        operation: Some(op.clone()),
    };
    let report = state
        .orch
        .stop(&p.project, opts)
        .await
        .map_err(wire_error)?;
    Ok(StopResult {
        project: report.project,
        services: report
            .services
            .into_iter()
            .map(|s| StoppedOutcome {
                name: s.name,
                was: s.was,
                killed: s.killed,
                elapsed_ms: super::millis(s.elapsed),
                pending: s.pending,
            })
            .collect(),
    })
}
