//! `usb-update install`: `check`'s verdict, then (Compose devices) the target's apps copied
//! into the store and their images loaded while the rootfs is pulled beside them
//! ([`crate::overlap`]), then the rootfs deployed as the next boot's default (or, for apps
//! only, nothing pulled or deployed), the pending installation recorded for `run`.
//!
//! Every step can be re-run after a power cut at any instant: blobs already in the store and
//! images already loaded are skipped, the pull skips what the repo has, the deployment of a
//! commit already deployed as default is reused, and the pending record and the trusted
//! metadata are written atomically, in that order, last.

use crate::aklite::callback::{Callback, Event};
use crate::aklite::mirror::{self, Mirror, Then};
use crate::apps;
use crate::bootloader::{self, BootEnv};
use crate::config::PackageManager;
use crate::core::context::{Loaded, Records};
use crate::core::evaluate::{self, Plan, Report, Request};
use crate::error::{Code, Error, Result};
use crate::failpoint;
use crate::lock::UpdateLock;
use crate::ostree;
use crate::overlap::{self, Cancel};
use crate::phase;
use crate::state::{InstalledTarget, Pending, Phase, State};

/// Run `install`; the report says what was found, the result what was done.
pub fn install(req: &Request) -> (Report, Result<Code>) {
    let verify = phase::start("verify");
    // The shared lock first: what aktualizr-lite's database says is read under it, after
    // our last step's mirror is applied (a crash in between converges here).
    let (lock, loaded, records, notes) = match lock_and_converge(req) {
        Ok(x) => x,
        Err(e) => {
            let report = Report {
                exit_code: e.code().as_u8(),
                error: Some(e.one_line()),
                ..Report::default()
            };
            return (report, Err(e));
        }
    };
    let hooks = Hooks::new(&loaded.config, &records);
    hooks.event("check-for-update-pre", None, None);
    // The evaluation uses what was loaded here, under the lock: loaded once.
    let req = &Request {
        loaded: Some(loaded),
        records: Some(std::sync::Arc::new(records)),
        ..req.clone()
    };
    let (mut report, plan) = evaluate::evaluate(req);
    report.notes.splice(0..0, notes);
    verify.done();
    let post = match &plan {
        Ok(_) => "OK".to_string(),
        Err(e) => format!("FAILED: {}", e.one_line()),
    };
    let selected = report.selected.as_ref().map(|c| c.name.clone());
    hooks.event("check-for-update-post", selected.as_deref(), Some(&post));
    let result =
        plan.and_then(|plan| apply(plan, lock, &hooks, &mut report, req.progress.as_ref()));
    if let Err(e) = &result {
        report.error = Some(e.one_line());
        report.exit_code = e.code().as_u8();
    }
    (report, result)
}

type Prepared = (UpdateLock, std::sync::Arc<Loaded>, Records, Vec<String>);

fn lock_and_converge(req: &Request) -> Result<Prepared> {
    let loaded = match &req.loaded {
        Some(loaded) => loaded.clone(),
        None => std::sync::Arc::new(req.sources.load()?),
    };
    let lock = UpdateLock::try_acquire(&loaded.policy.agent.lock_file)?;
    // Our state first: converging applies what it still owes aktualizr-lite's database,
    // which is read after that.
    let state = State::load(&loaded.config.state_dir())?;
    let applied = mirror::converge(&loaded.config, &state);
    let records = Records {
        state,
        aklite: crate::aklite::View::load(&loaded.config),
    };
    Ok((lock, loaded, records, applied.warning.into_iter().collect()))
}

/// `[pacman] callback_program` at aktualizr-lite's steps, with the running target's name.
pub(crate) struct Hooks {
    callback: Callback,
    current: String,
}

impl Hooks {
    pub(crate) fn new(cfg: &crate::config::Config, records: &Records) -> Hooks {
        Hooks {
            callback: Callback::new(cfg),
            current: crate::core::running::running_name(cfg, records),
        }
    }

    pub(crate) fn event(&self, message: &str, install: Option<&str>, result: Option<&str>) {
        self.callback.run(Event {
            message,
            current: Some(&self.current),
            install,
            result,
        });
    }
}

fn apply(
    plan: Plan,
    _lock: UpdateLock,
    hooks: &Hooks,
    report: &mut Report,
    progress: Option<&evaluate::Progress>,
) -> Result<Code> {
    let mut state = plan.state.clone();
    if plan.code == Code::Ok {
        return Ok(Code::Ok);
    }
    let pacman = &plan.config.pacman;
    let bootenv = BootEnv::from_config(&plan.config)?;
    // Only a new rootfs waits for the boot firmware: apps do not touch the bootloader.
    if plan.code == Code::NeedsReboot && bootenv.boot_firmware_pending()? {
        return Err(Error::new(
            Code::BootFirmware,
            "a boot firmware update is waiting for a reboot: reboot, then install again",
        ));
    }
    let target = &plan.target;
    let running = report.running.clone();
    let rollback_deployment = ostree::booted(pacman)?.map(|d| d.csum);
    let compose = pacman.kind == PackageManager::OstreeComposeApps;
    let download = Step::start(hooks, &target.name, "download");
    let scanned;
    let rootfs = match &plan.rootfs {
        _ if plan.code == Code::AppsNeedRestart => None,
        Some(r) => Some(r),
        None => {
            scanned = ostree::scan_bundle_commit(pacman, &plan.bundle, &target.ostree)?;
            Some(&scanned)
        }
    };
    let prepare_apps = |cancel: &Cancel| -> Result<Option<apps::Prepared>> {
        if !compose {
            return Ok(None);
        }
        let running_apps = running.as_ref().map(|r| r.apps.clone()).unwrap_or_default();
        let tick = |p: apps::store::FetchProgress| {
            tracing::info!(
                done = p.done,
                of = p.total,
                "copying apps of {}: {}%",
                target.name,
                (p.done * 100).checked_div(p.total).unwrap_or(100)
            );
            if let Some(sink) = progress {
                sink.report("copying the apps", p.done, p.total);
            }
        };
        let config = &plan.config;
        apps::prepare(
            config,
            &plan.policy.apps,
            &plan.bundle,
            &target.apps,
            &running_apps,
            &tick,
            cancel,
        )
        .map(Some)
    };
    let pull_rootfs = |rootfs: &ostree::RootfsPlan, side: &overlap::Side| {
        let pull = phase::start("pull");
        let stats = ostree::pull_beside(
            pacman,
            &plan.bundle,
            rootfs,
            &mut |p| {
                tracing::info!(
                    objects = p.objects_done,
                    of = p.objects_total,
                    "pulling {}: {}%",
                    target.name,
                    p.percent()
                );
                if let Some(sink) = progress {
                    sink.report("copying the rootfs", p.objects_done, p.objects_total);
                }
            },
            side,
        )?;
        tracing::info!(?stats, "pulled {}", target.ostree);
        pull.done();
        Ok(stats)
    };
    // The two halves at once when there are two: each stops when the other fails.
    let (prepared, stats) = match rootfs {
        None => (prepare_apps(Cancel::never())?, None),
        Some(rootfs) if compose => {
            let undo = |p: Option<apps::Prepared>| {
                if let Some(p) = p {
                    apps::undo(&plan.config, &p);
                }
            };
            let pulled = |side: &overlap::Side| pull_rootfs(rootfs, side);
            let (a, r) = overlap::run(prepare_apps, pulled, undo)?;
            (a, Some(r))
        }
        Some(rootfs) => (None, Some(pull_rootfs(rootfs, &overlap::Side::alone())?)),
    };
    let apps_note = match &prepared {
        Some(prepared) => format!(
            "; {} app(s): {} blob(s), {:.1} MB copied, {} already present, {} image(s) loaded",
            prepared.apps,
            prepared.fetch.copied,
            prepared.fetch.bytes as f64 / 1e6,
            prepared.fetch.skipped,
            prepared.images_loaded
        ),
        None => String::new(),
    };
    let Some(stats) = stats else {
        download.finish("OK");
        let step = Step::start(hooks, &target.name, "install");
        let recorded = record_apps_only(
            &plan,
            &mut state,
            running,
            rollback_deployment,
            &apps_note,
            report,
        );
        if recorded.is_ok() {
            step.finish("NEEDS_COMPLETION");
        }
        return recorded;
    };
    // Boot firmware rollback protection reads the target's version file: the commit must
    // be here first, and nothing is deployed or armed yet when it refuses.
    let version_txt = ostree::commit_file(pacman, &target.ostree, bootloader::VERSION_FILE)?;
    if let Some(reason) = bootenv.firmware_downgrade(version_txt.as_deref())? {
        if let Some(p) = &prepared {
            apps::undo(&plan.config, p);
        }
        return Err(Error::new(
            Code::Downgrade,
            format!("{}: {reason}", target.name),
        ));
    }
    download.finish("OK");
    failpoint::hit("install-pulled");
    let step = Step::start(hooks, &target.name, "install");
    let deploy = phase::start("deploy");
    bootenv.update_notify()?;
    failpoint::hit("install-boot-armed");
    failpoint::pause("deploy");
    let mut undo = Undo {
        pacman,
        bootenv: &bootenv,
        commit: &target.ostree,
        deployed: false,
        done: false,
    };
    let deployment = match ostree::deployments(pacman)?.into_iter().next() {
        // A crash after the deployment and before the pending record: reuse it.
        Some(d) if d.csum == target.ostree && rollback_deployment.as_deref() != Some(&d.csum) => d,
        _ => ostree::deploy(pacman, &target.ostree)?,
    };
    undo.deployed = true;
    failpoint::hit("install-deployed");
    bootenv.check_boot_firmware(&deployment.path)?;
    deploy.done();
    let pulled = if stats.skipped {
        "commit already present".to_string()
    } else {
        format!(
            "{} objects, {:.1} MB pulled in {:.1} s",
            stats.objects,
            stats.bytes as f64 / 1e6,
            stats.seconds
        )
    };
    let msg = format!(
        "{} deployed ({pulled}{apps_note}): reboot, then run",
        target.name
    );
    let pending = Pending {
        target: installed(&plan),
        phase: Phase::Deployed,
        boot_id: ostree::boot_id(pacman)?,
        previous: running,
        rollback_deployment,
        needs_reboot: true,
        installed_at: crate::clock::now_utc(),
        failed_target: None,
        boot_attempts: 0,
        counted_boot: None,
    };
    // No global sync(): the objects and the deployment were synced by libostree, and
    // every file of ours is fsynced with its directory.
    let recorded = record(&plan, &mut state, pending, Code::NeedsReboot, msg, report);
    undo.done = recorded.is_ok();
    if recorded.is_ok() {
        step.finish("NEEDS_COMPLETION");
    }
    recorded
}

/// `<step>-pre` now, `<step>-post` with the result when finished, `FAILED` when dropped
/// unfinished (an error returned in between).
struct Step<'a> {
    hooks: &'a Hooks,
    target: &'a str,
    post: String,
    done: bool,
}

impl<'a> Step<'a> {
    fn start(hooks: &'a Hooks, target: &'a str, step: &str) -> Step<'a> {
        hooks.event(&format!("{step}-pre"), Some(target), None);
        Step {
            hooks,
            target,
            post: format!("{step}-post"),
            done: false,
        }
    }

    fn finish(mut self, result: &str) {
        self.done = true;
        self.hooks
            .event(&self.post, Some(self.target), Some(result));
    }
}

impl Drop for Step<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.hooks
                .event(&self.post, Some(self.target), Some("FAILED"));
        }
    }
}

/// A failure after boot counting was armed (a full disk at the deploy or at the records):
/// disarm it and take the new deployment back, or the next boot would start an update
/// nobody recorded, and a device that reboots often would count its way into the rollback
/// deployment. A crash skips this; the next attempt converges instead (tests/privileged/faults_crash.rs).
struct Undo<'a> {
    pacman: &'a crate::config::Pacman,
    bootenv: &'a BootEnv,
    commit: &'a str,
    deployed: bool,
    done: bool,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if self.deployed {
            match ostree::remove_deployment(self.pacman, self.commit) {
                Ok(()) => tracing::warn!(
                    "install failed: the deployment of {} is taken back",
                    self.commit
                ),
                Err(e) => tracing::error!("install failed, and its deployment stays: {e:#}"),
            }
        }
        if let Err(e) = self.bootenv.set_boot_ok() {
            tracing::error!("install failed, and boot counting stays armed: {e:#}");
        }
    }
}

/// The selected target as recorded: the apps this device runs, the TUF `custom` object.
fn installed(plan: &Plan) -> InstalledTarget {
    let target = &plan.target;
    InstalledTarget {
        name: target.name.clone(),
        version: target.version,
        sha256: target.ostree.clone(),
        apps: target.apps.clone(),
        custom: plan
            .verified
            .targets
            .iter()
            .find(|t| t.name == target.name)
            .map(|t| t.custom.clone()),
    }
}

/// The last steps, for every kind of target: the metadata that vouched for the target is
/// trusted from now on (before the pending record, so that a re-run after a crash in
/// between compares equal), then the pending record.
fn record(
    plan: &Plan,
    state: &mut State,
    pending: Pending,
    code: Code,
    msg: String,
    report: &mut Report,
) -> Result<Code> {
    failpoint::pause("record");
    let dir = plan.config.state_dir();
    let tuf = State::tuf_dir(&dir);
    for (name, bytes) in &plan.verified.to_store {
        crate::durable::replace(&tuf.join(name), bytes)?;
    }
    failpoint::hit("install-tuf-stored");
    state.aklite = Some(Mirror::new(
        Then::Pending {
            target: pending.target.clone(),
            reboot: pending.needs_reboot,
            boot_id: pending.boot_id.clone(),
        },
        None,
    ));
    state.pending = Some(pending);
    state.record("install", &plan.target.name, code.as_u8(), &msg);
    state.save(&dir)?;
    failpoint::hit("install-recorded");
    // aktualizr-lite's database: our target pending (re-applied at the next start if
    // this is cut short).
    report
        .notes
        .extend(mirror::converge(&plan.config, state).warning);
    report.decision = Some(msg);
    Ok(code)
}

/// Apps-only target: nothing to deploy; the pending record tells `run` to start the apps.
fn record_apps_only(
    plan: &Plan,
    state: &mut State,
    running: Option<InstalledTarget>,
    rollback_deployment: Option<String>,
    apps_note: &str,
    report: &mut Report,
) -> Result<Code> {
    let target = &plan.target;
    let msg = format!(
        "{} apps installed ({}): restart Docker, then run",
        target.name,
        apps_note.trim_start_matches("; ")
    );
    let pending = Pending {
        target: installed(plan),
        phase: Phase::Apps,
        boot_id: ostree::boot_id(&plan.config.pacman)?,
        previous: running,
        rollback_deployment,
        needs_reboot: false,
        installed_at: crate::clock::now_utc(),
        failed_target: None,
        boot_attempts: 0,
        counted_boot: None,
    };
    record(plan, state, pending, Code::AppsNeedRestart, msg, report)
}
