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
