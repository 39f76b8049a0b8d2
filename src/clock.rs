//! The device's clock, and what the device knows about time besides it: the build date of
//! the image it runs (the booted OSTree commit's timestamp, set when the image was built).
//! Expiry errors and `check` judge the clock against it (see `tuf::Clock`).
//!
//! With the cargo feature `simulation` (a test double, never in a device build), the
//! environment variable `USB_UPDATE_NOW` (`YYYY-MM-DDTHH:MM:SSZ`) sets the clock, so tests
//! can run a device at 2001 or 2040 against real bundles.

use std::time::{Duration, SystemTime};

use crate::config::Pacman;

/// The environment variable of the simulated clock (feature `simulation` only).
#[cfg(any(test, feature = "simulation", feature = "internals"))]
pub const SIMULATED_NOW: &str = "USB_UPDATE_NOW";

/// Now, as the device's clock (or the simulated one) says.
pub fn now() -> SystemTime {
    #[cfg(feature = "simulation")]
    if let Ok(s) = std::env::var(SIMULATED_NOW) {
        match humantime::parse_rfc3339(&s) {
            Ok(t) => return t,
            Err(e) => tracing::warn!("{SIMULATED_NOW}={s:?} ignored: {e}"),
        }
    }
    SystemTime::now()
}

/// [`now`] as `YYYY-MM-DDTHH:MM:SSZ`, the form every expiry is compared in.
pub fn now_utc() -> String {
    rfc3339(now())
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// When the running image was built: the timestamp of the booted commit (`None` when no
/// commit is booted or it cannot be read: the verdicts that need it are then skipped).
pub fn build_date(pacman: &Pacman, booted: Option<&str>) -> Option<String> {
    let secs = match crate::ostree::commit_timestamp(pacman, booted?) {
        Ok(s) => s?,
        Err(e) => {
            tracing::debug!("build date unknown: {e:#}");
            return None;
        }
    };
    // A commit at the epoch carries no date (ostree's default for reproducible builds is a
    // real one): not a build date to judge a clock by.
    (secs > 0).then(|| rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(secs)))
}
