//! `harness exec` streams: stdin forwarded (binary-safe, with end of file), output as it comes,
//! the exit code passed through, Ctrl-C forwarded without a terminal; on a terminal, an
//! interactive shell that follows window size changes, with this terminal restored afterwards.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::Duration;

use crate::common::*;

#[path = "../common/pty.rs"]
mod pty;

const BOX: &str =
    "name: exs\nservices:\n  box:\n    command: [sleep, '86413']\n    env: {GREETING: hello}\n";

#[test]
fn exec_forwards_stdin_and_streams_output() {
    let env = Env::new(BOX);
    env.run(&["start"]).ok();

    // Every byte value, 1 MiB, through cat and back: binary-safe, nothing lost, end of file seen.
    let data: Vec<u8> = (0..(1 << 20)).map(|i: u32| (i * 7 % 256) as u8).collect();
    let mut child = env
        .cmd(&["exec", "box", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = data.clone();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == data,
        "cat gave {} bytes back",
        out.stdout.len()
    );

    // Output arrives before the command ends: the first line is read before anything is typed.
    let mut child = env
        .cmd(&[
            "exec",
            "box",
            "--",
            "sh",
            "-c",
            "echo first; read x; echo \"got $x $GREETING\"; echo err >&2; exit 9",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    lines.read_line(&mut first).unwrap();
    assert_eq!(first, "first\n");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"yes\n").unwrap();
    drop(stdin);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut lines, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(rest, "got yes hello\n");
    assert_eq!(status.code(), Some(9));

    // End of stdin reaches the program.
    let mut child = env
        .cmd(&["exec", "box", "--", "wc", "-l"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"a\nb\nc\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3");

    // Without a terminal, Ctrl-C (SIGINT to harness) is SIGINT to the command: 128 + 2.
    let mut child = env
        .cmd(&[
            "exec",
            "box",
            "--",
            "sh",
            "-c",
            "echo ready; exec sleep 86414",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap());
    let mut ready = String::new();
    lines.read_line(&mut ready).unwrap();
    assert_eq!(ready, "ready\n");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::INT,
    )
    .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let left = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == b"sleep\086414\0")
                    && alive(*pid)
            })
            .count()
    };
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while left() > 0 && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(left(), 0, "the command outlived Ctrl-C");

    // A command that ignores SIGINT: the second Ctrl-C gives up, and the command is killed.
    let mut child = env
        .cmd(&[
            "exec",
            "box",
            "--",
            "sh",
            "-c",
            "trap '' INT; echo ready; exec sleep 86414",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap());
    let mut ready = String::new();
    lines.read_line(&mut ready).unwrap();
    assert_eq!(ready, "ready\n");
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "ended on the first Ctrl-C"
    );
    assert_eq!(left(), 1, "the command should still run");
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while left() > 0 && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(left(), 0, "the command outlived harness");
    env.run(&["stop"]).ok();
}

#[test]
fn exec_on_a_terminal_runs_an_interactive_shell() {
    let env = Env::new(BOX);
    env.run(&["start"]).ok();
    let mut cmd = env.cmd(&["exec", "box", "--", "sh"]);
    cmd.env("TERM", "xterm-256color");
    let mut run = pty::PtyRun::spawn(cmd, 30, 100);
    run.type_keys("echo \"[$((6*7))] $TERM $GREETING\"; tty; stty size\r");
    assert!(
        run.wait_for("[42] xterm-256color hello", Duration::from_secs(20)),
        "{}",
        run.text()
    );
    assert!(
        run.wait_for("30 100", Duration::from_secs(5)),
        "{}",
        run.text()
    );
    assert!(run.text().contains("/dev/pts/"), "{}", run.text());
    // Raw mode here while the shell runs (its own terminal echoes), and window size changes follow.
    assert!(!run.echoes());
    run.resize(40, 120);
    std::thread::sleep(Duration::from_millis(300));
    run.type_keys("stty size\r");
    assert!(
        run.wait_for("40 120", Duration::from_secs(10)),
        "{}",
        run.text()
    );
    run.type_keys("exit 3\r");
    assert_eq!(run.wait(Duration::from_secs(20)), Some(3), "{}", run.text());
    assert!(run.echoes(), "the terminal was left in raw mode");

    // -T: no terminal even though stdin is one.
    let cmd = env.cmd(&["exec", "-T", "box", "--", "sh", "-c", "tty; exit 4"]);
    let mut run = pty::PtyRun::spawn(cmd, 30, 100);
    assert_eq!(run.wait(Duration::from_secs(20)), Some(4), "{}", run.text());
    assert!(run.text().contains("not a tty"), "{}", run.text());
    env.run(&["stop"]).ok();
}

#[test]
fn exec_of_a_missing_program_exits_127() {
    let env = Env::new(BOX);
    env.run(&["start"]).ok();
    for extra in [&[][..], &["-o", "json"][..]] {
        let mut args = extra.to_vec();
        args.extend(["exec", "box", "--", "no-such-program-x"]);
        let run = env.run(&args);
        assert_eq!(run.code, 127, "{args:?}: {}{}", run.stdout, run.stderr);
        let said = format!("{}{}", run.stdout, run.stderr);
        assert!(said.contains("no-such-program-x"), "{args:?}: {said}");
    }
    env.run(&["stop"]).ok();
}
