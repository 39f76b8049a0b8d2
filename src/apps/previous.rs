//! The record of the apps that ran when `install` started: what a rollback restores.
//!
//! Taken before anything changes and kept in `<state dir>/previous-apps.json`, with a copy of
//! each app's project directory in `<state dir>/previous-apps/<app>/`. An app whose URI is
//! known (the device updated through us) comes back from the store; one that was there before
//! us (aktualizr-lite's "initial target": preloaded apps) comes back from that copy, with the
//! very images its containers ran, by id. A device that ran no apps records an empty list,
//! which is a real answer ("restore nothing"), unlike a missing or unreadable record.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::docker::Engine;
use super::project_name;
use crate::config::Pacman;

const SCHEMA: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    pub schema: u32,
    pub apps: Vec<RecordedApp>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecordedApp {
    pub name: String,
    /// Known when the app came from a target we installed.
    pub uri: Option<String>,
    /// Service -> image id its container ran.
    pub images: BTreeMap<String, String>,
    /// A copy of the project directory was taken.
    pub backup: bool,
}

impl Record {
    /// No apps: what a device without Compose apps restores.
    pub fn empty() -> Record {
        Record {
            schema: SCHEMA,
            apps: Vec::new(),
        }
    }
}

pub fn file(state_dir: &Path) -> PathBuf {
    state_dir.join("previous-apps.json")
}

pub(crate) fn backup_dir(state_dir: &Path, app: &str) -> PathBuf {
    state_dir.join("previous-apps").join(app)
}

/// Record the apps running now. `known` are the apps of the target the device runs, when
/// we know it (name -> URI).
pub fn take(
    pacman: &Pacman,
    engine: &Engine,
    known: &BTreeMap<String, String>,
    state_dir: &Path,
) -> crate::Result<Record> {
    let mut apps = Vec::new();
    let backups = state_dir.join("previous-apps");
    if backups.exists() {
        fs::remove_dir_all(&backups).with_context(|| format!("removing {}", backups.display()))?;
    }
    let mut names: Vec<String> = super::project_dirs(pacman)?;
    names.extend(known.keys().cloned());
    names.sort();
    names.dedup();
    for name in names {
        let containers = engine.project_containers(&project_name(&name))?;
        let running = containers.iter().any(|c| c.running);
        let uri = known.get(&name).cloned();
        if !running && uri.is_none() {
            continue;
        }
        let images = containers
            .iter()
            .filter_map(|c| Some((c.service.clone()?, c.image_id.clone())))
            .collect();
        let project = pacman.compose_apps_root.join(&name);
        let backup = project.is_dir();
        if backup {
            copy_tree(&project, &backup_dir(state_dir, &name))?;
            fs::File::open(&backups)
                .and_then(|d| d.sync_all())
                .with_context(|| format!("syncing {}", backups.display()))?;
        }
        apps.push(RecordedApp {
            name,
            uri,
            images,
            backup,
        });
    }
    let record = Record {
        schema: SCHEMA,
        apps,
    };
    let bytes = serde_json::to_vec_pretty(&record).context("serialising the apps record")?;
    crate::durable::replace(&file(state_dir), &bytes)?;
    Ok(record)
}

/// The record, or why there is none usable.
pub fn load(state_dir: &Path) -> Result<Record, String> {
    let path = file(state_dir);
    let bytes = fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let record: Record =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    if record.schema != SCHEMA {
        return Err(format!(
            "{}: schema {} is not {SCHEMA}",
            path.display(),
            record.schema
        ));
    }
    Ok(record)
}

/// Copy regular files and directories; a project directory holds nothing else we could
/// restore faithfully, and links could point anywhere.
pub fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in fs::read_dir(from).with_context(|| format!("listing {}", from.display()))? {
        let entry = entry.with_context(|| format!("listing {}", from.display()))?;
        let kind = entry.file_type()?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if kind.is_dir() {
            copy_tree(&src, &dst)?;
        } else if kind.is_file() {
            fs::copy(&src, &dst)
                .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
            // The record that names this copy is written next: after a power cut it must
            // not point at an empty compose file.
            fs::File::open(&dst)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("syncing {}", dst.display()))?;
        } else {
            tracing::warn!("{}: not a file or directory, not kept", src.display());
        }
    }
    fs::File::open(to)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", to.display()))
}
