//! `ops.get`: one operation with its steps.

use std::sync::Arc;

use harness_protocol::operation::{OpRef, Operation};
use harness_protocol::{ErrorCode, WireError};
use harness_server::RequestContext;

use crate::daemon::State;

pub async fn handle(
    state: Arc<State>,
    p: OpRef,
    _ctx: RequestContext,
) -> Result<Operation, WireError> {
    state.ops.get(p.id).await?.ok_or_else(|| not_found(p.id))
}

pub(crate) fn not_found(id: u64) -> WireError {
    WireError::new(
        ErrorCode::NotFound,
        format!(
            "there is no operation {id} (`harness ops` lists them; old ones are pruned like events)"
        ),
    )
}
