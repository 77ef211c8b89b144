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

    /// Starts `harness deploy` of `src` and returns once the deploy has reached a host (a process
    /// naming the package runs): kill delays count from there, not from the CLI's build.
    fn begin(&self, src: &str) -> (std::process::Child, Instant) {
        let mut cli = self
            .env
            .cmd(&self.deploy_args(src))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let reached = wait_for(Duration::from_secs(20), || {
            !self.installers().is_empty() || cli.try_wait().ok().flatten().is_some()
        });
        assert!(
            reached.is_some(),
            "the deploy of {src} reached no host in 20 s"
        );
        (cli, Instant::now())
    }

    fn events(&self) -> Vec<Value> {
        let out = self
            .env
            .cmd(&["events", "--since", "0", "--no-follow", "-o", "json"])
            .output()
            .unwrap();
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
    let src = w.source("0.9.0");
    w.converge(&src, "0.9.0", "first deploy");
    let src = w.source("1.0.0");
    let (mut cli, t) = w.begin(&src);
    assert!(cli.wait().unwrap().success());
    let full = t.elapsed();
    w.converge(&src, "1.0.0", "second deploy");
    eprintln!(
        "a deploy to 3 hosts, from reaching them to the CLI's end: {:.2} s",
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
        let (mut cli, began) = w.begin(&src);
        std::thread::sleep(delay.saturating_sub(began.elapsed()));
        // A deploy faster than the first one (its connections were up) may be over already.
        let finished = cli.try_wait().ok().flatten().is_some();
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
        // The daemon may record the success and be killed before the CLI has read it: then the
        // record must be true on every host.
        let recorded_success = last["outcome"]["status"] == "succeeded";
        if recorded_success && !finished {
            assert!(
                now.iter().all(|v| *v == version),
                "{what}: recorded succeeded, but the hosts have {now:?}: {last:#}"
            );
        }
        if finished || recorded_success {
            assert_eq!(last["outcome"]["status"], "succeeded", "{what}: {last:#}");
        } else {
            assert_eq!(last["outcome"]["status"], "failed", "{what}: {last:#}");
            assert!(
                last["outcome"]["reason"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("interrupted")),
                "{what}: {last:#}"
            );
        }
        // Its steps: none still running, and none says a host activated what it has not.
        let id = last["id"].as_u64().expect("an id").to_string();
        let shown = w.env.run(&["ops", "show", &id, "-o", "json"]).ok().json();
        let steps = shown["steps"].as_array().cloned().unwrap_or_default();
        let mut phases = Vec::new();
        for (h, v) in HOSTS.iter().zip(&now) {
            let mine: Vec<&Value> = steps.iter().filter(|st| st["host"] == *h).collect();
            for st in &mine {
                assert_ne!(st["result"]["status"], "running", "{what}: {shown:#}");
            }
            let activated = mine
                .iter()
                .any(|st| st["kind"] == "activating" && st["result"]["status"] == "ok");
            assert!(
                !activated || *v == version,
                "{what}: the daemon recorded {h} activated with {version}, but it has {v}"
            );
            phases.push(mine.last().map_or_else(
                || "no step".to_owned(),
                |st| {
                    format!(
                        "{} {}",
                        st["kind"].as_str().unwrap_or("?"),
                        st["result"]["status"].as_str().unwrap_or("?")
                    )
                },
            ));
        }
        // And deploying again finishes the job everywhere.
        let actions = w.converge(&src, &version, &what);
        let took = t.elapsed();
        worst = worst.max(took);
        eprintln!(
            "{what}: recorded last steps {phases:?}{}; no host program ran {:.2} s after the \
             daemon was gone; hosts had {now:?}; deploy again: {actions:?}; every host on {version} {:.2} s \
             after the kill",
            if finished {
                " (it had finished)"
            } else if recorded_success {
                " (recorded succeeded before the kill)"
            } else {
                ""
            },
            settled.unwrap_or_default().as_secs_f64(),
            took.as_secs_f64()
        );
        old = version;
    }
    eprintln!("deploy: worst recovery {:.2} s", worst.as_secs_f64());
}
