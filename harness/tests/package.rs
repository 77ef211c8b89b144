//! `harness package build` and `verify`, run as a user would.

use std::path::Path;
use std::process::{Command, Output};

fn harness(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("HARNESS_FILE")
        .output()
        .expect("run harness")
}

fn example() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/packages/hello")
        .display()
        .to_string()
}

#[test]
fn build_twice_gives_the_same_sha256_and_verify_agrees() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().display().to_string();
    let sha = |o: &Output| -> String {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["sha256"].as_str().unwrap().to_owned()
    };
    let first = sha(&harness(&[
        "package",
        "build",
        &example(),
        "--out",
        &out,
        "-o",
        "json",
    ]));
    let second = sha(&harness(&[
        "package",
        "build",
        &example(),
        "--out",
        &out,
        "-o",
        "json",
    ]));
    assert_eq!(first, second);
    let archive = tmp.path().join("hello-1.0.0.tar.zst").display().to_string();
    let verified = sha(&harness(&["package", "verify", &archive, "-o", "json"]));
    assert_eq!(verified, first);
    let sum = std::fs::read_to_string(format!("{archive}.sha256")).unwrap();
    assert_eq!(sum, format!("{first}  hello-1.0.0.tar.zst\n"));
    // Text mode: sha256sum's format on stdout.
    let o = harness(&["package", "verify", &archive]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!("{first}  {archive}\n")
    );
}

#[test]
fn manifest_errors_exit_2_with_position() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("manifest.yaml"),
        "name: web\nversion: 1.0.0\nstrat: x\n",
    )
    .unwrap();
    let o = harness(&[
        "package",
        "build",
        &tmp.path().display().to_string(),
        "--out",
        &tmp.path().display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("manifest.yaml:3:1: unknown key `strat`"),
        "{err}"
    );
    assert!(err.contains("did you mean `start`?"), "{err}");
}

#[test]
fn tampered_archive_fails_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().display().to_string();
    assert!(
        harness(&["package", "build", &example(), "--out", &out])
            .status
            .success()
    );
    let archive = tmp.path().join("hello-1.0.0.tar.zst");
    let mut bytes = std::fs::read(&archive).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&archive, bytes).unwrap();
    let o = harness(&["package", "verify", &archive.display().to_string()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("does not match"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
