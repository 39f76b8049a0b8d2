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
    /// Who the device is, as aktualizr-lite sees it too: the primary ECU's hardware id
    /// from its database (frozen at its first start) wins over the config, and the TUF
    /// metadata it stored extend our trust (its roots) and set rollback floors (its
    /// versions of the other roles).
    pub fn load(cfg: &Config, aklite: &crate::aklite::View) -> Result<Device> {
        let kind = cfg.device_type()?;
        let trust = load_trust(cfg, kind, aklite.facts())?;
        Ok(Device {
            hwid: aklite
                .hardware_id()
                .unwrap_or(&cfg.provision.primary_ecu_hardware_id)
                .to_string(),
            tags: cfg.pacman.tags.clone(),
            kind,
            trust,
        })
    }

    /// Serial and hardware id without the trust (which may be what failed): what tells two
    /// devices of the same hostname apart in the report on the stick. aktualizr-lite's
    /// database wins over the config, as in [`Device::load`].
    pub fn identity(cfg: &Config, aklite: &crate::aklite::View) -> (Option<String>, String) {
        let serial = aklite
            .serial()
            .map(str::to_owned)
            .or_else(|| cfg.provision.primary_ecu_serial.clone());
        let hwid = aklite
            .hardware_id()
            .unwrap_or(&cfg.provision.primary_ecu_hardware_id);
        (serial, hwid.to_string())
    }

    /// The bundle type this device accepts (`None`: undefined, not checked).
    pub(crate) fn bundle_type(&self) -> Option<&'static str> {
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
pub(crate) fn provisioned_roots(
    cfg: &Config,
    kind: DeviceType,
) -> anyhow::Result<BTreeMap<u64, PathBuf>> {
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
/// roots stored by earlier updates (ours, or aktualizr-lite's in its database), each a
/// verified rotation of the one before; a newer root of aktualizr-lite's beyond a gap is
/// an anchor of its own (it verified the chain when it stored it), checked as self-signed.
pub(crate) fn load_trust(
    cfg: &Config,
    kind: DeviceType,
    aklite: Option<&crate::aklite::db::Facts>,
) -> Result<Trust> {
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
    let db_roots = aklite.map(|f| &f.roots);
    let db_name = |v: u64| {
        format!(
            "{} (aktualizr-lite) root v{v}",
            cfg.storage.sqldb_path.display()
        )
    };
    loop {
        let next = root.version + 1;
        let path = stored_dir.join(format!("{next}.root.json"));
        if path.exists() {
            root = rotate(&root, &read_envelope(&path)?, &path.display().to_string())?;
            chain.push(step(&root, &path));
        } else if let Some(bytes) = db_roots.and_then(|r| r.get(&next)) {
            root = rotate(&root, &db_envelope(bytes, &db_name(next))?, &db_name(next))?;
            chain.push(step_named(&root, db_name(next)));
        } else {
            break;
        }
    }
    if let Some((&v, bytes)) = db_roots.and_then(|r| r.last_key_value()) {
        if v > root.version {
            root = anchor(&db_envelope(bytes, &db_name(v))?, &db_name(v))?;
            chain.push(step_named(&root, db_name(v)));
        }
    }
    let db_version = |kind: i64| {
        aklite
            .and_then(|f| f.roles.get(&kind))
            .and_then(|b| Envelope::parse(b).ok())
            .and_then(|e| e.version().ok())
    };
    use crate::aklite::db::{SNAPSHOT, TARGETS, TIMESTAMP};
    let stored = StoredVersions {
        timestamp: stored_version(&stored_dir.join("timestamp.json"))?.max(db_version(TIMESTAMP)),
        snapshot: stored_version(&stored_dir.join("snapshot.json"))?.max(db_version(SNAPSHOT)),
        targets: stored_version(&stored_dir.join("targets.json"))?.max(db_version(TARGETS)),
    };
    Ok(Trust {
        root,
        chain,
        stored,
    })
}

fn step(root: &crate::tuf::Root, path: &Path) -> RootStep {
    step_named(root, path.display().to_string())
}

fn step_named(root: &crate::tuf::Root, source: String) -> RootStep {
    RootStep {
        version: root.version,
        expires: root.expires.clone(),
        source,
    }
}

fn db_envelope(bytes: &[u8], what: &str) -> Result<Envelope> {
    Envelope::parse(bytes).map_err(|e| Error::security(format!("trusted metadata {what}: {e}")))
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
