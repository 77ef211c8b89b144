//! Building `NAME-VERSION.tar.zst` reproducibly, and opening (verifying) one.
//!
//! Reproducible: entries sorted by path, directories first-come by sorting, every header with mtime
//! [`FIXED_MTIME`], uid/gid 0, no user or group names, modes normalized to 0755 (directories and files
//! with any execute bit) or 0644, symlinks 0777; no xattrs, no PAX records other than what long names
//! need; one zstd frame at [`ZSTD_LEVEL`]. The same tree gives the same bytes with the same harness build
//! (a different zstd library version may compress differently).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::manifest::{MANIFEST_FILE, Manifest};
use crate::safety::{self, Checker, Kind};

/// Modification time written into every entry: 2000-01-01T00:00:00Z. Not 0, which some tar versions
/// warn about as implausibly old.
pub const FIXED_MTIME: u64 = 946_684_800;
/// zstd level: close to the best ratio at a speed that keeps a 20 MB build well under a second.
pub const ZSTD_LEVEL: i32 = 9;
/// Refused when opening: archives that unpack to more than this (zip-bomb guard).
pub const MAX_UNPACKED_BYTES: u64 = 16 << 30;

/// A built or opened package archive whose checksum and entries have been verified. The fields are
/// public for inspection; a value put together by hand has not been verified here, and a host it is
/// deployed to checks the archive again before extracting anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// The `.tar.zst` file.
    pub path: PathBuf,
    /// Lowercase hex sha256 of the archive bytes.
    pub sha256: String,
    /// Archive size in bytes.
    pub size: u64,
    pub manifest: Manifest,
    /// Entries in the archive.
    pub entries: usize,
    /// Bytes of file content once unpacked.
    pub unpacked_bytes: u64,
}

impl Package {
    /// `NAME-VERSION`.
    pub fn id(&self) -> String {
        self.manifest.id()
    }

    /// Opens an archive: checks its sha256 against the `.sha256` file beside it when there is one, every
    /// entry against the safety rules, and parses its manifest. Blocking; call it off the executor
    /// (`blocking::unblock`) in async code.
    pub fn open(path: &Path) -> Result<Package> {
        let sha256 = sha256_file(path)?;
        let sum_path = checksum_path(path);
        match std::fs::read_to_string(&sum_path) {
            Ok(text) => {
                let want = text
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_ascii_lowercase();
                if want != sha256 {
                    return Err(Error::ChecksumMismatch {
                        path: path.to_owned(),
                        expected: want,
                        actual: sha256,
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&sum_path, "reading", e)),
        }
        let size = std::fs::metadata(path)
            .map_err(|e| Error::io(path, "reading", e))?
            .len();
        let file = File::open(path).map_err(|e| Error::io(path, "opening", e))?;
        let (manifest, entries, unpacked_bytes) = scan(path, BufReader::new(file))?;
        Ok(Package {
            path: path.to_owned(),
            sha256,
            size,
            manifest,
            entries,
            unpacked_bytes,
        })
    }
}

/// `X.tar.zst` → `X.tar.zst.sha256`.
pub fn checksum_path(archive: &Path) -> PathBuf {
    let mut s = archive.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}

/// sha256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(|e| Error::io(path, "opening", e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| Error::io(path, "reading", e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Reads every entry of a `.tar.zst` stream through the safety checks; returns the manifest, the entry
/// count and the unpacked size.
fn scan(path: &Path, reader: impl Read) -> Result<(Manifest, usize, u64)> {
    let decoder = zstd::stream::read::Decoder::new(reader)
        .map_err(|e| Error::io(path, "decompressing", e))?;
    let mut archive = tar::Archive::new(decoder);
    let mut checker = Checker::new();
    let mut manifest_bytes: Option<Vec<u8>> = None;
    let (mut count, mut unpacked) = (0usize, 0u64);
    let bad = |e: io::Error| Error::Corrupt {
        path: path.to_owned(),
        detail: e.to_string(),
    };
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let header = entry.header();
        let mode = header.mode().map_err(bad)?;
        let type_flag = header.entry_type().as_byte();
        let name = entry.path_bytes().into_owned();
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        let kind = checker
            .check(&name, type_flag, mode, link.as_deref())
            .map_err(|why| Error::Unsafe {
                archive: path.to_owned(),
                entry: String::from_utf8_lossy(&name).into_owned(),
                why,
            })?;
        count += 1;
        if kind == Kind::File {
            unpacked = unpacked.saturating_add(entry.size());
            if unpacked > MAX_UNPACKED_BYTES {
                return Err(Error::Corrupt {
                    path: path.to_owned(),
                    detail: format!("unpacks to more than {MAX_UNPACKED_BYTES} bytes"),
                });
            }
            if name == MANIFEST_FILE.as_bytes() {
                let mut buf = Vec::new();
                (&mut entry)
                    .take(crate::manifest::MAX_MANIFEST_BYTES as u64 + 1)
                    .read_to_end(&mut buf)
                    .map_err(bad)?;
                manifest_bytes = Some(buf);
            }
        }
    }
    let bytes = manifest_bytes.ok_or_else(|| Error::Corrupt {
        path: path.to_owned(),
        detail: format!("no {MANIFEST_FILE} at the archive's root"),
    })?;
    let manifest = Manifest::from_bytes(&path.join(MANIFEST_FILE), &bytes)?;
    Ok((manifest, count, unpacked))
}

/// Builds `OUT_DIR/NAME-VERSION.tar.zst` and its `.sha256` from the package directory `dir`, then opens
/// the result (so what was written passed the same checks an install applies). Blocking.
pub fn build(dir: &Path, out_dir: &Path) -> Result<Package> {
    let manifest = Manifest::load(&dir.join(MANIFEST_FILE))?;
    let tree = collect(dir, &manifest)?;
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, "creating", e))?;
    let out = out_dir.join(format!("{}.tar.zst", manifest.id()));
    let tmp = out_dir.join(format!(
        ".{}.tar.zst.tmp{}",
        manifest.id(),
        std::process::id()
    ));
    let result = write_archive(dir, &tree, &tmp).and_then(|sha| {
        std::fs::rename(&tmp, &out).map_err(|e| Error::io(&out, "renaming into place", e))?;
        let file_name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let sum_path = checksum_path(&out);
        let sum_tmp = out_dir.join(format!(
            ".{}.sha256.tmp{}",
            manifest.id(),
            std::process::id()
        ));
        std::fs::write(&sum_tmp, format!("{sha}  {file_name}\n"))
            .and_then(|_| std::fs::rename(&sum_tmp, &sum_path))
            .map_err(|e| Error::io(&sum_path, "writing", e))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    Package::open(&out)
}

/// Walks what the manifest includes: sorted relative path → kind. Refuses what the safety rules refuse.
fn collect(dir: &Path, manifest: &Manifest) -> Result<BTreeMap<String, Kind>> {
    let mut tree = BTreeMap::new();
    let own_archive = format!("{}-", manifest.name);
    match &manifest.files {
        None => walk(dir, "", &mut tree, &own_archive)?,
        Some(list) => {
            for item in list {
                let rel = item.trim_end_matches('/');
                let full = dir.join(rel);
                let meta = std::fs::symlink_metadata(&full)
                    .map_err(|e| Error::io(&full, "listed in files:", e))?;
                // Parent directories of a listed path.
                let mut parent = String::new();
                for c in rel
                    .split('/')
                    .collect::<Vec<_>>()
                    .split_last()
                    .map(|(_, p)| p)
                    .unwrap_or(&[])
                {
                    if !parent.is_empty() {
                        parent.push('/');
                    }
                    parent.push_str(c);
                    tree.insert(parent.clone(), Kind::Dir);
                }
                add(dir, rel, &meta, &mut tree)?;
                if meta.is_dir() {
                    walk(dir, rel, &mut tree, &own_archive)?;
                }
            }
        }
    }
    tree.insert(MANIFEST_FILE.to_owned(), Kind::File);
    Ok(tree)
}

fn walk(
    root: &Path,
    rel: &str,
    tree: &mut BTreeMap<String, Kind>,
    own_archive: &str,
) -> Result<()> {
    let dir = if rel.is_empty() {
        root.to_owned()
    } else {
        root.join(rel)
    };
    let read = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, "reading directory", e))?;
    for entry in read {
        let entry = entry.map_err(|e| Error::io(&dir, "reading directory", e))?;
        let name = entry.file_name();
        let name = name.to_str().ok_or_else(|| Error::Unsafe {
            archive: dir.clone(),
            entry: entry.file_name().to_string_lossy().into_owned(),
            why: safety::Unsafe::BadCharacters,
        })?;
        // A previous build's output in the package directory would make the next build differ.
        if rel.is_empty()
            && name.starts_with(own_archive)
            && (name.ends_with(".tar.zst") || name.ends_with(".tar.zst.sha256"))
        {
            continue;
        }
        let child = if rel.is_empty() {
            name.to_owned()
        } else {
            format!("{rel}/{name}")
        };
        let meta = entry
            .metadata()
            .map_err(|e| Error::io(&entry.path(), "reading", e))?;
        add(root, &child, &meta, tree)?;
        if meta.is_dir() {
            walk(root, &child, tree, own_archive)?;
        }
    }
    Ok(())
}

fn add(
    root: &Path,
    rel: &str,
    meta: &std::fs::Metadata,
    tree: &mut BTreeMap<String, Kind>,
) -> Result<()> {
    let refuse = |why| Error::Unsafe {
        archive: root.to_owned(),
        entry: rel.to_owned(),
        why,
    };
    safety::check_relative_path(rel).map_err(refuse)?;
    let ft = meta.file_type();
    let kind = if ft.is_symlink() {
        let target = std::fs::read_link(root.join(rel))
            .map_err(|e| Error::io(&root.join(rel), "reading link", e))?;
        let target = target
            .to_str()
            .ok_or_else(|| refuse(safety::Unsafe::BadCharacters))?
            .to_owned();
        safety::check_symlink(rel, &target).map_err(refuse)?;
        Kind::Symlink(target)
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        if meta.mode() & 0o6000 != 0 {
            return Err(refuse(safety::Unsafe::SetId {
                mode: meta.mode() & 0o7777,
            }));
        }
        Kind::File
    } else {
        use std::os::unix::fs::FileTypeExt;
        return Err(refuse(if ft.is_fifo() {
            safety::Unsafe::Fifo
        } else if ft.is_block_device() || ft.is_char_device() {
            safety::Unsafe::Device
        } else {
            safety::Unsafe::OtherType("socket".into())
        }));
    };
    tree.insert(rel.to_owned(), kind);
    Ok(())
}

/// Writes the archive to `out`; returns its sha256.
fn write_archive(root: &Path, tree: &BTreeMap<String, Kind>, out: &Path) -> Result<String> {
    let file = File::create(out).map_err(|e| Error::io(out, "creating", e))?;
    let hashing = HashingWriter {
        inner: io::BufWriter::with_capacity(256 * 1024, file),
        hasher: Sha256::new(),
    };
    let encoder = zstd::stream::write::Encoder::new(hashing, ZSTD_LEVEL)
        .map_err(|e| Error::io(out, "compressing", e))?;
    let mut builder = tar::Builder::new(encoder);
    builder.follow_symlinks(false);
    for (rel, kind) in tree {
        let full = root.join(rel);
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(FIXED_MTIME);
        let io_err = |e: io::Error| Error::io(&full, "archiving", e);
        match kind {
            Kind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder
                    .append_data(&mut header, format!("{rel}/"), io::empty())
                    .map_err(io_err)?;
            }
            Kind::Symlink(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder
                    .append_link(&mut header, rel, target)
                    .map_err(io_err)?;
            }
            Kind::File => {
                let f = File::open(&full).map_err(|e| Error::io(&full, "opening", e))?;
                let meta = f.metadata().map_err(|e| Error::io(&full, "reading", e))?;
                if !meta.is_file() {
                    return Err(Error::io(
                        &full,
                        "archiving",
                        io::Error::other("changed while building"),
                    ));
                }
                let exec = meta.permissions().mode() & 0o111 != 0;
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(if exec { 0o755 } else { 0o644 });
                header.set_size(meta.len());
                let reader = Exact {
                    inner: f,
                    left: meta.len(),
                };
                builder
                    .append_data(&mut header, rel, reader)
                    .map_err(io_err)?;
            }
        }
    }
    let encoder = builder
        .into_inner()
        .map_err(|e| Error::io(out, "writing", e))?;
    let mut hashing = encoder
        .finish()
        .map_err(|e| Error::io(out, "compressing", e))?;
    hashing
        .inner
        .flush()
        .map_err(|e| Error::io(out, "writing", e))?;
    let file = hashing
        .inner
        .into_inner()
        .map_err(|e| Error::io(out, "writing", e.into_error()))?;
    file.sync_all().map_err(|e| Error::io(out, "syncing", e))?;
    Ok(hex::encode(hashing.hasher.finalize()))
}

/// Yields exactly `left` bytes or fails: a file that shrinks or grows while it is archived must not
/// produce a corrupt tar.
struct Exact {
    inner: File,
    left: u64,
}

impl Read for Exact {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other("file grew while it was archived")),
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::other("file shrank while it was archived"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
