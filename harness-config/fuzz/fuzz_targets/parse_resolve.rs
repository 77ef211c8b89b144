//! Any bytes through the whole load path: size check, YAML parse under limits, decode,
//! substitution, validation; then, for a valid project, everything the orchestrator and the CLI
//! do with it. None of it may panic.
//!
//!     cargo +nightly fuzz run parse_resolve -- -max_total_time=60
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A fixed environment: fuzzing must not depend on the machine's variables.
    let env = |name: &str| (name == "SET").then(|| "value".to_owned());
    let loaded = harness_config::load_str(Path::new("fuzz/services.yaml"), text.to_owned(), &env);
    for d in loaded.report() {
        let _ = d.to_string();
        let _ = serde_json::to_string(&d.diagnostic);
    }
    let Some(project) = loaded.project else {
        return;
    };
    let _ = project.start_waves();
    let _ = project.stop_waves();
    for service in project.services.values() {
        for template in service.templates() {
            let _: Result<String, ()> = template.render(|r| Ok(r.to_string()));
            let _ = template.to_string();
        }
    }
    if let Ok(mut value) = serde_json::to_value(&project) {
        harness_config::mask_secrets(&mut value);
    }
});
