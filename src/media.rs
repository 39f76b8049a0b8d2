//! placeholder (issue 5): sticks: udev properties, which to take, read-only mounts, where the bundle is.
#![allow(dead_code, unused_variables, clippy::self_named_constructors)]
use crate::policy::MediaPolicy;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Stick {
    pub devnode: PathBuf,
    pub fs_type: String,
    pub uuid: String,
    pub label: String,
    pub bus: Option<String>,
    pub removable: bool,
}
impl Stick {
    pub fn probe(devnode: &Path) -> crate::Result<Stick> {
        todo!()
    }
    pub fn accept(&self, policy: &MediaPolicy) -> std::result::Result<(), String> {
        todo!()
    }
}
pub fn mount_options(fs_type: &str) -> (nix::mount::MsFlags, String) {
    todo!()
}
pub struct Mount;
impl Mount {
    pub fn mount(stick: &Stick, run_dir: &Path) -> crate::Result<Mount> {
        todo!()
    }
    pub fn path(&self) -> &Path {
        todo!()
    }
    pub fn with_writable<T>(
        &self,
        f: impl FnOnce(&Path) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        todo!()
    }
    pub fn unmount(self) -> crate::Result<()> {
        todo!()
    }
}
pub fn find_bundle(root: &Path, pick: Option<&str>) -> crate::Result<PathBuf> {
    todo!()
}
pub struct Monitor;
impl Monitor {
    pub fn new() -> crate::Result<Monitor> {
        todo!()
    }
    pub fn next(&mut self, timeout: Duration) -> crate::Result<Option<PathBuf>> {
        todo!()
    }
}
pub struct DirWatch;
impl DirWatch {
    pub fn new(dirs: &[PathBuf]) -> crate::Result<DirWatch> {
        todo!()
    }
    pub fn next(&mut self, timeout: Duration) -> crate::Result<Option<PathBuf>> {
        todo!()
    }
}
