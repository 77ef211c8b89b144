//! The command line, declared with clap derive. Global flags apply to every command.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "harness",
    version,
    about = "Run services across processes, containers and SSH hosts",
    propagate_version = true
)]
pub struct Cli {
    /// The services file.
    #[arg(
        short = 'f',
        long = "file",
        global = true,
        value_name = "PATH",
        env = "HARNESS_FILE",
        default_value = "services.yaml"
    )]
    pub file: PathBuf,

    /// Output format for reports.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,

    /// No colors (also when NO_COLOR is set or output is not a terminal).
    #[arg(long, global = true)]
    pub no_color: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For people: tables and rendered diagnostics.
    Table,
    /// For scripts: JSON on stdout.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the services file and report every problem (exit 0 valid, 2 invalid).
    Validate,
    /// Inspect the resolved configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// The configuration after substitution and defaults (YAML, or JSON with -o json).
    Show {
        /// Print secret-looking values (PASSWORD, TOKEN, SECRET, KEY, CREDENTIAL) unmasked.
        #[arg(long)]
        show_secrets: bool,
    },
    /// Start order in waves; stop order is the reverse.
    Deps,
    /// The JSON Schema of the services file, for editors.
    Schema,
}
