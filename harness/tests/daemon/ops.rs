//! Operations (ADR 0035): a start stuck on a dependency that never becomes healthy is listed as
//! running, `ops show` lists each health check, `ops cancel` ends it (the CLI that started it exits
//! non-zero saying so), with `--rollback` what it launched is stopped, and a daemon killed -9
//! mid-operation leaves it `interrupted`, never running.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

/// `db` runs but its check never passes (failures do not count during the hour-long
/// start_period, so it is never judged unhealthy either): `api` waits for it, as does the start.
const STUCK: &str = "name: stuck
services:
  db:
    command: [sleep, '86431']
    health_check:
      command: [sh, -c, 'echo not yet; exit 1']
      interval: 200ms
      timeout: 1s
      start_period: 1h
    startup_timeout: 10m
  api:
    command: [sleep, '86432']
    depends_on: {db: healthy}
";

fn spawn_start(env: &Env) -> Child {
    env.cmd(&["start"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn harness start")
}

/// The running start's operation, once `ops --running` lists it.
fn running_start(env: &Env) -> Value {
    let mut found = None;
    assert!(
        wait_until(Duration::from_secs(20), || {
            let run = env.run(&["ops", "--running", "-o", "json"]);
            if run.code != 0 {
                return false;
            }
            found = run.json()["operations"]
                .as_array()
                .and_then(|a| a.iter().find(|o| o["kind"] == "start").cloned());
            found.is_some()
        }),
        "no running start in `harness ops --running`"
    );
    found.unwrap_or_default()
}

fn op(env: &Env, id: u64) -> Value {
    env.run(&["ops", "show", &id.to_string(), "-o", "json"])
        .ok()
        .json()
}

fn health_checks(op: &Value, service: &str) -> Vec<Value> {
    op["steps"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter(|s| s["kind"] == "health_check" && s["service"] == service)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// Waits for `child` to exit (at most `limit`); its exit code, stderr and how long it took.
fn wait_exit(mut child: Child, limit: Duration) -> (i32, String, Duration) {
    let began = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        assert!(
            began.elapsed() < limit,
            "harness start still runs {limit:?} after the cancel"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = began.elapsed();
    let out = child.wait_with_output().expect("output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        took,
    )
}

#[test]
fn a_stuck_start_is_listed_shown_per_health_check_and_cancelled() {
    let env = Env::new(STUCK);
    let child = spawn_start(&env);
    let listed = running_start(&env);
    let id = listed["id"].as_u64().expect("id");
    assert_eq!(listed["project"], "stuck");
    assert_eq!(listed["outcome"]["status"], "running");
    assert!(
        listed["requester"]["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{listed}"
    );
    assert_eq!(
        listed["requester"]["client"].as_str(),
        Some(concat!("harness/", env!("CARGO_PKG_VERSION"))),
        "{listed}"
    );
    assert_eq!(listed["requester"]["token"], "owner");
    // Each health check is a step of its own, numbered, with its output.
    assert!(
        wait_until(Duration::from_secs(20), || health_checks(
            &op(&env, id),
            "db"
        )
        .len()
            >= 3),
        "fewer than 3 health checks recorded: {}",
        op(&env, id)
    );
    let shown = op(&env, id);
    let checks = health_checks(&shown, "db");
    for (i, c) in checks.iter().enumerate() {
        assert_eq!(c["attempt"].as_u64(), Some(i as u64 + 1), "{c}");
        assert_eq!(c["result"]["status"], "failed", "{c}");
        assert!(
            c["detail"].as_str().is_some_and(|d| d.contains("not yet")),
            "{c}"
        );
    }
    let waiting = shown["steps"]
        .as_array()
        .and_then(|s| {
            s.iter()
                .find(|s| s["service"] == "api" && s["kind"] == "waiting_for_dependencies")
        })
        .cloned()
        .expect("api waits for db");
    assert_eq!(waiting["result"]["status"], "running");
    let text = env.run(&["ops", "show", &id.to_string()]).ok().stdout;
    assert!(text.contains("health_check"), "{text}");
    assert!(text.contains("where the time went"), "{text}");
    assert!(text.contains("not yet"), "{text}");

    let db_pid = env.service("db")["runtime"]["pid"]
        .as_u64()
        .expect("db pid") as u32;
    let asked = Instant::now();
    let cancel = env
        .run(&["ops", "cancel", &id.to_string(), "-o", "json"])
        .ok();
    let answered = asked.elapsed();
    let (code, stderr, _) = wait_exit(child, Duration::from_secs(10));
    let ended = asked.elapsed();
    eprintln!(
        "ops cancel answered in {answered:?}; the start's CLI exited {ended:?} after the cancel was sent"
    );
    assert_eq!(cancel.json()["outcome"]["status"], "cancelled");
    assert_ne!(code, 0, "the cancelled start exited 0: {stderr}");
    assert!(
        stderr.contains("cancelled") && stderr.contains(&format!("operation {id}")),
        "{stderr}"
    );
    // Far below the 10-minute startup_timeout: the cancel ended it, nothing else did.
    assert!(ended < Duration::from_secs(5), "took {ended:?}");

    // What ran keeps running; what waited was not started.
    assert!(
        alive(db_pid),
        "db was stopped by a cancel without --rollback"
    );
    assert!(processes_with_cmdline(&["sleep", "86432"]).is_empty());
    let after = op(&env, id);
    assert_eq!(after["outcome"]["status"], "cancelled", "{after}");
    assert_eq!(after["outcome"]["rollback"], false);
    assert!(after["ended_at"].is_string());
    assert!(
        after["steps"]
            .as_array()
            .is_some_and(|s| s.iter().all(|s| s["result"]["status"] != "running")),
        "a step still running after the end: {after}"
    );
    // Listed, filtered, and streamed as events.
    let all = env.run(&["ops", "-o", "json"]).ok().json();
    assert!(
        all["operations"]
            .as_array()
            .is_some_and(|a| a.iter().any(|o| o["id"] == id))
    );
    let running = env.run(&["ops", "--running", "-o", "json"]).ok().json();
    assert!(
        running["operations"].as_array().is_some_and(Vec::is_empty),
        "{running}"
    );
    let for_api = env
        .run(&["ops", "--service", "api", "-o", "json"])
        .ok()
        .json();
    assert!(
        for_api["operations"]
            .as_array()
            .is_some_and(|a| a.iter().any(|o| o["id"] == id))
    );
    let table = env.run(&["ops"]).ok().stdout;
    assert!(
        table.contains("cancelled") && table.contains("start"),
        "{table}"
    );
    let events: Vec<Value> = env
        .events()
        .into_iter()
        .filter(|e| e["type"] == "operation" && e["data"]["id"] == id)
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["data"]["step"]["kind"] == "health_check"),
        "no operation event for a health check"
    );
    assert!(
        events
            .iter()
            .any(|e| e["data"]["outcome"]["status"] == "cancelled")
    );
    // Cancelling it again: it is not running.
    let again = env.run(&["ops", "cancel", &id.to_string()]);
    assert_ne!(again.code, 0);
    assert!(again.stderr.contains("not running"), "{}", again.stderr);
    // `ops wait` on an ended operation answers at once, non-zero as it did not succeed.
    let waited = env.run(&["ops", "wait", &id.to_string()]);
    assert_eq!(waited.code, 1, "{}", waited.stdout);
    assert!(waited.stdout.contains("cancelled"), "{}", waited.stdout);
    env.run(&["stop"]).ok();
}

#[test]
fn cancel_with_rollback_stops_what_the_start_launched() {
    let env = Env::new(STUCK);
    let child = spawn_start(&env);
    let id = running_start(&env)["id"].as_u64().expect("id");
    assert!(wait_until(Duration::from_secs(20), || {
        !health_checks(&op(&env, id), "db").is_empty()
    }));
    let db_pid = env.service("db")["runtime"]["pid"]
        .as_u64()
        .expect("db pid") as u32;
    env.run(&["ops", "cancel", &id.to_string(), "--rollback"])
        .ok();
    let (code, stderr, _) = wait_exit(child, Duration::from_secs(20));
    assert_ne!(code, 0);
    assert!(
        stderr.contains("cancelled") && stderr.contains("stopped db"),
        "{stderr}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || !alive(db_pid)),
        "db still runs"
    );
    let after = op(&env, id);
    assert_eq!(after["outcome"]["rollback"], true, "{after}");
    assert!(
        after["steps"].as_array().is_some_and(|s| s
            .iter()
            .any(|s| s["kind"] == "stopping" && s["service"] == "db")),
        "{after}"
    );
}

#[test]
fn an_operation_running_when_the_daemon_is_killed_is_interrupted_after_the_restart() {
    let env = Env::new(STUCK);
    let child = spawn_start(&env);
    let id = running_start(&env)["id"].as_u64().expect("id");
    // Mid-operation: db launched and being checked, api waiting for it.
    assert!(wait_until(Duration::from_secs(20), || {
        !health_checks(&op(&env, id), "db").is_empty()
    }));
    let daemon = env.daemon_pid().expect("daemon pid");
    kill9(daemon);
    assert!(wait_until(Duration::from_secs(5), || !alive(daemon)));
    let (code, _, _) = wait_exit(child, Duration::from_secs(10));
    assert_ne!(code, 0, "a start whose daemon died exited 0");
    // The next command starts a new daemon, which finds the operation it cannot finish.
    let after = op(&env, id);
    assert_eq!(after["outcome"]["status"], "failed", "{after}");
    assert!(
        after["outcome"]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("interrupted")),
        "{after}"
    );
    assert!(
        after["steps"]
            .as_array()
            .is_some_and(|s| s.iter().all(|s| s["result"]["status"] != "running")),
        "{after}"
    );
    let running = env.run(&["ops", "--running", "-o", "json"]).ok().json();
    assert!(
        running["operations"].as_array().is_some_and(Vec::is_empty),
        "{running}"
    );
    let failed = env.run(&["ops", "--failed", "-o", "json"]).ok().json();
    assert!(
        failed["operations"]
            .as_array()
            .is_some_and(|a| a.iter().any(|o| o["id"] == id))
    );
    // Ids go on from where they were.
    env.run(&["stop"]).ok();
    let latest = env.run(&["ops", "-o", "json"]).ok().json();
    let newest = latest["operations"][0]["id"].as_u64().expect("newest id");
    assert!(newest > id, "{latest}");
    assert_eq!(latest["operations"][0]["kind"], "stop");
    assert_eq!(latest["operations"][0]["outcome"]["status"], "succeeded");
}
