//! Managed processes: services that outlive the client that started them.
//!
//! Killing a local `ssh` or `docker exec` client leaves the far side running, so a service is not tied to a
//! client at all: a POSIX sh runner started with `setsid` owns it on the target, with a state directory
//! holding `pid` (`PID STARTTIME`), `stdout`, `stderr` and, once it ended, `exit`. The service runs in its
//! own session and process group, so a signal to the group reaches its children too. Anyone can attach
//! later by the directory; the start time tells a live process from a reused pid.

use std::sync::Arc;

use async_lock::OnceCell;

use crate::command::Command;
use crate::error::{Error, Place, Result};
use crate::event::{Event, EventSink};
use crate::executor::Executor;
use crate::layer::Target;
use crate::process::{Control, ManagedState, Outcome, Process, ProcessId};
use crate::script;

/// Where to start delivering a managed process's logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Follow {
    /// Everything logged since the process started.
    #[default]
    FromStart,
    /// Only what is logged from now on.
    FromEnd,
}

/// A long-running process that outlives the client (see the module docs).
#[derive(Debug, Clone)]
pub struct ManagedSpec {
    /// Names the state directory; letters, digits, `.`, `_`, `-`.
    pub name: String,
    pub command: Command,
    /// State directory on the target; `~/` is the target user's home. Default
    /// `~/.local/state/harness/<name>`.
    pub state_dir: Option<String>,
    /// Keep running when the handle is dropped (default). When false, dropping the handle stops it.
    pub keep_running: bool,
}

impl ManagedSpec {
    pub fn new(name: impl Into<String>, command: Command) -> Self {
        ManagedSpec {
            name: name.into(),
            command,
            state_dir: None,
            keep_running: true,
        }
    }
    pub fn state_dir(mut self, dir: impl Into<String>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }
    pub fn keep_running(mut self, keep: bool) -> Self {
        self.keep_running = keep;
        self
    }
    /// The state directory as given to the target.
    pub fn dir(&self) -> String {
        self.state_dir
            .clone()
            .unwrap_or_else(|| format!("~/.local/state/harness/{}", self.name))
    }
}

/// A managed process to attach to: its state directory on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedRef {
    pub dir: String,
    pub follow: Follow,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

pub(crate) async fn start(exec: &Executor, target: &Target, spec: &ManagedSpec) -> Result<Process> {
    if !valid_name(&spec.name) {
        return Err(Error::invalid(
            "managed process name",
            format!("{:?}", spec.name),
        ));
    }
    spec.command.validate()?;
    let at = target.program_place();
    let dir = spec.dir();
    let out = exec
        .run_op(
            target,
            script::start_argv(&dir, &spec.command),
            exec.options().op_timeout,
            "start",
        )
        .await?;
    let text = out.stdout_text();
    let words: Vec<&str> = text.split_whitespace().collect();
    match words.as_slice() {
        ["STARTED", pid, st, dir @ ..] => {
            let pid = pid.parse().map_err(|_| protocol(&at, &text))?;
            let state = ManagedState {
                dir: dir.join(" "),
                pid,
                start_time: st.to_string(),
            };
            handle(exec, target, state, spec.keep_running, true).await
        }
        ["RUNNING", pid, ..] => Err(Error::AlreadyRunning {
            at,
            pid: pid.parse().unwrap_or(0),
        }),
        ["NOCWD", ..] => Err(Error::WorkingDir {
            at,
            dir: spec
                .command
                .cwd
                .as_ref()
                .map(|c| c.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }),
        ["NOPROG", ..] => Err(Error::ProgramNotFound {
            at,
            program: spec.command.program.to_string_lossy().into_owned(),
        }),
        ["NOSETSID", ..] => Err(Error::Layer {
            at,
            code: None,
            stderr: "setsid not found on the target".into(),
        }),
        _ => Err(Error::Layer {
            at,
            code: out.status.code(),
            stderr: format!("{}{}", text, out.stderr_text()),
        }),
    }
}

fn protocol(at: &Place, text: &str) -> Error {
    Error::Layer {
        at: at.clone(),
        code: None,
        stderr: format!("unexpected answer: {text:?}"),
    }
}

pub(crate) async fn attach(
    exec: &Executor,
    target: &Target,
    dir: &str,
    follow: Follow,
) -> Result<Process> {
    let at = target.program_place();
    let out = exec
        .run_op(
            target,
            script::status_argv(dir),
            exec.options().op_timeout,
            "status",
        )
        .await?;
    let text = out.stdout_text();
    let words: Vec<&str> = text.split_whitespace().collect();
    let state = |pid: &str, st: &str, d: &[&str]| -> Result<ManagedState> {
        Ok(ManagedState {
            dir: d.join(" "),
            pid: pid.parse().map_err(|_| protocol(&at, &text))?,
            start_time: st.into(),
        })
    };
    match words.as_slice() {
        ["RUNNING", pid, st, d @ ..] => {
            handle(
                exec,
                target,
                state(pid, st, d)?,
                true,
                follow == Follow::FromStart,
            )
            .await
        }
        // Ended while nobody watched: the follower replays the logs and reports the recorded status.
        ["EXITED", _rc, pid, st, d @ ..] => {
            handle(exec, target, state(pid, st, d)?, true, true).await
        }
        ["STALE", pid, _st, d @ ..] => Err(Error::Stale {
            at,
            pidfile: format!("{}/pid", d.join(" ")),
            detail: format!(
                "pid {pid} is gone or belongs to another process, and no exit status was recorded"
            ),
        }),
        ["NONE", d @ ..] => Err(Error::NotFound {
            at,
            detail: format!("no pidfile in {}", d.join(" ")),
        }),
        _ => Err(Error::Layer {
            at,
            code: out.status.code(),
            stderr: format!("{}{}", text, out.stderr_text()),
        }),
    }
}

/// Builds the handle: follows the logs through the target until the recorded exit.
async fn handle(
    exec: &Executor,
    target: &Target,
    state: ManagedState,
    keep_running: bool,
    from_start: bool,
) -> Result<Process> {
    let follow_cmd = {
        let mut it =
            script::follow_argv(&state.dir, from_start, state.pid, &state.start_time).into_iter();
        let program = it.next().unwrap_or_default();
        Command::new(program).args(it)
    };
    let mut follower = crate::process::spawn(exec, target, &follow_cmd, true).await?;
    let id = if target.is_local() {
        ProcessId::Local {
            pid: state.pid,
            start_time: state.start_time.parse().ok(),
        }
    } else {
        ProcessId::Remote {
            host: target.host(),
            pid: state.pid,
            start_time: state.start_time.parse().ok(),
        }
    };
    let (sink, events) = EventSink::new(exec.options().queue_bytes);
    sink.push(Event::Started(id.clone()));
    let outcome: Outcome = Arc::new(OnceCell::new());
    let mut follower_events = follower.take_events();
    let pidfile = format!("{}/pid", state.dir);
    let task = {
        let outcome = outcome.clone();
        let at = target.program_place();
        smol::spawn(async move {
            if let Some(ev) = follower_events.as_mut() {
                while let Some(e) = ev.next().await {
                    match e {
                        Event::Started(_) | Event::Exited(_) | Event::Failed(_) => {}
                        other => sink.push(other),
                    }
                }
            }
            let result = follower.wait().await.map_err(|e| match e {
                Error::Stale { at, detail, .. } => Error::Stale {
                    at,
                    pidfile,
                    detail,
                },
                other => other,
            });
            let _ = &at;
            match &result {
                Ok(st) => sink.push(Event::Exited(*st)),
                Err(e) => sink.push(Event::Failed(e.clone())),
            }
            sink.close();
            let _ = outcome.set(result).await;
        })
    };
    let ctl = Arc::new(Control::Managed {
        exec: exec.clone(),
        target: target.clone(),
        state,
        keep_running,
    });
    Ok(Process {
        id,
        events: Some(events),
        stdin: None,
        pty: None,
        outcome,
        ctl,
        _tasks: vec![task],
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        assert!(super::valid_name("web-1.a_b"));
        assert!(!super::valid_name("../x"));
        assert!(!super::valid_name(""));
        assert!(!super::valid_name("a b"));
    }
}
