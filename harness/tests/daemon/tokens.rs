//! Named tokens through the CLI (ADR 0037): `harness token create|list|revoke`, a `read` token
//! given by `--token-file` or HARNESS_TOKEN that follows events and logs but is refused `stop` and
//! `exec` with the scope they need, and a revoked token's open `harness events` ended.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;

const TALKER: &str = "name: tok\nservices:\n  talk:\n    command: [sh, -c, 'echo hello-from-talk; exec sleep 86417']\n";

#[test]
fn a_read_token_follows_events_and_logs_but_may_not_stop_or_exec() {
    let env = Env::new(TALKER);
    env.run(&["start"]).ok();
    let created = env
        .run(&[
            "token",
            "create",
            "reader",
            "--scope",
            "read",
            "--expires",
            "7d",
            "-o",
            "json",
        ])
        .ok()
        .json();
    let secret = created["secret"].as_str().expect("secret").to_owned();
    assert_eq!(created["token"]["scope"], "read");
    assert!(created["token"]["expires_at"].is_string(), "{created}");
    let file = env.dir.path().join("reader.token");
    std::fs::write(&file, format!("{secret}\n")).expect("write token file");
    let file = file.display().to_string();

    // Reads work, with the file or the variable.
    let status = env
        .run(&["--token-file", &file, "status", "-o", "json"])
        .ok()
        .json();
    assert_eq!(status[0]["name"], "talk", "{status}");
    let logs = env.run(&["--token-file", &file, "logs", "talk"]).ok();
    assert!(logs.stdout.contains("hello-from-talk"), "{}", logs.stdout);
    let mut with_var = env.cmd(&["events", "--since", "0", "-o", "json"]);
    with_var
        .env("HARNESS_TOKEN", &secret)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut events = with_var.spawn().expect("spawn events");
    let mut lines = BufReader::new(events.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("an event").expect("read");
    assert!(first.contains("\"seq\""), "{first}");

    // Acting is refused, naming the scope it needs.
    let stop = env.run(&["--token-file", &file, "stop"]);
    assert_ne!(stop.code, 0);
    assert!(
        stop.stderr
            .contains("stop needs a token with scope operate"),
        "{}",
        stop.stderr
    );
    let exec = env.run(&["--token-file", &file, "exec", "-T", "talk", "--", "true"]);
    assert_ne!(exec.code, 0);
    assert!(
        exec.stderr.contains("exec needs a token with scope admin"),
        "{}",
        exec.stderr
    );
    assert_eq!(env.state_of("talk"), "running");

    // The list shows it without its secret; revoking ends the open `events`.
    let list = env.run(&["token", "list", "-o", "json"]).ok();
    assert!(list.stdout.contains("\"reader\"") && !list.stdout.contains(&secret));
    let revoked_at = Instant::now();
    env.run(&["token", "revoke", "reader"]).ok();
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(status) = events.try_wait().expect("wait") {
            break status.code();
        }
        assert!(Instant::now() < deadline, "events still runs after revoke");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_ne!(code, Some(0), "events ended without an error");
    eprintln!("events ended {:?} after revoke", revoked_at.elapsed());
    let again = env.run(&["--token-file", &file, "status"]);
    assert_ne!(again.code, 0);
    assert!(
        again.stderr.contains("refused the token"),
        "{}",
        again.stderr
    );
}
