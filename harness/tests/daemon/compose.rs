//! Compose conveniences end to end, with a real daemon and real processes: two copies of one
//! stack side by side (`-p` and override files), `--profile`, and replicas whose consumer sees
//! every instance in `${svc.endpoints}`.

use std::time::Duration;

use super::common::*;

/// A web server whose port comes from the override file, and a client that calls it.
const STACK: &str = "name: stack
x-python: &python
  binary: python3
services:
  web:
    <<: *python
    args: [-m, http.server, --bind, 127.0.0.1, \"${web.port}\"]
    health_check: {tcp: {port: \"${WEB_PORT}\"}, interval: 200ms, start_period: 30s}
  client:
    command: \"echo client sees ${web.ip}:${web.port}; sleep 86400\"
    depends_on: {web: healthy}
  debugger:
    command: \"echo debugging; sleep 86400\"
    profiles: [debug]
";

fn override_file(port: u16) -> String {
    format!("services:\n  web:\n    ports: [{port}]\n")
}

fn names(env: &Env, project: &str) -> Vec<String> {
    let mut names: Vec<String> = env
        .run(&["-p", project, "status", "-o", "json"])
        .ok()
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"]["kind"] == "running")
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

fn get(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.0 200")
}

#[test]
fn two_copies_side_by_side_with_p_and_override_files() {
    let env = Env::new(STACK);
    let (one, two) = (free_port(), free_port());
    std::fs::write(env.dir.path().join("one.yaml"), override_file(one)).unwrap();
    std::fs::write(env.dir.path().join("two.yaml"), override_file(two)).unwrap();
    for (project, file, port) in [("one", "one.yaml", one), ("two", "two.yaml", two)] {
        let mut cmd = env.cmd(&["-p", project, "-f", "services.yaml", "-f", file, "start"]);
        cmd.env("WEB_PORT", port.to_string());
        run_command(cmd).ok();
    }
    assert_eq!(names(&env, "one"), ["client", "web"]);
    assert_eq!(names(&env, "two"), ["client", "web"]);
    assert!(get(one) && get(two), "both copies serve on their own ports");
    let logs = env.run(&["-p", "two", "logs", "client"]).ok().stdout;
    assert!(
        logs.contains(&format!("client sees 127.0.0.1:{two}")),
        "{logs}"
    );

    // Stopping one copy leaves the other running.
    env.run(&["-p", "one", "stop"]).ok();
    assert!(names(&env, "one").is_empty());
    assert_eq!(names(&env, "two"), ["client", "web"]);
    assert!(get(two));

    // HARNESS_FILE takes the same list, separated by `:`.
    let mut cmd = env.cmd(&["-p", "one", "config", "show", "-o", "json"]);
    cmd.env("HARNESS_FILE", "services.yaml:one.yaml");
    cmd.env("WEB_PORT", one.to_string());
    let shown = run_command(cmd).ok().json();
    assert_eq!(shown["name"], "one");
    assert_eq!(shown["services"]["web"]["ports"][0]["port"], one);
}

#[test]
fn profile_debug_adds_a_service() {
    let env = Env::new(STACK);
    let port = free_port();
    std::fs::write(env.dir.path().join("o.yaml"), override_file(port)).unwrap();
    let mut cmd = env.cmd(&["-f", "services.yaml", "-f", "o.yaml", "start"]);
    cmd.env("WEB_PORT", port.to_string());
    run_command(cmd).ok();
    assert_eq!(names(&env, "stack"), ["client", "web"]);
    let mut cmd = env.cmd(&[
        "-f",
        "services.yaml",
        "-f",
        "o.yaml",
        "--profile",
        "debug",
        "start",
    ]);
    cmd.env("WEB_PORT", port.to_string());
    run_command(cmd).ok();
    assert_eq!(names(&env, "stack"), ["client", "debugger", "web"]);
}

const REPLICAS: &str = "name: fleet
services:
  web:
    binary: python3
    args: [-m, http.server, --bind, 127.0.0.1, \"${web.port}\"]
    ports: [0]
    replicas: 3
    health_check: {http: \"http://127.0.0.1:${web.port}/\", interval: 200ms, start_period: 30s}
  consumer:
    command: \"echo endpoints=${web.endpoints}; sleep 86400\"
    depends_on: {web: healthy}
";

fn consumer_endpoints(env: &Env) -> Vec<u16> {
    let mut ports = Vec::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let logs = env.run(&["logs", "consumer"]).stdout;
            let Some(line) = logs.lines().rev().find(|l| l.contains("endpoints=")) else {
                return false;
            };
            let list = line.split("endpoints=").nth(1).unwrap_or_default();
            ports = list
                .split(',')
                .filter_map(|e| e.trim().rsplit_once(':')?.1.parse().ok())
                .collect();
            true
        }),
        "the consumer printed no endpoints"
    );
    ports
}

#[test]
fn replicas_run_instances_and_the_consumer_sees_them_all() {
    let env = Env::new(REPLICAS);
    env.run(&["start"]).ok();
    assert_eq!(
        names(&env, "fleet"),
        ["consumer", "web-1", "web-2", "web-3"]
    );
    let ports = consumer_endpoints(&env);
    assert_eq!(ports.len(), 3, "{ports:?}");
    for port in &ports {
        assert!(get(*port), "instance on {port} answers");
    }

    // Scaling down stops the highest numbers and gives the consumer the shorter list. The
    // consumer is stopped and started again: reported as restarted, with why (it was labelled
    // `removed` before).
    let web3_pid = env.service("web-3")["runtime"]["pid"].as_u64().unwrap() as u32;
    let out = env.run(&["scale", "web=2"]).ok().stdout;
    assert!(out.contains("web-3     removed"), "{out}");
    assert!(
        out.contains("consumer  restarted")
            && out.contains("uses web, now 2 instances: started again with the new list"),
        "{out}"
    );
    assert!(!out.contains("consumer  removed"), "{out}");
    assert_eq!(names(&env, "fleet"), ["consumer", "web-1", "web-2"]);
    assert!(wait_until(Duration::from_secs(5), || !alive(web3_pid)));
    assert!(
        wait_until(Duration::from_secs(10), || consumer_endpoints(&env).len()
            == 2),
        "the consumer was not given two endpoints"
    );

    // The scale is one operation of its own kind, with what it changed (ADR 0035).
    let ops = env.run(&["ops", "-o", "json"]).ok().json();
    let scale = ops["operations"]
        .as_array()
        .and_then(|a| a.iter().find(|o| o["kind"] == "scale"))
        .cloned()
        .unwrap_or_else(|| panic!("no scale operation: {ops}"));
    assert_eq!(scale["outcome"]["status"], "succeeded", "{scale}");
    assert_eq!(
        scale["params"]["scale"]["changes"],
        serde_json::json!([{"service": "web", "from": 3, "to": 2}]),
        "{scale}"
    );
    assert_eq!(
        scale["params"]["scale"]["stop"],
        serde_json::json!(["web-3"])
    );
    let id = scale["id"].as_u64().expect("id").to_string();
    let scale = env.run(&["ops", "show", &id, "-o", "json"]).ok().json();
    assert!(
        scale["steps"].as_array().is_some_and(|s| s
            .iter()
            .any(|s| s["kind"] == "stopping" && s["service"] == "web-3")),
        "{scale}"
    );
    let stops = ops["operations"]
        .as_array()
        .map_or(0, |a| a.iter().filter(|o| o["kind"] == "stop").count());
    assert_eq!(stops, 0, "the scale recorded a separate stop: {ops}");

    // Scaled to 0: the instances stop and, as in Compose, the consumer keeps running: it starts
    // again with an empty list (before: it stayed stopped, labelled `removed`). Still one scale
    // operation.
    let out = env.run(&["scale", "web=0", "-o", "json"]).ok().json();
    let consumer = out["services"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == "consumer"))
        .cloned()
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(consumer["action"], "restarted", "{out}");
    assert!(
        consumer["note"].as_str().is_some_and(
            |n| n.contains("now 0 instances") && n.contains("empty `${web.endpoints}`")
        ),
        "{out}"
    );
    let left = names(&env, "fleet");
    assert_eq!(left, ["consumer"]);
    assert!(
        wait_until(Duration::from_secs(10), || consumer_endpoints(&env)
            .is_empty()),
        "the consumer was not given an empty list"
    );
    let ops = env.run(&["ops", "-o", "json"]).ok().json();
    let newest = &ops["operations"][0];
    assert_eq!(newest["kind"], "scale", "{ops}");
    assert_eq!(
        newest["params"]["scale"]["changes"],
        serde_json::json!([{"service": "web", "from": 2, "to": 0}]),
        "{newest}"
    );
}

/// `harness scale web=5` beyond a range of 3 ports: only the root error (the field and the
/// range), exit non-zero, nothing changed. Before, the range error came with follow-on errors
/// (`18971-18973:18971-18973` is not a port, `web-4` declares no ports).
#[test]
fn scale_beyond_a_port_range_is_one_error_and_changes_nothing() {
    let env = Env::new(
        "name: ranged
services:
  web:
    replicas: 3
    ports: [\"18971-18973\"]
    command: \"echo on ${web.port}; exec sleep 86417\"
  client:
    command: \"echo endpoints=${web.endpoints}; exec sleep 86418\"
    depends_on: [web]
",
    );
    env.run(&["start"]).ok();
    assert_eq!(names(&env, "ranged"), ["client", "web-1", "web-2", "web-3"]);
    let client = env.service("client")["runtime"]["pid"].as_u64();
    let out = env.run(&["scale", "web=5"]);
    assert_ne!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("the port range 18971-18973 has no port for instance 4")
            && out.stderr.contains("services.web.ports"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.matches('×').count(), 1, "{}", out.stderr);
    assert!(
        !out.stderr.contains("is not a port") && !out.stderr.contains("declares no ports"),
        "{}",
        out.stderr
    );
    assert_eq!(names(&env, "ranged"), ["client", "web-1", "web-2", "web-3"]);
    assert_eq!(env.service("client")["runtime"]["pid"].as_u64(), client);
}

/// As in Compose, the name of a replicated service stands for its instances: `start web`,
/// `logs web`, `restart web`, `stop web`, `health web`; `exec web` runs in the first instance.
/// Before, each answered `project "pack" has no service "web"`.
#[test]
fn a_replicated_service_is_named_by_its_base_name() {
    let env = Env::new(
        "name: pack
services:
  web:
    replicas: 2
    ports: [\"18961-18962\"]
    env: {MINE: \"${web.port}\"}
    command: \"echo hello; exec sleep 86415\"
  other:
    command: \"exec sleep 86416\"
",
    );
    let out = env.run(&["start", "web"]).ok().stdout;
    assert!(out.contains("web-1") && out.contains("web-2"), "{out}");
    assert_eq!(
        names(&env, "pack"),
        ["web-1", "web-2"],
        "only web was started"
    );
    assert!(
        wait_until(Duration::from_secs(10), || {
            let logs = env.run(&["logs", "web"]).ok().stdout;
            logs.contains("web-1 | hello") && logs.contains("web-2 | hello")
        }),
        "{}",
        env.run(&["logs", "web"]).stdout
    );
    let exec = env.run(&["exec", "web", "--", "sh", "-c", "echo mine=$MINE"]);
    assert_eq!(exec.ok().stdout.trim(), "mine=18961", "exec runs in web-1");
    env.run(&["health", "web"]).ok();
    env.run(&["restart", "web"]).ok();
    let stop = env.run(&["stop", "web"]).ok().stdout;
    assert!(stop.contains("web-1") && stop.contains("web-2"), "{stop}");
    let unknown = env.run(&["stop", "nope"]);
    assert_ne!(unknown.code, 0);
    assert!(
        unknown.stderr.contains("no service \"nope\""),
        "{}",
        unknown.stderr
    );
}
