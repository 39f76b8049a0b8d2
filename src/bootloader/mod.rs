//! The bootloader environment: boot counting (so the bootloader can roll back a rootfs that
//! does not boot) and the boot firmware update flag (exit code 90).
//!
//! Devices already run aktualizr-lite's boot scripts, which read fixed variables, so we set
//! exactly the variables aktualizr sets, at the same moments, with the same tools. What we
//! found in the sources (libaktualizr `bootloader/bootloader.cc` `setBootOK`/`updateNotify`,
//! foundries 2021.1+fio branch; aktualizr-lite `src/bootloader/bootloaderlite.cc` and
//! `src/rootfstreemanager.cc` `install`/`verifyBootloaderUpdate`):
//!
//! | operation | `none` | `uboot_generic` | `uboot_masked`, `fiovb`, `fioefi`, `file` |
//! |---|---|---|---|
//! | [`BootEnv::update_notify`] (before deploying) | nothing | `bootcount=0 rollback=0` | `bootcount=0 upgrade_available=1 rollback=0` |
//! | [`BootEnv::set_boot_ok`] | nothing | `bootcount=0` | `bootcount=0 upgrade_available=0` |
//! | [`BootEnv::boot_firmware_pending`] | false | false | `bootupgrade_available == "1"` |
//! | [`BootEnv::check_boot_firmware`] (after deploying) | false | false | sets `bootupgrade_available=1` when version.txt differs from `bootfirmware_version` |
//! | [`BootEnv::firmware_downgrade`] (before deploying) | allowed | allowed | refused when `rollback_protection=1` and version.txt < `bootfirmware_version` |
//!
//! - `uboot_generic` U-Boot counts every boot (no `upgrade_available` gate), so only the
//!   counter is reset; aktualizr-lite has no printenv command for it, hence no boot firmware
//!   support either.
//! - `fioefi` is not in the libaktualizr source we could read; it is described as fiovb
//!   with tools of its own (`fioefi_printenv`/`fioefi_setenv`): the same variables, set at
//!   the same moments (boot OK at start, update notify before a deploy). aktualizr-lite runs
//!   its tools with `FIO_OSTREE_TARGET_SYSROOT=<new deployment>` in `installNotify` (our
//!   [`BootEnv::check_boot_firmware`]), so the tool can find the new firmware.
//!   docs/architecture.md, "Bootloader backends", sums the backends up.
//! - `bootupgrade_available` is never cleared by aktualizr-lite: the LmP boot script clears it
//!   when the reboot has applied the new firmware. Clearing it from userspace would cancel the
//!   firmware update, so there is no such operation here; a test that simulates that reboot
//!   writes `bootupgrade_available=0` (and the new `bootfirmware_version`) itself.
//! - version.txt holds `bootfirmware_version=N`; a missing file or a file without that key
//!   means "no boot firmware in this target" (aktualizr-lite logs and skips). The comparison
//!   after deploying is textual (aktualizr-lite compares strings there), the downgrade check
//!   numeric (it parses integers there).
//! - Where aktualizr only logs a failed `fw_setenv`, or reads a failing printenv as "0", we
//!   return the error: an install that cannot arm the boot counter or cannot tell whether a
//!   firmware update is pending must not go on. A variable the tool reports as undefined is
//!   `None` (aktualizr-lite's "not set"; libubootenv's `fw_printenv -n`, which LmP ships,
//!   prints an empty line for it, and U-Boot treats an empty variable as unset, so an empty
//!   U-Boot value is `None` too); only the running firmware version in
//!   [`BootEnv::check_boot_firmware`] falls back to "unknown" on any read failure, as there.
//!
//! `file` is our test double for a bootloader with boot counting and firmware updates (it
//! behaves like `uboot_masked`): `key=value` lines in `<sysroot>/.usb-update-sim/bootenv`.
//! It is reachable only with `rollback_mode = "file"`.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context as _};
use tracing::{debug, info, warn};

/// Where a deployment carries its boot firmware version, relative to the deployment root.
pub(crate) const VERSION_FILE: &str = "usr/lib/firmware/version.txt";
/// The key in [`VERSION_FILE`], and the environment variable holding the running version.
pub(crate) const VERSION_KEY: &str = "bootfirmware_version";
/// Set while a boot firmware update waits for its reboot.
pub(crate) const BOOT_UPGRADE: &str = "bootupgrade_available";
/// The file backend's environment, in the simulation directory of the sysroot.
pub(crate) const FILE_ENV_NAME: &str = "bootenv";

/// `[bootloader] rollback_mode`, as aktualizr spells it, plus our `file` test double.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RollbackMode {
    None,
    UBoot { masked: bool },
    Fiovb,
    Fioefi,
    File,
}

/// The config spellings, one place for parsing and printing.
const MODES: [(&str, RollbackMode); 6] = [
    ("none", RollbackMode::None),
    ("uboot_generic", RollbackMode::UBoot { masked: false }),
    ("uboot_masked", RollbackMode::UBoot { masked: true }),
    ("fiovb", RollbackMode::Fiovb),
    ("fioefi", RollbackMode::Fioefi),
    ("file", RollbackMode::File),
];

impl RollbackMode {
    pub fn parse(value: &str) -> anyhow::Result<RollbackMode> {
        // The file backend is a test double: reachable only in builds made for tests.
        if value == "file" && !cfg!(feature = "simulation") {
            return Err(anyhow!(
                "[bootloader] rollback_mode = \"file\" is a test double this build does not \
                 have (cargo feature `simulation`)"
            ));
        }
        let found = MODES.iter().find(|(name, _)| *name == value);
        found.map(|(_, mode)| *mode).ok_or_else(|| {
            let names: Vec<&str> = MODES.iter().map(|(name, _)| *name).collect();
            let expected = names.join(", ");
            anyhow!("[bootloader] rollback_mode = {value:?} is not supported (expected one of {expected})")
        })
    }

    /// The config spelling, for messages and status.
    pub fn as_str(self) -> &'static str {
        MODES
            .iter()
            .find(|(_, m)| *m == self)
            .map_or("none", |(name, _)| name)
    }

    /// Whether the bootloader takes part in the `bootupgrade_available` protocol and arms
    /// boot counting with `upgrade_available` (aktualizr-lite: a printenv command exists).
    pub(crate) fn supports_boot_firmware(self) -> bool {
        !matches!(
            self,
            RollbackMode::None | RollbackMode::UBoot { masked: false }
        )
    }

    /// Default tool names, looked up in `PATH` as aktualizr's shell does (so tests of the
    /// whole binary can put stand-ins first in `PATH`), and the printenv arguments before
    /// the variable name.
    fn tools(self) -> Option<(&'static str, &'static [&'static str], &'static str)> {
        match self {
            RollbackMode::UBoot { .. } => Some(("fw_printenv", &["-n"], "fw_setenv")),
            RollbackMode::Fiovb => Some(("fiovb_printenv", &[], "fiovb_setenv")),
            RollbackMode::Fioefi => Some(("fioefi_printenv", &[], "fioefi_setenv")),
            RollbackMode::None | RollbackMode::File => None,
        }
    }

    /// How the printenv tool says "no such variable" (on stderr, exit status 1): U-Boot's
    /// `## Error: "x" not defined`; fiovb's `... failed: No such file or directory` (TEE item
    /// not found). Matching per tool keeps other failures, such as fw_printenv's "Cannot
    /// parse config file ...: No such file or directory", errors.
    fn undefined_markers(self) -> &'static [&'static str] {
        match self {
            RollbackMode::UBoot { .. } => &["not defined"],
            RollbackMode::Fiovb => &["No such file or directory"],
            _ => &["not defined", "not found", "No such file or directory"],
        }
    }
}

impl std::fmt::Display for RollbackMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone)]
enum Backend {
    None,
    Tools {
        printenv: PathBuf,
        printenv_args: &'static [&'static str],
        setenv: PathBuf,
        /// Before every other argument of both tools (`-c <fw_env.config>`).
        leading: Vec<String>,
    },
    File(PathBuf),
}

/// The bootloader environment of the device, through the backend the config names.
#[derive(Debug, Clone)]
pub(crate) struct BootEnv {
    mode: RollbackMode,
    backend: Backend,
}

impl BootEnv {
    pub(crate) fn from_config(cfg: &crate::config::Config) -> anyhow::Result<BootEnv> {
        let mode = RollbackMode::parse(&cfg.bootloader.rollback_mode)?;
        Ok(BootEnv::new(mode, &cfg.pacman.sysroot))
    }

    /// The backend of `mode` with its default tools; `sysroot` locates the `file` backend.
    pub fn new(mode: RollbackMode, sysroot: &Path) -> BootEnv {
        let backend = match mode.tools() {
            Some((printenv, printenv_args, setenv)) => Backend::Tools {
                printenv: printenv.into(),
                printenv_args,
                setenv: setenv.into(),
                leading: Vec::new(),
            },
            None if mode == RollbackMode::File => {
                Backend::File(crate::ostree::sim_file(sysroot, FILE_ENV_NAME))
            }
            None => Backend::None,
        };
        BootEnv { mode, backend }
    }

    /// A tool-based backend with explicit tool paths: tests run the real process boundary
    /// against stand-in scripts.
    #[cfg(test)]
    pub(crate) fn with_tools(
        mode: RollbackMode,
        printenv: PathBuf,
        setenv: PathBuf,
    ) -> anyhow::Result<BootEnv> {
        let (_, printenv_args, _) = mode
            .tools()
            .ok_or_else(|| anyhow!("rollback_mode {mode} does not use environment tools"))?;
        let backend = Backend::Tools {
            printenv,
            printenv_args,
            setenv,
            leading: Vec::new(),
        };
        Ok(BootEnv { mode, backend })
    }

    /// U-Boot's tools from `PATH` on the environment that `config` (an `fw_env.config`)
    /// describes instead of `/etc/fw_env.config`: tests run the real tools on an
    /// environment in a file.
    #[cfg(test)]
    pub(crate) fn uboot_with_config(masked: bool, config: &Path) -> BootEnv {
        let mut env = BootEnv::new(RollbackMode::UBoot { masked }, Path::new("/"));
        if let Backend::Tools { leading, .. } = &mut env.backend {
            *leading = vec!["-c".into(), config.display().to_string()];
        }
        env
    }

    #[cfg(test)]
    pub fn mode(&self) -> RollbackMode {
        self.mode
    }

    /// The variable's value, `None` when it is not defined (or there is no environment).
    pub fn get(&self, var: &str) -> anyhow::Result<Option<String>> {
        self.get_with(var, None)
    }

    pub fn set(&self, var: &str, value: &str) -> anyhow::Result<()> {
        self.set_with(var, value, None)
    }

    /// A boot firmware update waits for its reboot: install must return 90 without deploying.
    pub(crate) fn boot_firmware_pending(&self) -> anyhow::Result<bool> {
        if !self.mode.supports_boot_firmware() {
            return Ok(false);
        }
        Ok(self.get(BOOT_UPGRADE)?.as_deref() == Some("1"))
    }

    /// Before deploying, with `rollback_protection=1`: the reason to refuse a target whose
    /// boot firmware is older than the running one. `version_txt` is the target commit's
    /// [`VERSION_FILE`] (`None`: the commit has none, nothing to protect). A file that
    /// cannot be parsed is refused, as aktualizr-lite does; an unknown running version
    /// counts as 0.
    pub(crate) fn firmware_downgrade(
        &self,
        version_txt: Option<&str>,
    ) -> anyhow::Result<Option<String>> {
        if !self.mode.supports_boot_firmware()
            || self.get("rollback_protection")?.as_deref() != Some("1")
        {
            return Ok(None);
        }
        let Some(text) = version_txt else {
            return Ok(None);
        };
        let Some(target) = parse_version_txt(text).and_then(|v| v.parse::<u64>().ok()) else {
            return Ok(Some(format!(
                "the target's {VERSION_FILE} has no numeric {VERSION_KEY} \
                 and boot firmware rollback protection is on"
            )));
        };
        // aktualizr-lite: an unreadable running version counts as 0.
        let current = self
            .get(VERSION_KEY)?
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        Ok((target < current).then(|| {
            format!("boot firmware rollback from version {current} to {target} refused (rollback_protection=1)")
        }))
    }

    /// After deploying: when the new deployment's boot firmware version differs from the
    /// running one (or that is unknown), ask the bootloader to update it at the next boot.
    /// Returns whether `bootupgrade_available=1` was set.
    pub(crate) fn check_boot_firmware(&self, deployment_root: &Path) -> anyhow::Result<bool> {
        if !self.mode.supports_boot_firmware() {
            return Ok(false);
        }
        let file = deployment_root.join(VERSION_FILE);
        let text = match fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                debug!(file = %file.display(), "no boot firmware version file, no boot firmware update");
                return Ok(false);
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
        };
        let Some(target) = parse_version_txt(&text) else {
            warn!(file = %file.display(), "no {VERSION_KEY}=N in the version file, no boot firmware update");
            return Ok(false);
        };
        // The fioefi tools find the new firmware through the new deployment.
        let sysroot_env = (self.mode == RollbackMode::Fioefi).then_some(deployment_root);
        let current = match self.get_with(VERSION_KEY, sysroot_env) {
            Ok(v) => v,
            Err(e) => {
                warn!(
                    "cannot read the running boot firmware version, treating it as unknown: {e:#}"
                );
                None
            }
        };
        if current.as_deref() == Some(target.as_str()) {
            info!(version = %target, "boot firmware unchanged");
            return Ok(false);
        }
        self.set_with(BOOT_UPGRADE, "1", sysroot_env)?;
        let from = current.as_deref().unwrap_or("unknown");
        info!("boot firmware will be updated from version {from} to {target} at the next boot");
        Ok(true)
    }

    /// Before the reboot into a new deployment: arm the bootloader's boot counting, so that
    /// a rootfs that does not boot is rolled back. Called before deploying, as aktualizr-lite
    /// does, since a deployment is not atomic and a needless arming is harmless.
    pub(crate) fn update_notify(&self) -> anyhow::Result<()> {
        match self.mode {
            RollbackMode::None => Ok(()),
            RollbackMode::UBoot { masked: false } => {
                self.set_all(&[("bootcount", "0"), ("rollback", "0")])
            }
            _ => self.set_all(&[
                ("bootcount", "0"),
                ("upgrade_available", "1"),
                ("rollback", "0"),
            ]),
        }
    }

    /// The running rootfs is good: disarm boot counting.
    pub(crate) fn set_boot_ok(&self) -> anyhow::Result<()> {
        match self.mode {
            RollbackMode::None => Ok(()),
            RollbackMode::UBoot { masked: false } => self.set_all(&[("bootcount", "0")]),
            _ => self.set_all(&[("bootcount", "0"), ("upgrade_available", "0")]),
        }
    }

    fn set_all(&self, vars: &[(&str, &str)]) -> anyhow::Result<()> {
        vars.iter().try_for_each(|(k, v)| self.set(k, v))
    }

    fn get_with(&self, var: &str, sysroot_env: Option<&Path>) -> anyhow::Result<Option<String>> {
        check_name(var)?;
        let value = match &self.backend {
            Backend::None => None,
            Backend::File(path) => read_env_file(path)?
                .into_iter()
                .rev()
                .find(|(k, _)| k == var)
                .map(|(_, v)| v),
            Backend::Tools {
                printenv,
                printenv_args,
                leading,
                ..
            } => {
                let args: Vec<&str> = (leading.iter().map(String::as_str))
                    .chain(printenv_args.iter().copied())
                    .chain([var])
                    .collect();
                match self.run(printenv, &args, sysroot_env)? {
                    // libubootenv's fw_printenv prints an empty line for a variable that
                    // is not set (U-Boot's own one says "not defined"); U-Boot itself
                    // treats an empty variable as unset.
                    Ok(value)
                        if value.is_empty() && matches!(self.mode, RollbackMode::UBoot { .. }) =>
                    {
                        None
                    }
                    Ok(value) => Some(value),
                    Err(stderr)
                        if self
                            .mode
                            .undefined_markers()
                            .iter()
                            .any(|m| stderr.contains(m)) =>
                    {
                        None
                    }
                    Err(stderr) => bail!("{} failed: {stderr}", cmdline(printenv, &args)),
                }
            }
        };
        debug!(var, ?value, mode = %self.mode, "bootloader environment read");
        Ok(value)
    }

    fn set_with(&self, var: &str, value: &str, sysroot_env: Option<&Path>) -> anyhow::Result<()> {
        check_name(var)?;
        if value.chars().any(char::is_control) {
            bail!("bootloader variable {var}: value {value:?} has control characters");
        }
        match &self.backend {
            Backend::None => return Ok(()),
            Backend::File(path) => {
                // In place, so a hand-written file keeps its order; duplicates collapse.
                let mut vars = read_env_file(path)?;
                let mut seen = false;
                vars.retain_mut(|(k, v)| {
                    if k != var {
                        return true;
                    }
                    *v = value.to_string();
                    !std::mem::replace(&mut seen, true)
                });
                if !seen {
                    vars.push((var.to_string(), value.to_string()));
                }
                write_env_file(path, &vars)?;
            }
            Backend::Tools {
                setenv, leading, ..
            } => {
                let args: Vec<&str> = (leading.iter().map(String::as_str))
                    .chain([var, value])
                    .collect();
                if let Err(stderr) = self.run(setenv, &args, sysroot_env)? {
                    bail!("{} failed: {stderr}", cmdline(setenv, &args));
                }
            }
        }
        info!(var, value, mode = %self.mode, "bootloader environment set");
        Ok(())
    }

    /// Runs a tool directly, not through a shell, so names and values are never interpreted.
    /// `Ok(Err(stderr))` when it ran and failed: only the caller knows what that means.
    fn run(
        &self,
        program: &Path,
        args: &[&str],
        sysroot_env: Option<&Path>,
    ) -> anyhow::Result<Result<String, String>> {
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::null());
        if let Some(dir) = sysroot_env {
            cmd.env("FIO_OSTREE_TARGET_SYSROOT", dir);
        }
        let out = cmd.output().map_err(|e| match e.kind() {
            ErrorKind::NotFound => anyhow!(
                "{} not found: [bootloader] rollback_mode = \"{}\" needs it",
                program.display(),
                self.mode
            ),
            _ => anyhow::Error::new(e).context(format!("running {}", program.display())),
        })?;
        // aktualizr-lite trims the same way; the tools end their output with a newline.
        let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
        Ok(match out.status.success() {
            true => Ok(text(&out.stdout)),
            false => Err(format!("{} ({})", text(&out.stderr), out.status)),
        })
    }
}

fn cmdline(program: &Path, args: &[&str]) -> String {
    format!("`{} {}`", program.display(), args.join(" "))
}

/// The value of `bootfirmware_version=N` in a version.txt, `None` when there is none.
pub(crate) fn parse_version_txt(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let rest = line.trim().strip_prefix(VERSION_KEY)?;
        let value = rest.trim_start().strip_prefix('=')?.trim();
        (!value.is_empty()).then(|| value.to_string())
    })
}

/// Variable names are ours and fixed; refusing anything else keeps the `key=value` file and
/// the tools' argument parsing unambiguous.
fn check_name(var: &str) -> anyhow::Result<()> {
    if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        bail!("invalid bootloader variable name {var:?}");
    }
    Ok(())
}

fn read_env_file(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    lines
        .map(|(n, line)| match line.split_once('=') {
            Some((k, v)) => Ok((k.trim().to_string(), v.to_string())),
            None => bail!(
                "{}:{}: expected key=value, got {line:?}",
                path.display(),
                n + 1
            ),
        })
        .collect()
}

/// Atomic, so that after a power cut the environment is either the old or the new one.
fn write_env_file(path: &Path, vars: &[(String, String)]) -> anyhow::Result<()> {
    let text: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    crate::durable::replace(path, text.as_bytes())
}

#[cfg(test)]
mod tests;
