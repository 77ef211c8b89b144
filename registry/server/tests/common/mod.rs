//! Shared fixtures: a temporary state directory with real credentials, a store and a real TLS server on
//! loopback.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use harness_protocol::{Client, ConnectOptions, Credentials, HarnessHome};
use harness_server::{Handler, NoMethods, ServerConfig, ServerHandle};
use harness_store::{Retention, Store};

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub home: HarnessHome,
    pub creds: Credentials,
    pub store: Store,
    pub server: ServerHandle,
}

impl Fixture {
    pub async fn start() -> Fixture {
        Fixture::with(
            ServerConfig::default(),
            Retention::default(),
            Arc::new(NoMethods),
        )
        .await
    }

    pub async fn with(
        config: ServerConfig,
        retention: Retention,
        handler: Arc<dyn Handler>,
    ) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = HarnessHome::new(dir.path().join("home"));
        let creds = home.ensure_credentials(&[]).expect("credentials");
        let store = Store::open(home.path(harness_protocol::home::REGISTRY_DB), retention)
            .await
            .expect("store");
        let server = harness_server::serve(config, &creds, store.clone(), handler)
            .await
            .expect("server");
        Fixture {
            dir,
            home,
            creds,
            store,
            server,
        }
    }

    pub fn options(&self) -> ConnectOptions {
        ConnectOptions::new(
            self.server.url(),
            self.creds.ca_pem.clone(),
            self.creds.token.clone(),
        )
    }

    pub async fn client(&self) -> Client {
        Client::connect_with(&self.options())
            .await
            .expect("connect")
    }
}

/// Runs `f` on the smol global executor with a generous deadline, so a hang fails instead of blocking CI.
pub fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    smol::block_on(async {
        futures_lite::future::or(f, async {
            smol::Timer::after(Duration::from_secs(300)).await;
            panic!("test did not finish within 300 s");
        })
        .await
    })
}

pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        smol::Timer::after(Duration::from_millis(2)).await;
    }
}

pub type RawWs =
    async_tungstenite::WebSocketStream<futures_rustls::client::TlsStream<async_net::TcpStream>>;

/// A TLS connection to the server, before any HTTP.
pub async fn tls_connect(
    addr: std::net::SocketAddr,
    ca_pem: &str,
) -> futures_rustls::client::TlsStream<async_net::TcpStream> {
    let config = harness_protocol::tls::client_config(ca_pem).expect("client config");
    let tcp = async_net::TcpStream::connect(addr).await.expect("tcp");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    futures_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .expect("tls")
}

/// A plain HTTPS GET; returns status and body.
pub async fn https_get(f: &Fixture, path: &str, token: Option<&str>) -> (u16, String) {
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    let mut tls = tls_connect(f.server.local_addr(), &f.creds.ca_pem).await;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await.expect("write");
    tls.flush().await.expect("flush");
    let mut buf = Vec::new();
    let _ = tls.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A raw authenticated WebSocket, for sending frames the typed client never would.
pub async fn raw_ws(f: &Fixture) -> RawWs {
    use async_tungstenite::tungstenite::client::IntoClientRequest;
    let tls = tls_connect(f.server.local_addr(), &f.creds.ca_pem).await;
    let mut req = f.server.url().into_client_request().expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", f.creds.token).parse().expect("header"),
    );
    async_tungstenite::client_async(req, tls)
        .await
        .expect("ws handshake")
        .0
}

/// The next text frame as JSON (skipping pings).
pub async fn next_json(ws: &mut RawWs) -> serde_json::Value {
    use futures_lite::StreamExt;
    loop {
        match ws.next().await.expect("frame").expect("ok frame") {
            async_tungstenite::tungstenite::Message::Text(t) => {
                return serde_json::from_str(t.as_str()).expect("json");
            }
            async_tungstenite::tungstenite::Message::Close(c) => panic!("closed: {c:?}"),
            _ => continue,
        }
    }
}

/// Reads until the server closes; returns the close code.
pub async fn close_code(ws: &mut RawWs) -> Option<u16> {
    use futures_lite::StreamExt;
    while let Some(frame) = ws.next().await {
        match frame {
            Ok(async_tungstenite::tungstenite::Message::Close(c)) => {
                return c.map(|c| u16::from(c.code));
            }
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
    None
}

pub fn notice(i: u64) -> harness_store::NewEvent {
    harness_store::NewEvent {
        kind: harness_protocol::EventType::DaemonNotice,
        project: None,
        service: None,
        data: serde_json::json!({ "i": i }),
    }
}
