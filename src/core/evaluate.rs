//! The evaluation core that `check`, `install` and the agent share: load the device's
//! config, policy, trust and state; verify the bundle; select a target; apply the policy.
//! [`evaluate`] returns a [`Report`] (what was found, for people and for `--json`) and, when
//! the answer is to install, a [`Plan`] for the installer. Nothing here changes the device.

use std::path::PathBuf;

use serde::Serialize;

use crate::config::{Config, PackageManager};
use crate::core::bundle::Bundle;
use crate::core::context::{Loaded, Records, Sources};
use crate::core::device::Device;
use crate::core::select::{self, Candidate, Selection};
use crate::core::signature::SignedTuf;
use crate::error::{Code, Error, Result};
use crate::policy::{decide, Decide, Policy};
use crate::state::{InstalledTarget, State};
use crate::tuf::verify::{BundleInfo, RoleInfo, RootStep};
use crate::tuf::{self, BundleRules, Verified};

/// What the command line asked for.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub sources: Sources,
    /// The config and policy already loaded by a flow that runs several steps (the agent):
    /// used as they are, not loaded again.
    pub loaded: Option<std::sync::Arc<Loaded>>,
    pub src_dir: PathBuf,
    pub target: Option<String>,
    /// `--force`: allow a downgrade (aklite-offline's meaning).
    pub force: bool,
    /// Where `install` reports the progress of its long copies (the agent's console).
    pub progress: Option<Progress>,
    /// `tuf/` already read (and its signature checked) by the agent, which needs it before
    /// `install` runs: the bundle's metadata is read once, whoever reads it.
    pub metadata: Option<std::sync::Arc<SignedTuf>>,
    /// Our state and aktualizr-lite's view, already read by `install` under the lock.
    pub records: Option<std::sync::Arc<Records>>,
}

/// A progress sink: `(what, done, total)`, called from the copying threads.
#[derive(Clone)]
pub struct Progress(pub std::sync::Arc<ProgressFn>);

/// `(what, done, total)`.
pub(crate) type ProgressFn = dyn Fn(&str, u64, u64) + Send + Sync;

impl Progress {
    pub fn report(&self, what: &str, done: u64, total: u64) {
        (self.0)(what, done, total)
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress")
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub exit_code: u8,
    pub error: Option<String>,
    /// The device's clock when it judged the bundle (expiry dates are compared with it).
    pub device_time: String,
    pub device: Option<DeviceSummary>,
    /// The device's root chain, then the roots the bundle adds.
    pub roots: Vec<RootStep>,
    pub timestamp: Option<RoleInfo>,
    pub snapshot: Option<RoleInfo>,
    pub targets: Option<RoleInfo>,
    pub bundle: Option<BundleInfo>,
    pub selection: Option<Selection>,
    pub selected: Option<Candidate>,
    pub running: Option<InstalledTarget>,
    /// Where the running target is known from (`running`'s rule).
    pub running_from: Option<String>,
    pub decision: Option<String>,
    /// What an operator must know besides the decision: aktualizr-lite's database not
    /// used, the running version unknown, a mirror not written yet.
    pub notes: Vec<String>,
    /// The operator's key that signed the bundle, when it is signed.
    pub signature: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct DeviceSummary {
    pub hardware_id: String,
    pub tags: Vec<String>,
    #[serde(rename = "type")]
    pub kind: crate::config::DeviceType,
    pub package_manager: PackageManager,
    pub booted_commit: Option<String>,
    /// When the running image was built (the booted commit's timestamp), if known: a clock
    /// before it is wrong.
    pub built: Option<String>,
    pub trusted_root_version: u64,
}

/// What `install` is to do.
pub(crate) struct Plan {
    pub code: Code,
    pub target: Candidate,
    pub verified: Verified,
    pub bundle: Bundle,
    pub config: Config,
    pub policy: Policy,
    /// For a new rootfs: the objects of its commit that the device lacks, checked on the
    /// stick (`None` when the rootfs stays).
    pub rootfs: Option<crate::ostree::RootfsPlan>,
    /// Our state as the evaluation read it (under `install`'s lock: still current).
    pub state: State,
}

/// Run every check; the report is filled as far as the checks got.
pub(crate) fn evaluate(req: &Request) -> (Report, Result<Plan>) {
    let mut report = Report {
        device_time: crate::clock::now_utc(),
        ..Report::default()
    };
    let result = evaluate_into(req, &mut report);
    let code = match &result {
        Ok(plan) => plan.code,
        Err(e) => {
            report.error = Some(e.one_line());
            e.code()
        }
    };
    report.exit_code = code.as_u8();
    (report, result)
}

fn evaluate_into(req: &Request, report: &mut Report) -> Result<Plan> {
    let Loaded { config, policy } = match &req.loaded {
        Some(loaded) => Loaded::clone(loaded),
        None => req.sources.load()?,
    };
    let records = match &req.records {
        Some(r) => Records::clone(r),
        None => Records::load(&config)?,
    };
    let Records { state, aklite } = records;
    report.notes.extend(aklite.warning.clone());
    let device = Device::load(&config, &aklite)?;
    let booted = crate::ostree::booted_commit(&config.pacman)?;
    let built = crate::clock::build_date(&config.pacman, booted.as_deref());
    let clock = tuf::Clock {
        now: &report.device_time,
        built: built.as_deref(),
    };
    report.notes.extend(clock.warning());
    report.device = Some(DeviceSummary {
        hardware_id: device.hwid.clone(),
        tags: device.tags.clone(),
        kind: device.kind,
        package_manager: config.pacman.kind,
        booted_commit: booted.clone(),
        built: built.clone(),
        trusted_root_version: device.trust.root.version,
    });
    report.roots = device.trust.chain.clone();

    let allowed_tags = policy
        .update
        .allowed_tags
        .clone()
        .unwrap_or_else(|| device.tags.clone());
    let bundle = Bundle::open(&req.src_dir)?;
    let metadata = match &req.metadata {
        Some(m) => m.clone(),
        None => std::sync::Arc::new(crate::core::signature::read_tuf(
            &bundle,
            &policy.signature,
        )?),
    };
    report.signature = metadata.signer.clone();
    // Tests swap the files on the stick here: nothing may read them again.
    crate::failpoint::pause("verify-metadata");
    let rules = BundleRules {
        device_type: device.bundle_type(),
        allowed_tags: &allowed_tags,
        require_index: policy.update.require_bundle_targets,
    };
    let verified = tuf::verify_bundle(&device.trust, &metadata.tuf, &rules, clock)?;
    report.roots = verified.roots.clone();
    report.timestamp = Some(verified.timestamp.clone());
    report.snapshot = Some(verified.snapshot.clone());
    report.targets = Some(verified.targets_role.clone());
    report.bundle = verified.bundle.clone();

    let compose = config.pacman.kind == PackageManager::OstreeComposeApps;
    let sel_rules = select::Rules {
        hwid: &device.hwid,
        tags: &allowed_tags,
        compose,
        compose_apps: config.pacman.compose_apps.as_deref(),
        requested: req.target.as_deref(),
    };
    let (selection, chosen) = select::select(&verified, &bundle, &sel_rules)?;
    report.selection = Some(selection);
    let chosen = chosen?;
    report.selected = Some(chosen.clone());

    let commit_version = |c: &str| {
        crate::ostree::commit_version(&config.pacman, c)
            .ok()
            .flatten()
    };
    let found = crate::core::running::running(
        &state,
        booted.as_deref(),
        &aklite,
        &verified.targets,
        &device.hwid,
        &commit_version,
    );
    let mut running = found.as_ref().map(|(r, _)| r.clone());
    if let Some((r, source)) = &found {
        report.running_from = Some(source.describe().to_string());
        if *source != crate::core::running::Source::Recorded {
            // Not ours: whether its apps run is not known, so they are synced
            // (aktualizr-lite's "Syncing Active Target Apps") rather than assumed in place.
            if let Some(r) = running.as_mut() {
                r.apps.clear();
            }
        }
        if r.version.is_none() {
            report.notes.push(format!(
                "the running version is unknown ({}, commit {}): the downgrade rule cannot apply",
                r.name, r.sha256
            ));
        }
    }
    report.running = running.clone();
    let bundle_tag = verified.bundle.as_ref().map(|b| b.index.tag.as_str());
    let (code, why) = decide(&Decide {
        policy: &policy,
        state: &state,
        chosen: &chosen,
        running: running.as_ref(),
        booted: booted.as_deref(),
        device_tags: &device.tags,
        bundle_tag,
        compose,
        force: req.force,
    })?;
    report.decision = Some(why);
    pending_elsewhere(&state, &aklite)?;
    // The rootfs it would copy, checked now, so that `check` says what `install` would.
    let rootfs = match code {
        Code::NeedsReboot => Some(crate::ostree::scan_bundle_commit(
            &config.pacman,
            &bundle,
            &chosen.ostree,
        )?),
        _ => None,
    };
    Ok(Plan {
        code,
        target: chosen,
        verified,
        bundle,
        config,
        policy,
        rootfs,
        state,
    })
}

/// An installation waiting for its reboot and `run`: ours, or aktualizr-lite's own (not
/// one our state is still mirroring into its database): install over it and aktualizr-lite
/// would finalize a target that is not booted and mark a good one bad.
fn pending_elsewhere(state: &State, aklite: &crate::aklite::View) -> Result<()> {
    if let Some(p) = &state.pending {
        return Err(Error::new(
            Code::Busy,
            format!(
                "an installation of {} is pending: reboot and run `usb-update run` first",
                p.target.name
            ),
        ));
    }
    let mirrored = |cid: &str| {
        state.aklite.as_ref().is_some_and(|m| {
            m.correlation_id == cid || m.bad.as_ref().is_some_and(|b| b.correlation_id == cid)
        })
    };
    if let Some(p) = aklite.facts().and_then(|f| f.pending()) {
        if !mirrored(&p.correlation_id) {
            return Err(Error::new(
                Code::Busy,
                format!(
                    "aktualizr-lite's installation of {} (commit {}) is pending in {}: reboot \
                     so that aktualizr-lite finishes it, then try again",
                    p.name,
                    p.sha256,
                    aklite.db_path.display()
                ),
            ));
        }
    }
    if aklite.busy {
        return Err(Error::new(
            Code::Busy,
            format!(
                "aktualizr-lite's database {} is busy: another updater is writing it",
                aklite.db_path.display()
            ),
        ));
    }
    Ok(())
}
