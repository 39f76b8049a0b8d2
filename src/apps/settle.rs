//! The blobs an image load copied, from verified partial files to blobs in the store: each
//! synced and renamed into place by a thread of its own, so that the load's tar goes on to
//! the next blob while the last one reaches the disk. Loads that run at once claim a blob
//! before they copy it: a layer two images share is copied once.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use super::copy::to_io;
use crate::error::{Code, Error, OrCode, Result};

/// A blob's partial file whose bytes are all written and verified, not yet synced.
pub(crate) struct Written {
    hex: String,
    size: u64,
    file: File,
    partial: PathBuf,
    dest: PathBuf,
    placed: bool,
}

impl Written {
    pub(super) fn new(hex: String, size: u64, file: File, partial: PathBuf, dest: PathBuf) -> Self {
        Written {
            hex,
            size,
            file,
            partial,
            dest,
            placed: false,
        }
    }

    /// Synced, then renamed under its name: a blob in the store survives a power cut whole.
    pub(super) fn settle(mut self) -> Result<()> {
        self.file
            .sync_all()
            .or_internal(format!("syncing {}", self.partial.display()))?;
        fs::rename(&self.partial, &self.dest)
            .or_internal(format!("renaming {}", self.partial.display()))?;
        self.placed = true;
        crate::failpoint::hit("install-blob-copied");
        Ok(())
    }
}

impl Drop for Written {
    fn drop(&mut self) {
        if !self.placed {
            let _ = fs::remove_file(&self.partial);
        }
    }
}

/// The blobs an image load copied, synced and put in place by a thread of their own: the
/// engine's stream goes on to the next blob while the last one reaches the disk (an
/// `fsync` of a layer takes seconds that the engine would otherwise wait for).
pub(super) struct Settler {
    tx: Mutex<Option<mpsc::Sender<Written>>>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Settling>,
}

#[derive(Default)]
struct Settling {
    state: Mutex<SettleState>,
    changed: Condvar,
}

#[derive(Default)]
struct SettleState {
    /// Store paths claimed by a load (being copied, or handed over and not yet in place).
    pending: BTreeSet<PathBuf>,
    /// In place, with their sizes.
    settled: Vec<(String, u64)>,
    /// The first failure; the blobs after it are not put in place.
    failed: Option<Error>,
}

impl Settler {
    pub(super) fn start() -> Result<Settler> {
        let (tx, rx) = mpsc::channel::<Written>();
        let shared = Arc::new(Settling::default());
        let stream = crate::failpoint::current();
        let thread = std::thread::Builder::new()
            .name("blob-sync".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || {
                    let _worker = crate::failpoint::join(stream);
                    for written in rx {
                        let failed = shared.lock().failed.is_some();
                        let (dest, hex, size) =
                            (written.dest.clone(), written.hex.clone(), written.size);
                        let outcome = if failed {
                            drop(written);
                            Ok(())
                        } else {
                            written.settle()
                        };
                        let mut state = shared.lock();
                        state.pending.remove(&dest);
                        match outcome {
                            Ok(()) if !failed => state.settled.push((hex, size)),
                            Ok(()) => {}
                            Err(e) => {
                                state.failed.get_or_insert(e);
                            }
                        }
                        shared.changed.notify_all();
                    }
                }
            })
            .or_internal("starting the thread that syncs the store's blobs")?;
        Ok(Settler {
            tx: Mutex::new(Some(tx)),
            thread: Some(thread),
            shared,
        })
    }

    /// `path` is this caller's to copy (`true`), or in the store already (`false`): a copy
    /// of it that another load began is waited for, never begun twice (both would write
    /// the one partial file).
    pub(super) fn claim(&self, path: &Path, in_store: impl Fn() -> bool) -> bool {
        let mut state = self.shared.lock();
        while state.pending.contains(path) {
            state = self.shared.wait(state);
        }
        if in_store() {
            return false;
        }
        state.pending.insert(path.to_path_buf())
    }

    /// A claimed copy that was not handed over (it failed): another may begin it.
    pub(super) fn release(&self, path: &Path) {
        self.shared.lock().pending.remove(path);
        self.shared.changed.notify_all();
    }

    /// A claimed copy, verified, to be put in place; its claim ends once it is settled.
    pub(super) fn hand_over(&self, written: Written) -> io::Result<()> {
        let sent = match self.tx.lock().ok().as_deref() {
            Some(Some(tx)) => tx.send(written).map_err(|e| e.0.dest.clone()),
            _ => Err(written.dest.clone()),
        };
        sent.map_err(|dest| {
            to_io(Error::new(
                Code::Internal,
                format!(
                    "{}: the thread that syncs the store's blobs is gone",
                    dest.display()
                ),
            ))
        })
    }

    /// Until every blob claimed is settled.
    pub(super) fn wait_all(&self) {
        let mut state = self.shared.lock();
        while !state.pending.is_empty() {
            state = self.shared.wait(state);
        }
    }

    /// Every blob settled: those in place, or the first failure.
    pub(super) fn finish(mut self) -> (Vec<(String, u64)>, Result<()>) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        let joined = self.thread.take().map(JoinHandle::join);
        let mut state = self.shared.lock();
        let settled = std::mem::take(&mut state.settled);
        let outcome = match (joined, state.failed.take()) {
            (Some(Err(_)), _) => Err(Error::new(
                Code::Internal,
                "the thread that syncs the store's blobs panicked",
            )),
            (_, Some(e)) => Err(e),
            _ => Ok(()),
        };
        (settled, outcome)
    }
}

impl Settling {
    fn lock(&self) -> MutexGuard<'_, SettleState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn wait<'s>(&self, state: MutexGuard<'s, SettleState>) -> MutexGuard<'s, SettleState> {
        self.changed
            .wait(state)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
