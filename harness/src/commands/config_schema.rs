//! `harness config schema`: the JSON Schema of services.yaml, for editors.

use super::Status;
use crate::output::{Context, print_json};

pub fn run(_ctx: &Context) -> Status {
    print_json(&harness_config::json_schema());
    Status::Ok
}
