//! Each host of a project checked from this machine: reachable, authenticated, `sudo -n` works,
//! docker reachable (and as whom), latency, the WireGuard tools for a mesh member — with a hint for
//! each failure. The daemon answers `hosts.check` with it (`harness hosts check`, the dashboard's
//! hosts view).
//!
//! [`check`] uses an executor of its own: its ssh connections are fresh (so `connect_ms` and
//! reachability are measured, not an old master's) and closed at the end, in a private runtime
//! directory while the daemon's executor holds the shared one (ADR 0004) — the daemon's
//! connections, and the `exec`s and log followers running on them, are left alone.

use std::time::{Duration, Instant};

use command_executor::{Command, Error, Executor, Layer, SshHost, Target};
use futures_lite::FutureExt;
use harness_config::{Project, ServiceKind};
use harness_protocol::places::{DockerReport, HostProblem, HostReport};

/// Limit for each check (the ssh connect has its own, shorter, timeout).
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Every host of `project`, in parallel, in the order of `project.hosts` (by name).
pub async fn check(project: &Project) -> Vec<HostReport> {
    let exec = Executor::default();
    let tasks: Vec<_> = project
        .hosts
        .keys()
        .map(|name| {
            let (exec, project, name) = (exec.clone(), project.clone(), name.clone());
            smol::spawn(async move { check_host(&exec, &project, &name).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await);
    }
    exec.shutdown().await;
    out
}

fn ssh_host(project: &Project, name: &str) -> Result<SshHost, String> {
    let target = crate::deploy::host_target(project, name).map_err(|e| e.to_string())?;
    let Some(Layer::Ssh(h)) = target.layers.first() else {
        return Err(format!("host {name}: no ssh layer"));
    };
    let mut h = h.clone();
    h.connect_timeout = Duration::from_secs(5);
    // The same known-hosts file the daemon's connections use.
    if let Some(k) =
        std::env::var_os(crate::runtime::host::KNOWN_HOSTS_ENV).filter(|k| !k.is_empty())
    {
        let k = std::path::PathBuf::from(k);
        h.known_hosts = Some(k.clone());
        for j in &mut h.jump {
            j.known_hosts = Some(k.clone());
        }
    }
    Ok(h)
}

async fn timed<T>(f: impl std::future::Future<Output = Result<T, Error>>) -> Result<T, String> {
    async { f.await.map_err(|e| e.to_string()) }
        .or(async {
            smol::Timer::after(CHECK_TIMEOUT).await;
            Err(format!("no answer within {}s", CHECK_TIMEOUT.as_secs()))
        })
        .await
}

async fn run_ok(exec: &Executor, target: &Target, cmd: &Command) -> Result<String, String> {
    let out = timed(exec.output(target, &cmd.clone().timeout(CHECK_TIMEOUT))).await?;
    if out.status.success() {
        Ok(out.stdout_text().trim().to_owned())
    } else {
        Err(format!(
            "exit {:?}: {}",
            out.status.code(),
            out.stderr_text().trim()
        ))
    }
}

fn connect_hint(e: &str, h: &SshHost) -> &'static str {
    if e.contains("authentication failed") {
        "the server refused the key: add the public key of identity_file to the user's ~/.ssh/authorized_keys, or fix user/identity_file"
    } else if e.contains("host key") {
        "the host key is unknown or changed: verify it and add it to known_hosts (HARNESS_KNOWN_HOSTS), or set known_hosts: accept-new"
    } else if e.contains("unknown host") {
        "the address does not resolve: fix address or DNS"
    } else if e.contains("refused") {
        "nothing listens on the ssh port: start sshd or fix port"
    } else if !h.jump.is_empty() {
        "the host (or its jump host) does not answer: check address, port, jump and the network"
    } else {
        "the host does not answer: check address, port, routing and firewalls"
    }
}

/// One host of `project`; every check within [`CHECK_TIMEOUT`], the connection timing out after 5 s.
pub async fn check_host(exec: &Executor, project: &Project, name: &str) -> HostReport {
    let entry = &project.hosts[name];
    let docker_required = project
        .services
        .values()
        .any(|s| s.kind == ServiceKind::Docker && s.host.as_deref() == Some(name));
    let mut r = HostReport {
        host: name.to_owned(),
        address: entry.address.clone(),
        port: entry.port,
        user: entry.user.clone(),
        reachable: false,
        authenticated: false,
        sudo: None,
        sudo_required: entry.sudo,
        docker: None,
        latency_ms: None,
        connect_ms: None,
        ok: false,
        problems: Vec::new(),
    };
    let h = match ssh_host(project, name) {
        Ok(h) => h,
        Err(e) => {
            r.problems.push(HostProblem {
                check: "config".into(),
                error: e,
                hint: "fix the hosts entry".into(),
            });
            return r;
        }
    };
    let ssh = Target::ssh(h.clone());
    let began = Instant::now();
    match run_ok(exec, &ssh, &Command::new("true")).await {
        Ok(_) => {
            r.reachable = true;
            r.authenticated = true;
            r.connect_ms = Some(ms(began.elapsed()));
        }
        Err(e) => {
            r.reachable =
                e.contains("authentication failed") || e.contains("host key") || e.contains("sudo");
            let hint = connect_hint(&e, &h).to_owned();
            r.problems.push(HostProblem {
                check: if r.reachable {
                    "authenticated"
                } else {
                    "reachable"
                }
                .into(),
                error: e,
                hint,
            });
            return r;
        }
    }
    // Latency: the best of three round trips over the established connection.
    let mut best: Option<Duration> = None;
    for _ in 0..3 {
        let t = Instant::now();
        if run_ok(exec, &ssh, &Command::new("true")).await.is_ok() {
            best = Some(best.map_or(t.elapsed(), |b| b.min(t.elapsed())));
        }
    }
    r.latency_ms = best.map(ms);
    let sudo = ssh.clone().sudo("root");
    match run_ok(exec, &sudo, &Command::new("true")).await {
        Ok(_) => r.sudo = Some(true),
        Err(e) => {
            r.sudo = Some(false);
            if entry.sudo {
                r.problems.push(HostProblem {
                    check: "sudo".into(),
                    error: e,
                    hint: format!(
                        "`user:` services and docker through sudo need `sudo -n`: add a NOPASSWD sudoers rule for {}",
                        entry.user.as_deref().unwrap_or("the login user")
                    ),
                });
            }
        }
    }
    let mut docker = Command::new("docker");
    if let Some(dh) = &entry.docker_host {
        docker = docker.arg("-H").arg(dh);
    }
    let docker = docker
        .arg("version")
        .arg("--format")
        .arg("{{.Server.Version}}");
    let mut d = DockerReport {
        reachable: false,
        as_user: None,
        server_version: None,
        required: docker_required,
    };
    let mut docker_err = String::new();
    let mut tries = vec![(ssh.clone(), entry.user.clone().unwrap_or_default())];
    if r.sudo == Some(true) {
        tries.push((sudo, "root".to_owned()));
    }
    for (target, who) in tries {
        match run_ok(exec, &target, &docker).await {
            Ok(v) => {
                d.reachable = true;
                d.as_user = Some(who);
                d.server_version = Some(v);
                break;
            }
            Err(e) => docker_err = e,
        }
    }
    if !d.reachable && docker_required {
        let hint = if docker_err.contains("not found") {
            "install docker on the host"
        } else if docker_err.contains("permission denied") {
            "the user may not use the engine: add it to the docker group, or allow sudo (sudo: true)"
        } else {
            "the engine does not answer: start dockerd or fix docker_host"
        };
        r.problems.push(HostProblem {
            check: "docker".into(),
            error: docker_err,
            hint: hint.into(),
        });
    }
    r.docker = Some(d);
    wireguard_check(exec, project, name, &ssh, &mut r).await;
    r.ok = r.problems.is_empty();
    r
}

/// For a member of a `wireguard` network: `wg`, and kernel WireGuard or `wireguard-go` with
/// /dev/net/tun, as the daemon will look for them (docs/adr/0034-wireguard-mesh.md).
async fn wireguard_check(
    exec: &Executor,
    project: &Project,
    name: &str,
    ssh: &Target,
    r: &mut HostReport,
) {
    let mut networks: Vec<&str> = project
        .networks
        .iter()
        .filter(|(_, n)| {
            n.kind == harness_config::NetworkKind::Wireguard
                && n.nodes.iter().any(|node| node.name == name)
        })
        .map(|(k, _)| k.as_str())
        .collect();
    if crate::network::automatic_members(project).contains(name) {
        networks.push(crate::network::auto_name(project));
    }
    if networks.is_empty() {
        return;
    }
    let script = "command -v wg >/dev/null 2>&1 || echo wg; \
                  [ -d /sys/module/wireguard ] || command -v wireguard-go >/dev/null 2>&1 || echo wireguard-go; \
                  [ -d /sys/module/wireguard ] || [ -c /dev/net/tun ] || echo tun";
    let out = run_ok(exec, ssh, &Command::new("sh").arg("-c").arg(script)).await;
    let nets = networks.join(", ");
    match out {
        Ok(missing) => {
            for tool in missing.split_whitespace() {
                let (error, hint) = match tool {
                    "wg" => (
                        format!(
                            "`wg` (wireguard-tools) is not installed; needed by network {nets}"
                        ),
                        format!(
                            "sudo apt-get install wireguard-tools (or `harness network install {name}`)"
                        ),
                    ),
                    "wireguard-go" => (
                        format!(
                            "no kernel WireGuard and no `wireguard-go`; needed by network {nets}"
                        ),
                        format!(
                            "sudo apt-get install wireguard-go (or `harness network install {name}`)"
                        ),
                    ),
                    _ => (
                        format!(
                            "/dev/net/tun is missing (wireguard-go needs it); needed by network {nets}"
                        ),
                        "load the tun module: sudo modprobe tun".to_owned(),
                    ),
                };
                r.problems.push(HostProblem {
                    check: "wireguard".into(),
                    error,
                    hint,
                });
            }
        }
        Err(e) => r.problems.push(HostProblem {
            check: "wireguard".into(),
            error: e,
            hint: "the tools could not be checked".into(),
        }),
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}
