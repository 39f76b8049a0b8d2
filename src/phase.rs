//! Phase timings: one info event per finished phase of `install` and `run`, under the
//! target `usb_update::phase` (`phase="pull" ms=1234.5`), so that a benchmark reads our
//! own figures from the log (`USB_UPDATE_LOG=warn,usb_update::phase=info`) rather than
//! guessing them from outside. A phase may be reported in parts (`verify`: the bundle's
//! metadata, then the apps' manifests and archives); readers sum the parts.
//!
//! Names: `verify`, `blob-copy`, `image-load`, `pull`, `deploy` (install); `compose-up`,
//! `finalize` (run). A phase that fails reports nothing: its error says enough.

use std::time::Instant;

/// A phase under way.
#[must_use = "a phase reports only when done() is called"]
pub struct Timer {
    name: &'static str,
    started: Instant,
}

pub fn start(name: &'static str) -> Timer {
    crate::watchdog::beat();
    Timer {
        name,
        started: Instant::now(),
    }
}

impl Timer {
    pub fn done(self) {
        crate::watchdog::beat();
        let ms = (self.started.elapsed().as_secs_f64() * 10_000.0).round() / 10.0;
        tracing::info!(target: "usb_update::phase", phase = self.name, ms, "phase finished");
    }
}
