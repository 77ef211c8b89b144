//! Disk full (state directory, log directory) and open-file exhaustion.
//!
//! The guarantees checked (docs/adr/0031-storage-faults.md): a storage error never kills a
//! process before the change is recorded; the registry works again once space returns (redb is
//! reopened); status never shows a pid that is not the service's live process; no orphan, no
//! duplicate, also across a daemon restart; log lines that cannot be written are counted and
//! marked (`… N lines lost: no space left on device …`), and nothing is lost beyond that count;
//! a start over the open-file budget is refused with the numbers; a failed launch follows the
//! restart policy.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Env, Run, alive, processes_with_cmdline, wait_until};

/// A test's world with tmpfs mounts inside it; the daemon and services go first, then the mounts.
struct World {
    env: Option<Env>,
    mounts: Vec<PathBuf>,
}

impl World {
    fn new(yaml: &str) -> World {
        World {
            env: Some(Env::new(yaml)),
            mounts: Vec::new(),
        }
    }

    fn env(&self) -> &Env {
        self.env.as_ref().expect("env")
    }

    /// Mounts a tmpfs of `size` (e.g. "8m") at `path` (created).
    fn tmpfs(&mut self, path: &Path, size: &str) {
        std::fs::create_dir_all(path).expect("mount point");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount tmpfs on {} (these tests need root: run them through tests/run.sh): {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        self.mounts.push(path.to_path_buf());
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // Space back first, so that the daemon can record its stops.
        for m in &self.mounts {
            let _ = std::fs::remove_file(m.join(FILLER));
        }
        drop(self.env.take());
        for m in self.mounts.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }
}

const FILLER: &str = "zz-filler";

/// Keeps the file system of a directory full: fills it to the last byte, then keeps taking
/// every block that is freed (as another writer on a full disk does), until [`Filler::free`].
struct Filler {
    dir: PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Filler {
    fn fill(dir: &Path) -> Filler {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(FILLER))
            .expect("filler");
        let block = vec![0x5au8; 64 << 10];
        let mut total = 0u64;
        for size in [64usize << 10, 4096, 512, 1] {
            while let Ok(n @ 1..) = f.write(&block[..size]) {
                total += n as u64;
            }
        }
        eprintln!("filled {} with {total} bytes", dir.display());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                for size in [4096usize, 512, 1] {
                    while let Ok(1..) = f.write(&block[..size]) {}
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        });
        Filler {
            dir: dir.to_path_buf(),
            stop,
            thread: Some(thread),
        }
    }

    /// Space back.
    fn free(mut self) {
        self.release();
    }

    fn release(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(self.dir.join(FILLER));
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        self.release();
    }
}

/// Status as JSON, or the error when the daemon could not answer it.
fn status(env: &Env) -> Result<Vec<Value>, String> {
    let r = env.run(&["status", "-o", "json"]);
    if r.code != 0 {
        return Err(format!("exit {}: {}", r.code, r.stderr.trim()));
    }
    match serde_json::from_str(&r.stdout) {
        Ok(Value::Array(a)) => Ok(a),
        _ => Err(format!("not a list: {}", r.stdout)),
    }
}

fn entry<'a>(list: &'a [Value], name: &str) -> &'a Value {
    list.iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in status: {list:?}"))
}

fn shown(r: &Run) -> String {
    format!(
        "exit {}: {}{}",
        r.code,
        r.stdout.trim(),
        if r.stderr.trim().is_empty() {
            String::new()
        } else {
            format!(" / {}", r.stderr.trim())
        }
    )
}

/// Status tells the truth about `services` (each a `sleep <marker>`): a service shown running has
/// exactly the one live process with its marker, at the pid shown; one not shown running has none.
#[track_caller]
fn truthful(env: &Env, services: &[(&str, &str)]) -> Result<(), String> {
    let list = status(env)?;
    for (name, marker) in services {
        let procs = processes_with_cmdline(&["sleep", marker]);
        let e = entry(&list, name);
        let state = e["state"]["kind"].as_str().unwrap_or("");
        let pid = e["runtime"]["pid"].as_u64().map(|p| p as u32);
        if procs.len() > 1 {
            panic!("{name}: duplicate processes {procs:?} (status: {state} pid {pid:?})");
        }
        match state {
            "running" => assert_eq!(
                pid,
                procs.first().copied(),
                "{name} is shown running as pid {pid:?}, its live process is {procs:?}"
            ),
            "starting" | "stopping" => {}
            _ => assert!(
                procs.is_empty(),
                "{name} is shown {state} but process {procs:?} is alive (an orphan)"
            ),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------

const STATE_YAML: &str = "name: full
services:
  a:
    command: [sleep, '86501']
  b:
    command: [sleep, '86502']
  c:
    command: [sleep, '86503']
";
const SERVICES: [(&str, &str); 3] = [("a", "86501"), ("b", "86502"), ("c", "86503")];

/// HARNESS_HOME on a tmpfs that fills up: restart, stop and start neither kill a process they
/// cannot record nor start one twice; status is truthful throughout (or says it cannot answer);
/// after space returns everything works again without a daemon restart, and a daemon restart
/// afterwards leaves no orphan and no duplicate.
#[test]
fn state_dir_full_kills_nothing_unrecorded_and_recovers() {
    let mut w = World::new(STATE_YAML);
    let home = w.env().home().to_path_buf();
    w.tmpfs(&home, "16m");
    let env = w.env();
    env.run(&["start"]).ok();
    truthful(env, &SERVICES).expect("status before the fault");
    let before = status(env).expect("status");
    let pid = |list: &[Value], n: &str| entry(list, n)["runtime"]["pid"].as_u64().unwrap() as u32;
    let (pa, pb) = (pid(&before, "a"), pid(&before, "b"));
    env.run(&["stop", "c"]).ok();

    let filler = Filler::fill(&home);

    // restart: the definition cannot be saved, so nothing may be stopped.
    let r = env.run(&["restart", "a"]);
    eprintln!("restart a while full: {}", shown(&r));
    let a_procs = processes_with_cmdline(&["sleep", "86501"]);
    if r.code != 0 {
        assert_eq!(
            a_procs,
            vec![pa],
            "a failed restart must leave the old process running"
        );
    }
    assert!(a_procs.len() <= 1, "a runs twice: {a_procs:?}");

    // stop: either recorded and done, or refused and nothing killed.
    let r = env.run(&["stop", "b"]);
    eprintln!("stop b while full: {}", shown(&r));
    if r.code != 0 {
        assert!(alive(pb), "a refused stop killed b (pid {pb})");
    } else {
        assert!(!alive(pb), "stop said done but b (pid {pb}) is alive");
    }

    // start: a launch that cannot be recorded starts nothing.
    let r = env.run(&["start", "c"]);
    eprintln!("start c while full: {}", shown(&r));
    let c_procs = processes_with_cmdline(&["sleep", "86503"]);
    if r.code != 0 {
        assert!(
            c_procs.is_empty(),
            "a failed start left {c_procs:?} running"
        );
    }
    match truthful(env, &SERVICES) {
        Ok(()) => eprintln!("status while full: truthful"),
        Err(e) => eprintln!("status while full: not answered ({e})"),
    }

    // Space back: the next start works, no daemon restart needed.
    filler.free();
    let freed = Instant::now();
    let mut last = String::new();
    let recovered = wait_until(Duration::from_secs(20), || {
        let r = env.run(&["start"]);
        last = shown(&r);
        r.code == 0
    });
    assert!(recovered, "start after space returned: {last}");
    let took = freed.elapsed();
    truthful(env, &SERVICES).expect("status after recovery");
    let after = status(env).expect("status");
    for (name, _) in SERVICES {
        assert_eq!(
            entry(&after, name)["state"]["kind"],
            "running",
            "{name} after recovery: {after:?}"
        );
    }
    eprintln!(
        "state dir: recovered {} ms after space returned",
        took.as_millis()
    );

    // A daemon restart adopts what runs: no orphan, no duplicate.
    env.run(&["daemon", "stop"]).ok();
    let t = Instant::now();
    truthful(env, &SERVICES).expect("status after a daemon restart");
    let again = status(env).expect("status");
    for (name, _) in SERVICES {
        assert_eq!(entry(&again, name)["state"]["kind"], "running", "{name}");
        assert_eq!(
            entry(&again, name)["runtime"]["pid"],
            entry(&after, name)["runtime"]["pid"],
            "{name} was started again by the new daemon"
        );
    }
    eprintln!(
        "state dir: daemon restarted and re-attached in {} ms, no orphan, no duplicate",
        t.elapsed().as_millis()
    );
}

/// A service crashes while the state directory is full (`restart: always`): status does not show
/// the dead pid as running, nothing is started that cannot be recorded, and once space returns
/// the service runs again, once.
#[test]
fn crash_while_state_dir_full_is_recorded_and_restarted_once_space_returns() {
    let mut w = World::new(
        "name: crash\nservices:\n  w:\n    command: [sleep, '86601']\n    restart:\n      policy: always\n      backoff: {initial: 100ms, max: 500ms}\n",
    );
    let home = w.env().home().to_path_buf();
    w.tmpfs(&home, "16m");
    let env = w.env();
    env.run(&["start"]).ok();
    let first = entry(&status(env).expect("status"), "w")["runtime"]["pid"]
        .as_u64()
        .unwrap() as u32;
    let filler = Filler::fill(&home);
    crate::common::kill9(first);
    std::thread::sleep(Duration::from_millis(1500));
    let procs = processes_with_cmdline(&["sleep", "86601"]);
    match status(env) {
        Ok(list) => {
            let e = entry(&list, "w");
            eprintln!(
                "crash while full: status says {} pid {}, live processes {procs:?}",
                e["state"]["kind"], e["runtime"]["pid"]
            );
            truthful(env, &[("w", "86601")]).expect("status while full");
        }
        Err(e) => eprintln!("crash while full: status not answered ({e}); live {procs:?}"),
    }
    assert!(procs.len() <= 1, "two copies: {procs:?}");
    filler.free();
    let freed = Instant::now();
    assert!(
        wait_until(Duration::from_secs(20), || {
            status(env).is_ok_and(|l| entry(&l, "w")["state"]["kind"] == "running")
        }),
        "not running again after space returned: {:?}",
        status(env)
    );
    let took = freed.elapsed();
    truthful(env, &[("w", "86601")]).expect("status after recovery");
    let procs = processes_with_cmdline(&["sleep", "86601"]);
    assert_eq!(procs.len(), 1, "{procs:?}");
    assert_ne!(procs[0], first);
    eprintln!(
        "crash while full: running again (pid {}) {} ms after space returned",
        procs[0],
        took.as_millis()
    );
}

// ---------------------------------------------------------------------------------------------

/// The service's log directory fills up while it writes: the lines the log file cannot take are
/// counted and marked, stderr included, nothing else is lost, and writing resumes when space
/// returns (the traceback at the end is there).
#[test]
fn log_dir_full_counts_and_marks_lost_lines_then_resumes() {
    let env_dir = tempfile::tempdir().expect("tempdir");
    let go = env_dir.path().join("go");
    let go2 = env_dir.path().join("go2");
    // Phase 1 before the fault, phase 2 while the disk is full, phase 3 after; every 10th line
    // also on stderr; a traceback to finish.
    let script = format!(
        r#"
import os, sys, time
def phase(a, b):
    for i in range(a, b):
        print(f"line {{i}}")
        if i % 10 == 0:
            print(f"err {{i}}", file=sys.stderr)
        if i % 500 == 0:
            sys.stdout.flush(); sys.stderr.flush(); time.sleep(0.01)
    sys.stdout.flush(); sys.stderr.flush()
def wait(p):
    while not os.path.exists(p):
        time.sleep(0.02)
phase(0, 5000)
wait({go:?})
phase(5000, 25000)
open({go:?} + ".done", "w").close()
wait({go2:?})
phase(25000, 30000)
raise RuntimeError("boom at the end")
"#
    );
    let yaml = format!(
        "name: chat\nservices:\n  chatty:\n    binary: python3\n    args: ['-u', '-c', {}]\n",
        serde_json::to_string(&script).unwrap()
    );
    let mut w = World::new(&yaml);
    let svc_dir = w.env().home().join("projects/chat/services/chatty");
    w.tmpfs(&svc_dir, "8m");
    let env = w.env();
    env.run(&["start"]).ok();
    assert!(
        wait_until(Duration::from_secs(20), || log_texts(env)
            .contains("line 4999")),
        "phase 1 never reached the log"
    );
    let filler = Filler::fill(&svc_dir);
    std::fs::write(&go, "").unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || go
            .with_extension("done")
            .exists()),
        "phase 2 did not finish"
    );
    // Give the pump time to read all of phase 2 while the disk is still full.
    std::thread::sleep(Duration::from_millis(800));
    let during = logs_json(env);
    let pending: u64 = markers(&during).iter().map(|(_, n)| n).sum();
    eprintln!("log dir: while full, `harness logs` marks {pending} lost lines");
    assert!(pending > 0, "no gap marker while the disk is full");
    // A daemon restart while the disk is still full keeps the count (it is kept with the
    // offsets, overwritten in place) and re-reads nothing.
    env.run(&["daemon", "stop"]).ok();
    let t = Instant::now();
    let after_restart: u64 = markers(&logs_json(env)).iter().map(|(_, n)| n).sum();
    eprintln!(
        "log dir: daemon restarted while full in {} ms; `harness logs` marks {after_restart} lost lines",
        t.elapsed().as_millis()
    );
    assert_eq!(after_restart, pending, "a daemon restart changed the count");

    filler.free();
    let freed = Instant::now();
    std::fs::write(&go2, "").unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || log_texts(env)
            .contains("RuntimeError: boom at the end")),
        "the traceback never reached the log: {}",
        tail_of(&log_texts(env))
    );
    let took = freed.elapsed();

    let lines = logs_json(env);
    let mut seen_out = BTreeSet::new();
    let mut seen_err = BTreeSet::new();
    for l in &lines {
        let text = l["text"].as_str().unwrap_or("");
        if let Some(n) = text
            .strip_prefix("line ")
            .and_then(|n| n.parse::<u32>().ok())
        {
            assert_eq!(l["stream"], "stdout");
            seen_out.insert(n);
        } else if let Some(n) = text
            .strip_prefix("err ")
            .and_then(|n| n.parse::<u32>().ok())
        {
            assert_eq!(l["stream"], "stderr");
            seen_err.insert(n);
        }
    }
    let counted = markers(&lines);
    let counted_out: u64 = counted
        .iter()
        .filter(|(s, _)| s == "stdout")
        .map(|(_, n)| n)
        .sum();
    let counted_err: u64 = counted
        .iter()
        .filter(|(s, _)| s == "stderr")
        .map(|(_, n)| n)
        .sum();
    let lost_out = 30_000 - seen_out.len() as u64;
    let lost_err = 3_000 - seen_err.len() as u64;
    eprintln!(
        "log dir: stdout lost {lost_out} lines, counted {counted_out}; stderr lost {lost_err}, \
         counted {counted_err}; markers: {counted:?}; writing resumed, traceback in the log {} ms \
         after space returned",
        took.as_millis()
    );
    assert!(
        lost_out > 0,
        "the fault lost nothing: the test did not fill the disk"
    );
    assert_eq!(
        lost_out, counted_out,
        "stdout lines lost beyond the counted gap"
    );
    assert_eq!(
        lost_err, counted_err,
        "stderr lines lost beyond the counted gap"
    );
    assert!(
        (0..5000)
            .chain(25_000..30_000)
            .all(|i| seen_out.contains(&i)),
        "lines written before the fault or after space returned are missing"
    );
    // The marker is in the file, not only in memory: a fresh read shows it once.
    let file = std::fs::read_to_string(svc_dir.join("chatty.log")).unwrap_or_default();
    assert!(
        file.contains("lines lost: no space left on device"),
        "no marker in the log file"
    );
}

fn logs_json(env: &Env) -> Vec<Value> {
    let r = env.run(&["logs", "chatty", "-o", "json"]).ok();
    r.stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn log_texts(env: &Env) -> String {
    env.run(&["logs", "chatty"]).stdout
}

fn tail_of(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// (stream, count) of every gap marker.
fn markers(lines: &[Value]) -> Vec<(String, u64)> {
    lines
        .iter()
        .filter_map(|l| {
            let text = l["text"].as_str()?;
            let rest = text.strip_prefix("… ")?;
            let (n, tail) = rest.split_once(' ')?;
            tail.starts_with("lines lost: ")
                .then(|| Some((l["stream"].as_str()?.to_owned(), n.parse().ok()?)))?
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------

/// The daemon started with a hard open-file limit of 460: `daemon status` reports how many
/// services that allows, a start over it is refused with the numbers while the daemon keeps
/// answering, and a start within it runs every service.
#[test]
fn low_open_file_limit_refuses_clearly_and_keeps_answering() {
    let n = 20;
    let mut yaml = String::from("name: many\nservices:\n");
    for i in 0..n {
        yaml.push_str(&format!("  s{i}:\n    command: [sleep, '8660{i:02}']\n"));
    }
    let env = Env::new(&yaml);
    // The daemon is started by this CLI (autostart) and inherits its limits.
    let cmd = env.cmd(&["status"]);
    let mut limited = Command::new("prlimit");
    limited
        .arg("--nofile=460:460")
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .current_dir(env.dir.path());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => limited.env(k, v),
            None => limited.env_remove(k),
        };
    }
    crate::common::run_command(limited).ok();
    let st = env.run(&["daemon", "status", "-o", "json"]).ok().json();
    eprintln!(
        "fds: daemon open-file limit {}, max services {}",
        st["open_files_limit"], st["max_services"]
    );
    assert_eq!(st["open_files_limit"], 460);
    let max = st["max_services"].as_u64().unwrap() as usize;
    assert_eq!(max, (460 - 400) / 5);

    let t = Instant::now();
    let r = env.run(&["start"]);
    eprintln!(
        "fds: start of {n} services: {} ({} ms)",
        shown(&r),
        t.elapsed().as_millis()
    );
    assert_ne!(r.code, 0, "a start over the budget succeeded");
    assert!(
        r.stderr.contains("open-file limit is 460") && r.stderr.contains("ulimit -Hn"),
        "the refusal does not name the limit and the way out: {}",
        r.stderr
    );
    // The daemon keeps answering.
    env.run(&["daemon", "status", "-o", "json"]).ok();
    // Within the budget every service runs.
    let within: Vec<String> = (0..max).map(|i| format!("s{i}")).collect();
    let mut args = vec!["start"];
    args.extend(within.iter().map(String::as_str));
    env.run(&args).ok();
    let running = env
        .status()
        .into_iter()
        .filter(|s| s["state"]["kind"] == "running")
        .count();
    eprintln!("fds: {running} of {max} allowed services running");
    assert_eq!(running, max);
}

/// The daemon's descriptors run out for real (its soft `RLIMIT_NOFILE` lowered with `prlimit` to
/// a few above what it holds): launches fail one by one with a per-service error naming the
/// cause and the way out, the daemon keeps answering, and under `restart: always` every failed
/// launch is retried until all services run once descriptors are available again.
#[test]
fn exhausted_descriptors_fail_launches_per_service_and_restart_always_recovers() {
    let n = 12;
    let mut yaml = String::from("name: fdx\nservices:\n");
    for i in 0..n {
        yaml.push_str(&format!(
            "  s{i}:\n    command: [sleep, '8680{i:02}']\n    restart:\n      policy: always\n      backoff: {{initial: 200ms, max: 1s}}\n"
        ));
    }
    let env = Env::new(&yaml);
    env.run(&["status"]).ok();
    let daemon = env.daemon_pid().expect("daemon pid");
    let fds = || std::fs::read_dir(format!("/proc/{daemon}/fd")).map_or(0, |d| d.count());
    let set_soft = |soft: usize| {
        let out = Command::new("prlimit")
            .arg("--pid")
            .arg(daemon.to_string())
            .arg(format!("--nofile={soft}:"))
            .output()
            .expect("prlimit");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let open = fds();
    // Room for the start request's connection and little more.
    set_soft(open + 6);
    let t = Instant::now();
    let r = env.run(&["start"]);
    eprintln!(
        "fdx: daemon held {open} fds, limit set to {}: start exit {} in {} ms\n{}{}",
        open + 6,
        r.code,
        t.elapsed().as_millis(),
        r.stdout,
        r.stderr
    );
    let failed = r.stderr.matches("Too many open files").count();
    assert!(failed > 0, "no launch ran out of descriptors: {}", r.stderr);
    assert!(
        r.stderr.contains("raise its open-file limit") && r.stderr.contains("retrying"),
        "the per-service error does not say what happens and what to do: {}",
        r.stderr
    );
    // The daemon keeps answering (a status needs one descriptor).
    let answered = status(&env);
    eprintln!(
        "fdx: status while exhausted: {}",
        if answered.is_ok() {
            "answered"
        } else {
            "not answered"
        }
    );
    set_soft(4096);
    let freed = Instant::now();
    let all_running = wait_until(Duration::from_secs(30), || {
        status(&env)
            .is_ok_and(|l| l.iter().filter(|s| s["state"]["kind"] == "running").count() == n)
    });
    let list = status(&env).expect("the daemon answers");
    let restarts: u64 = list
        .iter()
        .map(|s| s["restart_count"].as_u64().unwrap_or(0))
        .sum();
    eprintln!(
        "fdx: {failed} launches failed with EMFILE; all {n} running: {all_running}, {} ms after \
         the limit was raised; {restarts} retried launches",
        freed.elapsed().as_millis()
    );
    assert!(all_running, "{list:?}");
    for i in 0..n {
        let procs = processes_with_cmdline(&["sleep", &format!("8680{i:02}")]);
        assert_eq!(procs.len(), 1, "s{i}: {procs:?}");
    }
}

/// A launch that fails (its program is missing) is retried under `restart: always`, and the
/// service runs once the program appears.
#[test]
fn failed_launch_follows_the_restart_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let program = dir.path().join("later.sh");
    let yaml = format!(
        "name: retry\nservices:\n  late:\n    command: [{p:?}]\n    restart:\n      policy: always\n      backoff: {{initial: 200ms, max: 1s}}\n",
        p = program.display().to_string()
    );
    let env = Env::new(&yaml);
    let r = env.run(&["start"]);
    eprintln!(
        "restart policy: start with the program missing: {}",
        shown(&r)
    );
    assert_ne!(r.code, 0, "a failed launch was reported as started");
    std::fs::write(&program, "#!/bin/sh\nexec sleep 86700\n").unwrap();
    std::fs::set_permissions(
        &program,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let t = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || env.state_of("late")
            == "running"),
        "not retried: {:#}",
        env.service("late")
    );
    eprintln!(
        "restart policy: running {} ms after the program appeared",
        t.elapsed().as_millis()
    );
    let procs = processes_with_cmdline(&["sleep", "86700"]);
    assert_eq!(procs.len(), 1, "{procs:?}");
}

/// Operations while the state directory is full (ADR 0035): steps keep being recorded in memory
/// (`ops show` lists health checks made while nothing could be written), cancel still works, and
/// once space returns the whole operation reaches the store: a new daemon shows it cancelled
/// with every check, not `interrupted`.
#[test]
fn operation_steps_recorded_while_the_state_dir_is_full_reach_the_store_once_space_returns() {
    const STUCK: &str = "name: opsfull
services:
  db:
    command: [sleep, '86531']
    health_check:
      command: [sh, -c, 'exit 1']
      interval: 200ms
      timeout: 1s
      start_period: 1h
    startup_timeout: 10m
";
    let mut w = World::new(STUCK);
    let home = w.env().home().to_path_buf();
    w.tmpfs(&home, "16m");
    let env = w.env();
    let mut child = env
        .cmd(&["start"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn start");
    let checks = |env: &Env, id: u64| -> usize {
        let r = env.run(&["ops", "show", &id.to_string(), "-o", "json"]);
        serde_json::from_str::<Value>(&r.stdout)
            .ok()
            .and_then(|o| {
                o["steps"]
                    .as_array()
                    .map(|s| s.iter().filter(|s| s["kind"] == "health_check").count())
            })
            .unwrap_or(0)
    };
    let mut id = 0;
    assert!(wait_until(Duration::from_secs(20), || {
        let r = env.run(&["ops", "--running", "-o", "json"]);
        id = serde_json::from_str::<Value>(&r.stdout)
            .ok()
            .and_then(|v| v["operations"][0]["id"].as_u64())
            .unwrap_or(0);
        id > 0 && checks(env, id) >= 2
    }));
    let filler = Filler::fill(&home);
    let at_fill = checks(env, id);
    assert!(
        wait_until(Duration::from_secs(10), || checks(env, id) >= at_fill + 5),
        "health checks stopped being recorded while the disk was full"
    );
    let cancel = env.run(&["ops", "cancel", &id.to_string()]);
    eprintln!("ops cancel while full: {}", shown(&cancel));
    assert_eq!(cancel.code, 0, "{}", shown(&cancel));
    assert!(wait_until(Duration::from_secs(10), || child
        .try_wait()
        .ok()
        .flatten()
        .is_some()));
    let in_memory = checks(env, id);
    let log = std::fs::read_to_string(home.join("daemon.log")).unwrap_or_default();
    let refused = log.matches("operation not recorded yet").count();
    eprintln!("writes of the operation refused while full: {refused}");
    assert!(
        refused > 0,
        "the disk never refused a write of the operation"
    );
    filler.free();
    // The writer retries every 500 ms; then the operation leaves memory for the store.
    assert!(wait_until(Duration::from_secs(10), || {
        let r = env.run(&["ops", "--running", "-o", "json"]);
        r.code == 0 && r.stdout.contains("\"operations\": []")
    }));
    std::thread::sleep(Duration::from_secs(1));
    env.run(&["daemon", "stop"]).ok();
    let stored: Value = serde_json::from_str(
        &env.run(&["ops", "show", &id.to_string(), "-o", "json"])
            .ok()
            .stdout,
    )
    .expect("json");
    assert_eq!(stored["outcome"]["status"], "cancelled", "{stored}");
    let n = stored["steps"]
        .as_array()
        .map(|s| s.iter().filter(|s| s["kind"] == "health_check").count())
        .unwrap_or(0);
    assert!(
        n >= in_memory,
        "{n} checks stored, {in_memory} seen before space returned"
    );
    eprintln!(
        "operation {id}: {at_fill} checks before the disk filled, {in_memory} when cancelled, {n} in the store after space returned"
    );
    env.run(&["stop"]).ok();
}
