//! `usb-update current`: what the device runs now (the `running` rule). Read-only
//! (aktualizr-lite's `current` finalizes a pending install as a side effect and always
//! exits 1; this one does neither).

use serde::Serialize;

use crate::config::{Config, PackageManager};
use crate::core::context::Records;
use crate::error::Result;
use crate::state::State;
use crate::tuf::meta::{self, Envelope};

#[derive(Debug, Serialize)]
pub struct Current {
    pub name: String,
    pub version: Option<u64>,
    pub ostree: Option<String>,
    /// Where that is known from.
    pub from: Option<String>,
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

/// The running target by the `running` rule, the trusted targets being those an earlier
/// update stored (verified when stored).
pub fn current(config: &[std::path::PathBuf]) -> Result<Current> {
    let cfg = Config::load(config)?;
    let Records { state, aklite } = Records::load(&cfg)?;
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
    let hwid = aklite
        .hardware_id()
        .unwrap_or(&cfg.provision.primary_ecu_hardware_id)
        .to_string();
    let commit_version = |c: &str| crate::ostree::commit_version(&cfg.pacman, c).ok().flatten();
    let running = crate::core::running::running(
        &state,
        booted.as_deref(),
        &aklite,
        &targets,
        &hwid,
        &commit_version,
    );
    let compose = cfg.pacman.kind == PackageManager::OstreeComposeApps;
    let last = state.history.last().cloned();
    Ok(match running {
        Some((r, from)) => Current {
            from: Some(from.describe().to_string()),
            apps: all_apps(&r)
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
            from: None,
            apps: Vec::new(),
            last,
        },
    })
}

/// Every app of the target (its TUF `custom` when known), not only those this device runs.
fn all_apps(t: &crate::state::InstalledTarget) -> std::collections::BTreeMap<String, String> {
    match &t.custom {
        Some(c) => crate::aklite::known_target(&t.name, &t.sha256, c).apps,
        None => t.apps.clone(),
    }
}

/// As aktualizr-lite's `current` prints it (the `aklite-offline` personality).
pub(crate) fn aklite_lines(c: &Current) -> Vec<String> {
    let mut out = vec![
        format!("Target: {}", c.name),
        format!("Ostree hash: {}", c.ostree.as_deref().unwrap_or("")),
    ];
    if !c.apps.is_empty() {
        out.push("Apps:".into());
    }
    for a in &c.apps {
        let on = if a.on { "on " } else { "off" };
        out.push(format!("\t{on}: {} -> {}", a.name, a.uri));
    }
    out
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
