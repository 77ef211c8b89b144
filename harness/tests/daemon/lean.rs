//! Which program the daemon is: `harnessd` from the same build when it is beside the CLI, else the
//! CLI itself in `daemon run` mode (ADR 0024).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;

const DAEMOND: &str = env!("CARGO_BIN_EXE_harnessd");
const ONE: &str = "name: lean\nservices:\n  one:\n    command: [sleep, '86415']\n";

fn exe_of(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).expect("daemon exe")
}

fn cmdline_of(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// A copy of the CLI alone in a folder of its own (a hard link when the file system allows).
fn lone_cli(dir: &Path) -> PathBuf {
    let bin = dir.join("harness");
    if std::fs::hard_link(BIN, &bin).is_err() {
        std::fs::copy(BIN, &bin).expect("copy harness");
    }
    bin
}

/// A `harnessd` beside `dir`'s lone CLI that runs `script` (sh).
fn fake_harnessd(dir: &Path, script: &str) {
    let fake = dir.join("harnessd");
    std::fs::write(&fake, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

#[test]
fn auto_start_runs_harnessd_from_the_same_build() {
    let env = Env::new(ONE);
    env.run(&["start"]).ok();
    let pid = env.daemon_pid().expect("daemon pid");
    assert_eq!(exe_of(pid), Path::new(DAEMOND).canonicalize().unwrap());
    assert_eq!(cmdline_of(pid)[1], "--detached");
    env.run(&["stop"]).ok();
}

#[test]
fn daemon_run_becomes_harnessd_in_place() {
    let env = Env::new(ONE);
    let mut fg = env
        .cmd(&["daemon", "run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("daemon run");
    let deadline = Instant::now() + Duration::from_secs(15);
    while env.daemon_pid() != Some(fg.id()) {
        assert!(
            Instant::now() < deadline,
            "the daemon did not record itself"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Same pid (exec), now the lean program.
    assert_eq!(exe_of(fg.id()), Path::new(DAEMOND).canonicalize().unwrap());
    env.run(&["start"]).ok();
    assert_eq!(env.state_of("one"), "running");
    env.run(&["daemon", "stop", "--stop-services"]).ok();
    assert!(fg.wait().expect("wait").success());
}

#[test]
fn without_harnessd_the_cli_runs_the_daemon_itself() {
    let env = Env::new(ONE);
    let dir = tempfile::tempdir().unwrap();
    let cli = lone_cli(dir.path());
    env.run_of(&cli, &["start"]).ok();
    let pid = env.daemon_pid().expect("daemon pid");
    assert_eq!(exe_of(pid), cli.canonicalize().unwrap());
    assert_eq!(cmdline_of(pid)[1..4], ["daemon", "run", "--detached"]);
    // The daemon's log says which program serves.
    let log = std::fs::read_to_string(env.home().join("daemon.log")).unwrap();
    assert!(
        log.contains(&format!("exe={}", cli.canonicalize().unwrap().display())),
        "{log}"
    );
    assert_eq!(env.state_of("one"), "running");
    env.run_of(&cli, &["stop"]).ok();
}

#[test]
fn a_harnessd_from_another_build_is_never_started() {
    let env = Env::new(ONE);
    let dir = tempfile::tempdir().unwrap();
    let cli = lone_cli(dir.path());
    let marker = dir.path().join("started");
    fake_harnessd(
        dir.path(),
        &format!(
            "[ \"$1\" = --build-id ] && {{ echo 0123456789abcdef; exit 0; }}\ntouch {}\nexit 1",
            marker.display()
        ),
    );
    env.run_of(&cli, &["start"]).ok();
    let pid = env.daemon_pid().expect("daemon pid");
    assert_eq!(exe_of(pid), cli.canonicalize().unwrap());
    assert!(!marker.exists(), "the foreign harnessd was run");
    env.run_of(&cli, &["stop"]).ok();
}

#[test]
fn harnessd_names_bad_arguments_and_answers_help_and_version() {
    let run = |args: &[&str]| {
        let mut cmd = std::process::Command::new(DAEMOND);
        cmd.args(args).env_remove("HARNESS_LISTEN");
        run_command(cmd)
    };
    let bad = run(&["--listen", "nowhere"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(
        bad.stderr.contains("--listen \"nowhere\""),
        "{}",
        bad.stderr
    );
    let unknown = run(&["--frobnicate"]);
    assert_eq!(unknown.code, 2);
    assert!(
        unknown.stderr.contains("--frobnicate"),
        "{}",
        unknown.stderr
    );
    let help = run(&["--help"]).ok();
    assert!(help.stdout.contains("Usage: harnessd"), "{}", help.stdout);
    let version = run(&["--version"]).ok();
    assert_eq!(
        version.stdout.trim(),
        format!("harnessd {}", env!("CARGO_PKG_VERSION"))
    );
    let id = run(&["--build-id"]).ok();
    assert_eq!(id.stdout.trim().len(), 16, "{}", id.stdout);
}

#[test]
fn a_harnessd_that_does_not_answer_is_not_waited_for() {
    let env = Env::new(ONE);
    let dir = tempfile::tempdir().unwrap();
    let cli = lone_cli(dir.path());
    fake_harnessd(dir.path(), "exec sleep 31.25");
    let t = Instant::now();
    env.run_of(&cli, &["start"]).ok();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let pid = env.daemon_pid().expect("daemon pid");
    assert_eq!(exe_of(pid), cli.canonicalize().unwrap());
    // The probe was killed, not left behind.
    assert_eq!(
        processes_with_cmdline(&["sleep", "31.25"]),
        Vec::<u32>::new()
    );
    env.run_of(&cli, &["stop"]).ok();
}

/// The environment block `pid` was exec'd with, as `/proc/PID/environ` shows it (NUL-separated;
/// glibc also cuts `GLIBC_TUNABLES` at each `:` in place while it reads it).
fn exec_environ_of(pid: u32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default())
        .replace('\0', "\n")
}

/// `harnessd` runs itself again, in place, without glibc's per-thread malloc cache (ADR 0041),
/// unless the caller's `GLIBC_TUNABLES` sets the cache itself; its services get `GLIBC_TUNABLES`
/// exactly as the caller had it, and nothing of the daemon's own.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn harnessd_runs_without_the_malloc_cache_and_services_get_the_callers_tunables() {
    for (caller, cache) in [
        (None, "tcache_count=0"),
        (Some("glibc.malloc.check=0"), "tcache_count=0"),
        (Some("glibc.malloc.tcache_count=7"), "tcache_count=7"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let dump = dir.path().join("env.txt");
        let env = Env::new(&format!(
            "name: lean\nservices:\n  one:\n    command: [sh, -c, 'env > {}; exec sleep 86417']\n",
            dump.display()
        ));
        let mut start = env.cmd(&["start"]);
        match caller {
            Some(v) => start.env("GLIBC_TUNABLES", v),
            None => start.env_remove("GLIBC_TUNABLES"),
        };
        run_command(start).ok();
        let pid = env.daemon_pid().expect("daemon pid");
        assert_eq!(exe_of(pid), Path::new(DAEMOND).canonicalize().unwrap());
        // The daemon's own run had the cache set as expected, and only once.
        let environ = exec_environ_of(pid);
        assert_eq!(
            environ.matches("glibc.malloc.tcache_count=").count(),
            1,
            "caller {caller:?}: {environ}"
        );
        assert!(
            environ.contains(&format!("glibc.malloc.{cache}")),
            "caller {caller:?}: {environ}"
        );
        assert!(
            wait_until(Duration::from_secs(10), || std::fs::read_to_string(&dump)
                .is_ok_and(|t| t.contains("PWD="))),
            "the service wrote no environment"
        );
        let service: Vec<String> = std::fs::read_to_string(&dump)
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("GLIBC_TUNABLES=") || l.starts_with("HARNESSD_"))
            .map(str::to_string)
            .collect();
        let expected: Vec<String> = caller
            .map(|v| format!("GLIBC_TUNABLES={v}"))
            .into_iter()
            .collect();
        assert_eq!(service, expected, "caller {caller:?}");
        env.run(&["daemon", "stop", "--stop-services"]).ok();
    }
}
