//! `usb-update run`: finish the installation that `install` left pending: after the reboot
//! (or at once for apps only), start the target's apps and commit to it, or roll back.
//!
//! Outcomes (docs/exit-codes.md): 0 updated (or, after a rollback reboot, rolled back);
//! 90 updated, boot firmware too; 99 the previous rootfs or apps are back; 100 apps failed on
//! the new rootfs, the previous deployment is default again: reboot, then run; 110 the
//! bootloader rolled back but the previous apps are unknown; 120 nothing could be restored.
//! An engine that cannot be reached (52) decides nothing: the work stays pending.

use std::path::PathBuf;

use crate::aklite::mirror::{self, Mirror, Then};
use crate::apps::{self, previous};
use crate::bootloader::BootEnv;
use crate::commands::install::Hooks;
use crate::config::{Config, PackageManager};
use crate::core::context::{Loaded, Records, Sources};
use crate::error::{Code, Error, Result};
use crate::failpoint;
use crate::lock::UpdateLock;
use crate::ostree;
use crate::phase;
use crate::policy::Policy;
use crate::state::{FailedTarget, InstalledTarget, Pending, Phase, State};

/// The outcome of `run`: the exit code and the one-line message.
pub struct Outcome {
    pub code: Code,
    pub message: String,
    /// Besides the result: aktualizr-lite's database not written (yet), and why.
    pub notes: Vec<String>,
}

struct Ctx {
    cfg: Config,
    policy: Policy,
    dir: PathBuf,
    compose: bool,
    hooks: Hooks,
    notes: std::cell::RefCell<Vec<String>>,
}

impl Ctx {
    /// Apply the state's mirror to aktualizr-lite's database (after the state is saved).
    fn mirror(&self, state: &State) {
        self.notes
            .borrow_mut()
            .extend(mirror::converge(&self.cfg, state).warning);
    }
}

pub fn run(sources: &Sources) -> Result<Outcome> {
    run_loaded(&sources.load()?)
}

/// [`run`] with the config and policy a flow already loaded (the agent's finalize).
pub(crate) fn run_loaded(loaded: &Loaded) -> Result<Outcome> {
    let Loaded {
        config: cfg,
        policy,
    } = loaded.clone();
    let _lock = UpdateLock::try_acquire(&policy.agent.lock_file)?;
    let dir = cfg.state_dir();
    let mut state = State::load(&dir)?;
    // Our last step, into aktualizr-lite's database, if a crash or a busy database cut
    // it short.
    let notes = mirror::converge(&cfg, &state).warning.into_iter().collect();
    let pacman = &cfg.pacman;
    let Some(pending) = state.pending.clone() else {
        drop_failed_default(pacman, &state)?;
        // A run killed after its commit: finish its cleanup; and a marker left by a save
        // killed before its state was written claims work that is not there.
        finish_cleanup(&cfg, &policy, &dir, &mut state)?;
        State::remove_marker(&dir)?;
        return Err(Error::new(
            Code::NothingPending,
            "no installation is pending",
        ));
    };
    let records = Records {
        state: state.clone(),
        aklite: crate::aklite::View::load(&cfg),
    };
    let hooks = Hooks::new(&cfg, &records);
    hooks.event("install-final-pre", Some(&pending.target.name), None);
    if pending.needs_reboot && ostree::boot_id(pacman)? == pending.boot_id {
        let what = match pending.phase {
            Phase::RollingBack => format!("the rollback to {}", pending.target.name),
            _ => pending.target.name.clone(),
        };
        return Err(Error::new(
            Code::RunBeforeReboot,
            format!("{what} is installed but the device has not rebooted yet: reboot, then run"),
        ));
    }
    let compose = pacman.kind == PackageManager::OstreeComposeApps;
    let ctx = Ctx {
        cfg,
        policy,
        dir,
        compose,
        hooks,
        notes: std::cell::RefCell::new(notes),
    };
    let booted = ostree::booted(&ctx.cfg.pacman)?.map(|d| d.csum);
    let on_target = booted.as_deref() == Some(pending.target.sha256.as_str());
    if pending.phase != Phase::RollingBack && pending.needs_reboot && on_target {
        if let Some(outcome) = count_boot(&ctx, &mut state, &pending)? {
            return Ok(outcome);
        }
    }
    let pending = state.pending.clone().unwrap_or(pending);
    let outcome = match (pending.phase, on_target) {
        (Phase::RollingBack, true) => finish_rollback(&ctx, &mut state, &pending)?,
        (Phase::RollingBack, false) => {
            let msg = format!(
                "the rollback to {} booted {} instead: nothing more can be restored",
                pending.target.name,
                booted.as_deref().unwrap_or("an unknown deployment")
            );
            conclude(
                &ctx,
                &mut state,
                &pending.target.name,
                Code::RollbackImpossible,
                msg,
            )?
        }
        (_, true) => commit(&ctx, &mut state, &pending)?,
        (_, false) => bootloader_rollback(&ctx, &mut state, &pending, booted.as_deref())?,
    };
    Ok(Outcome {
        notes: ctx.notes.into_inner(),
        ..outcome
    })
}

/// Clear the pending work, record the result, save.
fn conclude(
    ctx: &Ctx,
    state: &mut State,
    target: &str,
    code: Code,
    message: String,
) -> Result<Outcome> {
    state.pending = None;
    state.record("run", target, code.as_u8(), &message);
    state.save(&ctx.dir)?;
    Ok(Outcome {
        code,
        message,
        notes: Vec::new(),
    })
}

/// What aktualizr-lite's database says after `failed` failed and `previous` (if known to
/// it by its TUF `custom`) runs again, or is pending again when `reboot`.
fn failure_mirror(
    state: &State,
    failed: &InstalledTarget,
    previous: Option<&InstalledTarget>,
    reboot: Option<&str>,
) -> Mirror {
    let bad = Mirror::bad_of(state.aklite.as_ref(), failed);
    let then = match (previous.filter(|p| p.custom.is_some()), reboot) {
        (Some(p), Some(boot_id)) => Then::Pending {
            target: p.clone(),
            reboot: true,
            boot_id: boot_id.to_string(),
        },
        (Some(p), None) => Then::Current { target: p.clone() },
        (None, _) => Then::Nothing,
    };
    Mirror::new(then, Some(bad))
}

fn deny(state: &mut State, target: &InstalledTarget, reason: &str) {
    if !state.failed.iter().any(|f| f.name == target.name) {
        state.failed.push(FailedTarget {
            name: target.name.clone(),
            sha256: target.sha256.clone(),
            reason: reason.to_string(),
        });
    }
}

/// Booted on the target: start its apps; up means committed, down means roll back.
fn commit(ctx: &Ctx, state: &mut State, pending: &Pending) -> Result<Outcome> {
    let name = pending.target.name.clone();
    if ctx.compose {
        let up = phase::start("compose-up");
        let verdict = apps::start(&ctx.cfg, &ctx.policy.apps, &pending.target.apps)?;
        if let Err(reason) = verdict {
            let failure = format!("apps of {} failed ({reason})", pending.target.name);
            return apps_failed(ctx, state, pending, &failure);
        }
        up.done();
        failpoint::hit("run-apps-healthy");
    }
    let finalize = phase::start("finalize");
    let bootenv = BootEnv::from_config(&ctx.cfg)?;
    state.previous = state.current.take().or(pending.previous.clone());
    state.current = Some(pending.target.clone());
    state.cleanup = Some(pending.target.clone());
    state.aklite = Some(match &state.aklite {
        Some(m) => m.current_after(&pending.target),
        None => Mirror::new(
            Then::Current {
                target: pending.target.clone(),
            },
            None,
        ),
    });
    bootenv.set_boot_ok()?;
    failpoint::hit("run-boot-ok-set");
    let (code, message) = if bootenv.boot_firmware_pending()? {
        (
            Code::BootFirmware,
            format!("updated to {name}; a boot firmware update completes at the next reboot"),
        )
    } else {
        (Code::Ok, format!("updated to {name}"))
    };
    let out = conclude(ctx, state, &name, code, message)?;
    failpoint::hit("run-recorded");
    ctx.mirror(state);
    ctx.hooks.event("install-post", Some(&name), Some("OK"));
    finish_cleanup(&ctx.cfg, &ctx.policy, &ctx.dir, state)?;
    finalize.done();
    Ok(out)
}

/// After a commit: old deployments, then store versions, blobs and images the target does
/// not use; recorded as done only once done, so a run killed in between finishes it.
fn finish_cleanup(
    cfg: &Config,
    policy: &Policy,
    dir: &std::path::Path,
    state: &mut State,
) -> Result<()> {
    let Some(target) = state.cleanup.clone() else {
        return Ok(());
    };
    ostree::cleanup(&cfg.pacman)?;
    failpoint::hit("run-cleaned");
    if cfg.pacman.kind == PackageManager::OstreeComposeApps && policy.apps.prune {
        let record = previous::load(dir).ok();
        // The update is done; a failed prune only costs space.
        if let Err(e) = apps::prune(cfg, &target.apps, record.as_ref()) {
            tracing::warn!(
                "pruning after the update to {}: {}",
                target.name,
                e.one_line()
            );
        }
        failpoint::hit("run-pruned");
    }
    state.cleanup = None;
    state.save(dir)?;
    Ok(())
}

/// `[update] boot_attempts`: count this boot of the new rootfs before anything that can
/// hang or crash it; a boot that starts with the count at the limit is not tried again, it
/// rolls back as if the apps had failed. `Some`: the rollback's outcome.
fn count_boot(ctx: &Ctx, state: &mut State, pending: &Pending) -> Result<Option<Outcome>> {
    let boot_id = ostree::boot_id(&ctx.cfg.pacman)?;
    if pending.counted_boot.as_deref() == Some(boot_id.as_str()) {
        return Ok(None);
    }
    let limit = ctx.policy.update.boot_attempts;
    if pending.boot_attempts >= limit {
        let failure = format!(
            "{} did not finish booting {} time(s) ([update] boot_attempts = {limit})",
            pending.target.name, pending.boot_attempts
        );
        return apps_failed(ctx, state, pending, &failure).map(Some);
    }
    let mut counted = pending.clone();
    counted.boot_attempts += 1;
    counted.counted_boot = Some(boot_id);
    tracing::info!(
        "boot {} of {limit} of {}",
        counted.boot_attempts,
        counted.target.name
    );
    state.pending = Some(counted);
    state.save(&ctx.dir)?;
    failpoint::hit("run-boot-counted");
    Ok(None)
}

/// The target's apps did not come up on the device (or, `boot_attempts`, its boot never
/// finished): `failure` says which.
fn apps_failed(ctx: &Ctx, state: &mut State, pending: &Pending, failure: &str) -> Result<Outcome> {
    let target = &pending.target;
    deny(state, target, failure);
    ctx.hooks
        .event("install-post", Some(&target.name), Some("FAILED"));
    // Without apps (an OSTree-only device, here for `boot_attempts`) there is nothing
    // to restore but the deployment.
    let loaded = if ctx.compose {
        previous::load(&ctx.dir)
    } else {
        Ok(previous::Record::empty())
    };
    let stays = |state: &State| failure_mirror(state, target, None, None);
    let record = match loaded {
        Ok(r) => r,
        Err(why) => {
            // Nothing to go back to: the device stays on the target, as it is.
            state.current = Some(target.clone());
            let msg = format!("{failure}; the previous apps are unknown ({why}): nothing restored");
            let m = stays(state);
            return concluded(ctx, state, &target.name, Code::RollbackImpossible, msg, m);
        }
    };
    let previous = previous_target(pending);
    if !pending.needs_reboot {
        ctx.hooks.event("install-pre", Some(&previous.name), None);
    }
    let restored = if ctx.compose {
        apps::restore(&ctx.cfg, &ctx.policy.apps, &record)?
    } else {
        Ok(())
    };
    failpoint::hit("run-rollback-apps-restored");
    if !pending.needs_reboot {
        let (code, msg, m) = match restored {
            Ok(()) => (
                Code::RolledBack,
                format!(
                    "{failure}: the previous apps of {} are running again",
                    previous.name
                ),
                failure_mirror(state, target, Some(&previous), None),
            ),
            Err(why) => (
                Code::RollbackImpossible,
                format!("{failure} and the previous apps did not come back ({why})"),
                stays(state),
            ),
        };
        let result = if code == Code::RolledBack {
            "OK"
        } else {
            "FAILED"
        };
        ctx.hooks
            .event("install-post", Some(&previous.name), Some(result));
        return concluded(ctx, state, &target.name, code, msg, m);
    }
    if let Err(why) = &restored {
        tracing::warn!("previous apps on the new rootfs: {why}; retried after the reboot");
    }
    let Some(rollback) = pending.rollback_deployment.clone() else {
        state.current = Some(target.clone());
        let msg = format!("{failure}; the previous deployment is unknown: nothing restored");
        let m = stays(state);
        return concluded(ctx, state, &target.name, Code::RollbackImpossible, msg, m);
    };
    ctx.hooks.event("install-pre", Some(&previous.name), None);
    ostree::make_default(&ctx.cfg.pacman, &rollback)?;
    failpoint::hit("run-rollback-default-set");
    let msg = format!(
        "{failure}: rollback to {} deployed: reboot, then run",
        previous.name
    );
    let boot_id = ostree::boot_id(&ctx.cfg.pacman)?;
    state.aklite = Some(failure_mirror(
        state,
        target,
        Some(&previous),
        Some(&boot_id),
    ));
    state.pending = Some(Pending {
        target: previous.clone(),
        phase: Phase::RollingBack,
        boot_id,
        previous: None,
        rollback_deployment: None,
        needs_reboot: true,
        installed_at: crate::clock::now_utc(),
        failed_target: Some(target.clone()),
        boot_attempts: 0,
        counted_boot: None,
    });
    state.record("run", &target.name, Code::NeedsReboot.as_u8(), &msg);
    state.save(&ctx.dir)?;
    failpoint::hit("run-rollback-pending-recorded");
    ctx.mirror(state);
    ctx.hooks.event(
        "install-post",
        Some(&previous.name),
        Some("NEEDS_COMPLETION"),
    );
    Ok(Outcome {
        code: Code::NeedsReboot,
        message: msg,
        notes: Vec::new(),
    })
}

/// [`conclude`] with the mirror of the result, applied once saved.
fn concluded(
    ctx: &Ctx,
    state: &mut State,
    target: &str,
    code: Code,
    message: String,
    mirror: Mirror,
) -> Result<Outcome> {
    state.aklite = Some(mirror);
    let out = conclude(ctx, state, target, code, message)?;
    ctx.mirror(state);
    Ok(out)
}

/// What a rollback returns to: the target recorded at install, or the deployment that was
/// booted then, by commit.
fn previous_target(pending: &Pending) -> InstalledTarget {
    pending.previous.clone().unwrap_or_else(|| InstalledTarget {
        name: "Initial Target".into(),
        version: None,
        sha256: pending
            .rollback_deployment
            .clone()
            .unwrap_or_else(|| pending.target.sha256.clone()),
        apps: Default::default(),
        custom: None,
    })
}

/// Back on the previous rootfs after an apps failure: its apps up again completes it.
fn finish_rollback(ctx: &Ctx, state: &mut State, pending: &Pending) -> Result<Outcome> {
    let failed = pending
        .failed_target
        .as_ref()
        .map_or("the failed target".to_string(), |t| t.name.clone());
    let verdict = if ctx.compose {
        match previous::load(&ctx.dir) {
            Ok(record) => apps::restore(&ctx.cfg, &ctx.policy.apps, &record)?,
            Err(why) => Err(format!("the previous apps are unknown ({why})")),
        }
    } else {
        Ok(())
    };
    failpoint::hit("run-rollback-apps-back");
    if let Some(t) = &pending.failed_target {
        ostree::remove_deployment(&ctx.cfg.pacman, &t.sha256)?;
    }
    failpoint::hit("run-rollback-deployment-removed");
    BootEnv::from_config(&ctx.cfg)?.set_boot_ok()?;
    state.current = Some(pending.target.clone());
    let name = pending.target.name.clone();
    if pending.target.custom.is_some() {
        state.aklite = state
            .aklite
            .as_ref()
            .map(|m| m.current_after(&pending.target));
    }
    let (code, msg) = match verdict {
        Ok(()) => (Code::Ok, format!("rolled back to {name} after {failed} failed")),
        Err(why) => (
            Code::RollbackImpossible,
            format!("rolled back to {name}'s rootfs after {failed} failed, but its apps did not come back: {why}"),
        ),
    };
    let out = conclude(ctx, state, &failed, code, msg);
    failpoint::hit("run-rollback-finished");
    ctx.mirror(state);
    let result = if code == Code::Ok { "OK" } else { "FAILED" };
    ctx.hooks.event("install-post", Some(&name), Some(result));
    out
}

/// The bootloader booted something else: the new rootfs did not come up.
fn bootloader_rollback(
    ctx: &Ctx,
    state: &mut State,
    pending: &Pending,
    booted: Option<&str>,
) -> Result<Outcome> {
    let name = pending.target.name.clone();
    let mut reason = format!(
        "the device booted {} instead of {name}: bootloader rollback",
        booted.unwrap_or("an unknown deployment")
    );
    deny(state, &pending.target, "bootloader rollback");
    if state.current.is_none() {
        state.current = pending.previous.clone();
    }
    let code = if !ctx.compose {
        Code::RolledBack
    } else {
        match previous::load(&ctx.dir) {
            Err(why) => {
                reason.push_str(&format!("; the previous apps are unknown ({why})"));
                Code::RollbackAppsUnknown
            }
            Ok(record) => match apps::restore(&ctx.cfg, &ctx.policy.apps, &record)? {
                Ok(()) => Code::RolledBack,
                Err(why) => {
                    reason.push_str(&format!("; the previous apps did not come back: {why}"));
                    Code::RollbackImpossible
                }
            },
        }
    };
    failpoint::hit("run-bootloader-apps-restored");
    // Disarmed before the record: a run killed after it finds nothing pending and would
    // leave boot counting armed on the good rootfs.
    BootEnv::from_config(&ctx.cfg)?.set_boot_ok()?;
    state.aklite = Some(failure_mirror(
        state,
        &pending.target,
        pending.previous.as_ref(),
        None,
    ));
    let out = conclude(ctx, state, &name, code, reason)?;
    failpoint::hit("run-rollback-recorded");
    ctx.mirror(state);
    ctx.hooks.event("install-post", Some(&name), Some("FAILED"));
    ostree::remove_deployment(&ctx.cfg.pacman, &pending.target.sha256)?;
    failpoint::hit("run-failed-deployment-removed");
    Ok(out)
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
