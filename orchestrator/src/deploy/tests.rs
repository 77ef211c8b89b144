//! The driver against the testbed: parallel deploy to h1 and h2 with events in a real registry store,
//! a failing host reported as a `failed` event, and rollback events.

use std::sync::Mutex;

use command_executor::{Executor, ExecutorOptions, SshHost, Target};
use harness_protocol::EventType;
use harness_store::{Retention, Store};

use super::*;

fn target(name: &str, sudo: bool) -> DeployTarget {
    let tb = testbed::Testbed::get();
    let h = tb.host(name);
    let ssh = SshHost::new(h.addr.to_string())
        .name(name)
        .port(tb.ssh_port)
        .user(tb.ssh_user.clone())
        .identity_file(&tb.ssh_key)
        .known_hosts(&tb.known_hosts);
    let t = Target::ssh(ssh);
    DeployTarget {
        host: name.to_owned(),
        target: if sudo { t.sudo("root") } else { t },
    }
}

fn package(dir: &std::path::Path, version: &str) -> Package {
    let src = dir.join(format!("src-{version}"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("manifest.yaml"),
        format!("name: drv\nversion: {version}\nstart: 'true'\n"),
    )
    .unwrap();
    std::fs::write(src.join("data.bin"), vec![7u8; 3 << 20]).unwrap();
    packages::build(&src, &dir.join("out")).unwrap()
}

#[test]
fn deploy_records_throttled_progress_events_per_host() {
    let root = format!("/opt/drvtest-{}", std::process::id());
    /// Removes the install root on h1 and h2 however the test ends.
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            for h in ["h1", "h2"] {
                let _ = testbed::Testbed::get().sh_on(h, &format!("sudo -n rm -rf {}", self.0));
            }
        }
    }
    let _cleanup = Cleanup(root.clone());
    let tmp = tempfile::tempdir().unwrap();
    let exec = Executor::new(ExecutorOptions {
        runtime_dir: tmp.path().join("ssh"),
        ..ExecutorOptions::default()
    });
    smol::block_on(async {
        let store = Store::open(tmp.path().join("registry.redb"), Retention::default())
            .await
            .unwrap();
        let v1 = package(tmp.path(), "1.0.0");
        let v2 = package(tmp.path(), "2.0.0");
        let opts = DeployOptions {
            root: root.clone(),
            ..DeployOptions::default()
        };
        let seen = Mutex::new(0usize);
        let targets = [target("h1", true), target("h2", true), target("h3", false)];
        let results = deploy(&exec, &store, Some("proj"), &v1, &targets, &opts, &|_| {
            *seen.lock().unwrap() += 1
        })
        .await;
        assert_eq!(results[0].as_ref().unwrap().outcome, Outcome::Installed);
        assert_eq!(results[1].as_ref().unwrap().outcome, Outcome::Installed);
        assert!(
            matches!(results[2], Err(packages::Error::PermissionDenied { .. })),
            "{:?}",
            results[2]
        );
        deploy(
            &exec,
            &store,
            Some("proj"),
            &v2,
            &targets[..2],
            &opts,
            &|_| {},
        )
        .await;
        let rb = rollback(
            &exec,
            &store,
            Some("proj"),
            &targets[..2],
            &root,
            "drv",
            None,
        )
        .await;
        assert_eq!(rb[0].as_ref().unwrap().to, "1.0.0");

        let events = store.events_after(0, 10_000).await.unwrap();
        let data: Vec<DeploymentProgress> = events
            .iter()
            .filter(|e| e.kind == EventType::DeploymentProgress)
            .inspect(|e| assert_eq!(e.project.as_deref(), Some("proj")))
            .map(|e| serde_json::from_value(e.data.clone()).unwrap())
            .collect();
        let h1: Vec<&DeploymentProgress> = data
            .iter()
            .filter(|d| d.host == "h1" && d.package == "drv-1.0.0" && d.phase != "rolled_back")
            .collect();
        let phases: Vec<&str> = h1.iter().map(|d| d.phase.as_str()).collect();
        let mut distinct = phases.clone();
        distinct.dedup();
        assert_eq!(
            distinct,
            [
                "checking",
                "uploading",
                "verifying",
                "extracting",
                "ready",
                "activating",
                "done"
            ]
        );
        assert!(
            phases.iter().filter(|p| **p == "uploading").count() <= 12,
            "throttled: {phases:?}"
        );
        assert!(
            *seen.lock().unwrap() > h1.len(),
            "the callback sees every report"
        );
        let last = h1.last().unwrap();
        assert_eq!(last.outcome.as_deref(), Some("installed"));
        let h3 = data
            .iter()
            .find(|d| d.host == "h3" && d.phase == "failed")
            .unwrap();
        assert!(
            h3.error
                .as_deref()
                .unwrap()
                .starts_with("h3: permission denied"),
            "{h3:?}"
        );
        let rolled: Vec<&DeploymentProgress> =
            data.iter().filter(|d| d.phase == "rolled_back").collect();
        assert_eq!(rolled.len(), 2);
        assert!(rolled.iter().all(|d| d.package == "drv-1.0.0"));
        store.close().await.unwrap();
    });
    smol::block_on(exec.shutdown());
}
