//! Shared fixtures: package directories, hand-crafted archives, testbed targets.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use command_executor::{Executor, SshHost, Target};
use packages::{Manifest, Package};

/// Writes a package directory: a manifest for `name`/`version` with `extra` manifest lines, and files.
pub fn package_dir(dir: &Path, name: &str, version: &str, extra: &str, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    let manifest =
        format!("name: {name}\nversion: {version}\nstart: exec python3 server.py\n{extra}");
    std::fs::write(dir.join("manifest.yaml"), manifest).unwrap();
    for (path, content) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
}

/// Builds a small package `name`-`version` into `out` (a fresh directory under `tmp`).
pub fn small_package(tmp: &Path, name: &str, version: &str, extra: &str) -> Package {
    let dir = tmp.join(format!("src-{name}-{version}"));
    package_dir(
        &dir,
        name,
        version,
        extra,
        &[("server.py", "print('hi')\n"), ("www/index.html", version)],
    );
    packages::build(&dir, &tmp.join("out")).unwrap()
}

/// One raw tar entry for [`craft`]: name bytes as stored, type flag, mode, link name, content.
pub struct Raw<'a> {
    pub name: &'a [u8],
    pub kind: u8,
    pub mode: u32,
    pub link: &'a [u8],
    pub data: &'a [u8],
}

impl<'a> Raw<'a> {
    pub fn file(name: &'a str, data: &'a [u8]) -> Self {
        Raw {
            name: name.as_bytes(),
            kind: b'0',
            mode: 0o644,
            link: b"",
            data,
        }
    }
    pub fn kind(name: &'a str, kind: u8, mode: u32, link: &'a str) -> Self {
        Raw {
            name: name.as_bytes(),
            kind,
            mode,
            link: link.as_bytes(),
            data: b"",
        }
    }
}

/// A `.tar.zst` written header by header, bypassing every check the tar crate's builder makes, with a
/// valid manifest first. Returns the archive path; a `.sha256` is written beside it.
pub fn craft(dir: &Path, file_name: &str, manifest: &str, entries: &[Raw]) -> PathBuf {
    let mut tar = Vec::new();
    let mut push = |e: &Raw| {
        let mut h = tar::Header::new_ustar();
        {
            let old = h.as_old_mut();
            old.name[..e.name.len()].copy_from_slice(e.name);
            old.linkname[..e.link.len()].copy_from_slice(e.link);
        }
        h.set_mode(e.mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(946_684_800);
        h.set_size(e.data.len() as u64);
        h.as_old_mut().linkflag[0] = e.kind;
        h.set_cksum();
        tar.extend_from_slice(h.as_bytes());
        tar.extend_from_slice(e.data);
        let pad = (512 - e.data.len() % 512) % 512;
        tar.extend(std::iter::repeat_n(0u8, pad));
    };
    push(&Raw::file("manifest.yaml", manifest.as_bytes()));
    for e in entries {
        push(e);
    }
    tar.extend(std::iter::repeat_n(0u8, 1024));
    let path = dir.join(file_name);
    let zst = zstd::encode_all(&tar[..], 3).unwrap();
    std::fs::File::create(&path)
        .unwrap()
        .write_all(&zst)
        .unwrap();
    let sha = packages::sha256_file(&path).unwrap();
    std::fs::write(
        packages::checksum_path(&path),
        format!("{sha}  {file_name}\n"),
    )
    .unwrap();
    path
}

/// A [`Package`] for an archive that never went through [`Package::open`]: how a forged archive reaches
/// the host, to test the host's own checks.
pub fn forged(path: &Path, manifest: &str) -> Package {
    Package {
        path: path.to_owned(),
        sha256: packages::sha256_file(path).unwrap(),
        size: std::fs::metadata(path).unwrap().len(),
        manifest: Manifest::from_bytes(Path::new("manifest.yaml"), manifest.as_bytes()).unwrap(),
        entries: 0,
        unpacked_bytes: 0,
    }
}

pub fn tb() -> &'static testbed::Testbed {
    testbed::Testbed::get()
}

/// One executor per test binary: its ssh masters are shared by the tests (and, like every harness
/// client's, persist briefly after the last session in the per-user runtime directory).
pub fn exec() -> &'static Executor {
    static EXEC: OnceLock<Executor> = OnceLock::new();
    EXEC.get_or_init(Executor::default)
}

pub fn ssh_host(name: &str) -> SshHost {
    let tb = tb();
    let h = tb.host(name);
    SshHost::new(h.addr.to_string())
        .name(name)
        .port(tb.ssh_port)
        .user(tb.ssh_user.clone())
        .identity_file(&tb.ssh_key)
        .known_hosts(&tb.known_hosts)
}

/// The login user on `name`, as root through sudo (what installing under /opt needs).
pub fn root_on(name: &str) -> Target {
    Target::ssh(ssh_host(name)).sudo("root")
}

/// The login user on `name`, without sudo.
pub fn user_on(name: &str) -> Target {
    Target::ssh(ssh_host(name))
}

/// A fresh install root under the host's private /opt, removed (on every host) when dropped.
pub struct Root {
    pub path: String,
}

impl Root {
    pub fn new(test: &str) -> Root {
        let path = format!("/opt/pkgtest-{test}-{}", std::process::id());
        for h in ["h1", "h2", "h3"] {
            tb().sh_ok(h, &format!("sudo -n rm -rf {path}"));
        }
        Root { path }
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        for h in ["h1", "h2", "h3"] {
            let _ = tb().sh_on(h, &format!("sudo -n rm -rf {}", self.path));
        }
    }
}

/// `ls -A` of a directory on a host, sorted.
pub fn ls(host: &str, dir: &str) -> Vec<String> {
    let out = tb().sh_ok(host, &format!("sudo -n ls -A {dir}"));
    let mut v: Vec<String> = out.lines().map(str::to_owned).collect();
    v.sort();
    v
}
