//! Bringing a mesh up and down on its members. Every command runs through command-executor as
//! root (the local machine directly when the daemon is root, else `sudo -n`; a host through its
//! ssh connection and `sudo -n`). Private keys are generated on their machine (`wg genkey`, 0600
//! in [`KEY_DIR`]) and only the public key is read back; `wg set ... private-key FILE` reads the
//! file there.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use command_executor::{Command, Executor, Target};
use futures_util::future::join_all;
use harness_config::{LOCAL_NODE, Project};
use serde::{Deserialize, Serialize};

use super::{MeshError, MeshPlan, plan};

/// Where each member keeps its private key (`<interface>.key`, 0600, directory 0700).
pub const KEY_DIR: &str = "/var/lib/harness/wireguard";
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// What the daemon knows of a mesh it brought up: `<state_dir>/mesh/<project>/<network>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeshState {
    pub network: String,
    pub subnet: String,
    pub listen_port: u16,
    pub mtu: u16,
    pub members: Vec<MemberState>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberState {
    pub name: String,
    pub interface: String,
    pub address: Ipv4Addr,
    pub public_key: String,
    /// `kernel` or `wireguard-go`.
    pub mode: String,
    /// The member that relays for it, if any.
    pub relay: Option<String>,
    /// The UDP endpoint the other members send to (`ADDRESS:PORT`; for a relayed member, the
    /// one its relay uses).
    pub endpoint: Option<String>,
}

pub fn state_path(state_dir: &Path, project: &str, network: &str) -> PathBuf {
    state_dir
        .join("mesh")
        .join(project)
        .join(format!("{network}.json"))
}

pub fn load_state(state_dir: &Path, project: &str, network: &str) -> Option<MeshState> {
    let text = std::fs::read_to_string(state_path(state_dir, project, network)).ok()?;
    serde_json::from_str(&text).ok()
}

/// The target that runs a member's commands as root.
pub fn root_target(project: &Project, network: &str, member: &str) -> Result<Target, MeshError> {
    if member == LOCAL_NODE {
        return Ok(if rustix::process::geteuid().is_root() {
            Target::local()
        } else {
            Target::local().sudo("root")
        });
    }
    let host = project
        .hosts
        .get(member)
        .ok_or_else(|| MeshError::new(network, Some(member), "is not defined under hosts:"))?;
    let spec = crate::runtime::host::host_spec(project, member)
        .map_err(|m| MeshError::new(network, Some(member), m))?;
    let t = Target::ssh(spec.ssh());
    if host.user.as_deref() == Some("root") {
        Ok(t)
    } else if host.sudo {
        Ok(t.sudo("root"))
    } else {
        Err(MeshError::new(
            network,
            Some(member),
            "WireGuard needs root there, and the host says `sudo: false`",
        ))
    }
}

/// The login target (no sudo) of a host member.
fn login_target(project: &Project, network: &str, member: &str) -> Result<Target, MeshError> {
    let spec = crate::runtime::host::host_spec(project, member)
        .map_err(|m| MeshError::new(network, Some(member), m))?;
    Ok(Target::ssh(spec.ssh()))
}

/// Runs `script` with `args` as root on `member` (`what` names the step in errors).
async fn as_root(
    exec: &Executor,
    project: &Project,
    network: &str,
    member: &str,
    what: &str,
    script: &str,
    args: &[String],
) -> Result<String, MeshError> {
    let target = root_target(project, network, member)?;
    run(exec, &target, network, member, what, script, args).await
}

async fn run(
    exec: &Executor,
    target: &Target,
    network: &str,
    member: &str,
    what: &str,
    script: &str,
    args: &[String],
) -> Result<String, MeshError> {
    let cmd = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("harness-mesh")
        .args(args)
        .timeout(COMMAND_TIMEOUT);
    let out = exec
        .output(target, &cmd)
        .await
        .map_err(|e| MeshError::new(network, Some(member), format!("{what}: {e}")))?;
    if out.status.success() {
        return Ok(out.stdout_text());
    }
    let err = out.stderr_text();
    let err = err.trim();
    let message = if err.contains("password is required") || err.contains("a terminal is required")
    {
        format!(
            "{what}: sudo needs a password there (`sudo -n` failed: {err}); WireGuard needs root: \
             give the login user passwordless sudo"
        )
    } else {
        format!("{what}: exit {:?}: {err}", out.status.code())
    };
    Err(MeshError::new(network, Some(member), message))
}

/// Checks the tools, makes the key if there is none, reads back the public key. Prints
/// `missing:TOOL`, or `mode:`, `pub:` and `up:` lines.
const PROBE: &str = r#"set -u
IF=$1 D=$2
command -v ip >/dev/null 2>&1 || { echo missing:ip; exit 0; }
command -v wg >/dev/null 2>&1 || { echo missing:wg; exit 0; }
if [ -d /sys/module/wireguard ]; then MODE=kernel
elif command -v wireguard-go >/dev/null 2>&1; then
  [ -c /dev/net/tun ] || { echo missing:tun; exit 0; }
  MODE=wireguard-go
else echo missing:wireguard-go; exit 0; fi
umask 077
mkdir -p "$D" && chmod 700 "$D" || exit 1
if [ ! -s "$D/$IF.key" ]; then
  wg genkey >"$D/$IF.key.new" && mv "$D/$IF.key.new" "$D/$IF.key" || exit 1
fi
echo "mode:$MODE"
echo "pub:$(wg pubkey <"$D/$IF.key")"
if ip link show dev "$IF" >/dev/null 2>&1; then echo up:1; fi
"#;

/// Creates the interface unless it exists (re-adoption: never a second wireguard-go), sets key,
/// port, address, MTU and exactly the given peers (`PUB|ENDPOINT|ALLOWED`).
const CONFIGURE: &str = r#"set -eu
IF=$1 D=$2 MODE=$3 ADDR=$4 PORT=$5 MTU=$6 FWD=$7
shift 7
if ! ip link show dev "$IF" >/dev/null 2>&1; then
  if [ "$MODE" = kernel ]; then ip link add dev "$IF" type wireguard
  else
    rm -f "/var/run/wireguard/$IF.sock"
    wireguard-go "$IF" >/dev/null 2>&1 </dev/null
  fi
fi
wg set "$IF" listen-port "$PORT" private-key "$D/$IF.key"
ip address replace "$ADDR" dev "$IF"
ip link set dev "$IF" mtu "$MTU" up
want=" "
for p in "$@"; do
  pub=${p%%|*}; rest=${p#*|}; allowed=${rest#*|}
  want="$want$pub "
  wg set "$IF" peer "$pub" allowed-ips "$allowed"
done
for pub in $(wg show "$IF" peers); do
  case "$want" in *" $pub "*) ;; *) wg set "$IF" peer "$pub" remove ;; esac
done
if [ "$FWD" = 1 ]; then sysctl -qw "net.ipv4.conf.$IF.forwarding=1"; fi
"#;

/// Gives peers their endpoints and keepalive, once every member knows every peer (`CONFIGURE`
/// above, on all members first). A first keepalive is what starts a handshake; sent to a member
/// that does not know this peer yet, it is dropped and WireGuard retries only after 5 s.
/// Re-applying to a peer already so set sends nothing, so a live session is not disturbed.
const CONNECT: &str = r#"set -eu
IF=$1
shift
for p in "$@"; do
  wg set "$IF" peer "${p%%|*}" endpoint "${p#*|}" persistent-keepalive 25
done
"#;

/// Removes the interface (its address, routes and peers go with it) and ends its wireguard-go;
/// the key stays in the key directory.
const TEARDOWN: &str = r#"IF=$1
pids() { for p in /proc/[0-9]*; do
  [ "$(tr '\000' ' ' <"$p/cmdline" 2>/dev/null)" = "wireguard-go $IF " ] && echo "${p#/proc/}"
done; }
ip link del dev "$IF" 2>/dev/null
rm -f "/var/run/wireguard/$IF.sock"
i=0
while [ -n "$(pids)" ] && [ $i -lt 30 ]; do sleep 0.1; i=$((i+1)); done
for p in $(pids); do kill -9 "$p" 2>/dev/null; done
exit 0
"#;

fn install_hint(tool: &str) -> String {
    match tool {
        "wg" => "`wg` (wireguard-tools) is not installed: install it, e.g. `sudo apt-get install wireguard-tools`".into(),
        "wireguard-go" => "neither kernel WireGuard nor `wireguard-go` is available: install wireguard-go, e.g. `sudo apt-get install wireguard-go`".into(),
        "tun" => "wireguard-go needs /dev/net/tun, which is missing".into(),
        "ip" => "`ip` (iproute2) is not installed: e.g. `sudo apt-get install iproute2`".into(),
        t => format!("{t} is missing"),
    }
}

struct Probed {
    mode: String,
    public_key: String,
    /// The address this member's ssh connection comes from (the daemon's machine, or its jump
    /// host, as this member sees it).
    client: Option<String>,
}

async fn probe(
    exec: &Executor,
    project: &Project,
    plan: &MeshPlan,
    member: &str,
) -> Result<Probed, MeshError> {
    let net = &plan.network;
    let m = plan
        .member(member)
        .ok_or_else(|| MeshError::new(net, Some(member), "not a member"))?;
    let target = root_target(project, net, member)?;
    let client = async {
        if member == LOCAL_NODE {
            return Ok(None);
        }
        let t = login_target(project, net, member)?;
        let out = run(
            exec,
            &t,
            net,
            member,
            "ssh",
            r#"echo "${SSH_CONNECTION%% *}""#,
            &[],
        )
        .await?;
        Ok::<_, MeshError>(Some(out.trim().to_owned()).filter(|s| !s.is_empty()))
    };
    let probe_args = [m.interface.clone(), KEY_DIR.to_owned()];
    let probed = run(
        exec,
        &target,
        net,
        member,
        "checking WireGuard",
        PROBE,
        &probe_args,
    );
    let (client, out) = futures_lite::future::zip(client, probed).await;
    let (client, out) = (client?, out?);
    let mut mode = None;
    let mut public_key = None;
    for line in out.lines() {
        if let Some(t) = line.strip_prefix("missing:") {
            return Err(MeshError::new(net, Some(member), install_hint(t)));
        } else if let Some(v) = line.strip_prefix("mode:") {
            mode = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("pub:") {
            public_key = Some(v.trim().to_owned());
        }
    }
    match (mode, public_key) {
        (Some(mode), Some(public_key)) if public_key.len() == 44 => Ok(Probed {
            mode,
            public_key,
            client,
        }),
        _ => Err(MeshError::new(
            net,
            Some(member),
            format!("unexpected answer while checking WireGuard: {}", out.trim()),
        )),
    }
}

/// Brings mesh `network` up on every member (idempotent: an existing interface is adopted with
/// its key and address) and records it. On any failure what this call configured is removed
/// again, so nothing is left half-configured.
pub async fn up(
    exec: &Executor,
    project: &Project,
    network: &str,
    state_dir: &Path,
) -> Result<MeshState, MeshError> {
    let plan = plan(project, network, state_dir)?;
    let old = read_state(state_dir, &project.name, network).await;
    if let Some(old) = &old {
        for m in &old.members {
            if let Some(now) = plan.member(&m.name)
                && now.address != m.address
            {
                return Err(MeshError::new(
                    network,
                    Some(&m.name),
                    format!(
                        "the nodes changed while the mesh is up ({} had {}, would now get {}); \
                         stop the project first",
                        m.name, m.address, now.address
                    ),
                ));
            }
        }
    }
    let probes: Vec<_> = plan
        .members
        .iter()
        .map(|m| probe(exec, project, &plan, &m.name))
        .collect();
    let mut results = Vec::new();
    for r in join_all(probes).await {
        results.push(r?);
    }
    let state = MeshState {
        network: network.to_owned(),
        subnet: plan.subnet.clone(),
        listen_port: plan.listen_port,
        mtu: plan.mtu,
        members: plan
            .members
            .iter()
            .zip(&results)
            .map(|(m, p)| MemberState {
                name: m.name.clone(),
                interface: m.interface.clone(),
                address: m.address,
                public_key: p.public_key.clone(),
                mode: p.mode.clone(),
                relay: m.relay.clone(),
                endpoint: endpoint_for_others(project, &plan, &m.name, &results),
            })
            .collect(),
    };
    save_state(state_dir, &project.name, &state)
        .await
        .map_err(|e| MeshError::new(network, None, e))?;
    let configure = state.members.iter().map(|m| {
        let peers = peers_of(project, &plan, &state, &m.name, &results);
        let relays = state
            .members
            .iter()
            .any(|o| o.relay.as_deref() == Some(m.name.as_str()));
        let args = [
            m.interface.clone(),
            KEY_DIR.to_owned(),
            if m.mode == "kernel" {
                "kernel".into()
            } else {
                "go".into()
            },
            format!("{}/{}", m.address, plan.prefix),
            plan.listen_port.to_string(),
            plan.mtu.to_string(),
            if relays { "1".into() } else { "0".into() },
        ]
        .into_iter()
        .chain(peers)
        .collect::<Vec<String>>();
        async move {
            as_root(
                exec,
                project,
                network,
                &m.name,
                "configuring the interface",
                CONFIGURE,
                &args,
            )
            .await
        }
    });
    let outcomes = join_all(configure).await;
    if let Some(e) = outcomes.into_iter().find_map(Result::err) {
        let _ = down(exec, project, network, state_dir).await;
        return Err(e);
    }
    let connect = state.members.iter().filter_map(|m| {
        let endpoints: Vec<String> = peers_of(project, &plan, &state, &m.name, &results)
            .into_iter()
            .filter_map(|p| {
                let mut parts = p.splitn(3, '|');
                let (public, endpoint) = (parts.next()?, parts.next()?);
                (!endpoint.is_empty()).then(|| format!("{public}|{endpoint}"))
            })
            .collect();
        if endpoints.is_empty() {
            return None;
        }
        let args: Vec<String> = std::iter::once(m.interface.clone())
            .chain(endpoints)
            .collect();
        Some(async move {
            as_root(
                exec,
                project,
                network,
                &m.name,
                "giving peers their endpoints",
                CONNECT,
                &args,
            )
            .await
        })
    });
    let outcomes = join_all(connect).await;
    if let Some(e) = outcomes.into_iter().find_map(Result::err) {
        let _ = down(exec, project, network, state_dir).await;
        return Err(e);
    }
    // Members that left `nodes` while the mesh was up: the others no longer have them as peers
    // (set above); their own interface goes.
    let left: Vec<MemberState> = old
        .map(|o| o.members)
        .unwrap_or_default()
        .into_iter()
        .filter(|m| plan.member(&m.name).is_none())
        .collect();
    let removals = left.iter().map(|m| async move {
        as_root(
            exec,
            project,
            network,
            &m.name,
            "removing the interface of a member that left",
            TEARDOWN,
            std::slice::from_ref(&m.interface),
        )
        .await
    });
    for r in join_all(removals).await {
        if let Err(e) = r {
            tracing::warn!("{e}; its interface stays until it is removed by hand");
        }
    }
    Ok(state)
}

/// The address of `of` as `from` reaches it, without the port.
fn underlay_address(
    project: &Project,
    plan: &MeshPlan,
    from: &str,
    of: &str,
    probed: &[Probed],
) -> Option<String> {
    if of == LOCAL_NODE {
        // The daemon's machine as the host sees its ssh connection come in.
        let i = plan.members.iter().position(|m| m.name == from)?;
        return probed.get(i)?.client.clone();
    }
    project.hosts.get(of).map(|h| h.address.clone())
}

fn endpoint_for_others(
    project: &Project,
    plan: &MeshPlan,
    member: &str,
    probed: &[Probed],
) -> Option<String> {
    let m = plan.member(member)?;
    let from = m.relay.clone().or_else(|| {
        plan.members
            .iter()
            .find(|o| o.name != member)
            .map(|o| o.name.clone())
    })?;
    underlay_address(project, plan, &from, member, probed)
        .map(|a| format!("{a}:{}", plan.listen_port))
}

/// `PUB|ENDPOINT|ALLOWED` for each peer of `member`.
fn peers_of(
    project: &Project,
    plan: &MeshPlan,
    state: &MeshState,
    member: &str,
    probed: &[Probed],
) -> Vec<String> {
    let me = match plan.member(member) {
        Some(m) => m,
        None => return Vec::new(),
    };
    let key = |n: &str| {
        state
            .members
            .iter()
            .find(|m| m.name == n)
            .map(|m| m.public_key.clone())
            .unwrap_or_default()
    };
    let ep = |of: &str| {
        underlay_address(project, plan, member, of, probed)
            .map(|a| format!("{a}:{}", plan.listen_port))
            .unwrap_or_default()
    };
    if let Some(relay) = &me.relay {
        // Behind a jump host: one peer, the relay, carrying every other member. The relay's
        // address as this member sees it is where its ssh connection comes from.
        let i = plan.members.iter().position(|m| m.name == member);
        let relay_addr = i
            .and_then(|i| probed.get(i))
            .and_then(|p| p.client.clone())
            .map(|a| format!("{a}:{}", plan.listen_port))
            .unwrap_or_default();
        let allowed: Vec<String> = plan
            .members
            .iter()
            .filter(|m| m.name != member)
            .map(|m| format!("{}/32", m.address))
            .collect();
        return vec![format!(
            "{}|{}|{}",
            key(relay),
            relay_addr,
            allowed.join(",")
        )];
    }
    let mut out = Vec::new();
    for p in plan.members.iter().filter(|p| p.name != member) {
        match &p.relay {
            Some(r) if r == member => {
                // This member relays for p and reaches it directly (it is p's jump host).
                out.push(format!("{}|{}|{}/32", key(&p.name), ep(&p.name), p.address));
            }
            Some(_) => {} // carried by p's relay's entry
            None => {
                let mut allowed = vec![format!("{}/32", p.address)];
                allowed.extend(
                    plan.members
                        .iter()
                        .filter(|o| o.relay.as_deref() == Some(p.name.as_str()))
                        .map(|o| format!("{}/32", o.address)),
                );
                out.push(format!(
                    "{}|{}|{}",
                    key(&p.name),
                    ep(&p.name),
                    allowed.join(",")
                ));
            }
        }
    }
    out
}

async fn save_state(state_dir: &Path, project: &str, state: &MeshState) -> Result<(), String> {
    let path = state_path(state_dir, project, &state.network);
    let dir = path.parent().unwrap_or(state_dir);
    async_fs::create_dir_all(dir)
        .await
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let text = serde_json::to_string_pretty(state).map_err(|e| e.to_string())?;
    let tmp = path.with_extension("json.tmp");
    async_fs::write(&tmp, text)
        .await
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    async_fs::rename(&tmp, &path)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The members of a recorded mesh whose interface is gone (the machine rebooted, or someone
/// removed it). A member that does not answer is not counted: it is judged again when it does.
pub async fn missing_members(exec: &Executor, project: &Project, state: &MeshState) -> Vec<String> {
    let checks = state.members.iter().map(|m| async move {
        let target = root_target(project, &state.network, &m.name).ok()?;
        let out = run(
            exec,
            &target,
            &state.network,
            &m.name,
            "checking the interface",
            r#"if ip link show dev "$1" >/dev/null 2>&1; then echo up; else echo gone; fi"#,
            std::slice::from_ref(&m.interface),
        )
        .await
        .ok()?;
        (out.trim() == "gone").then(|| m.name.clone())
    });
    join_all(checks).await.into_iter().flatten().collect()
}

/// The networks of `project` the daemon holds a record of (brought up, not yet taken down).
pub async fn recorded(state_dir: &Path, project: &str) -> Vec<String> {
    use futures_lite::StreamExt;
    let dir = state_dir.join("mesh").join(project);
    let Ok(mut entries) = async_fs::read_dir(&dir).await else {
        return Vec::new();
    };
    let mut out = Vec::new();
    while let Some(Ok(e)) = entries.next().await {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(net) = name.strip_suffix(".json") {
            out.push(net.to_owned());
        }
    }
    out.sort();
    out
}

/// [`load_state`] for async callers.
pub async fn read_state(state_dir: &Path, project: &str, network: &str) -> Option<MeshState> {
    let text = async_fs::read_to_string(state_path(state_dir, project, network))
        .await
        .ok()?;
    serde_json::from_str(&text).ok()
}

/// Takes mesh `network` down on every member it was brought up on (from the recorded state, or
/// the plan when none was recorded): no interface, no wireguard-go, no route. The record is
/// removed once every member answered; a member that did not keeps it, for the next stop.
pub async fn down(
    exec: &Executor,
    project: &Project,
    network: &str,
    state_dir: &Path,
) -> Result<(), MeshError> {
    let members: Vec<(String, String)> = match read_state(state_dir, &project.name, network).await {
        Some(s) => s
            .members
            .into_iter()
            .map(|m| (m.name, m.interface))
            .collect(),
        None => plan(project, network, state_dir)?
            .members
            .into_iter()
            .map(|m| (m.name, m.interface))
            .collect(),
    };
    let tasks = members.iter().map(|(name, interface)| async move {
        as_root(
            exec,
            project,
            network,
            name,
            "removing the interface",
            TEARDOWN,
            std::slice::from_ref(interface),
        )
        .await
    });
    let outcomes = join_all(tasks).await;
    if let Some(e) = outcomes.into_iter().find_map(Result::err) {
        return Err(e);
    }
    let path = state_path(state_dir, &project.name, network);
    let _ = async_fs::remove_file(&path).await;
    Ok(())
}
