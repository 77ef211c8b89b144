//! A host that stops answering (its link down, or its sshd killed) during start, stop, exec and
//! log following (ADR 0032): status says `unknown` with since-when instead of what it cannot
//! verify, a stop is pending (non-zero exit) and finished by the daemon when the host answers, a
//! start never runs a second copy, and no line of output is lost.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use testbed::Testbed;

use crate::common::faults::{
    assert_contiguous, counted, entry, host_lock, hosts_yaml, next, processes, rounds, seed, state,
    wait_for,
};
use crate::common::testbed_env::Env;

/// A service that prints `line N` 20 times a second (`$$`: Compose interpolation).
const COUNTER: &str = "i=0; while :; do echo line $$i; i=$$((i+1)); sleep 0.05; done";

/// `harness logs -F NAME` in the background, its lines collected.
struct Follow {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Follow {
    fn start(env: &Env, name: &str) -> Follow {
        let mut child = env
            .cmd(&["logs", "-F", name])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        Follow {
            child,
            lines,
            reader: Some(reader),
        }
    }

    fn numbers(&self) -> Vec<u64> {
        counted(&self.lines.lock().unwrap().join("\n"))
    }

    fn last(&self) -> u64 {
        self.numbers().last().copied().unwrap_or(0)
    }

    fn finish(mut self) -> Vec<u64> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.numbers()
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lines from the first one seen: `first, first+1, ...`.
#[track_caller]
fn assert_from_first(what: &str, seq: &[u64]) {
    let first = seq.first().copied().unwrap_or(0);
    let shifted: Vec<u64> = seq.iter().map(|n| n - first).collect();
    assert_contiguous(what, &shifted);
}

#[test]
fn a_stop_while_the_link_is_down_is_pending_and_finished_when_the_host_answers() {
    let mut fault = host_lock();
    let tb = Testbed::get();
    let env = Env::new(&format!(
        "name: faultlink\n{}services:\n  r1:\n    host: h1\n    command: [sleep, '86431']\n",
        hosts_yaml(tb)
    ));
    let argv = ["sleep", "86431"];
    env.run(&["start"]).ok();
    let first = processes(&argv);
    assert_eq!(first.len(), 1, "one copy after start: {first:?}");
    let pid = first[0];

    fault.link_down("h1");
    let detected = wait_for(Duration::from_secs(30), || state(&env, "r1") == "unknown")
        .unwrap_or_else(|| panic!("r1 not unknown with h1's link down: {}", entry(&env, "r1")));
    let e = entry(&env, "r1");
    assert_eq!(e["state"]["host"], "h1", "{e}");
    assert!(e["state"]["since"].is_string(), "{e}");
    let table = env.run(&["status"]).ok().stdout;
    assert!(
        table.contains("unknown: h1 unreachable since"),
        "the table says what is known: {table}"
    );

    // exec cannot reach the host: it fails and says which host.
    let t = Instant::now();
    let exec = env.run(&["exec", "r1", "--", "echo", "hi"]);
    let exec_took = t.elapsed();
    assert_ne!(exec.code, 0, "exec on an unreachable host: {}", exec.stdout);
    assert!(
        exec.stderr.contains("h1 has not answered since"),
        "exec names the host: {}",
        exec.stderr
    );

    let t = Instant::now();
    let stop = env.run(&["stop", "r1"]);
    let stop_took = t.elapsed();
    assert_ne!(
        stop.code, 0,
        "a stop that could not be done must not succeed: {}",
        stop.stdout
    );
    assert!(
        stop.stdout.contains("r1") && stop.stdout.contains("not stopped yet: h1 unreachable"),
        "stop says why: {}\n{}",
        stop.stdout,
        stop.stderr
    );
    let e = entry(&env, "r1");
    assert_eq!(e["state"]["kind"], "unknown", "{e}");
    assert_eq!(e["state"]["stop_pending"], true, "{e}");

    // A start while the old run may be alive: refused, naming the host; still one copy.
    let start = env.run(&["start"]);
    assert_ne!(start.code, 0, "start: {}", start.stdout);
    let said = format!("{}{}", start.stdout, start.stderr);
    assert!(
        said.contains("h1 has not answered since"),
        "start names the host: {said}"
    );
    assert_eq!(
        processes(&argv),
        vec![pid],
        "no second copy while h1 is away"
    );
    assert!(tb.pid_alive_on("h1", pid));

    fault.link_up("h1");
    let t = Instant::now();
    let finished = wait_for(Duration::from_secs(60), || state(&env, "r1") == "stopped")
        .unwrap_or_else(|| {
            panic!(
                "the pending stop did not finish after h1 came back: {}",
                entry(&env, "r1")
            )
        });
    assert!(
        wait_for(Duration::from_secs(5), || !tb.pid_alive_on("h1", pid)).is_some(),
        "stopped, but {pid} lives on h1"
    );
    let recovered = t.elapsed();

    env.run(&["start"]).ok();
    assert_eq!(
        processes(&argv).len(),
        1,
        "one copy after the host returned"
    );
    env.run(&["stop"]).ok();
    assert!(wait_for(Duration::from_secs(5), || processes(&argv).is_empty()).is_some());
    eprintln!(
        "link down during stop: unknown after {:.1} s; exec failed in {:.1} s; stop answered \
         (pending, exit {}) in {:.1} s; stop finished {:.1} s after link up ({:.1} s until the \
         process was gone); no duplicate",
        detected.as_secs_f64(),
        exec_took.as_secs_f64(),
        stop.code,
        stop_took.as_secs_f64(),
        finished.as_secs_f64(),
        recovered.as_secs_f64()
    );
}

#[test]
fn a_link_down_makes_a_running_service_unknown_then_running_and_loses_no_line() {
    let mut fault = host_lock();
    let tb = Testbed::get();
    let env = Env::new(&format!(
        "name: faultflap\n{}services:\n  c2:\n    host: h2\n    command: [sh, -c, '{COUNTER}']\n    health_check: {{command: 'true', interval: 1s}}\n",
        hosts_yaml(tb)
    ));
    let argv = ["sh", "-c", &COUNTER.replace("$$", "$")];
    env.run(&["start"]).ok();
    let follow = Follow::start(&env, "c2");
    assert!(wait_for(Duration::from_secs(10), || follow.last() >= 20).is_some());

    fault.link_down("h2");
    let at_down = follow.last();
    let detected = wait_for(Duration::from_secs(30), || state(&env, "c2") == "unknown")
        .unwrap_or_else(|| panic!("c2 not unknown with h2's link down: {}", entry(&env, "c2")));
    // Its health check cannot reach h2: the health is unknown, not failing (before: it went on
    // showing the last result, then failures once ssh gave up, ~19 s in).
    let e = entry(&env, "c2");
    assert_eq!(e["health"]["status"], "unknown", "{e}");
    assert!(
        e["health"]["last_output"]
            .as_str()
            .is_some_and(|o| o.contains("not checked: h2 unreachable since")),
        "{e}"
    );
    std::thread::sleep(Duration::from_secs(2));
    let e = entry(&env, "c2");
    assert_eq!(e["health"]["status"], "unknown", "still unknown: {e}");
    fault.link_up("h2");
    let back = wait_for(Duration::from_secs(30), || state(&env, "c2") == "running")
        .unwrap_or_else(|| panic!("c2 not running after link up: {}", entry(&env, "c2")));
    assert!(
        wait_for(
            Duration::from_secs(10),
            || entry(&env, "c2")["health"]["status"] == "healthy"
        )
        .is_some(),
        "checked again once h2 answers: {}",
        entry(&env, "c2")
    );
    // Everything written on h2 meanwhile arrives.
    let outage_lines = (detected + Duration::from_secs(2)).as_millis() as u64 / 50;
    let caught_up = wait_for(Duration::from_secs(30), || {
        follow.last() >= at_down + outage_lines + 20
    })
    .expect("the follower caught up with what h2 wrote during the outage");
    assert_eq!(processes(&argv).len(), 1, "one copy all along");
    env.run(&["stop"]).ok();
    let followed = follow.finish();
    assert_from_first("harness logs -F across the outage", &followed);
    let all = counted(&env.run(&["logs", "c2"]).ok().stdout);
    assert_contiguous("harness logs after the outage", &all);
    assert!(wait_for(Duration::from_secs(5), || processes(&argv).is_empty()).is_some());
    eprintln!(
        "link down while running: unknown after {:.1} s; running again {:.1} s after link up; \
         followers caught up {:.1} s later; {} lines, none lost or doubled",
        detected.as_secs_f64(),
        back.as_secs_f64(),
        caught_up.as_secs_f64(),
        all.len()
    );
}

#[test]
fn sshd_killed_during_exec_stop_and_log_following_loses_nothing_and_leaves_no_orphan() {
    let mut fault = host_lock();
    let tb = Testbed::get();
    let env = Env::new(&format!(
        "name: faultsshd\n{}services:\n  c3:\n    host: h3\n    command: [sh, -c, '{COUNTER}']\n",
        hosts_yaml(tb)
    ));
    let argv = ["sh", "-c", &COUNTER.replace("$$", "$")];
    env.run(&["start"]).ok();
    let follow = Follow::start(&env, "c3");
    assert!(wait_for(Duration::from_secs(10), || follow.last() >= 20).is_some());
    let pid = processes(&argv)[0];

    fault.sshd_kill("h3");
    let t = Instant::now();
    let exec = env.run(&["exec", "c3", "--", "echo", "hi"]);
    let exec_took = t.elapsed();
    assert_ne!(exec.code, 0, "exec without sshd: {}", exec.stdout);
    assert!(
        exec.stderr.contains("refused") || exec.stderr.contains("h3"),
        "exec says why: {}",
        exec.stderr
    );
    let detected = wait_for(Duration::from_secs(30), || state(&env, "c3") == "unknown")
        .unwrap_or_else(|| panic!("c3 not unknown without sshd: {}", entry(&env, "c3")));
    let t = Instant::now();
    let stop = env.run(&["stop"]);
    let stop_took = t.elapsed();
    assert_ne!(stop.code, 0, "stop without sshd: {}", stop.stdout);
    assert!(
        stop.stdout.contains("not stopped yet"),
        "{}\n{}",
        stop.stdout,
        stop.stderr
    );
    assert!(
        tb.pid_alive_on("h3", pid),
        "the service outlives its host's sshd"
    );
    let written = follow.last();

    fault.sshd_start("h3");
    let finished = wait_for(Duration::from_secs(60), || state(&env, "c3") == "stopped")
        .unwrap_or_else(|| panic!("the stop did not finish: {}", entry(&env, "c3")));
    assert!(
        wait_for(Duration::from_secs(5), || processes(&argv).is_empty()).is_some(),
        "orphan on h3 after the stop"
    );
    // What it wrote while sshd was down reached the log.
    let all = counted(&env.run(&["logs", "c3"]).ok().stdout);
    assert_contiguous("harness logs after sshd came back", &all);
    assert!(
        all.len() as u64 > written + 20,
        "lines written while sshd was down are missing: {} <= {written}",
        all.len()
    );
    std::thread::sleep(Duration::from_millis(500));
    let followed = follow.finish();
    assert_from_first("harness logs -F across sshd's restart", &followed);
    eprintln!(
        "sshd killed: exec failed in {:.2} s; unknown after {:.1} s; stop answered (pending) in \
         {:.1} s and finished {:.1} s after sshd was back; {} lines, none lost",
        exec_took.as_secs_f64(),
        detected.as_secs_f64(),
        stop_took.as_secs_f64(),
        finished.as_secs_f64(),
        all.len()
    );
}

#[test]
fn sshd_killed_during_start_never_leaves_two_copies() {
    let mut fault = host_lock();
    let tb = Testbed::get();
    let env = Env::new(&format!(
        "name: faultstart\n{}services:\n  s3:\n    host: h3\n    command: [sleep, '86432']\n",
        hosts_yaml(tb)
    ));
    let argv = ["sleep", "86432"];
    let mut seed = seed();
    for round in 0..rounds(3) {
        let delay = Duration::from_millis(next(&mut seed) % 301);
        let mut start = env
            .cmd(&["start"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        fault.sshd_kill("h3");
        let code = start.wait().unwrap().code();
        let during = processes(&argv).len();
        assert!(during <= 1, "round {round}: {during} copies");
        fault.sshd_start("h3");
        // The daemon notices the host again, then a start leaves exactly one copy.
        let t = Instant::now();
        let again = wait_for(Duration::from_secs(60), || {
            let r = env.run(&["start"]);
            r.code == 0 && processes(&argv).len() == 1
        });
        assert!(
            again.is_some(),
            "round {round}: no single copy after sshd came back: {:?}, status {:?}",
            processes(&argv),
            env.status()
        );
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(processes(&argv).len(), 1, "round {round}: a late duplicate");
        stop_leaves_nothing(&env, round, &argv);
        eprintln!(
            "round {round}: sshd killed {delay:?} into start (start exit {code:?}, {during} copy \
             then); one copy {:.1} s after sshd was back; none after stop",
            t.elapsed().as_secs_f64()
        );
    }
}

#[test]
fn a_link_down_during_start_never_leaves_two_copies() {
    let mut fault = host_lock();
    let tb = Testbed::get();
    let env = Env::new(&format!(
        "name: faultlinkstart\n{}services:\n  s1:\n    host: h1\n    command: [sleep, '86433']\n",
        hosts_yaml(tb)
    ));
    let argv = ["sleep", "86433"];
    // A connection to h1 exists already, as in real use.
    env.run(&["start"]).ok();
    env.run(&["stop"]).ok();
    let mut seed = seed();
    for round in 0..rounds(2) {
        let delay = Duration::from_millis(next(&mut seed) % 301);
        let t = Instant::now();
        let start = env
            .cmd(&["start"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        fault.link_down("h1");
        let out = start.wait_with_output().unwrap();
        let start_took = t.elapsed();
        let during = processes(&argv).len();
        assert!(during <= 1, "round {round}: {during} copies");
        let said = state(&env, "s1");
        // Whatever start said, status claims `running` only with the process there.
        if said == "running" {
            assert_eq!(during, 1, "round {round}: running without its process");
        }
        fault.link_up("h1");
        let t = Instant::now();
        let again = wait_for(Duration::from_secs(60), || {
            let r = env.run(&["start"]);
            r.code == 0 && processes(&argv).len() == 1 && state(&env, "s1") == "running"
        });
        assert!(
            again.is_some(),
            "round {round}: no single running copy after link up: {:?}, {}",
            processes(&argv),
            entry(&env, "s1")
        );
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(processes(&argv).len(), 1, "round {round}: a late duplicate");
        stop_leaves_nothing(&env, round, &argv);
        eprintln!(
            "round {round}: link down {delay:?} into start: start answered in {:.1} s (exit {:?}, \
             {during} copy, status {said}); one running copy {:.1} s after link up; none after stop",
            start_took.as_secs_f64(),
            out.status.code(),
            t.elapsed().as_secs_f64()
        );
    }
}

/// Stops everything once the host is back: nothing may be left. Right after h3 came back, a
/// stop's session may still fail once (ssh exit 255 on a connection made before the restart,
/// seen once in CI): the stop is then pending, as documented, and finished when h3 answers.
fn stop_leaves_nothing(env: &Env, round: u32, argv: &[&str]) {
    let stop = env.run(&["stop"]);
    assert!(
        stop.code == 0 || (stop.code == 1 && stop.stdout.contains("not stopped yet")),
        "round {round}: {}\n{}",
        stop.stdout,
        stop.stderr
    );
    let limit = Duration::from_secs(if stop.code == 0 { 5 } else { 30 });
    let done = wait_for(limit, || {
        processes(argv).is_empty() && env.status().iter().all(|s| s["state"]["kind"] == "stopped")
    });
    assert!(
        done.is_some(),
        "round {round}: orphan after stop ({}): {:?}",
        stop.stdout,
        env.status()
    );
}

/// Processes stopped with SIGSTOP, continued on drop (also when the test panics), with their
/// parents: sudo stops itself when its command stops, and would stay stopped.
struct Stalled(Vec<u32>);

impl Stalled {
    /// Signals at once (no `kill` process: a step of a frozen process must stay short).
    fn signal(pids: &[u32], sig: libc::c_int) {
        for &p in pids {
            // SAFETY: kill(2) takes plain integers; a pid that is gone gives ESRCH, ignored.
            unsafe { libc::kill(p as libc::pid_t, sig) };
        }
    }
}

impl Drop for Stalled {
    fn drop(&mut self) {
        Stalled::signal(&self.0, libc::SIGCONT);
        let parents: Vec<u32> = self.0.iter().filter_map(|&p| parent_of(p)).collect();
        Stalled::signal(&parents, libc::SIGCONT);
    }
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(") ")
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The uid a process runs as (the real one, from /proc).
fn uid_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// What made 366-437 of 500 stops at 50 hosts falsely `pending` (bench/results-scale-2026-12-05.md):
/// the host's log follower, the only thing the daemon heard the host by, was late under load,
/// and a host silent for 5 s counted as unreachable although it answered every operation. Here
/// the follower of h3 (as hbsvc, which no other test of this binary uses there) is frozen with
/// SIGSTOP while h3 answers: its 20 services stay `running`, and a stop of all of them is done
/// (exit 0, nothing pending, no process left). Before the fix: `unknown` after 5 s, the stop
/// exited 1 with every service `not stopped yet: h3 unreachable`.
#[test]
fn a_host_that_answers_is_not_unreachable_when_its_follower_is_late() {
    // Not a host fault, but the other tests of h3 must not break h3 meanwhile.
    let _fault = host_lock();
    let tb = Testbed::get();
    let key = tb.var("TB_SSH_KEY").unwrap();
    let mut yaml = format!(
        "name: faultlate\nhosts:\n  h3: {{address: {}, user: hbuser, identity_file: {key}, sudo: true}}\nservices:\n",
        tb.host("h3").addr
    );
    const N: usize = 20;
    for i in 0..N {
        yaml.push_str(&format!(
            "  s{i}:\n    host: h3\n    user: hbsvc\n    command: [sleep, '{}']\n",
            87000 + i
        ));
    }
    let env = Env::new(&yaml);
    let argvs: Vec<[String; 2]> = (0..N)
        .map(|i| ["sleep".to_owned(), (87000 + i).to_string()])
        .collect();
    let alive = || {
        argvs
            .iter()
            .filter(|a| !processes(&[&a[0], &a[1]]).is_empty())
            .count()
    };
    env.run(&["start"]).ok();
    assert_eq!(alive(), N, "every service runs after start");
    let running = || {
        env.status()
            .iter()
            .filter(|s| s["state"]["kind"] == "running")
            .count()
    };
    assert!(
        wait_for(Duration::from_secs(30), || running() == N).is_some(),
        "not all running: {:?}",
        env.status()
    );

    let hbsvc: u32 = tb.sh_ok("h3", "id -u hbsvc").parse().unwrap();
    let followers: Vec<u32> = tb
        .processes_on("h3", "HARNESS-H")
        .into_iter()
        .map(|p| p.pid)
        .filter(|&p| {
            uid_of(p) == Some(hbsvc)
                && std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim() == "sh")
        })
        .collect();
    assert!(!followers.is_empty(), "no follower of hbsvc on h3");
    let stalled = Stalled(followers);
    Stalled::signal(&stalled.0, libc::SIGSTOP);

    // Well past the 5 s of silence after which a host counted as unreachable.
    std::thread::sleep(Duration::from_secs(8));
    let states: Vec<String> = env
        .status()
        .iter()
        .map(|s| format!("{} {}", s["name"], s["state"]["kind"]))
        .collect();
    assert_eq!(
        running(),
        N,
        "h3 answers, so its services are not unknown: {states:?}"
    );

    let t = Instant::now();
    let stop = env.run(&["stop"]);
    let took = t.elapsed();
    assert_eq!(
        stop.code, 0,
        "a stop of services on a host that answers is done, not pending:\n{}\n{}",
        stop.stdout, stop.stderr
    );
    assert!(!stop.stdout.contains("not stopped yet"), "{}", stop.stdout);
    assert!(
        wait_for(Duration::from_secs(5), || alive() == 0).is_some(),
        "{} processes left on h3 after the stop",
        alive()
    );
    let stopped = env
        .status()
        .iter()
        .filter(|s| s["state"]["kind"] == "stopped")
        .count();
    assert_eq!(stopped, N, "{:?}", env.status());
    drop(stalled);
    eprintln!(
        "follower of h3 frozen for 8 s: {N} services stayed running; stop of all {N} done in \
         {:.1} s (exit 0), 0 processes left",
        took.as_secs_f64()
    );
}

/// A container on h2's engine (reached over ssh to h2) with h2's link down: its stop cannot reach
/// the engine, so it is pending (exit 1, `unknown` with `stop_pending`), the container keeps
/// running, and the stop is finished once h2 answers (before: recorded `stopped` while the
/// container ran on, ADR 0032's "Not done").
#[test]
fn a_stop_of_a_container_whose_host_is_unreachable_is_pending() {
    let mut fault = host_lock();
    let tb = Testbed::get();
    let key = tb.var("TB_SSH_KEY").unwrap();
    let env = Env::new(&format!(
        "name: faultbox\nhosts:\n  h2: {{address: {}, user: hbuser, identity_file: {key}, docker_host: \"{}\"}}\nservices:\n  box:\n    type: docker\n    host: h2\n    image: \"{}\"\n    command: [sleep, '86452']\n    stop: {{timeout: 1s}}\n",
        tb.host("h2").addr,
        tb.docker_endpoint(testbed::Engine::H2),
        tb.image
    ));
    env.run(&["start"]).ok();
    let id = entry(&env, "box")["runtime"]["container_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!id.is_empty(), "{}", entry(&env, "box"));
    // From this machine, not through h2's link: the engine's socket is reachable here.
    let running = |id: &str| {
        tb.docker(
            testbed::Engine::H2,
            ["inspect", "-f", "{{.State.Running}}", id],
        )
        .stdout
        .starts_with(b"true")
    };
    assert!(running(&id));

    // A running container whose host stops answering is `unknown` (its host's follower notices
    // in ~5 s; its own `docker logs` session would only after ssh's keepalives give up), and
    // running again once the host answers: the same container, not restarted.
    fault.link_down("h2");
    let t = Instant::now();
    let unknown = wait_for(Duration::from_secs(30), || state(&env, "box") == "unknown")
        .unwrap_or_else(|| panic!("not unknown with h2 away: {}", entry(&env, "box")));
    let e = entry(&env, "box");
    assert_eq!(e["state"]["host"], "h2", "{e}");
    assert_ne!(e["state"]["stop_pending"], true, "{e}");
    assert!(running(&id), "the container runs on while h2 is away");
    fault.link_up("h2");
    let back = wait_for(Duration::from_secs(30), || state(&env, "box") == "running")
        .unwrap_or_else(|| panic!("not running once h2 answers: {}", entry(&env, "box")));
    assert_eq!(entry(&env, "box")["runtime"]["container_id"], id.as_str());
    eprintln!(
        "container on h2, link down: unknown after {:.1} s; running {:.1} s after link up",
        unknown.as_secs_f64(),
        back.as_secs_f64()
    );
    let _ = t;

    fault.link_down("h2");
    wait_for(Duration::from_secs(30), || state(&env, "box") == "unknown")
        .unwrap_or_else(|| panic!("not unknown with h2 away: {}", entry(&env, "box")));
    let t = Instant::now();
    let stop = env.run(&["stop"]);
    let took = t.elapsed();
    assert_ne!(stop.code, 0, "stop: {}\n{}", stop.stdout, stop.stderr);
    assert!(
        stop.stdout.contains("not stopped yet"),
        "{}\n{}",
        stop.stdout,
        stop.stderr
    );
    let e = entry(&env, "box");
    assert_eq!(e["state"]["kind"], "unknown", "{e}");
    assert_eq!(e["state"]["stop_pending"], true, "{e}");
    assert!(running(&id), "the container runs on while h2 is away");

    fault.link_up("h2");
    let finished = wait_for(Duration::from_secs(120), || state(&env, "box") == "stopped")
        .unwrap_or_else(|| panic!("the pending stop did not finish: {}", entry(&env, "box")));
    assert!(
        wait_for(Duration::from_secs(10), || !running(&id)).is_some(),
        "stopped, but container {id} runs on"
    );
    eprintln!(
        "container on h2, link down: stop answered pending (exit {}) after {:.1} s; stop done \
         {:.1} s after link up",
        stop.code,
        took.as_secs_f64(),
        finished.as_secs_f64()
    );
}

/// Processes of user `uid` whose command line holds every one of `parts` (the daemon's local
/// ssh clients carry the same text, as root).
/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&p| parent_of(p) == Some(pid))
        .collect()
}

fn processes_with(uid: u32, parts: &[&str]) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            // The owner first (no read): the scan must be quick enough not to miss a short
            // operation.
            if std::os::unix::fs::MetadataExt::uid(&e.metadata().ok()?) != uid {
                return None;
            }
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd);
            (parts.iter().all(|p| cmd.contains(p)) && uid_of(pid) == Some(uid)).then_some(pid)
        })
        .collect()
}

/// A start whose answer is lost after the host began the runs (ADR 0032): h3's start operation
/// for 20 services is frozen with SIGSTOP as soon as it runs. Once it has read its input (its
/// first child, the `mkdir` of the runs' directories, exists) the sshd process relaying its
/// session is frozen too (each runner answers for its run on that session by itself), and the
/// operation runs a millisecond at a time until a service process exists; then h3's sshd is
/// killed (the connection drops) and the operation with it, so no answer comes. An attempt in
/// which a run began before the relay froze (its answer may have got out) is stopped and tried
/// again. No service may be `failed` while its process may live: all begun are `unknown`. When
/// h3 answers, each run that began is adopted (`running`, the same pid) and each that did not is
/// `failed` (nothing runs); or, when a stop was asked meanwhile (pending, exit 1), every run is
/// killed and all are `stopped`. Before: `failed` with their processes alive, and a stop left
/// them running.
#[test]
fn a_start_whose_answer_is_lost_is_unknown_then_adopted_or_stopped() {
    let mut fault = host_lock();
    let tb = Testbed::get();
    const N: u32 = 20;
    let mut yaml = format!("name: faultlost\n{}services:\n", hosts_yaml(tb));
    for i in 0..N {
        yaml.push_str(&format!(
            "  s{i}:\n    host: h3\n    command: [sleep, '{}']\n",
            86440 + i
        ));
    }
    let env = Env::new(&yaml);
    let arg = |i: u32| (86440 + i).to_string();
    let pid_of = |i: u32| processes(&["sleep", &arg(i)]);
    let alive = || (0..N).filter(|&i| !pid_of(i).is_empty()).count();
    let uid: u32 = tb.sh_ok("h3", "id -u").parse().unwrap();
    // Runners of these services (RUN_ONE, its command line ends with the service's), not the
    // operation or a fork of it (which have the text of RUN_ONE too).
    let runners = || {
        processes_with(uid, &["exit.tmp"])
            .into_iter()
            .filter(|p| {
                std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| {
                    !String::from_utf8_lossy(&c).contains("one() {")
                        && (0..N).any(|i| c.ends_with(format!("\0sleep\0{}\0", arg(i)).as_bytes()))
                })
            })
            .count()
    };
    // (service, pid) of each run alive.
    let begun = || -> Vec<(u32, u32)> {
        (0..N)
            .filter_map(|i| pid_of(i).first().map(|&p| (i, p)))
            .collect()
    };
    // A connection to h3 exists already, as in real use.
    env.run(&["start"]).ok();
    env.run(&["stop"]).ok();
    for (round, stop_meanwhile) in [false, true].into_iter().enumerate() {
        // An attempt in which a run may have begun before the relay was frozen (the step that
        // let the operation read its last input went on to start runners) proves nothing: it
        // is finished, stopped and tried again.
        let mut attempt = 0;
        let (start, frozen, relay, before_kill) = loop {
            attempt += 1;
            assert!(
                attempt <= 5,
                "round {round}: in 5 attempts the relay was never frozen before a run began"
            );
            assert_eq!(
                alive(),
                0,
                "round {round}: runs of an earlier attempt live on"
            );
            let mut start = env
                .cmd(&["start"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            // The start operation on h3 (START_MANY: `one() {` ... with the services' argv),
            // looked for without pause.
            let began = Instant::now();
            let op = loop {
                // Run by sshd itself: a fork of an earlier operation (a runner not yet begun)
                // has its command line too.
                let mut op = processes_with(uid, &["one() {", "86440"]);
                op.retain(|&p| {
                    parent_of(p).is_some_and(|s| {
                        std::fs::read(format!("/proc/{s}/cmdline"))
                            .is_ok_and(|c| c.starts_with(b"sshd"))
                    })
                });
                if !op.is_empty() {
                    break op;
                }
                if began.elapsed() > Duration::from_secs(30) {
                    let _ = start.kill();
                    let out = start.wait_with_output().unwrap();
                    panic!(
                        "round {round}: the start operation never ran on h3: start {:?}\n{}\n{}\n{:?}",
                        out.status,
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr),
                        env.status()
                    );
                }
            };
            // The sshd process relaying the operation's session is frozen too: each runner
            // answers for its run on the session's stdout by itself, and those answers must
            // not get out before the connection drops.
            let relay: Vec<u32> = std::iter::successors(parent_of(op[0]), |&p| parent_of(p))
                .take(4)
                .find(|&p| {
                    std::fs::read(format!("/proc/{p}/cmdline"))
                        .is_ok_and(|c| c.starts_with(b"sshd"))
                })
                .into_iter()
                .collect();
            assert!(
                !relay.is_empty(),
                "round {round}: no sshd above the operation"
            );
            let frozen = Stalled(op);
            Stalled::signal(&frozen.0, libc::SIGSTOP);
            let snap = |ps: &[u32]| -> Vec<String> {
                ps.iter()
                    .map(|p| {
                        format!(
                            "{p} {} wchan {} children {:?}",
                            std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default(),
                            std::fs::read_to_string(format!("/proc/{p}/wchan")).unwrap_or_default(),
                            children_of(*p)
                                .iter()
                                .map(|c| std::fs::read_to_string(format!("/proc/{c}/stat"))
                                    .unwrap_or_default())
                                .collect::<Vec<_>>()
                        )
                    })
                    .collect()
            };
            // The relay can be frozen once the operation has read its input (the runs'
            // environments, through that relay): it forks nothing before, and its first child
            // is the `mkdir` of every run's directory, made after reading it all. It runs a
            // millisecond at a time until then.
            while !frozen.0.iter().any(|&op| !children_of(op).is_empty()) {
                assert!(
                    began.elapsed() < Duration::from_secs(30),
                    "round {round}: the start operation never read its input: {:?} {:?}",
                    snap(&frozen.0),
                    frozen
                        .0
                        .iter()
                        .map(|p| std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                            .unwrap_or_default()
                            .chars()
                            .take(60)
                            .collect::<String>())
                        .collect::<Vec<_>>()
                );
                Stalled::signal(&frozen.0, libc::SIGCONT);
                std::thread::sleep(Duration::from_millis(1));
                Stalled::signal(&frozen.0, libc::SIGSTOP);
            }
            let relay = Stalled(relay);
            Stalled::signal(&relay.0, libc::SIGSTOP);
            let at_freeze = snap(&frozen.0);
            // A run begun by now may have answered before the relay froze (its runner answers
            // once it forked the service): this attempt cannot lose every answer.
            if alive() > 0 {
                drop(frozen);
                drop(relay);
                let _ = start.wait_with_output();
                let stop = env.run(&["stop"]);
                assert_eq!(stop.code, 0, "{}\n{}", stop.stdout, stop.stderr);
                assert!(
                    wait_for(Duration::from_secs(5), || alive() == 0).is_some(),
                    "round {round}: orphan after stop"
                );
                eprintln!("round {round}: attempt {attempt}: a run began before the relay froze");
                continue;
            }
            // Let it run a millisecond at a time until a service process exists (the
            // operation may fork every runner in one step and end: its runners go on alone).
            // Every run begun now began with the relay frozen: its answer cannot get out. (The
            // host's next start operation waits for this one, which cannot end meanwhile.)
            let any_begun = || {
                processes_with(uid, &["sleep"]).into_iter().any(|p| {
                    std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| {
                        (0..N).any(|i| c == format!("sleep\0{}\0", arg(i)).as_bytes())
                    })
                })
            };
            while !any_begun() {
                assert!(
                    began.elapsed() < Duration::from_secs(30),
                    "round {round}: no run began: at the freeze {at_freeze:?}, now {:?}",
                    snap(&frozen.0)
                );
                Stalled::signal(&frozen.0, libc::SIGCONT);
                std::thread::sleep(Duration::from_millis(1));
                Stalled::signal(&frozen.0, libc::SIGSTOP);
            }
            std::thread::sleep(Duration::from_millis(300));
            break (start, frozen, relay, begun());
        };
        // The connection drops; the operation's answer is lost with it.
        fault.sshd_kill("h3");
        Stalled::signal(&frozen.0, libc::SIGKILL);
        drop(frozen);
        drop(relay);
        let out = start.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_ne!(out.status.code(), Some(0), "round {round}: {said}");
        // Runners the operation forked before it was killed go on starting their runs: the runs
        // begun are those alive once no copy of the operation is left, every runner has its
        // service, and nothing changed for 0.5 s. Each began with the relay frozen, so each
        // one's answer is lost.
        let mut began_runs = begun();
        let settled = wait_for(Duration::from_secs(15), || {
            std::thread::sleep(Duration::from_millis(500));
            let now = begun();
            let same = now == began_runs
                && processes_with(uid, &["one() {"]).is_empty()
                && runners() == now.len();
            began_runs = now;
            same
        });
        assert!(
            settled.is_some(),
            "round {round}: runs kept beginning: {began_runs:?}, {} runners",
            runners()
        );
        for run in &before_kill {
            assert!(
                began_runs.contains(run),
                "round {round}: the runs live on: {run:?} not in {began_runs:?}"
            );
        }
        let lost: Vec<u32> = began_runs.iter().map(|(i, _)| *i).collect();
        for (i, _) in &began_runs {
            let e = entry(&env, &format!("s{i}"));
            assert_ne!(
                e["state"]["kind"], "failed",
                "round {round}: never `failed` while its process lives: {e}\n{said}"
            );
        }
        for i in &lost {
            let e = entry(&env, &format!("s{i}"));
            assert_eq!(
                e["state"]["kind"], "unknown",
                "round {round}: a service whose start's answer was lost, its process alive, is \
                 unknown: {e}\n{said}"
            );
            assert_eq!(e["state"]["host"], "h3", "{e}");
        }
        let t = Instant::now();
        if stop_meanwhile {
            let stop = env.run(&["stop"]);
            assert_eq!(
                stop.code, 1,
                "round {round}: a stop that cannot reach h3 is pending:\n{}\n{}",
                stop.stdout, stop.stderr
            );
            assert!(stop.stdout.contains("not stopped yet"), "{}", stop.stdout);
            assert_eq!(
                alive(),
                began_runs.len(),
                "round {round}: nothing killed yet"
            );
            fault.sshd_start("h3");
            let done = wait_for(Duration::from_secs(60), || {
                alive() == 0 && env.status().iter().all(|s| s["state"]["kind"] == "stopped")
            });
            assert!(
                done.is_some(),
                "round {round}: the pending stop was not finished once h3 answered: {} alive, {:?}",
                alive(),
                env.status()
            );
            eprintln!(
                "round {round}: start's answer lost with {} runs begun ({} of {N} in all): \
                 `unknown` (start exit {:?}), stop pending (exit 1); all stopped, none left \
                 {:.1} s after sshd was back",
                lost.len(),
                began_runs.len(),
                out.status.code(),
                t.elapsed().as_secs_f64()
            );
        } else {
            fault.sshd_start("h3");
            let settled = wait_for(Duration::from_secs(60), || {
                (0..N).all(|i| {
                    let e = entry(&env, &format!("s{i}"));
                    match began_runs.iter().find(|(j, _)| *j == i) {
                        Some((_, pid)) => {
                            e["state"]["kind"] == "running" && e["runtime"]["pid"] == *pid
                        }
                        None => e["state"]["kind"] == "failed",
                    }
                })
            });
            assert!(
                settled.is_some(),
                "round {round}: once h3 answered, the runs that began are adopted and the others \
                 failed: began {began_runs:?}, status {:?}",
                env.status()
            );
            assert_eq!(alive(), began_runs.len(), "round {round}: one copy each");
            let again = env.run(&["start"]);
            assert_eq!(again.code, 0, "{}\n{}", again.stdout, again.stderr);
            for (i, pid) in &began_runs {
                assert_eq!(pid_of(*i), vec![*pid], "round {round}: s{i} still one copy");
            }
            assert_eq!(alive(), N as usize, "round {round}: every service runs");
            let stop = env.run(&["stop"]);
            assert_eq!(stop.code, 0, "{}\n{}", stop.stdout, stop.stderr);
            assert!(
                wait_for(Duration::from_secs(5), || alive() == 0).is_some(),
                "round {round}: orphan after stop"
            );
            eprintln!(
                "round {round}: start's answer lost with {} runs begun ({} of {N} in all): \
                 `unknown` (start exit {:?}); adopted (`running`, same pids) and the rest \
                 `failed` {:.1} s after sshd was back; started again, stopped, none left",
                lost.len(),
                began_runs.len(),
                out.status.code(),
                t.elapsed().as_secs_f64()
            );
        }
    }
}
