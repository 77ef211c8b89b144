//! `logs.clear`: delete services' log files.

use std::sync::Arc;

use registry::wire::{LogsClearParams, LogsClearResult};
use registry::{RequestContext, WireError};

use crate::daemon::{State, wire_error};

pub async fn handle(
    state: Arc<State>,
    p: LogsClearParams,
    _ctx: RequestContext,
) -> Result<LogsClearResult, WireError> {
    let services = state
        .orch
        .clear_logs(&p.project, &p.services)
        .await
        .map_err(wire_error)?;
    Ok(LogsClearResult {
        project: p.project,
        services,
    })
}
