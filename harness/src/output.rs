//! How results reach the terminal: colors, JSON, rendered diagnostics.

use std::io::IsTerminal;

use harness_config::Loaded;
use miette::{GraphicalReportHandler, GraphicalTheme};

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
        let theme = if self.color {
            GraphicalTheme::unicode()
        } else {
            GraphicalTheme::unicode_nocolor()
        };
        let handler = GraphicalReportHandler::new_themed(theme).with_context_lines(1);
        let mut out = String::new();
        for d in loaded.report() {
            if handler.render_report(&mut out, &d).is_err() {
                out.push_str(&d.diagnostic.to_string());
            }
            out.push('\n');
        }
        out
    }
}

/// Pretty JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: cannot encode JSON: {e}"),
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
