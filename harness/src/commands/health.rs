//! `harness health [SERVICE]`: what each check looks at, its last result, when, and its output.

use harness_protocol::HealthStatus;
use harness_protocol::method;
use harness_protocol::wire::{HealthParams, HealthResult};

use super::{Status, connect, project_name, request_failed};
use crate::output::{Context, print_json, short_duration};

pub fn run(ctx: &Context, service: Option<String>) -> Status {
    let project = match project_name(ctx) {
        Ok(p) => p,
        Err(s) => return s,
    };
    let params = HealthParams { project, service };
    smol::block_on(async {
        let client = match connect(ctx).await {
            Ok(c) => c,
            Err(s) => return s,
        };
        let result: HealthResult = match client.call::<method::Health>(&params).await {
            Ok(r) => r,
            Err(e) => return request_failed("health", e),
        };
        if ctx.json() {
            print_json(&result);
        } else {
            let mut table = crate::output::table(ctx.color_out);
            table.set_header([
                "service",
                "check",
                "state",
                "health",
                "last check",
                "failures",
                "output",
            ]);
            let now = jiff::Timestamp::now();
            for s in &result.services {
                let ago = s.health.last_check.map_or("-".to_owned(), |t| {
                    let secs = now.duration_since(t).as_secs_f64().max(0.0);
                    format!(
                        "{} ago",
                        short_duration(std::time::Duration::from_secs_f64(secs))
                    )
                });
                let output = s.health.last_output.as_deref().unwrap_or("").trim();
                let output: String = output
                    .lines()
                    .last()
                    .unwrap_or("")
                    .chars()
                    .take(60)
                    .collect();
                table.add_row(vec![
                    s.name.clone(),
                    s.check.clone().unwrap_or_else(|| "-".into()),
                    s.state.to_string(),
                    match s.health.status {
                        HealthStatus::Healthy => "healthy".into(),
                        HealthStatus::Unhealthy => "unhealthy".into(),
                        HealthStatus::Unknown => "-".into(),
                    },
                    ago,
                    s.health.consecutive_failures.to_string(),
                    output,
                ]);
            }
            crate::outln!("{table}");
        }
        // A script asking about health wants a failing exit when something is unhealthy.
        if result
            .services
            .iter()
            .any(|s| s.health.status == HealthStatus::Unhealthy)
        {
            Status::Failed
        } else {
            Status::Ok
        }
    })
}
