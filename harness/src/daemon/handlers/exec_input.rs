//! `exec.input`: stdin bytes, end of file, a window size or a signal for a streaming `exec` of the
//! same connection. Answers once the bytes are written to the program's stdin (back-pressure).

use std::str::FromStr;
use std::sync::Arc;

use command_executor::{PtySize, Signal};
use futures_lite::AsyncWriteExt;
use harness_protocol::method::Empty;
use harness_protocol::wire::{ExecInputParams, decode_bytes};
use harness_protocol::{ErrorCode, WireError};
use harness_server::RequestContext;

use crate::daemon::State;

pub async fn handle(
    state: Arc<State>,
    p: ExecInputParams,
    ctx: RequestContext,
) -> Result<Empty, WireError> {
    let session = state.execs.get(ctx.connection, p.exec).ok_or_else(|| {
        WireError::new(
            ErrorCode::NotFound,
            format!(
                "exec: no streaming exec with request id {} on this connection (ended, or not started yet)",
                p.exec
            ),
        )
    })?;
    if let Some(data) = &p.data {
        let bytes = decode_bytes("data", data)?;
        let mut stdin = session.stdin.lock().await;
        let Some(w) = stdin.as_mut() else {
            return Err(WireError::new(
                ErrorCode::Failed,
                "data: the program's stdin is closed",
            ));
        };
        if w.write_all(&bytes).await.is_err() || w.flush().await.is_err() {
            *stdin = None;
            return Err(WireError::new(
                ErrorCode::Failed,
                "data: the program closed its stdin",
            ));
        }
    }
    if p.eof
        && let Some(mut w) = session.stdin.lock().await.take()
    {
        let _ = w.close().await;
    }
    if let Some(size) = p.resize {
        session
            .process
            .resize(PtySize {
                rows: size.rows.max(1),
                cols: size.cols.max(1),
            })
            .map_err(|e| WireError::new(ErrorCode::Failed, format!("resize: {e}")))?;
    }
    if let Some(name) = &p.signal {
        let signal = Signal::from_str(name)
            .map_err(|e| WireError::invalid_params(format!("signal: {e}")))?;
        session
            .process
            .signal(signal)
            .await
            .map_err(|e| WireError::new(ErrorCode::Failed, format!("signal: {e}")))?;
    }
    Ok(Empty {})
}
