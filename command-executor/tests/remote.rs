//! Layers over the testbed: ssh, ssh → sudo, ssh → sudo → docker, jump hosts, local docker.

mod common;

use std::ffi::OsString;
use std::time::Duration;

use command_executor::*;
use common::tb::{self, bed, exec, host};
use common::*;
use futures_lite::AsyncWriteExt;
use proptest::prelude::any;
use proptest::test_runner::TestRunner;

/// Every chain the acceptance names, with a container started for the docker ones.
fn chains() -> (Vec<(&'static str, Target)>, Vec<Process>) {
    let (h2c, h2name) = tb::sleeper(&tb::h2_root(), &tb::docker_h2());
    let (lc, lname) = tb::sleeper(&Target::local(), &tb::docker_local());
    let chains = vec![
        ("ssh", Target::ssh(host("h1"))),
        ("ssh→sudo", Target::ssh(host("h1")).sudo(&bed().sudo_user)),
        (
            "ssh→sudo→docker",
            tb::h2_root().docker(DockerExec::new(h2name).cli(tb::docker_h2())),
        ),
        ("ssh via jump", Target::ssh(host("h4"))),
        (
            "docker",
            Target::local().docker(DockerExec::new(lname).cli(tb::docker_local())),
        ),
        ("sudo", Target::local().sudo(&bed().sudo_user)),
    ];
    (chains, vec![h2c, lc])
}

fn cleanup(containers: Vec<Process>) {
    for c in containers {
        let _ = smol::block_on(c.stop(Duration::from_secs(1)));
    }
}

#[test]
fn argv_round_trips_through_every_chain() {
    let (chains, containers) = chains();
    for (name, target) in &chains {
        let mut runner = TestRunner::new(config(32));
        let result = runner.run(&argv_strategy(), |args| round_trip(exec(), target, &args));
        if let Err(e) = result {
            cleanup(containers);
            panic!("{name} ({target}): {e}");
        }
    }
    cleanup(containers);
}

#[test]
fn env_values_round_trip_through_every_chain() {
    let (chains, containers) = chains();
    for (name, target) in &chains {
        let mut runner = TestRunner::new(config(24));
        let strategy = (env_strategy(), proptest::option::of(any::<Vec<u8>>()));
        let result = runner.run(&strategy, |(values, stdin)| {
            env_round_trip(exec(), target, &values, stdin.as_deref())
        });
        if let Err(e) = result {
            cleanup(containers);
            panic!("{name} ({target}): {e}");
        }
    }
    cleanup(containers);
}

/// `ps -eo args` of every process on this machine. The testbed's hosts share the root pid namespace (their
/// containers' processes show up too), so this sees the processes of every host.
fn all_args() -> String {
    let out = std::process::Command::new("ps")
        .args(["-eo", "args"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn env_values_never_appear_in_any_argv() {
    let (chains, containers) = chains();
    let r = std::panic::catch_unwind(|| {
        smol::block_on(async {
            let secret = format!("hx-secret-{}-{}", std::process::id(), rand_tag());
            let mut running = Vec::new();
            for (name, target) in &chains {
                for stdin in [StdinMode::Null, StdinMode::Piped] {
                    // Checks it has the value, then runs on for a while.
                    let cmd = Command::new("sh")
                        .args(["-c", "[ \"$HX_SECRET\" = \"$1\" ] || exit 3; sleep 2", "sh"])
                        .arg(secret.replace("secret", "expect"))
                        .env("HX_SECRET", secret.replace("secret", "expect"))
                        .env("HX_OTHER", &secret)
                        .stdin(stdin);
                    let p = exec()
                        .spawn(target, &cmd)
                        .await
                        .unwrap_or_else(|e| panic!("{name}: {e}"));
                    running.push((name, p));
                }
            }
            let mut polls = 0;
            while running.iter().any(|(_, p)| p.try_wait().is_none()) {
                let args = all_args();
                let hit: Vec<&str> = args.lines().filter(|l| l.contains(&secret)).collect();
                assert!(hit.is_empty(), "the secret is in an argv: {hit:?}");
                polls += 1;
                async_io::Timer::after(Duration::from_millis(50)).await;
            }
            assert!(
                polls > 10,
                "polled only {polls} times while the commands ran"
            );
            for (name, p) in running {
                assert_eq!(p.wait().await.unwrap(), ExitStatus::Code(0), "{name}");
            }
        })
    });
    cleanup(containers);
    if let Err(e) = r {
        std::panic::resume_unwind(e);
    }
}

fn rand_tag() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[test]
fn env_workdir_exit_code_and_stdin_through_every_chain() {
    let (chains, containers) = chains();
    let r = std::panic::catch_unwind(|| {
        smol::block_on(async {
            for (name, target) in &chains {
                let cmd = Command::new("sh")
                    .args([
                        "-c",
                        "printf '%s|%s|%s|' \"$A\" \"$B\" \"$(pwd)\"; wc -c; exit 7",
                    ])
                    .env("A", "a b\n'c'")
                    .env("B", "")
                    .current_dir("/tmp")
                    .stdin(StdinMode::Piped);
                let mut p = exec()
                    .spawn(target, &cmd)
                    .await
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                let mut stdin = p.take_stdin().unwrap();
                stdin.write_all(&vec![b'q'; 300_000]).await.unwrap();
                stdin.close().await.unwrap();
                drop(stdin);
                let out = collect(p).await;
                assert_eq!(
                    out.0,
                    ExitStatus::Code(7),
                    "{name}: {}",
                    String::from_utf8_lossy(&out.2)
                );
                let text = String::from_utf8_lossy(&out.1);
                assert_eq!(
                    text.replace(' ', ""),
                    "ab\n'c'||/tmp|300000\n".replace(' ', ""),
                    "{name}"
                );
                assert!(text.starts_with("a b\n'c'||/tmp|"), "{name}: {text:?}");
            }
        })
    });
    cleanup(containers);
    if let Err(e) = r {
        std::panic::resume_unwind(e);
    }
}

async fn collect(mut p: Process) -> (ExitStatus, Vec<u8>, Vec<u8>) {
    let mut ev = p.take_events().unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    while let Some(e) = ev.next().await {
        match e {
            Event::Stdout(l) => {
                out.extend_from_slice(&l.bytes);
                if l.newline {
                    out.push(b'\n');
                }
            }
            Event::Stderr(l) => {
                err.extend_from_slice(&l.bytes);
                if l.newline {
                    err.push(b'\n');
                }
            }
            _ => {}
        }
    }
    (p.wait().await.unwrap(), out, err)
}

#[test]
fn exit_code_7_from_a_container_on_h2() {
    let (c, name) = tb::sleeper(&tb::h2_root(), &tb::docker_h2());
    let target = tb::h2_root().docker(DockerExec::new(&name).cli(tb::docker_h2()));
    let out = smol::block_on(exec().output(&target, &Command::new("sh").args(["-c", "exit 7"])));
    let _ = smol::block_on(c.stop(Duration::from_secs(1)));
    assert_eq!(out.unwrap().status, ExitStatus::Code(7));
}

#[test]
fn ten_megabytes_through_ssh_docker_arrive_complete() {
    let (c, name) = tb::sleeper(&tb::h2_root(), &tb::docker_h2());
    let target = tb::h2_root().docker(DockerExec::new(&name).cli(tb::docker_h2()));
    let r = smol::block_on(async {
        // 100 000 lines of 100 bytes: 10 MB.
        let cmd = Command::new("awk")
            .arg("BEGIN { for (i = 1; i <= 100000; i++) printf \"%099d\\n\", i }");
        let mut p = exec().spawn(&target, &cmd).await.unwrap();
        let mut ev = p.take_events().unwrap();
        let (mut lines, mut bytes, mut last, mut exited_after_last) =
            (0u64, 0u64, String::new(), false);
        while let Some(e) = ev.next().await {
            match e {
                Event::Stdout(l) => {
                    assert!(l.newline);
                    lines += 1;
                    bytes += l.bytes.len() as u64 + 1;
                    last = l.text().into_owned();
                }
                Event::Exited(st) => {
                    assert_eq!(st, ExitStatus::Code(0));
                    exited_after_last = last == format!("{:099}", 100000);
                }
                Event::Lost(n) => panic!("lost {n} events"),
                _ => {}
            }
        }
        (lines, bytes, exited_after_last)
    });
    let _ = smol::block_on(c.stop(Duration::from_secs(1)));
    assert_eq!(r, (100_000, 10_000_000, true));
}

#[test]
fn one_off_remote_command_is_signalled_and_killed_on_drop() {
    smol::block_on(async {
        let target = Target::ssh(host("h1")).sudo(&bed().sudo_user);
        let cmd = Command::new("sh").args(["-c", "sleep 300 & echo $!; wait"]);
        let mut p = exec().spawn(&target, &cmd).await.unwrap();
        let pid = p.id().pid().unwrap();
        let mut ev = p.take_events().unwrap();
        let child: u32 = loop {
            if let Some(Event::Stdout(l)) = ev.next().await {
                break l.text().trim().parse().unwrap();
            }
        };
        assert!(bed().pid_alive_on("h1", pid));
        p.signal(Signal::Term).await.unwrap();
        let st = p.wait().await.unwrap();
        assert_ne!(st, ExitStatus::Code(0));
        assert!(wait_gone(pid, Duration::from_secs(5)));
        assert!(
            wait_gone(child, Duration::from_secs(5)),
            "grandchild {child} survived TERM to the group"
        );

        let p = exec()
            .spawn(&target, &Command::new("sleep").arg("301"))
            .await
            .unwrap();
        let pid = p.id().pid().unwrap();
        assert!(bed().pid_alive_on("h1", pid));
        drop(p);
        assert!(
            wait_gone(pid, Duration::from_secs(10)),
            "remote pid {pid} survived the handle"
        );
    });
}

#[test]
fn command_timeout_kills_the_remote_side() {
    smol::block_on(async {
        let target = Target::ssh(host("h3"));
        let p = exec()
            .spawn(
                &target,
                &Command::new("sleep")
                    .arg("302")
                    .timeout(Duration::from_secs(1)),
            )
            .await
            .unwrap();
        let pid = p.id().pid().unwrap();
        let r = p.wait().await;
        assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
        assert!(
            wait_gone(pid, Duration::from_secs(10)),
            "remote pid {pid} survived its timeout"
        );
    });
}

#[test]
fn typed_errors_name_host_and_layer() {
    smol::block_on(async {
        let tbd = bed();
        let t = Command::new("true");
        let check = |r: Result<Process>, want: &str, host_: &str, layer: &str| {
            let e = r.expect_err(want);
            let dbg = format!("{e:?}");
            assert!(dbg.starts_with(want), "want {want}, got {dbg}");
            let at = e.place().expect("place");
            assert_eq!(at.host, host_, "{dbg}");
            assert!(at.layer.contains(layer), "{dbg}");
            assert!(e.to_string().contains(host_), "{e}");
        };
        let unknown = SshHost::new("no-such-host.invalid")
            .name("nowhere")
            .user("u");
        check(
            exec().spawn(&Target::ssh(unknown), &t).await,
            "UnknownHost",
            "localhost",
            "ssh(u@nowhere)",
        );

        let refused = host("h1").port(2);
        check(
            exec().spawn(&Target::ssh(refused), &t).await,
            "ConnectionRefused",
            "localhost",
            "ssh(",
        );

        let unreachable = SshHost::new(tbd.unreachable_addr.to_string())
            .name("blackhole")
            .user("u")
            .connect_timeout(Duration::from_secs(2));
        check(
            exec().spawn(&Target::ssh(unreachable), &t).await,
            "Timeout",
            "localhost",
            "ssh(u@blackhole)",
        );

        let wrong_key = host("h1").identity_file(&tbd.ssh_wrong_key);
        check(
            exec().spawn(&Target::ssh(wrong_key), &t).await,
            "AuthFailed",
            "localhost",
            "ssh(",
        );

        let kh = std::env::temp_dir().join(tb::unique("hx-known"));
        let h2_key = std::fs::read_to_string(&tbd.known_hosts).unwrap();
        let h2_line = h2_key.lines().find(|l| l.starts_with("h2,")).unwrap();
        let key = h2_line.split_once(' ').unwrap().1;
        std::fs::write(&kh, format!("{} {key}\n", tbd.host("h1").addr)).unwrap();
        let mismatch = host("h1").known_hosts(&kh);
        check(
            exec().spawn(&Target::ssh(mismatch), &t).await,
            "HostKey",
            "localhost",
            "ssh(",
        );
        let _ = std::fs::remove_file(&kh);

        let pw = host("h1").user(&tbd.password_sudo_user);
        check(
            exec().spawn(&Target::ssh(pw).sudo("root"), &t).await,
            "SudoPassword",
            "h1",
            "sudo(root)",
        );

        let no_cli = DockerCli {
            program: "no-docker-here".into(),
            host: None,
        };
        check(
            exec()
                .spawn(&tb::h2_root().docker(DockerExec::new("x").cli(no_cli)), &t)
                .await,
            "DockerMissing",
            "h2",
            "docker(x)",
        );

        let bad_engine = DockerCli {
            program: tbd.docker_cli.display().to_string(),
            host: Some("unix:///nonexistent/docker.sock".into()),
        };
        check(
            exec()
                .spawn(
                    &tb::h2_root().docker(DockerExec::new("x").cli(bad_engine)),
                    &t,
                )
                .await,
            "DockerUnreachable",
            "h2",
            "docker(x)",
        );

        check(
            exec()
                .spawn(
                    &tb::h2_root()
                        .docker(DockerExec::new("no-such-container-xyz").cli(tb::docker_h2())),
                    &t,
                )
                .await,
            "ContainerAbsent",
            "h2",
            "docker(no-such-container-xyz)",
        );

        check(
            exec()
                .spawn(
                    &Target::ssh(host("h1")),
                    &Command::new("no-such-program-xyz"),
                )
                .await,
            "ProgramNotFound",
            "h1",
            "program",
        );
        check(
            exec()
                .spawn(&Target::ssh(host("h1")), &t.clone().current_dir("/no/such"))
                .await,
            "WorkingDir",
            "h1",
            "program",
        );

        let _: Vec<OsString> = Vec::new();
    });
}

#[test]
fn sessions_per_connection_are_limited_and_spread_over_masters() {
    smol::block_on(async {
        use futures_lite::FutureExt;
        let exec = tb::fresh_exec();
        let h3 = Target::ssh(host("h3").max_sessions(2));
        // 4 masters × (2 sessions - 1 kept for control): 4 run at once, each master within the limit.
        let mut running = Vec::new();
        for i in 0..4 {
            let p = exec
                .spawn(&h3, &Command::new("sleep").arg(format!("30{i}")))
                .await
                .unwrap();
            running.push(p);
        }
        let sockets = std::fs::read_dir(&exec.options().runtime_dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".sock")
            })
            .count();
        assert_eq!(sockets, 4, "one control socket per master");
        // The fifth waits for a free slot instead of opening an unaccounted connection.
        let t = Command::new("true");
        let mut fifth = Box::pin(exec.spawn(&h3, &t));
        let early = async { Some((&mut fifth).await) }
            .or(async {
                async_io::Timer::after(Duration::from_millis(1500)).await;
                None
            })
            .await;
        assert!(early.is_none(), "a fifth session started beyond the limit");
        let first = running.remove(0);
        first.kill().await.unwrap();
        let _ = first.wait().await;
        drop(first);
        let p = fifth.await.unwrap();
        assert_eq!(p.wait().await.unwrap(), ExitStatus::Code(0));
        for p in running {
            let pid = p.id().pid().unwrap();
            p.kill().await.unwrap();
            let _ = p.wait().await;
            assert!(wait_gone(pid, Duration::from_secs(5)));
        }
        exec.shutdown().await;
    });
}

#[test]
fn a_second_executor_on_the_same_runtime_dir_never_closes_the_first_ones_masters() {
    smol::block_on(async {
        let first = tb::fresh_exec();
        let dir = first.options().runtime_dir.clone();
        let h3 = Target::ssh(host("h3"));
        let cmd = Command::new("sh").args(["-c", "sleep 2; echo done; exit 5"]);
        let running = first.spawn(&h3, &cmd).await.unwrap();
        // A second client (as `harness hosts check` beside the daemon) with the same runtime dir.
        let second = Executor::new(ExecutorOptions {
            runtime_dir: dir.clone(),
            master_idle: Duration::from_secs(10),
            ..ExecutorOptions::default()
        });
        let out = second.output(&h3, &Command::new("true")).await.unwrap();
        assert_eq!(out.status, ExitStatus::Code(0));
        let private: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with('p'))
            .map(|e| e.path())
            .collect();
        assert_eq!(
            private.len(),
            1,
            "the second got a private dir: {private:?}"
        );
        second.shutdown().await;
        assert!(
            !private[0].exists(),
            "its private dir is removed on shutdown"
        );
        let out = process_output(running).await;
        assert_eq!(out, (ExitStatus::Code(5), b"done\n".to_vec()));
        // The first's master still serves new sessions.
        let again = first.output(&h3, &Command::new("true")).await.unwrap();
        assert_eq!(again.status, ExitStatus::Code(0));
        first.shutdown().await;
    });
}

async fn process_output(p: Process) -> (ExitStatus, Vec<u8>) {
    let (st, out, _) = collect(p).await;
    (st, out)
}

/// A terminal through every chain: the program's stdin/stdout are a terminal of the asked size at
/// the far end, the environment is set (with values a cooked terminal would mangle: ^C, CR, a long
/// line) and never echoed, typed input arrives after the start, resize reaches it, and its exit
/// code comes back.
#[test]
fn pty_through_every_chain() {
    let (chains, containers) = chains();
    let long = "x".repeat(5000);
    let r = std::panic::catch_unwind(|| {
        smol::block_on(async {
            for (name, target) in &chains {
                let script = "[ -t 0 ] && [ -t 1 ] && echo isatty; stty size; \
                    printf 'A=%s|' \"$A\" | od -An -c | tr -s ' \\n' ' '; echo; \
                    echo \"L=${#L}\"; read x; stty size; echo \"got:$x\"; exit 6";
                let cmd = Command::new("sh")
                    .args(["-c", script])
                    .env("A", "c\u{3}r\rz")
                    .env("L", &long)
                    .pty(PtySize {
                        rows: 33,
                        cols: 101,
                    });
                let mut p = exec()
                    .spawn(target, &cmd)
                    .await
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                let mut stdin = p.take_stdin().unwrap();
                let mut ev = p.take_events().unwrap();
                let mut out = String::new();
                while !out.contains("L=") {
                    match ev.next().await {
                        Some(Event::Stdout(l)) => out.push_str(&l.text()),
                        Some(e @ (Event::Exited(_) | Event::Failed(_))) => {
                            panic!("{name}: ended early: {e:?}\n{out}")
                        }
                        Some(_) => {}
                        None => panic!("{name}: no more events\n{out}"),
                    }
                }
                // Two changes: a client still setting up when the first arrives (docker exec
                // installs its SIGWINCH handler after the command has started) gets the second.
                p.resize(PtySize {
                    rows: 44,
                    cols: 110,
                })
                .unwrap();
                async_io::Timer::after(Duration::from_millis(500)).await;
                p.resize(PtySize {
                    rows: 44,
                    cols: 111,
                })
                .unwrap();
                async_io::Timer::after(Duration::from_millis(500)).await;
                stdin.write_all(b"typed\r").await.unwrap();
                stdin.flush().await.unwrap();
                for event in drain(&mut ev).await {
                    if let Event::Stdout(l) = event {
                        out.push_str(&l.text());
                    }
                }
                assert_eq!(
                    p.wait().await.unwrap(),
                    ExitStatus::Code(6),
                    "{name}: {out}"
                );
                assert!(out.contains("isatty"), "{name}: {out:?}");
                assert!(out.contains("33 101\r\n"), "{name}: {out:?}");
                assert!(out.contains("44 111\r\n"), "{name}: {out:?}");
                assert!(out.contains("A = c 003 r \\r z |"), "{name}: {out:?}");
                assert!(out.contains("L=5000\r\n"), "{name}: {out:?}");
                assert!(out.contains("got:typed\r\n"), "{name}: {out:?}");
                assert!(
                    !out.contains("xxxxxxxxxx"),
                    "{name}: the environment was echoed"
                );
                assert!(!out.contains("export"), "{name}: {out:?}");
            }
        })
    });
    cleanup(containers);
    if let Err(e) = r {
        std::panic::resume_unwind(e);
    }
}
