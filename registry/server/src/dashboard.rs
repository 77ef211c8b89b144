//! The web dashboard's side of the one port (ADR 0039): its static assets, one-time login codes,
//! browser sessions (an HttpOnly cookie naming a server-side session) and the checks that let a
//! browser session open the WebSocket API.
//!
//! The assets come from the daemon ([`DashboardConfig::assets`], embedded in its binary); this
//! module only serves them. A login code is issued over an authenticated API connection
//! (`dashboard.login`), is good for [`CODE_TTL`] and once; `POST /login` trades it for a session.
//! Codes and session ids are kept as SHA-256 hashes only, and sessions are written to
//! [`DashboardConfig::sessions_file`] so that an open page survives a daemon restart.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::http::Head;

/// The method an authenticated API client calls for a one-time login code.
pub const LOGIN_METHOD: &str = "dashboard.login";
/// How long a login code may be used.
pub const CODE_TTL: Duration = Duration::from_secs(120);
/// How long a browser session lasts (not extended by use).
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// The cookie's name; `__Host-` makes browsers insist on Secure, Path=/ and no Domain.
pub const COOKIE: &str = "__Host-harness_session";
const MAX_CODES: usize = 16;
const MAX_SESSIONS: usize = 64;
const MAX_LOGIN_BODY: usize = 512;

/// One embedded file of the dashboard.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// Request path, e.g. `/app.js`.
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
    /// Served without a session (the login page and what it needs); it must carry no data.
    pub public: bool,
}

/// What the daemon gives the server to serve the dashboard.
#[derive(Debug, Clone)]
pub struct DashboardConfig {
    pub assets: &'static [Asset],
    /// Where sessions are kept across restarts (hashes and expiry, written 0600). `None`: memory only.
    pub sessions_file: Option<PathBuf>,
}

/// Headers on every dashboard response: no framing, no sniffing, scripts only from this origin.
pub(crate) const SECURITY_HEADERS: [(&str, &str); 5] = [
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
];

type Hash = [u8; 32];

fn hash(secret: &str) -> Hash {
    Sha256::digest(secret.as_bytes()).into()
}

fn random_hex(n: usize) -> Result<String, String> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(|e| e.to_string())?;
    Ok(hex::encode(bytes))
}

pub(crate) struct Dashboard {
    config: DashboardConfig,
    codes: Mutex<HashMap<Hash, Instant>>,
    /// Session hash → expiry (wall clock, so that it means the same after a restart).
    sessions: Mutex<HashMap<Hash, SystemTime>>,
    /// Serializes writes of the sessions file.
    file_lock: async_lock::Mutex<()>,
}

impl Dashboard {
    pub(crate) async fn new(config: DashboardConfig) -> Dashboard {
        let sessions = match config.sessions_file.clone() {
            Some(path) => blocking::unblock(move || load_sessions(&path)).await,
            None => HashMap::new(),
        };
        Dashboard {
            config,
            codes: Mutex::new(HashMap::new()),
            sessions: Mutex::new(sessions),
            file_lock: async_lock::Mutex::new(()),
        }
    }

    pub(crate) fn asset(&self, path: &str) -> Option<&'static Asset> {
        let path = if path == "/" { "/index.html" } else { path };
        self.config.assets.iter().find(|a| a.path == path)
    }

    /// A new one-time login code (hex), good for [`CODE_TTL`].
    pub(crate) fn issue_code(&self) -> Result<String, String> {
        let code = random_hex(16)?;
        let mut codes = self.codes.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        codes.retain(|_, issued| now.duration_since(*issued) < CODE_TTL);
        if codes.len() >= MAX_CODES
            && let Some(oldest) = codes.iter().min_by_key(|(_, t)| **t).map(|(h, _)| *h)
        {
            codes.remove(&oldest);
        }
        codes.insert(hash(&code), now);
        Ok(code)
    }

    /// Uses up `code`; a new session id on success.
    pub(crate) async fn redeem(&self, code: &str) -> Option<String> {
        let issued = self
            .codes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&hash(code))?;
        if issued.elapsed() >= CODE_TTL {
            return None;
        }
        let id = random_hex(32).ok()?;
        let now = SystemTime::now();
        {
            let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            sessions.retain(|_, exp| *exp > now);
            if sessions.len() >= MAX_SESSIONS
                && let Some(oldest) = sessions.iter().min_by_key(|(_, t)| **t).map(|(h, _)| *h)
            {
                sessions.remove(&oldest);
            }
            sessions.insert(hash(&id), now + SESSION_TTL);
        }
        self.save().await;
        Some(id)
    }

    pub(crate) async fn logout(&self, head: &Head) {
        let Some(id) = session_cookie(head) else {
            return;
        };
        let removed = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&hash(id))
            .is_some();
        if removed {
            self.save().await;
        }
    }

    /// Whether the request carries the cookie of a live session.
    pub(crate) fn has_session(&self, head: &Head) -> bool {
        let Some(id) = session_cookie(head) else {
            return false;
        };
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&hash(id))
            .is_some_and(|exp| *exp > SystemTime::now())
    }

    async fn save(&self) {
        let Some(path) = self.config.sessions_file.clone() else {
            return;
        };
        let _guard = self.file_lock.lock().await;
        let text: String = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(h, exp)| {
                let secs = exp.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
                format!("{} {secs}\n", hex::encode(h))
            })
            .collect();
        if let Err(e) = blocking::unblock(move || write_private(&path, text.as_bytes())).await {
            tracing::warn!(error = %e, "writing dashboard sessions");
        }
    }
}

fn load_sessions(path: &std::path::Path) -> HashMap<Hash, SystemTime> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return HashMap::new();
    };
    let now = SystemTime::now();
    text.lines()
        .filter_map(|line| {
            let (h, secs) = line.split_once(' ')?;
            let h: Hash = hex::decode(h).ok()?.try_into().ok()?;
            let exp = UNIX_EPOCH + Duration::from_secs(secs.trim().parse().ok()?);
            (exp > now).then_some((h, exp))
        })
        .collect()
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The session id in the request's cookies.
fn session_cookie(head: &Head) -> Option<&str> {
    head.headers_named("cookie")
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim())
}

/// Whether a browser request comes from the dashboard's own origin: `Origin` is `https://` + `Host`,
/// and `Host` names this server by IP literal or `localhost` on its port (a DNS-rebound name is
/// refused).
pub(crate) fn same_origin(head: &Head, listen: SocketAddr) -> bool {
    let (Some(origin), Some(host)) = (head.header("origin"), head.header("host")) else {
        return false;
    };
    if origin != format!("https://{host}") {
        return false;
    }
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) => (n, p),
        None => return false,
    };
    if port.parse::<u16>().ok() != Some(listen.port()) {
        return false;
    }
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// The cookie that names a new session.
pub(crate) fn set_cookie(id: &str) -> String {
    format!(
        "{COOKIE}={id}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_TTL.as_secs()
    )
}

/// The cookie that ends one.
pub(crate) fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// The login code in a `POST /login` body (`code=HEX` or the bare code).
pub(crate) fn code_from_body(body: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(body).ok()?.trim();
    let code = text.strip_prefix("code=").unwrap_or(text);
    (!code.is_empty() && code.len() <= 128 && code.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some(code)
}

/// Reads a request body of `Content-Length` bytes (at most [`MAX_LOGIN_BODY`]), starting with
/// what was read past the head.
pub(crate) async fn read_body<S: futures_lite::AsyncRead + Unpin>(
    stream: &mut S,
    head: &Head,
    mut rest: Vec<u8>,
) -> Option<Vec<u8>> {
    use futures_lite::AsyncReadExt;
    let len: usize = head.header("content-length")?.parse().ok()?;
    if len > MAX_LOGIN_BODY {
        return None;
    }
    while rest.len() < len {
        let mut chunk = [0u8; 512];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        rest.extend_from_slice(&chunk[..n]);
    }
    rest.truncate(len);
    Some(rest)
}

/// Whether a request is the dashboard's: its assets, `/`, `POST /login`, `POST /logout`.
pub(crate) fn owns(d: &Dashboard, head: &Head) -> bool {
    let path = head.path.split('?').next().unwrap_or("");
    match head.method.as_str() {
        "GET" => d.asset(path).is_some(),
        "POST" => path == "/login" || path == "/logout",
        _ => false,
    }
}

const NOT_LOGGED_IN: &str = "<!doctype html><meta charset=utf-8><title>harness</title>\
<p>Not logged in. Run <code>harness dashboard</code> for a one-time login link.</p>\n";

/// Serves a request [`owns`] accepted. `listen` is the server's address (for the origin check).
pub(crate) async fn serve_http<S>(
    d: &Dashboard,
    stream: &mut S,
    head: &Head,
    rest: Vec<u8>,
    listen: SocketAddr,
) -> std::io::Result<bool>
where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin,
{
    use crate::http::respond;
    let path = head.path.split('?').next().unwrap_or("");
    let html = "text/html; charset=utf-8";
    let text = "text/plain; charset=utf-8";
    let mut headers: Vec<(&str, &str)> = SECURITY_HEADERS.to_vec();
    match (head.method.as_str(), path) {
        ("POST", "/login") => {
            if !same_origin(head, listen) {
                respond(
                    stream,
                    403,
                    text,
                    "cross-origin request refused\n",
                    &headers,
                )
                .await?;
                return Ok(false);
            }
            let Some(body) = read_body(stream, head, rest).await else {
                respond(
                    stream,
                    400,
                    text,
                    "expected a short body: code=HEX\n",
                    &headers,
                )
                .await?;
                return Ok(false);
            };
            let session = match code_from_body(&body) {
                Some(code) => d.redeem(code).await,
                None => None,
            };
            match session {
                Some(id) => {
                    let cookie = set_cookie(&id);
                    headers.push(("Set-Cookie", &cookie));
                    respond(stream, 204, text, "", &headers).await?;
                    Ok(true)
                }
                None => {
                    respond(
                        stream,
                        401,
                        text,
                        "this login code is wrong, used or expired; run `harness dashboard` again\n",
                        &headers,
                    )
                    .await?;
                    Ok(false)
                }
            }
        }
        ("POST", _) => {
            if !same_origin(head, listen) {
                respond(
                    stream,
                    403,
                    text,
                    "cross-origin request refused\n",
                    &headers,
                )
                .await?;
                return Ok(true);
            }
            d.logout(head).await;
            let cookie = clear_cookie();
            headers.push(("Set-Cookie", &cookie));
            respond(stream, 204, text, "", &headers).await?;
            Ok(true)
        }
        _ => {
            let Some(asset) = d.asset(path) else {
                respond(stream, 404, text, "not found\n", &headers).await?;
                return Ok(true);
            };
            if !asset.public && !d.has_session(head) {
                respond(stream, 401, html, NOT_LOGGED_IN, &headers).await?;
                return Ok(false);
            }
            respond(stream, 200, asset.content_type, asset.body, &headers).await?;
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        smol::block_on(crate::http::read_head(&mut futures_lite::io::Cursor::new(
            text.as_bytes().to_vec(),
        )))
        .expect("head")
        .0
    }

    fn dashboard() -> Dashboard {
        smol::block_on(Dashboard::new(DashboardConfig {
            assets: &[],
            sessions_file: None,
        }))
    }

    #[test]
    fn a_code_is_good_once_and_a_wrong_one_never() {
        let d = dashboard();
        let code = d.issue_code().expect("code");
        assert!(smol::block_on(d.redeem("00ff")).is_none());
        let id = smol::block_on(d.redeem(&code)).expect("first use");
        assert!(smol::block_on(d.redeem(&code)).is_none(), "reused");
        let with = head(&format!(
            "GET / HTTP/1.1\r\nCookie: a=b; {COOKIE}={id}\r\n\r\n"
        ));
        assert!(d.has_session(&with));
        let wrong = head(&format!("GET / HTTP/1.1\r\nCookie: {COOKIE}=00\r\n\r\n"));
        assert!(!d.has_session(&wrong));
        smol::block_on(d.logout(&with));
        assert!(!d.has_session(&with));
    }

    #[test]
    fn sessions_survive_a_restart_through_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = DashboardConfig {
            assets: &[],
            sessions_file: Some(dir.path().join("sessions")),
        };
        let d = smol::block_on(Dashboard::new(config.clone()));
        let code = d.issue_code().expect("code");
        let id = smol::block_on(d.redeem(&code)).expect("session");
        let text = std::fs::read_to_string(dir.path().join("sessions")).expect("file");
        assert!(!text.contains(&id), "the file keeps hashes only");
        let again = smol::block_on(Dashboard::new(config));
        let with = head(&format!("GET / HTTP/1.1\r\nCookie: {COOKIE}={id}\r\n\r\n"));
        assert!(again.has_session(&with));
    }

    #[test]
    fn origin_must_be_this_server_by_address() {
        let listen: SocketAddr = "127.0.0.1:4000".parse().expect("addr");
        let ok = head(
            "GET / HTTP/1.1\r\nHost: 127.0.0.1:4000\r\nOrigin: https://127.0.0.1:4000\r\n\r\n",
        );
        assert!(same_origin(&ok, listen));
        for bad in [
            "Host: 127.0.0.1:4000\r\nOrigin: https://evil.example",
            "Host: evil.example:4000\r\nOrigin: https://evil.example:4000",
            "Host: 127.0.0.1:4001\r\nOrigin: https://127.0.0.1:4001",
            "Host: 127.0.0.1:4000\r\nOrigin: http://127.0.0.1:4000",
            "Host: 127.0.0.1:4000",
        ] {
            let h = head(&format!("GET / HTTP/1.1\r\n{bad}\r\n\r\n"));
            assert!(!same_origin(&h, listen), "{bad}");
        }
    }

    #[test]
    fn login_bodies() {
        assert_eq!(code_from_body(b"code=abc123"), Some("abc123"));
        assert_eq!(code_from_body(b"abc123\n"), Some("abc123"));
        assert_eq!(code_from_body(b"code=<script>"), None);
        assert_eq!(code_from_body(b""), None);
    }
}
