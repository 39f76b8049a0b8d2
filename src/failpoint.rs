//! Named crash points for the crash-safety tests: with `USB_UPDATE_CRASH_AT=<name>` in the
//! environment, the process sends itself SIGKILL at that point, as `kill -9` or a power cut
//! would stop it: no unwinding, no destructors, no atexit, no flush of our buffers.
//! Compiled in only with the cargo feature `failpoints` (off by default; the tests turn it
//! on): a device build has no such hook, whatever its environment.
//!
//! Every name passed to [`hit`] is in [`POINTS`]; `tests/privileged/faults_crash.rs` checks that the
//! call sites and the list agree and that a scenario kills the process at each one.

/// Every crash point, in the order a full update meets them.
#[cfg(any(test, feature = "internals"))]
pub const POINTS: &[&str] = &[
    // agent handle
    "agent-mounted",
    "agent-aklite-stopped",
    // install (the apps beside the pull: nothing runs differently until the deployment)
    "install-blob-copied",
    // (the images loaded copy their blobs into the store; the app versions recorded after)
    "install-images-loaded",
    "install-apps-fetched",
    "install-previous-apps-recorded",
    "install-pulled",
    "install-boot-armed",
    "install-deployed",
    "install-tuf-stored",
    // any state save: the pending marker written ahead of a pending state.json, and
    // state.json replaced (a cleared one before the marker goes)
    "state-marker-written",
    "state-written",
    "install-recorded",
    // aktualizr-lite's database written after our state was saved (install's pending row,
    // run's current row or bad mark): the one write between the two
    "aklite-mirrored",
    // agent handle, after install
    "agent-installed",
    "agent-left-in-recorded",
    "agent-report-written",
    "agent-before-reboot",
    "agent-before-docker-restart",
    "agent-docker-restarted",
    // run (finalize), on the new rootfs
    "run-boot-counted",
    "run-apps-up",
    "run-apps-healthy",
    "run-boot-ok-set",
    "run-recorded",
    "run-cleaned",
    "run-pruned",
    // run: apps failed on the new rootfs
    "run-rollback-apps-restored",
    "run-rollback-default-set",
    "run-rollback-pending-recorded",
    // run: after the rollback reboot
    "run-rollback-apps-back",
    "run-rollback-deployment-removed",
    "run-rollback-finished",
    // run: the bootloader rolled back
    "run-bootloader-apps-restored",
    "run-rollback-recorded",
    "run-failed-deployment-removed",
    // agent finalize
    "agent-finalize-ran",
];

/// Die here, by SIGKILL, if the crash-safety tests asked for it.
#[inline]
pub fn hit(name: &str) {
    #[cfg(feature = "failpoints")]
    if std::env::var_os("USB_UPDATE_CRASH_AT").is_some_and(|v| v == name) {
        debug_assert!(POINTS.contains(&name), "failpoint {name} is not in POINTS");
        // The one line the test matches; stderr is unbuffered.
        eprintln!("failpoint {name}: SIGKILL");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        // SIGKILL cannot be caught or blocked; this is never reached.
        std::process::abort();
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

/// Wait here while a fault is injected, if a test asked for it: with
/// `USB_UPDATE_PAUSE_AT=<name>` and `USB_UPDATE_PAUSE_FILE=<path>`, the process creates the
/// file and waits (up to two minutes) until the test removes it. With `failpoints` only.
/// Inside a [`Stream`], the other streams are held first (see [`unit`]).
#[inline]
pub fn pause(name: &str) {
    // Once per process: parallel workers reaching the point later must not wait again.
    #[cfg(feature = "failpoints")]
    static PAUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    #[cfg(feature = "failpoints")]
    if std::env::var_os("USB_UPDATE_PAUSE_AT").is_some_and(|v| v == name)
        && !PAUSED.swap(true, std::sync::atomic::Ordering::SeqCst)
    {
        hold::take();
        if let Some(file) = std::env::var_os("USB_UPDATE_PAUSE_FILE") {
            let file = std::path::PathBuf::from(file);
            let _ = std::fs::write(&file, name);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
            while file.exists() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

/// The streams of `install` that run at once (see [`crate::overlap`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Rootfs = 1,
    Apps = 2,
}

/// A thread working for a stream; the top-level one gives a held pause back when dropped.
#[must_use]
pub struct InStream {
    #[cfg(feature = "failpoints")]
    top: bool,
}

/// This thread now works for `stream` (its top-level thread).
pub fn stream(stream: Stream) -> InStream {
    #[cfg(feature = "failpoints")]
    {
        hold::set(Some(stream));
        InStream { top: true }
    }
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = stream;
        InStream {}
    }
}

/// A worker thread of the stream [`current`] gave on its parent thread.
pub fn join(stream: Option<Stream>) -> InStream {
    #[cfg(feature = "failpoints")]
    {
        hold::set(stream);
        InStream { top: false }
    }
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = stream;
        InStream {}
    }
}

/// The stream this thread works for (always `None` without `failpoints`).
pub fn current() -> Option<Stream> {
    #[cfg(feature = "failpoints")]
    return hold::mine();
    #[cfg(not(feature = "failpoints"))]
    None
}

/// The calling stream is done with its own work: a pause it holds no longer holds the other.
pub fn release() {
    #[cfg(feature = "failpoints")]
    hold::release();
}

impl Drop for InStream {
    fn drop(&mut self) {
        #[cfg(feature = "failpoints")]
        {
            if self.top {
                hold::release();
            }
            hold::set(None);
        }
    }
}

/// One unit of a stream's work (an object written, a chunk copied). With `failpoints`, while one
/// stream is held at a [`pause`], the other streams finish the unit they are in and wait
/// before the next one, until the held stream has ended its own work: a fault injected at
/// the held point then meets that stream alone, and which failure comes first does not
/// depend on timing. Without `failpoints`, nothing.
#[must_use]
pub struct Unit {
    #[cfg(feature = "failpoints")]
    entered: bool,
}

pub fn unit() -> Unit {
    Unit {
        #[cfg(feature = "failpoints")]
        entered: hold::enter(),
    }
}

impl Drop for Unit {
    fn drop(&mut self) {
        #[cfg(feature = "failpoints")]
        if self.entered {
            hold::leave();
        }
    }
}

#[cfg(feature = "failpoints")]
mod hold {
    use super::Stream;
    use std::cell::Cell;
    use std::sync::{Condvar, Mutex, MutexGuard};

    struct State {
        holder: Option<Stream>,
        busy: [usize; 3],
    }

    static STATE: Mutex<State> = Mutex::new(State {
        holder: None,
        busy: [0; 3],
    });
    static CHANGED: Condvar = Condvar::new();

    thread_local! {
        static MINE: Cell<Option<Stream>> = const { Cell::new(None) };
    }

    pub(super) fn set(s: Option<Stream>) {
        MINE.with(|m| m.set(s));
    }

    pub(super) fn mine() -> Option<Stream> {
        MINE.with(Cell::get)
    }

    fn lock() -> MutexGuard<'static, State> {
        STATE.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait(st: MutexGuard<'static, State>) -> MutexGuard<'static, State> {
        CHANGED.wait(st).unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn enter() -> bool {
        let Some(me) = mine() else { return false };
        let mut st = lock();
        while st.holder.is_some_and(|h| h != me) {
            st = wait(st);
        }
        st.busy[me as usize] += 1;
        true
    }

    pub(super) fn leave() {
        let Some(me) = mine() else { return };
        let mut st = lock();
        st.busy[me as usize] = st.busy[me as usize].saturating_sub(1);
        CHANGED.notify_all();
    }

    /// The calling stream holds the others: once they are between units, it may pause.
    pub(super) fn take() {
        let Some(me) = mine() else { return };
        let mut st = lock();
        while st.holder.is_some_and(|h| h != me) {
            st = wait(st);
        }
        st.holder = Some(me);
        while (0..st.busy.len()).any(|s| s != me as usize && st.busy[s] > 0) {
            st = wait(st);
        }
    }

    pub(super) fn release() {
        let Some(me) = mine() else { return };
        let mut st = lock();
        if st.holder == Some(me) {
            st.holder = None;
            CHANGED.notify_all();
        }
    }
}
