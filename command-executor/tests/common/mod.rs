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
