//! Subscriptions over real TLS: replay then live without gap or duplicate, filters, resync, forced
//! disconnects with resume, and lagging subscribers.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Fixture, notice, run, wait_until};
use harness_protocol::{
    ClientError, EventFilter, EventStream, EventType, Location, ServiceEntry, ServiceKey,
    SubscriptionItem,
};
use harness_server::ServerConfig;
use harness_store::Retention;

async fn emit_n(f: &Fixture, from: u64, n: u64) {
    f.store
        .emit((from..from + n).map(notice).collect())
        .await
        .expect("emit");
}

async fn next(s: &mut harness_protocol::Subscription) -> (u64, String, String) {
    match s.next().await.expect("item") {
        SubscriptionItem::Event(e) => (
            e.seq,
            e.project.unwrap_or_default(),
            e.service.unwrap_or_default(),
        ),
        SubscriptionItem::Resync(_) => panic!("resync"),
    }
}

fn seq_of(item: SubscriptionItem) -> u64 {
    match item {
        SubscriptionItem::Event(e) => e.seq,
        SubscriptionItem::Resync(s) => panic!("unexpected resync at {}", s.seq),
    }
}

#[test]
fn replay_then_live_has_no_gap_and_no_duplicate_at_the_seam() {
    run(async {
        let f = Fixture::start().await;
        emit_n(&f, 0, 500).await;
        // A producer keeps writing while the subscription replays.
        let store = f.store.clone();
        let producer = smol::spawn(async move {
            for i in 0..200 {
                store.emit(vec![notice(i)]).await.expect("emit");
            }
        });
        let c = f.client().await;
        let mut sub = c
            .subscribe(EventFilter::default(), Some(100))
            .await
            .expect("subscribe");
        producer.await;
        let last = f.store.last_seq();
        assert_eq!(last, 700);
        let mut got = Vec::new();
        while got.last() != Some(&last) {
            got.push(seq_of(sub.next().await.expect("item")));
        }
        assert_eq!(got, (101..=700).collect::<Vec<_>>());
        // Live only: starts after the current seq.
        let mut live = c
            .subscribe(EventFilter::default(), None)
            .await
            .expect("live");
        assert_eq!(live.start_seq(), 700);
        emit_n(&f, 0, 1).await;
        assert_eq!(seq_of(live.next().await.expect("live item")), 701);
        assert_eq!(seq_of(sub.next().await.expect("item")), 701);
    });
}

#[test]
fn filters_select_types_services_and_project() {
    run(async {
        let f = Fixture::start().await;
        let c = f.client().await;
        let by_service = EventFilter {
            services: vec!["api".into()],
            ..EventFilter::default()
        };
        let by_type = EventFilter {
            types: vec![EventType::ServiceState],
            ..EventFilter::default()
        };
        let by_project = EventFilter {
            project: Some("other".into()),
            ..EventFilter::default()
        };
        let mut s1 = c.subscribe(by_service, Some(0)).await.expect("sub");
        let mut s2 = c.subscribe(by_type, Some(0)).await.expect("sub");
        let mut s3 = c.subscribe(by_project, Some(0)).await.expect("sub");
        for (project, name) in [("demo", "api"), ("demo", "db"), ("other", "api")] {
            let key = ServiceKey::new(project, name).expect("key");
            f.store
                .register(ServiceEntry::new(key.clone(), Location::Local))
                .await
                .expect("register");
            f.store
                .transition(&key, harness_protocol::ServiceState::Starting)
                .await
                .expect("transition");
        }
        emit_n(&f, 0, 1).await; // a notice: no service, no project
        let mut a = Vec::new();
        for _ in 0..4 {
            a.push(next(&mut s1).await);
        }
        assert_eq!(a.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 2, 5, 6]);
        let mut b = Vec::new();
        for _ in 0..3 {
            b.push(next(&mut s2).await.0);
        }
        assert_eq!(b, vec![2, 4, 6]);
        let mut d = Vec::new();
        for _ in 0..2 {
            d.push(next(&mut s3).await.0);
        }
        assert_eq!(d, vec![5, 6]);
    });
}

#[test]
fn since_older_than_retention_gets_an_explicit_resync_snapshot() {
    run(async {
        let retention = Retention {
            max_events: 50,
            max_age: Duration::from_secs(3600),
            ..Retention::default()
        };
        let f = Fixture::with(
            ServerConfig::default(),
            retention,
            Arc::new(harness_server::NoMethods),
        )
        .await;
        let key = ServiceKey::new("demo", "api").expect("key");
        f.store
            .register(ServiceEntry::new(key, Location::Local))
            .await
            .expect("register");
        for i in 0..20 {
            emit_n(&f, i * 10, 10).await;
        }
        let pruned = f.store.pruned_through().await.expect("pruned");
        assert!(pruned > 10, "retention pruned {pruned}");
        let c = f.client().await;
        let mut sub = c
            .subscribe(EventFilter::default(), Some(3))
            .await
            .expect("subscribe");
        let snapshot = match sub.next().await.expect("item") {
            SubscriptionItem::Resync(s) => s,
            other => panic!("expected resync, got {other:?}"),
        };
        assert_eq!(snapshot.seq, 201);
        assert_eq!(snapshot.services.len(), 1);
        emit_n(&f, 0, 1).await;
        assert_eq!(seq_of(sub.next().await.expect("live")), 202);
        // A since from the future (a replaced state dir) also resyncs instead of waiting silently.
        let mut sub = c
            .subscribe(EventFilter::default(), Some(10_000))
            .await
            .expect("subscribe");
        assert!(
            matches!(sub.next().await.expect("item"), SubscriptionItem::Resync(s) if s.seq == 202)
        );
        // Within retention: plain replay.
        let mut sub = c
            .subscribe(EventFilter::default(), Some(pruned))
            .await
            .expect("subscribe");
        assert_eq!(seq_of(sub.next().await.expect("item")), pruned + 1);
    });
}

#[test]
fn a_thousand_forced_disconnects_lose_and_duplicate_nothing() {
    run(async {
        let f = Fixture::start().await;
        emit_n(&f, 0, 10).await;
        let stop = Arc::new(AtomicBool::new(false));
        let producer = {
            let store = f.store.clone();
            let stop = stop.clone();
            smol::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    store
                        .emit(vec![notice(i), notice(i + 1)])
                        .await
                        .expect("emit");
                    i += 2;
                    smol::Timer::after(Duration::from_micros(200)).await;
                }
            })
        };
        let received = Arc::new(Mutex::new(Vec::<u64>::new()));
        let consumer = {
            let received = received.clone();
            let mut stream = EventStream::new(f.options(), EventFilter::default(), Some(0));
            smol::spawn(async move {
                loop {
                    let item = stream.next().await.expect("stream");
                    received.lock().expect("lock").push(seq_of(item));
                }
            })
        };
        let count = || received.lock().expect("lock").len();
        for _ in 0..1000 {
            let before = count();
            wait_until("events after reconnect", || count() > before).await;
            f.server.disconnect_all();
        }
        stop.store(true, Ordering::Relaxed);
        producer.await;
        let last = f.store.last_seq();
        wait_until("the consumer to catch up", || {
            received.lock().expect("lock").last() == Some(&last)
        })
        .await;
        drop(consumer);
        let got = received.lock().expect("lock").clone();
        let server: Vec<u64> = f
            .store
            .events_after(0, usize::MAX)
            .await
            .expect("events")
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(
            got.len(),
            server.len(),
            "received {} events, server has {}",
            got.len(),
            server.len()
        );
        assert_eq!(got, server, "the received seq list equals the server's");
        assert!(last > 1000);
    });
}

#[test]
fn a_lagging_subscriber_is_closed_with_4008_and_others_keep_receiving() {
    run(async {
        let config = ServerConfig {
            subscriber_queue: 200,
            ..ServerConfig::default()
        };
        let f = Fixture::with(
            config,
            Retention::default(),
            Arc::new(harness_server::NoMethods),
        )
        .await;
        let slow_client = f.client().await;
        let mut slow = slow_client
            .subscribe(EventFilter::default(), None)
            .await
            .expect("slow");
        let fast_client = f.client().await;
        let mut fast = fast_client
            .subscribe(EventFilter::default(), None)
            .await
            .expect("fast");
        let total = 20_000u64;
        let fast_count = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let fast_reader = {
            let fast_count = fast_count.clone();
            smol::spawn(async move {
                let mut n = 0;
                while n < total {
                    fast.next().await.expect("fast keeps receiving");
                    n += 1;
                    fast_count.store(n, Ordering::Relaxed);
                }
                n
            })
        };
        // Large events fill the socket buffers quickly; the slow client never reads meanwhile. The
        // producer waits for the fast reader, so only the slow one can fall behind.
        let pad = "x".repeat(2048);
        for chunk in 0..(total / 100) {
            let batch = (0..100)
                .map(|i| harness_store::NewEvent {
                    kind: EventType::DaemonNotice,
                    project: None,
                    service: None,
                    data: serde_json::json!({ "i": chunk * 100 + i, "pad": pad }),
                })
                .collect();
            f.store.emit(batch).await.expect("emit");
            let want = (chunk + 1) * 100;
            wait_until("the fast subscriber", || {
                fast_count.load(Ordering::Relaxed) >= want
            })
            .await;
        }
        assert_eq!(fast_reader.await, total);
        // Drain what was buffered before the cut; then the close code.
        let end = loop {
            match slow.next().await {
                Ok(_) => continue,
                Err(e) => break e,
            }
        };
        assert!(matches!(&end, ClientError::Closed { .. }), "{end:?}");
        assert_eq!(
            end.close_code(),
            Some(harness_protocol::wire::close_codes::LAGGING),
            "{end}"
        );
        // The store was never blocked, and a resume with since works.
        let mut again = f
            .client()
            .await
            .subscribe(EventFilter::default(), Some(total - 5))
            .await
            .expect("resume");
        assert_eq!(seq_of(again.next().await.expect("item")), total - 4);
    });
}

#[test]
fn unsubscribe_stops_the_stream() {
    run(async {
        let f = Fixture::start().await;
        let c = f.client().await;
        let sub = c
            .subscribe(EventFilter::default(), None)
            .await
            .expect("sub");
        sub.unsubscribe().await.expect("unsubscribe");
        let err = c
            .request("unsubscribe", serde_json::json!({"subscription": 999}))
            .await
            .expect_err("unknown");
        assert!(
            matches!(err, ClientError::Remote(ref w) if w.code == harness_protocol::ErrorCode::NotFound),
            "{err:?}"
        );
        // The server released the live queue (visible in /metrics).
        let mut released = false;
        for _ in 0..500 {
            let (_, body) = common::https_get(&f, "/metrics", Some(&f.creds.token)).await;
            if body.contains("harness_registry_live_subscribers 0")
                && body.contains("harness_api_subscriptions 0")
            {
                released = true;
                break;
            }
            smol::Timer::after(Duration::from_millis(10)).await;
        }
        assert!(released, "subscription still registered after unsubscribe");
    });
}

#[test]
fn an_event_stream_from_home_follows_a_restarted_daemon_to_its_new_port() {
    run(async {
        let mut f = Fixture::start().await;
        let info = |url: String| harness_protocol::DaemonInfo {
            url,
            pid: std::process::id(),
        };
        f.home
            .write_daemon_info(&info(f.server.url()))
            .expect("daemon.json");
        let mut stream = EventStream::from_home(f.home.clone(), EventFilter::default(), Some(0));
        emit_n(&f, 0, 3).await;
        for want in 1..=3 {
            assert_eq!(seq_of(stream.next().await.expect("item")), want);
        }
        // Restart the API on another port while events keep coming.
        let old_port = f.server.local_addr().port();
        let server = std::mem::replace(
            &mut f.server,
            harness_server::serve(
                ServerConfig::default(),
                &f.creds,
                f.store.clone(),
                Arc::new(harness_server::NoMethods),
            )
            .await
            .expect("second server"),
        );
        server.shutdown().await;
        assert_ne!(f.server.local_addr().port(), old_port);
        emit_n(&f, 0, 3).await;
        f.home
            .write_daemon_info(&info(f.server.url()))
            .expect("daemon.json");
        for want in 4..=6 {
            assert_eq!(seq_of(stream.next().await.expect("item")), want);
        }
        assert!(stream.reconnects() >= 1);
    });
}
