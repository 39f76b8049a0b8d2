//! Who the device is and what it already trusts: hardware id, tags, device type, and the
//! TUF root chain (provisioned in the image, then extended by earlier updates).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::config::{Config, DeviceType};
use crate::error::{Error, Result};
use crate::state::State;
use crate::tuf::meta::Envelope;
use crate::tuf::verify::{anchor, rotate, RootStep, StoredVersions};
use crate::tuf::Trust;

#[derive(Debug, Clone)]
pub struct Device {
    pub hwid: String,
    /// `[pacman] tags`: what the device follows now.
    pub tags: Vec<String>,
    pub kind: DeviceType,
    pub trust: Trust,
}

impl Device {
    pub fn load(cfg: &Config) -> Result<Device> {
        let kind = cfg.device_type()?;
        let trust = load_trust(cfg, kind)?;
        Ok(Device {
            hwid: cfg.provision.primary_ecu_hardware_id.clone(),
            tags: cfg.pacman.tags.clone(),
            kind,
            trust,
        })
    }

    /// The bundle type this device accepts (`None`: undefined, not checked).
    pub fn bundle_type(&self) -> Option<&'static str> {
        match self.kind {
            DeviceType::Ci => Some("ci"),
            DeviceType::Prod => Some("prod"),
            DeviceType::Undefined => None,
        }
    }
}

fn read_envelope(path: &Path) -> Result<Envelope> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Envelope::parse(&bytes)
        .map_err(|e| Error::security(format!("trusted metadata {}: {e}", path.display())))
}

/// `N.root.json` files in `dir`, by version.
fn root_files(dir: &Path) -> anyhow::Result<BTreeMap<u64, PathBuf>> {
    let mut out = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(n) = name.strip_suffix(".root.json") else {
            continue;
        };
        if let (true, Ok(v)) = (n.bytes().all(|b| b.is_ascii_digit()), n.parse::<u64>()) {
            out.insert(v, entry.path());
        }
    }
    Ok(out)
}

/// The provisioned roots for this device type: `N.root.json` directly in
/// `uptane_metadata_path`, or in its `ci/` / `prod/` directory. A device of undefined type
/// imports only `ci/` roots 1 and 2, which are the same for both chains (as aktualizr-lite).
pub fn provisioned_roots(cfg: &Config, kind: DeviceType) -> anyhow::Result<BTreeMap<u64, PathBuf>> {
    let base = &cfg.storage.uptane_metadata_path;
    let (sub, max) = match kind {
        DeviceType::Prod => ("prod", u64::MAX),
        DeviceType::Ci => ("ci", u64::MAX),
        DeviceType::Undefined => ("ci", 2),
    };
    let mut roots = root_files(&base.join(sub))?;
    roots.retain(|v, _| *v <= max);
    // Roots directly in the directory are one chain for every device type.
    roots.extend(root_files(base)?);
    Ok(roots)
}

/// The device's trusted root: the provisioned chain verified from its first root, then the
/// roots stored by earlier updates, each a verified rotation of the one before.
pub fn load_trust(cfg: &Config, kind: DeviceType) -> Result<Trust> {
    let provisioned = provisioned_roots(cfg, kind)?;
    let mut iter = provisioned.iter();
    let Some((_, first)) = iter.next() else {
        return Err(Error::not_found(format!(
            "no trusted root: no N.root.json in {} (or its ci/, prod/)",
            cfg.storage.uptane_metadata_path.display()
        )));
    };
    let mut root = anchor(&read_envelope(first)?, &first.display().to_string())?;
    let mut chain = vec![step(&root, first)];
    for (_, path) in iter {
        root = rotate(&root, &read_envelope(path)?, &path.display().to_string())?;
        chain.push(step(&root, path));
    }
    let stored_dir = State::tuf_dir(&cfg.state_dir());
    loop {
        let path = stored_dir.join(format!("{}.root.json", root.version + 1));
        if !path.exists() {
            break;
        }
        root = rotate(&root, &read_envelope(&path)?, &path.display().to_string())?;
        chain.push(step(&root, &path));
    }
    let stored = StoredVersions {
        timestamp: stored_version(&stored_dir.join("timestamp.json"))?,
        snapshot: stored_version(&stored_dir.join("snapshot.json"))?,
        targets: stored_version(&stored_dir.join("targets.json"))?,
    };
    Ok(Trust {
        root,
        chain,
        stored,
    })
}

fn step(root: &crate::tuf::Root, path: &Path) -> RootStep {
    RootStep {
        version: root.version,
        expires: root.expires.clone(),
        source: path.display().to_string(),
    }
}

fn stored_version(path: &Path) -> Result<Option<u64>> {
    if !path.exists() {
        return Ok(None);
    }
    let env = read_envelope(path)?;
    let v = env
        .version()
        .map_err(|e| anyhow::anyhow!("stored metadata {}: {e}", path.display()))?;
    Ok(Some(v))
}
