//! The root namespace's dockerd restarted (as a service manager does: it stops its containers)
//! under a running container service: status does not claim `running` for a container that is
//! gone, the restart policy brings it back once the engine answers, and exactly one container of
//! the service exists afterwards.

use std::time::{Duration, Instant};

use testbed::{Engine, Testbed};

use crate::common::faults::{entry, state, wait_for};
use crate::common::testbed_env::Env;

#[test]
fn a_dockerd_restart_under_a_running_container_is_seen_and_recovered() {
    let tb = Testbed::get();
    let env = Env::new(&format!(
        "name: faultdock\nservices:\n  box:\n    type: docker\n    image: \"{}\"\n    command: [sleep, '86451']\n    restart: always\n",
        tb.image
    ));
    env.run(&["start"]).ok();
    let first = entry(&env, "box")["runtime"]["container_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!first.is_empty());
    let t = Instant::now();
    tb.dockerd_restart(Engine::Local);
    let restart_took = t.elapsed();
    let running = |id: &str| {
        tb.docker(Engine::Local, ["inspect", "-f", "{{.State.Running}}", id])
            .stdout
            .starts_with(b"true")
    };
    assert!(!running(&first), "dockerd's restart stopped the container");
    // Not running while it is not: once the old container is gone, status must not say running
    // with its id.
    let seen = wait_for(Duration::from_secs(60), || {
        let e = entry(&env, "box");
        e["state"]["kind"] != "running" || e["runtime"]["container_id"] != first.as_str()
    })
    .unwrap_or_else(|| {
        panic!(
            "status still says box runs in {first}: {}",
            entry(&env, "box")
        )
    });
    let back = wait_for(Duration::from_secs(60), || {
        let e = entry(&env, "box");
        e["state"]["kind"] == "running"
            && e["runtime"]["container_id"]
                .as_str()
                .is_some_and(|id| id != first && running(id))
    })
    .unwrap_or_else(|| panic!("box did not come back: {}", entry(&env, "box")));
    let listed = tb.docker_ok(
        Engine::Local,
        ["ps", "-q", "--filter", "name=^harness\\.faultdock\\.box$"],
    );
    assert_eq!(listed.lines().count(), 1, "exactly one container: {listed}");
    env.run(&["stop"]).ok();
    assert_eq!(state(&env, "box"), "stopped");
    let left = tb.docker_ok(
        Engine::Local,
        ["ps", "-aq", "--filter", "name=^harness\\.faultdock\\.box$"],
    );
    assert!(left.is_empty(), "a container left after stop: {left}");
    eprintln!(
        "dockerd restarted in {:.1} s (it stops its containers); status stopped claiming the old \
         container {:.1} s later; running again in a new one {:.1} s after the restart; one \
         container, none after stop",
        restart_took.as_secs_f64(),
        seen.as_secs_f64(),
        back.as_secs_f64()
    );
}
