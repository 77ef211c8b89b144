//! Installing a package on a host over its SSH connection (through sudo when the target says so), with
//! the sha256 verified on the host before anything is installed, and rolling back.
//!
//! One deployment is two sessions on the host's multiplexed ssh connection: a read-only probe (what is
//! active, is this exact package already there, is zstd there, are the required commands there), then,
//! unless there is nothing to do, the install program with the archive streamed on its stdin. When the
//! host has `zstd`, the `.tar.zst` is sent as is; otherwise it is decompressed here and a plain tar is
//! sent, verified on the host against the plain tar's sha256. See `script.rs` for the layout on the host
//! and docs/adr/0016-package-install-protocol.md for why.

mod script;

use std::ffi::OsString;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use command_executor::{Command, Event, Executor, ExitStatus, StdinMode, Target};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use sha2::{Digest, Sha256};

use crate::archive::Package;
use crate::error::{Error, Result};

/// Where packages go when the caller does not say.
pub const DEFAULT_ROOT: &str = "/opt";
/// Versions kept besides the active one, by default.
pub const DEFAULT_KEEP: usize = 2;
const CHUNK: usize = 256 * 1024;
/// Lines of a failing step's output kept for the error.
const TAIL_LINES: usize = 20;

/// How to deploy.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    /// Directory on the host holding `NAME-VERSION/` and `NAME-current`.
    pub root: String,
    /// Earlier versions to keep besides the active one (rollback targets).
    pub keep: usize,
    /// Reinstall when the same NAME-VERSION is present with a different checksum, instead of refusing.
    pub replace: bool,
    /// Send a plain tar even when the host has zstd.
    pub plain: bool,
    /// Limit for the whole install on one host (upload, setup included).
    pub timeout: Duration,
    /// Test hook: flip every bit of the byte at this offset of the uploaded stream (clamped to its last
    /// byte), as a network fault would. The host's sha256 check must refuse the upload.
    pub corrupt_byte_at: Option<u64>,
    /// Set to cancel: checked before the probe, before each uploaded chunk, and at the host's
    /// last point before activation (`PHASE ready`). A host cancelled there ends with
    /// [`Error::Cancelled`], its previous version active and its temporaries removed; a host that
    /// was told to activate before completes (undoing it is the caller's rollback).
    pub cancel: Option<Arc<AtomicBool>>,
    /// Test hook: wait this long after each uploaded chunk (256 KiB), as a slow link would.
    pub upload_chunk_delay: Option<Duration>,
}

/// Environment variable read by [`DeployOptions::with_test_hooks_from_env`]: a byte offset to corrupt in
/// every upload, for end-to-end tests through the CLI and daemon.
pub const CORRUPT_UPLOAD_ENV: &str = "HARNESS_TEST_CORRUPT_UPLOAD_AT";
/// Environment variable read by [`DeployOptions::with_test_hooks_from_env`]: milliseconds to wait
/// after each uploaded chunk, for tests that cancel a deployment mid-upload.
pub const UPLOAD_DELAY_ENV: &str = "HARNESS_TEST_UPLOAD_CHUNK_DELAY_MS";

impl DeployOptions {
    /// Sets [`DeployOptions::corrupt_byte_at`] from `HARNESS_TEST_CORRUPT_UPLOAD_AT` when it holds a
    /// number. The daemon calls this so end-to-end tests can fault an upload; nothing else reads it.
    pub fn with_test_hooks_from_env(mut self) -> Self {
        if let Some(at) = std::env::var(CORRUPT_UPLOAD_ENV)
            .ok()
            .and_then(|v| v.trim().parse().ok())
        {
            self.corrupt_byte_at = Some(at);
        }
        if let Some(ms) = std::env::var(UPLOAD_DELAY_ENV)
            .ok()
            .and_then(|v| v.trim().parse().ok())
        {
            self.upload_chunk_delay = Some(Duration::from_millis(ms));
        }
        self
    }
}

impl Default for DeployOptions {
    fn default() -> Self {
        DeployOptions {
            root: DEFAULT_ROOT.into(),
            keep: DEFAULT_KEEP,
            replace: false,
            plain: false,
            timeout: Duration::from_secs(600),
            corrupt_byte_at: None,
            cancel: None,
            upload_chunk_delay: None,
        }
    }
}

impl DeployOptions {
    fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(std::sync::atomic::Ordering::SeqCst))
    }
}

/// The steps of a deployment on one host, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Probing the host (connects first if needed).
    Checking,
    /// Streaming the archive; [`Progress::bytes`] counts what was sent.
    Uploading,
    /// The host computes the sha256 of what arrived.
    Verifying,
    /// Listing check, extraction into a temporary directory, scan of the result.
    Extracting,
    /// The manifest's `setup` runs in the extracted directory.
    Setup,
    /// Ready to activate: the last point where a cancel leaves the host as it was.
    Ready,
    /// Renaming into place and switching `NAME-current`.
    Activating,
    /// Finished; see [`Deployed::outcome`].
    Done,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Checking => "checking",
            Phase::Uploading => "uploading",
            Phase::Verifying => "verifying",
            Phase::Extracting => "extracting",
            Phase::Setup => "setup",
            Phase::Ready => "ready",
            Phase::Activating => "activating",
            Phase::Done => "done",
        }
    }
}

/// One progress report: which host, which phase, bytes sent of the total to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub host: String,
    /// `NAME-VERSION`.
    pub package: String,
    pub phase: Phase,
    pub bytes: u64,
    pub total: u64,
}

/// What a deployment did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Uploaded, verified, extracted, set up and activated.
    Installed,
    /// The exact package was installed already but not active: only `NAME-current` was switched.
    Activated,
    /// The exact package was active already: nothing was done.
    Unchanged,
}

/// The result of a deployment on one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    pub host: String,
    /// `NAME-VERSION`.
    pub package: String,
    /// The installed directory on the host.
    pub path: String,
    pub outcome: Outcome,
    /// The version that was active before, if any.
    pub previous: Option<String>,
    /// Bytes streamed (0 unless installed).
    pub bytes_sent: u64,
    /// Whether the `.tar.zst` was sent as is (the host has zstd) or decompressed here.
    pub compressed: bool,
}

/// What is installed on a host for one package name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub host: String,
    pub current: Option<String>,
    /// Retained versions, oldest activation first (the active one last).
    pub versions: Vec<String>,
}

/// The result of a rollback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolledBack {
    pub host: String,
    pub from: Option<String>,
    pub to: String,
    /// The now active directory.
    pub path: String,
}

/// Deploys `pkg` to the host at the end of `target` (e.g. `Target::ssh(h1).sudo("root")`). On any error
/// the previously active version is untouched and temporaries are removed. `progress` is called from the
/// deploying task; keep it quick (update a bar, send to a channel).
pub async fn deploy(
    exec: &Executor,
    target: &Target,
    pkg: &Package,
    options: &DeployOptions,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Deployed> {
    let host = target.host();
    let m = &pkg.manifest;
    let id = m.id();
    let version = m.version.to_string();
    let path = format!("{}/{id}", options.root.trim_end_matches('/'));
    let report = |phase, bytes, total| {
        progress(Progress {
            host: host.clone(),
            package: id.clone(),
            phase,
            bytes,
            total,
        });
    };
    check_root(&options.root)?;
    // A Package can be put together by hand: its name must still be a safe path component.
    check_name(&m.name)?;
    let cancelled = |detail: &str| Error::Cancelled {
        host: host.clone(),
        detail: detail.to_owned(),
    };
    if options.cancelled() {
        return Err(cancelled("before it began"));
    }
    report(Phase::Checking, 0, 0);
    let mut args: Vec<OsString> = vec![version.clone().into()];
    args.extend(m.requires.iter().map(OsString::from));
    let probe = run(
        exec,
        target,
        &script::probe(),
        &options.root,
        &m.name,
        args,
        Duration::from_secs(60),
    )
    .await?;
    let probe = parse_probe(&probe.stdout);
    if !probe.missing.is_empty() {
        return Err(Error::MissingCommands {
            host,
            commands: probe.missing,
        });
    }
    let done = |outcome, previous, bytes_sent, compressed| Deployed {
        host: host.clone(),
        package: id.clone(),
        path: path.clone(),
        outcome,
        previous,
        bytes_sent,
        compressed,
    };
    match &probe.installed {
        Some(sha) if *sha == pkg.sha256 => {
            if probe.current.as_deref() == Some(version.as_str()) {
                report(Phase::Done, 0, 0);
                return Ok(done(Outcome::Unchanged, probe.current.clone(), 0, false));
            }
            if options.cancelled() {
                return Err(cancelled("before activation"));
            }
            report(Phase::Activating, 0, 0);
            let out = run(
                exec,
                target,
                &script::switch(),
                &options.root,
                &m.name,
                vec![version.clone().into()],
                Duration::from_secs(60),
            )
            .await?;
            finish(&host, &m.name, &options.root, &version, &out)?;
            report(Phase::Done, 0, 0);
            return Ok(done(Outcome::Activated, probe.current.clone(), 0, false));
        }
        Some(sha) if !options.replace => {
            return Err(Error::VersionConflict {
                host,
                path,
                installed: sha.clone(),
                sha256: pkg.sha256.clone(),
            });
        }
        _ => {}
    }
    if !probe.writable {
        return Err(Error::PermissionDenied {
            host,
            path: options.root.clone(),
        });
    }

    // What to send, and the sha256 the host must find.
    let compressed = probe.zstd && !options.plain;
    let (stream_sha, total) = if compressed {
        (pkg.sha256.clone(), pkg.size)
    } else {
        let p = pkg.path.clone();
        blocking::unblock(move || plain_sha256(&p)).await?
    };
    let mut args: Vec<OsString> = vec![
        version.clone().into(),
        stream_sha.clone().into(),
        pkg.sha256.clone().into(),
        (if compressed { "zst" } else { "tar" }).into(),
        options.keep.to_string().into(),
        (if options.replace { "1" } else { "0" }).into(),
        total.to_string().into(),
        m.setup.clone().unwrap_or_default().into(),
    ];
    args.extend(
        m.env
            .iter()
            .map(|(k, v)| OsString::from(format!("{k}={v}"))),
    );
    let cmd = command(&script::install(), &options.root, &m.name, args)
        .stdin(StdinMode::Piped)
        .timeout(options.timeout);
    let mut proc = exec.spawn(target, &cmd).await?;
    let mut stdin = proc.take_stdin().ok_or_else(|| Error::Install {
        host: host.clone(),
        step: "upload".into(),
        detail: "no stdin pipe to the host".into(),
    })?;
    let mut events = proc.take_events().ok_or_else(|| Error::Install {
        host: host.clone(),
        step: "upload".into(),
        detail: "no event stream".into(),
    })?;
    report(Phase::Uploading, 0, total);
    let path = pkg.path.clone();
    let mut source: Box<dyn futures_lite::AsyncRead + Unpin + Send> =
        blocking::unblock(move || {
            let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, "opening", e))?;
            Ok::<_, Error>(if compressed {
                Box::new(blocking::Unblock::with_capacity(CHUNK, file))
                    as Box<dyn futures_lite::AsyncRead + Unpin + Send>
            } else {
                let dec = zstd::stream::read::Decoder::new(file)
                    .map_err(|e| Error::io(&path, "decompressing", e))?;
                Box::new(blocking::Unblock::with_capacity(CHUNK, dec))
            })
        })
        .await?;
    let corrupt_at = options
        .corrupt_byte_at
        .map(|at| at.min(total.saturating_sub(1)));
    let mut sent = 0u64;
    let mut buf = vec![0u8; CHUNK];
    let mut write_failed = false;
    let mut cut = false;
    loop {
        if options.cancelled() {
            // The host sees fewer bytes than announced and ends with `ERR cancelled`.
            cut = true;
            break;
        }
        let n = source
            .read(&mut buf)
            .await
            .map_err(|e| Error::io(&pkg.path, "reading", e))?;
        if n == 0 {
            break;
        }
        if let Some(at) = corrupt_at
            && at >= sent
            && at < sent + n as u64
        {
            buf[(at - sent) as usize] ^= 0xff;
        }
        if stdin.write_all(&buf[..n]).await.is_err() {
            // The host stopped reading: its report says why.
            write_failed = true;
            break;
        }
        sent += n as u64;
        report(Phase::Uploading, sent, total);
        if let Some(delay) = options.upload_chunk_delay {
            blocking::unblock(move || std::thread::sleep(delay)).await;
        }
    }
    // Kept open for the `go` line unless the upload was cut or refused.
    let mut stdin = Some(stdin);
    if let Some(mut s) = stdin.take() {
        if !write_failed && !cut {
            let _ = s.flush().await;
            stdin = Some(s);
        } else {
            let _ = s.close().await;
        }
    }

    let mut stdout: Vec<String> = Vec::new();
    let mut stderr: Vec<String> = Vec::new();
    while let Some(ev) = events.next().await {
        match ev {
            Event::Stdout(line) => {
                let text = line.text().into_owned();
                if let Some(p) = text.strip_prefix("PHASE ") {
                    let phase = match p {
                        "verify" => Some(Phase::Verifying),
                        "extract" => Some(Phase::Extracting),
                        "setup" => Some(Phase::Setup),
                        "ready" => Some(Phase::Ready),
                        "activate" => Some(Phase::Activating),
                        _ => None,
                    };
                    if let Some(phase) = phase {
                        report(phase, sent, total);
                    }
                    if phase == Some(Phase::Ready)
                        && let Some(mut s) = stdin.take()
                    {
                        // The cancel point: `go`, or stdin closed (the host then removes what it
                        // made and keeps the active version).
                        if options.cancelled() {
                            cut = true;
                        } else {
                            let _ = s.write_all(b"go\n").await;
                            let _ = s.flush().await;
                        }
                        let _ = s.close().await;
                    }
                }
                stdout.push(text);
            }
            Event::Stderr(line) => {
                stderr.push(line.text().into_owned());
                if stderr.len() > TAIL_LINES {
                    stderr.remove(0);
                }
            }
            _ => {}
        }
    }
    if let Some(mut s) = stdin.take() {
        let _ = s.close().await;
    }
    let status = proc.wait().await?;
    let out = Reply {
        status,
        stdout,
        stderr,
    };
    if cut && out.err().is_some_and(|(code, _)| code == "cancelled") {
        return Err(cancelled(if sent < total {
            "during the upload"
        } else {
            "before activation"
        }));
    }
    finish(&host, &m.name, &options.root, &version, &out).map_err(|e| match e {
        Error::UploadCorrupted { host, actual, .. } => Error::UploadCorrupted {
            host,
            expected: stream_sha,
            actual,
        },
        other => other,
    })?;
    let previous = out.done_detail().filter(|p| !p.is_empty());
    report(Phase::Done, sent, total);
    Ok(done(Outcome::Installed, previous, sent, compressed))
}

/// Deploys to every target at once; one result per target, in order.
pub async fn deploy_all(
    exec: &Executor,
    targets: &[Target],
    pkg: &Package,
    options: &DeployOptions,
    progress: &(dyn Fn(Progress) + Sync),
) -> Vec<Result<Deployed>> {
    futures_util::future::join_all(
        targets
            .iter()
            .map(|t| deploy(exec, t, pkg, options, progress)),
    )
    .await
}

/// Switches `NAME-current` back to the most recently active retained version (or to `to`). The version
/// rolled back from stays installed, so rolling back again returns to it. Restarting the service is the
/// caller's business.
pub async fn rollback(
    exec: &Executor,
    target: &Target,
    root: &str,
    name: &str,
    to: Option<&str>,
) -> Result<RolledBack> {
    check_root(root)?;
    check_name(name)?;
    let host = target.host();
    let args: Vec<OsString> = to.map(OsString::from).into_iter().collect();
    let out = run(
        exec,
        target,
        &script::switch(),
        root,
        name,
        args,
        Duration::from_secs(60),
    )
    .await?;
    finish(&host, name, root, to.unwrap_or(""), &out)?;
    let from = out.done_detail().filter(|p| !p.is_empty());
    let now = installed(exec, target, root, name).await?;
    let to = now.current.ok_or_else(|| Error::Install {
        host: host.clone(),
        step: "rollback".into(),
        detail: format!("{root}/{name}-current is missing after switching"),
    })?;
    let path = format!("{}/{name}-{to}", root.trim_end_matches('/'));
    Ok(RolledBack {
        host,
        from,
        to,
        path,
    })
}

/// What is installed on the host for `name`.
pub async fn installed(
    exec: &Executor,
    target: &Target,
    root: &str,
    name: &str,
) -> Result<Installed> {
    check_root(root)?;
    check_name(name)?;
    let out = run(
        exec,
        target,
        &script::probe(),
        root,
        name,
        vec!["0.0.0".into()],
        Duration::from_secs(60),
    )
    .await?;
    let probe = parse_probe(&out.stdout);
    Ok(Installed {
        host: target.host(),
        current: probe.current,
        versions: probe.versions,
    })
}

fn check_root(root: &str) -> Result<()> {
    if !root.starts_with('/')
        || root.bytes().any(|b| b < 0x20)
        || root.split('/').any(|c| c == "..")
    {
        return Err(Error::Invalid {
            what: "install root".into(),
            detail: format!("{root:?} must be an absolute path without `..`"),
        });
    }
    Ok(())
}

fn check_name(name: &str) -> Result<()> {
    if !crate::manifest::valid_name(name) {
        return Err(Error::Invalid {
            what: "package name".into(),
            detail: format!("{name:?}"),
        });
    }
    Ok(())
}

fn command(program: &str, root: &str, name: &str, args: Vec<OsString>) -> Command {
    Command::new("sh")
        .arg("-c")
        .arg(program)
        .arg("sh")
        .arg(root)
        .arg(name)
        .args(args)
}

/// A finished program's output.
struct Reply {
    status: ExitStatus,
    stdout: Vec<String>,
    stderr: Vec<String>,
}

impl Reply {
    fn err(&self) -> Option<(&str, &str)> {
        self.stdout.iter().rev().find_map(|l| {
            let rest = l.strip_prefix("ERR ")?;
            Some(rest.split_once(' ').unwrap_or((rest, "")))
        })
    }

    /// The text after `DONE <what> `.
    fn done_detail(&self) -> Option<String> {
        self.stdout.iter().rev().find_map(|l| {
            let rest = l.strip_prefix("DONE ")?;
            Some(
                rest.split_once(' ')
                    .map(|(_, d)| d.to_owned())
                    .unwrap_or_default(),
            )
        })
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    exec: &Executor,
    target: &Target,
    program: &str,
    root: &str,
    name: &str,
    args: Vec<OsString>,
    limit: Duration,
) -> Result<Reply> {
    let cmd = command(program, root, name, args).timeout(limit);
    let out = exec.output(target, &cmd).await?;
    let lines = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let mut stderr = lines(&out.stderr);
    if stderr.len() > TAIL_LINES {
        stderr.drain(..stderr.len() - TAIL_LINES);
    }
    Ok(Reply {
        status: out.status,
        stdout: lines(&out.stdout),
        stderr,
    })
}

/// Turns a program's `ERR` line (or a failure without one) into an error.
fn finish(host: &str, name: &str, root: &str, version: &str, out: &Reply) -> Result<()> {
    let host = host.to_owned();
    if let Some((code, detail)) = out.err() {
        let detail = detail.to_owned();
        return Err(match code {
            "perm" => Error::PermissionDenied { host, path: detail },
            "nospace" => Error::NoSpace { host, path: detail },
            "checksum" => Error::UploadCorrupted {
                host,
                expected: String::new(),
                actual: detail,
            },
            "unsafe" => Error::UnsafeOnHost { host, detail },
            "busy" => Error::Busy {
                host,
                name: name.to_owned(),
                lock: detail,
            },
            "conflict" => Error::Install {
                host,
                step: "activate".into(),
                detail: format!("{detail} appeared meanwhile"),
            },
            "setup" => Error::Setup {
                host,
                path: format!("{root}/{name}-{version}"),
                code: detail.parse().unwrap_or(-1),
                output: out.stderr.join("\n"),
            },
            "cancelled" => Error::Cancelled { host, detail },
            "norollback" => Error::NothingToRollBack {
                host,
                name: name.to_owned(),
                root: root.to_owned(),
            },
            "notinstalled" => Error::NotInstalled {
                host,
                name: name.to_owned(),
                version: detail,
                root: root.to_owned(),
            },
            _ => Error::Install {
                host,
                step: "install".into(),
                detail,
            },
        });
    }
    if out.status != ExitStatus::Code(0) || !out.stdout.iter().any(|l| l.starts_with("DONE ")) {
        return Err(Error::Install {
            host,
            step: "install".into(),
            detail: format!(
                "ended with {:?} without finishing: {}",
                out.status,
                out.stderr.join("\n")
            ),
        });
    }
    Ok(())
}

#[derive(Debug, Default)]
struct Probe {
    current: Option<String>,
    installed: Option<String>,
    versions: Vec<String>,
    zstd: bool,
    missing: Vec<String>,
    writable: bool,
}

fn parse_probe(lines: &[String]) -> Probe {
    let mut p = Probe::default();
    for l in lines {
        let (key, val) = l.split_once(' ').unwrap_or((l.as_str(), ""));
        match key {
            "CURRENT" => p.current = Some(val.to_owned()),
            "INSTALLED" => p.installed = Some(val.to_owned()),
            "VERSION" => p.versions.push(val.to_owned()),
            "ZSTD" => p.zstd = true,
            "MISSING" => p.missing.push(val.to_owned()),
            "WRITABLE" => p.writable = true,
            _ => {}
        }
    }
    p
}

/// sha256 and size of the decompressed tar.
fn plain_sha256(path: &std::path::Path) -> Result<(String, u64)> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, "opening", e))?;
    let mut dec =
        zstd::stream::read::Decoder::new(file).map_err(|e| Error::io(path, "decompressing", e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = dec
            .read(&mut buf)
            .map_err(|e| Error::io(path, "decompressing", e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_hook_from_env() {
        // SAFETY: no other test of this binary reads or writes the environment.
        unsafe { std::env::set_var(CORRUPT_UPLOAD_ENV, "1234") };
        assert_eq!(
            DeployOptions::default()
                .with_test_hooks_from_env()
                .corrupt_byte_at,
            Some(1234)
        );
        unsafe { std::env::set_var(CORRUPT_UPLOAD_ENV, "x") };
        assert_eq!(
            DeployOptions::default()
                .with_test_hooks_from_env()
                .corrupt_byte_at,
            None
        );
        unsafe { std::env::remove_var(CORRUPT_UPLOAD_ENV) };
        assert_eq!(DeployOptions::default().corrupt_byte_at, None);
    }

    #[test]
    fn probe_lines() {
        let lines: Vec<String> = [
            "CURRENT 1.0.0",
            "INSTALLED abc",
            "VERSION 0.9.0",
            "VERSION 1.0.0",
            "ZSTD",
            "MISSING curl",
            "WRITABLE",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let p = parse_probe(&lines);
        assert_eq!(
            (p.current.as_deref(), p.installed.as_deref()),
            (Some("1.0.0"), Some("abc"))
        );
        assert_eq!(p.versions, ["0.9.0", "1.0.0"]);
        assert!(p.zstd && p.writable);
        assert_eq!(p.missing, ["curl"]);
    }
}
