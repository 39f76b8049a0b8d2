//! The policy's verdict on a selected target: the code `install` returns and why.
//!
//! Order: the running target again (0 unless reinstall is allowed), then the refusals that
//! need no comparison (denylist, version window, tag switch: 103), then downgrade (102).

use crate::core::select::Candidate;
use crate::error::{Code, Error, Result};
use crate::state::{InstalledTarget, State};

use super::Policy;

pub(crate) struct Decide<'a> {
    pub policy: &'a Policy,
    pub state: &'a State,
    pub chosen: &'a Candidate,
    pub running: Option<&'a InstalledTarget>,
    pub booted: Option<&'a str>,
    pub device_tags: &'a [String],
    pub bundle_tag: Option<&'a str>,
    pub compose: bool,
    pub force: bool,
}

/// The policy's verdict on the selected target: the code `install` returns and why.
pub(crate) fn decide(d: &Decide) -> Result<(Code, String)> {
    let p = &d.policy.update;
    let c = d.chosen;
    let version = c.version.unwrap_or(0);
    let same_commit = d.booted == Some(c.ostree.as_str());
    let same_apps = d.running.is_some_and(|r| r.apps == c.apps) || !d.compose;
    let same = d.running.is_some_and(|r| r.name == c.name) && same_commit && same_apps;
    if same && !p.allow_reinstall {
        return Ok((
            Code::Ok,
            format!("{} is already installed: nothing to do", c.name),
        ));
    }
    if let Some(f) = d.state.is_failed(&c.name) {
        if !p.retry_failed_targets {
            return Err(Error::policy(format!(
                "{} failed on this device before ({}); the policy does not retry failed targets",
                c.name, f.reason
            )));
        }
    }
    if let Some(min) = p.min_version.filter(|m| version < *m) {
        return Err(Error::policy(format!(
            "{} has version {version}, below the policy's minimum {min}",
            c.name
        )));
    }
    if let Some(max) = p.max_version.filter(|m| version > *m) {
        return Err(Error::policy(format!(
            "{} has version {version}, above the policy's maximum {max}",
            c.name
        )));
    }
    if let Some(tag) = d.bundle_tag {
        let switch = !d.device_tags.is_empty() && !d.device_tags.iter().any(|t| t == tag);
        if switch && !p.allow_tag_switch {
            return Err(Error::policy(format!(
                "the bundle is for tag {tag:?} but the device follows {:?}; the policy does not allow a tag switch",
                d.device_tags
            )));
        }
    }
    let running_version = d.running.and_then(|r| r.version);
    if running_version.is_none() && !(p.allow_unknown_running_version || d.force) {
        return Err(Error::policy(format!(
            "the running version is unknown, so the downgrade rule cannot apply to {}; the policy \
             does not allow such installs (allow_unknown_running_version, or --force)",
            c.name
        )));
    }
    if let Some(rv) = running_version.filter(|rv| version < *rv) {
        if !(p.allow_downgrade || d.force) {
            return Err(Error::downgrade(format!(
                "{} (version {version}) is older than the running version {rv}: downgrade refused \
                 (--force or policy allow_downgrade)",
                c.name
            )));
        }
    }
    let from = match d.running {
        Some(r) => format!("{} ({})", r.name, fmt_version(r.version)),
        None => "an unknown target".into(),
    };
    if !same_commit {
        return Ok((
            Code::NeedsReboot,
            format!(
                "install {} ({version}) over {from}: new rootfs, reboot needed",
                c.name
            ),
        ));
    }
    if d.compose {
        return Ok((
            Code::AppsNeedRestart,
            format!(
                "install {} ({version}) over {from}: same rootfs, apps only",
                c.name
            ),
        ));
    }
    Ok((
        Code::Ok,
        format!("{} runs this commit already: nothing to do", c.name),
    ))
}

pub(crate) fn fmt_version(v: Option<u64>) -> String {
    v.map_or_else(|| "version unknown".into(), |v| format!("version {v}"))
}
