//! `harness up` in a pseudo-terminal: every service's output prefixed, exit and restart markers
//! inline, Ctrl-C stops everything and nothing is left; `down` forgets the project; `ps`.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;

const UP: &str = r#"name: upt
services:
  alpha:
    command: "while :; do echo alpha-line; sleep 0.2; done"
  beta:
    command: "while :; do echo beta-line; sleep 0.2; done"
  crash:
    command: "echo crash-line; sleep 0.3; exit 3"
    restart: {policy: on-failure, backoff: {initial: 2s}}
"#;

/// A pty pair: (master, slave).
fn pty() -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two fresh descriptors; the other arguments may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty");
    // SAFETY: both descriptors were just opened and are owned by nothing else.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

#[test]
fn up_streams_prefixed_logs_and_markers_and_ctrl_c_stops_everything() {
    let env = Env::new(UP);
    let (master, slave) = pty();
    let mut cmd = env.cmd(&["up"]);
    cmd.env_remove("NO_COLOR")
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave));
    // SAFETY: setsid and ioctl are async-signal-safe; the pty becomes the controlling terminal,
    // so that ^C written to the master is a SIGINT to `harness up` as in a real terminal.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            if libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn harness up");
    let seen = Arc::new(Mutex::new(String::new()));
    let mut reader = std::fs::File::from(master.try_clone().unwrap());
    let s = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            s.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let text = || seen.lock().unwrap().clone();
    let ok = wait_until(Duration::from_secs(20), || {
        let t = text();
        t.contains("alpha |\x1b[0m alpha-line")
            && t.contains("beta  |\x1b[0m beta-line")
            && t.contains("crash |\x1b[0m crash-line")
            && t.contains("crash exited with code 3; restarting in 2s (attempt 1)")
    });
    assert!(ok, "output so far:\n{}", text());
    let pids: Vec<u32> = env.pids().into_iter().map(|(_, p)| p).collect();
    assert!(pids.len() >= 2, "{pids:?}");

    let mut m = std::fs::File::from(master);
    m.write_all(b"\x03").unwrap();
    let exited = wait_until(Duration::from_secs(20), || {
        child.try_wait().ok().flatten().is_some()
    });
    assert!(exited, "harness up did not end after Ctrl-C:\n{}", text());
    assert_eq!(child.wait().unwrap().code(), Some(0), "{}", text());
    assert!(text().contains("stopping upt"), "{}", text());
    for pid in pids {
        assert!(!alive(pid), "pid {pid} is left after Ctrl-C");
    }
    for s in env.status() {
        assert!(
            matches!(s["state"]["kind"].as_str(), Some("stopped" | "exited")),
            "{s:#}"
        );
    }
    let _ = m.as_raw_fd();
}

#[test]
fn down_forgets_the_project_and_ps_is_scoped_to_the_file() {
    let env = Env::new(UP);
    env.run(&["up", "-d", "alpha"]).ok();
    let ps = env.run(&["ps", "-o", "json"]).ok().json();
    assert_eq!(ps.as_array().map(Vec::len), Some(1), "{ps:#}");
    let pid = env.pids()[0].1;
    env.run(&["down"]).ok();
    assert!(!alive(pid));
    let all = env.run(&["ps", "--all", "-o", "json"]).ok().json();
    assert_eq!(all, serde_json::json!([]), "down left entries: {all:#}");
    let stop = env.run(&["stop"]);
    assert_ne!(stop.code, 0, "the project is forgotten: {}", stop.stdout);
}

#[test]
fn logs_events_and_grep() {
    let env = Env::new(UP);
    env.run(&["start", "crash"]).ok();
    assert!(wait_until(Duration::from_secs(10), || {
        env.run(&["logs", "--events"])
            .stdout
            .contains("crash exited with code 3; restarting in 2s (attempt 1)")
    }));
    let ev = env
        .run(&["logs", "--events", "--grep", "start"])
        .ok()
        .stdout;
    assert!(ev.lines().all(|l| l.contains("start")), "{ev}");
    assert!(ev.contains("crash started"), "{ev}");
    let lines = env.run(&["logs", "--grep", "^crash-l"]).ok().stdout;
    assert!(lines.contains("crash-line"), "{lines}");
    let none = env.run(&["logs", "--grep", "^nothing$"]).ok().stdout;
    assert!(none.is_empty(), "{none}");
    let bad = env.run(&["logs", "--grep", "("]);
    assert_eq!(bad.code, 2);
    let trap = env.run(&["logs", "-f", "crash"]);
    assert_eq!(trap.code, 2);
    assert!(trap.stderr.contains("-F or --follow"), "{}", trap.stderr);
    env.run(&["stop"]).ok();
}

#[test]
fn logging_rotates_per_service_and_logs_clear_deletes() {
    let env = Env::new(
        "name: rot\nservices:\n  chatty:\n    command: \"i=0; while :; do i=$$((i+1)); echo line-$$i-padding-padding-padding; sleep 0.002; done\"\n    logging: {max_size: 2k, max_files: 2}\n",
    );
    env.run(&["start"]).ok();
    let dir = env.home().join("projects/rot/services/chatty");
    let log = |n: &str| dir.join(format!("chatty.log{n}"));
    assert!(
        wait_until(Duration::from_secs(15), || log(".2").exists()),
        "no second rotated file"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(!log(".3").exists(), "max_files: 2 keeps two rotated files");
    for n in ["", ".1", ".2"] {
        let size = std::fs::metadata(log(n)).map(|m| m.len()).unwrap_or(0);
        assert!(size <= 2048, "chatty.log{n} is {size} bytes");
    }
    env.run(&["stop"]).ok();
    assert!(env.run(&["logs"]).ok().stdout.contains("line-"));
    let out = env.run(&["logs", "--clear"]).ok().stdout;
    assert!(out.contains("chatty"), "{out}");
    assert!(!log("").exists() && !log(".1").exists() && !log(".2").exists());
    assert_eq!(env.run(&["logs"]).ok().stdout, "");
    assert_ne!(env.run(&["logs", "--clear", "nope"]).code, 0);
}

#[test]
fn completions_offer_service_and_project_names_and_the_man_page_renders() {
    let env = Env::new(UP);
    let complete = |args: &[&str]| {
        let mut all = vec!["--", "harness"];
        all.extend_from_slice(args);
        let out = env.cmd(&all).env("COMPLETE", "fish").output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let names = complete(&["logs", ""]);
    for s in ["alpha", "beta", "crash"] {
        assert!(names.lines().any(|l| l == s), "{names}");
    }
    assert_eq!(complete(&["restart", "al"]).trim(), "alpha");
    // Project names come from the running daemon.
    env.run(&["start", "alpha"]).ok();
    let projects = complete(&["status", "-p", ""]);
    assert!(projects.lines().any(|l| l == "upt"), "{projects}");
    let script = env.run(&["completions", "bash"]).ok().stdout;
    assert!(
        script.contains("complete") && script.contains("COMPLETE"),
        "{script}"
    );
    let man = env.run(&["manpage"]).ok().stdout;
    assert!(
        man.contains(".TH harness 1") && man.contains("watch"),
        "{man}"
    );
    env.run(&["stop"]).ok();
}
