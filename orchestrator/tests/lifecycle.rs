//! Real processes through the orchestrator: order, health, stop, logs, restarts, re-attach.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use harness_config::Project;
use harness_protocol::{Event, EventType, ServiceEntry, ServiceState};
use harness_store::Store;
use orchestrator::*;

struct Fx {
    _reaper: Reaper,
    dir: tempfile::TempDir,
    store: Store,
    orch: Orchestrator,
}

impl Fx {
    async fn new() -> Fx {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("registry.redb"), Default::default())
            .await
            .unwrap();
        let orch = open(dir.path(), &store).await;
        Fx {
            _reaper: Reaper(dir.path().to_path_buf()),
            dir,
            store,
            orch,
        }
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
        self.orch.apply(p, opts).await.unwrap()
    }

    /// `apply` in a task of its own, for tests that act while it waits.
    fn apply_in_background(&self, p: Project) -> smol::Task<Result<ApplyReport>> {
        let orch = self.orch.clone();
        let opts = ApplyOptions {
            base_dir: Some(self.dir.path().to_path_buf()),
            ..ApplyOptions::default()
        };
        smol::spawn(async move { orch.apply(&p, opts).await })
    }

    async fn entry(&self, project: &str, name: &str) -> ServiceEntry {
        self.orch
            .status(Some(project))
            .await
            .unwrap()
            .into_iter()
            .find(|e| e.name == name)
            .unwrap()
    }

    async fn wait_state(
        &self,
        project: &str,
        name: &str,
        within: Duration,
        f: impl Fn(&ServiceState) -> bool,
    ) -> ServiceEntry {
        let end = Instant::now() + within;
        loop {
            let e = self
                .orch
                .status(Some(project))
                .await
                .unwrap()
                .into_iter()
                .find(|e| e.name == name);
            if let Some(e) = &e
                && f(&e.state)
            {
                return e.clone();
            }
            assert!(Instant::now() < end, "{name} stayed {e:?}");
            async_io::Timer::after(Duration::from_millis(20)).await;
        }
    }

    /// Follows the log of one service.
    async fn follow(&self, project: &str, service: &str) -> Logs {
        self.orch
            .logs(LogQuery {
                project: project.into(),
                services: vec![service.into()],
                follow: true,
                ..LogQuery::default()
            })
            .await
            .unwrap()
    }

    async fn events(&self) -> Vec<Event> {
        self.store.events_after(0, 1_000_000).await.unwrap()
    }
}

/// A failed test must not leave its services running: kills every process whose working
/// directory is the test's folder (where its services run).
struct Reaper(std::path::PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else {
                continue;
            };
            if std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|d| d.starts_with(&self.0))
                && let Some(p) = rustix::process::Pid::from_raw(pid)
            {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
        }
    }
}

async fn open(dir: &Path, store: &Store) -> Orchestrator {
    Orchestrator::open(OrchestratorOptions::new(dir.join("state"), store.clone()))
        .await
        .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Live (non-zombie) and still the same process.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let rest = &s[s.rfind(')').unwrap() + 2..];
            !rest.starts_with('Z')
        })
        .unwrap_or(false)
}

/// `pid` and all its descendants.
fn tree(pid: u32) -> BTreeSet<u32> {
    let mut set = BTreeSet::from([pid]);
    let rows: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let p: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let s = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            let rest = &s[s.rfind(')')? + 2..];
            Some((p, rest.split(' ').nth(1)?.parse().ok()?))
        })
        .collect();
    loop {
        let n = set.len();
        for (p, pp) in &rows {
            if set.contains(pp) {
                set.insert(*p);
            }
        }
        if set.len() == n {
            return set;
        }
    }
}

/// Processes whose command line is exactly `argv`.
fn count_cmdline(argv: &[&str]) -> usize {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let p: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let c = std::fs::read(format!("/proc/{p}/cmdline")).ok()?;
            (c == want && alive(p)).then_some(p)
        })
        .count()
}

fn state_events(events: &[Event], name: &str, to: &str) -> Vec<Event> {
    events
        .iter()
        .filter(|e| {
            e.kind == EventType::ServiceState
                && e.service.as_deref() == Some(name)
                && e.data["to"]["kind"] == to
        })
        .cloned()
        .collect()
}

fn first(events: &[Event], name: &str, to: &str) -> Event {
    state_events(events, name, to)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no {to} event for {name}"))
}

fn health_event(events: &[Event], name: &str, to: &str) -> Event {
    events
        .iter()
        .find(|e| {
            e.kind == EventType::ServiceHealth
                && e.service.as_deref() == Some(name)
                && e.data["to"] == to
        })
        .cloned()
        .unwrap_or_else(|| panic!("no health {to} event for {name}"))
}

#[test]
fn five_services_start_in_dependency_order_behind_an_http_health_check() {
    smol::block_on(async {
        let fx = Fx::new().await;
        let port = free_port();
        let p = fx.project(&format!(
            r#"
name: graph
services:
  db:
    binary: python3
    args: [-m, http.server, "{port}", --bind, 127.0.0.1]
    ports: [{port}]
    health_check: {{http: "http://127.0.0.1:{port}/", interval: 100ms, timeout: 1s, retries: 3, start_period: 10s}}
  migrate:
    command: "sleep 0.2; echo migrated"
    depends_on: {{db: healthy}}
  api:
    command: "echo api sees $$DB; exec sleep 60"
    env: {{DB: "${{db.ip}}:${{db.port}}"}}
    depends_on: {{migrate: completed_successfully}}
  worker:
    binary: sleep
    args: ["60"]
    depends_on: [api]
  cache:
    binary: sleep
    args: ["60"]
"#
        ));
        let report = fx.apply(&p).await;
        assert!(report.is_success(), "{report:#?}");
        let ev = fx.events().await;
        let healthy = health_event(&ev, "db", "healthy");
        let migrate = first(&ev, "migrate", "starting");
        assert!(migrate.seq > healthy.seq && migrate.time >= healthy.time);
        let migrated = first(&ev, "migrate", "exited");
        let api = first(&ev, "api", "starting");
        assert!(api.seq > migrated.seq && api.time >= migrated.time);
        let api_running = first(&ev, "api", "running");
        let worker = first(&ev, "worker", "starting");
        assert!(worker.seq > api_running.seq);
        // The independent service did not wait for the chain.
        assert!(first(&ev, "cache", "starting").seq < migrate.seq);

        let mut logs = fx.follow("graph", "api").await;
        let line = logs.next().await.unwrap();
        assert_eq!(line.text, format!("api sees 127.0.0.1:{port}"));

        let pids: Vec<u32> = fx
            .orch
            .status(Some("graph"))
            .await
            .unwrap()
            .iter()
            .filter_map(|e| e.runtime.pid)
            .collect();
        assert_eq!(pids.len(), 4, "db, api, worker, cache run");
        // exec runs in the service's context: its environment and working directory.
        let argv = ["sh", "-c", "echo $DB; pwd"].map(String::from);
        let mut proc = fx.orch.exec("graph", "api", &argv).await.unwrap();
        let mut events = proc.take_events().unwrap();
        let mut out = Vec::new();
        while let Some(e) = events.next().await {
            if let command_executor::Event::Stdout(l) = e {
                out.push(l.text().into_owned());
            }
        }
        assert_eq!(
            out,
            [
                format!("127.0.0.1:{port}"),
                fx.dir.path().display().to_string()
            ]
        );

        let worker = fx.entry("graph", "worker").await.runtime.pid.unwrap();
        let restarted = fx.orch.restart("graph", &["worker".into()]).await.unwrap();
        let w = restarted
            .services
            .iter()
            .find(|s| s.name == "worker")
            .unwrap();
        assert_eq!(w.action, Action::Restarted);
        assert!(!alive(worker) && w.pid.is_some_and(alive));
        let pids: Vec<u32> = fx
            .orch
            .status(Some("graph"))
            .await
            .unwrap()
            .iter()
            .filter_map(|e| e.runtime.pid)
            .collect();
        // Idempotent: nothing changed, nothing restarts (nor does the completed one-shot job).
        let again = fx.apply(&p).await;
        for s in &again.services {
            assert_eq!(s.action, Action::Unchanged, "{s:?}");
        }

        let only_db = StopOptions {
            services: vec!["db".into()],
            ..StopOptions::default()
        };
        match fx.orch.stop("graph", only_db.clone()).await {
            Err(Error::HasDependents {
                service,
                dependents,
            }) => {
                assert_eq!(service, "db");
                assert_eq!(dependents, ["api"]);
            }
            other => panic!("{other:?}"),
        }
        let forced = StopOptions {
            force: true,
            ..only_db
        };
        let stopped = fx.orch.stop("graph", forced).await.unwrap();
        let order: Vec<&str> = stopped.services.iter().map(|s| s.name.as_str()).collect();
        let pos = |n| order.iter().position(|o| *o == n).unwrap();
        assert!(
            pos("worker") < pos("api") && pos("api") < pos("db"),
            "{order:?}"
        );
        assert!(!order.contains(&"cache"), "{order:?}");
        assert!(alive(fx.entry("graph", "cache").await.runtime.pid.unwrap()));
        fx.orch.stop("graph", StopOptions::default()).await.unwrap();
        for pid in pids {
            assert!(!alive(pid), "pid {pid} survived the stop");
        }
    })
}

#[test]
fn failing_health_check_fails_apply_with_its_output_and_skips_dependents() {
    smol::block_on(async {
        let fx = Fx::new().await;
        let p = fx.project(
            r#"
name: sick
services:
  web:
    command: "echo booting; echo oops >&2; exec sleep 60"
    health_check:
      command: sh
      args: [-c, "echo not ready yet; exit 1"]
      interval: 100ms
      retries: 2
  client:
    binary: sleep
    args: ["60"]
    depends_on: {web: healthy}
  other:
    binary: sleep
    args: ["60"]
"#,
        );
        let report = fx.apply(&p).await;
        assert!(!report.is_success());
        let web = report.services.iter().find(|s| s.name == "web").unwrap();
        assert_eq!(web.action, Action::Failed);
        assert!(
            web.error.as_deref().unwrap().contains("not ready yet"),
            "{web:?}"
        );
        assert!(web.last_lines.iter().any(|l| l == "booting"), "{web:?}");
        assert!(web.last_lines.iter().any(|l| l == "oops"), "{web:?}");
        let client = report.services.iter().find(|s| s.name == "client").unwrap();
        assert_eq!(client.action, Action::Skipped);
        assert!(client.error.as_deref().unwrap().contains("dependency web"));
        let other = report.services.iter().find(|s| s.name == "other").unwrap();
        assert_eq!(other.action, Action::Started);

        let health = fx.orch.health("sick", &["web".into()]).await.unwrap();
        assert_eq!(
            health[0].health.status,
            harness_protocol::HealthStatus::Unhealthy
        );
        assert!(health[0].health.last_check.is_some());
        assert!(
            health[0]
                .check
                .as_deref()
                .unwrap()
                .starts_with("command sh")
        );
        fx.orch.stop("sick", StopOptions::default()).await.unwrap();
    })
}

#[test]
fn stop_kills_a_term_ignoring_service_and_all_its_grandchildren_within_timeout() {
    smol::block_on(async {
        let fx = Fx::new().await;
        let p = fx.project(
            r#"
name: stubborn
services:
  s:
    command: |
      trap '' TERM
      sleep 300 &
      sh -c 'sleep 300 & sleep 300' &
      setsid sh -c 'sleep 300' &
      sh -c 'set -m; sleep 300 & wait' &
      echo ready
      while :; do sleep 1; done
    stop: {timeout: 1s}
"#,
        );
        assert!(fx.apply(&p).await.is_success());
        let pid = fx.entry("stubborn", "s").await.runtime.pid.unwrap();
        let end = Instant::now() + Duration::from_secs(5);
        let mut procs = tree(pid);
        while procs.len() < 9 && Instant::now() < end {
            async_io::Timer::after(Duration::from_millis(20)).await;
            procs = tree(pid);
        }
        assert!(procs.len() >= 8, "only {procs:?}");
        let t = Instant::now();
        let report = fx
            .orch
            .stop("stubborn", StopOptions::default())
            .await
            .unwrap();
        let took = t.elapsed();
        assert!(
            report.services[0].killed,
            "TERM was ignored, so KILL was needed"
        );
        assert!(took < Duration::from_secs(2), "took {took:?}");
        let left: Vec<u32> = procs.iter().copied().filter(|p| alive(*p)).collect();
        assert!(left.is_empty(), "left behind: {left:?}");
        assert_eq!(fx.entry("stubborn", "s").await.state, ServiceState::Stopped);
    })
}

#[test]
fn ten_megabytes_then_exit_every_line_is_kept_including_the_last() {
    smol::block_on(async {
        let fx = Fx::new().await;
        let p = fx.project(
            r#"
name: chatty
services:
  talk:
    binary: python3
    args: [-c, "import sys\nfor i in range(100000): sys.stdout.write('line %07d %s\\n' % (i, 'x' * 90))\nsys.stderr.write('bye\\n')\nsys.stdout.write('LAST')"]
"#,
        );
        assert!(fx.apply(&p).await.is_success());
        fx.wait_state("chatty", "talk", Duration::from_secs(20), |s| {
            matches!(s, ServiceState::Exited { .. })
        })
        .await;
        let mut logs = fx
            .orch
            .logs(LogQuery {
                project: "chatty".into(),
                ..LogQuery::default()
            })
            .await
            .unwrap();
        let mut n = 0;
        let mut last = String::new();
        let mut bye = false;
        while let Some(l) = logs.next().await {
            match l.stream {
                StreamKind::Stdout if l.text != "LAST" => {
                    assert_eq!(&l.text[..12], &format!("line {n:07}"));
                    n += 1;
                }
                StreamKind::Stdout => last = l.text,
                StreamKind::Stderr => bye = l.text == "bye",
            }
        }
        assert_eq!(n, 100_000);
        assert_eq!(last, "LAST");
        assert!(bye);
        let tail = fx
            .orch
            .logs(LogQuery {
                project: "chatty".into(),
                tail: Some(1),
                services: vec!["talk".into()],
                ..LogQuery::default()
            })
            .await
            .unwrap();
        let tail: Vec<LogLine> = futures_lite::StreamExt::collect(tail).await;
        assert_eq!(tail.len(), 1);
        // The copied raw output takes no disk space any more.
        let raw = fx
            .dir
            .path()
            .join("state/projects/chatty/services/talk/stdout");
        let meta = std::fs::metadata(raw).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert!(
            meta.len() > 10_000_000 && meta.blocks() * 512 < 1 << 20,
            "{meta:?}"
        );
        // Output and definitions may hold secrets.
        use std::os::unix::fs::PermissionsExt;
        let state = fx.dir.path().join("state/projects/chatty");
        for f in [
            "project.yaml",
            "services/talk/talk.log",
            "services/talk/stdout",
        ] {
            let mode = std::fs::metadata(state.join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
    })
}

#[test]
fn crash_loop_backs_off_exponentially_then_fails_after_max_restarts() {
    smol::block_on(async {
        let fx = Fx::new().await;
        let p = fx.project(
            r#"
name: crashy
services:
  c:
    command: "echo crash; exit 3"
    restart: {policy: on-failure, max_restarts: 3, backoff: {initial: 100ms, max: 300ms}}
"#,
        );
        let mut follow = None;
        let report = fx.apply(&p).await;
        // It exits at once: the start says so (it is restarted all the same).
        assert!(!report.is_success(), "{report:?}");
        assert!(
            report.services[0]
                .error
                .as_deref()
                .is_some_and(|e| e.contains("exited during the start (exit code 3)")),
            "{report:?}"
        );
        if follow.is_none() {
            follow = Some(
                fx.orch
                    .logs(LogQuery {
                        project: "crashy".into(),
                        follow: true,
                        ..LogQuery::default()
                    })
                    .await
                    .unwrap(),
            );
        }
        let e = fx
            .wait_state("crashy", "c", Duration::from_secs(10), |s| {
                matches!(s, ServiceState::Failed { .. })
            })
            .await;
        assert_eq!(e.restart_count, 3);
        let ServiceState::Failed { reason } = &e.state else {
            unreachable!()
        };
        assert!(reason.contains("max_restarts"), "{reason}");
        let ev = fx.events().await;
        let exits = state_events(&ev, "c", "exited");
        let starts = state_events(&ev, "c", "starting");
        assert_eq!(exits.len(), 4);
        assert_eq!(starts.len(), 4);
        for (i, want) in [100u64, 200, 300].into_iter().enumerate() {
            let gap = starts[i + 1].time.duration_since(exits[i].time);
            let ms = gap.as_millis() as u64;
            assert!(
                ms >= want && ms < want + 250,
                "restart {i}: {ms} ms, want {want}"
            );
        }
        // Followed across every restart.
        let mut follow = follow.unwrap();
        for _ in 0..4 {
            assert_eq!(follow.next().await.unwrap().text, "crash");
        }
    })
}

#[test]
fn reattach_after_the_daemon_dies_keeps_pids_restarts_the_dead_and_stops_all() {
    smol::block_on(async {
        let fx = Fx::new().await;
        // Unique arguments, so that the processes can be counted by command line.
        let arg: Vec<String> = (1..=4)
            .map(|i| format!("600.{}{i}", std::process::id()))
            .collect();
        let p = fx.project(&format!(
            r#"
name: keep
services:
  a: {{binary: sleep, args: ["{}"]}}
  b: {{binary: sleep, args: ["{}"], depends_on: [a]}}
  c: {{binary: sleep, args: ["{}"], restart: always}}
  d:
    binary: sleep
    args: ["{}"]
    health_check: {{tcp: {{port: 9, host: 127.0.0.1}}, interval: 100ms, retries: 1000}}
    startup_timeout: 200ms
"#,
            arg[0], arg[1], arg[2], arg[3]
        ));
        let report = fx.apply(&p).await;
        assert_eq!(
            report
                .services
                .iter()
                .filter(|s| s.action == Action::Started)
                .count(),
            3
        );
        let before: Vec<(String, u32)> = fx
            .orch
            .status(Some("keep"))
            .await
            .unwrap()
            .iter()
            .map(|e| (e.name.clone(), e.runtime.pid.unwrap()))
            .collect();
        // The daemon dies; c dies while no daemon watches.
        drop(fx.orch);
        let c_pid = before.iter().find(|(n, _)| n == "c").unwrap().1;
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(c_pid as i32).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        while alive(c_pid) {
            async_io::Timer::after(Duration::from_millis(5)).await;
        }
        // And it died after launching a, before recording a's pid: the pidfile tells.
        fx.store
            .modify(
                &harness_protocol::ServiceKey::new("keep", "a").unwrap(),
                |e| {
                    e.runtime.pid = None;
                    e.runtime.process_start_time = None;
                    Ok(())
                },
            )
            .await
            .unwrap();
        let orch = open(fx.dir.path(), &fx.store).await;
        let fx = Fx { orch, ..fx };
        for (name, pid) in &before {
            if name == "c" {
                continue;
            }
            let e = fx.entry("keep", name).await;
            assert_eq!(e.runtime.pid, Some(*pid), "{name}");
        }
        let end = Instant::now() + Duration::from_secs(5);
        let c = loop {
            let c = fx.entry("keep", "c").await;
            if c.state == ServiceState::Running && c.runtime.pid != Some(c_pid) {
                break c;
            }
            assert!(Instant::now() < end, "c not restarted: {c:?}");
            async_io::Timer::after(Duration::from_millis(20)).await;
        };
        assert_eq!(c.restart_count, 1);
        for a in &arg {
            assert_eq!(count_cmdline(&["sleep", a]), 1, "sleep {a}");
        }
        // Idempotent: applying again changes nothing.
        let again = fx.apply(&p).await;
        for s in &again.services {
            if s.name != "d" {
                assert_eq!(s.action, Action::Unchanged, "{s:?}");
            }
        }
        let err = fx
            .orch
            .stop(
                "keep",
                StopOptions {
                    services: vec!["a".into()],
                    ..StopOptions::default()
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::HasDependents { .. }), "{err}");
        fx.orch.stop("keep", StopOptions::default()).await.unwrap();
        for a in &arg {
            assert_eq!(count_cmdline(&["sleep", a]), 0, "sleep {a}");
        }
    })
}

#[test]
fn missing_binary_fails_that_service_only_and_changes_restart_only_what_changed() {
    smol::block_on(async {
        let fx = Fx::new().await;
        let yaml = r#"
name: partial
services:
  bad: {binary: /nonexistent/prog}
  after-bad: {binary: sleep, args: ["60"], depends_on: [bad]}
  good: {binary: sleep, args: ["60"], env: {V: "1"}}
  steady: {binary: sleep, args: ["60"]}
  gone: {binary: sleep, args: ["60"]}
"#;
        let report = fx.apply(&fx.project(yaml)).await;
        let get = |n: &str| {
            report
                .services
                .iter()
                .find(|s| s.name == n)
                .unwrap()
                .clone()
        };
        assert_eq!(get("bad").action, Action::Failed);
        assert!(get("bad").error.unwrap().contains("not found"));
        assert_eq!(get("after-bad").action, Action::Skipped);
        assert_eq!(get("good").action, Action::Started);
        let e = fx.entry("partial", "bad").await;
        assert!(matches!(e.state, ServiceState::Failed { .. }));

        let steady = fx.entry("partial", "steady").await.runtime.pid.unwrap();
        let good = fx.entry("partial", "good").await.runtime.pid.unwrap();
        let changed = yaml
            .replace("V: \"1\"", "V: \"2\"")
            .replace("  gone: {binary: sleep, args: [\"60\"]}\n", "");
        let report = fx.apply(&fx.project(&changed)).await;
        let get = |n: &str| {
            report
                .services
                .iter()
                .find(|s| s.name == n)
                .unwrap()
                .clone()
        };
        assert_eq!(get("steady").action, Action::Unchanged);
        assert_eq!(get("good").action, Action::Restarted);
        assert_eq!(get("gone").action, Action::Orphaned);
        assert_eq!(
            fx.entry("partial", "steady").await.runtime.pid,
            Some(steady)
        );
        assert!(!alive(good));
        let new_good = fx.entry("partial", "good").await.runtime.pid.unwrap();
        assert!(alive(new_good));
        fx.orch.shutdown(true).await.unwrap();
        assert!(!alive(new_good) && !alive(steady));
    })
}

#[test]
fn stop_during_a_health_gated_start_ends_the_wait_and_starts_nothing_more() {
    smol::block_on(async {
        let fx = Fx::new().await;
        let p = fx.project(
            r#"
name: impatient
services:
  slow:
    binary: sleep
    args: ["60"]
    health_check: {tcp: {port: 9, host: 127.0.0.1}, interval: 100ms, retries: 1000}
    startup_timeout: 60s
  after:
    binary: sleep
    args: ["60"]
    depends_on: {slow: healthy}
"#,
        );
        let applying = fx.apply_in_background(p);
        fx.wait_state("impatient", "slow", Duration::from_secs(5), |s| {
            *s == ServiceState::Starting
        })
        .await;
        let mut pid = None;
        while pid.is_none() {
            pid = fx.entry("impatient", "slow").await.runtime.pid;
            async_io::Timer::after(Duration::from_millis(5)).await;
        }
        let t = Instant::now();
        fx.orch
            .stop("impatient", StopOptions::default())
            .await
            .unwrap();
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        let report = applying.await.unwrap();
        let get = |n: &str| report.services.iter().find(|s| s.name == n).unwrap();
        assert_eq!(get("slow").action, Action::Failed);
        assert_eq!(get("after").action, Action::Skipped);
        assert!(get("after").error.as_deref().unwrap().contains("stop"));
        for e in fx.orch.status(Some("impatient")).await.unwrap() {
            assert!(e.runtime.pid.is_none(), "{e:?}");
            assert_eq!(e.state, ServiceState::Stopped, "{}", e.name);
        }
        assert!(pid.is_some_and(|p| !alive(p)));
    })
}

#[test]
fn unhealthy_service_restarts_when_configured_and_checks_run_in_its_context() {
    smol::block_on(async {
        let fx = Fx::new().await;
        std::fs::write(fx.dir.path().join("ok"), "").unwrap();
        let p = fx.project(
            r#"
name: heal
services:
  h:
    binary: sleep
    args: ["60"]
    env: {FLAG: ok}
    health_check:
      command: sh
      args: [-c, 'test -e "$$FLAG"']
      interval: 100ms
      retries: 2
    restart: {policy: "no", on_unhealthy: true, backoff: {initial: 100ms, max: 100ms}}
"#,
        );
        assert!(fx.apply(&p).await.is_success());
        let first = fx.entry("heal", "h").await.runtime.pid.unwrap();
        std::fs::remove_file(fx.dir.path().join("ok")).unwrap();
        let e = fx
            .wait_state("heal", "h", Duration::from_secs(5), |s| {
                matches!(s, ServiceState::Restarting { .. })
            })
            .await;
        assert_eq!(e.restart_count, 1);
        assert!(!alive(first));
        std::fs::write(fx.dir.path().join("ok"), "").unwrap();
        let e = fx
            .wait_state("heal", "h", Duration::from_secs(5), |s| {
                *s == ServiceState::Running
            })
            .await;
        assert!(e.runtime.pid.is_some_and(|p| p != first && alive(p)));
        fx.orch.stop("heal", StopOptions::default()).await.unwrap();
    })
}

#[test]
fn logs_rotate_by_size_and_read_back_across_the_rotated_files() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("registry.redb"), Default::default())
            .await
            .unwrap();
        let mut opts = OrchestratorOptions::new(dir.path().join("state"), store.clone());
        opts.log_limits = LogLimits {
            max_bytes: 4096,
            keep: 3,
        };
        let orch = Orchestrator::open(opts).await.unwrap();
        let fx = Fx {
            _reaper: Reaper(dir.path().to_path_buf()),
            dir,
            store,
            orch,
        };
        let p = fx.project(
            r#"
name: rot
services:
  r:
    command: "i=0; while [ $$i -lt 180 ]; do echo line-$$i-padding-padding; i=$((i+1)); sleep 0.002; done"
"#,
        );
        assert!(fx.apply(&p).await.is_success());
        fx.wait_state("rot", "r", Duration::from_secs(10), |s| {
            matches!(s, ServiceState::Exited { .. })
        })
        .await;
        let svc = fx.dir.path().join("state/projects/rot/services/r");
        assert!(svc.join("r.log.1").exists() && svc.join("r.log.2").exists());
        for f in ["r.log", "r.log.1", "r.log.2"] {
            let len = std::fs::metadata(svc.join(f)).unwrap().len();
            assert!(len <= 4096, "{f}: {len}");
        }
        let logs = fx
            .orch
            .logs(LogQuery {
                project: "rot".into(),
                ..LogQuery::default()
            })
            .await
            .unwrap();
        let lines: Vec<LogLine> = futures_lite::StreamExt::collect(logs).await;
        let want: Vec<String> = (0..180)
            .map(|i| format!("line-{i}-padding-padding"))
            .collect();
        let got: Vec<String> = lines.into_iter().map(|l| l.text).collect();
        assert_eq!(got, want);
    })
}

#[test]
fn https_health_check_accepts_a_self_signed_service() {
    smol::block_on(async {
        let fx = Fx::new().await;
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::write(fx.dir.path().join("cert.pem"), ck.cert.pem()).unwrap();
        std::fs::write(
            fx.dir.path().join("key.pem"),
            ck.signing_key.serialize_pem(),
        )
        .unwrap();
        let port = free_port();
        let p = fx.project(&format!(
            r#"
name: tls
services:
  web:
    binary: python3
    args:
      - -c
      - |
        import http.server, ssl
        s = http.server.HTTPServer(("127.0.0.1", {port}), http.server.SimpleHTTPRequestHandler)
        c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        c.load_cert_chain("cert.pem", "key.pem")
        s.socket = c.wrap_socket(s.socket, server_side=True)
        s.serve_forever()
    health_check: {{http: "https://localhost:{port}/", interval: 100ms, retries: 3, start_period: 10s}}
"#
        ));
        let report = fx.apply(&p).await;
        assert!(report.is_success(), "{report:#?}");
        let h = fx.orch.health("tls", &[]).await.unwrap();
        assert!(
            h[0].health.last_output.as_deref().unwrap().contains("200"),
            "{h:?}"
        );
        fx.orch.stop("tls", StopOptions::default()).await.unwrap();
    })
}

/// Real uid of `pid`, from /proc.
fn uid_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn uid_of_user(user: &str) -> u32 {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f[0] == user)
        .unwrap_or_else(|| panic!("no user {user} in /etc/passwd (testbed up?)"))[2]
        .parse()
        .unwrap()
}

#[test]
fn local_service_with_user_runs_as_that_user_through_sudo_and_stop_kills_its_tree() {
    smol::block_on(async {
        let tb = testbed::Testbed::get();
        let user = &tb.sudo_user;
        let fx = Fx::new().await;
        // The service's working directory (the test's folder) must be enterable by the user.
        std::fs::set_permissions(
            fx.dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let tag = format!("700.{}", std::process::id());
        let p = fx.project(&format!(
            r#"
name: asuser
services:
  s:
    user: {user}
    env: {{GREETING: "hello there"}}
    command: |
      echo "$(id -un) $$GREETING $(pwd)"
      sleep {tag} &
      sh -c 'sleep {tag}' &
      exec sleep {tag}
    health_check:
      command: sh
      args: ["-c", 'test "$(id -un)" = {user} && test "$$GREETING" = "hello there"']
      interval: 50ms
  nobody-here:
    user: no-such-user-hb
    binary: sleep
    args: ["{tag}"]
"#
        ));
        let report = fx.apply(&p).await;
        let get = |n: &str| report.services.iter().find(|s| s.name == n).unwrap();
        assert_eq!(get("s").action, Action::Started, "{report:?}");
        let err = get("nobody-here").error.clone().unwrap();
        assert!(
            err.contains("no-such-user-hb") && err.contains("sudo -n"),
            "{err}"
        );

        let pid = fx.entry("asuser", "s").await.runtime.pid.unwrap();
        let want = uid_of_user(user);
        let end = Instant::now() + Duration::from_secs(5);
        let sleeps = loop {
            let sleeps: Vec<u32> = tree(pid)
                .into_iter()
                .filter(|p| {
                    std::fs::read(format!("/proc/{p}/cmdline"))
                        .is_ok_and(|c| c == format!("sleep\0{tag}\0").as_bytes())
                })
                .collect();
            if sleeps.len() == 3 {
                break sleeps;
            }
            assert!(Instant::now() < end, "only {sleeps:?} under {pid}");
            async_io::Timer::after(Duration::from_millis(20)).await;
        };
        for s in &sleeps {
            assert_eq!(uid_of(*s), Some(want), "pid {s} runs as another uid");
        }
        let mut logs = fx.follow("asuser", "s").await;
        let line = logs.next().await.unwrap();
        assert_eq!(
            line.text,
            format!("{user} hello there {}", fx.dir.path().display())
        );
        drop(logs);

        let procs = tree(pid);
        fx.orch
            .stop("asuser", StopOptions::default())
            .await
            .unwrap();
        let left: Vec<u32> = procs.iter().copied().filter(|p| alive(*p)).collect();
        assert!(left.is_empty(), "left behind: {left:?}");
        assert_eq!(count_cmdline(&["sleep", &tag]), 0);
        assert_eq!(fx.entry("asuser", "s").await.state, ServiceState::Stopped);
    })
}

#[test]
fn a_new_daemon_starts_always_services_stopped_on_request_but_not_unless_stopped_ones() {
    smol::block_on(async {
        let fx = Fx::new().await;
        let tag = format!("800.{}", std::process::id());
        let p = fx.project(&format!(
            r#"
name: policies
services:
  al:
    binary: sleep
    args: ["{tag}1"]
    restart: {{policy: always, backoff: {{initial: 50ms, max: 50ms}}}}
  us:
    binary: sleep
    args: ["{tag}2"]
    restart: {{policy: unless-stopped, backoff: {{initial: 50ms, max: 50ms}}}}
"#
        ));
        assert!(fx.apply(&p).await.is_success());
        // While the daemon runs, both come back after any exit (here a kill).
        for name in ["al", "us"] {
            let pid = fx.entry("policies", name).await.runtime.pid.unwrap();
            rustix::process::kill_process(
                rustix::process::Pid::from_raw(pid as i32).unwrap(),
                rustix::process::Signal::KILL,
            )
            .unwrap();
            let end = Instant::now() + Duration::from_secs(5);
            loop {
                let e = fx.entry("policies", name).await;
                if e.state == ServiceState::Running && e.runtime.pid != Some(pid) {
                    assert_eq!(e.restart_count, 1, "{name}");
                    break;
                }
                assert!(Instant::now() < end, "{name} not restarted: {e:?}");
                async_io::Timer::after(Duration::from_millis(20)).await;
            }
        }
        // Stopped on request; the daemon goes away and a new one opens the same state.
        fx.orch
            .stop("policies", StopOptions::default())
            .await
            .unwrap();
        assert_eq!(count_cmdline(&["sleep", &format!("{tag}1")]), 0);
        assert_eq!(count_cmdline(&["sleep", &format!("{tag}2")]), 0);
        drop(fx.orch);
        let orch = open(fx.dir.path(), &fx.store).await;
        let fx = Fx { orch, ..fx };
        let al = fx
            .wait_state("policies", "al", Duration::from_secs(5), |s| {
                *s == ServiceState::Running
            })
            .await;
        assert!(alive(al.runtime.pid.unwrap()));
        assert_eq!(count_cmdline(&["sleep", &format!("{tag}1")]), 1);
        assert_eq!(
            fx.entry("policies", "us").await.state,
            ServiceState::Stopped
        );
        assert_eq!(count_cmdline(&["sleep", &format!("{tag}2")]), 0);
        fx.orch
            .stop("policies", StopOptions::default())
            .await
            .unwrap();
        assert_eq!(count_cmdline(&["sleep", &format!("{tag}1")]), 0);
    })
}

#[test]
fn one_projects_health_gated_start_does_not_hold_up_another_project() {
    smol::block_on(async {
        let fx = Fx::new().await;
        let gate = fx.dir.path().join("healthy-now");
        let slow = fx.project(&format!(
            r#"
name: waiting
services:
  gated:
    binary: sleep
    args: ["60"]
    health_check: {{command: test, args: [-e, "{}"], interval: 50ms, retries: 1000}}
    startup_timeout: 60s
"#,
            gate.display()
        ));
        let quick =
            fx.project("name: quick\nservices:\n  one:\n    binary: sleep\n    args: [\"60\"]\n");
        let applying = fx.apply_in_background(slow);
        fx.wait_state("waiting", "gated", Duration::from_secs(5), |s| {
            *s == ServiceState::Starting
        })
        .await;
        // The other project starts, and stops, while the first still waits for its health check.
        let t = Instant::now();
        let report = fx.apply(&quick).await;
        assert_eq!(report.services[0].action, Action::Started);
        fx.orch.stop("quick", StopOptions::default()).await.unwrap();
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert!(
            !applying.is_finished(),
            "the first apply ended before its check passed"
        );
        std::fs::write(&gate, "").unwrap();
        let report = applying.await.unwrap();
        assert_eq!(report.services[0].action, Action::Started);
        fx.orch
            .stop("waiting", StopOptions::default())
            .await
            .unwrap();
        // A shutdown waits for nothing that is not running and lets no apply begin after it.
        fx.orch.shutdown(false).await.unwrap();
        let after = fx.orch.apply(&quick, ApplyOptions::default()).await;
        assert!(matches!(after, Err(Error::ShutDown)), "{after:?}");
    })
}
