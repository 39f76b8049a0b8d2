//! `usb-update status`: what the agent is doing (status.json), what waits for `run`, and the
//! last results. Read-only.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

use super::{Pattern, StatusFile};
use crate::config::Config;
use crate::policy::{fmt_version, Policy};
use crate::state::{HistoryEntry, InstalledTarget, Pending, Phase, State};

/// History entries shown.
pub(crate) const HISTORY_SHOWN: usize = 5;

#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    /// From status.json; `idle` when there is none (no agent ran since boot).
    pub phase: Pattern,
    pub message: Option<String>,
    pub percent: Option<u8>,
    pub updated_at: Option<String>,
    /// Where the live status is read from.
    pub status_file: PathBuf,
    /// The target recorded by our last completed update.
    pub current: Option<InstalledTarget>,
    /// The installation waiting for its reboot and `run`.
    pub pending: Option<Pending>,
    /// The last results of `install` and `run`, oldest first.
    pub history: Vec<HistoryEntry>,
}

pub fn status(config: &[PathBuf], policy: &[PathBuf]) -> crate::Result<StatusView> {
    let cfg = Config::load(config)?;
    let policy = Policy::load(policy)?;
    let status_file = StatusFile::path(&policy.agent.run_dir);
    let live = read_status_file(&status_file)?;
    let mut state = State::load(&cfg.state_dir())?;
    let skip = state.history.len().saturating_sub(HISTORY_SHOWN);
    state.history.drain(..skip);
    Ok(StatusView {
        phase: live.as_ref().map_or(Pattern::Idle, |s| s.phase),
        message: live.as_ref().map(|s| s.message.clone()),
        percent: live.as_ref().and_then(|s| s.percent),
        updated_at: live.map(|s| s.updated_at),
        status_file,
        current: state.current,
        pending: state.pending,
        history: state.history,
    })
}

/// `None`: no agent wrote one since boot (`/run` is emptied at every boot).
fn read_status_file(path: &Path) -> anyhow::Result<Option<StatusFile>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .with_context(|| format!("{}: not a status file", path.display()))
}

pub fn human_lines(v: &StatusView) -> Vec<String> {
    let mut out = Vec::new();
    let mut line = format!("status: {}", v.phase);
    if let Some(p) = v.percent {
        line += &format!(", {p}%");
    }
    match (&v.message, &v.updated_at) {
        (Some(m), Some(at)) if !m.is_empty() => line += &format!(": {m} (at {at})"),
        (_, Some(at)) => line += &format!(" (at {at})"),
        _ => line += " (no update since boot)",
    }
    out.push(line);
    out.push(match &v.current {
        Some(c) => format!("current: {}", target(c)),
        None => "current: not recorded by an update".into(),
    });
    out.push(match &v.pending {
        None => "pending: none".into(),
        Some(p) => {
            let next = match p.phase {
                Phase::RollingBack => "rolling back: reboot, then `usb-update run`",
                _ if p.needs_reboot => "reboot, then `usb-update run`",
                _ => "`usb-update run` finishes it",
            };
            format!(
                "pending: {} installed at {}: {next}",
                target(&p.target),
                p.installed_at
            )
        }
    });
    for h in &v.history {
        out.push(format!(
            "last: {} {} {} returned {}: {}",
            h.at, h.command, h.target, h.code, h.message
        ));
    }
    out
}

fn target(t: &InstalledTarget) -> String {
    format!("{} ({})", t.name, fmt_version(t.version))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u8) -> HistoryEntry {
        HistoryEntry {
            at: format!("2025-01-0{i}T00:00:00Z"),
            command: "install".into(),
            target: format!("t-{i}"),
            code: 100,
            message: "installed".into(),
        }
    }

    #[test]
    fn lines_for_an_idle_device_and_a_pending_one() {
        let mut v = StatusView {
            phase: Pattern::Idle,
            message: None,
            percent: None,
            updated_at: None,
            status_file: "/run/usb-update/status.json".into(),
            current: None,
            pending: None,
            history: Vec::new(),
        };
        assert_eq!(
            human_lines(&v),
            [
                "status: idle (no update since boot)",
                "current: not recorded by an update",
                "pending: none"
            ]
        );
        let t = InstalledTarget {
            name: "t-3".into(),
            version: Some(3),
            sha256: "ab".into(),
            apps: Default::default(),
            custom: None,
        };
        v.phase = Pattern::Working;
        v.percent = Some(40);
        v.message = Some("copying: 40%".into());
        v.updated_at = Some("2025-01-01T00:00:00Z".into());
        v.pending = Some(Pending {
            target: t,
            phase: Phase::Deployed,
            boot_id: "b".into(),
            previous: None,
            rollback_deployment: None,
            needs_reboot: true,
            installed_at: "2025-01-02T00:00:00Z".into(),
            failed_target: None,
            boot_attempts: 0,
            counted_boot: None,
        });
        v.history = vec![entry(1)];
        let lines = human_lines(&v);
        assert_eq!(
            lines[0],
            "status: working, 40%: copying: 40% (at 2025-01-01T00:00:00Z)"
        );
        assert!(lines[2].starts_with("pending: t-3 ("), "{lines:?}");
        assert!(
            lines[2].ends_with("reboot, then `usb-update run`"),
            "{lines:?}"
        );
        assert_eq!(
            lines[3],
            "last: 2025-01-01T00:00:00Z install t-1 returned 100: installed"
        );
    }

    #[test]
    fn a_corrupt_status_file_is_an_error_naming_it() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("status.json");
        assert!(read_status_file(&p).unwrap().is_none());
        std::fs::write(&p, "{").unwrap();
        let e = format!("{:#}", read_status_file(&p).unwrap_err());
        assert!(e.contains(&p.display().to_string()), "{e}");
    }
}
