//! Docker services, on the local engine or on a host's engine (the docker CLI runs on the host
//! through the host's ssh connection, through `sudo -n` when the host says `sudo: true`): what to
//! run, resolved from the services file. Running, following and stopping them is
//! `command_executor::service::container`'s.
//!
//! A container is named `harness.<project>.<service>` and labelled `harness.project`,
//! `harness.service` and `harness.launch`, so there is never a second one and a new daemon finds
//! it again by label.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use command_executor::service::ExitInfo;
use command_executor::service::container::{self, ContainerService};
use command_executor::service::remote::Reachability;
use command_executor::{DockerCli, DockerExec, DockerRun, Executor, Signal, Target};
use futures_util::future::BoxFuture;
use serde::Serialize;

use super::host::HostSpec;
use super::{LaunchError, ServiceProcess, project_and_service};
use crate::spec::LaunchSpec;

/// A container to run, resolved from the services file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ContainerSpec {
    pub image: String,
    /// `-p` specs: only ports with a published host port are published.
    pub ports: Vec<String>,
    pub volumes: Vec<String>,
    pub user: Option<String>,
    /// `entrypoint:`: its first word replaces the image's entrypoint, the rest lead the command.
    pub entrypoint: Vec<String>,
    /// The engine's host; `None` is the local engine.
    pub host: Option<HostSpec>,
}

impl ContainerSpec {
    /// `base_dir`: the folder of services.yaml, which relative bind-mount sources (`./data`) of
    /// the local engine are relative to, as in Compose (not to the daemon's folder).
    pub fn new(
        service: &harness_config::Service,
        host: Option<HostSpec>,
        base_dir: Option<&std::path::Path>,
    ) -> ContainerSpec {
        let base_dir = base_dir.filter(|_| host.is_none());
        ContainerSpec {
            image: service.image.clone().unwrap_or_default(),
            ports: service
                .ports
                .iter()
                .filter_map(|p| p.published.map(|h| format!("{h}:{}", p.port)))
                .collect(),
            volumes: service
                .volumes
                .iter()
                .map(|v| match base_dir {
                    Some(base) => absolute_source(v, base),
                    None => v.clone(),
                })
                .collect(),
            user: service.user.clone(),
            entrypoint: service.entrypoint.clone(),
            host,
        }
    }

    /// Where the docker CLI runs.
    pub fn cli_target(&self) -> Target {
        match &self.host {
            None => Target::local(),
            Some(h) if h.sudo => Target::ssh(h.ssh()).sudo("root"),
            Some(h) => Target::ssh(h.ssh()),
        }
    }

    pub fn cli(&self) -> DockerCli {
        DockerCli {
            program: "docker".into(),
            host: self.host.as_ref().and_then(|h| h.docker_host.clone()),
        }
    }

    /// `docker exec` into the container (command health checks).
    pub fn exec_target(&self, name: &str) -> Target {
        self.cli_target()
            .docker(DockerExec::new(name).cli(self.cli()))
    }
}

impl ServiceProcess for ContainerService {
    fn pid(&self) -> u32 {
        self.pid
    }

    /// None known: the container is told apart by its id.
    fn start_time(&self) -> u64 {
        0
    }

    fn reachability(&self) -> Option<Reachability> {
        ContainerService::reachability(self)
    }

    fn container_id(&self) -> Option<&str> {
        Some(&self.id)
    }

    fn wait(&mut self) -> BoxFuture<'_, ExitInfo> {
        Box::pin(ContainerService::wait(self))
    }

    /// The stop signal is the container's own (`--stop-signal`).
    fn terminate(
        &mut self,
        _signal: Signal,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<(ExitInfo, bool), LaunchError>> {
        Box::pin(async move { Ok(ContainerService::terminate(self, timeout).await?) })
    }

    fn sweep(&self) -> BoxFuture<'_, Result<(), LaunchError>> {
        Box::pin(async move {
            self.remove().await;
            Ok(())
        })
    }
}

/// The container's name for `<project>/<service>` (from the local service directory).
pub(crate) fn container_name(dir: &Path) -> String {
    let (project, service) = project_and_service(dir);
    format!("harness.{project}.{service}")
}

/// Starts the service's container as launch `launch_id`.
pub(crate) async fn spawn(
    exec: &Executor,
    spec: &ContainerSpec,
    launch: &LaunchSpec,
    stop_signal: Signal,
    dir: &Path,
    launch_id: &str,
) -> Result<ContainerService, command_executor::Error> {
    let target = spec.cli_target();
    let cli = spec.cli();
    let (project, service) = project_and_service(dir);
    let launch = &fill_addresses(exec, &target, &cli, project, launch).await?;
    let mut run = DockerRun::new(&spec.image)
        .cli(cli.clone())
        .name(container_name(dir))
        .label("harness.project", project)
        .label("harness.service", service)
        .label("harness.launch", launch_id);
    run.stop_signal = Some(stop_signal.name().to_owned());
    run.remove_on_stop = true;
    run.ports = spec.ports.clone();
    run.volumes = spec.volumes.clone();
    run.user = spec.user.clone();
    run.workdir = launch.cwd.clone();
    run.extra_args = vec!["--pull".into(), "never".into()];
    if spec.host.is_none() {
        // Lets a container reach services of the daemon's machine (see ADR 0020).
        run.extra_args.extend([
            "--add-host".into(),
            "host.docker.internal:host-gateway".into(),
        ]);
    }
    let mut cmd: Vec<OsString> = Vec::new();
    if let Some((first, rest)) = spec.entrypoint.split_first() {
        run.extra_args
            .extend(["--entrypoint".to_owned(), first.clone()]);
        cmd.extend(rest.iter().map(OsString::from));
    }
    if !launch.program.is_empty() {
        cmd.push(launch.program.clone().into());
        cmd.extend(launch.args.iter().map(OsString::from));
    }
    if !cmd.is_empty() {
        run.command = cmd;
    }
    container::spawn(exec, &target, &run, &launch.env, dir).await
}

/// Re-attaches to the service's container, found by its labels.
pub(crate) async fn attach(
    exec: &Executor,
    spec: &ContainerSpec,
    dir: &Path,
) -> Option<ContainerService> {
    let (project, service) = project_and_service(dir);
    container::attach(
        exec,
        &spec.cli_target(),
        &spec.cli(),
        &[("harness.project", project), ("harness.service", service)],
        &container_name(dir),
        dir,
    )
    .await
}

/// Removes the service's container (a launch no daemon adopts), if there is one.
pub(crate) async fn discard(exec: &Executor, spec: &ContainerSpec, dir: &Path) {
    let name = container_name(dir);
    if let Err(e) = container::discard(exec, &spec.cli_target(), &spec.cli(), &name).await {
        tracing::warn!(container = %name, "{e}");
    }
}

/// Replaces the markers `addresses` leaves for containers on this engine by their addresses on
/// the engine's network (their providers run by now: references imply a `started` dependency).
async fn fill_addresses(
    exec: &Executor,
    target: &Target,
    cli: &DockerCli,
    project: &str,
    launch: &LaunchSpec,
) -> Result<LaunchSpec, command_executor::Error> {
    use crate::addresses::CONTAINER_IP_MARK;
    let mut names: Vec<String> = Vec::new();
    let all = launch
        .env
        .iter()
        .map(|(_, v)| v)
        .chain(launch.args.iter())
        .chain(std::iter::once(&launch.program))
        .chain(launch.cwd.iter());
    for text in all {
        let mut rest = text.as_str();
        while let Some(i) = rest.find(CONTAINER_IP_MARK) {
            let after = &rest[i + CONTAINER_IP_MARK.len()..];
            let end = after.find('\u{1e}').unwrap_or(after.len());
            if !names.iter().any(|n| n == &after[..end]) {
                names.push(after[..end].to_owned());
            }
            rest = &after[(end + 1).min(after.len())..];
        }
    }
    if names.is_empty() {
        return Ok(launch.clone());
    }
    let mut found: Vec<(String, String)> = Vec::new();
    for name in names {
        let container = format!("harness.{project}.{name}");
        let ip = container::address(exec, target, cli, &container).await?;
        found.push((format!("{CONTAINER_IP_MARK}{name}\u{1e}"), ip));
    }
    let fill = |s: &String| {
        let mut s = s.clone();
        for (mark, ip) in &found {
            s = s.replace(mark, ip);
        }
        s
    };
    Ok(LaunchSpec {
        program: fill(&launch.program),
        args: launch.args.iter().map(fill).collect(),
        env: launch
            .env
            .iter()
            .map(|(k, v)| (k.clone(), fill(v)))
            .collect(),
        cwd: launch.cwd.as_ref().map(fill),
        user: launch.user.clone(),
    })
}

/// A bind mount whose source is relative (`.`, `./x`, `../x`) with the source made absolute
/// against `base`; named volumes and absolute paths unchanged.
fn absolute_source(volume: &str, base: &std::path::Path) -> String {
    let (source, rest) = match volume.split_once(':') {
        Some((s, r)) => (s, Some(r)),
        None => (volume, None),
    };
    let relative =
        source == "." || source == ".." || source.starts_with("./") || source.starts_with("../");
    if !relative {
        return volume.to_owned();
    }
    let mut path = base.to_path_buf();
    for part in std::path::Path::new(source).components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                path.pop();
            }
            other => path.push(other),
        }
    }
    match rest {
        Some(r) => format!("{}:{r}", path.display()),
        None => path.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::absolute_source;
    use std::path::Path;

    #[test]
    fn relative_bind_sources_are_made_absolute_against_the_services_folder() {
        let base = Path::new("/srv/stack");
        assert_eq!(
            absolute_source("./data:/data:ro", base),
            "/srv/stack/data:/data:ro"
        );
        assert_eq!(absolute_source(".:/app", base), "/srv/stack:/app");
        assert_eq!(absolute_source("../shared:/s", base), "/srv/shared:/s");
        assert_eq!(absolute_source("/abs:/x", base), "/abs:/x");
        assert_eq!(absolute_source("named:/x", base), "named:/x");
        assert_eq!(absolute_source("/only", base), "/only");
    }
}
