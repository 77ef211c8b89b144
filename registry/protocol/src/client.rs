//! The async client the CLI and tools use: concurrent requests correlated by id, typed registry calls,
//! subscriptions, and [`EventStream`], which reconnects and resumes from the last seq by itself.
//!
//! Each connection has a reader task that routes what the server sends. It runs on smol's global
//! executor (its own thread), unless the client was connected inside [`block_on`]: then it runs on
//! the calling thread: no executor thread is started for it and no reply crosses threads. A
//! command that sends one request and exits can use [`crate::OneShot`] instead, which has no
//! executor or reactor at all (`harness status`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use futures_lite::StreamExt;
use serde_json::Value;
use serde_json::value::RawValue;
use smol::Timer;

use crate::event::{Event, EventFilter};
use crate::home::{HarnessHome, HomeError};
use crate::method::{self, Method};
use crate::model::ServiceEntry;
use crate::wire::Snapshot;
use crate::wire::{self, Outcome, ServerMessage, WireError, methods};

type Tls = futures_rustls::client::TlsStream<async_net::TcpStream>;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid server URL {url:?}: expected wss://HOST:PORT/PATH")]
    InvalidUrl { url: String },
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("TLS with {addr} failed (is the CA pinned correctly?): {message}")]
    Tls { addr: String, message: String },
    #[error("the server refused the token (HTTP 401)")]
    Unauthorized,
    #[error("the server refused the connection: HTTP {status}")]
    Refused { status: u16 },
    /// HTTP 503: the server holds as many connections as it allows (`limit`, when it says).
    #[error("daemon busy: {} (try again when other clients have finished)", match .limit {
        Some(n) => format!("{n} connections"),
        None => "too many connections".to_owned(),
    })]
    Busy { limit: Option<u64> },
    #[error("WebSocket handshake failed: {0}")]
    Handshake(String),
    #[error("connection closed{}", fmt_close(*.code, .reason))]
    Closed { code: Option<u16>, reason: String },
    #[error("no response within {0:?}")]
    Timeout(Duration),
    #[error("{}: {}", serde_json::to_value(.0.code).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(), .0.message)]
    Remote(WireError),
    #[error("undecodable message from server: {0}")]
    Decode(String),
    #[error(transparent)]
    Home(#[from] HomeError),
    #[error(transparent)]
    TlsConfig(#[from] crate::tls::TlsError),
}

fn fmt_close(code: Option<u16>, reason: &str) -> String {
    match code {
        Some(c) if reason.is_empty() => format!(" (code {c})"),
        Some(c) => format!(" (code {c}: {reason})"),
        None => String::new(),
    }
}

impl ClientError {
    /// Whether reconnecting can help (network, server restart, lagging) as opposed to a refused
    /// credential or a bad URL.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ClientError::Connect { .. }
                | ClientError::Closed { .. }
                | ClientError::Timeout(_)
                | ClientError::Handshake(_)
                | ClientError::Busy { .. }
        )
    }

    /// The WebSocket close code, if the server closed the connection with one.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            ClientError::Closed { code, .. } => *code,
            _ => None,
        }
    }
}

/// Where and how to connect.
#[derive(Clone)]
pub struct ConnectOptions {
    /// `wss://HOST:PORT/v1/ws`
    pub url: String,
    pub ca_pem: String,
    /// The server's own certificate, when it is known from the same place as the CA (the local
    /// daemon's `server.pem`): a server presenting exactly it is accepted without checking its
    /// chain against the CA (see [`crate::tls::client_config_pinned`]).
    pub server_cert_pem: Option<String>,
    pub token: String,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// A connection that receives nothing (the server pings every 15 s by default) for this long is
    /// considered dead.
    pub idle_timeout: Duration,
    pub max_message_size: usize,
    /// Sent as `User-Agent`; the daemon records it as the requester of operations
    /// (`harness/VERSION` for the CLI).
    pub user_agent: Option<String>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl ConnectOptions {
    pub fn new(
        url: impl Into<String>,
        ca_pem: impl Into<String>,
        token: impl Into<String>,
    ) -> Self {
        ConnectOptions {
            url: url.into(),
            ca_pem: ca_pem.into(),
            server_cert_pem: None,
            token: token.into(),
            request_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_message_size: 64 << 20,
            user_agent: Some(format!("harness-protocol/{}", env!("CARGO_PKG_VERSION"))),
        }
    }

    /// Reads the daemon's URL (`daemon.json`), CA, server certificate (if there) and token from a
    /// state directory.
    pub fn from_home(home: &HarnessHome) -> Result<Self, ClientError> {
        let info = home.read_daemon_info()?;
        let (ca, token) = home.client_credentials()?;
        let mut opts = ConnectOptions::new(info.url, ca, token);
        opts.server_cert_pem = home.server_certificate();
        Ok(opts)
    }
}

/// A result as the server encoded it: decoded once, into the caller's type.
type Raw = Box<RawValue>;

enum Pending {
    Call(async_channel::Sender<Result<Raw, ClientError>>),
    Stream(async_channel::Sender<Result<CallItem, ClientError>>),
    Subscribe {
        reply: async_channel::Sender<Result<Raw, ClientError>>,
        items: async_channel::Sender<Result<SubscriptionItem, ClientError>>,
    },
}

#[derive(Default)]
struct Routes {
    pending: HashMap<u64, Pending>,
    subs: HashMap<u64, async_channel::Sender<Result<SubscriptionItem, ClientError>>>,
    /// Set once the connection has ended; later calls fail with it.
    closed: Option<(Option<u16>, String)>,
}

struct Inner {
    sender: async_lock::Mutex<async_tungstenite::WebSocketSender<Tls>>,
    routes: Mutex<Routes>,
    next_id: AtomicU64,
    request_timeout: Duration,
    reader: Mutex<Option<smol::Task<()>>>,
}

impl Inner {
    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A connection to the daemon. Cheap to clone; requests from clones run concurrently.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// What a subscription yields.
#[derive(Debug, Clone, PartialEq)]
pub enum SubscriptionItem {
    Event(Event),
    /// `since` was older than retention: the full state at `seq`; events continue after it.
    Resync(Snapshot),
}

impl SubscriptionItem {
    pub fn seq(&self) -> u64 {
        match self {
            SubscriptionItem::Event(e) => e.seq,
            SubscriptionItem::Resync(s) => s.seq,
        }
    }
}

/// What a streaming call yields: progress messages, then the final result.
#[derive(Debug, Clone, PartialEq)]
pub enum CallItem {
    Progress(Value),
    Done(Value),
}

/// A request whose handler sends progress (see [`Client::request_streaming`]).
pub struct Call {
    id: u64,
    items: async_channel::Receiver<Result<CallItem, ClientError>>,
    client: Client,
    done: bool,
}

impl Call {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The next progress message or the final result; `None` after the result or an error.
    pub async fn next(&mut self) -> Option<Result<CallItem, ClientError>> {
        if self.done {
            return None;
        }
        let item = match self.items.recv().await {
            Ok(item) => item,
            Err(_) => Err(self.client.closed_error()),
        };
        self.done = !matches!(item, Ok(CallItem::Progress(_)));
        Some(item)
    }

    /// Asks the server to stop the request; its final answer is then a `cancelled` error.
    pub async fn cancel(&self) -> Result<bool, ClientError> {
        let r: wire::CancelResult = self
            .client
            .call::<method::Cancel>(&wire::CancelParams { id: self.id })
            .await?;
        Ok(r.cancelled)
    }
}

/// One subscription on a [`Client`]. Ends with [`ClientError::Closed`] when the connection does
/// (code 4008 if it lagged).
pub struct Subscription {
    id: u64,
    start_seq: u64,
    items: async_channel::Receiver<Result<SubscriptionItem, ClientError>>,
    client: Client,
}

impl Subscription {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The last seq committed when the subscription started.
    pub fn start_seq(&self) -> u64 {
        self.start_seq
    }

    pub async fn next(&mut self) -> Result<SubscriptionItem, ClientError> {
        match self.items.recv().await {
            Ok(item) => item,
            Err(_) => Err(self.client.closed_error()),
        }
    }

    pub async fn unsubscribe(self) -> Result<(), ClientError> {
        self.client
            .call::<method::Unsubscribe>(&wire::UnsubscribeParams {
                subscription: self.id,
            })
            .await
            .map(|_| ())
    }
}

thread_local! {
    /// The executor of the innermost [`block_on`] running on this thread.
    static LOCAL: RefCell<Option<Rc<smol::LocalExecutor<'static>>>> = const { RefCell::new(None) };
}

/// Runs `future` to completion on the calling thread, like `smol::block_on`; a [`Client`]
/// connected inside it runs its reader task on this thread too (a local executor that runs while
/// `future` waits) instead of on smol's global executor thread. For a command that makes a few
/// calls and exits, that is one thread fewer to start and no reply handed between threads.
///
/// Such a client must not outlive the call: when `future` has finished, its reader no longer
/// runs, and its pending and later calls fail with [`ClientError::Closed`].
pub fn block_on<T>(future: impl Future<Output = T>) -> T {
    struct Restore(Option<Rc<smol::LocalExecutor<'static>>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            LOCAL.with(|l| *l.borrow_mut() = previous);
        }
    }
    let executor = Rc::new(smol::LocalExecutor::new());
    let _restore = Restore(LOCAL.with(|l| l.replace(Some(executor.clone()))));
    // On the heap: a command's future is large, and `run` and `block_on` each move what they are
    // given, so on the stack it would be copied twice (50 page faults more in `harness status`).
    smol::block_on(executor.run(Box::pin(future)))
}

/// Spawns a connection's reader: on the executor of the [`block_on`] running on this thread, if
/// any, else on smol's global executor.
fn spawn_reader(reader: impl Future<Output = ()> + Send + 'static) -> smol::Task<()> {
    LOCAL.with(|l| match &*l.borrow() {
        Some(executor) => executor.spawn(reader),
        None => smol::spawn(reader),
    })
}

pub(crate) fn parse_url(url: &str) -> Result<(String, u16, String), ClientError> {
    let bad = || ClientError::InvalidUrl {
        url: url.to_string(),
    };
    let rest = url.strip_prefix("wss://").ok_or_else(bad)?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, p) = v6.split_once("]:").ok_or_else(bad)?;
        (h.to_string(), p)
    } else {
        let (h, p) = authority.rsplit_once(':').ok_or_else(bad)?;
        (h.to_string(), p)
    };
    let port = port.parse().map_err(|_| bad())?;
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host, port, path.to_string()))
}

impl Client {
    /// Connects to `url` (`wss://…`), trusting only `ca_pem`, authenticating with `token`.
    pub async fn connect(url: &str, ca_pem: &str, token: &str) -> Result<Client, ClientError> {
        Client::connect_with(&ConnectOptions::new(url, ca_pem, token)).await
    }

    /// Connects to the daemon recorded in `home` (see [`ConnectOptions::from_home`]).
    pub async fn connect_home(home: &HarnessHome) -> Result<Client, ClientError> {
        let home = home.clone();
        let opts = blocking::unblock(move || ConnectOptions::from_home(&home)).await?;
        Client::connect_with(&opts).await
    }

    pub async fn connect_with(opts: &ConnectOptions) -> Result<Client, ClientError> {
        let (host, port, _) = parse_url(&opts.url)?;
        let addr = format!("{host}:{port}");
        let tls_config =
            crate::tls::client_config_pinned(&opts.ca_pem, opts.server_cert_pem.as_deref())?;
        let connect = async {
            let tcp = async_net::TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|source| ClientError::Connect {
                    addr: addr.clone(),
                    source,
                })?;
            let _ = tcp.set_nodelay(true);
            let name = rustls_pki_types::ServerName::try_from(host.clone()).map_err(|_| {
                ClientError::InvalidUrl {
                    url: opts.url.clone(),
                }
            })?;
            let tls = futures_rustls::TlsConnector::from(tls_config)
                .connect(name, tcp)
                .await
                .map_err(|e| ClientError::Tls {
                    addr: addr.clone(),
                    message: e.to_string(),
                })?;
            let request = upgrade_request(opts)?;
            async_tungstenite::client_async_with_config(request, tls, Some(ws_config(opts)))
                .await
                .map_err(handshake_error)
        };
        let timeout = opts.connect_timeout;
        let (ws, _) = futures_lite::future::or(connect, async {
            Timer::after(timeout).await;
            Err(ClientError::Timeout(timeout))
        })
        .await?;
        Ok(Client::from_stream(ws, opts))
    }

    fn from_stream(ws: WebSocketStream<Tls>, opts: &ConnectOptions) -> Client {
        let (sender, receiver) = ws.split();
        let inner = Arc::new(Inner {
            sender: async_lock::Mutex::new(sender),
            routes: Mutex::new(Routes::default()),
            next_id: AtomicU64::new(1),
            request_timeout: opts.request_timeout,
            reader: Mutex::new(None),
        });
        let reader = spawn_reader(read_loop(
            receiver,
            Arc::downgrade(&inner),
            opts.idle_timeout,
        ));
        *inner.reader.lock().unwrap_or_else(|p| p.into_inner()) = Some(reader);
        Client { inner }
    }

    fn closed_error(&self) -> ClientError {
        let routes = self.inner.routes();
        let (code, reason) = routes.closed.clone().unwrap_or((None, String::new()));
        ClientError::Closed { code, reason }
    }

    async fn send_request(
        &self,
        method: &str,
        params: Value,
        pending: Pending,
    ) -> Result<u64, ClientError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut routes = self.inner.routes();
            if let Some((code, reason)) = routes.closed.clone() {
                return Err(ClientError::Closed { code, reason });
            }
            routes.pending.insert(id, pending);
        }
        let text = serde_json::to_string(&wire::Request {
            id,
            method: method.to_string(),
            params,
        })
        .map_err(|e| ClientError::Decode(e.to_string()))?;
        let sent = self
            .inner
            .sender
            .lock()
            .await
            .send(Message::text(text))
            .await;
        if let Err(e) = sent {
            self.inner.routes().pending.remove(&id);
            return Err(ClientError::Closed {
                code: None,
                reason: e.to_string(),
            });
        }
        Ok(id)
    }

    async fn await_reply(
        &self,
        id: u64,
        rx: async_channel::Receiver<Result<Raw, ClientError>>,
    ) -> Result<Raw, ClientError> {
        let timeout = self.inner.request_timeout;
        let reply = futures_lite::future::or(async { Some(rx.recv().await) }, async {
            Timer::after(timeout).await;
            None
        })
        .await;
        match reply {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(self.closed_error()),
            None => {
                self.inner.routes().pending.remove(&id);
                Err(ClientError::Timeout(timeout))
            }
        }
    }

    /// Sends any method; the result or the server's error.
    pub async fn request(&self, method: &str, params: Value) -> Result<Value, ClientError> {
        decode(&self.request_raw(method, params).await?)
    }

    /// [`Client::request`], the result as the server encoded it.
    async fn request_raw(&self, method: &str, params: Value) -> Result<Raw, ClientError> {
        let (tx, rx) = async_channel::bounded(1);
        let id = self.send_request(method, params, Pending::Call(tx)).await?;
        self.await_reply(id, rx).await
    }

    /// Sends a method whose handler streams progress (today `deploy`, `deploy.rollback`). No client-side
    /// timeout: the stream ends with the handler, a [`Call::cancel`], or the connection.
    pub async fn request_streaming(
        &self,
        method: &str,
        params: Value,
    ) -> Result<Call, ClientError> {
        let (tx, rx) = async_channel::bounded(1024);
        let id = self
            .send_request(method, params, Pending::Stream(tx))
            .await?;
        Ok(Call {
            id,
            items: rx,
            client: self.clone(),
            done: false,
        })
    }

    /// Calls method `M`: its params and result types are `M`'s, checked by the compiler against the
    /// daemon's handler for `M` (`harness_server::Router::method`).
    pub async fn call<M: Method>(&self, params: &M::Params) -> Result<M::Result, ClientError> {
        let params =
            serde_json::to_value(params).map_err(|e| ClientError::Decode(e.to_string()))?;
        // Straight from the response's text into `M::Result`: no `Value` tree in between.
        decode(&self.request_raw(M::NAME, params).await?)
    }

    /// [`Client::request_streaming`] for method `M`; decode the final [`CallItem::Done`] value as
    /// `M::Result`.
    pub async fn call_streaming<M: Method>(&self, params: &M::Params) -> Result<Call, ClientError> {
        let params =
            serde_json::to_value(params).map_err(|e| ClientError::Decode(e.to_string()))?;
        self.request_streaming(M::NAME, params).await
    }

    pub async fn hello(&self) -> Result<wire::HelloResult, ClientError> {
        self.call::<method::Hello>(&method::Empty {}).await
    }

    pub async fn list_services(
        &self,
        project: Option<&str>,
    ) -> Result<wire::ListServicesResult, ClientError> {
        let params = wire::ListServicesParams {
            project: project.map(str::to_owned),
        };
        self.call::<method::ServiceList>(&params).await
    }

    pub async fn get_service(
        &self,
        project: &str,
        name: &str,
    ) -> Result<ServiceEntry, ClientError> {
        let params = wire::ServiceRef {
            project: project.into(),
            name: name.into(),
        };
        self.call::<method::ServiceGet>(&params).await
    }

    pub async fn register_service(
        &self,
        params: &wire::RegisterParams,
    ) -> Result<ServiceEntry, ClientError> {
        self.call::<method::ServiceRegister>(params).await
    }

    pub async fn update_service(
        &self,
        params: &wire::UpdateParams,
    ) -> Result<ServiceEntry, ClientError> {
        self.call::<method::ServiceUpdate>(params).await
    }

    pub async fn deregister_service(
        &self,
        project: &str,
        name: &str,
    ) -> Result<ServiceEntry, ClientError> {
        let params = wire::ServiceRef {
            project: project.into(),
            name: name.into(),
        };
        self.call::<method::ServiceDeregister>(&params).await
    }

    /// Subscribes: retained events after `since` first (or a resync snapshot), then live ones.
    /// `since: None` means live events only.
    pub async fn subscribe(
        &self,
        filter: EventFilter,
        since: Option<u64>,
    ) -> Result<Subscription, ClientError> {
        let params = serde_json::to_value(wire::SubscribeParams { filter, since })
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        let (reply, rx) = async_channel::bounded(1);
        // Bounded: a consumer that stops reading stops the socket, and the server then closes the
        // subscription as lagging instead of this process buffering without limit.
        let (items, items_rx) = async_channel::bounded(1024);
        let id = self
            .send_request(
                methods::SUBSCRIBE,
                params,
                Pending::Subscribe { reply, items },
            )
            .await?;
        let result: wire::SubscribeResult = decode(&self.await_reply(id, rx).await?)?;
        Ok(Subscription {
            id: result.subscription,
            start_seq: result.last_seq,
            items: items_rx,
            client: self.clone(),
        })
    }

    /// Closes the connection with a normal close frame.
    pub async fn close(&self) {
        let _ = self.inner.sender.lock().await.close(None).await;
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self
            .reader
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            drop(task);
        }
    }
}

async fn read_loop(
    mut receiver: async_tungstenite::WebSocketReceiver<Tls>,
    inner: std::sync::Weak<Inner>,
    idle_timeout: Duration,
) {
    // However the reader ends (the connection closes, or its task is dropped with the executor
    // of a finished `block_on`), waiting calls and subscriptions learn that the connection is gone.
    let mut closer = CloseRoutes {
        inner: inner.clone(),
        end: None,
    };
    let mut tick = Timer::interval((idle_timeout / 4).max(Duration::from_millis(10)));
    let mut last_seen = Instant::now();
    let (code, reason): (Option<u16>, String) = loop {
        enum Step {
            Frame(Option<Result<Message, async_tungstenite::tungstenite::Error>>),
            Tick,
        }
        let step = futures_lite::future::or(async { Step::Frame(receiver.next().await) }, async {
            tick.next().await;
            Step::Tick
        })
        .await;
        let msg = match step {
            Step::Tick => {
                if last_seen.elapsed() >= idle_timeout {
                    break (None, "no data from server within the idle timeout".into());
                }
                continue;
            }
            Step::Frame(None) => break (None, "connection lost".into()),
            Step::Frame(Some(Err(e))) => break (None, e.to_string()),
            Step::Frame(Some(Ok(msg))) => msg,
        };
        last_seen = Instant::now();
        let text = match msg {
            Message::Text(t) => t,
            Message::Close(frame) => {
                break match frame {
                    Some(f) => (Some(u16::from(f.code)), f.reason.to_string()),
                    None => (None, "closed by server".into()),
                };
            }
            _ => continue,
        };
        let Some(inner) = inner.upgrade() else { return };
        // Responses (`{"id":N,"result":…}` or `…"error":…}`) are decoded without building a
        // tree of the result: it stays text until the caller decodes it into its own type.
        if text.as_str().starts_with("{\"id\":")
            && let Ok(reply) = serde_json::from_str::<Reply<'_>>(text.as_str())
            && reply.progress.is_none()
            && (reply.result.is_some() || reply.error.is_some())
        {
            let Some(id) = reply.id else {
                tracing::warn!(
                    error = ?reply.error,
                    "server reported an error for an unidentifiable frame"
                );
                continue;
            };
            let result = match (reply.error, reply.result) {
                (Some(e), _) => Err(ClientError::Remote(e)),
                (None, Some(r)) => Ok(r.to_owned()),
                (None, None) => continue,
            };
            let pending = inner.routes().pending.remove(&id);
            match pending {
                Some(Pending::Call(reply)) => {
                    let _ = reply.try_send(result);
                }
                Some(Pending::Stream(tx)) => {
                    drop(inner);
                    let item = result.and_then(|r| decode(&r)).map(CallItem::Done);
                    let _ = tx.send(item).await;
                }
                Some(Pending::Subscribe { reply, items }) => {
                    if let Ok(raw) = &result
                        && let Ok(r) = serde_json::from_str::<wire::SubscribeResult>(raw.get())
                    {
                        inner.routes().subs.insert(r.subscription, items);
                    }
                    let _ = reply.try_send(result);
                }
                None => {}
            }
            continue;
        }
        match ServerMessage::decode(text.as_str()) {
            Ok(ServerMessage::Response(resp)) => {
                let Some(id) = resp.id else {
                    tracing::warn!(
                        ?resp,
                        "server reported an error for an unidentifiable frame"
                    );
                    continue;
                };
                let pending = inner.routes().pending.remove(&id);
                match pending {
                    Some(Pending::Call(reply)) => {
                        let _ = reply.try_send(outcome(resp.outcome).and_then(|v| raw(&v)));
                    }
                    Some(Pending::Stream(tx)) => {
                        drop(inner);
                        let item = outcome(resp.outcome).map(CallItem::Done);
                        let _ = tx.send(item).await;
                    }
                    Some(Pending::Subscribe { reply, items }) => {
                        let result = outcome(resp.outcome);
                        if let Ok(v) = &result
                            && let Some(sub) = v.get("subscription").and_then(Value::as_u64)
                        {
                            inner.routes().subs.insert(sub, items);
                        }
                        let _ = reply.try_send(result.and_then(|v| raw(&v)));
                    }
                    None => {}
                }
            }
            Ok(ServerMessage::Progress(p)) => {
                let tx = match inner.routes().pending.get(&p.id) {
                    Some(Pending::Stream(tx)) => Some(tx.clone()),
                    _ => None,
                };
                if let Some(tx) = tx {
                    drop(inner);
                    let _ = tx.send(Ok(CallItem::Progress(p.progress))).await;
                }
            }
            Ok(ServerMessage::Event(ev)) => {
                let tx = inner.routes().subs.get(&ev.subscription).cloned();
                if let Some(tx) = tx {
                    drop(inner);
                    let _ = tx.send(Ok(SubscriptionItem::Event(ev.event))).await;
                }
            }
            Ok(ServerMessage::Resync(r)) => {
                let tx = inner.routes().subs.get(&r.subscription).cloned();
                if let Some(tx) = tx {
                    drop(inner);
                    let _ = tx.send(Ok(SubscriptionItem::Resync(r.resync))).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "undecodable message from server"),
        }
    };
    closer.end = Some((code, reason));
}

/// Ends a connection's routes when its reader ends: see `read_loop`.
struct CloseRoutes {
    inner: std::sync::Weak<Inner>,
    /// The close code and reason, once the reader has seen the end of the connection.
    end: Option<(Option<u16>, String)>,
}

impl Drop for CloseRoutes {
    fn drop(&mut self) {
        let (code, reason) = self
            .end
            .take()
            .unwrap_or_else(|| (None, "the connection's reader has stopped".into()));
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        let mut routes = inner.routes();
        routes.closed = Some((code, reason.clone()));
        for (_, p) in routes.pending.drain() {
            let err = ClientError::Closed {
                code,
                reason: reason.clone(),
            };
            match p {
                Pending::Call(r) | Pending::Subscribe { reply: r, .. } => {
                    let _ = r.try_send(Err(err));
                }
                Pending::Stream(tx) => {
                    let _ = tx.try_send(Err(err));
                    tx.close();
                }
            }
        }
        for (_, tx) in routes.subs.drain() {
            let _ = tx.try_send(Err(ClientError::Closed {
                code,
                reason: reason.clone(),
            }));
            tx.close();
        }
    }
}

/// The WebSocket upgrade request for `opts`: its URL, the token as a bearer, the user agent.
pub(crate) fn upgrade_request(
    opts: &ConnectOptions,
) -> Result<async_tungstenite::tungstenite::handshake::client::Request, ClientError> {
    let mut request = opts
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| ClientError::Handshake(e.to_string()))?;
    let bearer = format!("Bearer {}", opts.token)
        .parse()
        .map_err(|_| ClientError::Handshake("token is not a valid header value".into()))?;
    request.headers_mut().insert("authorization", bearer);
    if let Some(agent) = opts.user_agent.as_deref().and_then(|a| a.parse().ok()) {
        request.headers_mut().insert("user-agent", agent);
    }
    Ok(request)
}

/// A 16 KiB read buffer (one TLS record) instead of 128 KiB: tungstenite zero-fills it up front,
/// 32 page faults in a CLI process that reads one answer.
pub(crate) fn ws_config(opts: &ConnectOptions) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .max_message_size(Some(opts.max_message_size))
        .max_frame_size(Some(opts.max_message_size))
}

/// A failed WebSocket upgrade as the client reports it: the server's refusals by HTTP status.
pub(crate) fn handshake_error(e: async_tungstenite::tungstenite::Error) -> ClientError {
    match e {
        async_tungstenite::tungstenite::Error::Http(resp) => refusal(
            resp.status().as_u16(),
            resp.headers()
                .get(crate::wire::CONNECTION_LIMIT_HEADER)
                .and_then(|v| v.to_str().ok()?.parse().ok()),
            resp.body().as_deref(),
        ),
        other => ClientError::Handshake(other.to_string()),
    }
}

/// The server's refusal of an upgrade by its HTTP status; a busy server's limit from its header
/// or else from its JSON body.
pub(crate) fn refusal(status: u16, limit: Option<u64>, body: Option<&[u8]>) -> ClientError {
    match status {
        401 => ClientError::Unauthorized,
        503 => ClientError::Busy {
            limit: limit.or_else(|| {
                body.and_then(|b| serde_json::from_slice::<Value>(b).ok())
                    .and_then(|v| v["limit"].as_u64())
            }),
        },
        status => ClientError::Refused { status },
    }
}

/// A response in a text frame from the server: its id and its result (as the server encoded it)
/// or error; `None` for anything else (progress, events, an undecodable frame).
pub(crate) fn reply_of(text: &str) -> Option<(Option<u64>, Result<Raw, ClientError>)> {
    // The result stays text until the caller decodes it into its own type (see `read_loop`).
    if text.starts_with("{\"id\":")
        && let Ok(reply) = serde_json::from_str::<Reply<'_>>(text)
        && reply.progress.is_none()
        && (reply.result.is_some() || reply.error.is_some())
    {
        return Some(match (reply.error, reply.result) {
            (Some(e), _) => (reply.id, Err(ClientError::Remote(e))),
            (None, Some(r)) => (reply.id, Ok(r.to_owned())),
            (None, None) => return None,
        });
    }
    match ServerMessage::decode(text) {
        Ok(ServerMessage::Response(resp)) => {
            Some((resp.id, outcome(resp.outcome).and_then(|v| raw(&v))))
        }
        _ => None,
    }
}

fn outcome(o: Outcome) -> Result<Value, ClientError> {
    match o {
        Outcome::Result(v) => Ok(v),
        Outcome::Error(e) => Err(ClientError::Remote(e)),
    }
}

/// A response or a progress message, its result left as text (see `read_loop`). A `null` result
/// or progress arrives as `None`: such frames take the general path.
#[derive(serde::Deserialize)]
struct Reply<'a> {
    id: Option<u64>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(default)]
    error: Option<WireError>,
    #[serde(borrow, default)]
    progress: Option<&'a RawValue>,
}

fn raw(v: &Value) -> Result<Raw, ClientError> {
    serde_json::value::to_raw_value(v).map_err(|e| ClientError::Decode(e.to_string()))
}

fn decode<T: serde::de::DeserializeOwned>(raw: &RawValue) -> Result<T, ClientError> {
    serde_json::from_str(raw.get()).map_err(|e| ClientError::Decode(e.to_string()))
}

/// A subscription that survives disconnects: it reconnects with backoff and resubscribes with
/// `since` = the last seq it yielded, so its consumer sees every event exactly once (or a
/// [`SubscriptionItem::Resync`] when the gap fell out of retention).
pub struct EventStream {
    source: Source,
    filter: EventFilter,
    last_seq: Option<u64>,
    current: Option<(Client, Subscription)>,
    reconnects: u64,
    max_backoff: Duration,
}

enum Source {
    Fixed(Box<ConnectOptions>),
    /// Re-read on every reconnect, so a restarted daemon on a new port is found again.
    Home(HarnessHome),
}

impl EventStream {
    /// `since: None` starts with live events; later reconnects resume from what was yielded.
    pub fn new(opts: ConnectOptions, filter: EventFilter, since: Option<u64>) -> Self {
        EventStream::with_source(Source::Fixed(Box::new(opts)), filter, since)
    }

    /// Like [`EventStream::new`], but finds the daemon through `home` (`daemon.json`, CA, token)
    /// on every (re)connect: what `harness events --follow` wants across daemon restarts.
    pub fn from_home(home: HarnessHome, filter: EventFilter, since: Option<u64>) -> Self {
        EventStream::with_source(Source::Home(home), filter, since)
    }

    fn with_source(source: Source, filter: EventFilter, since: Option<u64>) -> Self {
        EventStream {
            source,
            filter,
            last_seq: since,
            current: None,
            reconnects: 0,
            max_backoff: Duration::from_secs(2),
        }
    }

    /// The seq of the last item yielded (or the starting point).
    pub fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }

    /// How many times the stream had to reconnect.
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// The next item; only fails for errors a reconnect cannot fix (bad token, CA, URL).
    pub async fn next(&mut self) -> Result<SubscriptionItem, ClientError> {
        let mut backoff = Duration::from_millis(20);
        loop {
            if self.current.is_none() {
                match self.open().await {
                    Ok(()) => backoff = Duration::from_millis(20),
                    Err(e) if e.is_retryable() => {
                        tracing::debug!(error = %e, "event stream reconnect failed; retrying");
                        Timer::after(backoff).await;
                        backoff = (backoff * 2).min(self.max_backoff);
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            let Some((_, sub)) = self.current.as_mut() else {
                continue;
            };
            match sub.next().await {
                Ok(item) => {
                    self.last_seq = Some(item.seq());
                    return Ok(item);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "event stream interrupted; resuming");
                    self.current = None;
                    self.reconnects += 1;
                }
            }
        }
    }

    async fn open(&mut self) -> Result<(), ClientError> {
        let client = match &self.source {
            Source::Fixed(opts) => Client::connect_with(opts).await?,
            Source::Home(home) => {
                let home = home.clone();
                let opts = blocking::unblock(move || ConnectOptions::from_home(&home))
                    .await
                    // A daemon that is restarting may not have written daemon.json yet.
                    .map_err(|e| ClientError::Connect {
                        addr: "daemon.json".into(),
                        source: std::io::Error::other(e.to_string()),
                    })?;
                Client::connect_with(&opts).await?
            }
        };
        let sub = client.subscribe(self.filter.clone(), self.last_seq).await?;
        if self.last_seq.is_none() {
            // Started live: anything after this point must be resumed from here, not skipped.
            self.last_seq = Some(sub.start_seq());
        }
        self.current = Some((client, sub));
        Ok(())
    }
}
