//! `exec`: run a command in a service's context. Without `stream`, collect its output and return it
//! with the exit status; with `stream`, send its output as progress as it comes, take its stdin,
//! window size and signals through `exec.input` ([`super::exec_input`]), and answer with the exit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use command_executor::{Event, ExitStatus, Line, Process, PtySize, Stdin};
use harness_protocol::wire::{ExecParams, ExecProgress, ExecResult, encode_bytes};
use harness_protocol::{ErrorCode, WireError};
use harness_server::RequestContext;

use crate::daemon::{State, wire_error};

/// Output kept per stream; more is cut with a note (the answer must fit one message).
const MAX_OUTPUT: usize = 16 << 20;

/// A streaming exec, as `exec.input` finds it.
pub struct Session {
    /// The program's stdin (a pipe, or its terminal); `None` once closed.
    pub stdin: async_lock::Mutex<Option<Stdin>>,
    pub process: Arc<Process>,
}

/// Streaming execs by (connection, request id): an `exec.input` reaches only the execs of its own
/// connection.
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<(u64, u64), Arc<Session>>>);

impl Sessions {
    pub fn get(&self, connection: u64, request: u64) -> Option<Arc<Session>> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(connection, request))
            .cloned()
    }

    fn insert(&self, key: (u64, u64), session: Arc<Session>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, session);
    }

    fn remove(&self, key: (u64, u64)) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
    }
}

/// Forgets the session when the exec ends, fails or is dropped (client gone, `cancel`); the
/// process is killed when its last handle goes.
struct Registered {
    state: Arc<State>,
    key: (u64, u64),
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.state.execs.remove(self.key);
    }
}

pub async fn handle(
    state: Arc<State>,
    p: ExecParams,
    ctx: RequestContext,
) -> Result<ExecResult, WireError> {
    if p.command.is_empty() {
        return Err(WireError::new(
            ErrorCode::InvalidParams,
            "exec needs a command",
        ));
    }
    if p.stream {
        return stream(state, p, ctx).await;
    }
    if p.tty.is_some() {
        return Err(WireError::new(
            ErrorCode::InvalidParams,
            "tty: a terminal needs stream: true",
        ));
    }
    let mut process = match state.orch.exec(&p.project, &p.service, &p.command).await {
        Ok(process) => process,
        Err(e) => {
            let (code, message) = shell_code(e)?;
            return Ok(ExecResult {
                code: Some(code),
                signal: None,
                stdout: String::new(),
                stderr: message,
            });
        }
    };
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
    Ok(result(status, stdout, stderr))
}

/// The streaming exec: `started`, output chunks as they come (the program slows down when the
/// client reads slowly), then the exit as the response.
async fn stream(
    state: Arc<State>,
    p: ExecParams,
    ctx: RequestContext,
) -> Result<ExecResult, WireError> {
    let opts = orchestrator::ExecOptions {
        stdin: true,
        chunked: true,
        pty: p.tty.as_ref().map(|t| PtySize {
            rows: t.rows.max(1),
            cols: t.cols.max(1),
        }),
        term: p.tty.as_ref().and_then(|t| t.term.clone()),
    };
    let mut process = match state
        .orch
        .exec_with(&p.project, &p.service, &p.command, &opts)
        .await
    {
        Ok(process) => process,
        Err(e) => {
            let (code, message) = shell_code(e)?;
            ctx.progress(ExecProgress::Output {
                stream: "stderr".into(),
                data: encode_bytes(message.as_bytes()),
            })
            .await?;
            return Ok(ExecResult {
                code: Some(code),
                signal: None,
                stdout: String::new(),
                stderr: String::new(),
            });
        }
    };
    let mut events = process
        .take_events()
        .ok_or_else(|| WireError::internal("the process has no event stream"))?;
    let stdin = process.take_stdin();
    let process = Arc::new(process);
    let key = (ctx.connection, ctx.request_id);
    state.execs.insert(
        key,
        Arc::new(Session {
            stdin: async_lock::Mutex::new(stdin),
            process: process.clone(),
        }),
    );
    let _registered = Registered {
        state: state.clone(),
        key,
    };
    ctx.progress(ExecProgress::Started {
        pid: process.id().pid(),
    })
    .await?;
    let mut status = None;
    while let Some(event) = events.next().await {
        let (stream, bytes) = match event {
            Event::Stdout(line) => ("stdout", line_bytes(line)),
            Event::Stderr(line) => ("stderr", line_bytes(line)),
            Event::Lost(n) => (
                "stderr",
                format!("[harness: {n} chunks of output lost]\n").into_bytes(),
            ),
            Event::Exited(s) => {
                status = Some(s);
                continue;
            }
            Event::Failed(e) => {
                return Err(WireError::new(
                    ErrorCode::Failed,
                    format!("exec in {}: {e}", p.service),
                ));
            }
            Event::Started(_) => continue,
        };
        ctx.progress(ExecProgress::Output {
            stream: stream.into(),
            data: encode_bytes(&bytes),
        })
        .await?;
    }
    let status = match status {
        Some(s) => s,
        None => process.wait().await.map_err(|e| {
            WireError::new(ErrorCode::Failed, format!("exec in {}: {e}", p.service))
        })?,
    };
    Ok(result(status, String::new(), String::new()))
}

/// A program that is not there or a working directory that cannot be entered ends the exec as
/// a shell would, with 127 or 126 and a message; any other failure is an error.
fn shell_code(e: orchestrator::Error) -> Result<(i32, String), WireError> {
    use command_executor::Error as X;
    match &e {
        orchestrator::Error::Exec { source, .. } => match &**source {
            X::ProgramNotFound { .. } => Ok((127, format!("harness: {e}\n"))),
            X::WorkingDir { .. } => Ok((126, format!("harness: {e}\n"))),
            _ => Err(wire_error(e)),
        },
        _ => Err(wire_error(e)),
    }
}

fn line_bytes(line: Line) -> Vec<u8> {
    let mut bytes = line.bytes;
    if line.newline {
        bytes.push(b'\n');
    }
    bytes
}

fn result(status: ExitStatus, stdout: String, stderr: String) -> ExecResult {
    ExecResult {
        code: status.code(),
        signal: match status {
            ExitStatus::Signal(s) => Some(s),
            _ => None,
        },
        stdout,
        stderr,
    }
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
