//! SSH hosts as the services file describes them, resolved (jump hosts included) into
//! command-executor targets. Services there run through `command_executor::service::remote`,
//! whose handle is the host kind's [`ServiceProcess`].

use std::path::PathBuf;
use std::time::Duration;

use command_executor::service::ExitInfo;
use command_executor::service::remote::{Reachability, RemoteService};
use command_executor::{HostKeyPolicy, Signal, SshHost, Target};
use futures_util::future::BoxFuture;
use harness_config::{KnownHosts, Project};
use serde::Serialize;

use super::{LaunchError, ServiceProcess};

/// Environment variable naming a known-hosts file for every harness ssh connection (the
/// services file only chooses the policy).
pub(crate) const KNOWN_HOSTS_ENV: &str = "HARNESS_KNOWN_HOSTS";

/// An SSH host as the services file describes it, resolved (jump hosts included).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub(crate) struct HostSpec {
    pub name: String,
    pub address: String,
    pub port: u16,
    pub user: Option<String>,
    pub identity_file: Option<PathBuf>,
    pub accept_new: bool,
    /// Jump hosts, first hop first.
    pub jump: Vec<HostSpec>,
    pub sudo: bool,
    pub docker_host: Option<String>,
}

/// The `hosts:` entry `name`, with its jump chain. Services and package installs both reach a
/// host through this (then [`HostSpec::ssh`]), so they connect the same way.
pub(crate) fn host_spec(project: &Project, name: &str) -> Result<HostSpec, String> {
    host_spec_depth(project, name, 0)
}

fn host_spec_depth(project: &Project, name: &str, depth: usize) -> Result<HostSpec, String> {
    if depth > 8 {
        return Err(format!("host {name:?}: jump chain longer than 8 (a loop?)"));
    }
    let h = project
        .hosts
        .get(name)
        .ok_or_else(|| format!("host {name:?} is not defined under hosts:"))?;
    let mut jump = Vec::new();
    if let Some(j) = &h.jump {
        if project.hosts.contains_key(j) {
            let via = host_spec_depth(project, j, depth + 1)?;
            jump.extend(via.jump.iter().cloned());
            jump.push(HostSpec {
                jump: Vec::new(),
                ..via
            });
        } else {
            jump.push(parse_jump(j)?);
        }
    }
    Ok(HostSpec {
        name: name.to_owned(),
        address: h.address.clone(),
        port: h.port,
        user: h.user.clone(),
        identity_file: h.identity_file.clone(),
        accept_new: h.known_hosts == KnownHosts::AcceptNew,
        jump,
        sudo: h.sudo,
        docker_host: h.docker_host.clone(),
    })
}

/// `user@host[:port]` or `host[:port]` (a bare IPv6 address takes no port).
fn parse_jump(s: &str) -> Result<HostSpec, String> {
    let (user, rest) = match s.split_once('@') {
        Some((u, r)) => (Some(u.to_owned()), r),
        None => (None, s),
    };
    let (addr, port) = match rest.rsplit_once(':') {
        Some((a, p)) if !a.contains(':') => (
            a,
            p.parse::<u16>()
                .map_err(|_| format!("jump {s:?}: bad port {p:?}"))?,
        ),
        _ => (rest, 22),
    };
    if addr.is_empty() || user.as_deref().is_some_and(str::is_empty) {
        return Err(format!("jump {s:?}: expected [user@]host[:port]"));
    }
    Ok(HostSpec {
        name: addr.to_owned(),
        address: addr.to_owned(),
        port,
        user,
        identity_file: None,
        accept_new: false,
        jump: Vec::new(),
        sudo: false,
        docker_host: None,
    })
}

impl HostSpec {
    /// The command-executor host: the per-host ssh config it generates carries every option.
    pub fn ssh(&self) -> SshHost {
        let mut h = SshHost::new(&self.address)
            .name(&self.name)
            .port(self.port)
            .connect_timeout(Duration::from_secs(5))
            .host_key_policy(if self.accept_new {
                HostKeyPolicy::AcceptNew
            } else {
                HostKeyPolicy::Strict
            });
        if let Some(u) = &self.user {
            h = h.user(u);
        }
        if let Some(i) = &self.identity_file {
            h = h.identity_file(i);
        }
        if let Some(k) = std::env::var_os(KNOWN_HOSTS_ENV).filter(|k| !k.is_empty()) {
            h = h.known_hosts(PathBuf::from(k));
        }
        for j in &self.jump {
            let mut via = j.ssh();
            via.jump.clear();
            if via.identity_file.is_none()
                && let Some(i) = &self.identity_file
            {
                via = via.identity_file(i);
            }
            h = h.jump(via);
        }
        h
    }

    /// Where the service's program runs: ssh, then sudo when it runs as another user.
    pub fn target(&self, user: Option<&str>) -> Target {
        let t = Target::ssh(self.ssh());
        match user {
            Some(u) if Some(u) != self.user.as_deref() => t.sudo(u),
            _ => t,
        }
    }
}

impl ServiceProcess for RemoteService {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn start_time(&self) -> u64 {
        self.start_time
    }

    fn reachability(&self) -> Option<Reachability> {
        Some(RemoteService::reachability(self))
    }

    fn wait(&mut self) -> BoxFuture<'_, ExitInfo> {
        Box::pin(RemoteService::wait(self))
    }

    fn terminate(
        &mut self,
        signal: Signal,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<(ExitInfo, bool), LaunchError>> {
        Box::pin(async move { Ok(RemoteService::terminate(self, signal, timeout).await?) })
    }

    fn sweep(&self) -> BoxFuture<'_, Result<(), LaunchError>> {
        Box::pin(async move { Ok(self.clean().await?) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jump_spelling() {
        let j = parse_jump("u@bastion:2222").unwrap();
        assert_eq!(
            (j.user.as_deref(), j.address.as_str(), j.port),
            (Some("u"), "bastion", 2222)
        );
        assert!(parse_jump("x:y").is_err());
    }
}
