//! The proxy with real servers behind it: a WebSocket echo through an `Upgrade:`, round-robin
//! over two upstreams, large bodies both ways on a kept connection, pipelined requests and requests
//! arriving in pieces, `503 Retry-After` for a starting service.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use async_net::TcpListener;
use async_tungstenite::tungstenite::Message;
use futures_lite::{AsyncReadExt as _, AsyncWriteExt as _};
use futures_util::StreamExt as _;
use proxy::{BoxFuture, Lookup, Proxy, Routes};

struct Fixed(Mutex<Lookup>);

impl Routes for Fixed {
    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Lookup> {
        let l = if host == "echo.localhost" {
            self.0.lock().unwrap().clone()
        } else {
            Lookup::Unknown { routes: Vec::new() }
        };
        Box::pin(async move { l })
    }
}

/// A WebSocket server that echoes every message, prefixed with its own name.
async fn ws_echo(name: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    smol::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            smol::spawn(async move {
                let Ok(mut ws) = async_tungstenite::accept_async(s).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if let Message::Text(t) = m {
                        let _ = ws.send(Message::text(format!("{name}:{t}"))).await;
                    }
                }
            })
            .detach();
        }
    })
    .detach();
    addr
}

async fn proxy_with(lookup: Lookup) -> Proxy {
    let routes = Arc::new(Fixed(Mutex::new(lookup)));
    Proxy::bind("127.0.0.1:0".parse().unwrap(), routes)
        .await
        .unwrap()
}

async fn ws_round_trip(proxy: SocketAddr, text: &str) -> String {
    let s = async_net::TcpStream::connect(proxy).await.unwrap();
    let (mut ws, resp) = async_tungstenite::client_async("ws://echo.localhost/socket", s)
        .await
        .expect("handshake through the proxy");
    assert_eq!(resp.status(), 101);
    ws.send(Message::text(text)).await.unwrap();
    let answer = match ws.next().await {
        Some(Ok(Message::Text(t))) => t.to_string(),
        other => panic!("no echo: {other:?}"),
    };
    ws.close(None).await.unwrap();
    answer
}

#[test]
fn websocket_echo_passes_through_and_upstreams_take_turns() {
    smol::block_on(async {
        let (a, b) = (ws_echo("a").await, ws_echo("b").await);
        let p = proxy_with(Lookup::Ready {
            service: "echo".into(),
            upstreams: vec![a, b],
        })
        .await;
        let first = ws_round_trip(p.local_addr(), "hello").await;
        let second = ws_round_trip(p.local_addr(), "hello").await;
        let mut both = [first, second];
        both.sort();
        assert_eq!(both, ["a:hello".to_owned(), "b:hello".to_owned()]);
        // A large message crosses the tunnel whole.
        let big = "x".repeat(1 << 20);
        assert_eq!(
            ws_round_trip(p.local_addr(), &big).await.len(),
            big.len() + 2
        );
    });
}

#[test]
fn a_starting_service_answers_503_with_retry_after() {
    smol::block_on(async {
        let p = proxy_with(Lookup::Unavailable {
            service: "echo".into(),
            reason: "it is starting".into(),
            retry_after: Some(1),
        })
        .await;
        let mut s = async_net::TcpStream::connect(p.local_addr()).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: echo.localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).await.unwrap();
        assert!(text.starts_with("HTTP/1.1 503"), "{text}");
        assert!(
            text.to_ascii_lowercase().contains("retry-after: 1"),
            "{text}"
        );
        assert!(
            text.contains("echo is not available: it is starting"),
            "{text}"
        );
    });
}

/// An HTTP server that answers each request with its body, whole; counts the connections it took.
async fn http_echo() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use http_body_util::{BodyExt as _, Full};
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = conns.clone();
    smol::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            smol::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let body = req.into_body().collect().await?.to_bytes();
                        Ok::<_, hyper::Error>(hyper::Response::new(Full::new(body)))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(smol_hyper::rt::FuturesIo::new(s), svc)
                    .await;
            })
            .detach();
        }
    })
    .detach();
    (addr, conns)
}

#[test]
fn large_bodies_cross_whole_both_ways_on_a_kept_connection() {
    use http_body_util::{BodyExt as _, Full};
    smol::block_on(async {
        let (up, upstream_conns) = http_echo().await;
        let p = proxy_with(Lookup::Ready {
            service: "echo".into(),
            upstreams: vec![up],
        })
        .await;
        let s = async_net::TcpStream::connect(p.local_addr()).await.unwrap();
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(smol_hyper::rt::FuturesIo::new(s))
                .await
                .unwrap();
        let conn = smol::spawn(conn);
        // More than the proxy reads per `recv` (16 KiB) and than hyper's first buffer, with a
        // pattern that shows bytes out of order; twice on one client connection, so the second
        // goes over the kept upstream connection.
        for len in [3 << 20, (1 << 20) + 7] {
            let body: Vec<u8> = (0..len).map(|i: usize| (i % 251) as u8).collect();
            let req = hyper::Request::post("/")
                .header("host", "echo.localhost")
                .body(Full::new(hyper::body::Bytes::from(body.clone())))
                .unwrap();
            send.ready().await.unwrap();
            let resp = send.send_request(req).await.unwrap();
            assert_eq!(resp.status(), 200);
            let got = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(got.len(), body.len());
            assert!(got == body, "the body came back changed");
        }
        assert_eq!(
            upstream_conns.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "the second request did not reuse the upstream connection"
        );
        drop(send);
        let _ = conn.await;
    });
}

/// Requests pipelined in one write, then one that arrives in pieces with pauses between them: the
/// proxy reads each piece when it comes (a short read makes it wait for the socket, not give up)
/// and answers all of them, in order.
#[test]
fn pipelined_requests_and_requests_in_pieces_are_all_answered_in_order() {
    use std::time::Duration;
    smol::block_on(async {
        let (up, _) = http_echo().await;
        let p = proxy_with(Lookup::Ready {
            service: "echo".into(),
            upstreams: vec![up],
        })
        .await;
        let mut s = async_net::TcpStream::connect(p.local_addr()).await.unwrap();
        let post = |body: &str| {
            format!(
                "POST / HTTP/1.1\r\nHost: echo.localhost\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        s.write_all(format!("{}{}", post("one"), post("two")).as_bytes())
            .await
            .unwrap();
        let pieces = [
            "POST / HTTP/1.1\r\nHost: echo.loc",
            "alhost\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
            "thr",
            "ee",
        ];
        for piece in pieces {
            async_io::Timer::after(Duration::from_millis(50)).await;
            s.write_all(piece.as_bytes()).await.unwrap();
        }
        let mut text = String::new();
        // A proxy that missed a piece would wait for it forever.
        futures_lite::FutureExt::or(s.read_to_string(&mut text), async {
            async_io::Timer::after(Duration::from_secs(10)).await;
            panic!("no complete answer in 10 s")
        })
        .await
        .unwrap();
        assert_eq!(text.matches("HTTP/1.1 200").count(), 3, "{text}");
        let (one, two, three) = (
            text.find("\r\n\r\none").expect("first answer"),
            text.find("\r\n\r\ntwo").expect("second answer"),
            text.find("\r\n\r\nthree").expect("third answer"),
        );
        assert!(one < two && two < three, "{text}");
    });
}
