//! `harness package build DIR` and `harness package verify ARCHIVE`: local, no daemon. Deploying is
//! `packages::deploy` (see orchestrator::deploy for the driver with registry events).

use std::path::{Path, PathBuf};

use clap::Subcommand;
use miette::{GraphicalReportHandler, GraphicalTheme};
use serde::Serialize;

use super::Status;
use crate::output::{Context, print_json};

#[derive(Debug, Subcommand)]
pub enum PackageCommand {
    /// Build NAME-VERSION.tar.zst and its .sha256 from a directory holding manifest.yaml. The same
    /// directory always gives the same bytes.
    Build {
        /// The package directory.
        dir: PathBuf,
        /// Where to write the archive [default: the current directory]. (`-o` is the output format.)
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Check an archive: its .sha256 file, every entry against the safety rules, its manifest.
    Verify { archive: PathBuf },
}

/// What `-o json` prints.
#[derive(Serialize)]
struct Built {
    name: String,
    version: String,
    path: PathBuf,
    sha256: String,
    size: u64,
    entries: usize,
    unpacked_bytes: u64,
}

pub fn run(ctx: &Context, cmd: PackageCommand) -> Status {
    let result = match &cmd {
        PackageCommand::Build { dir, out } => {
            packages::build(dir, out.as_deref().unwrap_or(Path::new(".")))
        }
        PackageCommand::Verify { archive } => packages::Package::open(archive),
    };
    match result {
        Ok(p) => {
            if ctx.json() {
                print_json(&Built {
                    name: p.manifest.name.clone(),
                    version: p.manifest.version.to_string(),
                    path: p.path.clone(),
                    sha256: p.sha256.clone(),
                    size: p.size,
                    entries: p.entries,
                    unpacked_bytes: p.unpacked_bytes,
                });
            } else {
                crate::outln!("{}  {}", p.sha256, p.path.display());
                let verb = if matches!(cmd, PackageCommand::Build { .. }) {
                    "built"
                } else {
                    "verified"
                };
                crate::errln!(
                    "{verb} {} ({} bytes, {} entries, {} bytes unpacked)",
                    p.id(),
                    p.size,
                    p.entries,
                    p.unpacked_bytes
                );
            }
            Status::Ok
        }
        Err(packages::Error::Manifest(m)) => {
            let theme = if ctx.color {
                GraphicalTheme::unicode()
            } else {
                GraphicalTheme::unicode_nocolor()
            };
            let mut out = String::new();
            if GraphicalReportHandler::new_themed(theme)
                .render_report(&mut out, &*m)
                .is_err()
            {
                out = m.to_string();
            }
            crate::errout!("{out}");
            Status::Invalid
        }
        Err(
            e @ (packages::Error::Unsafe { .. }
            | packages::Error::ChecksumMismatch { .. }
            | packages::Error::Corrupt { .. }),
        ) => {
            crate::errln!("error: {e}");
            Status::Invalid
        }
        Err(e) => {
            crate::errln!("error: {e}");
            Status::Failed
        }
    }
}
