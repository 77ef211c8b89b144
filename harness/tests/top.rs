//! `harness top` (ADR 0037) on the testbed: a busy-looping service and an idle one, each as a
//! local process, a process on h1 and a container on h2's engine. The busy ones show CPU well
//! above the idle ones; `status -o json` carries the last sample; while h1 does not answer, its
//! services are unknown, not zero. CPU bounds are generous: the CI machine has 2 cores shared by
//! many jobs.

use serde_json::Value;
use testbed::{Engine, Testbed};

mod common;
use common::testbed_env::Env;

#[test]
fn top_shows_busy_and_idle_services_locally_remotely_and_in_containers() {
    let tb = Testbed::get();
    let key = tb.var("TB_SSH_KEY").expect("TB_SSH_KEY");
    let yaml = format!(
        r#"name: toptest
hosts:
  h1: {{address: {h1}, user: hbuser, identity_file: {key}}}
  h2: {{address: {h2}, user: hbuser, identity_file: {key}, docker_host: "{engine}"}}
services:
  busy-local:
    command: "while :; do :; done"
  idle-local:
    command: [sleep, "86400"]
  busy-remote:
    host: h1
    command: "while :; do :; done"
  idle-remote:
    host: h1
    command: "exec sleep 86400"
  busy-box:
    type: docker
    host: h2
    image: "{image}"
    command: ["sh", "-c", "while :; do :; done"]
  idle-box:
    type: docker
    host: h2
    image: "{image}"
    command: ["sleep", "86400"]
"#,
        h1 = tb.host("h1").addr,
        h2 = tb.host("h2").addr,
        engine = tb.docker_endpoint(Engine::H2),
        image = tb.image,
    );
    let env = Env::new(&yaml);
    env.run(&["start"]).ok();
    // A first `top` reads twice, 1 s apart; a second one a little later compares with it.
    env.run(&["top"]).ok();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let top = env.run(&["top", "-o", "json"]).ok().json();
    let by_name = |name: &str| -> Value {
        top["services"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["service"] == name).cloned())
            .unwrap_or_else(|| panic!("no {name} in {top:#}"))
    };
    for (busy, idle, place) in [
        ("busy-local", "idle-local", "local"),
        ("busy-remote", "idle-remote", "ssh:h1"),
        ("busy-box", "idle-box", "docker:"),
    ] {
        let b = by_name(busy);
        let i = by_name(idle);
        assert!(
            b["place"].as_str().is_some_and(|p| p.starts_with(place)),
            "{b}"
        );
        let bc = b["cpu_percent"].as_f64().unwrap_or_else(|| panic!("{b}"));
        let ic = i["cpu_percent"].as_f64().unwrap_or_else(|| panic!("{i}"));
        eprintln!("{place}: {busy} {bc} %, {idle} {ic} %");
        // Near 100 % on an idle machine; a 2-core box at load 20 leaves a busy loop ~10 %, so the
        // test asks only that it is clearly busier than the idle one.
        assert!(bc > 3.0 && bc > 5.0 * ic, "{busy}: {bc} % ({b})");
        assert!(ic < 10.0, "{idle}: {ic} % ({i})");
        assert!(b["rss_bytes"].as_u64().is_some_and(|r| r > 0), "{b}");
        assert!(b["threads"].as_u64().is_some_and(|t| t >= 1), "{b}");
        if place != "docker:" {
            assert!(b["fds"].as_u64().is_some_and(|n| n > 0), "{b}");
            assert!(b["uptime_secs"].as_u64().is_some(), "{b}");
        }
    }
    // `status -o json` carries the last sample.
    let status = env.run(&["status", "-o", "json"]).ok().json();
    let busy = status
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == "busy-local").cloned())
        .expect("busy-local in status");
    assert!(
        busy["resources"]["cpu_percent"].as_f64().is_some(),
        "{busy:#}"
    );

    // `daemon stats` counts the ssh connections the readings used.
    let stats = env.run(&["daemon", "stats", "-o", "json"]).ok().json();
    let h1 = stats["ssh"]
        .as_array()
        .and_then(|a| a.iter().find(|h| h["host"] == "h1").cloned())
        .unwrap_or_else(|| panic!("no h1 in {stats:#}"));
    assert!(h1["masters"].as_u64().is_some_and(|m| m >= 1), "{h1}");

    // h1 stops answering: its services are unknown, never 0 %; the others are still read.
    struct LinkUp<'a>(&'a Testbed);
    impl Drop for LinkUp<'_> {
        fn drop(&mut self) {
            self.0.fault(&["link-up", "h1"]);
        }
    }
    tb.fault(&["link-down", "h1"]);
    let up = LinkUp(tb);
    let top = env.run(&["top", "-o", "json"]).ok().json();
    drop(up);
    let find = |name: &str| -> Value {
        top["services"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["service"] == name).cloned())
            .unwrap_or_else(|| panic!("no {name} in {top:#}"))
    };
    for name in ["busy-remote", "idle-remote"] {
        let s = find(name);
        assert!(s["cpu_percent"].is_null(), "{s}");
        assert!(s["rss_bytes"].is_null(), "{s}");
        assert!(s["unknown"].as_str().is_some_and(|u| !u.is_empty()), "{s}");
        eprintln!("{name} while h1 is down: {}", s["unknown"]);
    }
    assert!(find("busy-local")["cpu_percent"].as_f64().is_some());
    // h1 is back: the stop finishes once the daemon hears from it again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let stop = env.run(&["stop"]);
        if stop.code == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", stop.stderr);
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
}
