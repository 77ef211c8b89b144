//! A blocking connection for a command that sends one request and exits (`harness status`): the
//! same TLS WebSocket, pinned certificate and token as [`crate::Client`], on the calling thread
//! with blocking sockets. No executor, no reactor and so no `async-io` helper thread: the async
//! client's reactor runs on a helper thread whenever the caller computes (the TLS handshake, the
//! decoding), and every wait then became a wake-up across threads (ADR 0045, addendum).
//!
//! It answers calls only: progress, events and other frames are skipped, and there is no
//! reconnecting. Anything that needs more (subscriptions, streaming, concurrent calls, auto-start
//! of a daemon) uses [`crate::Client`].

use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::{self, Message};

use crate::client::{ClientError, ConnectOptions, handshake_error, parse_url, reply_of};
use crate::method::Method;
use crate::wire;

type Stream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// One blocking connection to a daemon; see the module documentation.
pub struct OneShot {
    ws: tungstenite::WebSocket<Stream>,
    next_id: u64,
    request_timeout: Duration,
    idle_timeout: Duration,
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

impl OneShot {
    /// Connects as [`crate::Client::connect_with`] does (TLS with `opts`' CA or pinned
    /// certificate, then the WebSocket upgrade with the token). The TCP connection waits at most
    /// `opts.connect_timeout` per address; each read and write of the TLS handshake and the
    /// upgrade then waits at most what is left of another `opts.connect_timeout` from there.
    pub fn connect(opts: &ConnectOptions) -> Result<OneShot, ClientError> {
        let (host, port, _) = parse_url(&opts.url)?;
        let addr = format!("{host}:{port}");
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
        let request = crate::client::upgrade_request(opts)?;
        let stream = rustls::StreamOwned::new(tls, tcp);
        let config = crate::client::ws_config(opts);
        let ws = match tungstenite::client::client_with_config(request, stream, Some(config)) {
            Ok((ws, _)) => ws,
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Io(e)))
                if timed_out(&e) =>
            {
                return Err(ClientError::Timeout(timeout));
            }
            Err(tungstenite::HandshakeError::Failure(e)) => return Err(handshake_error(e)),
            // Only a non-blocking stream interrupts a handshake; a timed-out read is a failure.
            Err(tungstenite::HandshakeError::Interrupted(_)) => {
                return Err(ClientError::Timeout(timeout));
            }
        };
        Ok(OneShot {
            ws,
            next_id: 1,
            request_timeout: opts.request_timeout,
            idle_timeout: opts.idle_timeout,
        })
    }

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
        until(self.ws.get_ref().get_ref(), deadline, self.request_timeout)?;
        self.ws.send(Message::text(text)).map_err(closed)?;
        loop {
            // What is left of the request's time, or the idle timeout if that comes first.
            let left = deadline.saturating_duration_since(Instant::now());
            let idle = left > self.idle_timeout;
            let wait = if idle { self.idle_timeout } else { left };
            until(
                self.ws.get_ref().get_ref(),
                Instant::now() + wait,
                self.request_timeout,
            )?;
            let msg = match self.ws.read() {
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
