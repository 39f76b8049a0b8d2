//! The offline bundle (`tuf/`, `ostree_repo/`, `apps/`) on a medium we do not trust.
//!
//! Everything is opened through [`crate::hostile_fs`], relative to the bundle root: no
//! symlink (fioctl bundles never contain one), no `..` and no absolute path can lead out of
//! the bundle, nothing but a regular file is ever read (a FIFO or a device node is refused
//! by its type, before any read), reads are capped and listings capped while they stream.
//! Names taken from metadata are validated before they become paths.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Code, Error, Result};
use crate::hostile_fs::{Kind, Problem, Refused, Tree};

/// Largest `targets.json` we read (a factory with thousands of targets stays far below).
pub(crate) const TARGETS_CAP: u64 = 16 << 20;
/// Largest other metadata file (roots with several RSA-4096 keys are a few tens of KiB).
pub(crate) const META_CAP: u64 = 1 << 20;
/// Largest `uri` file of an app.
const URI_CAP: u64 = 4096;
/// Most entries [`Bundle::list_dir`] reads from one directory: `tuf/` holds a few files,
/// `apps/apps` one directory per app, each of those one per version.
pub const LIST_CAP: usize = 10_000;

/// An opened bundle directory.
#[derive(Debug)]
pub struct Bundle {
    path: PathBuf,
    tree: Tree,
}

/// An app version the bundle carries: `apps/apps/<name>/<digest>/`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AppDir {
    pub name: String,
    pub digest: String,
}

/// Is `s` usable as one path component taken from metadata or from the stick?
pub(crate) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s != "."
        && s != ".."
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+' | b'@'))
}

/// Is `s` a lowercase sha256 hex digest?
pub(crate) fn valid_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Bundle {
    /// Open `src_dir` as a bundle; it must be a directory that holds `tuf/`.
    pub fn open(src_dir: &Path) -> Result<Bundle> {
        let tree = Tree::open(src_dir).map_err(|r| match r.problem {
            Problem::Kind { .. } => {
                Error::not_found(format!("bundle {}: not a directory", src_dir.display()))
            }
            _ => Error::not_found(format!("bundle {}: cannot open: {r}", src_dir.display())),
        })?;
        let b = Bundle {
            path: src_dir.to_path_buf(),
            tree,
        };
        match b.tree.expect("tuf", Kind::Dir).map_err(|r| b.refusal(r))? {
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

    /// The bundle's directory, for readers with rules of their own (the OSTree objects).
    pub(crate) fn tree(&self) -> &Tree {
        &self.tree
    }

    /// The error for a refused entry: a medium that fails is 50 (copying failed), anything
    /// the stick holds that it should not is 15 (invalid bundle).
    pub(crate) fn refusal(&self, r: Refused) -> Error {
        let at = self.path.display();
        match r.problem {
            Problem::Unreadable(_) | Problem::Io(_) => {
                Error::new(Code::Copy, format!("bundle {at}: {r}"))
            }
            _ => Error::invalid_bundle(format!("bundle {at}: {r}: refused")),
        }
    }

    /// The error for an entry that breaks one of the bundle's own rules (15): "bundle B:
    /// rel what: refused".
    pub(crate) fn invalid(&self, rel: &str, what: &str) -> Error {
        Error::invalid_bundle(format!(
            "bundle {}: {rel} {what}: refused",
            self.path.display()
        ))
    }

    /// Open a regular file beneath the bundle root for reading.
    pub fn open_file(&self, rel: &str) -> Result<Option<(File, u64)>> {
        self.tree.open_file(rel).map_err(|r| self.refusal(r))
    }

    /// Read a whole small file, refusing more than `cap` bytes.
    pub fn read_capped(&self, rel: &str, cap: u64) -> Result<Option<Vec<u8>>> {
        self.tree
            .read_capped(rel, cap)
            .map_err(|r| match r.problem {
                Problem::TooLarge { .. } => {
                    Error::metadata_update(format!("{rel}: larger than the {cap}-byte limit"))
                }
                _ => self.refusal(r),
            })
    }

    /// Names in directory `rel` (without `.`/`..`), sorted, or `None` if it does not exist;
    /// more than [`LIST_CAP`] entries is refused (15) before they cost memory.
    pub fn list_dir(&self, rel: &str) -> Result<Option<Vec<String>>> {
        self.list_dir_capped(rel, LIST_CAP)
    }

    /// [`Bundle::list_dir`] with another cap.
    pub fn list_dir_capped(&self, rel: &str, cap: usize) -> Result<Option<Vec<String>>> {
        self.tree.names(rel, cap).map_err(|r| self.refusal(r))
    }

    /// Does `ostree_repo` hold the commit object `sha` (what fioctl and the device check)?
    /// Only a regular file counts; anything else there is refused. Its content is checked
    /// by [`crate::ostree::scan_bundle_commit`].
    pub fn has_commit(&self, sha: &str) -> Result<bool> {
        if !valid_digest(sha) {
            return Ok(false);
        }
        let rel = format!("ostree_repo/objects/{}/{}.commit", &sha[..2], &sha[2..]);
        let found = self.tree.expect(&rel, Kind::File);
        Ok(found.map_err(|r| self.refusal(r))?.is_some())
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
    fn fifos_and_huge_listings_are_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let blobs = d.path().join("apps/blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        std::fs::create_dir_all(d.path().join("tuf")).unwrap();
        let mode = nix::sys::stat::Mode::from_bits_truncate(0o644);
        nix::unistd::mkfifo(&blobs.join("fifo"), mode).unwrap();
        nix::unistd::mkfifo(&d.path().join("tuf/timestamp.json"), mode).unwrap();
        for i in 0..20 {
            std::fs::write(d.path().join(format!("tuf/{i}.x")), b"").unwrap();
        }
        let b = Bundle::open(d.path()).unwrap();
        let e = b.open_file("apps/blobs/sha256/fifo").unwrap_err();
        assert_eq!(e.code(), Code::InvalidBundle);
        assert!(
            e.one_line()
                .ends_with("apps/blobs/sha256/fifo is a FIFO, not a regular file: refused"),
            "{}",
            e.one_line()
        );
        let e = b.read_capped("tuf/timestamp.json", META_CAP).unwrap_err();
        assert_eq!(e.code(), Code::InvalidBundle);
        let e = b.list_dir_capped("tuf", 20).unwrap_err();
        assert_eq!(e.code(), Code::InvalidBundle);
        assert!(e
            .one_line()
            .ends_with("tuf holds more than 20 entries: refused"));
        assert_eq!(b.list_dir_capped("tuf", 21).unwrap().unwrap().len(), 21);
    }

    #[test]
    fn a_symlinked_or_special_tuf_is_named_for_what_it_is() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("real")).unwrap();
        std::os::unix::fs::symlink("real", d.path().join("tuf")).unwrap();
        let e = Bundle::open(d.path()).unwrap_err();
        assert_eq!(e.code(), Code::InvalidBundle);
        assert!(
            e.one_line().ends_with(": tuf is a symlink: refused"),
            "{}",
            e.one_line()
        );
        let d = tempfile::tempdir().unwrap();
        let mode = nix::sys::stat::Mode::from_bits_truncate(0o644);
        nix::unistd::mkfifo(&d.path().join("tuf"), mode).unwrap();
        let e = Bundle::open(d.path()).unwrap_err();
        assert!(
            e.one_line()
                .ends_with(": tuf is a FIFO, not a directory: refused"),
            "{}",
            e.one_line()
        );
    }

    #[test]
    fn missing_tuf() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            Bundle::open(d.path()).unwrap_err().code(),
            Code::MetadataNotFound
        );
    }
}
