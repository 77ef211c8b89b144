//! `harness events`: the live event stream (Ctrl-C ends it cleanly); `--since SEQ` replays first.

use std::io::{Write, stdout};

use futures_lite::StreamExt;
use harness_protocol::{EventFilter, SubscriptionItem};

use super::{Status, connect, request_failed};
use crate::output::{Context, print_json_line};

/// `no_follow`: ends after the last event committed when the subscription began. The project is
/// then filtered here, not by the daemon: the subscription must see that last event to know the
/// replay is over.
pub fn run(ctx: &Context, since: Option<u64>, no_follow: bool) -> Status {
    let filter = EventFilter {
        project: ctx.project.clone().filter(|_| !no_follow),
        ..EventFilter::default()
    };
    smol::block_on(async {
        let mut signals = match super::interrupt_signals() {
            Ok(s) => s,
            Err(s) => return s,
        };
        let client = match connect(ctx).await {
            Ok(c) => c,
            Err(s) => return s,
        };
        let mut sub = match client
            .subscribe(filter, since.or(no_follow.then_some(0)))
            .await
        {
            Ok(s) => s,
            Err(e) => return request_failed("subscribe", e),
        };
        let last = sub.start_seq();
        if no_follow && since.unwrap_or(0) >= last {
            return Status::Ok;
        }
        loop {
            let item = futures_lite::future::or(async { Some(sub.next().await) }, async {
                signals.next().await;
                None
            })
            .await;
            let item = match item {
                None => return Status::Ok,
                Some(Ok(item)) => item,
                Some(Err(e)) => return request_failed("events", e),
            };
            let done = no_follow && item.seq() >= last;
            let other_project = no_follow
                && matches!((&item, &ctx.project), (SubscriptionItem::Event(e), Some(p)) if e.project.as_deref() != Some(p.as_str()));
            if other_project {
                if done {
                    return Status::Ok;
                }
                continue;
            }
            let mut out = stdout().lock();
            let written = match &item {
                SubscriptionItem::Event(e) if ctx.json() => print_json_line(&mut out, e),
                SubscriptionItem::Resync(s) if ctx.json() => {
                    print_json_line(&mut out, &serde_json::json!({ "resync": s }))
                }
                SubscriptionItem::Event(e) => writeln!(out, "{}", describe(e)),
                SubscriptionItem::Resync(s) => writeln!(
                    out,
                    "{:>6} resync: events before this were pruned; {} services now",
                    s.seq,
                    s.services.len()
                ),
            };
            if written.and_then(|()| out.flush()).is_err() || done {
                return Status::Ok;
            }
        }
    })
}

/// `SEQ TIME TYPE project/service what`, one line.
fn describe(e: &harness_protocol::Event) -> String {
    let who = match (&e.project, &e.service) {
        (Some(p), Some(s)) => format!("{p}/{s}"),
        (Some(p), None) => p.clone(),
        _ => "-".into(),
    };
    let name = |v: Option<&serde_json::Value>| -> String {
        v.and_then(|v| serde_json::from_value::<harness_protocol::ServiceState>(v.clone()).ok())
            .map(|s| s.to_string())
            .or_else(|| v.and_then(|v| v.as_str()).map(str::to_owned))
            .unwrap_or_else(|| "?".into())
    };
    let what = match e.kind {
        harness_protocol::EventType::ServiceState | harness_protocol::EventType::ServiceHealth => {
            format!("{} -> {}", name(e.data.get("from")), name(e.data.get("to")))
        }
        harness_protocol::EventType::Operation => {
            let d = &e.data;
            let step = match d.get("step") {
                Some(s) => format!(
                    ": {} {}",
                    s.get("kind").and_then(|k| k.as_str()).unwrap_or("?"),
                    s.pointer("/result/status")
                        .and_then(|k| k.as_str())
                        .unwrap_or("?")
                ),
                None => String::new(),
            };
            format!(
                "{} {} {}{step}",
                d.get("kind").and_then(|k| k.as_str()).unwrap_or("?"),
                d.get("id").and_then(serde_json::Value::as_u64).unwrap_or(0),
                d.pointer("/outcome/status")
                    .and_then(|k| k.as_str())
                    .unwrap_or("?")
            )
        }
        harness_protocol::EventType::DaemonNotice => e
            .data
            .get("message")
            .and_then(|m| m.as_str())
            .unwrap_or("")
            .to_owned(),
        _ => String::new(),
    };
    format!(
        "{:>6} {} {:<20} {who} {what}",
        e.seq,
        e.time,
        e.kind.as_str()
    )
}
