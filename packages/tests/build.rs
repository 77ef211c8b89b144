//! Building and opening packages: reproducibility, manifest errors, and archives crafted to escape.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;
use packages::safety::Unsafe;
use packages::{Error, Package};

/// A way to spoil a package directory.
type Spoil = Box<dyn Fn(&Path)>;
/// A crafted archive and the refusal it must meet.
type Case<'a> = (&'a str, Vec<Raw<'a>>, fn(&Unsafe) -> bool);

const MANIFEST: &str = "name: evil\nversion: 1.0.0\nstart: 'true'\n";

#[test]
fn building_twice_gives_identical_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    package_dir(
        &a,
        "web",
        "1.2.3",
        "",
        &[
            ("server.py", "print(1)\n"),
            ("www/b.txt", "b"),
            ("www/a.txt", "a"),
            ("bin/run", "#!/bin/sh\n"),
        ],
    );
    std::fs::set_permissions(a.join("bin/run"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let first = packages::build(&a, &tmp.path().join("out1")).unwrap();
    // Same tree, made in another order, with other modes and times, built into the source dir itself.
    let b = tmp.path().join("b");
    package_dir(
        &b,
        "web",
        "1.2.3",
        "",
        &[
            ("bin/run", "#!/bin/sh\n"),
            ("www/a.txt", "a"),
            ("www/b.txt", "b"),
            ("server.py", "print(1)\n"),
        ],
    );
    std::fs::set_permissions(b.join("bin/run"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(b.join("www/a.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::write(b.join("server.py"), "print(1)\n").unwrap();
    let second = packages::build(&b, &b).unwrap();
    let third = packages::build(&b, &b).unwrap();
    assert_eq!(first.sha256, second.sha256);
    assert_eq!(
        second.sha256, third.sha256,
        "a previous build in the source dir must not be packaged"
    );
    assert_eq!(
        std::fs::read(&first.path).unwrap(),
        std::fs::read(&second.path).unwrap()
    );
    assert_eq!(first.path.file_name().unwrap(), "web-1.2.3.tar.zst");
    let sum = std::fs::read_to_string(packages::checksum_path(&first.path)).unwrap();
    assert_eq!(sum, format!("{}  web-1.2.3.tar.zst\n", first.sha256));
    assert_eq!(
        first.entries, 7,
        "manifest, server.py, bin/, bin/run, www/, www/a.txt, www/b.txt"
    );

    // What is inside: fixed owners, times, modes.
    let bytes = zstd::decode_all(std::fs::File::open(&first.path).unwrap()).unwrap();
    let mut ar = tar::Archive::new(&bytes[..]);
    let mut names = Vec::new();
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        let h = e.header();
        assert_eq!(
            (h.uid().unwrap(), h.gid().unwrap(), h.mtime().unwrap()),
            (0, 0, packages::FIXED_MTIME)
        );
        names.push((e.path().unwrap().display().to_string(), h.mode().unwrap()));
    }
    let want: Vec<(String, u32)> = [
        ("bin/", 0o755),
        ("bin/run", 0o755),
        ("manifest.yaml", 0o644),
        ("server.py", 0o644),
        ("www/", 0o755),
        ("www/a.txt", 0o644),
        ("www/b.txt", 0o644),
    ]
    .iter()
    .map(|(n, m)| (n.to_string(), *m))
    .collect();
    assert_eq!(names, want);
}

#[test]
fn files_list_limits_what_is_packaged() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("p");
    package_dir(
        &d,
        "web",
        "1.0.0",
        "files: [www/a.txt, server.py]\n",
        &[("server.py", "x"), ("www/a.txt", "a"), ("secret.env", "k")],
    );
    let p = packages::build(&d, &tmp.path().join("out")).unwrap();
    assert_eq!(p.entries, 4, "manifest, server.py, www/, www/a.txt");
    let missing = tmp.path().join("q");
    package_dir(&missing, "web", "1.0.0", "files: [nope]\n", &[]);
    let err = packages::build(&missing, &tmp.path().join("out")).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn manifest_errors_name_file_line_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("p");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("manifest.yaml"),
        "name: web\nversion: 1.0\nstart: x\nport: {http: 80}\n",
    )
    .unwrap();
    let err = packages::build(&d, tmp.path()).unwrap_err();
    let Error::Manifest(m) = &err else {
        panic!("{err}")
    };
    let text = err.to_string();
    assert!(
        text.contains("manifest.yaml:4:1: unknown key `port`"),
        "{text}"
    );
    assert_eq!(m.problems[0].help.as_deref(), Some("did you mean `ports`?"));
    // Fixing the key shows the next problem, the version, with its position.
    std::fs::write(
        d.join("manifest.yaml"),
        "name: web\nversion: 1.0\nstart: x\nports: {http: 80}\n",
    )
    .unwrap();
    let text = packages::build(&d, tmp.path()).unwrap_err().to_string();
    assert!(
        text.contains("manifest.yaml:2:10: version \"1.0\" is not semver"),
        "{text}"
    );
}

#[test]
fn build_refuses_unsafe_sources() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Spoil)> = vec![
        (
            "setuid",
            Box::new(|d: &Path| {
                std::fs::set_permissions(
                    d.join("server.py"),
                    std::fs::Permissions::from_mode(0o4755),
                )
                .unwrap()
            }),
        ),
        (
            "link-out",
            Box::new(|d: &Path| std::os::unix::fs::symlink("/etc", d.join("etc")).unwrap()),
        ),
        (
            "link-up",
            Box::new(|d: &Path| std::os::unix::fs::symlink("../../x", d.join("www/up")).unwrap()),
        ),
        (
            "fifo",
            Box::new(|d: &Path| {
                let ok = std::process::Command::new("mkfifo")
                    .arg(d.join("pipe"))
                    .status()
                    .unwrap()
                    .success();
                assert!(ok);
            }),
        ),
    ];
    for (name, make) in cases {
        let d = tmp.path().join(name);
        package_dir(
            &d,
            "web",
            "1.0.0",
            "",
            &[("server.py", "x"), ("www/i.html", "i")],
        );
        make(&d);
        let err = packages::build(&d, &tmp.path().join("out")).unwrap_err();
        assert!(matches!(err, Error::Unsafe { .. }), "{name}: {err}");
    }
    // A link that stays inside is fine.
    let d = tmp.path().join("inside");
    package_dir(
        &d,
        "web",
        "1.0.0",
        "",
        &[("server.py", "x"), ("www/i.html", "i")],
    );
    std::os::unix::fs::symlink("../server.py", d.join("www/s")).unwrap();
    packages::build(&d, &tmp.path().join("out")).unwrap();
}

/// Each crafted archive, opened as a package, is refused with the reason.
#[test]
fn crafted_archives_are_refused_when_opened() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: Vec<Case> = vec![
        ("dotdot", vec![Raw::file("../../etc/x", b"pwned")], |u| {
            *u == Unsafe::ParentComponent
        }),
        ("absolute", vec![Raw::file("/etc/x", b"pwned")], |u| {
            *u == Unsafe::AbsolutePath
        }),
        (
            "symlink-etc",
            vec![Raw::kind("etc", b'2', 0o777, "/etc")],
            |u| matches!(u, Unsafe::LinkEscapes { .. }),
        ),
        (
            "symlink-up",
            vec![Raw::kind("up", b'2', 0o777, "../..")],
            |u| matches!(u, Unsafe::LinkEscapes { .. }),
        ),
        (
            "through-link",
            vec![Raw::kind("d", b'2', 0o777, "."), Raw::file("d/x", b"x")],
            |u| matches!(u, Unsafe::ThroughSymlink { .. }),
        ),
        (
            "setuid",
            vec![Raw {
                mode: 0o4755,
                ..Raw::file("su", b"#!/bin/sh\n")
            }],
            |u| matches!(u, Unsafe::SetId { .. }),
        ),
        (
            "setgid",
            vec![Raw {
                mode: 0o2755,
                ..Raw::file("sg", b"x")
            }],
            |u| matches!(u, Unsafe::SetId { .. }),
        ),
        (
            "hardlink",
            vec![Raw::kind("h", b'1', 0o644, "/etc/passwd")],
            |u| matches!(u, Unsafe::HardLink { .. }),
        ),
        ("chardev", vec![Raw::kind("null", b'3', 0o666, "")], |u| {
            *u == Unsafe::Device
        }),
        ("fifo", vec![Raw::kind("f", b'6', 0o644, "")], |u| {
            *u == Unsafe::Fifo
        }),
        (
            "duplicate",
            vec![Raw::file("a", b"1"), Raw::kind("a", b'2', 0o777, "b")],
            |u| *u == Unsafe::Duplicate,
        ),
    ];
    for (name, entries, want) in cases {
        let path = craft(tmp.path(), &format!("{name}.tar.zst"), MANIFEST, &entries);
        match Package::open(&path) {
            Err(Error::Unsafe { why, .. }) => assert!(want(&why), "{name}: wrong reason {why}"),
            other => panic!("{name}: expected a refusal, got {other:?}"),
        }
    }
    // Control: the same way of crafting gives a package that opens.
    let ok = craft(
        tmp.path(),
        "ok.tar.zst",
        MANIFEST,
        &[Raw::file("a", b"1"), Raw::kind("l", b'2', 0o777, "a")],
    );
    let p = Package::open(&ok).unwrap();
    assert_eq!((p.manifest.name.as_str(), p.entries), ("evil", 3));
}

#[test]
fn tampered_archive_fails_its_checksum_file() {
    let tmp = tempfile::tempdir().unwrap();
    let p = small_package(tmp.path(), "web", "1.0.0", "");
    let mut bytes = std::fs::read(&p.path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&p.path, bytes).unwrap();
    assert!(matches!(
        Package::open(&p.path),
        Err(Error::ChecksumMismatch { .. })
    ));
}

#[test]
fn example_package_builds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/packages/hello");
    let tmp = tempfile::tempdir().unwrap();
    let p = packages::build(&dir, tmp.path()).unwrap();
    assert_eq!(p.id(), "hello-1.0.0");
    assert_eq!(p.manifest.requires, vec!["python3".to_owned()]);
    assert_eq!(p.manifest.ports["http"], 8080);
}
