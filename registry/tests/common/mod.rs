//! Shared fixtures: a temporary state directory with real credentials, a store and a real TLS server on
//! loopback.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use registry::{
    Client, ConnectOptions, Credentials, Handler, HarnessHome, NoMethods, Retention, ServerConfig,
    ServerHandle, Store,
};

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
        let store = Store::open(home.path(registry::home::REGISTRY_DB), retention)
            .await
            .expect("store");
        let server = registry::serve(config, &creds, store.clone(), handler)
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
