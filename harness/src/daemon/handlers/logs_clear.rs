//! `logs.clear`: delete services' log files.

use std::sync::Arc;

use harness_protocol::WireError;
use harness_protocol::wire::{LogsClearParams, LogsClearResult};
use harness_server::RequestContext;

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
