//! The service runtime through the real CLI and daemon on the testbed (issue 10).
//!
//! Crash-consistent launch (ADR 0028): the daemon is killed with SIGKILL at a random
//! instant 0-300 ms into `harness start` of 10 local services and 10 on a testbed host, then
//! `start` runs again. Every round: no service runs twice, none is stuck in `starting`, and
//! `stop` leaves no process of any of them behind (checked by pid, on this machine and — all
//! testbed hosts share its pid namespace — on h1).
//!
//! 30 rounds by default (about 2 s each); `HARNESS_FAULT_ROUNDS=N` runs N instead.
//!
//! Secrets: a unique value in `env:` of a local `user:` service, a remote one (plain and through
//! sudo) and a container is never in any process's argv (`ps -eo args`) during start, run and
//! stop, and does reach each service.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use testbed::Testbed;

mod common;
use common::testbed_env::Env;

/// Unique arguments, so this test's sleepers are told from everyone else's.
const LOCAL_MARK: &str = "86417";
const REMOTE_MARK: &str = "86418";

/// Live processes whose argv is exactly `sleep MARK`.
fn sleepers(mark: &str) -> Vec<u32> {
    let want = format!("sleep\0{mark}\0");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let zombie = stat.rsplit(") ").next()?.starts_with('Z');
            (cmd == want.as_bytes() && !zombie).then_some(pid)
        })
        .collect()
}

fn wait_for(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// xorshift: random enough for delays, with no dependency.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

fn yaml(tb: &Testbed) -> String {
    let key = tb.var("TB_SSH_KEY").unwrap();
    let mut y = format!(
        "name: crashlaunch\nhosts:\n  h1: {{address: {}, user: hbuser, identity_file: {key}}}\nservices:\n",
        tb.host("h1").addr
    );
    for i in 0..10 {
        y.push_str(&format!("  l{i}:\n    command: [sleep, '{LOCAL_MARK}']\n"));
        y.push_str(&format!(
            "  r{i}:\n    host: h1\n    command: [sleep, '{REMOTE_MARK}']\n"
        ));
    }
    y
}

/// `(name, state kind)` of every service.
fn states(env: &Env) -> Vec<(String, String)> {
    let out = env.run(&["status", "-o", "json"]).ok().stdout;
    let v: Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .expect("a list of services")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or("").to_owned(),
                s["state"]["kind"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_daemon_killed_during_start_leaves_no_duplicate_orphan_or_stuck_service() {
    let tb = Testbed::get();
    let env = Env::new(&yaml(tb));
    let rounds: u32 = std::env::var("HARNESS_FAULT_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(30);
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    env.run(&["start"]).ok();
    for round in 0..rounds {
        // A running daemon with nothing started: the kill lands inside `start` itself.
        env.run(&["stop", "--force"]).ok();
        assert!(
            wait_for(Duration::from_secs(5), || sleepers(LOCAL_MARK).is_empty()
                && sleepers(REMOTE_MARK).is_empty()),
            "round {round}: left after stop: local {:?}, remote {:?}",
            sleepers(LOCAL_MARK),
            sleepers(REMOTE_MARK)
        );
        let daemon = env.daemon_pid().expect("a daemon");
        let delay = Duration::from_millis(next(&mut seed) % 301);
        let mut start = env
            .cmd(&["start"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(daemon as i32).unwrap(),
            rustix::process::Signal::KILL,
        );
        let _ = start.wait();
        assert!(wait_for(Duration::from_secs(5), || {
            std::fs::read_to_string(format!("/proc/{daemon}/stat")).is_err()
        }));
        // A new daemon, then start again: every service exactly once.
        let out = env.run(&["start"]);
        assert_eq!(
            out.code, 0,
            "round {round} (kill after {delay:?}): start again: {}\n{}",
            out.stdout, out.stderr
        );
        let (local, remote) = (sleepers(LOCAL_MARK), sleepers(REMOTE_MARK));
        assert_eq!(
            (local.len(), remote.len()),
            (10, 10),
            "round {round} (kill after {delay:?}): duplicates or missing: local {local:?}, remote {remote:?}"
        );
        let stuck: Vec<_> = states(&env)
            .into_iter()
            .filter(|(_, s)| s != "running")
            .collect();
        assert!(
            stuck.is_empty(),
            "round {round} (kill after {delay:?}): not running: {stuck:?}"
        );
        // Still exactly once a moment later (nothing started late by a leftover).
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            (sleepers(LOCAL_MARK).len(), sleepers(REMOTE_MARK).len()),
            (10, 10)
        );
        eprintln!("round {round}: killed after {delay:?}: ok");
    }
    env.run(&["stop"]).ok();
    assert!(
        wait_for(Duration::from_secs(5), || sleepers(LOCAL_MARK).is_empty()
            && sleepers(REMOTE_MARK).is_empty()),
        "orphans after stop: local {:?}, remote {:?}",
        sleepers(LOCAL_MARK),
        sleepers(REMOTE_MARK)
    );
    let left = tb.sh_ok(
        "h1",
        &format!("ps -eo args | grep -c '^sleep {REMOTE_MARK}$' || true"),
    );
    assert_eq!(left.trim(), "0", "on h1");
}

/// Every process whose argv holds `needle`, as `pid: argv`.
fn argv_holding(needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if cmd.windows(needle.len()).any(|w| w == needle) {
            hits.push(format!(
                "{pid}: {}",
                String::from_utf8_lossy(&cmd).replace('\0', " ")
            ));
        }
    }
    hits
}

#[test]
fn a_secret_in_env_is_in_no_argv_of_any_service_kind() {
    let tb = Testbed::get();
    let secret = format!(
        "s3cr3t-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let key = tb.var("TB_SSH_KEY").unwrap();
    let show = "echo token=$$TOKEN; exec sleep 86419";
    let yaml = format!(
        r#"name: secrets
hosts:
  h1: {{address: {addr}, user: hbuser, identity_file: {key}}}
services:
  localuser:
    user: hbsvc
    env: {{TOKEN: "{secret}"}}
    command: [sh, -c, "{show}"]
  remote:
    host: h1
    env: {{TOKEN: "{secret}"}}
    command: [sh, -c, "{show}"]
  remotesudo:
    host: h1
    user: hbsvc
    env: {{TOKEN: "{secret}"}}
    command: [sh, -c, "{show}"]
  box:
    type: docker
    image: "{image}"
    env: {{TOKEN: "{secret}"}}
    command: [sh, -c, "{show}"]
"#,
        addr = tb.host("h1").addr,
        image = tb.image,
    );
    let env = Env::new(&yaml);
    // Watches every argv on the machine (all testbed hosts and containers share its pid
    // namespace) for the whole run, every few milliseconds.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let done = done.clone();
        let needle = secret.clone().into_bytes();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                seen.extend(argv_holding(&needle));
                std::thread::sleep(Duration::from_millis(2));
            }
            seen
        })
    };
    env.run(&["start"]).ok();
    for name in ["localuser", "remote", "remotesudo", "box"] {
        assert!(
            wait_for(Duration::from_secs(10), || env
                .run(&["logs", name])
                .stdout
                .contains(&format!("token={secret}"))),
            "{name} did not get its environment: {}",
            env.run(&["logs", name]).stdout
        );
    }
    // The container's id is in `status -o json`, as `runtime.container_id` and `location.id`.
    let status: Value =
        serde_json::from_str(&env.run(&["status", "-o", "json"]).ok().stdout).unwrap();
    let boxed = status
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "box")
        .expect("box in status")
        .clone();
    let id = boxed["runtime"]["container_id"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert_eq!(
        boxed["location"]["id"].as_str(),
        Some(id.as_str()),
        "{boxed}"
    );
    let docker_id = tb.docker_ok(
        testbed::Engine::Local,
        ["inspect", "-f", "{{.Id}}", "harness.secrets.box"],
    );
    assert_eq!(docker_id.trim(), id, "{boxed}");
    // An idempotent `start` (the container unchanged) keeps the id in `location.id`; it
    // cleared it before.
    env.run(&["start"]).ok();
    let status: Value =
        serde_json::from_str(&env.run(&["status", "-o", "json"]).ok().stdout).unwrap();
    let again = status
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "box")
        .expect("box in status")
        .clone();
    assert_eq!(
        again["location"]["id"].as_str(),
        Some(id.as_str()),
        "after a second start: {again}"
    );
    let ps_local = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    let ps_h1 = tb.sh_ok("h1", "ps -eo args");
    env.run(&["stop"]).ok();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = watcher.join().unwrap();
    assert!(seen.is_empty(), "the secret was in an argv: {seen:#?}");
    assert!(!String::from_utf8_lossy(&ps_local.stdout).contains(&secret));
    assert!(!ps_h1.contains(&secret));
}

/// Where the daemon may make cgroups (root with a cgroup2 mount, as in the testbed and CI), a
/// descendant that double-forked and called `setsid` — out of the service's group, session and
/// tree — is gone after `stop`. Without usable cgroups the README promises no such thing.
#[test]
fn stop_kills_a_double_forked_setsid_descendant_where_cgroups_are_usable() {
    if cgroup2_mount().is_none() {
        return;
    }
    let env = Env {
        home: tempfile::tempdir().unwrap(),
        dir: tempfile::tempdir().unwrap(),
        run: tempfile::tempdir().unwrap(),
    };
    let pidfile = env.dir.path().join("escaped.pid");
    std::fs::write(
        env.dir.path().join("services.yaml"),
        format!(
            "name: escape\nservices:\n  daemonizes:\n    command: [sh, -c, \"setsid sh -c 'sleep 86422 >/dev/null 2>&1 & echo $! > {}' & exec sleep 86423\"]\n",
            pidfile.display()
        ),
    )
    .unwrap();
    env.run(&["start"]).ok();
    assert!(wait_for(Duration::from_secs(5), || {
        std::fs::read_to_string(&pidfile).is_ok_and(|t| t.ends_with('\n'))
    }));
    let escaped: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{escaped}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit(") ").next().unwrap().split(' ').collect();
    let service = sleepers("86423");
    assert_eq!(service.len(), 1);
    assert_ne!(
        fields[3],
        service[0].to_string(),
        "the descendant left the service's session"
    );
    env.run(&["stop"]).ok();
    assert!(
        wait_for(Duration::from_secs(5), || sleepers("86422").is_empty()),
        "the setsid'd descendant {escaped} survived stop"
    );
}

/// Where the daemon may make cgroups: the cgroup2 mount point (root, and a cgroup2 mount).
fn cgroup2_mount() -> Option<std::path::PathBuf> {
    let mount = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| {
            l.split(" - ")
                .nth(1)
                .is_some_and(|r| r.starts_with("cgroup2 "))
        })
        .and_then(|l| l.split(' ').nth(4).map(std::path::PathBuf::from));
    if !rustix::process::getuid().is_root() || mount.is_none() {
        eprintln!(
            "cgroups not usable here (not root or no cgroup2 mount): the guarantee does not apply"
        );
        return None;
    }
    mount
}

/// The cgroups of `project`'s services, `project:service`, under any daemon's root.
fn service_cgroups(mount: &std::path::Path, project: &str) -> Vec<std::path::PathBuf> {
    let prefix = format!("{project}:");
    std::fs::read_dir(mount)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|root| root.file_name().to_string_lossy().starts_with("harness-"))
        .flat_map(|root| {
            std::fs::read_dir(root.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .filter(|cg| cg.file_name().to_string_lossy().starts_with(&prefix))
        .map(|cg| cg.path())
        .collect()
}

/// No empty cgroup outlives what ran in it: not the one made for a launch that failed, not the
/// one of a service that ended on its own, nor the daemon's root once its services are stopped
/// (each was left in /sys/fs/cgroup before, one per such service and daemon, for good).
#[test]
fn no_cgroup_outlives_its_service() {
    let Some(mount) = cgroup2_mount() else {
        return;
    };
    let env = Env {
        home: tempfile::tempdir().unwrap(),
        dir: tempfile::tempdir().unwrap(),
        run: tempfile::tempdir().unwrap(),
    };
    std::fs::write(
        env.dir.path().join("services.yaml"),
        "name: cgleft\nservices:\n  runs:\n    command: [sleep, \"86425\"]\n  once:\n    command: [sh, -c, \"sleep 0.3\"]\n  missing:\n    command: [/nonexistent/program]\n",
    )
    .unwrap();
    let out = env.run(&["start"]);
    assert!(
        out.stderr.contains("/nonexistent/program"),
        "{} {}",
        out.stdout,
        out.stderr
    );
    assert!(
        wait_for(Duration::from_secs(10), || env
            .run(&["status", "-o", "json"])
            .stdout
            .contains("\"exited\"")),
        "{}",
        env.run(&["status"]).stdout
    );
    let names = |v: Vec<std::path::PathBuf>| -> Vec<String> {
        v.iter()
            .filter_map(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
            .collect()
    };
    assert!(
        wait_for(Duration::from_secs(5), || names(service_cgroups(
            &mount, "cgleft"
        )) == ["cgleft:runs"]),
        "only the running service has a cgroup: {:?}",
        service_cgroups(&mount, "cgleft")
    );
    let root = service_cgroups(&mount, "cgleft")[0]
        .parent()
        .unwrap()
        .to_path_buf();
    env.run(&["stop"]).ok();
    assert!(service_cgroups(&mount, "cgleft").is_empty());
    assert!(!root.exists(), "{} is left", root.display());
}

/// A relative bind mount (`./data:/data`) of a container on the local engine is the folder
/// beside services.yaml, as in Compose, also when the daemon was started from another folder
/// (before, the docker CLI resolved it against the daemon's working directory).
#[test]
fn a_relative_volume_is_beside_the_services_file_not_the_daemon() {
    let tb = Testbed::get();
    let yaml = format!(
        r#"name: relvol
services:
  box:
    type: docker
    image: "{image}"
    volumes: ["./data:/data:ro"]
    command: [sh, -c, "cat /data/marker.txt; exec sleep 1000"]
"#,
        image = tb.image,
    );
    let env = Env::new(&yaml);
    std::fs::create_dir(env.dir.path().join("data")).unwrap();
    std::fs::write(env.dir.path().join("data/marker.txt"), "beside-the-file\n").unwrap();
    // The daemon starts elsewhere: its working directory is not the project's.
    let out = env
        .cmd(&["daemon", "start"])
        .current_dir("/")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    env.run(&["start"]).ok();
    assert!(
        wait_for(Duration::from_secs(10), || env
            .run(&["logs", "box"])
            .stdout
            .contains("beside-the-file")),
        "the container did not see ./data: {}",
        env.run(&["logs", "box"]).stdout
    );
    env.run(&["stop"]).ok();
}
