//! `restart`: stop and start services again with their last applied definition.

use std::sync::Arc;

use harness_protocol::WireError;
use harness_protocol::wire::{ApplyResult, RestartParams};
use harness_server::RequestContext;

use crate::daemon::{State, wire_error};

pub async fn handle(
    state: Arc<State>,
    p: RestartParams,
    ctx: RequestContext,
) -> Result<ApplyResult, WireError> {
    use crate::daemon::operations as ops;
    let op = ops::begin(
        &state,
        &ctx,
        harness_protocol::operation::OperationKind::Restart,
        Some(p.project.clone()),
        p.services.clone(),
        serde_json::json!({ "services": p.services }),
    )
    .await;
    let report = state
        .orch
        .restart_with(&p.project, &p.services, Some(op.clone()))
        .await;
    if let Some(req) = op.cancel_requested() {
        return Err(ops::cancelled(&state, &op, &p.project, req).await);
    }
    ops::finish_apply(&op, &report);
    Ok(super::apply_result(report.map_err(wire_error)?))
}
