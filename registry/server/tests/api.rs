//! The request/response side of the API over real TLS on loopback: registry methods, extra methods
//! from a handler, concurrency, limits, malformed input, heartbeats, and the plain HTTP endpoints.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_tungstenite::tungstenite::Message;
use common::{Fixture, close_code, https_get, next_json, raw_ws, run};
use harness_protocol::wire::{RegisterParams, UpdateParams};
use harness_protocol::{Client, ClientError, ErrorCode, Location, ServiceState, WireError};
use harness_server::{RequestContext, Router, ServerConfig};
use harness_store::Retention;
use serde_json::json;

fn remote_code(e: &ClientError) -> Option<ErrorCode> {
    match e {
        ClientError::Remote(w) => Some(w.code),
        _ => None,
    }
}

#[derive(serde::Deserialize)]
struct SleepParams {
    ms: u64,
}

async fn sleep(p: SleepParams, _ctx: RequestContext) -> Result<u64, WireError> {
    smol::Timer::after(Duration::from_millis(p.ms)).await;
    Ok(p.ms)
}

fn router() -> Arc<Router> {
    Arc::new(Router::new().route("test.sleep", sleep).route(
        "test.fail",
        |_: serde_json::Value, _ctx: RequestContext| async {
            Err::<(), _>(WireError::new(
                ErrorCode::Failed,
                "start of web failed: exit 1",
            ))
        },
    ))
}

#[test]
fn healthz_needs_no_token_metrics_does() {
    run(async {
        let f = Fixture::start().await;
        let (status, body) = https_get(&f, "/healthz", None).await;
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["status"], "ok");
        assert_eq!(https_get(&f, "/metrics", None).await.0, 401);
        assert_eq!(https_get(&f, "/metrics", Some("wrong")).await.0, 401);
        let (status, body) = https_get(&f, "/metrics", Some(&f.creds.token)).await;
        assert_eq!(status, 200);
        assert!(body.contains("harness_api_refused_auth_total 2"), "{body}");
        assert!(
            body.contains("# TYPE harness_registry_last_seq gauge"),
            "{body}"
        );
        assert_eq!(https_get(&f, "/nope", None).await.0, 404);
        // The WebSocket path without the upgrade but with a token: 426.
        assert_eq!(
            https_get(&f, harness_protocol::wire::WS_PATH, Some(&f.creds.token))
                .await
                .0,
            426
        );
        assert_eq!(
            https_get(&f, harness_protocol::wire::WS_PATH, None).await.0,
            401
        );
    });
}

#[test]
fn registry_methods_round_trip() {
    run(async {
        let f = Fixture::start().await;
        let c = f.client().await;
        let reg = RegisterParams {
            project: "demo".into(),
            name: "api".into(),
            location: Location::Local,
            endpoints: vec![],
            replace: false,
        };
        let entry = c.register_service(&reg).await.expect("register");
        assert_eq!(entry.state, ServiceState::Pending);
        let err = c.register_service(&reg).await.expect_err("duplicate");
        assert_eq!(remote_code(&err), Some(ErrorCode::AlreadyExists));
        let upd = |state| UpdateParams {
            project: "demo".into(),
            name: "api".into(),
            state: Some(state),
            ..UpdateParams::default()
        };
        c.update_service(&upd(ServiceState::Starting))
            .await
            .expect("starting");
        let err = c
            .update_service(&upd(ServiceState::Stopped))
            .await
            .expect_err("illegal");
        assert_eq!(remote_code(&err), Some(ErrorCode::IllegalTransition));
        let got = c.get_service("demo", "api").await.expect("get");
        assert_eq!(got.state, ServiceState::Starting);
        let list = c.list_services(Some("demo")).await.expect("list");
        assert_eq!(list.services.len(), 1);
        assert_eq!(list.seq, 2);
        let err = c.get_service("demo", "nope").await.expect_err("missing");
        assert_eq!(remote_code(&err), Some(ErrorCode::NotFound));
        let err = c.get_service("demo", "a/b").await.expect_err("bad name");
        assert_eq!(remote_code(&err), Some(ErrorCode::InvalidParams));
        c.deregister_service("demo", "api")
            .await
            .expect("deregister");
        let events = c
            .call::<harness_protocol::method::EventsList>(&harness_protocol::wire::EventsParams {
                since: 1,
                limit: None,
            })
            .await
            .expect("events");
        assert_eq!(
            events.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![2, 3]
        );
        // A wrong-typed param is named, with what was expected.
        let err = c
            .request("events.list", json!({"since": "soon"}))
            .await
            .expect_err("since is a number");
        assert_eq!(remote_code(&err), Some(ErrorCode::InvalidParams));
        assert!(
            err.to_string()
                .contains("since: invalid type: string \"soon\", expected u64"),
            "{err}"
        );
        let err = c
            .request("unsubscribe", json!({"subscription": [1]}))
            .await
            .expect_err("subscription is a number");
        assert_eq!(remote_code(&err), Some(ErrorCode::InvalidParams));
        assert!(
            err.to_string().contains("subscription: invalid type"),
            "{err}"
        );
    });
}

#[test]
fn extra_methods_come_from_the_handler() {
    run(async {
        let f = Fixture::with(ServerConfig::default(), Retention::default(), router()).await;
        let c = f.client().await;
        assert_eq!(
            c.request("test.sleep", json!({"ms": 1}))
                .await
                .expect("sleep"),
            json!(1)
        );
        let err = c
            .request("test.fail", json!(null))
            .await
            .expect_err("fails");
        assert_eq!(remote_code(&err), Some(ErrorCode::Failed));
        assert!(err.to_string().contains("exit 1"), "{err}");
        let err = c
            .request("test.sleep", json!({"ms": "x"}))
            .await
            .expect_err("bad params");
        assert_eq!(remote_code(&err), Some(ErrorCode::InvalidParams));
        assert!(err.to_string().contains("ms: invalid type"), "{err}");
        let err = c.request("nope", json!({})).await.expect_err("unknown");
        assert_eq!(remote_code(&err), Some(ErrorCode::MethodNotFound));
    });
}

/// A method registered by type: the client's `call::<M>` and the handler share `M`'s params and
/// result types, and a wrong-typed field is refused naming its path.
#[test]
fn typed_methods_round_trip_and_name_the_wrong_field() {
    use harness_protocol::method::{Health, Status};
    use harness_protocol::wire::{HealthParams, HealthResult, StatusParams, StatusResult};
    async fn status(p: StatusParams, ctx: RequestContext) -> Result<StatusResult, WireError> {
        let services = ctx.store.snapshot().await?.services;
        let services = services
            .into_iter()
            .filter(|e| p.project.as_deref().is_none_or(|want| e.project == want))
            .collect();
        Ok(StatusResult {
            services,
            resources: Vec::new(),
        })
    }
    async fn health(_p: HealthParams, _ctx: RequestContext) -> Result<HealthResult, WireError> {
        Ok(HealthResult {
            services: Vec::new(),
        })
    }
    run(async {
        let handler = Arc::new(
            Router::new()
                .method::<Status>(status)
                .method::<Health>(health),
        );
        let f = Fixture::with(ServerConfig::default(), Retention::default(), handler).await;
        let c = f.client().await;
        c.register_service(&RegisterParams {
            project: "p".into(),
            name: "api".into(),
            location: Location::Local,
            endpoints: Vec::new(),
            replace: false,
        })
        .await
        .expect("register");
        let all: StatusResult = c
            .call::<Status>(&StatusParams { project: None })
            .await
            .expect("status");
        assert_eq!(all.services.len(), 1);
        assert_eq!(all.services[0].name, "api");
        let none = c
            .call::<Status>(&StatusParams {
                project: Some("other".into()),
            })
            .await
            .expect("status");
        assert!(none.services.is_empty());
        let err = c
            .request("status", json!({"project": 5}))
            .await
            .expect_err("wrong type");
        assert_eq!(remote_code(&err), Some(ErrorCode::InvalidParams));
        assert!(
            err.to_string()
                .contains("project: invalid type: integer `5`"),
            "{err}"
        );
    });
}

#[test]
fn requests_on_one_connection_run_concurrently_and_answer_out_of_order() {
    run(async {
        let f = Fixture::with(ServerConfig::default(), Retention::default(), router()).await;
        let mut ws = raw_ws(&f).await;
        ws.send(Message::text(
            r#"{"id":1,"method":"test.sleep","params":{"ms":500}}"#,
        ))
        .await
        .expect("send");
        ws.send(Message::text(
            r#"{"id":2,"method":"test.sleep","params":{"ms":1}}"#,
        ))
        .await
        .expect("send");
        assert_eq!(next_json(&mut ws).await["id"], 2);
        assert_eq!(next_json(&mut ws).await["id"], 1);
        // And through the typed client from many tasks.
        let c = f.client().await;
        let tasks: Vec<_> = (0..50u64)
            .map(|i| {
                let c = c.clone();
                smol::spawn(async move { c.request("test.sleep", json!({"ms": 50 - i})).await })
            })
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.expect("reply"), json!(50 - i as u64));
        }
    });
}

#[test]
fn a_slow_request_times_out_with_an_error_response() {
    run(async {
        let config = ServerConfig {
            request_timeout: Duration::from_millis(100),
            ..ServerConfig::default()
        };
        let f = Fixture::with(config, Retention::default(), router()).await;
        let c = f.client().await;
        let err = c
            .request("test.sleep", json!({"ms": 2000}))
            .await
            .expect_err("timeout");
        assert_eq!(remote_code(&err), Some(ErrorCode::Timeout));
        c.hello().await.expect("connection still usable");
    });
}

#[test]
fn malformed_frames_get_errors_and_the_connection_stays_usable() {
    run(async {
        let f = Fixture::start().await;
        let mut ws = raw_ws(&f).await;
        let cases: [(&str, Option<u64>, &str); 6] = [
            ("{not json", None, "parse_error"),
            ("[1,2,3]", None, "invalid_request"),
            (r#"{"id":7}"#, Some(7), "invalid_request"),
            (r#"{"id":8,"method":42}"#, Some(8), "invalid_request"),
            (
                r#"{"id":9,"method":"no.such"}"#,
                Some(9),
                "method_not_found",
            ),
            (
                r#"{"id":10,"method":"service.get","params":{"project":1}}"#,
                Some(10),
                "invalid_params",
            ),
        ];
        for (frame, id, code) in cases {
            ws.send(Message::text(frame)).await.expect("send");
            let resp = next_json(&mut ws).await;
            assert_eq!(
                resp["id"],
                id.map(|i| json!(i)).unwrap_or(json!(null)),
                "{frame}"
            );
            assert_eq!(resp["error"]["code"], code, "{frame}: {resp}");
        }
        ws.send(Message::binary(vec![0u8, 1, 2]))
            .await
            .expect("send binary");
        let resp = next_json(&mut ws).await;
        assert_eq!(resp["error"]["code"], "invalid_request");
        ws.send(Message::text(r#"{"id":11,"method":"hello"}"#))
            .await
            .expect("send");
        let resp = next_json(&mut ws).await;
        assert_eq!(resp["id"], 11);
        assert_eq!(resp["result"]["protocol"], 1);
    });
}

#[test]
fn an_oversized_message_closes_only_that_connection() {
    run(async {
        let config = ServerConfig {
            max_message_size: 4096,
            ..ServerConfig::default()
        };
        let f = Fixture::with(
            config,
            Retention::default(),
            Arc::new(harness_server::NoMethods),
        )
        .await;
        let mut ws = raw_ws(&f).await;
        let big = format!(
            r#"{{"id":1,"method":"hello","params":"{}"}}"#,
            "x".repeat(10_000)
        );
        let _ = ws.send(Message::text(big)).await;
        assert_eq!(
            close_code(&mut ws).await,
            Some(harness_protocol::wire::close_codes::MESSAGE_TOO_BIG)
        );
        f.client().await.hello().await.expect("server still up");
    });
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, .. Default::default() })]
    /// Arbitrary bytes, as text or binary frames, never take the server down.
    #[test]
    fn arbitrary_frames_never_break_the_server(frames in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), 1..8)) {
        run(async {
            let f = shared_fixture().await;
            let mut ws = raw_ws(f).await;
            for bytes in &frames {
                let msg = match String::from_utf8(bytes.clone()) {
                    Ok(text) => Message::text(text),
                    Err(_) => Message::binary(bytes.clone()),
                };
                let _ = ws.send(msg).await;
            }
            let _ = ws.send(Message::text(r#"{"id":424242,"method":"hello"}"#)).await;
            loop {
                let v = next_json(&mut ws).await;
                if v["id"] == 424242 {
                    assert_eq!(v["result"]["protocol"], 1);
                    break;
                }
            }
        });
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, .. Default::default() })]
    /// Garbage instead of an HTTP request head (after TLS) gets a refusal or a closed socket, never
    /// a crash.
    #[test]
    fn arbitrary_request_heads_never_break_the_server(head in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2000), crlf in proptest::prelude::any::<bool>()) {
        run(async {
            use futures_lite::{AsyncReadExt, AsyncWriteExt};
            let f = shared_fixture().await;
            let mut tls = common::tls_connect(f.server.local_addr(), &f.creds.ca_pem).await;
            let _ = tls.write_all(&head).await;
            if crlf {
                let _ = tls.write_all(b"\r\n\r\n").await;
            }
            let _ = tls.flush().await;
            let mut buf = Vec::new();
            let _ = futures_lite::future::or(async { let _ = tls.read_to_end(&mut buf).await; }, async { smol::Timer::after(Duration::from_millis(200)).await; }).await;
            if !buf.is_empty() {
                assert!(buf.starts_with(b"HTTP/1.1 "), "{}", String::from_utf8_lossy(&buf));
            }
            let (status, _) = https_get(f, "/healthz", None).await;
            assert_eq!(status, 200);
        });
    }
}

/// One server for all proptest cases.
async fn shared_fixture() -> &'static Fixture {
    static F: async_lock::OnceCell<Fixture> = async_lock::OnceCell::new();
    F.get_or_init(Fixture::start).await
}

#[test]
fn connection_and_subscription_limits() {
    run(async {
        let config = ServerConfig {
            max_connections: 2,
            max_subscriptions_per_connection: 2,
            ..ServerConfig::default()
        };
        let f = Fixture::with(
            config,
            Retention::default(),
            Arc::new(harness_server::NoMethods),
        )
        .await;
        let a = f.client().await;
        let _b = f.client().await;
        let err = Client::connect_with(&f.options())
            .await
            .err()
            .expect("third refused");
        assert!(
            matches!(err, ClientError::Busy { limit: Some(2) }),
            "{err:?}"
        );
        assert!(
            err.to_string().starts_with("daemon busy: 2 connections"),
            "{err}"
        );
        // The one-shot connection (its upgrade sent with its first call) reports it alike.
        let opts = f.options();
        let err = blocking::unblock(move || {
            let mut conn = harness_protocol::OneShot::connect(&opts).expect("TLS holds");
            let err = conn
                .call::<harness_protocol::method::Hello>(&harness_protocol::Empty {})
                .expect_err("third refused");
            assert!(!conn.upgraded());
            err
        })
        .await;
        assert!(
            matches!(err, ClientError::Busy { limit: Some(2) }),
            "{err:?}"
        );
        let _s1 = a.subscribe(Default::default(), None).await.expect("sub 1");
        let _s2 = a.subscribe(Default::default(), None).await.expect("sub 2");
        let err = a
            .subscribe(Default::default(), None)
            .await
            .err()
            .expect("sub 3");
        assert_eq!(remote_code(&err), Some(ErrorCode::LimitExceeded));
        a.hello().await.expect("still usable");
    });
}

#[test]
fn heartbeats_close_silent_peers_and_keep_live_ones() {
    run(async {
        let config = ServerConfig {
            heartbeat_interval: Duration::from_millis(100),
            heartbeat_timeout: Duration::from_millis(1000),
            ..ServerConfig::default()
        };
        let f = Fixture::with(
            config,
            Retention::default(),
            Arc::new(harness_server::NoMethods),
        )
        .await;
        // A typed client answers pings while it reads, so it survives idle periods.
        let live = f.client().await;
        // A raw socket that never reads never answers pings: it is a dead peer.
        let _dead = raw_ws(&f).await;
        assert_eq!(f.server.connections(), 2);
        smol::Timer::after(Duration::from_millis(2500)).await;
        live.hello().await.expect("idle but live client kept");
        common::wait_until("the dead peer to be dropped", || {
            f.server.connections() == 1
        })
        .await;
    });
}

static DROPPED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

struct CountDrop;
impl Drop for CountDrop {
    fn drop(&mut self) {
        DROPPED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[derive(serde::Deserialize)]
struct FollowParams {
    lines: Option<u64>,
}

/// Streams a line every 20 ms; `lines: null` streams until cancelled.
async fn follow(p: FollowParams, ctx: RequestContext) -> Result<u64, WireError> {
    let _guard = CountDrop;
    let mut n = 0;
    while p.lines.is_none_or(|max| n < max) {
        ctx.progress(json!({ "line": n })).await?;
        n += 1;
        smol::Timer::after(Duration::from_millis(20)).await;
    }
    Ok(n)
}

#[test]
fn streaming_requests_send_progress_outlive_the_timeout_and_can_be_cancelled() {
    run(async {
        let config = ServerConfig {
            request_timeout: Duration::from_millis(300),
            ..ServerConfig::default()
        };
        let handler = Arc::new(Router::new().route("test.follow", follow));
        let f = Fixture::with(config, Retention::default(), handler).await;
        let c = f.client().await;
        // 30 lines take 600 ms: longer than the 300 ms timeout, which stops counting at the first line.
        let mut call = c
            .request_streaming("test.follow", json!({"lines": 30}))
            .await
            .expect("call");
        let mut lines = Vec::new();
        let done = loop {
            match call.next().await.expect("item").expect("ok") {
                harness_protocol::CallItem::Progress(v) => {
                    lines.push(v["line"].as_u64().expect("line"))
                }
                harness_protocol::CallItem::Done(v) => break v,
            }
        };
        assert_eq!(lines, (0..30).collect::<Vec<_>>());
        assert_eq!(done, json!(30));
        assert!(call.next().await.is_none());

        // Cancel an endless stream.
        let mut call = c
            .request_streaming("test.follow", json!({}))
            .await
            .expect("call");
        call.next().await.expect("first").expect("ok");
        assert!(call.cancel().await.expect("cancel"));
        let end = loop {
            match call.next().await.expect("item") {
                Ok(harness_protocol::CallItem::Progress(_)) => continue,
                Ok(harness_protocol::CallItem::Done(v)) => panic!("unexpected result {v}"),
                Err(e) => break e,
            }
        };
        assert_eq!(remote_code(&end), Some(ErrorCode::Cancelled), "{end:?}");
        common::wait_until("the cancelled handler to be dropped", || {
            DROPPED.load(std::sync::atomic::Ordering::SeqCst) >= 2
        })
        .await;

        // A disconnect drops the handler too.
        let c2 = f.client().await;
        let mut call = c2
            .request_streaming("test.follow", json!({}))
            .await
            .expect("call");
        call.next().await.expect("first").expect("ok");
        f.server.disconnect_all();
        common::wait_until("the orphaned handler to be dropped", || {
            DROPPED.load(std::sync::atomic::Ordering::SeqCst) >= 3
        })
        .await;
        let err = c.hello().await.expect_err("connection was dropped");
        assert!(err.is_retryable());
    });
}

#[test]
fn a_peer_that_sends_requests_but_never_reads_is_dropped() {
    run(async {
        let config = ServerConfig {
            heartbeat_interval: Duration::from_millis(50),
            heartbeat_timeout: Duration::from_millis(500),
            ..ServerConfig::default()
        };
        let f = Fixture::with(
            config,
            Retention::default(),
            Arc::new(harness_server::NoMethods),
        )
        .await;
        let ws = raw_ws(&f).await;
        let (mut sink, _stream) = ws.split();
        let flood = smol::spawn(async move {
            let frame = format!(
                r#"{{"id":1,"method":"hello","params":"{}"}}"#,
                "x".repeat(1000)
            );
            for _ in 0..200_000 {
                if sink.send(Message::text(frame.clone())).await.is_err() {
                    break;
                }
            }
        });
        common::wait_until("the flooding connection to be open", || {
            f.server.connections() == 1
        })
        .await;
        common::wait_until("the non-reading peer to be dropped", || {
            f.server.connections() == 0
        })
        .await;
        f.client()
            .await
            .hello()
            .await
            .expect("server still serves others");
        drop(flood);
    });
}

#[test]
fn absent_params_suit_unit_option_and_defaulted_structs() {
    run(async {
        let handler = Router::new()
            .route("test.unit", |_: (), _ctx: RequestContext| async {
                Ok::<_, WireError>("unit")
            })
            .route(
                "test.opt",
                |p: Option<u64>, _ctx: RequestContext| async move { Ok::<_, WireError>(p) },
            );
        let f = Fixture::with(
            ServerConfig::default(),
            Retention::default(),
            Arc::new(handler),
        )
        .await;
        let c = f.client().await;
        assert_eq!(
            c.request("test.unit", serde_json::Value::Null)
                .await
                .expect("unit"),
            json!("unit")
        );
        assert_eq!(
            c.request("test.opt", serde_json::Value::Null)
                .await
                .expect("none"),
            json!(null)
        );
        assert_eq!(
            c.request("test.opt", json!(3)).await.expect("some"),
            json!(3)
        );
        let list: harness_protocol::wire::ListServicesResult = serde_json::from_value(
            c.request("service.list", serde_json::Value::Null)
                .await
                .expect("defaulted struct"),
        )
        .expect("result");
        assert!(list.services.is_empty());
        let err = c
            .request("service.get", serde_json::Value::Null)
            .await
            .expect_err("required fields");
        assert_eq!(remote_code(&err), Some(ErrorCode::InvalidParams));
    });
}

static SILENT_DROPPED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

struct CountSilentDrop;
impl Drop for CountSilentDrop {
    fn drop(&mut self) {
        SILENT_DROPPED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// One progress message, then nothing until dropped (an exec whose program prints nothing more).
async fn silent(_p: serde_json::Value, ctx: RequestContext) -> Result<u64, WireError> {
    let _guard = CountSilentDrop;
    ctx.progress(json!({ "started": true })).await?;
    futures_lite::future::pending::<()>().await;
    Ok(0)
}

#[test]
fn a_closed_connection_drops_a_silent_streaming_handler() {
    run(async {
        let handler = Arc::new(Router::new().route("test.silent", silent));
        let f = Fixture::with(ServerConfig::default(), Retention::default(), handler).await;
        for close in [true, false] {
            let c = f.client().await;
            let mut call = c
                .request_streaming("test.silent", json!({}))
                .await
                .expect("call");
            call.next().await.expect("first").expect("ok");
            let before = SILENT_DROPPED.load(std::sync::atomic::Ordering::SeqCst);
            if close {
                // The client goes away cleanly (close frame)…
                c.close().await;
            } else {
                // …or the connection just breaks.
                f.server.disconnect_all();
            }
            common::wait_until("the silent handler to be dropped", || {
                SILENT_DROPPED.load(std::sync::atomic::Ordering::SeqCst) > before
            })
            .await;
        }
    });
}
