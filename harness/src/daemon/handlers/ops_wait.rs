//! `ops.wait`: answers the operation once it has ended, or as it is after `timeout_ms`.

use std::sync::Arc;
use std::time::Duration;

use futures_lite::FutureExt;
use harness_protocol::WireError;
use harness_protocol::operation::{Operation, OpsWaitParams};
use harness_server::RequestContext;

use super::ops_get::not_found;
use crate::daemon::State;

pub async fn handle(
    state: Arc<State>,
    p: OpsWaitParams,
    _ctx: RequestContext,
) -> Result<Operation, WireError> {
    let Some(log) = state.ops.running(p.id) else {
        return state.ops.get(p.id).await?.ok_or_else(|| not_found(p.id));
    };
    let limit = p.timeout_ms.map(Duration::from_millis);
    let ended = async { log.ended().await }
        .or(async {
            match limit {
                Some(d) => smol::Timer::after(d).await,
                None => std::future::pending().await,
            };
            log.snapshot()
        })
        .await;
    Ok(ended)
}
