//! What exists, for `harness drift` (ADR 0036), and the few verified actions `sync` takes on
//! things no service owns. Batched: one command per host (and user) lists every run directory
//! there (and where `NAME-current` points for the packages asked about); one `docker ps` per engine lists every labelled container. Every kill re-verifies the
//! identity it acts on (pid *and* start time *and* launch id) at the instant of the kill: a process
//! that exited between the probe and the action is never mistaken for whatever reuses its pid.

use std::ffi::OsString;
use std::time::Duration;

use rustix::process::{Pid, PidfdFlags};

use super::procfs;
use super::remote::op;
use crate::command::Command;
use crate::error::{Error, Result};
use crate::executor::Executor;
use crate::layer::{DockerCli, Target};
use crate::script::{START_TIME_FN, STATE_DIR};

/// A run directory on a host: `~/.local/state/harness/<launch id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteRun {
    pub launch_id: String,
    pub pid: u32,
    pub start_time: u64,
    /// The recorded process is alive (its start time matches).
    pub alive: bool,
    /// The runner recorded its exit status (`$?`).
    pub exit: Option<i32>,
}

/// Lists every run of daemon `instance` under the state root: `RUN KEY PID ST ALIVE RC` per run
/// (`-` for no exit file). Args: ROOT (`~/.local/state/harness/<instance>`)
const RUNS: &str = r#"for r in "$d"/*/*/*/; do
  [ -d "$r" ] || continue
  r=${r%/}; k=${r#"${d%/*}"/}
  p=0; s=0; a=0; x=-
  if [ -s "$r/pid" ]; then read -r p s < "$r/pid"; st "$p"; [ -n "$S" ] && [ "$S" = "$s" ] && a=1; fi
  [ -f "$r/exit" ] && read -r x < "$r/exit"
  printf 'RUN %s %s %s %s %s\n' "$k" "$p" "$s" "$a" "${x:--}"
done
"#;

/// After [`RUNS`]: for each `ROOT NAME VERSION` triple of the remaining args, `PKG I HAS LINK`: its
/// index, whether `ROOT/NAME-VERSION` is a directory (`1`/`0`), and where `ROOT/NAME-current`
/// points (`-` when it is no link). Then `IF NAME` for every network interface named `hw*` (the
/// prefix of harness's WireGuard mesh interfaces), from `ip` (the network namespace's own view;
/// /sys/class/net may show another's) or else /sys/class/net.
const PACKAGES: &str = r#"shift; i=0
while [ $# -ge 3 ]; do
  r=$1; case $r in "~/"*) r=$HOME/${r#"~/"};; esac
  h=0; [ -d "$r/$2-$3" ] && h=1
  l=$(readlink -- "$r/$2-current" 2>/dev/null) || l=-
  printf 'PKG %s %s %s\n' "$i" "$h" "${l:--}"
  i=$((i+1)); shift 3
done
if command -v ip >/dev/null 2>&1; then
  ip -o link show 2>/dev/null | while read -r _ n _; do
    n=${n%:}; n=${n%@*}; case $n in hw*) printf 'IF %s\n' "$n";; esac
  done
else
  for n in /sys/class/net/hw*; do [ -e "$n" ] && printf 'IF %s\n' "${n##*/}"; done
fi
echo END
"#;

/// A package installed on a host whose active version is to be checked: `ROOT/NAME-VERSION` and
/// `ROOT/NAME-current` (packages' layout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageCheck {
    pub root: String,
    pub name: String,
    pub version: String,
}

/// What a host has of a [`PackageCheck`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageSeen {
    /// `ROOT/NAME-VERSION` is a directory.
    pub installed: bool,
    /// The version `NAME-current` points at (`None`: no such link); the link's target itself when
    /// it is not `NAME-VERSION`.
    pub active: Option<String>,
}

/// What one host holds: the runs of the daemon instance, and the packages asked about.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostSurvey {
    pub runs: Vec<RemoteRun>,
    /// One per [`PackageCheck`] asked, in order.
    pub packages: Vec<PackageSeen>,
    /// Network interfaces whose name starts with `hw` (as harness's mesh interfaces do).
    pub interfaces: Vec<String>,
}

/// Every run directory of daemon `instance` on `target`, in one command, given up after `limit`.
pub async fn remote_runs(
    exec: &Executor,
    target: &Target,
    instance: &str,
    limit: Duration,
) -> Result<Vec<RemoteRun>> {
    Ok(survey_host(exec, target, instance, &[], limit).await?.runs)
}

/// Every run directory of daemon `instance` on `target` and the state of each of `packages`, in
/// one command, given up after `limit`.
pub async fn survey_host(
    exec: &Executor,
    target: &Target,
    instance: &str,
    packages: &[PackageCheck],
    limit: Duration,
) -> Result<HostSurvey> {
    if instance.is_empty() || !instance.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(Error::invalid("daemon instance", instance.to_owned()));
    }
    let mut cmd = Command::new("sh")
        .arg("-c")
        .arg(format!("{START_TIME_FN}{STATE_DIR}{RUNS}{PACKAGES}"))
        .arg("sh")
        .arg(format!("~/.local/state/harness/{instance}"));
    for p in packages {
        cmd = cmd.arg(&p.root).arg(&p.name).arg(&p.version);
    }
    let cmd = cmd.timeout(limit);
    let out = op(exec, target, &cmd).await?;
    let text = out.stdout_text();
    if !text.lines().any(|l| l == "END") {
        return Err(Error::Layer {
            at: target.program_place(),
            code: out.status.code(),
            stderr: format!("listing runs failed: {}", out.stderr_text().trim()),
        });
    }
    let mut survey = HostSurvey {
        runs: Vec::new(),
        packages: vec![
            PackageSeen {
                installed: false,
                active: None,
            };
            packages.len()
        ],
        interfaces: Vec::new(),
    };
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("PKG ") {
            let mut w = rest.splitn(3, ' ');
            let (Some(i), Some(h), Some(link)) = (w.next(), w.next(), w.next()) else {
                continue;
            };
            let Some((check, seen)) = i
                .parse::<usize>()
                .ok()
                .and_then(|i| Some((packages.get(i)?, survey.packages.get_mut(i)?)))
            else {
                continue;
            };
            seen.installed = h == "1";
            seen.active = (link != "-").then(|| {
                link.strip_prefix(&format!("{}-", check.name))
                    .unwrap_or(link)
                    .to_owned()
            });
            continue;
        }
        if let Some(name) = l.strip_prefix("IF ") {
            survey.interfaces.push(name.to_owned());
            continue;
        }
        let w: Vec<&str> = l.split(' ').collect();
        if let ["RUN", k, p, s, a, x] = w.as_slice() {
            survey.runs.push(RemoteRun {
                launch_id: (*k).to_owned(),
                pid: p.parse().unwrap_or(0),
                start_time: s.parse().unwrap_or(0),
                alive: *a == "1",
                exit: x.parse().ok(),
            });
        }
    }
    Ok(survey)
}

/// Kills a run that no service owns, only if its pidfile still names PID ST and that process
/// still has start time ST (else only its directory goes, when the process is gone), then
/// removes the directory. Prints `KILLED`, `GONE` or `CHANGED`. Args: DIR PID ST
const KILL_RUN: &str = r#"wp=$2; ws=$3
[ -d "$d" ] || { echo GONE; exit 0; }
p=0; s=0; [ -s "$d/pid" ] && read -r p s < "$d/pid"
if [ "$p" != "$wp" ] || [ "$s" != "$ws" ]; then echo CHANGED; exit 0; fi
st "$p"
if [ -n "$S" ] && [ "$S" = "$s" ]; then kill -KILL "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null; r=KILLED; else r=GONE; fi
rm -rf "$d"; rmdir "${d%/*}" "${d%/*/*}" 2>/dev/null
echo $r
"#;

/// What a verified kill found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillOutcome {
    /// It was the process probed, and it was killed.
    Killed,
    /// Already gone (nothing killed; its leftovers removed).
    Gone,
    /// Something else is there now (another start time, another launch id): nothing done.
    Changed,
}

/// Kills a run directory's process group after re-verifying it on the host (see [`KILL_RUN`]).
pub async fn kill_remote_run(
    exec: &Executor,
    target: &Target,
    launch_id: &str,
    pid: u32,
    start_time: u64,
) -> Result<KillOutcome> {
    let ok = launch_id.split('/').count() == 4
        && launch_id.split('/').all(|p| {
            !p.is_empty()
                && p != "."
                && p != ".."
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
        });
    if !ok {
        return Err(Error::invalid("launch id", launch_id.to_owned()));
    }
    let cmd = Command::new("sh")
        .arg("-c")
        .arg(format!("{START_TIME_FN}{STATE_DIR}{KILL_RUN}"))
        .arg("sh")
        .arg(format!("~/.local/state/harness/{launch_id}"))
        .arg(pid.to_string())
        .arg(start_time.to_string())
        .timeout(exec.options().op_timeout);
    let out = op(exec, target, &cmd).await?;
    match out.stdout_text().trim() {
        "KILLED" => Ok(KillOutcome::Killed),
        "GONE" => Ok(KillOutcome::Gone),
        "CHANGED" => Ok(KillOutcome::Changed),
        other => Err(Error::Layer {
            at: target.program_place(),
            code: out.status.code(),
            stderr: format!("kill failed: {other} {}", out.stderr_text().trim()),
        }),
    }
}

/// Whether `pid` is still the process started at `start_time` carrying `var=value`. Blocking.
pub fn verify_local(pid: u32, start_time: u64, var: &str, value: &str) -> bool {
    if procfs::stat(pid).is_none_or(|r| r.zombie || r.start_time != start_time) {
        return false;
    }
    let needle = format!("{var}={value}");
    let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    env.split(|&b| b == 0).any(|kv| kv == needle.as_bytes())
        && procfs::start_time(pid) == Some(start_time)
}

/// SIGKILLs the local process `pid` (and its process group when it leads one) only if it still
/// is the process started at `start_time` carrying `var=value`: the pidfd is opened first and the
/// identity checked after, so the signal goes to exactly the process verified. Where pidfds are
/// not available ([`super::spawn::ExitWatch::NoPidfd`]) the signal goes by pid right after the
/// check (a pid reused in between would be hit: the kernel then hands out every other free pid
/// first). Blocking.
pub fn kill_local_verified(pid: u32, start_time: u64, var: &str, value: &str) -> KillOutcome {
    kill_local_verified_watched(pid, start_time, var, value, super::spawn::exit_watch())
}

fn kill_local_verified_watched(
    pid: u32,
    start_time: u64,
    var: &str,
    value: &str,
    watch: super::spawn::ExitWatch,
) -> KillOutcome {
    let Some(p) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return KillOutcome::Gone;
    };
    if watch == super::spawn::ExitWatch::NoPidfd {
        return kill_local_verified_by_pid(p, start_time, var, value);
    }
    let Ok(fd) = rustix::process::pidfd_open(p, PidfdFlags::empty()) else {
        return KillOutcome::Gone;
    };
    let row = match verify_and_kill_group(p, start_time, var, value) {
        Ok(row) => row,
        Err(outcome) => return outcome,
    };
    match rustix::process::pidfd_send_signal(&fd, rustix::process::Signal::KILL) {
        Ok(()) => KillOutcome::Killed,
        Err(rustix::io::Errno::SRCH) => KillOutcome::Gone,
        Err(_) if row.pgrp == pid => KillOutcome::Killed,
        Err(_) => KillOutcome::Changed,
    }
}

/// The process `p` if it is still the one recorded (not gone, not a zombie, same start time and
/// launch id), after SIGKILL to the group it leads (while its leader, verified, holds the group
/// id); else what to report.
fn verify_and_kill_group(
    p: Pid,
    start_time: u64,
    var: &str,
    value: &str,
) -> Result<procfs::ProcRow, KillOutcome> {
    let pid = p.as_raw_pid() as u32;
    let row = procfs::stat(pid).ok_or(KillOutcome::Gone)?;
    if row.zombie {
        return Err(KillOutcome::Gone);
    }
    if !verify_local(pid, start_time, var, value) {
        return Err(KillOutcome::Changed);
    }
    if row.pgrp == pid {
        let _ = rustix::process::kill_process_group(p, rustix::process::Signal::KILL);
    }
    Ok(row)
}

fn kill_local_verified_by_pid(p: Pid, start_time: u64, var: &str, value: &str) -> KillOutcome {
    let pid = p.as_raw_pid() as u32;
    let row = match verify_and_kill_group(p, start_time, var, value) {
        Ok(row) => row,
        Err(outcome) => return outcome,
    };
    match rustix::process::kill_process(p, rustix::process::Signal::KILL) {
        Ok(()) => KillOutcome::Killed,
        Err(rustix::io::Errno::SRCH) => KillOutcome::Gone,
        Err(_) if row.pgrp == pid => KillOutcome::Killed,
        Err(_) => KillOutcome::Changed,
    }
}

/// A container carrying the `harness.project` label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelledContainer {
    pub id: String,
    pub name: String,
    /// `running`, `exited`, `created`...
    pub state: String,
    pub project: String,
    pub service: String,
    pub launch_id: Option<String>,
}

fn docker_cmd(cli: &DockerCli, args: &[&str], limit: Duration) -> Command {
    let mut argv: Vec<OsString> = cli.base();
    argv.extend(args.iter().map(OsString::from));
    Command::new(&argv[0]).args(&argv[1..]).timeout(limit)
}

/// Every container on the engine labelled `harness.project`, in one `docker ps`, given up after
/// `limit`.
pub async fn labelled_containers(
    exec: &Executor,
    target: &Target,
    cli: &DockerCli,
    limit: Duration,
) -> Result<Vec<LabelledContainer>> {
    let format = "{{.ID}}\t{{.Names}}\t{{.State}}\t{{.Label \"harness.project\"}}\t\
                  {{.Label \"harness.service\"}}\t{{.Label \"harness.launch\"}}";
    let cmd = docker_cmd(
        cli,
        &[
            "ps",
            "-a",
            "--no-trunc",
            "--filter",
            "label=harness.project",
            "--format",
            format,
        ],
        limit,
    );
    let out = op(exec, target, &cmd).await?;
    if !out.status.success() {
        let err = out.stderr_text().trim().to_owned();
        let at = target.program_place();
        return Err(if out.status.code() == Some(127) {
            Error::DockerMissing { at, detail: err }
        } else {
            Error::DockerUnreachable { at, detail: err }
        });
    }
    Ok(out
        .stdout_text()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let [id, name, state, project, service, launch] = f.as_slice() else {
                return None;
            };
            Some(LabelledContainer {
                id: (*id).to_owned(),
                name: (*name).to_owned(),
                state: (*state).to_owned(),
                project: (*project).to_owned(),
                service: (*service).to_owned(),
                launch_id: Some((*launch).to_owned()).filter(|l| !l.is_empty()),
            })
        })
        .collect())
}

/// Removes container `id` (`docker rm -f`) only if it still carries `harness.launch=launch`
/// (or no launch label when `launch` is `None`).
pub async fn remove_container_verified(
    exec: &Executor,
    target: &Target,
    cli: &DockerCli,
    id: &str,
    launch: Option<&str>,
) -> Result<KillOutcome> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::invalid("container id", id.to_owned()));
    }
    let limit = exec.options().op_timeout;
    let inspect = docker_cmd(
        cli,
        &[
            "inspect",
            "-f",
            "{{index .Config.Labels \"harness.launch\"}}",
            id,
        ],
        limit,
    );
    let out = op(exec, target, &inspect).await?;
    if !out.status.success() {
        return if out.stderr_text().contains("No such") {
            Ok(KillOutcome::Gone)
        } else {
            Err(Error::DockerUnreachable {
                at: target.program_place(),
                detail: out.stderr_text().trim().to_owned(),
            })
        };
    }
    let found = out.stdout_text().trim().to_owned();
    let found = Some(found.as_str()).filter(|f| !f.is_empty() && *f != "<no value>");
    if found != launch {
        return Ok(KillOutcome::Changed);
    }
    let out = op(exec, target, &docker_cmd(cli, &["rm", "-f", id], limit)).await?;
    if out.status.success() {
        Ok(KillOutcome::Killed)
    } else if out.stderr_text().contains("No such") {
        Ok(KillOutcome::Gone)
    } else {
        Err(Error::Layer {
            at: target.program_place(),
            code: out.status.code(),
            stderr: format!("docker rm failed: {}", out.stderr_text().trim()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spawn_tagged(id: &str) -> std::process::Child {
        std::process::Command::new("sleep")
            .arg("1000")
            .env("HARNESS_SURVEY_TEST", id)
            .spawn()
            .unwrap()
    }

    fn reap(mut c: std::process::Child) {
        let _ = c.kill();
        let _ = c.wait();
    }

    #[test]
    fn a_kill_re_verifies_start_time_and_launch_id() {
        for watch in [
            crate::service::spawn::ExitWatch::Pidfd,
            crate::service::spawn::ExitWatch::NoPidfd,
        ] {
            kill_re_verifies(watch);
        }
    }

    fn kill_re_verifies(watch: crate::service::spawn::ExitWatch) {
        let kill_local_verified =
            |pid, st, var, value| super::kill_local_verified_watched(pid, st, var, value, watch);
        let c = spawn_tagged("x/p/s/1-2-3");
        let pid = c.id();
        // The environment is readable once the child has exec'd.
        let mut st = None;
        for _ in 0..200 {
            st = procfs::start_time(pid);
            if st.is_some() && verify_local(pid, st.unwrap(), "HARNESS_SURVEY_TEST", "x/p/s/1-2-3")
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let st = st.unwrap();
        // Another start time or another launch id: not the process probed, never killed.
        assert_eq!(
            kill_local_verified(pid, st + 1, "HARNESS_SURVEY_TEST", "x/p/s/1-2-3"),
            KillOutcome::Changed
        );
        assert_eq!(
            kill_local_verified(pid, st, "HARNESS_SURVEY_TEST", "x/p/s/9-9-9"),
            KillOutcome::Changed
        );
        assert!(procfs::stat(pid).is_some_and(|r| !r.zombie));
        assert_eq!(
            kill_local_verified(pid, st, "HARNESS_SURVEY_TEST", "x/p/s/1-2-3"),
            KillOutcome::Killed
        );
        reap(c);
        // Gone (reaped; its pid possibly reused by now): nothing is killed.
        assert_ne!(
            kill_local_verified(pid, st, "HARNESS_SURVEY_TEST", "x/p/s/1-2-3"),
            KillOutcome::Killed
        );
    }
}
