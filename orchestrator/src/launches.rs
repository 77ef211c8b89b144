//! Crash-consistent launches. Every launch is recorded before it can produce a process: a launch
//! id (`<daemon>/<project>/<service>/<run>`, `<daemon>` naming this state directory) written to
//! the service directory's `launch` file and fsynced, file and directory. Every process of the
//! launch carries the id — in its environment (`HARNESS_LAUNCH_ID`), in the name of its run
//! directory on a host, in its own cgroup where cgroups are usable — so a daemon killed at any
//! instant finds it again on its next start and adopts or kills it (see `apply::reattach`).
//! The record is removed once the launch's processes are known to be gone.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use command_executor::service::cgroup::{Cgroup, CgroupRoot};
use sha2::Digest;

const INTENT: &str = "launch";

/// This daemon's launch ids and service cgroups.
pub(crate) struct Launches {
    /// Names this state directory: two daemons on one machine or host never mistake each
    /// other's processes.
    pub instance: String,
    pub cgroups: Option<CgroupRoot>,
    seq: AtomicU64,
}

impl Launches {
    pub fn new(state_dir: &Path) -> Launches {
        let dir = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
        let digest = sha2::Sha256::digest(dir.as_os_str().as_encoded_bytes());
        let instance = hex::encode(&digest[..6]);
        let cgroups = CgroupRoot::detect(&format!("harness-{instance}"));
        Launches {
            instance,
            cgroups,
            seq: AtomicU64::new(0),
        }
    }

    /// What every launch id of the service starts with.
    pub fn prefix(&self, project: &str, service: &str) -> String {
        format!("{}/{project}/{service}/", self.instance)
    }

    /// A new launch id, unique across restarts of the daemon.
    pub fn next(&self, project: &str, service: &str) -> String {
        format!(
            "{}{}-{}-{}",
            self.prefix(project, service),
            jiff::Timestamp::now().as_millisecond(),
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// The service's cgroup (created), where cgroups are usable.
    pub fn cgroup(&self, project: &str, service: &str) -> Option<Cgroup> {
        let root = self.cgroups.as_ref()?;
        match Cgroup::open(root, &cgroup_name(project, service)) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!("no cgroup for {project}/{service}: {e}");
                None
            }
        }
    }

    /// The service's cgroup if it exists.
    pub fn existing_cgroup(&self, project: &str, service: &str) -> Option<Cgroup> {
        Cgroup::existing(self.cgroups.as_ref()?, &cgroup_name(project, service))
    }
}

fn cgroup_name(project: &str, service: &str) -> String {
    format!("{project}:{service}")
}

/// Records `id` as the service's launch in `dir`, durably, before anything is started.
pub(crate) async fn record(dir: &Path, id: &str) -> std::io::Result<()> {
    let dir = dir.to_path_buf();
    let id = id.to_owned();
    blocking::unblock(move || {
        use std::io::Write;
        std::fs::create_dir_all(&dir)?;
        let tmp = dir.join("launch.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(id.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(INTENT))?;
        std::fs::File::open(&dir)?.sync_all()
    })
    .await
}

/// The launch recorded in `dir`, if any.
pub(crate) async fn recorded(dir: &Path) -> Option<String> {
    let text = async_fs::read_to_string(dir.join(INTENT)).await.ok()?;
    let id = text.trim();
    (!id.is_empty()).then(|| id.to_owned())
}

/// Forgets the launch in `dir`: its processes are gone.
pub(crate) async fn forget(dir: &Path) {
    if let Err(e) = async_fs::remove_file(dir.join(INTENT)).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("cannot remove {}: {e}", dir.join(INTENT).display());
    }
}
