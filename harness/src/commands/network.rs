//! `harness network list | show NAME | test [A B] | install HOST`: the project's WireGuard meshes,
//! declared or automatic, and the tools they need (docs/adr/0034-wireguard-mesh.md).
//!
//! Runs in the CLI: the members, interfaces and addresses follow from the
//! services file and the daemon's state directory (`$HARNESS_HOME`), the public keys from the
//! mesh record the daemon keeps there; `show` and `test` ask each member through its own ssh
//! connection (as root, like the daemon) with `wg show` and `ping`.

use std::time::Duration;

use clap::Subcommand;
use command_executor::{Command, Executor};
use harness_config::{LOCAL_NODE, Project};
use orchestrator::network::view::{self, run_root};
use orchestrator::network::{self, MeshPlan};
use serde::Serialize;

use super::{Status, load_project};
use crate::output::{Context, print_json};

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// The `wireguard` networks (and the automatic mesh, `auto`, when consumers cannot reach a
    /// provider on the underlay): members, interfaces, mesh addresses, whether the daemon has the
    /// mesh up.
    List,
    /// One network's members with their peers as `wg show` reports them (endpoint, latest
    /// handshake, bytes).
    Show { name: String },
    /// Reachability and round trip between members over the mesh and over the underlay (all
    /// ordered pairs, or A to B); exit 1 when a pair does not answer over the mesh.
    Test {
        /// Member to test from (`local` for this machine).
        a: Option<String>,
        /// Member to test to.
        b: Option<String>,
    },
    /// Install what a mesh member needs (`wireguard-tools`, and `wireguard-go` when the kernel
    /// has no WireGuard) on HOST (a hosts entry, or `local`) with its package manager (apt-get,
    /// dnf or apk) as root through `sudo -n`; says so when nothing is missing.
    Install {
        /// A hosts entry, or `local` for this machine.
        host: String,
    },
}

/// What is missing, then the install with the package manager found; prints `nothing`,
/// `nopm:PACKAGES`, or `installed:MANAGER:PACKAGES`.
const INSTALL: &str = r#"set -u
need=""
command -v wg >/dev/null 2>&1 || need="$need wireguard-tools"
if [ ! -d /sys/module/wireguard ] && ! command -v wireguard-go >/dev/null 2>&1; then
  need="$need wireguard-go"
fi
[ -n "$need" ] || { echo nothing; exit 0; }
if command -v apt-get >/dev/null 2>&1; then
  PM=apt-get
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >&2 || exit 1
elif command -v dnf >/dev/null 2>&1; then PM=dnf; dnf install -y -q $need >&2 || exit 1
elif command -v apk >/dev/null 2>&1; then PM=apk; apk add -q $need >&2 || exit 1
else echo "nopm:$need"; exit 0; fi
echo "installed:$PM:$need"
"#;

fn install(ctx: &Context, project: &Project, host: &str) -> Status {
    if host != LOCAL_NODE && !project.hosts.contains_key(host) {
        crate::errln!(
            "error: host {host:?} is not defined under hosts: in {} (or use `local`)",
            ctx.file.display()
        );
        return Status::Invalid;
    }
    let target = match network::root_target(project, "-", host) {
        Ok(t) => t,
        Err(e) => {
            crate::errln!("error: host {host:?}: {}", e.message);
            return Status::Failed;
        }
    };
    let exec = Executor::default();
    let cmd = Command::new("sh")
        .arg("-c")
        .arg(INSTALL)
        .timeout(Duration::from_secs(600));
    let out = match smol::block_on(exec.output(&target, &cmd)) {
        Ok(o) => o,
        Err(e) => {
            crate::errln!("error: host {host:?}: {e}");
            return Status::Failed;
        }
    };
    let stdout = out.stdout_text();
    let err = out.stderr_text();
    let err = err.trim();
    if !out.status.success() {
        if err.contains("password is required") || err.contains("a terminal is required") {
            crate::errln!(
                "error: host {host:?}: sudo needs a password there (`sudo -n` failed: {err}); \
                 installing needs root: give the login user passwordless sudo, or install \
                 wireguard-tools (and wireguard-go) there by hand"
            );
        } else {
            crate::errln!(
                "error: host {host:?}: installing failed (exit {:?}): {err}",
                out.status.code()
            );
        }
        return Status::Failed;
    }
    let line = stdout.lines().last().unwrap_or_default().trim();
    #[derive(Serialize)]
    struct Installed<'a> {
        host: &'a str,
        installed: Vec<&'a str>,
        manager: Option<&'a str>,
    }
    if line == "nothing" {
        if ctx.json() {
            print_json(&Installed {
                host,
                installed: Vec::new(),
                manager: None,
            });
        } else {
            crate::outln!(
                "{host}: `wg` and kernel WireGuard or `wireguard-go` are there already: nothing to install"
            );
        }
        return Status::Ok;
    }
    if let Some(need) = line.strip_prefix("nopm:") {
        crate::errln!(
            "error: host {host:?}: no known package manager (apt-get, dnf, apk) to install{need}; \
             install them there by hand"
        );
        return Status::Failed;
    }
    if let Some((pm, need)) = line
        .strip_prefix("installed:")
        .and_then(|r| r.split_once(':'))
    {
        let installed: Vec<&str> = need.split_whitespace().collect();
        if ctx.json() {
            print_json(&Installed {
                host,
                installed,
                manager: Some(pm),
            });
        } else {
            crate::outln!("{host}: installed {} with {pm}", installed.join(", "));
        }
        return Status::Ok;
    }
    crate::errln!("error: host {host:?}: unexpected answer: {}", stdout.trim());
    Status::Failed
}

pub fn run(ctx: &Context, cmd: NetworkCommand) -> Status {
    let project = match load_project(ctx) {
        Ok(p) => p,
        Err(s) => return s,
    };
    if let NetworkCommand::Install { host } = &cmd {
        return install(ctx, &project, host);
    }
    let state_dir = match harness_protocol::HarnessHome::from_env() {
        Ok(h) => h.root().to_path_buf(),
        Err(e) => {
            crate::errln!("error: {e}");
            return Status::Failed;
        }
    };
    let plans: Vec<MeshPlan> = {
        let mut out = Vec::new();
        for name in &network::wireguard_networks(&project) {
            match network::plan(&project, name, &state_dir) {
                Ok(p) => out.push(p),
                Err(e) => {
                    crate::errln!("error: {e}");
                    return Status::Invalid;
                }
            }
        }
        out
    };
    match cmd {
        NetworkCommand::List => list(ctx, &project, &plans, &state_dir),
        NetworkCommand::Show { name } => match plans.iter().find(|p| p.network == name) {
            Some(p) => show(ctx, &project, p),
            None => unknown(&name, &plans),
        },
        NetworkCommand::Test { a, b } => test(ctx, &project, &plans, a, b),
        NetworkCommand::Install { .. } => Status::Ok, // answered above
    }
}

fn unknown(name: &str, plans: &[MeshPlan]) -> Status {
    let known: Vec<&str> = plans.iter().map(|p| p.network.as_str()).collect();
    crate::errln!(
        "error: there is no wireguard network {name:?} (wireguard networks: {})",
        if known.is_empty() {
            "none".to_owned()
        } else {
            known.join(", ")
        }
    );
    Status::Invalid
}

#[derive(Serialize)]
struct ListedMember {
    network: String,
    /// Not declared: brought up because consumers cannot reach a provider on the underlay.
    automatic: bool,
    member: String,
    interface: String,
    address: String,
    relay: Option<String>,
    public_key: Option<String>,
    endpoint: Option<String>,
    mode: Option<String>,
    /// The daemon holds a record of this mesh being up.
    up: bool,
}

fn list(
    ctx: &Context,
    project: &Project,
    plans: &[MeshPlan],
    state_dir: &std::path::Path,
) -> Status {
    let mut rows = Vec::new();
    for p in plans {
        let state = network::load_state(state_dir, &project.name, &p.network);
        for m in &p.members {
            let s = state
                .as_ref()
                .and_then(|s| s.members.iter().find(|x| x.name == m.name));
            rows.push(ListedMember {
                network: p.network.clone(),
                automatic: p.automatic,
                member: m.name.clone(),
                interface: m.interface.clone(),
                address: format!("{}/{}", m.address, p.prefix),
                relay: m.relay.clone(),
                public_key: s.map(|s| s.public_key.clone()),
                endpoint: s.and_then(|s| s.endpoint.clone()),
                mode: s.map(|s| s.mode.clone()),
                up: s.is_some(),
            });
        }
    }
    if ctx.json() {
        print_json(&rows);
        return Status::Ok;
    }
    if rows.is_empty() {
        crate::outln!(
            "no wireguard networks in {}, and no automatic mesh needed",
            ctx.file.display()
        );
        return Status::Ok;
    }
    let mut t = crate::output::table(ctx.color_out);
    t.set_header([
        "network",
        "member",
        "address",
        "interface",
        "via",
        "endpoint",
        "up",
    ]);
    for r in &rows {
        t.add_row([
            if r.automatic {
                format!("{} (automatic)", r.network)
            } else {
                r.network.clone()
            },
            r.member.clone(),
            r.address.clone(),
            r.interface.clone(),
            r.relay.clone().unwrap_or_default(),
            r.endpoint.clone().unwrap_or_default(),
            if r.up { "yes" } else { "no" }.to_owned(),
        ]);
    }
    crate::outln!("{t}");
    Status::Ok
}

#[derive(Serialize)]
struct ShownMember {
    member: String,
    interface: String,
    address: String,
    up: bool,
    error: Option<String>,
    peers: Vec<ShownPeer>,
}

#[derive(Serialize)]
struct ShownPeer {
    public_key: String,
    endpoint: Option<String>,
    allowed_ips: String,
    /// Seconds since the latest handshake; `None` when there was none.
    handshake_age_s: Option<u64>,
    rx_bytes: u64,
    tx_bytes: u64,
}

fn show(ctx: &Context, project: &Project, plan: &MeshPlan) -> Status {
    let exec = Executor::default();
    let now = view::now_secs();
    let shown: Vec<ShownMember> = smol::block_on(async {
        let tasks: Vec<_> = plan
            .members
            .iter()
            .map(|m| {
                let (exec, project, net, m) = (
                    exec.clone(),
                    project.clone(),
                    plan.network.clone(),
                    m.clone(),
                );
                let prefix = plan.prefix;
                smol::spawn(async move {
                    let script = format!("wg show {} dump", m.interface);
                    let r = run_root(&exec, &project, &net, &m.name, &script).await;
                    let mut s = ShownMember {
                        member: m.name.clone(),
                        interface: m.interface.clone(),
                        address: format!("{}/{prefix}", m.address),
                        up: r.is_ok(),
                        error: r.as_ref().err().cloned(),
                        peers: Vec::new(),
                    };
                    if let Ok(out) = r {
                        s.peers = view::parse_wg_dump(&out, now)
                            .into_iter()
                            .map(|p| ShownPeer {
                                public_key: p.public_key,
                                endpoint: p.endpoint,
                                allowed_ips: p.allowed_ips,
                                handshake_age_s: p.handshake_age_s,
                                rx_bytes: p.rx_bytes,
                                tx_bytes: p.tx_bytes,
                            })
                            .collect();
                    }
                    s
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await);
        }
        exec.shutdown().await;
        out
    });
    if ctx.json() {
        print_json(&shown);
    } else {
        let mut t = crate::output::table(ctx.color_out);
        t.set_header([
            "member",
            "interface",
            "peer",
            "endpoint",
            "allowed ips",
            "handshake",
            "rx",
            "tx",
        ]);
        for m in &shown {
            if let Some(e) = &m.error {
                t.add_row([m.member.clone(), m.interface.clone(), format!("down: {e}")]);
            }
            for p in &m.peers {
                t.add_row([
                    m.member.clone(),
                    m.interface.clone(),
                    p.public_key.chars().take(10).collect::<String>(),
                    p.endpoint.clone().unwrap_or_default(),
                    p.allowed_ips.clone(),
                    p.handshake_age_s
                        .map(|a| format!("{a}s ago"))
                        .unwrap_or_else(|| "never".into()),
                    p.rx_bytes.to_string(),
                    p.tx_bytes.to_string(),
                ]);
            }
        }
        crate::outln!("{t}");
    }
    if shown.iter().all(|m| m.up) {
        Status::Ok
    } else {
        Status::Failed
    }
}

#[derive(Serialize)]
struct PairResult {
    network: String,
    from: String,
    to: String,
    mesh_address: String,
    mesh_ok: bool,
    mesh_rtt_ms: Option<f64>,
    underlay_address: Option<String>,
    underlay_ok: Option<bool>,
    underlay_rtt_ms: Option<f64>,
}

/// `busybox ping`'s average round trip, when any reply came. Up to 6 s for the first reply: over
/// the mesh the first packet between two members may wait for a WireGuard handshake, and a lost
/// handshake is retried after 5 s.
fn ping_script(addr: &str) -> String {
    format!(
        "out=$(busybox ping -c 3 -i 0.2 -W 6 {addr} 2>&1); case \"$out\" in *' 0% packet loss'*|*' 33% packet loss'*|*' 66% packet loss'*) \
         echo \"$out\" | sed -n 's,.*min/avg/max = [0-9.]*/\\([0-9.]*\\)/.*,\\1,p' ;; *) echo none ;; esac"
    )
}

fn test(
    ctx: &Context,
    project: &Project,
    plans: &[MeshPlan],
    a: Option<String>,
    b: Option<String>,
) -> Status {
    let mut pairs = Vec::new();
    for p in plans {
        for x in &p.members {
            for y in &p.members {
                if x.name == y.name
                    || a.as_ref().is_some_and(|a| a != &x.name)
                    || b.as_ref().is_some_and(|b| b != &y.name)
                {
                    continue;
                }
                let underlay = if y.name == LOCAL_NODE {
                    None
                } else {
                    project.hosts.get(&y.name).map(|h| h.address.clone())
                };
                pairs.push((
                    p.network.clone(),
                    x.name.clone(),
                    y.name.clone(),
                    y.address.to_string(),
                    underlay,
                ));
            }
        }
    }
    if pairs.is_empty() {
        crate::errln!(
            "error: no member pairs to test (check the member names: `local` or a hosts entry)"
        );
        return Status::Invalid;
    }
    let exec = Executor::default();
    let results: Vec<PairResult> = smol::block_on(async {
        let tasks: Vec<_> = pairs
            .into_iter()
            .map(|(net, from, to, mesh, underlay)| {
                let (exec, project) = (exec.clone(), project.clone());
                smol::spawn(async move {
                    let rtt = |out: Result<String, String>| {
                        out.ok().and_then(|o| o.trim().parse::<f64>().ok())
                    };
                    let m = rtt(run_root(&exec, &project, &net, &from, &ping_script(&mesh)).await);
                    let u = match &underlay {
                        Some(addr) => Some(rtt(run_root(
                            &exec,
                            &project,
                            &net,
                            &from,
                            &ping_script(addr),
                        )
                        .await)),
                        None => None,
                    };
                    PairResult {
                        network: net,
                        from,
                        to,
                        mesh_address: mesh,
                        mesh_ok: m.is_some(),
                        mesh_rtt_ms: m,
                        underlay_address: underlay,
                        underlay_ok: u.map(|u| u.is_some()),
                        underlay_rtt_ms: u.flatten(),
                    }
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await);
        }
        exec.shutdown().await;
        out
    });
    if ctx.json() {
        print_json(&results);
    } else {
        let mut t = crate::output::table(ctx.color_out);
        t.set_header(["network", "from", "to", "mesh", "underlay"]);
        let cell = |ok: bool, ms: Option<f64>| match (ok, ms) {
            (true, Some(ms)) => format!("ok {ms:.2} ms"),
            _ => "unreachable".to_owned(),
        };
        for r in &results {
            t.add_row([
                r.network.clone(),
                r.from.clone(),
                r.to.clone(),
                cell(r.mesh_ok, r.mesh_rtt_ms),
                match r.underlay_ok {
                    Some(ok) => cell(ok, r.underlay_rtt_ms),
                    None => "-".to_owned(),
                },
            ]);
        }
        crate::outln!("{t}");
    }
    if results.iter().all(|r| r.mesh_ok) {
        Status::Ok
    } else {
        Status::Failed
    }
}
