//! CLI hygiene: a closed pipe never makes a command panic, and a request over the daemon's
//! message limit is refused before it is sent, naming the limit and the field.

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::CommandFactory;

use crate::common::*;

const STACK: &str = "name: hyg
services:
  talk:
    command: [sh, -c, 'i=0; while [ $$i -lt 200 ]; do echo line $$i; i=$((i+1)); done; exec sleep 86411']
    health_check:
      command: [sh, -c, 'echo checked']
      interval: 1s
  quiet:
    command: [sleep, '86412']
    depends_on: [talk]
";

/// Every leaf command of `harness --help`, as a path of subcommand names.
fn leaf_commands() -> BTreeSet<String> {
    fn walk(cmd: &clap::Command, prefix: &str, out: &mut BTreeSet<String>) {
        let subs: Vec<&clap::Command> = cmd
            .get_subcommands()
            .filter(|s| s.get_name() != "help")
            .collect();
        // A command whose subcommand is optional (`ops`) runs on its own too.
        if subs.is_empty() || !cmd.is_subcommand_required_set() {
            out.insert(prefix.trim().to_owned());
        }
        for s in subs {
            walk(s, &format!("{prefix} {}", s.get_name()), out);
        }
    }
    let mut out = BTreeSet::new();
    walk(&harness::cli::Cli::command(), "", &mut out);
    out
}

/// The arguments each command is run with; commands that stop things come last.
fn invocations(pkg: &str) -> Vec<Vec<String>> {
    let lines: &[&str] = &[
        "validate",
        "config show",
        "config show --resolved",
        "config deps",
        "config schema",
        "completions bash",
        "manpage",
        "start",
        "up",
        "up -d",
        "watch",
        "status",
        "status --watch",
        "logs",
        "logs -F",
        "logs -t talk",
        "health",
        "top",
        "top --watch",
        "events --since 0",
        "events --since 0 --no-follow",
        "exec talk -- sh -c 'seq 1 1000'",
        "hosts check",
        "dashboard --no-open",
        "drift",
        "sync --dry-run",
        "network list",
        "network show nothing",
        "network test",
        "network install nothing",
        "package verify /nonexistent.tar.zst",
        "deploy --rollback nothing",
        "ops",
        "ops --failed",
        "ops show 1",
        "ops wait 1",
        "ops cancel 1",
        "daemon status",
        "daemon stats",
        "daemon config",
        "daemon env",
        "token create hyg --scope read",
        "token list",
        "token revoke hyg",
        "daemon logs",
        "daemon run",
        "daemon start",
        "restart quiet",
        "stop quiet",
        "scale quiet=1",
        "down",
        "daemon stop --stop-services",
    ];
    let mut all: Vec<Vec<String>> = lines.iter().map(|l| shell_words(l)).collect();
    all.insert(
        5,
        vec![
            "package".into(),
            "build".into(),
            pkg.into(),
            "--out".into(),
            std::env::temp_dir().display().to_string(),
        ],
    );
    all
}

/// Splits on spaces, keeping '...' together (enough for the lines above).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '\'' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

/// Runs `cmd` with one of its outputs a pipe whose reader is already gone; kills it after
/// `limit` if it is still running (a follower with nothing to write). What the other stream said.
fn run_with_closed(
    mut cmd: Command,
    close_stdout: bool,
    limit: Duration,
) -> (Option<i32>, Option<i32>, String) {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let other = tempfile::NamedTempFile::new().expect("temp file");
    let other_file = other.reopen().expect("reopen");
    if close_stdout {
        cmd.stdout(writer).stderr(other_file);
    } else {
        cmd.stderr(writer).stdout(other_file);
    }
    let mut child = cmd.spawn().expect("spawn harness");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(other.path()).unwrap_or_default();
    (status.code(), status.signal(), text)
}

#[test]
fn every_command_survives_a_closed_pipe() {
    let env = Env::new(STACK);
    let pkg = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/packages/hello");
    let runs = invocations(&pkg.display().to_string());
    // Every leaf command of --help is exercised here: a new command must be added above.
    let covered: BTreeSet<String> = runs
        .iter()
        .map(|r| {
            let names: Vec<&str> = r
                .iter()
                .take_while(|w| !w.starts_with('-'))
                .map(String::as_str)
                .collect();
            leaf_commands()
                .into_iter()
                .filter(|l| names.join(" ").starts_with(l.as_str()))
                .max_by_key(String::len)
                .unwrap_or_else(|| panic!("{r:?} is no command"))
        })
        .collect();
    assert_eq!(
        covered,
        leaf_commands(),
        "commands of --help not exercised here"
    );

    // Help and version, of the program and of every command.
    let mut helps: Vec<Vec<String>> = vec![vec!["--help".into()], vec!["--version".into()]];
    for leaf in leaf_commands() {
        let mut args = shell_words(&leaf);
        args.push("--help".into());
        helps.push(args);
    }
    for args in &helps {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _, other) = run_with_closed(env.cmd(&args), true, Duration::from_secs(5));
        assert!(
            code != Some(101) && !other.contains("panicked"),
            "harness {} panicked with its stdout closed:\n{other}",
            args.join(" ")
        );
    }

    env.run(&["start"]).ok();
    for args in &runs {
        for close_stdout in [true, false] {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (code, signal, other) =
                run_with_closed(env.cmd(&args), close_stdout, Duration::from_secs(5));
            let closed = if close_stdout { "stdout" } else { "stderr" };
            println!(
                "harness {} (closed {closed}): exit {code:?} signal {signal:?}",
                args.join(" ")
            );
            assert!(
                code != Some(101) && !other.contains("panicked"),
                "harness {} panicked with its {closed} closed (exit {code:?}):\n{other}",
                args.join(" ")
            );
            if args[0] == "start" && close_stdout {
                // the stack must be up for the commands after it
                env.run(&["start"]).ok();
            }
        }
        if args[0] == "daemon" && args.get(1).is_some_and(|a| a == "start") {
            env.run(&["start"]).ok();
        }
    }
}

#[test]
fn status_watch_and_completions_piped_into_head_exit_quietly() {
    let env = Env::new(STACK);
    env.run(&["start"]).ok();
    for args in ["status --watch", "completions bash", "logs"] {
        let script = format!(
            "set -o pipefail; {BIN} {args} 2>err.txt | head -1 >/dev/null; echo $?; cat err.txt"
        );
        let run = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(env.dir.path())
            .env("HARNESS_HOME", env.home())
            .env("HARNESS_LISTEN", "127.0.0.1:0")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .expect("bash");
        let text = String::from_utf8_lossy(&run.stdout);
        let (code, err) = text.split_once('\n').unwrap_or((&text, ""));
        println!("harness {args} | head -1: exit {code}");
        assert!(
            matches!(code.trim(), "0" | "141"),
            "harness {args} | head -1 exited {code}:\n{err}"
        );
        assert!(
            !err.contains("panicked"),
            "harness {args} | head -1:\n{err}"
        );
    }
}

#[test]
fn a_request_over_the_message_limit_is_refused_before_sending_naming_the_field() {
    let big = "x".repeat(5 << 20);
    let env = Env::new(&format!(
        "name: big\nservices:\n  web:\n    command: [sleep, '86413']\n    env:\n      BIG: {big}\n"
    ));
    let v = env.run(&["validate"]);
    assert_eq!(v.code, 2, "validate must refuse it:\n{}", v.stderr);
    assert!(v.stderr.contains("services.web.env.BIG"), "{}", v.stderr);
    assert!(v.stderr.contains("1.0 MiB"), "{}", v.stderr);
    let j = env.run(&["validate", "-o", "json"]).json();
    assert!(
        j.as_array()
            .unwrap()
            .iter()
            .any(|d| d["code"] == "too-large" && d["path"] == "services.web.env.BIG"),
        "{j:#}"
    );
    let s = env.run(&["start"]);
    assert_eq!(s.code, 2, "start must refuse it:\n{}", s.stderr);
    assert!(
        s.stderr.contains("services.web.env.BIG") && s.stderr.contains("limit of 1.0 MiB"),
        "{}",
        s.stderr
    );
    assert!(s.stderr.contains("help:"), "{}", s.stderr);
    // refused before it was sent: no daemon was even started
    assert!(env.daemon_pid().is_none(), "start reached a daemon");
}

#[test]
fn drift_sync_hosts_check_and_exec_over_the_message_limit_are_refused_before_sending() {
    // Before: each sent it, the daemon closed the connection, and the CLI said only
    // "connection closed".
    let big = "x".repeat(2 << 20);
    let env = Env::new(&format!(
        "name: big\nhosts:\n  h9: {{address: 192.0.2.9}}\nservices:\n  web:\n    command: [sleep, '86414']\n    env:\n      BIG: {big}\n"
    ));
    for args in [&["drift"][..], &["sync"], &["hosts", "check"]] {
        let r = env.run(args);
        assert_eq!(r.code, 2, "{args:?} must refuse it:\n{}", r.stderr);
        assert!(
            r.stderr.contains("services.web.env.BIG") && r.stderr.contains("limit of 1.0 MiB"),
            "{args:?}: {}",
            r.stderr
        );
    }
    let arg = "y".repeat(100_000);
    let mut args = vec!["exec", "web", "--", "true"];
    args.extend(std::iter::repeat_n(arg.as_str(), 12));
    let r = env.run(&args);
    assert_eq!(r.code, 2, "exec must refuse it:\n{}", r.stderr);
    assert!(
        r.stderr.contains("exec: the request encodes to") && r.stderr.contains("limit of 1.0 MiB"),
        "{}",
        r.stderr
    );
    assert!(env.daemon_pid().is_none(), "a request reached a daemon");
}

fn many(project: &str, n: usize, tag: &str) -> String {
    let mut yaml = format!("name: {project}\nservices:\n");
    for i in 0..n {
        yaml += &format!("  s{i}:\n    command: [sleep, '{tag}']\n");
    }
    yaml
}

#[test]
fn a_start_over_the_open_file_budget_is_refused_and_the_daemon_still_answers() {
    let tag = format!("86414.{}", std::process::id());
    let env = Env::new(&many("fds", 150, &tag));
    // A daemon started with a soft limit of 200 and a hard limit of 1000.
    let mut cmd = env.cmd(&["daemon", "start"]);
    // SAFETY: only setrlimit (a system call) between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            use rustix::process::{Resource, Rlimit, setrlimit};
            let lim = Rlimit {
                current: Some(200),
                maximum: Some(1000),
            };
            setrlimit(Resource::Nofile, lim).map_err(std::io::Error::from)
        });
    }
    run_command(cmd).ok();
    let st = env.run(&["daemon", "status", "-o", "json"]).ok().json();
    println!("daemon status: {st}");
    assert_eq!(st["open_files_limit"], 1000, "soft limit not raised: {st}");
    let max = st["max_services"].as_u64().unwrap();
    assert_eq!(max, 120, "{st}");
    let text = env.run(&["daemon", "status"]).ok().stdout;
    assert!(
        text.contains("capacity:    120 services (open-file limit 1000)"),
        "{text}"
    );

    // 150 services: refused as a whole, naming the excess and what to do.
    let r = env.run(&["start"]);
    println!("start of 150: exit {}: {}", r.code, r.stderr);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("30 more than this machine allows") && r.stderr.contains("ulimit -Hn"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("Too many open files"), "{}", r.stderr);
    env.run(&["status"]).ok();

    // Exactly the budget: every one of them runs, and the daemon still answers.
    env.write(&many("fds", 120, &tag));
    let r = env.run(&["start"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let running = env
        .status()
        .iter()
        .filter(|s| s["state"]["kind"] == "running")
        .count();
    assert_eq!(running, 120);
    let pid = env.daemon_pid().unwrap();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    println!("daemon fds with 120 services: {fds}");
    assert!(fds < 1000, "{fds}");
    env.run(&["daemon", "status"]).ok();
    env.run(&["stop"]).ok();
}

#[test]
fn a_string_health_check_runs_through_sh_and_its_output_stays_out_of_the_logs() {
    let tag = format!("86416.{}", std::process::id());
    let env = Env::new(&format!(
        "name: hc
services:
  a:
    command: [sh, -c, 'echo service-line; exec sleep {tag}']
    health_check:
      command: echo HEALTHMARK-$((40+2)) && test -n \"$$HOME\"
      interval: 200ms
"
    ));
    let r = env.run(&["start"]);
    assert_eq!(r.code, 0, "a shell health check must pass:\n{}", r.stderr);
    let h = env.run(&["health", "-o", "json"]).ok().json();
    println!("health: {h}");
    let out = h["services"][0]["health"]["last_output"]
        .as_str()
        .unwrap_or("");
    assert!(out.contains("HEALTHMARK-42"), "{h:#}");
    let text = env.run(&["health"]).ok().stdout;
    assert!(
        text.contains("HEALTHMARK-42") && text.contains("sh -c"),
        "{text}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let logs = env.run(&["logs"]).ok().stdout;
    assert!(logs.contains("service-line"), "{logs}");
    assert!(
        !logs.contains("HEALTHMARK"),
        "health output in the service's log:\n{logs}"
    );
    env.run(&["stop"]).ok();
}

#[test]
fn a_health_check_of_a_missing_program_as_another_user_names_the_program() {
    let tb = testbed::Testbed::get();
    let tag = format!("86417.{}", std::process::id());
    let env = Env::new(&format!(
        "name: hcuser
services:
  b:
    user: {user}
    command: [sleep, '{tag}']
    health_check:
      command: [/nonexistent/probe-hb, --now]
      interval: 200ms
      retries: 1
",
        user = tb.sudo_user
    ));
    std::fs::set_permissions(
        env.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let r = env.run(&["start"]);
    println!("start: exit {}\n{}", r.code, r.stderr);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("/nonexistent/probe-hb"), "{}", r.stderr);
    // exit 1: a service is unhealthy
    let h = env.run(&["health", "-o", "json"]).json();
    let out = h["services"][0]["health"]["last_output"]
        .as_str()
        .unwrap_or("");
    assert!(out.contains("/nonexistent/probe-hb"), "{h:#}");
    env.run(&["stop"]).ok();
}
