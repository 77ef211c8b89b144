//! Managed processes on h1 (ssh → sudo): outlive the client, re-attach by pidfile, TERM, KILL after the
//! grace period, grandchildren dead; containers on h2 as processes.

mod common;

use std::time::Duration;

use command_executor::*;
use common::tb::{self, bed, host};
use common::*;

fn h1_svc() -> Target {
    Target::ssh(host("h1")).sudo(&bed().sudo_user)
}

/// Reads "CHILD <pid>" from the events.
async fn child_pid(ev: &mut Events) -> u32 {
    loop {
        match ev.next().await {
            Some(Event::Stdout(l)) => {
                if let Some(p) = l.text().strip_prefix("CHILD ") {
                    return p.trim().parse().unwrap();
                }
            }
            Some(_) => {}
            None => panic!("events ended before CHILD"),
        }
    }
}

#[test]
fn managed_process_outlives_client_reattaches_and_stops_with_term() {
    smol::block_on(async {
        let name = tb::unique("svc");
        let dir = format!("~/.local/state/harness-test/{name}");
        let spec = ManagedSpec::new(
            &name,
            Command::new("sh")
                .args([
                    "-c",
                    "echo \"hello $GREETING from $(pwd)\"; sleep 600 & echo \"CHILD $!\"; wait",
                ])
                .env("GREETING", "hi there")
                .current_dir("/tmp"),
        )
        .state_dir(&dir);

        // Client 1 starts it and goes away entirely (its executor and ssh masters too).
        let client1 = tb::fresh_exec();
        let mut p = client1.start_managed(&h1_svc(), &spec).await.unwrap();
        let pid = p.id().pid().unwrap();
        let mut ev = p.take_events().unwrap();
        let first = loop {
            if let Some(Event::Stdout(l)) = ev.next().await {
                break l.text().into_owned();
            }
        };
        assert_eq!(first, "hello hi there from /tmp");
        let child = child_pid(&mut ev).await;
        drop(ev);
        drop(p);
        client1.shutdown().await;
        drop(client1);
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            bed().pid_alive_on("h1", pid),
            "managed pid {pid} died with its client"
        );
        assert!(bed().pid_alive_on("h1", child));
        // The environment is not in any long-lived process's argv.
        let leaks = bed().processes_matching("GREETING=");
        assert!(leaks.is_empty(), "env value visible in argv: {leaks:?}");

        // Client 2, a fresh start, finds it by pidfile.
        let client2 = tb::fresh_exec();
        let p = client2
            .attach_managed(&h1_svc(), &dir, Follow::FromStart)
            .await
            .unwrap();
        assert_eq!(p.id().pid(), Some(pid));
        assert_eq!(p.managed_state().unwrap().pid, pid);
        p.signal(Signal::Term).await.unwrap();
        assert_eq!(p.wait().await.unwrap(), ExitStatus::Signal(15));
        assert!(
            wait_gone(pid, Duration::from_secs(5)),
            "pid {pid} survived TERM"
        );
        assert!(
            wait_gone(child, Duration::from_secs(5)),
            "grandchild {child} survived TERM"
        );

        // A later attach still sees how it ended.
        let p = client2
            .attach_managed(&h1_svc(), &dir, Follow::FromEnd)
            .await
            .unwrap();
        assert_eq!(p.wait().await.unwrap(), ExitStatus::Signal(15));
        client2.shutdown().await;
    });
}

#[test]
fn term_ignorer_is_killed_after_grace_with_its_grandchildren() {
    smol::block_on(async {
        let exec = tb::exec();
        let name = tb::unique("stubborn");
        let spec = ManagedSpec::new(
            &name,
            Command::new("sh").args([
                "-c",
                "trap '' TERM; sleep 600 & echo \"CHILD $!\"; while :; do sleep 1; done",
            ]),
        );
        let mut p = exec.start_managed(&h1_svc(), &spec).await.unwrap();
        let pid = p.id().pid().unwrap();
        let child = child_pid(&mut p.take_events().unwrap()).await;
        let t0 = std::time::Instant::now();
        let st = p.stop(Duration::from_secs(2)).await.unwrap();
        assert_eq!(st, ExitStatus::Signal(9));
        assert!(
            t0.elapsed() >= Duration::from_secs(2),
            "KILL came before the grace period ended"
        );
        assert!(wait_gone(pid, Duration::from_secs(5)));
        assert!(
            wait_gone(child, Duration::from_secs(5)),
            "grandchild {child} survived KILL"
        );
    });
}

#[test]
fn stale_pidfile_is_detected_on_the_host() {
    smol::block_on(async {
        let exec = tb::exec();
        let name = tb::unique("stale");
        let target = Target::ssh(host("h1"));
        let spec = ManagedSpec::new(&name, Command::new("true"));
        let p = exec.start_managed(&target, &spec).await.unwrap();
        assert_eq!(p.wait().await.unwrap(), ExitStatus::Code(0));
        // Pretend the process died without a recorded status and its pid went to another process (sshd's).
        let dir = spec.dir();
        let script = format!(
            "d={}; rm -f \"$d/exit\"; echo \"$PPID 1\" > \"$d/pid\"",
            dir.replace("~/", "$HOME/")
        );
        bed().sh_ok("h1", &script);
        let r = exec.attach_managed(&target, &dir, Follow::FromEnd).await;
        assert!(matches!(r, Err(Error::Stale { .. })), "{r:?}");
        let r = exec
            .attach_managed(
                &target,
                "~/.local/state/harness/never-started",
                Follow::FromEnd,
            )
            .await;
        assert!(matches!(r, Err(Error::NotFound { .. })), "{r:?}");
    });
}

#[test]
fn container_on_h2_runs_attaches_by_label_and_stops() {
    smol::block_on(async {
        let exec = tb::exec();
        let name = tb::unique("hx-web");
        let label = tb::unique("l");
        let run = DockerRun::new(&bed().image)
            .cli(tb::docker_h2())
            .name(&name)
            .label("harness.test", &label)
            .env("WHO", "ctr")
            .workdir("/tmp")
            .command(["sh", "-c", "echo \"$WHO in $(pwd)\"; trap 'echo bye; exit 3' TERM; while :; do sleep 0.1; done"]);
        let mut p = exec.docker_run(&tb::h2_root(), &run).await.unwrap();
        assert!(matches!(p.id(), ProcessId::Container { .. }));
        let mut ev = p.take_events().unwrap();
        let first = loop {
            if let Some(Event::Stdout(l)) = ev.next().await {
                break l.text().into_owned();
            }
        };
        assert_eq!(first, "ctr in /tmp");

        let which = ContainerSelector::Label("harness.test".into(), label.clone());
        let q = exec
            .attach_container(&tb::h2_root(), &tb::docker_h2(), &which)
            .await
            .unwrap();
        assert_eq!(q.id(), p.id());

        let st = p.stop(Duration::from_secs(5)).await.unwrap();
        assert_eq!(st, ExitStatus::Code(3));
        let all = drain(&mut ev).await;
        let texts: Vec<String> = all
            .iter()
            .filter_map(|e| {
                if let Event::Stdout(l) = e {
                    Some(l.text().into_owned())
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(texts, vec!["bye".to_string()]);
        assert!(matches!(
            all.last(),
            Some(Event::Exited(ExitStatus::Code(3)))
        ));
        // Removed on stop.
        let gone = exec
            .attach_container(
                &tb::h2_root(),
                &tb::docker_h2(),
                &ContainerSelector::Name(name),
            )
            .await;
        assert!(
            matches!(gone, Err(Error::ContainerAbsent { .. })),
            "{gone:?}"
        );
        // The attached handle still knows the exit code, though the container is gone by now.
        assert_eq!(q.wait().await.unwrap(), ExitStatus::Code(3));
    });
}

#[test]
fn managed_process_inside_a_container_on_h2() {
    let (ctr, name) = tb::sleeper(&tb::h2_root(), &tb::docker_h2());
    let r = std::panic::catch_unwind(|| {
        smol::block_on(async {
            let exec = tb::exec();
            let target = tb::h2_root().docker(DockerExec::new(&name).cli(tb::docker_h2()));
            let spec = ManagedSpec::new(
                "in-ctr",
                Command::new("sh").args([
                    "-c",
                    "echo \"in $(pwd) as $V\"; sleep 600 & echo \"CHILD $!\"; wait",
                ]),
            )
            .state_dir("/tmp/harness/in-ctr")
            .current_dir_env();
            let mut p = exec.start_managed(&target, &spec).await.unwrap();
            let mut ev = p.take_events().unwrap();
            let first = loop {
                if let Some(Event::Stdout(l)) = ev.next().await {
                    break l.text().into_owned();
                }
            };
            assert_eq!(first, "in / as v1");
            let _child = child_pid(&mut ev).await;
            drop(ev);
            drop(p);
            let again = exec
                .attach_managed(&target, "/tmp/harness/in-ctr", Follow::FromEnd)
                .await
                .unwrap();
            let st = again.stop(Duration::from_secs(3)).await.unwrap();
            assert_eq!(st, ExitStatus::Signal(15));
            // Nothing of it is left in the container.
            let ps = exec
                .output(&target, &Command::new("ps"))
                .await
                .unwrap()
                .stdout_text();
            assert!(!ps.contains("sleep 600"), "{ps}");
        })
    });
    let _ = smol::block_on(ctr.stop(Duration::from_secs(1)));
    if let Err(e) = r {
        std::panic::resume_unwind(e);
    }
}

trait EnvForTest {
    fn current_dir_env(self) -> Self;
}

impl EnvForTest for ManagedSpec {
    /// Sets V=v1 and the root directory on the spec's command.
    fn current_dir_env(mut self) -> Self {
        self.command = self.command.env("V", "v1").current_dir("/");
        self
    }
}
