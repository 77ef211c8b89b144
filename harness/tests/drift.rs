//! `harness drift` and `harness sync` (ADR 0036) through the real CLI and daemon on the testbed:
//! real processes, a real host (h1) and the real local docker engine. Drift finds (a) a `sleep`
//! started by hand with the launch identity copied from a stopped service (orphaned), (b) a
//! service killed while the daemon was down (state mismatch), (c) a container labelled for a
//! project the registry does not know (orphaned), (d) a service started from an older definition
//! (definition drift); `sync --dry-run` changes nothing; `sync --auto` resolves the safe ones
//! and leaves (c) and (d), asserted explicitly; once those are resolved by hand, drift is clean.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use testbed::{Engine, Testbed};

mod common;
use common::testbed_env::Env;

fn yaml(tb: &Testbed, keep: &str) -> String {
    let key = tb.var("TB_SSH_KEY").unwrap();
    format!(
        r#"name: driftp
hosts:
  h1: {{address: {addr}, user: hbuser, identity_file: {key}, sudo: true}}
services:
  keep:
    command: "{keep}"
  victim:
    command: "sleep 1000"
    restart: "no"
  idle:
    command: "sleep 1000"
  far:
    host: h1
    command: "sleep 1000"
"#,
        addr = tb.host("h1").addr,
    )
}

fn wait_for(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

fn state(env: &Env, name: &str) -> (String, Option<u64>) {
    let s = env
        .status()
        .into_iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no {name}"));
    (
        s["state"]["kind"].as_str().unwrap_or("").to_owned(),
        s["runtime"]["pid"].as_u64(),
    )
}

fn kill9(pid: u32) {
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    );
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(") ").next().is_some_and(|r| !r.starts_with('Z')))
}

fn drift(env: &Env) -> Value {
    let r = env.run(&["drift", "-o", "json"]);
    assert!(
        r.code == 0 || r.code == 1,
        "drift: {} {}",
        r.stdout,
        r.stderr
    );
    r.json()
}

fn findings(d: &Value) -> Vec<Value> {
    d["findings"].as_array().cloned().unwrap_or_default()
}

fn find<'a>(list: &'a [Value], category: &str, service: &str) -> Option<&'a Value> {
    list.iter()
        .find(|f| f["category"] == category && f["service"] == service)
}

/// Every service's (name, state, pid).
type Services = Vec<(String, String, Option<u64>)>;

/// What sync must not change: every service's state and pid, the launch journal, the orphan
/// process, the container.
fn world(env: &Env, tb: &Testbed, orphan: u32) -> (Services, Vec<u8>, bool, String) {
    let mut services: Services = env
        .status()
        .into_iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or("").to_owned(),
                s["state"]["kind"].as_str().unwrap_or("").to_owned(),
                s["runtime"]["pid"].as_u64(),
            )
        })
        .collect();
    services.sort();
    let journal = std::fs::read(env.home.path().join("launches")).unwrap_or_default();
    let containers = tb.docker_ok(
        Engine::Local,
        [
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            "label=harness.project=driftgone",
        ],
    );
    (services, journal, alive(orphan), containers)
}

#[test]
fn drift_finds_the_four_kinds_and_sync_resolves_the_safe_ones() {
    let tb = Testbed::get();
    let env = Env::new(&yaml(tb, "sleep 1000"));
    env.run(&["start"]).ok();
    for s in ["keep", "victim", "idle", "far"] {
        assert_eq!(state(&env, s).0, "running", "{s}");
    }
    // Nothing differs right after a start.
    let d = drift(&env);
    assert_eq!(findings(&d), Vec::<Value>::new(), "{d:#}");
    let probes = d["probes"].as_array().unwrap();
    assert!(
        probes
            .iter()
            .any(|p| p["place"] == "host h1" && p["error"].is_null() && p["seen"] == 1),
        "{probes:?}"
    );
    assert!(
        probes
            .iter()
            .any(|p| p["place"] == "engine local" && p["error"].is_null()),
        "{probes:?}"
    );

    // (b) the daemon is killed; meanwhile `victim` is killed behind its back.
    let victim = state(&env, "victim").1.unwrap() as u32;
    let daemon = env.daemon_pid().unwrap();
    kill9(daemon);
    assert!(wait_for(Duration::from_secs(5), || !alive(daemon)));
    kill9(victim);
    assert!(wait_for(Duration::from_secs(5), || !alive(victim)));
    env.run(&["status"]).ok(); // a new daemon

    // (a) `idle`'s launch identity, copied from its process before it is stopped, on a `sleep`
    // started by hand.
    let idle_pid = state(&env, "idle").1.unwrap();
    let environ = std::fs::read(format!("/proc/{idle_pid}/environ")).unwrap();
    let launch_id = environ
        .split(|&b| b == 0)
        .find_map(|kv| kv.strip_prefix(b"HARNESS_LAUNCH_ID="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .expect("idle carries its launch id");
    env.run(&["stop", "idle"]).ok();
    let mut by_hand = {
        use std::os::unix::process::CommandExt;
        Command::new("sleep")
            .arg("1000")
            .env("HARNESS_LAUNCH_ID", &launch_id)
            .process_group(0)
            .stdin(Stdio::null())
            .spawn()
            .unwrap()
    };
    let orphan = by_hand.id();

    // (c) a container this daemon labelled for a project the registry has forgotten.
    let daemon_id = launch_id.split('/').next().unwrap();
    let container = tb
        .docker_ok(
            Engine::Local,
            [
                "run",
                "-d",
                "--label",
                "harness.project=driftgone",
                "--label",
                "harness.service=db",
                "--label",
                &format!("harness.launch={daemon_id}/driftgone/db/1-2-3"),
                &tb.image,
                "sleep",
                "1000",
            ],
        )
        .trim()
        .to_owned();

    // (d) the services file changes `keep`.
    std::fs::write(env.dir.path().join("services.yaml"), yaml(tb, "sleep 1001")).unwrap();

    let d = drift(&env);
    let list = findings(&d);
    let a = find(&list, "orphaned", "idle").unwrap_or_else(|| panic!("(a) {d:#}"));
    assert_eq!(a["subject"]["pid"], orphan, "{a:#}");
    assert_eq!(a["subject"]["launch_id"], launch_id.as_str());
    assert_eq!(a["auto"], "adopt");
    let b = find(&list, "state_mismatch", "victim").unwrap_or_else(|| panic!("(b) {d:#}"));
    assert!(
        b["evidence"][0]
            .as_str()
            .unwrap()
            .contains(&format!("pid {victim}")),
        "{b:#}"
    );
    let c = find(&list, "orphaned", "db").unwrap_or_else(|| panic!("(c) {d:#}"));
    assert_eq!(c["project"], "driftgone");
    assert_eq!(c["subject"]["id"], container.as_str());
    assert!(
        c["auto"].is_null(),
        "a forgotten project's container is left: {c:#}"
    );
    let dd = find(&list, "definition_drift", "keep").unwrap_or_else(|| panic!("(d) {d:#}"));
    assert!(dd["auto"].is_null());
    assert_eq!(list.len(), 4, "exactly the four: {d:#}");
    for f in &list {
        assert!(!f["resolve"].as_array().unwrap().is_empty(), "{f:#}");
        assert!(!f["evidence"].as_array().unwrap().is_empty(), "{f:#}");
    }
    // The table says the same.
    let table = env.run(&["drift"]);
    assert_eq!(table.code, 1);
    for f in &list {
        assert!(
            table.stdout.contains(f["id"].as_str().unwrap()),
            "{}",
            table.stdout
        );
    }

    // sync --dry-run (and sync without a flag) changes nothing.
    let before = world(&env, tb, orphan);
    let dry = env.run(&["sync", "--dry-run", "-o", "json"]).ok().json();
    assert_eq!(dry["dry_run"], true);
    let planned: Vec<&str> = dry["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(planned.len(), 2, "{dry:#}");
    assert!(
        planned.contains(&"adopt") && planned.contains(&"acknowledge"),
        "{dry:#}"
    );
    assert!(
        dry["actions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["done"] == false)
    );
    env.run(&["sync"]).ok();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        world(&env, tb, orphan),
        before,
        "sync --dry-run changed something"
    );
    assert_eq!(state(&env, "idle").0, "stopped");
    let again: Vec<String> = findings(&drift(&env))
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_owned())
        .collect();
    let first: Vec<String> = list
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(again, first, "finding ids are stable");

    // A dry run is no operation; sync --auto is one (ADR 0035).
    let syncs = |env: &Env| -> Vec<serde_json::Value> {
        let ops = env.run(&["ops", "-o", "json"]).ok().json();
        ops["operations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["kind"] == "sync")
            .cloned()
            .collect()
    };
    assert!(syncs(&env).is_empty(), "a dry run was recorded");

    // sync --auto: adopts (a), acknowledges (b), leaves (c) and (d).
    let auto = env.run(&["sync", "--auto", "-o", "json"]).ok().json();
    assert_eq!(auto["dry_run"], false);
    let recorded = syncs(&env);
    assert_eq!(recorded.len(), 1, "{recorded:#?}");
    assert_eq!(
        recorded[0]["outcome"]["status"], "succeeded",
        "{recorded:#?}"
    );
    let done: Vec<&str> = auto["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["done"] == true)
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(done.len(), 2, "{auto:#}");
    let left: Vec<&str> = auto["left"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(left.len(), 2, "{auto:#}");
    assert!(
        left.contains(&c["id"].as_str().unwrap()) && left.contains(&dd["id"].as_str().unwrap())
    );
    assert_eq!(
        state(&env, "idle"),
        ("running".to_owned(), Some(u64::from(orphan)))
    );
    assert!(alive(orphan), "adopting does not kill");

    // The second drift: only what --auto must leave.
    let d2 = findings(&drift(&env));
    let ids: Vec<&str> = d2.iter().map(|f| f["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2, "{d2:#?}");
    assert!(ids.contains(&c["id"].as_str().unwrap()) && ids.contains(&dd["id"].as_str().unwrap()));

    // A human resolves those two: the container is removed (its identity re-verified), the
    // changed service restarted by `start`.
    env.run(&["sync", "--kill", c["id"].as_str().unwrap()]).ok();
    assert_eq!(
        tb.docker_ok(
            Engine::Local,
            ["ps", "-aq", "--filter", "label=harness.project=driftgone"]
        )
        .trim(),
        ""
    );
    env.run(&["start"]).ok();
    let d3 = drift(&env);
    assert_eq!(findings(&d3), Vec::<Value>::new(), "{d3:#}");

    // The adopted orphan is a service like any other: stop ends it.
    env.run(&["stop", "idle"]).ok();
    assert!(wait_for(Duration::from_secs(5), || by_hand
        .try_wait()
        .ok()
        .flatten()
        .is_some()));
}

#[test]
fn sync_never_kills_without_a_flag_nor_a_process_that_changed() {
    let tb = Testbed::get();
    let env = Env::new(&yaml(tb, "sleep 1000"));
    env.run(&["start", "idle"]).ok();
    let idle_pid = state(&env, "idle").1.unwrap();
    let environ = std::fs::read(format!("/proc/{idle_pid}/environ")).unwrap();
    let launch_id = environ
        .split(|&b| b == 0)
        .find_map(|kv| kv.strip_prefix(b"HARNESS_LAUNCH_ID="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap();
    // A second incarnation of a running service: never adopted, only killed on request.
    let mut twin = {
        use std::os::unix::process::CommandExt;
        Command::new("sleep")
            .arg("1000")
            .env("HARNESS_LAUNCH_ID", &launch_id)
            .process_group(0)
            .spawn()
            .unwrap()
    };
    let d = drift(&env);
    let list = findings(&d);
    let f = find(&list, "orphaned", "idle").unwrap_or_else(|| panic!("{d:#}"));
    assert!(
        f["auto"].is_null(),
        "a twin of a running service is not adopted: {f:#}"
    );
    let id = f["id"].as_str().unwrap().to_owned();
    env.run(&["sync", "--auto"]).ok();
    assert!(alive(twin.id()), "--auto killed something");
    let refused = env.run(&["sync", "--adopt", &id]);
    assert_ne!(refused.code, 0, "{}", refused.stdout);
    assert!(
        refused.stderr.contains("never adopted"),
        "{}",
        refused.stderr
    );
    // The twin exits between the probe and the kill: the kill finds it changed or gone and
    // kills nothing else.
    twin.kill().unwrap();
    twin.wait().unwrap();
    let r = env.run(&["sync", "--kill", &id]);
    assert_ne!(
        r.code, 0,
        "a finding that is gone is not acted on: {}",
        r.stdout
    );
    assert!(r.stderr.contains("no finding"), "{}", r.stderr);
    assert_eq!(state(&env, "idle"), ("running".to_owned(), Some(idle_pid)));
    // Forget refuses what is not abandoned.
    let r = env.run(&["sync", "--forget", "driftp/idle"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("not abandoned"), "{}", r.stderr);
}

/// Brings the link back up even when the test fails.
struct LinkDown<'a>(&'a Testbed, &'a str);

impl Drop for LinkDown<'_> {
    fn drop(&mut self) {
        self.0.link_up(self.1);
    }
}

#[test]
fn a_host_that_stops_answering_is_unreachable_not_gone() {
    let tb = Testbed::get();
    let key = tb.var("TB_SSH_KEY").unwrap();
    let env = Env::new(&format!(
        r#"name: driftu
hosts:
  h3: {{address: {addr}, user: hbuser, identity_file: {key}}}
services:
  near:
    command: "sleep 1000"
  far3:
    host: h3
    command: "sleep 1000"
"#,
        addr = tb.host("h3").addr,
    ));
    env.run(&["start"]).ok();
    assert_eq!(findings(&drift(&env)), Vec::<Value>::new());
    let far_pid = state(&env, "far3").1.unwrap() as u32;
    {
        tb.link_down("h3");
        let _up = LinkDown(tb, "h3");
        let d = drift(&env);
        let list = findings(&d);
        let host = list
            .iter()
            .find(|f| f["category"] == "unreachable" && f["place"] == "host h3")
            .unwrap_or_else(|| panic!("{d:#}"));
        assert!(
            host["evidence"][1]
                .as_str()
                .unwrap()
                .contains("driftu/far3"),
            "{host:#}"
        );
        // Nothing is concluded about what runs there (its entry may turn `unknown` meanwhile,
        // ADR 0032: also `unreachable`).
        assert!(list.iter().all(|f| f["category"] == "unreachable"), "{d:#}");
        let probe = d["probes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["place"] == "host h3")
            .unwrap();
        assert!(!probe["error"].is_null(), "{probe:#}");
        // --auto touches nothing of it.
        let auto = env.run(&["sync", "--auto", "-o", "json"]).ok().json();
        assert_eq!(auto["actions"], serde_json::json!([]), "{auto:#}");
        assert!(alive(far_pid), "the run on h3 is untouched");
    }
    // Back: the same run, nothing to say.
    assert!(wait_for(Duration::from_secs(30), || {
        state(&env, "far3") == ("running".to_owned(), Some(u64::from(far_pid)))
            && findings(&drift(&env)).is_empty()
    }));
}

/// kill -9 of the daemon at 0-250 ms into `sync --auto` adopting an orphan: the next daemon has
/// one incarnation of the service or none — the orphan adopted (running with its pid) or, when
/// the adoption was not recorded, killed as a stray of this daemon's launches (ADR 0028) — and
/// drift has nothing to say.
#[test]
fn a_daemon_killed_during_sync_leaves_one_incarnation_or_none() {
    let _tb = Testbed::get();
    let env = Env::new("name: driftk\nservices:\n  idle:\n    command: \"sleep 1000\"\n");
    let (mut adopted, mut killed) = (0, 0);
    for round in 0..6u64 {
        env.run(&["start"]).ok();
        let pid = state(&env, "idle").1.unwrap();
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let launch_id = environ
            .split(|&b| b == 0)
            .find_map(|kv| kv.strip_prefix(b"HARNESS_LAUNCH_ID="))
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap();
        env.run(&["stop", "idle"]).ok();
        let mut orphan = {
            use std::os::unix::process::CommandExt;
            Command::new("sleep")
                .arg("1000")
                .env("HARNESS_LAUNCH_ID", &launch_id)
                .process_group(0)
                .spawn()
                .unwrap()
        };
        let o = orphan.id();
        assert!(find(&findings(&drift(&env)), "orphaned", "idle").is_some());
        let mut sync = env.cmd(&["sync", "--auto"]).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(round * 50));
        kill9(env.daemon_pid().unwrap());
        let _ = sync.wait();
        env.run(&["status"]).ok(); // the next daemon
        let (st, p) = state(&env, "idle");
        if st == "running" {
            assert_eq!(
                p,
                Some(u64::from(o)),
                "round {round}: another process runs as idle"
            );
            assert!(alive(o));
            adopted += 1;
        } else {
            assert!(
                wait_for(Duration::from_secs(5), || orphan
                    .try_wait()
                    .ok()
                    .flatten()
                    .is_some()),
                "round {round}: idle is {st} but the orphan still runs"
            );
            killed += 1;
        }
        let d = drift(&env);
        assert!(
            findings(&d)
                .iter()
                .all(|f| f["category"] == "state_mismatch" && f["place"] == "daemon start"),
            "round {round}: {d:#}"
        );
        env.run(&["sync", "--auto"]).ok();
        env.run(&["stop", "idle"]).ok();
        let _ = orphan.kill();
        let _ = orphan.wait();
    }
    println!("adopted {adopted}, killed as a stray {killed}");
}

/// A container of a service of an applied project, started by hand with this daemon's labels
/// while the service does not run: an adoptable orphan; `sync --adopt` supervises it and `stop`
/// removes it.
#[test]
fn an_orphan_container_of_an_applied_project_is_adopted() {
    let tb = Testbed::get();
    let env = Env::new(&format!(
        "name: driftc\nservices:\n  near:\n    command: \"sleep 1000\"\n  box:\n    type: docker\n    image: \"{}\"\n    command: [sleep, \"1000\"]\n",
        tb.image
    ));
    env.run(&["start", "near"]).ok();
    let near = state(&env, "near").1.unwrap();
    let environ = std::fs::read(format!("/proc/{near}/environ")).unwrap();
    let daemon_id = environ
        .split(|&b| b == 0)
        .find_map(|kv| kv.strip_prefix(b"HARNESS_LAUNCH_ID="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let id = tb
        .docker_ok(
            Engine::Local,
            [
                "run",
                "-d",
                "--name",
                "harness.driftc.box",
                "--label",
                "harness.project=driftc",
                "--label",
                "harness.service=box",
                "--label",
                &format!("harness.launch={daemon_id}/driftc/box/1-2-3"),
                &tb.image,
                "sleep",
                "1000",
            ],
        )
        .trim()
        .to_owned();
    let d = drift(&env);
    let list = findings(&d);
    let f = find(&list, "orphaned", "box").unwrap_or_else(|| panic!("{d:#}"));
    assert_eq!(f["subject"]["id"], id.as_str());
    assert_eq!(f["auto"], "adopt", "{f:#}");
    let r = env
        .run(&["sync", "--adopt", f["id"].as_str().unwrap(), "-o", "json"])
        .ok()
        .json();
    assert_eq!(r["actions"][0]["done"], true, "{r:#}");
    assert_eq!(state(&env, "box").0, "running");
    let entry = env
        .status()
        .into_iter()
        .find(|s| s["name"] == "box")
        .unwrap();
    assert_eq!(entry["runtime"]["container_id"], id.as_str(), "{entry:#}");
    assert_eq!(findings(&drift(&env)), Vec::<Value>::new());
    // A container labelled with a service the project does not define: the evidence names the
    // project (it said "project {p}" before).
    let ghost = tb
        .docker_ok(
            Engine::Local,
            [
                "run",
                "-d",
                "--label",
                "harness.project=driftc",
                "--label",
                "harness.service=ghost",
                &tb.image,
                "sleep",
                "1000",
            ],
        )
        .trim()
        .to_owned();
    let d = drift(&env);
    let list = findings(&d);
    let f = find(&list, "orphaned", "ghost").unwrap_or_else(|| panic!("{d:#}"));
    let evidence = f["evidence"].to_string();
    tb.docker_ok(Engine::Local, ["rm", "-f", &ghost]);
    assert!(
        evidence.contains("project driftc does not define it") && !evidence.contains("{p}"),
        "{f:#}"
    );
    env.run(&["stop", "box"]).ok();
    assert_eq!(
        tb.docker_ok(
            Engine::Local,
            ["ps", "-aq", "--filter", "label=harness.project=driftc"]
        )
        .trim(),
        "",
        "stop removes the adopted container"
    );
}

/// Removes a test's package from h1 however the test ends.
struct PackageOnH1<'a>(&'a Testbed, String);

impl Drop for PackageOnH1<'_> {
    fn drop(&mut self) {
        let _ = self.0.sh_on(
            "h1",
            &format!("sudo -n rm -rf /opt/{0}-* /opt/.{0}.* /opt/.{0}-*", self.1),
        );
    }
}

/// Installed packages against what the applied definition runs: a clean deploy has nothing to
/// say; `NAME-current` switched by hand to another installed version, or removed, is a state
/// mismatch; the recorded version's directory gone is abandoned. Evidence says recorded vs
/// observed; `sync --auto` never touches packages; the first resolve command clears it.
#[test]
fn a_package_switched_or_removed_behind_deploys_back_is_drift() {
    let tb = Testbed::get();
    let key = tb.var("TB_SSH_KEY").unwrap();
    let name = format!("drp{}", std::process::id());
    let env = Env::new(&format!(
        r#"name: driftpkg
hosts:
  h1: {{address: {addr}, user: hbuser, identity_file: {key}, sudo: true}}
services:
  web:
    type: package
    package: {name}
    host: h1
"#,
        addr = tb.host("h1").addr,
    ));
    let _cleanup = PackageOnH1(tb, name.clone());
    let mut sources = Vec::new();
    for v in ["1.0.0", "2.0.0"] {
        let dir = env.dir.path().join(format!("src-{v}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("manifest.yaml"),
            format!("name: {name}\nversion: {v}\nstart: exec sleep 86400\n"),
        )
        .unwrap();
        sources.push(dir);
    }
    for src in &sources {
        env.run(&["deploy", src.to_str().unwrap(), "--host", "h1"])
            .ok();
    }
    env.run(&["start"]).ok();
    let clean = drift(&env);
    assert_eq!(findings(&clean), Vec::<Value>::new(), "{clean:#}");
    let probe = clean["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["place"] == "host h1")
        .cloned()
        .unwrap_or_else(|| panic!("{clean:#}"));
    assert!(probe["error"].is_null(), "{probe:#}");

    // NAME-current switched by hand to the other installed version.
    tb.sh_ok(
        "h1",
        &format!("sudo -n ln -sfn {name}-1.0.0 /opt/.{name}-x && sudo -n mv -fT /opt/.{name}-x /opt/{name}-current"),
    );
    let d = drift(&env);
    let list = findings(&d);
    assert_eq!(list.len(), 1, "{d:#}");
    let f = find(&list, "state_mismatch", "web").unwrap_or_else(|| panic!("{d:#}"));
    assert_eq!(f["place"], "host h1", "{f:#}");
    assert_eq!(f["subject"]["kind"], "package", "{f:#}");
    assert_eq!(f["subject"]["recorded"], "2.0.0", "{f:#}");
    assert_eq!(f["subject"]["active"], "1.0.0", "{f:#}");
    assert!(f.get("auto").is_none(), "{f:#}");
    let evidence = f["evidence"].to_string();
    assert!(
        evidence.contains(&format!("runs {name}-2.0.0 from /opt/{name}-2.0.0"))
            && evidence.contains(&format!("/opt/{name}-current -> {name}-1.0.0")),
        "{f:#}"
    );
    let resolve: Vec<String> = f["resolve"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        resolve[0],
        format!("harness deploy --rollback {name} --to 2.0.0 --host h1"),
        "{f:#}"
    );
    // sync --auto leaves it (deploy and rollback change packages, never sync).
    let auto = env.run(&["sync", "--auto", "-o", "json"]).ok().json();
    assert_eq!(auto["actions"], serde_json::json!([]), "{auto:#}");
    assert_eq!(
        tb.sh_ok("h1", &format!("readlink /opt/{name}-current"))
            .trim(),
        format!("{name}-1.0.0")
    );
    // Its first resolve command clears it.
    let args: Vec<&str> = resolve[0].split(' ').skip(1).collect();
    env.run(&args).ok();
    let d = drift(&env);
    assert_eq!(findings(&d), Vec::<Value>::new(), "{d:#}");

    // No NAME-current at all: a state mismatch with nothing active.
    tb.sh_ok("h1", &format!("sudo -n rm /opt/{name}-current"));
    let d = drift(&env);
    let list = findings(&d);
    let f = find(&list, "state_mismatch", "web").unwrap_or_else(|| panic!("{d:#}"));
    assert!(f["subject"].get("active").is_none(), "{f:#}");
    assert!(f["evidence"].to_string().contains("(no link)"), "{f:#}");

    // The recorded version's directory gone: abandoned.
    tb.sh_ok("h1", &format!("sudo -n rm -rf /opt/{name}-2.0.0"));
    let d = drift(&env);
    let list = findings(&d);
    let f = find(&list, "abandoned", "web").unwrap_or_else(|| panic!("{d:#}"));
    assert_eq!(f["subject"]["installed"], false, "{f:#}");
    assert!(
        f["evidence"]
            .to_string()
            .contains(&format!("/opt/{name}-2.0.0 is missing")),
        "{f:#}"
    );
    env.run(&["stop"]).ok();
}

/// Removes hand-made interfaces from h2 however the test ends.
struct InterfacesOnH2<'a>(&'a Testbed, Vec<String>);

impl Drop for InterfacesOnH2<'_> {
    fn drop(&mut self) {
        for i in &self.1 {
            let _ = self
                .0
                .sh_on("h2", &format!("sudo -n ip link del dev {i} 2>/dev/null"));
        }
    }
}

/// Mesh interfaces against the mesh records (on h2, which no other test here probes: its
/// hand-made interface would be an orphan to their daemons too): a WireGuard interface named like harness's on a
/// host with no mesh recorded for it is orphaned (made by hand with wireguard-go, as the daemon's
/// mesh watch would re-create a recorded one at once); a recorded member whose interface is
/// missing is a state mismatch (a record written by hand, which no watch of this daemon follows),
/// gone once the interface exists. Neither is anything `sync --auto` touches.
#[test]
fn a_mesh_interface_without_record_or_a_record_without_interface_is_drift() {
    let tb = Testbed::get();
    let key = tb.var("TB_SSH_KEY").unwrap();
    let env = Env::new(&format!(
        r#"name: driftmesh
hosts:
  h2: {{address: {addr}, user: hbuser, identity_file: {key}, sudo: true}}
services:
  far:
    host: h2
    command: "sleep 1000"
"#,
        addr = tb.host("h2").addr,
    ));
    // Names of this test's own (pid-derived), shaped as network/plan.rs makes them.
    let tag = format!("{:08x}", std::process::id().wrapping_mul(2_654_435_761));
    let (orphan, member) = (format!("hw{tag}7"), format!("hw{tag}8"));
    let _cleanup = InterfacesOnH2(tb, vec![orphan.clone(), member.clone()]);
    env.run(&["start"]).ok();
    let d = drift(&env);
    assert_eq!(findings(&d), Vec::<Value>::new(), "{d:#}");

    tb.sh_ok("h2", &format!("sudo -n wireguard-go {orphan}"));
    let d = drift(&env);
    let list = findings(&d);
    let f = list
        .iter()
        .find(|f| f["category"] == "orphaned" && f["subject"]["interface"] == orphan.as_str())
        .unwrap_or_else(|| panic!("{d:#}"));
    assert_eq!(f["place"], "host h2", "{f:#}");
    assert_eq!(f["subject"]["kind"], "mesh_interface", "{f:#}");
    assert_eq!(f["subject"]["present"], true, "{f:#}");
    assert!(f.get("auto").is_none(), "{f:#}");
    assert!(
        f["evidence"]
            .to_string()
            .contains(&format!("interface {orphan} exists on h2")),
        "{f:#}"
    );
    assert_eq!(
        f["resolve"][0],
        format!("ssh h2 sudo ip link del dev {orphan}"),
        "{f:#}"
    );
    let auto = env.run(&["sync", "--auto", "-o", "json"]).ok().json();
    assert_eq!(auto["actions"], serde_json::json!([]), "{auto:#}");
    tb.sh_ok("h2", &format!("sudo -n ip link del dev {orphan}"));
    let d = drift(&env);
    assert_eq!(findings(&d), Vec::<Value>::new(), "{d:#}");

    // A mesh record naming h2's interface, which does not exist.
    let record = env.home.path().join("mesh/driftmesh/m.json");
    std::fs::create_dir_all(record.parent().unwrap()).unwrap();
    std::fs::write(
        &record,
        serde_json::json!({
            "network": "m", "subnet": "10.99.0.0/24", "listen_port": 51999, "mtu": 1420,
            "members": [{
                "name": "h2", "interface": member, "address": "10.99.0.1",
                "public_key": "x", "mode": "wireguard-go", "relay": null, "endpoint": null
            }]
        })
        .to_string(),
    )
    .unwrap();
    let d = drift(&env);
    let list = findings(&d);
    assert_eq!(list.len(), 1, "{d:#}");
    let f = &list[0];
    assert_eq!(f["category"], "state_mismatch", "{f:#}");
    assert_eq!(f["subject"]["kind"], "mesh_interface", "{f:#}");
    assert_eq!(f["subject"]["network"], "m", "{f:#}");
    assert_eq!(f["subject"]["present"], false, "{f:#}");
    assert!(
        f["summary"]
            .as_str()
            .unwrap()
            .contains(&format!("interface {member} is missing on h2")),
        "{f:#}"
    );
    // The interface there: recorded, so neither missing nor orphaned.
    tb.sh_ok("h2", &format!("sudo -n wireguard-go {member}"));
    let d = drift(&env);
    assert_eq!(findings(&d), Vec::<Value>::new(), "{d:#}");
    std::fs::remove_file(&record).unwrap();
    env.run(&["stop"]).ok();
}
