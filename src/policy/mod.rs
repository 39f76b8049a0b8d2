//! The device policy: which updates a device accepts from a stick, beyond what TUF proves.
//!
//! The vendor ships `/usr/lib/usb-update/policy.toml` in the (read-only) image; a site adapts
//! it in `/etc` without copying the whole file, hence key-by-key layering. This is a security
//! policy, so unlike the aktualizr-lite config nothing is lenient: each file is parsed on its
//! own into an all-`Option` layer with unknown keys denied, and a typo, a wrong type or a
//! broken file stops the agent with the file and line, instead of quietly meaning "allow".
//!
//! Adding a section: a public `XxxPolicy` with its safe `Default`, a private `XxxLayer` of
//! `Option`s with `deny_unknown_fields`, one field in [`Layer`] and one `merge!` in
//! [`Policy::apply`].

mod decide;
pub(crate) use decide::{decide, fmt_version, Decide};

use crate::config::expand_paths;
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `Policy::default()` is the safe policy of a device with no policy file at all.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Policy {
    pub update: UpdatePolicy,
    pub agent: AgentPolicy,
    pub apps: AppsPolicy,
    pub media: MediaPolicy,
    pub feedback: FeedbackPolicy,
    pub signature: SignaturePolicy,
    /// The files applied, in order, so `check` and `status` can show where a rule came from.
    pub sources: Vec<PathBuf>,
}

/// The `[update]` section: which targets may replace the running one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpdatePolicy {
    /// A lower version than the running one is refused (exit 102) unless set.
    pub allow_downgrade: bool,
    /// The running target again is "nothing to do" (exit 0) unless set.
    pub allow_reinstall: bool,
    /// Targets below are refused (103): pins a floor such as a security fix.
    pub min_version: Option<u64>,
    /// Targets above are refused (103): holds a site on a validated release.
    pub max_version: Option<u64>,
    /// `None`: the tags the device follows (`[pacman] tags`).
    pub allowed_tags: Option<Vec<String>>,
    /// A bundle tag that is allowed but not followed now is refused (103) unless set.
    pub allow_tag_switch: bool,
    /// Without `tuf/bundle-targets.json` aktualizr-lite skipped every bundle check.
    pub require_bundle_targets: bool,
    /// Targets that failed here before are refused (103) unless set, so a bad stick
    /// plugged again does not loop through install and rollback.
    pub retry_failed_targets: bool,
    /// Boots of a new rootfs that `run` starts before it gives up on it: a boot that
    /// starts with this many already counted rolls back (the target is denylisted).
    pub boot_attempts: u32,
    /// The running version is unknown (no update recorded it, aktualizr-lite does not know
    /// it, no trusted target or commit metadata names it), so the downgrade rule cannot
    /// apply: installs are allowed unless unset (then 103, or `--force`).
    pub allow_unknown_running_version: bool,
}

impl Default for UpdatePolicy {
    fn default() -> Self {
        UpdatePolicy {
            allow_downgrade: false,
            allow_reinstall: false,
            min_version: None,
            max_version: None,
            allowed_tags: None,
            allow_tag_switch: false,
            require_bundle_targets: true,
            retry_failed_targets: false,
            boot_attempts: 3,
            allow_unknown_running_version: true,
        }
    }
}

/// The `[agent]` section: how the updater behaves on this device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentPolicy {
    /// The flock shared with aktualizr-lite; another path only for tests and sandboxes.
    pub lock_file: PathBuf,
    /// Sticks are mounted under `<run_dir>/<filesystem uuid>`; `status.json` lives here.
    pub run_dir: PathBuf,
    /// The reboot that a new rootfs needs, and the Docker restart that new apps need.
    pub reboot_command: Vec<String>,
    pub docker_restart_command: Vec<String>,
    /// `systemctl`, to stop aktualizr-lite for the update and start it again after.
    pub systemctl: String,
    /// aktualizr-lite's unit; empty: never touched.
    pub aklite_unit: String,
    /// Write `usb-update-report-<device>.json` (and a log excerpt) onto the stick.
    pub report: bool,
    /// `run` said 90 (boot firmware updated): reboot at once to complete it.
    pub reboot_for_boot_firmware: bool,
    /// `agent handle` gives up (50, error pattern, aktualizr-lite started again, the stick
    /// unmounted) when reading and installing from the stick shows no progress this long.
    pub stall_timeout: Duration,
}

impl Default for AgentPolicy {
    fn default() -> Self {
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect();
        AgentPolicy {
            lock_file: PathBuf::from(crate::lock::DEFAULT_PATH),
            run_dir: PathBuf::from("/run/usb-update"),
            reboot_command: argv(&["systemctl", "reboot"]),
            docker_restart_command: argv(&["systemctl", "restart", "docker.service"]),
            systemctl: "systemctl".into(),
            aklite_unit: "aktualizr-lite.service".into(),
            report: true,
            reboot_for_boot_firmware: false,
            stall_timeout: Duration::from_secs(600),
        }
    }
}

/// The `[media]` section: which sticks the agent takes, and which bundle on them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MediaPolicy {
    /// Filesystems mounted (`ID_FS_TYPE`).
    pub filesystems: Vec<String>,
    /// Only removable USB storage (`ID_BUS=usb`); off only for test rigs with loop devices.
    pub require_usb: bool,
    /// With several bundles on a stick: the directory to take (`"."` for the root); unset:
    /// refuse.
    pub bundle: Option<String>,
    /// Directories where another automounter (udisks2, a desktop) mounts media, watched by
    /// `agent watch`.
    pub watch_dirs: Vec<PathBuf>,
    /// Only media whose filesystem label is one of these (`ID_FS_LABEL`); empty: any label.
    pub labels: Vec<String>,
}

impl Default for MediaPolicy {
    fn default() -> Self {
        MediaPolicy {
            filesystems: vec!["vfat".into(), "exfat".into(), "ext4".into()],
            require_usb: true,
            bundle: None,
            watch_dirs: Vec::new(),
            labels: Vec::new(),
        }
    }
}

/// The `[feedback]` section: LEDs and consoles for the operator at the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FeedbackPolicy {
    /// sysfs LED class directory.
    pub leds_path: PathBuf,
    /// LEDs (names under `leds_path`) that show the agent's patterns; empty: none.
    pub leds: Vec<String>,
    /// Terminals that get one line per step.
    pub consoles: Vec<PathBuf>,
}

impl Default for FeedbackPolicy {
    fn default() -> Self {
        FeedbackPolicy {
            leds_path: PathBuf::from("/sys/class/leds"),
            leds: Vec::new(),
            consoles: vec![PathBuf::from("/dev/console")],
        }
    }
}

/// The `[signature]` section: an operator's signature over the bundle's `tuf/`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SignaturePolicy {
    /// A stick without a signature by one of `trusted_keys` is refused.
    pub required: bool,
    /// Ed25519 public keys, 64 hex digits each.
    pub trusted_keys: Vec<String>,
}

/// The `[apps]` section: when started Compose apps count as up, and what is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppsPolicy {
    /// How long `run` waits for every service to be running (and healthy, where the image
    /// or compose file has a healthcheck) before it calls the update failed.
    #[serde(with = "humantime_serde_secs")]
    pub health_timeout: Duration,
    /// How long every service must stay up, without a restart, to count as started: an
    /// app that exits a second after it started is not up.
    #[serde(with = "humantime_serde_secs")]
    pub settle: Duration,
    /// Blob copies, and image loads, from the stick that run at once (layers are big;
    /// sticks like a few streams, not dozens).
    pub parallel_copies: usize,
    /// Remove images and store blobs that no app of the new target uses, after success.
    pub prune: bool,
}

impl Default for AppsPolicy {
    fn default() -> Self {
        AppsPolicy {
            health_timeout: Duration::from_secs(300),
            settle: Duration::from_secs(10),
            parallel_copies: 3,
            prune: true,
        }
    }
}

/// Durations print as seconds in `--json` output.
mod humantime_serde_secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// One policy file as written: `None` everywhere it says nothing, so it overrides only what
/// it mentions.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Layer {
    update: Option<UpdateLayer>,
    agent: Option<AgentLayer>,
    apps: Option<AppsLayer>,
    media: Option<MediaLayer>,
    feedback: Option<FeedbackLayer>,
    signature: Option<SignatureLayer>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MediaLayer {
    filesystems: Option<Vec<String>>,
    require_usb: Option<bool>,
    bundle: Option<String>,
    watch_dirs: Option<Vec<PathBuf>>,
    labels: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackLayer {
    leds_path: Option<PathBuf>,
    leds: Option<Vec<String>>,
    consoles: Option<Vec<PathBuf>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureLayer {
    required: Option<bool>,
    trusted_keys: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppsLayer {
    #[serde(default, deserialize_with = "duration")]
    health_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    settle: Option<Duration>,
    parallel_copies: Option<usize>,
    prune: Option<bool>,
}

/// `"90s"`, `"5m"`, `"1m 30s"` (humantime).
fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration: {e}")))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentLayer {
    lock_file: Option<PathBuf>,
    run_dir: Option<PathBuf>,
    reboot_command: Option<Vec<String>>,
    docker_restart_command: Option<Vec<String>>,
    systemctl: Option<String>,
    aklite_unit: Option<String>,
    report: Option<bool>,
    reboot_for_boot_firmware: Option<bool>,
    #[serde(default, deserialize_with = "duration")]
    stall_timeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateLayer {
    allow_downgrade: Option<bool>,
    allow_reinstall: Option<bool>,
    min_version: Option<u64>,
    max_version: Option<u64>,
    allowed_tags: Option<Vec<String>>,
    allow_tag_switch: Option<bool>,
    require_bundle_targets: Option<bool>,
    retry_failed_targets: Option<bool>,
    boot_attempts: Option<u32>,
    allow_unknown_running_version: Option<bool>,
}

/// Copies the fields a layer sets onto the merged section; `opt` fields are `Option` in the
/// merged section too.
macro_rules! merge {
    ($dst:expr, $src:expr; $($field:ident),* $(; opt $($opt:ident),*)?) => {{
        let src = $src;
        $(if let Some(v) = src.$field { $dst.$field = v; })*
        $($(if let Some(v) = src.$opt { $dst.$opt = Some(v); })*)?
    }};
}

impl Layer {
    fn read(file: &Path) -> anyhow::Result<Layer> {
        let text = fs::read_to_string(file)
            .with_context(|| format!("cannot read policy file {}", file.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid policy file {}", file.display()))
    }
}

impl Policy {
    pub(crate) const DEFAULT_PATHS: [&'static str; 3] = [
        "/usr/lib/usb-update/policy.toml",
        "/etc/usb-update/policy.toml",
        "/etc/usb-update/policy.d",
    ];

    /// Applies the policy files in path order (a directory's `*.toml` sorted by file name)
    /// over the safe defaults; unlike the aktualizr config, the order is the path order, so
    /// `/etc` always wins over the vendor file whatever the names.
    pub fn load(paths: &[PathBuf]) -> anyhow::Result<Policy> {
        let mut policy = Policy::default();
        let mut min_source = None;
        let mut max_source = None;
        for file in expand_paths(paths, &Self::DEFAULT_PATHS, "policy", true)? {
            let layer = Layer::read(&file)?;
            if let Some(u) = &layer.update {
                // "No tag allowed" would refuse every bundle, and "any tag" is what the key
                // left out means for a device without tags: neither is what `[]` says.
                if u.allowed_tags.as_ref().is_some_and(Vec::is_empty) {
                    bail!(
                        "policy file {}: [update] allowed_tags = [] is not allowed: list the tags \
                         bundles may carry, or leave the key out to follow [pacman] tags",
                        file.display()
                    );
                }
                if u.min_version.is_some() {
                    min_source = Some(file.clone());
                }
                if u.max_version.is_some() {
                    max_source = Some(file.clone());
                }
            }
            policy.apply(layer);
            policy.sources.push(file);
        }
        if let (Some(min), Some(max)) = (policy.update.min_version, policy.update.max_version) {
            if min > max {
                let show =
                    |p: Option<PathBuf>| p.map(|p| p.display().to_string()).unwrap_or_default();
                bail!(
                    "policy: [update] min_version {min} (from {}) is greater than max_version {max} (from {}): no target could ever be installed",
                    show(min_source),
                    show(max_source)
                );
            }
        }
        for (name, argv) in [
            ("reboot_command", &policy.agent.reboot_command),
            (
                "docker_restart_command",
                &policy.agent.docker_restart_command,
            ),
        ] {
            if argv.is_empty() {
                bail!("policy: [agent] {name} must name a program");
            }
        }
        if policy.update.boot_attempts == 0 {
            bail!("policy: [update] boot_attempts must be at least 1");
        }
        if policy.apps.parallel_copies == 0 {
            bail!("policy: [apps] parallel_copies must be at least 1");
        }
        Ok(policy)
    }

    fn apply(&mut self, layer: Layer) {
        if let Some(u) = layer.update {
            merge!(self.update, u;
                allow_downgrade, allow_reinstall, allow_tag_switch, require_bundle_targets,
                retry_failed_targets, boot_attempts, allow_unknown_running_version;
                opt min_version, max_version, allowed_tags);
        }
        if let Some(a) = layer.agent {
            merge!(self.agent, a; lock_file, run_dir, reboot_command, docker_restart_command,
                systemctl, aklite_unit, report, reboot_for_boot_firmware, stall_timeout);
        }
        if let Some(m) = layer.media {
            merge!(self.media, m; filesystems, require_usb, watch_dirs, labels; opt bundle);
        }
        if let Some(f) = layer.feedback {
            merge!(self.feedback, f; leds_path, leds, consoles);
        }
        if let Some(g) = layer.signature {
            merge!(self.signature, g; required, trusted_keys);
        }
        if let Some(a) = layer.apps {
            merge!(self.apps, a; health_timeout, settle, parallel_copies, prune);
        }
    }
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

    fn load_one(text: &str) -> anyhow::Result<Policy> {
        let t = TempDir::new().unwrap();
        Policy::load(&[write(t.path(), "policy.toml", text)])
    }

    fn err_of(r: anyhow::Result<Policy>) -> String {
        format!("{:#}", r.expect_err("expected an error"))
    }

    #[test]
    fn defaults_are_the_safe_ones() {
        let d = UpdatePolicy::default();
        assert!(!d.allow_downgrade && !d.allow_reinstall && !d.allow_tag_switch);
        assert!(d.require_bundle_targets && !d.retry_failed_targets);
        assert_eq!(d.boot_attempts, 3);
        assert!(err_of(load_one("[update]\nboot_attempts = 0\n")).contains("boot_attempts"));
        assert_eq!(
            (d.min_version, d.max_version, d.allowed_tags),
            (None, None, None)
        );
        assert_eq!(load_one("").unwrap().update, UpdatePolicy::default());
        assert_eq!(
            load_one("[update]\n").unwrap().update,
            UpdatePolicy::default()
        );
        let t = TempDir::new().unwrap();
        let p = Policy::load(&[t.path().to_path_buf()]).unwrap();
        assert_eq!(p.update, UpdatePolicy::default());
        assert!(p.sources.is_empty());
    }

    #[test]
    fn every_key_is_read() {
        let p = load_one(
            "[update]\nallow_downgrade = true\nallow_reinstall = true\nmin_version = 10\nmax_version = 500\n\
             allowed_tags = [\"main\", \"devel\"]\nallow_tag_switch = true\nrequire_bundle_targets = false\n\
             retry_failed_targets = true\nboot_attempts = 5\nallow_unknown_running_version = false\n",
        )
        .unwrap();
        let expected = UpdatePolicy {
            allow_downgrade: true,
            allow_reinstall: true,
            min_version: Some(10),
            max_version: Some(500),
            allowed_tags: Some(vec!["main".into(), "devel".into()]),
            allow_tag_switch: true,
            require_bundle_targets: false,
            retry_failed_targets: true,
            boot_attempts: 5,
            allow_unknown_running_version: false,
        };
        assert_eq!(p.update, expected);
    }

    #[test]
    fn the_stall_timeout_is_a_duration_of_ten_minutes_by_default() {
        assert_eq!(
            load_one("").unwrap().agent.stall_timeout,
            Duration::from_secs(600)
        );
        let p = load_one("[agent]\nstall_timeout = \"90s\"\n").unwrap();
        assert_eq!(p.agent.stall_timeout, Duration::from_secs(90));
        assert!(err_of(load_one("[agent]\nstall_timeout = \"soon\"\n")).contains("soon"));
    }

    #[test]
    fn later_files_override_key_by_key_in_path_order() {
        let t = TempDir::new().unwrap();
        // Path order wins over names: the vendor file is "z", the site file "a".
        let vendor = write(
            t.path(),
            "usr/z.toml",
            "[update]\nallow_downgrade = true\nmin_version = 10\n",
        );
        let site = write(t.path(), "etc/a.toml", "[update]\nmin_version = 20\n");
        let p = Policy::load(&[vendor.clone(), site.clone()]).unwrap();
        assert!(p.update.allow_downgrade);
        assert_eq!(p.update.min_version, Some(20));
        assert_eq!(p.sources, vec![vendor, site]);
    }

    #[test]
    fn directory_files_apply_in_file_name_order() {
        let t = TempDir::new().unwrap();
        let b = write(
            t.path(),
            "policy.d/20-b.toml",
            "[update]\nmax_version = 200\n",
        );
        let a = write(
            t.path(),
            "policy.d/10-a.toml",
            "[update]\nmax_version = 100\nallow_reinstall = true\n",
        );
        write(
            t.path(),
            "policy.d/30-c.toml.disabled",
            "[update]\nmax_version = 300\n",
        );
        write(
            t.path(),
            "policy.d/sub/40-d.toml",
            "[update]\nmax_version = 400\n",
        );
        let p = Policy::load(&[t.path().join("policy.d")]).unwrap();
        assert_eq!(p.update.max_version, Some(200));
        assert!(p.update.allow_reinstall);
        assert_eq!(p.sources, vec![a, b]);
    }

    #[test]
    fn unknown_keys_and_sections_are_refused_with_file_and_line() {
        let e = err_of(load_one(
            "[update]\nallow_downgrade = false\nalow_downgrade = true\n",
        ));
        assert!(
            e.contains("policy.toml") && e.contains("line 3") && e.contains("alow_downgrade"),
            "{e}"
        );
        let e = err_of(load_one("[updates]\nallow_downgrade = true\n"));
        assert!(
            e.contains("policy.toml") && e.contains("line 1") && e.contains("updates"),
            "{e}"
        );
        let e = err_of(load_one("allow_downgrade = true\n"));
        assert!(
            e.contains("policy.toml") && e.contains("allow_downgrade"),
            "{e}"
        );
    }

    #[test]
    fn wrong_types_are_refused_with_file_and_line() {
        for (text, line) in [
            ("[update]\nallow_downgrade = \"yes\"\n", "line 2"),
            ("[update]\n\nmin_version = -1\n", "line 3"),
            ("[update]\nmax_version = \"500\"\n", "line 2"),
            ("[update]\nallowed_tags = \"main\"\n", "line 2"),
            ("update = true\n", "line 1"),
        ] {
            let e = err_of(load_one(text));
            assert!(e.contains("policy.toml") && e.contains(line), "{text}: {e}");
        }
    }

    #[test]
    fn malformed_file_is_refused_with_file_and_line() {
        let t = TempDir::new().unwrap();
        write(
            t.path(),
            "d/10-ok.toml",
            "[update]\nallow_downgrade = true\n",
        );
        write(
            t.path(),
            "d/20-broken.toml",
            "[update]\nallow_downgrade = true\nmax_version = \n",
        );
        let e = err_of(Policy::load(&[t.path().join("d")]));
        assert!(e.contains("20-broken.toml") && e.contains("line 3"), "{e}");
    }

    #[test]
    fn explicit_missing_path_is_an_error() {
        let t = TempDir::new().unwrap();
        let missing = t.path().join("policy.toml");
        let e = err_of(Policy::load(std::slice::from_ref(&missing)));
        assert!(
            e.contains(&format!("policy path {} does not exist", missing.display())),
            "{e}"
        );
    }

    #[test]
    fn unreadable_policy_files_fail_closed() {
        let t = TempDir::new().unwrap();
        let d = t.path().join("policy.d");
        write(&d, "10-ok.toml", "[update]\nallow_downgrade = false\n");
        std::os::unix::fs::symlink("/nonexistent/site.toml", d.join("50-site.toml")).unwrap();
        let e = err_of(Policy::load(std::slice::from_ref(&d)));
        assert!(
            e.starts_with(&format!(
                "policy file {} cannot be read (",
                d.join("50-site.toml").display()
            )) && e.ends_with("a dangling symlink?): refused (fail closed)"),
            "{e}"
        );
        std::fs::remove_file(d.join("50-site.toml")).unwrap();
        std::fs::create_dir(d.join("60-dir.toml")).unwrap();
        let e = err_of(Policy::load(std::slice::from_ref(&d)));
        assert!(e.contains("60-dir.toml is not a regular file"), "{e}");
        std::fs::remove_dir(d.join("60-dir.toml")).unwrap();
        // A symlink to a real file is a policy file like any other.
        let real = write(t.path(), "real.toml", "[update]\nallow_downgrade = true\n");
        std::os::unix::fs::symlink(&real, d.join("70-link.toml")).unwrap();
        assert!(
            Policy::load(std::slice::from_ref(&d))
                .unwrap()
                .update
                .allow_downgrade
        );
        // A dangling symlink in place of a policy path.
        let link = t.path().join("policy.toml");
        std::os::unix::fs::symlink("/nonexistent", &link).unwrap();
        let e = err_of(Policy::load(std::slice::from_ref(&link)));
        assert!(
            e.contains("is a dangling symlink: refused (fail closed)"),
            "{e}"
        );
    }

    #[test]
    fn an_empty_allowed_tags_list_is_an_error() {
        let e = err_of(load_one("[update]\nallowed_tags = []\n"));
        assert!(
            e.ends_with(
                "[update] allowed_tags = [] is not allowed: list the tags bundles may carry, \
                 or leave the key out to follow [pacman] tags"
            ),
            "{e}"
        );
        assert_eq!(
            load_one("[update]\nallowed_tags = [\"main\"]\n")
                .unwrap()
                .update
                .allowed_tags,
            Some(vec!["main".to_string()])
        );
    }

    #[test]
    fn min_above_max_is_an_error_even_across_files() {
        let e = err_of(load_one("[update]\nmin_version = 20\nmax_version = 10\n"));
        assert!(
            e.contains("min_version 20") && e.contains("max_version 10"),
            "{e}"
        );
        let t = TempDir::new().unwrap();
        let a = write(
            t.path(),
            "a.toml",
            "[update]\nmin_version = 20\nmax_version = 30\n",
        );
        let b = write(t.path(), "b.toml", "[update]\nmax_version = 10\n");
        let e = err_of(Policy::load(&[a.clone(), b.clone()]));
        assert!(
            e.contains(&a.display().to_string()) && e.contains(&b.display().to_string()),
            "{e}"
        );
        assert_eq!(
            load_one("[update]\nmin_version = 10\nmax_version = 10\n")
                .unwrap()
                .update
                .min_version,
            Some(10)
        );
    }

    #[test]
    fn serializes_for_status_output() {
        let v = serde_json::to_value(Policy::default()).unwrap();
        assert_eq!(v["update"]["require_bundle_targets"], true);
        assert!(v["update"]["allowed_tags"].is_null());
    }
}
