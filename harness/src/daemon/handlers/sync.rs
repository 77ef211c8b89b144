//! `sync`: resolve drift findings (ADR 0036). With `dry_run` nothing changes; nothing is killed
//! without `kill`.

use std::sync::Arc;

use harness_protocol::WireError;
use harness_protocol::drift::{SyncParams, SyncResult};
use harness_server::RequestContext;

use crate::daemon::{State, wire_error};

pub async fn handle(
    state: Arc<State>,
    p: SyncParams,
    _ctx: RequestContext,
) -> Result<SyncResult, WireError> {
    let given = super::drift::definition(p.definition).await?;
    state
        .orch
        .sync(p.mode, p.project, given)
        .await
        .map_err(wire_error)
}
