//! Our state, mirrored into aktualizr-lite's database (or, before it has one, its import
//! file), so that the online agent agrees with what we did.
//!
//! Each step of ours that changes what runs (install, commit, rollback) records in
//! `state.json`, in the same atomic save, the [`Mirror`] the database must show after it.
//! The mirror is applied right after the save and again at every start of `install` and
//! `run` until the database shows it: a crash between our state and the database converges,
//! and a database that was busy catches up. Whether it is applied is read from the
//! database itself (the row of the step's correlation id), so applying it twice writes
//! nothing the second time, and a database that aktualizr-lite moved on since is left as it
//! is.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::db::{self, Db, DbError, Facts, Mode};
use super::{current_target, import};
use crate::config::Config;
use crate::state::{InstalledTarget, State};
use crate::tuf::Envelope;

/// What aktualizr-lite's database must say after our last step.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Mirror {
    /// Of the row this step writes: unique per step (`<version>-<uuid>`, as there).
    pub correlation_id: String,
    /// A target that failed here, marked bad first (aktualizr-lite then never installs it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bad: Option<Bad>,
    pub then: Then,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Bad {
    pub target: InstalledTarget,
    /// The correlation id its pending row was written with.
    pub correlation_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Then {
    /// Installed, waiting for `run`: pending, with the reboot flag when the rootfs changed
    /// (and the sentinel while the device has not rebooted since `boot_id`), our trusted
    /// metadata stored.
    Pending {
        target: InstalledTarget,
        reboot: bool,
        boot_id: String,
    },
    /// Running: current, the reboot flag cleared.
    Current { target: InstalledTarget },
    /// Only the bad mark, the reboot flag cleared (what runs is unknown to us).
    Nothing,
}

impl Mirror {
    pub fn new(then: Then, bad: Option<Bad>) -> Mirror {
        let version = match &then {
            Then::Pending { target, .. } | Then::Current { target } => target.version,
            Then::Nothing => bad.as_ref().and_then(|b| b.target.version),
        };
        Mirror {
            correlation_id: correlation_id(version),
            bad,
            then,
        }
    }

    /// The pending step's successor for the same target: same correlation id.
    pub(crate) fn current_after(&self, target: &InstalledTarget) -> Mirror {
        let cid = match &self.then {
            Then::Pending { target: t, .. } if t.name == target.name => self.correlation_id.clone(),
            _ => correlation_id(target.version),
        };
        Mirror {
            correlation_id: cid,
            bad: None,
            then: Then::Current {
                target: target.clone(),
            },
        }
    }

    /// `target` failed: the bad mark, by the correlation id of its pending step.
    pub(crate) fn bad_of(m: Option<&Mirror>, target: &InstalledTarget) -> Bad {
        let cid = m
            .filter(|m| matches!(&m.then, Then::Pending { target: t, .. } if t.name == target.name))
            .map_or_else(
                || correlation_id(target.version),
                |m| m.correlation_id.clone(),
            );
        Bad {
            target: target.clone(),
            correlation_id: cid,
        }
    }
}

/// `<version>-<random uuid>`, as aktualizr-lite makes them (`-1` for an unknown version).
pub fn correlation_id(version: Option<u64>) -> String {
    let mut b = [0u8; 16];
    if getrandom::getrandom(&mut b).is_err() {
        // No entropy source at all: an id unique on this device is all the row needs.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        b = (now ^ u128::from(std::process::id())).to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    let v = version.map_or("-1".to_string(), |v| v.to_string());
    format!(
        "{v}-{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// What applying the mirror did.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    /// Something was written.
    pub changed: bool,
    /// Why the database was not written (said on the console and in the report).
    pub warning: Option<String>,
}

/// Apply `state`'s mirror, if any, unless the database already shows it.
pub(crate) fn converge(cfg: &Config, state: &State) -> Applied {
    let Some(m) = &state.aklite else {
        return Applied::default();
    };
    let mut out = Applied::default();
    let written = match Db::open(&cfg.storage.sqldb_path, true) {
        Ok(Some(mut db)) => to_database(cfg, &mut db, m),
        Ok(None) => to_import_file(cfg, m),
        Err(e) => Err(anyhow::anyhow!("aktualizr-lite's database {e}")),
    };
    match written {
        Ok(changed) => out.changed = changed,
        Err(e) => {
            let w = format!("{e:#}; not mirrored yet, retried at the next start");
            tracing::warn!("{w}");
            out.warning = Some(w);
        }
    }
    if out.changed {
        crate::failpoint::hit("aklite-mirrored");
    }
    if let Then::Current { target } = &m.then {
        let path = current_target::path(cfg);
        if let Err(e) = current_target::write(&path, target) {
            tracing::warn!("{}: {e:#}", path.display());
        }
    }
    out
}

fn to_import_file(cfg: &Config, m: &Mirror) -> anyhow::Result<bool> {
    let path = import::path(cfg);
    let entries = import::read(&path)?;
    let next = match &m.then {
        Then::Current { target } => {
            if import::current(&entries, &target.sha256).is_some_and(|c| c.name == target.name) {
                return Ok(false);
            }
            import::with_current(target)
        }
        Then::Nothing => match &m.bad {
            Some(b) if entries.iter().any(|e| e.name == b.target.name) => entries
                .into_iter()
                .filter(|e| e.name != b.target.name)
                .collect(),
            _ => return Ok(false),
        },
        // Its first start finalizes nothing: only what runs matters there.
        Then::Pending { .. } => return Ok(false),
    };
    current_target::write_if_changed(&path, &import::encode(&next))?;
    Ok(true)
}

fn to_database(cfg: &Config, db: &mut Db, m: &Mirror) -> anyhow::Result<bool> {
    let facts = db.read()?;
    let booted = crate::ostree::booted_commit(&cfg.pacman)?;
    let mine = |cid: &str| {
        cid == m.correlation_id || m.bad.as_ref().is_some_and(|b| b.correlation_id == cid)
    };
    let foreign = facts.pending().filter(|p| !mine(&p.correlation_id));
    let then_todo = match &m.then {
        Then::Pending { .. } => facts.by_correlation_id(&m.correlation_id).is_none(),
        Then::Current { target } => match facts.by_correlation_id(&m.correlation_id) {
            Some(r) => r.is_pending,
            None => {
                booted.as_deref() == Some(target.sha256.as_str())
                    && !booted
                        .as_deref()
                        .and_then(|b| facts.current(b))
                        .is_some_and(|r| r.name == target.name && r.sha256 == target.sha256)
            }
        },
        Then::Nothing => false,
    };
    let then_todo = then_todo
        && match foreign {
            Some(p) => {
                tracing::warn!(
                    "{}: aktualizr-lite's own installation of {} is pending: ours is not mirrored",
                    db.path().display(),
                    p.name
                );
                false
            }
            None => true,
        };
    let bad_todo = m
        .bad
        .as_ref()
        .filter(|b| match facts.by_correlation_id(&b.correlation_id) {
            Some(r) => r.is_pending || r.is_current,
            None => !facts.rows.iter().any(|r| r.name == b.target.name),
        });
    if !then_todo && bad_todo.is_none() {
        return Ok(false);
    }
    let sentinel = cfg
        .bootloader
        .reboot_sentinel_dir
        .join(&cfg.bootloader.reboot_sentinel_name);
    match &m.then {
        Then::Pending {
            reboot: true,
            boot_id,
            ..
        } if then_todo => {
            // "Not rebooted yet" only while it is true: after the reboot, the flag alone.
            if *boot_id == crate::ostree::boot_id(&cfg.pacman)? {
                crate::durable::replace(&sentinel, b"")?;
            }
        }
        Then::Pending { .. } => {}
        Then::Current { .. } | Then::Nothing => remove(&sentinel)?,
    }
    let serial = facts.serial().to_string();
    let meta = match &m.then {
        Then::Pending { .. } if then_todo => newer_metadata(cfg, &facts),
        _ => Vec::new(),
    };
    db.write(|w| {
        if let Some(b) = bad_todo {
            w.save(&serial, &b.target, Mode::Bad, &b.correlation_id)?;
        }
        for (kind, version, bytes) in &meta {
            match *kind {
                db::ROOT => w.store_root(*version, bytes)?,
                k => w.store_role(k, bytes)?,
            }
        }
        match &m.then {
            Then::Pending { target, reboot, .. } if then_todo => {
                w.save(&serial, target, Mode::Pending, &m.correlation_id)?;
                if *reboot {
                    w.set_need_reboot(true)?;
                }
            }
            Then::Pending { .. } => {}
            Then::Current { target } => {
                if then_todo {
                    w.save(&serial, target, Mode::Current, &m.correlation_id)?;
                }
                w.set_need_reboot(false)?;
            }
            Then::Nothing => w.set_need_reboot(false)?,
        }
        Ok(())
    })
    .map_err(|e: DbError| anyhow::anyhow!("aktualizr-lite's database {e}"))?;
    Ok(true)
}

fn remove(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(anyhow::Error::from(e).context(format!("removing {}", path.display())))
        }
        _ => Ok(()),
    }
}

/// Our trusted metadata that the database lacks or has older: roots by version, then the
/// other roles (`(meta_type, version, bytes)`; the version is the root's, unused for roles).
fn newer_metadata(cfg: &Config, facts: &Facts) -> Vec<(i64, u64, Vec<u8>)> {
    let dir = State::tuf_dir(&cfg.state_dir());
    let version_of = |b: &[u8]| Envelope::parse(b).ok().and_then(|e| e.version().ok());
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut roots: Vec<(u64, std::path::PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let v = name.strip_suffix(".root.json")?.parse().ok()?;
                Some((v, e.path()))
            })
            .collect();
        roots.sort();
        for (v, p) in roots {
            if !facts.roots.contains_key(&v) {
                if let Ok(bytes) = std::fs::read(&p) {
                    out.push((db::ROOT, v, bytes));
                }
            }
        }
    }
    for (kind, file) in [
        (db::TIMESTAMP, "timestamp.json"),
        (db::SNAPSHOT, "snapshot.json"),
        (db::TARGETS, "targets.json"),
    ] {
        let Ok(bytes) = std::fs::read(dir.join(file)) else {
            continue;
        };
        let ours = version_of(&bytes);
        let theirs = facts.roles.get(&kind).and_then(|b| version_of(b));
        if ours.is_some() && (theirs.is_none() || ours > theirs) {
            out.push((kind, 0, bytes));
        }
    }
    out
}
