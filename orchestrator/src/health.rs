//! Health probes: a command where the service runs, or an http GET / tcp connect done natively
//! from the daemon (no curl, no nc, so nothing to install on the target).

use std::time::Duration;

use async_io::Timer;
use async_net::TcpStream;
use command_executor::{Command, Executor, Target};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, FutureExt};

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
    tree: Option<u32>,
) -> Result<String, String> {
    let run = async {
        match probe {
            Probe::Command(argv) => command(argv, timeout, exec, target, context).await,
            Probe::Http { url } => http(url, tree).await,
            Probe::Tcp { host, port } => tcp(host, *port, tree).await,
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
    // Through the per-host limit, so checks share a host's one ssh connection with its services.
    match command_executor::service::remote::op(exec, target, &cmd).await {
        Ok(out) => {
            let text = format!("{}{}", out.stdout_text(), out.stderr_text());
            if out.status.success() {
                Ok(text)
            } else {
                Err(format!("{text}\n({})", describe_status(out.status)))
            }
        }
        // Name the program when the error does not (a layer's own failure, say sudo's).
        Err(e) => {
            let e = e.to_string();
            let shown = argv.last().filter(|_| program == "sh").unwrap_or(program);
            if e.contains(shown.as_str()) {
                Err(e)
            } else {
                Err(format!("health check `{}`: {e}", argv.join(" ")))
            }
        }
    }
}

fn describe_status(st: command_executor::ExitStatus) -> String {
    match st.code() {
        Some(c) => format!("exit code {c}"),
        None => format!("{st:?}"),
    }
}

async fn tcp(host: &str, port: u16, tree: Option<u32>) -> Result<String, String> {
    match TcpStream::connect((host, port)).await {
        Ok(stream) => {
            ours(&stream, tree).await?;
            Ok(format!("connected to {host}:{port}"))
        }
        Err(e) => Err(format!("cannot connect to {host}:{port}: {e}")),
    }
}

/// Fails when the listener that answered `stream` is known to belong to another process than
/// the service's (`tree`: the pid its process tree grows from, for a process on this machine).
/// Unknown is fine: a listener in another network namespace or one whose owners this daemon
/// cannot read counts as the service's.
async fn ours(stream: &TcpStream, tree: Option<u32>) -> Result<(), String> {
    let (Some(root), Ok(peer)) = (tree, stream.peer_addr()) else {
        return Ok(());
    };
    match blocking::unblock(move || foreign_listener(peer, root)).await {
        Some(who) => Err(format!(
            "{peer} is answered by {who}, not by this service's processes"
        )),
        None => Ok(()),
    }
}

/// Who answers at `peer` when it is known not to be the process tree of `root`.
fn foreign_listener(peer: std::net::SocketAddr, root: u32) -> Option<String> {
    use command_executor::service::procfs;
    let listeners: Vec<procfs::Listener> = procfs::tcp_listeners()
        .into_iter()
        .filter(|l| l.blocks(peer.ip(), peer.port()))
        .collect();
    if listeners.is_empty() {
        return None;
    }
    let holds = |pids: Vec<(u32, u64)>| -> Option<bool> {
        let mut inodes = Vec::new();
        for (pid, _) in pids {
            inodes.extend(procfs::socket_inodes(pid)?);
        }
        Some(listeners.iter().any(|l| inodes.contains(&l.inode)))
    };
    // Its descendants first (cheap); then its group and session, which a daemonizing child
    // keeps although it left the tree.
    if holds(procfs::descendants(root))? || holds(procfs::owned(root))? {
        return None;
    }
    let inodes: Vec<u64> = listeners.iter().map(|l| l.inode).collect();
    let owners = procfs::socket_owners(&inodes);
    Some(match owners.values().flatten().next() {
        Some(who) => format!("pid {} ({})", who.pid, who.name),
        None => "a process this daemon cannot inspect".to_owned(),
    })
}

/// `http[s]://host[:port][/path]`; a 2xx or 3xx status is healthy. https does not verify the
/// certificate (like `curl -k`): a health check asks whether the service answers, and local
/// services commonly use self-signed certificates.
async fn http(url: &str, tree: Option<u32>) -> Result<String, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else {
        return Err(format!("{url}: not an http:// or https:// URL"));
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
        _ => (
            authority.trim_start_matches('[').trim_end_matches(']'),
            if tls { 443 } else { 80 },
        ),
    };
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("GET {url}: cannot connect to {host}:{port}: {e}"))?;
    ours(&tcp, tree)
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: harness-health\r\nConnection: close\r\n\r\n"
    );
    let status_line = if tls {
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|e| format!("{url}: {e}"))?;
        let stream = insecure_tls()
            .map_err(|e| format!("{url}: TLS: {e}"))?
            .connect(name, tcp)
            .await
            .map_err(|e| format!("GET {url}: TLS: {e}"))?;
        exchange(stream, &request).await
    } else {
        exchange(tcp, &request).await
    }
    .map_err(|e| format!("GET {url}: {e}"))?;
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

/// Sends the request, returns the status line.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &str,
) -> std::io::Result<String> {
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 8192 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    Ok(text.lines().next().unwrap_or("").to_owned())
}

/// The connector for https checks, made once.
fn insecure_tls() -> Result<futures_rustls::TlsConnector, String> {
    use std::sync::{Arc, OnceLock};
    static CONNECTOR: OnceLock<Result<futures_rustls::TlsConnector, String>> = OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            Ok(futures_rustls::TlsConnector::from(Arc::new(config)))
        })
        .clone()
}

/// Accepts any certificate but still checks the handshake signatures.
#[derive(Debug)]
struct AnyCertificate(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
