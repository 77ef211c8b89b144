//! From a services.yaml hosts entry to a command-executor [`Target`] for installing packages.

use command_executor::Target;
use harness_config::Project;

use crate::runtime::host::host_spec;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("unknown host {0:?}: not in the hosts section")]
    UnknownHost(String),
    #[error(
        "host {host}: jump {jump:?} is neither a hosts entry nor user@host[:port], or the chain loops"
    )]
    BadJump { host: String, jump: String },
}

/// The target that installs on hosts entry `name`: ssh as the entry's user (the same connection
/// as its services, [`host_spec`]), then `sudo -u root` when the entry allows sudo (installing
/// under /opt needs root) and the user is not root already.
pub fn host_target(project: &Project, name: &str) -> Result<Target, TargetError> {
    let host = project
        .hosts
        .get(name)
        .ok_or_else(|| TargetError::UnknownHost(name.to_owned()))?;
    // The entry exists, so only its jump chain can fail.
    let spec = host_spec(project, name).map_err(|_| TargetError::BadJump {
        host: name.to_owned(),
        jump: host.jump.clone().unwrap_or_default(),
    })?;
    let target = Target::ssh(spec.ssh());
    Ok(if host.sudo && host.user.as_deref() != Some("root") {
        target.sudo("root")
    } else {
        target
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use command_executor::Layer;

    use crate::test_project as project;

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
