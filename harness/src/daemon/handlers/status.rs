//! `status`: the registry's entries, of one project or all, sent as the store holds them (their
//! JSON is not decoded and encoded again), except while the registry may be behind after a failed
//! write: then the orchestrator checks each entry first.

use std::sync::Arc;

use harness_protocol::wire::{StatusParams, StatusResult};
use harness_protocol::{Encoded, WireError};
use harness_server::RequestContext;

use crate::daemon::{State, wire_error};

pub async fn handle(
    state: Arc<State>,
    p: StatusParams,
    _ctx: RequestContext,
) -> Result<Encoded<StatusResult>, WireError> {
    let project = p.project.as_deref();
    let resources = state.top.last(project);
    let encoded = match state
        .orch
        .status_encoded(project)
        .await
        .map_err(wire_error)?
    {
        Some(services) => Encoded::status(&services, &resources),
        None => {
            let services = state.orch.status(project).await.map_err(wire_error)?;
            Encoded::new(&StatusResult {
                services,
                resources,
            })
        }
    };
    encoded.map_err(WireError::internal)
}
