//! Containers as services, on the local engine or on a host's (the docker CLI runs at the end of
//! the target's chain, e.g. `ssh → sudo`). A container is named and labelled by the caller, so
//! there is never a second one and a new daemon finds it again by name or label. Its environment
//! reaches `docker run` as `-e NAME` with the value in the docker CLI's own environment, given
//! through stdin ([`super::remote::op_with_env`]): never `-e NAME=VALUE` in an argv.
//!
//! Output is followed with `docker logs -f --timestamps`; when the follower's session drops (the
//! ssh connection died), it resumes `--since` the last timestamp it copied and skips what it
//! already has, so no line is lost or copied twice. The last timestamp is kept in the local
//! directory (`container.json`) for the next daemon. Stop is `docker stop` with the configured
//! signal (set as the container's `--stop-signal`) and timeout, then `docker rm`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_io::Timer;
use event_listener::Event as Notify;
use futures_lite::AsyncWriteExt;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::ExitInfo;
use super::remote::{Reachability, host_reachability, op, op_with_env};
use crate::command::Command;
use crate::docker::DockerRun;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::executor::Executor;
use crate::layer::{DockerCli, Target};
use crate::process::Output;

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

impl Shared {
    fn snapshot(&self) -> Progress {
        self.progress.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

/// A container run as a service.
pub struct ContainerService {
    pub pid: u32,
    pub id: String,
    exec: Executor,
    target: Target,
    cli: DockerCli,
    shared: Arc<Shared>,
    _follow: smol::Task<()>,
    ended: Option<ExitInfo>,
    /// Whether the engine's host answers, for an engine reached over ssh.
    reach: Option<Reachability>,
}

async fn docker(
    exec: &Executor,
    target: &Target,
    cli: &DockerCli,
    args: &[&str],
    limit: Duration,
) -> Result<Output> {
    let mut argv: Vec<OsString> = cli.base();
    argv.extend(args.iter().map(OsString::from));
    let cmd = Command::new(&argv[0]).args(&argv[1..]).timeout(limit);
    op(exec, target, &cmd).await
}

/// What a failed docker CLI call means, naming where it ran.
fn failure(target: &Target, what: &str, out: &Output) -> Error {
    let err = out.stderr_text().trim().to_owned();
    let at = target.program_place();
    if err.contains("Cannot connect to the Docker daemon") || err.contains("error during connect") {
        Error::DockerUnreachable { at, detail: err }
    } else if out.status.code() == Some(127) {
        Error::DockerMissing { at, detail: err }
    } else if err.contains("No such image") || err.contains("Unable to find image") {
        Error::Layer {
            at,
            code: out.status.code(),
            stderr: format!("image not found: {err}"),
        }
    } else {
        Error::Layer {
            at,
            code: out.status.code(),
            stderr: format!("{what} failed: {err}"),
        }
    }
}

/// Runs `run` (which must be named) on the engine `target` reaches, after removing any container
/// of that name (left by a daemon that died before recording it), with `env` given through the
/// CLI's environment; its output is copied to `stdout`/`stderr` in `local_dir`.
pub async fn spawn(
    exec: &Executor,
    target: &Target,
    run: &DockerRun,
    env: &[(String, String)],
    local_dir: &Path,
) -> Result<ContainerService> {
    let name = run
        .name
        .clone()
        .ok_or_else(|| Error::invalid("container", "a service container needs a name"))?;
    let limit = exec.options().op_timeout;
    let out = docker(exec, target, &run.cli, &["rm", "-f", &name], limit).await?;
    if !out.status.success() && !out.stderr_text().contains("No such container") {
        return Err(failure(target, "docker rm", &out));
    }
    let mut run = run.clone();
    run.env.clear();
    for (k, _) in env {
        run.extra_args.extend(["-e".into(), k.clone()]);
    }
    let argv = run.argv();
    let cmd = Command::new(&argv[0]).args(&argv[1..]).timeout(limit);
    let out = op_with_env(exec, target, &cmd, env).await?;
    if !out.status.success() {
        return Err(failure(target, "docker run", &out));
    }
    let id = crate::docker::run_id(&out, target.program_place())?;
    let pid = main_pid(exec, target, &run.cli, &id).await.unwrap_or(0);
    let progress = Progress {
        id: id.clone(),
        last: None,
        at_last: 0,
    };
    save_progress(local_dir, &progress).await;
    Ok(start(
        exec,
        target.clone(),
        run.cli.clone(),
        id,
        pid,
        progress,
        local_dir,
    ))
}

/// The container's first IP address on its engine's network.
pub async fn address(
    exec: &Executor,
    target: &Target,
    cli: &DockerCli,
    name: &str,
) -> Result<String> {
    let out = docker(
        exec,
        target,
        cli,
        &[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
            name,
        ],
        exec.options().op_timeout,
    )
    .await?;
    out.stdout_text()
        .split_whitespace()
        .next()
        .map(str::to_owned)
        .filter(|_| out.status.success())
        .ok_or_else(|| Error::ContainerAbsent {
            at: target.program_place(),
            container: name.to_owned(),
            detail: format!("no address: {}", out.stderr_text().trim()),
        })
}

/// Removes the container `name` (a launch no daemon adopts), if there is one.
pub async fn discard(exec: &Executor, target: &Target, cli: &DockerCli, name: &str) -> Result<()> {
    let out = docker(
        exec,
        target,
        cli,
        &["rm", "-f", name],
        exec.options().op_timeout,
    )
    .await?;
    if out.status.success() || out.stderr_text().contains("No such container") {
        Ok(())
    } else {
        Err(failure(target, "docker rm", &out))
    }
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

/// Re-attaches to the container labelled with every `labels` pair (or, when the engine cannot
/// say now, presumes the one named `name` alive: never started twice; the follower keeps trying
/// and reports its end once the engine answers). `None` when there is none.
pub async fn attach(
    exec: &Executor,
    target: &Target,
    cli: &DockerCli,
    labels: &[(&str, &str)],
    name: &str,
    local_dir: &Path,
) -> Option<ContainerService> {
    let filters: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("label={k}={v}"))
        .collect();
    let mut args = vec!["ps", "-a", "-q", "--no-trunc"];
    for f in &filters {
        args.extend(["--filter", f.as_str()]);
    }
    let out = docker(exec, target, cli, &args, exec.options().op_timeout).await;
    let id = match out {
        Ok(o) if o.status.success() => o.stdout_text().split_whitespace().next()?.to_owned(),
        other => {
            let why = match other {
                Ok(o) => o.stderr_text().trim().to_owned(),
                Err(e) => e.to_string(),
            };
            tracing::warn!("re-attaching to {name} without checking it: {why}");
            name.to_owned()
        }
    };
    let pid = main_pid(exec, target, cli, &id).await.unwrap_or(0);
    let mut progress = load_progress(local_dir).await.unwrap_or_default();
    if progress.id != id {
        progress = Progress {
            id: id.clone(),
            last: None,
            at_last: 0,
        };
    }
    Some(start(
        exec,
        target.clone(),
        cli.clone(),
        id,
        pid,
        progress,
        local_dir,
    ))
}

fn start(
    exec: &Executor,
    target: Target,
    cli: DockerCli,
    id: String,
    pid: u32,
    progress: Progress,
    dir: &Path,
) -> ContainerService {
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
    ContainerService {
        pid,
        id,
        reach: host_reachability(exec, &target),
        exec: exec.clone(),
        target,
        cli,
        shared,
        _follow: task,
        ended: None,
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
                    let p = shared.snapshot();
                    save_progress(&dir, &p).await;
                    last_save = Instant::now();
                }
            }
        }
        let _ = proc.wait().await;
        let p = shared.snapshot();
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

impl ContainerService {
    /// Whether the host of the engine answers; `None` for an engine not reached over ssh.
    pub fn reachability(&self) -> Option<Reachability> {
        self.reach.clone()
    }

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
    /// then `docker rm`. An error, and nothing recorded as ended, when the engine could not be
    /// reached (its host does not answer, or the engine does not): the container may still run,
    /// and the caller tries again later (stopping again is harmless).
    pub async fn terminate(&mut self, timeout: Duration) -> Result<(ExitInfo, bool)> {
        // A host known not to answer fails the stop at once (pending), not after ssh gives up.
        if let Some(r) = self.reach.clone() {
            let target = self.target.clone();
            return r.or_down(&target, self.stop_and_remove(timeout)).await;
        }
        self.stop_and_remove(timeout).await
    }

    async fn stop_and_remove(&mut self, timeout: Duration) -> Result<(ExitInfo, bool)> {
        let began = Instant::now();
        let secs = timeout.as_secs().max(1).to_string();
        let limit = self.exec.options().op_timeout + timeout;
        let out = docker(
            &self.exec,
            &self.target,
            &self.cli,
            &["stop", "-t", &secs, &self.id],
            limit,
        )
        .await?;
        if !out.status.success() {
            match failure(&self.target, "docker stop", &out) {
                e @ Error::DockerUnreachable { .. } => return Err(e),
                // Gone already (e.g. removed by hand): nothing left to stop.
                e => tracing::warn!(container = %self.id, "docker stop: {e}"),
            }
        }
        let killed = began.elapsed() >= timeout;
        let info = super::exit_after_stop(self.wait()).await;
        self.ended = Some(info);
        self.remove().await;
        Ok((info, killed))
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

/// One container's figures from `docker stats --no-stream` (`harness top`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContainerStats {
    /// Percent of one core (docker's CPUPerc).
    pub cpu_percent: f64,
    /// The memory the engine counts for it (MemUsage's first half), in bytes.
    pub mem_bytes: u64,
    /// Processes and threads in it (PIDs).
    pub pids: u64,
}

/// The running containers of one engine and their figures, by name: ONE `docker stats
/// --no-stream` for every container of the engine (it samples for about a second).
pub async fn stats(
    exec: &Executor,
    target: &Target,
    cli: &DockerCli,
) -> Result<std::collections::BTreeMap<String, ContainerStats>> {
    let out = docker(
        exec,
        target,
        cli,
        &[
            "stats",
            "--no-stream",
            "--format",
            "{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.PIDs}}",
        ],
        exec.options().op_timeout,
    )
    .await?;
    if !out.status.success() {
        return Err(failure(target, "docker stats", &out));
    }
    Ok(parse_stats(&out.stdout_text()))
}

fn parse_stats(text: &str) -> std::collections::BTreeMap<String, ContainerStats> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split('\t');
            let name = f.next()?.trim().to_owned();
            let cpu = f.next()?.trim().trim_end_matches('%').parse().ok()?;
            let mem = parse_size(f.next()?.split('/').next()?.trim())?;
            let pids = f.next()?.trim().parse().ok()?;
            Some((
                name,
                ContainerStats {
                    cpu_percent: cpu,
                    mem_bytes: mem,
                    pids,
                },
            ))
        })
        .collect()
}

/// `1.5MiB`, `812kB`, `0B` as docker prints sizes.
fn parse_size(s: &str) -> Option<u64> {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(end);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim() {
        "B" | "" => 1.0,
        "kB" | "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((n * mult).round() as u64)
}

#[cfg(test)]
mod stats_tests {
    #[test]
    fn docker_stats_lines() {
        let m = super::parse_stats(
            "harness.p.busy\t99.87%\t1.5MiB / 7.6GiB\t2\nharness.p.idle\t0.00%\t812kB / 7.6GiB\t1\ngarbage\n",
        );
        assert_eq!(m.len(), 2);
        assert_eq!(m["harness.p.busy"].cpu_percent, 99.87);
        assert_eq!(m["harness.p.busy"].mem_bytes, 1_572_864);
        assert_eq!(m["harness.p.idle"].mem_bytes, 812_000);
        assert_eq!(m["harness.p.idle"].pids, 1);
    }
}
