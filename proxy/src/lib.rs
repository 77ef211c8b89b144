//! The one-port HTTP proxy of the development loop: `http://api.localhost:7080` reaches service
//! `api` wherever it runs, so nobody has to remember ports.
//!
//! The proxy knows nothing about services: it asks a [`Routes`] (the daemon's, from the registry)
//! what a `Host` maps to, and forwards the request there with hyper's HTTP/1 client and server on
//! smol's sockets (readiness-tracking adapter in `io.rs`):
//!
//! - keep-alive both ways: each client connection keeps its own upstream connections open;
//! - WebSocket and any other `Upgrade:` is passed through byte for byte once upstream agreed
//!   (`101 Switching Protocols`);
//! - bodies stream both ways as they come (server-sent events, long downloads); an upstream that
//!   goes away mid-response (a restart) ends that response, and the next request goes to the new
//!   instance;
//! - `X-Forwarded-For`, `-Host`, `-Proto` and `-Port` are set; the `Host` header is passed on;
//! - a route with several upstreams is served round-robin;
//! - a service that is starting answers `503` with `Retry-After`; an unknown host answers `404`
//!   with a small page that lists the routes.

mod forward;
mod io;
mod page;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use async_net::TcpListener;

pub use forward::ProxyBody;

/// What a `Host` leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Forward to one of `upstreams` (round-robin).
    Ready {
        service: String,
        upstreams: Vec<SocketAddr>,
    },
    /// The service exists but cannot take requests now: `503` with the reason, and
    /// `Retry-After: retry_after` seconds when it is on its way up.
    Unavailable {
        service: String,
        reason: String,
        retry_after: Option<u32>,
    },
    /// No such route: `404` with the list of routes.
    Unknown { routes: Vec<RouteInfo> },
}

/// One line of the unknown-host page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    /// The host name, e.g. `api.localhost` or `api.shop.localhost`.
    pub host: String,
    /// Where it leads (`127.0.0.1:8080`) or why it leads nowhere now.
    pub target: String,
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The routing table, asked once per request with the `Host` header's name (lower case, port
/// stripped).
pub trait Routes: Send + Sync + 'static {
    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Lookup>;
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A listening proxy; dropping it stops accepting (connections already open finish).
pub struct Proxy {
    addr: SocketAddr,
    _task: smol::Task<()>,
}

impl Proxy {
    /// Binds `addr` and serves until dropped.
    pub async fn bind(addr: SocketAddr, routes: Arc<dyn Routes>) -> Result<Proxy, ProxyError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ProxyError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| ProxyError::Bind { addr, source })?;
        let shared = Arc::new(Shared {
            routes,
            listen: local,
            turns: Mutex::new(HashMap::new()),
        });
        let task = smol::spawn(accept_loop(listener, shared));
        Ok(Proxy {
            addr: local,
            _task: task,
        })
    }

    /// The address it listens on (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

pub(crate) struct Shared {
    pub routes: Arc<dyn Routes>,
    pub listen: SocketAddr,
    /// Round-robin position per service.
    turns: Mutex<HashMap<String, usize>>,
}

impl Shared {
    /// The next upstream of `service` in turn.
    pub fn pick(&self, service: &str, upstreams: &[SocketAddr]) -> Option<SocketAddr> {
        if upstreams.len() <= 1 {
            return upstreams.first().copied();
        }
        let mut turns = self.turns.lock().unwrap_or_else(|p| p.into_inner());
        let turn = turns.entry(service.to_owned()).or_insert(0);
        let addr = upstreams[*turn % upstreams.len()];
        *turn = turn.wrapping_add(1);
        Some(addr)
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                smol::spawn(forward::serve_connection(stream, peer, shared.clone())).detach();
            }
            Err(e) => {
                // Out of file descriptors and the like: wait a little instead of spinning.
                tracing::warn!(error = %e, "proxy: accept failed");
                async_io::Timer::after(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// The name in a `Host` header: lower case, without the port, without a trailing dot.
pub fn host_name(header: &str) -> String {
    let h = header.trim();
    let name = if h.starts_with('[') {
        // [::1]:7080
        h.split(']').next().map(|s| &s[1..]).unwrap_or(h)
    } else {
        h.rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(h, |(name, _)| name)
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names() {
        assert_eq!(host_name("API.localhost:7080"), "api.localhost");
        assert_eq!(host_name("api.shop.localhost"), "api.shop.localhost");
        assert_eq!(host_name("api.localhost."), "api.localhost");
        assert_eq!(host_name("[::1]:7080"), "::1");
    }
}
