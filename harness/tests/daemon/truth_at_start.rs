//! `start` tells the truth (issue 11, "truth at start"): a port another process listens on fails
//! the start before anything is spawned, naming the owner; a tcp check does not count a listener
//! of another process; a service that exits during the start is reported as exited with its
//! code and last output, and `start` fails unless a one-shot job succeeded.

use std::net::TcpListener;
use std::time::Duration;

use crate::common::{Env, free_port, processes_with_cmdline};

#[test]
fn a_port_in_use_fails_the_start_naming_its_owner_before_spawning() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let tag = format!("86431.{}", std::process::id());
    let env = Env::new(&format!(
        "name: busy
services:
  web:
    command: [sleep, '{tag}']
    ports: [{port}]
    health_check: {{tcp: {port}, interval: 200ms, retries: 1}}
    startup_timeout: 5s
"
    ));
    let r = env.run(&["start"]);
    println!("start: exit {}\n{}{}", r.code, r.stdout, r.stderr);
    assert_ne!(r.code, 0, "the start must fail");
    let me = std::process::id();
    assert!(
        r.stderr
            .contains(&format!("port {port} is in use by pid {me} (")),
        "{}",
        r.stderr
    );
    assert!(!r.stdout.contains("✓"), "{}", r.stdout);
    assert!(
        processes_with_cmdline(&["sleep", &tag]).is_empty(),
        "the service was spawned although its port is taken"
    );
    assert_eq!(env.state_of("web"), "failed");
    drop(listener);
}

#[test]
fn a_tcp_check_does_not_count_another_process_listener() {
    // No `ports:`, so nothing is refused at launch: the check itself must see that the
    // listener is not the service's.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let env = Env::new(&format!(
        "name: impostor
services:
  web:
    command: [sleep, '86432']
    health_check: {{tcp: {port}, interval: 200ms, retries: 1}}
    startup_timeout: 3s
"
    ));
    let r = env.run(&["start"]);
    println!("start: exit {}\n{}{}", r.code, r.stdout, r.stderr);
    assert_ne!(r.code, 0, "another process's listener made the check pass");
    let h = env.run(&["health", "-o", "json"]).json();
    let out = h["services"][0]["health"]["last_output"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let me = std::process::id();
    assert!(out.contains(&format!("answered by pid {me} (")), "{h:#}");
    env.run(&["stop"]).ok();
    drop(listener);
}

#[test]
fn a_tcp_check_counts_the_service_own_listener() {
    let port = free_port();
    let env = Env::new(&format!(
        "name: own
services:
  web:
    command: [python3, -m, http.server, '{port}', --bind, 127.0.0.1]
    ports: [{port}]
    health_check: {{tcp: {port}, interval: 200ms, start_period: 30s}}
    startup_timeout: 20s
"
    ));
    let r = env.run(&["start"]);
    println!("start: exit {}\n{}{}", r.code, r.stdout, r.stderr);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(env.state_of("web"), "running");
    env.run(&["stop"]).ok();
}

#[test]
fn a_one_shot_that_fails_during_start_is_reported_exited_with_its_output() {
    let env = Env::new(
        "name: oneshot
services:
  job:
    command: 'echo boom-line-1; echo boom-line-2 >&2; exit 7'
    restart: no
",
    );
    let r = env.run(&["start"]);
    println!("start: exit {}\n{}{}", r.code, r.stdout, r.stderr);
    assert_ne!(
        r.code, 0,
        "a job that exits 7 during start must fail the start"
    );
    assert!(!r.stdout.contains("started"), "{}", r.stdout);
    assert!(r.stderr.contains("exit code 7"), "{}", r.stderr);
    assert!(
        r.stderr.contains("boom-line-1") && r.stderr.contains("boom-line-2"),
        "{}",
        r.stderr
    );
    let s = env.service("job");
    assert_eq!(s["state"]["kind"], "exited", "{s:#}");
    assert_eq!(s["state"]["code"], 7, "{s:#}");
    let json = env.run(&["start", "-o", "json"]);
    assert_ne!(json.code, 0);
}

#[test]
fn a_one_shot_that_succeeds_during_start_is_completed_and_start_succeeds() {
    let env = Env::new(
        "name: oneshotok
services:
  job:
    command: 'echo migrated'
    restart: no
",
    );
    let r = env.run(&["start", "-o", "json"]);
    println!("start: exit {}\n{}{}", r.code, r.stdout, r.stderr);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    assert_eq!(v["services"][0]["action"], "completed", "{v:#}");
    let env2 = Env::new(
        "name: oneshotok2
services:
  job:
    command: 'echo migrated'
    restart: no
",
    );
    let r = env2.run(&["start"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("completed"), "{}", r.stdout);
    assert!(!r.stdout.contains("pid"), "{}", r.stdout);
}

#[test]
fn a_service_that_cannot_enter_its_directory_as_its_user_is_not_started() {
    let tb = testbed::Testbed::get();
    let env = Env::new(&format!(
        "name: nodir
services:
  b:
    user: {user}
    command: [sleep, '86433']
",
        user = tb.sudo_user
    ));
    // The project folder stays 0700 (root's): the service's user cannot enter it.
    std::fs::set_permissions(
        env.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let r = env.run(&["start"]);
    println!("start: exit {}\n{}{}", r.code, r.stdout, r.stderr);
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(!r.stdout.contains("✓"), "{}", r.stdout);
    assert!(r.stderr.contains("exited during the start"), "{}", r.stderr);
    std::thread::sleep(Duration::from_millis(100));
}
