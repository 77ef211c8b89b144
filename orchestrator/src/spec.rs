//! A service's definition with every `${...}` resolved for where it runs: what is launched,
//! checked and how it is stopped. Its hash decides whether `apply` restarts a running service.

use std::path::Path;
use std::time::Duration;

use command_executor::Signal;
use harness_config::{Command, Project, Service, Template};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::addresses::{Placement, Resolver};

/// What to launch.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LaunchSpec {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    /// A local process run as this user through `sudo -n` (remote ones get it from their
    /// target). Left out of the hash when unset, so existing definitions keep theirs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// The health check, resolved.
#[derive(Debug, Clone, Serialize)]
pub(crate) enum Probe {
    Command(Vec<String>),
    Http { url: String },
    Tcp { host: String, port: u16 },
}

impl Probe {
    pub fn describe(&self) -> String {
        match self {
            Probe::Command(argv) => match argv.as_slice() {
                [sh, c, script] if sh == "sh" && c == "-c" => format!("command sh -c {script:?}"),
                _ => format!("command {}", argv.join(" ")),
            },
            Probe::Http { url } => format!("http {url}"),
            Probe::Tcp { host, port } => format!("tcp {host}:{port}"),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct HealthSpec {
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub start_period: Duration,
    /// Where a command probe runs.
    #[serde(skip)]
    pub target: command_executor::Target,
    /// A command probe runs in the service's context: its environment and working directory.
    #[serde(skip)]
    pub env: Vec<(String, String)>,
    #[serde(skip)]
    pub cwd: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct StopSpec {
    #[serde(serialize_with = "signal_name")]
    pub signal: Signal,
    pub timeout: Duration,
}

fn signal_name<S: serde::Serializer>(s: &Signal, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.name())
}

/// Everything the supervisor needs for one service. Each supervisor keeps one for the service's
/// life, so the parts most services do not have (health check, host, container) are boxed: `None`
/// takes 8 bytes instead of hundreds. Boxes serialize as their contents: the hash is unchanged.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Resolved {
    pub name: String,
    #[serde(skip)]
    pub placement: Placement,
    pub launch: LaunchSpec,
    pub health: Option<Box<HealthSpec>>,
    #[serde(skip)]
    pub restart: harness_config::Restart,
    pub restart_hashed: String,
    pub stop: StopSpec,
    pub startup_timeout: Option<Duration>,
    /// The SSH host it runs on (its engine's host for containers).
    pub host: Option<Box<crate::runtime::host::HostSpec>>,
    /// For containers: what to run.
    pub container: Option<Box<crate::runtime::container::ContainerSpec>>,
    /// Where command health checks and `exec` run.
    #[serde(skip)]
    pub exec_target: command_executor::Target,
    /// The ports a process on this machine listens on (`ports:`), checked for another listener
    /// before it is launched. Empty for remote processes and containers.
    #[serde(skip)]
    pub local_ports: Vec<u16>,
}

impl Resolved {
    /// Resolves service `name` of `project`; the error says which field or reference failed.
    pub fn new(project: &Project, name: &str, base_dir: Option<&Path>) -> Result<Resolved, String> {
        let service = project
            .services
            .get(name)
            .ok_or_else(|| format!("no service {name:?}"))?;
        let placement = Placement::of(service)?;
        let local_user = service
            .user
            .clone()
            .filter(|_| placement == Placement::Local);
        let host = match placement.machine() {
            Some(h) => Some(crate::runtime::host::host_spec(project, h)?),
            None => None,
        };
        let container = match placement {
            Placement::Container { .. } => Some(crate::runtime::container::ContainerSpec::new(
                service,
                host.clone(),
                base_dir,
            )),
            _ => None,
        };
        let exec_target = match &local_user {
            Some(u) => command_executor::Target::local().sudo(u),
            None => crate::runtime::probe_target(
                &placement,
                host.as_ref(),
                container.as_ref(),
                &format!("harness.{}.{name}", project.name),
            ),
        };
        let resolver = Resolver::new(project, placement.clone());
        let render = |t: &Template| t.render(|r| resolver.resolve(r));
        // http and tcp checks are made by the daemon, so they resolve from its machine.
        let daemon_resolver = Resolver::new(project, Placement::Local);
        let render_daemon = |t: &Template| t.render(|r| daemon_resolver.resolve(r));
        // The folder of services.yaml means nothing on another machine or in a container.
        let base_dir = base_dir.filter(|_| placement == Placement::Local);
        let launch = LaunchSpec {
            user: local_user,
            ..launch_spec(service, &render, base_dir)?
        };
        let health = match &service.health_check {
            None => None,
            Some(hc) => Some(HealthSpec {
                probe: match &hc.probe {
                    // A command without args (a string) runs through `sh -c`, as the schema
                    // says; a list's first word is the program.
                    harness_config::Probe::Command { command, args } if args.is_empty() => {
                        Probe::Command(vec!["sh".into(), "-c".into(), render(command)?])
                    }
                    harness_config::Probe::Command { command, args } => {
                        let mut argv = vec![render(command)?];
                        for a in args {
                            argv.push(render(a)?);
                        }
                        Probe::Command(argv)
                    }
                    harness_config::Probe::Http { http } => Probe::Http {
                        url: render_daemon(http)?,
                    },
                    harness_config::Probe::Tcp { tcp } => Probe::Tcp {
                        host: match &tcp.host {
                            Some(h) => render_daemon(h)?,
                            None => crate::addresses::daemon_ip(project, &placement).to_string(),
                        },
                        port: tcp.port,
                    },
                },
                interval: hc.interval,
                timeout: hc.timeout,
                retries: hc.retries.max(1),
                start_period: hc.start_period,
                target: exec_target.clone(),
                env: launch.env.clone(),
                cwd: launch.cwd.clone(),
            }),
        };
        let signal: Signal = service
            .stop
            .signal
            .parse()
            .map_err(|e| format!("stop.signal: {e}"))?;
        let placement_is_local = placement == Placement::Local;
        Ok(Resolved {
            name: name.to_owned(),
            placement,
            launch,
            health: health.map(Box::new),
            restart_hashed: format!("{:?}", service.restart),
            restart: service.restart.clone(),
            stop: StopSpec {
                signal,
                timeout: service.stop.timeout,
            },
            startup_timeout: service.startup_timeout,
            host: host.map(Box::new),
            container: container.map(Box::new),
            exec_target,
            local_ports: match placement_is_local {
                true => service.ports.iter().map(|p| p.port).collect(),
                false => Vec::new(),
            },
        })
    }

    /// Identifies the definition: equal hashes mean a running service can stay as it is.
    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(&json))
    }

    pub fn health_description(&self) -> Option<String> {
        self.health.as_ref().map(|h| h.probe.describe())
    }
}

fn launch_spec(
    service: &Service,
    render: &dyn Fn(&Template) -> Result<String, String>,
    base_dir: Option<&Path>,
) -> Result<LaunchSpec, String> {
    let (program, mut args) = match (&service.command, &service.binary) {
        (Some(Command::Shell(t)), _) => ("sh".to_owned(), vec!["-c".to_owned(), render(t)?]),
        (Some(Command::Argv(v)), _) => {
            let mut it = v.iter();
            let first = it
                .next()
                .ok_or_else(|| "command: the list is empty".to_owned())?;
            (
                render(first)?,
                it.map(render).collect::<Result<Vec<_>, _>>()?,
            )
        }
        (None, Some(b)) => (render(b)?, Vec::new()),
        // A container runs its image's default command.
        (None, None) if service.kind == harness_config::ServiceKind::Docker => {
            (String::new(), Vec::new())
        }
        (None, None) => return Err("neither binary nor command is set".into()),
    };
    for a in &service.args {
        args.push(render(a)?);
    }
    let env = service
        .env
        .iter()
        .map(|(k, v)| Ok((k.clone(), render(v)?)))
        .collect::<Result<Vec<_>, String>>()?;
    // Relative paths are relative to the folder of services.yaml, not to the daemon's.
    let cwd = match (
        service.working_dir.as_ref().map(render).transpose()?,
        base_dir,
    ) {
        (Some(w), Some(base)) => Some(base.join(w).to_string_lossy().into_owned()),
        (Some(w), None) => Some(w),
        (None, Some(base)) => Some(base.to_string_lossy().into_owned()),
        (None, None) => None,
    };
    Ok(LaunchSpec {
        program,
        args,
        env,
        cwd,
        user: None,
    })
}
