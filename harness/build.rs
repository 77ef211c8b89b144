//! HARNESS_BUILD_ID: a hash of the sources the daemon is built from, so that the CLI starts a
//! `harnessd` only when it comes from the same build as itself (`cargo run` relinks only the CLI,
//! and a `harnessd` left beside it from an earlier build would run older code).

use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;
use std::path::{Path, PathBuf};

/// The workspace crates the daemon's code comes from, relative to the workspace root.
const CRATES: &[&str] = &[
    "command-executor",
    "harness-config",
    "registry",
    "orchestrator",
    "packages",
    "harness",
];

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let root = manifest.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut inputs = vec![root.join("Cargo.toml"), root.join("Cargo.lock")];
    for c in CRATES {
        inputs.push(root.join(c).join("Cargo.toml"));
        inputs.push(root.join(c).join("src"));
    }
    let mut files = Vec::new();
    for input in &inputs {
        println!("cargo:rerun-if-changed={}", input.display());
        collect(input, &mut files);
    }
    files.sort();
    let mut hash = DefaultHasher::new();
    hash.write(env!("CARGO_PKG_VERSION").as_bytes());
    for f in &files {
        hash.write(
            f.strip_prefix(&root)
                .unwrap_or(f)
                .as_os_str()
                .as_encoded_bytes(),
        );
        hash.write(&std::fs::read(f).unwrap_or_default());
    }
    // The profile matters too: a debug CLI must not start a release daemon or the reverse.
    hash.write(std::env::var("PROFILE").unwrap_or_default().as_bytes());
    println!("cargo:rustc-env=HARNESS_BUILD_ID={:016x}", hash.finish());
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) {
    match std::fs::read_dir(path) {
        Ok(entries) => {
            for e in entries.flatten() {
                collect(&e.path(), out);
            }
        }
        Err(_) if path.is_file() => out.push(path.to_path_buf()),
        Err(_) => {}
    }
}
