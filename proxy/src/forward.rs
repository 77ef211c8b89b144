//! One client connection: hyper's HTTP/1 server in front, hyper's HTTP/1 client behind.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_net::TcpStream;
use futures_lite::{AsyncWriteExt as _, FutureExt as _};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;

use crate::io::Io;
use crate::{Lookup, Shared, host_name, page};

/// What the proxy answers with: the upstream's body as it streams, or a page of its own.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Upstream connections this client connection keeps open for its next requests.
type Pool = Mutex<Vec<(SocketAddr, SendRequest<Incoming>)>>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) async fn serve_connection(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let pool: Arc<Pool> = Arc::new(Mutex::new(Vec::new()));
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        let pool = pool.clone();
        async move { Ok::<_, Infallible>(handle(req, peer, &shared, &pool).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(Io::new(stream), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        // An upstream that went away mid-response ends up here too: the client's response ends.
        tracing::debug!(%peer, error = %e, "proxy: connection ended");
    }
}

async fn handle(
    mut req: Request<Incoming>,
    peer: SocketAddr,
    shared: &Shared,
    pool: &Pool,
) -> Response<ProxyBody> {
    let host_header = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let host = host_name(&host_header);
    let (service, upstreams) = match shared.routes.lookup(&host).await {
        Lookup::Ready { service, upstreams } => (service, upstreams),
        Lookup::Unavailable {
            service,
            reason,
            retry_after,
        } => return page::unavailable(&service, &reason, retry_after),
        Lookup::Unknown { routes } => return page::unknown(&host, shared.listen.port(), &routes),
    };
    let Some(upstream) = shared.pick(&service, &upstreams) else {
        return page::unavailable(&service, "it has no address", Some(1));
    };

    let upgrade = upgrade_protocol(req.headers());
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    prepare_request(
        &mut req,
        peer,
        &host_header,
        shared.listen.port(),
        upgrade.clone(),
    );

    let sent = if upgrade.is_some() {
        // An upgraded connection is used up by the tunnel: never from or back to the pool.
        match connect(upstream).await {
            Ok(mut sender) => sender.send_request(req).await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        }
    } else {
        send_pooled(req, upstream, pool).await
    };
    let mut resp = match sent {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%service, %upstream, error = %e, "proxy: upstream failed");
            return page::bad_gateway(&service, upstream, &e);
        }
    };

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_upgrade) = client_upgrade
    {
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        smol::spawn(async move {
            match futures_lite::future::zip(client_upgrade, upstream_upgrade).await {
                (Ok(client), Ok(upstream)) => tunnel(client, upstream).await,
                (c, u) => tracing::debug!(
                    client = ?c.err(), upstream = ?u.err(),
                    "proxy: upgrade did not complete"
                ),
            }
        })
        .detach();
    } else {
        strip_hop_by_hop(resp.headers_mut());
    }
    resp.map(BodyExt::boxed)
}

/// Sends on a kept connection to `upstream` when one is free, else on a new one; a kept
/// connection that the upstream closed meanwhile gives the request back and a new one is made.
async fn send_pooled(
    req: Request<Incoming>,
    upstream: SocketAddr,
    pool: &Pool,
) -> Result<Response<Incoming>, String> {
    let mut req = req;
    let kept = {
        let mut p = pool.lock().unwrap_or_else(|p| p.into_inner());
        p.retain(|(_, s)| !s.is_closed());
        p.iter()
            .position(|(a, _)| *a == upstream)
            .map(|i| p.swap_remove(i).1)
    };
    if let Some(mut sender) = kept
        && sender.ready().await.is_ok()
    {
        match sender.try_send_request(req).await {
            Ok(resp) => {
                give_back(pool, upstream, sender);
                return Ok(resp);
            }
            Err(mut e) => match e.take_message() {
                Some(r) => req = r,
                None => return Err(e.into_error().to_string()),
            },
        }
    }
    let mut sender = connect(upstream).await?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    give_back(pool, upstream, sender);
    Ok(resp)
}

fn give_back(pool: &Pool, upstream: SocketAddr, sender: SendRequest<Incoming>) {
    pool.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((upstream, sender));
}

async fn connect(upstream: SocketAddr) -> Result<SendRequest<Incoming>, String> {
    let stream = TcpStream::connect(upstream)
        .or(async {
            async_io::Timer::after(CONNECT_TIMEOUT).await;
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no answer in 5 s",
            ))
        })
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(Io::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    smol::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(%upstream, error = %e, "proxy: upstream connection ended");
        }
    })
    .detach();
    Ok(sender)
}

/// Copies both ways between the client and the upstream until both sides are done.
async fn tunnel(client: hyper::upgrade::Upgraded, upstream: hyper::upgrade::Upgraded) {
    let (Ok(c), Ok(u)) = (client.downcast::<Io>(), upstream.downcast::<Io>()) else {
        tracing::warn!("proxy: an upgraded connection is not a TCP stream");
        return;
    };
    let (client, upstream) = (c.io.into_stream(), u.io.into_stream());
    let up = pipe(c.read_buf, client.clone(), upstream.clone());
    let down = pipe(u.read_buf, upstream, client);
    futures_lite::future::zip(up, down).await;
}

/// Writes what hyper had already read, then copies `from` to `to`; ends `to`'s writing side at
/// the end.
async fn pipe(early: Bytes, from: TcpStream, mut to: TcpStream) {
    if !early.is_empty() && to.write_all(&early).await.is_err() {
        return;
    }
    let _ = futures_lite::io::copy(from, &mut to).await;
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// `Upgrade:` of a request that asks to switch protocols (`Connection: upgrade`).
fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Headers meant for one connection only (RFC 9110 7.6.1), and those `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for h in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(h);
    }
}

fn prepare_request(
    req: &mut Request<Incoming>,
    peer: SocketAddr,
    host_header: &str,
    listen_port: u16,
    upgrade: Option<HeaderValue>,
) {
    // A client that talks to us as to a forward proxy sends the absolute form.
    if req.uri().authority().is_some() {
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        if let Ok(uri) = path.parse::<Uri>() {
            *req.uri_mut() = uri;
        }
    }
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
    if !headers.contains_key(header::HOST)
        && let Ok(v) = HeaderValue::from_str(host_header)
    {
        headers.insert(header::HOST, v);
    }
    let xff = HeaderName::from_static("x-forwarded-for");
    let ip = peer.ip().to_string();
    let forwarded_for = match headers.get(&xff).and_then(|v| v.to_str().ok()) {
        Some(before) => format!("{before}, {ip}"),
        None => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(xff, v);
    }
    if let Ok(v) = HeaderValue::from_str(host_header) {
        headers.insert(HeaderName::from_static("x-forwarded-host"), v);
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );
    headers.insert(
        HeaderName::from_static("x-forwarded-port"),
        HeaderValue::from(listen_port),
    );
}

/// A page of the proxy's own.
pub(crate) fn own(
    status: StatusCode,
    content_type: &'static str,
    body: String,
) -> Response<ProxyBody> {
    let mut resp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
