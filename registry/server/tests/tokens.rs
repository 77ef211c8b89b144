//! Named tokens with scopes (ADR 0037) over real TLS on loopback: what each scope may call, the
//! `forbidden` error naming the needed scope, revocation closing open connections, expiry, and
//! secrets that are stored only hashed.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Fixture, run};
use harness_protocol::admin::{Scope, TokenCreateParams, TokenRevokeParams};
use harness_protocol::method::{TokenCreate, TokenList, TokenRevoke};
use harness_protocol::{Client, ClientError, Empty, ErrorCode, EventFilter, WireError};
use harness_server::{RequestContext, Router, ServerConfig};
use harness_store::Retention;
use serde_json::{Value, json};

/// Stand-ins for the daemon's methods: the scope check goes by method name.
fn router() -> Arc<Router> {
    let ok =
        |_: Value, ctx: RequestContext| async move { Ok::<_, WireError>(json!({"by": ctx.token})) };
    Arc::new(
        Router::new()
            .route("status", ok)
            .route("stop", ok)
            .route("exec", ok),
    )
}

async fn fixture() -> Fixture {
    Fixture::with(ServerConfig::default(), Retention::default(), router()).await
}

async fn create(owner: &Client, name: &str, scope: Scope, expires: Option<u64>) -> String {
    owner
        .call::<TokenCreate>(&TokenCreateParams {
            name: name.into(),
            scope,
            expires_in_secs: expires,
        })
        .await
        .expect("token.create")
        .secret
}

async fn connect_as(f: &Fixture, secret: &str) -> Result<Client, ClientError> {
    let mut opts = f.options();
    opts.token = secret.to_owned();
    Client::connect_with(&opts).await
}

#[track_caller]
fn forbidden(r: Result<Value, ClientError>, needs: &str) {
    match r {
        Err(ClientError::Remote(w)) => {
            assert_eq!(w.code, ErrorCode::Forbidden, "{w:?}");
            assert!(w.message.contains(&format!("scope {needs}")), "{w:?}");
            let data = w.data.expect("forbidden carries data");
            assert_eq!(data["required_scope"], needs, "{data}");
        }
        other => panic!("expected forbidden ({needs}), got {other:?}"),
    }
}

#[test]
fn each_scope_calls_what_it_may_and_is_told_which_scope_the_rest_needs() {
    run(async {
        let f = fixture().await;
        let owner = f.client().await;
        let read = create(&owner, "reader", Scope::Read, None).await;
        let operate = create(&owner, "ops", Scope::Operate, None).await;

        let r = connect_as(&f, &read).await.expect("read token connects");
        // Follows events and reads.
        let mut events = r
            .subscribe(EventFilter::default(), Some(0))
            .await
            .expect("subscribe");
        assert_eq!(
            r.request("status", json!({})).await.expect("status")["by"],
            "reader"
        );
        f.store
            .emit(vec![harness_store::NewEvent {
                kind: harness_protocol::EventType::DaemonNotice,
                project: None,
                service: None,
                data: json!({"message": "hi"}),
            }])
            .await
            .expect("emit");
        events
            .next()
            .await
            .expect("an event reaches the read token");
        forbidden(r.request("stop", json!({})).await, "operate");
        forbidden(r.request("exec", json!({})).await, "admin");
        forbidden(r.request("token.list", json!({})).await, "admin");
        forbidden(r.request("service.register", json!({})).await, "admin");

        let o = connect_as(&f, &operate)
            .await
            .expect("operate token connects");
        assert_eq!(
            o.request("stop", json!({})).await.expect("stop")["by"],
            "ops"
        );
        forbidden(o.request("exec", json!({})).await, "admin");

        // The owner may do everything, and the list never shows secrets.
        assert_eq!(
            owner.request("exec", json!({})).await.expect("exec")["by"],
            "owner"
        );
        let list = owner.call::<TokenList>(&Empty {}).await.expect("list");
        let names: Vec<&str> = list.tokens.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["ops", "reader"]);
        let text = serde_json::to_string(&list).expect("json");
        assert!(!text.contains(&read) && !text.contains(&operate), "{text}");

        // A name is taken once.
        let again = owner
            .call::<TokenCreate>(&TokenCreateParams {
                name: "reader".into(),
                scope: Scope::Admin,
                expires_in_secs: None,
            })
            .await;
        assert!(
            matches!(&again, Err(ClientError::Remote(w)) if w.code == ErrorCode::AlreadyExists),
            "{again:?}"
        );
    });
}

#[test]
fn a_revoked_token_is_refused_and_its_open_subscription_closed_within_a_second() {
    run(async {
        let f = fixture().await;
        let owner = f.client().await;
        let read = create(&owner, "watcher", Scope::Read, None).await;
        let r = connect_as(&f, &read).await.expect("connects");
        let mut events = r
            .subscribe(EventFilter::default(), None)
            .await
            .expect("subscribe");
        let revoked_at = Instant::now();
        let res = owner
            .call::<TokenRevoke>(&TokenRevokeParams {
                name: "watcher".into(),
            })
            .await
            .expect("revoke");
        assert_eq!(res.connections_closed, 1);
        let end = events.next().await;
        let took = revoked_at.elapsed();
        match end {
            Err(e) => assert_eq!(
                e.close_code(),
                Some(harness_protocol::wire::close_codes::TOKEN_REVOKED),
                "{e:?}"
            ),
            Ok(item) => panic!(
                "the subscription went on after revocation: {:?}",
                item.seq()
            ),
        }
        assert!(took < Duration::from_secs(1), "closed after {took:?}");
        assert!(
            matches!(connect_as(&f, &read).await, Err(ClientError::Unauthorized)),
            "a revoked token connects again"
        );
        // The owner's connection is untouched.
        owner
            .call::<TokenList>(&Empty {})
            .await
            .expect("owner still connected");
        let missing = owner
            .call::<TokenRevoke>(&TokenRevokeParams {
                name: "watcher".into(),
            })
            .await;
        assert!(
            matches!(&missing, Err(ClientError::Remote(w)) if w.code == ErrorCode::NotFound),
            "{missing:?}"
        );
    });
}

#[test]
fn an_expired_token_is_refused_and_its_connections_closed() {
    run(async {
        let f = fixture().await;
        let owner = f.client().await;
        let short = create(&owner, "short", Scope::Read, Some(1)).await;
        let c = connect_as(&f, &short)
            .await
            .expect("connects before expiry");
        let mut events = c
            .subscribe(EventFilter::default(), None)
            .await
            .expect("subscribe");
        let end = events.next().await;
        assert_eq!(
            end.err().and_then(|e| e.close_code()),
            Some(harness_protocol::wire::close_codes::TOKEN_REVOKED)
        );
        assert!(matches!(
            connect_as(&f, &short).await,
            Err(ClientError::Unauthorized)
        ));
        let list = owner.call::<TokenList>(&Empty {}).await.expect("list");
        assert!(list.tokens[0].expired, "{list:?}");
    });
}

#[test]
fn secrets_are_stored_only_hashed_and_tokens_survive_a_restart() {
    run(async {
        let f = fixture().await;
        let owner = f.client().await;
        let secret = create(&owner, "keeper", Scope::Operate, None).await;
        drop(owner);
        let stored = f.store.tokens().await.expect("tokens");
        assert_eq!(stored.len(), 1);
        let db = std::fs::read(f.home.path(harness_protocol::home::REGISTRY_DB)).expect("db");
        let hex_part = secret.trim_start_matches("hnt_");
        assert!(
            !db.windows(hex_part.len()).any(|w| w == hex_part.as_bytes()),
            "the secret is in the store file"
        );
        // A new server on the same store knows the token.
        let server =
            harness_server::serve(ServerConfig::default(), &f.creds, f.store.clone(), router())
                .await
                .expect("second server");
        let mut opts = f.options();
        opts.url = server.url();
        opts.token = secret;
        let c = Client::connect_with(&opts)
            .await
            .expect("token works after restart");
        assert_eq!(
            c.request("stop", json!({})).await.expect("stop")["by"],
            "keeper"
        );
    });
}
