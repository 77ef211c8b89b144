//! 100 local `sleep` services through the orchestrator API (no daemon, no CLI): apply until all
//! run, one status, stop until all exited. `cargo bench -p orchestrator --bench hundred`.

use std::time::Instant;

use harness_store::Store;
use orchestrator::{ApplyOptions, Orchestrator, OrchestratorOptions, StopOptions};

fn main() {
    smol::block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path().join("registry.redb"), Default::default())
            .await
            .expect("store");
        let t = Instant::now();
        let orch = Orchestrator::open(OrchestratorOptions::new(dir.path().join("state"), store))
            .await
            .expect("open");
        let open = t.elapsed();
        let mut yaml = String::from("name: bench\nservices:\n");
        for i in 0..100 {
            yaml.push_str(&format!("  s{i:03}: {{binary: sleep, args: [\"1000\"]}}\n"));
        }
        let project =
            harness_config::load_str(&dir.path().join("services.yaml"), yaml, &|_: &str| {
                None::<String>
            })
            .into_result()
            .expect("valid");
        for round in 0..3 {
            let t = Instant::now();
            let report = orch
                .apply(&project, ApplyOptions::default())
                .await
                .expect("apply");
            let apply = t.elapsed();
            assert!(report.is_success());
            let t = Instant::now();
            let status = orch.status(Some("bench")).await.expect("status");
            let status_t = t.elapsed();
            assert_eq!(
                status.iter().filter(|e| e.runtime.pid.is_some()).count(),
                100
            );
            // Idle cost of supervising 100 services (log polling, exit watchers).
            let cpu0 = cpu_ticks();
            async_io::Timer::after(std::time::Duration::from_secs(2)).await;
            let idle_cpu = (cpu_ticks() - cpu0) as f64 / 2.0;
            println!(
                "round {round}: idle CPU {idle_cpu:.1} ticks/s (100 = one core), RSS {} KiB",
                rss_kib()
            );
            let t = Instant::now();
            orch.stop("bench", StopOptions::default())
                .await
                .expect("stop");
            let stop = t.elapsed();
            println!(
                "round {round}: open {open:?}, apply 100 {apply:?}, status {status_t:?}, stop 100 {stop:?}"
            );
        }
    })
}

/// utime + stime of this process, in clock ticks.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
