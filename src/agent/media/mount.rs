//! The read-only mount of a stick under the agent's run directory, and what is left of a
//! stick pulled while it was mounted.

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::errno::Errno;
use nix::mount::{umount2, MntFlags, MsFlags};
use nix::sys::stat::{major, minor};

use super::stick::Stick;
use crate::error::{Code, Error, OrCode, Result};

use super::mkdir;

pub(crate) fn mount_options(fs_type: &str) -> (MsFlags, String) {
    let flags = MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC
        | MsFlags::MS_NOATIME;
    // FAT has no owners or modes: without uid/fmask/dmask they come from the mounting
    // process, and files could be group/other-writable or executable. vfat's `utf8` gives
    // UTF-8 names; its `iocharset=utf8` breaks case-insensitive lookups (kernel vfat.rst).
    // exfat is the other way round: `utf8` is deprecated there, `iocharset=utf8` is it.
    let data = match fs_type {
        "vfat" => "uid=0,gid=0,fmask=0133,dmask=0022,utf8,shortname=mixed",
        "exfat" => "uid=0,gid=0,fmask=0133,dmask=0022,iocharset=utf8",
        _ => "",
    };
    (flags, data.to_string())
}

/// The mount directory's name: the UUID comes from the stick, so it is made one harmless
/// path component.
pub(super) fn mount_name(uuid: &str) -> String {
    let keep = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let name: String = uuid
        .chars()
        .take(64)
        .map(|c| if keep(c) { c } else { '_' })
        .collect();
    if name.is_empty() {
        "stick".into()
    } else {
        name
    }
}

/// `st_dev` of `path` itself (not followed): for a mount point, the mounted filesystem's.
fn dev_of(path: &Path) -> Option<u64> {
    fs::symlink_metadata(path).ok().map(|m| m.dev())
}

/// A mount point has another filesystem than its parent directory.
pub(super) fn is_mount_point(path: &Path) -> bool {
    match (dev_of(path), path.parent().and_then(dev_of)) {
        (Some(own), Some(parent)) => own != parent,
        _ => false,
    }
}

/// A stick mounted read-only under the agent's run directory; unmounted on drop.
#[derive(Debug)]
pub struct Mount {
    path: PathBuf,
    stick: Stick,
    mounted: bool,
}

impl Mount {
    /// Mount `stick` at `<run_dir>/<uuid>`; a mount left there by a crash is removed first.
    #[allow(clippy::self_named_constructors)] // the fixed interface: `Mount::mount(stick, ..)`
    pub fn mount(stick: &Stick, run_dir: &Path) -> Result<Mount> {
        let (dev, at) = (stick.devnode.display(), run_dir.display());
        // The run directory also holds status.json, which other programs read: 0755.
        mkdir(run_dir, 0o755, true).or_internal(format!("cannot create {at}"))?;
        let run_dir = run_dir.canonicalize().or_internal(&at)?;
        let path = run_dir.join(mount_name(&stick.uuid));
        let shown = path.display();
        match mkdir(&path, 0o700, false) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(Error::internal(format!("cannot create {shown}: {e}")))
            }
            _ if !fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) => {
                return Err(Error::internal(format!("{shown}: not a directory")))
            }
            _ => {}
        }
        let ours = nix::sys::stat::stat(&stick.devnode)
            .map_err(|e| Error::copy(format!("{dev}: {e}")))?
            .st_rdev;
        clear_stale(&path, ours)?;
        let (flags, data) = mount_options(&stick.fs_type);
        let data = Some(data.as_str()).filter(|d| !d.is_empty());
        let fs_type = Some(stick.fs_type.as_str());
        if let Err(e) = nix::mount::mount(Some(&stick.devnode), &path, fs_type, flags, data) {
            let _ = fs::remove_dir(&path);
            let hint = match e {
                Errno::ENODEV => format!(" (this kernel has no {} driver)", stick.fs_type),
                _ => String::new(),
            };
            return Err(Error::copy(format!(
                "cannot mount {dev} ({}) at {shown}: {e}{hint}",
                stick.fs_type
            )));
        }
        let stick = stick.clone();
        Ok(Mount {
            path,
            stick,
            mounted: true,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `f` with the stick writable (for the report), then sync it and make it read-only
    /// again, so that pulling it out right after cannot lose or corrupt anything.
    pub fn with_writable<T>(
        &self,
        f: impl FnOnce(&Path) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let (flags, data) = mount_options(&self.stick.fs_type);
        let data = Some(data.as_str()).filter(|d| !d.is_empty());
        // A remount sets every per-mount flag anew: nosuid/nodev/noexec are passed again.
        let remount = |flags: MsFlags| {
            let flags = flags | MsFlags::MS_REMOUNT;
            nix::mount::mount(None::<&str>, &self.path, None::<&str>, flags, data)
        };
        let (dev, at) = (self.stick.devnode.display(), self.path.display());
        remount(flags - MsFlags::MS_RDONLY)
            .with_context(|| format!("cannot remount {dev} at {at} read-write"))?;
        let out = f(&self.path);
        let synced = File::open(&self.path)
            .map_err(anyhow::Error::from)
            .and_then(|d| Ok(nix::unistd::syncfs(d.as_raw_fd())?))
            .with_context(|| format!("cannot sync {dev} at {at}"));
        let ro = remount(flags)
            .with_context(|| format!("cannot remount {dev} at {at} read-only: still writable"));
        let value = out?;
        synced?;
        ro?;
        Ok(value)
    }

    /// Unmount and remove the mount directory: after this the stick can be pulled out.
    pub fn unmount(mut self) -> Result<()> {
        let at = self.path.display();
        self.mounted = false;
        match umount2(&self.path, MntFlags::empty()) {
            // EINVAL: not a mount point any more, someone else unmounted it.
            Ok(()) | Err(Errno::EINVAL) => {}
            Err(e) => {
                // Out of sight at least; the kernel lets go when the last open file closes.
                let _ = umount2(&self.path, MntFlags::MNT_DETACH);
                let _ = fs::remove_dir(&self.path);
                return Err(Error::internal(format!(
                    "cannot unmount {at}: {e}: detached"
                )));
            }
        }
        fs::remove_dir(&self.path).or_internal(format!("cannot remove {at}"))
    }
}

/// Detach the mount at `path` lazily and remove the directory: for a stick that stopped
/// answering, with reads still blocked on it (the kernel lets go when they end).
pub(crate) fn detach(path: &Path) {
    if let Err(e) = umount2(path, MntFlags::MNT_DETACH) {
        tracing::warn!("detaching {}: {e}", path.display());
    }
    let _ = fs::remove_dir(path);
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.mounted {
            // Lazily: a drop while unwinding must not fail on a file still open.
            let _ = umount2(&self.path, MntFlags::MNT_DETACH);
            let _ = fs::remove_dir(&self.path);
        }
    }
}

/// Unmount what an earlier run left mounted at `path` (it crashed, or was killed when the
/// stick was pulled). A mount of another device that is still present is a second stick
/// with the same UUID (cloned sticks are common) in use by another instance: refused.
fn clear_stale(path: &Path, ours: u64) -> Result<()> {
    let at = path.display();
    // Bounded: each round removes the top of a stack of mounts.
    for _ in 0..8 {
        if !is_mount_point(path) {
            return Ok(());
        }
        // A pulled stick's mount may not even stat: then it is stale too.
        if let Some(dev) = dev_of(path).filter(|d| *d != ours) {
            let (maj, min) = (major(dev), minor(dev));
            if Path::new(&format!("/sys/dev/block/{maj}:{min}")).exists() {
                let what = "with the same filesystem UUID is mounted there";
                let msg = format!("{at}: another device ({maj}:{min}) {what}");
                return Err(Error::new(Code::Busy, msg));
            }
        }
        tracing::warn!("{at}: unmounting a stale mount");
        umount2(path, MntFlags::empty())
            .or_else(|_| umount2(path, MntFlags::MNT_DETACH))
            .or_internal(format!("cannot unmount the stale mount at {at}"))?;
    }
    Err(Error::internal(format!(
        "{at}: still mounted after 8 unmounts"
    )))
}
