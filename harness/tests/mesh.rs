//! Issue 13 on the testbed: a WireGuard mesh among this machine, h1, h2 and h4 (behind h1).
//! A process on h4 consumes an HTTP container on h2's engine and a local process consumes h4's
//! service, which the underlay does not route; over the mesh they work, `network test` shows
//! every pair reachable, the bridge carries only WireGuard UDP for that traffic, a daemon
//! kill -9 and restart re-adopts the mesh (same keys and addresses, one wireguard-go each), and
//! `stop` leaves nothing on any host. Bad input: a subnet that overlaps, a host whose sudo
//! needs a password.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use testbed::{Engine, Testbed, wait_until};

mod common;
use common::testbed_env::Env;

fn instance(tb: &Testbed) -> u16 {
    tb.var("TB_INSTANCE")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn hosts_yaml(tb: &Testbed, user_h4: &str) -> String {
    let key = tb.var("TB_SSH_KEY").unwrap();
    format!(
        "hosts:
  h1: {{address: {h1}, user: hbuser, identity_file: {key}, sudo: true}}
  h2: {{address: {h2}, user: hbuser, identity_file: {key}, sudo: true, docker_host: \"{dh}\"}}
  h4: {{address: {h4}, user: {user_h4}, identity_file: {key}, sudo: true, jump: h1}}
",
        h1 = tb.host("h1").addr,
        h2 = tb.host("h2").addr,
        h4 = tb.host("h4").addr,
        dh = tb.docker_endpoint(Engine::H2),
    )
}

fn mesh_yaml(tb: &Testbed, port: u16) -> String {
    let i = instance(tb);
    format!(
        "networks:
  mesh:
    type: wireguard
    subnet: 10.77.{i}.0/24
    listen_port: {port}
    mtu: 1420
    nodes: [{{host: local}}, {{host: h1}}, {{host: h2}}, {{host: h4}}]
"
    )
}

/// The machines' namespaces: `None` = this one.
fn in_ns(tb: &Testbed, host: Option<&str>, script: &str) -> std::process::Output {
    let mut c = match host {
        Some(h) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &tb.host(h).netns, "sh", "-c", script]);
            c
        }
        None => {
            let mut c = Command::new("sh");
            c.args(["-c", script]);
            c
        }
    };
    c.stdin(Stdio::null());
    testbed::run(c, Duration::from_secs(30))
}

fn interfaces(tb: &Testbed, host: Option<&str>) -> Vec<String> {
    let out = in_ns(tb, host, "ip -o link show");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .filter(|n| n.starts_with("hw"))
        .collect()
}

fn wireguard_go(tb: &Testbed, interface: &str) -> usize {
    tb.processes_matching(&format!("wireguard-go {interface}"))
        .into_iter()
        .filter(|p| p.cmdline.trim() == format!("wireguard-go {interface}"))
        .count()
}

fn members(env: &Env) -> Vec<Value> {
    match env.run(&["network", "list", "-o", "json"]).ok().json() {
        Value::Array(a) => a,
        v => panic!("{v}"),
    }
}

fn kill9(pid: u32) {
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    );
}

#[test]
fn mesh_joins_a_jump_only_host_a_remote_container_and_this_machine() {
    let tb = Testbed::get();
    let i = instance(tb);
    let wg_port = 51820 + 10 * i;
    let web_port = testbed::free_port();
    let api_port = testbed::free_port();
    let h2 = tb.host("h2").addr;
    let h4 = tb.host("h4").addr;

    // The underlay does not route between h4 and h2, nor from here to h4.
    assert!(
        !in_ns(tb, Some("h4"), &format!("busybox ping -c 1 -W 1 {h2}"))
            .status
            .success()
    );
    assert!(
        !in_ns(tb, None, &format!("busybox ping -c 1 -W 1 {h4}"))
            .status
            .success()
    );

    let yaml = format!(
        r#"name: meshe2e
{hosts}{mesh}services:
  web:
    type: docker
    host: h2
    network: mesh
    image: "{image}"
    ports: ["{web_port}:80"]
    command: ["sh", "-c", "mkdir -p /w && echo web-on-h2 > /w/index.html && exec httpd -f -p 80 -h /w"]
  api4:
    host: h4
    ports: [{api_port}]
    command: "mkdir -p /tmp/m4 && echo api-on-h4 > /tmp/m4/index.html && exec busybox httpd -f -p {api_port} -h /tmp/m4"
  fetch4:
    host: h4
    env: {{WEB: "${{web.ip}}:${{web.port}}"}}
    command: "while :; do echo \"web at $$WEB\"; busybox wget -q -O- http://$$WEB/; sleep 0.5; done"
    depends_on: [web]
  fetchlocal:
    env: {{API: "${{api4.ip}}:${{api4.port}}"}}
    command: "while :; do echo \"api at $$API\"; busybox wget -q -O- http://$$API/; sleep 0.5; done"
    depends_on: [api4]
"#,
        hosts = hosts_yaml(tb, "hbuser"),
        mesh = mesh_yaml(tb, wg_port),
        image = tb.image,
    );
    let env = Env::new(&yaml);
    let started = env.run(&["start"]);
    assert_eq!(started.code, 0, "{}\n{}", started.stdout, started.stderr);

    // Each consumer got the provider's mesh address and reaches it through the mesh.
    let logs = |s: &str| env.run(&["logs", s]).stdout;
    assert!(
        wait_until(Duration::from_secs(20), || logs("fetch4")
            .contains("web-on-h2")),
        "{}",
        logs("fetch4")
    );
    assert!(
        wait_until(Duration::from_secs(20), || logs("fetchlocal")
            .contains("api-on-h4")),
        "{}",
        logs("fetchlocal")
    );
    let list = members(&env);
    let addr_of = |m: &str| {
        list.iter().find(|r| r["member"] == m).unwrap()["address"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_owned()
    };
    assert!(logs("fetch4").contains(&format!("web at {}:{web_port}", addr_of("h2"))));
    assert!(logs("fetchlocal").contains(&format!("api at {}:{api_port}", addr_of("h4"))));
    assert_eq!(addr_of("local"), format!("10.77.{i}.1"));
    assert_eq!(addr_of("h4"), format!("10.77.{i}.4"));
    // The daemon lists (and would check) a service on the jump-only host at its mesh address.
    let api4 = env
        .status()
        .into_iter()
        .find(|s| s["name"] == "api4")
        .unwrap();
    assert_eq!(api4["endpoints"][0]["ip"], addr_of("h4"), "{api4:#}");

    // Every pair of members answers over the mesh.
    let test = env.run(&["network", "test", "-o", "json"]);
    assert_eq!(test.code, 0, "{}\n{}", test.stdout, test.stderr);
    let pairs = test.json();
    let pairs = pairs.as_array().unwrap();
    assert_eq!(pairs.len(), 12, "{pairs:#?}");
    assert!(pairs.iter().all(|p| p["mesh_ok"] == true), "{pairs:#?}");
    // ... where the underlay does not: h4 and h2 do not reach each other on it.
    let pair = |a: &str, b: &str| {
        pairs
            .iter()
            .find(|p| p["from"] == a && p["to"] == b)
            .unwrap()
            .clone()
    };
    assert_eq!(pair("h4", "h2")["underlay_ok"], false);
    assert_eq!(pair("local", "h4")["underlay_ok"], false);
    let show = env
        .run(&["network", "show", "mesh", "-o", "json"])
        .ok()
        .json();
    assert_eq!(show.as_array().unwrap().len(), 4, "{show:#}");

    // On the hosts' bridge that traffic is WireGuard UDP only: no TCP to the services' ports,
    // none of the page text in clear.
    let bridge = format!(
        "hb{}br0",
        if i == 0 { String::new() } else { i.to_string() }
    );
    let cap = in_ns(
        tb,
        None,
        &format!(
            "timeout 3 tcpdump -l -n -A -i {bridge} 'ip and not tcp port 22' 2>/dev/null; true"
        ),
    );
    let text = String::from_utf8_lossy(&cap.stdout);
    assert!(
        text.contains(&format!(".{wg_port}: UDP")),
        "no WireGuard traffic seen:\n{text}"
    );
    assert!(
        !text.contains("web-on-h2") && !text.contains("api-on-h4"),
        "{text}"
    );
    assert!(
        !text.contains(&format!(".{web_port}: ")) && !text.contains(&format!(".{api_port}: ")),
        "{text}"
    );

    // kill -9 of the daemon and a new one: the same keys and addresses, one wireguard-go each.
    let before: Vec<(String, String, String)> = list
        .iter()
        .map(|r| {
            (
                r["member"].as_str().unwrap().to_owned(),
                r["public_key"].as_str().unwrap().to_owned(),
                r["address"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let ifaces: Vec<String> = list
        .iter()
        .map(|r| r["interface"].as_str().unwrap().to_owned())
        .collect();
    let pids = || -> Vec<u32> {
        let mut p: Vec<u32> = ifaces
            .iter()
            .flat_map(|f| {
                tb.processes_matching(&format!("wireguard-go {f}"))
                    .into_iter()
                    .filter(move |p| p.cmdline.trim() == format!("wireguard-go {f}"))
                    .map(|p| p.pid)
            })
            .collect();
        p.sort();
        p
    };
    let pids_before = pids();
    assert_eq!(pids_before.len(), 4);
    kill9(env.daemon_pid().unwrap());
    std::thread::sleep(Duration::from_millis(300));
    let again = env.run(&["start"]);
    assert_eq!(again.code, 0, "{}\n{}", again.stdout, again.stderr);
    let after: Vec<(String, String, String)> = members(&env)
        .iter()
        .map(|r| {
            (
                r["member"].as_str().unwrap().to_owned(),
                r["public_key"].as_str().unwrap().to_owned(),
                r["address"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(before, after);
    // The same wireguard-go processes: adopted, not replaced.
    assert_eq!(pids(), pids_before);
    for f in &ifaces {
        assert_eq!(wireguard_go(tb, f), 1, "{f}");
    }
    assert!(wait_until(Duration::from_secs(10), || {
        env.run(&["network", "test", "h4", "h2"]).code == 0
    }));

    // Stop: nothing left on any member.
    env.run(&["stop"]).ok();
    for (host, f) in [None, Some("h1"), Some("h2"), Some("h4")]
        .into_iter()
        .zip(&ifaces)
    {
        assert!(
            !interfaces(tb, host).contains(f),
            "{host:?}: {:?}",
            interfaces(tb, host)
        );
        assert_eq!(wireguard_go(tb, f), 0, "{f}");
        assert!(!std::path::Path::new(&format!("/var/run/wireguard/{f}.sock")).exists());
        // The key stays in the key directory, 0600, and nowhere else.
        let meta = std::fs::metadata(format!("/var/lib/harness/wireguard/{f}.key")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    assert!(members(&env).iter().all(|r| r["up"] == false));
    for f in &ifaces {
        let _ = std::fs::remove_file(format!("/var/lib/harness/wireguard/{f}.key"));
    }
}

#[test]
fn a_host_whose_sudo_needs_a_password_fails_the_mesh_and_leaves_nothing() {
    let tb = Testbed::get();
    let i = instance(tb);
    let yaml = format!(
        "name: meshpw
{hosts}{mesh}services:
  a:
    host: h4
    command: \"sleep 600\"
",
        hosts = hosts_yaml(tb, tb.var("TB_PASSWORD_SUDO_USER").unwrap()),
        mesh = mesh_yaml(tb, 51821 + 10 * i),
    );
    let env = Env::new(&yaml);
    let r = env.run(&["start"]);
    assert_ne!(r.code, 0);
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(
        all.contains("network \"mesh\", host \"h4\"") && all.contains("sudo needs a password"),
        "{all}"
    );
    nothing_left(tb, &env, &[None, Some("h1"), Some("h2"), Some("h4")]);
}

/// None of this project's mesh interfaces (other tests' may run beside it) exists on `hosts`,
/// and no wireguard-go runs for one; their keys (only in the key directory) are removed.
fn nothing_left(tb: &Testbed, env: &Env, hosts: &[Option<&str>]) {
    let ifaces: Vec<String> = members(env)
        .iter()
        .map(|r| r["interface"].as_str().unwrap().to_owned())
        .collect();
    for host in hosts {
        let found = interfaces(tb, *host);
        assert!(
            !ifaces.iter().any(|f| found.contains(f)),
            "{host:?}: {found:?}"
        );
    }
    for f in &ifaces {
        assert_eq!(wireguard_go(tb, f), 0, "{f}");
        let _ = std::fs::remove_file(format!("/var/lib/harness/wireguard/{f}.key"));
    }
}

#[test]
fn an_overlapping_subnet_is_refused_at_its_line() {
    let tb = Testbed::get();
    let yaml = format!(
        "name: meshbad
{hosts}{mesh}  lab:
    type: lan
    subnet: 10.77.0.0/16
services:
  a:
    command: \"sleep 600\"
",
        hosts = hosts_yaml(tb, "hbuser"),
        mesh = mesh_yaml(tb, 51822),
    );
    let env = Env::new(&yaml);
    let r = env.run(&["start"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("services.yaml:") && r.stderr.contains("overlaps subnet"),
        "{}",
        r.stderr
    );
}

/// `wg` hidden on h3 (a non-executable file bound over it in h3's private mount namespace).
struct HiddenWg {
    pid: String,
}

impl HiddenWg {
    fn new(tb: &Testbed) -> HiddenWg {
        let pid =
            std::fs::read_to_string(format!("{}/hosts/h3/sshd.pid", tb.var("TB_DIR").unwrap()))
                .unwrap()
                .trim()
                .to_owned();
        let out = in_ns(
            tb,
            None,
            &format!("nsenter --target {pid} --mount mount --bind /dev/null \"$(command -v wg)\""),
        );
        assert!(out.status.success(), "{out:?}");
        HiddenWg { pid }
    }
}

impl Drop for HiddenWg {
    fn drop(&mut self) {
        let tb = Testbed::get();
        in_ns(
            tb,
            None,
            &format!(
                "nsenter --target {} --mount umount \"$(command -v wg)\"",
                self.pid
            ),
        );
    }
}

#[test]
fn a_missing_wireguard_tool_is_named_by_hosts_check_and_start() {
    let tb = Testbed::get();
    let i = instance(tb);
    let key = tb.var("TB_SSH_KEY").unwrap();
    let yaml = format!(
        "name: meshtool
hosts:
  h1: {{address: {h1}, user: hbuser, identity_file: {key}, sudo: true}}
  h3: {{address: {h3}, user: hbuser, identity_file: {key}, sudo: true}}
networks:
  mesh:
    type: wireguard
    subnet: 10.78.{i}.0/24
    listen_port: {port}
    nodes: [{{host: h1}}, {{host: h3}}]
services:
  a:
    host: h3
    command: \"sleep 600\"
",
        h1 = tb.host("h1").addr,
        h3 = tb.host("h3").addr,
        port = 51823 + 10 * i,
    );
    let env = Env::new(&yaml);
    let _hidden = HiddenWg::new(tb);
    let check = env.run(&["hosts", "check", "-o", "json"]);
    assert_eq!(check.code, 1, "{}", check.stderr);
    let reports = check.json();
    let h3 = reports
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["host"] == "h3")
        .unwrap()
        .clone();
    let problem = h3["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["check"] == "wireguard")
        .unwrap_or_else(|| panic!("{h3:#}"))
        .clone();
    assert!(
        problem["error"].as_str().unwrap().contains("network mesh"),
        "{problem}"
    );
    assert!(
        problem["hint"]
            .as_str()
            .unwrap()
            .contains("apt-get install wireguard-tools"),
        "{problem}"
    );
    let h1_ok = reports
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["host"] == "h1")
        .unwrap()["ok"]
        == true;
    assert!(h1_ok, "{reports:#}");

    let r = env.run(&["start"]);
    assert_ne!(r.code, 0);
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(
        all.contains("network \"mesh\", host \"h3\"") && all.contains("wireguard-tools"),
        "{all}"
    );
    nothing_left(tb, &env, &[Some("h1"), Some("h3")]);
}

/// A node added to a live mesh becomes every member's peer (h4, relayed by h1); one removed loses
/// its interface and is no one's peer any more; the services keep running. (Not h3: another test
/// hides `wg` there.)
#[test]
fn members_join_and_leave_a_live_mesh() {
    let tb = Testbed::get();
    let i = instance(tb);
    let key = tb.var("TB_SSH_KEY").unwrap();
    let yaml = |nodes: &str| {
        format!(
            "name: meshlive
hosts:
  h1: {{address: {h1}, user: hbuser, identity_file: {key}, sudo: true}}
  h2: {{address: {h2}, user: hbuser, identity_file: {key}, sudo: true}}
  h4: {{address: {h4}, user: hbuser, identity_file: {key}, sudo: true, jump: h1}}
networks:
  mesh:
    type: wireguard
    subnet: 10.76.{i}.0/24
    listen_port: {port}
    nodes: [{nodes}]
services:
  a:
    host: h1
    command: \"sleep 600\"
",
            h1 = tb.host("h1").addr,
            h2 = tb.host("h2").addr,
            h4 = tb.host("h4").addr,
            port = 51824 + 10 * i,
        )
    };
    let env = Env::new(&yaml("{host: h1}, {host: h2}"));
    env.run(&["start"]).ok();
    let peers = |env: &Env, member: &str| -> usize {
        let shown = env.run(&["network", "show", "mesh", "-o", "json"]).json();
        shown
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["member"] == member)
            .map(|m| m["peers"].as_array().unwrap().len())
            .unwrap_or(0)
    };
    assert_eq!(peers(&env, "h1"), 1);
    let a_pid = env.status()[0]["runtime"]["pid"].clone();

    std::fs::write(
        env.dir.path().join("services.yaml"),
        yaml("{host: h1}, {host: h2}, {host: h4}"),
    )
    .unwrap();
    env.run(&["start"]).ok();
    assert_eq!(peers(&env, "h1"), 2);
    assert_eq!(env.run(&["network", "test", "h1", "h4"]).code, 0);
    let h4_iface = members(&env).iter().find(|r| r["member"] == "h4").unwrap()["interface"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(interfaces(tb, Some("h4")).contains(&h4_iface));

    std::fs::write(
        env.dir.path().join("services.yaml"),
        yaml("{host: h1}, {host: h2}"),
    )
    .unwrap();
    env.run(&["start"]).ok();
    assert_eq!(peers(&env, "h1"), 1);
    assert!(!interfaces(tb, Some("h4")).contains(&h4_iface));
    assert_eq!(wireguard_go(tb, &h4_iface), 0);
    let _ = std::fs::remove_file(format!("/var/lib/harness/wireguard/{h4_iface}.key"));
    // The service was not restarted by any of it.
    assert_eq!(env.status()[0]["runtime"]["pid"], a_pid);

    env.run(&["stop"]).ok();
    nothing_left(tb, &env, &[Some("h1"), Some("h2"), Some("h4")]);
}

/// No `networks:` at all: a local process consumes a service on the jump-only h4, which the
/// underlay does not route to; harness brings up the automatic mesh among exactly this machine,
/// h4 and its jump host h1 (not h2, also a hosts entry), `network list` shows it as automatic,
/// and `stop` removes it from every member.
#[test]
fn an_automatic_mesh_joins_this_machine_to_a_jump_only_host() {
    let tb = Testbed::get();
    let i = instance(tb);
    // Names whose automatic UDP port (51821 + the first byte of SHA-256(name)) is above the
    // ports the other tests of every instance use (51820..51914): the local member of every
    // instance listens in this machine's one namespace.
    let name = format!("auto76-{i}");
    let api_port = testbed::free_port();
    let h4 = tb.host("h4").addr;
    assert!(
        !in_ns(tb, None, &format!("busybox ping -c 1 -W 1 {h4}"))
            .status
            .success()
    );
    let yaml = format!(
        r#"name: {name}
{hosts}services:
  api4:
    host: h4
    ports: [{api_port}]
    command: "mkdir -p /tmp/a4-{api_port} && echo auto-on-h4 > /tmp/a4-{api_port}/index.html && exec busybox httpd -f -p {api_port} -h /tmp/a4-{api_port}"
  fetchlocal:
    env: {{API: "${{api4.ip}}:${{api4.port}}"}}
    command: "while :; do echo \"api at $$API\"; busybox wget -q -O- http://$$API/; sleep 0.5; done"
    depends_on: [api4]
"#,
        hosts = hosts_yaml(tb, "hbuser"),
    );
    let env = Env::new(&yaml);
    let started = env.run(&["start"]);
    assert_eq!(started.code, 0, "{}\n{}", started.stdout, started.stderr);

    let list = members(&env);
    let names: Vec<&str> = list.iter().map(|r| r["member"].as_str().unwrap()).collect();
    assert_eq!(names, ["local", "h1", "h4"], "{list:#?}");
    assert!(
        list.iter()
            .all(|r| r["network"] == "auto" && r["automatic"] == true && r["up"] == true),
        "{list:#?}"
    );
    let h4_mesh = list[2]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    assert!(h4_mesh.starts_with("10.213."), "{h4_mesh}");
    let shown = env.run(&["network", "list"]).ok().stdout;
    assert!(shown.contains("auto (automatic)"), "{shown}");

    let logs = || env.run(&["logs", "fetchlocal"]).stdout;
    assert!(
        wait_until(Duration::from_secs(20), || logs().contains("auto-on-h4")),
        "{}",
        logs()
    );
    assert!(
        logs().contains(&format!("api at {h4_mesh}:{api_port}")),
        "{}",
        logs()
    );
    let test = env.run(&["network", "test", "-o", "json"]);
    assert_eq!(test.code, 0, "{}\n{}", test.stdout, test.stderr);
    assert_eq!(test.json().as_array().unwrap().len(), 6);

    // `config show --resolved` says which address each consumer got, and that it is the mesh's.
    let resolved = env
        .run(&["config", "show", "--resolved", "-o", "json"])
        .ok()
        .json();
    let row = |svc: &str, reference: &str| {
        resolved
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["service"] == svc && r["reference"] == reference)
            .unwrap_or_else(|| panic!("{resolved:#}"))
            .clone()
    };
    let ip = row("fetchlocal", "${api4.ip}");
    assert_eq!(
        (
            ip["value"].as_str(),
            ip["via"].as_str(),
            ip["network"].as_str()
        ),
        (Some(h4_mesh.as_str()), Some("mesh"), Some("auto")),
        "{ip}"
    );
    assert_eq!(row("fetchlocal", "${api4.port}")["via"], "port");
    let endpoint = row("api4", "endpoint");
    assert_eq!(
        (&endpoint["value"], &endpoint["via"]),
        (&Value::from(h4_mesh.clone()), &Value::from("mesh"))
    );

    let ifaces: Vec<String> = list
        .iter()
        .map(|r| r["interface"].as_str().unwrap().to_owned())
        .collect();

    // h1 "reboots": its interface and wireguard-go are gone, without a `start` the daemon puts
    // them back (same key and address), and the mesh works again.
    let h1_if = &ifaces[1];
    let out = in_ns(tb, Some("h1"), &format!("ip link del dev {h1_if}"));
    assert!(out.status.success(), "{out:?}");
    for p in tb.processes_matching(&format!("wireguard-go {h1_if}")) {
        if p.cmdline.trim() == format!("wireguard-go {h1_if}") {
            kill9(p.pid);
        }
    }
    assert!(!interfaces(tb, Some("h1")).contains(h1_if));
    let t = std::time::Instant::now();
    assert!(
        wait_until(Duration::from_secs(20), || interfaces(tb, Some("h1"))
            .contains(h1_if)),
        "h1's interface did not come back"
    );
    eprintln!("h1's interface back after {:?}", t.elapsed());
    assert!(
        wait_until(Duration::from_secs(15), || env
            .run(&["network", "test"])
            .code
            == 0),
        "{}",
        env.run(&["network", "test"]).stdout
    );
    eprintln!("network test passes again after {:?}", t.elapsed());
    assert_eq!(wireguard_go(tb, h1_if), 1);
    let again = members(&env);
    assert_eq!(again[1]["public_key"], list[1]["public_key"]);
    assert_eq!(again[1]["address"], list[1]["address"]);

    // A daemon killed -9 and started again (by `status`) watches the mesh too: h4's interface,
    // removed while no daemon ran, comes back.
    kill9(env.daemon_pid().unwrap());
    let h4_if = &ifaces[2];
    let out = in_ns(tb, Some("h4"), &format!("ip link del dev {h4_if}"));
    assert!(out.status.success(), "{out:?}");
    for p in tb.processes_matching(&format!("wireguard-go {h4_if}")) {
        if p.cmdline.trim() == format!("wireguard-go {h4_if}") {
            kill9(p.pid);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    env.run(&["status"]).ok();
    assert!(
        wait_until(Duration::from_secs(20), || interfaces(tb, Some("h4"))
            .contains(h4_if)),
        "h4's interface did not come back after the daemon's restart"
    );
    assert!(
        wait_until(Duration::from_secs(15), || env
            .run(&["network", "test"])
            .code
            == 0),
        "{}",
        env.run(&["network", "test"]).stdout
    );
    assert_eq!(wireguard_go(tb, h4_if), 1);
    env.run(&["stop"]).ok();
    for (host, f) in [None, Some("h1"), Some("h4")].into_iter().zip(&ifaces) {
        assert!(!interfaces(tb, host).contains(f), "{host:?}: {f}");
        assert_eq!(wireguard_go(tb, f), 0, "{f}");
    }
    assert!(
        interfaces(tb, Some("h2"))
            .iter()
            .all(|f| !f.starts_with(&ifaces[0][..10]))
    );
    assert!(members(&env).iter().all(|r| r["up"] == false));
    nothing_left(tb, &env, &[None, Some("h1"), Some("h2"), Some("h4")]);
}

/// `network install`: on h1 everything is there (the testbed's hosts share this machine's /usr,
/// so nothing is uninstalled to try a real install); as hbpw on h4 sudo needs a password, named
/// with the host; an unknown host is refused.
#[test]
fn network_install_says_when_nothing_is_needed_and_names_a_host_whose_sudo_needs_a_password() {
    let tb = Testbed::get();
    let yaml = format!(
        "name: meshinstall
{hosts}services:
  a:
    command: \"sleep 600\"
",
        hosts = hosts_yaml(tb, tb.var("TB_PASSWORD_SUDO_USER").unwrap()),
    );
    let env = Env::new(&yaml);
    let ok = env.run(&["network", "install", "h1"]);
    assert_eq!(ok.code, 0, "{}\n{}", ok.stdout, ok.stderr);
    assert!(
        ok.stdout.contains("h1: ") && ok.stdout.contains("nothing to install"),
        "{}",
        ok.stdout
    );
    let json = env
        .run(&["network", "install", "h1", "-o", "json"])
        .ok()
        .json();
    assert_eq!(json["installed"], Value::Array(vec![]), "{json}");

    let pw = env.run(&["network", "install", "h4"]);
    assert_eq!(pw.code, 1, "{}\n{}", pw.stdout, pw.stderr);
    assert!(
        pw.stderr.contains("host \"h4\"") && pw.stderr.contains("sudo needs a password"),
        "{}",
        pw.stderr
    );
    let unknown = env.run(&["network", "install", "h9"]);
    assert_eq!(unknown.code, 2, "{}", unknown.stderr);
    assert!(
        unknown.stderr.contains("\"h9\" is not defined"),
        "{}",
        unknown.stderr
    );
}
