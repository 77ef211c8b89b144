//! The adapter between the orchestrator and command-executor's service API: which kind of
//! process a resolved service is (local, on an SSH host, a container) and the handle for it.
//! How processes are spawned, followed, signalled and found again is command-executor's
//! (`command_executor::service`); what runs where and when is the orchestrator's.

pub(crate) mod container;
pub(crate) mod host;
pub(crate) mod local;

use std::path::Path;
use std::time::Duration;

pub(crate) use command_executor::service::ExitInfo;
use command_executor::service::remote;
use command_executor::service::{ServiceCommand, procfs};
use command_executor::{Executor, Signal, Target};
use futures_util::future::BoxFuture;

use crate::addresses::Placement;
use crate::launches::Launches;
use crate::spec::{LaunchSpec, Resolved};

/// `(project, service)` of a local service directory (`.../projects/P/services/S`), which names the
/// service's remote run directory and its container.
pub(crate) fn project_and_service(dir: &Path) -> (&str, &str) {
    fn name(p: Option<&Path>) -> Option<&str> {
        p.and_then(Path::file_name).and_then(|n| n.to_str())
    }
    let service = name(Some(dir)).unwrap_or("service");
    let project = name(dir.parent().and_then(Path::parent)).unwrap_or("project");
    (project, service)
}

/// What a service without a place of its own fails with: a `type: package` service that was not
/// prepared (`deploy::prepare` turns it into the remote process it runs as).
pub(crate) const UNSUPPORTED: &str =
    "a type: package service runs only once prepared (installed on its host) by start";

fn command(spec: &LaunchSpec) -> ServiceCommand {
    ServiceCommand {
        program: spec.program.clone(),
        args: spec.args.clone(),
        env: spec.env.clone(),
        cwd: spec.cwd.clone(),
        user: spec.user.clone(),
    }
}

/// Why a launch failed: where and in which layer (command-executor's error), or what the
/// orchestrator could not prepare.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LaunchError {
    #[error(transparent)]
    Executor(#[from] command_executor::Error),
    #[error("no host resolved")]
    NoHost,
}

/// A running service instance, whichever kind runs it (`local`, `host`, `container` each
/// implement it over their command-executor handle). Callers never ask which kind it is: what
/// differs between kinds is answered by a method.
pub(crate) trait ServiceProcess: Send + Sync {
    /// Its pid: on this machine, on its host, or the container's main process (on the engine's
    /// machine).
    fn pid(&self) -> u32;

    /// Its start time (clock ticks since boot on its machine), which tells it apart from a later
    /// process with the same pid; 0 where none is known (a container).
    fn start_time(&self) -> u64;

    /// Whether the host answers, for a service on an SSH host or a container on its engine.
    fn reachability(&self) -> Option<remote::Reachability> {
        None
    }

    /// The container's id, for containers.
    fn container_id(&self) -> Option<&str> {
        None
    }

    /// Its pid when it runs on this machine: its session and process group carry this id, so
    /// the processes of an adopted service are told apart from strays.
    fn local_session(&self) -> Option<u32> {
        None
    }

    /// Resolves when the process has ended; noticed at once (child exit, pidfd, the host's
    /// follower or the container's log follower), never polled.
    fn wait(&mut self) -> BoxFuture<'_, ExitInfo>;

    /// Stops the whole service: `signal` to its process group, SIGKILL after `timeout`, then
    /// anything left in its cgroup or session (a container's stop signal is its own,
    /// `--stop-signal`). Returns how it ended and whether SIGKILL was needed; an error when the
    /// place it runs could not be told (its launch stays recorded).
    fn terminate(
        &mut self,
        signal: Signal,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<(ExitInfo, bool), LaunchError>>;

    /// Kills whatever the service left behind after it ended on its own.
    fn sweep(&self) -> BoxFuture<'_, Result<(), LaunchError>>;
}

/// The handle of a running service instance.
pub(crate) type Launched = Box<dyn ServiceProcess>;

/// Starts a service as launch `launch_id` (recorded by the caller) with its output appended to
/// `stdout`/`stderr` files in `dir`.
pub(crate) async fn launch(
    spec: &Resolved,
    dir: &Path,
    exec: &Executor,
    launches: &Launches,
    launch_id: &str,
) -> Result<Launched, LaunchError> {
    match (&spec.placement, &spec.container) {
        (_, Some(c)) => {
            let c =
                container::spawn(exec, c, &spec.launch, spec.stop.signal, dir, launch_id).await?;
            Ok(Box::new(c))
        }
        (Placement::Host { user, .. }, None) => match &spec.host {
            Some(h) => Ok(Box::new(
                remote::spawn(
                    exec,
                    &h.target(user.as_deref()),
                    &command(&spec.launch),
                    dir,
                    launch_id,
                )
                .await?,
            )),
            None => Err(LaunchError::NoHost),
        },
        _ => {
            let (project, service) = project_and_service(dir);
            let cgroup = launches.cgroup(project, service).await;
            Ok(Box::new(
                command_executor::service::local::spawn(
                    &command(&spec.launch),
                    dir,
                    launch_id,
                    cgroup,
                )
                .await?,
            ))
        }
    }
}

/// This daemon's local service processes, found by the launch id in their environment.
pub(crate) async fn local_processes(launches: &Launches) -> Vec<procfs::Tagged> {
    let prefix = format!("{}/", launches.instance);
    blocking::unblock(move || procfs::tagged(command_executor::service::LAUNCH_ID_VAR, &prefix))
        .await
}

/// What a restarted daemon knows of a service's last launch.
pub(crate) struct Recorded<'a> {
    pub launch_id: Option<&'a str>,
    /// Adopt it (the service should run), or kill it.
    pub keep: bool,
    pub local: &'a [procfs::Tagged],
    pub recorded: Option<(u32, u64)>,
}

/// After a daemon restart, for a service whose launch `launch_id` was recorded: adopts its
/// process if `keep` and it is still there (or, for a remote one, ended while no daemon
/// watched), killing every other process of the service on its host or engine; with `keep`
/// false kills them all. `local` are this daemon's tagged local processes; `recorded` the pid
/// and start time the registry holds.
pub(crate) async fn adopt(
    spec: &Resolved,
    dir: &Path,
    exec: &Executor,
    launches: &Launches,
    found: Recorded<'_>,
) -> Result<Option<Launched>, LaunchError> {
    let Recorded {
        launch_id,
        keep,
        local,
        recorded,
    } = found;
    match (&spec.placement, &spec.container, &spec.host) {
        (_, Some(c), _) => {
            if keep {
                Ok(container::attach(exec, c, dir)
                    .await
                    .map(|c| Box::new(c) as Launched))
            } else {
                container::discard(exec, c, dir).await;
                Ok(None)
            }
        }
        (Placement::Host { user, .. }, None, Some(h)) => {
            let Some(id) = launch_id else { return Ok(None) };
            Ok(
                remote::adopt(exec, &h.target(user.as_deref()), dir, id, keep, recorded)
                    .await?
                    .map(|r| Box::new(r) as Launched),
            )
        }
        _ => {
            let (project, service) = project_and_service(dir);
            let cgroup = launches.existing_cgroup(project, service);
            if !keep {
                remove_cgroup(cgroup).await;
                return Ok(None);
            }
            let user = spec.launch.user.clone();
            // The session leader carrying the launch id; else the recorded pid or the pidfile
            // (a launch by an older daemon, or a process whose environment this daemon may
            // not read): `attach` checks the start time, so never a stranger.
            let tagged = launch_id.and_then(|id| {
                local
                    .iter()
                    .find(|t| t.launch_id == id && t.row.pid == t.row.session)
                    .map(|t| (t.row.pid, t.row.start_time))
            });
            let leader = match (tagged, recorded) {
                (Some(t), _) => Some(t),
                (None, Some(r)) => Some(r),
                (None, None) => command_executor::service::local::read_pidfile(dir).await,
            };
            match leader.and_then(|(pid, st)| {
                command_executor::service::local::attach(pid, st, user, cgroup.clone())
            }) {
                Some(p) => Ok(Some(Box::new(p))),
                None => {
                    remove_cgroup(cgroup).await;
                    Ok(None)
                }
            }
        }
    }
}

/// Kills whatever is in a local service's cgroup when none of it is adopted, and removes it: a
/// child the killed daemon forked is in the cgroup before it execs, but carries the launch id in
/// its environment only from the exec on, so the scan by launch id can miss it. (A next launch
/// makes the cgroup again: one never killed, see ADR 0046.)
async fn remove_cgroup(cgroup: Option<command_executor::service::cgroup::Cgroup>) {
    if let Some(cg) = cgroup {
        blocking::unblock(move || cg.remove()).await;
    }
}

/// Where a service's command health checks (and `exec`) run: on its host, as its user, or
/// inside its container (`container_name`).
pub(crate) fn probe_target(
    placement: &Placement,
    host: Option<&host::HostSpec>,
    container: Option<&container::ContainerSpec>,
    container_name: &str,
) -> Target {
    match (placement, container, host) {
        (_, Some(c), _) => c.exec_target(container_name),
        (Placement::Host { user, .. }, None, Some(h)) => h.target(user.as_deref()),
        _ => Target::local(),
    }
}
