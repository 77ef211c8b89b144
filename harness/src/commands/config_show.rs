//! `harness config show`: the resolved configuration, secrets masked.

use super::{Status, load_project};
use crate::output::{Context, print_json};

pub fn run(ctx: &Context, show_secrets: bool) -> Status {
    let project = match load_project(ctx) {
        Ok(p) => p,
        Err(status) => return status,
    };
    let mut value = match serde_json::to_value(&project) {
        Ok(v) => v,
        Err(e) => {
            crate::errln!("error: cannot encode the configuration: {e}");
            return Status::Failed;
        }
    };
    if !show_secrets {
        harness_config::mask_secrets(&mut value);
    }
    if ctx.json() {
        print_json(&value);
        return Status::Ok;
    }
    match serde_saphyr::to_string(&value) {
        Ok(yaml) => {
            crate::out!("{yaml}");
            Status::Ok
        }
        Err(e) => {
            crate::errln!("error: cannot encode the configuration as YAML: {e}");
            Status::Failed
        }
    }
}
