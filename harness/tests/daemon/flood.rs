//! Unauthenticated connections cannot take the API port away (issue 11): a daemon limited to 1,024
//! fds keeps answering `status` while 1,100 idle TCP connections are held
//! and others churn; and a client beyond the connection limit is told "daemon busy", not "no daemon".

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::common::{Env, run_command};

const ONE: &str = r#"
name: flood
services:
  api:
    command: sleep 300
"#;

/// Starts the daemon with an fd limit of 1,024, soft and hard (the daemon raises its soft limit to
/// the hard one, so the hard one is what bounds it).
fn start_daemon_with_1024_fds(env: &Env) -> SocketAddr {
    let mut cmd = env.cmd(&["daemon", "start"]);
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            use rustix::process::{Resource, Rlimit, setrlimit};
            let limit = Rlimit {
                current: Some(1024),
                maximum: Some(1024),
            };
            setrlimit(Resource::Nofile, limit).map_err(std::io::Error::from)
        });
    }
    run_command(cmd).ok();
    let info: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(env.home().join("daemon.json")).expect("daemon.json"),
    )
    .expect("daemon.json is JSON");
    let url = info["url"].as_str().expect("url");
    let addr = url
        .trim_start_matches("wss://")
        .split('/')
        .next()
        .expect("host:port");
    addr.parse().expect("socket address")
}

fn fds_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[test]
fn status_answers_while_1100_idle_and_churning_unauthenticated_connections_are_held() {
    let env = Env::new(ONE);
    let addr = start_daemon_with_1024_fds(&env);
    let pid = env.daemon_pid().expect("daemon pid");
    env.run(&["start"]).ok();

    // 1,100 idle connections that never send a byte.
    let t0 = Instant::now();
    let mut idle = Vec::new();
    let mut refused = 0;
    for _ in 0..1100 {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(s) => idle.push(s),
            Err(_) => refused += 1,
        }
    }
    let opened_in = t0.elapsed();

    // Churn: connect and drop, and connect, send half a TLS ClientHello, drop.
    let stop = Arc::new(AtomicBool::new(false));
    let churned = Arc::new(AtomicU64::new(0));
    let churn_start = Instant::now();
    let churners: Vec<_> = (0..4)
        .map(|i| {
            let stop = stop.clone();
            let churned = churned.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                        if i % 2 == 1 {
                            let _ = s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]);
                        }
                        churned.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    // Let the churn build up before asking.
    std::thread::sleep(Duration::from_secs(1));
    let mut times = Vec::new();
    let mut failures = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let run = env.run(&["--no-autostart", "status", "-o", "json"]);
        times.push(t.elapsed());
        if run.code != 0 {
            failures.push(run.stderr);
        }
    }
    let daemon_fds = fds_of(pid);
    stop.store(true, Ordering::Relaxed);
    let churn_secs = churn_start.elapsed().as_secs_f64();
    for c in churners {
        let _ = c.join();
    }
    times.sort();
    eprintln!(
        "flood: {} idle connections held ({refused} not accepted within 2 s) opened in {opened_in:?}, \
         {} churned ({:.0}/s); status x10: min {:?}, median {:?}, max {:?}, {} failed; daemon fds {daemon_fds}",
        idle.len(),
        churned.load(Ordering::Relaxed),
        churned.load(Ordering::Relaxed) as f64 / churn_secs,
        times[0],
        times[times.len() / 2],
        times[times.len() - 1],
        failures.len(),
    );
    assert!(
        idle.len() >= 1000,
        "only {} idle connections were accepted",
        idle.len()
    );
    assert!(
        failures.is_empty(),
        "status failed under the flood: {failures:#?}"
    );
    drop(idle);
    env.run(&["daemon", "status"]).ok();
}

#[test]
fn a_client_beyond_the_connection_limit_is_told_the_daemon_is_busy() {
    let env = Env::new(ONE);
    env.run(&["daemon", "start"]).ok();
    let home = harness_protocol::HarnessHome::new(env.home());
    // Hold every one of the daemon's 256 WebSocket connections.
    let held = smol::block_on(async {
        let mut held = Vec::new();
        for _ in 0..256 {
            held.push(
                harness_protocol::Client::connect_home(&home)
                    .await
                    .expect("connect"),
            );
        }
        held
    });
    let run = env.run(&["--no-autostart", "status"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stderr.contains("daemon busy: 256 connections"),
        "{}",
        run.stderr
    );
    let run = env.run(&["status"]);
    assert!(
        run.stderr.contains("daemon busy: 256 connections"),
        "with auto-start too: {}",
        run.stderr
    );
    let run = env.run(&["daemon", "status"]);
    assert!(
        run.stderr.contains("daemon busy: 256 connections"),
        "daemon status: {}{}",
        run.stdout,
        run.stderr
    );
    drop(held);
    env.run(&["status"]).ok();
}
