//! Remote `true` over the testbed: cold (new master connection each time) and warm (over the multiplexed
//! master), median of N runs. Not a test: it prints numbers.
//!
//! Run: `bash tests/testbed/up.sh` (root), then
//! `HARNESS_TESTBED_ENV=/var/lib/harness-testbed/testbed.env cargo bench -p command-executor`
//! or `bash bench/remote-true.sh` (brings the testbed up and down itself).

use std::time::{Duration, Instant};

use command_executor::*;

fn host(tb: &testbed::Testbed, name: &str) -> SshHost {
    let h = tb.host(name);
    SshHost::new(h.addr.to_string())
        .name(name)
        .port(tb.ssh_port)
        .user(&tb.ssh_user)
        .identity_file(&tb.ssh_key)
        .known_hosts(&tb.known_hosts)
}

fn exec(tag: &str) -> Executor {
    let dir = std::path::PathBuf::from(format!("/tmp/hxb-{}-{tag}", std::process::id()));
    Executor::new(ExecutorOptions {
        runtime_dir: dir,
        master_idle: Duration::from_secs(10),
        ..ExecutorOptions::default()
    })
}

fn stats(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = ms(v[v.len() / 2]);
    let p90 = ms(v[(v.len() * 9 / 10).min(v.len() - 1)]);
    println!(
        "{name:<44} n={:<4} median {median:7.1} ms  p90 {p90:7.1} ms  min {:7.1} ms",
        v.len(),
        ms(v[0])
    );
}

fn time_true(exec: &Executor, target: &Target) -> Duration {
    let t0 = Instant::now();
    let out = smol::block_on(exec.output(target, &Command::new("true"))).expect("remote true");
    assert!(out.status.success());
    t0.elapsed()
}

fn main() {
    // `cargo test --all-targets` runs benches without `--bench`: nothing to measure then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("remote_true: a benchmark; run it with `cargo bench -p command-executor`");
        return;
    }
    let env_set = std::env::var_os("HARNESS_TESTBED_ENV").is_some()
        || std::path::Path::new(testbed::DEFAULT_ENV_FILE).exists();
    if !env_set {
        println!(
            "remote_true: no testbed (run tests/testbed/up.sh or bench/remote-true.sh); skipped"
        );
        return;
    }
    let tb = testbed::Testbed::get();
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let h1 = Target::ssh(host(tb, "h1"));

    let cold: Vec<Duration> = (0..(n / 5).max(3))
        .map(|i| {
            let e = exec(&format!("c{i}"));
            let d = time_true(&e, &h1);
            smol::block_on(e.shutdown());
            d
        })
        .collect();
    stats("ssh h1 true, cold (new master each)", cold);

    let e = exec("warm");
    time_true(&e, &h1);
    stats(
        "ssh h1 true, warm master",
        (0..n).map(|_| time_true(&e, &h1)).collect(),
    );

    // The environment travels on stdin (ADR 0005): what that adds to a warm round trip.
    let with_env = Command::new("true")
        .env("A", "1")
        .env("B", "two words")
        .env("C", "x".repeat(200));
    let timed_env = || {
        let t0 = Instant::now();
        let out = smol::block_on(e.output(&h1, &with_env)).expect("remote true with env");
        assert!(out.status.success());
        t0.elapsed()
    };
    timed_env();
    stats(
        "ssh h1 true + 3 env vars, warm master",
        (0..n).map(|_| timed_env()).collect(),
    );

    let sudo = Target::ssh(host(tb, "h1")).sudo(&tb.sudo_user);
    time_true(&e, &sudo);
    stats(
        "ssh h1 → sudo true, warm master",
        (0..n).map(|_| time_true(&e, &sudo)).collect(),
    );

    let jump = Target::ssh(host(tb, "h4").jump(host(tb, "h1")));
    time_true(&e, &jump);
    stats(
        "ssh h4 (via h1) true, warm master",
        (0..n).map(|_| time_true(&e, &jump)).collect(),
    );

    let local = Target::local();
    stats(
        "local true",
        (0..n).map(|_| time_true(&e, &local)).collect(),
    );
    smol::block_on(e.shutdown());
}
