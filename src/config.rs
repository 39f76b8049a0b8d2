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
    ("pacman", "type", Kind::Str),
    ("pacman", "sysroot", Kind::Str),
    ("pacman", "os", Kind::Str),
    ("pacman", "booted", Kind::Str),
    ("pacman", "tags", Kind::List),
    ("pacman", "compose_apps", Kind::List),
    ("pacman", "reset_apps_root", Kind::Str),
    ("pacman", "compose_apps_root", Kind::Str),
    ("pacman", "docker_compose_bin", Kind::Str),
    ("storage", "path", Kind::Str),
    ("storage", "uptane_metadata_path", Kind::Str),
    ("import", "base_path", Kind::Str),
    ("import", "tls_clientcert_path", Kind::Str),
    ("bootloader", "rollback_mode", Kind::Str),
    ("bootloader", "reboot_command", Kind::Str),
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
            Some(("simulated", _)) => BootedMode::Simulated,
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
        let base_path = PathBuf::from(self.text("import", "base_path", "/var/sota/import"));
        let tls_clientcert_path = Some(self.text("import", "tls_clientcert_path", ""))
            .filter(|p| !p.is_empty())
            .map(|p| base_path.join(p));
        Ok(Config {
            provision: Provision {
                primary_ecu_hardware_id: hwid,
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
            },
            storage: Storage {
                path: storage_path,
                uptane_metadata_path,
            },
            import: Import {
                base_path,
                tls_clientcert_path,
            },
            bootloader: Bootloader {
                rollback_mode: self.text("bootloader", "rollback_mode", "none"),
                reboot_command: self.text("bootloader", "reboot_command", "/sbin/reboot"),
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
pub(crate) fn expand_paths(
    paths: &[PathBuf],
    defaults: &[&str],
    what: &str,
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
            if p.extension().is_some_and(|e| e == "toml") && p.is_file() {
                entries.push(p);
            }
        }
        entries.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        files.extend(entries);
    }
    Ok(files)
}

impl Config {
    pub const DEFAULT_PATHS: [&'static str; 3] = [
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
        for file in expand_paths(paths, &Self::DEFAULT_PATHS, "config")? {
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
mod tests {
    use super::*;
    use tempfile::TempDir;

    fn write(dir: &Path, rel: &str, text: &str) -> PathBuf {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
        p
    }

    fn load_one(text: &str) -> anyhow::Result<Config> {
        let t = TempDir::new().unwrap();
        Config::load(&[write(t.path(), "sota.toml", text)])
    }

    fn err_of(r: anyhow::Result<Config>) -> String {
        format!("{:#}", r.expect_err("expected an error"))
    }

    #[test]
    fn files_apply_in_basename_order_across_directories() {
        let t = TempDir::new().unwrap();
        let usr = write(t.path(), "usr/z-10.toml", "[pacman]\nos = \"usr-z\"\n");
        let sota = write(t.path(), "var/sota.toml", "[pacman]\nos = \"sota\"\n");
        let etc = write(t.path(), "etc/a.toml", "[pacman]\nos = \"etc-a\"\n");
        let dirs = [
            usr.parent().unwrap().into(),
            sota.clone(),
            etc.parent().unwrap().into(),
        ];
        let c = Config::load(&dirs).unwrap();
        assert_eq!(c.pacman.os, "usr-z");
        assert_eq!(c.sources, vec![etc, sota, usr]);
    }

    #[test]
    fn same_basename_in_later_path_replaces_the_file_completely() {
        let t = TempDir::new().unwrap();
        write(
            t.path(),
            "usr/x.toml",
            "[pacman]\nos = \"usr\"\ntags = \"t1\"\n",
        );
        let etc = write(t.path(), "etc/x.toml", "[pacman]\nsysroot = \"/sysroot\"\n");
        let c = Config::load(&[t.path().join("usr"), t.path().join("etc")]).unwrap();
        assert_eq!(c.pacman.os, "lmp");
        assert!(c.pacman.tags.is_empty());
        assert_eq!(c.pacman.sysroot, PathBuf::from("/sysroot"));
        assert_eq!(c.sources, vec![etc]);
    }

    #[test]
    fn later_files_override_key_by_key() {
        let t = TempDir::new().unwrap();
        write(
            t.path(),
            "d/a.toml",
            "[pacman]\nos = \"a\"\nsysroot = \"/a\"\n[storage]\npath = \"/s\"\n",
        );
        write(t.path(), "d/b.toml", "[pacman]\nos = \"b\"\n");
        let c = Config::load(&[t.path().join("d")]).unwrap();
        assert_eq!(c.pacman.os, "b");
        assert_eq!(c.pacman.sysroot, PathBuf::from("/a"));
        assert_eq!(c.state_dir(), PathBuf::from("/s/usb-update"));
    }

    #[test]
    fn directories_contribute_only_their_own_toml_files() {
        let t = TempDir::new().unwrap();
        write(t.path(), "d/a.toml", "[pacman]\nos = \"a\"\n");
        write(t.path(), "d/b.toml.bak", "[pacman]\nos = \"bak\"\n");
        write(t.path(), "d/sub/c.toml", "[pacman]\nos = \"sub\"\n");
        fs::create_dir_all(t.path().join("d/dir.toml")).unwrap();
        let c = Config::load(&[t.path().join("d")]).unwrap();
        assert_eq!(c.pacman.os, "a");
        assert_eq!(c.sources, vec![t.path().join("d/a.toml")]);
    }

    #[test]
    fn unknown_sections_and_keys_are_ignored() {
        let c = load_one(
            "top = 1\n[tls]\nserver = \"https://x\"\n[pacman]\nos = \"x\"\nreset_apps = \"\"\n[pacman.extra]\nk = 1\n",
        )
        .unwrap();
        assert_eq!(c.pacman.os, "x");
    }

    #[test]
    fn malformed_file_error_names_file_and_line() {
        let t = TempDir::new().unwrap();
        write(t.path(), "d/a.toml", "[pacman]\nos = \"ok\"\n");
        write(
            t.path(),
            "d/broken.toml",
            "[pacman]\nos = \"ok\"\ntags = main\n",
        );
        let e = err_of(Config::load(&[t.path().join("d")]));
        assert!(e.contains("broken.toml") && e.contains("line 3"), "{e}");
    }

    #[test]
    fn wrong_kind_of_value_names_file_and_key() {
        let e = err_of(load_one("[pacman]\ntags = { a = 1 }\n"));
        assert!(
            e.contains("sota.toml") && e.contains("[pacman] tags"),
            "{e}"
        );
        let e = err_of(load_one("[storage]\npath = [\"/a\"]\n"));
        assert!(
            e.contains("sota.toml") && e.contains("[storage] path"),
            "{e}"
        );
        let e = err_of(load_one("[pacman]\ncompose_apps = [[\"a\"]]\n"));
        assert!(e.contains("[pacman] compose_apps"), "{e}");
        let e = err_of(load_one("pacman = \"ostree\"\n"));
        assert!(
            e.contains("sota.toml") && e.contains("[pacman] must be a table"),
            "{e}"
        );
    }

    #[test]
    fn explicit_missing_path_is_an_error_but_missing_defaults_are_skipped() {
        let t = TempDir::new().unwrap();
        let missing = t.path().join("nope.toml");
        let e = err_of(Config::load(std::slice::from_ref(&missing)));
        assert!(
            e.contains(&format!("config path {} does not exist", missing.display())),
            "{e}"
        );
        let present = write(t.path(), "d/a.toml", "");
        let dir = t.path().join("d");
        let defaults = [missing.to_str().unwrap(), dir.to_str().unwrap()];
        assert_eq!(
            expand_paths(&[], &defaults, "config").unwrap(),
            vec![present]
        );
    }

    #[test]
    fn defaults_apply_when_keys_are_unset_or_empty() {
        for text in ["", "[pacman]\nsysroot = \"\"\nos = \"\"\n[storage]\npath = \"\"\nuptane_metadata_path = \"metadata\"\n"] {
            let c = load_one(text).unwrap();
            assert_eq!(c.pacman.sysroot, PathBuf::from("/"));
            assert_eq!(c.pacman.os, "lmp");
            assert_eq!(c.pacman.booted, BootedMode::Booted);
            assert!(c.pacman.tags.is_empty());
            assert_eq!(c.pacman.compose_apps, None);
            assert_eq!(c.pacman.reset_apps_root, PathBuf::from("/var/sota/reset-apps"));
            assert_eq!(c.pacman.compose_apps_root, PathBuf::from("/var/sota/compose-apps"));
            assert_eq!(c.pacman.docker_compose_bin, None);
            assert_eq!(c.storage.path, PathBuf::from("/var/sota"));
            assert_eq!(c.storage.uptane_metadata_path, PathBuf::from("/usr/lib/sota/tuf"));
            assert_eq!(c.import.base_path, PathBuf::from("/var/sota/import"));
            assert_eq!(c.import.tls_clientcert_path, None);
            assert_eq!(c.bootloader.rollback_mode, "none");
            assert_eq!(c.bootloader.reboot_command, "/sbin/reboot");
            assert_eq!(c.state_dir(), PathBuf::from("/var/sota/usb-update"));
        }
    }

    #[test]
    fn empty_hardware_id_falls_back_to_the_hostname() {
        let c = load_one("[provision]\nprimary_ecu_hardware_id = \"\"\n").unwrap();
        assert_eq!(c.provision.primary_ecu_hardware_id, hostname().unwrap());
        assert!(!c.provision.primary_ecu_hardware_id.is_empty());
        let c = load_one("[provision]\nprimary_ecu_hardware_id = \"rpi4\"\n").unwrap();
        assert_eq!(c.provision.primary_ecu_hardware_id, "rpi4");
    }

    #[test]
    fn storage_paths_resolve_like_aktualizr() {
        let c = load_one("[storage]\npath = \"/data\"\nuptane_metadata_path = \"meta\"\n").unwrap();
        assert_eq!(c.storage.uptane_metadata_path, PathBuf::from("/data/meta"));
        let c = load_one("[storage]\nuptane_metadata_path = \"/roots\"\n").unwrap();
        assert_eq!(c.storage.uptane_metadata_path, PathBuf::from("/roots"));
    }

    #[test]
    fn tags_accept_commas_spaces_and_arrays() {
        let tags = |v: &str| {
            load_one(&format!("[pacman]\ntags = {v}\n"))
                .unwrap()
                .pacman
                .tags
        };
        assert_eq!(tags("\"main, devel\""), ["main", "devel"]);
        assert_eq!(tags("\"main devel,,qa  main\""), ["main", "devel", "qa"]);
        assert_eq!(tags("[\"main\", \"devel\"]"), ["main", "devel"]);
        assert_eq!(tags("\"\""), Vec::<String>::new());
    }

    #[test]
    fn compose_apps_unset_means_all_and_empty_means_none() {
        let apps = |t: &str| load_one(t).unwrap().pacman.compose_apps;
        assert_eq!(apps("[pacman]\n"), None);
        assert_eq!(apps("[pacman]\ncompose_apps = \"\"\n"), Some(vec![]));
        assert_eq!(apps("[pacman]\ncompose_apps = []\n"), Some(vec![]));
        assert_eq!(
            apps("[pacman]\ncompose_apps = \"a,b c\"\n"),
            Some(vec!["a".into(), "b".into(), "c".into()])
        );
    }

    #[test]
    fn ini_style_scalars_are_accepted_as_strings() {
        let c = load_one(
            "[pacman]\nos = 7\nbooted = 0\ntags = 42\n[bootloader]\nrollback_mode = true\n",
        )
        .unwrap();
        assert_eq!(c.pacman.os, "7");
        assert_eq!(c.pacman.booted, BootedMode::Staged);
        assert_eq!(c.pacman.tags, ["42"]);
        assert_eq!(c.bootloader.rollback_mode, "true");
    }

    #[test]
    fn package_manager_and_booted_mode_values() {
        let kind =
            |v: &str| load_one(&format!("[pacman]\ntype = \"{v}\"\n")).map(|c| c.pacman.kind);
        assert_eq!(kind("ostree").unwrap(), PackageManager::Ostree);
        assert_eq!(
            kind("ostree+compose_apps").unwrap(),
            PackageManager::OstreeComposeApps
        );
        let e = err_of(load_one("[pacman]\ntype = \"rpm\"\n"));
        assert!(
            e.contains("sota.toml") && e.contains("[pacman] type") && e.contains("rpm"),
            "{e}"
        );
        let booted =
            |v: &str| load_one(&format!("[pacman]\nbooted = \"{v}\"\n")).map(|c| c.pacman.booted);
        assert_eq!(booted("booted").unwrap(), BootedMode::Booted);
        assert_eq!(booted("staged").unwrap(), BootedMode::Staged);
        assert_eq!(booted("0").unwrap(), BootedMode::Staged);
        assert_eq!(booted("simulated").unwrap(), BootedMode::Simulated);
        let e = err_of(load_one("[pacman]\nbooted = \"maybe\"\n"));
        assert!(
            e.contains("sota.toml") && e.contains("[pacman] booted"),
            "{e}"
        );
        assert_eq!(
            serde_json::to_string(&PackageManager::OstreeComposeApps).unwrap(),
            "\"ostree+compose_apps\""
        );
        assert_eq!(
            serde_json::to_string(&DeviceType::Prod).unwrap(),
            "\"prod\""
        );
    }

    #[test]
    fn unset_package_manager_is_inferred_from_docker_binaries() {
        let t = TempDir::new().unwrap();
        let conf = write(t.path(), "sota.toml", "[pacman]\ntype = \"none\"\n");
        let root = t.path().join("root");
        let kind = || {
            Config::load_with_root(std::slice::from_ref(&conf), &root)
                .unwrap()
                .pacman
                .kind
        };
        write(&root, "usr/bin/docker", "");
        assert_eq!(kind(), PackageManager::Ostree);
        write(&root, "usr/bin/dockerd", "");
        assert_eq!(kind(), PackageManager::OstreeComposeApps);
    }

    fn device_type(cert: Option<&str>, copy_fixture: Option<&str>) -> anyhow::Result<DeviceType> {
        let t = TempDir::new().unwrap();
        let base = t.path().join("import");
        fs::create_dir_all(&base).unwrap();
        if let Some(name) = copy_fixture {
            let src = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/certs")
                .join(name);
            fs::copy(src, base.join("client.pem")).unwrap();
        }
        let mut text = format!("[import]\nbase_path = \"{}\"\n", base.display());
        if let Some(c) = cert {
            text += &format!("tls_clientcert_path = \"{c}\"\n");
        }
        load_one(&text)?.device_type()
    }

    #[test]
    fn device_type_comes_from_the_certificate_business_category() {
        assert_eq!(
            device_type(None, Some("prod.pem")).unwrap(),
            DeviceType::Undefined
        );
        assert_eq!(
            device_type(Some("client.pem"), None).unwrap(),
            DeviceType::Undefined
        );
        assert_eq!(
            device_type(Some("client.pem"), Some("prod.pem")).unwrap(),
            DeviceType::Prod
        );
        // CN and O say "production", businessCategory says "dev": only the latter counts.
        assert_eq!(
            device_type(Some("client.pem"), Some("ci.pem")).unwrap(),
            DeviceType::Ci
        );
    }

    #[test]
    fn unparsable_certificate_is_an_error_naming_the_file() {
        let t = TempDir::new().unwrap();
        let cert = write(t.path(), "garbage.pem", "not a certificate\n");
        let c = load_one(&format!(
            "[import]\ntls_clientcert_path = \"{}\"\n",
            cert.display()
        ))
        .unwrap();
        assert_eq!(
            c.import.tls_clientcert_path.as_deref(),
            Some(cert.as_path())
        );
        let e = format!("{:#}", c.device_type().unwrap_err());
        assert!(e.contains("garbage.pem"), "{e}");
    }
}
