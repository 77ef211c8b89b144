//! The daemon where the kernel offers no pidfds (Linux < 5.4, valgrind 3.19, seccomp filters),
//! forced here with `HARNESS_NO_PIDFD=1` (ADR 0046, addendum): each local service is watched by a
//! waiter thread of its own, and every guarantee of the pidfd path holds — the exit status comes
//! through, `restart` and `stop` end the process, and no zombie is left.

use std::time::Duration;

use crate::common::*;

/// Threads of `pid` named `harness-waiter`.
fn waiters(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .filter(|c| c.trim() == "harness-waiter")
                .count()
        })
        .unwrap_or(0)
}

/// Children of `parent` that are zombies.
fn zombie_children(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    let (_, rest) = s.rsplit_once(") ")?;
                    let f: Vec<&str> = rest.split_whitespace().collect();
                    Some(f.first()? == &"Z" && f.get(1)?.parse::<u32>().ok()? == parent)
                })
                .unwrap_or(false)
        })
        .collect()
}

#[test]
fn without_pidfds_services_report_their_end_restart_stop_and_leave_no_zombie() {
    let env = Env::new(
        "name: nopidfd
services:
  web:
    command: [sleep, \"300\"]
  killed:
    command: [sleep, \"300\"]
    restart: no
  job:
    command: 'sleep 0.5; exit 7'
    restart: no
",
    );
    let mut first = env.cmd(&["start", "web", "killed"]);
    first.env("HARNESS_NO_PIDFD", "1");
    run_command(first).ok();
    let daemon = env.daemon_pid().expect("daemon.json");
    let environ = std::fs::read(format!("/proc/{daemon}/environ")).unwrap();
    assert!(
        environ
            .split(|&b| b == 0)
            .any(|kv| kv == b"HARNESS_NO_PIDFD=1"),
        "the auto-started daemon runs without pidfds"
    );
    assert_eq!(waiters(daemon), 2, "one waiter thread per running service");

    // Its own end, status included: an exit code, and a signal from outside.
    env.run(&["start", "job"]).ok();
    env.wait_state("job", "exited", Duration::from_secs(10));
    let job = env.service("job");
    assert_eq!(job["state"]["kind"], "exited", "{job:#}");
    assert_eq!(job["state"]["code"], 7, "{job:#}");
    let killed = env
        .pids()
        .into_iter()
        .find(|(n, _)| n == "killed")
        .unwrap()
        .1;
    kill9(killed);
    env.wait_state("killed", "exited", Duration::from_secs(10));
    assert_eq!(env.service("killed")["state"]["signal"], 9);
    assert!(!alive(killed));

    // restart: a new process, the old one gone.
    let old = env.pids().into_iter().find(|(n, _)| n == "web").unwrap().1;
    env.run(&["restart", "web"]).ok();
    env.wait_state("web", "running", Duration::from_secs(10));
    let new = env.pids().into_iter().find(|(n, _)| n == "web").unwrap().1;
    assert_ne!(old, new);
    assert!(!alive(old));
    assert!(
        wait_until(Duration::from_secs(5), || waiters(daemon) == 1),
        "only web's waiter is left: {}",
        waiters(daemon)
    );

    env.run(&["stop"]).ok();
    assert_eq!(env.state_of("web"), "stopped");
    assert!(!alive(new));
    assert!(
        wait_until(Duration::from_secs(5), || waiters(daemon) == 0
            && zombie_children(daemon).is_empty()),
        "waiters {} zombies {:?}",
        waiters(daemon),
        zombie_children(daemon)
    );
}
