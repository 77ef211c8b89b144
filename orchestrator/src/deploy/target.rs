//! From a services.yaml hosts entry to a command-executor [`Target`] for installing packages.

use command_executor::{HostKeyPolicy, SshHost, Target};
use harness_config::{Host, KnownHosts, Project};

/// Jump chains longer than this are refused (they would also be refused as cycles).
const MAX_JUMPS: usize = 8;
/// Environment variable naming a known-hosts file for every harness ssh connection.
const KNOWN_HOSTS_ENV: &str = "HARNESS_KNOWN_HOSTS";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("unknown host {0:?}: not in the hosts section")]
    UnknownHost(String),
    #[error(
        "host {host}: jump {jump:?} is neither a hosts entry nor user@host[:port], or the chain loops"
    )]
    BadJump { host: String, jump: String },
}

/// The target that installs on hosts entry `name`: ssh as the entry's user, then `sudo -u root` when the
/// entry allows sudo (installing under /opt needs root) and the user is not root already.
pub fn host_target(project: &Project, name: &str) -> Result<Target, TargetError> {
    let host = project
        .hosts
        .get(name)
        .ok_or_else(|| TargetError::UnknownHost(name.to_owned()))?;
    let target = Target::ssh(ssh_host(project, name, host, 0)?);
    Ok(if host.sudo && host.user.as_deref() != Some("root") {
        target.sudo("root")
    } else {
        target
    })
}

fn ssh_host(
    project: &Project,
    name: &str,
    host: &Host,
    depth: usize,
) -> Result<SshHost, TargetError> {
    let mut s = SshHost::new(host.address.clone())
        .name(name)
        .port(host.port);
    if let Some(u) = &host.user {
        s = s.user(u.clone());
    }
    if let Some(i) = &host.identity_file {
        s = s.identity_file(i.clone());
    }
    s = s.host_key_policy(match host.known_hosts {
        KnownHosts::Strict => HostKeyPolicy::Strict,
        KnownHosts::AcceptNew => HostKeyPolicy::AcceptNew,
    });
    // The same known-hosts file as remote services (the services file only chooses the policy).
    if let Some(k) = std::env::var_os(KNOWN_HOSTS_ENV).filter(|k| !k.is_empty()) {
        s = s.known_hosts(std::path::PathBuf::from(k));
    }
    if let Some(j) = &host.jump {
        let bad = || TargetError::BadJump {
            host: name.to_owned(),
            jump: j.clone(),
        };
        if depth >= MAX_JUMPS {
            return Err(bad());
        }
        let hop = match project.hosts.get(j) {
            Some(jh) => ssh_host(project, j, jh, depth + 1)?,
            None => parse_jump(j).ok_or_else(bad)?,
        };
        // The hop's own hops come first; SshHost keeps the chain flat, first hop first.
        let mut chain = hop.jump.clone();
        let mut hop = hop;
        hop.jump.clear();
        chain.push(hop);
        for h in chain {
            s = s.jump(h);
        }
    }
    Ok(s)
}

/// `user@host[:port]` or `host[:port]`.
fn parse_jump(text: &str) -> Option<SshHost> {
    let (user, rest) = match text.split_once('@') {
        Some((u, r)) => (Some(u), r),
        None => (None, text),
    };
    let (addr, port) = match rest.rsplit_once(':') {
        Some((a, p)) if !a.contains(':') => (a, p.parse().ok()?),
        _ => (rest, 22),
    };
    if addr.is_empty() || user.is_some_and(str::is_empty) {
        return None;
    }
    let mut h = SshHost::new(addr).port(port);
    if let Some(u) = user {
        h = h.user(u);
    }
    Some(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use command_executor::Layer;

    fn project(yaml: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("services.yaml");
        std::fs::write(&path, yaml).unwrap();
        let loaded = harness_config::load(&path);
        loaded
            .project
            .unwrap_or_else(|| panic!("{:?}", loaded.errors))
    }

    #[test]
    fn hosts_become_targets_with_sudo_and_jumps() {
        let p = project(
            "hosts:\n  h1: {address: 198.18.0.11, user: hbuser, sudo: true}\n  \
             h4: {address: 198.19.0.14, user: hbuser, jump: h1, sudo: false}\n  \
             h5: {address: 10.0.0.5, jump: 'ops@bastion:2222'}\n\
             services:\n  web: {type: package, package: hello, host: h1, version: 1.0.0}\n",
        );
        let t = host_target(&p, "h1").unwrap();
        assert_eq!(t.to_string(), "ssh(hbuser@h1) → sudo(root)");
        let t = host_target(&p, "h4").unwrap();
        let Layer::Ssh(h4) = &t.layers[0] else {
            panic!()
        };
        assert_eq!(h4.jump.len(), 1);
        assert_eq!(
            (h4.jump[0].name.as_str(), h4.jump[0].hostname.as_str()),
            ("h1", "198.18.0.11")
        );
        assert_eq!(t.layers.len(), 1, "h4 allows no sudo");
        let t = host_target(&p, "h5").unwrap();
        let Layer::Ssh(h5) = &t.layers[0] else {
            panic!()
        };
        assert_eq!(
            (
                h5.jump[0].hostname.as_str(),
                h5.jump[0].port,
                h5.jump[0].user.as_deref()
            ),
            ("bastion", 2222, Some("ops"))
        );
        assert_eq!(
            host_target(&p, "nope").unwrap_err(),
            TargetError::UnknownHost("nope".into())
        );
        let targets = super::super::package_targets(&p, "hello").unwrap();
        assert_eq!(
            targets.iter().map(|t| t.host.as_str()).collect::<Vec<_>>(),
            ["h1"]
        );
    }
}
