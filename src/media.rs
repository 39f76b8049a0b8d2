//! USB sticks: what udev knows about one, whether the agent takes it, a read-only mount of
//! it, where the bundle is on it, and the two ways to notice a new one without systemd.
//!
//! The stick is hostile: it is mounted `ro,nosuid,nodev,noexec` and only the report is ever
//! written to it; its filesystem UUID becomes a path component only after sanitising, and
//! nothing on it is followed through a symlink.

use std::collections::VecDeque;
use std::fs::{self, DirBuilder, File};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::errno::Errno;
use nix::mount::{umount2, MntFlags, MsFlags};
use nix::sys::stat::{major, minor, SFlag};
use notify::event::{EventKind, ModifyKind};
use notify::Watcher;
use udev::mio::{Events, Interest, Poll, Token};

use crate::error::{Code, Error, Result};
use crate::hostile_fs::{Kind, Problem, Refused, Tree};
use crate::policy::MediaPolicy;

fn internal(msg: String) -> Error {
    Error::Internal(anyhow::anyhow!(msg))
}

/// For `map_err`: exit 1 with what failed and why.
fn failed<E: std::fmt::Display>(what: impl std::fmt::Display) -> impl FnOnce(E) -> Error {
    move |e| internal(format!("{what}: {e}"))
}

fn mkdir(dir: &Path, mode: u32, recursive: bool) -> std::io::Result<()> {
    DirBuilder::new()
        .recursive(recursive)
        .mode(mode)
        .create(dir)
}

/// A block device with (perhaps) a filesystem, as udev described it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stick {
    pub devnode: PathBuf,
    /// `ID_FS_TYPE`; empty when udev found no filesystem.
    pub fs_type: String,
    /// `ID_FS_UUID`, else `ID_FS_UUID_ENC`, else the kernel name: never empty.
    pub uuid: String,
    pub label: String,
    /// `ID_BUS` (`usb`, `ata`, ...); loop and virtio devices have none.
    pub bus: Option<String>,
    /// The disk's sysfs `removable` flag (the parent disk's, for a partition).
    pub removable: bool,
}

impl Stick {
    /// What the udev database says about `devnode`.
    pub fn probe(devnode: &Path) -> Result<Stick> {
        let name = devnode.display();
        let st = nix::sys::stat::stat(devnode).map_err(failed(&name))?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFBLK {
            return Err(internal(format!("{name}: not a block device")));
        }
        let dev = udev::Device::from_devnum(udev::DeviceType::Block, st.st_rdev)
            .map_err(failed(format!("{name}: unknown to udev")))?;
        // Without a database entry every property would read as absent, and the stick be
        // refused for the wrong reason ("no filesystem").
        if !dev.is_initialized() {
            return Err(internal(format!(
                "{name}: unknown to udev (not in its database: is systemd-udevd running?)"
            )));
        }
        let prop = |key: &str| {
            dev.property_value(key)
                .map(|v| v.to_string_lossy().into_owned())
                .filter(|v| !v.is_empty())
        };
        // `removable` is an attribute of the disk; a partition has none of its own.
        let disk = match dev.devtype().and_then(|t| t.to_str()) {
            Some("partition") => dev.parent(),
            _ => Some(dev.clone()),
        };
        let removable = disk
            .as_ref()
            .and_then(|d| d.attribute_value("removable"))
            .is_some_and(|v| v.as_bytes().trim_ascii() == b"1");
        Ok(Stick {
            devnode: devnode.to_path_buf(),
            fs_type: prop("ID_FS_TYPE").unwrap_or_default(),
            uuid: prop("ID_FS_UUID")
                .or_else(|| prop("ID_FS_UUID_ENC"))
                .unwrap_or_else(|| dev.sysname().to_string_lossy().into_owned()),
            label: prop("ID_FS_LABEL").unwrap_or_default(),
            bus: prop("ID_BUS"),
            removable,
        })
    }

    /// `Err(reason)`: the agent leaves this device alone.
    pub fn accept(&self, policy: &MediaPolicy) -> std::result::Result<(), String> {
        let name = self.devnode.display();
        if self.fs_type.is_empty() {
            return Err(format!("{name}: no filesystem"));
        }
        if !policy.filesystems.contains(&self.fs_type) {
            return Err(format!(
                "{name}: filesystem {} is not one of [media] filesystems ({})",
                self.fs_type,
                policy.filesystems.join(", ")
            ));
        }
        if policy.require_usb && self.bus.as_deref() != Some("usb") {
            return Err(format!(
                "{name}: not a usb device (ID_BUS={}) and [media] require_usb is set",
                self.bus.as_deref().unwrap_or("none")
            ));
        }
        if !policy.labels.is_empty() && !policy.labels.contains(&self.label) {
            return Err(format!(
                "{name}: label {:?} is not one of [media] labels ({})",
                self.label,
                policy.labels.join(", ")
            ));
        }
        // Not `removable`: many USB flash drives and SSD enclosures report removable=0.
        Ok(())
    }
}

/// Flags and data of the read-only mount of a stick.
pub fn mount_options(fs_type: &str) -> (MsFlags, String) {
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
fn mount_name(uuid: &str) -> String {
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
fn is_mount_point(path: &Path) -> bool {
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
        mkdir(run_dir, 0o755, true).map_err(failed(format!("cannot create {at}")))?;
        let run_dir = run_dir.canonicalize().map_err(failed(&at))?;
        let path = run_dir.join(mount_name(&stick.uuid));
        let shown = path.display();
        match mkdir(&path, 0o700, false) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(internal(format!("cannot create {shown}: {e}")))
            }
            _ if !fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) => {
                return Err(internal(format!("{shown}: not a directory")))
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
                return Err(internal(format!("cannot unmount {at}: {e}: detached")));
            }
        }
        fs::remove_dir(&self.path).map_err(failed(format!("cannot remove {at}")))
    }
}

/// Detach the mount at `path` lazily and remove the directory: for a stick that stopped
/// answering, with reads still blocked on it (the kernel lets go when they end).
pub fn detach(path: &Path) {
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
            .map_err(failed(format!("cannot unmount the stale mount at {at}")))?;
    }
    Err(internal(format!("{at}: still mounted after 8 unmounts")))
}

/// Most entries read from the root of a stick (a bundle stick holds a few; FAT16 roots
/// hold at most 512): the listing streams, and stops here rather than cost memory and time.
pub const ROOT_LIST_CAP: usize = 10_000;
/// Most subdirectories of a watched directory looked at (`/run/media/<user>` holds one per
/// medium).
const WATCH_LIST_CAP: usize = 1_000;

/// Is `rel` (beneath the stick's root) a real directory holding a real `tuf/` directory?
/// Neither may be a symlink; nothing is opened for reading.
fn is_bundle(tree: &Tree, rel: &str) -> Result<bool> {
    let dir = |rel: &str| -> Result<bool> {
        match tree.kind(rel) {
            Ok(k) => Ok(matches!(k, Some((Kind::Dir, _)))),
            Err(r) if r.is_io() => Err(Error::copy(format!("{}: {r}", tree.path().display()))),
            // A symlink or a file on the way: not a bundle.
            Err(_) => Ok(false),
        }
    };
    let tuf = if rel == "." {
        "tuf".to_string()
    } else {
        format!("{rel}/tuf")
    };
    Ok(dir(rel)? && dir(&tuf)?)
}

/// The bundle on a mounted stick: a directory holding `tuf/`, at `root` or one level down;
/// `pick` (`[media] bundle`, `"."` for the root) chooses among several. Hidden entries
/// (with macOS `._*` files) and symlinks are never considered. The root's listing streams
/// and is refused past [`ROOT_LIST_CAP`] entries (15), whatever they are.
pub fn find_bundle(root: &Path, pick: Option<&str>) -> Result<PathBuf> {
    let at = root.display();
    // The refusal names the root itself.
    let tree = Tree::open(root).map_err(|r| Error::copy(r.to_string()))?;
    if let Some(pick) = pick {
        let rel = match pick {
            "." => ".",
            _ if !pick.is_empty() && !pick.contains('/') && !pick.starts_with('.') => pick,
            _ => {
                return Err(Error::not_found(format!(
                    "{at}: [media] bundle = {pick:?} is not \".\" or a visible directory name"
                )))
            }
        };
        if is_bundle(&tree, rel)? {
            return Ok(if rel == "." {
                root.to_path_buf()
            } else {
                root.join(rel)
            });
        }
        return Err(Error::not_found(format!(
            "{at}: no bundle {pick:?} on the stick ([media] bundle): no tuf/ in it"
        )));
    }
    let mut found = Vec::new();
    if is_bundle(&tree, ".")? {
        found.push((".".to_string(), root.to_path_buf()));
    }
    let mut names = Vec::new();
    let listed = tree.each_entry(".", ROOT_LIST_CAP, |name, kind| {
        // The type from the listing when the filesystem gives it; is_bundle looks otherwise.
        if !name.starts_with('.') && kind.is_none_or(|k| k == Kind::Dir) {
            names.push(name.to_string());
        }
    });
    match listed {
        Ok(_) => {}
        Err(r) if r.is_io() => return Err(Error::copy(format!("{at}: {r}"))),
        Err(Refused {
            problem: Problem::TooMany { .. },
            ..
        }) => {
            return Err(Error::invalid_bundle(format!(
                "{at}: more than {ROOT_LIST_CAP} entries at the root of the stick: refused \
                 (a bundle stick holds a few)"
            )))
        }
        Err(r) => return Err(Error::invalid_bundle(format!("{at}: {r}: refused"))),
    }
    names.sort();
    for name in names {
        if is_bundle(&tree, &name)? {
            let path = root.join(&name);
            found.push((name, path));
        }
    }
    match found.len() {
        0 => Err(Error::not_found(format!(
            "{at}: no bundle on the stick (a directory with tuf/ at the root or one level down)"
        ))),
        1 => Ok(found.remove(0).1),
        _ => Err(Error::policy(format!(
            "{at}: several bundles on the stick ({}): set [media] bundle to the one to take",
            found
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// udev's own events for block devices (for `agent watch`, where systemd does not start
/// the agent): the devices that the udev rule hands to systemd, without the USB filter
/// (`Stick::accept` applies the policy).
pub struct Monitor {
    socket: udev::MonitorSocket,
    poll: Poll,
    events: Events,
    ready: VecDeque<PathBuf>,
    /// Devnode -> the filesystem uuid last announced on it.
    known: std::collections::HashMap<PathBuf, String>,
    /// Devnodes whose filesystem went away since [`Monitor::take_gone`] was last called.
    gone: Vec<PathBuf>,
}

impl Monitor {
    pub fn new() -> Result<Monitor> {
        let what = "cannot listen to udev events";
        let mut socket = udev::MonitorBuilder::new()
            .and_then(|b| b.match_subsystem("block"))
            .and_then(|b| b.listen())
            .map_err(failed(what))?;
        let poll = Poll::new().map_err(failed(what))?;
        let registry = poll.registry();
        registry
            .register(&mut socket, Token(0), Interest::READABLE)
            .map_err(failed(what))?;
        if !Path::new("/run/udev/control").exists() {
            tracing::warn!("systemd-udevd does not seem to run: no stick will be seen");
        }
        let (events, ready) = (Events::with_capacity(4), VecDeque::new());
        Ok(Monitor {
            socket,
            poll,
            events,
            ready,
            known: std::collections::HashMap::new(),
            gone: Vec::new(),
        })
    }

    /// The devnode of the next filesystem added (a partition, or a stick formatted without
    /// a partition table); `None` when `timeout` passes first. A `change` counts only when it
    /// brings a filesystem the device did not have (a card reader or a loop device getting
    /// its medium): `change` also comes on every close after a write, with the same one.
    pub fn next(&mut self, timeout: Duration) -> Result<Option<PathBuf>> {
        let deadline = Instant::now() + timeout;
        loop {
            // mio is edge-triggered: empty the socket before waiting again.
            for event in self.socket.iter() {
                let Some(node) = event.devnode().map(Path::to_path_buf) else {
                    continue;
                };
                let usage = event.property_value("ID_FS_USAGE");
                let uuid = event
                    .property_value("ID_FS_UUID")
                    .map(|u| u.to_string_lossy().into_owned());
                match (
                    event.event_type(),
                    usage == Some("filesystem".as_ref()),
                    uuid,
                ) {
                    (udev::EventType::Remove, ..) | (_, false, _) => {
                        self.known.remove(&node);
                        self.gone.push(node);
                    }
                    (udev::EventType::Add, true, uuid) => {
                        self.known.insert(node.clone(), uuid.unwrap_or_default());
                        self.ready.push_back(node);
                    }
                    (udev::EventType::Change, true, uuid) => {
                        let uuid = uuid.unwrap_or_default();
                        if self.known.get(&node) != Some(&uuid) {
                            self.known.insert(node.clone(), uuid);
                            self.ready.push_back(node);
                        }
                    }
                    _ => {}
                }
            }
            if let Some(node) = self.ready.pop_front() {
                return Ok(Some(node));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            match self.poll.poll(&mut self.events, Some(left)) {
                Err(e) if e.kind() != std::io::ErrorKind::Interrupted => {
                    return Err(internal(format!("waiting for udev events: {e}")))
                }
                _ => {}
            }
        }
    }
}

impl Monitor {
    /// The devnodes whose filesystem went away (removed, or the medium taken out of a
    /// reader) since the last call.
    pub fn take_gone(&mut self) -> Vec<PathBuf> {
        std::mem::take(&mut self.gone)
    }
}

/// How long a new directory is looked at again: an automounter creates the directory first
/// and mounts on it after, and inotify reports no mount.
const PENDING_FOR: Duration = Duration::from_secs(30);
const RECHECK: Duration = Duration::from_millis(250);

/// Media mounted by someone else (udisks2 at `/run/media/<user>/<label>`, udev-extraconf at
/// `/run/media/<name>`) under the configured directories: a new directory at depth one or
/// two that becomes a mount point holding a bundle. Each configured directory and its
/// subdirectories are watched (inotify, non-recursive). A directory that was there before
/// `new` never counts (a stick plugged at boot must not start an update), and neither does
/// a fixed mount directory that exists all the time (usbmount's `/media/usb0`): a mount
/// makes no inotify event.
pub struct DirWatch {
    // Owns the inotify thread that feeds `events`.
    watcher: notify::RecommendedWatcher,
    events: mpsc::Receiver<notify::Result<notify::Event>>,
    roots: Vec<PathBuf>,
    pending: Vec<(PathBuf, Instant)>,
}

impl DirWatch {
    /// A missing directory is created (0755, as udisks2 does at its first mount): the watch
    /// has to exist before the first medium.
    pub fn new(dirs: &[PathBuf]) -> Result<DirWatch> {
        let (tx, events) = mpsc::channel();
        let watcher = notify::recommended_watcher(tx).map_err(failed("cannot watch"))?;
        let (roots, pending) = (dirs.to_vec(), Vec::new());
        let mut w = DirWatch {
            watcher,
            events,
            roots,
            pending,
        };
        for dir in dirs {
            mkdir(dir, 0o755, true).map_err(failed(format!("cannot create {}", dir.display())))?;
            w.watch(dir)?;
            // Not into media mounted already: only `/run/media/<user>`-like directories.
            for sub in subdirs(dir).iter().filter(|s| !is_mount_point(s)) {
                w.watch(sub)?;
            }
        }
        Ok(w)
    }

    fn watch(&mut self, dir: &Path) -> Result<()> {
        let mode = notify::RecursiveMode::NonRecursive;
        let what = format!("cannot watch {}", dir.display());
        self.watcher.watch(dir, mode).map_err(failed(what))
    }

    /// The root of the next new medium with a bundle (find_bundle on it, with the policy's
    /// pick, says which), or `None` when `timeout` passes first.
    pub fn next(&mut self, timeout: Duration) -> Result<Option<PathBuf>> {
        let deadline = Instant::now() + timeout;
        loop {
            // Everything queued first: callers poll with short timeouts between other work.
            let queued: Vec<_> = self.events.try_iter().collect();
            for event in queued {
                self.take(event);
            }
            let now = Instant::now();
            self.pending
                .retain(|(_, since)| now.duration_since(*since) < PENDING_FOR);
            if let Some(i) = self.pending.iter().position(|(dir, _)| is_medium(dir)) {
                return Ok(Some(self.pending.remove(i).0));
            }
            let left = deadline.saturating_duration_since(now);
            if left.is_zero() {
                return Ok(None);
            }
            // Wake up to look again only while a directory is pending.
            let wait = match self.pending.is_empty() {
                true => left,
                false => left.min(RECHECK),
            };
            match self.events.recv_timeout(wait) {
                Ok(event) => self.take(event),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(internal(format!("the watch of {:?} stopped", self.roots)))
                }
            }
        }
    }

    fn take(&mut self, event: notify::Result<notify::Event>) {
        match event {
            Ok(event) => self.handle(event),
            Err(e) => tracing::warn!("watching {:?}: {e}", self.roots),
        }
    }

    fn handle(&mut self, event: notify::Event) {
        use EventKind::{Create, Modify, Remove};
        if !matches!(
            event.kind,
            Create(_) | Remove(_) | Modify(ModifyKind::Name(_))
        ) {
            return;
        }
        for path in event.paths {
            // A rename names both ends: the filesystem says which one is there now.
            if !fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                self.pending.retain(|(p, _)| *p != path);
                continue;
            }
            let parent = path.parent();
            let depth2 = parent.and_then(Path::parent);
            if parent.is_some_and(|p| self.roots.iter().any(|r| r == p)) {
                // `/run/media/<user>` appears with the first medium, which may be in it
                // before the watch is. Not fatal: the directory may be gone already.
                if let Err(e) = self.watch(&path) {
                    tracing::warn!("{}", e.one_line());
                }
                for sub in subdirs(&path) {
                    self.add_pending(sub);
                }
                self.add_pending(path);
            } else if depth2.is_some_and(|p| self.roots.iter().any(|r| r == p)) {
                self.add_pending(path);
            }
        }
    }

    fn add_pending(&mut self, dir: PathBuf) {
        if !self.pending.iter().any(|(p, _)| *p == dir) {
            self.pending.push((dir, Instant::now()));
        }
    }
}

/// A mounted medium (`/run/media/<user>` is not one, the stick under it is) with a bundle.
/// Several bundles count too: the agent says why it refuses them, or takes its pick.
fn is_medium(dir: &Path) -> bool {
    is_mount_point(dir)
        && match find_bundle(dir, None) {
            Ok(_) => true,
            Err(e) => e.code() == Code::PolicyRefused,
        }
}

/// Real (non-symlink) subdirectories of `dir`, at most the first [`WATCH_LIST_CAP`] the
/// listing meets; an unreadable one has none.
fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(tree) = Tree::open(dir) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    let listed = tree.each_entry(".", WATCH_LIST_CAP, |name, kind| {
        if kind.is_none_or(|k| k == Kind::Dir) {
            names.push(name.to_string());
        }
    });
    if let Err(r) = listed {
        tracing::warn!(
            "{}: {r}: watching the first {} only",
            dir.display(),
            names.len()
        );
    }
    names
        .into_iter()
        .filter(|n| matches!(tree.kind(n), Ok(Some((Kind::Dir, _)))))
        .map(|n| dir.join(n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stick(fs_type: &str, bus: Option<&str>, removable: bool) -> Stick {
        Stick {
            devnode: "/dev/sdb1".into(),
            fs_type: fs_type.into(),
            uuid: "1234-ABCD".into(),
            label: "UPDATE".into(),
            bus: bus.map(String::from),
            removable,
        }
    }

    #[test]
    fn mount_options_are_read_only_and_fat_gets_owner_and_masks() {
        let ro = MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC
            | MsFlags::MS_NOATIME;
        let vfat = "uid=0,gid=0,fmask=0133,dmask=0022,utf8,shortname=mixed";
        let exfat = "uid=0,gid=0,fmask=0133,dmask=0022,iocharset=utf8";
        assert_eq!(mount_options("vfat"), (ro, vfat.to_string()));
        assert_eq!(mount_options("exfat"), (ro, exfat.to_string()));
        assert_eq!(mount_options("ext4"), (ro, String::new()));
        assert_eq!(mount_options("ntfs3"), (ro, String::new()));
    }

    #[test]
    fn mount_names_are_one_harmless_component() {
        assert_eq!(mount_name("1234-ABCD"), "1234-ABCD");
        assert_eq!(mount_name("0b0e_x"), "0b0e_x");
        assert_eq!(mount_name("../../etc"), "______etc");
        assert_eq!(mount_name("a b/c\\x2f"), "a_b_c_x2f");
        assert_eq!(mount_name(".."), "__");
        assert_eq!(mount_name(""), "stick");
        assert_eq!(mount_name(&"f".repeat(300)), "f".repeat(64));
        assert_eq!(mount_name("é"), "_");
    }

    #[test]
    fn accept_follows_the_labels() {
        let policy = MediaPolicy {
            labels: vec!["USBUPDATE".into(), "UPDATE".into()],
            ..MediaPolicy::default()
        };
        assert_eq!(stick("vfat", Some("usb"), true).accept(&policy), Ok(()));
        let mut other = stick("vfat", Some("usb"), true);
        other.label = "PHOTOS".into();
        assert_eq!(
            other.accept(&policy),
            Err(
                "/dev/sdb1: label \"PHOTOS\" is not one of [media] labels (USBUPDATE, UPDATE)"
                    .into()
            )
        );
    }

    #[test]
    fn accept_follows_the_policy() {
        let policy = MediaPolicy::default();
        assert_eq!(stick("vfat", Some("usb"), true).accept(&policy), Ok(()));
        assert_eq!(stick("exfat", Some("usb"), true).accept(&policy), Ok(()));
        assert_eq!(
            stick("", Some("usb"), true).accept(&policy),
            Err("/dev/sdb1: no filesystem".into())
        );
        assert_eq!(
            stick("ntfs", Some("usb"), true).accept(&policy),
            Err(
                "/dev/sdb1: filesystem ntfs is not one of [media] filesystems (vfat, exfat, ext4)"
                    .into()
            )
        );
        assert_eq!(
            stick("vfat", Some("ata"), true).accept(&policy),
            Err("/dev/sdb1: not a usb device (ID_BUS=ata) and [media] require_usb is set".into())
        );
        assert_eq!(
            stick("vfat", None, true).accept(&policy),
            Err("/dev/sdb1: not a usb device (ID_BUS=none) and [media] require_usb is set".into())
        );
        assert_eq!(stick("vfat", Some("usb"), false).accept(&policy), Ok(()));
        let rig = MediaPolicy {
            require_usb: false,
            ..policy
        };
        assert_eq!(stick("ext4", None, false).accept(&rig), Ok(()));
        assert_eq!(
            stick("", None, false).accept(&rig),
            Err("/dev/sdb1: no filesystem".into())
        );
    }

    #[test]
    fn a_root_listing_stops_at_its_cap_and_ignores_what_is_not_a_directory() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("b/tuf")).unwrap();
        let mode = nix::sys::stat::Mode::from_bits_truncate(0o644);
        nix::unistd::mkfifo(&t.path().join("fifo"), mode).unwrap();
        std::os::unix::fs::symlink("b", t.path().join("link")).unwrap();
        for i in 0..ROOT_LIST_CAP - 3 {
            fs::write(t.path().join(format!("f{i}")), b"").unwrap();
        }
        assert_eq!(find_bundle(t.path(), None).unwrap(), t.path().join("b"));
        fs::write(t.path().join("one-more"), b"").unwrap();
        let e = find_bundle(t.path(), None).unwrap_err();
        assert_eq!(e.code(), Code::InvalidBundle);
        assert!(
            e.one_line().ends_with("more than 10000 entries at the root of the stick: refused (a bundle stick holds a few)"),
            "{}",
            e.one_line()
        );
    }

    #[test]
    fn a_plain_directory_is_not_a_mount_point_and_the_root_is() {
        let t = tempfile::tempdir().unwrap();
        assert!(!is_mount_point(&t.path().join("missing")));
        fs::create_dir(t.path().join("d")).unwrap();
        assert!(!is_mount_point(&t.path().join("d")));
        assert!(is_mount_point(Path::new("/proc")));
    }
}
