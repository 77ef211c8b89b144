//! Health probes: a command where the service runs, or an http GET / tcp connect done natively
//! from the daemon (no curl, no nc, so nothing to install on the target).

use std::time::Duration;

use async_io::Timer;
use async_net::TcpStream;
use command_executor::{Command, Executor, Target};
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};

use crate::spec::Probe;

/// Longest check output kept in the registry.
const MAX_OUTPUT: usize = 2048;

/// Runs one check; `Ok(output)` when healthy, `Err(output)` when not.
pub(crate) async fn check(
    probe: &Probe,
    timeout: Duration,
    exec: &Executor,
    target: &Target,
    context: (&[(String, String)], Option<&str>),
) -> Result<String, String> {
    let run = async {
        match probe {
            Probe::Command(argv) => command(argv, timeout, exec, target, context).await,
            Probe::Http { url } => http(url).await,
            Probe::Tcp { host, port } => tcp(host, *port).await,
        }
    };
    run.or(async {
        Timer::after(timeout).await;
        Err(format!(
            "timed out after {}",
            harness_config::format_duration(timeout)
        ))
    })
    .await
    .map(|o| truncate(&o))
    .map_err(|o| truncate(&o))
}

fn truncate(s: &str) -> String {
    let s = s.trim_end();
    if s.len() <= MAX_OUTPUT {
        return s.to_owned();
    }
    let mut cut = s.len() - MAX_OUTPUT;
    while !s.is_char_boundary(cut) {
        cut += 1;
    }
    format!("…{}", &s[cut..])
}

async fn command(
    argv: &[String],
    timeout: Duration,
    exec: &Executor,
    target: &Target,
    (env, cwd): (&[(String, String)], Option<&str>),
) -> Result<String, String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("empty health check command".into());
    };
    let mut cmd = Command::new(program).args(args).timeout(timeout);
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    if let Some(cwd) = cwd {
        cmd = cmd.current_dir(cwd);
    }
    match exec.output(target, &cmd).await {
        Ok(out) => {
            let text = format!("{}{}", out.stdout_text(), out.stderr_text());
            if out.status.success() {
                Ok(text)
            } else {
                Err(format!("{text}\n({})", describe_status(out.status)))
            }
        }
        Err(e) => Err(e.to_string()),
    }
}

fn describe_status(st: command_executor::ExitStatus) -> String {
    match st.code() {
        Some(c) => format!("exit code {c}"),
        None => format!("{st:?}"),
    }
}

async fn tcp(host: &str, port: u16) -> Result<String, String> {
    match TcpStream::connect((host, port)).await {
        Ok(_) => Ok(format!("connected to {host}:{port}")),
        Err(e) => Err(format!("cannot connect to {host}:{port}: {e}")),
    }
}

/// `http://host[:port][/path]`; a 2xx or 3xx status is healthy.
async fn http(url: &str) -> Result<String, String> {
    let rest = if let Some(r) = url.strip_prefix("http://") {
        r
    } else if url.starts_with("https://") {
        return Err(format!(
            "{url}: https health checks are not supported yet; use http or a tcp check"
        ));
    } else {
        return Err(format!("{url}: not an http:// URL"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
            h.trim_start_matches('[').trim_end_matches(']'),
            p.parse::<u16>()
                .map_err(|_| format!("{url}: bad port {p:?}"))?,
        ),
        _ => (authority, 80),
    };
    let mut stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("GET {url}: cannot connect to {host}:{port}: {e}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: harness-health\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 8192 {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let status_line = text.lines().next().unwrap_or("").to_owned();
    let code: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("GET {url}: not an HTTP answer: {status_line:?}"))?;
    if (200..400).contains(&code) {
        Ok(format!("GET {url}: {status_line}"))
    } else {
        Err(format!("GET {url}: {status_line}"))
    }
}
