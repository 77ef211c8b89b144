//! `harness deploy` end to end on the testbed hosts, through the real binary and its auto-started
//! daemon (issue 7): parallel deploys with progress and `deployment.progress` events, a redeploy
//! that does nothing, a corrupted upload refused with the previous version kept, rollback,
//! permission denied and disk full naming host and path.
//!
//! Every test installs its own package name under /opt on the hosts (private per testbed host) and
//! removes it however it ends.

#[path = "daemon/common.rs"]
#[allow(dead_code)]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use testbed::Testbed;

use common::{Env, Run};

const HOSTS: [&str; 3] = ["h1", "h2", "h3"];

/// One test's world: its daemon (via [`Env`]), a package name of its own, and cleanup on the hosts.
struct Deploy {
    env: Env,
    name: String,
    /// Extra install roots to remove (besides /opt/NAME-*).
    roots: Vec<(String, String)>,
}

impl Deploy {
    fn new(tag: &str, services: &str) -> Deploy {
        let name = format!("dt{tag}{}", std::process::id());
        let env = Env::new(&project(services.replace("PKG", &name).as_str(), false));
        Deploy {
            env,
            name,
            roots: Vec::new(),
        }
    }

    /// A package directory for `version` with `bytes` of incompressible data.
    fn source(&self, version: &str, bytes: usize) -> PathBuf {
        let dir = self.env.dir.path().join(format!("src-{version}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("manifest.yaml"),
            format!(
                "name: {}\nversion: {version}\nstart: exec sleep 86400\nsetup: echo {version} > VERSION\n",
                self.name
            ),
        )
        .unwrap();
        let mut data = vec![0u8; bytes];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ bytes as u64;
        for b in &mut data {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        std::fs::write(dir.join("data.bin"), data).unwrap();
        dir
    }

    /// `harness ARGS` with the testbed's known hosts (and `extra` env) for the daemon it starts.
    fn run(&self, args: &[&str], extra: &[(&str, &str)]) -> Run {
        let mut cmd: Command = self.env.cmd(args);
        cmd.env(
            "HARNESS_KNOWN_HOSTS",
            tb().var("TB_SSH_KNOWN_HOSTS").unwrap(),
        )
        .env_remove(packages::CORRUPT_UPLOAD_ENV);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run harness");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The version `NAME-current` points at on `host` under `root`.
    fn current(&self, host: &str, root: &str) -> String {
        tb().sh_ok(
            host,
            &format!("readlink {root}/{}-current || echo none", self.name),
        )
    }
}

impl Drop for Deploy {
    fn drop(&mut self) {
        for h in HOSTS {
            let _ = tb().sh_on(
                h,
                &format!(
                    "sudo -n rm -rf /opt/{0}-* /opt/.{0}.* /opt/.{0}-*",
                    self.name
                ),
            );
        }
        for (h, root) in &self.roots {
            let _ = tb().sh_on(h, &format!("sudo -n rm -rf {root}"));
        }
    }
}

fn tb() -> &'static Testbed {
    Testbed::get()
}

/// A services file with the testbed hosts (h3 without sudo when `h3_no_sudo`) and `services`.
fn project(services: &str, h3_no_sudo: bool) -> String {
    let key = tb().var("TB_SSH_KEY").unwrap();
    let mut y = String::from("name: deploytest\nhosts:\n");
    for h in HOSTS {
        y.push_str(&format!(
            "  {h}: {{address: {}, user: hbuser, identity_file: {key}, sudo: {}}}\n",
            tb().host(h).addr,
            !(h3_no_sudo && h == "h3")
        ));
    }
    y.push_str(services);
    y
}

fn json(run: &Run) -> Value {
    run.json()
}

fn actions(v: &Value) -> Vec<(String, String)> {
    v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["host"].as_str().unwrap().to_owned(),
                h["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn s(a: &str, b: &str) -> (String, String) {
    (a.to_owned(), b.to_owned())
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn deploys_to_two_hosts_in_parallel_and_again_does_nothing() {
    let d = Deploy::new("par", "services: {}\n");
    let src = d.source("1.0.0", 2 << 20);
    let run = d
        .run(
            &["deploy", path(&src), "--host", "h1,h2", "-o", "json"],
            &[],
        )
        .ok();
    let v = json(&run);
    assert_eq!(
        actions(&v),
        [s("h1", "installed"), s("h2", "installed")],
        "{v:#}"
    );
    // The archive was built reproducibly: its checksum is what `package build` gives.
    let built = d
        .run(
            &[
                "package",
                "build",
                path(&src),
                "--out",
                path(d.env.dir.path()),
                "-o",
                "json",
            ],
            &[],
        )
        .ok();
    assert_eq!(v["sha256"], json(&built)["sha256"]);
    for h in ["h1", "h2"] {
        assert_eq!(
            d.current(h, "/opt"),
            format!("{}-1.0.0", d.name),
            "active on {h}"
        );
        assert_eq!(
            tb().sh_ok(h, &format!("cat /opt/{}-current/VERSION", d.name)),
            "1.0.0",
            "setup ran on {h}"
        );
    }

    // The same checksum again: nothing happens, and the output says so.
    let again = d.run(&["deploy", path(&src), "--host", "h1,h2"], &[]).ok();
    for h in ["h1", "h2"] {
        let line = again
            .stdout
            .lines()
            .find(|l| l.contains(&format!(" {h} ")))
            .unwrap_or_else(|| panic!("no line for {h}: {}", again.stdout));
        assert!(line.contains("nothing done"), "{line}");
    }

    // Progress reached the API as deployment.progress events, per host, through to the outcome.
    let events: Vec<Value> = d
        .env
        .events()
        .into_iter()
        .filter(|e| e["type"] == "deployment.progress")
        .collect();
    for h in ["h1", "h2"] {
        let mine: Vec<&Value> = events.iter().filter(|e| e["data"]["host"] == h).collect();
        let phases: Vec<&str> = mine
            .iter()
            .filter_map(|e| e["data"]["phase"].as_str())
            .collect();
        for p in [
            "checking",
            "uploading",
            "verifying",
            "extracting",
            "activating",
        ] {
            assert!(phases.contains(&p), "{h} lacks {p}: {phases:?}");
        }
        let outcomes: Vec<&str> = mine
            .iter()
            .filter_map(|e| e["data"]["outcome"].as_str())
            .collect();
        assert_eq!(outcomes, ["installed", "unchanged"], "{h}");
        assert!(
            mine.iter().all(|e| e["project"] == "deploytest"),
            "{mine:#?}"
        );
    }

    // Both deployments are operations (ADR 0035), with their phases as steps per host.
    let ops = json(&d.run(&["ops", "-o", "json"], &[]).ok());
    let deploys: Vec<&Value> = ops["operations"]
        .as_array()
        .expect("operations")
        .iter()
        .filter(|o| o["kind"] == "deploy")
        .collect();
    assert_eq!(deploys.len(), 2, "{ops:#}");
    assert!(
        deploys
            .iter()
            .all(|o| o["outcome"]["status"] == "succeeded")
    );
    let first = deploys[1]["id"].as_u64().expect("id").to_string();
    let shown = json(&d.run(&["ops", "show", &first, "-o", "json"], &[]).ok());
    for h in ["h1", "h2"] {
        let kinds: Vec<&str> = shown["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .filter(|st| st["host"] == h)
            .filter_map(|st| st["kind"].as_str())
            .collect();
        assert_eq!(
            kinds,
            [
                "checking",
                "uploading",
                "verifying",
                "installing",
                "activating"
            ],
            "{h}: {shown:#}"
        );
    }
    let text = d.run(&["ops", "show", &first], &[]).ok().stdout;
    assert!(
        text.contains("uploading") && text.contains("where the time went"),
        "{text}"
    );
}

#[test]
fn without_host_deploys_where_the_package_services_run() {
    let d = Deploy::new(
        "svc",
        "services:\n  web: {type: package, package: PKG, host: h2}\n",
    );
    let src = d.source("1.0.0", 1024);
    // Plain lines on stderr when it is not a terminal.
    let run = d.run(&["deploy", path(&src)], &[]).ok();
    assert!(
        run.stderr
            .contains(&format!("h2: {}-1.0.0 uploading", d.name)),
        "{}",
        run.stderr
    );
    assert!(run.stdout.contains("h2"), "{}", run.stdout);
    assert!(!run.stdout.contains("h1"), "{}", run.stdout);
    assert_eq!(d.current("h2", "/opt"), format!("{}-1.0.0", d.name));
    assert_eq!(d.current("h1", "/opt"), "none");

    // A host that is not in the file is refused before anything happens.
    let bad = d.run(&["deploy", path(&src), "--host", "h9"], &[]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("h9"), "{}", bad.stderr);

    // An archive that does not match its .sha256 is refused by the daemon before any host is touched.
    let built = json(
        &d.run(
            &[
                "package",
                "build",
                path(&src),
                "--out",
                path(d.env.dir.path()),
                "-o",
                "json",
            ],
            &[],
        )
        .ok(),
    );
    let archive = PathBuf::from(built["path"].as_str().unwrap());
    let mut sum = archive.clone().into_os_string();
    sum.push(".sha256");
    std::fs::write(&sum, format!("{}  x\n", "0".repeat(64))).unwrap();
    let bad = d.run(&["deploy", path(&archive), "--host", "h1"], &[]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("does not match"), "{}", bad.stderr);
    assert_eq!(d.current("h1", "/opt"), "none");
}

#[test]
fn corrupted_upload_is_refused_and_the_previous_version_stays() {
    let d = Deploy::new("bad", "services: {}\n");
    let v1 = d.source("1.0.0", 1024);
    let v2 = d.source("2.0.0", 1 << 20);
    d.run(&["deploy", path(&v1), "--host", "h1"], &[]).ok();
    // The hook is read by the daemon: restart it with the hook set.
    d.run(&["daemon", "stop"], &[]).ok();
    let hook = [(packages::CORRUPT_UPLOAD_ENV, "4096")];
    let run = d.run(&["deploy", path(&v2), "--host", "h1"], &hook);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("h1: upload rejected"), "{}", run.stderr);
    assert_eq!(d.current("h1", "/opt"), format!("{}-1.0.0", d.name));
    assert_eq!(
        tb().sh_ok(
            "h1",
            &format!("ls -d /opt/{}-2.0.0 2>/dev/null || echo absent", d.name)
        ),
        "absent"
    );
}

#[test]
fn rollback_switches_back_and_forth() {
    let d = Deploy::new("rb", "services: {}\n");
    let v1 = d.source("1.0.0", 1024);
    let v2 = d.source("2.0.0", 1024);
    d.run(&["deploy", path(&v1), "--host", "h1"], &[]).ok();
    d.run(&["deploy", path(&v2), "--host", "h1"], &[]).ok();
    assert_eq!(d.current("h1", "/opt"), format!("{}-2.0.0", d.name));

    let run = d
        .run(
            &[
                "deploy",
                "--rollback",
                &d.name,
                "--host",
                "h1",
                "-o",
                "json",
            ],
            &[],
        )
        .ok();
    let v = json(&run);
    assert_eq!(actions(&v), [s("h1", "rolled_back")], "{v:#}");
    assert_eq!(v["hosts"][0]["previous"], "2.0.0");
    assert_eq!(d.current("h1", "/opt"), format!("{}-1.0.0", d.name));
    // A second rollback returns to where the first started.
    d.run(&["deploy", "--rollback", &d.name, "--host", "h1"], &[])
        .ok();
    assert_eq!(d.current("h1", "/opt"), format!("{}-2.0.0", d.name));

    // Or to a named retained version.
    d.run(
        &[
            "deploy",
            "--rollback",
            &d.name,
            "--to",
            "1.0.0",
            "--host",
            "h1",
        ],
        &[],
    )
    .ok();
    assert_eq!(d.current("h1", "/opt"), format!("{}-1.0.0", d.name));

    // Nothing to roll back to on h2: exit 1 naming the host.
    let run = d.run(&["deploy", "--rollback", &d.name, "--host", "h2"], &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("h2: no earlier version"),
        "{}",
        run.stderr
    );
    // Rollbacks are operations too; the refused one failed, naming the host.
    let ops = json(&d.run(&["ops", "-o", "json"], &[]).ok());
    let newest = &ops["operations"][0];
    assert_eq!(newest["kind"], "rollback", "{ops:#}");
    assert_eq!(newest["outcome"]["status"], "failed");
    assert!(
        newest["outcome"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("h2")),
        "{newest}"
    );
    assert_eq!(ops["operations"][1]["kind"], "rollback");
    assert_eq!(ops["operations"][1]["outcome"]["status"], "succeeded");
}

#[test]
fn permission_denied_and_disk_full_name_host_and_path() {
    let mut d = Deploy::new("err", "services: {}\n");
    // h3 without sudo: hbuser cannot write /opt.
    d.env.write(&project("services: {}\n", true));
    let v1 = d.source("1.0.0", 1024);
    let run = d.run(&["deploy", path(&v1), "--host", "h3"], &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("h3: permission denied: /opt"),
        "{}",
        run.stderr
    );

    // Disk full: a 256 KiB tmpfs in h3's own mount namespace as the install root.
    d.env.write(&project("services: {}\n", false));
    let root = format!("/opt/{}-full", d.name);
    d.roots.push(("h3".into(), root.clone()));
    let sshd = std::fs::read_to_string(tb().dir.join("hosts/h3/sshd.pid")).unwrap();
    let in_h3 = |script: &str| {
        let st = Command::new("nsenter")
            .args(["--target", sshd.trim(), "--mount", "sh", "-c", script])
            .status()
            .unwrap();
        assert!(st.success(), "{script}");
    };
    in_h3(&format!(
        "mkdir -p {root} && mount -t tmpfs -o size=256k tmpfs {root}"
    ));
    struct Unmount<'a>(&'a dyn Fn(&str), String);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            (self.0)(&format!("umount {} || true", self.1));
        }
    }
    let _unmount = Unmount(&in_h3, root.clone());
    d.run(&["deploy", path(&v1), "--host", "h3", "--root", &root], &[])
        .ok();
    let v2 = d.source("2.0.0", 1 << 20);
    let run = d.run(&["deploy", path(&v2), "--host", "h3", "--root", &root], &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("h3: no space left on device: {root}/")),
        "{}",
        run.stderr
    );
    assert_eq!(d.current("h3", &root), format!("{}-1.0.0", d.name));
}

/// A package holding a small http server that serves its own version.
fn server_source(d: &Deploy, version: &str) -> PathBuf {
    let dir = d.env.dir.path().join(format!("srv-{version}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("manifest.yaml"),
        format!(
            r#"name: {}
version: {version}
setup: printf '%s\n' "$HARNESS_PACKAGE_VERSION" > version.txt
start: exec python3 -m http.server "$PORT" --bind 0.0.0.0
health: python3 -c "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/version.txt' % os.environ['PORT'], timeout=2)"
requires: [python3]
"#,
            d.name
        ),
    )
    .unwrap();
    dir
}

/// What the consumer on h3 printed last: `web1=V web2=V`.
fn consumer_saw(d: &Deploy, want: &str) -> bool {
    common::wait_until(std::time::Duration::from_secs(20), || {
        d.run(&["logs", "consumer", "-n", "1"], &[])
            .stdout
            .contains(want)
    })
}

#[test]
fn package_services_run_on_their_hosts_and_follow_deploys_and_rollbacks() {
    let port = 20000 + std::process::id() % 20000;
    let port2 = port + 1;
    let services = format!(
        r#"services:
  web1:
    type: package
    package: PKG
    host: h1
    ports: [{{name: http, port: {port}}}]
    env: {{PORT: "{port}"}}
  web2:
    type: package
    package: PKG
    version: 1.0.0
    host: h2
    ports: [{{name: http, port: {port}}}]
    env: {{PORT: "{port}"}}
  # A second service of the same package on the same host: prepared after web2, not beside it.
  web3:
    type: package
    package: PKG
    version: 1.0.0
    host: h2
    ports: [{{name: http, port: {port2}}}]
    env: {{PORT: "{port2}"}}
  consumer:
    host: h3
    command: >-
      while true; do python3 -c 'import sys, urllib.request as u; print(" ".join(n + "=" + u.urlopen(x, timeout=2).read().decode().strip() for n, x in zip(["web1", "web2"], sys.argv[1:])), flush=True)'
      http://${{web1.ip}}:${{web1.port}}/version.txt http://${{web2.ip}}:${{web2.port}}/version.txt; sleep 0.3; done
    depends_on: {{web1: healthy, web2: healthy}}
"#
    );
    let d = Deploy::new("run", &services);
    let v1 = server_source(&d, "1.0.0");
    let v2 = server_source(&d, "2.0.0");
    let v3 = server_source(&d, "3.0.0");

    // web1's host gets the package from `harness deploy`; web2's (pinned, missing) from `start`.
    d.run(&["deploy", path(&v1), "--host", "h1"], &[]).ok();
    let run = d.run(&["start"], &[]).ok();
    assert!(run.stdout.contains("web2"), "{}", run.stdout);
    assert_eq!(d.current("h2", "/opt"), format!("{}-1.0.0", d.name));
    assert!(consumer_saw(&d, "web1=1.0.0 web2=1.0.0"));
    let web1 = d.env.service("web1");
    assert_eq!(web1["location"]["name"], "h1", "{web1:#}");
    assert_eq!(web1["health"]["status"], "healthy", "{web1:#}");
    assert_eq!(d.env.state_of("web3"), "running");

    // A new version restarts the running service on it; web2 is pinned and stays.
    let web2_pid = d.env.service("web2")["runtime"]["pid"].clone();
    let run = d
        .run(&["deploy", path(&v2), "--host", "h1,h2", "-o", "json"], &[])
        .ok();
    let v = json(&run);
    assert_eq!(
        v["hosts"][0]["restarted"],
        serde_json::json!(["web1"]),
        "{v:#}"
    );
    assert!(v["hosts"][1].get("restarted").is_none(), "{v:#}");
    assert!(consumer_saw(&d, "web1=2.0.0 web2=1.0.0"));
    assert_eq!(d.env.service("web2")["runtime"]["pid"], web2_pid);

    // A corrupted upload is refused; web1 keeps running 2.0.0, same process.
    let web1_pid = d.env.service("web1")["runtime"]["pid"].clone();
    d.run(&["daemon", "stop"], &[]).ok();
    let hook = [(packages::CORRUPT_UPLOAD_ENV, "100")];
    let run = d.run(&["deploy", path(&v3), "--host", "h1"], &hook);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("h1: upload rejected"), "{}", run.stderr);
    assert_eq!(d.env.service("web1")["runtime"]["pid"], web1_pid);
    assert!(consumer_saw(&d, "web1=2.0.0 web2=1.0.0"));

    // Rollback restores 1.0.0 on h1 and restarts web1 on it.
    let run = d
        .run(
            &[
                "deploy",
                "--rollback",
                &d.name,
                "--host",
                "h1",
                "-o",
                "json",
            ],
            &[],
        )
        .ok();
    let v = json(&run);
    assert_eq!(v["hosts"][0]["action"], "rolled_back", "{v:#}");
    assert_eq!(
        v["hosts"][0]["restarted"],
        serde_json::json!(["web1"]),
        "{v:#}"
    );
    assert_ne!(d.env.service("web1")["runtime"]["pid"], web1_pid);
    assert!(consumer_saw(&d, "web1=1.0.0 web2=1.0.0"));
}

/// Milliseconds the daemon waits after each uploaded chunk (256 KiB) in the cancel test.
const SLOW_CHUNK_MS: &str = "250";

#[test]
fn a_cancelled_deploy_leaves_every_host_on_its_previous_version() {
    let port = 20000 + (std::process::id() + 7) % 20000;
    let mut services = String::from("services:\n");
    for (i, h) in HOSTS.iter().enumerate() {
        services.push_str(&format!(
            "  web{i}:\n    type: package\n    package: PKG\n    host: {h}\n    \
             ports: [{{name: http, port: {port}}}]\n    env: {{PORT: \"{port}\"}}\n"
        ));
    }
    let d = Deploy::new("cx", &services);
    let v1 = server_source(&d, "1.0.0");
    let v2 = server_source(&d, "2.0.0");
    // 4 MiB of incompressible bytes: 16 chunks, 4 s of upload at the slowed pace.
    let mut data = vec![0u8; 4 << 20];
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for b in &mut data {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(v2.join("data.bin"), data).unwrap();
    let hook = [(packages::UPLOAD_DELAY_ENV, SLOW_CHUNK_MS)];
    d.run(&["deploy", path(&v1), "--host", "h1,h2,h3"], &hook)
        .ok();
    d.run(&["start"], &hook).ok();
    let pids: Vec<Value> = (0..3)
        .map(|i| d.env.service(&format!("web{i}"))["runtime"]["pid"].clone())
        .collect();

    let cli = d
        .env
        .cmd(&["deploy", path(&v2), "--host", "h1,h2,h3"])
        .env(
            "HARNESS_KNOWN_HOSTS",
            tb().var("TB_SSH_KNOWN_HOSTS").unwrap(),
        )
        .envs(hook)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once every host is uploading, cancel.
    let mut id = 0;
    assert!(
        common::wait_until(std::time::Duration::from_secs(30), || {
            let ops = json(&d.run(&["ops", "--running", "-o", "json"], &[]));
            let Some(op) = ops["operations"]
                .as_array()
                .and_then(|a| a.iter().find(|o| o["kind"] == "deploy"))
            else {
                return false;
            };
            id = op["id"].as_u64().unwrap();
            let op = json(&d.run(&["ops", "show", &id.to_string(), "-o", "json"], &[]));
            let uploading = op["steps"].as_array().map_or(0, |s| {
                s.iter()
                    .filter(|s| s["kind"] == "uploading" && s["result"]["status"] == "running")
                    .count()
            });
            uploading == 3
        }),
        "the deploy never had three hosts uploading"
    );
    d.run(&["ops", "cancel", &id.to_string()], &[]).ok();
    let out = cli.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("operation {id} was cancelled")) && stderr.contains("upload"),
        "{stderr}"
    );

    let op = json(
        &d.run(&["ops", "show", &id.to_string(), "-o", "json"], &[])
            .ok(),
    );
    assert_eq!(op["outcome"]["status"], "cancelled", "{op:#}");
    let n = &d.name;
    for (i, h) in HOSTS.iter().enumerate() {
        // The previous version is active, nothing of the new one nor any temporary is left.
        assert_eq!(d.current(h, "/opt"), format!("{n}-1.0.0"), "{h}");
        let left = tb().sh_ok(
            h,
            &format!(
                "sudo -n ls -A /opt | grep -F '{n}' | grep -v -e '^{n}-1.0.0$' \
                 -e '^{n}-1.0.0\\.sha256$' -e '^{n}-current$' -e '^\\.{n}\\.history$' || true"
            ),
        );
        assert_eq!(left, "", "{h} has leftovers");
        // The service still runs, the same process, answering with the old version.
        let web = d.env.service(&format!("web{i}"));
        assert_eq!(web["runtime"]["pid"], pids[i], "{h}: {web:#}");
        let answer = tb().sh_ok(
            h,
            &format!(
                "python3 -c \"import urllib.request as u; \
                 print(u.urlopen('http://127.0.0.1:{port}/version.txt', timeout=2).read().decode().strip())\""
            ),
        );
        assert_eq!(answer, "1.0.0", "{h}");
    }
    // Deploying again (not slowed down by a cancel) brings every host to the new version.
    let again = d.run(
        &["deploy", path(&v2), "--host", "h1,h2,h3", "-o", "json"],
        &hook,
    );
    assert_eq!(again.code, 0, "{}", again.stderr);
    for h in HOSTS {
        assert_eq!(d.current(h, "/opt"), format!("{n}-2.0.0"), "{h}");
    }
    d.run(&["stop"], &[]).ok();
}
