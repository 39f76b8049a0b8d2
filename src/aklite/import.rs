//! `<[import] base_path>/installed_versions`: what aktualizr-lite's first start imports into
//! a new database (libaktualizr's import format), then deletes.
//!
//! A JSON object: target name -> the target's TUF JSON (`hashes`, `length`, `custom`), the
//! running one with `"is_current": true`. Only that one is imported, as current; LmP images
//! ship the file for the factory image. We rewrite it so that aktualizr-lite's first start
//! after our update names our target, never create the database ourselves.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::{json, Map, Value};

use crate::config::Config;
use crate::state::InstalledTarget;

/// Larger is not an import file (it holds a handful of targets).
const MAX_BYTES: u64 = 4 << 20;

pub fn path(cfg: &Config) -> PathBuf {
    cfg.import.base_path.join("installed_versions")
}

/// One entry, in the file's (sorted) order.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub name: String,
    pub sha256: String,
    pub custom: Map<String, Value>,
    pub is_current: bool,
}

/// The entries (none when the file does not exist).
pub fn read(path: &Path) -> anyhow::Result<Vec<Entry>> {
    let bytes = match std::fs::File::open(path) {
        Ok(f) => {
            use std::io::Read as _;
            let mut b = Vec::new();
            f.take(MAX_BYTES + 1)
                .read_to_end(&mut b)
                .with_context(|| format!("reading {}", path.display()))?;
            anyhow::ensure!(
                b.len() as u64 <= MAX_BYTES,
                "{} is larger than {MAX_BYTES} bytes",
                path.display()
            );
            b
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let v: Value =
        serde_json::from_slice(&bytes).with_context(|| format!("{}: not JSON", path.display()))?;
    let Value::Object(map) = v else {
        anyhow::bail!("{}: not a JSON object", path.display());
    };
    let mut out = Vec::new();
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    for key in keys {
        let e = match &map[key] {
            Value::Object(t) => Entry {
                name: key.clone(),
                sha256: t
                    .get("hashes")
                    .and_then(|h| h.get("sha256"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_ascii_lowercase(),
                custom: t
                    .get("custom")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default(),
                is_current: t.get("is_current").and_then(Value::as_bool) == Some(true),
            },
            // The legacy form, commit -> name, whose last entry is the current one.
            other => Entry {
                name: other.as_str().unwrap_or_default().to_string(),
                sha256: key.to_ascii_lowercase(),
                custom: Map::new(),
                is_current: true,
            },
        };
        out.push(e);
    }
    Ok(out)
}

/// What aktualizr-lite would run on `booted` after importing: the current entry (the last
/// one marked), if its commit is the booted one.
pub fn current(entries: &[Entry], booted: &str) -> Option<InstalledTarget> {
    entries
        .iter()
        .rev()
        .find(|e| e.is_current)
        .filter(|e| e.sha256 == booted)
        .map(|e| super::known_target(&e.name, &e.sha256, &e.custom))
}

/// The file naming `t` as the current target: only that entry counts for the import, so
/// the others (the factory image's) are not kept, and the file does not grow.
pub(crate) fn with_current(t: &InstalledTarget) -> Vec<Entry> {
    vec![Entry {
        name: t.name.clone(),
        sha256: t.sha256.clone(),
        custom: t.custom.clone().unwrap_or_default(),
        is_current: true,
    }]
}

/// The file's bytes for `entries`.
pub fn encode(entries: &[Entry]) -> Vec<u8> {
    let map: Map<String, Value> = entries
        .iter()
        .map(|e| {
            let mut t = json!({
                "hashes": {"sha256": e.sha256},
                "length": 0,
                "custom": e.custom,
            });
            if e.is_current {
                t["is_current"] = json!(true);
            }
            (e.name.clone(), t)
        })
        .collect();
    let mut out = serde_json::to_vec_pretty(&Value::Object(map)).unwrap_or_default();
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(name: &str, sha: &str, version: &str) -> InstalledTarget {
        let custom = json!({"version": version, "targetFormat": "OSTREE"});
        super::super::known_target(name, sha, custom.as_object().unwrap())
    }

    #[test]
    fn absent_is_empty_and_the_current_entry_counts_only_on_its_commit() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("installed_versions");
        assert!(read(&p).unwrap().is_empty());
        // A factory image's file: two entries, the second current.
        std::fs::write(
            &p,
            r#"{"t-1": {"hashes": {"sha256": "AA"}, "custom": {"version": "1"}},
                "t-2": {"hashes": {"sha256": "bb"}, "is_current": true, "custom": {"version": "2"}}}"#,
        )
        .unwrap();
        let factory = read(&p).unwrap();
        assert_eq!(factory.len(), 2);
        let cur = current(&factory, "bb").unwrap();
        assert_eq!((cur.name.as_str(), cur.version), ("t-2", Some(2)));
        assert_eq!(current(&factory, "aa"), None, "t-1 is not the current one");
        let entries = with_current(&target("t-3", "cc", "3"));
        std::fs::write(&p, encode(&entries)).unwrap();
        let back = read(&p).unwrap();
        assert_eq!(back, entries);
        assert_eq!(current(&back, "cc").unwrap().name, "t-3");
        let v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(v["t-3"]["is_current"], true);
        assert_eq!(v["t-3"]["hashes"]["sha256"], "cc");
        assert_eq!(v["t-3"]["length"], 0);
        assert_eq!(v["t-3"]["custom"]["version"], "3");
    }

    #[test]
    fn legacy_form_and_bad_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("installed_versions");
        std::fs::write(&p, r#"{"CC": "factory"}"#).unwrap();
        let e = read(&p).unwrap();
        assert_eq!(e[0].name, "factory");
        assert_eq!(current(&e, "cc").unwrap().version, None);
        std::fs::write(&p, "[]").unwrap();
        assert!(format!("{:#}", read(&p).unwrap_err()).contains("not a JSON object"));
        std::fs::write(&p, "{").unwrap();
        assert!(format!("{:#}", read(&p).unwrap_err()).contains("not JSON"));
    }
}
