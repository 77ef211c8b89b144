//! `drift` and `sync` (ADR 0036): what the registry records against what runs, and the repairs.
//!
//! A [`Finding`] names one difference between the registry (entries and the launch journal) and
//! reality (processes carrying launch ids, run directories on hosts, containers labelled
//! `harness.*` on engines), or between a running instance and the services file given. Its `id`
//! is stable across probes of the same thing, so `sync --adopt ID` / `--kill ID` name it; `sync`
//! probes again and re-verifies the identity of whatever it acts on.

use serde::{Deserialize, Serialize};

/// What kind of difference a finding is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DriftCategory {
    /// Something runs (or a container exists) that no record accounts for.
    Orphaned,
    /// A record (registry entry or launch record) of which nothing exists, whose definition is gone.
    Abandoned,
    /// The registry says running and it is not (or was found gone when the daemon started), or
    /// says not running and its recorded launch runs.
    StateMismatch,
    /// The running instance was started from another definition than the services file given.
    DefinitionDrift,
    /// The place could not be asked (host or engine does not answer): nothing is known.
    Unreachable,
}

impl DriftCategory {
    pub fn as_str(self) -> &'static str {
        match self {
            DriftCategory::Orphaned => "orphaned",
            DriftCategory::Abandoned => "abandoned",
            DriftCategory::StateMismatch => "state_mismatch",
            DriftCategory::DefinitionDrift => "definition_drift",
            DriftCategory::Unreachable => "unreachable",
        }
    }
}

/// What a finding is about, precisely enough to find it again and re-verify it before acting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DriftSubject {
    /// A process on the daemon's machine (a session or process group leader, or a lone process).
    LocalProcess {
        pid: u32,
        /// Kernel start time (clock ticks since boot): with the pid, the process's identity.
        start_time: u64,
        launch_id: String,
    },
    /// A run directory of a launch on an SSH host (`~/.local/state/harness/<launch id>`).
    RemoteRun {
        host: String,
        /// The user the run belongs to when it is not the host's login user.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        launch_id: String,
        pid: u32,
        start_time: u64,
        alive: bool,
    },
    /// A container labelled `harness.project`.
    Container {
        /// `local`, or the host whose engine it is on.
        engine: String,
        id: String,
        name: String,
        state: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        launch_id: Option<String>,
    },
    /// A package a service runs from (`type: package`), installed under `root` on `host`:
    /// `recorded` is the version the applied definition runs, `active` where `NAME-current`
    /// points (`None`: no such link).
    Package {
        host: String,
        root: String,
        name: String,
        recorded: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        active: Option<String>,
        /// `ROOT/NAME-RECORDED` is installed.
        installed: bool,
        /// The service names its version (`version:`): it does not follow `NAME-current`.
        pinned: bool,
    },
    /// A WireGuard mesh interface (`hw` + 8 hex digits + member index) on `place` (`local` or a
    /// hosts entry): recorded for `network` of `project` and missing, or present with no record.
    MeshInterface {
        place: String,
        interface: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        network: Option<String>,
        present: bool,
    },
    /// A registry entry.
    Entry { project: String, service: String },
    /// A host or engine that did not answer.
    Place { place: String },
}

/// One difference, with its evidence and the commands that resolve it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Finding {
    /// Stable for the same thing across probes (`d` + 10 hex digits).
    pub id: String,
    pub category: DriftCategory,
    /// Where: `local`, `host NAME`, `engine local`, `engine NAME`.
    pub place: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// One line saying what differs.
    pub summary: String,
    /// What was recorded and what was observed.
    pub evidence: Vec<String>,
    /// Commands that resolve it, the safest first.
    pub resolve: Vec<String>,
    /// What `sync --auto` does with it; `None` when it leaves it for a human.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto: Option<SyncActionKind>,
    pub subject: DriftSubject,
}

/// One place asked, how long it took, and what failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Probe {
    pub place: String,
    /// Processes, runs or containers seen there.
    pub seen: usize,
    pub elapsed_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A services file to compare running instances with (as `start` sends it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DriftDefinition {
    pub project: String,
    /// The resolved project, serialized (every `${VAR}` already substituted).
    pub yaml: String,
    /// The directory of the services file.
    pub dir: String,
}

/// `drift` params.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DriftParams {
    /// Compare running instances with this definition (definition drift); without it they are
    /// compared with the definition last applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<DriftDefinition>,
}

/// `drift` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DriftResult {
    pub findings: Vec<Finding>,
    pub probes: Vec<Probe>,
    /// Registry entries compared.
    pub entries: usize,
    pub elapsed_ms: u64,
}

/// What `sync` is asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum SyncMode {
    /// Say what `auto` would do; change nothing.
    DryRun,
    /// Resolve the safe findings only (see [`SyncActionKind`]).
    Auto,
    /// Supervise an orphan (or a running instance the registry calls stopped) as its service.
    Adopt { id: String },
    /// Kill an orphan (SIGKILL to its process group after re-verifying it; `docker rm -f`).
    Kill { id: String },
    /// Forget an abandoned record: `PROJECT/SERVICE` (or `SERVICE` with `project`).
    Forget { name: String },
}

/// `sync` params.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SyncParams {
    #[serde(flatten)]
    pub mode: SyncMode,
    /// The project a bare service name in `forget` belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<DriftDefinition>,
}

/// What sync does to a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SyncActionKind {
    Adopt,
    Kill,
    Forget,
    /// Record the observed state (the recorded process is gone: `exited`, status unknown).
    RecordObserved,
    /// A mismatch the daemon already corrected when it started: taken note of.
    Acknowledge,
}

/// One action sync took (or, with `dry_run`, would take).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SyncAction {
    pub finding: String,
    pub action: SyncActionKind,
    pub done: bool,
    pub detail: String,
}

/// `sync` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SyncResult {
    pub dry_run: bool,
    pub actions: Vec<SyncAction>,
    /// Findings left for a human (with `auto`/`dry_run`: all that auto does not resolve).
    pub left: Vec<Finding>,
}
