//! How results reach the terminal: colors, JSON, rendered diagnostics.

use std::io::IsTerminal;

use harness_config::{Loaded, SourceDiagnostic};
use miette::{
    GraphicalReportHandler, GraphicalTheme, MietteError, MietteSpanContents, NamedSource,
    SourceCode, SourceSpan, SpanContents,
};

use crate::cli::{Cli, DaemonArgs, Output};

/// What every command gets besides its own arguments.
pub struct Context {
    /// The services file (the first `-f`).
    pub file: std::path::PathBuf,
    /// Every `-f`: the services file, then its override files.
    pub files: Vec<std::path::PathBuf>,
    /// `--profile`/`HARNESS_PROFILES`.
    pub profiles: Vec<String>,
    /// `-f`/`HARNESS_FILE` was given (otherwise `file` is the default `services.yaml`).
    pub file_given: bool,
    /// `-p`: the project to act on without reading the services file.
    pub project: Option<String>,
    pub output: Output,
    /// Colors on stderr (diagnostics, progress).
    pub color: bool,
    /// Colors on stdout (tables, log prefixes).
    pub color_out: bool,
    pub daemon: DaemonArgs,
}

impl Context {
    pub fn new(cli: &Cli) -> Self {
        let no_color_env = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let colors = !cli.no_color && !no_color_env;
        Context {
            file: cli
                .file
                .first()
                .cloned()
                .unwrap_or_else(|| std::path::PathBuf::from("services.yaml")),
            files: if cli.file.is_empty() {
                vec![std::path::PathBuf::from("services.yaml")]
            } else {
                cli.file.clone()
            },
            profiles: cli.profiles.clone(),
            file_given: !cli.file.is_empty(),
            project: cli.project.clone(),
            output: cli.output,
            color: colors && std::io::stderr().is_terminal(),
            color_out: colors && std::io::stdout().is_terminal(),
            daemon: cli.daemon.clone(),
        }
    }

    pub fn json(&self) -> bool {
        self.output == Output::Json
    }

    /// Every diagnostic of `loaded` with its snippet, as miette draws it.
    pub fn render_diagnostics(&self, loaded: &Loaded) -> String {
        render(loaded, self.color)
    }
}

fn render(loaded: &Loaded, color: bool) -> String {
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme).with_context_lines(1);
    let mut out = String::new();
    let source = IndexedSource::new(&loaded.source);
    for d in loaded.report() {
        let d = Indexed {
            inner: &d,
            source: &source,
        };
        if handler.render_report(&mut out, &d).is_err() {
            out.push_str(&d.inner.diagnostic.to_string());
        }
        out.push('\n');
    }
    out
}

/// The services file with the offset of each line's start. miette finds a snippet by scanning the
/// source from its first byte, once per diagnostic: 10,000 warnings on a 10,000-service file took
/// 14 s. This finds the snippet's first line by binary search and lets miette scan from there.
struct IndexedSource<'a> {
    named: &'a NamedSource<String>,
    /// Offsets of line starts (after `\n`, `\r\n` or a lone `\r`, as miette counts lines).
    line_starts: Vec<usize>,
}

impl<'a> IndexedSource<'a> {
    fn new(named: &'a NamedSource<String>) -> Self {
        let bytes = named.inner().as_bytes();
        let mut line_starts = vec![0];
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                    i += 1;
                    line_starts.push(i + 1);
                }
                b'\r' | b'\n' => line_starts.push(i + 1),
                _ => {}
            }
            i += 1;
        }
        IndexedSource { named, line_starts }
    }
}

impl SourceCode for IndexedSource<'_> {
    fn read_span<'b>(
        &'b self,
        span: &SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn SpanContents<'b> + 'b>, MietteError> {
        let text = self.named.inner().as_bytes();
        // The line holding the span's start, then the first context line before it.
        let line = self.line_starts.partition_point(|&s| s <= span.offset()) - 1;
        let first = line.saturating_sub(context_lines_before);
        let base = self.line_starts[first];
        let window = text.get(base..).ok_or(MietteError::OutOfBounds)?;
        let shifted = SourceSpan::new((span.offset() - base).into(), span.len());
        let c = window.read_span(&shifted, context_lines_before, context_lines_after)?;
        Ok(Box::new(MietteSpanContents::new_named(
            self.named.name().to_owned(),
            c.data(),
            SourceSpan::new((c.span().offset() + base).into(), c.span().len()),
            c.line() + first,
            c.column(),
            c.line_count() + first,
        )))
    }
}

/// A diagnostic whose snippet is read from an [`IndexedSource`].
struct Indexed<'a> {
    inner: &'a SourceDiagnostic,
    source: &'a IndexedSource<'a>,
}

impl std::fmt::Debug for Indexed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.inner, f)
    }
}

impl std::fmt::Display for Indexed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self.inner, f)
    }
}

impl std::error::Error for Indexed<'_> {}

impl miette::Diagnostic for Indexed<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn std::fmt::Display + 'b>> {
        self.inner.code()
    }

    fn severity(&self) -> Option<miette::Severity> {
        self.inner.severity()
    }

    fn help<'b>(&'b self) -> Option<Box<dyn std::fmt::Display + 'b>> {
        self.inner.help()
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.inner.source_code().map(|_| self.source as _)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        self.inner.labels()
    }
}

/// Pretty JSON on stdout.
/// A table in the CLI's one style; without colour (`--color never`, not a terminal) it draws no
/// styling escapes.
pub fn table(color: bool) -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    if !color {
        table.force_no_tty();
    }
    table
}

pub fn print_json(value: &impl serde::Serialize) {
    // Room for `status -o json` of 100 services (50 KB) from the start: grown by doubling from
    // nothing, the text was copied seven times into ever larger blocks.
    let mut text = Vec::with_capacity(64 * 1024);
    match serde_json::to_writer_pretty(&mut text, value) {
        Ok(()) => {
            text.push(b'\n');
            use std::io::Write;
            if let Err(e) = std::io::stdout().lock().write_all(&text) {
                exit_on_write_error(&e);
            }
        }
        Err(e) => crate::errln!("error: cannot encode JSON: {e}"),
    }
}

pub fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// A duration as people read it in a table: `850ms`, `12s`, `5m12s`, `3h04m`, `2d05h`.
pub fn short_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        1..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

/// One compact JSON line on stdout (for streams: logs, events).
pub fn print_json_line(
    out: &mut impl std::io::Write,
    value: &impl serde::Serialize,
) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, value).map_err(std::io::Error::other)?;
    out.write_all(b"\n")
}

/// ANSI colors for per-service prefixes, picked by name so a service keeps its color.
pub fn service_color(name: &str) -> &'static str {
    const COLORS: [&str; 6] = ["36", "33", "32", "35", "34", "91"];
    let h = name
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    COLORS[h as usize % COLORS.len()]
}

/// Writes to stdout (`stderr` false) or stderr. A reader that went away (`harness status | head`)
/// ends the program the way it ends other Unix tools: quietly, by SIGPIPE (exit status 141 in a
/// shell). Any other write error ends it with status 1, since its output can no longer be given.
pub fn write_or_exit(stderr: bool, args: std::fmt::Arguments<'_>, newline: bool) {
    use std::io::Write;
    let result = if stderr {
        let mut e = std::io::stderr().lock();
        e.write_fmt(args)
            .and_then(|()| if newline { e.write_all(b"\n") } else { Ok(()) })
    } else {
        let mut o = std::io::stdout().lock();
        o.write_fmt(args)
            .and_then(|()| if newline { o.write_all(b"\n") } else { Ok(()) })
    };
    if let Err(e) = result {
        exit_on_write_error(&e);
    }
}

/// Ends the program after stdout or stderr failed: by SIGPIPE for a closed pipe, else status 1.
pub fn exit_on_write_error(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        // SAFETY: restoring the default disposition of SIGPIPE and raising it in this process;
        // no handler of ours runs, the default action terminates the process.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::raise(libc::SIGPIPE);
        }
    }
    std::process::exit(1)
}

/// `println!` that does not panic on a closed pipe (see [`write_or_exit`]).
#[macro_export]
macro_rules! outln {
    () => { $crate::output::write_or_exit(false, format_args!(""), true) };
    ($($arg:tt)*) => { $crate::output::write_or_exit(false, format_args!($($arg)*), true) };
}

/// `print!` that does not panic on a closed pipe (see [`write_or_exit`]).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::write_or_exit(false, format_args!($($arg)*), false) };
}

/// `eprintln!` that does not panic on a closed pipe (see [`write_or_exit`]).
#[macro_export]
macro_rules! errln {
    () => { $crate::output::write_or_exit(true, format_args!(""), true) };
    ($($arg:tt)*) => { $crate::output::write_or_exit(true, format_args!($($arg)*), true) };
}

/// `eprint!` that does not panic on a closed pipe (see [`write_or_exit`]).
#[macro_export]
macro_rules! errout {
    ($($arg:tt)*) => { $crate::output::write_or_exit(true, format_args!($($arg)*), false) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What miette draws from the whole source, the way it did before [`IndexedSource`].
    fn render_plain(loaded: &Loaded) -> String {
        let handler = GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
            .with_context_lines(1);
        let mut out = String::new();
        for d in loaded.report() {
            handler.render_report(&mut out, &d).unwrap();
            out.push('\n');
        }
        out
    }

    #[test]
    fn indexed_snippets_are_the_snippets_miette_draws() {
        let files = [
            "nme: x\nservices:\n  a:\n    command: [sleep, '1']\n    bogus: 1\n",
            "name: x\r\nservices:\r\n  a:\r\n    comand: [sleep, '1']\r\n  b:\r\n    command: true\r\n    depends_on: [zz]",
            "name: x\nservices:\n  a:\n    command: [sleep, '1']\n    depends_on: [b]\n  b:\n    command: [sleep, '1']\n    depends_on: [a]\n    restart: sometimes",
            "services: [",
        ];
        for text in files {
            let loaded = harness_config::load_str(
                std::path::Path::new("services.yaml"),
                text.to_owned(),
                &|_: &str| None,
            );
            assert!(
                loaded.diagnostics().count() > 0,
                "{text:?} has no diagnostic"
            );
            assert_eq!(render(&loaded, false), render_plain(&loaded), "{text:?}");
        }
    }
}
