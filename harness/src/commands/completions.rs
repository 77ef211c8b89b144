//! `harness completions SHELL`: the shell's registration of dynamic completions (clap_complete's
//! `CompleteEnv`): at TAB the shell asks `harness` itself, which offers commands and flags, the
//! service names of ./services.yaml (or `$HARNESS_FILE`) and the project names the running daemon
//! knows. And `harness manpage`.

use std::io::Write;
use std::time::Duration;

use clap::CommandFactory;
use clap_complete::engine::CompletionCandidate;

use super::Status;
use crate::cli::{Cli, DaemonArgs};

pub fn run(shell: clap_complete::Shell) -> Status {
    // CompleteEnv prints the registration when `COMPLETE=SHELL` is set and nothing follows.
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            crate::errln!("error: cannot find the harness executable: {e}");
            return Status::Failed;
        }
    };
    match std::process::Command::new(exe)
        .env("COMPLETE", shell.to_string())
        .status()
    {
        Ok(s) if s.success() => Status::Ok,
        Ok(_) => Status::Failed,
        Err(e) => {
            crate::errln!("error: {e}");
            Status::Failed
        }
    }
}

/// `harness manpage`: the man page (roff) on stdout.
pub fn manpage() -> Status {
    // Rendered first, then written: a closed pipe (`| head`) ends us like other Unix tools.
    let mut page = Vec::new();
    if let Err(e) = clap_mangen::Man::new(Cli::command()).render(&mut page) {
        crate::errln!("error: {e}");
        return Status::Failed;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(&page).and_then(|()| out.flush()) {
        crate::output::exit_on_write_error(&e);
    }
    Status::Ok
}

/// Service names: of the services file here, else of every project the daemon knows.
pub fn service_names() -> Vec<CompletionCandidate> {
    let file = std::env::var_os("HARNESS_FILE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "services.yaml".into());
    if let Some(p) = harness_config::load(&file).project {
        return p.services.keys().map(CompletionCandidate::new).collect();
    }
    from_daemon(|e| e.name.clone())
}

/// Project names the daemon knows.
pub fn project_names() -> Vec<CompletionCandidate> {
    from_daemon(|e| e.project.clone())
}

/// Asks a running daemon (never starts one), for at most a second.
fn from_daemon(pick: fn(&harness_protocol::ServiceEntry) -> String) -> Vec<CompletionCandidate> {
    use futures_lite::FutureExt as _;
    use harness_protocol::method;
    use harness_protocol::wire::{StatusParams, StatusResult};
    let args = DaemonArgs {
        url: std::env::var("HARNESS_DAEMON").ok(),
        no_autostart: true,
        token_file: std::env::var_os("HARNESS_TOKEN_FILE").map(Into::into),
    };
    let ask = async {
        let client = crate::client::connect(&args).await.ok()?;
        let r: StatusResult = client
            .call::<method::Status>(&StatusParams { project: None })
            .await
            .ok()?;
        Some(r.services)
    };
    let entries = smol::block_on(ask.or(async {
        smol::Timer::after(Duration::from_secs(1)).await;
        None
    }))
    .unwrap_or_default();
    let mut names: Vec<String> = entries.iter().map(pick).collect();
    names.sort();
    names.dedup();
    names.into_iter().map(CompletionCandidate::new).collect()
}
