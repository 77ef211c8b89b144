//! Local services that survive the daemon.
//!
//! A service runs in its own session (`setsid`), so its pid is its process group and session id,
//! with stdin from /dev/null and stdout/stderr appended to files: no pipe to the daemon, so a
//! `kill -9` of the daemon never hands the service a SIGPIPE. It carries its launch id in its
//! environment ([`LAUNCH_ID_VAR`]) and, where cgroups are usable, joins its own cgroup before
//! `exec`: either finds it again after any crash. It is started by a vfork-style clone that does not
//! copy the daemon's memory ([`super::spawn`], ADR 0046). The daemon that started it is its parent
//! and reaps its status through a pidfd (`waitid(P_PIDFD)`); a later daemon re-attaches by pid
//! plus start time and learns of the exit from a pidfd (readable when the process ends). Where
//! pidfds are not available ([`spawn::ExitWatch::NoPidfd`]), a thread per child waits for its end
//! and a re-attached process is polled in `/proc` ([`POLL`]).
//!
//! A service with `user:` runs as `sudo -n -u USER -- sh -c SCRIPT sh CWD PROGRAM ARGS`; SCRIPT
//! reads the environment as an exported sh script from stdin (a pipe the daemon writes and
//! closes), so no value is ever in an argv. sudo is the session leader and the service's recorded
//! pid; it relays the stop signal. A daemon that may not signal the user's processes itself (not
//! root) signals through `sudo -n kill`.

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use futures_lite::{AsyncWriteExt, future};
use rustix::process::{Pid, PidfdFlags, WaitId, WaitIdOptions};

use super::cgroup::Cgroup;
use super::{ExitInfo, LAUNCH_ID_VAR, ServiceCommand, procfs, spawn};
use crate::error::{Error, Place, Result};
use crate::signal::Signal;

/// Reads the environment (an sh script ending in `HARNESS_ENV_END=1`) from stdin, enters the
/// working directory and execs the program with stdin from /dev/null. Args: CWD PROGRAM ARGS...
const SUDO_RUNNER: &str = r#"eval "$(cat)" || exit 125
[ "${HARNESS_ENV_END-}" = 1 ] || exit 125
unset HARNESS_ENV_END
if [ -n "$1" ]; then cd "$1" || exit 126; fi
shift
exec "$@" </dev/null
"#;

/// A local service process.
pub struct LocalService {
    pub pid: u32,
    pub start_time: u64,
    /// Runs as this user through sudo.
    pub user: Option<String>,
    cgroup: Option<Cgroup>,
    exit: Exit,
    ended: Option<ExitInfo>,
}

enum Exit {
    /// Our child: its pidfd becomes readable when it ends, and `waitid` on it gives (and reaps)
    /// its status. `None` once reaped.
    Child(Option<Async<OwnedFd>>),
    /// Our child, without pidfds: its waiter thread. `None` once reaped.
    Waiter(Option<spawn::Waiter>),
    /// Not our child (re-attached): the pidfd becomes readable when it ends.
    Pidfd(Async<OwnedFd>),
    /// Not our child, without pidfds: `/proc` is read every [`POLL`].
    Poll,
}

/// How often a re-attached process is looked for in `/proc` where pidfds are not available.
pub const POLL: Duration = Duration::from_millis(500);

fn place() -> Place {
    Place::local()
}

/// The environment as an sh script (`export K='V'` lines), ended by a marker so a truncated
/// script is noticed.
pub(crate) fn env_script(env: &[(String, String)]) -> Vec<u8> {
    let mut s = Vec::new();
    for (k, v) in env {
        s.extend_from_slice(b"export ");
        s.extend_from_slice(k.as_bytes());
        s.push(b'=');
        s.extend_from_slice(&crate::quote::quote(std::ffi::OsStr::new(v)));
        s.push(b'\n');
    }
    s.extend_from_slice(b"HARNESS_ENV_END=1\n");
    s
}

/// Starts `cmd` with its output appended to `stdout`/`stderr` in `dir`, `launch_id` in its
/// environment, and in `cgroup` when given (removed again if the launch fails). The caller records the pid and start time (the
/// orchestrator: its launch journal and the registry); no file is written here beside the two
/// output files, since each new file is a new inode per launch.
pub async fn spawn(
    cmd: &ServiceCommand,
    dir: &Path,
    launch_id: &str,
    cgroup: Option<Cgroup>,
) -> Result<LocalService> {
    let made = cgroup.clone();
    let started = spawn_watched(cmd, dir, launch_id, cgroup, spawn::exit_watch()).await;
    // Nothing started in it: not left behind.
    if started.is_err()
        && let Some(cg) = made
    {
        blocking::unblock(move || cg.remove()).await;
    }
    started
}

async fn spawn_watched(
    cmd: &ServiceCommand,
    dir: &Path,
    launch_id: &str,
    cgroup: Option<Cgroup>,
    watch: spawn::ExitWatch,
) -> Result<LocalService> {
    for (k, _) in &cmd.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(Error::invalid("environment variable name", k.clone()));
        }
    }
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
        .map_err(|e| {
            Error::io(
                place(),
                format!("opening the log files in {}", dir.display()),
                e,
            )
        })?
    };
    if let Some(cwd) = &cmd.cwd
        && !async_fs::metadata(cwd).await.is_ok_and(|m| m.is_dir())
    {
        return Err(Error::WorkingDir {
            at: place(),
            dir: cwd.clone(),
        });
    }
    // With `user:`, sudo runs the SUDO_RUNNER that reads the environment from a pipe on stdin;
    // otherwise the environment goes straight into the child's envp (never into an argv).
    let launch = [(OsString::from(LAUNCH_ID_VAR), OsString::from(launch_id))];
    let (program, args, env, cwd, env_pipe): (OsString, Vec<String>, Vec<_>, _, _) = match &cmd.user
    {
        None => (
            cmd.program.clone().into(),
            cmd.args.clone(),
            cmd.env
                .iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v)))
                .chain(launch)
                .collect(),
            cmd.cwd.clone().map(PathBuf::from),
            None,
        ),
        Some(user) => {
            check_sudo(user).await?;
            let mut args: Vec<String> = ["-n", "-u", user, "--", "sh", "-c", SUDO_RUNNER, "sh"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
            args.push(cmd.cwd.clone().unwrap_or_default());
            args.push(cmd.program.clone());
            args.extend(cmd.args.iter().cloned());
            let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
                .map_err(|e| Error::io(place(), "creating the environment pipe", e.into()))?;
            (
                "sudo".into(),
                args,
                launch.into_iter().collect(),
                Some(PathBuf::from("/")),
                Some((r, w)),
            )
        }
    };
    let cgroup_dir = cgroup
        .as_ref()
        .map(Cgroup::dir_c)
        .transpose()
        .map_err(|e| Error::io(place(), "cgroup path", e))?;
    let (stdin, env_writer) = match env_pipe {
        Some((r, w)) => (r, Some(w)),
        None => (
            std::fs::File::open("/dev/null")
                .map_err(|e| Error::io(place(), "opening /dev/null", e))?
                .into(),
            None,
        ),
    };
    // clone + exec blocks this thread until the exec (or its failure) is known: off the executor,
    // so that many services launch in parallel.
    let (spawned, start_time) = blocking::unblock(move || {
        let spawned = spawn::spawn(spawn::Spawn {
            program: &program,
            args: &args,
            env,
            cwd: cwd.as_deref(),
            stdio: [stdin, stdout.into(), stderr.into()],
            cgroup: cgroup_dir,
            watch,
        })?;
        // The start time is set at clone, so it is final even if exec has not happened yet.
        let start_time = procfs::start_time(spawned.pid).unwrap_or(0);
        Ok::<_, spawn::Failed>((spawned, start_time))
    })
    .await
    .map_err(|f| match (f.step, f.error.kind()) {
        (spawn::Step::Exec, std::io::ErrorKind::NotFound) if cmd.user.is_some() => {
            Error::ProgramNotFound {
                at: place(),
                program: "sudo".into(),
            }
        }
        (spawn::Step::Exec, std::io::ErrorKind::NotFound) => Error::ProgramNotFound {
            at: place(),
            program: cmd.program.clone(),
        },
        (step, _) => Error::io(
            place(),
            format!("starting {:?}: {}", cmd.program, step.what()),
            f.error,
        ),
    })?;
    if let Some(w) = env_writer {
        let mut env = cmd.env.clone();
        env.push((LAUNCH_ID_VAR.to_owned(), launch_id.to_owned()));
        // A service that exits at once closes the pipe: its exit tells, not this write.
        if let Ok(mut w) = Async::new(std::fs::File::from(w)) {
            let _ = w.write_all(&env_script(&env)).await;
        }
    }
    let exit = match spawned.exit {
        spawn::ChildExit::Pidfd(fd) => match Async::new_nonblocking(fd) {
            Ok(fd) => Exit::Child(Some(fd)),
            Err(e) => {
                // Not watchable: it must not run unwatched, nor stay a zombie.
                let pid = spawned.pid;
                blocking::unblock(move || spawn::kill_and_reap(pid)).await;
                return Err(Error::io(place(), "watching the pidfd", e));
            }
        },
        spawn::ChildExit::Waiter(w) => Exit::Waiter(Some(w)),
    };
    Ok(LocalService {
        pid: spawned.pid,
        start_time,
        user: cmd.user.clone(),
        cgroup,
        exit,
        ended: None,
    })
}

/// Waits until the child behind `pidfd` has ended and reaps it: its exit code or signal.
/// Cancel-safe: nothing is consumed until the status is in.
async fn reap_child(pidfd: &Async<OwnedFd>) -> ExitInfo {
    loop {
        match rustix::process::waitid(
            WaitId::PidFd(pidfd.as_fd()),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
        ) {
            Ok(Some(st)) => {
                return ExitInfo {
                    code: st.exit_status(),
                    signal: st.terminating_signal(),
                };
            }
            Ok(None) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return ExitInfo::UNKNOWN,
        }
        if pidfd.readable().await.is_err() {
            return ExitInfo::UNKNOWN;
        }
    }
}

impl Drop for LocalService {
    /// A child never waited for is reaped later (at the next spawn, or by its waiter thread when
    /// it ends), not left a zombie.
    fn drop(&mut self) {
        if let Exit::Child(slot) = &mut self.exit
            && let Some(fd) = slot.take()
            && let Ok(fd) = fd.into_inner()
        {
            spawn::orphan(fd);
        }
    }
}

/// Fails at once, naming the user, when `sudo -n -u USER` would not run (a password needed, an
/// unknown user): otherwise the service would just exit 1 with the reason in its log.
async fn check_sudo(user: &str) -> Result<()> {
    let at = Place {
        host: "localhost".into(),
        layer: format!("sudo({user})"),
    };
    let out = async_process::Command::new("sudo")
        .args(["-n", "-u", user, "--", "true"])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| Error::io(at.clone(), "running sudo", e))?;
    if out.status.success() {
        return Ok(());
    }
    let why = String::from_utf8_lossy(&out.stderr);
    let why = why
        .lines()
        .find(|l| !l.contains("audit plugin"))
        .unwrap_or("")
        .trim()
        .to_owned();
    if why.contains("password") {
        return Err(Error::SudoPassword {
            at,
            user: user.to_owned(),
        });
    }
    Err(Error::Sudo {
        at,
        detail: format!(
            "`sudo -n -u {user}` failed ({why}); sudo -n must work without a password (NOPASSWD) \
             for the daemon's user"
        ),
    })
}

/// `PID STARTTIME` of the last launch in `dir`, as daemons before the launch journal's `=` lines
/// recorded it (`dir/pid`).
pub async fn read_pidfile(dir: &Path) -> Option<(u32, u64)> {
    let text = async_fs::read_to_string(dir.join("pid")).await.ok()?;
    let mut words = text.split_whitespace();
    Some((words.next()?.parse().ok()?, words.next()?.parse().ok()?))
}

/// Re-attaches if `pid` still is the process started at `start_time`.
pub fn attach(
    pid: u32,
    start_time: u64,
    user: Option<String>,
    cgroup: Option<Cgroup>,
) -> Option<LocalService> {
    attach_watched(pid, start_time, user, cgroup, spawn::exit_watch())
}

fn attach_watched(
    pid: u32,
    start_time: u64,
    user: Option<String>,
    cgroup: Option<Cgroup>,
    watch: spawn::ExitWatch,
) -> Option<LocalService> {
    let p = Pid::from_raw(i32::try_from(pid).ok()?)?;
    let fd = match watch {
        spawn::ExitWatch::Pidfd => Some(rustix::process::pidfd_open(p, PidfdFlags::empty()).ok()?),
        spawn::ExitWatch::NoPidfd => None,
    };
    // Checked after opening the pidfd: if the start time still matches, the fd is that process.
    let row = procfs::stat(pid)?;
    if row.start_time != start_time || row.zombie {
        return None;
    }
    let exit = match fd {
        Some(fd) => Exit::Pidfd(Async::new_nonblocking(fd).ok()?),
        None => Exit::Poll,
    };
    Some(LocalService {
        pid,
        start_time,
        user,
        cgroup,
        exit,
        ended: None,
    })
}

/// SIGKILLs processes of a launch that is not adopted (pid, start time), through `sudo -n kill`
/// for those of another user the daemon may not kill. Blocking.
pub fn kill_processes(procs: &[(u32, u64)]) {
    let mut denied = Vec::new();
    for &(p, st) in procs {
        if procfs::start_time(p) != Some(st) {
            continue;
        }
        if let Some(pp) = i32::try_from(p).ok().and_then(Pid::from_raw)
            && rustix::process::kill_process(pp, rustix::process::Signal::KILL)
                == Err(rustix::io::Errno::PERM)
        {
            denied.push(p.to_string());
        }
    }
    if !denied.is_empty() {
        sudo_kill(Signal::Kill.number(), &denied);
    }
}

impl LocalService {
    pub async fn wait(&mut self) -> ExitInfo {
        if let Some(e) = self.ended {
            return e;
        }
        let info = match &mut self.exit {
            Exit::Child(slot) => match slot {
                Some(fd) => {
                    let info = reap_child(fd).await;
                    *slot = None;
                    info
                }
                None => ExitInfo::UNKNOWN,
            },
            Exit::Waiter(slot) => match slot {
                Some(w) => {
                    let info = w.wait().await;
                    *slot = None;
                    info
                }
                None => ExitInfo::UNKNOWN,
            },
            Exit::Pidfd(fd) => {
                let _ = fd.readable().await;
                ExitInfo::UNKNOWN
            }
            Exit::Poll => {
                let (pid, start_time) = (self.pid, self.start_time);
                while blocking::unblock(move || {
                    procfs::stat(pid).is_some_and(|r| r.start_time == start_time && !r.zombie)
                })
                .await
                {
                    Timer::after(POLL).await;
                }
                ExitInfo::UNKNOWN
            }
        };
        self.ended = Some(info);
        info
    }

    /// Stops the whole service: `signal` to its process group, SIGKILL after `timeout`, then
    /// anything left in its cgroup, session and tree. Returns how it ended and whether SIGKILL
    /// was needed.
    pub async fn terminate(&mut self, signal: Signal, timeout: Duration) -> (ExitInfo, bool) {
        let pid = self.pid;
        // Its cgroup holds every descendant and is killed whole after the signal: no walk of its
        // tree (a trip through the blocking pool, behind other stops' work) before the signal.
        let tree = match &self.cgroup {
            Some(_) => vec![(pid, self.start_time)],
            None => blocking::unblock(move || procfs::descendants(pid)).await,
        };
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
        // Removes the cgroup too once the service has ended; else after the sweep.
        self.sweep(tree).await;
        if self.ended.is_none()
            && let Some(cg) = self.cgroup.clone()
        {
            blocking::unblock(move || cg.remove()).await;
        }
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

    /// SIGKILLs every live process left of the service: its whole cgroup where it has one; those
    /// in `earlier` (taken before the stop, while the process tree was intact; checked by start
    /// time), and — when the service had children or its group still exists — everything in its
    /// group and session. An empty `earlier` (the service ended on its own) always scans. Once
    /// the service has ended its cgroup goes too (a next run makes it again): an empty cgroup
    /// left behind would outlive the daemon.
    pub async fn sweep(&self, earlier: Vec<(u32, u64)>) {
        let (pid, user, cgroup) = (self.pid, self.user.clone(), self.cgroup.clone());
        let ended = self.ended.is_some();
        blocking::unblock(move || {
            match &cgroup {
                Some(cg) if ended => cg.remove(),
                Some(cg) => cg.kill_all(),
                None => {}
            }
            sweep(pid, earlier, user.as_deref());
        })
        .await;
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
    blocking::unblock(move || procfs::group_alive(pid)).await
}

fn sweep(pid: u32, earlier: Vec<(u32, u64)>, user: Option<&str>) {
    let scan = earlier.len() != 1 || group_exists(pid);
    let mut earlier = earlier;
    for _ in 0..200 {
        earlier
            .retain(|(p, st)| procfs::stat(*p).is_some_and(|r| r.start_time == *st && !r.zombie));
        let mut left = if scan { procfs::owned(pid) } else { Vec::new() };
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use spawn::ExitWatch;

    fn cmd(program: &str, args: &[&str]) -> ServiceCommand {
        ServiceCommand {
            program: program.into(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            ..ServiceCommand::default()
        }
    }

    /// Neither running nor a zombie, within 5 s.
    fn gone(pid: u32) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if procfs::stat(pid).is_none() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// The path taken where the kernel has no pidfds (valgrind, Linux < 5.4), forced here: a
    /// service's exit status comes once, `stop` ends it by SIGTERM or, when ignored, SIGKILL, a
    /// dropped handle's child is still reaped, and no zombie is left by any of them.
    #[test]
    fn without_pidfds_services_end_stop_and_leave_no_zombie() {
        let dir = tempfile::tempdir().unwrap();
        let start = |name: &str, c: ServiceCommand| {
            let d = dir.path().join(name);
            async move {
                spawn_watched(
                    &c,
                    &d,
                    &format!("t/p/{}/1", c.program),
                    None,
                    ExitWatch::NoPidfd,
                )
                .await
                .unwrap()
            }
        };
        future::block_on(async {
            let mut s = start("exits", cmd("sh", &["-c", "echo hi; exit 5"])).await;
            assert!(matches!(s.exit, Exit::Waiter(Some(_))));
            let five = ExitInfo {
                code: Some(5),
                signal: None,
            };
            assert_eq!(s.wait().await, five);
            assert_eq!(
                s.wait().await,
                five,
                "the same status again, nothing reaped twice"
            );
            assert!(gone(s.pid), "reaped");
            let out = std::fs::read_to_string(dir.path().join("exits/stdout")).unwrap();
            assert_eq!(out, "hi\n");

            let mut s = start("stops", cmd("sleep", &["300"])).await;
            assert!(procfs::stat(s.pid).is_some_and(|r| !r.zombie && r.session == s.pid));
            let (info, killed) = s.terminate(Signal::Term, Duration::from_secs(10)).await;
            assert_eq!(info.signal, Some(libc::SIGTERM));
            assert!(!killed);
            assert!(gone(s.pid), "reaped");

            let mut s = start(
                "stubborn",
                cmd("sh", &["-c", "trap '' TERM; while :; do sleep 1; done"]),
            )
            .await;
            // The trap is set once the shell runs its script.
            Timer::after(Duration::from_millis(300)).await;
            let (info, killed) = s.terminate(Signal::Term, Duration::from_millis(300)).await;
            assert_eq!(info.signal, Some(libc::SIGKILL));
            assert!(killed);
            assert!(gone(s.pid), "reaped");

            let s = start("dropped", cmd("sleep", &["0.3"])).await;
            let pid = s.pid;
            drop(s);
            assert!(
                gone(pid),
                "the waiter thread reaped the dropped handle's child"
            );
        });
    }

    /// Without pidfds a re-attached process (not our child) is seen to end by polling `/proc`.
    #[test]
    fn without_pidfds_a_reattached_process_is_seen_to_end() {
        let dir = tempfile::tempdir().unwrap();
        future::block_on(async {
            let mut child = spawn_watched(
                &cmd("sleep", &["300"]),
                dir.path(),
                "t/p/s/1",
                None,
                ExitWatch::NoPidfd,
            )
            .await
            .unwrap();
            let mut attached =
                attach_watched(child.pid, child.start_time, None, None, ExitWatch::NoPidfd)
                    .expect("attached");
            assert!(matches!(attached.exit, Exit::Poll));
            assert!(
                attach_watched(
                    child.pid,
                    child.start_time + 1,
                    None,
                    None,
                    ExitWatch::NoPidfd
                )
                .is_none(),
                "another start time is another process"
            );
            let ended = future::or(
                async {
                    attached.wait().await;
                    true
                },
                async {
                    Timer::after(Duration::from_millis(300)).await;
                    false
                },
            )
            .await;
            assert!(!ended, "still running");
            signal_group(child.pid, Signal::Kill, None);
            assert_eq!(child.wait().await.signal, Some(libc::SIGKILL));
            let t = Instant::now();
            assert_eq!(attached.wait().await, ExitInfo::UNKNOWN);
            assert!(t.elapsed() < POLL * 4, "seen within a poll or two");
        });
    }
}
