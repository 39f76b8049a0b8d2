//! `<[storage] path>/current-target`: the running target as shell variables, which
//! aktualizr-lite rewrites whenever its current target changes and other programs (callback
//! scripts, device scripts) source.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::config::Config;
use crate::state::InstalledTarget;

pub fn path(cfg: &Config) -> PathBuf {
    cfg.storage.path.join("current-target")
}

/// The file's text for `t`, line by line as aktualizr-lite writes it.
pub fn text(t: &InstalledTarget) -> String {
    let custom = t.custom.clone().unwrap_or_default();
    let s = |k: &str| match custom.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    let version = match custom.get("version") {
        Some(_) => s("version"),
        None => t.version.map(|v| v.to_string()).unwrap_or_default(),
    };
    let mut out = format!("TARGET_NAME=\"{}\"\nCUSTOM_VERSION=\"{version}\"\n", t.name);
    for (key, var) in [
        ("lmp-manifest-sha", "LMP_MANIFEST_SHA"),
        (
            "meta-subscriber-overrides-sha",
            "META_SUBSCRIBER_OVERRIDES_SHA",
        ),
        ("containers-sha", "CONTAINERS_SHA"),
    ] {
        let v = s(key);
        if !v.is_empty() {
            out.push_str(&format!("{var}=\"{v}\"\n"));
        }
    }
    let tags: Vec<&str> = custom
        .get("tags")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    out.push_str(&format!("TAG=\"{}\"\n", tags.join(",")));
    out
}

/// Rewrite the file for `t` when it says something else (atomically; unchanged content is
/// not rewritten, so that reading commands leave the device as it was).
pub fn write(path: &Path, t: &InstalledTarget) -> anyhow::Result<()> {
    write_if_changed(path, text(t).as_bytes())
}

/// Replace `path` atomically unless it already holds `bytes`.
pub(crate) fn write_if_changed(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    crate::durable::replace(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn as_aktualizr_lite_writes_it() {
        let custom = json!({
            "version": "42", "tags": ["main", "devel"], "lmp-manifest-sha": "abc",
            "containers-sha": "", "targetFormat": "OSTREE"
        });
        let t = crate::aklite::known_target("imx-lmp-42", "cc", custom.as_object().unwrap());
        assert_eq!(
            text(&t),
            "TARGET_NAME=\"imx-lmp-42\"\nCUSTOM_VERSION=\"42\"\nLMP_MANIFEST_SHA=\"abc\"\nTAG=\"main,devel\"\n"
        );
        let bare = InstalledTarget {
            name: "Initial Target".into(),
            ..Default::default()
        };
        assert_eq!(
            text(&bare),
            "TARGET_NAME=\"Initial Target\"\nCUSTOM_VERSION=\"\"\nTAG=\"\"\n"
        );
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("current-target");
        write(&p, &t).unwrap();
        let m1 = std::fs::metadata(&p).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        write(&p, &t).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().modified().unwrap(),
            m1,
            "rewritten"
        );
        assert_eq!(std::fs::read_to_string(&p).unwrap(), text(&t));
    }
}
