//! `harness daemon run`: owns the orchestrator and the registry, serves the one TLS WebSocket API.
//!
//! Pueue-style: this module sets up and tears down; each request method is one file in
//! `handlers/`. The daemon holds `daemon.lock` for its whole life, so one state directory never has
//! two daemons. It can be killed -9 at any moment: services keep running (their output goes to
//! files), and the next daemon re-attaches to them in [`Orchestrator::open`].

pub mod args;
pub mod fds;
mod handlers;
mod logs;
pub(crate) mod operations;
pub(crate) mod proxy;

use std::fs::File;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use command_executor::Executor;
use futures_lite::StreamExt;
use harness_protocol::{EventType, HarnessHome, WireError};
use harness_server::{RequestContext, Router, ServerConfig, ServerHandle};
use harness_store::{NewEvent, Retention, Store};
use orchestrator::{Orchestrator, OrchestratorOptions};
use serde::de::DeserializeOwned;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::client::{DAEMON_LOCK, DAEMON_PID};

/// What every handler can reach.
pub struct State {
    pub orch: Orchestrator,
    /// The daemon's one executor, the orchestrator's too: every ssh master of the daemon is counted by one
    /// pool, so sshd's per-connection session limit holds (ADR 0004).
    pub executor: Executor,
    pub home: HarnessHome,
    pub started_at: jiff::Timestamp,
    pub started: Instant,
    pub url: Mutex<String>,
    pub server: Mutex<Option<ServerHandle>>,
    pub logs: logs::Sessions,
    /// `daemon.stop` asks the main loop to end through this.
    pub stop: async_channel::Sender<()>,
    /// The open-file limit (raised at start) and how many services it allows.
    pub fds: fds::Budget,
    /// The one-port HTTP proxy, bound when a project asks for it (`proxy:`).
    pub proxy: proxy::ProxySlot,
    /// File watches by project (`watch:`, `harness watch`).
    pub watches: Mutex<std::collections::HashMap<String, orchestrator::watch::Watching>>,
    /// Streaming execs, for `exec.input`.
    pub execs: handlers::exec::Sessions,
    /// `top`'s previous readings and last samples (also shown by `status`).
    pub top: handlers::top::Samples,
    /// The registry store.
    pub store: Store,
    /// The last event seq when the daemon started (`daemon stats` counts events since).
    pub seq_at_start: u64,
    /// The effective settings and their sources (`daemon config`), filled in once it listens.
    pub settings: Vec<harness_protocol::admin::Setting>,
    /// Operations: the running ones, and the store's (ADR 0035).
    pub ops: Arc<orchestrator::Operations>,
}

impl State {
    pub fn connections(&self) -> u64 {
        self.server
            .lock()
            .map(|s| s.as_ref().map_or(0, ServerHandle::connections))
            .unwrap_or(0)
    }
}

/// Requests like `start` wait for health checks and startup timeouts; the daemon bounds them, not
/// a generic request timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOptions {
    pub listen: Option<SocketAddr>,
    /// On SIGTERM/SIGINT, stop every service before exiting.
    pub stop_services: bool,
    /// Started by `daemon start` or auto-start: leave the CLI's session.
    pub detached: bool,
}

pub fn run(opts: RunOptions) -> anyhow::Result<()> {
    if opts.detached {
        // Our own session: the terminal's hangup and Ctrl-C never reach the daemon.
        let _ = rustix::process::setsid();
    }
    bound_threads_and_arenas();
    let budget = fds::raise();
    // `HARNESS_LOG=debug` or `info,registry=debug`: targets and levels, without EnvFilter's regex
    // engine (a quarter MB of code the daemon would map for one line of configuration).
    let asked = std::env::var("HARNESS_LOG").ok();
    let (filter, bad) = match asked.as_deref().map(str::parse::<Targets>) {
        Some(Ok(t)) => (t, None),
        Some(Err(e)) => (Targets::new().with_default(Level::INFO), Some(e)),
        None => (Targets::new().with_default(Level::INFO), None),
    };
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false),
        )
        .with(filter)
        .init();
    if let Some(e) = bad {
        tracing::warn!(
            "HARNESS_LOG {:?} ignored ({e}); logging at info",
            asked.unwrap_or_default()
        );
    }
    tracing::info!(
        open_files = budget.limit,
        hard = budget.hard,
        max_services = budget.max_services,
        "open-file limit"
    );
    smol::block_on(serve(opts, budget))
}

/// Blocking-pool threads (file I/O, fork + exec, /proc scans). The pool's default (500) let 100
/// parallel launches and log pumps grow it to ~70 threads, each with its stack and malloc arena;
/// 2 cores gain nothing past a few. `BLOCKING_MAX_THREADS` still overrides.
const BLOCKING_THREADS: usize = 8;

/// Memory of a long-lived daemon: glibc gives each busy thread its own arena (up to 8 per core),
/// which keep freed memory; two arenas are plenty for a daemon that mostly waits.
fn bound_threads_and_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable of the allocator; called before any thread is spawned.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    if std::env::var_os("BLOCKING_MAX_THREADS").is_none()
        && let Some(n) = std::num::NonZeroUsize::new(BLOCKING_THREADS)
    {
        blocking::set_max_blocking_threads(n);
    }
}

/// Set in the environment of `harnessd`'s second run to what `GLIBC_TUNABLES` was before it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const CALLER_TUNABLES: &str = "HARNESSD_CALLER_GLIBC_TUNABLES";

/// glibc's per-thread cache of freed blocks (tcache: up to 7 blocks of each small size per thread)
/// holds memory that neither other threads nor `malloc_trim` can reuse or return, so a daemon whose
/// dozen threads each free what others allocated keeps 0.6-0.9 MiB more (bench/results-memory-
/// 2026-12-06.md, ADR 0041). The cache can only be turned off before the process starts
/// (`GLIBC_TUNABLES`), so `harnessd` runs itself again once, in place (same pid), with
/// `glibc.malloc.tcache_count=0` added (the CLI that auto-starts it sets that environment itself,
/// see [`tunables_env`], so that run is the first); the second run puts `GLIBC_TUNABLES` back as it
/// was, so that no service inherits it. A `GLIBC_TUNABLES` that already sets the tcache count is left alone,
/// and if the exec fails the daemon runs on with the cache.
pub fn without_thread_malloc_cache() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt as _;
        if let Some(caller) = std::env::var_os(CALLER_TUNABLES) {
            // SAFETY: the first thing `harnessd` does, before it starts any thread.
            unsafe {
                if caller.is_empty() {
                    std::env::remove_var("GLIBC_TUNABLES");
                } else {
                    std::env::set_var("GLIBC_TUNABLES", &caller);
                }
                std::env::remove_var(CALLER_TUNABLES);
            }
            return;
        }
        let Some(env) = tunables_env() else {
            return;
        };
        let mut args = std::env::args_os();
        let arg0 = args.next().unwrap_or_default();
        // Returns only if the exec failed: then the daemon runs on as it is.
        let _ = std::process::Command::new("/proc/self/exe")
            .arg0(arg0)
            .args(args)
            .envs(env)
            .exec();
    }
}

/// The environment that starts `harnessd` without the tcache in its first run (no second exec):
/// `GLIBC_TUNABLES` with the tcache count 0 added, and what it was before (see
/// [`without_thread_malloc_cache`]). None when the caller's tunables already set the count (or
/// off glibc). The CLI sets it when it auto-starts the daemon, saving the daemon an exec.
pub fn tunables_env() -> Option<[(std::ffi::OsString, std::ffi::OsString); 2]> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const TUNABLE: &str = "glibc.malloc.tcache_count";
        let caller = std::env::var_os("GLIBC_TUNABLES").unwrap_or_default();
        if caller.to_string_lossy().contains(TUNABLE) {
            return None;
        }
        let mut tunables = caller.clone();
        if !tunables.is_empty() {
            tunables.push(":");
        }
        tunables.push(format!("{TUNABLE}=0"));
        Some([
            ("GLIBC_TUNABLES".into(), tunables),
            (CALLER_TUNABLES.into(), caller),
        ])
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}

async fn serve(opts: RunOptions, budget: fds::Budget) -> anyhow::Result<()> {
    let home = HarnessHome::from_env()?;
    let h = home.clone();
    let (lock, credentials) = blocking::unblock(move || -> anyhow::Result<_> {
        h.ensure_dir()?;
        let lock = lock_home(&h)?;
        let credentials = h.ensure_credentials(&[])?;
        Ok((lock, credentials))
    })
    .await?;

    let store = Store::open(
        home.path(harness_protocol::home::REGISTRY_DB),
        Retention::default(),
    )
    .await
    .context("opening the registry")?;
    // Before the orchestrator: what a dead daemon left running is `interrupted` first.
    let ops = orchestrator::Operations::open(store.clone())
        .await
        .context("opening the operations")?;
    let executor = Executor::default();
    let orch = Orchestrator::open(OrchestratorOptions {
        executor: executor.clone(),
        ..OrchestratorOptions::new(home.root(), store.clone())
    })
    .await
    .context("opening the orchestrator")?;

    let (stop_tx, stop_rx) = async_channel::bounded(1);
    let config = ServerConfig {
        listen: opts
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
        request_timeout: REQUEST_TIMEOUT,
        dashboard: Some(crate::dashboard::config(&home)),
        ..ServerConfig::default()
    };
    let settings = handlers::daemon_config::effective(&opts, &config, &budget, &home, &executor);
    let state = Arc::new(State {
        orch: orch.clone(),
        executor,
        home: home.clone(),
        started_at: jiff::Timestamp::now(),
        started: Instant::now(),
        url: Mutex::new(String::new()),
        server: Mutex::new(None),
        logs: logs::Sessions::default(),
        stop: stop_tx,
        fds: budget,
        proxy: proxy::ProxySlot::new(orch.clone(), store.clone()),
        watches: Mutex::default(),
        execs: handlers::exec::Sessions::default(),
        top: handlers::top::Samples::default(),
        seq_at_start: store.last_seq(),
        store: store.clone(),
        settings,
        ops,
    });
    // Projects re-attached from the last run get their proxy and file watches back.
    for name in orch.projects() {
        let Some(project) = orch.project(&name) else {
            continue;
        };
        if let Err(e) = state.proxy.ensure(&project).await {
            tracing::warn!(project = %name, error = %e, "proxy");
        }
        if project.services.values().any(|s| s.watch.is_some())
            && let Err(e) = state.watch(&name, &[]).await
        {
            tracing::warn!(project = %name, error = %e.message, "watch");
        }
    }
    let any_port = config.listen.port() == 0;
    let server = serve_api(config, any_port, &home, &credentials, &store, &state).await?;
    let url = server.url();
    let weak = Arc::downgrade(&state);
    server.set_metrics_source(Arc::new(move || {
        let weak = weak.clone();
        Box::pin(async move {
            match weak.upgrade() {
                Some(state) => match handlers::daemon_stats::collect(&state).await {
                    Ok(stats) => handlers::daemon_stats::prometheus(&stats),
                    Err(e) => format!("# daemon figures unavailable: {}\n", e.message),
                },
                None => String::new(),
            }
        })
    }));
    if let Ok(mut u) = state.url.lock() {
        u.clone_from(&url);
    }
    if let Ok(mut s) = state.server.lock() {
        *s = Some(server);
    }
    let pid = std::process::id();
    let h = home.clone();
    let info = harness_protocol::DaemonInfo {
        url: url.clone(),
        pid,
    };
    blocking::unblock(move || h.write_daemon_info(&info)).await?;
    let _ = store
        .emit(vec![NewEvent {
            kind: EventType::DaemonNotice,
            project: None,
            service: None,
            data: serde_json::json!({
                "message": "daemon started",
                "pid": pid,
                "url": url,
                "version": env!("CARGO_PKG_VERSION"),
            }),
        }])
        .await;
    // Which program serves: `harnessd`, or the CLI's in-process daemon when no harnessd of the same
    // build was beside it (ADR 0024).
    let exe = std::env::current_exe().unwrap_or_default();
    tracing::info!(pid, %url, home = %home.root().display(), exe = %exe.display(), version = env!("CARGO_PKG_VERSION"), "daemon ready");
    let sweeper = smol::spawn(logs::sweep(state.clone()));

    let mut signals =
        async_signal::Signals::new([async_signal::Signal::Term, async_signal::Signal::Int])
            .context("installing signal handlers")?;
    let by_signal = futures_lite::future::or(
        async {
            let sig = signals.next().await;
            tracing::info!(?sig, "signal received, shutting down");
            true
        },
        async {
            let _ = stop_rx.recv().await;
            tracing::info!("daemon.stop received, shutting down");
            false
        },
    )
    .await;

    // `daemon.stop` has already stopped the services it was asked to (before answering).
    if let Err(e) = orch.shutdown(by_signal && opts.stop_services).await {
        tracing::warn!(error = %e, "orchestrator shutdown");
    }
    drop(sweeper);
    if let Ok(mut w) = state.watches.lock() {
        w.clear();
    }
    let server = state.server.lock().ok().and_then(|mut s| s.take());
    if let Some(server) = server {
        server.shutdown().await;
    }
    let h = home.clone();
    blocking::unblock(move || {
        // Only our own record: a newer daemon may already have written its own.
        if h.read_daemon_info().is_ok_and(|i| i.pid == pid) {
            let _ = std::fs::remove_file(h.path(harness_protocol::home::DAEMON_INFO));
            let _ = std::fs::remove_file(h.path(DAEMON_PID));
        }
    })
    .await;
    drop(orch);
    drop(state);
    if let Err(e) = store.close().await {
        tracing::warn!(error = %e, "closing the registry");
    }
    drop(lock);
    tracing::info!("daemon stopped");
    Ok(())
}

/// Takes `daemon.lock` (held until the daemon exits) and records our pid.
/// Binds the API port. When any port will do (port 0, the default), the port of the last run is
/// tried first (an open dashboard page reconnects to the same origin), then any free one; the
/// port is recorded.
async fn serve_api(
    config: ServerConfig,
    any_port: bool,
    home: &HarnessHome,
    credentials: &harness_protocol::Credentials,
    store: &Store,
    state: &Arc<State>,
) -> anyhow::Result<ServerHandle> {
    let last_port_file = home.path(crate::dashboard::LAST_PORT_FILE);
    let last = {
        let f = last_port_file.clone();
        blocking::unblock(move || std::fs::read_to_string(f)).await
    };
    let mut server = None;
    if any_port
        && let Some(port) = last.ok().and_then(|t| t.trim().parse::<u16>().ok())
        && port != 0
    {
        let mut again = config.clone();
        again.listen.set_port(port);
        match harness_server::serve(again, credentials, store.clone(), Arc::new(router(state)))
            .await
        {
            Ok(s) => server = Some(s),
            Err(e) => tracing::info!(port, error = %e, "last port taken; picking a free one"),
        }
    }
    let server = match server {
        Some(s) => s,
        None => {
            harness_server::serve(config, credentials, store.clone(), Arc::new(router(state)))
                .await?
        }
    };
    let port = server.local_addr().port().to_string();
    if let Err(e) = blocking::unblock(move || {
        harness_protocol::home::write_runtime(&last_port_file, port.as_bytes())
    })
    .await
    {
        tracing::warn!(error = %e, "recording the API port");
    }
    Ok(server)
}

fn lock_home(home: &HarnessHome) -> anyhow::Result<File> {
    let path = home.path(DAEMON_LOCK);
    let file = File::create(&path).with_context(|| format!("{}", path.display()))?;
    if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        let other = std::fs::read_to_string(home.path(DAEMON_PID)).unwrap_or_default();
        bail!(
            "a daemon already runs for {} (pid {})",
            home.root().display(),
            other.trim()
        );
    }
    harness_protocol::home::write_runtime(
        &home.path(DAEMON_PID),
        format!("{}\n", std::process::id()).as_bytes(),
    )?;
    Ok(file)
}

/// One route per method, each served by `handlers::<method>::handle`; the compiler checks that each
/// handler takes the method's params and returns its result (`harness_protocol::method`).
fn router(state: &Arc<State>) -> Router {
    use handlers::*;
    use harness_protocol::method::*;
    Router::new()
        .method::<Start>(trimming(with(state, start::handle)))
        .method::<Stop>(trimming(with(state, stop::handle)))
        .method::<Restart>(trimming(with(state, restart::handle)))
        .method::<Watch>(with(state, watch::handle))
        .method::<LogsClear>(with(state, logs_clear::handle))
        .method_encoded::<Status, _, _>(trimming(with(state, status::handle)))
        .method::<Logs>(with(state, logs::handle))
        .method::<Exec>(with(state, exec::handle))
        .method::<ExecInput>(with(state, exec_input::handle))
        .method::<Health>(trimming(with(state, health::handle)))
        .method::<DaemonStatus>(with(state, daemon_status::handle))
        .method::<DaemonStop>(with(state, daemon_stop::handle))
        .method::<Deploy>(with(state, deploy::handle))
        .method::<DeployRollback>(with(state, deploy_rollback::handle))
        .method::<OpsList>(with(state, ops_list::handle))
        .method::<OpsGet>(with(state, ops_get::handle))
        .method::<OpsCancel>(with(state, ops_cancel::handle))
        .method::<OpsWait>(with(state, ops_wait::handle))
        .route(dashboard_graph::NAME, with(state, dashboard_graph::handle))
        .method::<Drift>(with(state, drift::handle))
        .method::<DriftSync>(with(state, sync::handle))
        .method::<HostsCheck>(with(state, hosts_check::handle))
        .method::<NetworkList>(with(state, network_list::handle))
        .method::<Top>(with(state, top::handle))
        .method::<DaemonStats>(with(state, daemon_stats::handle))
        .method::<DaemonConfig>(with(state, daemon_config::handle))
        .method::<DaemonEnv>(with(state, daemon_env::handle))
}

/// Gives a handler the daemon's state.
fn with<P, R, F, Fut>(
    state: &Arc<State>,
    f: F,
) -> impl Fn(P, RequestContext) -> Fut + Send + Sync + 'static
where
    P: DeserializeOwned + Send + 'static,
    R: 'static,
    F: Fn(Arc<State>, P, RequestContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, WireError>> + Send + 'static,
{
    let state = state.clone();
    move |p, ctx| f(state.clone(), p, ctx)
}

/// After a request (a burst of them: a start wave and the `status` calls polling it), hands the
/// allocator's free pages back to the system once the daemon is quiet, off the executor.
fn trimming<P, R, H, Fut>(handler: H) -> impl Fn(P, RequestContext) -> Trimmed<R> + Send + Sync
where
    H: Fn(P, RequestContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, WireError>> + Send + 'static,
    R: 'static,
{
    move |p, ctx| {
        let done = handler(p, ctx);
        Box::pin(async move {
            let r = done.await;
            release_free_memory();
            r
        })
    }
}

type Trimmed<R> = std::pin::Pin<Box<dyn Future<Output = Result<R, WireError>> + Send>>;

/// How long the daemon must have been without requests before it trims its heap.
const TRIM_WHEN_QUIET: Duration = Duration::from_millis(300);

/// Returns free heap pages (also those between live allocations) to the system once the daemon
/// has had no request for [`TRIM_WHEN_QUIET`]: a burst (a start wave and the `status` calls that
/// poll it, a long `logs`) leaves glibc's arenas holding what it freed (0.6 MiB after starting
/// 100 services and polling `status` until all run). One trim per burst, off the executor.
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static KICK: std::sync::OnceLock<async_channel::Sender<()>> = std::sync::OnceLock::new();
        let kick = KICK.get_or_init(|| {
            let (tx, rx) = async_channel::bounded::<()>(1);
            smol::spawn(async move {
                while rx.recv().await.is_ok() {
                    // Wait until a whole quiet period passes without another request.
                    loop {
                        smol::Timer::after(TRIM_WHEN_QUIET).await;
                        if rx.try_recv().is_err() {
                            break;
                        }
                    }
                    blocking::unblock(|| {
                        // SAFETY: malloc_trim only walks the allocator's own free lists, under
                        // its locks.
                        unsafe { libc::malloc_trim(0) };
                    })
                    .await;
                }
            })
            .detach();
            tx
        });
        let _ = kick.try_send(());
    }
}

/// An orchestrator error as the client sees it.
pub fn wire_error(e: orchestrator::Error) -> WireError {
    use harness_protocol::ErrorCode;
    use orchestrator::Error as E;
    let code = match &e {
        E::UnknownProject { .. } | E::UnknownService { .. } => ErrorCode::NotFound,
        E::ShutDown => ErrorCode::Unavailable,
        E::Registry(_) | E::Io { .. } => ErrorCode::Internal,
        _ => ErrorCode::Failed,
    };
    WireError::new(code, e.to_string())
}
