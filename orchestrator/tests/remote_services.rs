//! Services on the testbed's SSH hosts and docker engines through the orchestrator (issue 6):
//! location-aware addresses, one follower session per host surviving a killed master, re-attach,
//! nothing left behind, and failures that name host and cause.

use std::path::Path;
use std::time::{Duration, Instant};

use command_executor::{Executor, ExecutorOptions};
use harness_config::Project;
use harness_protocol::{ServiceEntry, ServiceState};
use harness_store::Store;
use orchestrator::*;
use testbed::{Engine, Testbed};

struct Fx {
    dir: tempfile::TempDir,
    store: Store,
    orch: Option<Orchestrator>,
}

fn executor(dir: &Path) -> Executor {
    Executor::new(ExecutorOptions {
        runtime_dir: dir.join("ssh"),
        ..ExecutorOptions::default()
    })
}

async fn open(dir: &Path, store: &Store) -> Orchestrator {
    let mut opts = OrchestratorOptions::new(dir.join("state"), store.clone());
    opts.executor = executor(dir);
    Orchestrator::open(opts).await.unwrap()
}

impl Fx {
    async fn new() -> Fx {
        let tb = Testbed::get();
        static KNOWN_HOSTS: std::sync::Once = std::sync::Once::new();
        KNOWN_HOSTS.call_once(|| {
            // SAFETY: set once, by the first test, before it starts any ssh; Rust's own
            // environment access is locked.
            unsafe {
                std::env::set_var("HARNESS_KNOWN_HOSTS", tb.var("TB_SSH_KNOWN_HOSTS").unwrap())
            };
        });
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("registry.redb"), Default::default())
            .await
            .unwrap();
        let orch = Some(open(dir.path(), &store).await);
        Fx { dir, store, orch }
    }

    fn orch(&self) -> &Orchestrator {
        self.orch.as_ref().unwrap()
    }

    fn project(&self, yaml: &str) -> Project {
        let path = self.dir.path().join("services.yaml");
        harness_config::load_str(&path, yaml.to_owned(), &|_: &str| None::<String>)
            .into_result()
            .unwrap_or_else(|e| panic!("{e:?}"))
    }

    async fn apply(&self, p: &Project) -> ApplyReport {
        let opts = ApplyOptions {
            base_dir: Some(self.dir.path().to_path_buf()),
            ..ApplyOptions::default()
        };
        self.orch().apply(p, opts).await.unwrap()
    }

    async fn entry(&self, project: &str, name: &str) -> ServiceEntry {
        self.orch()
            .status(Some(project))
            .await
            .unwrap()
            .into_iter()
            .find(|e| e.name == name)
            .unwrap()
    }

    async fn lines(&self, project: &str, service: &str) -> Vec<String> {
        let mut logs = self
            .orch()
            .logs(LogQuery {
                project: project.into(),
                services: vec![service.into()],
                ..LogQuery::default()
            })
            .await
            .unwrap();
        let mut out = Vec::new();
        while let Some(l) = logs.next().await {
            out.push(l.text);
        }
        out
    }

    /// The local ssh processes of this fixture's executor (masters included).
    fn ssh_pids(&self, needle: &str) -> Vec<u32> {
        let dir = self.dir.path().join("ssh");
        let dir = dir.to_string_lossy();
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| {
                let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                (cmd.starts_with("ssh ") && cmd.contains(dir.as_ref()) && cmd.contains(needle))
                    .then_some(pid)
            })
            .collect()
    }
}

impl Drop for Fx {
    /// A failed test still leaves nothing running.
    fn drop(&mut self) {
        if let Some(o) = self.orch.take() {
            smol::block_on(async {
                for p in o.projects() {
                    let opts = StopOptions {
                        force: true,
                        ..StopOptions::default()
                    };
                    let _ = o.stop(&p, opts).await;
                }
            });
        }
    }
}

fn hosts_yaml(tb: &Testbed) -> String {
    let key = tb.var("TB_SSH_KEY").unwrap();
    let mut y = String::from("hosts:\n");
    for h in ["h1", "h2", "h3"] {
        y.push_str(&format!(
            "  {h}: {{address: {}, user: hbuser, identity_file: {key}, sudo: true{}}}\n",
            tb.host(h).addr,
            if h == "h2" {
                format!(", docker_host: \"{}\"", tb.docker_endpoint(Engine::H2))
            } else {
                String::new()
            }
        ));
    }
    y
}

fn uid_of(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn wait_for(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// The numbers of `api-N` lines, which must run 1, 2, 3... without gaps or repeats.
fn ticks(lines: &[String]) -> Vec<u64> {
    numbered(lines, "api-")
}

fn numbered(lines: &[String], prefix: &str) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(prefix)?.parse().ok())
        .collect()
}

#[test]
fn stack_across_hosts_and_engines() {
    let tb = Testbed::get();
    smol::block_on(async {
        let mut fx = Fx::new().await;
        let api_port = testbed::free_port();
        let yaml = format!(
            r#"name: rstack
{hosts}services:
  local:
    command: "while :; do echo local-tick; sleep 0.5; done"
  api:
    host: h1
    user: hbsvc
    ports: [{api_port}]
    command: >-
      mkdir -p /tmp/www-$$; echo hello-from-api > /tmp/www-$$/index.html;
      (i=0; while :; do i=$((i+1)); echo api-$$i; sleep 0.05; done) &
      exec busybox httpd -f -p {api_port} -h /tmp/www-$$
    health_check:
      http: "http://${{api.ip}}:${{api.port}}/"
      interval: 1s
    startup_timeout: 30s
  db:
    type: docker
    host: h2
    image: "{image}"
    ports: ["15432:5432"]
    command: ["sh", "-c", "mkdir -p /w; echo db-data > /w/index.html; (i=0; while :; do i=$((i+1)); echo db-$$i; sleep 0.05; done) & exec httpd -f -p 5432 -h /w"]
    health_check:
      command: ["wget", "-q", "-O-", "http://127.0.0.1:5432/"]
      interval: 1s
    startup_timeout: 30s
  cache:
    type: docker
    host: h2
    image: "{image}"
    command: ["sh", "-c", "while :; do wget -q -O- http://${{db.ip}}:${{db.port}}/; sleep 0.5; done"]
  consumer:
    host: h3
    env:
      API: "${{api.ip}}:${{api.port}}"
      DB: "${{db.ip}}:${{db.port}}"
    command: "while :; do busybox wget -q -O- http://$$API/; busybox wget -q -O- http://$$DB/; sleep 0.5; done"
    depends_on:
      api: healthy
      db: healthy
    health_check:
      command: ["sh", "-c", "busybox wget -q -O- http://${{api.ip}}:${{api.port}}/ | grep -q hello-from-api"]
      interval: 1s
    startup_timeout: 30s
"#,
            hosts = hosts_yaml(tb),
            image = tb.image,
        );
        let p = fx.project(&yaml);
        let report = fx.apply(&p).await;
        assert!(report.failures().next().is_none(), "{:#?}", report.services);

        // Addresses: the consumer on h3 reaches the api on h1 and the container on h2.
        let consumer = fx.entry("rstack", "consumer").await;
        assert_eq!(
            consumer.health.status,
            harness_protocol::HealthStatus::Healthy
        );
        assert!(wait_for(Duration::from_secs(10), || {
            let l = smol::block_on(fx.lines("rstack", "consumer"));
            l.iter().any(|x| x == "hello-from-api") && l.iter().any(|x| x == "db-data")
        }));
        // Container to container on h2's engine: by the container's address and own port.
        assert!(wait_for(Duration::from_secs(10), || {
            smol::block_on(fx.lines("rstack", "cache"))
                .iter()
                .any(|x| x == "db-data")
        }));
        let h1 = tb.host("h1").addr.to_string();
        let api = fx.entry("rstack", "api").await;
        let api_pid = api.runtime.pid.unwrap();
        assert!(tb.pid_alive_on("h1", api_pid));
        let hbsvc_uid: u32 = tb.sh_ok("h1", "id -u hbsvc").trim().parse().unwrap();
        assert_eq!(uid_of(api_pid), Some(hbsvc_uid), "api runs as hbsvc");
        assert!(matches!(
            api.location,
            harness_protocol::Location::Host { ref address, .. } if *address == h1
        ));
        assert_eq!(
            tb.docker_ok(
                Engine::H2,
                ["ps", "-q", "--filter", "label=harness.project=rstack"]
            )
            .lines()
            .count(),
            2
        );

        // The ssh master dies: output keeps coming, nothing restarts, nothing is doubled.
        let masters = fx.ssh_pids(" -M ");
        assert!(!masters.is_empty(), "no ssh master found");
        let before = ticks(&fx.lines("rstack", "api").await);
        assert!(!before.is_empty());
        for m in &masters {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_raw(*m as i32).unwrap(),
                rustix::process::Signal::KILL,
            );
        }
        let last_before = *before.last().unwrap();
        assert!(
            wait_for(Duration::from_secs(20), || {
                ticks(&smol::block_on(fx.lines("rstack", "api")))
                    .last()
                    .is_some_and(|n| *n > last_before + 40)
            }),
            "api output did not resume after the master died"
        );
        let after = ticks(&fx.lines("rstack", "api").await);
        let want: Vec<u64> = (1..=after.len() as u64).collect();
        assert_eq!(after, want, "api lines lost or doubled");
        // The container's log follower resumed too (`docker logs --since`, deduplicated).
        let db_before = numbered(&fx.lines("rstack", "db").await, "db-").len() as u64;
        assert!(
            wait_for(Duration::from_secs(10), || {
                numbered(&smol::block_on(fx.lines("rstack", "db")), "db-").len() as u64
                    > db_before + 20
            }),
            "db output did not resume after the master died"
        );
        let db = numbered(&fx.lines("rstack", "db").await, "db-");
        let want: Vec<u64> = (1..=db.len() as u64).collect();
        assert_eq!(db, want, "db lines lost or doubled");
        let api2 = fx.entry("rstack", "api").await;
        assert_eq!(api2.runtime.pid, Some(api_pid));
        assert_eq!(api2.restart_count, 0);
        assert!(matches!(api2.state, ServiceState::Running));

        // The daemon goes away without stopping anything; a new one re-attaches.
        let pids: Vec<(String, Option<u32>)> = fx
            .orch()
            .status(Some("rstack"))
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.runtime.pid))
            .collect();
        drop(fx.orch.take());
        async_io::Timer::after(Duration::from_millis(300)).await;
        fx.orch = Some(open(fx.dir.path(), &fx.store).await);
        async_io::Timer::after(Duration::from_millis(500)).await;
        for (name, pid) in &pids {
            let e = fx.entry("rstack", name).await;
            assert!(
                matches!(e.state, ServiceState::Running),
                "{name}: {:?}",
                e.state
            );
            assert_eq!(&e.runtime.pid, pid, "{name} was not re-attached");
        }
        let report = fx.apply(&p).await;
        assert!(
            report
                .services
                .iter()
                .all(|s| s.action == Action::Unchanged),
            "{:#?}",
            report.services
        );
        assert_eq!(
            tb.docker_ok(
                Engine::H2,
                ["ps", "-aq", "--filter", "label=harness.project=rstack"]
            )
            .lines()
            .count(),
            2,
            "duplicate container"
        );
        let n = ticks(&fx.lines("rstack", "api").await).len() as u64;
        assert!(
            wait_for(Duration::from_secs(10), || {
                ticks(&smol::block_on(fx.lines("rstack", "api"))).len() as u64 > n + 10
            }),
            "api output not followed after re-attach"
        );
        let after = ticks(&fx.lines("rstack", "api").await);
        let want: Vec<u64> = (1..=after.len() as u64).collect();
        assert_eq!(
            after, want,
            "api lines lost or doubled across the re-attach"
        );

        // Stop: nothing left on any host, no container.
        fx.orch()
            .stop("rstack", StopOptions::default())
            .await
            .unwrap();
        for (name, pid) in &pids {
            if let Some(pid) = pid {
                assert!(
                    wait_for(Duration::from_secs(5), || !tb.pid_alive_on("h1", *pid)),
                    "{name} pid {pid} still alive"
                );
            }
        }
        for h in ["h1", "h2", "h3"] {
            let port = format!("-p {api_port}");
            // Followers are shared by every project on a host: only ours count.
            let ours = |pat: &str| {
                let mut v = tb.processes_on(h, pat);
                v.retain(|p| !p.cmdline.contains("HARNESS-D") || p.cmdline.contains("rstack/"));
                v
            };
            for pat in ["echo api-", port.as_str(), "busybox wget", "HARNESS-D"] {
                assert!(
                    wait_for(Duration::from_secs(5), || ours(pat).is_empty()),
                    "left on {h}: {:?}",
                    ours(pat)
                );
            }
            let left = tb.sh_ok(h, "ls -A /home/hbsvc/.local/state/harness/rstack /home/hbuser/.local/state/harness/rstack 2>/dev/null || true");
            assert!(left.trim().is_empty(), "state left on {h}: {left}");
        }
        assert_eq!(
            tb.docker_ok(
                Engine::H2,
                ["ps", "-aq", "--filter", "label=harness.project=rstack"]
            ),
            ""
        );
    });
}

#[test]
fn failures_name_host_and_cause_and_the_rest_proceeds() {
    let tb = Testbed::get();
    smol::block_on(async {
        let fx = Fx::new().await;
        let key = tb.var("TB_SSH_KEY").unwrap();
        let wrong = tb.var("TB_SSH_WRONG_KEY").unwrap();
        let yaml = format!(
            r#"name: rfail
hosts:
  gone: {{address: {unreachable}, user: hbuser, identity_file: {key}}}
  badkey: {{address: {h1}, user: hbuser, identity_file: {wrong}}}
  pw: {{address: {h1}, user: hbpw, identity_file: {key}, sudo: true}}
  h2: {{address: {h2}, user: hbuser, identity_file: {key}, sudo: true, docker_host: "{engine}"}}
services:
  unreachable:
    host: gone
    command: "sleep 100"
    startup_timeout: 20s
  wrongkey:
    host: badkey
    command: "sleep 100"
    startup_timeout: 20s
  sudopw:
    host: pw
    user: hbsvc
    command: "sleep 100"
    startup_timeout: 20s
  noimage:
    type: docker
    host: h2
    image: "harness-no-such-image:never"
    startup_timeout: 20s
  fine:
    command: "sleep 100"
  after_fine:
    command: "sleep 100"
    depends_on: [fine]
  after_broken:
    command: "sleep 100"
    depends_on: [unreachable]
"#,
            unreachable = tb.var("TB_UNREACHABLE_ADDR").unwrap(),
            h1 = tb.host("h1").addr,
            h2 = tb.host("h2").addr,
            engine = tb.docker_endpoint(Engine::H2),
        );
        let p = fx.project(&yaml);
        let began = Instant::now();
        let report = fx.apply(&p).await;
        assert!(
            began.elapsed() < Duration::from_secs(25),
            "took {:?}",
            began.elapsed()
        );
        let by = |n: &str| report.services.iter().find(|s| s.name == n).unwrap();
        let err = |n: &str| {
            let s = by(n);
            assert_eq!(s.action, Action::Failed, "{n}: {s:?}");
            s.error.clone().unwrap_or_default()
        };
        let e = err("unreachable");
        assert!(
            e.contains("gone") && (e.contains("unreachable") || e.contains("timed out")),
            "{e}"
        );
        let e = err("wrongkey");
        assert!(
            e.contains("badkey") && e.contains("authentication failed"),
            "{e}"
        );
        let e = err("sudopw");
        assert!(
            e.contains("pw") && e.contains("sudo needs a password"),
            "{e}"
        );
        let e = err("noimage");
        assert!(e.contains("h2") && e.contains("image"), "{e}");
        assert_eq!(by("fine").action, Action::Started);
        assert_eq!(by("after_fine").action, Action::Started);
        assert_eq!(by("after_broken").action, Action::Skipped);
        fx.orch()
            .stop("rfail", StopOptions::default())
            .await
            .unwrap();
    });
}

#[test]
fn remote_exits_restart_with_their_output_and_status() {
    let tb = Testbed::get();
    smol::block_on(async {
        let fx = Fx::new().await;
        let yaml = format!(
            r#"name: rexit
{hosts}services:
  flaky:
    host: h1
    user: hbsvc
    command: "echo out-$(id -un); echo err-line >&2; exit 3"
    restart: {{policy: on-failure, max_restarts: 2, backoff: {{initial: 100ms, max: 100ms}}}}
"#,
            hosts = hosts_yaml(tb),
        );
        let p = fx.project(&yaml);
        fx.apply(&p).await;
        let end = Instant::now() + Duration::from_secs(20);
        let e = loop {
            let e = fx.entry("rexit", "flaky").await;
            if matches!(e.state, ServiceState::Failed { .. }) || Instant::now() > end {
                break e;
            }
            async_io::Timer::after(Duration::from_millis(50)).await;
        };
        assert!(
            matches!(&e.state, ServiceState::Failed { reason } if reason.contains("exit code 3")),
            "{:?}",
            e.state
        );
        assert_eq!(e.restart_count, 2);
        let lines = fx.lines("rexit", "flaky").await;
        assert_eq!(
            lines.iter().filter(|l| *l == "out-hbsvc").count(),
            3,
            "{lines:?}"
        );
        assert_eq!(lines.iter().filter(|l| *l == "err-line").count(), 3);
        // Every ended run was removed from the host.
        assert!(wait_for(Duration::from_secs(5), || tb
            .sh_ok(
                "h1",
                "sudo -n ls -A /home/hbsvc/.local/state/harness/rexit 2>/dev/null || true"
            )
            .trim()
            .is_empty()));
    });
}
