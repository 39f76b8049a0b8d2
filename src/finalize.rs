//! `usb-update run`: finish the installation that `install` left pending, once the device
//! has rebooted: commit to the new rootfs, or record the bootloader's rollback.

use std::path::PathBuf;

use crate::bootloader::BootEnv;
use crate::config::Config;
use crate::error::{Code, Error, Result};
use crate::failpoint;
use crate::lock::UpdateLock;
use crate::ostree;
use crate::policy::Policy;
use crate::state::{FailedTarget, State};

/// The outcome of `run`: the exit code and the one-line message.
pub struct Outcome {
    pub code: Code,
    pub message: String,
}

pub fn run(config: &[PathBuf], policy: &[PathBuf]) -> Result<Outcome> {
    let cfg = Config::load(config)?;
    let policy = Policy::load(policy)?;
    let _lock = UpdateLock::try_acquire(&policy.agent.lock_file)?;
    let dir = cfg.state_dir();
    let mut state = State::load(&dir)?;
    let pacman = &cfg.pacman;
    let Some(pending) = state.pending.clone() else {
        drop_failed_default(pacman, &state)?;
        return Err(Error::new(
            Code::NothingPending,
            "no installation is pending",
        ));
    };
    if pending.needs_reboot && ostree::boot_id(pacman)? == pending.boot_id {
        return Err(Error::new(
            Code::RunBeforeReboot,
            format!(
                "{} is installed but the device has not rebooted yet: reboot, then run",
                pending.target.name
            ),
        ));
    }
    let bootenv = BootEnv::from_config(&cfg)?;
    let booted = ostree::booted(pacman)?.map(|d| d.csum);
    let name = pending.target.name.clone();
    if booted.as_deref() == Some(pending.target.sha256.as_str()) {
        state.previous = state.current.take().or(pending.previous.clone());
        state.current = Some(pending.target.clone());
        state.pending = None;
        bootenv.set_boot_ok()?;
        let code = if bootenv.boot_firmware_pending()? {
            Code::BootFirmware
        } else {
            Code::Ok
        };
        let message = match code {
            Code::BootFirmware => {
                format!("updated to {name}; a boot firmware update completes at the next reboot")
            }
            _ => format!("updated to {name}"),
        };
        state.record("run", &name, code.as_u8(), &message);
        state.save(&dir)?;
        failpoint::hit("run-recorded");
        ostree::cleanup(pacman)?;
        return Ok(Outcome { code, message });
    }
    // The bootloader booted something else: the new rootfs did not come up.
    let reason = format!(
        "the device booted {} instead of {name}: bootloader rollback",
        booted.as_deref().unwrap_or("an unknown deployment")
    );
    if !state.failed.iter().any(|f| f.name == name) {
        state.failed.push(FailedTarget {
            name: name.clone(),
            sha256: pending.target.sha256.clone(),
            reason: "bootloader rollback".into(),
        });
    }
    state.pending = None;
    if state.current.is_none() {
        state.current = pending.previous.clone();
    }
    // Apps are restored from the record of what ran at install time; without it (only on
    // a compose device) the rollback is only half known.
    let compose = cfg.pacman.kind == crate::config::PackageManager::OstreeComposeApps;
    let code = if pending.previous.is_none() && compose {
        Code::RollbackAppsUnknown
    } else {
        Code::RolledBack
    };
    state.record("run", &name, code.as_u8(), &reason);
    state.save(&dir)?;
    failpoint::hit("run-rollback-recorded");
    ostree::remove_deployment(pacman, &pending.target.sha256)?;
    bootenv.set_boot_ok()?;
    Ok(Outcome {
        code,
        message: reason,
    })
}

/// A crash between recording a rollback and removing the failed deployment leaves that
/// deployment as the default: the next boot would try it again. Finish the removal.
fn drop_failed_default(pacman: &crate::config::Pacman, state: &State) -> Result<()> {
    let booted = ostree::booted(pacman)?.map(|d| d.csum);
    if let Some(default) = ostree::deployments(pacman)?.into_iter().next() {
        let failed = state.failed.iter().any(|f| f.sha256 == default.csum);
        if failed && booted.as_deref() != Some(default.csum.as_str()) {
            tracing::warn!(
                "removing the failed deployment {} left by an interrupted run",
                default.csum
            );
            ostree::remove_deployment(pacman, &default.csum)?;
        }
    }
    Ok(())
}
