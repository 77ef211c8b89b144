//! `restart`: stop and start services again with their last applied definition.

use std::sync::Arc;

use harness_protocol::WireError;
use harness_protocol::wire::{ApplyResult, RestartParams};
use harness_server::RequestContext;

use crate::daemon::{State, wire_error};

pub async fn handle(
    state: Arc<State>,
    p: RestartParams,
    _ctx: RequestContext,
) -> Result<ApplyResult, WireError> {
    let report = state
        .orch
        .restart(&p.project, &p.services)
        .await
        .map_err(wire_error)?;
    Ok(super::apply_result(report))
}
