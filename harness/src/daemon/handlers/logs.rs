//! `logs`: one batch of lines per call. The first call opens a session with the query; the client
//! calls again with the session until `end` (or forever, when following).

use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;
use harness_protocol::wire::{LogLine, LogsParams, LogsResult};
use harness_protocol::{ErrorCode, WireError};
use harness_server::RequestContext;
use orchestrator::{LogQuery, StreamKind};

use crate::daemon::{State, wire_error};

/// A follower's call returns after this long without new lines (the client simply asks again).
const FOLLOW_WAIT: Duration = Duration::from_secs(10);
/// Once a batch has lines, wait this long for more before answering.
const BATCH_LINGER: Duration = Duration::from_millis(2);
const BATCH_LINES: usize = 10_000;
const BATCH_BYTES: usize = 512 << 10;

pub async fn handle(
    state: Arc<State>,
    p: LogsParams,
    _ctx: RequestContext,
) -> Result<LogsResult, WireError> {
    let (id, session) = match p.session {
        Some(id) => match state.logs.get(id) {
            Some(s) => (id, s),
            None => {
                return Err(WireError::new(
                    ErrorCode::NotFound,
                    format!("log session {id} expired; start again"),
                ));
            }
        },
        None => {
            let logs = state
                .orch
                .logs(LogQuery {
                    project: p.project,
                    services: p.services,
                    tail: p.tail,
                    since: p.since,
                    follow: p.follow,
                })
                .await
                .map_err(wire_error)?;
            state.logs.open(logs)
        }
    };
    let mut logs = session.logs.lock().await;
    let mut lines = Vec::new();
    let mut bytes = 0;
    let mut end = false;
    while lines.len() < BATCH_LINES && bytes < BATCH_BYTES {
        let wait = if lines.is_empty() {
            FOLLOW_WAIT
        } else {
            BATCH_LINGER
        };
        let next = future::or(async { Some(logs.next().await) }, async {
            smol::Timer::after(wait).await;
            None
        })
        .await;
        match next {
            Some(Some(line)) => {
                bytes += line.text.len() + 64;
                lines.push(LogLine {
                    service: line.service,
                    stream: match line.stream {
                        StreamKind::Stdout => "stdout",
                        StreamKind::Stderr => "stderr",
                    }
                    .to_owned(),
                    time: line.time,
                    text: line.text,
                });
            }
            Some(None) => {
                end = true;
                break;
            }
            None => break,
        }
    }
    drop(logs);
    if end {
        // Ours is the last reference but the map's: closing frees the reader, then trims.
        drop(session);
        state.logs.close(id);
    }
    Ok(LogsResult {
        session: id,
        lines,
        end,
    })
}
