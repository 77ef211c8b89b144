//! Problems found in a services.yaml, with where they are and how to fix them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{LabeledSpan, NamedSource, SourceSpan};
use serde::Serialize;

use crate::node::Pos;

/// Errors make a file invalid; warnings do not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// What kind of problem: stable names for scripts and tests (`code` in JSON).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Code {
    /// The file cannot be read.
    Io,
    /// The file exceeds the size cap.
    TooLarge,
    /// Not valid YAML, or it hit a parser limit (aliases, depth, size).
    Syntax,
    UnknownKey,
    WrongType,
    MissingField,
    InvalidValue,
    BadDuration,
    /// A line of a `.env` or `env_file` that Compose's rules refuse.
    EnvFile,
    /// A `${...}` problem: bad syntax, unset variable, unknown reference property.
    Substitution,
    UnknownService,
    UnknownHost,
    DependencyCycle,
    PortConflict,
    /// `user:` on a host whose sudo is disabled.
    SudoDisabled,
    /// A service nobody depends on and without a health check: nothing can tell it works.
    Unobserved,
}

impl Code {
    /// Prefixed name for miette's code line, e.g. `harness::unknown-key`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Io => "io",
            Code::TooLarge => "too-large",
            Code::Syntax => "syntax",
            Code::UnknownKey => "unknown-key",
            Code::WrongType => "wrong-type",
            Code::MissingField => "missing-field",
            Code::InvalidValue => "invalid-value",
            Code::BadDuration => "bad-duration",
            Code::Substitution => "substitution",
            Code::EnvFile => "env-file",
            Code::UnknownService => "unknown-service",
            Code::UnknownHost => "unknown-host",
            Code::DependencyCycle => "dependency-cycle",
            Code::PortConflict => "port-conflict",
            Code::SudoDisabled => "sudo-disabled",
            Code::Unobserved => "unobserved",
        }
    }
}

/// One problem. Its JSON form is the `-o json` output of `harness validate`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub code: Code,
    pub message: String,
    pub file: PathBuf,
    /// 1-based; absent when the problem is about the file as a whole.
    pub line: Option<u32>,
    pub column: Option<u32>,
    /// The field, e.g. `services.api.health_check.interval`.
    pub path: String,
    pub help: Option<String>,
    /// Byte range in the source, for the snippet.
    #[serde(skip)]
    pub span: Option<(usize, usize)>,
}

impl Diagnostic {
    pub(crate) fn new(
        severity: Severity,
        code: Code,
        file: &Path,
        pos: Option<Pos>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity,
            code,
            message: message.into(),
            file: file.to_owned(),
            line: pos.map(|p| p.line),
            column: pos.map(|p| p.column),
            path: path.into(),
            help: None,
            span: pos.and_then(|p| p.offset.map(|o| (o as usize, p.len as usize))),
        }
    }

    pub(crate) fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// `file:line:col: severity: message (path)`: the one-line form for logs and non-tty output.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, ":{l}:{c}")?;
        }
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, ": {sev}: {}", self.message)?;
        if !self.path.is_empty() {
            write!(f, " (at {})", self.path)?;
        }
        if let Some(help) = &self.help {
            write!(f, "; help: {help}")?;
        }
        Ok(())
    }
}

/// A [`Diagnostic`] with the source text, for miette's snippet rendering.
#[derive(Debug)]
pub struct SourceDiagnostic {
    pub diagnostic: Diagnostic,
    pub source: Arc<NamedSource<String>>,
}

impl fmt::Display for SourceDiagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Without a snippet (a `.env` or `env_file` line) the place goes in the message.
        if let (None, Some(l), Some(c)) = (
            self.diagnostic.span,
            self.diagnostic.line,
            self.diagnostic.column,
        ) {
            write!(f, "{}:{l}:{c}: ", self.diagnostic.file.display())?;
        }
        f.write_str(&self.diagnostic.message)?;
        if !self.diagnostic.path.is_empty() {
            write!(f, " (at {})", self.diagnostic.path)?;
        }
        Ok(())
    }
}

impl std::error::Error for SourceDiagnostic {}

impl miette::Diagnostic for SourceDiagnostic {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(format!(
            "harness::{}",
            self.diagnostic.code.as_str()
        )))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.diagnostic.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.diagnostic
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.diagnostic.span.map(|_| &*self.source as _)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let (offset, len) = self.diagnostic.span?;
        let label = match (self.diagnostic.line, self.diagnostic.column) {
            (Some(l), Some(c)) => format!("line {l}, column {c}"),
            _ => String::new(),
        };
        Some(Box::new(std::iter::once(LabeledSpan::new_with_span(
            Some(label),
            SourceSpan::new(offset.into(), len),
        ))))
    }
}
