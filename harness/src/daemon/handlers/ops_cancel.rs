//! `ops.cancel`: ends a running start, restart, scale or deploy (ADR 0035). The start stops waiting
//! for health checks and dependencies, what runs keeps running (with `rollback`, what the operation
//! launched is stopped); a deploy stops uploading and leaves every host on its previous active
//! version. Its client gets `cancelled`. Answers the operation once it ended.

use std::sync::Arc;
use std::time::Duration;

use futures_lite::FutureExt;
use harness_protocol::operation::{Operation, OperationKind, OpsCancelParams};
use harness_protocol::{ErrorCode, WireError};
use harness_server::RequestContext;
use orchestrator::CancelRequest;

use super::ops_get::not_found;
use crate::daemon::State;

/// How long `ops.cancel` waits for the operation to end (a rollback stops services, which may
/// take their stop timeout).
const END_WITHIN: Duration = Duration::from_secs(120);

pub async fn handle(
    state: Arc<State>,
    p: OpsCancelParams,
    _ctx: RequestContext,
) -> Result<Operation, WireError> {
    let Some(log) = state.ops.running(p.id) else {
        let op = state.ops.get(p.id).await?.ok_or_else(|| not_found(p.id))?;
        return Err(WireError::new(
            ErrorCode::Failed,
            format!(
                "operation {} is not running (it is {}): nothing to cancel",
                p.id,
                op.outcome.label()
            ),
        ));
    };
    let kind = log.snapshot().kind;
    if !matches!(
        kind,
        OperationKind::Start
            | OperationKind::Restart
            | OperationKind::Scale
            | OperationKind::Deploy
    ) {
        return Err(WireError::new(
            ErrorCode::Failed,
            format!(
                "operation {} is a {}: only a start, restart, scale or deploy can be cancelled",
                p.id,
                kind.as_str()
            ),
        ));
    }
    log.request_cancel(CancelRequest {
        rollback: p.rollback,
    });
    let ended = async { Some(log.ended().await) }
        .or(async {
            smol::Timer::after(END_WITHIN).await;
            None
        })
        .await;
    ended.ok_or_else(|| {
        WireError::new(
            ErrorCode::Timeout,
            format!(
                "operation {} was asked to stop but has not ended within {} s",
                p.id,
                END_WITHIN.as_secs()
            ),
        )
    })
}
