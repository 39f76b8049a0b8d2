//! Noticing a new stick without systemd: udev's events (`agent watch`) and automount
//! directories another program mounts media in.

use std::collections::VecDeque;
use std::fs::{self};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::event::{EventKind, ModifyKind};
use notify::Watcher;
use udev::mio::{Events, Interest, Poll, Token};

use super::mount::is_mount_point;
use super::stick::find_bundle;
use crate::error::{Code, Error, OrCode, Result};
use crate::hostile_fs::{Kind, Tree};

use super::mkdir;

/// Most subdirectories of a watched directory looked at (`/run/media/<user>` holds one per
/// medium).
const WATCH_LIST_CAP: usize = 1_000;

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
            .or_internal(what)?;
        let poll = Poll::new().or_internal(what)?;
        let registry = poll.registry();
        registry
            .register(&mut socket, Token(0), Interest::READABLE)
            .or_internal(what)?;
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
                    return Err(Error::internal(format!("waiting for udev events: {e}")))
                }
                _ => {}
            }
        }
    }
}

impl Monitor {
    /// The devnodes whose filesystem went away (removed, or the medium taken out of a
    /// reader) since the last call.
    pub(crate) fn take_gone(&mut self) -> Vec<PathBuf> {
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
        let watcher = notify::recommended_watcher(tx).or_internal("cannot watch")?;
        let (roots, pending) = (dirs.to_vec(), Vec::new());
        let mut w = DirWatch {
            watcher,
            events,
            roots,
            pending,
        };
        for dir in dirs {
            mkdir(dir, 0o755, true).or_internal(format!("cannot create {}", dir.display()))?;
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
        self.watcher.watch(dir, mode).or_internal(what)
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
                    return Err(Error::internal(format!(
                        "the watch of {:?} stopped",
                        self.roots
                    )))
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
