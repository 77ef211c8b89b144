//! Docker containers as processes: `docker run -d`, attach by name, id or label, logs as events, stop with a
//! grace period, remove. The docker CLI runs wherever the target says (locally, or on a host over ssh), and
//! talks to the engine its `-H` names.

use std::ffi::OsString;
use std::sync::Arc;

use async_lock::OnceCell;

use crate::command::Command;
use crate::error::{Error, Place, Result};
use crate::event::{Event, EventSink, ExitStatus};
use crate::executor::Executor;
use crate::layer::{DockerCli, Target};
use crate::process::{Control, Outcome, Output, Process, ProcessId};

/// A container to run (`docker run -d`).
#[derive(Debug, Clone, Default)]
pub struct DockerRun {
    pub cli: DockerCli,
    pub image: String,
    /// `--name`.
    pub name: Option<String>,
    /// `--label k=v`, used to find containers again.
    pub labels: Vec<(String, String)>,
    /// `-e k=v`.
    pub env: Vec<(String, String)>,
    /// `-p` specs (`8080:80`, `127.0.0.1:8080:80/tcp`).
    pub ports: Vec<String>,
    /// `-v` specs (`/host:/ctr:ro`, `volume:/data`).
    pub volumes: Vec<String>,
    /// `-w`.
    pub workdir: Option<String>,
    /// `-u`.
    pub user: Option<String>,
    /// `--init` (a tiny PID 1 that forwards signals and reaps zombies); on by default via [`DockerRun::new`].
    pub init: bool,
    /// `--stop-signal`.
    pub stop_signal: Option<String>,
    /// `--network`.
    pub network: Option<String>,
    /// Remove the container when the handle's `stop` has stopped it.
    pub remove_on_stop: bool,
    /// Further `docker run` options, before the image.
    pub extra_args: Vec<String>,
    /// The command (the image's default when empty).
    pub command: Vec<OsString>,
}

impl DockerRun {
    pub fn new(image: impl Into<String>) -> Self {
        DockerRun {
            image: image.into(),
            init: true,
            remove_on_stop: true,
            ..Default::default()
        }
    }
    pub fn cli(mut self, cli: DockerCli) -> Self {
        self.cli = cli;
        self
    }
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
    pub fn label(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.labels.push((k.into(), v.into()));
        self
    }
    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    pub fn port(mut self, spec: impl Into<String>) -> Self {
        self.ports.push(spec.into());
        self
    }
    pub fn volume(mut self, spec: impl Into<String>) -> Self {
        self.volumes.push(spec.into());
        self
    }
    pub fn workdir(mut self, dir: impl Into<String>) -> Self {
        self.workdir = Some(dir.into());
        self
    }
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }
    pub fn command<I, S>(mut self, argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.command = argv.into_iter().map(Into::into).collect();
        self
    }

    /// The full `docker ... run -d ...` argv.
    pub fn argv(&self) -> Vec<OsString> {
        let mut v = self.cli.base();
        v.extend(["run".into(), "-d".into()]);
        let mut opt = |k: &str, val: String| {
            v.push(k.into());
            v.push(val.into());
        };
        if let Some(n) = &self.name {
            opt("--name", n.clone());
        }
        for (k, val) in &self.labels {
            opt("--label", format!("{k}={val}"));
        }
        for (k, val) in &self.env {
            opt("-e", format!("{k}={val}"));
        }
        for p in &self.ports {
            opt("-p", p.clone());
        }
        for m in &self.volumes {
            opt("-v", m.clone());
        }
        if let Some(w) = &self.workdir {
            opt("-w", w.clone());
        }
        if let Some(u) = &self.user {
            opt("-u", u.clone());
        }
        if let Some(s) = &self.stop_signal {
            opt("--stop-signal", s.clone());
        }
        if let Some(n) = &self.network {
            opt("--network", n.clone());
        }
        if self.init {
            v.push("--init".into());
        }
        v.extend(self.extra_args.iter().map(Into::into));
        v.push("--".into());
        v.push(self.image.clone().into());
        v.extend(self.command.iter().cloned());
        v
    }
}

/// Which container to attach to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerSelector {
    /// Name or id.
    Name(String),
    /// The one container carrying this label (`key`, `value`).
    Label(String, String),
}

fn cli_place(target: &Target, cli: &DockerCli) -> Place {
    let mut at = target.program_place();
    at.layer = format!(
        "docker CLI {}{}",
        cli.program,
        cli.host
            .as_ref()
            .map(|h| format!(" -H {h}"))
            .unwrap_or_default()
    );
    at
}

/// Classifies a failed docker CLI run.
fn docker_error(at: Place, cli: &DockerCli, container: &str, out: &Output) -> Error {
    let text = out.stderr_text();
    let detail = text.trim().to_string();
    if text.contains("Cannot connect to the Docker daemon") || text.contains("error during connect")
    {
        Error::DockerUnreachable { at, detail }
    } else if text.contains("No such container") || text.contains("No such object") {
        Error::ContainerAbsent {
            at,
            container: container.into(),
            detail,
        }
    } else if out.status.code() == Some(127) && text.contains(&cli.program) {
        Error::DockerMissing { at, detail }
    } else {
        Error::Layer {
            at,
            code: out.status.code(),
            stderr: detail,
        }
    }
}

async fn docker_op(
    exec: &Executor,
    target: &Target,
    cli: &DockerCli,
    args: &[&str],
    what: &str,
) -> Result<Output> {
    let mut argv = cli.base();
    argv.extend(args.iter().map(OsString::from));
    let out = exec
        .run_op(target, argv, exec.options().op_timeout, what)
        .await
        .map_err(|e| missing(e, target, cli))?;
    if !out.status.success() {
        return Err(docker_error(
            cli_place(target, cli),
            cli,
            args.last().copied().unwrap_or(""),
            &out,
        ));
    }
    Ok(out)
}

/// A missing CLI shows up as "program not found" from our wrapper; name it.
fn missing(e: Error, target: &Target, cli: &DockerCli) -> Error {
    match e {
        Error::ProgramNotFound { .. } => Error::DockerMissing {
            at: cli_place(target, cli),
            detail: format!("{} not found", cli.program),
        },
        other => other,
    }
}

pub(crate) async fn run(exec: &Executor, target: &Target, spec: &DockerRun) -> Result<Process> {
    let at = cli_place(target, &spec.cli);
    let out = exec
        .run_op(target, spec.argv(), exec.options().op_timeout, "docker run")
        .await
        .map_err(|e| missing(e, target, &spec.cli))?;
    if !out.status.success() {
        return Err(docker_error(
            at,
            &spec.cli,
            spec.name.as_deref().unwrap_or(&spec.image),
            &out,
        ));
    }
    let id = run_id(&out, at)?;
    follow(exec, target, &spec.cli, id, spec.remove_on_stop).await
}

/// The container id `docker run -d` printed (its last line).
pub(crate) fn run_id(out: &crate::process::Output, at: Place) -> Result<String> {
    let text = out.stdout_text();
    let id = text.lines().last().unwrap_or("").trim();
    if id.is_empty() {
        return Err(Error::Layer {
            at,
            code: out.status.code(),
            stderr: "docker run printed no container id".into(),
        });
    }
    Ok(id.to_owned())
}

pub(crate) async fn attach(
    exec: &Executor,
    target: &Target,
    cli: &DockerCli,
    which: &ContainerSelector,
) -> Result<Process> {
    let at = cli_place(target, cli);
    let id = match which {
        ContainerSelector::Name(name) => {
            let out = docker_op(
                exec,
                target,
                cli,
                &[
                    "inspect",
                    "--type",
                    "container",
                    "--format",
                    "{{.Id}}",
                    name,
                ],
                "docker inspect",
            )
            .await?;
            out.stdout_text().trim().to_string()
        }
        ContainerSelector::Label(k, v) => {
            let filter = format!("label={k}={v}");
            let out = docker_op(
                exec,
                target,
                cli,
                &["ps", "-a", "-q", "--no-trunc", "--filter", &filter],
                "docker ps",
            )
            .await?;
            let ids: Vec<String> = out
                .stdout_text()
                .split_whitespace()
                .map(String::from)
                .collect();
            match ids.as_slice() {
                [one] => one.clone(),
                [] => {
                    return Err(Error::ContainerAbsent {
                        at,
                        container: filter,
                        detail: "no container has this label".into(),
                    });
                }
                many => {
                    return Err(Error::invalid(
                        "container selector",
                        format!("{} containers match {filter}", many.len()),
                    ));
                }
            }
        }
    };
    follow(exec, target, cli, id, false).await
}

/// The handle: `docker logs -f` for output and, beside it, `docker wait` for the exit code (two
/// sessions when the CLI runs over ssh).
async fn follow(
    exec: &Executor,
    target: &Target,
    cli: &DockerCli,
    id: String,
    remove: bool,
) -> Result<Process> {
    let mut logs = cli.base();
    logs.extend(["logs".into(), "-f".into(), id.clone().into()]);
    let mut it = logs.into_iter();
    let logs_cmd = Command::new(it.next().unwrap_or_default()).args(it);
    let mut logs = exec
        .spawn(target, &logs_cmd)
        .await
        .map_err(|e| missing(e, target, cli))?;
    let pid = ProcessId::Container { id: id.clone() };
    let (sink, events) = EventSink::new(exec.options().queue_bytes);
    sink.push(Event::Started(pid.clone()));
    let outcome: Outcome = Arc::new(OnceCell::new());
    let mut logs_events = logs.take_events();
    // `docker wait` runs from the start, beside `logs -f`: started only after the logs end, it could
    // find the container already removed (by its owner's stop) and the exit code would be lost.
    let waiting = {
        let (exec, target, cli, id) = (exec.clone(), target.clone(), cli.clone(), id.clone());
        smol::spawn(async move {
            let mut argv = cli.base();
            argv.extend(["wait".into(), id.clone().into()]);
            let mut it = argv.into_iter();
            let wait_cmd = Command::new(it.next().unwrap_or_default()).args(it);
            match exec.output(&target, &wait_cmd).await {
                Ok(out) if out.status.success() => match out.stdout_text().trim().parse::<i32>() {
                    Ok(code) => Ok(ExitStatus::from_shell(code)),
                    Err(_) => Err(Error::Layer {
                        at: cli_place(&target, &cli),
                        code: None,
                        stderr: format!("docker wait said {:?}", out.stdout_text()),
                    }),
                },
                Ok(out) => Err(docker_error(cli_place(&target, &cli), &cli, &id, &out)),
                Err(e) => Err(e),
            }
        })
    };
    let task = {
        let outcome = outcome.clone();
        smol::spawn(async move {
            if let Some(ev) = logs_events.as_mut() {
                while let Some(e) = ev.next().await {
                    match e {
                        Event::Stdout(_) | Event::Stderr(_) | Event::Lost(_) => sink.push(e),
                        _ => {}
                    }
                }
            }
            let _ = logs.wait().await;
            // The last lines are out; the exit comes after them.
            let result = waiting.await;
            match &result {
                Ok(st) => sink.push(Event::Exited(*st)),
                Err(e) => sink.push(Event::Failed(e.clone())),
            }
            sink.close();
            let _ = outcome.set(result).await;
        })
    };
    let ctl = Arc::new(Control::Container {
        exec: exec.clone(),
        target: target.clone(),
        cli: cli.clone(),
        id,
        remove,
    });
    Ok(Process {
        id: pid,
        events: Some(events),
        stdin: None,
        pty: None,
        outcome,
        ctl,
        _tasks: vec![task],
    })
}

/// Removes a container (`docker rm -f`).
pub(crate) async fn remove(
    exec: &Executor,
    target: &Target,
    cli: &DockerCli,
    id: &str,
) -> Result<()> {
    docker_op(exec, target, cli, &["rm", "-f", id], "docker rm")
        .await
        .map(|_| ())
}
