//! Deploying over SSH to the testbed hosts: parallel installs, the host's sha256 check, the host's own
//! safety checks, idempotence, rollback, pruning, and errors that name host and path.

mod common;

use std::io::{Read, Write};
use std::sync::Mutex;
use std::time::Duration;

use common::*;
use packages::{DeployOptions, Error, Outcome, Phase, Progress};

fn opts(root: &Root) -> DeployOptions {
    DeployOptions {
        root: root.path.clone(),
        ..DeployOptions::default()
    }
}

fn current(host: &str, root: &Root, name: &str) -> String {
    tb().sh_ok(host, &format!("readlink {}/{name}-current", root.path))
}

/// Nothing but installed versions, their checksums, the current link and the history file.
fn assert_no_leftovers(host: &str, root: &Root) {
    for f in ls(host, &root.path) {
        assert!(
            !f.contains(".upload.") && !f.contains(".new.") && !f.ends_with(".lock"),
            "{host}: leftover {f}"
        );
    }
}

fn http_get(addr: std::net::IpAddr, port: u16, path: &str) -> Option<String> {
    let mut s =
        std::net::TcpStream::connect_timeout(&(addr, port).into(), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
}

#[test]
fn example_deploys_to_h1_and_h2_in_parallel_and_serves() {
    let root = Root::new("par");
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/packages/hello");
    let pkg = packages::build(&dir, tmp.path()).unwrap();
    let seen: Mutex<Vec<Progress>> = Mutex::new(Vec::new());
    let targets = [root_on("h1"), root_on("h2")];
    let results = smol::block_on(packages::deploy_all(
        exec(),
        &targets,
        &pkg,
        &opts(&root),
        &|p| seen.lock().unwrap().push(p),
    ));
    for r in &results {
        let d = r.as_ref().unwrap();
        assert_eq!(d.outcome, Outcome::Installed);
        assert_eq!(d.path, format!("{}/hello-1.0.0", root.path));
        assert!(d.compressed, "the testbed hosts have zstd");
        assert_eq!(d.bytes_sent, pkg.size);
    }
    let seen = seen.into_inner().unwrap();
    for host in ["h1", "h2"] {
        let phases: Vec<Phase> = seen
            .iter()
            .filter(|p| p.host == host)
            .map(|p| p.phase)
            .collect();
        let mut distinct = phases.clone();
        distinct.dedup();
        assert_eq!(
            distinct,
            [
                Phase::Checking,
                Phase::Uploading,
                Phase::Verifying,
                Phase::Extracting,
                Phase::Setup,
                Phase::Ready,
                Phase::Activating,
                Phase::Done
            ],
            "{host}"
        );
        let last_upload = seen
            .iter()
            .rfind(|p| p.host == host && p.phase == Phase::Uploading)
            .unwrap();
        assert_eq!((last_upload.bytes, last_upload.total), (pkg.size, pkg.size));
        assert_eq!(current(host, &root, "hello"), "hello-1.0.0");
        // setup ran in place, with the final path in its environment.
        assert_eq!(
            tb().sh_ok(
                host,
                &format!("cat {}/hello-current/www/version.txt", root.path)
            ),
            "1.0.0"
        );
        assert_no_leftovers(host, &root);
    }

    // Start it from the installed directory on both hosts and reach it from outside.
    let port = testbed::free_port();
    let mut servers = Vec::new();
    for host in ["h1", "h2"] {
        let cmd = command_executor::Command::new("sh")
            .arg("-c")
            .arg(&pkg.manifest.start)
            .current_dir(format!("{}/hello-current", root.path))
            .env("HELLO_PORT", port.to_string())
            .env("HELLO_GREETING", "hi");
        servers.push(smol::block_on(exec().spawn(&user_on(host), &cmd)).unwrap());
    }
    for host in ["h1", "h2"] {
        let addr = tb().host(host).addr;
        let ok = testbed::wait_until(Duration::from_secs(15), || {
            http_get(addr, port, "/hello").is_some()
        });
        assert!(ok, "{host}: server did not answer");
        assert_eq!(http_get(addr, port, "/hello").unwrap(), "hi from 1.0.0\n");
    }
    for s in servers {
        smol::block_on(s.stop(Duration::from_secs(5))).unwrap();
    }
}

#[test]
fn corrupted_upload_is_refused_and_previous_version_stays() {
    let root = Root::new("corrupt");
    let tmp = tempfile::tempdir().unwrap();
    let v1 = small_package(tmp.path(), "web", "1.0.0", "");
    let v2 = small_package(tmp.path(), "web", "2.0.0", "");
    let h1 = root_on("h1");
    smol::block_on(packages::deploy(exec(), &h1, &v1, &opts(&root), &|_| {})).unwrap();
    for plain in [false, true] {
        let o = DeployOptions {
            corrupt_byte_at: Some(v2.size / 2),
            plain,
            ..opts(&root)
        };
        let err = smol::block_on(packages::deploy(exec(), &h1, &v2, &o, &|_| {})).unwrap_err();
        match &err {
            Error::UploadCorrupted {
                host,
                expected,
                actual,
            } => {
                assert_eq!(host, "h1");
                assert_ne!(expected, actual);
                assert!(!expected.is_empty());
            }
            other => panic!("plain={plain}: expected UploadCorrupted, got {other}"),
        }
        assert!(err.to_string().starts_with("h1: upload rejected"), "{err}");
        assert_eq!(current("h1", &root, "web"), "web-1.0.0");
        assert_eq!(
            ls("h1", &root.path),
            [
                ".web.history",
                "web-1.0.0",
                "web-1.0.0.sha256",
                "web-current"
            ]
        );
    }
    // The same upload without the fault goes through, compressed and plain.
    for plain in [true, false] {
        let d = smol::block_on(packages::deploy(
            exec(),
            &h1,
            &v2,
            &DeployOptions {
                plain,
                ..opts(&root)
            },
            &|_| {},
        ))
        .unwrap();
        assert_eq!(d.compressed, !plain);
        assert_eq!(current("h1", &root, "web"), "web-2.0.0");
        if plain {
            // Back to 1.0.0 so that the compressed path installs 2.0.0 again from scratch.
            smol::block_on(packages::rollback(exec(), &h1, &root.path, "web", None)).unwrap();
            tb().sh_ok(
                "h1",
                &format!(
                    "sudo -n rm -rf {0}/web-2.0.0 {0}/web-2.0.0.sha256",
                    root.path
                ),
            );
        }
    }
}

#[test]
fn same_checksum_again_does_nothing() {
    let root = Root::new("idem");
    let tmp = tempfile::tempdir().unwrap();
    let v1 = small_package(tmp.path(), "web", "1.0.0", "setup: date +%s%N > stamp\n");
    let h2 = root_on("h2");
    let first = smol::block_on(packages::deploy(exec(), &h2, &v1, &opts(&root), &|_| {})).unwrap();
    assert_eq!(
        (first.outcome, first.previous.as_deref()),
        (Outcome::Installed, None)
    );
    let stamp = tb().sh_ok("h2", &format!("cat {}/web-1.0.0/stamp", root.path));
    let phases = Mutex::new(Vec::new());
    let again = smol::block_on(packages::deploy(exec(), &h2, &v1, &opts(&root), &|p| {
        phases.lock().unwrap().push(p.phase)
    }))
    .unwrap();
    assert_eq!((again.outcome, again.bytes_sent), (Outcome::Unchanged, 0));
    assert_eq!(phases.into_inner().unwrap(), [Phase::Checking, Phase::Done]);
    assert_eq!(
        tb().sh_ok("h2", &format!("cat {}/web-1.0.0/stamp", root.path)),
        stamp,
        "setup must not run again"
    );

    // Same version, other contents: refused unless replace is asked for.
    let other = tmp.path().join("other");
    package_dir(
        &other,
        "web",
        "1.0.0",
        "",
        &[("server.py", "print('changed')\n")],
    );
    let changed = packages::build(&other, &tmp.path().join("out2")).unwrap();
    let err = smol::block_on(packages::deploy(
        exec(),
        &h2,
        &changed,
        &opts(&root),
        &|_| {},
    ))
    .unwrap_err();
    assert!(matches!(err, Error::VersionConflict { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("{}/web-1.0.0", root.path)),
        "{err}"
    );
    let replaced = smol::block_on(packages::deploy(
        exec(),
        &h2,
        &changed,
        &DeployOptions {
            replace: true,
            ..opts(&root)
        },
        &|_| {},
    ))
    .unwrap();
    assert_eq!(replaced.outcome, Outcome::Installed);
    assert_eq!(
        tb().sh_ok("h2", &format!("cat {}/web-current/server.py", root.path)),
        "print('changed')"
    );
    assert_no_leftovers("h2", &root);
}

#[test]
fn rollback_switches_back_and_old_versions_are_pruned() {
    let root = Root::new("rollback");
    let tmp = tempfile::tempdir().unwrap();
    let h3 = root_on("h3");
    let o = DeployOptions {
        keep: 2,
        ..opts(&root)
    };
    let mut pkgs = Vec::new();
    for v in ["1.0.0", "1.1.0", "2.0.0", "3.0.0"] {
        pkgs.push(small_package(tmp.path(), "web", v, ""));
    }
    let deploy =
        |i: usize| smol::block_on(packages::deploy(exec(), &h3, &pkgs[i], &o, &|_| {})).unwrap();
    deploy(0);
    assert_eq!(deploy(1).previous.as_deref(), Some("1.0.0"));
    let rb = smol::block_on(packages::rollback(exec(), &h3, &root.path, "web", None)).unwrap();
    assert_eq!(
        (rb.from.as_deref(), rb.to.as_str()),
        (Some("1.1.0"), "1.0.0")
    );
    assert_eq!(rb.path, format!("{}/web-1.0.0", root.path));
    assert_eq!(current("h3", &root, "web"), "web-1.0.0");
    // Rolling back again returns to the version rolled back from.
    let rb = smol::block_on(packages::rollback(exec(), &h3, &root.path, "web", None)).unwrap();
    assert_eq!(rb.to, "1.1.0");
    // Deploying a retained version again only switches.
    assert_eq!(deploy(0).outcome, Outcome::Activated);
    assert_eq!(current("h3", &root, "web"), "web-1.0.0");
    deploy(2);
    deploy(3);
    // keep 2: the active 3.0.0 and the two most recently active others.
    let installed = smol::block_on(packages::installed(exec(), &h3, &root.path, "web")).unwrap();
    assert_eq!(installed.current.as_deref(), Some("3.0.0"));
    assert_eq!(installed.versions, ["1.0.0", "2.0.0", "3.0.0"]);
    assert!(!ls("h3", &root.path).contains(&"web-1.1.0".to_owned()));
    // An explicit target, and one that is not there.
    let rb = smol::block_on(packages::rollback(
        exec(),
        &h3,
        &root.path,
        "web",
        Some("1.0.0"),
    ))
    .unwrap();
    assert_eq!(rb.to, "1.0.0");
    let err = smol::block_on(packages::rollback(
        exec(),
        &h3,
        &root.path,
        "web",
        Some("1.1.0"),
    ))
    .unwrap_err();
    assert!(matches!(err, Error::NotInstalled { .. }), "{err}");
    let err =
        smol::block_on(packages::rollback(exec(), &h3, &root.path, "nothing", None)).unwrap_err();
    assert!(matches!(err, Error::NothingToRollBack { .. }), "{err}");
    assert_no_leftovers("h3", &root);
}

#[test]
fn permission_denied_names_host_and_path() {
    let root = Root::new("perm");
    let tmp = tempfile::tempdir().unwrap();
    let v1 = small_package(tmp.path(), "web", "1.0.0", "");
    // /opt is root's; hbuser without sudo cannot create the root there.
    let err = smol::block_on(packages::deploy(
        exec(),
        &user_on("h1"),
        &v1,
        &opts(&root),
        &|_| {},
    ))
    .unwrap_err();
    match &err {
        Error::PermissionDenied { host, path } => {
            assert_eq!((host.as_str(), path.as_str()), ("h1", root.path.as_str()))
        }
        other => panic!("expected PermissionDenied, got {other}"),
    }
    assert_eq!(
        err.to_string(),
        format!("h1: permission denied: {}", root.path)
    );
    // An existing root-owned root with a version in place: still refused, and the version untouched.
    smol::block_on(packages::deploy(
        exec(),
        &root_on("h1"),
        &v1,
        &opts(&root),
        &|_| {},
    ))
    .unwrap();
    let v2 = small_package(tmp.path(), "web", "2.0.0", "");
    let err = smol::block_on(packages::deploy(
        exec(),
        &user_on("h1"),
        &v2,
        &opts(&root),
        &|_| {},
    ))
    .unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err}");
    assert_eq!(current("h1", &root, "web"), "web-1.0.0");
}

#[test]
fn setup_failure_and_missing_commands_leave_previous_version() {
    let root = Root::new("setup");
    let tmp = tempfile::tempdir().unwrap();
    let v1 = small_package(tmp.path(), "web", "1.0.0", "");
    let h2 = root_on("h2");
    smol::block_on(packages::deploy(exec(), &h2, &v1, &opts(&root), &|_| {})).unwrap();
    let bad = small_package(
        tmp.path(),
        "web",
        "2.0.0",
        "setup: echo migrating; echo 'no database' >&2; exit 3\n",
    );
    let err =
        smol::block_on(packages::deploy(exec(), &h2, &bad, &opts(&root), &|_| {})).unwrap_err();
    match &err {
        Error::Setup {
            host,
            code,
            output,
            path,
        } => {
            assert_eq!((host.as_str(), *code), ("h2", 3));
            assert!(
                output.contains("no database") && output.contains("migrating"),
                "{output}"
            );
            assert_eq!(path, &format!("{}/web-2.0.0", root.path));
        }
        other => panic!("expected Setup, got {other}"),
    }
    let needs = small_package(
        tmp.path(),
        "web",
        "3.0.0",
        "requires: [python3, no-such-tool-xyz]\n",
    );
    let err =
        smol::block_on(packages::deploy(exec(), &h2, &needs, &opts(&root), &|_| {})).unwrap_err();
    assert_eq!(
        err.to_string(),
        "h2: missing commands the package requires: no-such-tool-xyz"
    );
    assert_eq!(current("h2", &root, "web"), "web-1.0.0");
    assert_eq!(
        ls("h2", &root.path),
        [
            ".web.history",
            "web-1.0.0",
            "web-1.0.0.sha256",
            "web-current"
        ]
    );
}

/// Archives that never passed the local checks (forged `Package` values) meet the host's own checks.
#[test]
fn host_refuses_forged_archives_and_writes_nothing_outside() {
    let root = Root::new("forged");
    let tmp = tempfile::tempdir().unwrap();
    let h1 = root_on("h1");
    let manifest = "name: evil\nversion: 1.0.0\nstart: 'true'\n";
    let marker = format!("pkgtest-escape-{}", std::process::id());
    let escape_dotdot = format!("../../../tmp/{marker}");
    let escape_abs = format!("/tmp/{marker}");
    let through = format!("t/{marker}");
    let cases: Vec<(&str, Vec<Raw>)> = vec![
        ("dotdot", vec![Raw::file(&escape_dotdot, b"pwned")]),
        ("absolute", vec![Raw::file(&escape_abs, b"pwned")]),
        ("symlink-etc", vec![Raw::kind("etc", b'2', 0o777, "/etc")]),
        (
            "symlink-write",
            vec![
                Raw::kind("t", b'2', 0o777, "/tmp"),
                Raw::file(&through, b"pwned"),
            ],
        ),
        (
            "setuid",
            vec![Raw {
                mode: 0o4755,
                ..Raw::file("su", b"#!/bin/sh\n")
            }],
        ),
        ("fifo", vec![Raw::kind("f", b'6', 0o644, "")]),
        ("device", vec![Raw::kind("null", b'3', 0o666, "")]),
        ("hardlink", vec![Raw::kind("h", b'1', 0o644, "/etc/passwd")]),
    ];
    for (name, entries) in cases {
        let path = craft(
            tmp.path(),
            &format!("evil-{name}.tar.zst"),
            manifest,
            &entries,
        );
        let pkg = forged(&path, manifest);
        for plain in [false, true] {
            let o = DeployOptions {
                plain,
                ..opts(&root)
            };
            let err = smol::block_on(packages::deploy(exec(), &h1, &pkg, &o, &|_| {})).unwrap_err();
            assert!(matches!(err, Error::UnsafeOnHost { .. }), "{name}: {err}");
            assert!(err.to_string().starts_with("h1: "), "{err}");
            let out = tb().sh_on(
                "h1",
                &format!(
                    "ls /tmp/{marker} /{marker} {0}/../{marker} {0}/evil-current 2>/dev/null",
                    root.path
                ),
            );
            assert!(
                out.stdout.is_empty(),
                "{name}: written outside: {}",
                String::from_utf8_lossy(&out.stdout)
            );
            assert_no_leftovers("h1", &root);
        }
    }
}

/// A tiny tmpfs mounted in h3's private mount namespace fills up during the upload.
#[test]
fn disk_full_names_host_and_path_and_keeps_previous() {
    let root = Root::new("full");
    let tb = tb();
    let pid = std::fs::read_to_string(tb.dir.join("hosts/h3/sshd.pid")).unwrap();
    let mnt = |args: &str| {
        let st = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "nsenter --target {} --mount sh -c '{args}'",
                pid.trim()
            ))
            .status()
            .unwrap();
        assert!(st.success(), "{args}");
    };
    mnt(&format!(
        "mkdir -p {0} && mount -t tmpfs -o size=256k tmpfs {0}",
        root.path
    ));
    struct Unmount<'a>(&'a dyn Fn(&str), String);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            (self.0)(&format!("umount {} || true", self.1));
        }
    }
    let _unmount = Unmount(&mnt, root.path.clone());

    let tmp = tempfile::tempdir().unwrap();
    let h3 = root_on("h3");
    let v1 = small_package(tmp.path(), "web", "1.0.0", "");
    smol::block_on(packages::deploy(exec(), &h3, &v1, &opts(&root), &|_| {})).unwrap();
    // 1 MB that zstd cannot shrink.
    let mut noise = vec![0u8; 1 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let dir = tmp.path().join("big");
    package_dir(&dir, "web", "2.0.0", "", &[("server.py", "x")]);
    std::fs::write(dir.join("noise.bin"), &noise).unwrap();
    let v2 = packages::build(&dir, &tmp.path().join("out-big")).unwrap();
    let err =
        smol::block_on(packages::deploy(exec(), &h3, &v2, &opts(&root), &|_| {})).unwrap_err();
    match &err {
        Error::NoSpace { host, path } => {
            assert_eq!(host, "h3");
            assert!(
                path.starts_with(&format!("{}/.web-2.0.0.upload.", root.path)),
                "{path}"
            );
        }
        other => panic!("expected NoSpace, got {other}"),
    }
    assert!(
        err.to_string()
            .starts_with("h3: no space left on device: /opt/pkgtest-full-"),
        "{err}"
    );
    assert_eq!(current("h3", &root, "web"), "web-1.0.0");
    assert_eq!(
        ls("h3", &root.path),
        [
            ".web.history",
            "web-1.0.0",
            "web-1.0.0.sha256",
            "web-current"
        ]
    );
}

#[test]
fn concurrent_deploys_of_one_package_are_serialized_and_dead_locks_taken_over() {
    let root = Root::new("lock");
    let tmp = tempfile::tempdir().unwrap();
    let h1 = root_on("h1");
    let slow = small_package(tmp.path(), "web", "1.0.0", "setup: sleep 3\n");
    let other = small_package(tmp.path(), "web", "2.0.0", "");
    let in_setup = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let first = s.spawn(|| {
            smol::block_on(packages::deploy(exec(), &h1, &slow, &opts(&root), &|p| {
                if p.phase == Phase::Setup {
                    in_setup.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }))
        });
        assert!(testbed::wait_until(Duration::from_secs(20), || in_setup
            .load(std::sync::atomic::Ordering::SeqCst)));
        let err = smol::block_on(packages::deploy(exec(), &h1, &other, &opts(&root), &|_| {}))
            .unwrap_err();
        match &err {
            Error::Busy { host, lock, .. } => assert_eq!(
                (host.as_str(), lock.as_str()),
                ("h1", &*format!("{}/.web.lock", root.path))
            ),
            other => panic!("expected Busy, got {other}"),
        }
        assert_eq!(first.join().unwrap().unwrap().outcome, Outcome::Installed);
    });
    // A lock left by a holder that died (pid gone) is taken over.
    tb().sh_ok(
        "h1",
        &format!(
            "sudo -n sh -c 'mkdir {0}/.web.lock && echo 999999999 > {0}/.web.lock/pid'",
            root.path
        ),
    );
    let d = smol::block_on(packages::deploy(exec(), &h1, &other, &opts(&root), &|_| {})).unwrap();
    assert_eq!(d.outcome, Outcome::Installed);
    assert_no_leftovers("h1", &root);
}

#[test]
fn an_install_killed_midway_is_cleaned_up_by_the_next() {
    let root = Root::new("killed");
    let tmp = tempfile::tempdir().unwrap();
    let h2 = root_on("h2");
    let v1 = small_package(tmp.path(), "web", "1.0.0", "");
    smol::block_on(packages::deploy(exec(), &h2, &v1, &opts(&root), &|_| {})).unwrap();
    let hang = small_package(tmp.path(), "web", "2.0.0", "setup: sleep 31.4\n");
    let o = DeployOptions {
        timeout: Duration::from_secs(3),
        ..opts(&root)
    };
    let err = smol::block_on(packages::deploy(exec(), &h2, &hang, &o, &|_| {})).unwrap_err();
    assert!(
        matches!(err, Error::Remote(command_executor::Error::Timeout { .. })),
        "{err}"
    );
    assert!(
        testbed::wait_until(Duration::from_secs(10), || tb()
            .processes_matching("sleep 31.4")
            .is_empty()),
        "the setup was left running"
    );
    assert_eq!(current("h2", &root, "web"), "web-1.0.0");
    let v3 = small_package(tmp.path(), "web", "3.0.0", "");
    smol::block_on(packages::deploy(exec(), &h2, &v3, &opts(&root), &|_| {})).unwrap();
    assert_no_leftovers("h2", &root);
    assert_eq!(
        ls("h2", &root.path),
        [
            ".web.history",
            "web-1.0.0",
            "web-1.0.0.sha256",
            "web-3.0.0",
            "web-3.0.0.sha256",
            "web-current"
        ]
    );
}

/// A busybox-only host (the testbed image in a container on the local engine): no zstd, busybox tar,
/// sha256sum, find, readlink, mv -T. The plain-tar path and every host check run there.
#[test]
fn busybox_host_without_zstd_gets_a_plain_tar() {
    let tb = tb();
    let name = format!("pkgtest-bb-{}", std::process::id());
    tb.docker_ok(
        testbed::Engine::Local,
        ["run", "-d", "--name", &name, &tb.image, "sleep", "600"],
    );
    struct Remove(String);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = common::tb().docker(testbed::Engine::Local, ["rm", "-f", &self.0]);
        }
    }
    let _rm = Remove(name.clone());
    let cli = command_executor::DockerCli {
        program: tb.docker_cli.display().to_string(),
        host: Some(tb.docker_local.clone()),
    };
    let target =
        command_executor::Target::local().docker(command_executor::DockerExec::new(&name).cli(cli));
    let tmp = tempfile::tempdir().unwrap();
    let o = DeployOptions {
        root: "/opt/pkg".into(),
        ..DeployOptions::default()
    };
    let v1 = small_package(
        tmp.path(),
        "web",
        "1.0.0",
        "setup: echo $HARNESS_PACKAGE_VERSION > v\n",
    );
    let v2 = small_package(
        tmp.path(),
        "web",
        "2.0.0",
        "setup: echo $HARNESS_PACKAGE_VERSION > v\n",
    );
    let d = smol::block_on(packages::deploy(exec(), &target, &v1, &o, &|_| {})).unwrap();
    assert_eq!((d.outcome, d.compressed), (Outcome::Installed, false));
    smol::block_on(packages::deploy(exec(), &target, &v2, &o, &|_| {})).unwrap();
    let err = smol::block_on(packages::deploy(
        exec(),
        &target,
        &small_package(tmp.path(), "web", "3.0.0", ""),
        &DeployOptions {
            corrupt_byte_at: Some(100),
            ..o.clone()
        },
        &|_| {},
    ))
    .unwrap_err();
    assert!(matches!(err, Error::UploadCorrupted { .. }), "{err}");
    let rb = smol::block_on(packages::rollback(exec(), &target, "/opt/pkg", "web", None)).unwrap();
    assert_eq!(rb.to, "1.0.0");
    let v = tb.docker_ok(
        testbed::Engine::Local,
        ["exec", &name, "cat", "/opt/pkg/web-current/v"],
    );
    assert_eq!(v.trim(), "1.0.0");
    // Forged archives meet busybox tar: refused, nothing outside the root.
    let manifest = "name: evil\nversion: 1.0.0\nstart: 'true'\n";
    let cases: Vec<(&str, Vec<Raw>)> = vec![
        ("dotdot", vec![Raw::file("../../../tmp/escaped", b"pwned")]),
        ("absolute", vec![Raw::file("/tmp/escaped", b"pwned")]),
        (
            "symlink-write",
            vec![
                Raw::kind("t", b'2', 0o777, "/tmp"),
                Raw::file("t/escaped", b"pwned"),
            ],
        ),
        (
            "setuid",
            vec![Raw {
                mode: 0o4755,
                ..Raw::file("su", b"x")
            }],
        ),
    ];
    for (case, entries) in cases {
        let path = craft(
            tmp.path(),
            &format!("bb-{case}.tar.zst"),
            manifest,
            &entries,
        );
        let err = smol::block_on(packages::deploy(
            exec(),
            &target,
            &forged(&path, manifest),
            &o,
            &|_| {},
        ))
        .unwrap_err();
        assert!(matches!(err, Error::UnsafeOnHost { .. }), "{case}: {err}");
        let out = tb.docker(
            testbed::Engine::Local,
            [
                "exec",
                &name,
                "ls",
                "/tmp/escaped",
                "/escaped",
                "/opt/escaped",
            ],
        );
        assert!(out.stdout.is_empty(), "{case}: written outside");
    }
}

#[test]
fn names_with_spaces_and_unicode_survive_the_host_checks() {
    let root = Root::new("names");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    package_dir(
        &dir,
        "web",
        "1.0.0",
        "",
        &[("dir with space/é -> x.txt", "content"), ("日本/a b", "jp")],
    );
    std::os::unix::fs::symlink("dir with space/é -> x.txt", dir.join("link to é")).unwrap();
    let v1 = packages::build(&dir, &tmp.path().join("out")).unwrap();
    let h3 = root_on("h3");
    for plain in [false, true] {
        let o = DeployOptions {
            plain,
            replace: true,
            ..opts(&root)
        };
        smol::block_on(packages::deploy(exec(), &h3, &v1, &o, &|_| {})).unwrap();
        tb().sh_ok(
            "h3",
            &format!("sudo -n rm -f {}/web-1.0.0.sha256", root.path),
        );
    }
    let got = tb().sh_ok(
        "h3",
        &format!(
            "cat '{0}/web-current/link to é' '{0}/web-current/日本/a b'",
            root.path
        ),
    );
    assert_eq!(got, "contentjp");
}

#[test]
fn manifest_env_reaches_setup_only() {
    let root = Root::new("env");
    let tmp = tempfile::tempdir().unwrap();
    // A PATH that would break the installer itself if it leaked into it.
    let extra = "env: {GREETING: 'hi there', PATH: '/nonexistent'}\nsetup: /bin/echo \"$GREETING\" > greeting\n";
    let v1 = small_package(tmp.path(), "web", "1.0.0", extra);
    smol::block_on(packages::deploy(
        exec(),
        &root_on("h1"),
        &v1,
        &opts(&root),
        &|_| {},
    ))
    .unwrap();
    assert_eq!(
        tb().sh_ok("h1", &format!("cat {}/web-current/greeting", root.path)),
        "hi there"
    );
}

/// h4 is reachable only through h1: the archive streams over the jump.
#[test]
fn deploys_through_a_jump_host() {
    let tb = tb();
    let h4 = tb.host("h4");
    let via = ssh_host("h1");
    let ssh = command_executor::SshHost::new(h4.addr.to_string())
        .name("h4")
        .port(tb.ssh_port)
        .user(tb.ssh_user.clone())
        .identity_file(&tb.ssh_key)
        .known_hosts(&tb.known_hosts)
        .jump(via);
    let target = command_executor::Target::ssh(ssh).sudo("root");
    let path = format!("/opt/pkgtest-jump-{}", std::process::id());
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = common::tb().sh_on("h4", &format!("sudo -n rm -rf {}", self.0));
        }
    }
    let _cleanup = Cleanup(path.clone());
    let tmp = tempfile::tempdir().unwrap();
    let v1 = small_package(tmp.path(), "web", "1.0.0", "");
    let o = DeployOptions {
        root: path.clone(),
        ..DeployOptions::default()
    };
    let d = smol::block_on(packages::deploy(exec(), &target, &v1, &o, &|_| {})).unwrap();
    assert_eq!((d.host.as_str(), d.outcome), ("h4", Outcome::Installed));
    assert_eq!(
        tb.sh_ok("h4", &format!("readlink {path}/web-current")),
        "web-1.0.0"
    );
}
