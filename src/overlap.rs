//! `install`'s two independent streams at once: the rootfs (objects from the stick into the
//! sysroot repo) on a thread of its own, the apps (blobs into the store, images into the
//! engine) on the caller's. On a 2-core device each mostly waits on I/O or uses its own core.
//!
//! Each stream keeps its own failure handling and clean-up. The first failure sets a
//! [`Cancel`] that the other stream checks at every object or chunk; it then stops and
//! cleans up as after a failure of its own. Neither leaves anything behind for a failure of
//! the other: the pull writes into a repo transaction that it commits only once the apps
//! succeeded ([`Side::go_ahead`]), and apps that finished before the pull failed are
//! undone by the caller's `undo`. The error reported is the first stream's.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::mpsc;

use crate::error::{Error, Result};
use crate::failpoint::{self, Stream};

/// Set once a stream failed; records which one failed first.
#[derive(Debug, Default)]
pub struct Cancel {
    set: AtomicBool,
    first: AtomicU8,
}

impl Cancel {
    pub const fn new() -> Cancel {
        Cancel {
            set: AtomicBool::new(false),
            first: AtomicU8::new(0),
        }
    }

    /// For a stream running alone.
    pub fn never() -> &'static Cancel {
        &NEVER
    }

    pub fn is_set(&self) -> bool {
        self.set.load(Ordering::Relaxed)
    }

    /// `Err` once the other stream failed: `what` stops here.
    pub fn check(&self, what: &str) -> Result<()> {
        if self.is_set() {
            return Err(cancelled(what));
        }
        Ok(())
    }

    fn fail(&self, stream: Stream) {
        let _ = self
            .first
            .compare_exchange(0, stream as u8, Ordering::SeqCst, Ordering::SeqCst);
        self.set.store(true, Ordering::SeqCst);
    }

    fn first(&self) -> u8 {
        self.first.load(Ordering::SeqCst)
    }
}

/// The error of a stream stopped because the other failed (logged, never reported).
pub fn cancelled(what: &str) -> Error {
    anyhow::anyhow!("{what}: stopped, the other half of the install failed").into()
}

/// What the rootfs stream sees of the other one.
pub struct Side<'a> {
    pub cancel: &'a Cancel,
    go: &'a (dyn Fn() -> bool + Sync),
}

static NEVER: Cancel = Cancel::new();

impl Side<'static> {
    /// A stream running alone: never cancelled, always goes ahead.
    pub fn alone() -> Side<'static> {
        Side {
            cancel: &NEVER,
            go: &|| true,
        }
    }
}

impl Side<'_> {
    /// Called once the stream's work is ready to be made permanent: waits until the other
    /// stream ended; `false` when it failed (then undo instead).
    pub fn go_ahead(&self) -> bool {
        (self.go)() && !self.cancel.is_set()
    }
}

/// Run `rootfs` on a thread of its own and `apps` on this one; `undo_apps` takes back what
/// `apps` did when `rootfs` fails after it. The first failure is the one returned.
pub fn run<A, R: Send>(
    apps: impl FnOnce(&Cancel) -> Result<A>,
    rootfs: impl FnOnce(&Side) -> Result<R> + Send,
    undo_apps: impl FnOnce(A),
) -> Result<(A, R)> {
    let cancel = &Cancel::new();
    let (tx, rx) = mpsc::channel::<bool>();
    let rx = std::sync::Mutex::new(rx);
    std::thread::scope(|s| {
        let pull = std::thread::Builder::new()
            .name("rootfs".into())
            .spawn_scoped(s, {
                let rx = &rx;
                move || {
                    let held = failpoint::stream(Stream::Rootfs);
                    let go = || {
                        // Waiting on the apps: a pause held here must not hold them.
                        failpoint::release();
                        rx.lock().ok().and_then(|r| r.recv().ok()).unwrap_or(false)
                    };
                    let r = rootfs(&Side { cancel, go: &go });
                    if r.is_err() {
                        cancel.fail(Stream::Rootfs);
                    }
                    drop(held);
                    r
                }
            });
        let pull = match pull {
            Ok(p) => p,
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context("starting the rootfs pull")
                    .into())
            }
        };
        let held = failpoint::stream(Stream::Apps);
        let a = apps(cancel);
        if a.is_err() {
            cancel.fail(Stream::Apps);
        }
        drop(held);
        let _ = tx.send(a.is_ok());
        let r = pull
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the rootfs pull panicked").into()));
        match (a, r) {
            (Ok(a), Ok(r)) => Ok((a, r)),
            (Ok(a), Err(e)) => {
                undo_apps(a);
                Err(e)
            }
            (Err(e), Ok(_)) => Err(e),
            (Err(ea), Err(er)) => {
                let (first, other) = if cancel.first() == Stream::Rootfs as u8 {
                    (er, ea)
                } else {
                    (ea, er)
                };
                tracing::warn!("{}", other.one_line());
                Err(first)
            }
        }
    })
}
