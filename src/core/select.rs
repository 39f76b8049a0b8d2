//! Which target of a verified bundle the device would install, and why the others not.
//!
//! Order as on the device (aktualizr-lite `CheckInLocal`): the bundle's list, then format,
//! hardware id, tags and version, then content present on the medium (the OSTree commit and
//! every app the device will run, after the `fetched-apps` and `compose_apps` shortlists).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::core::bundle::{valid_name, Bundle};
use crate::error::{Code, Error, Result};
use crate::tuf::{Target, Verified};

/// What the device contributes to selection.
pub(crate) struct Rules<'a> {
    pub hwid: &'a str,
    /// Target tags must meet one of these; empty: any.
    pub tags: &'a [String],
    /// `ostree+compose_apps`: apps are part of the target.
    pub compose: bool,
    /// `[pacman] compose_apps`: `None` runs every app of the target.
    pub compose_apps: Option<&'a [String]>,
    /// `--target NAME`.
    pub requested: Option<&'a str>,
}

/// One target of the bundle, with the verdict.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Candidate {
    pub name: String,
    pub version: Option<u64>,
    pub ostree: String,
    /// The apps the device would run with this target: name -> URI.
    pub apps: BTreeMap<String, String>,
    pub tags: Vec<String>,
    /// Why it cannot be installed; `None` when it can.
    pub rejected: Option<String>,
    #[serde(skip)]
    pub code: Code,
}

#[derive(Debug, serde::Serialize)]
pub struct Selection {
    /// Targets the bundle lists (or all TUF targets when it has no list).
    pub candidates: Vec<Candidate>,
    /// TUF targets the bundle does not list.
    pub unlisted: usize,
    /// Names the bundle lists that the TUF targets do not have.
    pub unknown: Vec<String>,
}

/// Which of the target's apps CI put in the bundle (`custom.fetched-apps`).
enum Fetched {
    All,
    None,
    Only(BTreeSet<String>),
}

fn fetched(t: &Target) -> Fetched {
    let Some(Value::Object(f)) = t.custom.get("fetched-apps") else {
        return Fetched::All;
    };
    match f.get("uri").and_then(Value::as_str) {
        Some(u) if !u.is_empty() => {}
        _ => return Fetched::None,
    }
    let list: BTreeSet<String> = f
        .get("shortlist")
        .and_then(Value::as_str)
        .unwrap_or("")
        .split([',', ' '])
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if list.is_empty() {
        return Fetched::All;
    }
    let apps = t.apps();
    let inter: BTreeSet<String> = list.into_iter().filter(|a| apps.contains_key(a)).collect();
    if inter.is_empty() {
        Fetched::None
    } else {
        Fetched::Only(inter)
    }
}

/// The apps the device will run with `t`.
fn device_apps(t: &Target, rules: &Rules) -> BTreeMap<String, String> {
    if !rules.compose {
        return BTreeMap::new();
    }
    let fetched = fetched(t);
    t.apps()
        .into_iter()
        .filter(|(name, _)| match &fetched {
            Fetched::All => true,
            Fetched::None => false,
            Fetched::Only(s) => s.contains(name),
        })
        .filter(|(name, _)| rules.compose_apps.is_none_or(|l| l.contains(name)))
        .collect()
}

/// Why `t` is not for this device (format, hardware id, tags, version), if it is not.
fn mismatch(t: &Target, rules: &Rules) -> Option<(Code, String)> {
    let no = |m: String| Some((Code::NoMatchingTarget, m));
    if t.target_format() != Some("OSTREE") {
        let f = t.describe_custom("targetFormat");
        return no(format!("targetFormat is {f}, not \"OSTREE\""));
    }
    let hw = t.hardware_ids();
    if hw != [rules.hwid] {
        return no(format!(
            "hardwareIds {hw:?} is not exactly [{:?}] (this device)",
            rules.hwid
        ));
    }
    if !rules.tags.is_empty() && !t.tags().iter().any(|x| rules.tags.iter().any(|y| y == x)) {
        return no(format!(
            "tags {:?} share none of the allowed tags {:?}",
            t.tags(),
            rules.tags
        ));
    }
    if t.version().is_none() {
        return no(match t.version_str() {
            Some(v) => format!("custom.version {v:?} is not a plain decimal number"),
            None => format!(
                "custom.version is {}, not a string holding a plain decimal number",
                t.describe_custom("version")
            ),
        });
    }
    if let Some(app) = t.apps().keys().find(|a| !valid_name(a)) {
        return Some((
            Code::InvalidBundle,
            format!("app name {app:?} is not a valid name"),
        ));
    }
    None
}

/// Judge every target the bundle lists, then pick one. The outer error is a failure to
/// read the bundle; the inner one says why no target can be picked.
pub(crate) fn select(
    v: &Verified,
    bundle: &Bundle,
    rules: &Rules,
) -> Result<(Selection, Result<Candidate>)> {
    let listed: Option<BTreeSet<&str>> = v
        .bundle
        .as_ref()
        .map(|b| b.index.targets.iter().map(String::as_str).collect());
    let in_list = |t: &&Target| listed.as_ref().is_none_or(|l| l.contains(t.name.as_str()));
    let tuf_names: BTreeSet<&str> = v.targets.iter().map(|t| t.name.as_str()).collect();
    let unknown: Vec<String> = listed
        .iter()
        .flatten()
        .filter(|n| !tuf_names.contains(*n))
        .map(|n| n.to_string())
        .collect();
    let targets: Vec<&Target> = v.targets.iter().filter(in_list).collect();
    let unlisted = v.targets.len() - targets.len();

    let app_uris = if rules.compose {
        bundle.app_uris()?
    } else {
        BTreeMap::new()
    };
    let mut candidates = Vec::with_capacity(targets.len());
    for t in targets {
        let apps = device_apps(t, rules);
        let mut verdict = mismatch(t, rules);
        if verdict.is_none() && !bundle.has_commit(&t.sha256)? {
            verdict = Some((
                Code::ContentMissing,
                format!("OSTree commit {} is not in ostree_repo/", t.sha256),
            ));
        }
        if verdict.is_none() {
            let missing: Vec<&str> = apps
                .iter()
                .filter(|(_, uri)| !app_uris.contains_key(*uri))
                .map(|(n, _)| n.as_str())
                .collect();
            if !missing.is_empty() {
                verdict = Some((
                    Code::ContentMissing,
                    format!("apps missing from apps/: {}", missing.join(", ")),
                ));
            }
        }
        let (code, rejected) = match verdict {
            Some((c, m)) => (c, Some(m)),
            None => (Code::Ok, None),
        };
        candidates.push(Candidate {
            name: t.name.clone(),
            version: t.version(),
            ostree: t.sha256.clone(),
            apps,
            tags: t.tags().iter().map(|s| s.to_string()).collect(),
            rejected,
            code,
        });
    }
    let sel = Selection {
        candidates,
        unlisted,
        unknown,
    };
    let chosen = choose(&sel, rules.requested, listed.is_some());
    Ok((sel, chosen))
}

fn choose(sel: &Selection, requested: Option<&str>, has_list: bool) -> Result<Candidate> {
    if let Some(name) = requested {
        let c = sel
            .candidates
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| {
                Error::target_not_found(format!("target {name:?} is not in the bundle"))
            })?;
        return match &c.rejected {
            None => Ok(c.clone()),
            Some(why) => Err(Error::new(c.code, format!("target {name:?}: {why}"))),
        };
    }
    if let Some(best) = sel
        .candidates
        .iter()
        .filter(|c| c.rejected.is_none())
        .max_by_key(|c| c.version)
    {
        return Ok(best.clone());
    }
    if sel.candidates.is_empty() {
        return Err(Error::no_matching_target(if has_list {
            "none of the bundle's targets are among the TUF targets"
        } else {
            "the bundle's TUF metadata has no targets"
        }));
    }
    // Report the most specific reason: a bad bundle, then missing content, then no match.
    let worst = [
        Code::InvalidBundle,
        Code::ContentMissing,
        Code::NoMatchingTarget,
    ]
    .into_iter()
    .find_map(|code| sel.candidates.iter().find(|c| c.code == code))
    .unwrap_or(&sel.candidates[0]);
    let more = match sel.candidates.len() {
        1 => String::new(),
        n => format!(" (and {} other target(s); see check)", n - 1),
    };
    Err(Error::new(
        worst.code,
        format!(
            "no installable target in the bundle: {}: {}{more}",
            worst.name,
            worst.rejected.as_deref().unwrap_or("rejected")
        ),
    ))
}
