//! One updater at a time: an exclusive `flock` on the lock file that aktualizr-lite uses
//! (`/var/lock/aklite.lock`), so that neither tool can start while the other works.
//!
//! The file is created if missing and never unlinked: unlinking a lock file lets a third
//! process lock a new inode while the second still holds the old one.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::Context as _;

use crate::error::{Code, Error, Result};

/// aktualizr-lite's lock.
pub(crate) const DEFAULT_PATH: &str = "/var/lock/aklite.lock";

/// Held until dropped (the kernel releases a flock when its file is closed, also on crash).
#[derive(Debug)]
pub(crate) struct UpdateLock {
    _file: File,
}

impl UpdateLock {
    /// Take the lock or fail at once with exit code 30, naming the holder when the kernel
    /// says who it is.
    pub(crate) fn try_acquire(path: &Path) -> Result<UpdateLock> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("opening the lock {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(UpdateLock { _file: file }),
            Err(TryLockError::WouldBlock) => {
                let who = holder(&file)
                    .map(|pid| format!(" (pid {pid}{})", process_name(pid)))
                    .unwrap_or_default();
                Err(Error::new(
                    Code::Busy,
                    format!(
                        "another updater holds {}{who}: try again when it is done",
                        path.display()
                    ),
                ))
            }
            Err(TryLockError::Error(e)) => Err(anyhow::Error::new(e)
                .context(format!("locking {}", path.display()))
                .into()),
        }
    }
}

/// The pid holding a flock on `file`'s inode, from `/proc/locks`.
fn holder(file: &File) -> Option<u32> {
    let meta = file.metadata().ok()?;
    let dev = meta.dev();
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let want = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|l| {
        // "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&want.as_str()))
            .then(|| f.get(4)?.parse().ok())
            .flatten()
    })
}

fn process_name(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| format!(", {}", c.trim()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_with_the_holders_pid() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("lock/aklite.lock");
        let first = UpdateLock::try_acquire(&path).unwrap();
        // A real second process, as aktualizr-lite would be.
        let mut child = std::process::Command::new("flock")
            .arg("--nonblock")
            .arg(&path)
            .arg("true")
            .spawn()
            .unwrap();
        assert!(!child.wait().unwrap().success());
        let e = UpdateLock::try_acquire(&path).unwrap_err();
        assert_eq!(e.code(), Code::Busy);
        let me = std::process::id();
        assert!(
            e.one_line().contains(&format!("(pid {me}")),
            "{}",
            e.one_line()
        );
        drop(first);
        assert!(UpdateLock::try_acquire(&path).is_ok());
        assert!(path.exists(), "the lock file is never unlinked");
    }

    #[test]
    fn held_by_another_process() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("aklite.lock");
        std::fs::write(&path, b"").unwrap();
        // --no-fork: the lock holder is the process we kill, not a child that outlives it.
        let mut child = std::process::Command::new("flock")
            .arg("--no-fork")
            .arg(&path)
            .args(["sleep", "5"])
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let e = loop {
            match UpdateLock::try_acquire(&path) {
                Err(e) => break e,
                Ok(l) if std::time::Instant::now() < deadline => {
                    drop(l);
                    std::thread::yield_now();
                }
                Ok(_) => panic!("flock(1) never took the lock"),
            }
        };
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(e.code(), Code::Busy);
        assert!(
            e.one_line().contains("another updater holds"),
            "{}",
            e.one_line()
        );
    }
}
