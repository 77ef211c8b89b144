//! Registry wire benchmarks over real TLS on loopback (run: `cargo bench -p harness-server --bench wire`).
//!
//! Targets (issue 4): 100 subscribers receive each event with p99 ≤ 2 ms; ≥ 100k events/s to one
//! subscriber; request round trip p50 ≤ 200 µs over an open connection. Numbers are printed, not
//! asserted: timing belongs in benchmarks, never in tests.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use harness_protocol::{
    Client, ConnectOptions, EventFilter, EventType, HarnessHome, SubscriptionItem,
};
use harness_server::{NoMethods, ServerConfig};
use harness_store::{NewEvent, Retention, Store};

static BASE: OnceLock<Instant> = OnceLock::new();

fn now_ns() -> u64 {
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

struct Setup {
    _dir: tempfile::TempDir,
    store: Store,
    opts: ConnectOptions,
    _server: harness_server::ServerHandle,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = HarnessHome::new(dir.path().join("home"));
    let creds = home.ensure_credentials(&[]).expect("credentials");
    let store = Store::open(
        home.path(harness_protocol::home::REGISTRY_DB),
        Retention::default(),
    )
    .await
    .expect("store");
    let config = ServerConfig {
        subscriber_queue: 1 << 20,
        ..ServerConfig::default()
    };
    let server = harness_server::serve(config, &creds, store.clone(), Arc::new(NoMethods))
        .await
        .expect("server");
    let opts = ConnectOptions::new(server.url(), creds.ca_pem.clone(), creds.token.clone());
    Setup {
        _dir: dir,
        store,
        opts,
        _server: server,
    }
}

fn stamped(i: u64) -> NewEvent {
    NewEvent {
        kind: EventType::DaemonNotice,
        project: None,
        service: None,
        data: serde_json::json!({ "i": i, "t": now_ns() }),
    }
}

async fn fanout_latency(s: &Setup, subscribers: usize, events: u64, interval: Duration) {
    let mut readers = Vec::new();
    for _ in 0..subscribers {
        let client = Client::connect_with(&s.opts).await.expect("connect");
        let mut sub = client
            .subscribe(EventFilter::default(), None)
            .await
            .expect("subscribe");
        readers.push(smol::spawn(async move {
            let _client = client;
            let mut lat = Vec::with_capacity(events as usize);
            while (lat.len() as u64) < events {
                if let Ok(SubscriptionItem::Event(e)) = sub.next().await {
                    let t = e.data["t"].as_u64().unwrap_or(0);
                    lat.push(now_ns().saturating_sub(t));
                }
            }
            lat
        }));
    }
    let mut commit = Vec::with_capacity(events as usize);
    let mut committed_at = Vec::with_capacity(events as usize);
    for i in 0..events {
        let ev = stamped(i);
        let t0 = ev.data["t"].as_u64().unwrap_or(0);
        s.store.emit(vec![ev]).await.expect("emit");
        let t1 = now_ns();
        commit.push(t1 - t0);
        committed_at.push(t1 - t0);
        smol::Timer::after(interval).await;
    }
    let mut all = Vec::new();
    let mut after_commit = Vec::new();
    for r in readers {
        let lat = r.await;
        for (i, l) in lat.iter().enumerate() {
            after_commit.push(l.saturating_sub(committed_at[i]));
        }
        all.extend(lat);
    }
    all.sort_unstable();
    after_commit.sort_unstable();
    commit.sort_unstable();
    println!(
        "fan-out: {subscribers} subscribers x {events} events (1 per {interval:?}), emit call -> received (incl. fsync commit): p50 {:.0} us, p99 {:.0} us, max {:.0} us",
        pct(&all, 0.5),
        pct(&all, 0.99),
        pct(&all, 1.0)
    );
    println!(
        "  of which the durable commit (emit call -> returned): p50 {:.0} us, p99 {:.0} us; after the commit returned -> received: p50 {:.0} us, p99 {:.0} us",
        pct(&commit, 0.5),
        pct(&commit, 0.99),
        pct(&after_commit, 0.5),
        pct(&after_commit, 0.99)
    );
}

async fn throughput(s: &Setup, events: u64) {
    let client = Client::connect_with(&s.opts).await.expect("connect");
    let mut sub = client
        .subscribe(EventFilter::default(), None)
        .await
        .expect("subscribe");
    let start_seq = sub.start_seq();
    let producers: Vec<_> = (0..4)
        .map(|p| {
            let store = s.store.clone();
            smol::spawn(async move {
                let per = events / 4;
                let mut i = 0;
                while i < per {
                    let batch = (0..500).map(|k| stamped(p * per + i + k)).collect();
                    store.emit(batch).await.expect("emit");
                    i += 500;
                }
            })
        })
        .collect();
    let start = Instant::now();
    let mut n = 0u64;
    while n < events {
        if let Ok(SubscriptionItem::Event(_)) = sub.next().await {
            n += 1;
        }
    }
    let live = start.elapsed();
    for p in producers {
        p.await;
    }
    println!(
        "throughput, live: {events} events to one subscriber in {:.2} s = {:.0} events/s (producer and consumer in-process, durable commits)",
        live.as_secs_f64(),
        events as f64 / live.as_secs_f64()
    );
    let mut replay = client
        .subscribe(EventFilter::default(), Some(start_seq))
        .await
        .expect("replay");
    let start = Instant::now();
    let mut n = 0u64;
    while n < events {
        if let Ok(SubscriptionItem::Event(_)) = replay.next().await {
            n += 1;
        }
    }
    let took = start.elapsed();
    println!(
        "throughput, replay from the store: {events} events in {:.2} s = {:.0} events/s",
        took.as_secs_f64(),
        events as f64 / took.as_secs_f64()
    );
}

async fn round_trip(s: &Setup, n: usize) {
    let client = Client::connect_with(&s.opts).await.expect("connect");
    for _ in 0..500 {
        client.hello().await.expect("warm up");
    }
    let mut rtt = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        client.hello().await.expect("hello");
        rtt.push(t.elapsed().as_nanos() as u64);
    }
    rtt.sort_unstable();
    println!(
        "request round trip (hello, one open connection, sequential): p50 {:.0} us, p99 {:.0} us over {n} requests",
        pct(&rtt, 0.5),
        pct(&rtt, 0.99)
    );
    let mut rtt = Vec::with_capacity(n / 10);
    for _ in 0..n / 10 {
        let t = Instant::now();
        client
            .get_service("demo", "missing")
            .await
            .expect_err("not found");
        rtt.push(t.elapsed().as_nanos() as u64);
    }
    rtt.sort_unstable();
    println!(
        "request round trip (service.get, reads the store): p50 {:.0} us, p99 {:.0} us",
        pct(&rtt, 0.5),
        pct(&rtt, 0.99)
    );
}

fn main() {
    // smol's global executor runs on one thread unless told otherwise; a daemon uses all cores.
    if std::env::var_os("SMOL_THREADS").is_none() {
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("SMOL_THREADS", n.to_string()) };
    }
    // `cargo test --benches` runs bench binaries with `--bench` absent; keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let (subs, events, tp, rt) = if quick {
        (10, 50, 5_000, 500)
    } else {
        (100, 2_000, 500_000, 20_000)
    };
    now_ns();
    smol::block_on(async {
        let s = setup().await;
        let only = std::env::var("REGISTRY_BENCH").unwrap_or_default();
        if only.is_empty() || only == "rtt" {
            round_trip(&s, rt).await;
        }
        if only.is_empty() || only == "fanout" {
            fanout_latency(&s, subs, events, Duration::from_millis(2)).await;
        }
        if only.is_empty() || only == "throughput" {
            throughput(&s, tp).await;
        }
    });
}
