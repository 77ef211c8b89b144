//! What an archive entry may be. The same rules run when a package is built, when it is opened before an
//! upload, and (in sh, see `deploy`) on the host before and after extraction, so an archive crafted by hand
//! cannot write outside its root.
//!
//! Allowed: regular files, directories and symbolic links, with relative paths made of plain components,
//! no setuid or setgid bits. A symlink's target must be relative, may use `..` only as its leading
//! components, and must stay inside the root from where the link is; no entry may pass through a symlink.
//! With those rules a chain of links resolves inside the root too (a climb through `..` is exact because
//! the link's parent is a real directory, and descending can only leave through another link, which is
//! itself checked). Hard links, devices, fifos and anything else are refused.

use std::collections::BTreeSet;
use std::fmt;

/// Longest entry path accepted, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;

/// Why an entry is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsafe {
    AbsolutePath,
    ParentComponent,
    BadComponent,
    /// Control characters, backslashes or invalid UTF-8 in a path.
    BadCharacters,
    TooLong,
    LinkEscapes {
        target: String,
    },
    HardLink {
        target: String,
    },
    Device,
    Fifo,
    /// Socket, sparse file, or any other type than file, directory, symlink.
    OtherType(String),
    SetId {
        mode: u32,
    },
    /// The path goes through a symlink earlier in the archive.
    ThroughSymlink {
        link: String,
    },
    Duplicate,
}

impl fmt::Display for Unsafe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unsafe::AbsolutePath => f.write_str("absolute path"),
            Unsafe::ParentComponent => f.write_str("path contains `..`"),
            Unsafe::BadComponent => f.write_str("path has an empty or `.` component"),
            Unsafe::BadCharacters => {
                f.write_str("path has control characters, backslashes or invalid UTF-8")
            }
            Unsafe::TooLong => write!(f, "path longer than {MAX_PATH_BYTES} bytes"),
            Unsafe::LinkEscapes { target } => {
                write!(f, "symlink to {target:?} escapes the package root")
            }
            Unsafe::HardLink { target } => {
                write!(f, "hard link to {target:?} (packages hold no hard links)")
            }
            Unsafe::Device => f.write_str("device file"),
            Unsafe::Fifo => f.write_str("fifo"),
            Unsafe::OtherType(t) => write!(f, "entry type {t} is not a file, directory or symlink"),
            Unsafe::SetId { mode } => write!(f, "setuid/setgid bit set (mode {mode:o})"),
            Unsafe::ThroughSymlink { link } => write!(f, "path goes through the symlink {link:?}"),
            Unsafe::Duplicate => f.write_str("duplicate entry"),
        }
    }
}

/// The kinds of entries a package holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink(String),
}

/// Checks a relative path (an entry's, or one listed under `files:`). A trailing `/` is allowed.
pub fn check_relative_path(path: &str) -> Result<(), Unsafe> {
    if path.len() > MAX_PATH_BYTES {
        return Err(Unsafe::TooLong);
    }
    if path.bytes().any(|b| b < 0x20 || b == 0x7f || b == b'\\') {
        return Err(Unsafe::BadCharacters);
    }
    if path.starts_with('/') {
        return Err(Unsafe::AbsolutePath);
    }
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    for c in trimmed.split('/') {
        match c {
            ".." => return Err(Unsafe::ParentComponent),
            "" | "." => return Err(Unsafe::BadComponent),
            _ => {}
        }
    }
    Ok(())
}

/// Checks a symlink at `path` pointing at `target`.
pub fn check_symlink(path: &str, target: &str) -> Result<(), Unsafe> {
    let escapes = || Unsafe::LinkEscapes {
        target: target.to_owned(),
    };
    if target.is_empty() || target.starts_with('/') || target.bytes().any(|b| b < 0x20 || b == 0x7f)
    {
        return Err(escapes());
    }
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    // Depth of the directory holding the link.
    let mut depth = trimmed.split('/').count() as isize - 1;
    let mut climbing = true;
    for c in target.split('/') {
        match c {
            ".." if climbing => depth -= 1,
            ".." => return Err(escapes()),
            "" | "." => {}
            _ => {
                climbing = false;
                depth += 1;
            }
        }
        if depth < 0 {
            return Err(escapes());
        }
    }
    Ok(())
}

/// Checks whole archives entry by entry: each entry alone, then against the ones before it (duplicates,
/// paths through symlinks).
#[derive(Debug, Default)]
pub struct Checker {
    seen: BTreeSet<String>,
    symlinks: BTreeSet<String>,
}

impl Checker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks one entry: `path` as stored, tar type flag byte, mode bits, link name (for links).
    pub fn check(
        &mut self,
        path: &[u8],
        type_flag: u8,
        mode: u32,
        link: Option<&[u8]>,
    ) -> Result<Kind, Unsafe> {
        let path = std::str::from_utf8(path).map_err(|_| Unsafe::BadCharacters)?;
        check_relative_path(path)?;
        let kind = match type_flag {
            b'0' | b'\0' | b'7' => Kind::File,
            b'5' => Kind::Dir,
            b'2' => {
                let target = std::str::from_utf8(link.unwrap_or_default())
                    .map_err(|_| Unsafe::BadCharacters)?;
                check_symlink(path, target)?;
                Kind::Symlink(target.to_owned())
            }
            b'1' => {
                return Err(Unsafe::HardLink {
                    target: String::from_utf8_lossy(link.unwrap_or_default()).into(),
                });
            }
            b'3' | b'4' => return Err(Unsafe::Device),
            b'6' => return Err(Unsafe::Fifo),
            other => return Err(Unsafe::OtherType(format!("{:?}", other as char))),
        };
        if mode & 0o6000 != 0 {
            return Err(Unsafe::SetId { mode });
        }
        let key = path.strip_suffix('/').unwrap_or(path).to_owned();
        let mut prefix = String::new();
        for c in key.split('/') {
            if !prefix.is_empty() && self.symlinks.contains(&prefix) {
                return Err(Unsafe::ThroughSymlink { link: prefix });
            }
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(c);
        }
        if !self.seen.insert(key.clone()) {
            return Err(Unsafe::Duplicate);
        }
        if matches!(kind, Kind::Symlink(_)) {
            self.symlinks.insert(key);
        }
        Ok(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert!(check_relative_path("a/b.txt").is_ok());
        assert!(check_relative_path("dir/").is_ok());
        assert_eq!(check_relative_path("/etc/x"), Err(Unsafe::AbsolutePath));
        assert_eq!(
            check_relative_path("../../etc/x"),
            Err(Unsafe::ParentComponent)
        );
        assert_eq!(check_relative_path("a/../b"), Err(Unsafe::ParentComponent));
        assert_eq!(check_relative_path("a//b"), Err(Unsafe::BadComponent));
        assert_eq!(check_relative_path("./a"), Err(Unsafe::BadComponent));
        assert_eq!(check_relative_path("a\nb"), Err(Unsafe::BadCharacters));
    }

    #[test]
    fn symlinks() {
        assert!(check_symlink("a/link", "../b").is_ok());
        assert!(check_symlink("link", "b/c").is_ok());
        assert!(check_symlink("a/b/link", "../../c").is_ok());
        assert!(check_symlink("link", "../x").is_err());
        assert!(check_symlink("link", "/etc").is_err());
        assert!(check_symlink("a/link", "../../etc").is_err());
        // `..` after a name could climb out through another link.
        assert!(check_symlink("p", "d/e/q/../..").is_err());
        assert!(check_symlink("link", "").is_err());
    }

    #[test]
    fn checker() {
        let mut c = Checker::new();
        assert_eq!(c.check(b"d/", b'5', 0o755, None), Ok(Kind::Dir));
        assert_eq!(
            c.check(b"d/l", b'2', 0o777, Some(b"..")),
            Ok(Kind::Symlink("..".into()))
        );
        assert!(matches!(
            c.check(b"d/l/x", b'0', 0o644, None),
            Err(Unsafe::ThroughSymlink { .. })
        ));
        assert_eq!(c.check(b"d", b'5', 0o755, None), Err(Unsafe::Duplicate));
        assert_eq!(
            c.check(b"s", b'0', 0o4755, None),
            Err(Unsafe::SetId { mode: 0o4755 })
        );
        assert_eq!(
            c.check(b"g", b'0', 0o2755, None),
            Err(Unsafe::SetId { mode: 0o2755 })
        );
        assert_eq!(c.check(b"dev", b'3', 0o644, None), Err(Unsafe::Device));
        assert_eq!(c.check(b"f", b'6', 0o644, None), Err(Unsafe::Fifo));
        assert!(matches!(
            c.check(b"h", b'1', 0o644, Some(b"/etc/passwd")),
            Err(Unsafe::HardLink { .. })
        ));
    }
}
