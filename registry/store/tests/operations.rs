//! Operations in the store (ADR 0035): one `operation` event per change, ids never reused, and
//! retention like the events' (a running operation is never pruned).

mod common;

use std::time::Duration;

use common::run;
use harness_protocol::EventType;
use harness_protocol::operation::{
    Operation, OperationKind, OperationOutcome, Requester, Step, StepKind, StepResult,
};
use harness_store::{Retention, Store};
use jiff::Timestamp;

fn op(id: u64, ended: bool) -> Operation {
    Operation {
        id,
        kind: OperationKind::Start,
        project: Some("demo".into()),
        services: vec!["api".into()],
        requester: Requester::default(),
        params: serde_json::json!({}),
        started_at: Timestamp::now(),
        ended_at: ended.then(Timestamp::now),
        outcome: if ended {
            OperationOutcome::Succeeded
        } else {
            OperationOutcome::Running
        },
        steps: vec![Step {
            kind: StepKind::Spawning,
            service: Some("api".into()),
            host: None,
            attempt: None,
            detail: None,
            started_at: Timestamp::now(),
            ended_at: None,
            result: StepResult::Running,
        }],
        steps_dropped: 0,
    }
}

#[test]
fn each_change_is_an_operation_event_and_the_operation_reads_back() {
    run(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path().join("r.redb"), Retention::default())
            .await
            .expect("open");
        let seqs = store
            .put_operation(op(7, false), vec![None, Some(0)])
            .await
            .expect("put");
        assert_eq!(seqs, 1..3);
        let events = store.events_after(0, 10).await.expect("events");
        assert!(events.iter().all(|e| e.kind == EventType::Operation));
        assert_eq!(events[0].data["id"], 7);
        assert!(events[0].data.get("step").is_none());
        assert_eq!(events[1].data["step"]["kind"], "spawning");
        assert_eq!(events[1].service.as_deref(), Some("api"));
        let back = store.operation(7).await.expect("get").expect("stored");
        assert_eq!(back.steps.len(), 1);
        assert_eq!(back.outcome, OperationOutcome::Running);
        assert_eq!(store.last_operation_id().await.expect("last"), 7);
        store.close().await.expect("close");
    });
}

#[test]
fn retention_prunes_ended_operations_by_count_and_age_never_a_running_one() {
    run(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.redb");
        let retention = Retention {
            max_operations: 5,
            ..Retention::default()
        };
        let store = Store::open(&path, retention).await.expect("open");
        store
            .put_operation(op(1, false), vec![None])
            .await
            .expect("put");
        for id in 2..=20 {
            store
                .put_operation(op(id, true), vec![None])
                .await
                .expect("put");
        }
        // The retention check runs at most once a second, on the next commit.
        smol::Timer::after(Duration::from_millis(1100)).await;
        store
            .put_operation(op(21, true), vec![None])
            .await
            .expect("put");
        let ids: Vec<u64> = store
            .operations(usize::MAX, |_| true)
            .await
            .expect("list")
            .iter()
            .map(|o| o.id)
            .collect();
        assert_eq!(
            ids,
            vec![21, 20, 19, 18, 1],
            "the newest ended ones and the running one"
        );
        store.close().await.expect("close");

        let retention = Retention {
            max_age: Duration::from_millis(200),
            ..Retention::default()
        };
        let store = Store::open(&path, retention).await.expect("reopen");
        smol::Timer::after(Duration::from_millis(1100)).await;
        store
            .put_operation(op(22, true), vec![None])
            .await
            .expect("put");
        let ids: Vec<u64> = store
            .operations(usize::MAX, |_| true)
            .await
            .expect("list")
            .iter()
            .map(|o| o.id)
            .collect();
        assert_eq!(ids, vec![22, 1], "ended ones older than max_age went");
        assert_eq!(store.last_operation_id().await.expect("last"), 22);
        store.close().await.expect("close");
    });
}
