//! Services on SSH hosts: detached processes in the managed-process layout of command-executor
//! (`pid` = `PID STARTTIME`, `stdout`, `stderr`, `exit` in a state directory on the host),
//! optionally run as another user through `sudo -n`.
//!
//! Why not one `start_managed` handle per service: each handle keeps its own log-follower
//! session open, so ten services on a host would hold all ten sessions sshd allows on one
//! connection (MaxSessions) and every health check or stop would queue behind them. Here one
//! [`Follower`] per host and user follows *every* service there in a single session, by byte
//! offset. The offsets are the sizes of the local raw files (emptied at each launch), so after
//! the connection drops — or the daemon restarts — the follower resumes exactly where the local
//! files end: no line lost, none twice.
//!
//! Each run gets its own state directory (`~/.local/state/harness/<project>/<service>/<run>`),
//! so a restart never truncates a file the follower is reading; it is removed once the run ended
//! and its output was copied. Stop is the configured signal to the process group, SIGKILL after
//! the timeout, done on the host by a small sh script.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_io::Timer;
use command_executor::{Command, Event, Executor, HostKeyPolicy, Signal, SshHost, Target};
use event_listener::Event as Notify;
use futures_lite::AsyncWriteExt;
use harness_config::{KnownHosts, Project};
use serde::Serialize;

use super::{ExitInfo, project_and_service};
use crate::spec::LaunchSpec;

/// Where runs keep their state on a host (in the home of the user the service runs as).
const STATE_ROOT: &str = "~/.local/state/harness";
/// Environment variable naming a known-hosts file for every harness ssh connection (the
/// services file only chooses the policy).
pub(crate) const KNOWN_HOSTS_ENV: &str = "HARNESS_KNOWN_HOSTS";

/// An SSH host as the services file describes it, resolved (jump hosts included).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub(crate) struct HostSpec {
    pub name: String,
    pub address: String,
    pub port: u16,
    pub user: Option<String>,
    pub identity_file: Option<PathBuf>,
    pub accept_new: bool,
    /// Jump hosts, first hop first.
    pub jump: Vec<HostSpec>,
    pub sudo: bool,
    pub docker_host: Option<String>,
}

/// The `hosts:` entry `name`, with its jump chain. Services and package installs both reach a
/// host through this (then [`HostSpec::ssh`]), so they connect the same way.
pub(crate) fn host_spec(project: &Project, name: &str) -> Result<HostSpec, String> {
    host_spec_depth(project, name, 0)
}

fn host_spec_depth(project: &Project, name: &str, depth: usize) -> Result<HostSpec, String> {
    if depth > 8 {
        return Err(format!("host {name:?}: jump chain longer than 8 (a loop?)"));
    }
    let h = project
        .hosts
        .get(name)
        .ok_or_else(|| format!("host {name:?} is not defined under hosts:"))?;
    let mut jump = Vec::new();
    if let Some(j) = &h.jump {
        if project.hosts.contains_key(j) {
            let via = host_spec_depth(project, j, depth + 1)?;
            jump.extend(via.jump.iter().cloned());
            jump.push(HostSpec {
                jump: Vec::new(),
                ..via
            });
        } else {
            jump.push(parse_jump(j)?);
        }
    }
    Ok(HostSpec {
        name: name.to_owned(),
        address: h.address.clone(),
        port: h.port,
        user: h.user.clone(),
        identity_file: h.identity_file.clone(),
        accept_new: h.known_hosts == KnownHosts::AcceptNew,
        jump,
        sudo: h.sudo,
        docker_host: h.docker_host.clone(),
    })
}

/// `user@host[:port]` or `host[:port]` (a bare IPv6 address takes no port).
fn parse_jump(s: &str) -> Result<HostSpec, String> {
    let (user, rest) = match s.split_once('@') {
        Some((u, r)) => (Some(u.to_owned()), r),
        None => (None, s),
    };
    let (addr, port) = match rest.rsplit_once(':') {
        Some((a, p)) if !a.contains(':') => (
            a,
            p.parse::<u16>()
                .map_err(|_| format!("jump {s:?}: bad port {p:?}"))?,
        ),
        _ => (rest, 22),
    };
    if addr.is_empty() || user.as_deref().is_some_and(str::is_empty) {
        return Err(format!("jump {s:?}: expected [user@]host[:port]"));
    }
    Ok(HostSpec {
        name: addr.to_owned(),
        address: addr.to_owned(),
        port,
        user,
        identity_file: None,
        accept_new: false,
        jump: Vec::new(),
        sudo: false,
        docker_host: None,
    })
}

impl HostSpec {
    /// The command-executor host: the per-host ssh config it generates carries every option.
    pub fn ssh(&self) -> SshHost {
        let mut h = SshHost::new(&self.address)
            .name(&self.name)
            .port(self.port)
            .connect_timeout(Duration::from_secs(5))
            .host_key_policy(if self.accept_new {
                HostKeyPolicy::AcceptNew
            } else {
                HostKeyPolicy::Strict
            });
        if let Some(u) = &self.user {
            h = h.user(u);
        }
        if let Some(i) = &self.identity_file {
            h = h.identity_file(i);
        }
        if let Some(k) = std::env::var_os(KNOWN_HOSTS_ENV).filter(|k| !k.is_empty()) {
            h = h.known_hosts(PathBuf::from(k));
        }
        for j in &self.jump {
            let mut via = j.ssh();
            via.jump.clear();
            if via.identity_file.is_none()
                && let Some(i) = &self.identity_file
            {
                via = via.identity_file(i);
            }
            h = h.jump(via);
        }
        h
    }

    /// Where the service's program runs: ssh, then sudo when it runs as another user.
    pub fn target(&self, user: Option<&str>) -> Target {
        let t = Target::ssh(self.ssh());
        match user {
            Some(u) if Some(u) != self.user.as_deref() => t.sudo(u),
            _ => t,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// remote sh programs

/// `st PID` sets `S` to the start time of PID (field 22 of /proc/PID/stat), empty when gone.
const START_TIME_FN: &str = r#"st() { S=; if read -r l 2>/dev/null < "/proc/$1/stat"; then l=${l##*) }; set -f; set -- $l; shift 19 && S=$1; set +f; fi; }
"#;

const HOME_DIR: &str = r#"d=$1; case $d in "~/"*) d=$HOME/${d#"~/"};; esac
"#;

/// The runner (as in command-executor's managed processes): the program in its own session,
/// `PID STARTTIME` in `pid`, `$?` in `exit` when it ends. Args: DIR CWD N K=V... PROGRAM ARGS...
const RUNNER: &str = r#"d=$1; c=$2; n=$3; shift 3
while [ "$n" -gt 0 ]; do export "$1"; shift; n=$((n-1)); done
if [ -n "$c" ]; then cd "$c" || { echo "$$ 0" > "$d/pid"; echo 126 > "$d/exit"; exit 126; }; fi
setsid "$@" </dev/null >>"$d/stdout" 2>>"$d/stderr" &
p=$!
st "$p"
echo "$p $S" > "$d/pid.tmp" && mv -f "$d/pid.tmp" "$d/pid"
wait "$p"; rc=$?
echo "$rc" > "$d/exit.tmp" && mv -f "$d/exit.tmp" "$d/exit"
"#;

/// Creates the run's directory, checks cwd, program and setsid, starts the runner detached and
/// prints `STARTED PID STARTTIME DIR`. Args: DIR RUNNER CWD N K=V... PROGRAM ARGS...
const START: &str = r#"r=$2; shift 2
mkdir -p "$d" || exit 1
command -v setsid >/dev/null 2>&1 || { echo NOSETSID; rm -rf "$d"; exit 0; }
( c=$1; n=$2; shift 2; shift "$n"; if [ -n "$c" ]; then cd "$c" 2>/dev/null || { echo NOCWD; exit 1; }; fi; command -v "$1" >/dev/null 2>&1 || { echo NOPROG; exit 1; } ) || { rm -rf "$d"; exit 0; }
: > "$d/stdout" && : > "$d/stderr" || exit 1
setsid sh -c "$r" sh "$d" "$@" </dev/null >/dev/null 2>&1 &
i=0
while [ ! -s "$d/pid" ]; do i=$((i+1)); if [ "$i" -gt 1000 ]; then echo "runner did not write $d/pid" >&2; exit 1; fi; sleep 0.01; done
read -r p s < "$d/pid"
echo "STARTED $p $s $d"
"#;

/// `RUNNING`, `EXITED RC`, `GONE` or `NONE` for a run directory. Args: DIR PID ST
const STATUS: &str = r#"p=$2; s=$3
[ -d "$d" ] || { echo NONE; exit 0; }
i=0
while :; do
  if [ -f "$d/exit" ]; then read -r rc < "$d/exit"; echo "EXITED $rc"; exit 0; fi
  st "$p"; if [ -n "$S" ] && [ "$S" = "$s" ]; then echo RUNNING; exit 0; fi
  i=$((i+1)); [ "$i" -gt 10 ] && { echo GONE; exit 0; }
  sleep 0.1
done
"#;

/// Sends SIG to the run's process group (if the pidfile still names the process started), waits
/// up to T tenths for the group to be gone, then SIGKILLs it. Prints `STOPPED`, `KILLED` or
/// `GONE`. Args: DIR SIG T
const STOP: &str = r#"g=$2; t=$3
[ -s "$d/pid" ] || { echo GONE; exit 0; }
read -r p s < "$d/pid"; st "$p"
if [ -z "$S" ] || [ "$S" != "$s" ]; then kill -KILL "-$p" 2>/dev/null; echo GONE; exit 0; fi
kill "-$g" "-$p" 2>/dev/null || kill "-$g" "$p" 2>/dev/null
# Zombies still answer kill -0 (orphans wait for init to reap them): only live members count.
live() { for f in /proc/[0-9]*/stat; do read -r l < "$f" 2>/dev/null || continue; l=${l##*) }; set -f; set -- $l; set +f; [ "$1" != Z ] && [ "$3" = "$p" ] && return 0; done; return 1; }
i=0
while kill -0 "-$p" 2>/dev/null && live; do
  if [ "$i" -ge "$t" ]; then kill -KILL "-$p" 2>/dev/null; echo KILLED; exit 0; fi
  sleep 0.1; i=$((i+1))
done
echo STOPPED
"#;

/// After a run ended: SIGKILL whatever is left in its process group, remove its directory and
/// the service's and project's directories once empty. Args: DIR PID
const CLEAN: &str = r#"p=$2
[ "$p" -gt 1 ] 2>/dev/null && kill -KILL "-$p" 2>/dev/null
rm -rf "$d"; rmdir "${d%/*}" "${d%/*/*}" 2>/dev/null
exit 0
"#;

/// Follows every run under ROOT (`ROOT/<project>/<service>/<run>/`) in one session, by byte
/// offset: `\036HARNESS-D KEY o|e OFFSET LEN` then LEN bytes of output; `\036HARNESS-X KEY RC`
/// once a run's exit is recorded (after its last output); `\036HARNESS-G KEY` when its process
/// vanished without a recorded status; `\036HARNESS-H` about once a second, so a follower whose
/// session is gone dies of SIGPIPE. Args: ROOT then KEY OUT_OFFSET ERR_OFFSET per known run.
const FOLLOW: &str = r#"d=$1; shift; h=0
case $d in "~/"*) d=$HOME/${d#"~/"};; esac
n=0
while [ $# -ge 3 ]; do n=$((n+1)); eval "k_$n=\$1 a_$n=\$2 b_$n=\$3 x_$n=0"; shift 3; done
sz() { if [ -f "$1" ]; then Z=$(( $(wc -c < "$1") )); else Z=0; fi; }
send() { printf '\036HARNESS-D %s %s %s %s\n' "$k" "$2" "$3" $(($4-$3)); tail -c +$(($3+1)) "$1" | head -c $(($4-$3)); }
while :; do
  for r in "$d"/*/*/*/; do
    [ -s "${r}pid" ] || continue
    k=${r%/}; k=${k#"$d"/}
    i=0; j=1
    while [ "$j" -le "$n" ]; do eval "[ \"\$k_$j\" = \"\$k\" ]" && { i=$j; break; }; j=$((j+1)); done
    if [ "$i" = 0 ]; then n=$((n+1)); i=$n; eval "k_$i=\$k a_$i=0 b_$i=0 x_$i=0"; fi
    eval "a=\$a_$i b=\$b_$i x=\$x_$i"
    [ "$x" = 1 ] && continue
    fin=0; [ -f "${r}exit" ] && fin=1
    sz "${r}stdout"; if [ "$Z" -gt "$a" ]; then send "${r}stdout" o "$a" "$Z"; a=$Z; fi
    sz "${r}stderr"; if [ "$Z" -gt "$b" ]; then send "${r}stderr" e "$b" "$Z"; b=$Z; fi
    eval "a_$i=\$a b_$i=\$b"
    if [ "$fin" = 1 ]; then
      read -r rc < "${r}exit"; printf '\036HARNESS-X %s %s\n' "$k" "$rc"; eval "x_$i=1"
    else
      read -r p s < "${r}pid"; st "$p"
      if [ "$S" != "$s" ]; then
        eval "g=\${g_$i:-0}"; g=$((g+1)); eval "g_$i=\$g"
        if [ "$g" -gt 10 ]; then printf '\036HARNESS-G %s\n' "$k"; eval "x_$i=1"; fi
      fi
    fi
  done
  # A heartbeat: once the session is gone the write fails and SIGPIPE ends this follower.
  h=$((h+1)); if [ "$h" -ge 5 ]; then h=0; printf '\036HARNESS-H\n'; fi
  sleep 0.2
done
"#;

/// One-off operations (start, status, stop, clean, command health checks) at once per ssh
/// host. With the log followers they stay within sshd's 10 sessions per connection, so a burst
/// of starts or checks never makes the executor open a second connection to the host.
const OPS_PER_HOST: usize = 6;

pub(crate) async fn op(
    exec: &Executor,
    target: &Target,
    cmd: &Command,
) -> Result<command_executor::Output, command_executor::Error> {
    static SLOTS: std::sync::OnceLock<Mutex<HashMap<String, Arc<async_lock::Semaphore>>>> =
        std::sync::OnceLock::new();
    if !matches!(target.layers.first(), Some(command_executor::Layer::Ssh(_))) {
        return exec.output(target, cmd).await;
    }
    let slots = {
        let mut all = SLOTS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        all.entry(target.host())
            .or_insert_with(|| Arc::new(async_lock::Semaphore::new(OPS_PER_HOST)))
            .clone()
    };
    let _slot = slots.acquire().await;
    exec.output(target, cmd).await
}

fn sh(script: String, args: impl IntoIterator<Item = String>) -> Command {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .args(args)
}

// ---------------------------------------------------------------------------------------------
// the follower

/// One followed run.
struct Reg {
    local: PathBuf,
    offsets: [u64; 2],
    exit: Option<ExitInfo>,
}

/// Follows all runs on one target (host + user) in one session, for as long as a run uses it.
pub(crate) struct Follower {
    runs: Mutex<HashMap<String, Reg>>,
    changed: Notify,
    task: Mutex<Option<smol::Task<()>>>,
}

type Followers = Mutex<HashMap<Target, Weak<Follower>>>;

fn followers() -> &'static Followers {
    static F: std::sync::OnceLock<Followers> = std::sync::OnceLock::new();
    F.get_or_init(Default::default)
}

impl Follower {
    fn get(exec: &Executor, target: &Target) -> Arc<Follower> {
        let mut all = followers().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = all.get(target).and_then(Weak::upgrade) {
            return f;
        }
        let f = Arc::new(Follower {
            runs: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            task: Mutex::new(None),
        });
        let task = smol::spawn(follow_loop(
            Arc::downgrade(&f),
            exec.clone(),
            target.clone(),
        ));
        *f.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        all.retain(|_, w| w.strong_count() > 0);
        all.insert(target.clone(), Arc::downgrade(&f));
        f
    }

    fn register(&self, key: &str, local: &Path, offsets: [u64; 2]) {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.entry(key.to_owned()).or_insert(Reg {
            local: local.to_path_buf(),
            offsets,
            exit: None,
        });
    }

    fn unregister(&self, key: &str) {
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    fn exit_of(&self, key: &str) -> Option<ExitInfo> {
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .and_then(|r| r.exit)
    }

    async fn wait_exit(&self, key: &str) -> ExitInfo {
        loop {
            let l = self.changed.listen();
            if let Some(e) = self.exit_of(key) {
                return e;
            }
            l.await;
        }
    }

    fn args(&self) -> Vec<String> {
        let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        let mut v = vec![STATE_ROOT.to_owned()];
        for (k, r) in runs.iter() {
            v.extend([
                k.clone(),
                r.offsets[0].to_string(),
                r.offsets[1].to_string(),
            ]);
        }
        v
    }

    /// Appends `data` (which starts at `offset` of the run's remote `stream`) to the local raw
    /// file, skipping what is already there.
    async fn data(&self, key: &str, stream: usize, offset: u64, data: &[u8]) {
        let (path, have) = {
            let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
            let Some(r) = runs.get(key) else { return };
            let name = if stream == 0 { "stdout" } else { "stderr" };
            (r.local.join(name), r.offsets[stream])
        };
        let end = offset + data.len() as u64;
        if end <= have {
            return;
        }
        if offset > have {
            tracing::warn!(run = key, "{} bytes of output lost", offset - have);
        }
        let skip = have.saturating_sub(offset) as usize;
        let write = async {
            let mut f = async_fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&path)
                .await?;
            f.write_all(&data[skip..]).await?;
            f.flush().await
        };
        if let Err(e) = write.await {
            tracing::warn!(run = key, "cannot write {}: {e}", path.display());
            return;
        }
        if let Some(r) = self
            .runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(key)
        {
            r.offsets[stream] = end;
        }
    }

    fn ended(&self, key: &str, info: ExitInfo) {
        if let Some(r) = self
            .runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(key)
            && r.exit.is_none()
        {
            r.exit = Some(info);
        }
        self.changed.notify(usize::MAX);
    }
}

pub(crate) fn exit_info(rc: i32) -> ExitInfo {
    if rc > 128 && rc < 192 {
        ExitInfo {
            code: None,
            signal: Some(rc - 128),
        }
    } else {
        ExitInfo {
            code: Some(rc),
            signal: None,
        }
    }
}

/// Keeps one follower session running; restarts it (re-establishing the connection through the
/// executor) from the current offsets whenever it ends.
async fn follow_loop(me: Weak<Follower>, exec: Executor, target: Target) {
    let mut failures: u32 = 0;
    loop {
        let args = match me.upgrade() {
            Some(f) => f.args(),
            None => return,
        };
        let cmd = sh(format!("{START_TIME_FN}{FOLLOW}"), args);
        let mut proc = match exec.spawn(&target, &cmd).await {
            Ok(p) => p,
            Err(e) => {
                failures += 1;
                tracing::warn!(target = %target, "log follower: {e}");
                Timer::after(Duration::from_millis(250 * u64::from(failures.min(8)))).await;
                continue;
            }
        };
        failures = 0;
        let Some(mut events) = proc.take_events() else {
            continue;
        };
        let mut buf: Vec<u8> = Vec::new();
        while let Some(ev) = events.next().await {
            let Event::Stdout(line) = ev else { continue };
            buf.extend_from_slice(&line.bytes);
            if line.newline {
                buf.push(b'\n');
            }
            let Some(f) = me.upgrade() else { return };
            parse(&f, &mut buf).await;
        }
        let _ = proc.wait().await;
        if me.upgrade().is_none() {
            return;
        }
        Timer::after(Duration::from_millis(200)).await;
    }
}

const MARK: &[u8] = b"\x1eHARNESS-";

/// Consumes complete records from `buf`.
async fn parse(f: &Follower, buf: &mut Vec<u8>) {
    loop {
        let Some(start) = buf.windows(MARK.len()).position(|w| w == MARK) else {
            // Keep a possible partial mark.
            let keep = buf.len().min(MARK.len() - 1);
            buf.drain(..buf.len() - keep);
            return;
        };
        let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') else {
            buf.drain(..start);
            return;
        };
        let head = String::from_utf8_lossy(&buf[start + MARK.len()..start + nl]).into_owned();
        let body = start + nl + 1;
        let words: Vec<&str> = head.split(' ').collect();
        match words.as_slice() {
            ["D", key, s, off, len] => {
                let (Ok(off), Ok(len)) = (off.parse::<u64>(), len.parse::<usize>()) else {
                    buf.drain(..body);
                    continue;
                };
                if buf.len() < body + len {
                    buf.drain(..start);
                    return;
                }
                let data: Vec<u8> = buf[body..body + len].to_vec();
                buf.drain(..body + len);
                f.data(key, usize::from(*s == "e"), off, &data).await;
            }
            ["X", key, rc] => {
                buf.drain(..body);
                f.ended(key, exit_info(rc.parse().unwrap_or(255)));
            }
            ["G", key] => {
                buf.drain(..body);
                f.ended(
                    key,
                    ExitInfo {
                        code: None,
                        signal: None,
                    },
                );
            }
            _ => {
                buf.drain(..body);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// a remote process

/// What a new daemon needs to find a run again (`<local dir>/remote`).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
struct RunRecord {
    key: String,
    pid: u32,
    start_time: u64,
}

pub(crate) struct RemoteProcess {
    pub pid: u32,
    pub start_time: u64,
    exec: Executor,
    target: Target,
    key: String,
    follower: Arc<Follower>,
    ended: Option<ExitInfo>,
}

impl Drop for RemoteProcess {
    fn drop(&mut self) {
        self.follower.unregister(&self.key);
    }
}

fn run_dir(key: &str) -> String {
    format!("{STATE_ROOT}/{key}")
}

/// `<project>/<service>` from the local service directory (`.../projects/P/services/S`).
fn service_key(dir: &Path) -> String {
    let (project, service) = project_and_service(dir);
    format!("{project}/{service}")
}

pub(crate) async fn spawn(
    exec: &Executor,
    target: &Target,
    spec: &LaunchSpec,
    dir: &Path,
) -> Result<RemoteProcess, String> {
    let run = format!(
        "{}-{}",
        jiff::Timestamp::now().as_millisecond(),
        std::process::id()
    );
    let key = format!("{}/{run}", service_key(dir));
    let mut args = vec![
        run_dir(&key),
        format!("{START_TIME_FN}{RUNNER}"),
        spec.cwd.clone().unwrap_or_default(),
        spec.env.len().to_string(),
    ];
    args.extend(spec.env.iter().map(|(k, v)| format!("{k}={v}")));
    args.push(spec.program.clone());
    args.extend(spec.args.iter().cloned());
    let cmd =
        sh(format!("{START_TIME_FN}{HOME_DIR}{START}"), args).timeout(exec.options().start_timeout);
    let follower = Follower::get(exec, target);
    follower.register(&key, dir, [0, 0]);
    let failed = |why: String| {
        follower.unregister(&key);
        why
    };
    let out = match op(exec, target, &cmd).await {
        Ok(o) => o,
        Err(e) => return Err(failed(e.to_string())),
    };
    let text = out.stdout_text();
    let words: Vec<&str> = text.split_whitespace().collect();
    let host = target.host();
    let (pid, start_time) = match words.as_slice() {
        ["STARTED", pid, st, ..] => (pid.parse().unwrap_or(0), st.parse().unwrap_or(0)),
        ["NOCWD", ..] => {
            return Err(failed(format!(
                "on {host}: working_dir {:?} does not exist",
                spec.cwd.clone().unwrap_or_default()
            )));
        }
        ["NOPROG", ..] => {
            return Err(failed(format!(
                "on {host}: binary {:?} not found (PATH or path)",
                spec.program
            )));
        }
        ["NOSETSID", ..] => return Err(failed(format!("on {host}: setsid is not installed"))),
        _ => {
            return Err(failed(format!(
                "on {host}: starting failed (exit {:?}): {}{}",
                out.status.code(),
                text.trim(),
                out.stderr_text().trim()
            )));
        }
    };
    let record = RunRecord {
        key: key.clone(),
        pid,
        start_time,
    };
    if let Ok(json) = serde_json::to_vec(&record) {
        let _ = async_fs::write(dir.join("remote"), json).await;
    }
    Ok(RemoteProcess {
        pid,
        start_time,
        exec: exec.clone(),
        target: target.clone(),
        key,
        follower,
        ended: None,
    })
}

/// Re-attaches to the run recorded in `dir` if it is the one with `pid` and `start_time`. A run
/// that ended while no daemon watched is attached too, so its last output and exit status are
/// collected; `None` when nothing of it is left (or the host cannot say).
pub(crate) async fn attach(
    exec: &Executor,
    target: &Target,
    dir: &Path,
    pid: u32,
    start_time: u64,
) -> Option<RemoteProcess> {
    let bytes = async_fs::read(dir.join("remote")).await.ok()?;
    let rec: RunRecord = serde_json::from_slice(&bytes).ok()?;
    if rec.pid != pid || rec.start_time != start_time {
        return None;
    }
    let cmd = sh(
        format!("{START_TIME_FN}{HOME_DIR}{STATUS}"),
        [run_dir(&rec.key), pid.to_string(), start_time.to_string()],
    );
    match op(exec, target, &cmd).await {
        Ok(out) => {
            let text = out.stdout_text();
            if !(text.starts_with("RUNNING") || text.starts_with("EXITED")) {
                return None;
            }
        }
        // The host cannot say now: the run is presumed alive (never started twice); the
        // follower keeps trying and reports its end once the host answers.
        Err(e) => tracing::warn!(
            "re-attaching to {} on {} without checking it: {e}",
            rec.key,
            target.host()
        ),
    }
    let size = |name: &str| {
        let p = dir.join(name);
        async move { async_fs::metadata(p).await.map(|m| m.len()).unwrap_or(0) }
    };
    let offsets = [size("stdout").await, size("stderr").await];
    let follower = Follower::get(exec, target);
    follower.register(&rec.key, dir, offsets);
    Some(RemoteProcess {
        pid,
        start_time,
        exec: exec.clone(),
        target: target.clone(),
        key: rec.key,
        follower,
        ended: None,
    })
}

impl RemoteProcess {
    pub async fn wait(&mut self) -> ExitInfo {
        if let Some(e) = self.ended {
            return e;
        }
        let e = self.follower.wait_exit(&self.key).await;
        self.ended = Some(e);
        e
    }

    pub async fn terminate(&mut self, signal: Signal, timeout: Duration) -> (ExitInfo, bool) {
        let tenths = (timeout.as_millis() / 100) as u64;
        let cmd = sh(
            format!("{START_TIME_FN}{HOME_DIR}{STOP}"),
            [
                run_dir(&self.key),
                signal.name().to_owned(),
                tenths.to_string(),
            ],
        )
        .timeout(self.exec.options().op_timeout + timeout);
        let killed = match op(&self.exec, &self.target, &cmd).await {
            Ok(out) => out.stdout_text().trim() == "KILLED",
            Err(e) => {
                tracing::warn!(run = %self.key, "stop on {}: {e}", self.target.host());
                false
            }
        };
        // The follower delivers the last output, then the exit.
        let info = super::exit_after_stop(self.wait()).await;
        self.ended = Some(info);
        self.clean().await;
        (info, killed)
    }

    /// Removes the run from the host (and anything left in its process group).
    pub async fn clean(&self) {
        let cmd = sh(
            format!("{HOME_DIR}{CLEAN}"),
            [run_dir(&self.key), self.pid.to_string()],
        )
        .timeout(self.exec.options().op_timeout);
        if let Err(e) = op(&self.exec, &self.target, &cmd).await {
            tracing::warn!(run = %self.key, "cleaning up on {}: {e}", self.target.host());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_and_signals() {
        assert_eq!(exit_info(0).code, Some(0));
        assert_eq!(exit_info(143).signal, Some(15));
        assert_eq!(exit_info(2).code, Some(2));
    }

    #[test]
    fn jump_spelling() {
        let j = parse_jump("u@bastion:2222").unwrap();
        assert_eq!(
            (j.user.as_deref(), j.address.as_str(), j.port),
            (Some("u"), "bastion", 2222)
        );
        assert!(parse_jump("x:y").is_err());
    }

    #[test]
    fn parses_records_across_chunks() {
        smol::block_on(async {
            let tmp = tempfile::tempdir().unwrap();
            let f = Follower {
                runs: Mutex::new(HashMap::new()),
                changed: Notify::new(),
                task: Mutex::new(None),
            };
            f.register("p/s/1", tmp.path(), [0, 0]);
            let mut buf = b"\x1eHARNESS-D p/s/1 o 0 6\nab\ncd".to_vec();
            parse(&f, &mut buf).await;
            buf.extend_from_slice(b"\n\x1eHARNESS-D p/s/1 o 3 3\ncd\n\x1eHARNESS-X p/s/1 0\n");
            parse(&f, &mut buf).await;
            assert_eq!(
                std::fs::read(tmp.path().join("stdout")).unwrap(),
                b"ab\ncd\n"
            );
            assert_eq!(f.exit_of("p/s/1").unwrap().code, Some(0));
        });
    }
}
