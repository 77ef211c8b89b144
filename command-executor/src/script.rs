//! The POSIX sh programs run at the end of a layer chain. Targets need only sh (dash, busybox ash, bash),
//! `setsid`, `kill`, `wc`, `tail`, `head` and `/proc`: no agent.
//!
//! Markers are lines starting with the byte 0x1e (record separator) so they cannot be mistaken for output
//! a program would plausibly print.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;

use crate::command::{Command, StdinMode};
use crate::quote;

/// Start of a marker line.
pub(crate) const MARK: &[u8] = b"\x1eHARNESS-";

/// Shared helper: `st PID` sets `S` to the process's start time (field 22 of /proc/PID/stat), empty if gone,
/// and `G` to its process group. Cut at the last `) ` first: the command name may contain spaces and `)`.
pub(crate) const START_TIME_FN: &str = r#"st() { S=; G=; if read -r l 2>/dev/null < "/proc/$1/stat"; then l=${l##*) }; set -f; set -- $l; G=$3; shift 19 && S=$1; set +f; fi; }
"#;

/// Wraps a one-off command: reads the environment from stdin when there is one (never from its arguments,
/// which every user of the host sees in `ps`), sets it and the cwd innermost, checks the program, announces
/// its pid and start time on stderr, then execs it (so the pid is the program's). Unless it already leads
/// its process group (sudo keeps its child in its own group), it execs through `setsid`, which does not fork
/// for a non-leader: the pid stays, and a signal to the group reaches everything the program started.
/// Args: CWD ENV PROGRAM ARGS... where ENV is `0` (no environment), `p` (a preamble, then the caller's stdin),
/// `n` (a preamble, then /dev/null) or `t` (stdin is a terminal: echo off and raw mode, an ENV marker to say
/// so, the preamble, the terminal restored, then the caller's input). The preamble is [`env_preamble`]: a line
/// count, then that many lines of sh. `read` takes a pipe or terminal byte by byte, so what follows the
/// preamble stays for the program. The caller sends the preamble in `t` mode only after the ENV marker:
/// what a terminal receives with echo on is echoed at once. The start time and group are taken before the
/// environment is set, so a service variable named `S` or `G` reaches the program.
/// On a terminal the wrapper first waits until the terminal has a size (at most 2 s): `docker exec -t` sets
/// it only after the program has started, and a program reading it at once saw 0x0.
const EXEC: &str = r#"_c=$1; _e=$2; shift 2
# A terminal whose size is not set yet (docker exec sizes its terminal only after the program has
# started): wait for it, at most 2 s, so that the program never sees a 0x0 terminal.
if [ -t 0 ] && command -v stty >/dev/null 2>&1; then
  _w=0; while [ $_w -lt 40 ]; do case $(stty size 2>/dev/null) in ''|'0 0') ;; *) break;; esac
    sleep 0.05 2>/dev/null || break; _w=$((_w+1)); done
fi
st $$; _s=$S; _g=$G
if [ "$_e" != 0 ]; then
  if [ "$_e" = t ]; then
    command -v stty >/dev/null 2>&1 || { printf '\036HARNESS-NOSTTY\n' >&2; exit 125; }
    _t=$(stty -g) && stty raw -echo || exit 125
    printf '\036HARNESS-ENV\n' >&2
  fi
  IFS= read -r _n || exit 125
  _v=; while [ "$_n" -gt 0 ]; do IFS= read -r _l || exit 125; _v="$_v$_l
"; _n=$((_n-1)); done
  case $_e in n) exec </dev/null;; t) stty "$_t" || exit 125;; esac
  eval "$_v" || exit 125
fi
if [ -n "$_c" ]; then cd "$_c" 2>/dev/null || { printf '\036HARNESS-NOCWD\n' >&2; exit 126; }; fi
command -v "$1" >/dev/null 2>&1 || { printf '\036HARNESS-NOPROG\n' >&2; exit 127; }
if [ -n "$_g" ] && [ "$_g" != $$ ] && command -v setsid >/dev/null 2>&1; then set -- setsid "$@"; fi
printf '\036HARNESS-PID %s %s\n' $$ "$_s" >&2
exec "$@"
"#;

/// The argv that runs `cmd` through the exec wrapper. Environment values are not in it: they go to the
/// wrapper's stdin as [`env_preamble`].
pub(crate) fn exec_argv(cmd: &Command) -> Vec<OsString> {
    let env = match (cmd.env.is_empty(), cmd.stdin) {
        (true, _) => "0",
        (false, _) if cmd.pty.is_some() => "t",
        (false, StdinMode::Piped) => "p",
        (false, StdinMode::Null) => "n",
    };
    let mut v: Vec<OsString> = vec![
        "sh".into(),
        "-c".into(),
        format!("{START_TIME_FN}{EXEC}").into(),
        "sh".into(),
        cmd.cwd.clone().unwrap_or_default(),
        env.into(),
        cmd.program.clone(),
    ];
    v.extend(cmd.args.iter().cloned());
    v
}

/// What the exec wrapper reads from stdin before the program starts: the number of lines that follow, then
/// one `export K=VALUE` per variable, each value quoted for sh (so newlines and any other byte but NUL come
/// through exactly). `None` when the command sets no environment.
pub(crate) fn env_preamble(cmd: &Command) -> Option<Vec<u8>> {
    if cmd.env.is_empty() {
        return None;
    }
    let mut body = Vec::new();
    for (k, val) in &cmd.env {
        body.extend_from_slice(b"export ");
        body.extend_from_slice(k.as_bytes());
        body.push(b'=');
        body.extend_from_slice(&quote::quote(val));
        body.push(b'\n');
    }
    let lines = body.iter().filter(|&&b| b == b'\n').count();
    let mut out = format!("{lines}\n").into_bytes();
    out.extend_from_slice(&body);
    Some(out)
}

fn push_env_and_argv(v: &mut Vec<OsString>, cmd: &Command) {
    v.push(cmd.env.len().to_string().into());
    for (k, val) in &cmd.env {
        let mut kv = k.clone();
        kv.push("=");
        kv.push(val);
        v.push(kv);
    }
    v.push(cmd.program.clone());
    v.extend(cmd.args.iter().cloned());
}

/// Expands a leading `~/` of the state dir on the target, where `$HOME` is the target user's.
pub(crate) const STATE_DIR: &str = r#"d=$1; case $d in "~/"*) d=$HOME/${d#"~/"};; "~") d=$HOME;; esac
"#;

/// Runs detached as its own session, with the environment already exported by START (so values, secrets
/// included, never sit in a long-lived process's argv): applies the cwd, starts the program in a new session (so its
/// process group is its own, apart from this runner), records `PID STARTTIME` in `pid`, waits, and records
/// `$?` in `exit`. Args: DIR CWD PROGRAM ARGS...
pub(crate) const RUNNER: &str = r#"d=$1; c=$2; shift 2
if [ -n "$c" ]; then cd "$c" || { echo "$$ 0" > "$d/pid"; echo 126 > "$d/exit"; exit 126; }; fi
setsid "$@" </dev/null >>"$d/stdout" 2>>"$d/stderr" &
p=$!
st "$p"
echo "$p $S" > "$d/pid.tmp" && mv -f "$d/pid.tmp" "$d/pid"
wait "$p"; rc=$?
echo "$rc" > "$d/exit.tmp" && mv -f "$d/exit.tmp" "$d/exit"
"#;

/// Starts a managed process: refuses if the pidfile names a live process, checks cwd, program and setsid,
/// truncates the logs, launches the runner detached and prints `STARTED PID STARTTIME` once the pidfile is
/// there. Args: DIR RUNNER CWD N K=V... PROGRAM ARGS...
const START: &str = r#"r=$2; shift 2
mkdir -p "$d" || exit 1
if [ -s "$d/pid" ]; then read -r p s < "$d/pid"; st "$p"; if [ -n "$S" ] && [ "$S" = "$s" ] && [ ! -f "$d/exit" ]; then echo "RUNNING $p $s"; exit 0; fi; fi
command -v setsid >/dev/null 2>&1 || { echo NOSETSID; exit 0; }
( c=$1; n=$2; shift 2; shift "$n"; if [ -n "$c" ]; then cd "$c" 2>/dev/null || { echo NOCWD; exit 1; }; fi; command -v "$1" >/dev/null 2>&1 || { echo NOPROG; exit 1; } ) || exit 0
rm -f "$d/pid" "$d/exit" "$d/pid.tmp" "$d/exit.tmp"
: > "$d/stdout" && : > "$d/stderr" || exit 1
( c=$1; n=$2; shift 2; while [ "$n" -gt 0 ]; do export "$1"; shift; n=$((n-1)); done; exec setsid sh -c "$r" sh "$d" "$c" "$@" ) </dev/null >/dev/null 2>&1 &
i=0
while [ ! -s "$d/pid" ]; do i=$((i+1)); if [ "$i" -gt 400 ]; then echo "runner did not write $d/pid" >&2; exit 1; fi; sleep 0.05; done
read -r p s < "$d/pid"
echo "STARTED $p $s $d"
"#;

/// The argv that starts `cmd` as a managed process with state in `dir`.
pub(crate) fn start_argv(dir: &str, cmd: &Command) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec![
        "sh".into(),
        "-c".into(),
        format!("{START_TIME_FN}{STATE_DIR}{START}").into(),
        "sh".into(),
        dir.into(),
        format!("{START_TIME_FN}{RUNNER}").into(),
    ];
    v.push(cmd.cwd.clone().unwrap_or_default());
    push_env_and_argv(&mut v, cmd);
    v
}

/// Prints the state of a managed process: `RUNNING PID ST DIR`, `EXITED RC PID ST DIR`, `STALE PID ST DIR` or
/// `NONE DIR`. A process that just died gets a moment for its runner to record the status. Args: DIR
const STATUS: &str = r#"i=0
while :; do
  if [ ! -s "$d/pid" ]; then echo "NONE $d"; exit 0; fi
  read -r p s < "$d/pid"; st "$p"
  if [ -n "$S" ] && [ "$S" = "$s" ] && [ ! -f "$d/exit" ]; then echo "RUNNING $p $s $d"; exit 0; fi
  if [ -f "$d/exit" ]; then read -r rc < "$d/exit"; echo "EXITED $rc $p $s $d"; exit 0; fi
  i=$((i+1)); if [ "$i" -gt 10 ]; then echo "STALE $p $s $d"; exit 0; fi
  sleep 0.1
done
"#;

pub(crate) fn status_argv(dir: &str) -> Vec<OsString> {
    vec![
        "sh".into(),
        "-c".into(),
        format!("{START_TIME_FN}{STATE_DIR}{STATUS}").into(),
        "sh".into(),
        dir.into(),
    ]
}

/// Signals the process group of a managed process if the pidfile still names the process that was
/// started (same start time), then, for a stop, waits up to T tenths of a second for the whole group to be
/// gone and KILLs what is left. Prints `GONE`, `SENT`, `STOPPED` or `KILLED`. Args: DIR SIG T(-1: no wait)
const SIGNAL: &str = r#"g=$2; t=$3
[ -s "$d/pid" ] || { echo GONE; exit 0; }
read -r p s < "$d/pid"; st "$p"
if [ -z "$S" ] || [ "$S" != "$s" ]; then
  if [ "$t" -ge 0 ] && kill -0 "-$p" 2>/dev/null && [ -f "$d/exit" ]; then kill -KILL "-$p" 2>/dev/null; echo KILLED; exit 0; fi
  echo GONE; exit 0
fi
kill "-$g" "-$p" 2>/dev/null || kill "-$g" "$p" || exit 1
[ "$t" -ge 0 ] || { echo SENT; exit 0; }
i=0
while kill -0 "-$p" 2>/dev/null; do
  if [ "$i" -ge "$t" ]; then kill -KILL "-$p" 2>/dev/null; echo KILLED; exit 0; fi
  sleep 0.1; i=$((i+1))
done
echo STOPPED
"#;

pub(crate) fn signal_argv(dir: &str, signal: &str, wait_tenths: i64) -> Vec<OsString> {
    vec![
        "sh".into(),
        "-c".into(),
        format!("{START_TIME_FN}{STATE_DIR}{SIGNAL}").into(),
        "sh".into(),
        dir.into(),
        signal.into(),
        wait_tenths.to_string().into(),
    ]
}

/// Follows a managed process's logs by byte offset (stdout log to stdout, stderr log to stderr), polling;
/// once the exit file exists it sends what is left and exits with the recorded status, so every line
/// arrives before the exit. If the process is gone without a recorded status, prints a VANISHED marker.
/// Args: DIR FROM(start|end) PID ST
const FOLLOW: &str = r#"f=$2; p=$3; s=$4
sz() { if [ -f "$1" ]; then Z=$(( $(wc -c < "$1") )); else Z=0; fi; }
o1=0; o2=0
if [ "$f" = end ]; then sz "$d/stdout"; o1=$Z; sz "$d/stderr"; o2=$Z; fi
gone=0
while :; do
  fin=0; [ -f "$d/exit" ] && fin=1
  sz "$d/stdout"; if [ "$Z" -gt "$o1" ]; then tail -c +$((o1+1)) "$d/stdout" | head -c $((Z-o1)); o1=$Z; fi
  sz "$d/stderr"; if [ "$Z" -gt "$o2" ]; then tail -c +$((o2+1)) "$d/stderr" | head -c $((Z-o2)) >&2; o2=$Z; fi
  if [ "$fin" = 1 ]; then read -r rc < "$d/exit"; exit "$rc"; fi
  st "$p"
  if [ "$S" != "$s" ]; then gone=$((gone+1)); if [ "$gone" -gt 10 ]; then printf '\036HARNESS-VANISHED\n' >&2; exit 0; fi; fi
  sleep 0.2
done
"#;

pub(crate) fn follow_argv(
    dir: &str,
    from_start: bool,
    pid: u32,
    start_time: &str,
) -> Vec<OsString> {
    vec![
        "sh".into(),
        "-c".into(),
        format!("{START_TIME_FN}{STATE_DIR}{FOLLOW}").into(),
        "sh".into(),
        dir.into(),
        if from_start { "start" } else { "end" }.into(),
        pid.to_string().into(),
        start_time.into(),
    ]
}

/// Signals a one-off command's process group at the end of a chain, or the process alone when it leads no
/// group; checks the start time first so a reused pid is never hit. Args: SIG PID ST
const SIGNAL_PID: &str = r#"g=$1; p=$2; s=$3
st "$p"
if [ -n "$s" ] && [ "$S" != "$s" ]; then exit 0; fi
kill "-$g" "-$p" 2>/dev/null || kill "-$g" "$p" 2>/dev/null || true
"#;

pub(crate) fn signal_pid_argv(signal: &str, pid: u32, start_time: &str) -> Vec<OsString> {
    vec![
        "sh".into(),
        "-c".into(),
        format!("{START_TIME_FN}{SIGNAL_PID}").into(),
        "sh".into(),
        signal.into(),
        pid.to_string().into(),
        start_time.into(),
    ]
}
