//! Turns what a layer said on stderr (before the program started) into a typed error naming host and layer.

use crate::error::{Error, Place};
use crate::layer::{Layer, SshHost, Target};

/// Classifies an ssh client's complaint about connecting to `host`.
pub(crate) fn ssh_error(at: Place, host: &SshHost, stderr: &str) -> Option<Error> {
    let detail = stderr.trim().lines().last().unwrap_or("").to_string();
    let target = host.name.clone();
    let has = |s: &str| stderr.contains(s);
    Some(
        if has("Could not resolve hostname") || has("Name or service not known") {
            Error::UnknownHost { at, target, detail }
        } else if has("Connection refused") {
            Error::ConnectionRefused { at, target }
        } else if has("Host key verification failed")
            || has("REMOTE HOST IDENTIFICATION HAS CHANGED")
            || has("host key is known for")
        {
            Error::HostKey { at, target, detail }
        } else if has("Permission denied") || has("Too many authentication failures") {
            Error::AuthFailed {
                at,
                target,
                user: host.user.clone().unwrap_or_default(),
                detail,
            }
        } else if has("timed out") {
            Error::Timeout {
                at,
                operation: format!("connecting to {target}"),
                after: host.connect_timeout,
            }
        } else if has("No route to host")
            || has("Network is unreachable")
            || has("Connection closed by UNKNOWN")
        {
            Error::Unreachable { at, target, detail }
        } else {
            return None;
        },
    )
}

/// Classifies a chain that ended before the program started. `lines` is everything seen on stderr.
pub(crate) fn chain_error(target: &Target, lines: &[String], code: Option<i32>) -> Error {
    let places = target.places();
    let program_place = places.last().cloned().unwrap_or(Place {
        host: "localhost".into(),
        layer: "local".into(),
    });
    let text = lines.join("\n");
    let all = text.trim().to_string();
    let find = |pred: &dyn Fn(&Layer) -> bool| {
        target
            .layers
            .iter()
            .enumerate()
            .find(|(_, l)| pred(l))
            .map(|(i, l)| (places[i].clone(), l))
    };

    // Markers from our own wrapper at the end of the chain.
    if lines.iter().any(|l| l.contains("\u{1e}HARNESS-NOCWD")) {
        return Error::WorkingDir {
            at: program_place,
            dir: String::new(),
        };
    }
    if lines.iter().any(|l| l.contains("\u{1e}HARNESS-NOPROG")) {
        return Error::ProgramNotFound {
            at: program_place,
            program: String::new(),
        };
    }
    // Inner ssh hops.
    for (i, l) in target.layers.iter().enumerate() {
        if let Layer::Ssh(h) = l
            && (text.contains("ssh:")
                || text.contains("Permission denied")
                || text.contains("Host key"))
            && let Some(e) = ssh_error(places[i].clone(), h, &text)
        {
            return e;
        }
    }
    // docker: the CLI missing, the engine unreachable, the container absent.
    for (i, l) in target.layers.iter().enumerate() {
        if let Layer::Docker(d) = l {
            let at = places[i].clone();
            let prog = &d.cli.program;
            let missing = lines.iter().any(|x| {
                x.contains(prog.as_str())
                    && (x.contains("not found") || x.contains("No such file or directory"))
                    && !x.contains("No such container")
            });
            if missing {
                return Error::DockerMissing { at, detail: all };
            }
            if text.contains("Cannot connect to the Docker daemon")
                || text.contains("error during connect")
                || text.contains("Is the docker daemon running")
            {
                return Error::DockerUnreachable { at, detail: all };
            }
            if text.contains("No such container") || text.contains("is not running") {
                return Error::ContainerAbsent {
                    at,
                    container: d.container.clone(),
                    detail: all,
                };
            }
        }
    }
    // sudo.
    if let Some((at, Layer::Sudo(s))) = find(&|l| matches!(l, Layer::Sudo(_))) {
        if text.contains("a password is required") || text.contains("a terminal is required") {
            return Error::SudoPassword {
                at,
                user: s.user.clone(),
            };
        }
        if text.contains("sudo:") {
            return Error::Sudo { at, detail: all };
        }
    }
    let at = places.first().cloned().unwrap_or(program_place);
    Error::Layer {
        at,
        code,
        stderr: all,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::DockerExec;

    fn t() -> Target {
        Target::ssh(SshHost::new("198.18.0.11").name("h1"))
            .sudo("svc")
            .docker(DockerExec::new("web"))
    }

    #[test]
    fn sudo_password() {
        let e = chain_error(&t(), &["sudo: a password is required".into()], Some(1));
        match e {
            Error::SudoPassword { at, user } => {
                assert_eq!(user, "svc");
                assert_eq!(at.host, "h1");
                assert_eq!(at.layer, "sudo(svc)");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn docker_cases() {
        let e = chain_error(&t(), &["Error: No such container: web".into()], Some(1));
        assert!(matches!(e, Error::ContainerAbsent { .. }), "{e:?}");
        let e = chain_error(&t(), &["sudo: docker: command not found".into()], Some(1));
        assert!(matches!(e, Error::DockerMissing { .. }), "{e:?}");
        let e = chain_error(
            &t(),
            &["Cannot connect to the Docker daemon at unix:///x.sock. Is the docker daemon running?".into()],
            Some(1),
        );
        assert!(matches!(e, Error::DockerUnreachable { .. }), "{e:?}");
    }

    #[test]
    fn ssh_cases() {
        let h = SshHost::new("nope").user("u");
        let at = Place {
            host: "localhost".into(),
            layer: "ssh(u@nope)".into(),
        };
        let e = ssh_error(
            at.clone(),
            &h,
            "ssh: Could not resolve hostname nope: Name or service not known",
        );
        assert!(matches!(e, Some(Error::UnknownHost { .. })));
        let e = ssh_error(at.clone(), &h, "u@nope: Permission denied (publickey).");
        assert!(matches!(e, Some(Error::AuthFailed { .. })));
        let e = ssh_error(at, &h, "Host key verification failed.");
        assert!(matches!(e, Some(Error::HostKey { .. })));
    }
}
