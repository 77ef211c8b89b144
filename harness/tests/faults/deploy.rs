//! The daemon killed with SIGKILL at instants spread over a deploy to three hosts (upload,
//! verify, extract, setup, activate): afterwards every host has exactly one consistent active
//! version (the old or the new, complete), no install program still runs and no temporary or
//! lock is left under the root, what the daemon recorded never claims a host it did not finish
//! (no `done` without the new version active there; the operation is `failed: interrupted`),
//! and deploying again converges every host to the new version.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use testbed::Testbed;

use crate::common::faults::{host_lock, next, rounds, seed, wait_for};
use crate::common::testbed_env::Env;

const HOSTS: [&str; 3] = ["h1", "h2", "h3"];
/// Incompressible bytes per package: a visible upload phase without slowing the suite.
const BYTES: usize = 3 << 20;

fn kill9(pid: u32) {
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    );
}

struct World {
    env: Env,
    name: String,
}

impl Drop for World {
    fn drop(&mut self) {
        for h in HOSTS {
            let _ = Testbed::get().sh_on(
                h,
                &format!(
                    "sudo -n rm -rf /opt/{0}-* /opt/.{0}.* /opt/.{0}-*",
                    self.name
                ),
            );
        }
    }
}

impl World {
    fn new() -> World {
        let tb = Testbed::get();
        let key = tb.var("TB_SSH_KEY").unwrap();
        let mut y = String::from("name: faultdeploy\nhosts:\n");
        for h in HOSTS {
            y.push_str(&format!(
                "  {h}: {{address: {}, user: hbuser, identity_file: {key}, sudo: true}}\n",
                tb.host(h).addr
            ));
        }
        y.push_str("services: {}\n");
        World {
            env: Env::new(&y),
            name: format!("fdk{}", std::process::id()),
        }
    }

    /// A package directory for `version`: data, and a setup that takes a moment and writes the
    /// version last (a half-run setup leaves no VERSION).
    fn source(&self, version: &str) -> String {
        let dir = self.env.dir.path().join(format!("src-{version}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("manifest.yaml"),
            format!(
                "name: {}\nversion: {version}\nstart: exec sleep 86400\n\
                 setup: sleep 0.3 && echo {version} > VERSION\n",
                self.name
            ),
        )
        .unwrap();
        let mut data = vec![0u8; BYTES];
        let mut x = seed();
        for b in &mut data {
            *b = next(&mut x) as u8;
        }
        std::fs::write(dir.join("data.bin"), data).unwrap();
        dir.to_str().unwrap().to_owned()
    }

    fn deploy_args<'a>(&self, src: &'a str) -> [&'a str; 6] {
        ["deploy", src, "--host", "h1,h2,h3", "-o", "json"]
    }

    /// What `host` has: the version NAME-current points at, the VERSION file of that directory,
    /// and every entry of the root that belongs to NAME but is not an installed version.
    fn look(&self, host: &str) -> (String, String, Vec<String>) {
        let n = &self.name;
        let out = Testbed::get().sh_ok(
            host,
            &format!(
                "c=$(readlink /opt/{n}-current) || c=none; echo \"$c\"; \
                 cat \"/opt/$c/VERSION\" 2>/dev/null || echo missing; \
                 sudo -n ls -A /opt | grep -F '{n}' | grep -v -e '^{n}-[0-9.]*$' \
                 -e '^{n}-[0-9.]*\\.sha256$' -e '^{n}-current$' -e '^\\.{n}\\.history$' || true"
            ),
        );
        let mut lines = out.lines().map(str::to_owned);
        let cur = lines.next().unwrap_or_default();
        let ver = lines.next().unwrap_or_default();
        (cur, ver, lines.filter(|l| !l.is_empty()).collect())
    }

    /// Live processes (any host: they share this pid namespace) whose argv names this package:
    /// install or switch programs, setup, the CLI aside.
    fn installers(&self) -> Vec<String> {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| {
                let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                let zombie = stat.rsplit(") ").next()?.starts_with('Z');
                (!zombie && cmd.contains(&self.name) && !cmd.contains(" deploy "))
                    .then(|| format!("{pid}: {}", cmd.chars().take(120).collect::<String>()))
            })
            .collect()
    }

    fn events(&self) -> Vec<Value> {
        let mut child = self
            .env
            .cmd(&["events", "--since", "0", "-o", "json"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(700));
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|e: &Value| e["type"] == "deployment.progress")
            .collect()
    }

    /// Converges: a deploy that ends 0 with the new version active and complete everywhere.
    #[track_caller]
    fn converge(&self, src: &str, version: &str, what: &str) -> Vec<String> {
        let run = self.env.run(&self.deploy_args(src));
        assert_eq!(
            run.code, 0,
            "{what}: deploy again: {}\n{}",
            run.stdout, run.stderr
        );
        let v = run.json();
        let actions = v["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["action"].as_str().unwrap_or_default().to_owned())
            .collect();
        for h in HOSTS {
            let (cur, ver, extra) = self.look(h);
            assert_eq!(cur, format!("{}-{version}", self.name), "{what}: {h}");
            assert_eq!(ver, version, "{what}: {h}: VERSION");
            assert!(extra.is_empty(), "{what}: {h}: left over: {extra:?}");
        }
        actions
    }
}

#[test]
fn a_daemon_killed_during_deploy_leaves_one_complete_version_and_converges() {
    // Other tests here take hosts' links and sshd down.
    let _hosts = host_lock();
    let w = World::new();
    let mut seed = seed();
    // The first version, and how long an uninterrupted deploy takes: the kills spread over it.
    let src = w.source("1.0.0");
    let t = Instant::now();
    w.converge(&src, "1.0.0", "first deploy");
    let full = t.elapsed();
    eprintln!(
        "an uninterrupted deploy to 3 hosts: {:.2} s",
        full.as_secs_f64()
    );
    let mut old = "1.0.0".to_owned();
    let n = rounds(4);
    let mut worst = Duration::ZERO;
    for round in 0..n {
        let version = format!("1.0.{}", round + 1);
        let src = w.source(&version);
        let daemon = w.env.daemon_pid().expect("a daemon");
        // Round r kills in the r-th slice of the deploy's duration, at a random point of it.
        let slice = full.as_millis() as u64 / u64::from(n);
        let delay =
            Duration::from_millis(slice * u64::from(round) + next(&mut seed) % slice.max(1));
        let mut cli = w
            .env
            .cmd(&w.deploy_args(&src))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        kill9(daemon);
        let _ = cli.wait();
        assert!(
            wait_for(Duration::from_secs(5), || {
                std::fs::read_to_string(format!("/proc/{daemon}/stat")).is_err()
            })
            .is_some()
        );
        let what = format!("round {round} (killed {delay:?} into the deploy of {version})");
        // Nothing of the deploy goes on without its daemon.
        let t = Instant::now();
        let settled = wait_for(Duration::from_secs(5), || w.installers().is_empty());
        assert!(
            settled.is_some(),
            "{what}: still running: {:#?}",
            w.installers()
        );
        // Every host: the old or the new version, complete, and nothing half-done beside it.
        let mut now = Vec::new();
        for h in HOSTS {
            let (cur, ver, extra) = w.look(h);
            let v = cur.strip_prefix(&format!("{}-", w.name)).unwrap_or(&cur);
            assert!(
                v == old || v == version,
                "{what}: {h} has {cur} active, neither {old} nor {version}"
            );
            assert_eq!(ver, v, "{what}: {h}: the active {cur} is not complete");
            assert!(extra.is_empty(), "{what}: {h}: left over: {extra:?}");
            now.push(v.to_owned());
        }
        // The record (a new daemon starts): no host said done that is not done, and the
        // operation failed as interrupted.
        let events = w.events();
        for (h, v) in HOSTS.iter().zip(&now) {
            let done = events.iter().any(|e| {
                e["data"]["host"] == *h
                    && e["data"]["package"] == format!("{}-{version}", w.name)
                    && e["data"]["phase"] == "done"
            });
            assert!(
                !done || *v == version,
                "{what}: the daemon recorded {h} done with {version}, but it has {v}"
            );
        }
        let ops = w.env.run(&["ops", "-o", "json"]).ok().json();
        let last = ops["operations"]
            .as_array()
            .expect("operations")
            .iter()
            .find(|o| o["kind"] == "deploy")
            .cloned()
            .unwrap_or_default();
        assert_eq!(last["outcome"]["status"], "failed", "{what}: {last:#}");
        assert!(
            last["outcome"]["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("interrupted")),
            "{what}: {last:#}"
        );
        // And deploying again finishes the job everywhere.
        let actions = w.converge(&src, &version, &what);
        let took = t.elapsed();
        worst = worst.max(took);
        eprintln!(
            "{what}: hosts had {now:?}; deploy again: {actions:?}; every host on {version} \
             {:.2} s after the kill",
            took.as_secs_f64()
        );
        old = version;
    }
    eprintln!("deploy: worst recovery {:.2} s", worst.as_secs_f64());
}
