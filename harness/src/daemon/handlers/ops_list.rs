//! `ops.list`: operations, newest first, without their steps; filters combine.

use std::sync::Arc;

use harness_protocol::WireError;
use harness_protocol::operation::{OperationOutcome, OpsListParams, OpsListResult};
use harness_server::RequestContext;

use crate::daemon::State;

/// Operations answered when `limit` is not given.
const DEFAULT_LIMIT: usize = 100;

pub async fn handle(
    state: Arc<State>,
    p: OpsListParams,
    _ctx: RequestContext,
) -> Result<OpsListResult, WireError> {
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT).min(10_000);
    let keep = move |o: &harness_protocol::operation::Operation| {
        (!p.running || o.outcome.is_running())
            && (!p.failed || matches!(o.outcome, OperationOutcome::Failed { .. }))
            && p.project
                .as_ref()
                .is_none_or(|w| o.project.as_ref() == Some(w))
            && p.service.as_ref().is_none_or(|s| o.involves(s))
    };
    let mut operations = state.ops.list(limit, keep).await?;
    for o in &mut operations {
        o.steps.clear();
    }
    Ok(OpsListResult { operations })
}
