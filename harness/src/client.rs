//! Finding and reaching the daemon.
//!
//! Where: `--daemon URL` > `HARNESS_DAEMON` > `daemon:` in the config file (`$HARNESS_HOME/config.yaml`,
//! else `$XDG_CONFIG_HOME/harness/config.yaml`) > the local daemon recorded in `$HARNESS_HOME/daemon.json`.
//! Credentials: the token in `--token-file`/`HARNESS_TOKEN_FILE`, else `HARNESS_TOKEN`, else the
//! owner's token in `$HARNESS_HOME`; the CA in `HARNESS_CA` (a PEM file), else the one in
//! `$HARNESS_HOME`. A named token (`harness token create`) is never taken from argv. A local daemon that does not answer is started, unless auto-start is off; a lock
//! file makes two CLIs racing here start one daemon, not two.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use harness_protocol::{Client, ConnectOptions, HarnessHome};

use crate::cli::DaemonArgs;
use crate::daemon::RunOptions;
use crate::daemon::args::BUILD_ID;

/// How long a CLI waits for a daemon it started to answer.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Requests such as `start` wait for health checks; their limit is the daemon's, not the client's.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3600);

pub const DAEMON_LOG: &str = "daemon.log";
pub const DAEMON_PID: &str = "daemon.pid";
/// Held (flock) by the running daemon for its whole life: one daemon per state directory.
pub const DAEMON_LOCK: &str = "daemon.lock";
/// Held by a CLI while it starts a daemon.
const AUTOSTART_LOCK: &str = "autostart.lock";

/// `$HARNESS_HOME/config.yaml` (or the XDG one): client settings.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientConfig {
    /// wss://HOST:PORT/v1/ws of the daemon to use by default.
    #[serde(default)]
    daemon: Option<String>,
}

fn config_file(home: &HarnessHome) -> Option<PathBuf> {
    let in_home = home.path("config.yaml");
    if in_home.exists() {
        return Some(in_home);
    }
    use etcetera::BaseStrategy;
    let xdg = etcetera::choose_base_strategy()
        .ok()?
        .config_dir()
        .join("harness/config.yaml");
    xdg.exists().then_some(xdg)
}

fn configured_url(home: &HarnessHome) -> anyhow::Result<Option<String>> {
    let Some(path) = config_file(home) else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    let config: ClientConfig =
        serde_saphyr::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok(config.daemon)
}

/// Connects to the daemon chosen by `args`, starting a local one if needed and allowed.
pub async fn connect(args: &DaemonArgs) -> anyhow::Result<Client> {
    let args = args.clone();
    blocking::unblock(move || prepare(&args))
        .await?
        .connect()
        .await
}

/// What [`connect`] reads from files before it opens a connection: the state directory, the
/// daemon's URL, the token and, for the local daemon, its recorded address and credentials.
/// [`prepare`] reads them on the calling thread (a few small files); a one-shot command calls it
/// before it enters its executor, then [`Prepared::connect`].
pub struct Prepared {
    home: HarnessHome,
    no_autostart: bool,
    token: Option<String>,
    target: Target,
}

enum Target {
    /// A daemon named by `--daemon`, `HARNESS_DAEMON` or the config file.
    Remote { url: String, opts: ConnectOptions },
    /// The local daemon recorded in the home, or why there is none to reach.
    Local(anyhow::Result<ConnectOptions>),
}

/// Reads what connecting as `args` asks needs (blocking file reads: call it outside an executor,
/// or through `blocking::unblock`).
pub fn prepare(args: &DaemonArgs) -> anyhow::Result<Prepared> {
    let home = HarnessHome::from_env()?;
    let remote = match &args.url {
        Some(url) => Some(url.clone()),
        None => configured_url(&home)?,
    };
    let token = token_override(args)?;
    let target = match remote {
        Some(url) => Target::Remote {
            opts: remote_options(&home, &url, token.clone())?,
            url,
        },
        None => Target::Local(local_options(&home).map(|mut opts| {
            if let Some(token) = &token {
                token.clone_into(&mut opts.token);
            }
            opts
        })),
    };
    Ok(Prepared {
        home,
        no_autostart: args.no_autostart,
        token,
        target,
    })
}

impl Prepared {
    /// A blocking connection to the local daemon, if one is recorded and answers at once
    /// (`harness_protocol::OneShot`: no executor and no reactor thread in the process). `None`
    /// for a remote daemon, and when the local one cannot be reached or fails TLS; a refusal of
    /// the upgrade comes with the first call (`OneShot::upgraded` is then false). In each case
    /// [`Prepared::connect`] does what it always does (retries, auto-start, the errors). A local
    /// daemon that accepts the TCP connection and then hangs costs its connect timeout (5 s)
    /// twice.
    pub fn connect_oneshot(&self) -> Option<harness_protocol::OneShot> {
        match &self.target {
            Target::Local(Ok(opts)) => harness_protocol::OneShot::connect(opts).ok(),
            _ => None,
        }
    }

    /// Connects (see [`connect`]).
    pub async fn connect(self) -> anyhow::Result<Client> {
        let Prepared {
            home,
            no_autostart,
            token,
            target,
        } = self;
        let local = match target {
            Target::Remote { url, opts } => {
                return Client::connect_with(&opts)
                    .await
                    .with_context(|| format!("cannot reach the daemon at {url}"));
            }
            Target::Local(Ok(opts)) => connect_local_with(&opts).await,
            Target::Local(Err(e)) => Err(e),
        };
        match local {
            Ok(client) => Ok(client),
            // A daemon answers but holds all the connections it allows: starting another cannot help.
            Err(e) if is_busy(&e) => Err(e),
            // A daemon answers but refuses the token (revoked, expired, wrong): nor can this.
            Err(e) if refused_token(&e) => Err(e.context(if token.is_some() {
                "the daemon refused the token given by --token-file/HARNESS_TOKEN (revoked, expired or wrong)"
            } else {
                "the daemon refused the owner's token"
            })),
            Err(e) if no_autostart => Err(e.context(format!(
                "no daemon answers for {} and auto-start is off (start one with `harness daemon start`)",
                home.root().display()
            ))),
            Err(_) => autostart(&home, token.as_deref()).await,
        }
    }
}

/// The token to use instead of the owner's: `--token-file`/`HARNESS_TOKEN_FILE` (its first line),
/// else `HARNESS_TOKEN`.
pub fn token_override(args: &DaemonArgs) -> anyhow::Result<Option<String>> {
    if let Some(path) = &args.token_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--token-file {}", path.display()))?;
        let token = text.lines().next().unwrap_or("").trim().to_owned();
        if token.is_empty() {
            bail!("--token-file {}: the file is empty", path.display());
        }
        return Ok(Some(token));
    }
    Ok(std::env::var("HARNESS_TOKEN")
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty()))
}

/// Whether the daemon refused the token (HTTP 401).
fn refused_token(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<harness_protocol::ClientError>(),
        Some(harness_protocol::ClientError::Unauthorized)
    )
}

/// Whether the daemon refused the connection because it is at its connection limit.
pub fn is_busy(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<harness_protocol::ClientError>(),
        Some(harness_protocol::ClientError::Busy { .. })
    )
}

/// The options for a daemon at `url`: the CA in `HARNESS_CA`, else the home's; the token given,
/// else the home's.
fn remote_options(
    home: &HarnessHome,
    url: &str,
    token: Option<String>,
) -> anyhow::Result<ConnectOptions> {
    let ca = match std::env::var_os("HARNESS_CA") {
        Some(path) => std::fs::read_to_string(&path)
            .with_context(|| format!("HARNESS_CA={}", Path::new(&path).display()))?,
        None => std::fs::read_to_string(home.path(harness_protocol::home::CA_CERT)).with_context(
            || {
                format!(
                    "no CA for the remote daemon: set HARNESS_CA to its ca.pem (not in {})",
                    home.root().display()
                )
            },
        )?,
    };
    let token = match token {
        Some(t) => t,
        None => std::fs::read_to_string(home.path(harness_protocol::home::TOKEN))
            .with_context(|| "no token for the remote daemon: set HARNESS_TOKEN")?,
    };
    let mut opts = ConnectOptions::new(url, ca, token.trim().to_owned());
    opts.request_timeout = REQUEST_TIMEOUT;
    opts.user_agent = Some(USER_AGENT.to_owned());
    Ok(opts)
}

/// How the CLI introduces itself (operations record it as their requester's `client`).
const USER_AGENT: &str = concat!("harness/", env!("CARGO_PKG_VERSION"));

/// Whether a process with this pid runs. A zombie does not: it has exited and only waits for its
/// parent (for a daemon started by an earlier CLI, whatever adopted it) to reap it.
pub fn pid_alive(pid: u32) -> bool {
    let exists = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .is_some_and(|p| rustix::process::test_kill_process(p).is_ok());
    exists
        && match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => stat
                .rsplit_once(") ")
                .is_none_or(|(_, rest)| !rest.starts_with('Z')),
            Err(_) => true,
        }
}

/// The options for the local daemon, if `daemon.json` names a live process.
pub fn local_options(home: &HarnessHome) -> anyhow::Result<ConnectOptions> {
    let info = home
        .read_daemon_info()
        .map_err(|e| anyhow!("no daemon recorded: {e}"))?;
    if !pid_alive(info.pid) {
        bail!("the recorded daemon (pid {}) is not running", info.pid);
    }
    let mut opts = ConnectOptions::from_home(home)?;
    opts.request_timeout = REQUEST_TIMEOUT;
    opts.user_agent = Some(USER_AGENT.to_owned());
    opts.connect_timeout = Duration::from_secs(5);
    Ok(opts)
}

async fn connect_local(home: &HarnessHome, token: Option<&str>) -> anyhow::Result<Client> {
    let h = home.clone();
    let mut opts = blocking::unblock(move || local_options(&h)).await?;
    if let Some(token) = token {
        token.clone_into(&mut opts.token);
    }
    connect_local_with(&opts).await
}

async fn connect_local_with(opts: &ConnectOptions) -> anyhow::Result<Client> {
    let mut retries = [20, 100].into_iter();
    loop {
        let e = match Client::connect_with(opts).await {
            Ok(c) => return Ok(c),
            Err(e) => e,
        };
        // The daemon closed the connection during the handshake: under a flood of unauthenticated
        // connections it closes the least advanced to make room (ADR 0008). Try again, twice.
        let handshake = matches!(
            e,
            harness_protocol::ClientError::Handshake(_)
                | harness_protocol::ClientError::Tls { .. }
                | harness_protocol::ClientError::Closed { .. }
        );
        match retries.next() {
            Some(ms) if handshake => {
                smol::Timer::after(Duration::from_millis(ms)).await;
            }
            _ => return Err(e.into()),
        }
    }
}

/// Starts a local daemon and connects to it, unless another CLI got there first.
async fn autostart(home: &HarnessHome, token: Option<&str>) -> anyhow::Result<Client> {
    let h = home.clone();
    let lock = blocking::unblock(move || -> anyhow::Result<File> {
        h.ensure_dir()?;
        let path = h.path(AUTOSTART_LOCK);
        let file = File::create(&path).with_context(|| format!("{}", path.display()))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(file)
    })
    .await?;
    // Whoever held the lock before may have started one.
    if let Ok(client) = connect_local(home, token).await {
        return Ok(client);
    }
    // Spawning checks harnessd's build first (a short exec and wait): off the executor.
    // A daemon killed -9 may hold the home's lock until its last thread leaves the kernel (a sync
    // in progress): ours then finds the home taken, leaves, and the dying one never answers. Then
    // the lock is waited for (up to START_TIMEOUT) and another started, up to three times.
    let mut attempts = 0;
    let client = loop {
        attempts += 1;
        let h = home.clone();
        let mut child = blocking::unblock(move || spawn_daemon(&h, None, false)).await?;
        match wait_ready(home, &mut child, token).await {
            Err(e) if attempts < 3 && e.is::<OtherDaemonGone>() => {
                let h = home.clone();
                blocking::unblock(move || wait_home_unlocked(&h, START_TIMEOUT)).await;
            }
            r => break r,
        }
    };
    drop(lock);
    client
}

/// The daemon that had taken the home when ours started (so ours left) exited without answering.
#[derive(Debug)]
pub struct OtherDaemonGone(u32);

impl std::fmt::Display for OtherDaemonGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the daemon that held the home (pid {}) when ours started exited without answering; run the command again",
            self.0
        )
    }
}

impl std::error::Error for OtherDaemonGone {}

/// Starts `harness daemon run` in its own session, detached from this terminal, its output
/// appended to `$HARNESS_HOME/daemon.log`.
pub fn spawn_daemon(
    home: &HarnessHome,
    listen: Option<std::net::SocketAddr>,
    stop_services: bool,
) -> anyhow::Result<Child> {
    home.ensure_dir()?;
    let log_path = home.path(DAEMON_LOG);
    let log = File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("{}", log_path.display()))?;
    let (mut cmd, _) = daemon_command(&RunOptions {
        listen,
        stop_services,
        detached: true,
    })?;
    cmd.env("HARNESS_HOME", home.root())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    cmd.spawn().context("cannot start the daemon")
}

/// The daemon's executable beside the CLI's.
pub const DAEMON_EXE: &str = "harnessd";

/// How to run a daemon with `opts`: `harnessd` beside this executable when it comes from the same
/// build (the lean one, ADR 0024; the flag says so), else this executable's `daemon run`.
pub fn daemon_command(opts: &RunOptions) -> anyhow::Result<(std::process::Command, bool)> {
    let exe = std::env::current_exe().context("cannot find the harness executable")?;
    let lean = exe.with_file_name(format!("{DAEMON_EXE}{}", std::env::consts::EXE_SUFFIX));
    let (mut cmd, is_lean) = if same_build(&lean) {
        let mut cmd = std::process::Command::new(lean);
        // Started as its first run would exec itself again (without the tcache): one exec less.
        if let Some(env) = crate::daemon::tunables_env() {
            cmd.envs(env);
        }
        (cmd, true)
    } else {
        let mut cmd = std::process::Command::new(exe);
        cmd.args(["daemon", "run"]);
        (cmd, false)
    };
    cmd.args(opts.to_args());
    Ok((cmd, is_lean))
}

/// Whether `harnessd` beside this executable is of our build, asked once per process.
static LEAN_DAEMON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// When a local daemon is likely to be auto-started (no daemon has recorded itself in the home,
/// none is named), asks `harnessd` for its build on another thread now, while the caller loads the
/// services file: the answer is ready when the daemon is started. Nothing is started here (an
/// invalid file must not start a daemon).
pub fn check_daemon_build_early(args: &DaemonArgs) {
    if args.url.is_some() || args.no_autostart {
        return;
    }
    let Ok(home) = HarnessHome::from_env() else {
        return;
    };
    if home.path(harness_protocol::home::DAEMON_INFO).exists() || config_file(&home).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let lean = exe.with_file_name(format!("{DAEMON_EXE}{}", std::env::consts::EXE_SUFFIX));
    let _ = std::thread::Builder::new()
        .name("build-check".into())
        .spawn(move || same_build(&lean));
}

/// `harnessd --build-id` prints ours: a missing, foreign or older `harnessd` is never started (nor
/// waited for: one that does not answer within a second is not ours either).
fn same_build(exe: &Path) -> bool {
    *LEAN_DAEMON.get_or_init(|| ask_build(exe))
}

fn ask_build(exe: &Path) -> bool {
    use std::io::Read as _;
    if !exe.is_file() {
        return false;
    }
    let Ok(mut child) = std::process::Command::new(exe)
        .arg("--build-id")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let deadline = Instant::now() + Duration::from_secs(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            _ => break None,
        }
    };
    if !status.is_some_and(|s| s.success()) {
        let _ = child.kill();
        let _ = child.wait();
        return false;
    }
    let mut out = Vec::new();
    let _ = child.stdout.take().map(|mut s| s.read_to_end(&mut out));
    out.trim_ascii() == BUILD_ID.as_bytes()
}

/// Waits until the daemon we started has recorded itself and answers.
pub async fn wait_ready(
    home: &HarnessHome,
    child: &mut Child,
    token: Option<&str>,
) -> anyhow::Result<Client> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut last_err = None;
    // Another daemon holds the home: ours found it and left; that one is waited for instead.
    let mut other = false;
    loop {
        if !other && let Ok(Some(status)) = child.try_wait() {
            let (h, ours) = (home.clone(), child.id());
            if !blocking::unblock(move || another_daemon_runs(&h, ours)).await {
                bail!(
                    "the daemon exited at start ({status}); its log {} ends with:\n{}",
                    home.path(DAEMON_LOG).display(),
                    tail_of(&home.path(DAEMON_LOG), 10)
                );
            }
            other = true;
        }
        if other {
            let (h, ours) = (home.clone(), child.id());
            if let Some(pid) = blocking::unblock(move || other_daemon_gone(&h, ours)).await {
                return Err(OtherDaemonGone(pid).into());
            }
        }
        if let Ok(info) = home.read_daemon_info()
            && (other || info.pid == child.id())
        {
            match connect_local(home, token).await {
                Ok(client) => return Ok(client),
                Err(e) => last_err = Some(e),
            }
        }
        if Instant::now() > deadline {
            let why = last_err.map(|e| format!(": {e}")).unwrap_or_default();
            bail!(
                "the daemon did not answer within {START_TIMEOUT:?}{why} (log: {})",
                home.path(DAEMON_LOG).display()
            );
        }
        smol::Timer::after(Duration::from_millis(2)).await;
    }
}

/// Whether another daemon has taken the home: one started meanwhile without the autostart lock
/// (`harness daemon start`, a script running `harnessd`), which may not answer yet. Read from the
/// pid it records right after taking the home's lock (probing the lock itself would make a
/// daemon starting at that instant find it taken).
fn another_daemon_runs(home: &HarnessHome, ours: u32) -> bool {
    recorded_daemon_pid(home)
        .filter(|&pid| pid != ours)
        .and_then(|pid| rustix::process::Pid::from_raw(i32::try_from(pid).ok()?))
        .is_some_and(|pid| rustix::process::test_kill_process(pid).is_ok())
}

/// The pid the daemon holding the home's lock recorded in `daemon.pid`.
fn recorded_daemon_pid(home: &HarnessHome) -> Option<u32> {
    std::fs::read_to_string(home.path(DAEMON_PID))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The pid of the other daemon recorded in the home, once it has exited (a zombie counts as
/// exited); `None` while it runs or when none other is recorded.
fn other_daemon_gone(home: &HarnessHome, ours: u32) -> Option<u32> {
    recorded_daemon_pid(home).filter(|&pid| pid != ours && !pid_alive(pid))
}

/// Waits until no process holds the home's daemon lock (a dying daemon's last thread has left),
/// at most `limit`. The lock is only tried, never kept: the autostart lock keeps other CLIs out.
fn wait_home_unlocked(home: &HarnessHome, limit: Duration) {
    let deadline = Instant::now() + limit;
    let Ok(file) = File::open(home.path(DAEMON_LOCK)) else {
        return;
    };
    while rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err()
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    // Dropping the file releases the lock if it was taken.
}

/// The last `n` lines of a text file (for error messages).
pub fn tail_of(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
