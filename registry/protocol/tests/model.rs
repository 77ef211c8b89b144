//! The service state machine: every legal move works, every other one is a typed error.

use harness_protocol::{
    Health, HealthStatus, Location, ModelError, ServiceEntry, ServiceKey, ServiceState,
};

fn all_states() -> Vec<ServiceState> {
    vec![
        ServiceState::Pending,
        ServiceState::Starting,
        ServiceState::Running,
        ServiceState::Stopping,
        ServiceState::Stopped,
        ServiceState::Exited {
            code: Some(1),
            signal: None,
        },
        ServiceState::Failed {
            reason: "spawn failed".into(),
        },
        ServiceState::Restarting {
            attempt: 1,
            next_start: None,
        },
        ServiceState::Unknown {
            host: "h1".into(),
            since: jiff::Timestamp::UNIX_EPOCH,
            reason: "no answer for 5 s".into(),
            stop_pending: false,
        },
    ]
}

fn legal(from: &str, to: &str) -> bool {
    let table: &[(&str, &[&str])] = &[
        ("pending", &["starting", "stopped", "failed"]),
        (
            "starting",
            &["running", "stopping", "exited", "failed", "unknown"],
        ),
        (
            "running",
            &["stopping", "exited", "failed", "restarting", "unknown"],
        ),
        ("stopping", &["stopped", "exited", "failed", "unknown"]),
        ("stopped", &["pending", "starting"]),
        (
            "exited",
            &["pending", "starting", "restarting", "stopped", "failed"],
        ),
        ("failed", &["pending", "starting", "restarting", "stopped"]),
        ("restarting", &["starting", "stopped", "failed"]),
        (
            "unknown",
            &[
                "unknown", "starting", "running", "stopping", "stopped", "exited", "failed",
            ],
        ),
    ];
    table.iter().any(|(f, tos)| *f == from && tos.contains(&to))
}

fn entry_in(state: ServiceState) -> ServiceEntry {
    let mut e = ServiceEntry::new(
        ServiceKey::new("proj", "api").expect("key"),
        Location::Local,
    );
    e.state = state;
    e
}

#[test]
fn transition_table_is_exactly_the_documented_one() {
    for from in all_states() {
        for to in all_states() {
            let mut e = entry_in(from.clone());
            let result = e.transition(to.clone());
            if legal(from.name(), to.name()) {
                assert!(
                    result.is_ok(),
                    "{} -> {} must be legal",
                    from.name(),
                    to.name()
                );
                assert_eq!(e.state, to);
            } else {
                match result {
                    Err(ModelError::IllegalTransition {
                        from: f,
                        to: t,
                        service,
                    }) => {
                        assert_eq!((f, t), (from.name(), to.name()));
                        assert_eq!(service, "proj/api");
                        assert_eq!(e.state, from, "a refused transition changes nothing");
                    }
                    other => panic!(
                        "{} -> {}: expected IllegalTransition, got {other:?}",
                        from.name(),
                        to.name()
                    ),
                }
            }
        }
    }
}

#[test]
fn restarting_counts_attempts_and_must_move_forward() {
    let mut e = entry_in(ServiceState::Running);
    e.runtime.pid = Some(42);
    e.runtime.process_start_time = Some(7);
    e.transition(ServiceState::Restarting {
        attempt: 1,
        next_start: None,
    })
    .expect("restart");
    assert_eq!(e.restart_count, 1);
    assert_eq!(
        e.runtime.pid, None,
        "a dead pid must not be kept (it can be reused)"
    );
    assert!(
        e.transition(ServiceState::Restarting {
            attempt: 1,
            next_start: None
        })
        .is_err()
    );
    e.transition(ServiceState::Restarting {
        attempt: 2,
        next_start: None,
    })
    .expect("next attempt");
    assert_eq!(e.restart_count, 2);
    e.transition(ServiceState::Starting).expect("start again");
}

#[test]
fn health_only_while_starting_or_running_and_reset_on_stop() {
    let healthy = Health {
        status: HealthStatus::Healthy,
        ..Health::default()
    };
    let mut e = entry_in(ServiceState::Pending);
    assert!(matches!(
        e.set_health(healthy.clone()),
        Err(ModelError::HealthWhileInactive { .. })
    ));
    e.transition(ServiceState::Starting).expect("start");
    e.set_health(healthy.clone()).expect("health-gated start");
    e.transition(ServiceState::Running).expect("running");
    assert_eq!(e.health.status, HealthStatus::Healthy);
    e.transition(ServiceState::Stopping).expect("stopping");
    e.transition(ServiceState::Stopped).expect("stopped");
    assert_eq!(e.health.status, HealthStatus::Unknown);
}

#[test]
fn names_are_validated() {
    assert!(ServiceKey::new("p", "a/b").is_err());
    assert!(ServiceKey::new("", "a").is_err());
    assert!(ServiceKey::new("p", "a\n").is_err());
    assert!(ServiceKey::new("p", "x".repeat(129)).is_err());
    assert!(ServiceKey::new("p", "web-1").is_ok());
}

#[test]
fn entries_round_trip_through_json() {
    let mut e = entry_in(ServiceState::Exited {
        code: None,
        signal: Some(9),
    });
    e.location = Location::Container {
        engine: "docker".into(),
        id: Some("abc".into()),
        name: "db".into(),
    };
    e.endpoints.push(harness_protocol::Endpoint {
        name: "http".into(),
        ip: "10.0.0.2".parse().expect("ip"),
        port: 8080,
    });
    let json = serde_json::to_value(&e).expect("encode");
    assert_eq!(json["state"]["kind"], "exited");
    assert_eq!(json["location"]["kind"], "container");
    let back: ServiceEntry = serde_json::from_value(json).expect("decode");
    assert_eq!(back, e);
}
