//! Authentication and TLS pinning on a real loopback server, and the modes of the secret files.

mod common;

use common::{Fixture, run};
use harness_protocol::{Client, ClientError, HarnessHome};

#[test]
fn right_token_and_pinned_ca_are_accepted() {
    run(async {
        let f = Fixture::start().await;
        let client = f.client().await;
        let hello = client.hello().await.expect("hello");
        assert_eq!(hello.protocol, harness_protocol::wire::PROTOCOL_VERSION);
    });
}

#[test]
fn missing_and_wrong_tokens_are_refused_with_401() {
    run(async {
        let f = Fixture::start().await;
        let url = f.server.url();
        let err = Client::connect(&url, &f.creds.ca_pem, "")
            .await
            .err()
            .expect("refused");
        assert!(
            matches!(err, ClientError::Unauthorized | ClientError::Handshake(_)),
            "{err:?}"
        );
        let wrong = "0".repeat(f.creds.token.len());
        let err = Client::connect(&url, &f.creds.ca_pem, &wrong)
            .await
            .err()
            .expect("refused");
        assert!(matches!(err, ClientError::Unauthorized), "{err:?}");
        let err = Client::connect(&url, &f.creds.ca_pem, "short")
            .await
            .err()
            .expect("refused");
        assert!(matches!(err, ClientError::Unauthorized), "{err:?}");
        assert!(!err.is_retryable());
        // The server is still fine.
        f.client()
            .await
            .hello()
            .await
            .expect("hello after refusals");
    });
}

#[test]
fn a_client_that_does_not_pin_our_ca_is_refused() {
    run(async {
        let f = Fixture::start().await;
        let other = tempfile::tempdir().expect("tempdir");
        let other_creds = HarnessHome::new(other.path())
            .ensure_credentials(&[])
            .expect("creds");
        assert_ne!(other_creds.ca_pem, f.creds.ca_pem);
        let err = Client::connect(&f.server.url(), &other_creds.ca_pem, &f.creds.token)
            .await
            .err()
            .expect("TLS must fail");
        assert!(matches!(err, ClientError::Tls { .. }), "{err:?}");
    });
}

/// The local daemon's own certificate, read from the home beside the CA, is accepted as it is;
/// any other certificate is still verified against the pinned CA.
#[test]
fn a_pinned_server_certificate_is_accepted_and_any_other_is_checked_against_the_ca() {
    run(async {
        let f = Fixture::start().await;
        let other = tempfile::tempdir().expect("tempdir");
        let other_creds = HarnessHome::new(other.path())
            .ensure_credentials(&[])
            .expect("creds");
        assert_ne!(other_creds.server_cert_pem, f.creds.server_cert_pem);
        let with = |ca: &str, pinned: &str| {
            let mut opts = f.options();
            opts.ca_pem = ca.to_owned();
            opts.server_cert_pem = Some(pinned.to_owned());
            opts
        };
        // The right certificate pinned: accepted (its chain is not checked).
        let opts = with(&f.creds.ca_pem, &f.creds.server_cert_pem);
        let client = Client::connect_with(&opts).await.expect("pinned");
        client.hello().await.expect("hello");
        let opts = with(&other_creds.ca_pem, &f.creds.server_cert_pem);
        let client = Client::connect_with(&opts)
            .await
            .expect("pinned, CA not ours");
        client.hello().await.expect("hello");
        // Another certificate pinned: the server's is verified against the CA as without a pin.
        let opts = with(&f.creds.ca_pem, &other_creds.server_cert_pem);
        let client = Client::connect_with(&opts).await.expect("CA");
        client.hello().await.expect("hello");
        let opts = with(&other_creds.ca_pem, &other_creds.server_cert_pem);
        let err = Client::connect_with(&opts)
            .await
            .err()
            .expect("neither the pin nor the CA matches: TLS must fail");
        assert!(matches!(err, ClientError::Tls { .. }), "{err:?}");
        // What a client reads from the home is the daemon's certificate.
        let opts = harness_protocol::ConnectOptions::from_home(&{
            f.home
                .write_daemon_info(&harness_protocol::DaemonInfo {
                    url: f.server.url(),
                    pid: std::process::id(),
                })
                .expect("daemon.json");
            f.home.clone()
        })
        .expect("options from the home");
        assert_eq!(
            opts.server_cert_pem.as_ref(),
            Some(&f.creds.server_cert_pem)
        );
        let client = Client::connect_with(&opts).await.expect("from the home");
        client.hello().await.expect("hello");
    });
}

/// A client connected inside `harness_protocol::client::block_on` reads its connection on that
/// thread; once the call returns its reader is gone, and a later call fails instead of hanging.
#[test]
fn a_client_connected_in_block_on_works_there_and_fails_cleanly_after() {
    let f = run(Fixture::start());
    let opts = f.options();
    let client = std::thread::spawn(move || {
        harness_protocol::client::block_on(async {
            let client = Client::connect_with(&opts).await.expect("connect");
            for _ in 0..3 {
                client.hello().await.expect("hello");
            }
            client
        })
    })
    .join()
    .expect("thread");
    let err = run(client.hello()).expect_err("the reader has stopped");
    assert!(matches!(err, ClientError::Closed { .. }), "{err:?}");
    drop(f);
}

/// The blocking one-shot connection (`harness status`) keeps the client's guarantees: the pinned
/// certificate or the CA, the token, and the server's refusals and errors as the client reports them.
#[test]
fn a_one_shot_connection_pins_authenticates_and_reports_like_the_client() {
    use harness_protocol::{OneShot, method};
    let f = run(Fixture::start());
    let other = tempfile::tempdir().expect("tempdir");
    let other_creds = HarnessHome::new(other.path())
        .ensure_credentials(&[])
        .expect("creds");
    let mut opts = f.options();
    opts.server_cert_pem = Some(f.creds.server_cert_pem.clone());
    let mut conn = OneShot::connect(&opts).expect("pinned");
    for _ in 0..2 {
        let hello = conn
            .call::<method::Hello>(&harness_protocol::Empty {})
            .expect("hello");
        assert_eq!(hello.protocol, harness_protocol::wire::PROTOCOL_VERSION);
    }
    // A method this server does not serve: the server's error, as the client gives it.
    let err = conn
        .call::<method::Status>(&harness_protocol::wire::StatusParams { project: None })
        .expect_err("no such method here");
    match err {
        ClientError::Remote(w) => {
            assert_eq!(w.code, harness_protocol::ErrorCode::MethodNotFound, "{w:?}")
        }
        other => panic!("{other:?}"),
    }
    // Without the pin, the CA.
    OneShot::connect(&f.options())
        .expect("CA")
        .call::<method::Hello>(&harness_protocol::Empty {})
        .expect("hello");
    // Neither the pin nor the CA matches: TLS fails.
    let mut wrong = f.options();
    wrong.ca_pem = other_creds.ca_pem.clone();
    wrong.server_cert_pem = Some(other_creds.server_cert_pem.clone());
    let err = OneShot::connect(&wrong).expect_err("TLS must fail");
    assert!(matches!(err, ClientError::Tls { .. }), "{err:?}");
    // A wrong token: 401.
    let mut wrong = opts.clone();
    wrong.token = "0".repeat(f.creds.token.len());
    // The upgrade goes out with the first call, which reports the refusal.
    let mut refused = OneShot::connect(&wrong).expect("TLS holds");
    let err = refused
        .call::<method::Hello>(&harness_protocol::Empty {})
        .expect_err("refused");
    assert!(matches!(err, ClientError::Unauthorized), "{err:?}");
    assert!(!refused.upgraded());
    let err = refused
        .call::<method::Hello>(&harness_protocol::Empty {})
        .expect_err("not used again");
    assert!(matches!(err, ClientError::Closed { .. }), "{err:?}");
    // Nothing listens: the connection's error.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let mut gone = opts.clone();
    gone.url = format!("wss://127.0.0.1:{}/v1/ws", addr.port());
    let err = OneShot::connect(&gone).expect_err("nothing listens");
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
    drop(f);
}

#[cfg(unix)]
#[test]
fn secrets_are_0600_in_a_0700_dir_and_never_regenerated() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let home = HarnessHome::new(dir.path().join("state"));
    let first = home
        .ensure_credentials(&["harness.example".into()])
        .expect("create");
    let mode =
        |p: std::path::PathBuf| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(home.root().to_path_buf()), 0o700);
    for file in [
        harness_protocol::home::CA_CERT,
        harness_protocol::home::CA_KEY,
        harness_protocol::home::SERVER_CERT,
        harness_protocol::home::SERVER_KEY,
        harness_protocol::home::TOKEN,
    ] {
        assert_eq!(mode(home.path(file)), 0o600, "{file}");
    }
    assert_eq!(first.token.len(), 64);
    let again = home.ensure_credentials(&[]).expect("reload");
    assert_eq!(again.token, first.token);
    assert_eq!(again.ca_pem, first.ca_pem);
    assert_eq!(again.server_cert_pem, first.server_cert_pem);
    home.write_daemon_info(&harness_protocol::DaemonInfo {
        url: "wss://127.0.0.1:1/v1/ws".into(),
        pid: 1,
    })
    .expect("daemon info");
    assert_eq!(mode(home.path(harness_protocol::home::DAEMON_INFO)), 0o600);
}

#[test]
fn ipv6_loopback_and_port_zero_work() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback on this machine; nothing to test");
        return;
    }
    run(async {
        let config = harness_server::ServerConfig {
            listen: "[::1]:0".parse().expect("addr"),
            ..harness_server::ServerConfig::default()
        };
        let f = common::Fixture::with(
            config,
            harness_store::Retention::default(),
            std::sync::Arc::new(harness_server::NoMethods),
        )
        .await;
        assert_ne!(f.server.local_addr().port(), 0);
        assert!(
            f.server.url().starts_with("wss://[::1]:"),
            "{}",
            f.server.url()
        );
        f.client().await.hello().await.expect("hello over IPv6");
    });
}
