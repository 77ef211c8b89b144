//! Layers and targets: where a command runs. A [`Target`] is a stack of layers, outermost first; each layer
//! wraps the argv of everything inside it. Only ssh crosses a shell boundary, so only ssh quotes (once).

use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::Place;
use crate::quote;

/// How an ssh layer treats host keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HostKeyPolicy {
    /// Only hosts whose key is already in the known-hosts file (`StrictHostKeyChecking yes`).
    #[default]
    Strict,
    /// Learn unknown hosts' keys, refuse changed ones (`StrictHostKeyChecking accept-new`).
    AcceptNew,
}

/// An ssh host and how to reach it. Every option goes into a generated per-host ssh config file, because
/// options given on the command line do not reach jump hosts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SshHost {
    /// The name used in messages (`h1`).
    pub name: String,
    /// Address or DNS name to connect to.
    pub hostname: String,
    pub port: u16,
    pub user: Option<String>,
    pub identity_file: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    pub host_key_policy: HostKeyPolicy,
    /// Jump hosts, first hop first (`ProxyJump`).
    pub jump: Vec<SshHost>,
    /// TCP connect plus handshake limit.
    pub connect_timeout: Duration,
    /// Sessions allowed at once on one multiplexed connection (sshd's `MaxSessions`, 10 by default). One
    /// is kept for control operations (signals, status); up to 4 connections open when all are busy.
    pub max_sessions: usize,
    /// Further `Key Value` ssh options written into the config block.
    pub options: Vec<(String, String)>,
}

impl SshHost {
    /// A host reached at `hostname` (port 22), named `hostname` in messages.
    pub fn new(hostname: impl Into<String>) -> Self {
        let hostname = hostname.into();
        SshHost {
            name: hostname.clone(),
            hostname,
            port: 22,
            user: None,
            identity_file: None,
            known_hosts: None,
            host_key_policy: HostKeyPolicy::Strict,
            jump: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            max_sessions: 10,
            options: Vec::new(),
        }
    }

    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }
    pub fn identity_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.identity_file = Some(path.into());
        self
    }
    pub fn known_hosts(mut self, path: impl Into<PathBuf>) -> Self {
        self.known_hosts = Some(path.into());
        self
    }
    pub fn host_key_policy(mut self, policy: HostKeyPolicy) -> Self {
        self.host_key_policy = policy;
        self
    }
    /// Adds a jump host (reached before this one; the first added is the first hop).
    pub fn jump(mut self, via: SshHost) -> Self {
        self.jump.push(via);
        self
    }
    pub fn connect_timeout(mut self, after: Duration) -> Self {
        self.connect_timeout = after;
        self
    }
    pub fn max_sessions(mut self, n: usize) -> Self {
        self.max_sessions = n.max(1);
        self
    }
    pub fn option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.push((key.into(), value.into()));
        self
    }

    fn user_at(&self) -> String {
        match &self.user {
            Some(u) => format!("{u}@{}", self.name),
            None => self.name.clone(),
        }
    }
}

/// A docker CLI and the engine it talks to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DockerCli {
    /// The CLI program (`docker`), looked up where the layer runs.
    pub program: String,
    /// The engine (`-H unix:///path/docker.sock`); the CLI's default when `None`.
    pub host: Option<String>,
}

impl Default for DockerCli {
    fn default() -> Self {
        DockerCli {
            program: "docker".into(),
            host: None,
        }
    }
}

impl DockerCli {
    /// The CLI's argv up to the subcommand.
    pub(crate) fn base(&self) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec![self.program.clone().into()];
        if let Some(h) = &self.host {
            v.push("-H".into());
            v.push(h.into());
        }
        v
    }
}

/// `docker exec -i` into a running container.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DockerExec {
    pub cli: DockerCli,
    /// Container name or id.
    pub container: String,
    /// `-u USER[:GROUP]`.
    pub user: Option<String>,
}

impl DockerExec {
    pub fn new(container: impl Into<String>) -> Self {
        DockerExec {
            cli: DockerCli::default(),
            container: container.into(),
            user: None,
        }
    }
    pub fn cli(mut self, cli: DockerCli) -> Self {
        self.cli = cli;
        self
    }
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }
}

/// `sudo -n -H -u USER`: never prompts; a password requirement is an error.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sudo {
    pub user: String,
}

/// One layer of a target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Layer {
    Ssh(SshHost),
    Sudo(Sudo),
    Docker(DockerExec),
}

impl Layer {
    /// Short name for messages: `ssh(hbuser@h1)`, `sudo(hbsvc)`, `docker(web)`.
    pub fn describe(&self) -> String {
        match self {
            Layer::Ssh(h) => format!("ssh({})", h.user_at()),
            Layer::Sudo(s) => format!("sudo({})", s.user),
            Layer::Docker(d) => format!("docker({})", d.container),
        }
    }
}

/// Where a command runs: a stack of layers, outermost first. The empty stack is the local machine.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Target {
    pub layers: Vec<Layer>,
}

impl Target {
    /// This machine, as the current user.
    pub fn local() -> Self {
        Target { layers: Vec::new() }
    }
    /// Over ssh to `host`.
    pub fn ssh(host: SshHost) -> Self {
        Target::local().then(Layer::Ssh(host))
    }
    /// Adds an inner layer.
    pub fn then(mut self, layer: Layer) -> Self {
        self.layers.push(layer);
        self
    }
    /// Adds `sudo -u user` inside.
    pub fn sudo(self, user: impl Into<String>) -> Self {
        self.then(Layer::Sudo(Sudo { user: user.into() }))
    }
    /// Adds `docker exec` inside.
    pub fn docker(self, exec: DockerExec) -> Self {
        self.then(Layer::Docker(exec))
    }
    /// True for the plain local machine.
    pub fn is_local(&self) -> bool {
        self.layers.is_empty()
    }

    /// The host the innermost program runs on (the last ssh hop's name, or `localhost`).
    pub fn host(&self) -> String {
        self.layers
            .iter()
            .rev()
            .find_map(|l| {
                if let Layer::Ssh(h) = l {
                    Some(h.name.clone())
                } else {
                    None
                }
            })
            .unwrap_or_else(|| "localhost".into())
    }

    /// Where each layer runs, in order, then where the program runs.
    pub fn places(&self) -> Vec<Place> {
        let mut host = "localhost".to_string();
        let mut out = Vec::new();
        for l in &self.layers {
            out.push(Place {
                host: host.clone(),
                layer: l.describe(),
            });
            if let Layer::Ssh(h) = l {
                host = h.name.clone();
            }
        }
        out.push(Place {
            host,
            layer: format!("program via {self}"),
        });
        out
    }

    /// Where the program at the end runs.
    pub fn program_place(&self) -> Place {
        self.places().pop().unwrap_or(Place {
            host: "localhost".into(),
            layer: "local".into(),
        })
    }

    /// Wraps `argv` in every layer. The outermost ssh layer, if any, is left to the caller (it needs the
    /// multiplexed connection); `skip_outer_ssh` says so.
    /// With `tty`, each layer passes a terminal on: `ssh -tt`, `docker exec -it`.
    pub(crate) fn wrap(
        &self,
        mut argv: Vec<OsString>,
        skip_outer_ssh: bool,
        tty: bool,
    ) -> Vec<OsString> {
        for (i, layer) in self.layers.iter().enumerate().rev() {
            if i == 0 && skip_outer_ssh && matches!(layer, Layer::Ssh(_)) {
                break;
            }
            argv = match layer {
                Layer::Sudo(s) => {
                    let mut v: Vec<OsString> = vec![
                        "sudo".into(),
                        "-n".into(),
                        "-H".into(),
                        "-u".into(),
                        s.user.clone().into(),
                        "--".into(),
                    ];
                    v.extend(argv);
                    v
                }
                Layer::Docker(d) => {
                    let mut v = d.cli.base();
                    v.push("exec".into());
                    v.push("-i".into());
                    if tty {
                        v.push("-t".into());
                    }
                    if let Some(u) = &d.user {
                        v.push("-u".into());
                        v.push(u.into());
                    }
                    v.push(d.container.clone().into());
                    v.extend(argv);
                    v
                }
                Layer::Ssh(h) => inner_ssh_argv(h, &argv, tty),
            };
        }
        argv
    }
}

/// An ssh hop that runs on a remote host (not the outermost layer): its options go on the command line, so
/// identity and known-hosts paths refer to that host, and it has no multiplexing or jump hosts.
fn inner_ssh_argv(h: &SshHost, argv: &[OsString], tty: bool) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec!["ssh".into(), if tty { "-tt" } else { "-T" }.into()];
    let policy = match h.host_key_policy {
        HostKeyPolicy::Strict => "yes",
        HostKeyPolicy::AcceptNew => "accept-new",
    };
    let mut opts = vec![
        ("BatchMode".to_string(), "yes".to_string()),
        ("StrictHostKeyChecking".into(), policy.into()),
        (
            "ConnectTimeout".into(),
            h.connect_timeout.as_secs().max(1).to_string(),
        ),
        ("ServerAliveInterval".into(), "5".into()),
        ("ServerAliveCountMax".into(), "3".into()),
        ("LogLevel".into(), "ERROR".into()),
    ];
    if let Some(k) = &h.known_hosts {
        opts.push(("UserKnownHostsFile".into(), k.display().to_string()));
    }
    if let Some(i) = &h.identity_file {
        opts.push(("IdentityFile".into(), i.display().to_string()));
        opts.push(("IdentitiesOnly".into(), "yes".into()));
    }
    opts.extend(h.options.iter().cloned());
    for (k, val) in opts {
        v.push("-o".into());
        v.push(format!("{k}={val}").into());
    }
    v.push("-p".into());
    v.push(h.port.to_string().into());
    if let Some(u) = &h.user {
        v.push("-l".into());
        v.push(u.into());
    }
    v.push(h.hostname.clone().into());
    v.push("--".into());
    v.push(OsString::from_vec(quote::join(argv)));
    v
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.layers.is_empty() {
            return f.write_str("local");
        }
        let parts: Vec<String> = self.layers.iter().map(Layer::describe).collect();
        f.write_str(&parts.join(" → "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_nests_inside_out() {
        let t = Target::local()
            .sudo("svc")
            .docker(DockerExec::new("web").user("app"));
        let got = t.wrap(vec!["echo".into(), "".into()], false, false);
        let want: Vec<OsString> = [
            "sudo", "-n", "-H", "-u", "svc", "--", "docker", "exec", "-i", "-u", "app", "web",
            "echo", "",
        ]
        .iter()
        .map(Into::into)
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn tty_wraps_pass_a_terminal_on() {
        let t = Target::local()
            .then(Layer::Ssh(SshHost::new("10.0.0.2").name("h4")))
            .sudo("root")
            .docker(DockerExec::new("web"));
        let got = t.wrap(vec!["sh".into()], false, true);
        let got: Vec<String> = got
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(got[..2], ["ssh", "-tt"]);
        let remote = got.last().unwrap();
        assert!(
            remote.contains("sudo -n -H -u root -- docker exec -i -t web sh"),
            "{remote}"
        );
    }

    #[test]
    fn places_name_hosts() {
        let t = Target::ssh(SshHost::new("198.18.0.11").name("h1").user("u")).sudo("svc");
        let p = t.places();
        assert_eq!(p[0].host, "localhost");
        assert_eq!(p[0].layer, "ssh(u@h1)");
        assert_eq!(p[1].host, "h1");
        assert_eq!(p[1].layer, "sudo(svc)");
        assert_eq!(t.host(), "h1");
        assert_eq!(t.to_string(), "ssh(u@h1) → sudo(svc)");
    }
}
