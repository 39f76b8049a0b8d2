//! `usb-update current`: what the device runs now. Read-only (aktualizr-lite's `current`
//! finalizes a pending install as a side effect and always exits 1; this one does neither).

use serde::Serialize;

use crate::check::running_target_from;
use crate::config::{Config, PackageManager};
use crate::error::Result;
use crate::state::State;
use crate::tuf::meta::{self, Envelope};

#[derive(Debug, Serialize)]
pub struct Current {
    pub name: String,
    pub version: Option<u64>,
    pub ostree: Option<String>,
    /// Every app of the target, and whether this device runs it (`[pacman] compose_apps`).
    pub apps: Vec<AppLine>,
    /// The last result of `install` or `run`, so a rollback is visible here too.
    pub last: Option<crate::state::HistoryEntry>,
}

#[derive(Debug, Serialize)]
pub struct AppLine {
    pub name: String,
    pub uri: String,
    pub on: bool,
}

/// The running target: recorded by our last update, else matched by booted commit
/// against the TUF targets that an earlier update stored (verified when stored).
pub fn current(config: &[std::path::PathBuf]) -> Result<Current> {
    let cfg = Config::load(config)?;
    let state = State::load(&cfg.state_dir())?;
    let booted = crate::ostree::booted_commit(&cfg.pacman)?;
    let stored = State::tuf_dir(&cfg.state_dir()).join("targets.json");
    let targets = match std::fs::read(&stored) {
        Ok(bytes) => {
            let env = Envelope::parse(&bytes)
                .map_err(|e| anyhow::anyhow!("stored {}: {e}", stored.display()))?;
            meta::targets(&env).map_err(|e| anyhow::anyhow!("stored {}: {e}", stored.display()))?
        }
        Err(_) => Vec::new(),
    };
    let hwid = &cfg.provision.primary_ecu_hardware_id;
    let running = running_target_from(&state, booted.as_deref(), &targets, hwid);
    let compose = cfg.pacman.kind == PackageManager::OstreeComposeApps;
    let last = state.history.last().cloned();
    Ok(match running {
        Some(r) => Current {
            apps: r
                .apps
                .iter()
                .map(|(name, uri)| AppLine {
                    name: name.clone(),
                    uri: uri.clone(),
                    on: compose
                        && cfg
                            .pacman
                            .compose_apps
                            .as_ref()
                            .is_none_or(|l| l.contains(name)),
                })
                .collect(),
            name: r.name,
            version: r.version,
            ostree: Some(r.sha256),
            last,
        },
        None => Current {
            name: "unknown".into(),
            version: None,
            ostree: None,
            apps: Vec::new(),
            last,
        },
    })
}

pub fn human_lines(c: &Current) -> Vec<String> {
    let mut out = vec![format!(
        "current: {} ({}), commit {}",
        c.name,
        crate::policy::fmt_version(c.version),
        c.ostree.as_deref().unwrap_or("unknown")
    )];
    for a in &c.apps {
        out.push(format!(
            "app {}: {} {}",
            a.name,
            if a.on { "on" } else { "off" },
            a.uri
        ));
    }
    if let Some(h) = &c.last {
        out.push(format!(
            "last: {} {} returned {} at {}: {}",
            h.command, h.target, h.code, h.at, h.message
        ));
    }
    out
}
