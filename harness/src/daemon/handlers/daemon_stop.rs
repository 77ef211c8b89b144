//! `daemon.stop`: answer, then shut down. With `stop_services` every service is stopped before the
//! answer, so the client knows they are gone when it returns.

use std::sync::Arc;
use std::time::Duration;

use harness_protocol::wire::DaemonStopParams;
use harness_protocol::{Empty, WireError};
use harness_server::RequestContext;

use crate::daemon::{State, wire_error};

pub async fn handle(
    state: Arc<State>,
    p: DaemonStopParams,
    _ctx: RequestContext,
) -> Result<Empty, WireError> {
    if p.stop_services {
        state.orch.shutdown(true).await.map_err(wire_error)?;
    }
    let stop = state.stop.clone();
    // Let the answer reach the client before connections close.
    smol::spawn(async move {
        smol::Timer::after(Duration::from_millis(20)).await;
        let _ = stop.try_send(());
    })
    .detach();
    Ok(Empty {})
}
