//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::time::Duration;

use command_executor::*;
use proptest::prelude::*;

/// A command printing each argument as one hex line, so any bytes (newlines included) come back exactly.
pub fn hex_args(args: &[OsString]) -> Command {
    Command::new("sh")
        .arg("-c")
        .arg(r#"for a in "$@"; do printf 'x'; printf '%s' "$a" | od -An -v -tx1 | tr -d ' \n'; echo; done"#)
        .arg("sh")
        .args(args.iter().cloned())
}

/// Decodes [`hex_args`] output.
pub fn decode(out: &[u8]) -> Vec<OsString> {
    let text = String::from_utf8_lossy(out);
    text.lines()
        .map(|l| {
            let h = l.strip_prefix('x').expect("line starts with x");
            let bytes: Vec<u8> = (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
                .collect();
            OsString::from_vec(bytes)
        })
        .collect()
}

/// Random argv with everything that breaks naive quoting.
pub fn argv_strategy() -> impl Strategy<Value = Vec<OsString>> {
    let arg = prop_oneof![
        Just(String::new()),
        "[ a'\"#~$*;\n\\\\`=é日\t&|<>(){}!-]{0,10}",
        "\\PC{0,6}",
    ];
    proptest::collection::vec(arg.prop_map(OsString::from), 0..6)
}

/// Random environment values: everything that breaks naive quoting, newlines, unicode, and arbitrary
/// non-UTF-8 bytes (anything but NUL, which no environment can hold).
pub fn env_strategy() -> impl Strategy<Value = Vec<OsString>> {
    let value = prop_oneof![
        Just(OsString::new()),
        "[ a'\"#~$*;\n\\\\`=é日\t&|<>(){}!-]{0,10}".prop_map(OsString::from),
        "\\PC{0,6}".prop_map(OsString::from),
        proptest::collection::vec(1u8..=255, 0..12).prop_map(OsString::from_vec),
    ];
    proptest::collection::vec(value, 1..5)
}

/// A command printing the value of each of `V0`..`V{n-1}` as one hex line (see [`decode`]), then the number
/// of bytes on its stdin, with those variables set to `values`.
pub fn hex_env(values: &[OsString]) -> Command {
    let names: Vec<String> = (0..values.len()).map(|i| format!("V{i}")).collect();
    let mut cmd = Command::new("sh")
        .arg("-c")
        .arg(r#"for k in "$@"; do printf 'x'; eval "printf '%s' \"\$$k\"" | od -An -v -tx1 | tr -d ' \n'; echo; done; printf 'x%s\n' "$(wc -c | tr -d ' ')""#)
        .arg("sh")
        .args(names.iter());
    for (k, v) in names.iter().zip(values) {
        cmd = cmd.env(k, v.clone());
    }
    cmd
}

/// Checks that `values` reach the program through `target` byte for byte as its environment, and that the
/// program's stdin holds exactly `stdin` (nothing of the environment), or nothing without it.
pub fn env_round_trip(
    exec: &Executor,
    target: &Target,
    values: &[OsString],
    stdin: Option<&[u8]>,
) -> Result<(), TestCaseError> {
    use futures_lite::AsyncWriteExt;
    let out = smol::block_on(async {
        let mut cmd = hex_env(values);
        if stdin.is_some() {
            cmd = cmd.stdin(StdinMode::Piped);
        }
        let mut p = exec.spawn(target, &cmd).await.map_err(|e| e.to_string())?;
        if let (Some(data), Some(mut w)) = (stdin, p.take_stdin()) {
            w.write_all(data).await.map_err(|e| e.to_string())?;
            w.close().await.map_err(|e| e.to_string())?;
        }
        let mut ev = p.take_events().ok_or("events taken")?;
        let (mut o, mut e) = (Vec::new(), Vec::new());
        while let Some(x) = ev.next().await {
            match x {
                Event::Stdout(l) => {
                    o.extend_from_slice(&l.bytes);
                    o.push(b'\n');
                }
                Event::Stderr(l) => {
                    e.extend_from_slice(&l.bytes);
                    e.push(b'\n');
                }
                _ => {}
            }
        }
        p.wait()
            .await
            .map(|st| (st, o, e))
            .map_err(|e| e.to_string())
    })
    .map_err(TestCaseError::fail)?;
    prop_assert_eq!(
        out.0,
        ExitStatus::Code(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.2)
    );
    let text = String::from_utf8_lossy(&out.1).into_owned();
    let (hex, count) = text
        .trim_end_matches('\n')
        .rsplit_once('\n')
        .unwrap_or(("", text.trim_end_matches('\n')));
    let got = if hex.is_empty() {
        Vec::new()
    } else {
        decode(format!("{hex}\n").as_bytes())
    };
    prop_assert_eq!(got, values.to_vec());
    let want = format!("x{}", stdin.map_or(0, <[u8]>::len));
    prop_assert_eq!(count, want.as_str());
    Ok(())
}

pub fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Checks the round trip of `args` through `target`.
pub fn round_trip(
    exec: &Executor,
    target: &Target,
    args: &[OsString],
) -> Result<(), TestCaseError> {
    let out = smol::block_on(exec.output(target, &hex_args(args)))
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(
        out.status,
        ExitStatus::Code(0),
        "stderr: {}",
        out.stderr_text()
    );
    prop_assert_eq!(decode(&out.stdout), args.to_vec());
    Ok(())
}

/// Is a local pid alive (and not a zombie)?
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rfind(')')
            .map(|i| !s[i + 2..].starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Waits until `pid` is gone, up to `limit`.
pub fn wait_gone(pid: u32, limit: Duration) -> bool {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    !alive(pid)
}

/// Pids of the local children of `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Ok(s) = std::fs::read_to_string(format!("/proc/{p}/stat"))
                && let Some(i) = s.rfind(')')
                && s[i + 2..].split_whitespace().nth(1) == Some(&pid.to_string())
            {
                out.push(p);
            }
        }
    }
    out
}

/// Collects all events until the end.
pub async fn drain(events: &mut Events) -> Vec<Event> {
    let mut all = Vec::new();
    while let Some(e) = events.next().await {
        all.push(e);
    }
    all
}

/// The testbed, as ssh hosts and docker CLIs for command-executor.
pub mod tb {
    use super::*;
    use std::sync::OnceLock;
    use testbed::Testbed;

    pub fn bed() -> &'static Testbed {
        Testbed::get()
    }

    /// One executor per test binary, with its own runtime dir (short: control socket paths are limited).
    pub fn exec() -> &'static Executor {
        static EXEC: OnceLock<Executor> = OnceLock::new();
        EXEC.get_or_init(fresh_exec)
    }

    /// A new executor with fresh ssh state, as after a restart of the client.
    pub fn fresh_exec() -> Executor {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let root = std::path::Path::new("/tmp/hxt");
        if n == 0 {
            // Runtime dirs of test binaries that are gone (their masters expired with them).
            for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let pid = name.split('-').next().unwrap_or("");
                if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = root.join(format!("{}-{n}", std::process::id()));
        // Masters outlive a test binary by seconds, not minutes.
        Executor::new(ExecutorOptions {
            runtime_dir: dir,
            master_idle: Duration::from_secs(10),
            ..ExecutorOptions::default()
        })
    }

    pub fn host(name: &str) -> SshHost {
        let tb = bed();
        let h = tb.host(name);
        let mut s = SshHost::new(h.addr.to_string())
            .name(name)
            .port(tb.ssh_port)
            .user(&tb.ssh_user)
            .identity_file(&tb.ssh_key)
            .known_hosts(&tb.known_hosts)
            .connect_timeout(Duration::from_secs(5));
        if let Some(j) = &h.jump {
            s = s.jump(host(j));
        }
        s
    }

    pub fn docker_h2() -> DockerCli {
        DockerCli {
            program: bed().docker_cli.display().to_string(),
            host: Some(bed().docker_h2.clone()),
        }
    }

    pub fn docker_local() -> DockerCli {
        DockerCli {
            program: bed().docker_cli.display().to_string(),
            host: Some(bed().docker_local.clone()),
        }
    }

    /// Where docker on h2 runs: ssh to h2, sudo to root.
    pub fn h2_root() -> Target {
        Target::ssh(host("h2")).sudo("root")
    }

    /// A unique name for containers and state dirs.
    pub fn unique(prefix: &str) -> String {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        format!(
            "{prefix}-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        )
    }

    /// Runs a long-sleeping container on `engine_target` and returns its handle and name.
    pub fn sleeper(engine_target: &Target, cli: &DockerCli) -> (Process, String) {
        let name = unique("hx-ctr");
        let run = DockerRun::new(&bed().image)
            .cli(cli.clone())
            .name(&name)
            .label("harness.test", "command-executor")
            .command(["sleep", "3600"]);
        let p = smol::block_on(exec().docker_run(engine_target, &run)).expect("docker run");
        (p, name)
    }
}
