//! How results reach the terminal: colors, JSON, rendered diagnostics.

use std::io::IsTerminal;

use harness_config::Loaded;
use miette::{GraphicalReportHandler, GraphicalTheme};

use crate::cli::{Cli, Output};

/// What every command gets besides its own arguments.
pub struct Context {
    pub file: std::path::PathBuf,
    pub output: Output,
    pub color: bool,
}

impl Context {
    pub fn new(cli: &Cli) -> Self {
        let no_color_env = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Context {
            file: cli.file.clone(),
            output: cli.output,
            color: !cli.no_color && !no_color_env && std::io::stderr().is_terminal(),
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
