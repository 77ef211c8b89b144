//! The ssh transport: the system OpenSSH client, one multiplexed master connection per host (see
//! docs/adr/0004-ssh-transport-openssh-multiplexing.md).
//!
//! Each host gets a generated config file holding every option, for the host and its jump hosts (options
//! on the command line do not reach jump hosts). The master is started explicitly (`ssh -M -N -f`), so a
//! connection failure is seen once, classified, and not mistaken for a command's failure. Sessions on a
//! master are limited by a semaphore to the host's `max_sessions` (sshd's MaxSessions, 10 by default);
//! beyond it ssh would silently open slow extra connections. The semaphores count only this process's
//! sessions, so a pool's masters are its own: it claims its runtime dir with a lock (see [`Claim`]).

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_lock::{Semaphore, SemaphoreGuardArc};
use futures_lite::FutureExt;

use crate::classify;
use crate::error::{Error, Place, Result};
use crate::layer::{HostKeyPolicy, SshHost};

/// A master checked this recently is trusted without another `-O check`.
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// Masters per host: when every session slot of the first is taken (long log followers, say), the next
/// one opens, rather than waiting or letting ssh open unaccounted connections.
const MAX_MASTERS: usize = 4;

pub(crate) struct SshPool {
    /// The runtime dir asked for; the pool uses it when no other live pool holds it (see [`Claim`]).
    base: PathBuf,
    /// How long an idle master stays up after its last session (ssh's `ControlPersist`).
    idle: Duration,
    hosts: Mutex<HashMap<u64, Arc<HostConn>>>,
    claim: Mutex<Option<Arc<Claim>>>,
}

/// The directory whose masters this pool, and only this pool, uses: the runtime dir if no other live pool
/// (in this process or another) holds it, else a private subdirectory `p<pid>.<n>`. Held by an exclusive
/// `flock` on its `owner.lock` for the pool's life, so a master is never shared by two pools: each counts
/// every session on its masters, and closing its masters never cuts another client's sessions.
struct Claim {
    dir: PathBuf,
    private: bool,
    _lock: std::fs::File,
}

/// Private subdirectories of this process get distinct numbers.
static PRIVATE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Creates `dir` (0700) and takes `dir/owner.lock` without waiting; `None` when another holder has it.
fn try_claim(dir: &Path) -> std::io::Result<Option<std::fs::File>> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("owner.lock"))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(file)),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Removes private subdirectories of `base` whose process is gone and lock is free. Masters still
/// running there end after their idle time: nothing can open a session on them any more.
fn remove_stale_private(base: &Path) {
    for e in std::fs::read_dir(base).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // `p<pid>.<n>`, of a process that is gone: a live one may be about to lock a directory it just made.
        let Some(pid) = name
            .strip_prefix('p')
            .and_then(|r| r.split('.').next())
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if Path::new("/proc").join(pid).exists() || !e.path().is_dir() {
            continue;
        }
        if let Ok(Some(lock)) = try_claim(&e.path()) {
            let _ = std::fs::remove_dir_all(e.path());
            drop(lock);
        }
    }
}

pub(crate) struct HostConn {
    pub(crate) host: SshHost,
    pub(crate) alias: String,
    pub(crate) config: PathBuf,
    masters: Vec<Master>,
    idle: Duration,
    /// Sessions open on its masters now (`daemon stats`).
    active: std::sync::atomic::AtomicUsize,
}

/// One master connection: its control socket and its session slots.
struct Master {
    socket: PathBuf,
    sessions: Arc<Semaphore>,
    /// One slot kept for short control operations (signals, status), so a full connection can still be
    /// told to stop what runs on it.
    control: Arc<Semaphore>,
    last_ok: async_lock::Mutex<Option<Instant>>,
}

impl Master {
    /// The slots a session of this kind takes: the control slot or the ordinary ones.
    fn slots(&self, control: bool) -> &Arc<Semaphore> {
        if control {
            &self.control
        } else {
            &self.sessions
        }
    }
}

/// A session slot on one of a host's masters; held while the session's ssh client runs.
pub(crate) struct Session {
    pub(crate) conn: Arc<HostConn>,
    socket: PathBuf,
    _permit: SemaphoreGuardArc,
}

impl SshPool {
    pub(crate) fn new(dir: PathBuf, idle: Duration) -> Self {
        SshPool {
            base: dir,
            idle,
            hosts: Mutex::new(HashMap::new()),
            claim: Mutex::new(None),
        }
    }

    /// This pool's directory, claimed on first use (see [`Claim`]).
    fn claim(&self, at: &Place) -> Result<Arc<Claim>> {
        let mut claim = self.claim.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = claim.as_ref() {
            return Ok(c.clone());
        }
        let io = |dir: &Path, e| Error::io(at.clone(), format!("claiming {}", dir.display()), e);
        let held = try_claim(&self.base).map_err(|e| io(&self.base, e))?;
        remove_stale_private(&self.base);
        let c = match held {
            Some(lock) => Claim {
                dir: self.base.clone(),
                private: false,
                _lock: lock,
            },
            None => {
                let n = PRIVATE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let dir = self.base.join(format!("p{}.{n}", std::process::id()));
                match try_claim(&dir).map_err(|e| io(&dir, e))? {
                    Some(lock) => Claim {
                        dir,
                        private: true,
                        _lock: lock,
                    },
                    None => {
                        return Err(io(&dir, std::io::Error::other("held by another client")));
                    }
                }
            }
        };
        let c = Arc::new(c);
        *claim = Some(c.clone());
        Ok(c)
    }

    fn conn(&self, host: &SshHost) -> Result<Arc<HostConn>> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        host.hash(&mut hasher);
        let key = hasher.finish();
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = hosts.get(&key) {
            return Ok(c.clone());
        }
        let at = Place {
            host: "localhost".into(),
            layer: crate::layer::Layer::Ssh(host.clone()).describe(),
        };
        let dir = self.claim(&at)?.dir.clone();
        let alias = format!("harness-{key:016x}");
        let config = dir.join(format!("{alias}.conf"));
        let text = config_text(host, &alias, &dir);
        let tmp = dir.join(format!("{alias}.conf.tmp"));
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)))
            .and_then(|_| std::fs::rename(&tmp, &config))
            .map_err(|e| Error::io(at, format!("writing {}", config.display()), e))?;
        let masters = (0..MAX_MASTERS)
            .map(|i| Master {
                socket: dir.join(format!("{alias}.{i}.sock")),
                sessions: Arc::new(Semaphore::new(host.max_sessions.saturating_sub(1).max(1))),
                control: Arc::new(Semaphore::new(1)),
                last_ok: async_lock::Mutex::new(None),
            })
            .collect();
        let conn = Arc::new(HostConn {
            idle: self.idle,
            host: host.clone(),
            alias,
            config,
            masters,
            active: std::sync::atomic::AtomicUsize::new(0),
        });
        hosts.insert(key, conn.clone());
        Ok(conn)
    }

    /// A session slot on `host`'s master, starting or restarting the master if needed.
    /// `control` sessions (short operations) use the slot each master keeps for them.
    pub(crate) async fn session(&self, host: &SshHost, control: bool) -> Result<Session> {
        let conn = self.conn(host)?;
        let free = conn
            .masters
            .iter()
            .enumerate()
            .find_map(|(i, m)| m.slots(control).try_acquire_arc().map(|permit| (i, permit)));
        let (i, permit) = match free {
            Some(found) => found,
            // Every slot of every master is taken: wait for one on the first.
            None => (0, conn.masters[0].slots(control).acquire_arc().await),
        };
        let m = &conn.masters[i];
        conn.ensure_master(m).await?;
        let socket = m.socket.clone();
        conn.active
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Session {
            conn,
            socket,
            _permit: permit,
        })
    }

    /// Makes sure `host`'s first master is up (started if needed), without taking a session
    /// slot: a batch of operations connects before it gathers the requests that arrive
    /// meanwhile.
    pub(crate) async fn connect(&self, host: &SshHost) -> Result<()> {
        let conn = self.conn(host)?;
        conn.ensure_master(&conn.masters[0]).await
    }

    /// Closes the masters this pool used (`ssh -O exit`): they are in its own directory, so no other client
    /// has a session on them. A private directory is removed; the next use claims a directory afresh.
    pub(crate) async fn shutdown(&self) {
        let conns: Vec<Arc<HostConn>> = self
            .hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, c)| c)
            .collect();
        for c in conns {
            for m in &c.masters {
                let mut last_ok = m.last_ok.lock().await;
                if last_ok.take().is_some() {
                    let _ = run_ssh(&c, &m.socket, &["-O", "exit"], Duration::from_secs(5)).await;
                }
            }
        }
        let claim = self.claim.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(c) = claim
            && c.private
        {
            let _ = std::fs::remove_dir_all(&c.dir);
        }
    }
}

impl HostConn {
    fn place(&self) -> Place {
        Place {
            host: "localhost".into(),
            layer: crate::layer::Layer::Ssh(self.host.clone()).describe(),
        }
    }

    /// Whether the master answers on its control socket: a connection to it is accepted (a
    /// socket whose master is gone refuses it). No `ssh -O check` process: under load (50
    /// hosts on 2 cores) spawning one took ~1 s, paid before every operation once the last check
    /// was older than [`CHECK_EVERY`].
    async fn check(&self, m: &Master) -> bool {
        let connect = async {
            async_io::Async::<std::os::unix::net::UnixStream>::connect(&m.socket)
                .await
                .is_ok()
        };
        connect
            .or(async {
                async_io::Timer::after(Duration::from_secs(5)).await;
                false
            })
            .await
    }

    /// An exclusive lock on `<socket>.lock`, polled without blocking the executor.
    async fn lock(&self, m: &Master) -> Result<std::fs::File> {
        let path = m.socket.with_extension("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(self.place(), format!("opening {}", path.display()), e))?;
        let until = Instant::now() + self.host.connect_timeout * 2 + Duration::from_secs(10);
        loop {
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(file),
                Err(rustix::io::Errno::WOULDBLOCK) if Instant::now() < until => {
                    async_io::Timer::after(Duration::from_millis(25)).await;
                }
                Err(e) => {
                    return Err(Error::io(
                        self.place(),
                        format!("locking {}", path.display()),
                        e.into(),
                    ));
                }
            }
        }
    }

    async fn ensure_master(&self, m: &Master) -> Result<()> {
        let mut last_ok = m.last_ok.lock().await;
        if last_ok.is_some_and(|t| t.elapsed() < CHECK_EVERY) {
            return Ok(());
        }
        // No socket, no master.
        if m.socket.exists() && self.check(m).await {
            *last_ok = Some(Instant::now());
            return Ok(());
        }
        // Another client with the same runtime dir may be starting this master right now: a second
        // `ssh -M` on a taken socket would run on as an unmultiplexed, unowned connection. Take turns.
        let _lock = self.lock(m).await?;
        if m.socket.exists() && self.check(m).await {
            *last_ok = Some(Instant::now());
            return Ok(());
        }
        // Jump hops each take a connect; allow for them.
        let hops = 1 + self.host.jump.len() as u32;
        let limit = self.host.connect_timeout * hops + Duration::from_secs(5);
        let began = Instant::now();
        let (ok, stderr) = run_ssh(
            self,
            &m.socket,
            &[
                "-M",
                "-N",
                "-f",
                "-o",
                &format!("ControlPersist={}", self.idle.as_secs().max(1)),
            ],
            limit,
        )
        .await
        .map_err(|e| match e {
            Error::Timeout { .. } => Error::Timeout {
                at: self.place(),
                operation: format!("connecting to {}", self.host.hostname),
                after: limit,
            },
            other => other,
        })?;
        if !ok {
            return Err(
                classify::ssh_error(self.place(), &self.host, &stderr).unwrap_or_else(|| {
                    Error::Layer {
                        at: self.place(),
                        code: Some(255),
                        stderr: stderr.trim().to_string(),
                    }
                }),
            );
        }
        tracing::debug!(
            host = %self.host.hostname,
            ms = began.elapsed().as_millis() as u64,
            "ssh master up"
        );
        *last_ok = Some(Instant::now());
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.conn
            .active
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One host's ssh connections as [`crate::Executor::ssh_stats`] reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshStats {
    /// The host's name (or address).
    pub host: String,
    /// Master connections up (their control socket exists).
    pub masters: usize,
    /// Sessions running on them now.
    pub sessions: usize,
}

impl SshPool {
    pub(crate) fn stats(&self) -> Vec<SshStats> {
        let hosts: Vec<Arc<HostConn>> = self
            .hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        // One row per host name (a host reached with two configurations has two connections).
        let mut by_host: std::collections::BTreeMap<String, SshStats> = Default::default();
        for c in &hosts {
            let name = if c.host.name.is_empty() {
                c.host.hostname.clone()
            } else {
                c.host.name.clone()
            };
            let row = by_host.entry(name.clone()).or_insert(SshStats {
                host: name,
                masters: 0,
                sessions: 0,
            });
            row.masters += c.masters.iter().filter(|m| m.socket.exists()).count();
            row.sessions += c.active.load(std::sync::atomic::Ordering::Relaxed);
        }
        by_host.into_values().collect()
    }
}

impl Session {
    /// The local argv of a session running the shell command line `line` on this host.
    /// With `tty`, `-tt` (a terminal at the far end, even without one here).
    pub(crate) fn argv(&self, line: OsString, tty: bool) -> Vec<OsString> {
        vec![
            "ssh".into(),
            "-F".into(),
            self.conn.config.clone().into_os_string(),
            "-S".into(),
            self.socket.clone().into_os_string(),
            if tty { "-tt" } else { "-T" }.into(),
            "-o".into(),
            "ControlMaster=no".into(),
            self.conn.alias.clone().into(),
            "--".into(),
            line,
        ]
    }
}

/// Runs a control ssh command (master start, check, exit) to completion; returns success and stderr.
async fn run_ssh(
    conn: &HostConn,
    socket: &Path,
    args: &[&str],
    limit: Duration,
) -> Result<(bool, String)> {
    let at = conn.place();
    // stderr goes to a file: a master started with -f keeps running, and must not hold a pipe we read.
    let err_path = conn
        .config
        .with_extension(format!("err.{}", std::process::id()));
    let err_file = std::fs::File::create(&err_path)
        .map_err(|e| Error::io(at.clone(), format!("creating {}", err_path.display()), e))?;
    let mut cmd = std::process::Command::new("ssh");
    cmd.arg("-F")
        .arg(&conn.config)
        .arg("-S")
        .arg(socket)
        .args(args)
        .arg(&conn.alias);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = async_process::Command::from(cmd)
        .stdin(async_process::Stdio::null())
        .stdout(async_process::Stdio::null())
        .stderr(err_file)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::io(at.clone(), "spawning ssh", e))?;
    let status = async { child.status().await.map(Some) }
        .or(async {
            async_io::Timer::after(limit).await;
            Ok(None)
        })
        .await
        .map_err(|e| Error::io(at.clone(), "waiting for ssh", e))?;
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(&err_path);
    match status {
        Some(s) => Ok((s.success(), stderr)),
        None => {
            let _ = child.kill();
            Err(Error::Timeout {
                at,
                operation: format!("ssh {}", args.join(" ")),
                after: limit,
            })
        }
    }
}

fn block(out: &mut String, host: &SshHost, alias: &str, dir: &Path, jump: Option<&str>) {
    let policy = match host.host_key_policy {
        HostKeyPolicy::Strict => "yes",
        HostKeyPolicy::AcceptNew => "accept-new",
    };
    let _ = writeln!(out, "Host {alias}");
    let _ = writeln!(out, "  HostName {}", host.hostname);
    let _ = writeln!(out, "  Port {}", host.port);
    if let Some(u) = &host.user {
        let _ = writeln!(out, "  User {u}");
    }
    if let Some(i) = &host.identity_file {
        let _ = writeln!(out, "  IdentityFile \"{}\"", i.display());
        let _ = writeln!(out, "  IdentitiesOnly yes");
    }
    if let Some(k) = &host.known_hosts {
        let _ = writeln!(out, "  UserKnownHostsFile \"{}\"", k.display());
        let _ = writeln!(out, "  GlobalKnownHostsFile /dev/null");
    }
    let _ = writeln!(out, "  StrictHostKeyChecking {policy}");
    let _ = writeln!(out, "  BatchMode yes");
    let _ = writeln!(out, "  PasswordAuthentication no");
    let _ = writeln!(out, "  KbdInteractiveAuthentication no");
    // The default sntrup761 exchange costs ~110 ms per connection; prefer curve25519, keep the rest.
    let _ = writeln!(
        out,
        "  KexAlgorithms ^curve25519-sha256,curve25519-sha256@libssh.org"
    );
    let _ = writeln!(
        out,
        "  ConnectTimeout {}",
        host.connect_timeout.as_secs().max(1)
    );
    let _ = writeln!(out, "  ServerAliveInterval 5");
    let _ = writeln!(out, "  ServerAliveCountMax 3");
    // Per config block, not %C: %C ignores the identity and options, so another key would share a master.
    let _ = writeln!(out, "  ControlPath \"{}/{alias}.sock\"", dir.display());
    let _ = writeln!(out, "  LogLevel ERROR");
    if let Some(j) = jump {
        let _ = writeln!(out, "  ProxyJump {j}");
    }
    for (k, v) in &host.options {
        let _ = writeln!(out, "  {k} {v}");
    }
}

/// The config file text: the host's block, then one block per jump host (each jumping through the one
/// before it).
pub(crate) fn config_text(host: &SshHost, alias: &str, dir: &Path) -> String {
    let mut out =
        String::from("# generated by harness; every option for this host and its jump hosts\n");
    let jump_aliases: Vec<String> = (0..host.jump.len())
        .map(|i| format!("{alias}-j{i}"))
        .collect();
    block(
        &mut out,
        host,
        alias,
        dir,
        jump_aliases.last().map(String::as_str),
    );
    for (i, j) in host.jump.iter().enumerate() {
        let prev = if i == 0 {
            None
        } else {
            Some(jump_aliases[i - 1].as_str())
        };
        block(&mut out, j, &jump_aliases[i], dir, prev);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_jump_blocks() {
        let h = SshHost::new("198.18.0.14")
            .name("h4")
            .user("u")
            .jump(SshHost::new("198.18.0.11").user("u"));
        let text = config_text(&h, "harness-x", Path::new("/tmp/d"));
        assert!(text.contains("Host harness-x\n  HostName 198.18.0.14"));
        assert!(text.contains("ProxyJump harness-x-j0"));
        assert!(text.contains("Host harness-x-j0\n  HostName 198.18.0.11"));
        assert!(text.contains("ControlPath \"/tmp/d/harness-x.sock\""));
    }
}
