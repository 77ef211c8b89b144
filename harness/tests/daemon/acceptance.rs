//! Issue 5's acceptance items.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

/// A 5-service graph with a python http server behind an http health check: dependents start only
/// after it is healthy (from event timestamps).
#[test]
fn dependents_start_after_the_http_service_is_healthy() {
    let port = free_port();
    let env = Env::new(&format!(
        r#"
name: graph
services:
  setup:
    command: "echo setting up; sleep 0.3"
  db:
    command: "sleep 86401"
    depends_on: {{setup: completed_successfully}}
  api:
    binary: python3
    # The server only listens after 1 s: a start that does not wait for health would show.
    args: [-c, "import time, http.server as h; time.sleep(1); h.ThreadingHTTPServer(('127.0.0.1', {port}), h.SimpleHTTPRequestHandler).serve_forever()"]
    ports: [{{name: http, port: {port}}}]
    depends_on: {{db: started}}
    health_check: {{http: "http://127.0.0.1:{port}/", interval: 200ms, timeout: 1s, retries: 3, start_period: 5s}}
  web:
    command: "sleep 86401"
    env: {{API: "http://${{api.ip}}:${{api.port}}/"}}
    depends_on: {{api: healthy}}
  worker:
    command: "sleep 86401"
    depends_on: {{api: healthy, db: started}}
"#
    ));
    let run = env.run(&["start"]).ok();
    for name in ["setup", "db", "api", "web", "worker"] {
        assert!(
            run.stdout.contains(name),
            "{name} missing in\n{}",
            run.stdout
        );
    }
    let events = env.events();
    let first = |service: &str, pred: &dyn Fn(&Value) -> bool| -> f64 {
        events
            .iter()
            .find(|e| e["service"] == service && pred(e))
            .map(event_time)
            .unwrap_or_else(|| panic!("no matching event for {service}: {events:#?}"))
    };
    let healthy = first("api", &|e| {
        e["type"] == "service.health" && e["data"]["to"] == "healthy"
    });
    let starting =
        |e: &Value| e["type"] == "service.state" && e["data"]["to"]["kind"] == "starting";
    for dependent in ["web", "worker"] {
        let started = first(dependent, &starting);
        assert!(
            started >= healthy,
            "{dependent} started at {started}, before api was healthy at {healthy}"
        );
    }
    // ...and api itself started only after setup completed.
    let setup_done = first("setup", &|e| {
        e["type"] == "service.state" && e["data"]["to"]["kind"] == "exited"
    });
    assert!(first("db", &starting) >= setup_done);
    for name in ["db", "api", "web", "worker"] {
        assert_eq!(env.state_of(name), "running", "{name}");
    }
    let api = env.service("api");
    assert_eq!(api["health"]["status"], "healthy");
    env.run(&["stop"]).ok();
}

/// A failing health check: `start` exits non-zero, names the service and shows its last output.
#[test]
fn failing_health_check_fails_start_with_the_service_output() {
    let env = Env::new(
        r#"
name: sick
services:
  sick:
    command: "echo 'sick: listening on nothing at all'; sleep 86402"
    health_check: {command: "false", interval: 100ms, retries: 2, timeout: 1s}
    startup_timeout: 3s
  fine:
    command: "sleep 86402"
"#,
    );
    let t0 = Instant::now();
    let run = env.run(&["start"]);
    assert_eq!(
        run.code, 1,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    assert!(run.stderr.contains("service sick failed"), "{}", run.stderr);
    assert!(
        run.stderr.contains("sick: listening on nothing at all"),
        "the last output is missing:\n{}",
        run.stderr
    );
    assert!(t0.elapsed() < Duration::from_secs(20));
    assert_eq!(env.state_of("fine"), "running");
    env.run(&["stop"]).ok();
}

/// A service that ignores TERM and has grandchildren: after `stop`, none of its processes remain
/// (by pid), within its timeout + 1 s.
#[test]
fn stop_leaves_no_grandchild_of_a_term_ignoring_service() {
    let env = Env::new(
        r#"
name: stubborn
services:
  stubborn:
    command: |
      trap '' TERM
      sh -c 'sleep 86403 & sleep 86403 & wait' &
      ( sleep 86403 & ) 
      sleep 86403
    stop: {signal: SIGTERM, timeout: 1s}
"#,
    );
    env.run(&["start"]).ok();
    let pid = env.pids()[0].1;
    // Let the shell fork everything.
    assert!(wait_until(
        Duration::from_secs(5),
        || processes_with_cmdline(&["sleep", "86403"]).len() >= 4
    ));
    let mut before = tree(pid);
    before.extend(processes_with_cmdline(&["sleep", "86403"]));
    assert!(
        before.len() >= 5,
        "expected the shell and 4 sleeps: {before:?}"
    );
    let t0 = Instant::now();
    env.run(&["stop"]).ok();
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(2) + Duration::from_millis(500),
        "stop took {took:?}"
    );
    let left: Vec<u32> = before.iter().copied().filter(|p| alive(*p)).collect();
    assert!(left.is_empty(), "still alive after stop: {left:?}");
    assert_eq!(env.state_of("stubborn"), "stopped");
}

/// A service that prints 10 MB and exits: `logs` has every line, including the last.
#[test]
fn logs_have_every_line_of_ten_megabytes() {
    let lines = 105_000;
    let env = Env::new(&format!(
        r#"
name: chatty
services:
  chatty:
    binary: python3
    args: [-c, "import sys\nfor i in range({lines}): sys.stdout.write('line %07d %s\\n' % (i, 'x' * 87))\nsys.stdout.write('the very last line')"]
"#
    ));
    env.run(&["start"]).ok();
    env.wait_state("chatty", "exited", Duration::from_secs(30));
    let run = env.run(&["logs", "chatty"]).ok();
    let got: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(got.len(), lines + 1, "line count");
    for (i, line) in got.iter().take(lines).enumerate() {
        let want = format!("chatty | line {i:07} ");
        assert!(line.starts_with(&want), "line {i}: {line:?}");
    }
    assert_eq!(got[lines], "chatty | the very last line");
    assert!(run.stdout.len() > 10_000_000);
}

/// A crash loop: restart intervals follow the backoff, then the state is `failed`.
#[test]
fn crash_loop_backs_off_then_fails() {
    let env = Env::new(
        r#"
name: crashy
services:
  crashy:
    command: "echo crashing; exit 3"
    restart:
      policy: on-failure
      max_restarts: 3
      backoff: {initial: 200ms, max: 500ms}
"#,
    );
    let _ = env.run(&["start"]);
    env.wait_state("crashy", "failed", Duration::from_secs(15));
    let starts: Vec<f64> = env
        .events()
        .iter()
        .filter(|e| {
            e["service"] == "crashy"
                && e["type"] == "service.state"
                && e["data"]["to"]["kind"] == "starting"
        })
        .map(event_time)
        .collect();
    assert_eq!(starts.len(), 4, "one start and 3 restarts: {starts:?}");
    let gaps: Vec<f64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    // 200 ms, 400 ms, then capped at 500 ms (a little slack below for timer granularity).
    for (gap, want) in gaps.iter().zip([0.2, 0.4, 0.5]) {
        assert!(*gap >= want - 0.02, "gaps {gaps:?}, want about {want}");
        assert!(
            *gap < want + 1.0,
            "gaps {gaps:?}: far longer than the backoff"
        );
    }
    let s = env.service("crashy");
    assert_eq!(s["restart_count"], 3);
}

/// kill -9 the daemon with 20 services running: the next command auto-starts it, status shows
/// the same 20 pids, none duplicated; `stop` then leaves zero.
#[test]
fn a_killed_daemon_reattaches_to_its_20_services() {
    let mut yaml = String::from("name: twenty\nservices:\n");
    for i in 0..20 {
        yaml.push_str(&format!("  s{i:02}:\n    command: [sleep, '86404']\n"));
    }
    let env = Env::new(&yaml);
    env.run(&["start"]).ok();
    let mut before = env.pids();
    before.sort();
    assert_eq!(before.len(), 20);
    assert_eq!(processes_with_cmdline(&["sleep", "86404"]).len(), 20);
    let daemon = env.daemon_pid().expect("daemon pid");
    kill9(daemon);
    assert!(wait_until(Duration::from_secs(5), || !alive(daemon)));

    let mut after = env.pids();
    after.sort();
    let new_daemon = env.daemon_pid().expect("a new daemon");
    assert_ne!(new_daemon, daemon);
    assert_eq!(before, after, "the same services with the same pids");
    // Starting again is idempotent: nothing new is spawned.
    let run = env.run(&["start", "-o", "json"]).ok().json();
    for s in run["services"].as_array().expect("services") {
        assert_eq!(s["action"], "unchanged", "{s}");
    }
    let mut sleepers = processes_with_cmdline(&["sleep", "86404"]);
    sleepers.sort();
    let mut want: Vec<u32> = before.iter().map(|(_, p)| *p).collect();
    want.sort();
    assert_eq!(sleepers, want, "no duplicate started");

    env.run(&["stop"]).ok();
    assert!(
        wait_until(Duration::from_secs(2), || processes_with_cmdline(&[
            "sleep", "86404"
        ])
        .is_empty()),
        "left running: {:?}",
        processes_with_cmdline(&["sleep", "86404"])
    );
}

/// An invalid services.yaml is refused locally with exit 2; no daemon ever sees it.
#[test]
fn invalid_yaml_exits_2_and_never_reaches_the_daemon() {
    let env =
        Env::new("name: bad\nservices:\n  a:\n    command: [sleep, '1']\n    depends_on: [nope]\n");
    let run = env.run(&["start"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("services.yaml"), "{}", run.stderr);
    assert!(
        env.daemon_pid().is_none(),
        "a daemon was started for an invalid file"
    );
    assert!(!env.home().join("registry.redb").exists());

    // With a daemon running, nothing reaches it either: no new event.
    env.write("name: bad\nservices:\n  a:\n    command: [sleep, '86405']\n");
    env.run(&["start"]).ok();
    let seq = |env: &Env| env.events().last().map(|e| e["seq"].clone());
    let before = seq(&env);
    env.write("name: bad\nservices:\n  a:\n    command: [sleep, '86405'\n");
    assert_eq!(env.run(&["start"]).code, 2);
    assert_eq!(seq(&env), before);
    assert_eq!(env.state_of("a"), "running");
    env.run(&["-p", "bad", "stop"]).ok();
}

/// A missing binary fails that service with a clear message; the others proceed per their
/// dependencies.
#[test]
fn a_missing_binary_fails_only_that_service_and_its_dependents() {
    let env = Env::new(
        r#"
name: partial
services:
  broken:
    binary: /nonexistent/harness-test-binary
  needs_broken:
    command: "sleep 86406"
    depends_on: [broken]
  fine:
    command: "sleep 86406"
  needs_fine:
    command: "sleep 86406"
    depends_on: [fine]
"#,
    );
    let run = env.run(&["start"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("service broken failed"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("/nonexistent/harness-test-binary"),
        "{}",
        run.stderr
    );
    assert_eq!(env.state_of("fine"), "running");
    assert_eq!(env.state_of("needs_fine"), "running");
    assert_ne!(env.state_of("needs_broken"), "running");
    env.run(&["stop"]).ok();
}
