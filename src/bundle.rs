//! The offline bundle (`tuf/`, `ostree_repo/`, `apps/`) on a medium we do not trust.
//!
//! Every path is opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` relative to the
//! bundle root: no symlink (fioctl bundles never contain one), no `..` and no absolute path
//! can lead out of the bundle, whatever the stick holds. Names taken from metadata are
//! validated before they become paths, and metadata files are read with a size cap.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

use crate::error::{Code, Error, Result};

/// Largest `targets.json` we read (a factory with thousands of targets stays far below).
pub const TARGETS_CAP: u64 = 16 << 20;
/// Largest other metadata file (roots with several RSA-4096 keys are a few tens of KiB).
pub const META_CAP: u64 = 1 << 20;
/// Largest `uri` file of an app.
const URI_CAP: u64 = 4096;

/// An opened bundle directory.
#[derive(Debug)]
pub struct Bundle {
    path: PathBuf,
    root: OwnedFd,
}

/// An app version the bundle carries: `apps/apps/<name>/<digest>/`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AppDir {
    pub name: String,
    pub digest: String,
}

fn how(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .mode(Mode::empty())
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS)
}

/// Is `s` usable as one path component taken from metadata or from the stick?
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s != "."
        && s != ".."
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+' | b'@'))
}

/// Is `s` a lowercase sha256 hex digest?
pub fn valid_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Bundle {
    /// Open `src_dir` as a bundle; it must be a directory that holds `tuf/`.
    pub fn open(src_dir: &Path) -> Result<Bundle> {
        let file = File::open(src_dir).map_err(|e| {
            Error::not_found(format!("bundle {}: cannot open: {e}", src_dir.display()))
        })?;
        if !file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
            return Err(Error::not_found(format!(
                "bundle {}: not a directory",
                src_dir.display()
            )));
        }
        let b = Bundle {
            path: src_dir.to_path_buf(),
            root: file.into(),
        };
        // The open below says ENOTDIR for a symlink as for a file: name what is there.
        if std::fs::symlink_metadata(src_dir.join("tuf")).is_ok_and(|m| m.is_symlink()) {
            return Err(b.hostile("tuf", "is a symlink"));
        }
        match b.open_at("tuf", OFlag::O_DIRECTORY | OFlag::O_RDONLY)? {
            Some(_) => Ok(b),
            None => Err(Error::not_found(format!(
                "bundle {}: no tuf/ directory (is this an offline update bundle?)",
                src_dir.display()
            ))),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Open `rel` beneath the bundle root; `None` if it does not exist.
    fn open_at(&self, rel: &str, flags: OFlag) -> Result<Option<OwnedFd>> {
        let opened = match openat2(self.root.as_raw_fd(), rel, how(flags)) {
            // SAFETY: a successful openat2 returns a new descriptor that nothing else owns.
            Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }),
            // Kernels before 5.6 (and valgrind) lack openat2: walk the path ourselves.
            Err(Errno::ENOSYS) => self.open_walk(rel, flags),
            Err(e) => Err(e),
        };
        match opened {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::ENOENT) => Ok(None),
            Err(Errno::ELOOP) => Err(self.hostile(rel, "is or passes through a symlink")),
            Err(Errno::EXDEV) => Err(self.hostile(rel, "leads outside the bundle")),
            Err(Errno::ENOTDIR) => Err(self.hostile(rel, "has a file where a directory belongs")),
            // A pulled stick's ext4 answers lookups with ENOMEM as well as EIO: the errno
            // alone would send the operator looking for a memory problem.
            Err(e @ (Errno::EIO | Errno::ENOMEM | Errno::ENODEV | Errno::ENXIO)) => {
                Err(Error::new(
                    Code::Copy,
                    format!(
                        "bundle {}: {rel}: the medium cannot be read ({e}): was the stick removed?",
                        self.path.display()
                    ),
                ))
            }
            Err(e) => Err(Error::new(
                Code::Copy,
                format!("bundle {}: {rel}: {e}", self.path.display()),
            )),
        }
    }

    /// What `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` does, one component at a time:
    /// `..` and absolute paths cannot leave the root, and `O_NOFOLLOW` refuses a symlink at
    /// every step (ELOOP, or ENOTDIR for a symlink where a directory is needed).
    fn open_walk(&self, rel: &str, flags: OFlag) -> nix::Result<OwnedFd> {
        let parts: Vec<&str> = rel
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        if rel.starts_with('/') || parts.contains(&"..") {
            return Err(Errno::EXDEV);
        }
        let mut dir: Option<OwnedFd> = None;
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let f = if last {
                flags
            } else {
                OFlag::O_DIRECTORY | OFlag::O_RDONLY
            };
            let at = dir
                .as_ref()
                .map_or(self.root.as_raw_fd(), |d| d.as_raw_fd());
            let fd = nix::fcntl::openat(
                Some(at),
                *part,
                f | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            // SAFETY: a successful openat returns a new descriptor that nothing else owns.
            dir = Some(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        dir.ok_or(Errno::EXDEV)
    }

    fn hostile(&self, rel: &str, what: &str) -> Error {
        Error::invalid_bundle(format!(
            "bundle {}: {rel} {what}: refused",
            self.path.display()
        ))
    }

    /// Open a regular file beneath the bundle root for reading.
    pub fn open_file(&self, rel: &str) -> Result<Option<(File, u64)>> {
        let Some(fd) = self.open_at(rel, OFlag::O_RDONLY)? else {
            return Ok(None);
        };
        let f = File::from(fd);
        let meta = f
            .metadata()
            .map_err(|e| Error::new(Code::Copy, format!("bundle: {rel}: {e}")))?;
        if !meta.is_file() {
            return Err(self.hostile(rel, "is not a regular file"));
        }
        Ok(Some((f, meta.len())))
    }

    /// Read a whole small file, refusing more than `cap` bytes.
    pub fn read_capped(&self, rel: &str, cap: u64) -> Result<Option<Vec<u8>>> {
        let Some((f, len)) = self.open_file(rel)? else {
            return Ok(None);
        };
        let oversized =
            || Error::metadata_update(format!("{rel}: larger than the {cap}-byte limit"));
        if len > cap {
            return Err(oversized());
        }
        let mut buf = Vec::with_capacity(len as usize);
        f.take(cap + 1)
            .read_to_end(&mut buf)
            .map_err(|e| Error::new(Code::Copy, format!("bundle: {rel}: read failed: {e}")))?;
        if buf.len() as u64 > cap {
            return Err(oversized());
        }
        Ok(Some(buf))
    }

    /// Names in directory `rel` (without `.`/`..`), or `None` if it does not exist.
    pub fn list_dir(&self, rel: &str) -> Result<Option<Vec<String>>> {
        let Some(fd) = self.open_at(rel, OFlag::O_DIRECTORY | OFlag::O_RDONLY)? else {
            return Ok(None);
        };
        // Dir takes the descriptor over and closes it on drop.
        let mut dir = nix::dir::Dir::from_fd(fd.into_raw_fd())
            .map_err(|e| Error::new(Code::Copy, format!("bundle: {rel}: {e}")))?;
        let mut names = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(|e| Error::new(Code::Copy, format!("bundle: {rel}: {e}")))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != "." && name != ".." {
                names.push(name);
            }
        }
        names.sort();
        Ok(Some(names))
    }

    /// Does `ostree_repo` hold the commit object `sha` (what fioctl and the device check)?
    pub fn has_commit(&self, sha: &str) -> Result<bool> {
        if !valid_digest(sha) {
            return Ok(false);
        }
        let rel = format!("ostree_repo/objects/{}/{}.commit", &sha[..2], &sha[2..]);
        Ok(self.open_file(&rel)?.is_some())
    }

    /// Every app version in `apps/apps/*/*/uri`, by URI. Entries that are hidden, badly
    /// named or not `<64 hex>` are not app versions and are skipped; links are refused.
    pub fn app_uris(&self) -> Result<BTreeMap<String, AppDir>> {
        let mut found = BTreeMap::new();
        let Some(names) = self.list_dir("apps/apps")? else {
            return Ok(found);
        };
        for name in names.into_iter().filter(|n| valid_name(n)) {
            let versions = self
                .list_dir(&format!("apps/apps/{name}"))?
                .unwrap_or_default();
            for digest in versions.into_iter().filter(|d| valid_digest(d)) {
                let rel = format!("apps/apps/{name}/{digest}/uri");
                let Some(bytes) = self.read_capped(&rel, URI_CAP)? else {
                    continue;
                };
                let uri = String::from_utf8_lossy(&bytes).into_owned();
                found.insert(
                    uri,
                    AppDir {
                        name: name.clone(),
                        digest: digest.clone(),
                    },
                );
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["app-01", "a.b", "x_y", "A9"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "a b", "é", "._x"] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(valid_digest(&"a".repeat(64)));
        assert!(!valid_digest(&"A".repeat(64)));
        assert!(!valid_digest(&"a".repeat(63)));
    }

    #[test]
    fn symlinks_and_escapes_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("tuf")).unwrap();
        std::fs::write(root.join("outside"), b"secret").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", root.join("tuf/timestamp.json")).unwrap();
        std::os::unix::fs::symlink("../outside", root.join("tuf/snapshot.json")).unwrap();
        let b = Bundle::open(root).unwrap();
        for name in ["tuf/timestamp.json", "tuf/snapshot.json"] {
            let e = b.read_capped(name, META_CAP).unwrap_err();
            assert_eq!(e.code(), Code::InvalidBundle, "{name}");
            assert!(e.one_line().contains("symlink"), "{}", e.one_line());
        }
        let e = b.read_capped("../outside", 10).unwrap_err();
        assert_eq!(e.code(), Code::InvalidBundle);
        assert!(
            e.one_line().contains("outside the bundle"),
            "{}",
            e.one_line()
        );
        assert!(b.read_capped("tuf/targets.json", 10).unwrap().is_none());
    }

    #[test]
    fn the_fallback_walk_refuses_the_same() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("tuf/sub")).unwrap();
        std::fs::write(root.join("tuf/sub/ok"), b"x").unwrap();
        std::fs::write(root.join("outside"), b"secret").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("tuf/link-dir")).unwrap();
        std::os::unix::fs::symlink("../outside", root.join("tuf/link-file")).unwrap();
        let b = Bundle::open(root).unwrap();
        let rd = OFlag::O_RDONLY;
        assert!(b.open_walk("tuf/sub/ok", rd).is_ok());
        assert!(b.open_walk("./tuf//sub/ok", rd).is_ok());
        assert_eq!(b.open_walk("tuf/link-file", rd).unwrap_err(), Errno::ELOOP);
        assert_eq!(
            b.open_walk("tuf/link-dir/hostname", rd).unwrap_err(),
            Errno::ENOTDIR
        );
        assert_eq!(b.open_walk("tuf/../outside", rd).unwrap_err(), Errno::EXDEV);
        assert_eq!(b.open_walk("/etc/hostname", rd).unwrap_err(), Errno::EXDEV);
        assert_eq!(b.open_walk("tuf/missing", rd).unwrap_err(), Errno::ENOENT);
    }

    #[test]
    fn caps_and_non_regular_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("tuf/timestamp.json")).unwrap();
        std::fs::write(d.path().join("tuf/snapshot.json"), vec![b' '; 100]).unwrap();
        let b = Bundle::open(d.path()).unwrap();
        assert_eq!(
            b.read_capped("tuf/timestamp.json", META_CAP)
                .unwrap_err()
                .code(),
            Code::InvalidBundle
        );
        let e = b.read_capped("tuf/snapshot.json", 99).unwrap_err();
        assert_eq!(e.code(), Code::MetadataUpdate);
        assert!(e.one_line().contains("limit"));
    }

    #[test]
    fn missing_or_symlinked_tuf() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            Bundle::open(d.path()).unwrap_err().code(),
            Code::MetadataNotFound
        );
        std::fs::create_dir_all(d.path().join("real")).unwrap();
        std::os::unix::fs::symlink("real", d.path().join("tuf")).unwrap();
        let e = Bundle::open(d.path()).unwrap_err();
        assert_eq!(e.code(), Code::InvalidBundle);
        assert_eq!(
            e.one_line(),
            format!("bundle {}: tuf is a symlink: refused", d.path().display())
        );
    }
}
