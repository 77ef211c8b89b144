//! `manifest.yaml`: what a package is and how to run it.
//!
//! Parsed with serde-saphyr into spanned fields, so that every problem (a YAML error, an unknown key, a
//! version that is not semver, a name that would not make a safe path) is reported with file, line and
//! column, like services.yaml diagnostics are.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use miette::{LabeledSpan, NamedSource, SourceSpan};
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

/// The manifest's file name, at the package directory's and the archive's root.
pub const MANIFEST_FILE: &str = "manifest.yaml";
/// Manifests larger than this are refused before parsing.
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;
/// Longest package name accepted (names become directory names on hosts).
pub const MAX_NAME_LEN: usize = 64;

/// A validated package manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// `[a-z0-9][a-z0-9_-]*`, at most [`MAX_NAME_LEN`] bytes: safe in a path and in a shell word.
    pub name: String,
    pub version: semver::Version,
    pub description: String,
    /// Paths (files or directories, relative to the package directory) to include; `None` means everything
    /// in the directory. `manifest.yaml` is always included.
    pub files: Option<Vec<String>>,
    /// Shell command line (`sh -c`) that runs the service, in the installed directory.
    pub start: String,
    /// Shell command line that stops it; without it the orchestrator signals the process.
    pub stop: Option<String>,
    /// Shell command line run once per install, in the extracted directory, before it is put in place.
    pub setup: Option<String>,
    /// Shell command line that exits 0 when the service is healthy.
    pub health: Option<String>,
    /// Named ports the service listens on.
    pub ports: BTreeMap<String, u16>,
    /// Environment for start, stop, setup and health.
    pub env: BTreeMap<String, String>,
    /// Services this one needs running first.
    pub dependencies: Vec<String>,
    /// Commands that must exist on the host (checked before anything is installed).
    pub requires: Vec<String>,
}

impl Manifest {
    /// `NAME-VERSION`: the archive's stem and the install directory's name.
    pub fn id(&self) -> String {
        format!("{}-{}", self.name, self.version)
    }

    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let bytes = std::fs::read(path)
            .map_err(|e| ManifestError::whole(path, "", format!("cannot read: {e}")))?;
        Self::from_bytes(path, &bytes)
    }

    /// Validates manifest text; `file` is used in messages only.
    pub fn from_bytes(file: &Path, bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::whole(
                file,
                "",
                format!(
                    "{} bytes is larger than the {MAX_MANIFEST_BYTES}-byte limit for a manifest",
                    bytes.len()
                ),
            ));
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|e| ManifestError::whole(file, "", format!("not UTF-8: {e}")))?
            .to_owned();
        let mut errors = ManifestError {
            file: file.to_owned(),
            problems: Vec::new(),
            text: NamedSource::new(file.display().to_string(), text.clone()),
        };
        let raw: Raw = match parse(&text) {
            Ok(raw) => raw,
            Err(problem) => {
                errors.problems.push(problem);
                return Err(errors);
            }
        };
        let manifest = raw.validate(&mut errors.problems);
        match manifest {
            Some(m) if errors.problems.is_empty() => Ok(m),
            _ => Err(errors),
        }
    }
}

fn parse(text: &str) -> Result<Raw, Problem> {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = 16;
    budget.flow_nesting_limit = 16;
    budget.max_aliases = 100;
    budget.max_documents = 1;
    budget.max_nodes = 100_000;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.alias_limits.max_total_replayed_events = 10_000;
    options.strict_booleans = true;
    serde_saphyr::from_str_with_options::<Raw>(text, options).map_err(|e| {
        let loc = e.location();
        let (message, field, help) = match e.without_snippet() {
            serde_saphyr::Error::SerdeUnknownField {
                field, expected, ..
            } => {
                let best = expected
                    .iter()
                    .map(|k| (strsim::jaro_winkler(field, k), *k))
                    .filter(|(score, _)| *score > 0.75)
                    .max_by(|a, b| a.0.total_cmp(&b.0));
                let help = match best {
                    Some((_, k)) => format!("did you mean `{k}`?"),
                    None => format!("known keys: {}", expected.join(", ")),
                };
                (format!("unknown key `{field}`"), field.clone(), Some(help))
            }
            serde_saphyr::Error::SerdeMissingField { field, .. } => (
                format!("missing required key `{field}`"),
                (*field).to_owned(),
                None,
            ),
            other => (one_line(&other.to_string()), String::new(), None),
        };
        Problem::at(loc.as_ref(), field, message, help)
    })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: Spanned<String>,
    version: Spanned<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    files: Option<Vec<Spanned<String>>>,
    start: Spanned<String>,
    #[serde(default)]
    stop: Option<String>,
    #[serde(default)]
    setup: Option<String>,
    #[serde(default)]
    health: Option<String>,
    #[serde(default)]
    ports: BTreeMap<String, Spanned<u16>>,
    #[serde(default)]
    env: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    dependencies: Vec<Spanned<String>>,
    #[serde(default)]
    requires: Vec<Spanned<String>>,
}

/// `[a-z0-9][a-z0-9_-]*`: lowercase so `Web` and `web` cannot both be installed, no dots so
/// `NAME-VERSION` splits unambiguously.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME_LEN
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
}

fn valid_env_name(k: &str) -> bool {
    let b = k.as_bytes();
    !b.is_empty()
        && !b[0].is_ascii_digit()
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_')
}

impl Raw {
    fn validate(self, problems: &mut Vec<Problem>) -> Option<Manifest> {
        let mut bad = |s: &Location, field: &str, msg: String, help: Option<&str>| {
            problems.push(Problem::at(
                Some(s),
                field.to_owned(),
                msg,
                help.map(str::to_owned),
            ));
        };
        if !valid_name(&self.name.value) {
            bad(
                &self.name.referenced,
                "name",
                format!("invalid package name {:?}", self.name.value),
                Some(
                    "use 1-64 lowercase letters, digits, `-` or `_`, starting with a letter or digit",
                ),
            );
        }
        let version = match semver::Version::parse(self.version.value.trim()) {
            Ok(v) if v.to_string().len() <= 64 => Some(v),
            Ok(_) => {
                bad(
                    &self.version.referenced,
                    "version",
                    "version longer than 64 characters".into(),
                    None,
                );
                None
            }
            Err(e) => {
                bad(
                    &self.version.referenced,
                    "version",
                    format!("version {:?} is not semver: {e}", self.version.value),
                    Some(
                        "write MAJOR.MINOR.PATCH, e.g. 1.0.0 (quote it if YAML reads it as a number)",
                    ),
                );
                None
            }
        };
        let commands = [
            ("start", Some(&self.start.value)),
            ("stop", self.stop.as_ref()),
            ("setup", self.setup.as_ref()),
            ("health", self.health.as_ref()),
        ];
        for (field, text) in commands {
            if text.is_some_and(|t| t.contains('\0')) {
                bad(
                    &self.start.referenced,
                    field,
                    format!("{field} contains a NUL character"),
                    None,
                );
            }
        }
        for (k, v) in &self.env {
            if v.value.contains('\0') {
                bad(
                    &v.referenced,
                    &format!("env.{k}"),
                    "value contains a NUL character".into(),
                    None,
                );
            }
        }
        if self.start.value.trim().is_empty() {
            bad(
                &self.start.referenced,
                "start",
                "start command is empty".into(),
                None,
            );
        }
        if let Some(files) = &self.files {
            for (i, f) in files.iter().enumerate() {
                if let Err(why) = crate::safety::check_relative_path(&f.value) {
                    bad(
                        &f.referenced,
                        &format!("files[{i}]"),
                        format!("{:?}: {why}", f.value),
                        None,
                    );
                }
            }
        }
        for (name, port) in &self.ports {
            if port.value == 0 {
                bad(
                    &port.referenced,
                    &format!("ports.{name}"),
                    "port 0 is not a port".into(),
                    None,
                );
            }
        }
        for (k, v) in &self.env {
            if !valid_env_name(k) {
                bad(
                    &v.referenced,
                    &format!("env.{k}"),
                    format!("invalid variable name {k:?}"),
                    None,
                );
            }
        }
        for (i, d) in self.dependencies.iter().enumerate() {
            if d.value.trim().is_empty() {
                bad(
                    &d.referenced,
                    &format!("dependencies[{i}]"),
                    "empty dependency".into(),
                    None,
                );
            }
        }
        for (i, r) in self.requires.iter().enumerate() {
            let ok = !r.value.is_empty()
                && r.value.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+' | b'/')
                });
            if !ok {
                bad(
                    &r.referenced,
                    &format!("requires[{i}]"),
                    format!("{:?} is not a command name", r.value),
                    Some("list program names such as python3 or curl"),
                );
            }
        }
        Some(Manifest {
            name: self.name.value,
            version: version?,
            description: self.description.unwrap_or_default(),
            files: self.files.map(|v| v.into_iter().map(|s| s.value).collect()),
            start: self.start.value,
            stop: self.stop,
            setup: self.setup,
            health: self.health,
            ports: self.ports.into_iter().map(|(k, v)| (k, v.value)).collect(),
            env: self.env.into_iter().map(|(k, v)| (k, v.value)).collect(),
            dependencies: self.dependencies.into_iter().map(|s| s.value).collect(),
            requires: self.requires.into_iter().map(|s| s.value).collect(),
        })
    }
}

/// One problem in a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based; absent when the problem is about the file as a whole.
    pub line: Option<u32>,
    pub column: Option<u32>,
    /// The key, e.g. `version` or `files[2]`.
    pub field: String,
    pub message: String,
    pub help: Option<String>,
    /// Byte offset and length in the source, for the snippet.
    pub span: Option<(usize, usize)>,
}

impl Problem {
    fn at(loc: Option<&Location>, field: String, message: String, help: Option<String>) -> Problem {
        let loc = loc.filter(|l| l.line() > 0);
        Problem {
            line: loc.map(|l| u32::try_from(l.line()).unwrap_or(u32::MAX)),
            column: loc.map(|l| u32::try_from(l.column()).unwrap_or(u32::MAX)),
            field,
            message,
            help,
            span: loc.and_then(|l| {
                let s = l.span();
                let off = usize::try_from(s.byte_offset()?).ok()?;
                let len = s
                    .byte_len()
                    .and_then(|n| usize::try_from(n).ok())
                    .unwrap_or(1)
                    .max(1);
                Some((off, len))
            }),
        }
    }
}

/// An invalid manifest: every problem found, with positions. Displays one `file:line:col: message` line per
/// problem; renders with snippets through miette.
#[derive(Debug, thiserror::Error)]
pub struct ManifestError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
    text: NamedSource<String>,
}

impl ManifestError {
    pub(crate) fn whole(file: &Path, field: &str, message: String) -> ManifestError {
        ManifestError {
            file: file.to_owned(),
            problems: vec![Problem {
                line: None,
                column: None,
                field: field.to_owned(),
                message,
                help: None,
                span: None,
            }],
            text: NamedSource::new(file.display().to_string(), String::new()),
        }
    }
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}", self.file.display())?;
            if let (Some(l), Some(c)) = (p.line, p.column) {
                write!(f, ":{l}:{c}")?;
            }
            write!(f, ": {}", p.message)?;
            if !p.field.is_empty() {
                write!(f, " (at {})", p.field)?;
            }
            if let Some(h) = &p.help {
                write!(f, "; help: {h}")?;
            }
        }
        Ok(())
    }
}

impl miette::Diagnostic for ManifestError {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new("harness::package::manifest"))
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.text)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        Some(Box::new(self.problems.iter().filter_map(|p| {
            let (off, len) = p.span?;
            Some(LabeledSpan::new_with_span(
                Some(p.message.clone()),
                SourceSpan::new(off.into(), len),
            ))
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::from_bytes(Path::new("manifest.yaml"), text.as_bytes())
    }

    #[test]
    fn full_manifest() {
        let m = parse(
            "name: web\nversion: 1.2.3-rc.1\ndescription: d\nfiles: [server.py, www]\nstart: python3 server.py\n\
             stop: kill 1\nsetup: ./setup.sh\nhealth: true\nports: {http: 8080}\nenv: {A_B: x}\n\
             dependencies: [db]\nrequires: [python3]\n",
        )
        .unwrap();
        assert_eq!(m.id(), "web-1.2.3-rc.1");
        assert_eq!(m.ports["http"], 8080);
        assert_eq!(
            m.files.as_deref(),
            Some(&["server.py".to_owned(), "www".to_owned()][..])
        );
    }

    #[test]
    fn unknown_key_has_position_and_suggestion() {
        let e = parse("name: web\nversion: 1.0.0\nstrat: x\n").unwrap_err();
        let p = &e.problems[0];
        assert_eq!((p.line, p.column), (Some(3), Some(1)), "{e}");
        assert!(p.message.contains("unknown key `strat`"), "{e}");
        assert_eq!(p.help.as_deref(), Some("did you mean `start`?"));
        assert!(
            e.to_string()
                .starts_with("manifest.yaml:3:1: unknown key `strat`"),
            "{e}"
        );
    }

    #[test]
    fn bad_version_and_name_reported_together() {
        let e = parse("name: ../etc\nversion: '1.0'\nstart: x\n").unwrap_err();
        assert_eq!(e.problems.len(), 2, "{e}");
        assert_eq!(
            (
                e.problems[0].line,
                e.problems[0].column,
                e.problems[0].field.as_str()
            ),
            (Some(1), Some(7), "name")
        );
        assert_eq!(
            (e.problems[1].line, e.problems[1].field.as_str()),
            (Some(2), "version")
        );
    }

    #[test]
    fn unsafe_file_entries_refused() {
        let e = parse("name: a\nversion: 1.0.0\nstart: x\nfiles: [ok, /etc/passwd, a/../../b]\n")
            .unwrap_err();
        assert_eq!(e.problems.len(), 2, "{e}");
        assert_eq!(e.problems[0].field, "files[1]");
        assert_eq!(e.problems[1].field, "files[2]");
    }

    #[test]
    fn nul_characters_refused() {
        let e =
            parse("name: a\nversion: 1.0.0\nstart: \"a\\0b\"\nenv: {X: \"\\0\"}\n").unwrap_err();
        assert_eq!(e.problems.len(), 2, "{e}");
        assert_eq!(e.problems[1].field, "env.X");
    }

    #[test]
    fn missing_start() {
        let e = parse("name: a\nversion: 1.0.0\n").unwrap_err();
        assert!(e.problems[0].message.contains("`start`"), "{e}");
    }

    #[test]
    fn names() {
        for ok in ["web", "a", "web-api_2", "9x"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "Web", "-x", "a.b", "a/b", "a b", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
