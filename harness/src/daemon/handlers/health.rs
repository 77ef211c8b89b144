//! `health`: what each service's check looks at, its status, last time and output.

use std::sync::Arc;

use harness_protocol::WireError;
use harness_protocol::wire::{HealthParams, HealthResult, ServiceHealthReport};
use harness_server::RequestContext;

use crate::daemon::{State, wire_error};

pub async fn handle(
    state: Arc<State>,
    p: HealthParams,
    _ctx: RequestContext,
) -> Result<HealthResult, WireError> {
    let services: Vec<String> = p.service.into_iter().collect();
    let list = state
        .orch
        .health(&p.project, &services)
        .await
        .map_err(wire_error)?;
    Ok(HealthResult {
        services: list
            .into_iter()
            .map(|h| ServiceHealthReport {
                name: h.name,
                check: h.check,
                state: h.state,
                health: h.health,
            })
            .collect(),
    })
}
