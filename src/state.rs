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
pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    pub schema: u32,
    /// The target the device runs, once an update through us has completed.
    #[serde(default)]
    pub current: Option<InstalledTarget>,
    /// Targets that failed on this device: refused unless the policy allows a retry.
    #[serde(default)]
    pub failed: Vec<FailedTarget>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstalledTarget {
    pub name: String,
    /// `None` for an "initial target" whose version is unknown.
    pub version: Option<u64>,
    pub sha256: String,
    #[serde(default)]
    pub apps: BTreeMap<String, String>,
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

    pub fn is_failed(&self, name: &str) -> Option<&FailedTarget> {
        self.failed.iter().find(|f| f.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
