//! Services on SSH hosts (optionally as another user through sudo): detached processes in the
//! managed-process layout (`pid` = `PID STARTTIME`, `stdout`, `stderr`, `exit` in a state
//! directory on the host), started by the one runner of [`crate::ManagedSpec`].
//!
//! Each launch has its own state directory, named by its launch id
//! (`~/.local/state/harness/<launch id>`, the id being `<daemon>/<project>/<service>/<run>`), so
//! a daemon killed at any instant of a start finds the run again from the id it recorded before
//! starting, and a restart never truncates a file the follower is reading. The environment
//! reaches the runner through stdin, as an exported sh script: no value is ever in an argv.
//!
//! Why not one follower session per service: ten services on a host would hold all ten sessions
//! sshd allows on one connection (MaxSessions) and every health check or stop would queue behind
//! them. One [`Follower`] per host and user follows *every* service there in a single session, by
//! byte offset. The offsets are the sizes of the local raw files (emptied at each launch), so
//! after the connection drops — or the daemon restarts — the follower resumes exactly where the
//! local files end: no line lost, none twice. One-off operations are limited per host by [`op`],
//! so followers and operations stay within the session limit (ADR 0004).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_io::Timer;
use event_listener::Event as Notify;
use futures_lite::AsyncWriteExt;

use super::{ExitInfo, LAUNCH_ID_VAR, ServiceCommand};
use crate::command::{Command, StdinMode};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::executor::Executor;
use crate::layer::{Layer, Target};
use crate::process::Output;
use crate::script::{START_TIME_FN, STATE_DIR};
use crate::signal::Signal;

/// Where runs keep their state on a host (in the home of the user the service runs as).
const STATE_ROOT: &str = "~/.local/state/harness";

// ---------------------------------------------------------------------------------------------
// remote sh programs (with `st` and `d` from crate::script, and its RUNNER)

/// Starts many runs on one host (and user) in one operation. For the I-th run (from 1): reads its
/// environment from stdin (a line count, then that many lines: an exported sh script), SIGKILLs
/// the process group of any other live run of the service (one a daemon could not adopt, e.g. the
/// host was unreachable when it restarted: a service never runs twice); then one `mkdir` makes
/// every run's directory; then, per run, checks cwd, program and setsid, and starts its runner
/// ([`RUN_ONE`]) detached with that environment exported — so no value is ever in an argv. A run
/// that cannot start is answered here: `R I NOCWD`, `R I NOPROG`, `R I NOSETSID` or `R I FAIL
/// why`; a started one by its runner, on this operation's stdout, once its pidfile is written:
/// `R I STARTED PID STARTTIME DIR` (or `R I FAIL why`). The operation's session ends when every
/// runner has answered and let go of its stdout: no polling, and a runner that dies before its
/// answer leaves its run unanswered (so not known: adopted or stopped later, ADR 0032). Args:
/// RUNNER, then per run: M DIR CWD PROGRAM ARGS... (M words from DIR on).
const START_MANY: &str = r#"r=$1; shift; i=0; h0=$PWD; md=
command -v setsid >/dev/null 2>&1 && ss=1 || ss=
while [ $# -gt 0 ]; do
  i=$((i+1)); m=$1; shift
  IFS= read -r c || c=0; e=; while [ "$c" -gt 0 ]; do IFS= read -r l; e="$e$l
"; c=$((c-1)); done
  d=$1; case $d in "~/"*) d=$HOME/${d#"~/"};; esac
  for o in "${d%/*}"/*/; do o=${o%/}; [ "$o" != "$d" ] && [ -s "$o/pid" ] || continue; read -r p s < "$o/pid"; st "$p"; if [ -n "$S" ] && [ "$S" = "$s" ]; then kill -KILL "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null; fi; done
  a=; n=1; while [ "$n" -le "$m" ]; do eval "v_${i}_$n=\${$n}"; a="$a \"\$v_${i}_$n\""; n=$((n+1)); done
  eval "e_$i=\$e d_$i=\$d a_$i=\$a"; md="$md \"\$d_$i\""
  shift "$m"
done
[ -z "$md" ] || eval "mkdir -p $md" 2>/dev/null
one() {
  j=$1; d=$2; shift 3
  [ -d "$d" ] || { echo "R $j FAIL cannot create $d"; return; }
  [ -n "$ss" ] || { echo "R $j NOSETSID"; rm -rf "$d"; return; }
  x=OK; if [ -n "$1" ]; then cd "$1" 2>/dev/null || x=NOCWD; fi
  if [ "$x" = OK ]; then command -v "$2" >/dev/null 2>&1 || x=NOPROG; fi
  cd "$h0" 2>/dev/null || cd /
  [ "$x" = OK ] || { echo "R $j $x"; rm -rf "$d"; return; }
  : > "$d/stdout" && : > "$d/stderr" || { echo "R $j FAIL cannot write in $d"; return; }
  eval "e=\$e_$j"
  # Positional parameters only once the environment is set: a variable of the service's own may
  # have any name.
  ( set -- "$r" sh "$j" "$d" "$@"; eval "$e" || { echo "R $3 FAIL the environment did not apply"; exit 125; }
    [ "${HARNESS_ENV_END-}" = 1 ] || { echo "R $3 FAIL the environment came incomplete"; exit 125; }
    unset HARNESS_ENV_END; exec setsid sh -c "$@" ) </dev/null 2>/dev/null &
}
k=1; while [ "$k" -le "$i" ]; do eval "a=\$a_$k"; eval "one $k \"\$d_$k\" $a"; k=$((k+1)); done
"#;

/// The runner of one remote run, started detached by [`START_MANY`] in a session of its own: the
/// [`crate::script::RUNNER`] of a managed process, and it answers for its run on its stdout (the start
/// operation's) once the pidfile is written, then lets go of it. SIGPIPE is ignored, so a start
/// whose connection is gone does not kill the runner of a service that began (its answer is then
/// lost: ADR 0032); the service itself gets the default. No variable is set before the service
/// is forked: the environment exported is the service's, whatever its names. Args: I DIR CWD
/// PROGRAM ARGS...
const RUN_ONE: &str = r#"trap '' PIPE
if [ -n "$3" ]; then cd "$3" 2>/dev/null || { rm -rf "$2"; echo "R $1 NOCWD"; exit 126; }; fi
{ trap - PIPE; shift 3; exec setsid "$@"; } </dev/null >>"$2/stdout" 2>>"$2/stderr" &
p=$! i=$1 d=$2
st "$p"
echo "$p $S" > "$d/pid" || { kill -KILL "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null; echo "R $i FAIL cannot write $d/pid"; exit 1; }
echo "R $i STARTED $p $S $d"
exec >/dev/null
wait "$p"; rc=$?
echo "$rc" > "$d/exit.tmp" && mv -f "$d/exit.tmp" "$d/exit"
"#;

/// After a daemon restart: SIGKILLs the process group of every run of the service but DIR (runs
/// a killed daemon did not live to record) and removes their directories; then, if KEEP is 1,
/// prints the state of DIR's run: `RUNNING PID ST`, `EXITED RC PID ST` or `NONE` (with KEEP 0,
/// DIR's run goes too). A directory without a pidfile may belong to a runner still starting (its
/// start's answer was lost): it is moved aside before it is looked at again, so the runner either
/// wrote its pidfile before (the run is seen) or fails to write it and kills its service itself
/// ([`RUN_ONE`]); removing it in place could leave a service nobody records. Args: DIR KEEP
const ADOPT: &str = r#"k=$2; sd=${d%/*}
for r in "$sd"/*/; do
  r=${r%/}; [ -d "$r" ] || continue
  [ "$k" = 1 ] && [ "$r" = "$d" ] && continue
  mv "$r" "$r.gone" 2>/dev/null || continue; r=$r.gone
  if [ -s "$r/pid" ]; then read -r p s < "$r/pid"; st "$p"; if [ -n "$S" ] && [ "$S" = "$s" ]; then kill -KILL "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null; fi; fi
  rm -rf "$r"
done
[ "$k" = 1 ] || { rmdir "$sd" "${sd%/*}" 2>/dev/null; echo NONE; exit 0; }
if [ ! -s "$d/pid" ]; then
  mv "$d" "$d.gone" 2>/dev/null || { echo NONE; exit 0; }
  if [ -s "$d.gone/pid" ] && mv "$d.gone" "$d"; then :; else
    if [ -s "$d.gone/pid" ]; then read -r p s < "$d.gone/pid"; st "$p"; if [ -n "$S" ] && [ "$S" = "$s" ]; then kill -KILL "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null; fi; fi
    rm -rf "$d.gone"; echo NONE; exit 0
  fi
fi
read -r p s < "$d/pid"
i=0
while :; do
  if [ -f "$d/exit" ]; then read -r rc < "$d/exit"; echo "EXITED $rc $p $s"; exit 0; fi
  st "$p"; if [ -n "$S" ] && [ "$S" = "$s" ]; then echo "RUNNING $p $s"; exit 0; fi
  i=$((i+1)); [ "$i" -gt 10 ] && { rm -rf "$d"; echo NONE; exit 0; }
  sleep 0.1
done
"#;

/// Stops many runs of one host (and user) at once, one operation for all: sends each run's SIG
/// to its process group (if its pidfile still names the process started), waits until each group
/// is gone or its own T tenths have passed (then SIGKILLs it), and prints `R I WORD` for the I-th
/// run (from 1), WORD being `STOPPED`, `KILLED` (after SIGKILL), `GONE RC` (it had ended
/// already: RC from its `exit` file, `-` when none was written) or `NORUN` (its directory holds
/// no pidfile: already cleaned, no exit will be reported for it). A group is looked at every
/// 0.02 s, then 0.05 s: gone once `kill -0` finds no member. Zombies still answer `kill -0`
/// (orphans wait for init to reap them, ~1 s here), so from ~1 s on, while a group still
/// answers, only its live members count, found in one pass over /proc per round. Not before: that
/// pass reads every process of the host in sh (~0.2 ms each; 3 s of CPU over 20 hosts sharing
/// one /proc), and a group that was just signalled is gone within a few rounds, its leader
/// reaped by its runner (at 50 hosts on 2 cores, load 19, not always within 0.2 s). Args: DIR
/// SIG T per run.
const STOP_MANY: &str = r#"n=0
while [ $# -ge 3 ]; do
  n=$((n+1)); d=$1; case $d in "~/"*) d=$HOME/${d#"~/"};; esac
  w=NORUN; p=0
  if [ -s "$d/pid" ]; then
    read -r p s < "$d/pid"; st "$p"
    if [ -z "$S" ] || [ "$S" != "$s" ]; then kill -KILL "-$p" 2>/dev/null; rc=-; [ -f "$d/exit" ] && read -r rc < "$d/exit"; w="GONE $rc"
    else kill "-$2" "-$p" 2>/dev/null || kill "-$2" "$p" 2>/dev/null; w=WAIT; fi
  fi
  eval "w_$n=\$w p_$n=\$p t_$n=\$3"; shift 3
done
i=0
while :; do
  busy=0; live=
  j=1; while [ "$j" -le "$n" ]; do
    eval "w=\$w_$j p=\$p_$j"
    if [ "$w" = WAIT ]; then
      if kill -0 "-$p" 2>/dev/null; then busy=1; else eval "w_$j=STOPPED"; fi
    fi
    j=$((j+1))
  done
  [ "$busy" = 1 ] || break
  if [ "$i" -ge 20 ]; then
    for f in /proc/[0-9]*/stat; do read -r l < "$f" 2>/dev/null || continue; l=${l##*) }; set -f; set -- $l; set +f; [ "$1" != Z ] && live="$live $3 "; done
  fi
  busy=0
  j=1; while [ "$j" -le "$n" ]; do
    eval "w=\$w_$j p=\$p_$j t=\$t_$j"
    if [ "$w" = WAIT ]; then
      case $i:$live in
        [0-9]:*|1[0-9]:*|*" $p "*) if [ "$i" -ge $((t*2)) ]; then kill -KILL "-$p" 2>/dev/null; eval "w_$j=KILLED"; else busy=1; fi;;
        *) eval "w_$j=STOPPED";;
      esac
    fi
    j=$((j+1))
  done
  [ "$busy" = 1 ] || break
  if [ "$i" = 0 ]; then sleep 0.02; else sleep 0.05; fi; i=$((i+1))
done
j=1; while [ "$j" -le "$n" ]; do eval "echo R $j \$w_$j"; j=$((j+1)); done
"#;

/// After runs ended: for each, SIGKILL whatever is left in its process group, remove its
/// directory and the service's and project's directories once empty; prints `R I DONE` for the
/// I-th run (from 1). Args: DIR PID per run.
const CLEAN_MANY: &str = r#"n=0
while [ $# -ge 2 ]; do
  n=$((n+1)); d=$1; case $d in "~/"*) d=$HOME/${d#"~/"};; esac
  [ "$2" -gt 1 ] 2>/dev/null && kill -KILL "-$2" 2>/dev/null
  rm -rf "$d"; rmdir "${d%/*}" "${d%/*/*}" "${d%/*/*/*}" 2>/dev/null
  echo "R $n DONE"; shift 2
done
exit 0
"#;

/// Follows every run under ROOT (`ROOT/<daemon>/<project>/<service>/<run>/`) in one session, by byte
/// offset: `\036HARNESS-D KEY o|e OFFSET LEN` then LEN bytes of output; `\036HARNESS-X KEY RC`
/// once a run's exit is recorded (after its last output); `\036HARNESS-G KEY` when its process
/// vanished without a recorded status; `\036HARNESS-H` at the end of each round. The next round
/// begins when a line arrives on stdin: the daemon sends one [`ROUND`] after the previous one,
/// once the heartbeat came (so rounds never pile up on a slow host), or at once when it waits for
/// an exit ([`Follower::hurry`]). A follower whose session is gone reads end of file (or dies of
/// SIGPIPE). Args: ROOT then KEY OUT_OFFSET ERR_OFFSET per known run.
///
/// A round must cost little: it runs every 0.2 s on every host, for every run there. The tree is
/// globbed once per round (dash opens every directory of a glob). Each run's pidfile is read
/// once; a run counts as alive while `/proc/PID` exists (one `stat`), and its start time — `st`,
/// which dash's `read` takes from /proc a byte per syscall, ~300 of them — is compared only about
/// every 10 s (pid reuse) and every round once it looked gone. Each run's number is looked up by
/// key only when the set of runs changed: dash's `${x#*pattern}` costs the square of the string's
/// length, ~2 ms per round for 10 runs with their long keys. Before: `st` for every run every
/// round, a loop over every run to find each key, four globs, and a `sleep` forked after each
/// round: ~3.3 ms of CPU per round for 10 runs, 500 quiet services on 50 hosts took a whole core;
/// now ~0.75 ms. bench/results-remote-2026-12-06.md.
const FOLLOW: &str = r#"d=$1; shift; t=0; prs=; il=
case $d in "~/"*) d=$HOME/${d#"~/"};; esac
n=0; ix=" "
add() { n=$((n+1)); ix="$ix$1=$n "; eval "a_$n=\$2 b_$n=\$3 x_$n=0 g_$n=0 p_$n="; }
while [ $# -ge 3 ]; do add "$1" "$2" "$3"; shift 3; done
zs() { q=${w%%" $1
"*}; if [ "$q" = "$w" ]; then Z=0; else Z=${q##*[!0-9]}; Z=$((Z+0)); fi; }
send() { printf '\036HARNESS-D %s %s %s %s\n' "$k" "$2" "$3" $(($4-$3)); tail -c +$(($3+1)) "$1" | head -c $(($4-$3)); }
while :; do
  # One pass over the runs: which have ended, noted before the sizes are taken (their sizes are
  # then final), and whether any has output. One `wc` for every size, and none while every
  # output file is empty (forks are most of what a follower of quiet services costs).
  t=$((t+1)); rs=; e=; w=
  for r in "$d"/*/*/*/*/; do
    rs="$rs$r
"
    [ -f "${r}exit" ] && e="$e$r "
    [ -z "$w" ] && { [ -s "${r}stdout" ] || [ -s "${r}stderr" ]; } && w=1
  done
  [ -z "$w" ] || w="$(wc -c "$d"/*/*/*/*/stdout "$d"/*/*/*/*/stderr 2>/dev/null)
"
  # Each run's number: looked up by key only when the runs changed (dash's ${x#*pat} costs the
  # square of the string's length), else the list of the last round.
  [ "$rs" = "$prs" ] || { prs=$rs; il=; }
  set -f; IFS='
'; set -- $rs; unset IFS; set +f
  [ -n "$il" ] || for r do
    k=${r%/}; k=${k#"$d"/}
    case $ix in
      *" $k="*) i=${ix#*" $k="}; il="$il${i%% *} ";;
      *) if [ -s "${r}pid" ]; then add "$k" 0 0; il="$il$n "; else il="${il}0 "; prs=; fi;;
    esac
  done
  l=$il
  for r do
    i=${l%% *}; l=${l#* }
    [ "$i" = 0 ] && continue
    k=${r%/}; k=${k#"$d"/}
    eval "x=\$x_$i p=\$p_$i s=\$s_$i g=\$g_$i"
    [ "$x" = 1 ] && continue
    if [ -z "$p" ]; then [ -s "${r}pid" ] || continue; read -r p s < "${r}pid"; eval "p_$i=\$p s_$i=\$s"; fi
    # Ended before this round's sizes were taken: they include its last output.
    fin=0; case $e in *"$r "*) fin=1;; esac
    if [ -n "$w" ]; then
      eval "a=\$a_$i b=\$b_$i"
      zs "${r}stdout"
      if [ "$Z" -gt "$a" ]; then send "${r}stdout" o "$a" "$Z"; a=$Z; fi
      zs "${r}stderr"
      if [ "$Z" -gt "$b" ]; then send "${r}stderr" e "$b" "$Z"; b=$Z; fi
      eval "a_$i=\$a b_$i=\$b"
    fi
    if [ "$fin" = 1 ]; then
      read -r rc < "${r}exit"; printf '\036HARNESS-X %s %s\n' "$k" "$rc"; eval "x_$i=1"
    else
      # Alive while /proc has its pid; its start time is compared (pid reuse) about every 10 s,
      # and every round once it looked gone.
      if [ "$g" = 0 ] && [ $(((t+i)%50)) != 0 ]; then
        [ -d "/proc/$p" ] && continue
      else
        st "$p"; [ "$S" = "$s" ] && continue
      fi
      g=$((g+1)); eval "g_$i=\$g"
      if [ "$g" -gt 10 ]; then printf '\036HARNESS-G %s\n' "$k"; eval "x_$i=1"; fi
    fi
  done
  # The round is done: a heartbeat, then the next round when the daemon says (a line on stdin;
  # no `sleep` to fork). Once the session is gone the read ends (or the write fails: SIGPIPE),
  # and so does this follower.
  printf '\036HARNESS-H\n'
  IFS= read -r tick || exit 0
done
"#;

/// One-off operations (start, status, stop, clean, command health checks) at once per ssh
/// host. With the log followers they stay within sshd's 10 sessions per connection, so a burst
/// of starts or checks never makes the executor open a second connection to the host.
const OPS_PER_HOST: usize = 6;

pub async fn op(exec: &Executor, target: &Target, cmd: &Command) -> Result<Output> {
    op_input(exec, target, cmd, None).await
}

/// Runs `cmd` on `target` like [`op`], with `env` added to its environment through stdin (an
/// exported sh script read by a small sh wrapper that then execs `cmd`): no value is ever in an
/// argv, here or at any layer of the chain.
pub async fn op_with_env(
    exec: &Executor,
    target: &Target,
    cmd: &Command,
    env: &[(String, String)],
) -> Result<Output> {
    if env.is_empty() {
        return op(exec, target, cmd).await;
    }
    for (k, _) in env {
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(Error::invalid("environment variable name", k.clone()));
        }
    }
    let mut wrapped = Command::new("sh")
        .arg("-c")
        .arg(ENV_FROM_STDIN)
        .arg("sh")
        .arg(&cmd.program)
        .args(cmd.args.iter().cloned());
    wrapped.env = cmd.env.clone();
    wrapped.cwd = cmd.cwd.clone();
    wrapped.timeout = cmd.timeout;
    wrapped.control = cmd.control;
    op_input(exec, target, &wrapped, Some(&super::local::env_script(env))).await
}

/// Reads the environment (an exported sh script) from stdin, then execs its arguments with
/// stdin from /dev/null.
const ENV_FROM_STDIN: &str = r#"eval "$(cat)" || exit 125
[ "${HARNESS_ENV_END-}" = 1 ] || exit 125
unset HARNESS_ENV_END
exec "$@" </dev/null
"#;

/// [`op`] with `input` written to the command's stdin (then closed).
async fn op_input(
    exec: &Executor,
    target: &Target,
    cmd: &Command,
    input: Option<&[u8]>,
) -> Result<Output> {
    op_run(exec, target, cmd, input).await.map_err(|(e, _)| e)
}

/// [`op_input`]; an error says too whether the command had begun on the host (its wrapper
/// announced it) before the error: then what it did there is not known.
async fn op_run(
    exec: &Executor,
    target: &Target,
    cmd: &Command,
    input: Option<&[u8]>,
) -> std::result::Result<Output, (Error, bool)> {
    static SLOTS: std::sync::OnceLock<Mutex<HashMap<String, Arc<async_lock::Semaphore>>>> =
        std::sync::OnceLock::new();
    let slot = if matches!(target.layers.first(), Some(Layer::Ssh(_))) {
        let slots = {
            let mut all = SLOTS
                .get_or_init(Default::default)
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            all.entry(target.host())
                .or_insert_with(|| Arc::new(async_lock::Semaphore::new(OPS_PER_HOST)))
                .clone()
        };
        Some(slots.acquire_arc().await)
    } else {
        None
    };
    let cmd = match input {
        None => cmd.clone(),
        Some(_) => cmd.clone().stdin(StdinMode::Piped),
    };
    let mut p = exec.spawn(target, &cmd).await.map_err(|e| (e, false))?;
    if let Some(input) = input
        && let Some(mut stdin) = p.take_stdin()
    {
        // A command that ended early closed it: its output says why.
        let _ = stdin.write_all(input).await;
        let _ = stdin.close().await;
    }
    let out = crate::process::collect(p).await;
    // 255 is ssh's own failure; any other status came from the host.
    if slot.is_some()
        && let Ok(o) = &out
        && o.status.code().is_some_and(|c| c != 255)
    {
        answered(target);
    }
    out.map_err(|e| (e, true))
}

// ---------------------------------------------------------------------------------------------
// batches: one operation per host for many runs

/// Which batched operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Start,
    Stop,
    Clean,
}

impl Kind {
    fn script(self) -> String {
        match self {
            Kind::Start => format!("{START_TIME_FN}{START_MANY}"),
            Kind::Stop => format!("{START_TIME_FN}{STOP_MANY}"),
            Kind::Clean => CLEAN_MANY.to_owned(),
        }
    }

    /// The operation's arguments before the runs' own.
    fn lead(self) -> Vec<String> {
        match self {
            Kind::Start => vec![format!("{START_TIME_FN}{RUN_ONE}")],
            Kind::Stop | Kind::Clean => Vec::new(),
        }
    }
}

/// How long a stop of a run that had ended already waits for the follower to deliver its last
/// output (its exit status is known from the stop's answer).
const GONE_WAIT: Duration = Duration::from_millis(500);

/// At most this many runs in one operation (its argv stays far below any limit).
const BATCH_MAX: usize = 100;
/// How long the first request of a batch waits for others (a stop of a whole project reaches
/// every service within a few milliseconds); then the host's connection is made sure of, and
/// what arrived until it is up joins too.
const BATCH_GATHER: Duration = Duration::from_millis(20);

/// One run's part of a batch: its arguments, how long the operation may take for it, and where
/// its answer (the words after `R I`) goes.
struct Item {
    args: Vec<String>,
    /// What the run reads from stdin (starts: its environment, as an exported sh script).
    input: Vec<u8>,
    timeout: Duration,
    reply: async_channel::Sender<Result<String>>,
}

#[derive(Default)]
struct Queue {
    items: Vec<Item>,
    /// A task is running this queue's batches.
    running: bool,
}

type Batches = Mutex<HashMap<(Target, Kind), Queue>>;

fn batches() -> &'static Batches {
    static B: std::sync::OnceLock<Batches> = std::sync::OnceLock::new();
    B.get_or_init(Default::default)
}

/// Runs `kind` for one run as part of a batch on `target`: whatever requests of the same kind
/// arrive together (or while an operation of that kind runs there) go in one operation, so
/// stopping a host's hundred services is one session, not a hundred queued for [`OPS_PER_HOST`].
/// Returns the run's answer.
async fn batched(
    exec: &Executor,
    target: &Target,
    kind: Kind,
    args: Vec<String>,
    input: Vec<u8>,
    timeout: Duration,
) -> Result<String> {
    let (tx, rx) = async_channel::bounded(1);
    let start = {
        let mut all = batches().lock().unwrap_or_else(|p| p.into_inner());
        let q = all.entry((target.clone(), kind)).or_default();
        q.items.push(Item {
            args,
            input,
            timeout,
            reply: tx,
        });
        !std::mem::replace(&mut q.running, true)
    };
    if start {
        smol::spawn(run_batches(exec.clone(), target.clone(), kind)).detach();
    }
    rx.recv().await.unwrap_or_else(|_| {
        Err(Error::Layer {
            at: target.program_place(),
            code: None,
            stderr: "the batched operation ended without an answer".into(),
        })
    })
}

async fn run_batches(exec: Executor, target: Target, kind: Kind) {
    Timer::after(BATCH_GATHER).await;
    // Connected first (a cold connection takes 0.3-1 s under load): what is requested meanwhile
    // goes in the same operation instead of waiting for a second one. An error is the
    // operation's to report.
    if let Some(Layer::Ssh(host)) = target.layers.first() {
        let began = std::time::Instant::now();
        let _ = exec.ssh().connect(host).await;
        tracing::debug!(host = %target.host(), op = ?kind, ms = began.elapsed().as_millis() as u64, "remote batch: connected");
    }
    loop {
        let items: Vec<Item> = {
            let mut all = batches().lock().unwrap_or_else(|p| p.into_inner());
            let Some(q) = all.get_mut(&(target.clone(), kind)) else {
                return;
            };
            if q.items.is_empty() {
                all.remove(&(target.clone(), kind));
                return;
            }
            let n = q.items.len().min(BATCH_MAX);
            q.items.drain(..n).collect()
        };
        let timeout = items
            .iter()
            .map(|i| i.timeout)
            .max()
            .unwrap_or(exec.options().op_timeout);
        let mut args = kind.lead();
        args.extend(items.iter().flat_map(|i| i.args.iter().cloned()));
        let cmd = sh(kind.script(), args).timeout(timeout);
        let began = std::time::Instant::now();
        let result = if kind == Kind::Start {
            let mut input = Vec::new();
            for i in &items {
                let lines = i.input.iter().filter(|&&b| b == b'\n').count();
                input.extend_from_slice(format!("{lines}\n").as_bytes());
                input.extend_from_slice(&i.input);
            }
            // A start that reached the host and then lost its answer may have started runs.
            op_run(&exec, &target, &cmd, Some(&input))
                .await
                .map_err(|(e, begun)| {
                    if begun {
                        Error::AnswerLost {
                            at: target.program_place(),
                            detail: e.to_string(),
                        }
                    } else {
                        e
                    }
                })
        } else {
            op(&exec, &target, &cmd).await
        };
        tracing::debug!(
            host = %target.host(),
            op = ?kind,
            runs = items.len(),
            ms = began.elapsed().as_millis() as u64,
            ok = result.is_ok(),
            "remote batch"
        );
        match result {
            Ok(out) => {
                let text = out.stdout_text();
                let mut said: HashMap<usize, String> = HashMap::new();
                for line in text.lines() {
                    if let Some((i, rest)) = line
                        .strip_prefix("R ")
                        .and_then(|l| l.split_once(' '))
                        .and_then(|(i, r)| Some((i.parse::<usize>().ok()?, r)))
                    {
                        said.insert(i, rest.trim().to_owned());
                    }
                }
                let count = items.len();
                for (n, item) in items.into_iter().enumerate() {
                    let answer = said.remove(&(n + 1)).ok_or_else(|| {
                        let detail = format!(
                            "{kind:?} of {count} runs said nothing of run {} (exit {:?}): {}{}",
                            n + 1,
                            out.status.code(),
                            text.trim(),
                            out.stderr_text().trim()
                        );
                        // The start ran on the host: whether this run began is not known.
                        if kind == Kind::Start {
                            Error::AnswerLost {
                                at: target.program_place(),
                                detail,
                            }
                        } else {
                            Error::Layer {
                                at: target.program_place(),
                                code: out.status.code(),
                                stderr: detail,
                            }
                        }
                    });
                    let _ = item.reply.try_send(answer);
                }
            }
            Err(e) => {
                for item in items {
                    let _ = item.reply.try_send(Err(e.clone()));
                }
            }
        }
    }
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
struct Follower {
    runs: Mutex<HashMap<String, Reg>>,
    changed: Notify,
    task: Mutex<Option<smol::Task<()>>>,
    reach: Mutex<Reach>,
    /// The next round is wanted at once ([`Follower::hurry`]).
    hurry: std::sync::atomic::AtomicBool,
    hurried: Notify,
}

/// How often the follower looks at its runs (the daemon paces its rounds).
const ROUND: Duration = Duration::from_millis(200);

/// How long a host may stay silent before it counts as unreachable: the follower's session
/// prints a heartbeat after every round (about every [`ROUND`]), so this is many missed ones (a
/// loaded host is not declared lost at the first late beat).
pub const SILENCE: Duration = Duration::from_secs(5);

/// What the follower knows of its host's reachability.
struct Reach {
    /// When the follower last heard anything from its session (or was created).
    heard: std::time::Instant,
    /// Heard from since it was created.
    verified: bool,
    down: Option<Down>,
    /// The last error of connecting, for [`Down::detail`].
    error: Option<String>,
}

impl Reach {
    fn new() -> Reach {
        Reach {
            heard: std::time::Instant::now(),
            verified: false,
            down: None,
            error: None,
        }
    }
}

/// A host that has not answered for [`SILENCE`] or more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Down {
    /// When it was last heard from (or, if never, when following began).
    pub since: std::time::SystemTime,
    /// Why: the last connection error, or how long it has been silent.
    pub detail: String,
}

/// Whether a host answers, as its log follower sees it: [`Reachability::down`] once it has been
/// silent for [`SILENCE`], and back when anything arrives from it again.
#[derive(Clone)]
pub struct Reachability {
    follower: Arc<Follower>,
    host: String,
}

impl Reachability {
    /// The host's name (its last ssh layer).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `Some` while the host is not answering.
    pub fn down(&self) -> Option<Down> {
        self.follower.reach().down.clone()
    }

    /// True once the host answered since following began, and is not down now.
    pub fn up(&self) -> bool {
        let r = self.follower.reach();
        r.verified && r.down.is_none()
    }

    /// Waits until the host is down (`Some`) when `want_up` is false, or up (verified and not
    /// down: `None`) when it is true.
    pub async fn wait(&self, want_up: bool) -> Option<Down> {
        loop {
            let l = self.follower.changed.listen();
            if want_up && self.up() {
                return None;
            }
            if !want_up && let Some(d) = self.down() {
                return Some(d);
            }
            l.await;
        }
    }

    /// The error a remote operation gives up with while the host is down.
    fn error(&self, target: &Target, down: &Down) -> Error {
        Error::Unreachable {
            at: target.program_place(),
            target: self.host.clone(),
            detail: format!(
                "not heard from since {} ({})",
                jiff::Timestamp::try_from(down.since)
                    .map(|t| t.round(jiff::Unit::Second).unwrap_or(t).to_string())
                    .unwrap_or_default(),
                down.detail
            ),
        }
    }

    /// Runs `fut` unless the host is or goes down first; then fails with [`Error::Unreachable`]
    /// (dropping `fut` kills whatever it started locally).
    pub(crate) async fn or_down<T>(
        &self,
        target: &Target,
        fut: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        use futures_lite::FutureExt;
        if let Some(d) = self.down() {
            return Err(self.error(target, &d));
        }
        let down = async {
            let d = self.wait(false).await.unwrap_or_else(|| Down {
                since: std::time::SystemTime::now(),
                detail: String::new(),
            });
            Err(self.error(target, &d))
        };
        fut.or(down).await
    }
}

/// A follower silent this long has its host probed: a session that only runs `true`, on the
/// ssh slot kept for control operations (so it never queues behind the host's operations). An
/// answer counts as hearing from the host: a follower whose output is late because the host, or
/// this daemon, is loaded does not make a host that answers count as unreachable.
const PROBE_AFTER: Duration = Duration::from_secs(2);

async fn probe(me: Weak<Follower>, exec: Executor, target: Target) {
    let mut cmd = Command::new("true").timeout(SILENCE);
    cmd.control = true;
    if let Ok(out) = exec.output(&target, &cmd).await
        && out.status.success()
        && let Some(f) = me.upgrade()
    {
        f.heard();
    }
}

/// An operation on `target` was answered by the host: it is reachable, whatever its follower's
/// output says.
fn answered(target: &Target) {
    let f = followers()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(target)
        .and_then(Weak::upgrade);
    if let Some(f) = f {
        f.heard();
    }
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
            reach: Mutex::new(Reach::new()),
            hurry: std::sync::atomic::AtomicBool::new(false),
            hurried: Notify::new(),
        });
        let me = Arc::downgrade(&f);
        let (exec, target_owned) = (exec.clone(), target.clone());
        let task = smol::spawn(async move {
            use futures_lite::FutureExt;
            let watchdog = {
                let me = me.clone();
                let (exec, target) = (exec.clone(), target_owned.clone());
                async move {
                    let mut probe: Option<smol::Task<()>> = None;
                    loop {
                        Timer::after(Duration::from_millis(500)).await;
                        let Some(f) = me.upgrade() else { return };
                        if probe.as_ref().is_some_and(smol::Task::is_finished) {
                            probe = None;
                        }
                        if probe.is_none() && f.quiet() >= PROBE_AFTER {
                            probe = Some(smol::spawn(self::probe(
                                me.clone(),
                                exec.clone(),
                                target.clone(),
                            )));
                        }
                        f.silent();
                    }
                }
            };
            follow_loop(me, exec, target_owned).or(watchdog).await
        });
        *f.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        all.retain(|_, w| w.strong_count() > 0);
        all.insert(target.clone(), Arc::downgrade(&f));
        f
    }

    fn reach(&self) -> std::sync::MutexGuard<'_, Reach> {
        self.reach.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long nothing has been heard from the host.
    fn quiet(&self) -> Duration {
        self.reach().heard.elapsed()
    }

    /// Something arrived from the host.
    fn heard(&self) {
        let mut r = self.reach();
        r.heard = std::time::Instant::now();
        let changed = r.down.take().is_some() || !r.verified;
        r.verified = true;
        r.error = None;
        drop(r);
        if changed {
            self.changed.notify(usize::MAX);
        }
    }

    /// Asks for the next round without waiting out [`ROUND`]: a stop that just ended its runs
    /// waits for their exits, which the follower reports in its next round.
    fn hurry(&self) {
        self.hurry.store(true, std::sync::atomic::Ordering::Relaxed);
        self.hurried.notify(usize::MAX);
    }

    /// Connecting to the host failed with `e`.
    fn failed(&self, e: &Error) {
        self.reach().error = Some(e.to_string());
        self.silent();
    }

    /// Marks the host down once it has been silent for [`SILENCE`].
    fn silent(&self) {
        let mut r = self.reach();
        let quiet = r.heard.elapsed();
        if r.down.is_some() || quiet < SILENCE {
            return;
        }
        let detail = r
            .error
            .clone()
            .unwrap_or_else(|| format!("no answer for {} s", quiet.as_secs()));
        r.down = Some(Down {
            since: std::time::SystemTime::now() - quiet,
            detail,
        });
        drop(r);
        self.changed.notify(usize::MAX);
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

/// Keeps one follower session running; restarts it (re-establishing the connection through the
/// executor) from the current offsets whenever it ends.
async fn follow_loop(me: Weak<Follower>, exec: Executor, target: Target) {
    let mut failures: u32 = 0;
    loop {
        let args = match me.upgrade() {
            Some(f) => f.args(),
            None => return,
        };
        let cmd = sh(format!("{START_TIME_FN}{FOLLOW}"), args).stdin(StdinMode::Piped);
        let mut proc = match exec.spawn(&target, &cmd).await {
            Ok(p) => p,
            Err(e) => {
                failures += 1;
                tracing::warn!(target = %target, "log follower: {e}");
                if let Some(f) = me.upgrade() {
                    f.failed(&e);
                }
                Timer::after(Duration::from_millis(250 * u64::from(failures.min(8)))).await;
                continue;
            }
        };
        failures = 0;
        let Some(mut events) = proc.take_events() else {
            continue;
        };
        // Paces the rounds: a line after each heartbeat, ROUND after the last line (or at once
        // when hurried). Dropped, with stdin, when the session ends.
        let (round_done, rounds) = async_channel::bounded::<()>(1);
        let _ticker = proc.take_stdin().map(|mut stdin| {
            let me = me.clone();
            smol::spawn(async move {
                use futures_lite::FutureExt;
                let mut last = std::time::Instant::now();
                while rounds.recv().await.is_ok() {
                    let Some(f) = me.upgrade() else { return };
                    let l = f.hurried.listen();
                    let hurried = f.hurry.swap(false, std::sync::atomic::Ordering::Relaxed);
                    drop(f);
                    if !hurried {
                        Timer::at(last + ROUND)
                            .or(async {
                                l.await;
                                std::time::Instant::now()
                            })
                            .await;
                        if let Some(f) = me.upgrade() {
                            f.hurry.store(false, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    if stdin.write_all(b"\n").await.is_err() || stdin.flush().await.is_err() {
                        return;
                    }
                    last = std::time::Instant::now();
                }
            })
        });
        let mut buf: Vec<u8> = Vec::new();
        let began = std::time::Instant::now();
        let mut first = true;
        while let Some(ev) = events.next().await {
            let Event::Stdout(line) = ev else { continue };
            if std::mem::take(&mut first) {
                tracing::debug!(host = %target.host(), ms = began.elapsed().as_millis() as u64, "follower: first output");
            }
            let Some(f) = me.upgrade() else { return };
            f.heard();
            drop(f);
            buf.extend_from_slice(&line.bytes);
            if line.newline {
                buf.push(b'\n');
            }
            let Some(f) = me.upgrade() else { return };
            if parse(&f, &mut buf).await {
                let _ = round_done.try_send(());
            }
        }
        let _ = proc.wait().await;
        if me.upgrade().is_none() {
            return;
        }
        Timer::after(Duration::from_millis(200)).await;
    }
}

const MARK: &[u8] = b"\x1eHARNESS-";

/// Consumes complete records from `buf`; true when a heartbeat (the end of a round) was among
/// them.
async fn parse(f: &Follower, buf: &mut Vec<u8>) -> bool {
    let mut beat = false;
    loop {
        let Some(start) = buf.windows(MARK.len()).position(|w| w == MARK) else {
            // Keep a possible partial mark.
            let keep = buf.len().min(MARK.len() - 1);
            buf.drain(..buf.len() - keep);
            return beat;
        };
        let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') else {
            buf.drain(..start);
            return beat;
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
                    return beat;
                }
                let data: Vec<u8> = buf[body..body + len].to_vec();
                buf.drain(..body + len);
                f.data(key, usize::from(*s == "e"), off, &data).await;
            }
            ["X", key, rc] => {
                buf.drain(..body);
                tracing::debug!(run = key, "follower: exit recorded");
                f.ended(key, ExitInfo::from_shell(rc.parse().unwrap_or(255)));
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
            ["H"] => {
                buf.drain(..body);
                beat = true;
            }
            _ => {
                buf.drain(..body);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// a remote process

/// A service process on a host (or as another user there).
pub struct RemoteService {
    pub pid: u32,
    pub start_time: u64,
    exec: Executor,
    target: Target,
    key: String,
    follower: Arc<Follower>,
    ended: Option<ExitInfo>,
}

impl Drop for RemoteService {
    fn drop(&mut self) {
        self.follower.unregister(&self.key);
    }
}

fn run_dir(key: &str) -> String {
    format!("{STATE_ROOT}/{key}")
}

/// A launch id names a directory on the host: `a/b/c/d`, each part letters, digits, `.`, `_`,
/// `-`, `:` and never `.` or `..`.
fn check_launch_id(id: &str) -> Result<()> {
    let parts: Vec<&str> = id.split('/').collect();
    let ok = parts.len() == 4
        && parts.iter().all(|p| {
            !p.is_empty()
                && *p != "."
                && *p != ".."
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
        });
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "launch id",
            format!("{id:?} (want daemon/project/service/run)"),
        ))
    }
}

/// Starts `cmd` on `target` as the launch `launch_id` (`<daemon>/<project>/<service>/<run>`,
/// recorded by the caller before this is called), its output copied to `stdout`/`stderr` in
/// `local_dir` by the host's follower.
pub async fn spawn(
    exec: &Executor,
    target: &Target,
    cmd: &ServiceCommand,
    local_dir: &Path,
    launch_id: &str,
) -> Result<RemoteService> {
    check_launch_id(launch_id)?;
    let key = launch_id.to_owned();
    let mut args = vec![
        (3 + cmd.args.len()).to_string(),
        run_dir(&key),
        cmd.cwd.clone().unwrap_or_default(),
        cmd.program.clone(),
    ];
    args.extend(cmd.args.iter().cloned());
    let mut env = cmd.env.clone();
    env.push((LAUNCH_ID_VAR.to_owned(), launch_id.to_owned()));
    for (k, _) in &env {
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(Error::invalid("environment variable name", k.clone()));
        }
    }
    let follower = Follower::get(exec, target);
    follower.register(&key, local_dir, [0, 0]);
    let failed = |e: Error| {
        follower.unregister(&key);
        e
    };
    let text = batched(
        exec,
        target,
        Kind::Start,
        args,
        super::local::env_script(&env),
        exec.options().start_timeout,
    )
    .await
    .map_err(failed)?;
    let words: Vec<&str> = text.split_whitespace().collect();
    let at = target.program_place();
    let (pid, start_time) = match words.as_slice() {
        ["STARTED", pid, st, ..] => (pid.parse().unwrap_or(0), st.parse().unwrap_or(0)),
        ["NOCWD", ..] => {
            return Err(failed(Error::WorkingDir {
                at,
                dir: cmd.cwd.clone().unwrap_or_default(),
            }));
        }
        ["NOPROG", ..] => {
            return Err(failed(Error::ProgramNotFound {
                at,
                program: cmd.program.clone(),
            }));
        }
        ["NOSETSID", ..] => {
            return Err(failed(Error::Layer {
                at,
                code: None,
                stderr: "setsid is not installed".into(),
            }));
        }
        _ => {
            return Err(failed(Error::Layer {
                at,
                code: None,
                stderr: format!(
                    "starting failed: {}",
                    text.strip_prefix("FAIL ").unwrap_or(&text)
                ),
            }));
        }
    };
    Ok(RemoteService {
        pid,
        start_time,
        exec: exec.clone(),
        target: target.clone(),
        key,
        follower,
        ended: None,
    })
}

/// After a daemon restart: kills every run of the launch's service on the host but `launch_id`'s
/// own, then adopts that one if `keep` (a run that ended while no daemon watched is adopted too,
/// so its last output and exit status are collected). `None` when nothing of it is left. When the
/// host cannot say and `recorded` (pid, start time) is known, the run is presumed alive (never
/// started twice): the follower reports its end once the host answers.
pub async fn adopt(
    exec: &Executor,
    target: &Target,
    local_dir: &Path,
    launch_id: &str,
    keep: bool,
    recorded: Option<(u32, u64)>,
) -> Result<Option<RemoteService>> {
    check_launch_id(launch_id)?;
    let cmd = sh(
        format!("{START_TIME_FN}{STATE_DIR}{ADOPT}"),
        [run_dir(launch_id), if keep { "1" } else { "0" }.to_owned()],
    )
    .timeout(exec.options().op_timeout);
    let (pid, start_time) = match op(exec, target, &cmd).await {
        Ok(out) => {
            let text = out.stdout_text();
            let words: Vec<&str> = text.split_whitespace().collect();
            match words.as_slice() {
                ["RUNNING", p, st] | ["EXITED", _, p, st] => {
                    (p.parse().unwrap_or(0), st.parse().unwrap_or(0))
                }
                _ => return Ok(None),
            }
        }
        Err(e) => match recorded {
            Some(r) if keep => {
                tracing::warn!(
                    "adopting {launch_id} on {} without checking it: {e}",
                    target.host()
                );
                r
            }
            _ => return Err(e),
        },
    };
    if !keep {
        return Ok(None);
    }
    let size = |name: &str| {
        let p = local_dir.join(name);
        async move { async_fs::metadata(p).await.map(|m| m.len()).unwrap_or(0) }
    };
    let offsets = [size("stdout").await, size("stderr").await];
    let follower = Follower::get(exec, target);
    follower.register(launch_id, local_dir, offsets);
    Ok(Some(RemoteService {
        pid,
        start_time,
        exec: exec.clone(),
        target: target.clone(),
        key: launch_id.to_owned(),
        follower,
        ended: None,
    }))
}

/// Whether the host `target` runs on answers, as a follower session there sees it (the one its
/// remote runs share, with the target cut after its last ssh layer); `None` for a target with
/// no ssh layer. Held by whatever needs to know, such as a container on that host's engine: its
/// own `docker logs` session notices a lost link only after ssh's keepalives give up (~15 s).
pub fn host_reachability(exec: &Executor, target: &Target) -> Option<Reachability> {
    let last = target
        .layers
        .iter()
        .rposition(|l| matches!(l, Layer::Ssh(_)))?;
    let login = Target {
        layers: target.layers[..=last].to_vec(),
    };
    Some(Reachability {
        host: login.host(),
        follower: Follower::get(exec, &login),
    })
}

impl RemoteService {
    /// Whether the run's host answers (its follower's view).
    pub fn reachability(&self) -> Reachability {
        Reachability {
            follower: self.follower.clone(),
            host: self.target.host(),
        }
    }

    pub async fn wait(&mut self) -> ExitInfo {
        if let Some(e) = self.ended {
            return e;
        }
        let e = self.follower.wait_exit(&self.key).await;
        self.ended = Some(e);
        e
    }

    /// Stops the run: `signal` to its process group, SIGKILL after `timeout` (on the host),
    /// then its last output and exit (unknown when they do not come within 5 s: the host
    /// stopped answering), then removes the run from the host. Returns how it ended and whether
    /// SIGKILL was needed; an error when the host could not be told to stop it, at once
    /// ([`Error::Unreachable`]) when the host is or goes [`Reachability::down`]: the caller
    /// retries once it is back (stopping again is harmless: a run already gone is `GONE`).
    pub async fn terminate(
        &mut self,
        signal: Signal,
        timeout: Duration,
    ) -> Result<(ExitInfo, bool)> {
        let tenths = (timeout.as_millis() / 100) as u64;
        let args = vec![
            run_dir(&self.key),
            signal.name().to_owned(),
            tenths.to_string(),
        ];
        let reach = self.reachability();
        let said = reach
            .or_down(
                &self.target,
                batched(
                    &self.exec,
                    &self.target,
                    Kind::Stop,
                    args,
                    Vec::new(),
                    self.exec.options().op_timeout + timeout,
                ),
            )
            .await?;
        let killed = said == "KILLED";
        // Its exit (and last output) comes in the follower's next round: now, not in up to ROUND.
        self.follower.hurry();
        // The follower delivers the last output, then the exit. For a run already cleaned up (by
        // a daemon killed after its stop) nothing more comes; for one that had ended already
        // (e.g. adopted after a daemon restart, its process gone) the stop's answer says how,
        // and the follower's record is waited for only briefly: a stop never blocks on it.
        let words: Vec<&str> = said.split_whitespace().collect();
        let info = match words.as_slice() {
            ["NORUN", ..] => self
                .follower
                .exit_of(&self.key)
                .unwrap_or(ExitInfo::UNKNOWN),
            ["GONE", rc, ..] => {
                let recorded = rc.parse().ok().map(ExitInfo::from_shell);
                match self.follower.exit_of(&self.key) {
                    Some(e) => e,
                    None => {
                        use futures_lite::FutureExt;
                        let brief = async {
                            Timer::after(GONE_WAIT).await;
                            recorded.unwrap_or(ExitInfo::UNKNOWN)
                        };
                        match recorded {
                            Some(_) => self.follower.wait_exit(&self.key).or(brief).await,
                            None => ExitInfo::UNKNOWN,
                        }
                    }
                }
            }
            _ => super::exit_after_stop(self.wait()).await,
        };
        self.ended = Some(info);
        self.clean().await?;
        Ok((info, killed))
    }

    /// Removes the run from the host (and anything left in its process group).
    pub async fn clean(&self) -> Result<()> {
        let args = vec![run_dir(&self.key), self.pid.to_string()];
        self.reachability()
            .or_down(
                &self.target,
                batched(
                    &self.exec,
                    &self.target,
                    Kind::Clean,
                    args,
                    Vec::new(),
                    self.exec.options().op_timeout,
                ),
            )
            .await
            .map(drop)
    }
}

/// Resource figures of processes of the host `target` reaches (`harness top`): ONE sh run over
/// the host's SSH connection for every pid, read with [`super::procfs::parse_usage_batch`].
pub async fn usage(
    exec: &Executor,
    target: &Target,
    pids: &[u32],
) -> Result<super::procfs::UsageBatch> {
    let cmd = Command::new("sh")
        .arg("-c")
        .arg(super::procfs::usage_script(pids))
        .timeout(exec.options().op_timeout);
    let out = op(exec, target, &cmd).await?;
    super::procfs::parse_usage_batch(&out.stdout_text()).ok_or_else(|| Error::Layer {
        at: target.program_place(),
        code: out.status.code(),
        stderr: format!(
            "reading /proc failed: {}",
            out.stderr_text()
                .trim()
                .chars()
                .take(200)
                .collect::<String>()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launch_ids() {
        assert!(check_launch_id("d1/p/s/1-2-3").is_ok());
        assert!(check_launch_id("d1/p/../1").is_err());
        assert!(check_launch_id("d1/p/s").is_err());
        assert!(check_launch_id("d1/p/s/a b").is_err());
    }

    #[test]
    fn parses_records_across_chunks() {
        smol::block_on(async {
            let tmp = tempfile::tempdir().unwrap();
            let f = Follower {
                runs: Mutex::new(HashMap::new()),
                changed: Notify::new(),
                task: Mutex::new(None),
                reach: Mutex::new(Reach::new()),
                hurry: std::sync::atomic::AtomicBool::new(false),
                hurried: Notify::new(),
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
