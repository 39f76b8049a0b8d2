//! Files of ours replaced whole: a reader, a crash or a power cut sees the old file or the
//! new one, never a torn or empty one. The one way the device writes its state, the
//! bootloader's file double, aktualizr-lite's side files, the apps' records, the status and
//! the report on the stick.
//!
//! A fresh temporary file in the same directory (two writers never share one; a failed
//! write removes it, so a full disk keeps nothing of it), then a rename over the path (a
//! symlink planted there is replaced, not followed). Durable: the file is fsynced before
//! the rename and the directory after it; without the directory's fsync a power cut can
//! bring the old name back.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;

/// Replace `path` by `bytes`, durably (see the module doc).
pub fn replace(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write(path, bytes, true)
}

/// Replace `path` by `bytes` atomically but without fsync: for `/run`, which a power cut
/// empties anyway.
pub(crate) fn replace_volatile(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write(path, bytes, false)
}

fn write(path: &Path, bytes: &[u8], durable: bool) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".usb-update-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|()| match durable {
            true => tmp.as_file().sync_all(),
            false => Ok(()),
        })
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("replacing {}", path.display()))?;
    if durable {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_creates_the_directory_and_leaves_no_temporary_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/state.json");
        replace(&p, b"old").unwrap();
        replace(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        replace_volatile(&p, b"newer").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"newer");
        let names: Vec<_> = std::fs::read_dir(d.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }

    #[test]
    fn a_planted_symlink_is_replaced_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("elsewhere");
        std::fs::write(&target, b"keep").unwrap();
        let p = d.path().join("status.json");
        std::os::unix::fs::symlink(&target, &p).unwrap();
        replace(&p, b"ours").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert!(!std::fs::symlink_metadata(&p).unwrap().is_symlink());
        assert_eq!(std::fs::read(&p).unwrap(), b"ours");
    }

    #[test]
    fn no_directory_is_an_error_naming_the_path() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("file"), b"").unwrap();
        let e = replace(&d.path().join("file/x"), b"y").unwrap_err();
        assert!(format!("{e:#}").contains("/file"), "{e:#}");
    }
}
