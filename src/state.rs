//! The agent's persistent state in `<storage.path>/usb-update/`.
//!
//! `state.json` records what the device runs and what failed before (the denylist that the
//! policy honours); `tuf/` holds the TUF metadata trusted by earlier updates. A state file of
//! an unknown or newer schema is an error, never a silent reset: forgetting the denylist or
//! the trusted versions would reopen what they close.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// The schema this build reads and writes.
pub(crate) const SCHEMA: u32 = 1;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    pub schema: u32,
    /// The target the device runs, once an update through us has completed.
    #[serde(default)]
    pub current: Option<InstalledTarget>,
    /// What ran before `current`: where a rollback goes.
    #[serde(default)]
    pub previous: Option<InstalledTarget>,
    /// An installation waiting for its reboot and `run`.
    #[serde(default)]
    pub pending: Option<Pending>,
    /// Targets that failed on this device: refused unless the policy allows a retry.
    #[serde(default)]
    pub failed: Vec<FailedTarget>,
    /// Results of `install` and `run`, oldest first, at most [`HISTORY_LEN`].
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
    /// A committed target whose cleanup (old deployments, unused apps) has not finished:
    /// a `run` killed after the commit finishes it the next time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup: Option<InstalledTarget>,
    /// What aktualizr-lite's database must say after our last step, saved with the step
    /// and applied until the database shows it (`aklite::mirror`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aklite: Option<crate::aklite::mirror::Mirror>,
}

/// History entries kept.
pub(crate) const HISTORY_LEN: usize = 100;

/// An installation that `run` must finish.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pending {
    pub target: InstalledTarget,
    pub phase: Phase,
    /// The boot id when `install` finished: `run` before a reboot sees the same one.
    pub boot_id: String,
    /// What ran when `install` started (`None`: not known), restored on a rollback.
    pub previous: Option<InstalledTarget>,
    /// The deployment booted when `install` started: a bootloader rollback boots it again.
    pub rollback_deployment: Option<String>,
    /// The rootfs changed: `run` needs a reboot first.
    pub needs_reboot: bool,
    pub installed_at: String,
    /// While rolling back: the target that failed and is being left.
    #[serde(default)]
    pub failed_target: Option<InstalledTarget>,
    /// Boots of the new rootfs that `run` has started (`[update] boot_attempts`), counted
    /// before anything that can hang or crash the boot.
    #[serde(default)]
    pub boot_attempts: u32,
    /// The boot id last counted: a `run` started again in the same boot is not a new boot.
    #[serde(default)]
    pub counted_boot: Option<String>,
}

/// How far an installation got; each phase can be re-run after a power cut.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The new rootfs is deployed and default; waiting for the reboot.
    Deployed,
    /// Same rootfs, new apps: blobs in the store, images loaded; `run` starts them.
    Apps,
    /// The new target's apps failed on its rootfs; the previous deployment is default
    /// again and `run`, after the reboot, brings the previous apps back.
    RollingBack,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HistoryEntry {
    pub at: String,
    pub command: String,
    pub target: String,
    pub code: u8,
    pub message: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstalledTarget {
    pub name: String,
    /// `None` for an "initial target" whose version is unknown.
    pub version: Option<u64>,
    pub sha256: String,
    #[serde(default)]
    pub apps: BTreeMap<String, String>,
    /// The TUF target's `custom` object, when known: what aktualizr-lite records of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FailedTarget {
    pub name: String,
    pub sha256: String,
    pub reason: String,
}

impl State {
    pub fn file(dir: &Path) -> PathBuf {
        dir.join("state.json")
    }

    /// The stored TUF metadata directory.
    pub fn tuf_dir(dir: &Path) -> PathBuf {
        dir.join("tuf")
    }

    /// Read `state.json`; a device that never updated through us has none.
    pub fn load(dir: &Path) -> anyhow::Result<State> {
        let path = Self::file(dir);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(State {
                    schema: SCHEMA,
                    ..State::default()
                })
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: not JSON", path.display()))?;
        match v.get("schema").and_then(serde_json::Value::as_u64) {
            Some(s) if s == u64::from(SCHEMA) => {}
            Some(s) => anyhow::bail!(
                "{}: schema {s} is not one this build knows ({SCHEMA}); refusing to guess",
                path.display()
            ),
            None => anyhow::bail!("{}: no schema number", path.display()),
        }
        serde_json::from_value(v).with_context(|| format!("{}: unexpected content", path.display()))
    }

    pub(crate) fn is_failed(&self, name: &str) -> Option<&FailedTarget> {
        self.failed.iter().find(|f| f.name == name)
    }

    pub fn record(&mut self, command: &str, target: &str, code: u8, message: &str) {
        self.history.push(HistoryEntry {
            at: crate::clock::now_utc(),
            command: command.into(),
            target: target.into(),
            code,
            message: message.into(),
        });
        let excess = self.history.len().saturating_sub(HISTORY_LEN);
        self.history.drain(..excess);
    }

    /// Replace `state.json` atomically: a power cut leaves the old or the new file whole.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).context("serialising the state")?;
        // The boot-time unit starts only when there is work (ConditionPathExists): a marker
        // that may claim too much (`run` then finds nothing pending and removes it) but never
        // too little, so it is written before a pending state and removed after a clear one.
        let marker = Self::pending_marker(dir);
        if let Some(p) = &self.pending {
            crate::durable::replace(&marker, p.target.name.as_bytes())?;
            crate::failpoint::hit("state-marker-written");
        }
        crate::durable::replace(&Self::file(dir), &bytes)?;
        crate::failpoint::hit("state-written");
        if self.pending.is_none() {
            Self::remove_marker(dir)?;
        }
        crate::failpoint::pause("state-saved");
        Ok(())
    }

    /// Remove the pending marker (absent is fine).
    pub(crate) fn remove_marker(dir: &Path) -> anyhow::Result<()> {
        let marker = Self::pending_marker(dir);
        match std::fs::remove_file(&marker) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", marker.display()))
            }
            _ => Ok(()),
        }
    }

    /// Exists exactly while an installation is pending.
    pub fn pending_marker(dir: &Path) -> PathBuf {
        dir.join("pending")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keeps_the_newest_entries() {
        let mut s = State::default();
        for i in 0..HISTORY_LEN + 5 {
            s.record("install", &format!("t-{i}"), 100, "ok");
        }
        assert_eq!(s.history.len(), HISTORY_LEN);
        assert_eq!(s.history[0].target, "t-5");
        assert_eq!(
            s.history[HISTORY_LEN - 1].target,
            format!("t-{}", HISTORY_LEN + 4)
        );
    }

    #[test]
    fn save_is_atomic_and_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("usb-update");
        let mut s = State::load(&dir).unwrap();
        s.failed.push(FailedTarget {
            name: "t-3".into(),
            sha256: "cd".into(),
            reason: "r".into(),
        });
        s.save(&dir).unwrap();
        assert_eq!(State::load(&dir).unwrap(), s);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }

    #[test]
    fn missing_is_empty_and_unknown_schema_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(State::load(d.path()).unwrap().current, None);
        std::fs::write(State::file(d.path()), br#"{"schema":2}"#).unwrap();
        let e = State::load(d.path()).unwrap_err().to_string();
        assert!(e.contains("schema 2"), "{e}");
        std::fs::write(State::file(d.path()), br#"{"current":null}"#).unwrap();
        assert!(State::load(d.path()).is_err());
        std::fs::write(
            State::file(d.path()),
            br#"{"schema":1,"failed":[{"name":"t-2","sha256":"ab","reason":"x"}]}"#,
        )
        .unwrap();
        assert!(State::load(d.path()).unwrap().is_failed("t-2").is_some());
    }
}
