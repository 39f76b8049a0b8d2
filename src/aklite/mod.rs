//! Living beside aktualizr-lite, the online agent of a Foundries device: one device, one
//! truth.
//!
//! - [`db`]: its database (`sql.db`): pending installation, installed targets, primary ECU,
//!   stored TUF metadata; read, and written as it writes it;
//! - [`import`]: the `installed_versions` file its first start imports when it has no
//!   database yet;
//! - [`current_target`]: `<storage>/current-target`, rewritten when the current target
//!   changes;
//! - [`callback`]: `[pacman] callback_program`, run at the same steps with the same
//!   environment;
//! - [`mirror`]: our state (the crash-safe truth) mirrored into the database, re-applied at
//!   every start until the database shows it.
//!
//! [`View`] is what aktualizr-lite knows, read once per command.

pub mod callback;
pub mod current_target;
pub mod db;
pub mod import;
pub mod mirror;

use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::config::Config;
use crate::state::InstalledTarget;

/// Where aktualizr-lite keeps what it knows, and what it knows.
#[derive(Debug, Clone)]
pub struct View {
    pub db_path: PathBuf,
    pub store: Store,
    /// Why its database is not used (another schema, unreadable, busy): said on the
    /// console and in the report.
    pub warning: Option<String>,
    /// The database exists but could not be read because another writer held it.
    pub busy: bool,
}

#[derive(Debug, Clone)]
pub enum Store {
    Database(db::Facts),
    /// No database yet: the file its first start will import (possibly empty).
    Import(Vec<import::Entry>),
    /// A database we do not read or write (see `warning`).
    Unusable,
}

impl View {
    /// Read what aktualizr-lite knows. Never fails: what cannot be read is a warning.
    pub fn load(cfg: &Config) -> View {
        let db_path = cfg.storage.sqldb_path.clone();
        let import_path = import::path(cfg);
        let mut view = View {
            db_path: db_path.clone(),
            store: Store::Unusable,
            warning: None,
            busy: false,
        };
        match db::Db::open(&db_path, false).and_then(|db| db.map(|mut d| d.read()).transpose()) {
            Ok(Some(facts)) => view.store = Store::Database(facts),
            Ok(None) => match import::read(&import_path) {
                Ok(entries) => view.store = Store::Import(entries),
                Err(e) => {
                    view.warning = Some(format!("aktualizr-lite's import file: {e:#}"));
                    view.store = Store::Import(Vec::new());
                }
            },
            Err(e) => {
                view.busy = matches!(e, db::DbError::Busy { .. });
                view.warning = Some(format!("aktualizr-lite's database {e}"));
            }
        }
        if let Some(w) = &view.warning {
            tracing::warn!("{w}");
        }
        view
    }

    pub fn facts(&self) -> Option<&db::Facts> {
        match &self.store {
            Store::Database(f) => Some(f),
            _ => None,
        }
    }

    /// The primary ECU's hardware id as aktualizr-lite froze it (it wins over the config).
    pub fn hardware_id(&self) -> Option<&str> {
        self.facts()
            .and_then(|f| f.ecu.as_ref())
            .map(|(_, h)| h.as_str())
            .filter(|h| !h.is_empty())
    }

    /// The primary ECU's serial as aktualizr-lite stored it (it wins over the config).
    pub fn serial(&self) -> Option<&str> {
        self.facts()
            .and_then(|f| f.ecu.as_ref())
            .map(|(s, _)| s.as_str())
            .filter(|s| !s.is_empty())
    }

    /// What aktualizr-lite would say runs on `booted`, from the database or the import file.
    pub fn current(&self, booted: &str) -> Option<InstalledTarget> {
        match &self.store {
            Store::Database(f) => f.current(booted).map(db::Row::target),
            Store::Import(entries) => import::current(entries, booted),
            Store::Unusable => None,
        }
    }
}

/// A target as aktualizr-lite records it (name, commit, TUF `custom`), as ours.
pub(crate) fn known_target(
    name: &str,
    sha256: &str,
    custom: &Map<String, Value>,
) -> InstalledTarget {
    let t = crate::tuf::Target {
        name: name.to_string(),
        sha256: sha256.to_string(),
        custom: custom.clone(),
    };
    InstalledTarget {
        name: name.to_string(),
        version: t.version(),
        sha256: sha256.to_string(),
        apps: t.apps(),
        custom: Some(custom.clone()),
    }
}
