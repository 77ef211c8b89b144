//! Everything that can go wrong building, opening, deploying or rolling back a package. Local errors name
//! the file; remote ones name the host and, where there is one, the path on it.

use std::path::{Path, PathBuf};

use crate::manifest::ManifestError;
use crate::safety::Unsafe;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Manifest(Box<ManifestError>),
    #[error("{}: {action}: {source}", .path.display())]
    Io {
        path: PathBuf,
        action: String,
        source: std::io::Error,
    },
    /// An entry the safety rules refuse, at build or when opening an archive.
    #[error("{}: refused entry {entry:?}: {why}", .archive.display())]
    Unsafe {
        archive: PathBuf,
        entry: String,
        why: Unsafe,
    },
    #[error("{}: not a valid package archive: {detail}", .path.display())]
    Corrupt { path: PathBuf, detail: String },
    /// The archive does not match the `.sha256` file beside it.
    #[error("{}: sha256 {actual} does not match {expected} from the .sha256 file", .path.display())]
    ChecksumMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    /// Reaching the host or running on it failed (names host and layer).
    #[error(transparent)]
    Remote(#[from] command_executor::Error),
    /// What arrived on the host does not have the sha256 that was sent: nothing was installed.
    #[error(
        "{host}: upload rejected, sha256 on the host is {actual}, expected {expected}; nothing installed"
    )]
    UploadCorrupted {
        host: String,
        expected: String,
        actual: String,
    },
    #[error("{host}: permission denied: {path}")]
    PermissionDenied { host: String, path: String },
    #[error("{host}: no space left on device: {path}")]
    NoSpace { host: String, path: String },
    #[error("{host}: missing commands the package requires: {}", .commands.join(", "))]
    MissingCommands { host: String, commands: Vec<String> },
    /// The host's own check of the archive listing or of the extracted tree failed.
    #[error("{host}: unsafe archive refused on the host: {detail}")]
    UnsafeOnHost { host: String, detail: String },
    #[error("{host}: setup failed in {path} (exit {code}): {output}")]
    Setup {
        host: String,
        path: String,
        code: i32,
        output: String,
    },
    /// The same NAME-VERSION is installed with different contents.
    #[error(
        "{host}: {path} is already installed with sha256 {installed}, not {sha256}; bump the version or \
         deploy with replace"
    )]
    VersionConflict {
        host: String,
        path: String,
        installed: String,
        sha256: String,
    },
    /// The deployment was cancelled on this host before it activated anything: what was
    /// uploaded or extracted is removed, the active version is the one before.
    #[error("{host}: cancelled {detail}; the previous active version stays")]
    Cancelled { host: String, detail: String },
    #[error("{host}: no earlier version of {name} under {root} to roll back to")]
    NothingToRollBack {
        host: String,
        name: String,
        root: String,
    },
    #[error("{host}: version {version} of {name} is not installed under {root}")]
    NotInstalled {
        host: String,
        name: String,
        version: String,
        root: String,
    },
    #[error("{host}: another deployment of {name} holds {lock}")]
    Busy {
        host: String,
        name: String,
        lock: String,
    },
    /// Any other failure of an install step on the host, with what it said.
    #[error("{host}: {step} failed: {detail}")]
    Install {
        host: String,
        step: String,
        detail: String,
    },
    #[error("invalid {what}: {detail}")]
    Invalid { what: String, detail: String },
}

impl From<ManifestError> for Error {
    fn from(e: ManifestError) -> Self {
        Error::Manifest(Box::new(e))
    }
}

impl Error {
    pub(crate) fn io(path: &Path, action: &str, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_owned(),
            action: action.to_owned(),
            source,
        }
    }

    /// The host the error happened on, for remote errors.
    pub fn host(&self) -> Option<&str> {
        match self {
            Error::Remote(e) => e.place().map(|p| p.host.as_str()),
            Error::UploadCorrupted { host, .. }
            | Error::PermissionDenied { host, .. }
            | Error::NoSpace { host, .. }
            | Error::MissingCommands { host, .. }
            | Error::UnsafeOnHost { host, .. }
            | Error::Setup { host, .. }
            | Error::VersionConflict { host, .. }
            | Error::NothingToRollBack { host, .. }
            | Error::Cancelled { host, .. }
            | Error::NotInstalled { host, .. }
            | Error::Busy { host, .. }
            | Error::Install { host, .. } => Some(host),
            _ => None,
        }
    }
}
