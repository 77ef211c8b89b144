//! Shared test helper (the server's tests have the full fixture with a TLS server).

use std::time::Duration;

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
