//! Every medium takes the same way: a block device udev announced (the agent mounts it) or
//! a filesystem another program mounted under `[media] watch_dirs` (an automounter) go
//! through one flow, [`crate::agent::handle_medium`]: the media policy, the operator
//! signature, aktualizr-lite stopped and started again, the LEDs, the report, the reboot.
//! Only the mount differs: ours is read-only and unmounted after; theirs is left as it is.
//!
//! `agent watch` finds both, and takes each insertion once: an automounter mounts the stick
//! that udev just announced, and the second sighting of the same device and filesystem is
//! not a new stick (until udev says the filesystem went away).

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use crate::agent::media::{self, Mount, Stick};
use crate::agent::{handle_medium, Sources};
use crate::error::{Error, OrCode, Result};
use crate::policy::Policy;

/// A medium to take.
#[derive(Debug, Clone)]
pub(crate) enum Medium {
    /// A block device (a devnode), for the agent to mount.
    Device(PathBuf),
    /// The root of a filesystem another program mounted.
    Mounted(PathBuf),
}

impl std::fmt::Display for Medium {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Medium::Device(d) => write!(f, "{}", d.display()),
            Medium::Mounted(r) => write!(f, "{} (mounted by another program)", r.display()),
        }
    }
}

/// The block device under a mounted filesystem, as udev knows it.
pub(crate) fn stick_of_mount(root: &Path) -> Result<Stick> {
    let dev = std::fs::metadata(root)
        .with_context(|| format!("inspecting {}", root.display()))?
        .dev();
    let udev = udev::Device::from_devnum(udev::DeviceType::Block, dev).or_internal(format!(
        "{}: not on a block device udev knows",
        root.display()
    ))?;
    let devnode = udev
        .devnode()
        .map(Path::to_path_buf)
        .ok_or_else(|| Error::internal(format!("{}: its device has no node", root.display())))?;
    Stick::probe(&devnode)
}

/// A medium's filesystem as the agent holds it while it works.
#[derive(Debug)]
pub(crate) enum Held {
    Ours(Mount),
    Theirs(PathBuf),
}

impl Held {
    pub fn path(&self) -> &Path {
        match self {
            Held::Ours(m) => m.path(),
            Held::Theirs(p) => p,
        }
    }

    /// Run `f` where the report goes: our mount made writable for it; theirs as it is, when
    /// it is writable (remounting another program's mount is not ours to do).
    pub fn with_writable<T>(
        &self,
        f: impl FnOnce(&Path) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let root = match self {
            Held::Ours(m) => return m.with_writable(f),
            Held::Theirs(p) => p,
        };
        let st = nix::sys::statvfs::statvfs(root)
            .with_context(|| format!("inspecting {}", root.display()))?;
        if st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY) {
            anyhow::bail!(
                "{} is mounted read-only by another program: no report",
                root.display()
            );
        }
        let out = f(root)?;
        let dir = File::open(root).with_context(|| format!("opening {}", root.display()))?;
        nix::unistd::syncfs(dir.as_raw_fd())
            .with_context(|| format!("cannot sync {}", root.display()))?;
        Ok(out)
    }

    /// Ours: unmounted; theirs: left mounted.
    pub fn release(self) -> Result<()> {
        match self {
            Held::Ours(m) => m.unmount(),
            Held::Theirs(p) => {
                tracing::info!("{}: left mounted (not ours to unmount)", p.display());
                Ok(())
            }
        }
    }
}

/// Insertions taken: devnode -> filesystem UUID.
#[derive(Default)]
struct Taken(HashMap<PathBuf, String>);

impl Taken {
    /// `false` when this device with this filesystem was taken already.
    fn take(&mut self, stick: &Stick) -> bool {
        let prev = self.0.insert(stick.devnode.clone(), stick.uuid.clone());
        prev.as_deref() != Some(stick.uuid.as_str())
    }
}

/// `agent watch`: take every stick udev announces and every medium mounted under
/// `[media] watch_dirs`, each in a thread of its own (a second stick while one installs
/// gets its "busy"), each through [`handle_medium`]. Runs until killed.
pub fn watch(sources: &Sources) -> Result<()> {
    let policy = Policy::load(&sources.policy)?;
    let mut monitor = media::Monitor::new()?;
    let mut dirs = match policy.media.watch_dirs.is_empty() {
        true => None,
        false => Some(media::DirWatch::new(&policy.media.watch_dirs)?),
    };
    let mut taken = Taken::default();
    tracing::info!(
        "watching udev for sticks and {:?} for mounted media",
        policy.media.watch_dirs
    );
    loop {
        for gone in monitor.take_gone() {
            taken.0.remove(&gone);
        }
        let mut found = Vec::new();
        if let Some(devnode) = monitor.next(Duration::from_millis(500))? {
            found.push(Medium::Device(devnode));
        }
        if let Some(w) = dirs.as_mut() {
            if let Some(root) = w.next(Duration::from_millis(10))? {
                found.push(Medium::Mounted(root));
            }
        }
        for medium in found {
            let stick = match &medium {
                Medium::Device(d) => Stick::probe(d),
                Medium::Mounted(root) => stick_of_mount(root),
            };
            match stick {
                Ok(s) if !taken.take(&s) => {
                    tracing::info!(
                        "{medium}: {} was taken already at this insertion",
                        s.devnode.display()
                    );
                    continue;
                }
                Ok(_) => {}
                // handle_medium says why, on the LEDs and consoles as well.
                Err(e) => tracing::warn!("{medium}: {}", e.one_line()),
            }
            let sources = sources.clone();
            std::thread::spawn(move || {
                let code = match handle_medium(&sources, &medium) {
                    Ok(code) => code,
                    Err(e) => {
                        tracing::warn!("{medium}: {}", e.one_line());
                        e.code()
                    }
                };
                tracing::info!("{medium}: done, exit code {}", code.as_u8());
            });
        }
    }
}
