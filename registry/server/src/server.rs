//! The TLS WebSocket server: one port for the API (`/v1/ws`), `/healthz` and `/metrics`.
//!
//! Per connection: a reader loop that decodes frames and spawns one task per request (so slow
//! requests do not hold up fast ones), one forwarder task per subscription, and one writer task that
//! drains a bounded outbound queue and flushes once per burst. Nothing a client sends can block the
//! store or another connection: subscriptions that fall behind are cut off with
//! [`close_codes::LAGGING`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::protocol::frame::CloseFrame;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use futures_lite::{AsyncRead, AsyncWrite, StreamExt};
use futures_util::SinkExt;
use serde_json::Value;
use smol::Timer;

use crate::admission::{Admission, Stage, Watched};
use crate::handler::{Encoded, Handler, RequestContext, encode};
use crate::http::{self, Head};
use harness_protocol::home::Credentials;
use harness_protocol::method::{self, Method};
use harness_protocol::wire::{self, ErrorCode, Outcome, Response, WireError, close_codes};
use harness_store::hub::LiveEnd;
use harness_store::store::{Replay, Store};

/// Limits and timings. The defaults suit a local daemon with a handful of clients.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Port 0 picks a free port; [`ServerHandle::local_addr`] tells which.
    pub listen: SocketAddr,
    /// Largest accepted WebSocket message (larger ones close the connection with 1009).
    pub max_message_size: usize,
    pub max_connections: usize,
    pub max_subscriptions_per_connection: usize,
    /// Requests of one connection running at once; further frames wait (back-pressure).
    pub max_inflight_requests: usize,
    pub request_timeout: Duration,
    /// A ping is sent this often; a peer silent for `heartbeat_timeout` is closed with 4009.
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    /// Events a subscription may have queued before it is closed as lagging.
    pub subscriber_queue: usize,
    /// TLS handshake plus request head (and so the token check) must finish within this.
    pub handshake_timeout: Duration,
    /// Connections between accept and their request head, in total and per peer address. Over a
    /// limit, the oldest such connection (of that peer, or of the peer holding the most) is closed
    /// to make room; they never take places of `max_connections`.
    pub max_unauthenticated: usize,
    pub max_unauthenticated_per_peer: usize,
    /// Serve the web dashboard (ADR 0039) on this port; `None`: no dashboard.
    pub dashboard: Option<crate::dashboard::DashboardConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            max_message_size: 1 << 20,
            max_connections: 256,
            max_subscriptions_per_connection: 16,
            max_inflight_requests: 256,
            request_timeout: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(15),
            heartbeat_timeout: Duration::from_secs(45),
            subscriber_queue: 65_536,
            handshake_timeout: Duration::from_secs(10),
            max_unauthenticated: 256,
            max_unauthenticated_per_peer: 128,
            dashboard: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] harness_protocol::tls::TlsError),
    #[error("loading the named tokens: {0}")]
    Store(#[from] harness_store::StoreError),
}

#[derive(Default)]
struct Metrics {
    connections_open: AtomicU64,
    connections_total: AtomicU64,
    refused_auth: AtomicU64,
    refused_limit: AtomicU64,
    requests: AtomicU64,
    request_errors: AtomicU64,
    events_sent: AtomicU64,
    lagging_closes: AtomicU64,
    subscriptions_open: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kill {
    /// Drop the connection without a close frame (tests, lost network).
    Abort,
    /// Close with 1001.
    Shutdown,
    /// Its token was revoked or expired: close with 4003.
    Revoked,
}

struct Shared {
    config: ServerConfig,
    /// The owner's token and the named ones (ADR 0037).
    tokens: crate::tokens::Tokens,
    store: Store,
    handler: Arc<dyn Handler>,
    metrics: Metrics,
    next_connection: AtomicU64,
    connections: Mutex<HashMap<u64, async_channel::Sender<Kill>>>,
    /// Connections that have not shown the token yet.
    admission: Arc<Admission>,
    /// The bound address (the dashboard's origin check needs the real port).
    local_addr: SocketAddr,
    dashboard: Option<crate::dashboard::Dashboard>,
    /// More `/metrics` text from whoever runs the server (the daemon's own figures).
    metrics_source: Mutex<Option<MetricsSource>>,
}

/// Produces extra Prometheus text for `/metrics` ([`ServerHandle::set_metrics_source`]).
pub type MetricsSource = Arc<dyn Fn() -> crate::handler::BoxFuture<'static, String> + Send + Sync>;

/// What [`ServerHandle::stats`] reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    pub connections: u64,
    pub max_connections: u64,
    /// Requests received since the server started.
    pub requests: u64,
    pub request_errors: u64,
    /// Events sent to subscribers.
    pub events_sent: u64,
    pub subscriptions: u64,
    /// Connections refused for a missing, wrong, revoked or expired token.
    pub refused_auth: u64,
}

/// A running server. Dropping it stops accepting; [`ServerHandle::shutdown`] also closes connections.
pub struct ServerHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<smol::Task<()>>,
    /// Closes connections whose token expired.
    _expiry: smol::Task<()>,
}

impl ServerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `wss://ADDR/v1/ws`, what [`harness_protocol::Client::connect`] takes and the daemon records.
    pub fn url(&self) -> String {
        format!("wss://{}{}", self.addr, wire::WS_PATH)
    }

    /// Drops every connection without a close frame, as a network failure would.
    pub fn disconnect_all(&self) {
        self.signal_all(Kill::Abort);
    }

    /// Number of open WebSocket connections.
    pub fn connections(&self) -> u64 {
        self.shared.metrics.connections_open.load(Ordering::Relaxed)
    }

    /// Appends `source`'s text to every `/metrics` answer.
    pub fn set_metrics_source(&self, source: MetricsSource) {
        *self
            .shared
            .metrics_source
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(source);
    }

    /// The server's counters (`daemon stats`).
    pub fn stats(&self) -> ServerStats {
        let m = &self.shared.metrics;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ServerStats {
            connections: g(&m.connections_open),
            max_connections: self.shared.config.max_connections as u64,
            requests: g(&m.requests),
            request_errors: g(&m.request_errors),
            events_sent: g(&m.events_sent),
            subscriptions: g(&m.subscriptions_open),
            refused_auth: g(&m.refused_auth),
        }
    }

    fn signal_all(&self, kill: Kill) {
        let conns = self
            .shared
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for tx in conns.values() {
            let _ = tx.try_send(kill);
        }
    }

    /// Stops accepting and closes every connection with 1001 (going away).
    pub async fn shutdown(mut self) {
        if let Some(task) = self.accept.take() {
            task.cancel().await;
        }
        self.signal_all(Kill::Shutdown);
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.connections() > 0 && Instant::now() < deadline {
            Timer::after(Duration::from_millis(10)).await;
        }
    }
}

/// Binds and starts serving on the smol global executor.
pub async fn serve(
    config: ServerConfig,
    credentials: &Credentials,
    store: Store,
    handler: Arc<dyn Handler>,
) -> Result<ServerHandle, ServerError> {
    let tls = harness_protocol::tls::server_config(
        &credentials.server_cert_pem,
        &credentials.server_key_pem,
    )?;
    let listener = async_net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: config.listen,
        source,
    })?;
    let admission = Admission::new(
        config.max_unauthenticated,
        config.max_unauthenticated_per_peer,
    );
    let dashboard = match config.dashboard.clone() {
        Some(d) => Some(crate::dashboard::Dashboard::new(d).await),
        None => None,
    };
    let tokens = crate::tokens::Tokens::load(credentials.token.clone(), store.clone()).await?;
    let shared = Arc::new(Shared {
        config,
        tokens,
        store,
        handler,
        metrics: Metrics::default(),
        next_connection: AtomicU64::new(1),
        connections: Mutex::new(HashMap::new()),
        admission,
        local_addr: addr,
        dashboard,
        metrics_source: Mutex::new(None),
    });
    let acceptor = futures_rustls::TlsAcceptor::from(tls);
    let accept = smol::spawn(accept_loop(listener, acceptor, shared.clone()));
    let weak = Arc::downgrade(&shared);
    let expiry = smol::spawn(async move {
        loop {
            Timer::after(Duration::from_millis(250)).await;
            let Some(shared) = weak.upgrade() else { return };
            let n = shared.tokens.close_expired();
            if n > 0 {
                tracing::info!(connections = n, "closed connections of expired tokens");
            }
        }
    });
    tracing::info!(%addr, "registry API listening");
    Ok(ServerHandle {
        addr,
        shared,
        accept: Some(accept),
        _expiry: expiry,
    })
}

async fn accept_loop(
    listener: async_net::TcpListener,
    acceptor: futures_rustls::TlsAcceptor,
    shared: Arc<Shared>,
) {
    const FIRST_BACKOFF: Duration = Duration::from_millis(5);
    const MAX_BACKOFF: Duration = Duration::from_secs(1);
    const LOG_EVERY: Duration = Duration::from_secs(30);
    let mut backoff = FIRST_BACKOFF;
    let mut failures: u64 = 0;
    let mut logged: Option<Instant> = None;
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                if failures > 0 {
                    tracing::info!(failures, "accepting connections again");
                    failures = 0;
                    backoff = FIRST_BACKOFF;
                    logged = None;
                }
                let _ = tcp.set_nodelay(true);
                let ticket = shared.admission.admit(peer.ip());
                let progress = ticket.progress();
                let tcp = Watched::new(tcp, progress.clone());
                let acceptor = acceptor.clone();
                let shared = shared.clone();
                smol::spawn(async move {
                    let timeout = shared.config.handshake_timeout;
                    let start = async {
                        let mut tls = acceptor.accept(tcp).await.ok()?;
                        progress.reached(Stage::Encrypted);
                        let head = http::read_head(&mut tls).await;
                        Some((tls, head))
                    };
                    let closed = ticket.closed.clone();
                    let evicted = async move {
                        let _ = closed.recv().await;
                        tracing::debug!(%peer, "closed a pending connection to make room");
                        None
                    };
                    // Eviction first: a connection closed to make room does no TLS work.
                    let start = futures_lite::future::or(evicted, with_timeout(timeout, start));
                    let Some((tls, head)) = start.await.flatten() else {
                        tracing::debug!(%peer, "TLS handshake or request head failed or timed out");
                        return;
                    };
                    // The head is read: the token is checked next, without waiting on the peer.
                    drop(ticket);
                    match head {
                        Ok((head, rest)) => route(tls, head, rest, peer, shared).await,
                        Err(e) => tracing::debug!(%peer, error = %e, "bad request head"),
                    }
                })
                .detach();
            }
            Err(e) => {
                // EMFILE and friends: free an fd held by a pending connection (the least advanced),
                // back off (up to 1 s) instead of spinning, and log once per 30 s, not every time.
                failures += 1;
                shared.admission.evict_one();
                if logged.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                    tracing::warn!(error = %e, failures, "accept failed; backing off");
                    logged = Some(Instant::now());
                }
                Timer::after(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

async fn with_timeout<T>(d: Duration, f: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(f.await) }, async {
        Timer::after(d).await;
        None
    })
    .await
}

fn authorized(
    head: &Head,
    shared: &Shared,
) -> Result<crate::tokens::Principal, crate::tokens::Refusal> {
    shared.tokens.authenticate(head.bearer())
}

async fn route<S>(mut tls: S, head: Head, rest: Vec<u8>, peer: SocketAddr, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if let Some(d) = &shared.dashboard
        && crate::dashboard::owns(d, &head)
    {
        match crate::dashboard::serve_http(d, &mut tls, &head, rest, shared.local_addr).await {
            Ok(true) => {}
            Ok(false) => refuse_auth(&head, peer, &shared),
            Err(e) => tracing::debug!(%peer, error = %e, "writing dashboard response failed"),
        }
        return;
    }
    let path = head.path.split('?').next().unwrap_or("");
    let json = "application/json";
    let unauthorized = [("WWW-Authenticate", "Bearer")];
    let result = match (head.method.as_str(), path) {
        ("GET", "/healthz") => {
            let body = serde_json::json!({
                "status": "ok",
                "protocol": wire::PROTOCOL_VERSION,
                "last_seq": shared.store.last_seq(),
            });
            http::respond(&mut tls, 200, json, &body.to_string(), &[]).await
        }
        ("GET", "/metrics") => {
            if authorized(&head, &shared).is_ok() {
                let mut body = metrics_text(&shared);
                let source = shared
                    .metrics_source
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                if let Some(source) = source {
                    body.push_str(&source().await);
                }
                http::respond(&mut tls, 200, "text/plain; version=0.0.4", &body, &[]).await
            } else {
                refuse_auth(&head, peer, &shared);
                http::respond(
                    &mut tls,
                    401,
                    json,
                    r#"{"error":"unauthorized"}"#,
                    &unauthorized,
                )
                .await
            }
        }
        ("GET", wire::WS_PATH) => {
            // A browser's dashboard session acts as the owner who asked for its login code.
            let who = authorized(&head, &shared).or_else(|why| {
                if browser_session(&head, &shared) {
                    Ok(crate::tokens::Principal::owner())
                } else {
                    Err(why)
                }
            });
            if let Err(why) = who {
                refuse_auth_because(&head, peer, &shared, why);
                http::respond(
                    &mut tls,
                    401,
                    json,
                    r#"{"error":"unauthorized"}"#,
                    &unauthorized,
                )
                .await
            } else if !head.header_has("upgrade", "websocket")
                || head.header("sec-websocket-version") != Some("13")
            {
                http::respond(
                    &mut tls,
                    426,
                    json,
                    r#"{"error":"websocket upgrade required"}"#,
                    &[("Sec-WebSocket-Version", "13")],
                )
                .await
            } else if let Some(key) = head.header("sec-websocket-key") {
                let open = shared
                    .metrics
                    .connections_open
                    .fetch_add(1, Ordering::AcqRel);
                if open as usize >= shared.config.max_connections {
                    shared
                        .metrics
                        .connections_open
                        .fetch_sub(1, Ordering::AcqRel);
                    shared.metrics.refused_limit.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%peer, "refused connection: too many connections");
                    let body = serde_json::json!({
                        "error": "too many connections",
                        "limit": shared.config.max_connections,
                    });
                    let limit = shared.config.max_connections.to_string();
                    let extra = [(wire::CONNECTION_LIMIT_HEADER, limit.as_str())];
                    http::respond(&mut tls, 503, json, &body.to_string(), &extra).await
                } else if let Ok(who) = who {
                    // Who the client says it is, for the operations it asks for (ADR 0035).
                    let agent: Option<Arc<str>> = head
                        .header("user-agent")
                        .map(|a| a.chars().take(100).collect::<String>().into());
                    upgrade(tls, key, rest, (peer, agent), shared, who).await;
                    return;
                } else {
                    return;
                }
            } else {
                http::respond(
                    &mut tls,
                    400,
                    json,
                    r#"{"error":"missing Sec-WebSocket-Key"}"#,
                    &[],
                )
                .await
            }
        }
        ("GET", _) => http::respond(&mut tls, 404, json, r#"{"error":"not found"}"#, &[]).await,
        _ => {
            http::respond(
                &mut tls,
                405,
                json,
                r#"{"error":"method not allowed"}"#,
                &[],
            )
            .await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "writing HTTP response failed");
    }
}

/// A dashboard page's WebSocket: a live session cookie, sent from the dashboard's own origin.
fn browser_session(head: &Head, shared: &Shared) -> bool {
    shared.dashboard.as_ref().is_some_and(|d| {
        d.has_session(head) && crate::dashboard::same_origin(head, shared.local_addr)
    })
}

fn refuse_auth(head: &Head, peer: SocketAddr, shared: &Shared) {
    let why = match shared.tokens.authenticate(head.bearer()) {
        Err(why) => why,
        Ok(_) => crate::tokens::Refusal::Unknown,
    };
    refuse_auth_because(head, peer, shared, why);
}

fn refuse_auth_because(
    head: &Head,
    peer: SocketAddr,
    shared: &Shared,
    why: crate::tokens::Refusal,
) {
    shared.metrics.refused_auth.fetch_add(1, Ordering::Relaxed);
    let reason = why.as_str();
    // Never log the presented token.
    tracing::warn!(%peer, path = %head.path, reason, "refused unauthenticated request");
}

fn metrics_text(shared: &Shared) -> String {
    let m = &shared.metrics;
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let rows: [(&str, &str, &str, u64); 13] = [
        (
            "harness_api_connections",
            "gauge",
            "Open WebSocket connections.",
            g(&m.connections_open),
        ),
        (
            "harness_api_connections_total",
            "counter",
            "Accepted WebSocket connections.",
            g(&m.connections_total),
        ),
        (
            "harness_api_unauthenticated",
            "gauge",
            "Connections between accept and their request head.",
            shared.admission.pending() as u64,
        ),
        (
            "harness_api_unauthenticated_evicted_total",
            "counter",
            "Pending connections closed to make room for newer ones (max_unauthenticated).",
            shared.admission.evicted(),
        ),
        (
            "harness_api_refused_auth_total",
            "counter",
            "Requests refused for a missing or wrong token.",
            g(&m.refused_auth),
        ),
        (
            "harness_api_refused_limit_total",
            "counter",
            "Connections refused by max_connections.",
            g(&m.refused_limit),
        ),
        (
            "harness_api_requests_total",
            "counter",
            "Requests received.",
            g(&m.requests),
        ),
        (
            "harness_api_request_errors_total",
            "counter",
            "Requests answered with an error.",
            g(&m.request_errors),
        ),
        (
            "harness_api_events_sent_total",
            "counter",
            "Events sent to subscribers.",
            g(&m.events_sent),
        ),
        (
            "harness_api_lagging_closes_total",
            "counter",
            "Subscribers closed for lagging.",
            g(&m.lagging_closes),
        ),
        (
            "harness_api_subscriptions",
            "gauge",
            "Open subscriptions.",
            g(&m.subscriptions_open),
        ),
        (
            "harness_registry_last_seq",
            "gauge",
            "Seq of the last committed event.",
            shared.store.last_seq(),
        ),
        (
            "harness_registry_live_subscribers",
            "gauge",
            "Live subscriber queues in the store.",
            shared.store.live_subscribers() as u64,
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, value) in rows {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    }
    out
}

async fn upgrade<S>(
    tls: S,
    key: &str,
    rest: Vec<u8>,
    (peer, agent): (SocketAddr, Option<Arc<str>>),
    shared: Arc<Shared>,
    who: crate::tokens::Principal,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use futures_lite::AsyncWriteExt;
    let accept = async_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    // A request sent with the upgrade (the CLI's one-shot calls): the answer to the upgrade waits
    // for the first frame the server writes (that request's answer, as a rule), so that the
    // client wakes once for both. Only for a whole frame: a client that waits for the answer
    // before it sends the rest of one gets it at once.
    let mut tls = crate::deferred::Deferred::new(tls);
    if crate::deferred::holds_a_frame(&rest) {
        tls.defer(response.into_bytes());
    } else {
        let written = async {
            tls.write_all(response.as_bytes()).await?;
            tls.flush().await
        };
        if written.await.is_err() {
            shared
                .metrics
                .connections_open
                .fetch_sub(1, Ordering::AcqRel);
            return;
        }
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(shared.config.max_message_size))
        .max_frame_size(Some(shared.config.max_message_size));
    let ws = WebSocketStream::from_partially_read(tls, rest, Role::Server, Some(config)).await;
    let id = shared.next_connection.fetch_add(1, Ordering::Relaxed);
    shared
        .metrics
        .connections_total
        .fetch_add(1, Ordering::Relaxed);
    let (kill_tx, kill_rx) = async_channel::bounded(1);
    shared
        .connections
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id, kill_tx.clone());
    shared.tokens.attach(id, &who, kill_tx);
    tracing::debug!(connection = id, %peer, token = %who.name, "connection open");
    session(ws, id, (peer, agent), &shared, kill_rx, &who).await;
    shared.tokens.detach(id);
    shared
        .connections
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&id);
    shared
        .metrics
        .connections_open
        .fetch_sub(1, Ordering::AcqRel);
    tracing::debug!(connection = id, %peer, "connection closed");
}

/// Where [`RequestContext::progress`] writes: the connection's outbound queue.
#[derive(Clone)]
pub(crate) struct ProgressSink {
    out: async_channel::Sender<Out>,
    streaming: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for ProgressSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressSink")
    }
}

impl ProgressSink {
    pub(crate) async fn send(&self, id: u64, data: impl serde::Serialize) -> Result<(), WireError> {
        let progress = serde_json::to_value(data).map_err(WireError::internal)?;
        let text = serde_json::to_string(&wire::ProgressMessage { id, progress })
            .map_err(WireError::internal)?;
        self.streaming.store(true, Ordering::Release);
        self.out
            .send(Out::Text(text))
            .await
            .map_err(|_| WireError::new(ErrorCode::Unavailable, "the client disconnected"))
    }
}

/// Cancel switches of the requests running on one connection. Dropping a switch cancels too, so
/// clearing the map on disconnect stops every request of that connection.
type Running = Arc<Mutex<HashMap<u64, async_channel::Sender<()>>>>;

/// What the writer task sends.
enum Out {
    Text(String),
    Ping,
    Close(u16, &'static str),
}

enum Step {
    Frame(Option<Result<Message, async_tungstenite::tungstenite::Error>>),
    Kill(Kill),
    Tick,
}

async fn session<S>(
    ws: WebSocketStream<S>,
    connection: u64,
    (peer, agent): (SocketAddr, Option<Arc<str>>),
    shared: &Arc<Shared>,
    kill: async_channel::Receiver<Kill>,
    who: &crate::tokens::Principal,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, mut stream) = ws.split();
    let (out_tx, out_rx) = async_channel::bounded::<Out>(1024);
    let writer = smol::spawn(writer_task(sink, out_rx));
    let inflight = Arc::new(async_lock::Semaphore::new(
        shared.config.max_inflight_requests,
    ));
    let mut subs: HashMap<u64, smol::Task<()>> = HashMap::new();
    let running: Running = Arc::default();
    let mut next_sub = 1u64;
    let mut tick = Timer::interval(shared.config.heartbeat_interval);
    let mut last_seen = Instant::now();
    let end = loop {
        let step = futures_lite::future::or(
            async { Step::Frame(stream.next().await) },
            futures_lite::future::or(
                async {
                    kill.recv()
                        .await
                        .map(Step::Kill)
                        .unwrap_or(Step::Kill(Kill::Abort))
                },
                async {
                    tick.next().await;
                    Step::Tick
                },
            ),
        )
        .await;
        match step {
            Step::Frame(Some(Ok(msg))) => {
                last_seen = Instant::now();
                match msg {
                    Message::Text(text) => {
                        let ctx = Conn {
                            connection,
                            peer,
                            agent: agent.as_ref(),
                            shared,
                            out: &out_tx,
                            running: &running,
                            who,
                        };
                        // Handling waits only when this peer stops reading its responses (full
                        // outbound queue) or has too many requests in flight; past the heartbeat
                        // timeout that is a dead peer.
                        let handled = with_timeout(
                            shared.config.heartbeat_timeout,
                            handle_text(text.as_bytes(), &ctx, &inflight, &mut subs, &mut next_sub),
                        )
                        .await;
                        if handled.is_none() {
                            tracing::info!(connection, %peer, "closing peer that does not read its responses");
                            shared
                                .metrics
                                .subscriptions_open
                                .fetch_sub(subs.len() as u64, Ordering::Relaxed);
                            drop(subs);
                            running.lock().unwrap_or_else(|p| p.into_inner()).clear();
                            writer.cancel().await;
                            return;
                        }
                    }
                    Message::Binary(_) => {
                        let err = WireError::new(
                            ErrorCode::InvalidRequest,
                            "binary frames are not supported; send JSON text frames",
                        );
                        send_response(&out_tx, shared, None, Err(err)).await;
                    }
                    Message::Close(_) => break None,
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                }
            }
            Step::Frame(Some(Err(e))) => {
                use async_tungstenite::tungstenite::Error as E;
                tracing::debug!(connection, error = %e, "websocket read error");
                break match e {
                    E::Capacity(_) => Some((close_codes::MESSAGE_TOO_BIG, "message too big")),
                    E::Protocol(_) | E::Utf8(_) => Some((1002, "protocol error")),
                    _ => None,
                };
            }
            Step::Frame(None) => break None,
            Step::Kill(Kill::Abort) => {
                shared
                    .metrics
                    .subscriptions_open
                    .fetch_sub(subs.len() as u64, Ordering::Relaxed);
                drop(subs);
                running.lock().unwrap_or_else(|p| p.into_inner()).clear();
                writer.cancel().await;
                return;
            }
            Step::Kill(Kill::Shutdown) => {
                break Some((close_codes::SHUTDOWN, "server shutting down"));
            }
            Step::Kill(Kill::Revoked) => {
                tracing::info!(connection, %peer, token = %who.name, "closing: token revoked or expired");
                break Some((close_codes::TOKEN_REVOKED, "token revoked or expired"));
            }
            Step::Tick => {
                if last_seen.elapsed() >= shared.config.heartbeat_timeout {
                    tracing::info!(connection, %peer, "closing dead peer: heartbeat timeout");
                    break Some((close_codes::HEARTBEAT_TIMEOUT, "heartbeat timeout"));
                }
                let _ = out_tx.try_send(Out::Ping);
            }
        }
    };
    let open = subs.len() as u64;
    drop(subs);
    running.lock().unwrap_or_else(|p| p.into_inner()).clear();
    shared
        .metrics
        .subscriptions_open
        .fetch_sub(open, Ordering::Relaxed);
    if let Some((code, reason)) = end {
        let _ = out_tx.try_send(Out::Close(code, reason));
    }
    drop(out_tx);
    // Let the writer flush what is queued, but never wait on a peer that stopped reading.
    if with_timeout(Duration::from_secs(2), &mut { writer })
        .await
        .is_none()
    {
        tracing::debug!(connection, "writer did not finish in time");
    }
}

async fn writer_task<S>(
    mut sink: async_tungstenite::WebSocketSender<S>,
    rx: async_channel::Receiver<Out>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    while let Ok(first) = rx.recv().await {
        let mut next = Some(first);
        let mut burst = 0;
        while let Some(out) = next.take() {
            let msg = match out {
                Out::Text(t) => Message::text(t),
                Out::Ping => Message::Ping(Default::default()),
                Out::Close(code, reason) => {
                    let frame = CloseFrame {
                        code: CloseCode::from(code),
                        reason: reason.into(),
                    };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    let _ = sink.close(None).await;
                    return;
                }
            };
            if sink.feed(msg).await.is_err() {
                return;
            }
            burst += 1;
            if burst < 256 {
                next = rx.try_recv().ok();
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
    let _ = sink.close(None).await;
}

struct Conn<'a> {
    connection: u64,
    peer: SocketAddr,
    agent: Option<&'a Arc<str>>,
    shared: &'a Arc<Shared>,
    out: &'a async_channel::Sender<Out>,
    running: &'a Running,
    who: &'a crate::tokens::Principal,
}

async fn send_response(
    out: &async_channel::Sender<Out>,
    shared: &Shared,
    id: Option<u64>,
    result: Result<Encoded, WireError>,
) {
    let text = match result {
        // What serde writes for `Response { id, outcome: Outcome::Result(v) }`, with the result
        // already encoded: the result is copied, not serialized again.
        Ok(v) => {
            let id = id.map_or_else(|| "null".to_owned(), |id| id.to_string());
            let mut text = String::with_capacity(v.get().len() + id.len() + 18);
            text.push_str("{\"id\":");
            text.push_str(&id);
            text.push_str(",\"result\":");
            text.push_str(v.get());
            text.push('}');
            text
        }
        Err(e) => {
            shared
                .metrics
                .request_errors
                .fetch_add(1, Ordering::Relaxed);
            let outcome = Outcome::Error(e);
            serde_json::to_string(&Response { id, outcome }).unwrap_or_else(|e| {
                format!(
                    r#"{{"id":null,"error":{{"code":"internal","message":"encoding response: {e}"}}}}"#
                )
            })
        }
    };
    let _ = out.send(Out::Text(text)).await;
}

async fn handle_text(
    bytes: &[u8],
    conn: &Conn<'_>,
    inflight: &Arc<async_lock::Semaphore>,
    subs: &mut HashMap<u64, smol::Task<()>>,
    next_sub: &mut u64,
) {
    let shared = conn.shared;
    shared.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let req = match wire::decode_request(bytes) {
        Ok(r) => r,
        Err(resp) => {
            let Response { id, outcome } = *resp;
            let err = match outcome {
                Outcome::Error(e) => e,
                Outcome::Result(_) => WireError::new(ErrorCode::InvalidRequest, "invalid request"),
            };
            send_response(conn.out, shared, id, Err(err)).await;
            return;
        }
    };
    let needed = method::required_scope(&req.method);
    if !conn.who.scope.allows(needed) {
        let refusal = harness_protocol::admin::ScopeRefusal {
            method: req.method.clone(),
            required_scope: needed,
            token: conn.who.name.clone(),
            token_scope: conn.who.scope,
        };
        let mut err = WireError::new(
            ErrorCode::Forbidden,
            format!(
                "{} needs a token with scope {needed}; token {:?} has scope {}",
                req.method, conn.who.name, conn.who.scope
            ),
        );
        err.data = serde_json::to_value(&refusal).ok();
        send_response(conn.out, shared, Some(req.id), Err(err)).await;
        return;
    }
    match req.method.as_str() {
        method::Subscribe::NAME => {
            // On success `subscribe` sends the response itself, before the first event.
            if let Err(e) = subscribe(req.id, req.params, conn, subs, next_sub).await {
                send_response(conn.out, shared, Some(req.id), Err(e)).await;
            }
        }
        method::Unsubscribe::NAME => {
            type P = <method::Unsubscribe as Method>::Params;
            let result = match crate::handler::decode_params::<P>(req.params) {
                Ok(p) => match subs.remove(&p.subscription) {
                    Some(task) => {
                        shared
                            .metrics
                            .subscriptions_open
                            .fetch_sub(1, Ordering::Relaxed);
                        task.cancel().await;
                        encode(&method::Empty {})
                    }
                    None => Err(WireError::new(
                        ErrorCode::NotFound,
                        format!("no subscription {} on this connection", p.subscription),
                    )),
                },
                Err(e) => Err(e),
            };
            send_response(conn.out, shared, Some(req.id), result).await;
        }
        method::Cancel::NAME => {
            type P = <method::Cancel as Method>::Params;
            let result = match crate::handler::decode_params::<P>(req.params) {
                Ok(p) => {
                    let switch = conn
                        .running
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&p.id);
                    let cancelled = switch.is_some_and(|s| s.try_send(()).is_ok());
                    encode(&wire::CancelResult { cancelled })
                }
                Err(e) => Err(e),
            };
            send_response(conn.out, shared, Some(req.id), result).await;
        }
        _ => {
            let permit = inflight.acquire_arc().await;
            let streaming = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let ctx = RequestContext {
                connection: conn.connection,
                peer: conn.peer,
                client: conn.agent.cloned(),
                request_id: req.id,
                store: shared.store.clone(),
                token: conn.who.name.clone(),
                scope: conn.who.scope,
                progress: Some(ProgressSink {
                    out: conn.out.clone(),
                    streaming: streaming.clone(),
                }),
            };
            let (cancel_tx, cancel_rx) = async_channel::bounded::<()>(1);
            // The task keeps only a weak handle: when the connection closes and the map is
            // cleared, the last sender goes and `cancel_rx` ends, which drops the handler.
            let cancel_weak = cancel_tx.downgrade();
            conn.running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(req.id, cancel_tx);
            let running = conn.running.clone();
            let out = conn.out.clone();
            let shared = shared.clone();
            smol::spawn(async move {
                let _permit = permit;
                let timeout = shared.config.request_timeout;
                let id = req.id;
                let method = req.method;
                let work = async { Some(dispatch(&shared, &method, req.params, ctx).await) };
                // The timeout covers the request until its first progress message.
                let deadline = async {
                    Timer::after(timeout).await;
                    if streaming.load(Ordering::Acquire) {
                        futures_lite::future::pending::<()>().await;
                    }
                    Some(Err(WireError::new(
                        ErrorCode::Timeout,
                        format!("{method} did not finish within {timeout:?}"),
                    )))
                };
                let cancelled = async {
                    match cancel_rx.recv().await {
                        Ok(()) => Some(Err(WireError::new(
                            ErrorCode::Cancelled,
                            "cancelled by the client",
                        ))),
                        // The connection is gone: nobody to answer.
                        Err(_) => None,
                    }
                };
                let result =
                    futures_lite::future::or(work, futures_lite::future::or(deadline, cancelled))
                        .await;
                {
                    let mut running = running.lock().unwrap_or_else(|p| p.into_inner());
                    let ours = cancel_weak.upgrade();
                    if running
                        .get(&id)
                        .is_some_and(|s| ours.as_ref().is_some_and(|o| s.same_channel(o)))
                    {
                        running.remove(&id);
                    }
                }
                if let Some(result) = result {
                    send_response(&out, &shared, Some(id), result).await;
                }
            })
            .detach();
        }
    }
}

async fn subscribe(
    request_id: u64,
    params: Value,
    conn: &Conn<'_>,
    subs: &mut HashMap<u64, smol::Task<()>>,
    next_sub: &mut u64,
) -> Result<(), WireError> {
    let shared = conn.shared;
    let params = if params.is_null() {
        Value::Object(Default::default())
    } else {
        params
    };
    let p: <method::Subscribe as Method>::Params = crate::handler::decode_params(params)?;
    if subs.len() >= shared.config.max_subscriptions_per_connection {
        return Err(WireError::new(
            ErrorCode::LimitExceeded,
            format!(
                "at most {} subscriptions per connection",
                shared.config.max_subscriptions_per_connection
            ),
        ));
    }
    let id = *next_sub;
    *next_sub += 1;
    let live = shared
        .store
        .subscribe_live(p.filter.clone(), shared.config.subscriber_queue);
    let result = wire::SubscribeResult {
        subscription: id,
        last_seq: live.live_from,
    };
    // The response goes out before the forwarder starts, so it precedes the subscription's events.
    send_response(conn.out, shared, Some(request_id), encode(&result)).await;
    let task = smol::spawn(forward(id, p, live, shared.clone(), conn.out.clone()));
    subs.insert(id, task);
    shared
        .metrics
        .subscriptions_open
        .fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Replays `(since, live_from]` from the store, then streams live events with `seq > live_from`.
/// Events committed while replaying queue up in `live`, so the seam has neither gap nor duplicate.
async fn forward(
    id: u64,
    params: wire::SubscribeParams,
    live: harness_store::hub::LiveReceiver,
    shared: Arc<Shared>,
    out: async_channel::Sender<Out>,
) {
    const PAGE: usize = 4096;
    let mut skip_through = live.live_from;
    if let Some(since) = params.since {
        let mut pos = since;
        let resync = if since > live.live_from {
            // The client has seen seqs this store never produced (e.g. a replaced state directory).
            true
        } else {
            let mut resync = false;
            while pos < live.live_from {
                match shared
                    .store
                    .replay(pos, live.live_from, params.filter.clone(), PAGE)
                    .await
                {
                    Ok(Replay::Events(events)) => {
                        let done = events.len() < PAGE;
                        for (seq, json) in events.iter() {
                            if out.send(Out::Text(event_text(id, json))).await.is_err() {
                                return;
                            }
                            pos = *seq;
                        }
                        shared
                            .metrics
                            .events_sent
                            .fetch_add(events.len() as u64, Ordering::Relaxed);
                        if done {
                            break;
                        }
                    }
                    Ok(Replay::Resync) => {
                        resync = true;
                        break;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "replay failed");
                        let _ = out.send(Out::Close(1011, "registry storage error")).await;
                        return;
                    }
                }
            }
            resync
        };
        if resync {
            match shared.store.snapshot().await {
                Ok(mut snapshot) => {
                    if let Some(project) = &params.filter.project {
                        snapshot.services.retain(|e| &e.project == project);
                    }
                    if !params.filter.services.is_empty() {
                        snapshot
                            .services
                            .retain(|e| params.filter.services.contains(&e.name));
                    }
                    skip_through = skip_through.max(snapshot.seq);
                    let msg = wire::ResyncMessage {
                        subscription: id,
                        resync: snapshot,
                    };
                    match serde_json::to_string(&msg) {
                        Ok(text) => {
                            if out.send(Out::Text(text)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "encoding resync snapshot");
                            let _ = out.send(Out::Close(1011, "internal error")).await;
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "snapshot for resync failed");
                    let _ = out.send(Out::Close(1011, "registry storage error")).await;
                    return;
                }
            }
        }
    }
    loop {
        match live.recv().await {
            Ok(batch) => {
                let mut sent = 0;
                for event in batch.iter().filter(|e| e.seq > skip_through) {
                    if out
                        .send(Out::Text(event_text(id, &event.json)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    sent += 1;
                }
                shared
                    .metrics
                    .events_sent
                    .fetch_add(sent, Ordering::Relaxed);
            }
            Err(LiveEnd::Lagged) => {
                shared
                    .metrics
                    .lagging_closes
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(subscription = id, "closing lagging subscriber");
                let _ = out
                    .send(Out::Close(
                        close_codes::LAGGING,
                        "subscriber lagging; resume with since",
                    ))
                    .await;
                return;
            }
            Err(LiveEnd::Closed) => {
                let _ = out
                    .send(Out::Close(close_codes::SHUTDOWN, "registry closed"))
                    .await;
                return;
            }
        }
    }
}

/// Prefixes the stored event JSON with the subscription id: `{"subscription":N,` + `"seq":…}`.
fn event_text(subscription: u64, json: &str) -> String {
    let body = json.strip_prefix('{').unwrap_or(json);
    let mut s = String::with_capacity(json.len() + 24);
    s.push_str("{\"subscription\":");
    s.push_str(&subscription.to_string());
    s.push(',');
    s.push_str(body);
    s
}

async fn dispatch(
    shared: &Shared,
    method: &str,
    params: Value,
    ctx: RequestContext,
) -> Result<Encoded, WireError> {
    use crate::methods::*;
    use harness_protocol::method::{
        EventsList, Hello, ServiceDeregister, ServiceGet, ServiceList, ServiceRegister,
        ServiceUpdate, TokenCreate, TokenList, TokenRevoke,
    };
    /// Decodes `M`'s params, runs `f`, encodes `M`'s result: the arm's types are `M`'s.
    async fn typed<M: Method, Fut>(
        params: Value,
        f: impl FnOnce(M::Params) -> Fut,
    ) -> Result<Encoded, WireError>
    where
        Fut: Future<Output = Result<M::Result, WireError>>,
    {
        let p: M::Params = crate::handler::decode_params(params)?;
        encode(&f(p).await?)
    }
    let store = &shared.store;
    match method {
        Hello::NAME => typed::<Hello, _>(params, |p| hello::handle(store, p)).await,
        ServiceList::NAME => {
            typed::<ServiceList, _>(params, |p| service_list::handle(store, p)).await
        }
        ServiceGet::NAME => typed::<ServiceGet, _>(params, |p| service_get::handle(store, p)).await,
        ServiceRegister::NAME => {
            typed::<ServiceRegister, _>(params, |p| service_register::handle(store, p)).await
        }
        ServiceUpdate::NAME => {
            typed::<ServiceUpdate, _>(params, |p| service_update::handle(store, p)).await
        }
        ServiceDeregister::NAME => {
            typed::<ServiceDeregister, _>(params, |p| service_deregister::handle(store, p)).await
        }
        EventsList::NAME => typed::<EventsList, _>(params, |p| events_list::handle(store, p)).await,
        crate::dashboard::LOGIN_METHOD if shared.dashboard.is_some() => {
            let d = shared
                .dashboard
                .as_ref()
                .ok_or_else(|| WireError::method_not_found(method))?;
            let code = d.issue_code().map_err(|e| {
                WireError::new(ErrorCode::Internal, format!("no random bytes: {e}"))
            })?;
            encode(&serde_json::json!({
                "code": code,
                "path": format!("/login#code={code}"),
                "expires_in_ms": crate::dashboard::CODE_TTL.as_millis() as u64,
            }))
        }
        TokenCreate::NAME => {
            typed::<TokenCreate, _>(params, |p| token_create::handle(&shared.tokens, p, &ctx)).await
        }
        TokenList::NAME => {
            typed::<TokenList, _>(params, |_| token_list::handle(&shared.tokens)).await
        }
        TokenRevoke::NAME => {
            typed::<TokenRevoke, _>(params, |p| token_revoke::handle(&shared.tokens, p)).await
        }
        _ => shared.handler.handle(method, params, ctx).await,
    }
}
