//! `harness config deps`: start order in waves (stop is the reverse).

use serde_json::json;

use super::{Status, load_project};
use crate::output::{Context, print_json};

pub fn run(ctx: &Context) -> Status {
    let project = match load_project(ctx) {
        Ok(p) => p,
        Err(status) => return status,
    };
    let waves = match project.start_waves() {
        Ok(w) => w,
        Err(cycle) => {
            crate::errln!("error: {cycle}");
            return Status::Invalid;
        }
    };
    if ctx.json() {
        let stop: Vec<_> = waves.iter().rev().collect();
        print_json(&json!({ "start": waves, "stop": stop }));
        return Status::Ok;
    }
    let mut table = crate::output::table(ctx.color_out);
    table.set_header(["wave", "service", "waits for"]);
    for (i, wave) in waves.iter().enumerate() {
        for name in wave {
            let deps = project.services[name]
                .depends_on
                .iter()
                .map(|(dep, cond)| match cond {
                    harness_config::Condition::Started => dep.clone(),
                    harness_config::Condition::Healthy => format!("{dep} (healthy)"),
                    harness_config::Condition::CompletedSuccessfully => {
                        format!("{dep} (completed)")
                    }
                })
                .collect::<Vec<_>>()
                .join(", ");
            table.add_row([(i + 1).to_string(), name.clone(), deps]);
        }
    }
    crate::outln!("{table}");
    Status::Ok
}
