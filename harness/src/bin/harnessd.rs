//! `harnessd`: the daemon alone. The same daemon as `harness daemon run`, in an executable
//! without the CLI's code (parser, tables, diagnostics, TLS client), which a long-lived process
//! would otherwise keep mapped: 1.8 MiB less resident memory (ADR 0024).

use std::process::ExitCode;

use harness::daemon::args::{self, Invocation};

fn main() -> ExitCode {
    let invocation = args::parse(
        std::env::args_os().skip(1),
        std::env::var_os("HARNESS_LISTEN"),
    );
    match invocation {
        Ok(Invocation::Run(opts)) => {
            // Runs this executable again in place, once, without glibc's per-thread cache (ADR 0041).
            harness::daemon::without_thread_malloc_cache();
            match harness::daemon::run(opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    harness::errln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Ok(Invocation::Help) => {
            harness::out!("{}", args::USAGE);
            ExitCode::SUCCESS
        }
        Ok(Invocation::Version) => {
            harness::outln!("harnessd {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Ok(Invocation::BuildId) => {
            harness::outln!("{}", args::BUILD_ID);
            ExitCode::SUCCESS
        }
        Err(e) => {
            harness::errln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
