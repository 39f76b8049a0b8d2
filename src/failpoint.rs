//! Named crash points for the crash-safety tests: with `USB_UPDATE_CRASH_AT=<name>` in the
//! environment, the process aborts at that point, as a power cut or `kill -9` would stop
//! it (no destructors, no flush). Compiled into debug builds only: a release binary has
//! no such hook, whatever its environment.

/// Abort here if the crash-safety tests asked for it.
#[inline]
pub fn hit(name: &str) {
    #[cfg(debug_assertions)]
    if std::env::var_os("USB_UPDATE_CRASH_AT").is_some_and(|v| v == name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}

/// Wait here while a fault is injected, if a test asked for it: with
/// `USB_UPDATE_PAUSE_AT=<name>` and `USB_UPDATE_PAUSE_FILE=<path>`, the process creates the
/// file and waits (up to two minutes) until the test removes it. Debug builds only.
#[inline]
pub fn pause(name: &str) {
    // Once per process: parallel workers reaching the point later must not wait again.
    #[cfg(debug_assertions)]
    static PAUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    #[cfg(debug_assertions)]
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
    #[cfg(not(debug_assertions))]
    let _ = name;
}
