//! Docker services, on the local engine or on a host's engine (the docker CLI runs on the host
//! through the host's ssh connection, through `sudo -n` when the host says `sudo: true`).
//!
//! A container is named `harness.<project>.<service>` and labelled `harness.project` /
//! `harness.service`, so there is never a second one and a new daemon finds it again by label.
//! Output is followed with `docker logs -f --timestamps`; when the follower's session drops
//! (the ssh connection died), it resumes `--since` the last timestamp it copied and skips what
//! it already has, so no line is lost or copied twice. The last timestamp is kept in the local
//! service directory (`container.json`) for the next daemon. Stop is `docker stop` with the
//! configured signal (set as the container's `--stop-signal`) and timeout, then `docker rm`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_io::Timer;
use command_executor::{
    Command, DockerCli, DockerExec, DockerRun, Event, Executor, Output, Signal, Target,
};
use event_listener::Event as Notify;
use futures_lite::AsyncWriteExt;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::host::HostSpec;
use super::{ExitInfo, project_and_service};
use crate::spec::LaunchSpec;

/// A container to run, resolved from the services file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ContainerSpec {
    pub image: String,
    /// `-p` specs: only ports with a published host port are published.
    pub ports: Vec<String>,
    pub volumes: Vec<String>,
    pub user: Option<String>,
    /// The engine's host; `None` is the local engine.
    pub host: Option<HostSpec>,
}

impl ContainerSpec {
    pub fn new(service: &harness_config::Service, host: Option<HostSpec>) -> ContainerSpec {
        ContainerSpec {
            image: service.image.clone().unwrap_or_default(),
            ports: service
                .ports
                .iter()
                .filter_map(|p| p.published.map(|h| format!("{h}:{}", p.port)))
                .collect(),
            volumes: service.volumes.clone(),
            user: service.user.clone(),
            host,
        }
    }

    /// Where the docker CLI runs.
    pub fn cli_target(&self) -> Target {
        match &self.host {
            None => Target::local(),
            Some(h) if h.sudo => Target::ssh(h.ssh()).sudo("root"),
            Some(h) => Target::ssh(h.ssh()),
        }
    }

    pub fn cli(&self) -> DockerCli {
        DockerCli {
            program: "docker".into(),
            host: self.host.as_ref().and_then(|h| h.docker_host.clone()),
        }
    }

    /// `docker exec` into the container (command health checks).
    pub fn exec_target(&self, name: &str) -> Target {
        self.cli_target()
            .docker(DockerExec::new(name).cli(self.cli()))
    }
}

/// The container's name for `<project>/<service>` (from the local service directory).
pub(crate) fn container_name(dir: &Path) -> String {
    let (project, service) = project_and_service(dir);
    format!("harness.{project}.{service}")
}

fn project_service(dir: &Path) -> (String, String) {
    let (project, service) = project_and_service(dir);
    (project.to_owned(), service.to_owned())
}

/// Where the follower got to; survives the daemon.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Progress {
    id: String,
    /// Timestamp of the last line copied, and how many lines carried exactly that timestamp.
    last: Option<Timestamp>,
    at_last: usize,
}

struct Shared {
    progress: Mutex<Progress>,
    exit: Mutex<Option<ExitInfo>>,
    changed: Notify,
}

pub(crate) struct Container {
    pub pid: u32,
    pub id: String,
    exec: Executor,
    target: Target,
    cli: DockerCli,
    shared: Arc<Shared>,
    _follow: smol::Task<()>,
    ended: Option<ExitInfo>,
}

async fn docker(
    exec: &Executor,
    target: &Target,
    cli: &DockerCli,
    args: &[&str],
    limit: Duration,
) -> Result<Output, String> {
    let mut argv: Vec<OsString> = vec![cli.program.clone().into()];
    if let Some(h) = &cli.host {
        argv.push("-H".into());
        argv.push(h.into());
    }
    argv.extend(args.iter().map(OsString::from));
    let cmd = Command::new(&argv[0]).args(&argv[1..]).timeout(limit);
    let out = command_executor::service::remote::op(exec, target, &cmd)
        .await
        .map_err(|e| e.to_string())?;
    Ok(out)
}

fn failure(target: &Target, what: &str, out: &Output) -> String {
    let err = out.stderr_text();
    let err = err.trim();
    let host = target.host();
    if err.contains("No such image") || err.contains("Unable to find image") {
        format!("on {host}: image not found: {err}")
    } else if err.contains("Cannot connect to the Docker daemon")
        || err.contains("error during connect")
    {
        format!("on {host}: docker engine not reachable: {err}")
    } else if out.status.code() == Some(127) {
        format!("on {host}: docker CLI not found: {err}")
    } else {
        format!("on {host}: {what} failed: {err}")
    }
}

pub(crate) async fn spawn(
    exec: &Executor,
    spec: &ContainerSpec,
    launch: &LaunchSpec,
    stop_signal: Signal,
    dir: &Path,
    launch_id: &str,
) -> Result<Container, String> {
    let target = spec.cli_target();
    let cli = spec.cli();
    let limit = exec.options().op_timeout;
    let name = container_name(dir);
    let (project, service) = project_service(dir);
    // A container left by an earlier run (the daemon died before recording it) goes first.
    let out = docker(exec, &target, &cli, &["rm", "-f", &name], limit).await?;
    if !out.status.success() && !out.stderr_text().contains("No such container") {
        return Err(failure(&target, "docker rm", &out));
    }
    let launch = &fill_addresses(exec, &target, &cli, &project, launch).await?;
    let mut run = DockerRun::new(&spec.image)
        .cli(cli.clone())
        .name(&name)
        .label("harness.project", &project)
        .label("harness.service", &service)
        .label("harness.launch", launch_id);
    run.stop_signal = Some(stop_signal.name().to_owned());
    run.remove_on_stop = true;
    run.ports = spec.ports.clone();
    run.volumes = spec.volumes.clone();
    run.user = spec.user.clone();
    run.workdir = launch.cwd.clone();
    run.extra_args = vec!["--pull".into(), "never".into()];
    // `-e NAME` takes the value from the docker CLI's environment, which gets it from stdin:
    // no value is ever in an argv.
    for (k, _) in &launch.env {
        run.extra_args.extend(["-e".into(), k.clone()]);
    }
    if spec.host.is_none() {
        // Lets a container reach services of the daemon's machine (see ADR 0020).
        run.extra_args.extend([
            "--add-host".into(),
            "host.docker.internal:host-gateway".into(),
        ]);
    }
    if !launch.program.is_empty() {
        let mut cmd: Vec<OsString> = vec![launch.program.clone().into()];
        cmd.extend(launch.args.iter().map(OsString::from));
        run.command = cmd;
    }
    let argv = run.argv();
    let cmd = Command::new(&argv[0]).args(&argv[1..]).timeout(limit);
    let out = command_executor::service::remote::op_with_env(exec, &target, &cmd, &launch.env)
        .await
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(failure(&target, "docker run", &out));
    }
    let id = out
        .stdout_text()
        .lines()
        .last()
        .unwrap_or("")
        .trim()
        .to_owned();
    if id.is_empty() {
        return Err(format!("on {}: docker run printed no id", target.host()));
    }
    let pid = main_pid(exec, &target, &cli, &id).await.unwrap_or(0);
    let progress = Progress {
        id: id.clone(),
        last: None,
        at_last: 0,
    };
    save_progress(dir, &progress).await;
    Ok(start(exec, target, cli, id, pid, progress, dir))
}

/// Replaces the markers `addresses` leaves for containers on this engine by their addresses on
/// the engine's network (their providers run by now: references imply a `started` dependency).
async fn fill_addresses(
    exec: &Executor,
    target: &Target,
    cli: &DockerCli,
    project: &str,
    launch: &LaunchSpec,
) -> Result<LaunchSpec, String> {
    use crate::addresses::CONTAINER_IP_MARK;
    let mut names: Vec<String> = Vec::new();
    let all = launch
        .env
        .iter()
        .map(|(_, v)| v)
        .chain(launch.args.iter())
        .chain(std::iter::once(&launch.program))
        .chain(launch.cwd.iter());
    for text in all {
        let mut rest = text.as_str();
        while let Some(i) = rest.find(CONTAINER_IP_MARK) {
            let after = &rest[i + CONTAINER_IP_MARK.len()..];
            let end = after.find('\u{1e}').unwrap_or(after.len());
            if !names.iter().any(|n| n == &after[..end]) {
                names.push(after[..end].to_owned());
            }
            rest = &after[(end + 1).min(after.len())..];
        }
    }
    if names.is_empty() {
        return Ok(launch.clone());
    }
    let mut found: Vec<(String, String)> = Vec::new();
    for name in names {
        let container = format!("harness.{project}.{name}");
        let out = docker(
            exec,
            target,
            cli,
            &[
                "inspect",
                "-f",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
                &container,
            ],
            exec.options().op_timeout,
        )
        .await?;
        let ip = out
            .stdout_text()
            .split_whitespace()
            .next()
            .map(str::to_owned)
            .filter(|_| out.status.success())
            .ok_or_else(|| {
                format!(
                    "on {}: no address for container {container} (is {name} running?): {}",
                    target.host(),
                    out.stderr_text().trim()
                )
            })?;
        found.push((format!("{CONTAINER_IP_MARK}{name}\u{1e}"), ip));
    }
    let fill = |s: &String| {
        let mut s = s.clone();
        for (mark, ip) in &found {
            s = s.replace(mark, ip);
        }
        s
    };
    Ok(LaunchSpec {
        program: fill(&launch.program),
        args: launch.args.iter().map(fill).collect(),
        env: launch
            .env
            .iter()
            .map(|(k, v)| (k.clone(), fill(v)))
            .collect(),
        cwd: launch.cwd.as_ref().map(fill),
        user: launch.user.clone(),
    })
}

async fn main_pid(exec: &Executor, target: &Target, cli: &DockerCli, id: &str) -> Option<u32> {
    let out = docker(
        exec,
        target,
        cli,
        &["inspect", "-f", "{{.State.Pid}}", id],
        exec.options().op_timeout,
    )
    .await
    .ok()?;
    out.stdout_text().trim().parse().ok()
}

fn start(
    exec: &Executor,
    target: Target,
    cli: DockerCli,
    id: String,
    pid: u32,
    progress: Progress,
    dir: &Path,
) -> Container {
    let shared = Arc::new(Shared {
        progress: Mutex::new(progress),
        exit: Mutex::new(None),
        changed: Notify::new(),
    });
    let task = smol::spawn(follow(
        exec.clone(),
        target.clone(),
        cli.clone(),
        id.clone(),
        shared.clone(),
        dir.to_path_buf(),
    ));
    Container {
        pid,
        id,
        exec: exec.clone(),
        target,
        cli,
        shared,
        _follow: task,
        ended: None,
    }
}

/// Re-attaches to the service's container, found by its labels.
pub(crate) async fn attach(exec: &Executor, spec: &ContainerSpec, dir: &Path) -> Option<Container> {
    let target = spec.cli_target();
    let cli = spec.cli();
    let (project, service) = project_service(dir);
    let out = docker(
        exec,
        &target,
        &cli,
        &[
            "ps",
            "-a",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("label=harness.project={project}"),
            "--filter",
            &format!("label=harness.service={service}"),
        ],
        exec.options().op_timeout,
    )
    .await;
    let id = match out {
        Ok(o) if o.status.success() => o.stdout_text().split_whitespace().next()?.to_owned(),
        // The engine cannot say now: presumed alive by its (unique) name, never started twice;
        // the follower keeps trying and reports its end once the engine answers.
        other => {
            let why = match other {
                Ok(o) => o.stderr_text().trim().to_owned(),
                Err(e) => e,
            };
            tracing::warn!(
                "re-attaching to {} without checking it: {why}",
                container_name(dir)
            );
            container_name(dir)
        }
    };
    let pid = main_pid(exec, &target, &cli, &id).await.unwrap_or(0);
    let mut progress = load_progress(dir).await.unwrap_or_default();
    if progress.id != id {
        progress = Progress {
            id: id.clone(),
            last: None,
            at_last: 0,
        };
    }
    Some(start(exec, target, cli, id, pid, progress, dir))
}

/// Removes the service's container (a launch no daemon adopts), if there is one.
pub(crate) async fn discard(exec: &Executor, spec: &ContainerSpec, dir: &Path) {
    let name = container_name(dir);
    match docker(
        exec,
        &spec.cli_target(),
        &spec.cli(),
        &["rm", "-f", &name],
        exec.options().op_timeout,
    )
    .await
    {
        Ok(o) if o.status.success() || o.stderr_text().contains("No such container") => {}
        Ok(o) => tracing::warn!(container = %name, "docker rm: {}", o.stderr_text().trim()),
        Err(e) => tracing::warn!(container = %name, "docker rm: {e}"),
    }
}

async fn load_progress(dir: &Path) -> Option<Progress> {
    let bytes = async_fs::read(dir.join("container.json")).await.ok()?;
    serde_json::from_slice(&bytes).ok()
}

async fn save_progress(dir: &Path, p: &Progress) {
    let Ok(json) = serde_json::to_vec(p) else {
        return;
    };
    let tmp = dir.join("container.json.tmp");
    if async_fs::write(&tmp, json).await.is_ok() {
        let _ = async_fs::rename(&tmp, dir.join("container.json")).await;
    }
}

/// Splits `2026-01-01T00:00:00.123456789Z text` into its timestamp and text.
fn split_ts(line: &[u8]) -> Option<(Timestamp, &[u8])> {
    let sp = line.iter().position(|&b| b == b' ')?;
    let ts: Timestamp = std::str::from_utf8(&line[..sp]).ok()?.parse().ok()?;
    Some((ts, &line[sp + 1..]))
}

/// Follows the container's logs into the local raw files until it ends, resuming after dropped
/// connections; then records its exit status.
async fn follow(
    exec: Executor,
    target: Target,
    cli: DockerCli,
    id: String,
    shared: Arc<Shared>,
    dir: PathBuf,
) {
    let mut files = [None, None];
    let mut failures: u32 = 0;
    loop {
        let since = shared
            .progress
            .lock()
            .ok()
            .and_then(|p| p.last)
            .map(|t| t.to_string());
        let mut argv: Vec<String> = vec![cli.program.clone()];
        if let Some(h) = &cli.host {
            argv.extend(["-H".into(), h.clone()]);
        }
        argv.extend(["logs".into(), "-f".into(), "-t".into()]);
        if let Some(s) = since {
            argv.extend(["--since".into(), s]);
        }
        argv.push(id.clone());
        let cmd = Command::new(&argv[0]).args(&argv[1..]);
        let mut proc = match exec.spawn(&target, &cmd).await {
            Ok(p) => p,
            Err(e) => {
                failures += 1;
                tracing::warn!(container = %id, "log follower: {e}");
                Timer::after(Duration::from_millis(250 * u64::from(failures.min(8)))).await;
                continue;
            }
        };
        failures = 0;
        let (base, base_count) = shared
            .progress
            .lock()
            .map(|p| (p.last, p.at_last))
            .unwrap_or_default();
        let mut seen_base = 0usize;
        let mut last_save = Instant::now();
        if let Some(mut events) = proc.take_events() {
            while let Some(ev) = events.next().await {
                let (stream, line) = match ev {
                    Event::Stdout(l) => (0, l),
                    Event::Stderr(l) => (1, l),
                    _ => continue,
                };
                let Some((ts, text)) = split_ts(&line.bytes) else {
                    continue;
                };
                let fresh = {
                    let Ok(mut p) = shared.progress.lock() else {
                        continue;
                    };
                    match base {
                        Some(b) if ts < b => false,
                        Some(b) if ts == b => {
                            // `--since` replays the lines at the last timestamp already copied.
                            seen_base += 1;
                            if seen_base > base_count {
                                p.at_last = seen_base;
                                true
                            } else {
                                false
                            }
                        }
                        _ => {
                            match p.last {
                                Some(last) if ts == last => p.at_last += 1,
                                Some(last) if ts < last => {}
                                _ => {
                                    p.last = Some(ts);
                                    p.at_last = 1;
                                }
                            }
                            true
                        }
                    }
                };
                if !fresh {
                    continue;
                }
                let mut bytes = text.to_vec();
                if line.newline {
                    bytes.push(b'\n');
                }
                append(&dir, &mut files, stream, &bytes).await;
                if last_save.elapsed() > Duration::from_millis(200) {
                    let p = shared
                        .progress
                        .lock()
                        .map(|p| p.clone())
                        .unwrap_or_default();
                    save_progress(&dir, &p).await;
                    last_save = Instant::now();
                }
            }
        }
        let _ = proc.wait().await;
        let p = shared
            .progress
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default();
        save_progress(&dir, &p).await;
        // `docker logs -f` ends by itself when the container stopped; otherwise the connection
        // dropped (retried). Either way the engine says which.
        let out = docker(
            &exec,
            &target,
            &cli,
            &[
                "inspect",
                "-f",
                "{{.State.Running}} {{.State.ExitCode}}",
                &id,
            ],
            exec.options().op_timeout,
        )
        .await;
        match out {
            Ok(o) if o.status.success() => {
                let text = o.stdout_text();
                let mut w = text.split_whitespace();
                if let (Some("false"), Some(code)) =
                    (w.next(), w.next().and_then(|c| c.parse::<i32>().ok()))
                {
                    finish(&shared, ExitInfo::from_shell(code));
                    return;
                }
            }
            Ok(o) if o.stderr_text().contains("No such") => {
                // Removed behind our back: gone, status unknown.
                finish(
                    &shared,
                    ExitInfo {
                        code: None,
                        signal: None,
                    },
                );
                return;
            }
            Ok(o) => {
                tracing::warn!(container = %id, "docker inspect: {}", o.stderr_text().trim());
            }
            Err(e) => tracing::warn!(container = %id, "docker inspect: {e}"),
        }
        Timer::after(Duration::from_millis(200)).await;
    }
}

async fn append(dir: &Path, files: &mut [Option<async_fs::File>; 2], stream: usize, bytes: &[u8]) {
    if files[stream].is_none() {
        let name = if stream == 0 { "stdout" } else { "stderr" };
        files[stream] = async_fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(dir.join(name))
            .await
            .ok();
    }
    if let Some(f) = files[stream].as_mut() {
        if let Err(e) = f.write_all(bytes).await {
            tracing::warn!("cannot write the output of {}: {e}", dir.display());
        }
        let _ = f.flush().await;
    }
}

fn finish(shared: &Shared, info: ExitInfo) {
    if let Ok(mut e) = shared.exit.lock()
        && e.is_none()
    {
        *e = Some(info);
    }
    shared.changed.notify(usize::MAX);
}

impl Container {
    pub async fn wait(&mut self) -> ExitInfo {
        if let Some(e) = self.ended {
            return e;
        }
        let e = loop {
            let l = self.shared.changed.listen();
            if let Some(e) = self.shared.exit.lock().ok().and_then(|e| *e) {
                break e;
            }
            l.await;
        };
        self.ended = Some(e);
        e
    }

    /// `docker stop` (the stop signal, then SIGKILL after `timeout`), wait for the last output,
    /// then `docker rm`.
    pub async fn terminate(&mut self, _signal: Signal, timeout: Duration) -> (ExitInfo, bool) {
        let began = Instant::now();
        let secs = timeout.as_secs().max(1).to_string();
        let limit = self.exec.options().op_timeout + timeout;
        if let Err(e) = docker(
            &self.exec,
            &self.target,
            &self.cli,
            &["stop", "-t", &secs, &self.id],
            limit,
        )
        .await
        {
            tracing::warn!(container = %self.id, "docker stop: {e}");
        }
        let killed = began.elapsed() >= timeout;
        let info = super::exit_after_stop(self.wait()).await;
        self.ended = Some(info);
        self.remove().await;
        (info, killed)
    }

    pub async fn remove(&self) {
        match docker(
            &self.exec,
            &self.target,
            &self.cli,
            &["rm", "-f", &self.id],
            self.exec.options().op_timeout,
        )
        .await
        {
            Ok(o) if !o.status.success() && !o.stderr_text().contains("No such container") => {
                tracing::warn!(container = %self.id, "docker rm: {}", o.stderr_text().trim());
            }
            Err(e) => tracing::warn!(container = %self.id, "docker rm: {e}"),
            _ => {}
        }
    }
}
