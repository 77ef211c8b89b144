//! docs/protocol.md and docs/protocol/*.schema.json stay true to the code.

use std::path::PathBuf;

fn docs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

#[test]
fn committed_schemas_match_the_wire_types() {
    let dir = docs().join("protocol");
    let write = std::env::var_os("REGISTRY_WRITE_SCHEMAS").is_some();
    if write {
        std::fs::create_dir_all(&dir).expect("mkdir");
    }
    for (name, schema) in harness_protocol::wire::schemas() {
        assert!(!schema.is_null(), "{name}");
        let path = dir.join(format!("{name}.schema.json"));
        let text = serde_json::to_string_pretty(&schema).expect("encode") + "\n";
        if write {
            std::fs::write(&path, &text).expect("write schema");
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (regenerate with REGISTRY_WRITE_SCHEMAS=1)",
                path.display()
            )
        });
        let committed: serde_json::Value =
            serde_json::from_str(&committed).expect("schema is JSON");
        assert_eq!(
            committed,
            schema,
            "{} is stale: regenerate with REGISTRY_WRITE_SCHEMAS=1",
            path.display()
        );
    }
}

#[test]
fn protocol_md_names_every_method_event_error_and_close_code() {
    let md = std::fs::read_to_string(docs().join("protocol.md")).expect("docs/protocol.md");
    for method in harness_protocol::wire::methods::REGISTRY {
        assert!(
            md.contains(&format!("`{method}`")),
            "protocol.md lacks method {method}"
        );
    }
    for kind in harness_protocol::EventType::ALL {
        assert!(
            md.contains(&format!("`{}`", kind.as_str())),
            "protocol.md lacks event {}",
            kind.as_str()
        );
    }
    let codes = serde_json::to_value(harness_protocol::wire::schemas())
        .expect("json")
        .to_string();
    for code in [
        "parse_error",
        "invalid_request",
        "method_not_found",
        "invalid_params",
        "not_found",
        "already_exists",
        "illegal_transition",
        "timeout",
        "limit_exceeded",
        "failed",
        "unavailable",
        "internal",
        "forbidden",
    ] {
        assert!(codes.contains(code), "schema lacks error code {code}");
        assert!(
            md.contains(&format!("`{code}`")),
            "protocol.md lacks error code {code}"
        );
    }
    use harness_protocol::wire::close_codes::*;
    for code in [
        LAGGING,
        HEARTBEAT_TIMEOUT,
        SHUTDOWN,
        MESSAGE_TOO_BIG,
        TOKEN_REVOKED,
    ] {
        assert!(
            md.contains(&format!("`{code}`")),
            "protocol.md lacks close code {code}"
        );
    }
}

/// Every method has a typed [`harness_protocol::Method`], and the schemas of its params and result
/// (other than `{}`) are among the committed ones: the docs describe exactly the types both ends use.
#[test]
fn every_method_is_typed_and_its_schemas_are_committed() {
    use harness_protocol::wire::methods;
    let described = harness_protocol::method::all();
    let mut names: Vec<&str> = described.iter().map(|d| d.name).collect();
    names.sort_unstable();
    let mut expected: Vec<&str> = methods::REGISTRY
        .iter()
        .chain(methods::ORCHESTRATOR.iter())
        .copied()
        .collect();
    expected.sort_unstable();
    assert_eq!(names, expected, "one Method type per method name");

    let committed: Vec<serde_json::Value> = harness_protocol::wire::schemas()
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    let empty = serde_json::to_value(schemars::schema_for!(harness_protocol::Empty)).expect("json");
    let entry =
        serde_json::to_value(schemars::schema_for!(harness_protocol::ServiceEntry)).expect("json");
    for d in described {
        for (what, schema) in [("params", &d.params), ("result", &d.result)] {
            if *schema == empty {
                continue;
            }
            assert!(
                committed.contains(schema) || *schema == entry,
                "{}: the {what} schema is not in docs/protocol/ (add it to wire::schemas())",
                d.name
            );
        }
    }
}

/// The scope table of protocol.md lists each method under the scope its type declares.
#[test]
fn protocol_md_scope_table_matches_the_method_types() {
    let md = std::fs::read_to_string(docs().join("protocol.md")).expect("docs/protocol.md");
    for d in harness_protocol::method::all() {
        let row_start = format!("| `{}` |", d.scope.as_str());
        let row = md
            .lines()
            .find(|l| l.starts_with(&row_start))
            .unwrap_or_else(|| panic!("protocol.md lacks the scope row {row_start}"));
        assert!(
            row.contains(&format!("`{}`", d.name)),
            "protocol.md: {} needs scope {} but is not in its row",
            d.name,
            d.scope
        );
    }
}
