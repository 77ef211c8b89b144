//! Deployable packages: a directory with a `manifest.yaml` becomes a reproducible `NAME-VERSION.tar.zst`
//! (plus `.sha256`), which is verified, streamed to hosts over their SSH connection, checked again there,
//! installed atomically under `/opt/NAME-VERSION/` and rolled back.
//!
//! ```no_run
//! use command_executor::{Executor, SshHost, Target};
//! # smol::block_on(async {
//! let pkg = packages::build("examples/packages/hello".as_ref(), "dist".as_ref())?;
//! let exec = Executor::default();
//! let h1 = Target::ssh(SshHost::new("198.18.0.11").name("h1").user("hbuser")).sudo("root");
//! let opts = packages::DeployOptions::default();
//! let done = packages::deploy(&exec, &h1, &pkg, &opts, &|p| eprintln!("{} {:?} {}", p.host, p.phase, p.bytes)).await?;
//! println!("{} on {}: {:?}", done.package, done.host, done.outcome);
//! packages::rollback(&exec, &h1, "/opt", "hello", None).await?;
//! # Ok::<_, packages::Error>(()) });
//! ```
//!
//! Untrusted archives never escape their root: see [`safety`] for the rules, applied at build, when an
//! archive is opened, and again on the host.

mod archive;
pub mod deploy;
mod error;
pub mod manifest;
pub mod safety;

pub use archive::{
    FIXED_MTIME, MAX_UNPACKED_BYTES, Package, ZSTD_LEVEL, build, checksum_path, sha256_file,
};
pub use deploy::{
    CORRUPT_UPLOAD_ENV, DEFAULT_KEEP, DEFAULT_ROOT, DeployOptions, Deployed, Installed, Outcome,
    Phase, Progress, RolledBack, UPLOAD_DELAY_ENV, deploy, deploy_all, installed, rollback,
};
pub use error::{Error, Result};
pub use manifest::{MANIFEST_FILE, Manifest, ManifestError, Problem};
