//! aktualizr-lite compatible configuration.
//!
//! Devices already carry `sota.toml` and `conf.d` snippets written for aktualizr-lite (by the
//! factory image, `lmp-device-register`, `fioctl`), so we read the same files with the same
//! precedence: one file set configures both agents and nothing has to be migrated. The
//! aktualizr rules a fleet relies on are kept on purpose (basename order, same-name
//! replacement, defaults, hostname fallback); its INI parser survives only as leniency
//! (numbers and booleans accepted where a string is expected). Unknown sections and keys are
//! ignored because these files also configure aktualizr-lite itself.

use anyhow::{anyhow, bail, Context};
use serde::Serialize;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub provision: Provision,
    pub pacman: Pacman,
    pub storage: Storage,
    pub import: Import,
    pub bootloader: Bootloader,
    /// The files that were applied, in the order applied: what `status` shows an operator
    /// who wonders why a setting is not the one they wrote.
    pub sources: Vec<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Provision {
    /// Empty in the files means the hostname, as aktualizr-lite does on first run.
    pub primary_ecu_hardware_id: String,
    /// `[provision] primary_ecu_serial`, if set (aktualizr-lite generates one at its first
    /// start otherwise and keeps it in its database).
    pub primary_ecu_serial: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Pacman {
    pub kind: PackageManager,
    pub sysroot: PathBuf,
    pub os: String,
    pub booted: BootedMode,
    pub tags: Vec<String>,
    /// `None` = every app of the target; `Some(empty)` = no apps (aktualizr-lite semantics).
    pub compose_apps: Option<Vec<String>>,
    pub reset_apps_root: PathBuf,
    pub compose_apps_root: PathBuf,
    /// `None`: the app engine probes for `docker compose` at run time.
    pub docker_compose_bin: Option<PathBuf>,
    /// Run at aktualizr-lite's update steps (`install-pre`, ...); `None`: none.
    pub callback_program: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PackageManager {
    #[serde(rename = "ostree")]
    Ostree,
    #[serde(rename = "ostree+compose_apps")]
    OstreeComposeApps,
}

/// Which deployment counts as "running": tests and demos need a sysroot nobody booted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BootedMode {
    Booted,
    /// The default deployment counts as booted (aktualizr-lite `booted = "staged"` / `"0"`).
    Staged,
    Simulated,
}

#[derive(Debug, Clone, Serialize)]
pub struct Storage {
    pub path: PathBuf,
    /// Where the provisioned trusted roots live (`{ci,prod}/N.root.json`).
    pub uptane_metadata_path: PathBuf,
    /// aktualizr-lite's database (`sqldb_path`, relative to `path` unless absolute).
    pub sqldb_path: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct Import {
    pub base_path: PathBuf,
    /// The device certificate: its businessCategory tells production from CI devices.
    pub tls_clientcert_path: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Bootloader {
    pub rollback_mode: String,
    pub reboot_command: String,
    /// aktualizr-lite's "not rebooted yet" file (on a tmpfs: gone after the reboot).
    pub reboot_sentinel_dir: PathBuf,
    pub reboot_sentinel_name: String,
}

/// Which set of provisioned roots the device trusts (`tuf/ci` or `tuf/prod`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceType {
    Ci,
    Prod,
    /// No client certificate: an unregistered device, which aktualizr-lite treats as CI.
    Undefined,
}

#[derive(Clone, Copy)]
enum Kind {
    Str,
    List,
}

/// The keys we read; everything else in the files belongs to aktualizr-lite and is ignored.
const KEYS: &[(&str, &str, Kind)] = &[
    ("provision", "primary_ecu_hardware_id", Kind::Str),
    ("provision", "primary_ecu_serial", Kind::Str),
    ("pacman", "type", Kind::Str),
    ("pacman", "sysroot", Kind::Str),
    ("pacman", "os", Kind::Str),
    ("pacman", "booted", Kind::Str),
    ("pacman", "tags", Kind::List),
    ("pacman", "compose_apps", Kind::List),
    ("pacman", "reset_apps_root", Kind::Str),
    ("pacman", "compose_apps_root", Kind::Str),
    ("pacman", "docker_compose_bin", Kind::Str),
    ("pacman", "callback_program", Kind::Str),
    ("storage", "path", Kind::Str),
    ("storage", "uptane_metadata_path", Kind::Str),
    ("storage", "sqldb_path", Kind::Str),
    ("import", "base_path", Kind::Str),
    ("import", "tls_clientcert_path", Kind::Str),
    ("bootloader", "rollback_mode", Kind::Str),
    ("bootloader", "reboot_command", Kind::Str),
    ("bootloader", "reboot_sentinel_dir", Kind::Str),
    ("bootloader", "reboot_sentinel_name", Kind::Str),
];

enum Value {
    Str(String),
    List(Vec<String>),
}

/// The winning value of each key, with the file it came from so that a bad value can be
/// traced to the snippet that set it.
#[derive(Default)]
struct Merged(BTreeMap<(&'static str, &'static str), (Value, PathBuf)>);

impl Merged {
    fn apply_file(&mut self, file: &Path) -> anyhow::Result<()> {
        let text = fs::read_to_string(file)
            .with_context(|| format!("cannot read config file {}", file.display()))?;
        let table: toml::Table = text
            .parse()
            .with_context(|| format!("config file {} is not valid TOML", file.display()))?;
        for &(section, key, kind) in KEYS {
            let Some(sect) = table.get(section) else {
                continue;
            };
            let Some(value) = sect
                .as_table()
                .ok_or_else(|| anyhow!("[{section}] must be a table, found {}", sect.type_str()))
                .with_context(|| format!("config file {}", file.display()))?
                .get(key)
            else {
                continue;
            };
            let value = convert(value, kind)
                .with_context(|| format!("config file {}: [{section}] {key}", file.display()))?;
            self.0.insert((section, key), (value, file.to_path_buf()));
        }
        Ok(())
    }

    fn str(&self, section: &'static str, key: &'static str) -> Option<(&str, &Path)> {
        match self.0.get(&(section, key)) {
            Some((Value::Str(s), src)) => Some((s.as_str(), src.as_path())),
            _ => None,
        }
    }

    /// Unset or empty both mean the default, as with aktualizr-lite's INI values.
    fn text(&self, section: &'static str, key: &'static str, default: &str) -> String {
        match self.str(section, key) {
            Some((s, _)) if !s.is_empty() => s.to_owned(),
            _ => default.to_owned(),
        }
    }

    fn list(&self, section: &'static str, key: &'static str) -> Option<Vec<String>> {
        match self.0.get(&(section, key)) {
            Some((Value::List(l), _)) => Some(l.clone()),
            _ => None,
        }
    }

    /// Builds the typed config; `root` is where the docker binaries are looked for.
    fn build(&self, sources: Vec<PathBuf>, root: &Path) -> anyhow::Result<Config> {
        let bad = |section: &str, key: &str, src: &Path, msg: String| {
            anyhow!("config file {}: [{section}] {key}: {msg}", src.display())
        };
        let kind = match self.str("pacman", "type") {
            None | Some(("none", _)) => infer_kind(root),
            Some(("ostree", _)) => PackageManager::Ostree,
            Some(("ostree+compose_apps", _)) => PackageManager::OstreeComposeApps,
            Some((other, src)) => {
                let msg = format!("unknown package manager {other:?} (expected \"ostree\" or \"ostree+compose_apps\")");
                return Err(bad("pacman", "type", src, msg));
            }
        };
        let booted = match self.str("pacman", "booted") {
            None | Some(("booted" | "1" | "", _)) => BootedMode::Booted,
            Some(("staged" | "0", _)) => BootedMode::Staged,
            // A test double (no real boot): reachable only in builds made for tests.
            Some(("simulated", _)) if cfg!(feature = "simulation") => BootedMode::Simulated,
            Some(("simulated", src)) => {
                let msg = "\"simulated\" is a test double this build does not have (cargo feature `simulation`)".to_string();
                return Err(bad("pacman", "booted", src, msg));
            }
            Some((other, src)) => {
                let msg = format!("unknown mode {other:?} (expected \"booted\", \"staged\", \"0\" or \"simulated\")");
                return Err(bad("pacman", "booted", src, msg));
            }
        };
        let hwid = match self.str("provision", "primary_ecu_hardware_id") {
            Some((s, _)) if !s.is_empty() => s.to_owned(),
            _ => hostname()?,
        };
        let storage_path = PathBuf::from(self.text("storage", "path", "/var/sota"));
        let uptane_metadata_path = match self.text("storage", "uptane_metadata_path", "metadata") {
            m if m == "metadata" => PathBuf::from("/usr/lib/sota/tuf"),
            m => storage_path.join(m),
        };
        let sqldb_path = storage_path.join(self.text("storage", "sqldb_path", "sql.db"));
        let base_path = PathBuf::from(self.text("import", "base_path", "/var/sota/import"));
        let tls_clientcert_path = Some(self.text("import", "tls_clientcert_path", ""))
            .filter(|p| !p.is_empty())
            .map(|p| base_path.join(p));
        Ok(Config {
            provision: Provision {
                primary_ecu_hardware_id: hwid,
                primary_ecu_serial: self
                    .str("provision", "primary_ecu_serial")
                    .map(|(s, _)| s.to_owned())
                    .filter(|s| !s.is_empty()),
            },
            pacman: Pacman {
                kind,
                sysroot: PathBuf::from(self.text("pacman", "sysroot", "/")),
                os: self.text("pacman", "os", "lmp"),
                booted,
                tags: self.list("pacman", "tags").unwrap_or_default(),
                compose_apps: self.list("pacman", "compose_apps"),
                reset_apps_root: self
                    .text("pacman", "reset_apps_root", "/var/sota/reset-apps")
                    .into(),
                compose_apps_root: self
                    .text("pacman", "compose_apps_root", "/var/sota/compose-apps")
                    .into(),
                docker_compose_bin: Some(self.text("pacman", "docker_compose_bin", ""))
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from),
                callback_program: Some(self.text("pacman", "callback_program", ""))
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from),
            },
            storage: Storage {
                path: storage_path,
                uptane_metadata_path,
                sqldb_path,
            },
            import: Import {
                base_path,
                tls_clientcert_path,
            },
            bootloader: Bootloader {
                rollback_mode: self.text("bootloader", "rollback_mode", "none"),
                reboot_command: self.text("bootloader", "reboot_command", "/sbin/reboot"),
                reboot_sentinel_dir: self
                    .text(
                        "bootloader",
                        "reboot_sentinel_dir",
                        "/var/run/aktualizr-session",
                    )
                    .into(),
                reboot_sentinel_name: self.text(
                    "bootloader",
                    "reboot_sentinel_name",
                    "need_reboot",
                ),
            },
            sources,
        })
    }
}

/// aktualizr-lite's INI parser saw every value as a string, so `os = 1` or `booted = 0`
/// worked there and must keep working; only arrays and tables are a mistake for strings.
fn convert(v: &toml::Value, kind: Kind) -> anyhow::Result<Value> {
    fn scalar(v: &toml::Value) -> Option<String> {
        match v {
            toml::Value::String(s) => Some(s.clone()),
            toml::Value::Integer(i) => Some(i.to_string()),
            toml::Value::Float(f) => Some(f.to_string()),
            toml::Value::Boolean(b) => Some(b.to_string()),
            toml::Value::Datetime(d) => Some(d.to_string()),
            toml::Value::Array(_) | toml::Value::Table(_) => None,
        }
    }
    match (kind, v) {
        (Kind::List, toml::Value::Array(items)) => {
            let mut parts = Vec::new();
            for item in items {
                let s = scalar(item).ok_or_else(|| {
                    anyhow!("expected strings in the array, found {}", item.type_str())
                })?;
                parts.push(s);
            }
            Ok(Value::List(split_list(&parts.join(","))))
        }
        (Kind::List, _) => scalar(v)
            .map(|s| Value::List(split_list(&s)))
            .ok_or_else(|| {
                anyhow!(
                    "expected a string or an array of strings, found {}",
                    v.type_str()
                )
            }),
        (Kind::Str, _) => scalar(v)
            .map(Value::Str)
            .ok_or_else(|| anyhow!("expected a string, found {}", v.type_str())),
    }
}

/// "main, devel" and "main devel" both mean two entries (aktualizr-lite splits on both).
fn split_list(s: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for part in s.split(|c: char| c == ',' || c.is_whitespace()) {
        if !part.is_empty() && !out.iter().any(|o| o == part) {
            out.push(part.to_owned());
        }
    }
    out
}

fn infer_kind(root: &Path) -> PackageManager {
    if root.join("usr/bin/dockerd").exists() && root.join("usr/bin/docker").exists() {
        PackageManager::OstreeComposeApps
    } else {
        PackageManager::Ostree
    }
}

fn hostname() -> anyhow::Result<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .find(|s| !s.is_empty())
        .ok_or_else(|| {
            anyhow!(
                "[provision] primary_ecu_hardware_id is not set and the hostname cannot be read"
            )
        })
}

/// Expands config or policy paths into the files they name, in path order; a directory gives
/// its `*.toml` regular files sorted by name. Explicit paths must exist (a typo on the
/// command line must not silently fall back to nothing); missing defaults are skipped.
/// `strict` (the policy): a `*.toml` that is not a readable regular file (a dangling symlink,
/// a directory, a FIFO) and a dangling symlink in place of a path are errors, not skipped: a
/// security policy fails closed. The config stays as lenient as aktualizr-lite.
pub(crate) fn expand_paths(
    paths: &[PathBuf],
    defaults: &[&str],
    what: &str,
    strict: bool,
) -> anyhow::Result<Vec<PathBuf>> {
    let explicit = !paths.is_empty();
    let list: Vec<PathBuf> = if explicit {
        paths.to_vec()
    } else {
        defaults.iter().map(PathBuf::from).collect()
    };
    let mut files = Vec::new();
    for path in &list {
        let meta = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                if strict && fs::symlink_metadata(path).is_ok() {
                    bail!(
                        "{what} path {} is a dangling symlink: refused (fail closed)",
                        path.display()
                    );
                }
                if explicit {
                    bail!("{what} path {} does not exist", path.display());
                }
                continue;
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot access {what} path {}", path.display()))
            }
        };
        if !meta.is_dir() {
            files.push(path.clone());
            continue;
        }
        let read_err = || format!("cannot list {what} directory {}", path.display());
        let mut entries = Vec::new();
        for entry in fs::read_dir(path).with_context(read_err)? {
            let p = entry.with_context(read_err)?.path();
            if p.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            match fs::metadata(&p) {
                Ok(m) if m.is_file() => entries.push(p),
                _ if !strict => {}
                Ok(_) => bail!(
                    "{what} file {} is not a regular file: refused (fail closed)",
                    p.display()
                ),
                Err(e) => bail!(
                    "{what} file {} cannot be read ({e}; a dangling symlink?): refused (fail closed)",
                    p.display()
                ),
            }
        }
        entries.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        files.extend(entries);
    }
    Ok(files)
}

impl Config {
    pub(crate) const DEFAULT_PATHS: [&'static str; 3] = [
        "/usr/lib/sota/conf.d",
        "/var/sota/sota.toml",
        "/etc/sota/conf.d/",
    ];

    /// Reads the configuration as aktualizr-lite does: files ordered by basename across all
    /// paths (a later same-named file replaces an earlier one), then applied key by key.
    pub fn load(paths: &[PathBuf]) -> anyhow::Result<Config> {
        Self::load_with_root(paths, Path::new("/"))
    }

    fn load_with_root(paths: &[PathBuf], root: &Path) -> anyhow::Result<Config> {
        let mut by_name: BTreeMap<OsString, PathBuf> = BTreeMap::new();
        for file in expand_paths(paths, &Self::DEFAULT_PATHS, "config", false)? {
            let name = file.file_name().map(OsString::from).unwrap_or_default();
            by_name.insert(name, file);
        }
        let files: Vec<PathBuf> = by_name.into_values().collect();
        let mut merged = Merged::default();
        for file in &files {
            merged.apply_file(file)?;
        }
        merged.build(files, root)
    }

    /// The agent's own state lives next to aktualizr-lite's, so one `[storage] path` moves both.
    pub fn state_dir(&self) -> PathBuf {
        self.storage.path.join("usb-update")
    }

    /// Reads the device certificate each time: registration can happen while we run.
    pub fn device_type(&self) -> anyhow::Result<DeviceType> {
        let Some(path) = &self.import.tls_clientcert_path else {
            return Ok(DeviceType::Undefined);
        };
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(DeviceType::Undefined),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot read client certificate {}", path.display()))
            }
        };
        let category = business_category(&bytes)
            .with_context(|| format!("cannot parse client certificate {}", path.display()))?;
        Ok(match category.as_deref() {
            Some("production") => DeviceType::Prod,
            _ => DeviceType::Ci,
        })
    }
}

/// The first businessCategory of the subject of the first certificate (PEM, or raw DER).
/// An undecodable value is an error rather than "not production": guessing CI on a
/// production device would make it trust the CI roots.
fn business_category(bytes: &[u8]) -> anyhow::Result<Option<String>> {
    use x509_parser::oid_registry::OID_X509_BUSINESS_CATEGORY;
    use x509_parser::pem::Pem;
    let mut der = None;
    for pem in Pem::iter_from_buffer(bytes) {
        let pem = pem.map_err(|e| anyhow!("bad PEM block: {e}"))?;
        if pem.label == "CERTIFICATE" {
            der = Some(pem.contents);
            break;
        }
    }
    let der = der.as_deref().unwrap_or(bytes);
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| anyhow!("not an X.509 certificate: {e}"))?;
    let attr = cert
        .subject()
        .iter_by_oid(&OID_X509_BUSINESS_CATEGORY)
        .next();
    attr.map(|a| {
        a.as_str()
            .map(str::to_owned)
            .map_err(|e| anyhow!("businessCategory: {e}"))
    })
    .transpose()
}

#[cfg(test)]
mod tests;
