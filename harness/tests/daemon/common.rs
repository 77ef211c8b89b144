//! Shared fixtures: a private `$HARNESS_HOME` and project folder per test, the binary run as a user
//! would, and cleanup that leaves no daemon and no service behind (checked by pid).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_harness");

/// One test's world: its own state directory (so its own daemon) and project folder.
pub struct Env {
    pub home: tempfile::TempDir,
    pub dir: tempfile::TempDir,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "exit {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

impl Env {
    pub fn new(yaml: &str) -> Env {
        let env = Env {
            home: tempfile::tempdir().expect("tempdir"),
            dir: tempfile::tempdir().expect("tempdir"),
        };
        env.write(yaml);
        env
    }

    pub fn write(&self, yaml: &str) {
        std::fs::write(self.file(), yaml).expect("write services.yaml");
    }

    pub fn file(&self) -> PathBuf {
        self.dir.path().join("services.yaml")
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        self.cmd_of(Path::new(BIN), args)
    }

    /// `args` run by another copy of the CLI (a different install, say).
    pub fn cmd_of(&self, bin: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("HARNESS_HOME", self.home.path())
            .env("HARNESS_LISTEN", "127.0.0.1:0")
            .env("NO_COLOR", "1")
            .env_remove("HARNESS_FILE")
            .env_remove("HARNESS_DAEMON")
            .env_remove("HARNESS_NO_AUTOSTART")
            .env_remove("HARNESS_TOKEN")
            .env_remove("HARNESS_CA")
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        run_command(self.cmd(args))
    }

    pub fn run_of(&self, bin: &Path, args: &[&str]) -> Run {
        run_command(self.cmd_of(bin, args))
    }

    /// The daemon's pid as it recorded itself.
    pub fn daemon_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.home.path().join("daemon.json")).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        v["pid"].as_u64().map(|p| p as u32)
    }

    /// `status -o json` of every project.
    pub fn status(&self) -> Vec<Value> {
        match self.run(&["status", "-o", "json"]).ok().json() {
            Value::Array(a) => a,
            other => panic!("status is not a list: {other}"),
        }
    }

    pub fn service(&self, name: &str) -> Value {
        self.status()
            .into_iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no service {name} in status"))
    }

    pub fn state_of(&self, name: &str) -> String {
        self.service(name)["state"]["kind"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// Waits until `name` is in `state` (kind), or panics with the last status.
    #[track_caller]
    pub fn wait_state(&self, name: &str, state: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.service(name);
            if s["state"]["kind"] == state {
                return;
            }
            if Instant::now() > deadline {
                panic!("{name} did not reach {state} within {timeout:?}: {s:#}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every retained event, replayed through `harness events --since 0 --no-follow -o json`.
    pub fn events(&self) -> Vec<Value> {
        let out = self
            .cmd(&["events", "--since", "0", "--no-follow", "-o", "json"])
            .output()
            .expect("events output");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Pids of running services, by name.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.status()
            .into_iter()
            .filter(|s| s["state"]["kind"] == "running")
            .filter_map(|s| {
                Some((
                    s["name"].as_str()?.to_owned(),
                    s["runtime"]["pid"].as_u64()? as u32,
                ))
            })
            .collect()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Everything this test's daemon looks after, then the daemon itself.
        let mut pids: BTreeSet<u32> = BTreeSet::new();
        if self.daemon_pid().is_some_and(alive) {
            if let Ok(Value::Array(list)) = serde_json::from_str::<Value>(
                &self.run(&["--no-autostart", "status", "-o", "json"]).stdout,
            ) {
                for s in list {
                    if let Some(pid) = s["runtime"]["pid"].as_u64() {
                        pids.extend(tree(pid as u32));
                    }
                }
            }
            let _ = self.run(&["--no-autostart", "daemon", "stop", "--stop-services"]);
        }
        if let Some(pid) = self.daemon_pid() {
            kill9(pid);
        }
        for pid in pids {
            kill9(pid);
        }
    }
}

pub fn run_command(mut cmd: Command) -> Run {
    let out: Output = cmd.output().expect("run harness");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn alive(pid: u32) -> bool {
    // A zombie has exited; only its parent's wait is missing.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

pub fn kill9(pid: u32) {
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
    }
}

/// (ppid, session) of a process.
fn stat_fields(pid: u32) -> Option<(u32, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((f.get(1)?.parse().ok()?, f.get(3)?.parse().ok()?))
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// `pid`, its descendants, and, when it leads a session, every process in that session.
pub fn tree(pid: u32) -> BTreeSet<u32> {
    let table: Vec<(u32, u32, u32)> = all_pids()
        .into_iter()
        .filter_map(|p| stat_fields(p).map(|(pp, sid)| (p, pp, sid)))
        .collect();
    let mut set = BTreeSet::from([pid]);
    loop {
        let before = set.len();
        for (p, pp, _) in &table {
            if set.contains(pp) {
                set.insert(*p);
            }
        }
        if set.len() == before {
            break;
        }
    }
    for (p, _, sid) in &table {
        if *sid == pid {
            set.insert(*p);
        }
    }
    set
}

/// Processes whose command line is exactly `argv` (a marker unique to one test).
pub fn processes_with_cmdline(argv: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    all_pids()
        .into_iter()
        .filter(|p| std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c == want))
        .filter(|p| alive(*p))
        .collect()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Polls `check` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Event time as seconds since the epoch.
pub fn event_time(e: &Value) -> f64 {
    let t: jiff::Timestamp = e["time"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("event time");
    t.as_millisecond() as f64 / 1000.0
}
