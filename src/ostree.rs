//! The device's OSTree sysroot, through libostree.
//!
//! Which deployment counts as booted depends on `[pacman] booted`: the real booted one, the
//! default one (`staged`, aktualizr-lite's test setting for a sysroot that is not booted), or
//! the one named by the simulation files (`simulated`, see the README: a test double for the
//! reboot and the bootloader, active only when configured).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use ostree::gio;

use crate::config::{BootedMode, Pacman};

/// Directory of the simulated-boot files, relative to the sysroot.
pub const SIM_DIR: &str = ".usb-update-sim";

/// One deployment of the configured OS.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeploymentInfo {
    pub osname: String,
    pub csum: String,
    pub serial: i32,
}

fn open_sysroot(path: &Path) -> anyhow::Result<ostree::Sysroot> {
    let sysroot = ostree::Sysroot::new(Some(&gio::File::for_path(path)));
    sysroot
        .load(gio::Cancellable::NONE)
        .with_context(|| format!("loading the OSTree sysroot at {}", path.display()))?;
    Ok(sysroot)
}

/// Deployments of `os` in boot order (the first is the default), and the booted one.
fn deployments(pacman: &Pacman) -> anyhow::Result<(Vec<DeploymentInfo>, Option<DeploymentInfo>)> {
    let sysroot = open_sysroot(&pacman.sysroot)?;
    let info = |d: &ostree::Deployment| DeploymentInfo {
        osname: d.osname().to_string(),
        csum: d.csum().to_string(),
        serial: d.deployserial(),
    };
    let all: Vec<DeploymentInfo> = sysroot
        .deployments()
        .iter()
        .map(info)
        .filter(|d| d.osname == pacman.os)
        .collect();
    let booted = sysroot.booted_deployment().map(|d| info(&d));
    Ok((all, booted))
}

/// Path of a simulation file (`booted`, `boot_id`).
pub fn sim_file(sysroot: &Path, name: &str) -> PathBuf {
    sysroot.join(SIM_DIR).join(name)
}

fn read_sim(sysroot: &Path, name: &str) -> anyhow::Result<Option<String>> {
    let p = sim_file(sysroot, name);
    match std::fs::read_to_string(&p) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

/// The commit the device runs now, or `None` when no deployment counts as booted (a
/// sysroot that was not booted with `booted = "booted"`).
pub fn booted_commit(pacman: &Pacman) -> anyhow::Result<Option<String>> {
    let (all, booted) = deployments(pacman)?;
    Ok(match pacman.booted {
        BootedMode::Booted => booted.map(|d| d.csum),
        BootedMode::Staged => all.first().map(|d| d.csum.clone()),
        BootedMode::Simulated => match read_sim(&pacman.sysroot, "booted")? {
            Some(csum) => Some(csum),
            None => all.first().map(|d| d.csum.clone()),
        },
    })
}
