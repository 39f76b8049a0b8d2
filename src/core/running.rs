//! What the device runs. The booted commit is the truth: the target our last update
//! recorded counts only while its commit is booted (another agent may have moved the device
//! since); otherwise what aktualizr-lite knows of that commit (its database, or the import
//! file of its first start), then the trusted TUF targets with that commit, then the
//! commit's own `version` metadata. What none of them knows is an "Initial Target" of
//! unknown version, as aktualizr-lite calls it, and the downgrade rule cannot apply to it.

use serde::Serialize;

use crate::aklite::View;
use crate::core::context::Records;
use crate::state::{InstalledTarget, State};
use crate::tuf::Target;

/// Where the answer came from (for the report and the console).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Our last update, its commit booted.
    Recorded,
    /// aktualizr-lite's database or import file.
    Aklite,
    /// A trusted TUF target (or several: the lowest version) with the booted commit.
    TufTarget,
    /// The booted commit's `version` metadata.
    CommitMetadata,
    /// Nothing knows the version.
    Unknown,
}

impl Source {
    pub fn describe(self) -> &'static str {
        match self {
            Source::Recorded => "recorded by our last update",
            Source::Aklite => "known to aktualizr-lite",
            Source::TufTarget => "a trusted TUF target with the booted commit",
            Source::CommitMetadata => "the booted commit's version metadata",
            Source::Unknown => "unknown",
        }
    }
}

/// The initial target's name (aktualizr-lite's).
pub(crate) const INITIAL: &str = "Initial Target";

/// The running target and where it is known from; `None` when nothing counts as booted
/// and no update recorded one.
pub fn running(
    state: &State,
    booted: Option<&str>,
    aklite: &View,
    targets: &[Target],
    hwid: &str,
    commit_version: &dyn Fn(&str) -> Option<String>,
) -> Option<(InstalledTarget, Source)> {
    let Some(booted) = booted else {
        return state.current.clone().map(|c| (c, Source::Recorded));
    };
    if let Some(cur) = state.current.as_ref().filter(|c| c.sha256 == booted) {
        return Some((cur.clone(), Source::Recorded));
    }
    let known = aklite.current(booted);
    if let Some(k) = known.as_ref().filter(|k| k.version.is_some()) {
        return Some((k.clone(), Source::Aklite));
    }
    let mut same: Vec<&Target> = targets
        .iter()
        .filter(|t| t.sha256 == booted && t.hardware_ids() == [hwid])
        .collect();
    same.sort_by_key(|t| t.version());
    match same.as_slice() {
        [] => {}
        [t] => {
            let mut r = crate::aklite::known_target(&t.name, booted, &t.custom);
            r.version = t.version();
            return Some((r, Source::TufTarget));
        }
        // Several targets share the commit (apps-only releases): which one runs is not
        // known from the rootfs; the lowest version is a safe floor for the downgrade rule.
        many => {
            let r = InstalledTarget {
                name: INITIAL.into(),
                version: many[0].version(),
                sha256: booted.to_string(),
                ..Default::default()
            };
            return Some((r, Source::TufTarget));
        }
    }
    let plain = |v: &str| {
        (!v.is_empty()
            && v.bytes().all(|b| b.is_ascii_digit())
            && (v == "0" || !v.starts_with('0')))
        .then(|| v.parse::<u64>().ok())
        .flatten()
    };
    if let Some(v) = commit_version(booted).as_deref().and_then(plain) {
        let r = InstalledTarget {
            name: INITIAL.into(),
            version: Some(v),
            sha256: booted.to_string(),
            ..Default::default()
        };
        return Some((r, Source::CommitMetadata));
    }
    let r = known.unwrap_or_else(|| InstalledTarget {
        name: INITIAL.into(),
        sha256: booted.to_string(),
        ..Default::default()
    });
    Some((r, Source::Unknown))
}

/// The running target's name, without bundle metadata (what callbacks are told).
pub(crate) fn running_name(cfg: &crate::config::Config, records: &Records) -> String {
    let booted = crate::ostree::booted_commit(&cfg.pacman).ok().flatten();
    let Records { state, aklite } = records;
    let hwid = &cfg.provision.primary_ecu_hardware_id;
    let commit_version = |c: &str| crate::ostree::commit_version(&cfg.pacman, c).ok().flatten();
    running(state, booted.as_deref(), aklite, &[], hwid, &commit_version)
        .map_or_else(|| INITIAL.to_string(), |(t, _)| t.name)
}

#[cfg(test)]
mod tests;
