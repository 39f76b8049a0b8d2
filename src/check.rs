//! `usb-update check`: everything `install` decides, without changing anything.
//!
//! [`evaluate`] is the shared front half of `check` and `install`: load the device's config,
//! policy, trust and state; verify the bundle; select a target; apply the policy. It returns
//! a [`Report`] (what was found, for people and for `--json`) and, when the answer is to
//! install, a [`Plan`] for the installer.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::bundle::Bundle;
use crate::config::{Config, PackageManager};
use crate::device::Device;
use crate::error::{Code, Result};
use crate::policy::{decide, fmt_version, Decide, Policy};
use crate::select::{self, Candidate, Selection};
use crate::signature::SignedTuf;
use crate::state::{InstalledTarget, State};
use crate::tuf::verify::{BundleInfo, RoleInfo, RootStep};
use crate::tuf::{self, BundleRules, Verified};

/// What the command line asked for.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub config: Vec<PathBuf>,
    pub policy: Vec<PathBuf>,
    pub src_dir: PathBuf,
    pub target: Option<String>,
    /// `--force`: allow a downgrade (aklite-offline's meaning).
    pub force: bool,
    /// Where `install` reports the progress of its long copies (the agent's console).
    pub progress: Option<Progress>,
    /// `tuf/` already read (and its signature checked) by the agent, which needs it before
    /// `install` runs: the bundle's metadata is read once, whoever reads it.
    pub metadata: Option<std::sync::Arc<SignedTuf>>,
}

/// A progress sink: `(what, done, total)`, called from the copying threads.
#[derive(Clone)]
pub struct Progress(pub std::sync::Arc<ProgressFn>);

/// `(what, done, total)`.
pub type ProgressFn = dyn Fn(&str, u64, u64) + Send + Sync;

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
    pub decision: Option<String>,
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
    pub trusted_root_version: u64,
}

/// What `install` is to do.
pub struct Plan {
    pub code: Code,
    pub target: Candidate,
    pub verified: Verified,
    pub bundle: Bundle,
    pub config: Config,
    pub policy: Policy,
}

/// Run every check; the report is filled as far as the checks got.
pub fn evaluate(req: &Request) -> (Report, Result<Plan>) {
    let mut report = Report::default();
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
    let config = Config::load(&req.config)?;
    let policy = Policy::load(&req.policy)?;
    let device = Device::load(&config)?;
    let state = State::load(&config.state_dir())?;
    let booted = crate::ostree::booted_commit(&config.pacman)?;
    report.device = Some(DeviceSummary {
        hardware_id: device.hwid.clone(),
        tags: device.tags.clone(),
        kind: device.kind,
        package_manager: config.pacman.kind,
        booted_commit: booted.clone(),
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
        None => std::sync::Arc::new(crate::signature::read_tuf(&bundle, &policy.signature)?),
    };
    report.signature = metadata.signer.clone();
    // Tests swap the files on the stick here: nothing may read them again.
    crate::failpoint::pause("verify-metadata");
    let rules = BundleRules {
        device_type: device.bundle_type(),
        allowed_tags: &allowed_tags,
        require_index: policy.update.require_bundle_targets,
    };
    let verified = tuf::verify_bundle(&device.trust, &metadata.tuf, &rules, &tuf::now_utc())?;
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

    let mut running = running_target(&state, booted.as_deref(), &verified, &device.hwid);
    if state.current.is_none() {
        // Known by its commit only: whether its apps run is not known, so they are synced
        // (aktualizr-lite's "Syncing Active Target Apps") rather than assumed in place.
        if let Some(r) = running.as_mut() {
            r.apps.clear();
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
    Ok(Plan {
        code,
        target: chosen,
        verified,
        bundle,
        config,
        policy,
    })
}

/// What the device runs: the target recorded by an earlier update or, on a device we never
/// updated, the TUF target whose commit is booted (aktualizr-lite's "initial target").
pub fn running_target(
    state: &State,
    booted: Option<&str>,
    verified: &Verified,
    hwid: &str,
) -> Option<InstalledTarget> {
    running_target_from(state, booted, &verified.targets, hwid)
}

/// [`running_target`] over any list of trusted targets.
pub fn running_target_from(
    state: &State,
    booted: Option<&str>,
    targets: &[crate::tuf::Target],
    hwid: &str,
) -> Option<InstalledTarget> {
    if let Some(cur) = &state.current {
        return Some(cur.clone());
    }
    let booted = booted?;
    let mut known: Vec<&crate::tuf::Target> = targets
        .iter()
        .filter(|t| t.sha256 == booted && t.hardware_ids() == [hwid])
        .collect();
    known.sort_by_key(|t| t.version());
    Some(match known.as_slice() {
        [t] => InstalledTarget {
            name: t.name.clone(),
            version: t.version(),
            sha256: booted.to_string(),
            apps: t.apps(),
        },
        // Several targets share the commit (apps-only releases): which one runs is not
        // known from the rootfs; the lowest version is a safe floor for the downgrade rule.
        many => InstalledTarget {
            name: "Initial Target".into(),
            version: many.first().and_then(|t| t.version()),
            sha256: booted.to_string(),
            apps: Default::default(),
        },
    })
}

/// The human lines of a report, one per step.
pub fn human_lines(r: &Report, src: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(d) = &r.device {
        out.push(format!(
            "device: hardware id {}, tags {:?}, type {}, package manager {}, booted commit {}",
            d.hardware_id,
            d.tags,
            serde_name(&d.kind),
            serde_name(&d.package_manager),
            d.booted_commit.as_deref().unwrap_or("unknown")
        ));
    }
    for s in &r.roots {
        out.push(format!(
            "root: v{} expires {} ({})",
            s.version, s.expires, s.source
        ));
    }
    for (name, role) in [
        ("timestamp", &r.timestamp),
        ("snapshot", &r.snapshot),
        ("targets", &r.targets),
    ] {
        if let Some(i) = role {
            out.push(format!("{name}: v{} expires {}", i.version, i.expires));
        }
    }
    if let Some(key) = &r.signature {
        out.push(format!("operator signature: by trusted key {key}"));
    }
    match (&r.bundle, r.timestamp.is_some()) {
        (Some(b), _) => out.push(format!(
            "bundle {}: type {}, tag {}, v{} expires {}, lists {}",
            src.display(),
            b.index.kind,
            b.index.tag,
            b.version,
            b.expires,
            b.index.targets.join(", ")
        )),
        (None, true) => out.push(format!(
            "bundle {}: no bundle-targets.json (allowed by policy)",
            src.display()
        )),
        (None, false) => {}
    }
    if let Some(s) = &r.selection {
        for c in &s.candidates {
            let verdict = c
                .rejected
                .as_deref()
                .map_or("candidate".to_string(), |w| format!("not a candidate: {w}"));
            out.push(format!(
                "target {} ({}): {verdict}",
                c.name,
                fmt_version(c.version)
            ));
        }
        for n in &s.unknown {
            out.push(format!(
                "target {n}: listed by the bundle but not a TUF target"
            ));
        }
        if s.unlisted > 0 {
            out.push(format!(
                "{} other TUF target(s) are not in this bundle",
                s.unlisted
            ));
        }
    }
    if let Some(c) = &r.selected {
        let apps: Vec<&str> = c.apps.keys().map(String::as_str).collect();
        out.push(format!(
            "selected: {} ({}), commit {}, apps [{}]",
            c.name,
            fmt_version(c.version),
            c.ostree,
            apps.join(", ")
        ));
    }
    if let Some(run) = &r.running {
        out.push(format!(
            "running: {} ({}), commit {}",
            run.name,
            fmt_version(run.version),
            run.sha256
        ));
    }
    if let Some(d) = &r.decision {
        out.push(format!("policy: {d}"));
    }
    if let Some(e) = &r.error {
        out.push(format!("error: {e}"));
    }
    out.push(format!("install would return {}", r.exit_code));
    out
}

/// The name a unit enum has in JSON, for the human lines.
fn serde_name(v: &impl Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "?".into(),
    }
}
