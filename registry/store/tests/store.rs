//! The persistent store: events per change, strictly increasing seqs, retention, format versioning,
//! the committed fixture, and kill -9 while writing.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::run;
use harness_protocol::event::StateChange;
use harness_protocol::{
    EventType, Health, HealthStatus, Location, ServiceEntry, ServiceKey, ServiceState,
};
use harness_store::{NewEvent, Retention, Store, StoreError};

fn key(name: &str) -> ServiceKey {
    ServiceKey::new("demo", name).expect("key")
}

async fn all_seqs(store: &Store) -> Vec<u64> {
    store
        .events_after(0, usize::MAX)
        .await
        .expect("events")
        .iter()
        .map(|e| e.seq)
        .collect()
}

#[test]
fn every_change_is_one_event_with_the_next_seq() {
    run(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path().join("r.redb"), Retention::default())
            .await
            .expect("open");
        let k = key("api");
        store
            .register(ServiceEntry::new(k.clone(), Location::Local))
            .await
            .expect("register");
        let dup = store
            .register(ServiceEntry::new(k.clone(), Location::Local))
            .await;
        assert!(matches!(dup, Err(StoreError::AlreadyExists(_))));
        store
            .transition(&k, ServiceState::Starting)
            .await
            .expect("starting");
        let illegal = store.transition(&k, ServiceState::Stopped).await;
        assert!(matches!(
            illegal,
            Err(StoreError::Model(
                harness_protocol::ModelError::IllegalTransition { .. }
            ))
        ));
        store
            .modify(&k, |e| {
                e.set_health(Health {
                    status: HealthStatus::Healthy,
                    ..Health::default()
                })
            })
            .await
            .expect("healthy");
        store
            .transition(&k, ServiceState::Running)
            .await
            .expect("running");
        // Same status again: stored, not an event.
        store
            .modify(&k, |e| {
                e.set_health(Health {
                    status: HealthStatus::Healthy,
                    last_output: Some("ok".into()),
                    ..Health::default()
                })
            })
            .await
            .expect("health details");
        store
            .modify(&k, |e| {
                e.runtime.pid = Some(1234);
                Ok(())
            })
            .await
            .expect("pid");
        let seqs = store
            .emit(vec![NewEvent {
                kind: EventType::DeploymentProgress,
                project: Some("demo".into()),
                service: None,
                data: serde_json::json!({"step": 1}),
            }])
            .await
            .expect("emit");
        assert_eq!(seqs, 6..7);
        store.deregister(&k).await.expect("deregister");
        assert!(store.get(&k).await.expect("get").is_none());

        let events = store.events_after(0, 100).await.expect("events");
        let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            vec![
                EventType::ServiceRegistered,
                EventType::ServiceState,
                EventType::ServiceHealth,
                EventType::ServiceState,
                EventType::ServiceUpdated,
                EventType::DeploymentProgress,
                EventType::ServiceDeregistered,
            ]
        );
        assert_eq!(
            events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (1..=7).collect::<Vec<_>>()
        );
        let change: StateChange =
            serde_json::from_value(events[3].data.clone()).expect("state change");
        assert_eq!(
            (change.from, change.to),
            (ServiceState::Starting, ServiceState::Running)
        );
        assert_eq!(change.entry.health.status, HealthStatus::Healthy);
        assert_eq!(store.last_seq(), 7);
        store.close().await.expect("close");

        // Reopen: everything is there and seq continues.
        let store = Store::open(dir.path().join("r.redb"), Retention::default())
            .await
            .expect("reopen");
        assert_eq!(store.last_seq(), 7);
        store
            .register(ServiceEntry::new(key("db"), Location::Local))
            .await
            .expect("register");
        assert_eq!(store.last_seq(), 8);
    });
}

/// A new store in a directory of its own (kept alive by the returned guard), and its path.
async fn fresh() -> (tempfile::TempDir, PathBuf, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("r.redb");
    let store = Store::open(&path, Retention::default())
        .await
        .expect("open");
    (dir, path, store)
}

/// `close` frees the file even while another clone of the store lives on (a task of a daemon
/// that has not ended yet): the next daemon opens it at once, and the clone fails cleanly.
#[test]
fn close_frees_the_file_while_clones_live_on() {
    run(async {
        let (_dir, path, store) = fresh().await;
        store
            .register(ServiceEntry::new(key("web"), Location::Local))
            .await
            .expect("register");
        let clone = store.clone();
        store.close().await.expect("close");
        let next = Store::open(&path, Retention::default())
            .await
            .expect("the file is free");
        assert_eq!(next.list(None).await.expect("list").len(), 1);
        assert!(matches!(
            clone.events_after(0, 10).await,
            Err(StoreError::Closed)
        ));
        assert!(matches!(
            clone
                .register(ServiceEntry::new(key("db"), Location::Local))
                .await,
            Err(StoreError::Closed)
        ));
    });
}

/// Every entry as the store sends it to `status`.
async fn encoded(store: &Store) -> Vec<String> {
    store
        .list_encoded(None)
        .await
        .expect("encoded")
        .iter()
        .map(|r| r.get().to_owned())
        .collect()
}

/// Reads come from the copy of the services table kept in memory: after every kind of change
/// (a failed one too) it holds what the file holds, as a fresh open of the file reads it.
#[test]
fn reads_after_writes_match_the_file() {
    run(async {
        let (_dir, path, store) = fresh().await;
        for name in ["web", "db", "api"] {
            store
                .register(ServiceEntry::new(key(name), Location::Local))
                .await
                .expect("register");
        }
        let other = ServiceKey::new("demo-2", "web").expect("key");
        store
            .register(ServiceEntry::new(other.clone(), Location::Local))
            .await
            .expect("register");
        store
            .transition(&key("db"), ServiceState::Starting)
            .await
            .expect("starting");
        assert!(
            store
                .transition(&key("db"), ServiceState::Stopped)
                .await
                .is_err(),
            "an illegal transition changes nothing"
        );
        store.deregister(&key("api")).await.expect("deregister");
        let names = |entries: Vec<ServiceEntry>| -> Vec<String> {
            entries
                .into_iter()
                .map(|e| format!("{}/{}", e.project, e.name))
                .collect()
        };
        assert_eq!(
            names(store.list(Some("demo")).await.expect("list")),
            ["demo/db", "demo/web"]
        );
        let db = store.get(&key("db")).await.expect("get").expect("db");
        assert_eq!(db.state, ServiceState::Starting);
        assert!(store.get(&key("api")).await.expect("get").is_none());
        let before = encoded(&store).await;
        let all = store.list(None).await.expect("list");
        store.close().await.expect("close");
        let again = Store::open(&path, Retention::default())
            .await
            .expect("reopen");
        assert_eq!(again.list(None).await.expect("list"), all);
        let reread = encoded(&again).await;
        assert_eq!(reread, before);
        assert_eq!(
            names(all),
            ["demo-2/web", "demo/db", "demo/web"],
            "key order, as the file keeps them"
        );
    });
}

#[test]
fn concurrent_writers_share_commits_and_get_distinct_contiguous_seqs() {
    run(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path().join("r.redb"), Retention::default())
            .await
            .expect("open");
        let tasks: Vec<_> = (0..2000)
            .map(|i| {
                let store = store.clone();
                smol::spawn(async move {
                    store
                        .emit(vec![NewEvent {
                            kind: EventType::DaemonNotice,
                            project: None,
                            service: None,
                            data: serde_json::json!({ "i": i }),
                        }])
                        .await
                        .expect("emit")
                        .start
                })
            })
            .collect();
        let mut seqs = Vec::new();
        for t in tasks {
            seqs.push(t.await);
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=2000).collect::<Vec<_>>());
        assert_eq!(all_seqs(&store).await, seqs);
    });
}

#[test]
fn retention_prunes_by_count_and_by_age() {
    run(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let retention = Retention {
            max_events: 100,
            max_age: Duration::from_secs(3600),
            ..Retention::default()
        };
        let store = Store::open(dir.path().join("r.redb"), retention)
            .await
            .expect("open");
        for _ in 0..50 {
            let batch = (0..10)
                .map(|_| NewEvent {
                    kind: EventType::DaemonNotice,
                    project: None,
                    service: None,
                    data: serde_json::Value::Null,
                })
                .collect();
            store.emit(batch).await.expect("emit");
        }
        let seqs = all_seqs(&store).await;
        assert!(
            seqs.len() <= 110 && seqs.len() >= 100,
            "kept {}",
            seqs.len()
        );
        assert_eq!(*seqs.last().expect("some"), 500);
        let pruned = store.pruned_through().await.expect("pruned");
        assert_eq!(
            seqs[0],
            pruned + 1,
            "retained events start right after the pruned ones"
        );
        store.close().await.expect("close");

        let retention = Retention {
            max_events: 1000,
            max_age: Duration::from_millis(200),
            ..Retention::default()
        };
        let store = Store::open(dir.path().join("r.redb"), retention)
            .await
            .expect("reopen");
        smol::Timer::after(Duration::from_millis(1100)).await;
        // The age check runs at most once a second, on the next commit.
        store
            .emit(vec![NewEvent {
                kind: EventType::DaemonNotice,
                project: None,
                service: None,
                data: serde_json::Value::Null,
            }])
            .await
            .expect("emit");
        assert_eq!(all_seqs(&store).await, vec![501]);
        assert_eq!(store.pruned_through().await.expect("pruned"), 500);
    });
}

#[test]
fn a_newer_format_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("future.redb");
    {
        let db = redb::Database::create(&path).expect("create");
        let txn = db.begin_write().expect("txn");
        {
            let mut meta = txn
                .open_table(redb::TableDefinition::<&str, u64>::new("meta"))
                .expect("meta");
            meta.insert("format_version", harness_store::store::FORMAT_VERSION + 1)
                .expect("insert");
        }
        txn.commit().expect("commit");
    }
    run(async {
        let err = Store::open(&path, Retention::default())
            .await
            .expect_err("must refuse");
        assert!(matches!(err, StoreError::UnsupportedFormat { .. }), "{err}");
        assert!(err.to_string().contains("future.redb"), "{err}");
    });
}

fn fixture_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/registry-v1.redb")
}

/// Regenerates the committed fixture: `cargo test -p harness-store --test store -- --ignored write_fixture_v1`.
/// Only ever do this when adding a *new* format version, with a new file name.
#[test]
#[ignore = "writes tests/fixtures/registry-v1.redb"]
fn write_fixture_v1() {
    run(async {
        let path = fixture_path();
        let _ = std::fs::remove_file(&path);
        let store = Store::open(&path, Retention::default())
            .await
            .expect("open");
        let api = key("api");
        let mut entry = ServiceEntry::new(
            api.clone(),
            Location::Host {
                name: "edge".into(),
                address: "10.0.0.5".into(),
            },
        );
        entry.endpoints.push(harness_protocol::Endpoint {
            name: "http".into(),
            ip: "10.0.0.5".parse().expect("ip"),
            port: 8080,
        });
        store.register(entry).await.expect("register");
        store
            .transition(&api, ServiceState::Starting)
            .await
            .expect("starting");
        store
            .transition(&api, ServiceState::Running)
            .await
            .expect("running");
        let db = key("db");
        let entry = ServiceEntry::new(
            db.clone(),
            Location::Container {
                engine: "docker".into(),
                id: None,
                name: "db".into(),
            },
        );
        store.register(entry).await.expect("register");
        store
            .emit(vec![NewEvent {
                kind: EventType::DeploymentProgress,
                project: Some("demo".into()),
                service: None,
                data: serde_json::json!({"step": "done"}),
            }])
            .await
            .expect("emit");
        store.close().await.expect("close");
        let mut db = redb::Database::open(&path).expect("reopen");
        db.compact().expect("compact");
    });
}

#[test]
fn the_committed_v1_fixture_opens_and_continues() {
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("registry.redb");
    std::fs::copy(fixture_path(), &copy).expect("fixture is committed");
    run(async {
        let store = Store::open(&copy, Retention::default())
            .await
            .expect("open v1 fixture");
        assert_eq!(store.last_seq(), 5);
        let services = store.list(Some("demo")).await.expect("list");
        assert_eq!(
            services.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            vec!["api", "db"]
        );
        assert_eq!(services[0].state, ServiceState::Running);
        assert_eq!(services[0].endpoints[0].port, 8080);
        let events = store.events_after(0, 100).await.expect("events");
        assert_eq!(events.len(), 5);
        assert_eq!(events[4].kind, EventType::DeploymentProgress);
        store
            .transition(&key("api"), ServiceState::Stopping)
            .await
            .expect("transition");
        assert_eq!(store.last_seq(), 6);
    });
}

const CHILD_ENV: &str = "REGISTRY_CRASH_CHILD_DB";

/// Run only as the child of `kill_9_while_writing_never_corrupts_and_seq_continues`: writes as fast as
/// it can from many tasks and prints every acknowledged seq.
#[test]
#[ignore = "child process of the kill -9 test"]
fn crash_child() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    run(async move {
        let store = Store::open(&path, Retention::default())
            .await
            .expect("child open");
        let k = key("svc");
        if store.get(&k).await.expect("get").is_none() {
            store
                .register(ServiceEntry::new(k.clone(), Location::Local))
                .await
                .expect("register");
        }
        let (tx, rx) = async_channel::unbounded::<u64>();
        for w in 0..8u64 {
            let store = store.clone();
            let tx = tx.clone();
            smol::spawn(async move {
                for i in 0u64.. {
                    let ev = NewEvent {
                        kind: EventType::DaemonNotice,
                        project: None,
                        service: None,
                        data: serde_json::json!({ "w": w, "i": i, "pad": "x".repeat(200) }),
                    };
                    let seqs = store.emit(vec![ev]).await.expect("emit");
                    if tx.send(seqs.start).await.is_err() {
                        return;
                    }
                }
            })
            .detach();
        }
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        while let Ok(seq) = rx.recv().await {
            writeln!(out, "acked {seq}").expect("stdout");
            out.flush().expect("flush");
        }
    });
}

#[test]
fn kill_9_while_writing_never_corrupts_and_seq_continues() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("crash.redb");
    let exe = std::env::current_exe().expect("test binary");
    let mut previous_last = 0;
    for round in 0..5u64 {
        let mut child = Command::new(&exe)
            .args([
                "crash_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &db)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut acked = Vec::new();
        // Vary the instant of death from round to round.
        let target = 200 + round * 700;
        while (acked.len() as u64) < target {
            let line = lines.next().expect("child ended early").expect("read");
            if let Some(seq) = line.strip_prefix("acked ") {
                acked.push(seq.parse::<u64>().expect("seq"));
            }
        }
        child.kill().expect("kill -9"); // SIGKILL on unix
        child.wait().expect("reap");
        for line in lines.map_while(Result::ok) {
            if let Some(seq) = line.strip_prefix("acked ") {
                acked.push(seq.parse::<u64>().expect("seq"));
            }
        }
        run(async {
            let store = Store::open(&db, Retention::default())
                .await
                .expect("reopen after kill -9");
            let seqs = all_seqs(&store).await;
            let last = store.last_seq();
            assert_eq!(seqs.last().copied().unwrap_or(0), last);
            assert!(
                seqs.windows(2).all(|w| w[1] == w[0] + 1),
                "round {round}: seqs contiguous"
            );
            assert_eq!(seqs.first().copied(), Some(1));
            assert!(last > previous_last, "round {round}: progress");
            let max_acked = acked.iter().copied().max().expect("some acks");
            assert!(
                last >= max_acked,
                "round {round}: acknowledged seq {max_acked} lost (last {last})"
            );
            let next = store
                .emit(vec![NewEvent {
                    kind: EventType::DaemonNotice,
                    project: None,
                    service: None,
                    data: serde_json::Value::Null,
                }])
                .await
                .expect("write after reopen");
            assert_eq!(next.start, last + 1);
            previous_last = next.start;
            store.close().await.expect("close");
        });
    }
}
