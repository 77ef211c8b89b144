//! What a project's meshes look like now: the plan, the daemon's record of each mesh and, for a
//! mesh that is up, each member's peers as `wg show IFACE dump` reports them (asked as root on
//! every member in parallel). `network.list` answers with it (the dashboard's network view).

use std::path::Path;
use std::time::Duration;

use command_executor::{Command, Executor};
use harness_config::Project;
use harness_protocol::places::{MeshMemberView, MeshPeerView, MeshView};

use super::{MeshError, MeshState, plan, root_target, state_path};

/// Limit for one member's `wg show`.
pub const SHOW_TIMEOUT: Duration = Duration::from_secs(20);

/// The peers in the output of `wg show IFACE dump` (its first line is the interface itself);
/// `now` in seconds since the epoch dates the handshakes.
pub fn parse_wg_dump(out: &str, now: u64) -> Vec<MeshPeerView> {
    let mut peers = Vec::new();
    for line in out.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 7 {
            continue;
        }
        let hs: u64 = f[4].parse().unwrap_or(0);
        peers.push(MeshPeerView {
            public_key: f[0].to_owned(),
            member: None,
            endpoint: Some(f[2].to_owned()).filter(|e| e != "(none)"),
            allowed_ips: f[3].to_owned(),
            handshake_age_s: (hs > 0).then(|| now.saturating_sub(hs)),
            rx_bytes: f[5].parse().unwrap_or(0),
            tx_bytes: f[6].parse().unwrap_or(0),
        });
    }
    peers
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Runs `script` as root on `member` of `net`; its stdout, or why not.
pub async fn run_root(
    exec: &Executor,
    project: &Project,
    net: &str,
    member: &str,
    script: &str,
) -> Result<String, String> {
    let target = root_target(project, net, member).map_err(|e| e.to_string())?;
    let out = exec
        .output(
            &target,
            &Command::new("sh")
                .arg("-c")
                .arg(script)
                .timeout(SHOW_TIMEOUT),
        )
        .await
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(out.stdout_text())
    } else {
        Err(format!(
            "exit {:?}: {}",
            out.status.code(),
            out.stderr_text().trim()
        ))
    }
}

/// Every `wireguard` network of `project` (by name; the automatic one last), with the daemon's
/// record from `state_dir` and, for a mesh that is up, `wg show` from each member.
pub async fn view(
    exec: &Executor,
    project: &Project,
    state_dir: &Path,
) -> Result<Vec<MeshView>, MeshError> {
    let mut out = Vec::new();
    for name in &super::wireguard_networks(project) {
        let p = plan(project, name, state_dir)?;
        let state: Option<MeshState> =
            async_fs::read_to_string(state_path(state_dir, &project.name, name))
                .await
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok());
        let now = now_secs();
        let tasks: Vec<_> = p
            .members
            .iter()
            .map(|m| {
                let (exec, project, net, m) =
                    (exec.clone(), project.clone(), name.clone(), m.clone());
                let recorded = state
                    .as_ref()
                    .and_then(|s| s.members.iter().find(|x| x.name == m.name))
                    .cloned();
                let up = state.is_some();
                let prefix = p.prefix;
                smol::spawn(async move {
                    let shown = if up {
                        let script = format!("wg show {} dump", m.interface);
                        Some(run_root(&exec, &project, &net, &m.name, &script).await)
                    } else {
                        None
                    };
                    MeshMemberView {
                        member: m.name.clone(),
                        interface: m.interface.clone(),
                        address: format!("{}/{prefix}", m.address),
                        relay: m.relay.clone(),
                        public_key: recorded.as_ref().map(|s| s.public_key.clone()),
                        endpoint: recorded.as_ref().and_then(|s| s.endpoint.clone()),
                        mode: recorded.as_ref().map(|s| s.mode.clone()),
                        interface_up: matches!(shown, Some(Ok(_))),
                        error: match &shown {
                            Some(Err(e)) => Some(e.clone()),
                            _ => None,
                        },
                        peers: match &shown {
                            Some(Ok(text)) => parse_wg_dump(text, now),
                            _ => Vec::new(),
                        },
                    }
                })
            })
            .collect();
        let mut members = Vec::new();
        for t in tasks {
            members.push(t.await);
        }
        // Name each peer by its public key.
        if let Some(s) = &state {
            for m in &mut members {
                for peer in &mut m.peers {
                    peer.member = s
                        .members
                        .iter()
                        .find(|x| x.public_key == peer.public_key)
                        .map(|x| x.name.clone());
                }
            }
        }
        out.push(MeshView {
            network: name.clone(),
            subnet: p.subnet.clone(),
            listen_port: p.listen_port,
            up: state.is_some(),
            members,
        });
    }
    Ok(out)
}
