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
    // install (apps first: nothing runs differently until the deployment)
    "install-blob-copied",
    "install-apps-fetched",
    "install-images-loaded",
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
#[inline]
pub fn pause(name: &str) {
    // Once per process: parallel workers reaching the point later must not wait again.
    #[cfg(feature = "failpoints")]
    static PAUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    #[cfg(feature = "failpoints")]
    if std::env::var_os("USB_UPDATE_PAUSE_AT").is_some_and(|v| v == name)
        && !PAUSED.swap(true, std::sync::atomic::Ordering::SeqCst)
    {
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
