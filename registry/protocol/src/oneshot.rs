//! A blocking connection for a command that sends one request and exits (`harness status`): the
//! same TLS WebSocket, pinned certificate and token as [`crate::Client`], on the calling thread
//! with blocking sockets. No executor, no reactor and so no `async-io` helper thread: the async
//! client's reactor runs on a helper thread whenever the caller computes (the TLS handshake, the
//! decoding), and every wait then became a wake-up across threads (ADR 0045, addendum).
//!
//! The first request travels with the WebSocket upgrade, in one write: the answer to both comes
//! back in one flight, a round trip less than upgrading first (the server takes frames that
//! follow the upgrade request; docs/protocol.md). The key, the frame's mask and the accept check
//! use the operating system's random source and ring's SHA-1, which the TLS handshake has
//! already set up: `rand` and the `sha1` crate would each probe the CPU's features again, and
//! every `cpuid` is a trap to the hypervisor in a virtual machine.
//!
//! It answers calls only: progress, events and other frames are skipped, and there is no
//! reconnecting. Anything that needs more (subscriptions, streaming, concurrent calls, auto-start
//! of a daemon) uses [`crate::Client`].

use std::io::{self, Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::protocol::frame::Frame;
use async_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use async_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use async_tungstenite::tungstenite::{self, Message};
use base64::Engine as _;

use crate::client::{ClientError, ConnectOptions, parse_url, refusal, reply_of};
use crate::method::Method;
use crate::wire;

type Stream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// One blocking connection to a daemon; see the module documentation.
pub struct OneShot {
    link: Link,
    next_id: u64,
    request_timeout: Duration,
    idle_timeout: Duration,
}

/// Before the first call the connection is TLS only: the upgrade goes out with that call.
enum Link {
    Tls(Box<Upgrade>),
    WebSocket(Box<tungstenite::WebSocket<Stream>>),
    /// An upgrade that failed: the connection is not used again.
    Broken,
}

/// What the upgrade needs: the stream, the request's head and the key it carries.
struct Upgrade {
    stream: Stream,
    head: String,
    key: String,
    config: WebSocketConfig,
    /// The longest wait for the server's answer to the upgrade (sent before it reads the
    /// request): the connect timeout, as when the upgrade was part of connecting.
    answer_timeout: Duration,
}

impl std::fmt::Debug for OneShot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OneShot").finish_non_exhaustive()
    }
}

/// Sets the socket's read and write timeouts to what is left until `deadline`: `Timeout` once it
/// has passed.
fn until(tcp: &TcpStream, deadline: Instant, total: Duration) -> Result<(), ClientError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(ClientError::Timeout(total));
    }
    let set = tcp
        .set_read_timeout(Some(left))
        .and_then(|()| tcp.set_write_timeout(Some(left)));
    set.map_err(|e| ClientError::Closed {
        code: None,
        reason: e.to_string(),
    })
}

fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// The largest response head (and refusal body) read before the WebSocket begins.
const MAX_HEAD: usize = 16 * 1024;

impl OneShot {
    /// Connects as [`crate::Client::connect_with`] does (TLS with `opts`' CA or pinned
    /// certificate); the WebSocket upgrade with the token goes out with the first
    /// [`OneShot::call`], which reports a refused token or a busy server as
    /// [`crate::Client::connect_with`] does. The TCP connection waits at most
    /// `opts.connect_timeout` per address; each read and write of the TLS handshake then waits at
    /// most what is left of another `opts.connect_timeout` from there.
    pub fn connect(opts: &ConnectOptions) -> Result<OneShot, ClientError> {
        let (host, port, path) = parse_url(&opts.url)?;
        let addr = format!("{host}:{port}");
        let head = upgrade_head(opts, &host, port, &path)?;
        let tls_config =
            crate::tls::client_config_pinned(&opts.ca_pem, opts.server_cert_pem.as_deref())?;
        let timeout = opts.connect_timeout;
        let connect_error = |source| ClientError::Connect {
            addr: addr.clone(),
            source,
        };
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the name resolves to no address");
        let mut tcp = None;
        for a in (host.as_str(), port)
            .to_socket_addrs()
            .map_err(connect_error)?
        {
            match TcpStream::connect_timeout(&a, timeout) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let Some(mut tcp) = tcp else {
            return Err(if timed_out(&last) {
                ClientError::Timeout(timeout)
            } else {
                connect_error(last)
            });
        };
        let _ = tcp.set_nodelay(true);
        let deadline = Instant::now() + timeout;
        until(&tcp, deadline, timeout)?;
        let name = rustls_pki_types::ServerName::try_from(host.clone()).map_err(|_| {
            ClientError::InvalidUrl {
                url: opts.url.clone(),
            }
        })?;
        let mut tls =
            rustls::ClientConnection::new(tls_config, name).map_err(|e| ClientError::Tls {
                addr: addr.clone(),
                message: e.to_string(),
            })?;
        while tls.is_handshaking() {
            if let Err(e) = tls.complete_io(&mut tcp) {
                return Err(if timed_out(&e) {
                    ClientError::Timeout(timeout)
                } else {
                    ClientError::Tls {
                        addr: addr.clone(),
                        message: e.to_string(),
                    }
                });
            }
        }
        let mut key = [0u8; 16];
        getrandom::fill(&mut key).map_err(|e| ClientError::Handshake(e.to_string()))?;
        let key = base64::engine::general_purpose::STANDARD.encode(key);
        Ok(OneShot {
            link: Link::Tls(Box::new(Upgrade {
                stream: rustls::StreamOwned::new(tls, tcp),
                head,
                key,
                config: crate::client::ws_config(opts),
                answer_timeout: timeout,
            })),
            next_id: 1,
            request_timeout: opts.request_timeout,
            idle_timeout: opts.idle_timeout,
        })
    }

    /// Whether the WebSocket is open: a call's error before that is the server's refusal of the
    /// connection (or a connection lost before it answered), not an answer to the request.
    pub fn upgraded(&self) -> bool {
        matches!(self.link, Link::WebSocket(_))
    }

    /// Sends `text` (a request) in a text frame: with the upgrade, in the same write, if the
    /// WebSocket is not open yet.
    fn send(&mut self, text: String, deadline: Instant) -> Result<(), ClientError> {
        match std::mem::replace(&mut self.link, Link::Broken) {
            Link::WebSocket(mut ws) => {
                let sent = until(ws.get_ref().get_ref(), deadline, self.request_timeout)
                    .and_then(|()| ws.send(Message::text(text)).map_err(closed));
                self.link = Link::WebSocket(ws);
                sent
            }
            Link::Broken => Err(ClientError::Closed {
                code: None,
                reason: "the server refused the connection before".into(),
            }),
            Link::Tls(upgrade) => {
                let ws = upgrade.send(text, deadline, self.request_timeout)?;
                self.link = Link::WebSocket(Box::new(ws));
                Ok(())
            }
        }
    }
}

impl Upgrade {
    /// Sends the upgrade request and `first` in one write, then reads the server's answer to
    /// the upgrade: the open WebSocket (holding whatever followed the answer), or the refusal
    /// as the async client reports it.
    fn send(
        self,
        first: String,
        deadline: Instant,
        total: Duration,
    ) -> Result<tungstenite::WebSocket<Stream>, ClientError> {
        let Upgrade {
            mut stream,
            head,
            key,
            config,
            answer_timeout,
        } = self;
        until(&stream.sock, deadline, total)?;
        let mut out = head.into_bytes();
        out.extend_from_slice(b"Sec-WebSocket-Key: ");
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        let mut frame = Frame::message(first, OpCode::Data(Data::Text), true);
        let mut mask = [0u8; 4];
        getrandom::fill(&mut mask).map_err(|e| ClientError::Handshake(e.to_string()))?;
        frame.header_mut().mask = Some(mask);
        frame
            .format(&mut out)
            .map_err(|e| ClientError::Handshake(e.to_string()))?;
        let io_error = |e: io::Error, total| {
            if timed_out(&e) {
                ClientError::Timeout(total)
            } else {
                ClientError::Closed {
                    code: None,
                    reason: e.to_string(),
                }
            }
        };
        stream
            .write_all(&out)
            .and_then(|()| stream.flush())
            .map_err(|e| io_error(e, total))?;
        let answer = deadline.min(Instant::now() + answer_timeout);
        until(&stream.sock, answer, answer_timeout)?;
        let mut buf = Vec::with_capacity(1024);
        let (status, limit, head, body) = loop {
            let mut chunk = [0u8; 4096];
            let n = stream
                .read(&mut chunk)
                .map_err(|e| io_error(e, answer_timeout))?;
            if n == 0 {
                return Err(ClientError::Handshake(
                    "the server closed the connection during the upgrade".into(),
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = response.code.unwrap_or(0);
                    if status == 101 {
                        check_accept(response.headers, &key)?;
                        break (status, None, len, 0);
                    }
                    let header = |name: &str| {
                        response
                            .headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case(name))
                            .and_then(|h| std::str::from_utf8(h.value).ok())
                            .map(str::trim)
                    };
                    let limit = header(wire::CONNECTION_LIMIT_HEADER).and_then(|v| v.parse().ok());
                    let body = header("content-length")
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0)
                        .min(MAX_HEAD);
                    break (status, limit, len, body);
                }
                Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
                Ok(httparse::Status::Partial) => {
                    return Err(ClientError::Handshake("response head too large".into()));
                }
                Err(e) => return Err(ClientError::Handshake(e.to_string())),
            }
        };
        if status != 101 {
            // A refusal: its body (the limit of a busy server) as far as it arrives.
            let end = head + body;
            while buf.len() < end {
                let mut chunk = [0u8; 4096];
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let body = &buf[head..end.min(buf.len())];
            return Err(refusal(status, limit, Some(body)));
        }
        let tail = buf.split_off(head);
        until(&stream.sock, deadline, total)?;
        Ok(tungstenite::WebSocket::from_partially_read(
            stream,
            tail,
            Role::Client,
            Some(config),
        ))
    }
}

impl OneShot {
    /// Calls method `M` and waits for its answer: [`crate::Client::call`] on this connection,
    /// with the same request timeout, and the same idle timeout for a server that sends nothing.
    pub fn call<M: Method>(&mut self, params: &M::Params) -> Result<M::Result, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let params =
            serde_json::to_value(params).map_err(|e| ClientError::Decode(e.to_string()))?;
        let text = serde_json::to_string(&wire::Request {
            id,
            method: M::NAME.to_string(),
            params,
        })
        .map_err(|e| ClientError::Decode(e.to_string()))?;
        let deadline = Instant::now() + self.request_timeout;
        self.send(text, deadline)?;
        let Link::WebSocket(ws) = &mut self.link else {
            return Err(ClientError::Closed {
                code: None,
                reason: "connection lost".into(),
            });
        };
        loop {
            // What is left of the request's time, or the idle timeout if that comes first.
            let left = deadline.saturating_duration_since(Instant::now());
            let idle = left > self.idle_timeout;
            let wait = if idle { self.idle_timeout } else { left };
            until(
                ws.get_ref().get_ref(),
                Instant::now() + wait,
                self.request_timeout,
            )?;
            let msg = match ws.read() {
                Ok(m) => m,
                Err(tungstenite::Error::Io(e)) if timed_out(&e) && idle => {
                    return Err(ClientError::Closed {
                        code: None,
                        reason: "no data from server within the idle timeout".into(),
                    });
                }
                Err(tungstenite::Error::Io(e)) if timed_out(&e) => {
                    return Err(ClientError::Timeout(self.request_timeout));
                }
                Err(e) => return Err(closed(e)),
            };
            match msg {
                Message::Text(text) => {
                    // The answer is decoded straight into `M::Result`, in one pass over the
                    // frame; anything else (another frame, an error) takes the general path.
                    if text.as_str().starts_with("{\"id\":")
                        && let Ok(reply) = serde_json::from_str::<Typed<M::Result>>(text.as_str())
                        && reply.id == Some(id)
                        && reply.progress.is_none()
                        && let Some(result) = reply.result
                    {
                        return Ok(result);
                    }
                    match reply_of(text.as_str()) {
                        Some((Some(got), result)) if got == id => {
                            return serde_json::from_str(result?.get())
                                .map_err(|e| ClientError::Decode(e.to_string()));
                        }
                        _ => continue,
                    }
                }
                Message::Close(frame) => {
                    return Err(match frame {
                        Some(f) => ClientError::Closed {
                            code: Some(u16::from(f.code)),
                            reason: f.reason.to_string(),
                        },
                        None => ClientError::Closed {
                            code: None,
                            reason: "closed by server".into(),
                        },
                    });
                }
                _ => continue,
            }
        }
    }
}

/// A response whose result is decoded as `T`.
#[derive(serde::Deserialize)]
struct Typed<T> {
    id: Option<u64>,
    result: Option<T>,
    #[serde(default)]
    progress: Option<serde::de::IgnoredAny>,
}

fn closed(e: tungstenite::Error) -> ClientError {
    match e {
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            ClientError::Closed {
                code: None,
                reason: "connection lost".into(),
            }
        }
        other => ClientError::Closed {
            code: None,
            reason: other.to_string(),
        },
    }
}

/// The upgrade request's head up to its key (RFC 6455 4.1; what tungstenite's client sends,
/// with the token and the user agent of [`crate::client::upgrade_request`]). A value with a
/// control character would end the header early: refused, as the async client refuses it.
fn upgrade_head(
    opts: &ConnectOptions,
    host: &str,
    port: u16,
    path: &str,
) -> Result<String, ClientError> {
    let printable = |v: &str| v.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
    if !printable(&opts.token) {
        return Err(ClientError::Handshake(
            "token is not a valid header value".into(),
        ));
    }
    let host = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut head = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {}\r\n",
        opts.token
    );
    if let Some(agent) = opts.user_agent.as_deref().filter(|a| printable(a)) {
        head.push_str("User-Agent: ");
        head.push_str(agent);
        head.push_str("\r\n");
    }
    Ok(head)
}

/// Checks a 101 answer: `Upgrade: websocket` and the accept value derived from `key`.
fn check_accept(headers: &[httparse::Header<'_>], key: &str) -> Result<(), ClientError> {
    let header = |name: &str| {
        headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    if !header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case(b"websocket")) {
        return Err(ClientError::Handshake(
            "the server's answer does not upgrade to a WebSocket".into(),
        ));
    }
    let mut input = key.as_bytes().to_vec();
    input.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    let expected = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
    if header("sec-websocket-accept").map(<[u8]>::trim_ascii) != Some(expected.as_bytes()) {
        return Err(ClientError::Handshake(
            "the server's Sec-WebSocket-Accept does not match the key".into(),
        ));
    }
    Ok(())
}
