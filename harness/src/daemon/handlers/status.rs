//! `status`: the registry's entries, of one project or all.

use std::sync::Arc;

use registry::wire::{StatusParams, StatusResult};
use registry::{RequestContext, WireError};

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
    Ok(StatusResult { services })
}
