//! 100 local `sleep` services through the orchestrator API (no daemon, no CLI): apply until all
//! run, one status, stop until all exited. `cargo bench -p orchestrator --bench hundred`.

use std::time::Instant;

use orchestrator::{ApplyOptions, Orchestrator, OrchestratorOptions, StopOptions};
use registry::Store;

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
        let project = harness_config::load_str(
            &dir.path().join("services.yaml"),
            yaml,
            &|_: &str| None::<String>,
        )
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
            assert_eq!(status.iter().filter(|e| e.runtime.pid.is_some()).count(), 100);
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
