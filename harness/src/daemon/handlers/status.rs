//! `status`: the registry's entries, of one project or all.

use std::sync::Arc;

use harness_protocol::WireError;
use harness_protocol::wire::{StatusParams, StatusResult};
use harness_server::RequestContext;

use crate::daemon::{State, wire_error};

pub async fn handle(
    state: Arc<State>,
    p: StatusParams,
    _ctx: RequestContext,
) -> Result<StatusResult, WireError> {
    let services = state
        .orch
        .status(p.project.as_deref())
        .await
        .map_err(wire_error)?;
    Ok(StatusResult {
        services,
        resources: state.top.last(p.project.as_deref()),
    })
}
