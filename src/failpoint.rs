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
