//! `usb-update agent handle|finalize|watch`: the automatic flow an operator sees. A stick
//! goes in; it is checked, mounted read-only, its bundle verified and installed; then the
//! device reboots (new rootfs) or restarts Docker and finishes (apps only); at boot,
//! `finalize` completes what the reboot was for. LEDs, consoles, `status.json` and a report
//! on the stick say what happened.
//!
//! Reboot and Docker restart go through the policy's commands (`[agent] reboot_command`,
//! `docker_restart_command`), so that a test or the demo can stand in for them.

pub mod media;
pub mod medium;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::core::context::Loaded;
pub(crate) use crate::core::context::Sources;
use crate::core::evaluate::Request;
use crate::error::{Code, Error, Result};
use crate::policy::Policy;
use crate::state::State;
use crate::status::{Feedback, Pattern, Report};
use media::{Mount, Stick};
use medium::{Held, Medium};

struct Ctx {
    sources: Sources,
    cfg: Config,
    policy: Policy,
    fb: Feedback,
}

impl Ctx {
    fn load(sources: &Sources) -> Result<Ctx> {
        let Loaded {
            config: cfg,
            policy,
        } = sources.load()?;
        let fb = Feedback::new(&policy);
        Ok(Ctx {
            sources: sources.clone(),
            cfg,
            policy,
            fb,
        })
    }

    /// What this flow loaded, for the steps it runs (install, `run`): loaded once.
    fn loaded(&self) -> Loaded {
        Loaded {
            config: self.cfg.clone(),
            policy: self.policy.clone(),
        }
    }
}

/// `agent handle DEVNODE`: one stick, the whole flow. Returns the code of what was done
/// (`install`'s, or `run`'s after an apps-only update).
pub fn handle(sources: &Sources, devnode: &Path) -> Result<Code> {
    handle_medium(sources, &Medium::Device(devnode.to_path_buf()))
}

/// One medium, whoever mounted it: the flow of `agent handle`, for `agent watch`'s udev
/// sticks and its `watch_dirs` media alike.
pub(crate) fn handle_medium(sources: &Sources, medium: &Medium) -> Result<Code> {
    let mut ctx = Ctx::load(sources)?;
    let stick = match medium {
        Medium::Device(devnode) => Stick::probe(devnode)?,
        Medium::Mounted(root) => crate::agent::medium::stick_of_mount(root)?,
    };
    if let Err(why) = stick.accept(&ctx.policy.media) {
        tracing::info!("ignored: {why}");
        ctx.fb.step(&format!("ignored {medium}: {why}"));
        return Ok(Code::Ok);
    }
    ctx.fb.pattern(Pattern::Working);
    ctx.fb.step(&format!(
        "stick {} ({medium}) inserted: do not remove it",
        display_label(&stick),
    ));
    let held = match medium {
        Medium::Device(_) => match Mount::mount(&stick, &ctx.policy.agent.run_dir) {
            Ok(m) => Held::Ours(m),
            Err(e) => {
                ctx.fb.pattern(Pattern::Error);
                ctx.fb.step(&format!("error: {}", e.one_line()));
                return Err(e);
            }
        },
        Medium::Mounted(root) => Held::Theirs(root.clone()),
    };
    crate::failpoint::hit("agent-mounted");
    let (serial, hwid) =
        crate::core::device::Device::identity(&ctx.cfg, &crate::aklite::View::load(&ctx.cfg));
    let booted = crate::ostree::booted_commit(&ctx.cfg.pacman).ok().flatten();
    let mut report = Report {
        device: device_id(),
        serial,
        hardware_id: Some(hwid),
        image_built: crate::clock::build_date(&ctx.cfg.pacman, booted.as_deref()),
        stick: stick.uuid.clone(),
        started_at: crate::clock::now_utc(),
        ..Report::default()
    };
    let started = Instant::now();
    let outcome = on_stick(&mut ctx, &stick, &held, &mut report);
    report
        .durations
        .insert("total".into(), started.elapsed().as_secs_f64());
    finish(&mut ctx, &stick, held, report, outcome)
}

/// What to do after the stick is released.
enum Then {
    Nothing,
    /// Nothing, and the stick's report stays as it is: a stick left in across the reboot
    /// it asked for carries the report of that install, which a sighting must not replace.
    NothingKeepReport,
    Reboot,
}

struct Outcome {
    code: Code,
    result: String,
    then: Then,
}

fn on_stick(ctx: &mut Ctx, stick: &Stick, held: &Held, report: &mut Report) -> Result<Outcome> {
    let root = held.path();
    // Everything that reads the stick, up to the end of the install, runs under the
    // watchdog; what follows (Docker, the apps' health) has timeouts of its own.
    let watchdog = arm_watchdog(&ctx.policy, &ctx.cfg, stick, held);
    let bundle = media::find_bundle(root, ctx.policy.media.bundle.as_deref())?;
    report.bundle = bundle
        .strip_prefix(root)
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    // tuf/ is read once, here: the signature, the fingerprint and install's TUF checks are
    // all over these bytes.
    let metadata = std::sync::Arc::new(crate::core::signature::read_tuf(
        &crate::core::bundle::Bundle::open(&bundle)?,
        &ctx.policy.signature,
    )?);
    let fingerprint = hex::encode(Sha256::digest(
        metadata.tuf.get("timestamp.json").unwrap_or_default(),
    ));
    let dir = ctx.cfg.state_dir();
    let mut seen = Seen::load(&dir);
    let boot_id = crate::ostree::boot_id(&ctx.cfg.pacman)?;
    if let Some(left) = seen.take(&stick.uuid, &fingerprint, &boot_id) {
        seen.save(&dir)?;
        if !left.retry {
            return Ok(Outcome {
                code: Code::Ok,
                result:
                    "this stick was left in across the reboot it asked for: nothing more to do \
                         (remove it and insert it again to retry)"
                        .into(),
                then: Then::NothingKeepReport,
            });
        }
    }
    if let Some(key) = &metadata.signer {
        ctx.fb
            .step(&format!("operator signature by {key}: trusted"));
    }
    report.before = current_name(&ctx.sources);
    let aklite = Aklite::stop(&ctx.policy)?;
    crate::failpoint::hit("agent-aklite-stopped");
    ctx.fb.step("verifying and installing the update");
    // Progress comes from the copying threads: a feedback of its own (console lines and
    // status.json percent), behind a mutex.
    let mut progress_fb = Feedback::new(&ctx.policy);
    progress_fb.pattern(Pattern::Working);
    let sink = std::sync::Mutex::new(progress_fb);
    let sink = std::sync::Arc::new(sink);
    let req = Request {
        sources: ctx.sources.clone(),
        loaded: Some(std::sync::Arc::new(ctx.loaded())),
        src_dir: bundle.clone(),
        target: None,
        force: false,
        metadata: Some(metadata),
        records: None,
        progress: Some(crate::core::evaluate::Progress(std::sync::Arc::new(
            move |what: &str, done: u64, total: u64| {
                if let Ok(mut fb) = sink.lock() {
                    fb.progress(what, done, total);
                }
            },
        ))),
    };
    let t = Instant::now();
    let (install_report, result) = crate::commands::install::install(&req);
    drop(watchdog);
    crate::failpoint::hit("agent-installed");
    report
        .durations
        .insert("install".into(), t.elapsed().as_secs_f64());
    // install reports a waiting boot firmware update as an error (nothing was done), but
    // for the agent it is a step: reboot, then install again from the same stick.
    let result = result.or_else(|e| match e.code() {
        Code::BootFirmware => Ok(Code::BootFirmware),
        _ => Err(e),
    });
    for n in &install_report.notes {
        ctx.fb.step(&format!("note: {n}"));
    }
    report.notes.extend(install_report.notes.iter().cloned());
    let decision = install_report.decision.clone().unwrap_or_default();
    let outcome = match result {
        Ok(Code::Ok) => Ok(Outcome {
            code: Code::Ok,
            result: format!("already up to date: {decision}"),
            then: Then::Nothing,
        }),
        Ok(code @ (Code::NeedsReboot | Code::BootFirmware)) => {
            // The stick may stay in: the next boot must know it, and retry only after 90.
            seen.remember(
                &stick.uuid,
                &fingerprint,
                &boot_id,
                code == Code::BootFirmware,
            );
            seen.save(&dir)?;
            crate::failpoint::hit("agent-left-in-recorded");
            let result = match code {
                Code::BootFirmware => {
                    "a boot firmware update needs a reboot first; the update follows it".into()
                }
                _ => format!("installed: {decision}"),
            };
            Ok(Outcome {
                code,
                result,
                then: Then::Reboot,
            })
        }
        Ok(Code::AppsNeedRestart) => apps_only(ctx, report, &decision),
        Ok(other) => Ok(Outcome {
            code: other,
            result: decision,
            then: Then::Nothing,
        }),
        Err(e) => Err(e),
    };
    aklite.start(&ctx.policy, &ctx.cfg);
    // What the device runs (or will, after the reboot), not what it ran.
    report.after = match &outcome {
        Ok(_) => install_report
            .selected
            .as_ref()
            .map(|c| format!("{} ({})", c.name, crate::policy::fmt_version(c.version))),
        Err(_) => report.before.clone(),
    };
    outcome
}

/// The watchdog of one stick (see [`crate::watchdog`]): once nothing moved for `[agent]
/// stall_timeout`, the update ends as a failure would, from the watchdog's thread, whatever
/// the stuck one is blocked in: the error on every channel, aktualizr-lite started again
/// (if we stopped it), the stick detached from the tree (lazily: a read may still hang on
/// it; it was mounted read-only, nothing is lost), exit 50. No report is written onto a
/// stick that stopped answering. The device keeps what it ran: nothing is recorded before
/// the install's last step, and a transaction left in the sysroot repo is removed by the
/// next pull.
fn arm_watchdog(
    policy: &Policy,
    cfg: &Config,
    stick: &Stick,
    held: &Held,
) -> crate::watchdog::Watchdog {
    let policy = policy.clone();
    let cfg = cfg.clone();
    let devnode = stick.devnode.clone();
    // Another program's mount is not ours to detach.
    let ours = matches!(held, Held::Ours(_)).then(|| held.path().to_path_buf());
    crate::watchdog::arm(policy.agent.stall_timeout, move |idle| {
        let msg = format!(
            "no progress for {} s reading {} (the stick or its filesystem stopped \
             answering): update abandoned; the device still runs what it ran before",
            idle.as_secs(),
            devnode.display()
        );
        let mut fb = Feedback::new(&policy);
        fb.pattern(Pattern::Error);
        fb.step(&format!("error: {msg}"));
        Aklite::left_stopped(&policy).start(&policy, &cfg);
        if let Some(at) = &ours {
            media::detach(at);
        }
        fb.step("the stick can be removed");
        eprintln!("error: {msg}");
        std::process::exit(i32::from(Code::Copy.as_u8()));
    })
}

/// Apps only: restart Docker, then finish at once.
fn apps_only(ctx: &mut Ctx, report: &mut Report, decision: &str) -> Result<Outcome> {
    ctx.fb.step("apps installed: restarting Docker");
    crate::failpoint::hit("agent-before-docker-restart");
    run_command(
        &ctx.policy.agent.docker_restart_command,
        "restarting Docker",
    )?;
    crate::failpoint::hit("agent-docker-restarted");
    ctx.fb.step("starting the apps");
    let t = Instant::now();
    let out = crate::commands::run::run_loaded(&ctx.loaded())?;
    report
        .durations
        .insert("run".into(), t.elapsed().as_secs_f64());
    for n in &out.notes {
        ctx.fb.step(&format!("note: {n}"));
    }
    report.notes.extend(out.notes.iter().cloned());
    if out.code != Code::Ok {
        return Err(Error::new(out.code, out.message));
    }
    Ok(Outcome {
        code: Code::Ok,
        result: format!("{decision}; {}", out.message),
        then: Then::Nothing,
    })
}

/// Report on the stick, release it, show the result, then reboot if that is next.
fn finish(
    ctx: &mut Ctx,
    stick: &Stick,
    held: Held,
    mut report: Report,
    outcome: Result<Outcome>,
) -> Result<Code> {
    report.finished_at = crate::clock::now_utc();
    let (code, then) = match &outcome {
        Ok(o) => {
            report.exit_code = o.code.as_u8();
            report.result = o.result.clone();
            ctx.fb.step(&o.result);
            (o.code, &o.then)
        }
        Err(e) => {
            report.exit_code = e.code().as_u8();
            report.result = "failed: the device still runs what it ran before".into();
            report.error = Some(e.one_line());
            ctx.fb.step(&format!("error: {}", e.one_line()));
            (e.code(), &Then::Nothing)
        }
    };
    if ctx.policy.agent.report && !matches!(then, Then::NothingKeepReport) {
        crate::failpoint::pause("write-report");
        let log = ctx.fb.lines();
        let written = held.with_writable(|root| crate::status::write_report(root, &report, &log));
        match written {
            Ok(p) => tracing::info!("report written to {}", p.display()),
            Err(e) => tracing::warn!("no report on the stick {}: {e:#}", stick.uuid),
        }
        crate::failpoint::hit("agent-report-written");
    }
    if let Err(e) = held.release() {
        tracing::warn!("unmounting {}: {}", stick.devnode.display(), e.one_line());
    }
    let failed =
        outcome.is_err() || !matches!(code, Code::Ok | Code::NeedsReboot | Code::BootFirmware);
    ctx.fb.pattern(Pattern::SafeToRemove);
    ctx.fb.step("the stick can be removed");
    match then {
        Then::Reboot => {
            ctx.fb.step("rebooting to finish the update");
            crate::failpoint::hit("agent-before-reboot");
            run_command(&ctx.policy.agent.reboot_command, "rebooting")?;
        }
        // Another updater (or stick) holds the device: not this stick's fault.
        Then::Nothing | Then::NothingKeepReport if code == Code::Busy => {
            ctx.fb.pattern(Pattern::Busy)
        }
        Then::Nothing | Then::NothingKeepReport => ctx.fb.pattern(if failed {
            Pattern::Error
        } else {
            Pattern::Success
        }),
    }
    match outcome {
        Ok(_) => Ok(code),
        Err(e) => Err(e),
    }
}

/// `agent finalize`, at boot: run what `install` left pending and act on its code.
pub fn finalize(sources: &Sources) -> Result<Code> {
    let mut ctx = Ctx::load(sources)?;
    let state = State::load(&ctx.cfg.state_dir())?;
    if state.pending.is_none() {
        tracing::info!("nothing pending");
        // A marker left by a save killed before its state was written.
        State::remove_marker(&ctx.cfg.state_dir())?;
        Aklite::left_stopped(&ctx.policy).start(&ctx.policy, &ctx.cfg);
        return Ok(Code::Ok);
    }
    ctx.fb.pattern(Pattern::Working);
    ctx.fb
        .step("finishing the update started before the reboot");
    let aklite = Aklite::stop(&ctx.policy)?;
    let result = crate::commands::run::run_loaded(&ctx.loaded());
    crate::failpoint::hit("agent-finalize-ran");
    aklite.start(&ctx.policy, &ctx.cfg);
    let out = match result {
        Ok(o) => o,
        Err(e) => {
            ctx.fb.pattern(Pattern::Error);
            ctx.fb.step(&format!("error: {}", e.one_line()));
            return Err(e);
        }
    };
    ctx.fb.step(&out.message);
    for n in &out.notes {
        ctx.fb.step(&format!("note: {n}"));
    }
    match out.code {
        Code::Ok => ctx.fb.pattern(Pattern::Success),
        Code::BootFirmware => {
            ctx.fb.pattern(Pattern::Success);
            if ctx.policy.agent.reboot_for_boot_firmware {
                ctx.fb
                    .step("rebooting to complete the boot firmware update");
                run_command(&ctx.policy.agent.reboot_command, "rebooting")?;
            }
        }
        Code::NeedsReboot => {
            ctx.fb.pattern(Pattern::Error);
            ctx.fb.step("rebooting into the previous version");
            run_command(&ctx.policy.agent.reboot_command, "rebooting")?;
        }
        _ => ctx.fb.pattern(Pattern::Error),
    }
    Ok(out.code)
}

/// `agent watch`: every stick udev announces and every medium mounted under `[media]
/// watch_dirs`, each through [`handle_medium`], for systems without systemd and for the
/// demo. Runs until killed.
pub fn watch(sources: &Sources) -> Result<()> {
    crate::agent::medium::watch(sources)
}

fn run_command(argv: &[String], what: &str) -> Result<()> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| anyhow::anyhow!("{what}: no command configured"))?;
    let status = Command::new(program)
        .args(args)
        .status()
        .with_context(|| format!("{what}: running {program}"))?;
    if !status.success() {
        return Err(anyhow::anyhow!("{what}: `{}` failed ({status})", argv.join(" ")).into());
    }
    Ok(())
}

/// aktualizr-lite must never run beside us: stopped for the update when it is active,
/// started again after. `<run_dir>/aklite-stopped` says we stopped it, so that an agent
/// killed before starting it again is made good by the next one (a reboot clears /run and
/// starts the unit anyway).
struct Aklite {
    stopped: bool,
}

impl Aklite {
    fn marker(policy: &Policy) -> PathBuf {
        policy.agent.run_dir.join("aklite-stopped")
    }

    fn stop(policy: &Policy) -> Result<Aklite> {
        let unit = &policy.agent.aklite_unit;
        if unit.is_empty() {
            return Ok(Aklite { stopped: false });
        }
        let active = Command::new(&policy.agent.systemctl)
            .args(["is-active", "--quiet", unit])
            .status()
            .is_ok_and(|s| s.success());
        if active {
            crate::durable::replace(&Self::marker(policy), unit.as_bytes())?;
            run_command(
                &[policy.agent.systemctl.clone(), "stop".into(), unit.clone()],
                "stopping aktualizr-lite",
            )?;
        }
        Ok(Aklite {
            stopped: active || Self::marker(policy).exists(),
        })
    }

    /// What an agent killed while aktualizr-lite was stopped left to do.
    fn left_stopped(policy: &Policy) -> Aklite {
        Aklite {
            stopped: !policy.agent.aklite_unit.is_empty() && Self::marker(policy).exists(),
        }
    }

    /// Start it again, unless an installation of ours is pending: from `install` until
    /// `run` finishes (across the reboot) aktualizr-lite must not run, or it would finalize
    /// our installation itself; `<run_dir>/aklite-stopped` stays, and the boot-time
    /// finalize (ordered before aktualizr-lite.service) starts it after `run`.
    fn start(self, policy: &Policy, cfg: &Config) {
        if self.stopped && State::load(&cfg.state_dir()).is_ok_and(|s| s.pending.is_some()) {
            tracing::info!("aktualizr-lite stays stopped until the pending installation is run");
            return;
        }
        if self.stopped {
            let argv = [
                policy.agent.systemctl.clone(),
                "start".into(),
                policy.agent.aklite_unit.clone(),
            ];
            match run_command(&argv, "starting aktualizr-lite again") {
                Ok(()) => {
                    let marker = Self::marker(policy);
                    if let Err(e) = std::fs::remove_file(&marker) {
                        tracing::warn!("removing {}: {e}", marker.display());
                    }
                }
                Err(e) => tracing::warn!("{}", e.one_line()),
            }
        }
    }
}

/// Sticks left in across a reboot they asked for (`<state dir>/agent.json`): udev announces
/// them again at boot, which is not an insertion.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Seen {
    #[serde(default)]
    left_in: Vec<LeftIn>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeftIn {
    uuid: String,
    fingerprint: String,
    boot_id: String,
    /// 90: the install waits for a reboot and is retried from the same stick after it.
    retry: bool,
}

impl Seen {
    fn file(dir: &Path) -> PathBuf {
        dir.join("agent.json")
    }

    fn load(dir: &Path) -> Seen {
        std::fs::read(Self::file(dir))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save(&self, dir: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).context("serialising agent.json")?;
        Ok(crate::durable::replace(&Self::file(dir), &bytes)?)
    }

    /// The record of this stick and bundle from an earlier boot, removed: the first sighting
    /// after the reboot is the stick left in; the next is a new insertion.
    fn take(&mut self, uuid: &str, fingerprint: &str, boot_id: &str) -> Option<LeftIn> {
        let at = self
            .left_in
            .iter()
            .position(|l| l.uuid == uuid && l.fingerprint == fingerprint && l.boot_id != boot_id)?;
        Some(self.left_in.remove(at))
    }

    fn remember(&mut self, uuid: &str, fingerprint: &str, boot_id: &str, retry: bool) {
        self.left_in.retain(|l| l.uuid != uuid);
        self.left_in.push(LeftIn {
            uuid: uuid.into(),
            fingerprint: fingerprint.into(),
            boot_id: boot_id.into(),
            retry,
        });
    }
}

fn current_name(sources: &Sources) -> Option<String> {
    crate::commands::current::current(&sources.config)
        .ok()
        .map(|c| format!("{} ({})", c.name, crate::policy::fmt_version(c.version)))
}

/// The name reports carry: the host name, unique per device on a site.
fn device_id() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "device".into())
}

fn display_label(stick: &Stick) -> &str {
    if stick.label.is_empty() {
        &stick.uuid
    } else {
        &stick.label
    }
}
