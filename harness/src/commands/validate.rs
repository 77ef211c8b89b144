//! `harness validate`: every problem in the services file, with where and how to fix it.

use harness_config::Diagnostic;

use super::Status;
use crate::output::{Context, plural, print_json};

pub fn run(ctx: &Context) -> Status {
    super::heap::prepare_for_large_load();
    let mut loaded = super::load(ctx, &super::load_options(ctx));
    if let Some(project) = &loaded.project
        && let Some(d) = too_large(ctx, project)
    {
        loaded.errors.push(d);
    }
    if ctx.json() {
        let all: Vec<&Diagnostic> = loaded.diagnostics().collect();
        print_json(&all);
    } else {
        crate::errout!("{}", ctx.render_diagnostics(&loaded));
        let file = ctx.file.display();
        match &loaded.project {
            Some(project) if loaded.is_valid() => crate::outln!(
                "{file}: valid: {}, {}",
                plural(project.services.len(), "service"),
                plural(loaded.warnings.len(), "warning")
            ),
            _ => crate::errln!(
                "{file}: invalid: {}, {}",
                plural(loaded.errors.len(), "error"),
                plural(loaded.warnings.len(), "warning")
            ),
        }
    }
    let status = if loaded.is_valid() {
        Status::Ok
    } else {
        Status::Invalid
    };
    // The process exits next: freeing a large model node by node would only delay the exit.
    std::mem::forget(loaded);
    status
}

/// The error `start` would give for a project over the daemon's request limit.
///
/// `start` sends the project as YAML inside a JSON string. Only the length matters here, so the
/// YAML is written into a counter of its JSON-escaped length rather than into a string that is
/// then encoded again: the same number, without building two copies of a large project.
///
/// Writing the YAML is most of the check's time, so it is skipped when an upper bound on its
/// length ([`super::yaml_bound`]) already shows the project cannot be over the limit.
fn too_large(ctx: &Context, project: &harness_config::Project) -> Option<Diagnostic> {
    let dir = std::path::absolute(&ctx.file).ok()?.display().to_string();
    let bound = super::yaml_bound::json_escaped_yaml_len_bound(project)
        .map(|yaml| yaml + empty_start_params_len(project, dir.clone()).unwrap_or(usize::MAX / 2));
    if bound.is_some_and(super::request_size::fits) {
        return None;
    }
    let len = start_params_len(project, dir)?;
    super::request_size::check(&ctx.file, project, len)
}

/// The length of `start`'s params for `project` encoded as JSON.
fn start_params_len(project: &harness_config::Project, dir: String) -> Option<usize> {
    let mut yaml = JsonStringLen(0);
    serde_saphyr::to_fmt_writer(&mut yaml, project).ok()?;
    Some(empty_start_params_len(project, dir)? + yaml.0)
}

/// The length of `start`'s params for `project` encoded as JSON, without the YAML text.
fn empty_start_params_len(project: &harness_config::Project, dir: String) -> Option<usize> {
    let params = harness_protocol::wire::StartParams {
        project: project.name.clone(),
        yaml: String::new(),
        dir,
        services: Vec::new(),
        remove_orphans: false,
        scale: None,
    };
    Some(serde_json::to_string(&params).ok()?.len())
}

/// Counts the bytes of the text written to it as serde_json writes it inside a string: `"`, `\`
/// and control characters escaped (two bytes for the short escapes, six for `\u00XX`), every
/// other byte as is.
struct JsonStringLen(usize);

impl std::fmt::Write for JsonStringLen {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0 += s
            .bytes()
            .map(|b| match b {
                b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
                0x00..=0x1f => 6,
                _ => 1,
            })
            .sum::<usize>();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The counted length is the length of the params `start` encodes, escapes included.
    #[test]
    fn counted_params_length_is_the_encoded_length() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("services.yaml");
        std::fs::write(
            &file,
            "name: \"q\\\"uote\"\nservices:\n  a:\n    command: \"printf 'a\\tb\\\\n\\u0001\\\"é'\"\n    env: {X: \"line1\\nline2\", Y: \"back\\\\slash\"}\n",
        )
        .unwrap();
        let loaded = harness_config::load(&file);
        let project = loaded.project.expect("valid");
        let dir_text = file.parent().unwrap().display().to_string();
        let full = harness_protocol::wire::StartParams {
            project: project.name.clone(),
            yaml: serde_saphyr::to_string(&project).unwrap(),
            dir: dir_text.clone(),
            services: Vec::new(),
            remove_orphans: false,
            scale: None,
        };
        let expected = serde_json::to_string(&full).unwrap();
        // Quotes, backslashes and newlines in the YAML are escaped in the JSON.
        assert!(
            expected.contains("\\\"") && expected.contains("\\\\") && expected.contains("\\n"),
            "{expected}"
        );
        assert_eq!(start_params_len(&project, dir_text), Some(expected.len()));
    }
}
