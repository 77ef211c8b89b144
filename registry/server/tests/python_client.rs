//! A real third-party client: tests/clients/python/harness_events.py (PyPI `websockets`) connects
//! with the pinned CA and the token, subscribes, and prints events as JSON lines.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::{Fixture, notice, run};
use harness_protocol::{DaemonInfo, Location, ServiceEntry, ServiceKey};

fn script_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/python")
}

/// The test command installs the client's requirements; do it here too when they are missing so the
/// test never silently skips.
fn ensure_websockets() {
    let has = || {
        Command::new("python3")
            .args(["-c", "import websockets.asyncio.client"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has() {
        let req = script_dir().join("requirements.txt");
        let _ = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "-r"])
            .arg(&req)
            .status();
    }
    assert!(
        has(),
        "python3 with the `websockets` package (>= 13) is required: pip install -r {}",
        script_dir().join("requirements.txt").display()
    );
}

#[test]
fn python_websockets_client_replays_and_follows_live_events() {
    ensure_websockets();
    run(async {
        let f = Fixture::start().await;
        f.home
            .write_daemon_info(&DaemonInfo {
                url: f.server.url(),
                pid: std::process::id(),
            })
            .expect("daemon.json");
        let key = ServiceKey::new("demo", "api").expect("key");
        f.store
            .register(ServiceEntry::new(key.clone(), Location::Local))
            .await
            .expect("register");
        f.store
            .transition(&key, harness_protocol::ServiceState::Starting)
            .await
            .expect("starting");
        f.store
            .emit((0..8).map(notice).collect())
            .await
            .expect("emit");

        let mut child = Command::new("python3")
            .arg(script_dir().join("harness_events.py"))
            .arg("--home")
            .arg(f.home.root())
            .args(["--since", "0", "--count", "15"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn python3");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = async_channel::unbounded::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send_blocking(line).is_err() {
                    break;
                }
            }
        });
        let mut lines = Vec::new();
        for _ in 0..10 {
            lines.push(rx.recv().await.expect("replayed line"));
        }
        // Now live events.
        f.store
            .transition(&key, harness_protocol::ServiceState::Running)
            .await
            .expect("running");
        f.store
            .emit((0..4).map(notice).collect())
            .await
            .expect("emit");
        while let Ok(line) = rx.recv().await {
            lines.push(line);
        }
        let status = blocking::unblock(move || child.wait_with_output())
            .await
            .expect("wait");
        reader.join().expect("reader");
        assert!(
            status.status.success(),
            "python client failed: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        let events: Vec<serde_json::Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect();
        let seqs: Vec<u64> = events
            .iter()
            .map(|e| e["seq"].as_u64().expect("seq"))
            .collect();
        assert_eq!(seqs, (1..=15).collect::<Vec<_>>());
        assert_eq!(events[0]["type"], "service.registered");
        assert_eq!(events[1]["type"], "service.state");
        assert_eq!(events[10]["type"], "service.state");
        assert_eq!(events[10]["data"]["to"]["kind"], "running");
        assert_eq!(events[14]["type"], "daemon.notice");
    });
}

#[test]
fn python_client_with_a_wrong_token_is_refused() {
    ensure_websockets();
    run(async {
        let f = Fixture::start().await;
        let other = tempfile::tempdir().expect("tempdir");
        std::fs::copy(f.home.path("ca.pem"), other.path().join("ca.pem")).expect("copy CA");
        std::fs::write(other.path().join("token"), "0".repeat(64)).expect("token");
        let url = f.server.url();
        let dir = other.path().to_path_buf();
        let out = blocking::unblock(move || {
            Command::new("python3")
                .arg(script_dir().join("harness_events.py"))
                .arg("--home")
                .arg(&dir)
                .args(["--url", &url, "--count", "1"])
                .output()
        })
        .await
        .expect("run python3");
        assert_eq!(
            out.status.code(),
            Some(3),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("HTTP 401"));
    });
}
