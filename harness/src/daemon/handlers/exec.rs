//! `exec`: run a command in a service's context and return its output and exit status.

use std::sync::Arc;

use command_executor::{Event, ExitStatus, Line};
use harness_protocol::wire::{ExecParams, ExecResult};
use harness_protocol::{ErrorCode, WireError};
use harness_server::RequestContext;

use crate::daemon::{State, wire_error};

/// Output kept per stream; more is cut with a note (the answer must fit one message).
const MAX_OUTPUT: usize = 16 << 20;

pub async fn handle(
    state: Arc<State>,
    p: ExecParams,
    _ctx: RequestContext,
) -> Result<ExecResult, WireError> {
    if p.command.is_empty() {
        return Err(WireError::new(
            ErrorCode::InvalidParams,
            "exec needs a command",
        ));
    }
    let mut process = state
        .orch
        .exec(&p.project, &p.service, &p.command)
        .await
        .map_err(wire_error)?;
    let mut events = process
        .take_events()
        .ok_or_else(|| WireError::internal("the process has no event stream"))?;
    let (mut stdout, mut stderr) = (String::new(), String::new());
    let mut status = None;
    while let Some(event) = events.next().await {
        match event {
            Event::Stdout(line) => append(&mut stdout, &line),
            Event::Stderr(line) => append(&mut stderr, &line),
            Event::Lost(n) => stderr.push_str(&format!("[harness: {n} lines of output lost]\n")),
            Event::Exited(s) => status = Some(s),
            Event::Failed(e) => {
                return Err(WireError::new(
                    ErrorCode::Failed,
                    format!("exec in {}: {e}", p.service),
                ));
            }
            Event::Started(_) => {}
        }
    }
    let status = match status {
        Some(s) => s,
        None => process.wait().await.map_err(|e| {
            WireError::new(ErrorCode::Failed, format!("exec in {}: {e}", p.service))
        })?,
    };
    Ok(ExecResult {
        code: status.code(),
        signal: match status {
            ExitStatus::Signal(s) => Some(s),
            _ => None,
        },
        stdout,
        stderr,
    })
}

fn append(out: &mut String, line: &Line) {
    if out.len() > MAX_OUTPUT {
        return;
    }
    out.push_str(&line.text());
    if line.newline {
        out.push('\n');
    }
    if out.len() > MAX_OUTPUT {
        out.push_str("\n[harness: output truncated]\n");
    }
}
