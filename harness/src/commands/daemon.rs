//! `harness daemon run|start|stop|status|logs`. Only `run` and `start` ever start a daemon.

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::{Duration, Instant};

use harness_protocol::method;
use harness_protocol::wire::{DaemonStatusResult, DaemonStopParams};
use harness_protocol::{Client, HarnessHome};

use super::{Status, request_failed};
use crate::cli::{DaemonCommand, ListenArgs};
use crate::client::{self, DAEMON_LOG, pid_alive};
use crate::daemon::RunOptions;
use crate::output::{Context, print_json, short_duration};

pub fn run(ctx: &Context, cmd: DaemonCommand) -> Status {
    let home = match HarnessHome::from_env() {
        Ok(h) => h,
        Err(e) => {
            crate::errln!("error: {e}");
            return Status::Failed;
        }
    };
    match cmd {
        DaemonCommand::Run(args) => foreground(RunOptions {
            listen: args.listen,
            stop_services: args.stop_services,
            detached: args.detached,
        }),
        DaemonCommand::Start(args) => start(ctx, &home, args),
        DaemonCommand::Stop { stop_services } => stop(ctx, &home, stop_services),
        DaemonCommand::Status => status(ctx, &home),
        DaemonCommand::Stats => {
            super::daemon_info::run(ctx, &home, super::daemon_info::What::Stats)
        }
        DaemonCommand::Config => {
            super::daemon_info::run(ctx, &home, super::daemon_info::What::Config)
        }
        DaemonCommand::Env => super::daemon_info::run(ctx, &home, super::daemon_info::What::Env),
        DaemonCommand::Logs { follow } => logs(&home, follow),
    }
}

/// Runs the daemon until it is told to stop: as `harnessd` in this process's place when that is
/// installed beside us (same pid, terminal and signals), else in this process.
fn foreground(opts: RunOptions) -> Status {
    if let Ok((mut lean, true)) = client::daemon_command(&opts) {
        use std::os::unix::process::CommandExt as _;
        let e = lean.exec();
        crate::errln!(
            "warning: cannot run {}: {e}; running the daemon in this process",
            client::DAEMON_EXE
        );
    }
    match crate::daemon::run(opts) {
        Ok(()) => Status::Ok,
        Err(e) => {
            crate::errln!("error: {e:#}");
            Status::Failed
        }
    }
}

/// The daemon named by `--daemon`/env/config, or the local one; never starts one.
/// The running daemon, `None` if there is none, or the error if one answers but is busy (at its
/// connection limit), which is not "no daemon".
pub(super) async fn existing_or_busy(
    ctx: &Context,
    home: &HarnessHome,
) -> anyhow::Result<Option<Client>> {
    let args = crate::cli::DaemonArgs {
        url: ctx.daemon.url.clone(),
        no_autostart: true,
        token_file: ctx.daemon.token_file.clone(),
    };
    let _ = home;
    match client::connect(&args).await {
        Ok(c) => Ok(Some(c)),
        Err(e) if client::is_busy(&e) => Err(e),
        Err(_) => Ok(None),
    }
}

fn start(ctx: &Context, home: &HarnessHome, args: ListenArgs) -> Status {
    smol::block_on(async {
        let found = match existing_or_busy(ctx, home).await {
            Ok(found) => found,
            Err(e) => {
                crate::errln!("error: a daemon is running but {e:#}");
                return Status::Failed;
            }
        };
        if let Some(c) = found
            && let Ok(s) = c
                .call::<method::DaemonStatus>(&harness_protocol::Empty {})
                .await
        {
            crate::outln!("daemon already running: pid {} at {}", s.pid, s.url);
            return Status::Ok;
        }
        let h = home.clone();
        let spawned =
            blocking::unblock(move || client::spawn_daemon(&h, args.listen, args.stop_services));
        let mut child = match spawned.await {
            Ok(c) => c,
            Err(e) => {
                crate::errln!("error: {e:#}");
                return Status::Failed;
            }
        };
        match client::wait_ready(home, &mut child, None).await {
            Ok(_) => {
                let url = home.read_daemon_info().map(|i| i.url).unwrap_or_default();
                crate::outln!("daemon started: pid {} at {url}", child.id());
                Status::Ok
            }
            Err(e) => {
                crate::errln!("error: {e:#}");
                Status::Failed
            }
        }
    })
}

fn stop(ctx: &Context, home: &HarnessHome, stop_services: bool) -> Status {
    smol::block_on(async {
        let found = match existing_or_busy(ctx, home).await {
            Ok(found) => found,
            Err(e) => {
                crate::errln!("error: {e:#}");
                return Status::Failed;
            }
        };
        let Some(client) = found else {
            crate::outln!("no daemon running");
            return Status::Ok;
        };
        let pid = match client
            .call::<method::DaemonStatus>(&harness_protocol::Empty {})
            .await
        {
            Ok(s) => s.pid,
            Err(e) => return request_failed("daemon.status", e),
        };
        if let Err(e) = client
            .call::<method::DaemonStop>(&DaemonStopParams { stop_services })
            .await
        {
            return request_failed("daemon.stop", e);
        }
        client.close().await;
        // A remote daemon's pid means nothing here.
        if ctx.daemon.url.is_none() {
            let deadline = Instant::now() + Duration::from_secs(30);
            while pid_alive(pid) && Instant::now() < deadline {
                smol::Timer::after(Duration::from_millis(5)).await;
            }
            if pid_alive(pid) {
                crate::errln!("error: the daemon (pid {pid}) is still running after 30 s");
                return Status::Failed;
            }
        }
        if stop_services {
            crate::outln!("daemon stopped (pid {pid}), and every service with it");
        } else {
            crate::outln!("daemon stopped (pid {pid}); services keep running");
        }
        Status::Ok
    })
}

fn status(ctx: &Context, home: &HarnessHome) -> Status {
    smol::block_on(async {
        let found = match existing_or_busy(ctx, home).await {
            Ok(found) => found,
            Err(e) => {
                crate::errln!("error: {e:#}");
                return Status::Failed;
            }
        };
        let Some(client) = found else {
            if ctx.json() {
                print_json(&serde_json::json!({ "running": false }));
            } else {
                crate::outln!("no daemon running for {}", home.root().display());
            }
            return Status::Failed;
        };
        let s: DaemonStatusResult = match client
            .call::<method::DaemonStatus>(&harness_protocol::Empty {})
            .await
        {
            Ok(s) => s,
            Err(e) => return request_failed("daemon.status", e),
        };
        if ctx.json() {
            let mut v = serde_json::to_value(&s).unwrap_or_default();
            v["running"] = true.into();
            print_json(&v);
            return Status::Ok;
        }
        crate::outln!("pid:         {}", s.pid);
        crate::outln!("version:     {}", s.version);
        crate::outln!(
            "uptime:      {} (since {})",
            short_duration(Duration::from_millis(s.uptime_ms)),
            s.started_at
        );
        crate::outln!("address:     {}", s.url);
        crate::outln!("home:        {}", s.home);
        crate::outln!(
            "projects:    {}",
            if s.projects.is_empty() {
                "-".to_owned()
            } else {
                s.projects.join(", ")
            }
        );
        crate::outln!("services:    {} ({} running)", s.services, s.running);
        crate::outln!("connections: {}", s.connections);
        crate::outln!(
            "capacity:    {} services (open-file limit {})",
            s.max_services,
            s.open_files_limit
        );
        Status::Ok
    })
}

fn logs(home: &HarnessHome, follow: bool) -> Status {
    let path = home.path(DAEMON_LOG);
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            crate::errln!("error: {}: {e}", path.display());
            return Status::Failed;
        }
    };
    let mut out = std::io::stdout().lock();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if let Err(e) = file.read_to_end(&mut buf) {
            crate::errln!("error: {}: {e}", path.display());
            return Status::Failed;
        }
        if out.write_all(&buf).and_then(|()| out.flush()).is_err() {
            return Status::Ok;
        }
        if !follow {
            return Status::Ok;
        }
        std::thread::sleep(Duration::from_millis(200));
        // The log was truncated or replaced: start again from its beginning.
        if let (Ok(pos), Ok(meta)) = (file.stream_position(), std::fs::metadata(&path))
            && meta.len() < pos
        {
            match std::fs::File::open(&path) {
                Ok(f) => file = f,
                Err(_) => {
                    let _ = file.seek(SeekFrom::Start(0));
                }
            }
        }
    }
}
