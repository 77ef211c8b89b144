//! Local processes that survive the daemon.
//!
//! A service runs in its own session (`setsid`), so its pid is its process group and session id,
//! with stdin from /dev/null and stdout/stderr appended to files: no pipe to the daemon, so a
//! `kill -9` of the daemon never hands the service a SIGPIPE. The daemon that started it is its
//! parent and learns of its exit from SIGCHLD (async-process); a later daemon re-attaches by pid
//! plus start time and learns of the exit from a pidfd (readable when the process ends).
//!
//! A service with `user:` runs as `sudo -n -u USER -- env -C CWD -- K=V... PROGRAM ARGS`: sudo
//! is the session leader and the service's recorded pid, the user's processes are its
//! descendants, and sudo relays the stop signal to them. A daemon that may not signal them
//! itself (not root) signals through `sudo -n kill`.

use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use command_executor::Signal;
use futures_lite::future;
use rustix::process::{Pid, PidfdFlags};

use super::ExitInfo;
use crate::spec::LaunchSpec;

pub(crate) struct LocalProcess {
    pub pid: u32,
    pub start_time: u64,
    /// Runs as this user through sudo.
    pub user: Option<String>,
    exit: Exit,
    ended: Option<ExitInfo>,
}

enum Exit {
    /// Our child: its status comes with SIGCHLD.
    Child(async_process::Child),
    /// Not our child (re-attached): the pidfd becomes readable when it ends.
    Pidfd(Async<OwnedFd>),
}

/// Field 22 of /proc/PID/stat (start time in clock ticks since boot), if the process exists.
pub(crate) fn start_time_of(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_fields(&stat)?.get(19)?.parse().ok()
}

/// The fields after the command name (field 3, the state, first). The name may hold spaces and
/// parentheses, so it is cut at the last `)`.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().collect())
}

pub(crate) async fn spawn(spec: &LaunchSpec, dir: &Path) -> Result<LocalProcess, String> {
    let (stdout, stderr) = {
        let d = dir.to_path_buf();
        blocking::unblock(move || -> std::io::Result<_> {
            let dir = d;
            std::fs::create_dir_all(&dir)?;
            let open = |name: &str| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(dir.join(name))
            };
            Ok((open("stdout")?, open("stderr")?))
        })
        .await
        .map_err(|e| format!("cannot open the log files in {}: {e}", dir.display()))?
    };
    if let Some(cwd) = &spec.cwd
        && !async_fs::metadata(cwd).await.is_ok_and(|m| m.is_dir())
    {
        return Err(format!("working_dir {cwd:?} does not exist"));
    }
    let mut cmd = match &spec.user {
        None => {
            let mut cmd = std::process::Command::new(&spec.program);
            cmd.args(&spec.args)
                .envs(spec.env.iter().map(|(k, v)| (k, v)));
            if let Some(cwd) = &spec.cwd {
                cmd.current_dir(cwd);
            }
            cmd
        }
        Some(user) => {
            check_sudo(user).await?;
            sudo_command(user, spec)
        }
    };
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| rustix::process::setsid().map(drop).map_err(Into::into));
    }
    // Stdio is set on the async-process command: it does not take it over from std's.
    let mut cmd = async_process::Command::from(cmd);
    cmd.stdin(std::process::Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    // fork + exec blocks until the exec (or its failure) is known: off the executor, so that
    // many services launch in parallel.
    let pidfile = dir.join("pid");
    let (child, start_time) = blocking::unblock(move || {
        let child = cmd.spawn()?;
        // The start time is set at fork, so it is final even if exec has not happened yet.
        let start_time = start_time_of(child.id()).unwrap_or(0);
        // Before anything else: a daemon killed right now must still find the process.
        let _ = std::fs::write(&pidfile, format!("{} {start_time}\n", child.id()));
        Ok::<_, std::io::Error>((child, start_time))
    })
    .await
    .map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound if spec.user.is_some() => {
            format!("sudo not found: user: {:?} runs through sudo", spec.user)
        }
        std::io::ErrorKind::NotFound => {
            format!("binary {:?} not found (PATH or path)", spec.program)
        }
        std::io::ErrorKind::PermissionDenied => {
            format!("binary {:?} is not executable: {e}", spec.program)
        }
        _ => format!("cannot start {:?}: {e}", spec.program),
    })?;
    let pid = child.id();
    Ok(LocalProcess {
        pid,
        start_time,
        user: spec.user.clone(),
        exit: Exit::Child(child),
        ended: None,
    })
}

/// `sudo -n -u USER -- env [-C CWD] -- K=V... PROGRAM ARGS`. sudo resets the environment, so
/// the service's is passed explicitly; the directory is entered as the user (sudo itself
/// starts in `/`, which every user may enter).
fn sudo_command(user: &str, spec: &LaunchSpec) -> std::process::Command {
    let mut cmd = std::process::Command::new("sudo");
    cmd.args(["-n", "-u", user, "--", "env"]);
    if let Some(cwd) = &spec.cwd {
        cmd.args(["-C", cwd]);
    }
    cmd.arg("--")
        .args(spec.env.iter().map(|(k, v)| format!("{k}={v}")))
        .arg(&spec.program)
        .args(&spec.args)
        .current_dir("/");
    cmd
}

/// Fails at once, naming the user, when `sudo -n -u USER` would not run (a password needed, an
/// unknown user): otherwise the service would just exit 1 with the reason in its log.
async fn check_sudo(user: &str) -> Result<(), String> {
    let out = async_process::Command::new("sudo")
        .args(["-n", "-u", user, "--", "true"])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("user: {user:?} runs through sudo, which cannot start: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let why = String::from_utf8_lossy(&out.stderr);
    let why = why
        .lines()
        .find(|l| !l.contains("audit plugin"))
        .unwrap_or("")
        .trim();
    Err(format!(
        "cannot run as user {user:?}: `sudo -n -u {user}` failed ({why}); sudo -n must work \
         without a password (NOPASSWD) for the daemon's user"
    ))
}

/// `PID STARTTIME` of the last local launch in `dir`.
pub(crate) async fn read_pidfile(dir: &Path) -> Option<(u32, u64)> {
    let text = async_fs::read_to_string(dir.join("pid")).await.ok()?;
    let mut words = text.split_whitespace();
    Some((words.next()?.parse().ok()?, words.next()?.parse().ok()?))
}

/// Re-attaches if `pid` still is the process started at `start_time`.
pub(crate) fn attach(pid: u32, start_time: u64, user: Option<String>) -> Option<LocalProcess> {
    let p = Pid::from_raw(i32::try_from(pid).ok()?)?;
    let fd = rustix::process::pidfd_open(p, PidfdFlags::empty()).ok()?;
    // Checked after opening the pidfd: if the start time still matches, the fd is that process.
    if start_time_of(pid)? != start_time || is_zombie(pid) {
        return None;
    }
    Some(LocalProcess {
        pid,
        start_time,
        user,
        exit: Exit::Pidfd(Async::new_nonblocking(fd).ok()?),
        ended: None,
    })
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| stat_fields(&s).and_then(|f| f.first().map(|st| *st == "Z")))
        .unwrap_or(true)
}

impl LocalProcess {
    pub async fn wait(&mut self) -> ExitInfo {
        if let Some(e) = self.ended {
            return e;
        }
        let info = match &mut self.exit {
            Exit::Child(child) => match child.status().await {
                Ok(st) => ExitInfo {
                    code: st.code(),
                    signal: st.signal(),
                },
                Err(_) => ExitInfo {
                    code: None,
                    signal: None,
                },
            },
            Exit::Pidfd(fd) => {
                let _ = fd.readable().await;
                ExitInfo {
                    code: None,
                    signal: None,
                }
            }
        };
        self.ended = Some(info);
        info
    }

    pub async fn terminate(&mut self, signal: Signal, timeout: Duration) -> (ExitInfo, bool) {
        let pid = self.pid;
        let tree = snapshot(pid).await;
        self.signal_group(signal).await;
        let deadline = Instant::now() + timeout;
        let mut killed = false;
        loop {
            if self.ended.is_none() {
                let tick = Timer::after(Duration::from_millis(10));
                future::or(
                    async {
                        self.wait().await;
                    },
                    async {
                        tick.await;
                    },
                )
                .await;
            } else {
                Timer::after(Duration::from_millis(10)).await;
            }
            if self.ended.is_some() && !group_alive(pid).await {
                break;
            }
            if Instant::now() >= deadline {
                self.signal_group(Signal::Kill).await;
                killed = true;
                break;
            }
        }
        sweep(pid, tree, self.user.clone()).await;
        let info = self.wait().await;
        (info, killed)
    }

    async fn signal_group(&self, signal: Signal) {
        let (pid, user) = (self.pid, self.user.clone());
        match user {
            None => signal_group(pid, signal, None),
            // May run `sudo -n kill`: off the executor.
            Some(u) => blocking::unblock(move || signal_group(pid, signal, Some(&u))).await,
        }
    }
}

fn signal_group(pid: u32, signal: Signal, user: Option<&str>) {
    let (Some(p), Some(sig)) = (
        i32::try_from(pid).ok().and_then(Pid::from_raw),
        rustix::process::Signal::from_named_raw(signal.number()),
    ) else {
        return;
    };
    match rustix::process::kill_process_group(p, sig) {
        Ok(()) => {}
        Err(rustix::io::Errno::PERM) if user.is_some() => {
            sudo_kill(signal.number(), &[format!("-{pid}")]);
        }
        Err(_) => {
            let _ = rustix::process::kill_process(p, sig);
        }
    }
}

/// Signals processes of another user the daemon may not signal itself (it is not root).
fn sudo_kill(signal: i32, targets: &[String]) {
    let _ = std::process::Command::new("sudo")
        .args(["-n", "kill", "-s", &signal.to_string(), "--"])
        .args(targets)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// One row of /proc: pid, parent, group, session, start time, zombie.
struct ProcRow {
    pid: u32,
    ppid: u32,
    pgrp: u32,
    session: u32,
    start_time: u64,
    zombie: bool,
}

fn proc_table() -> Vec<ProcRow> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let f = stat_fields(&stat)?;
        Some(ProcRow {
            pid,
            zombie: *f.first()? == "Z",
            ppid: f.get(1)?.parse().ok()?,
            pgrp: f.get(2)?.parse().ok()?,
            session: f.get(3)?.parse().ok()?,
            start_time: f.get(19)?.parse().ok()?,
        })
    })
    .collect()
}

/// Live processes that belong to the service led by `pid`: its process group, its session, and
/// every descendant of those (a grandchild that called setsid left both, but is still a
/// descendant while its parents live). Pid plus start time, so a reused pid is never hit.
fn owned(pid: u32) -> Vec<(u32, u64)> {
    let table = proc_table();
    let mut set: std::collections::BTreeSet<u32> = table
        .iter()
        .filter(|r| r.pid == pid || r.pgrp == pid || r.session == pid)
        .map(|r| r.pid)
        .collect();
    loop {
        let before = set.len();
        for r in &table {
            if set.contains(&r.ppid) {
                set.insert(r.pid);
            }
        }
        if set.len() == before {
            break;
        }
    }
    table
        .iter()
        .filter(|r| !r.zombie && set.contains(&r.pid))
        .map(|r| (r.pid, r.start_time))
        .collect()
}

/// `pid` and its descendants now, from the kernel's per-thread `children` lists: cheap (only
/// the service's own processes are read), unlike a scan of all of /proc.
fn descendants(pid: u32) -> Vec<(u32, u64)> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    let mut seen = std::collections::BTreeSet::new();
    while let Some(p) = todo.pop() {
        if !seen.insert(p) {
            continue;
        }
        let Some(st) = start_time_of(p) else { continue };
        out.push((p, st));
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let path = t.path().join("children");
            if let Ok(list) = std::fs::read_to_string(path) {
                todo.extend(
                    list.split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
    }
    out
}

fn group_exists(pid: u32) -> bool {
    i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .is_some_and(|p| rustix::process::test_kill_process_group(p).is_ok())
}

async fn group_alive(pid: u32) -> bool {
    if !group_exists(pid) {
        return false;
    }
    // Zombies still count for kill(0); only live members matter.
    blocking::unblock(move || {
        proc_table()
            .iter()
            .any(|r| !r.zombie && (r.pgrp == pid || r.session == pid))
    })
    .await
}

/// The processes of the service right now, to be swept after it is stopped.
pub(crate) async fn snapshot(pid: u32) -> Vec<(u32, u64)> {
    blocking::unblock(move || descendants(pid)).await
}

/// SIGKILLs every live process left of the service: those in `earlier` (taken before the stop,
/// while the process tree was intact; checked by start time), and — when the service had
/// children or its group still exists — everything [`owned`] finds in its group and session.
/// An empty `earlier` (the service ended on its own, its tree is gone) always scans.
/// Processes of `user` the daemon may not kill are killed through `sudo -n kill`.
pub(crate) async fn sweep(pid: u32, earlier: Vec<(u32, u64)>, user: Option<String>) {
    blocking::unblock(move || {
        let scan = earlier.len() != 1 || group_exists(pid);
        let mut earlier = earlier;
        for _ in 0..200 {
            earlier.retain(|(p, st)| start_time_of(*p) == Some(*st) && !is_zombie(*p));
            let mut left = if scan { owned(pid) } else { Vec::new() };
            left.extend(earlier.iter().copied());
            if left.is_empty() {
                return;
            }
            let mut denied = Vec::new();
            for (p, _) in left {
                if let Some(pp) = i32::try_from(p).ok().and_then(Pid::from_raw)
                    && rustix::process::kill_process(pp, rustix::process::Signal::KILL)
                        == Err(rustix::io::Errno::PERM)
                {
                    denied.push(p.to_string());
                }
            }
            if user.is_some() && !denied.is_empty() {
                sudo_kill(Signal::Kill.number(), &denied);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn stat_fields_survive_odd_names() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 12345 0";
        let f = super::stat_fields(stat).unwrap();
        assert_eq!(f[0], "S");
        assert_eq!(f[2], "42");
        assert_eq!(f[19], "12345");
    }
}
