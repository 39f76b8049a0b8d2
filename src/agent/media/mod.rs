//! USB sticks, in three parts: [`stick`] (what udev knows about one, whether the agent
//! takes it, where the bundle is on it), [`mount`] (its read-only mount, and the mounts of
//! sticks pulled while mounted) and [`watch`] (the two ways to notice a new one without
//! systemd: udev's events and automount directories).
//!
//! The stick is hostile: it is mounted `ro,nosuid,nodev,noexec` and only the report is ever
//! written to it; its filesystem UUID becomes a path component only after sanitising, and
//! nothing on it is followed through a symlink.

mod mount;
mod stick;
mod watch;

pub(crate) use mount::detach;
pub use mount::Mount;
#[cfg(any(test, feature = "internals"))]
pub use stick::ROOT_LIST_CAP;
pub use stick::{find_bundle, Stick};
pub use watch::{DirWatch, Monitor};

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

fn mkdir(dir: &Path, mode: u32, recursive: bool) -> std::io::Result<()> {
    DirBuilder::new()
        .recursive(recursive)
        .mode(mode)
        .create(dir)
}

#[cfg(test)]
mod tests;
