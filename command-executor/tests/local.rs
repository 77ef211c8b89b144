//! Local and local-sudo layers: argv, env, cwd, exit codes, signals, process groups, managed processes.

mod common;

use std::ffi::OsString;
use std::time::Duration;

use command_executor::*;
use common::*;
use futures_lite::AsyncWriteExt;
use proptest::prelude::*;
use std::os::unix::process::CommandExt;

fn exec() -> Executor {
    Executor::default()
}

proptest! {
    #![proptest_config(config(32))]
    #[test]
    fn argv_round_trips_locally(args in argv_strategy()) {
        round_trip(&exec(), &Target::local(), &args)?;
    }

    #[test]
    fn argv_round_trips_through_local_sudo(args in argv_strategy()) {
        round_trip(&exec(), &Target::local().sudo("nobody"), &args)?;
    }
}

#[test]
fn env_cwd_and_exit_code_locally_and_through_sudo() {
    smol::block_on(async {
        let e = exec();
        for target in [Target::local(), Target::local().sudo("nobody")] {
            let cmd = Command::new("sh")
                .args(["-c", "printf '%s|%s|' \"$A\" \"$(pwd)\"; id -un; exit 7"])
                .env("A", "x y\nz")
                .current_dir("/tmp");
            let out = e.output(&target, &cmd).await.unwrap();
            assert_eq!(out.status, ExitStatus::Code(7), "{target}");
            let who = if target.is_local() { "root" } else { "nobody" };
            assert_eq!(
                out.stdout_text(),
                format!("x y\nz|/tmp|{who}\n"),
                "{target}"
            );
        }
    });
}

#[test]
fn stdin_is_forwarded() {
    smol::block_on(async {
        let e = exec();
        for target in [Target::local(), Target::local().sudo("nobody")] {
            let mut p = e
                .spawn(
                    &target,
                    &Command::new("wc").arg("-c").stdin(StdinMode::Piped),
                )
                .await
                .unwrap();
            let mut stdin = p.take_stdin().unwrap();
            stdin.write_all(&vec![b'z'; 100_000]).await.unwrap();
            stdin.close().await.unwrap();
            drop(stdin);
            let mut ev = p.take_events().unwrap();
            let all = drain(&mut ev).await;
            let lines: Vec<String> = all
                .iter()
                .filter_map(|e| {
                    if let Event::Stdout(l) = e {
                        Some(l.text().trim().to_string())
                    } else {
                        None
                    }
                })
                .collect();
            assert_eq!(lines, vec!["100000".to_string()], "{target}");
            assert_eq!(p.wait().await.unwrap(), ExitStatus::Code(0));
        }
    });
}

#[test]
fn events_are_ordered_and_long_lines_split() {
    smol::block_on(async {
        let e = exec();
        let cmd = Command::new("sh").args([
            "-c",
            "head -c 200000 /dev/zero | tr '\\0' a; echo; echo last; printf tail",
        ]);
        let mut p = e.spawn(&Target::local(), &cmd).await.unwrap();
        let all = drain(&mut p.take_events().unwrap()).await;
        assert!(matches!(
            all.first(),
            Some(Event::Started(ProcessId::Local { .. }))
        ));
        assert!(matches!(
            all.last(),
            Some(Event::Exited(ExitStatus::Code(0)))
        ));
        let lines: Vec<&Line> = all
            .iter()
            .filter_map(|e| {
                if let Event::Stdout(l) = e {
                    Some(l)
                } else {
                    None
                }
            })
            .collect();
        let total: usize = lines
            .iter()
            .take_while(|l| !l.newline)
            .map(|l| l.bytes.len())
            .sum::<usize>();
        assert_eq!(lines[0].bytes.len(), MAX_LINE);
        assert_eq!(
            total + lines.iter().find(|l| l.newline).unwrap().bytes.len(),
            200_000
        );
        let n = lines.len();
        assert_eq!(lines[n - 2].text(), "last");
        assert_eq!(
            (lines[n - 1].text().as_ref(), lines[n - 1].newline),
            ("tail", false)
        );
    });
}

#[test]
fn signal_reaches_the_group_and_drop_kills_it() {
    smol::block_on(async {
        let e = exec();
        let cmd = Command::new("sh").args(["-c", "sleep 300 & echo $!; wait"]);
        let mut p = e.spawn(&Target::local(), &cmd).await.unwrap();
        let mut ev = p.take_events().unwrap();
        let child = loop {
            if let Some(Event::Stdout(l)) = ev.next().await {
                break l.text().trim().parse::<u32>().unwrap();
            }
        };
        p.signal(Signal::Term).await.unwrap();
        assert_eq!(p.wait().await.unwrap(), ExitStatus::Signal(15));
        assert!(
            wait_gone(child, Duration::from_secs(5)),
            "grandchild {child} survived"
        );

        let mut p = e.spawn(&Target::local(), &cmd).await.unwrap();
        let mut ev = p.take_events().unwrap();
        let child = loop {
            if let Some(Event::Stdout(l)) = ev.next().await {
                break l.text().trim().parse::<u32>().unwrap();
            }
        };
        let pid = p.id().pid().unwrap();
        drop(p);
        assert!(
            wait_gone(pid, Duration::from_secs(5)),
            "pid {pid} survived drop"
        );
        assert!(
            wait_gone(child, Duration::from_secs(5)),
            "grandchild {child} survived drop"
        );
    });
}

#[test]
fn timeout_kills() {
    smol::block_on(async {
        let e = exec();
        let cmd = Command::new("sleep")
            .arg("30")
            .timeout(Duration::from_millis(300));
        let p = e.spawn(&Target::local(), &cmd).await.unwrap();
        let pid = p.id().pid().unwrap();
        assert!(matches!(p.wait().await, Err(Error::Timeout { .. })));
        assert!(wait_gone(pid, Duration::from_secs(5)));
    });
}

#[test]
fn typed_local_errors() {
    smol::block_on(async {
        let e = exec();
        let r = e
            .spawn(&Target::local(), &Command::new("no-such-program-xyz"))
            .await;
        assert!(matches!(r, Err(Error::ProgramNotFound { .. })), "{r:?}");
        let r = e
            .spawn(
                &Target::local().sudo("nobody"),
                &Command::new("no-such-program-xyz"),
            )
            .await;
        assert!(matches!(r, Err(Error::ProgramNotFound { .. })), "{r:?}");
        let r = e
            .spawn(
                &Target::local(),
                &Command::new("true").current_dir("/no/such/dir"),
            )
            .await;
        assert!(matches!(r, Err(Error::WorkingDir { .. })), "{r:?}");
        let r = e
            .spawn(
                &Target::local().sudo("nobody"),
                &Command::new("true").current_dir("/no/such/dir"),
            )
            .await;
        assert!(matches!(r, Err(Error::WorkingDir { .. })), "{r:?}");
        let r = e
            .spawn(
                &Target::local().sudo("no-such-user-xyz"),
                &Command::new("true"),
            )
            .await;
        assert!(matches!(r, Err(Error::Sudo { .. })), "{r:?}");
        let bad = Target::local().docker(DockerExec::new("x").cli(DockerCli {
            program: "no-docker-xyz".into(),
            host: None,
        }));
        let r = e.spawn(&bad, &Command::new("true")).await;
        assert!(matches!(r, Err(Error::DockerMissing { .. })), "{r:?}");
    });
}

#[test]
fn local_managed_process_outlives_handle_and_reattaches() {
    smol::block_on(async {
        let e = exec();
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("svc").to_string_lossy().into_owned();
        let spec = ManagedSpec::new(
            "svc",
            Command::new("sh")
                .args(["-c", "echo \"up $A\"; pwd; sleep 300 & echo $!; wait"])
                .env("A", "1")
                .current_dir("/tmp"),
        )
        .state_dir(&state);
        let mut p = e.start_managed(&Target::local(), &spec).await.unwrap();
        let st = p.managed_state().unwrap().clone();
        assert!(matches!(
            p.id(),
            ProcessId::Local {
                start_time: Some(_),
                ..
            }
        ));
        let mut ev = p.take_events().unwrap();
        let mut lines = Vec::new();
        while lines.len() < 3 {
            if let Some(Event::Stdout(l)) = ev.next().await {
                lines.push(l.text().into_owned());
            }
        }
        assert_eq!(&lines[..2], &["up 1".to_string(), "/tmp".to_string()]);
        let child: u32 = lines[2].parse().unwrap();
        drop(ev);
        drop(p);
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            alive(st.pid) && alive(child),
            "managed process died with its handle"
        );

        // A second start is refused while it runs.
        let again = e.start_managed(&Target::local(), &spec).await;
        assert!(
            matches!(again, Err(Error::AlreadyRunning { .. })),
            "{again:?}"
        );

        let p = e
            .attach_managed(&Target::local(), &state, Follow::FromEnd)
            .await
            .unwrap();
        assert_eq!(p.id().pid(), Some(st.pid));
        let status = p.stop(Duration::from_secs(5)).await.unwrap();
        assert_eq!(status, ExitStatus::Signal(15));
        assert!(wait_gone(st.pid, Duration::from_secs(5)));
        assert!(
            wait_gone(child, Duration::from_secs(5)),
            "grandchild survived"
        );

        // Attaching after the end yields the recorded status.
        let p = e
            .attach_managed(&Target::local(), &state, Follow::FromStart)
            .await
            .unwrap();
        assert_eq!(p.wait().await.unwrap(), ExitStatus::Signal(15));

        // A pidfile whose pid was reused (start time differs) is stale.
        std::fs::remove_file(format!("{state}/exit")).unwrap();
        std::fs::write(
            format!("{state}/pid"),
            format!("{} 1\n", std::process::id()),
        )
        .unwrap();
        let r = e
            .attach_managed(&Target::local(), &state, Follow::FromEnd)
            .await;
        assert!(matches!(r, Err(Error::Stale { .. })), "{r:?}");
        let _: Vec<OsString> = Vec::new();
    });
}

#[test]
fn attach_local_pid_signals_and_sees_the_end() {
    smol::block_on(async {
        let e = exec();
        let mut child = std::process::Command::new("sleep")
            .arg("300")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id();
        let start = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let start_time: u64 = start[start.rfind(')').unwrap() + 2..]
            .split_whitespace()
            .nth(19)
            .unwrap()
            .parse()
            .unwrap();
        let r = LocalPid {
            pid,
            start_time: Some(start_time + 1),
        }
        .attach(&e, &Target::local())
        .await;
        assert!(matches!(r, Err(Error::Stale { .. })), "{r:?}");
        let p = LocalPid {
            pid,
            start_time: Some(start_time),
        }
        .attach(&e, &Target::local())
        .await
        .unwrap();
        assert_eq!(p.id().start_time(), Some(start_time));
        p.signal(Signal::Term).await.unwrap();
        let reaper = std::thread::spawn(move || child.wait());
        assert!(matches!(p.wait().await, Err(Error::StatusUnknown { .. })));
        assert!(reaper.join().unwrap().is_ok());
    });
}

proptest! {
    #![proptest_config(config(32))]
    #[test]
    fn env_values_round_trip_locally_and_through_sudo(
        values in env_strategy(),
        stdin in proptest::option::of(any::<Vec<u8>>()),
    ) {
        for t in [Target::local(), Target::local().sudo("nobody")] {
            env_round_trip(&exec(), &t, &values, stdin.as_deref())?;
        }
    }
}

/// A terminal locally and through sudo: the program's stdin, stdout and stderr are one terminal of
/// the asked size, input typed after the start arrives, the environment (which goes through the
/// terminal for sudo) is set and never echoed, resize reaches the program, and the exit code comes
/// back.
#[test]
fn pty_locally_and_through_sudo() {
    smol::block_on(async {
        let e = exec();
        for target in [Target::local(), Target::local().sudo("nobody")] {
            // sudo relays a resize to its own inner terminal asynchronously, so under load the line
            // typed after the resize can arrive first: the program waits (up to 5 s) to see it.
            let script = "tty; stty size; echo \"S=$S\"; read x; i=0; \
                 while [ \"$(stty size)\" = '30 100' ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; \
                 stty size; echo \"got:$x\" >&2; exit 5";
            let cmd = Command::new("sh")
                .args(["-c", script])
                .env("S", "pty-secret-1")
                .pty(PtySize {
                    rows: 30,
                    cols: 100,
                });
            let mut p = e.spawn(&target, &cmd).await.unwrap();
            let mut stdin = p.take_stdin().unwrap();
            let mut ev = p.take_events().unwrap();
            let mut out = String::new();
            // Wait for the program's first lines, then resize and answer its `read`.
            while !out.contains("S=") {
                match ev.next().await {
                    Some(Event::Stdout(l)) => out.push_str(&l.text()),
                    Some(other) if matches!(other, Event::Exited(_) | Event::Failed(_)) => {
                        panic!("{target}: ended early: {other:?}\n{out}")
                    }
                    Some(_) => {}
                    None => panic!("{target}: no more events\n{out}"),
                }
            }
            p.resize(PtySize {
                rows: 40,
                cols: 120,
            })
            .unwrap();
            stdin.write_all(b"hello\n").await.unwrap();
            stdin.flush().await.unwrap();
            for event in drain(&mut ev).await {
                match event {
                    Event::Stdout(l) => out.push_str(&l.text()),
                    Event::Stderr(l) => panic!("{target}: stderr on a terminal: {l:?}"),
                    _ => {}
                }
            }
            assert_eq!(
                p.wait().await.unwrap(),
                ExitStatus::Code(5),
                "{target}: {out}"
            );
            assert!(out.contains("/dev/pts/"), "{target}: {out:?}");
            assert!(out.contains("30 100\r\n"), "{target}: {out:?}");
            assert!(out.contains("40 120\r\n"), "{target}: {out:?}");
            assert!(out.contains("got:hello\r\n"), "{target}: {out:?}");
            assert_eq!(out.matches("pty-secret-1").count(), 1, "{target}: {out:?}");
            assert!(!out.contains("export"), "{target}: {out:?}");
        }
    });
}
