//! Issue 6 through the real CLI and daemon on the testbed: a local process, an http server on h1
//! run as a sudo user, a container on h2's engine and a consumer on h3 that fetches from both;
//! kill -9 of the daemon re-attaches everything without duplicates; `stop` leaves nothing on any
//! host and no container. And `harness hosts check`.

use std::path::Path;

use std::time::{Duration, Instant};

use serde_json::Value;
use testbed::{Engine, Testbed};

mod common;
use common::testbed_env::{Env, Run};

fn hosts_yaml(tb: &Testbed) -> String {
    let key = tb.var("TB_SSH_KEY").unwrap();
    let mut y = String::from("hosts:\n");
    for h in ["h1", "h2", "h3"] {
        let docker = if h == "h2" {
            format!(", docker_host: \"{}\"", tb.docker_endpoint(Engine::H2))
        } else {
            String::new()
        };
        y.push_str(&format!(
            "  {h}: {{address: {}, user: hbuser, identity_file: {key}, sudo: true{docker}}}\n",
            tb.host(h).addr
        ));
    }
    y
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

fn kill9(pid: u32) {
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    );
}

fn containers(tb: &Testbed, project: &str) -> usize {
    tb.docker_ok(
        Engine::H2,
        [
            "ps",
            "-aq",
            "--filter",
            &format!("label=harness.project={project}"),
        ],
    )
    .lines()
    .count()
}

/// The parent pid of `pid` (all of the testbed's hosts share the root pid namespace); `None` once
/// it has exited.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn remote_stack_survives_a_killed_daemon_and_stops_clean() {
    let tb = Testbed::get();
    let port = testbed::free_port();
    let dbport = testbed::free_port();
    let yaml = format!(
        r#"name: e2eremote
{hosts}services:
  local:
    command: "while :; do echo local; sleep 1; done"
  ticker:
    host: h2
    command: "i=0; while :; do i=$((i+1)); echo tick-$$i; sleep 0.05; done"
  api:
    host: h1
    user: hbsvc
    ports: [{port}]
    command: "mkdir -p /tmp/e2e-www && echo hello-e2e > /tmp/e2e-www/index.html && exec busybox httpd -f -p {port} -h /tmp/e2e-www"
    health_check: {{http: "http://${{api.ip}}:${{api.port}}/", interval: 1s}}
    startup_timeout: 30s
  db:
    type: docker
    host: h2
    image: "{image}"
    ports: ["{dbport}:80"]
    command: ["sh", "-c", "mkdir -p /w && echo db-e2e > /w/index.html && exec httpd -f -p 80 -h /w"]
    health_check: {{command: ["wget", "-q", "-O-", "http://127.0.0.1:80/"], interval: 1s}}
    startup_timeout: 30s
  consumer:
    host: h3
    env: {{API: "${{api.ip}}:${{api.port}}", DB: "${{db.ip}}:${{db.port}}"}}
    command: "while :; do busybox wget -q -O- http://$$API/; busybox wget -q -O- http://$$DB/; sleep 1; done"
    depends_on: {{api: healthy, db: healthy}}
    health_check:
      command: ["sh", "-c", "busybox wget -q -O- http://${{api.ip}}:${{api.port}}/ | grep -q hello-e2e"]
      interval: 1s
    startup_timeout: 30s
"#,
        hosts = hosts_yaml(tb),
        image = tb.image,
    );
    let env = Env::new(&yaml);
    env.run(&["start"]).ok();

    // The consumer on h3 really fetched from h1 and from the container on h2.
    assert!(
        wait_for(Duration::from_secs(15), || {
            let out = env.run(&["logs", "consumer"]).stdout;
            out.contains("hello-e2e") && out.contains("db-e2e")
        }),
        "{}",
        env.run(&["logs"]).stdout
    );
    let health = env.run(&["health", "consumer", "-o", "json"]).ok().stdout;
    assert!(health.contains("healthy"), "{health}");

    // `ssh -O exit` every connection the daemon holds: output keeps coming after the
    // reconnect, nothing restarts, no line is lost or doubled.
    let ticks = || -> Vec<u64> {
        env.run(&["logs", "ticker"])
            .stdout
            .lines()
            .filter_map(|l| l.rsplit("tick-").next()?.trim().parse().ok())
            .collect()
    };
    let ticker_pid = env
        .status()
        .into_iter()
        .find(|s| s["name"] == "ticker")
        .unwrap()["runtime"]["pid"]
        .clone();
    let seen = ticks().len();
    assert!(seen > 0);
    let masters = env.masters();
    assert!(!masters.is_empty());
    env.close_masters();
    assert!(
        wait_for(Duration::from_secs(5), || masters
            .iter()
            .all(|m| !Path::new(&format!("/proc/{m}/cmdline")).exists()
                || std::fs::read(format!("/proc/{m}/cmdline"))
                    .is_ok_and(|c| c.is_empty()))),
        "masters still up"
    );
    assert!(
        wait_for(Duration::from_secs(20), || ticks().len() > seen + 40),
        "ticker output did not resume"
    );
    let all = ticks();
    assert_eq!(
        all,
        (1..=all.len() as u64).collect::<Vec<_>>(),
        "lines lost or doubled"
    );
    let t = env
        .status()
        .into_iter()
        .find(|s| s["name"] == "ticker")
        .unwrap();
    assert_eq!(t["runtime"]["pid"], ticker_pid);
    assert_eq!(t["restart_count"], 0);

    let before: Vec<(String, Value)> = env
        .status()
        .into_iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["runtime"]["pid"].clone(),
            )
        })
        .collect();
    assert_eq!(before.len(), 5);
    assert!(before.iter().all(|(_, p)| p.is_u64()), "{before:?}");
    assert_eq!(containers(tb, "e2eremote"), 1);

    // kill -9 the daemon; the next command starts a new one, which re-attaches everything.
    let daemon = env.daemon_pid().expect("daemon pid");
    kill9(daemon);
    assert!(wait_for(Duration::from_secs(5), || !Path::new(&format!(
        "/proc/{daemon}"
    ))
    .exists()
        || std::fs::read_to_string(format!("/proc/{daemon}/stat"))
            .is_ok_and(|s| s.contains(") Z"))));
    let after = env.status();
    assert_ne!(env.daemon_pid(), Some(daemon));
    for (name, pid) in &before {
        let s = after.iter().find(|s| s["name"] == name.as_str()).unwrap();
        assert_eq!(&s["runtime"]["pid"], pid, "{name} not re-attached: {s:#}");
        assert_eq!(s["state"]["kind"], "running", "{name}: {s:#}");
    }
    // Starting again changes nothing: no duplicate process, no second container.
    env.run(&["start"]).ok();
    let again = env.status();
    for (name, pid) in &before {
        let s = again.iter().find(|s| s["name"] == name.as_str()).unwrap();
        assert_eq!(&s["runtime"]["pid"], pid, "{name} restarted: {s:#}");
    }
    assert_eq!(containers(tb, "e2eremote"), 1);
    let api_pid = before
        .iter()
        .find(|(n, _)| n == "api")
        .unwrap()
        .1
        .as_u64()
        .unwrap() as u32;
    let matching: Vec<_> = tb
        .processes_on("h1", &format!("httpd -f -p {port}"))
        .into_iter()
        .filter(|p| p.cmdline.starts_with("busybox httpd"))
        .collect();
    // busybox httpd forks a child per request, with the server's command line: one may be caught
    // serving the health check or the consumer. A server is a match whose parent is none of them.
    let pids: Vec<u32> = matching.iter().map(|p| p.pid).collect();
    let servers: Vec<_> = matching
        .iter()
        .filter(|p| parent_of(p.pid).is_some_and(|parent| !pids.contains(&parent)))
        .collect();
    assert_eq!(servers.len(), 1, "one api on h1: {matching:?}");

    env.run(&["stop"]).ok();
    assert!(wait_for(Duration::from_secs(5), || !tb.pid_alive_on("h1", api_pid)));
    for h in ["h1", "h2", "h3"] {
        for pat in [
            format!("httpd -f -p {port}"),
            "busybox wget -q".to_owned(),
            "HARNESS-D".to_owned(),
        ] {
            // Followers serve every project of a daemon on a host: only ours count.
            let ours = |pat: &str| {
                let mut v = tb.processes_on(h, pat);
                v.retain(|p| !p.cmdline.contains("HARNESS-D") || p.cmdline.contains("e2eremote/"));
                v
            };
            assert!(
                wait_for(Duration::from_secs(5), || ours(&pat).is_empty()),
                "left on {h}: {:?}",
                ours(&pat)
            );
        }
        let state = tb.sh_ok(
            h,
            "sudo -n ls -A /home/hbuser/.local/state/harness /home/hbsvc/.local/state/harness 2>/dev/null | grep -x e2eremote || true",
        );
        assert!(state.trim().is_empty(), "state left on {h}");
    }
    assert_eq!(containers(tb, "e2eremote"), 0);
}

#[test]
fn hosts_check_reports_each_host_with_hints() {
    let tb = Testbed::get();
    let key = tb.var("TB_SSH_KEY").unwrap();
    let yaml = format!(
        r#"name: e2ehosts
{hosts}  badkey: {{address: {h3}, user: hbuser, identity_file: {wrong}}}
  pw: {{address: {h3}, user: hbpw, identity_file: {key}, sudo: true}}
  gone: {{address: {gone}, user: hbuser, identity_file: {key}}}
  h4: {{address: {h4}, user: hbuser, identity_file: {key}, jump: h1}}
services:
  db: {{type: docker, host: h2, image: "{image}"}}
"#,
        hosts = hosts_yaml(tb),
        h3 = tb.host("h3").addr,
        h4 = tb.h4.addr,
        wrong = tb.var("TB_SSH_WRONG_KEY").unwrap(),
        gone = tb.var("TB_UNREACHABLE_ADDR").unwrap(),
        image = tb.image,
    );
    let env = Env::new(&yaml);
    let began = Instant::now();
    let run = env.run(&["hosts", "check", "-o", "json"]);
    assert!(began.elapsed() < Duration::from_secs(20));
    assert_eq!(run.code, 1, "{}", run.stderr);
    let all = run.json();
    let host = |n: &str| {
        all.as_array()
            .unwrap()
            .iter()
            .find(|h| h["host"] == n)
            .unwrap()
            .clone()
    };
    for h in ["h1", "h2", "h3", "h4"] {
        let r = host(h);
        assert_eq!(r["ok"], true, "{r:#}");
        assert_eq!(r["authenticated"], true);
        assert_eq!(r["sudo"], true);
        assert!(r["latency_ms"].as_f64().unwrap() > 0.0);
    }
    let d = &host("h2")["docker"];
    assert_eq!(d["reachable"], true, "{d:#}");
    assert_eq!(d["as_user"], "root");
    let r = host("badkey");
    assert_eq!(
        (r["reachable"].clone(), r["authenticated"].clone()),
        (Value::Bool(true), Value::Bool(false))
    );
    assert!(
        r["problems"][0]["error"]
            .as_str()
            .unwrap()
            .contains("authentication failed")
    );
    assert!(
        r["problems"][0]["hint"]
            .as_str()
            .unwrap()
            .contains("authorized_keys")
    );
    let r = host("pw");
    assert_eq!(r["sudo"], false);
    assert!(
        r["problems"][0]["error"]
            .as_str()
            .unwrap()
            .contains("password"),
        "{r:#}"
    );
    assert!(
        r["problems"][0]["hint"]
            .as_str()
            .unwrap()
            .contains("NOPASSWD")
    );
    let r = host("gone");
    assert_eq!(r["reachable"], false);
    assert!(!r["problems"][0]["hint"].as_str().unwrap().is_empty());

    let table = env.run(&["hosts", "check"]);
    assert_eq!(table.code, 1);
    assert!(table.stdout.contains("hint:"), "{}", table.stdout);
}

#[test]
fn local_engine_containers_reach_and_are_reached_from_this_machine() {
    let tb = Testbed::get();
    let (web, api) = (testbed::free_port(), testbed::free_port());
    let yaml = format!(
        r#"name: e2elocal
services:
  web:
    type: docker
    image: "{image}"
    ports: ["{web}:80"]
    command: ["sh", "-c", "mkdir -p /w; echo web-local > /w/index.html; exec httpd -f -p 80 -h /w"]
    health_check: {{http: "http://${{web.ip}}:${{web.port}}/", interval: 500ms}}
  api:
    command: "mkdir -p www; echo from-this-machine > www/index.html; exec busybox httpd -f -p {api} -h www"
    ports: [{api}]
  fetch:
    command: "while :; do busybox wget -q -O- http://${{web.ip}}:${{web.port}}/; sleep 0.5; done"
  cfetch:
    type: docker
    image: "{image}"
    command: ["sh", "-c", "while :; do wget -q -O- http://${{api.ip}}:${{api.port}}/; sleep 0.5; done"]
"#,
        image = tb.image,
    );
    let env = Env::new(&yaml);
    env.run(&["start"]).ok();
    assert!(
        wait_for(Duration::from_secs(15), || {
            let out = env.run(&["logs", "fetch", "cfetch"]).stdout;
            out.contains("web-local") && out.contains("from-this-machine")
        }),
        "{}",
        env.run(&["logs"]).stdout
    );
    let local = |args: &[&str]| {
        tb.docker_ok(Engine::Local, args.iter().copied())
            .lines()
            .count()
    };
    assert_eq!(
        local(&["ps", "-q", "--filter", "label=harness.project=e2elocal"]),
        2
    );
    env.run(&["stop"]).ok();
    assert_eq!(
        local(&["ps", "-aq", "--filter", "label=harness.project=e2elocal"]),
        0
    );
}

/// A harness CLI running in the background.
struct Background(std::process::Child);

impl Background {
    fn finish(self) -> Run {
        let out = self.0.wait_with_output().unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
    fn running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

fn background(env: &Env, args: &[&str]) -> Background {
    Background(env.cmd(args).spawn().unwrap())
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos}", std::process::id())
}

#[test]
fn hosts_check_leaves_the_daemons_connections_alone() {
    let tb = Testbed::get();
    let token = unique("hxcheck");
    let yaml = format!(
        r#"name: e2echeck
{hosts}services:
  ticker:
    host: h1
    command: "while :; do echo t; sleep 0.2; done"
  box:
    type: docker
    host: h2
    image: "{image}"
    command: ["sh", "-c", "i=0; while :; do i=$((i+1)); echo box-$$i; sleep 0.1; done"]
"#,
        hosts = hosts_yaml(tb),
        image = tb.image,
    );
    let env = Env::new(&yaml);
    env.run(&["start"]).ok();
    let boxes = || {
        env.run(&["logs", "box"])
            .stdout
            .lines()
            .filter(|l| l.contains("box-"))
            .count()
    };
    assert!(
        wait_for(Duration::from_secs(15), || boxes() > 0),
        "no box logs"
    );
    // 5 s commands on h1 (over ssh) and in the container on h2 (ssh → sudo → docker exec).
    let script =
        |tag: &str, code: u8| format!("echo {tag}-begin; sleep 5; echo {tag}-end; exit {code}");
    let (s1, s2) = (script("h1", 7), script("ctr", 8));
    let mut execs = [
        background(&env, &["exec", "ticker", "--", "sh", "-c", &s1, &token]),
        background(&env, &["exec", "box", "--", "sh", "-c", &s2, &token]),
    ];
    assert!(
        wait_for(Duration::from_secs(10), || tb
            .processes_matching(&token)
            .len()
            >= 2),
        "the execs did not start"
    );
    let check = env.run(&["hosts", "check", "-o", "json"]);
    assert_eq!(check.code, 0, "{}\n{}", check.stdout, check.stderr);
    assert!(
        execs.iter_mut().all(Background::running),
        "an exec ended early"
    );
    let seen = boxes();
    let [e1, e2] = execs;
    let (r1, r2) = (e1.finish(), e2.finish());
    assert_eq!(
        (r1.code, r1.stdout.as_str()),
        (7, "h1-begin\nh1-end\n"),
        "{}",
        r1.stderr
    );
    assert_eq!(
        (r2.code, r2.stdout.as_str()),
        (8, "ctr-begin\nctr-end\n"),
        "{}",
        r2.stderr
    );
    // The container's log follower still delivers.
    assert!(
        wait_for(Duration::from_secs(10), || boxes() > seen + 10),
        "box logs stopped after hosts check"
    );
    // Nothing of the execs or of hosts check is left on any host, nor any master of hosts check.
    assert!(
        wait_for(Duration::from_secs(5), || tb
            .processes_matching(&token)
            .is_empty()),
        "left behind: {:?}",
        tb.processes_matching(&token)
    );
    let private = format!("{}/harness-ssh/p", env.run.path().display());
    assert!(
        wait_for(Duration::from_secs(5), || tb
            .processes_matching(&private)
            .is_empty()),
        "a master of hosts check is left: {:?}",
        tb.processes_matching(&private)
    );
    env.run(&["stop"]).ok();
    assert_eq!(containers(tb, "e2echeck"), 0);
}

#[test]
fn exec_env_never_shows_in_any_argv() {
    let tb = Testbed::get();
    let secret = unique("hxsecret");
    let token = unique("hxexec");
    let yaml = format!(
        r#"name: e2esecret
{hosts}services:
  mine:
    user: hbsvc
    working_dir: /tmp
    env: {{SECRET: "{secret}"}}
    command: "sleep 600"
  plain:
    host: h1
    env: {{SECRET: "{secret}"}}
    command: "sleep 600"
  su:
    host: h3
    user: hbsvc
    env: {{SECRET: "{secret}"}}
    command: "sleep 600"
  box:
    type: docker
    host: h2
    image: "{image}"
    env: {{SECRET: "{secret}"}}
    command: ["sleep", "600"]
"#,
        hosts = hosts_yaml(tb),
        image = tb.image,
    );
    let env = Env::new(&yaml);
    env.run(&["start"]).ok();
    // Only the container runs on: how the services themselves get their environment is not what is
    // checked here, `harness exec` is.
    env.run(&["stop", "mine", "plain", "su"]).ok();
    let names = ["mine", "plain", "su", "box"];
    let mut execs: Vec<Background> = names
        .iter()
        .map(|n| {
            background(
                &env,
                &[
                    "exec",
                    n,
                    "--",
                    "sh",
                    "-c",
                    "echo \"got:$SECRET\"; sleep 3",
                    &token,
                ],
            )
        })
        .collect();
    let mut polls = 0;
    while execs.iter_mut().any(Background::running) {
        let hits = tb.processes_matching(&secret);
        assert!(hits.is_empty(), "the secret is in an argv: {hits:?}");
        polls += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(polls > 20, "polled {polls} times only");
    for (n, e) in names.iter().zip(execs) {
        let r = e.finish();
        assert_eq!(r.code, 0, "{n}: {}", r.stderr);
        assert_eq!(r.stdout, format!("got:{secret}\n"), "{n}");
    }
    env.run(&["stop"]).ok();
    assert_eq!(containers(tb, "e2esecret"), 0);
}

fn exec_yaml(tb: &Testbed, project: &str, secret: &str) -> String {
    format!(
        r#"name: {project}
{hosts}services:
  mine:
    env: {{SECRET: "{secret}"}}
    command: "sleep 600"
  plain:
    host: h1
    env: {{SECRET: "{secret}"}}
    command: "sleep 600"
  su:
    host: h1
    user: hbsvc
    env: {{SECRET: "{secret}"}}
    command: "sleep 600"
  box:
    type: docker
    host: h2
    image: "{image}"
    env: {{SECRET: "{secret}"}}
    command: ["sleep", "600"]
"#,
        hosts = hosts_yaml(tb),
        image = tb.image,
    )
}

/// `printf … | harness exec svc -- …` on a local service, on h1 (ssh), on h1 as another user (ssh →
/// sudo) and in a container on h2 (ssh → sudo → docker exec): stdin arrives byte for byte and ends,
/// the service's environment is set (and in no argv), the exit code comes back.
#[test]
fn exec_pipes_stdin_through_every_layer() {
    let tb = Testbed::get();
    let secret = unique("hxpipe");
    let env = Env::new(&exec_yaml(tb, "e2epipe", &secret));
    env.run(&["start"]).ok();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 13 % 256) as u8).collect();
    for svc in ["mine", "plain", "su", "box"] {
        let mut child = env
            .cmd(&[
                "exec",
                svc,
                "--",
                "sh",
                "-c",
                "read -r line; echo \"line:$line:$SECRET\"; cat; exit 6",
            ])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let mut input = b"select 1;\n".to_vec();
        input.extend_from_slice(&data);
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            stdin.write_all(&input)
        });
        let mut polls = 0;
        while matches!(child.try_wait(), Ok(None)) && polls < 10 {
            let hits = tb.processes_matching(&secret);
            assert!(hits.is_empty(), "{svc}: the secret is in an argv: {hits:?}");
            polls += 1;
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert_eq!(
            out.status.code(),
            Some(6),
            "{svc}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let head = format!("line:select 1;:{secret}\n");
        assert!(
            out.stdout.starts_with(head.as_bytes()),
            "{svc}: {:?}",
            String::from_utf8_lossy(&out.stdout[..out.stdout.len().min(200)])
        );
        assert!(
            out.stdout[head.len()..] == data[..],
            "{svc}: {} of {} bytes came back",
            out.stdout.len() - head.len(),
            data.len()
        );
        let missing = env.run(&["exec", svc, "--", "no-such-program-y"]);
        assert_eq!(missing.code, 127, "{svc}: {}", missing.stderr);
    }
    // Ctrl-C: the first goes to the command (which ignores it here), the second gives up, and
    // the command is killed wherever it runs.
    for svc in ["plain", "su", "box"] {
        let tag = unique("86416");
        let mut child = env
            .cmd(&[
                "exec",
                svc,
                "--",
                "sh",
                "-c",
                "trap '' INT; echo ready; sleep 600; echo not-reached",
                &tag,
            ])
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut ready = String::new();
        std::io::BufRead::read_line(&mut out, &mut ready).unwrap();
        assert_eq!(ready, "ready\n", "{svc}");
        assert!(!tb.processes_matching(&tag).is_empty(), "{svc}: no {tag}");
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            matches!(child.try_wait(), Ok(None)),
            "{svc}: ended on the first Ctrl-C"
        );
        rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
        assert_eq!(child.wait().unwrap().code(), Some(130), "{svc}");
        assert!(
            wait_for(Duration::from_secs(10), || tb
                .processes_matching(&tag)
                .is_empty()),
            "{svc}: left after harness gave up: {:?}",
            tb.processes_matching(&tag)
        );
    }
    env.run(&["stop"]).ok();
    assert_eq!(containers(tb, "e2epipe"), 0);
}

/// An interactive shell in the container on h2 through ssh → sudo → docker exec, on a terminal:
/// typed commands are answered, the window size follows, the environment is set but never echoed
/// or in an argv, and the shell's exit code is harness's; then on h1 through ssh → sudo.
#[test]
fn exec_on_a_terminal_through_ssh_sudo_docker() {
    let tb = Testbed::get();
    let secret = unique("hxpty");
    let env = Env::new(&exec_yaml(tb, "e2epty", &secret));
    env.run(&["start", "box", "su"]).ok();
    for (svc, code) in [("box", 5), ("su", 4)] {
        let mut cmd = env.cmd(&["exec", svc, "--", "sh"]);
        cmd.env("TERM", "xterm-256color");
        let mut run = common::pty::PtyRun::spawn(cmd, 30, 100);
        run.type_keys("echo \"[$((6*7))] $(id -un) $TERM <$SECRET>\"; tty; stty size\r");
        assert!(
            run.wait_for(&format!("<{secret}>"), Duration::from_secs(30)),
            "{svc}: {}",
            run.text()
        );
        assert!(
            run.wait_for("30 100", Duration::from_secs(10)),
            "{svc}: {}",
            run.text()
        );
        let text = run.text();
        assert!(text.contains("[42] "), "{svc}: {text}");
        assert!(text.contains(" xterm-256color <"), "{svc}: {text}");
        assert!(text.contains("/dev/pts/"), "{svc}: {text}");
        let user = if svc == "box" { "root" } else { "hbsvc" };
        assert!(text.contains(&format!("] {user} ")), "{svc}: {text}");
        // Printed once, by the echo: the preamble that carried it was not echoed.
        assert_eq!(text.matches(secret.as_str()).count(), 1, "{svc}: {text}");
        assert!(!text.contains("export "), "{svc}: {text}");
        assert!(
            tb.processes_matching(&secret).is_empty(),
            "{svc}: the secret is in an argv"
        );
        run.resize(45, 132);
        std::thread::sleep(Duration::from_millis(500));
        run.type_keys("stty size\r");
        assert!(
            run.wait_for("45 132", Duration::from_secs(10)),
            "{svc}: {}",
            run.text()
        );
        run.type_keys(&format!("exit {code}\r"));
        assert_eq!(
            run.wait(Duration::from_secs(30)),
            Some(code),
            "{svc}: {}",
            run.text()
        );
        assert!(run.echoes(), "{svc}: the terminal was left in raw mode");
    }
    env.run(&["stop"]).ok();
    assert_eq!(containers(tb, "e2epty"), 0);
}
