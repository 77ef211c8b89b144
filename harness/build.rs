//! HARNESS_BUILD_ID: a hash of the sources the daemon is built from, so that the CLI starts a
//! `harnessd` only when it comes from the same build as itself (`cargo run` relinks only the CLI,
//! and a `harnessd` left beside it from an earlier build would run older code).

use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;
use std::path::{Path, PathBuf};

/// The workspace crates the daemon's code comes from, relative to the workspace root. Each must
/// exist: cargo reruns a build script whose `rerun-if-changed` path is missing at every build (a
/// five-minute release relink of `harness` for nothing), and a missing crate's sources would not
/// be in the hash.
const CRATES: &[&str] = &[
    "command-executor",
    "harness-config",
    "registry/protocol",
    "registry/store",
    "registry/server",
    "orchestrator",
    "packages",
    "proxy",
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
    pack_relative_relocations();
    order_code(&manifest);
}

/// Places the functions `harnessd` runs (harnessd.order, written by bench/harnessd_order.sh from a
/// callgrind run) first in its code, together (ADR 0041). The kernel maps an executable's code in
/// whole page-cache folios (64 KiB and more) around each page that runs; with the functions in the
/// linker's order, nearly every folio held one that ran, so nearly all 7 MB of code stayed resident.
/// The CLI `harness` likewise, by harness.order (bench/harness_order.sh): `harness status` first,
/// so that a short-lived command faults in a few pages of code (ADR 0045, addendum).
/// Only for release builds (the names carry a hash of the build) linked by rustc's own lld (the
/// default on x86_64 Linux since Rust 1.90): GNU ld has no such option. Names that no longer exist
/// are skipped by the link, so a stale list costs memory, never correctness.
fn order_code(manifest: &Path) {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let orders = [
        ("harnessd", manifest.join("harnessd.order")),
        ("harness", manifest.join("harness.order")),
    ];
    for (_, order) in &orders {
        println!("cargo:rerun-if-changed={}", order.display());
    }
    let rustc = std::process::Command::new(std::env::var_os("RUSTC").unwrap_or("rustc".into()))
        .arg("-V")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .unwrap_or_default();
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let minor = rustc
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.split('.').nth(1))
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(0);
    let flags = var("CARGO_ENCODED_RUSTFLAGS");
    if var("PROFILE") != "release"
        || var("TARGET") != "x86_64-unknown-linux-gnu"
        || var("HOST") != var("TARGET")
        || minor < 90
        || flags.contains("linker")
        || flags.contains("link-self-contained")
        || std::env::var_os("RUSTC_LINKER").is_some()
    {
        return;
    }
    for (bin, order) in orders.iter().filter(|(_, o)| o.is_file()) {
        println!(
            "cargo:rustc-link-arg-bin={bin}=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bin={bin}=-Wl,--no-warn-symbol-ordering");
    }
}

/// Links the executables with packed relative relocations (DT_RELR, ADR 0041): a position-
/// independent executable's table of relative relocations (16 000 entries, 376 KiB in `harnessd`)
/// shrinks to a few KiB. The dynamic loader reads that table at every start, and the kernel keeps
/// what it read mapped for the daemon's whole life. Needs glibc 2.36 where the executable runs, so
/// only when building natively against glibc 2.36 or newer (checked with `getconf`); a cross or
/// older build links as before.
fn pack_relative_relocations() {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") != "linux"
        || var("CARGO_CFG_TARGET_ENV") != "gnu"
        || var("HOST") != var("TARGET")
    {
        return;
    }
    let glibc = std::process::Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .unwrap_or_default();
    // "glibc 2.36"
    let mut version = glibc
        .trim()
        .strip_prefix("glibc ")
        .unwrap_or_default()
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (version.next().unwrap_or(0), version.next().unwrap_or(0));
    if (major, minor) >= (2, 36) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
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
