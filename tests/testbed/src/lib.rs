//! Test support: the network-namespace hosts, sshd, sudo and dockerd that integration tests run against.
//!
//! `tests/testbed/up.sh` builds the testbed and writes an env file; `bash tests/run.sh` does that and exports
//! `HARNESS_TESTBED_ENV` before running `cargo test`. [`Testbed::get`] reads that file once per test binary
//! and gives typed access to it, plus a few blocking helpers for assertions: run a script on a host over the
//! system `ssh`, look for processes by pid or command line (all hosts share the root pid namespace, so procfs
//! answers for every host), talk to a docker engine, pick a free port.
//!
//! The helpers are for checking what the product did, never for doing the product's work: they shell out to
//! the same tools a user has, with generous timeouts so a broken testbed fails a test instead of hanging it.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::net::{IpAddr, TcpListener};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// Where up.sh writes the env file when `HARNESS_TESTBED_DIR` is not set.
pub const DEFAULT_ENV_FILE: &str = "/var/lib/harness-testbed/testbed.env";

/// How long a helper waits for a command before it kills it and panics.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

const NOT_RUNNING: &str = "testbed not running: run `bash tests/run.sh` (or tests/testbed/up.sh and export \
                           HARNESS_TESTBED_ENV=/var/lib/harness-testbed/testbed.env)";

/// A host of the testbed: a network namespace with its own sshd, hostname and private /home, /opt, /tmp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// `h1`..`h4`; also the `Host` alias in the ssh config and the host's hostname.
    pub name: String,
    pub addr: IpAddr,
    /// Network namespace name (`ip netns`), e.g. `hb-h1`.
    pub netns: String,
    /// The host to jump through, if the root namespace cannot reach this one directly (h4 → h1).
    pub jump: Option<String>,
}

impl Host {
    /// `/run/netns/<netns>`, for `nsenter --net=`.
    pub fn netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.netns)
    }
}

/// One of the testbed's docker engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// The dockerd in the root namespace.
    Local,
    /// The dockerd inside h2's network and mount namespaces.
    H2,
}

/// The running testbed, as described by its env file.
#[derive(Debug, Clone)]
pub struct Testbed {
    pub env_file: PathBuf,
    pub dir: PathBuf,
    /// h1, h2, h3: reachable from the root namespace.
    pub hosts: Vec<Host>,
    /// h4: reachable only through [`Host::jump`] (h1).
    pub h4: Host,
    pub bridge_addr: IpAddr,
    pub ssh_port: u16,
    /// The login user on every host (`hbuser`), key auth, NOPASSWD sudo to any user.
    pub ssh_user: String,
    /// Private key authorized for `ssh_user` and `password_sudo_user` on every host.
    pub ssh_key: PathBuf,
    /// A key authorized nowhere.
    pub ssh_wrong_key: PathBuf,
    pub known_hosts: PathBuf,
    /// `ssh -F <ssh_config> h1 true` works for h1..h4 (h4 via ProxyJump h1).
    pub ssh_config: PathBuf,
    /// Unprivileged service user that `ssh_user` can become with `sudo -n -u`.
    pub sudo_user: String,
    /// Can log in by key, but its sudo asks for a password, so `sudo -n` fails.
    pub password_sudo_user: String,
    /// A docker client that talks to the testbed's dockerd (20.10).
    pub docker_cli: PathBuf,
    /// `unix://...` of the root namespace's engine.
    pub docker_local: String,
    /// `unix://...` of h2's engine; the same path works inside h2 (`sudo -n docker -H ...`) and from here.
    pub docker_h2: String,
    /// Image present in both engines (busybox: sh, nc, httpd, wget).
    pub image: String,
    /// An address in the testbed range where nothing answers: connections time out.
    pub unreachable_addr: IpAddr,
    /// Every key of the env file, including ones without a typed field.
    pub vars: BTreeMap<String, String>,
}

/// Why an env file could not be read.
#[derive(Debug)]
pub enum EnvFileError {
    Read(PathBuf, std::io::Error),
    Missing(PathBuf, String),
    Invalid(PathBuf, String, String),
    Syntax(PathBuf, usize, String),
}

impl fmt::Display for EnvFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read(p, e) => write!(f, "{}: {e}", p.display()),
            Self::Missing(p, k) => write!(f, "{}: missing key {k}", p.display()),
            Self::Invalid(p, k, v) => write!(f, "{}: invalid value for {k}: {v:?}", p.display()),
            Self::Syntax(p, line, text) => {
                write!(
                    f,
                    "{}:{line}: expected KEY=value, got {text:?}",
                    p.display()
                )
            }
        }
    }
}

impl std::error::Error for EnvFileError {}

impl Testbed {
    /// The running testbed, read once per process from `$HARNESS_TESTBED_ENV` (or, when unset, from
    /// [`DEFAULT_ENV_FILE`] if it exists). Panics with instructions when no testbed is up.
    pub fn get() -> &'static Testbed {
        static TESTBED: OnceLock<Testbed> = OnceLock::new();
        TESTBED.get_or_init(|| {
            let path = match std::env::var_os("HARNESS_TESTBED_ENV") {
                Some(p) if !p.is_empty() => PathBuf::from(p),
                _ if Path::new(DEFAULT_ENV_FILE).exists() => PathBuf::from(DEFAULT_ENV_FILE),
                _ => panic!("{NOT_RUNNING} (HARNESS_TESTBED_ENV is not set)"),
            };
            if !path.exists() {
                panic!("{NOT_RUNNING} ({} does not exist)", path.display());
            }
            let tb = match Testbed::from_env_file(&path) {
                Ok(tb) => tb,
                Err(e) => panic!("{NOT_RUNNING}: {e}"),
            };
            // An env file that outlived its testbed (a reboot, a killed down.sh) would fail every test
            // with ssh errors; say what is wrong instead.
            if let Some(gone) = tb.all_hosts().find(|h| !h.netns_path().exists()) {
                panic!(
                    "{NOT_RUNNING} ({} is stale: {} does not exist)",
                    path.display(),
                    gone.netns_path().display()
                );
            }
            tb
        })
    }

    /// Parses an env file written by up.sh: `KEY=value` lines, `#` comments, values optionally in double
    /// quotes (no escapes).
    pub fn from_env_file(path: &Path) -> Result<Testbed, EnvFileError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| EnvFileError::Read(path.to_owned(), e))?;
        let vars = parse_env(path, &text)?;
        Self::from_vars(path, vars)
    }

    fn from_vars(path: &Path, vars: BTreeMap<String, String>) -> Result<Testbed, EnvFileError> {
        let get = |k: &str| {
            vars.get(k)
                .map(String::as_str)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| EnvFileError::Missing(path.to_owned(), k.to_owned()))
        };
        let ip = |k: &str| -> Result<IpAddr, EnvFileError> {
            let v = get(k)?;
            v.parse()
                .map_err(|_| EnvFileError::Invalid(path.to_owned(), k.to_owned(), v.to_owned()))
        };
        let host = |name: &str| -> Result<Host, EnvFileError> {
            let upper = name.to_ascii_uppercase();
            Ok(Host {
                name: name.to_owned(),
                addr: ip(&format!("TB_{upper}_ADDR"))?,
                netns: get(&format!("TB_{upper}_NETNS"))?.to_owned(),
                jump: vars
                    .get(&format!("TB_{upper}_JUMP"))
                    .filter(|v| !v.is_empty())
                    .cloned(),
            })
        };
        let hosts = get("TB_HOSTS")?
            .split_whitespace()
            .map(host)
            .collect::<Result<Vec<_>, _>>()?;
        let port = get("TB_SSH_PORT").unwrap_or("22");
        Ok(Testbed {
            env_file: path.to_owned(),
            dir: get("TB_DIR")?.into(),
            hosts,
            h4: host("h4")?,
            bridge_addr: ip("TB_BRIDGE_ADDR")?,
            ssh_port: port.parse().map_err(|_| {
                EnvFileError::Invalid(path.to_owned(), "TB_SSH_PORT".into(), port.to_owned())
            })?,
            ssh_user: get("TB_SSH_USER")?.to_owned(),
            ssh_key: get("TB_SSH_KEY")?.into(),
            ssh_wrong_key: get("TB_SSH_WRONG_KEY")?.into(),
            known_hosts: get("TB_SSH_KNOWN_HOSTS")?.into(),
            ssh_config: get("TB_SSH_CONFIG")?.into(),
            sudo_user: get("TB_SUDO_USER")?.to_owned(),
            password_sudo_user: get("TB_PASSWORD_SUDO_USER")?.to_owned(),
            docker_cli: get("TB_DOCKER_CLI")?.into(),
            docker_local: get("TB_DOCKER_LOCAL")?.to_owned(),
            docker_h2: get("TB_DOCKER_H2")?.to_owned(),
            image: get("TB_IMAGE")?.to_owned(),
            unreachable_addr: ip("TB_UNREACHABLE_ADDR")?,
            vars,
        })
    }

    /// h1..h3 and h4.
    pub fn all_hosts(&self) -> impl Iterator<Item = &Host> {
        self.hosts.iter().chain(std::iter::once(&self.h4))
    }

    /// The host named `name` (`h1`..`h4`). Panics on an unknown name.
    pub fn host(&self, name: &str) -> &Host {
        self.all_hosts()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("testbed has no host {name:?}"))
    }

    /// The raw value of an env-file key.
    pub fn var(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(String::as_str)
    }

    /// `unix://...` endpoint of an engine.
    pub fn docker_endpoint(&self, engine: Engine) -> &str {
        match engine {
            Engine::Local => &self.docker_local,
            Engine::H2 => &self.docker_h2,
        }
    }

    /// `ssh -F <config> -o BatchMode=yes <host>`: add the remote command and run it.
    pub fn ssh_command(&self, host: &str) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.arg("-F")
            .arg(&self.ssh_config)
            .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"])
            .arg(&self.host(host).name)
            .stdin(Stdio::null());
        cmd
    }

    /// An `ssh` with every option explicit and no config file (`-F /dev/null`), authenticating as `user`
    /// with `key` only: what a product without the testbed's config would run. Add the destination address
    /// (`user@addr` is set already) and the remote command.
    pub fn ssh_command_with_key(&self, user: &str, key: &Path, host: &str) -> Command {
        let h = self.host(host);
        let mut cmd = Command::new("ssh");
        cmd.args(["-F", "/dev/null", "-i"])
            .arg(key)
            .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"])
            .args(["-o", "StrictHostKeyChecking=yes", "-o"])
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
            .args([
                "-o",
                "KexAlgorithms=curve25519-sha256",
                "-o",
                "ConnectTimeout=10",
            ])
            .args(["-p", &self.ssh_port.to_string()])
            .arg(format!("{user}@{}", h.addr))
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `script` with POSIX sh on `host` as the login user. Returns whatever happened; see [`Self::sh_ok`].
    pub fn sh_on(&self, host: &str, script: &str) -> Output {
        let mut cmd = self.ssh_command(host);
        cmd.arg(format!("sh -c {}", sh_quote(script)));
        run(cmd, COMMAND_TIMEOUT)
    }

    /// Like [`Self::sh_on`], but panics unless the script exits 0; returns its stdout, trimmed.
    pub fn sh_ok(&self, host: &str, script: &str) -> String {
        let out = self.sh_on(host, script);
        if !out.status.success() {
            panic!(
                "on {host}: `{script}` failed ({}): stdout {:?} stderr {:?}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// True when `pid` is a live (not zombie) process in `host`'s network namespace.
    pub fn pid_alive_on(&self, host: &str, pid: u32) -> bool {
        let want = netns_inode(&self.host(host).netns_path());
        process_state(pid).is_some_and(|s| s != 'Z') && want.is_some() && process_netns(pid) == want
    }

    /// Every live process whose command line contains `pattern`, on any host or locally (including `ssh`
    /// clients whose remote command contains it), with the host it runs on. The caller's own process is
    /// never listed.
    pub fn processes_matching(&self, pattern: &str) -> Vec<ProcessInfo> {
        let hosts: Vec<(u64, &str)> = self
            .all_hosts()
            .filter_map(|h| netns_inode(&h.netns_path()).map(|i| (i, h.name.as_str())))
            .collect();
        let me = std::process::id();
        let mut found = Vec::new();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return found;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if pid == me || process_state(pid).is_none_or(|s| s == 'Z') {
                continue;
            }
            let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&raw)
                .trim_end_matches('\0')
                .replace('\0', " ");
            if !cmdline.contains(pattern) {
                continue;
            }
            let ns = process_netns(pid);
            let host = hosts
                .iter()
                .find(|(i, _)| Some(*i) == ns)
                .map(|(_, n)| (*n).to_owned());
            found.push(ProcessInfo { pid, cmdline, host });
        }
        found.sort_by_key(|p| p.pid);
        found
    }

    /// Like [`Self::processes_matching`], but only processes running on `host` (not the local `ssh` clients
    /// whose command line carries the same text).
    pub fn processes_on(&self, host: &str, pattern: &str) -> Vec<ProcessInfo> {
        let name = &self.host(host).name;
        let mut found = self.processes_matching(pattern);
        found.retain(|p| p.host.as_ref() == Some(name));
        found
    }

    /// Runs the docker client against `engine` (from the root namespace; both sockets are reachable here).
    pub fn docker<I, S>(&self, engine: Engine, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new(&self.docker_cli);
        cmd.arg("-H")
            .arg(self.docker_endpoint(engine))
            .args(args)
            .stdin(Stdio::null());
        run(cmd, COMMAND_TIMEOUT)
    }

    /// Like [`Self::docker`], but panics unless docker exits 0; returns stdout, trimmed.
    pub fn docker_ok<I, S>(&self, engine: Engine, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let args: Vec<std::ffi::OsString> =
            args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let out = self.docker(engine, &args);
        if !out.status.success() {
            panic!(
                "docker on {engine:?} {args:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

/// Faults the testbed can inject (`tests/testbed/fault.sh`; root only).
impl Testbed {
    /// Runs `fault.sh ARGS` for this testbed instance; panics when it fails.
    pub fn fault(&self, args: &[&str]) {
        let mut cmd = Command::new("bash");
        cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("fault.sh"))
            .args(args)
            .env(
                "HARNESS_TESTBED_INSTANCE",
                self.var("TB_INSTANCE").unwrap_or("0"),
            )
            .env("HARNESS_TESTBED_DIR", &self.dir)
            .stdin(Stdio::null());
        let out = run(cmd, COMMAND_TIMEOUT);
        if !out.status.success() {
            panic!(
                "fault.sh {args:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Takes `host`'s link to the bridge down: packets to it are dropped, connections time out.
    pub fn link_down(&self, host: &str) {
        self.fault(&["link-down", host]);
    }

    pub fn link_up(&self, host: &str) {
        self.fault(&["link-up", host]);
    }

    /// SIGKILLs `host`'s sshd and every session it runs (detached processes survive).
    pub fn sshd_kill(&self, host: &str) {
        self.fault(&["sshd-kill", host]);
    }

    /// Starts `host`'s sshd again; returns once it listens.
    pub fn sshd_start(&self, host: &str) {
        self.fault(&["sshd-start", host]);
    }

    /// Restarts `engine` as a service manager would (SIGTERM stops its containers), returns once it
    /// answers again.
    pub fn dockerd_restart(&self, engine: Engine) {
        self.fault(&[
            "dockerd-restart",
            match engine {
                Engine::Local => "local",
                Engine::H2 => "h2",
            },
        ]);
    }
}

/// A process found by [`Testbed::processes_matching`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    /// Arguments joined by spaces.
    pub cmdline: String,
    /// The testbed host whose network namespace it runs in; `None` for the root namespace or a container.
    pub host: Option<String>,
}

/// A TCP port that was free on 127.0.0.1 a moment ago. Hosts have their own network namespaces with only
/// sshd listening, so the port is free there too.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free TCP port on 127.0.0.1")
}

/// Polls `check` every 20 ms until it returns true or `timeout` passes; returns its last answer.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Single-quotes `s` for POSIX sh.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs `cmd` with stdout and stderr captured; kills it and panics after `timeout`.
pub fn run(mut cmd: Command, timeout: Duration) -> Output {
    let shown = format!("{cmd:?}");
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status: ExitStatus = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{shown} did not finish within {timeout:?}");
            }
            Err(e) => panic!("waiting for {shown}: {e}"),
        }
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

fn parse_env(path: &Path, text: &str) -> Result<BTreeMap<String, String>, EnvFileError> {
    let mut vars = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(EnvFileError::Syntax(
                path.to_owned(),
                i + 1,
                line.to_owned(),
            ));
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(EnvFileError::Syntax(
                path.to_owned(),
                i + 1,
                line.to_owned(),
            ));
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        vars.insert(key.to_owned(), value.to_owned());
    }
    Ok(vars)
}

/// The state letter from /proc/PID/stat (R, S, D, Z, ...), or None when there is no such process.
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything, so split after the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn process_netns(pid: u32) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|m| m.ino())
}

fn netns_inode(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "# comment\nTB_DIR=/var/lib/harness-testbed\nTB_HOSTS=\"h1 h2 h3\"\n\
        TB_H1_ADDR=198.18.0.11\nTB_H1_NETNS=hb-h1\nTB_H2_ADDR=198.18.0.12\nTB_H2_NETNS=hb-h2\n\
        TB_H3_ADDR=198.18.0.13\nTB_H3_NETNS=hb-h3\nTB_H4_ADDR=198.19.0.14\nTB_H4_NETNS=hb-h4\n\
        TB_H4_JUMP=h1\nTB_BRIDGE_ADDR=198.18.0.1\nTB_SSH_USER=hbuser\nTB_SSH_KEY=/k/id\n\
        TB_SSH_WRONG_KEY=/k/wrong\nTB_SSH_KNOWN_HOSTS=/s/kh\nTB_SSH_CONFIG=/s/config\n\
        TB_SUDO_USER=hbsvc\nTB_PASSWORD_SUDO_USER=hbpw\nTB_DOCKER_CLI=/usr/bin/docker\n\
        TB_DOCKER_LOCAL=unix:///d/l.sock\nTB_DOCKER_H2=unix:///d/h2.sock\n\
        TB_IMAGE=harness-busybox:local\nTB_UNREACHABLE_ADDR=198.18.0.250\n";

    #[test]
    fn parses_the_env_file_contract() {
        let vars = parse_env(Path::new("x.env"), SAMPLE).unwrap();
        let tb = Testbed::from_vars(Path::new("x.env"), vars).unwrap();
        assert_eq!(
            tb.hosts.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(),
            ["h1", "h2", "h3"]
        );
        assert_eq!(tb.host("h2").addr.to_string(), "198.18.0.12");
        assert_eq!(tb.h4.jump.as_deref(), Some("h1"));
        assert_eq!(tb.host("h1").jump, None);
        assert_eq!(tb.ssh_port, 22);
        assert_eq!(tb.docker_endpoint(Engine::H2), "unix:///d/h2.sock");
        assert_eq!(tb.var("TB_SUDO_USER"), Some("hbsvc"));
    }

    #[test]
    fn missing_key_and_bad_line_are_named() {
        let vars = parse_env(Path::new("x.env"), "TB_DIR=/x\n").unwrap();
        let err = Testbed::from_vars(Path::new("x.env"), vars).unwrap_err();
        assert_eq!(err.to_string(), "x.env: missing key TB_HOSTS");
        let err = parse_env(Path::new("x.env"), "TB_DIR=/x\nnonsense\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.env:2: expected KEY=value, got \"nonsense\""
        );
    }

    #[test]
    fn quoting_survives_sh() {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", sh_quote("it's $HOME `x` \"q\"")))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "it's $HOME `x` \"q\""
        );
    }

    #[test]
    fn run_times_out_instead_of_hanging() {
        let t = Instant::now();
        let r = std::panic::catch_unwind(|| {
            let mut cmd = Command::new("sleep");
            cmd.arg("5");
            run(cmd, Duration::from_millis(200))
        });
        assert!(r.is_err());
        assert!(t.elapsed() < Duration::from_secs(3));
    }
}
