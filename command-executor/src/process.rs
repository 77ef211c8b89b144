//! The process handle and the one-off launcher behind every other kind.
//!
//! A local command runs in its own process group, so signals reach everything it started and dropping the
//! handle kills the group. A command through layers runs behind a small sh wrapper that announces the
//! program's pid at the far end; signals go back through the same layers as `kill`, because killing the local
//! `ssh` or `docker exec` client leaves the far side running.

use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::OsStringExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_io::Async;
use async_lock::OnceCell;
use futures_lite::{AsyncReadExt, AsyncWrite, AsyncWriteExt, FutureExt};

use crate::classify;
use crate::command::{Command, PtySize, StdinMode};
use crate::error::{Error, Place, Result};
use crate::event::{Event, EventSink, Events, ExitStatus, Line, LineReader};
use crate::executor::Executor;
use crate::layer::{Layer, Target};
use crate::quote;
use crate::script::{self, MARK};
use crate::signal::Signal;

/// The stdin of a process started with [`StdinMode::Piped`]: a pipe (close or drop it to send end of
/// file), or the master of its pseudo-terminal ([`Command::pty`]; closing it sends the terminal's
/// end-of-file character, ^D).
pub struct Stdin(StdinKind);

enum StdinKind {
    Pipe(async_process::ChildStdin),
    Pty { master: PtyMaster, eof_sent: bool },
}

/// The master side of a process's pseudo-terminal: output is read from it, input written to it.
type PtyMaster = Arc<Async<std::fs::File>>;

impl fmt::Debug for Stdin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            StdinKind::Pipe(_) => f.write_str("Stdin(pipe)"),
            StdinKind::Pty { .. } => f.write_str("Stdin(pty)"),
        }
    }
}

impl AsyncWrite for Stdin {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match &mut self.0 {
            StdinKind::Pipe(p) => std::pin::Pin::new(p).poll_write(cx, buf),
            StdinKind::Pty { master, .. } => std::pin::Pin::new(&mut &**master).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match &mut self.0 {
            StdinKind::Pipe(p) => std::pin::Pin::new(p).poll_flush(cx),
            StdinKind::Pty { master, .. } => std::pin::Pin::new(&mut &**master).poll_flush(cx),
        }
    }

    fn poll_close(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        match &mut self.0 {
            StdinKind::Pipe(p) => std::pin::Pin::new(p).poll_close(cx),
            StdinKind::Pty { master, eof_sent } => {
                if *eof_sent {
                    return Poll::Ready(Ok(()));
                }
                match std::pin::Pin::new(&mut &**master).poll_write(cx, &[0x04]) {
                    Poll::Ready(Ok(0)) => Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(_)) => {
                        *eof_sent = true;
                        Poll::Ready(Ok(()))
                    }
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

/// What identifies a process where it runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProcessId {
    /// A process on this machine. `start_time` (field 22 of /proc/PID/stat) tells a reused pid apart.
    Local { pid: u32, start_time: Option<u64> },
    /// A process at the end of a layer chain: `pid` as seen there (inside the container's pid namespace for
    /// docker), on `host`.
    Remote {
        host: String,
        pid: u32,
        start_time: Option<u64>,
    },
    /// A docker container.
    Container { id: String },
}

impl ProcessId {
    /// The pid, for processes.
    pub fn pid(&self) -> Option<u32> {
        match self {
            ProcessId::Local { pid, .. } | ProcessId::Remote { pid, .. } => Some(*pid),
            ProcessId::Container { .. } => None,
        }
    }
    /// The start time recorded with the pid.
    pub fn start_time(&self) -> Option<u64> {
        match self {
            ProcessId::Local { start_time, .. } | ProcessId::Remote { start_time, .. } => {
                *start_time
            }
            ProcessId::Container { .. } => None,
        }
    }
}

impl fmt::Display for ProcessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessId::Local { pid, .. } => write!(f, "pid {pid}"),
            ProcessId::Remote { host, pid, .. } => write!(f, "pid {pid} on {host}"),
            ProcessId::Container { id } => write!(f, "container {}", &id[..id.len().min(12)]),
        }
    }
}

/// Everything a command printed, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    /// stdout as text, invalid UTF-8 replaced.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    /// stderr as text, invalid UTF-8 replaced.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// State of a managed process on its target (see [`crate::ManagedSpec`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedState {
    /// The state directory on the target, `~/` expanded there.
    pub dir: String,
    pub pid: u32,
    pub start_time: String,
}

pub(crate) type Outcome = Arc<OnceCell<Result<ExitStatus>>>;

/// How to reach the process for signals.
pub(crate) enum Control {
    /// A local process group.
    Local { pgid: u32 },
    /// A program at the end of a chain; the local client leads `local_pgid`.
    Chain {
        exec: Executor,
        target: Target,
        pid: u32,
        start_time: String,
        local_pgid: u32,
    },
    /// A managed process, signalled through its pidfile.
    Managed {
        exec: Executor,
        target: Target,
        state: ManagedState,
        keep_running: bool,
    },
    /// A local process attached by pid (not ours: never killed on drop).
    Pid { pid: u32, start_time: Option<u64> },
    /// A docker container.
    Container {
        exec: Executor,
        target: Target,
        cli: crate::layer::DockerCli,
        id: String,
        remove: bool,
    },
}

/// A running (or finished) process, container or managed process: its id, its events, its exit status,
/// and signals. The same for every kind and every layer chain.
pub struct Process {
    pub(crate) id: ProcessId,
    pub(crate) events: Option<Events>,
    pub(crate) stdin: Option<Stdin>,
    pub(crate) pty: Option<PtyMaster>,
    pub(crate) outcome: Outcome,
    pub(crate) ctl: Arc<Control>,
    pub(crate) _tasks: Vec<smol::Task<()>>,
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Process {
    /// The pid, remote pid or container id.
    pub fn id(&self) -> &ProcessId {
        &self.id
    }

    /// Takes the event stream (once). Events are queued from the start, so nothing is missed by taking it
    /// late, up to the queue bound.
    pub fn take_events(&mut self) -> Option<Events> {
        self.events.take()
    }

    /// Takes stdin (once), for commands started with [`StdinMode::Piped`].
    pub fn take_stdin(&mut self) -> Option<Stdin> {
        self.stdin.take()
    }

    /// Sets the window size of the process's pseudo-terminal ([`Command::pty`]); the program gets
    /// SIGWINCH, and an ssh or docker layer passes the new size on to the terminal at the far end.
    pub fn resize(&self, size: PtySize) -> Result<()> {
        let master = self
            .pty
            .as_ref()
            .ok_or_else(|| Error::invalid("resize", "the process has no pseudo-terminal"))?;
        rustix::termios::tcsetwinsize(master.get_ref(), winsize(size))
            .map_err(|e| Error::io(Place::local(), "setting the terminal size", e.into()))
    }

    /// Waits for the end. Errors when the layer chain broke (the far side's fate is then unknown) or the
    /// command's timeout passed (it was killed).
    pub async fn wait(&self) -> Result<ExitStatus> {
        self.outcome.wait().await.clone()
    }

    /// The outcome, if the process has ended.
    pub fn try_wait(&self) -> Option<Result<ExitStatus>> {
        self.outcome.get().cloned()
    }

    /// The managed process's state on its target (directory, pid, start time).
    pub fn managed_state(&self) -> Option<&ManagedState> {
        match &*self.ctl {
            Control::Managed { state, .. } => Some(state),
            _ => None,
        }
    }

    /// Sends `signal` to the process and everything in its process group, wherever it runs.
    pub async fn signal(&self, signal: Signal) -> Result<()> {
        signal_control(&self.ctl, signal, None).await.map(|_| ())
    }

    /// Sends SIGKILL.
    pub async fn kill(&self) -> Result<()> {
        self.signal(Signal::Kill).await
    }

    /// Stops gracefully: SIGTERM (for containers: docker stop, honouring the stop signal), then SIGKILL to
    /// whatever is left after `grace`, then waits for the end.
    pub async fn stop(&self, grace: Duration) -> Result<ExitStatus> {
        if self.outcome.get().is_none() {
            match &*self.ctl {
                Control::Managed { .. } | Control::Container { .. } => {
                    signal_control(&self.ctl, Signal::Term, Some(grace)).await?;
                }
                _ => {
                    self.signal(Signal::Term).await?;
                    let ended = async {
                        self.outcome.wait().await;
                        true
                    }
                    .or(async {
                        async_io::Timer::after(grace).await;
                        false
                    })
                    .await;
                    if !ended {
                        self.signal(Signal::Kill).await?;
                    }
                }
            }
        }
        let status = self.wait().await;
        if let Control::Container {
            exec,
            target,
            cli,
            id,
            remove: true,
        } = &*self.ctl
        {
            crate::docker::remove(exec, target, cli, id).await?;
        }
        status
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.outcome.get().is_some() {
            return;
        }
        match &*self.ctl {
            Control::Local { pgid } => kill_group(*pgid, Signal::Kill),
            Control::Chain { local_pgid, .. } => {
                kill_group(*local_pgid, Signal::Kill);
                let ctl = self.ctl.clone();
                smol::spawn(async move {
                    let _ = signal_control(&ctl, Signal::Kill, None).await;
                })
                .detach();
            }
            Control::Managed {
                keep_running: false,
                ..
            } => {
                let ctl = self.ctl.clone();
                smol::spawn(async move {
                    let _ = signal_control(&ctl, Signal::Term, Some(Duration::from_secs(5))).await;
                })
                .detach();
            }
            Control::Managed { .. } | Control::Container { .. } | Control::Pid { .. } => {}
        }
    }
}

fn kill_group(pgid: u32, signal: Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(pgid as i32) {
        let _ = rustix::process::kill_process_group(pid, signal.to_rustix());
    }
}

/// Signals through the control; with `stop`, a graceful stop with that grace.
pub(crate) async fn signal_control(
    ctl: &Control,
    signal: Signal,
    stop: Option<Duration>,
) -> Result<String> {
    match ctl {
        Control::Local { pgid } => {
            let pid = rustix::process::Pid::from_raw(*pgid as i32)
                .ok_or_else(|| Error::invalid("pid", pgid.to_string()))?;
            rustix::process::kill_process_group(pid, signal.to_rustix())
                .or_else(|_| rustix::process::kill_process(pid, signal.to_rustix()))
                .or_else(|e| {
                    if e == rustix::io::Errno::SRCH {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .map_err(|e| {
                    Error::io(
                        Place::local(),
                        format!("sending {signal} to {pgid}"),
                        e.into(),
                    )
                })?;
            Ok(String::new())
        }
        Control::Chain {
            exec,
            target,
            pid,
            start_time,
            ..
        } => {
            let argv = script::signal_pid_argv(signal.name(), *pid, start_time);
            exec.run_op(target, argv, exec.options().op_timeout, "signal")
                .await?;
            Ok(String::new())
        }
        Control::Managed {
            exec,
            target,
            state,
            ..
        } => {
            let tenths = stop.map(|g| (g.as_millis() / 100) as i64).unwrap_or(-1);
            let limit = exec.options().op_timeout + stop.unwrap_or_default();
            let out = exec
                .run_op(
                    target,
                    script::signal_argv(&state.dir, signal.name(), tenths),
                    limit,
                    "signal",
                )
                .await?;
            Ok(out.stdout_text().trim().to_string())
        }
        Control::Pid { pid, start_time } => {
            if local_start_time(*pid) != *start_time {
                return Ok(String::new());
            }
            let p = rustix::process::Pid::from_raw(*pid as i32)
                .ok_or_else(|| Error::invalid("pid", pid.to_string()))?;
            let leads_group = rustix::process::getpgid(Some(p)).is_ok_and(|g| g == p);
            let sent = if leads_group {
                rustix::process::kill_process_group(p, signal.to_rustix())
            } else {
                rustix::process::kill_process(p, signal.to_rustix())
            };
            sent.or_else(|e| {
                if e == rustix::io::Errno::SRCH {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .map_err(|e| {
                Error::io(
                    Place::local(),
                    format!("sending {signal} to {pid}"),
                    e.into(),
                )
            })?;
            Ok(String::new())
        }
        Control::Container {
            exec,
            target,
            cli,
            id,
            ..
        } => {
            let mut argv = cli.base();
            match stop {
                Some(grace) => {
                    argv.extend([
                        "stop".into(),
                        "-t".into(),
                        grace.as_secs().to_string().into(),
                        id.into(),
                    ]);
                    exec.run_op(
                        target,
                        argv,
                        exec.options().op_timeout + grace,
                        "docker stop",
                    )
                    .await?;
                }
                None => {
                    argv.extend(["kill".into(), "-s".into(), signal.name().into(), id.into()]);
                    exec.run_op(target, argv, exec.options().op_timeout, "docker kill")
                        .await?;
                }
            }
            Ok(String::new())
        }
    }
}

impl Place {
    pub(crate) fn local() -> Place {
        Place {
            host: "localhost".into(),
            layer: "local".into(),
        }
    }
}

/// Field 22 of /proc/PID/stat on this machine.
pub(crate) fn local_start_time(pid: u32) -> Option<u64> {
    crate::service::procfs::start_time(pid)
}

/// What the stderr pump saw besides output.
#[derive(Default)]
pub(crate) struct Markers {
    pub(crate) vanished: bool,
}

/// Spawns a one-off command on `target`. `shell_status` maps `$?`-style codes above 128 to signals.
pub(crate) async fn spawn(
    exec: &Executor,
    target: &Target,
    cmd: &Command,
    shell_status: bool,
) -> Result<Process> {
    cmd.validate()?;
    if target.is_local() {
        spawn_local(exec, cmd, shell_status).await
    } else {
        spawn_chain(exec, target, cmd, shell_status).await
    }
}

fn piped(cmd: std::process::Command, stdin: StdinMode) -> async_process::Command {
    use async_process::Stdio;
    let mut cmd = cmd;
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut cmd = async_process::Command::from(cmd);
    cmd.stdin(match stdin {
        StdinMode::Null => Stdio::null(),
        StdinMode::Piped => Stdio::piped(),
    });
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

fn winsize(size: PtySize) -> rustix::termios::Winsize {
    rustix::termios::Winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// Opens a pseudo-terminal of `size`: (master, slave).
fn open_pty(size: PtySize) -> std::io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use rustix::pty::OpenptFlags;
    let master =
        rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    rustix::pty::grantpt(&master)?;
    rustix::pty::unlockpt(&master)?;
    let name = rustix::pty::ptsname(&master, Vec::new())?;
    let slave = rustix::fs::open(
        name.as_c_str(),
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    rustix::termios::tcsetwinsize(&master, winsize(size))?;
    Ok((master, slave))
}

/// Spawns `cmd` with the pty's slave as stdin, stdout and stderr and as its controlling terminal,
/// in a session of its own (so its pid is its process group). Returns the child and the master.
fn spawn_on_pty(
    mut cmd: std::process::Command,
    size: PtySize,
) -> std::io::Result<(async_process::Child, PtyMaster)> {
    use std::os::unix::process::CommandExt;
    let (master, slave) = open_pty(size)?;
    // SAFETY: only setsid and ioctl (system calls, async-signal-safe) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::setsid()?;
            let tty = rustix::fd::BorrowedFd::borrow_raw(0);
            rustix::process::ioctl_tiocsctty(tty)?;
            Ok(())
        });
    }
    // Set on the async Command: it replaces what it was not told with inherited descriptors.
    let mut cmd = async_process::Command::from(cmd);
    cmd.stdin(std::process::Stdio::from(slave.try_clone()?))
        .stdout(std::process::Stdio::from(slave.try_clone()?))
        .stderr(std::process::Stdio::from(slave))
        .kill_on_drop(true);
    let child = cmd.spawn()?;
    // The Command holds the slave's descriptors: without dropping it, reading the master never
    // sees the terminal close.
    drop(cmd);
    let master = Arc::new(Async::new(std::fs::File::from(master))?);
    Ok((child, master))
}

async fn spawn_local(exec: &Executor, cmd: &Command, shell_status: bool) -> Result<Process> {
    let at = Place::local();
    if let Some(dir) = &cmd.cwd
        && !std::path::Path::new(dir).is_dir()
    {
        return Err(Error::WorkingDir {
            at,
            dir: dir.to_string_lossy().into_owned(),
        });
    }
    let mut std_cmd = std::process::Command::new(&cmd.program);
    std_cmd.args(&cmd.args);
    for (k, v) in &cmd.env {
        std_cmd.env(k, v);
    }
    if let Some(dir) = &cmd.cwd {
        std_cmd.current_dir(dir);
    }
    let not_found = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::ProgramNotFound {
                at: at.clone(),
                program: cmd.program.to_string_lossy().into_owned(),
            }
        } else {
            Error::io(
                at.clone(),
                format!("spawning {}", cmd.program.to_string_lossy()),
                e,
            )
        }
    };
    if let Some(size) = cmd.pty {
        let (child, master) = spawn_on_pty(std_cmd, size).map_err(not_found)?;
        let pid = child.id();
        let id = ProcessId::Local {
            pid,
            start_time: local_start_time(pid),
        };
        let ctl = Arc::new(Control::Local { pgid: pid });
        return Ok(finish_spawn(
            exec,
            id,
            ctl,
            child,
            Outputs::Pty {
                master,
                leftover: Vec::new(),
            },
            cmd,
            None,
            at,
            shell_status,
        ));
    }
    let mut child = piped(std_cmd, cmd.stdin).spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::ProgramNotFound {
                at: at.clone(),
                program: cmd.program.to_string_lossy().into_owned(),
            }
        } else {
            Error::io(
                at.clone(),
                format!("spawning {}", cmd.program.to_string_lossy()),
                e,
            )
        }
    })?;
    let pid = child.id();
    let id = ProcessId::Local {
        pid,
        start_time: local_start_time(pid),
    };
    let ctl = Arc::new(Control::Local { pgid: pid });
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take().map(LineReader::new);
    Ok(finish_spawn(
        exec,
        id,
        ctl,
        child,
        Outputs::Pipes {
            stdin,
            stdout,
            stderr,
        },
        cmd,
        None,
        at,
        shell_status,
    ))
}

async fn spawn_chain(
    exec: &Executor,
    target: &Target,
    cmd: &Command,
    shell_status: bool,
) -> Result<Process> {
    let places = target.places();
    let first = places[0].clone();
    let outer_ssh = match target.layers.first() {
        Some(Layer::Ssh(h)) => Some(h),
        _ => None,
    };
    let tty = cmd.pty.is_some();
    let inner = target.wrap(script::exec_argv(cmd), true, tty);
    let (argv, session) = match outer_ssh {
        Some(host) => {
            let limit = exec.options().start_timeout;
            let session = async { exec.ssh().session(host, cmd.control).await.map(Some) }
                .or(async {
                    async_io::Timer::after(limit).await;
                    Ok(None)
                })
                .await?
                .ok_or_else(|| Error::Timeout {
                    at: first.clone(),
                    operation: format!(
                        "waiting for a free ssh session (at most {} per connection)",
                        host.max_sessions
                    ),
                    after: limit,
                })?;
            (
                session.argv(OsString::from_vec(quote::join(&inner)), tty),
                Some(session),
            )
        }
        None => (inner, None),
    };
    // The environment goes to the wrapper's stdin, never into an argv: a pipe even for StdinMode::Null.
    let preamble = script::env_preamble(cmd);
    let stdin_mode = if preamble.is_some() {
        StdinMode::Piped
    } else {
        cmd.stdin
    };
    let mut std_cmd = std::process::Command::new(&argv[0]);
    std_cmd.args(&argv[1..]);
    if let Some(size) = cmd.pty {
        // ssh asks the far end for a terminal of the type in its own TERM (not a secret).
        if let Some((_, term)) = cmd.env.iter().find(|(k, _)| k == "TERM") {
            std_cmd.env("TERM", term);
        }
        return spawn_chain_pty(
            exec,
            target,
            cmd,
            std_cmd,
            size,
            session,
            preamble,
            shell_status,
        )
        .await;
    }
    let mut child = piped(std_cmd, stdin_mode).spawn().map_err(|e| {
        let prog = argv[0].to_string_lossy().into_owned();
        match target.layers.first() {
            Some(Layer::Docker(d)) if e.kind() == std::io::ErrorKind::NotFound => {
                Error::DockerMissing {
                    at: first.clone(),
                    detail: format!("{}: {e}", d.cli.program),
                }
            }
            _ => Error::io(first.clone(), format!("spawning {prog}"), e),
        }
    })?;
    let mut stderr = LineReader::new(child.stderr.take().ok_or_else(|| {
        Error::io(
            first.clone(),
            "stderr",
            std::io::Error::other("no stderr pipe"),
        )
    })?);

    // Everything on stderr before the wrapper's marker comes from the layers.
    let start_timeout = exec.options().start_timeout;
    let mut said: Vec<String> = Vec::new();
    let mut stdin = child.stdin.take();
    // Written while the layers start; a chain that fails first closes the pipe (EPIPE, ignored here: the
    // layers' own error follows on stderr).
    let send_env = async {
        if let (Some(p), Some(w)) = (&preamble, stdin.as_mut()) {
            let _ = w.write_all(p).await;
            let _ = w.flush().await;
        }
    };
    let read_marker = async {
        while let Some(line) = stderr.next_line().await {
            if let Some(rest) = line.bytes.strip_prefix(MARK) {
                let text = String::from_utf8_lossy(rest).into_owned();
                if let Some(pid_st) = text.strip_prefix("PID ") {
                    return Ok(Some(pid_st.to_string()));
                }
                said.push(format!("\u{1e}HARNESS-{text}"));
            } else {
                said.push(line.text().into_owned());
            }
        }
        Ok(None)
    };
    let started = async { futures_lite::future::zip(send_env, read_marker).await.1 }
        .or(async {
            async_io::Timer::after(start_timeout).await;
            Err(())
        })
        .await;
    let (id, ctl) = chain_started(exec, target, started, cmd, &mut child, &said, "").await?;
    // With StdinMode::Null the pipe that carried the environment closes here.
    let stdin = stdin.filter(|_| cmd.stdin == StdinMode::Piped);
    let stdout = child.stdout.take();
    Ok(finish_spawn(
        exec,
        id,
        ctl,
        child,
        Outputs::Pipes {
            stdin,
            stdout,
            stderr: Some(stderr),
        },
        cmd,
        session,
        target.program_place(),
        shell_status,
    ))
}

/// How a chain's start ended, once its wrapper said `PID START` or not: the process's identity
/// and control, or the error (the chain's own words; a timeout after `start_timeout`, `how` the
/// program was being started).
async fn chain_started(
    exec: &Executor,
    target: &Target,
    started: std::result::Result<Option<String>, ()>,
    cmd: &Command,
    child: &mut async_process::Child,
    said: &[String],
    how: &str,
) -> Result<(ProcessId, Arc<Control>)> {
    // The chain's local process leads its own group.
    let local_pgid = child.id();
    let places = target.places();
    let first = places[0].clone();
    let pid_st = match started {
        Ok(Some(p)) => p,
        Ok(None) => {
            let status = child.status().await.ok().map(ExitStatus::from_std);
            return Err(classify::chain_error(
                target,
                said,
                status.and_then(ExitStatus::code),
            ));
        }
        Err(()) => {
            kill_group(local_pgid, Signal::Kill);
            let _ = child.kill();
            let at = places.iter().rev().nth(1).cloned().unwrap_or(first);
            return Err(Error::Timeout {
                at,
                operation: format!(
                    "starting {}{how} ({})",
                    cmd.program.to_string_lossy(),
                    said.join("; ")
                ),
                after: exec.options().start_timeout,
            });
        }
    };
    let mut parts = pid_st.split_whitespace();
    let pid: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let start_time = parts.next().unwrap_or("").to_string();
    for l in said {
        tracing::debug!(target: "command_executor", "{}: {l}", first);
    }
    let id = ProcessId::Remote {
        host: target.host(),
        pid,
        start_time: start_time.parse().ok(),
    };
    let ctl = Arc::new(Control::Chain {
        exec: exec.clone(),
        target: target.clone(),
        pid,
        start_time,
        local_pgid,
    });
    Ok((id, ctl))
}

/// [`spawn_chain`] on a pseudo-terminal: the layers pass it on (`ssh -tt`, `docker exec -it`), so the
/// wrapper's markers and the layers' messages come through the terminal, mixed with nothing else
/// until the PID marker. The environment is written only after the wrapper's ENV marker says the far
/// terminal no longer echoes (see [`script`]).
#[allow(clippy::too_many_arguments)]
async fn spawn_chain_pty(
    exec: &Executor,
    target: &Target,
    cmd: &Command,
    std_cmd: std::process::Command,
    size: PtySize,
    session: Option<crate::ssh::Session>,
    preamble: Option<Vec<u8>>,
    shell_status: bool,
) -> Result<Process> {
    let places = target.places();
    let first = places[0].clone();
    let (mut child, master) = spawn_on_pty(std_cmd, size).map_err(|e| {
        let prog = cmd.program.to_string_lossy().into_owned();
        Error::io(first.clone(), format!("spawning the chain for {prog}"), e)
    })?;
    let mut said: Vec<String> = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let handshake = async {
        let mut buf = vec![0u8; 4096];
        loop {
            while let Some(i) = pending.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = pending.drain(..=i).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                // A layer may print before the marker on the same line (no newline of its own).
                let Some(at) = line.windows(MARK.len()).position(|w| w == MARK) else {
                    said.push(String::from_utf8_lossy(&line).into_owned());
                    continue;
                };
                if at > 0 {
                    said.push(String::from_utf8_lossy(&line[..at]).into_owned());
                }
                let text = String::from_utf8_lossy(&line[at + MARK.len()..]).into_owned();
                if let Some(pid_st) = text.strip_prefix("PID ") {
                    return Ok(Some(pid_st.to_string()));
                }
                if text == "ENV" {
                    if let Some(p) = &preamble {
                        (&*master).write_all(p).await.map_err(|_| ())?;
                        (&*master).flush().await.map_err(|_| ())?;
                    }
                    continue;
                }
                said.push(format!("\u{1e}HARNESS-{text}"));
            }
            match (&*master).read(&mut buf).await {
                Ok(0) | Err(_) => return Ok(None),
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
        }
    };
    let limit = exec.options().start_timeout;
    let started = handshake
        .or(async {
            async_io::Timer::after(limit).await;
            Err(())
        })
        .await;
    let (id, ctl) = chain_started(
        exec,
        target,
        started,
        cmd,
        &mut child,
        &said,
        " on a terminal",
    )
    .await?;
    Ok(finish_spawn(
        exec,
        id,
        ctl,
        child,
        Outputs::Pty {
            master,
            leftover: pending,
        },
        cmd,
        session,
        target.program_place(),
        shell_status,
    ))
}

/// Where a spawned process's stdin and output are.
enum Outputs {
    Pipes {
        stdin: Option<async_process::ChildStdin>,
        stdout: Option<async_process::ChildStdout>,
        stderr: Option<LineReader<async_process::ChildStderr>>,
    },
    /// A pseudo-terminal; `leftover` is output already read (after the start marker).
    Pty {
        master: PtyMaster,
        leftover: Vec<u8>,
    },
}

/// Sends what `r` yields as it comes, one event per read, waiting on a listener that falls behind.
async fn pump_chunks<R: futures_lite::AsyncRead + Unpin>(mut r: R, sink: &EventSink, stderr: bool) {
    let mut buf = vec![0u8; 128 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                let line = Line {
                    bytes: buf[..n].to_vec(),
                    newline: false,
                };
                let ev = if stderr {
                    Event::Stderr(line)
                } else {
                    Event::Stdout(line)
                };
                sink.push_wait(ev).await;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // EIO from a pty's master once every end of the terminal is closed.
            Err(_) => break,
        }
    }
}

/// Starts the output pumps and the waiter; returns the handle.
#[allow(clippy::too_many_arguments)]
fn finish_spawn(
    exec: &Executor,
    id: ProcessId,
    ctl: Arc<Control>,
    mut child: async_process::Child,
    outputs: Outputs,
    cmd: &Command,
    session: Option<crate::ssh::Session>,
    at: Place,
    shell_status: bool,
) -> Process {
    let timeout = cmd.timeout;
    let (sink, events) = EventSink::new(exec.options().queue_bytes);
    sink.push(Event::Started(id.clone()));
    let markers = Arc::new(Mutex::new(Markers::default()));
    let (stdin, stdout, stderr, pty) = match outputs {
        Outputs::Pipes {
            stdin,
            stdout,
            stderr,
        } => (
            stdin.map(|p| Stdin(StdinKind::Pipe(p))),
            stdout,
            stderr,
            None,
        ),
        Outputs::Pty { master, leftover } => {
            let stdin = Stdin(StdinKind::Pty {
                master: master.clone(),
                eof_sent: false,
            });
            if !leftover.is_empty() {
                sink.push(Event::Stdout(Line {
                    bytes: leftover,
                    newline: false,
                }));
            }
            (Some(stdin), None, None, Some(master))
        }
    };
    let chunked = cmd.chunked;
    let pty_pump = pty.clone().map(|master| {
        let sink = sink.clone();
        smol::spawn(async move { pump_chunks(&*master, &sink, false).await })
    });
    let out_pump = if chunked {
        let sink = sink.clone();
        smol::spawn(async move {
            if let Some(out) = stdout {
                pump_chunks(out, &sink, false).await;
            }
        })
    } else {
        let sink = sink.clone();
        smol::spawn(async move {
            if let Some(out) = stdout {
                let mut r = LineReader::new(out);
                while let Some(line) = r.next_line().await {
                    sink.push(Event::Stdout(line));
                }
            }
        })
    };
    let err_pump = if chunked {
        let sink = sink.clone();
        smol::spawn(async move {
            if let Some(r) = stderr {
                pump_chunks(r.into_inner(), &sink, true).await;
            }
        })
    } else {
        let sink = sink.clone();
        let markers = markers.clone();
        smol::spawn(async move {
            if let Some(mut r) = stderr {
                while let Some(line) = r.next_line().await {
                    if let Some(rest) = line.bytes.strip_prefix(MARK) {
                        if rest.starts_with(b"VANISHED") {
                            markers.lock().unwrap_or_else(|p| p.into_inner()).vanished = true;
                        }
                        continue;
                    }
                    sink.push(Event::Stderr(Line {
                        bytes: line.bytes,
                        newline: line.newline,
                    }));
                }
            }
        })
    };
    let outcome: Outcome = Arc::new(OnceCell::new());
    let waiter = {
        let outcome = outcome.clone();
        let ctl = ctl.clone();
        smol::spawn(async move {
            let _session = session;
            let run = async {
                out_pump.await;
                err_pump.await;
                match pty_pump {
                    None => child.status().await,
                    Some(pump) => {
                        // A program's background children may keep the terminal open: once the
                        // program ended, read what is there, but do not wait for them.
                        let status = child.status().await;
                        pump.or(async {
                            async_io::Timer::after(Duration::from_secs(1)).await;
                        })
                        .await;
                        status
                    }
                }
            };
            let result = match timeout {
                None => Some(run.await),
                Some(limit) => {
                    async { Some(run.await) }
                        .or(async {
                            async_io::Timer::after(limit).await;
                            None
                        })
                        .await
                }
            };
            let result = match result {
                Some(Ok(status)) => {
                    let st = ExitStatus::from_std(status);
                    let st = match (shell_status, st) {
                        (true, ExitStatus::Code(c)) => ExitStatus::from_shell(c),
                        (_, st) => st,
                    };
                    if markers.lock().unwrap_or_else(|p| p.into_inner()).vanished {
                        Err(Error::Stale {
                            at: at.clone(),
                            pidfile: String::new(),
                            detail: "the process is gone and no exit status was recorded".into(),
                        })
                    } else {
                        Ok(st)
                    }
                }
                Some(Err(e)) => Err(Error::io(at.clone(), "waiting", e)),
                None => {
                    let _ = signal_control(&ctl, Signal::Kill, None).await;
                    if let Control::Chain { local_pgid, .. } = &*ctl {
                        kill_group(*local_pgid, Signal::Kill);
                    }
                    Err(Error::Timeout {
                        at: at.clone(),
                        operation: "command".into(),
                        after: timeout.unwrap_or_default(),
                    })
                }
            };
            match &result {
                Ok(st) => sink.push(Event::Exited(*st)),
                Err(e) => sink.push(Event::Failed(e.clone())),
            }
            sink.close();
            let _ = outcome.set(result).await;
        })
    };
    Process {
        id,
        events: Some(events),
        stdin,
        pty,
        outcome,
        ctl,
        _tasks: vec![waiter],
    }
}

/// Runs to the end and collects the exact output.
pub(crate) async fn collect(mut p: Process) -> Result<Output> {
    let mut events = p
        .take_events()
        .ok_or_else(|| Error::invalid("process", "events already taken"))?;
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    while let Some(ev) = events.next().await {
        match ev {
            Event::Stdout(l) => push_line(&mut stdout, l),
            Event::Stderr(l) => push_line(&mut stderr, l),
            _ => {}
        }
    }
    let status = p.wait().await?;
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

fn push_line(buf: &mut Vec<u8>, l: Line) {
    buf.extend_from_slice(&l.bytes);
    if l.newline {
        buf.push(b'\n');
    }
}

/// Attaches to a local process by pid. `start_time` (from [`ProcessId::start_time`], recorded when it was
/// started) guards against a reused pid. Not our child, so its end is [`Error::StatusUnknown`]; it
/// is watched by polling /proc, has no output events, and is not killed when the handle is dropped.
pub(crate) async fn attach_pid(
    exec: &Executor,
    pid: u32,
    start_time: Option<u64>,
) -> Result<Process> {
    let now = local_start_time(pid);
    let at = Place::local();
    if now.is_none() || (start_time.is_some() && now != start_time) {
        return Err(Error::Stale {
            at,
            pidfile: String::new(),
            detail: format!("pid {pid} is gone or belongs to another process"),
        });
    }
    let id = ProcessId::Local {
        pid,
        start_time: now,
    };
    let (sink, events) = EventSink::new(exec.options().queue_bytes);
    sink.push(Event::Started(id.clone()));
    let outcome: Outcome = Arc::new(OnceCell::new());
    let task = {
        let outcome = outcome.clone();
        smol::spawn(async move {
            while local_start_time(pid) == now && !is_zombie(pid) {
                async_io::Timer::after(Duration::from_millis(100)).await;
            }
            let e = Error::StatusUnknown {
                at: Place::local(),
                pid,
            };
            sink.push(Event::Failed(e.clone()));
            sink.close();
            let _ = outcome.set(Err(e)).await;
        })
    };
    let ctl = Arc::new(Control::Pid {
        pid,
        start_time: now,
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

fn is_zombie(pid: u32) -> bool {
    crate::service::procfs::stat(pid).is_some_and(|r| r.zombie)
}
