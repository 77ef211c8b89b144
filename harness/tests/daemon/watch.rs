//! `watch:`: a burst of edits restarts a service once, the event names the files, ignored paths
//! (by `ignore:` and by .gitignore) cause nothing; `harness watch` turns it on for a service.

use std::time::Duration;

use serde_json::Value;

use crate::common::*;

const WATCHED: &str = r#"name: wt
services:
  api:
    command: [sleep, '86414']
    watch: {paths: [src], ignore: ["*.tmp"], debounce: 500ms}
  plain:
    command: [sleep, '86415']
"#;

fn watch_events(env: &Env, service: &str) -> Vec<Value> {
    env.events()
        .into_iter()
        .filter(|e| e["type"] == "service.watch" && e["service"] == service)
        .collect()
}

fn starts(env: &Env, service: &str) -> usize {
    env.events()
        .into_iter()
        .filter(|e| {
            e["type"] == "service.state"
                && e["service"] == service
                && e["data"]["to"]["kind"] == "running"
        })
        .count()
}

#[test]
fn a_burst_of_edits_restarts_once_and_ignored_paths_do_nothing() {
    let env = Env::new(WATCHED);
    let src = env.dir.path().join("src");
    std::fs::create_dir_all(src.join("build")).unwrap();
    std::fs::write(env.dir.path().join(".gitignore"), "build/\n").unwrap();
    env.run(&["start"]).ok();
    let pid = env.pids().into_iter().find(|(n, _)| n == "api").unwrap().1;
    assert_eq!(starts(&env, "api"), 1);

    // 20 saves in one second.
    for i in 0..20 {
        std::fs::write(src.join("main.rs"), format!("fn main() {{ /* {i} */ }}")).unwrap();
        if i == 10 {
            std::fs::write(src.join("lib.rs"), "x").unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(wait_until(Duration::from_secs(10), || starts(&env, "api") == 2));
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(starts(&env, "api"), 2, "more than one restart");
    let events = watch_events(&env, "api");
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["data"]["action"], "restart");
    let paths = events[0]["data"]["paths"].to_string();
    assert!(
        paths.contains("src/main.rs") && paths.contains("src/lib.rs"),
        "{paths}"
    );
    let new_pid = env.pids().into_iter().find(|(n, _)| n == "api").unwrap().1;
    assert_ne!(pid, new_pid);
    assert!(!alive(pid));

    // Ignored by `ignore:` and by .gitignore: nothing happens.
    std::fs::write(src.join("scratch.tmp"), "x").unwrap();
    std::fs::write(src.join("build").join("out.o"), "x").unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(watch_events(&env, "api").len(), 1);
    assert_eq!(starts(&env, "api"), 2);

    // The marker names the files.
    let markers = env.run(&["logs", "--events", "api"]).ok().stdout;
    assert!(
        markers.contains("api: src/lib.rs, src/main.rs changed; restarting"),
        "{markers}"
    );

    // `harness watch plain`: the defaults (the project's folder).
    let out = env.run(&["watch", "plain"]).ok().stdout;
    assert!(out.contains("watching plain"), "{out}");
    std::fs::write(env.dir.path().join("notes.txt"), "x").unwrap();
    assert!(wait_until(Duration::from_secs(10), || starts(
        &env, "plain"
    ) == 2));
    env.run(&["stop"]).ok();
}

#[test]
fn watch_refuses_what_it_cannot_watch() {
    let env = Env::new(
        "name: wt2\nservices:\n  a:\n    command: [sleep, '86416']\n    watch: [missing]\n",
    );
    // The start works; the watch that cannot be is logged, and `harness watch` says why.
    env.run(&["start"]).ok();
    let r = env.run(&["watch"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("missing"), "{}", r.stderr);
    let r = env.run(&["watch", "nope"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("nope"), "{}", r.stderr);
    env.run(&["stop"]).ok();
}
