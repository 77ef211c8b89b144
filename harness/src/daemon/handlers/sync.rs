//! `sync`: resolve drift findings (ADR 0036). With `dry_run` nothing changes; nothing is killed
//! without `kill`. Every sync that may change something is an operation (ADR 0035).

use std::sync::Arc;

use harness_protocol::WireError;
use harness_protocol::drift::{SyncMode, SyncParams, SyncResult};
use harness_protocol::operation::OperationKind;
use harness_server::RequestContext;

use crate::daemon::operations as ops;
use crate::daemon::{State, wire_error};

pub async fn handle(
    state: Arc<State>,
    p: SyncParams,
    ctx: RequestContext,
) -> Result<SyncResult, WireError> {
    let given = super::drift::definition(p.definition).await?;
    if p.mode == SyncMode::DryRun {
        return state
            .orch
            .sync(p.mode, p.project, given)
            .await
            .map_err(wire_error);
    }
    let op = ops::begin(
        &state,
        &ctx,
        OperationKind::Sync,
        p.project.clone(),
        Vec::new(),
        serde_json::json!({ "sync": &p.mode, "project": &p.project }),
    )
    .await;
    let result = state
        .orch
        .sync(p.mode, p.project, given)
        .await
        .map_err(wire_error);
    match &result {
        Ok(r) => {
            let failed: Vec<String> = r
                .actions
                .iter()
                .filter(|a| !a.done)
                .map(|a| {
                    // The action's wire name (`kill`, `adopt`, …).
                    let action = serde_json::to_value(a.action).unwrap_or_default();
                    let action = action.as_str().unwrap_or("action");
                    format!("{action} {}: {}", a.finding, a.detail)
                })
                .collect();
            ops::finish_unless(&op, &failed);
        }
        Err(_) => ops::finish(&op, &result),
    }
    result
}
