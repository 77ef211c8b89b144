//! The testbed fixture of the harness integration tests that run on the testbed (remote_stack,
//! proxy_stack, service_runtime): a private HARNESS_HOME, project folder and runtime dir per test,
//! the CLI run against the testbed's known hosts and local engine, and on drop every service and
//! the daemon stopped and the daemon's ssh masters closed.
#![allow(dead_code)] // each test binary uses part of it

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;
use testbed::{Engine, Testbed};

pub const BIN: &str = env!("CARGO_BIN_EXE_harness");

pub struct Env {
    pub home: tempfile::TempDir,
    pub dir: tempfile::TempDir,
    pub run: tempfile::TempDir,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "exit {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", self.stdout, self.stderr))
    }
}

impl Env {
    pub fn new(yaml: &str) -> Env {
        let env = Env {
            home: tempfile::tempdir().unwrap(),
            dir: tempfile::tempdir().unwrap(),
            run: tempfile::tempdir().unwrap(),
        };
        std::fs::write(env.dir.path().join("services.yaml"), yaml).unwrap();
        env
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let out = self.cmd(args).output().unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `harness ARGS` as [`Env::run`] runs it, to start in the background.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let tb = Testbed::get();
        let mut cmd = Command::new(BIN);
        cmd
            // The local engine of docker services without a host (also the daemon's, which
            // inherits it when auto-started).
            .env("DOCKER_HOST", tb.docker_endpoint(Engine::Local))
            .args(args)
            .current_dir(self.dir.path())
            .env("HARNESS_HOME", self.home.path())
            .env("HARNESS_LISTEN", "127.0.0.1:0")
            .env("XDG_RUNTIME_DIR", self.run.path())
            .env("HARNESS_KNOWN_HOSTS", tb.var("TB_SSH_KNOWN_HOSTS").unwrap())
            .env("NO_COLOR", "1")
            .env_remove("HARNESS_FILE")
            .env_remove("HARNESS_DAEMON")
            .env_remove("HARNESS_NO_AUTOSTART")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    pub fn status(&self) -> Vec<Value> {
        match self.run(&["status", "-o", "json"]).ok().json() {
            Value::Array(a) => a,
            other => panic!("status is not a list: {other}"),
        }
    }

    pub fn daemon_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.home.path().join("daemon.json")).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        v["pid"].as_u64().map(|p| p as u32)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = self.run(&["stop", "--force"]);
        let _ = self.run(&["daemon", "stop"]);
        // They would linger for ControlPersist otherwise.
        self.close_masters();
    }
}

impl Env {
    /// Pids of this test's ssh master connections.
    pub fn masters(&self) -> Vec<u32> {
        let dir = self.run.path().to_string_lossy().into_owned();
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| {
                let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                (cmd.starts_with("ssh ") && cmd.contains(&dir) && cmd.contains(" -M "))
                    .then_some(pid)
            })
            .collect()
    }

    /// `ssh -O exit` on every ssh connection of this test's daemon (and of any other client, in
    /// its private runtime dir).
    pub fn close_masters(&self) {
        let dir = self.run.path().join("harness-ssh");
        let mut dirs = vec![dir.clone()];
        dirs.extend(
            std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir()),
        );
        for d in dirs {
            close_masters_in(&d);
        }
    }
}

pub fn close_masters_in(dir: &Path) {
    {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let Some(alias) = name.split('.').next().filter(|_| name.ends_with(".sock")) else {
                continue;
            };
            let _ = Command::new("ssh")
                .arg("-F")
                .arg(dir.join(format!("{alias}.conf")))
                .arg("-S")
                .arg(&p)
                .args(["-O", "exit", alias])
                .stderr(Stdio::null())
                .status();
        }
    }
}
