//! Unit tests of the bootloader environment: the file backend on a temp dir, the U-Boot
//! backends against Debian's real `fw_printenv`/`fw_setenv` (libubootenv-tool, as LmP
//! ships) on an environment in a file, and fiovb/fioefi, whose tools need a TEE, against a
//! stand-in script behind a real process boundary.
use super::*;
use tempfile::TempDir;

const ENVTOOL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/bootloader/envtool"
);

/// A U-Boot environment in a file, 8 KiB with its CRC, as on a device's flash: an
/// `fw_env.config` naming it, created by `fw_setenv` itself from a default environment
/// with the variables a device's U-Boot has before any update.
struct UBootEnv {
    dir: TempDir,
}

const UBOOT_DEFAULTS: &str = "bootcmd=run bootcmd_otenv\nbootlimit=3\n";

impl UBootEnv {
    fn new() -> UBootEnv {
        let dir = TempDir::new().unwrap();
        let image = dir.path().join("env.bin");
        fs::File::create(&image).unwrap().set_len(0x2000).unwrap();
        let config = format!("{} 0x0 0x2000\n", image.display());
        fs::write(dir.path().join("fw_env.config"), config).unwrap();
        fs::write(dir.path().join("defaults"), UBOOT_DEFAULTS).unwrap();
        let env = UBootEnv { dir };
        let config = env.config();
        let defaults = env.dir.path().join("defaults");
        let init = [
            "-c",
            config.to_str().unwrap(),
            "-f",
            defaults.to_str().unwrap(),
            "bootlimit",
            "3",
        ];
        env.tool("fw_setenv", &init);
        assert_eq!(env.dump(), ["bootcmd=run bootcmd_otenv", "bootlimit=3"]);
        env
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("fw_env.config")
    }

    fn env(&self, masked: bool) -> BootEnv {
        BootEnv::uboot_with_config(masked, &self.config())
    }

    /// Run a tool of libubootenv-tool; its stdout.
    fn tool(&self, name: &str, args: &[&str]) -> String {
        let out = Command::new(name)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{name}: {e} (scripts/setup installs libubootenv-tool)"));
        assert!(
            out.status.success(),
            "{name} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The whole environment, `name=value` lines as fw_printenv lists them.
    fn dump(&self) -> Vec<String> {
        let config = self.config();
        let text = self.tool("fw_printenv", &["-c", config.to_str().unwrap()]);
        text.lines().map(str::to_string).collect()
    }

    /// What U-Boot itself does at boot: counts the boot, sets `rollback` past the limit.
    fn boot(&self) {
        let config = self.config();
        let c = config.to_str().unwrap();
        let get = |name: &str| self.tool("fw_printenv", &["-c", c, "-n", name]);
        if get("upgrade_available").trim() != "1" {
            return;
        }
        let count: u32 = get("bootcount").trim().parse().unwrap_or(0) + 1;
        self.tool("fw_setenv", &["-c", c, "bootcount", &count.to_string()]);
        if count > get("bootlimit").trim().parse().unwrap() {
            self.tool("fw_setenv", &["-c", c, "rollback", "1"]);
        }
    }
}

fn err_of<T: std::fmt::Debug>(r: anyhow::Result<T>) -> String {
    format!("{:#}", r.expect_err("expected an error"))
}

fn file_env(t: &TempDir) -> (BootEnv, PathBuf) {
    let env = BootEnv::new(RollbackMode::File, t.path());
    (env, t.path().join(".usb-update-sim/bootenv"))
}

/// A temp dir with the fiovb/fioefi stand-in linked under `names`; variables live in
/// `<dir>/env`.
fn tool_dir(names: &[&str]) -> TempDir {
    let t = TempDir::new().unwrap();
    for n in names {
        std::os::unix::fs::symlink(ENVTOOL, t.path().join(n)).unwrap();
    }
    t
}

fn read(t: &TempDir, name: &str) -> String {
    fs::read_to_string(t.path().join(name)).unwrap_or_default()
}

fn deployment(version_txt: Option<&str>) -> TempDir {
    let d = TempDir::new().unwrap();
    if let Some(text) = version_txt {
        let f = d.path().join(VERSION_FILE);
        fs::create_dir_all(f.parent().unwrap()).unwrap();
        fs::write(f, text).unwrap();
    }
    d
}

#[test]
fn file_backend_absent_file_is_an_empty_environment() {
    let t = TempDir::new().unwrap();
    let (env, path) = file_env(&t);
    assert_eq!(env.get("bootcount").unwrap(), None);
    assert!(!env.boot_firmware_pending().unwrap());
    assert!(!path.exists(), "reading must not create the file");
}

#[test]
fn file_backend_set_replaces_atomically_and_keeps_other_variables() {
    let t = TempDir::new().unwrap();
    let (env, path) = file_env(&t);
    env.set("bootcount", "3").unwrap();
    env.set("bootfirmware_version", "7").unwrap();
    env.set("bootcount", "0").unwrap();
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        "bootcount=0\nbootfirmware_version=7\n"
    );
    assert_eq!(env.get("bootcount").unwrap().as_deref(), Some("0"));
    let names: Vec<_> = fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("bootenv")],
        "no temp file left"
    );
}

#[test]
fn file_backend_reads_hand_written_files_and_names_bad_lines() {
    let t = TempDir::new().unwrap();
    let (env, path) = file_env(&t);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, "a=1\n\nempty=\nx=y=z\na=2\n").unwrap();
    assert_eq!(env.get("a").unwrap().as_deref(), Some("2"), "last wins");
    assert_eq!(env.get("empty").unwrap().as_deref(), Some(""));
    assert_eq!(env.get("x").unwrap().as_deref(), Some("y=z"));
    fs::write(&path, "a=1\ngarbage\n").unwrap();
    let e = err_of(env.get("a"));
    assert!(e.contains("bootenv:2") && e.contains("garbage"), "{e}");
}

#[test]
fn names_and_values_that_would_corrupt_the_environment_are_refused() {
    let t = TempDir::new().unwrap();
    let (env, path) = file_env(&t);
    assert!(err_of(env.set("a=b", "1")).contains("invalid bootloader variable name"));
    assert!(err_of(env.set("", "1")).contains("invalid"));
    assert!(err_of(env.set("a", "1\nb=2")).contains("control characters"));
    assert!(!path.exists());
}

#[test]
fn none_has_no_environment_and_changes_nothing() {
    let t = TempDir::new().unwrap();
    let env = BootEnv::new(RollbackMode::None, t.path());
    env.set("bootcount", "1").unwrap();
    assert_eq!(env.get("bootcount").unwrap(), None);
    env.update_notify().unwrap();
    env.set_boot_ok().unwrap();
    assert!(!env.boot_firmware_pending().unwrap());
    let d = deployment(Some("bootfirmware_version=2\n"));
    assert!(!env.check_boot_firmware(d.path()).unwrap());
    assert_eq!(fs::read_dir(t.path()).unwrap().count(), 0);
}

#[test]
fn from_config_selects_every_mode_and_rejects_unknown_ones() {
    let t = TempDir::new().unwrap();
    let load = |mode: &str| {
        let f = t.path().join("sota.toml");
        let text = format!(
            "[provision]\nprimary_ecu_hardware_id = \"hw\"\n[pacman]\nsysroot = \"{}\"\n\
             [bootloader]\nrollback_mode = \"{mode}\"\n",
            t.path().display()
        );
        fs::write(&f, text).unwrap();
        BootEnv::from_config(&crate::config::Config::load(&[f]).unwrap())
    };
    let cases = [
        ("none", RollbackMode::None),
        ("uboot_generic", RollbackMode::UBoot { masked: false }),
        ("uboot_masked", RollbackMode::UBoot { masked: true }),
        ("fiovb", RollbackMode::Fiovb),
        ("fioefi", RollbackMode::Fioefi),
        ("file", RollbackMode::File),
    ];
    for (text, mode) in cases {
        let env = load(text).unwrap();
        assert_eq!(env.mode(), mode);
        assert_eq!(mode.as_str(), text);
    }
    load("file").unwrap().set("k", "v").unwrap();
    assert!(t.path().join(".usb-update-sim/bootenv").exists());
    let e = err_of(load("grub"));
    assert!(e.contains("\"grub\"") && e.contains("rollback_mode"), "{e}");
}

#[test]
fn uboot_get_and_set_through_the_real_tools() {
    let u = UBootEnv::new();
    let env = u.env(true);
    assert_eq!(env.get("bootcount").unwrap(), None, "undefined is None");
    assert_eq!(env.get("bootlimit").unwrap().as_deref(), Some("3"));
    env.set("bootcount", "2").unwrap();
    assert_eq!(env.get("bootcount").unwrap().as_deref(), Some("2"));
    // fw_printenv -n prints an empty line for an empty and for an unset variable alike;
    // for U-Boot both are unset.
    env.set("empty", "").unwrap();
    assert_eq!(env.get("empty").unwrap(), None);
    // A value with spaces is one value; nothing is interpreted by a shell.
    env.set("note", "a b;$(x)").unwrap();
    assert_eq!(env.get("note").unwrap().as_deref(), Some("a b;$(x)"));
    assert_eq!(
        u.dump(),
        [
            "bootcmd=run bootcmd_otenv",
            "bootcount=2",
            "bootlimit=3",
            "empty=",
            "note=a b;$(x)"
        ]
    );
}

#[test]
fn tool_failures_and_missing_tools_are_errors_naming_them() {
    // The real tools on a configuration naming a device that is not there.
    let t = TempDir::new().unwrap();
    let config = t.path().join("fw_env.config");
    fs::write(&config, "/nonexistent/mtd1 0x0 0x2000\n").unwrap();
    let env = BootEnv::uboot_with_config(true, &config);
    let c = config.display();
    let e = err_of(env.get("bootcount"));
    assert!(
        e.starts_with(&format!("`fw_printenv -c {c} -n bootcount` failed: ")),
        "{e}"
    );
    assert!(e.contains("Configuration file wrong or corrupted"), "{e}");
    let e = err_of(env.set("bootcount", "0"));
    assert!(
        e.starts_with(&format!("`fw_setenv -c {c} bootcount 0` failed: ")),
        "{e}"
    );
    let e = err_of(env.boot_firmware_pending());
    assert!(e.contains("fw_printenv"), "{e}");
    let e = err_of(env.update_notify());
    assert!(e.contains("fw_setenv"), "{e}");

    let p = t.path();
    let mode = RollbackMode::UBoot { masked: true };
    let gone = BootEnv::with_tools(mode, p.join("nope_print"), p.join("nope_set")).unwrap();
    let e = err_of(gone.get("bootcount"));
    assert!(
        e.contains("nope_print not found") && e.contains("uboot_masked"),
        "{e}"
    );
    // The default tools are looked up in PATH; this machine has no fiovb.
    let e = err_of(BootEnv::new(RollbackMode::Fiovb, p).get("bootcount"));
    assert!(e.contains("fiovb_printenv"), "{e}");
    assert!(BootEnv::with_tools(RollbackMode::File, p.into(), p.into()).is_err());
}

#[test]
fn fiovb_missing_variable_is_none() {
    let t = tool_dir(&["fiovb_printenv", "fiovb_setenv"]);
    let p = t.path();
    let env = BootEnv::with_tools(
        RollbackMode::Fiovb,
        p.join("fiovb_printenv"),
        p.join("fiovb_setenv"),
    );
    let env = env.unwrap();
    assert_eq!(env.get("bootupgrade_available").unwrap(), None);
    env.set("bootupgrade_available", "1").unwrap();
    assert!(env.boot_firmware_pending().unwrap());
    assert_eq!(
        read(&t, "calls").lines().last(),
        Some("fiovb_printenv bootupgrade_available")
    );
}

#[test]
fn boot_firmware_pending_only_when_the_flag_is_one() {
    let t = TempDir::new().unwrap();
    let (env, _) = file_env(&t);
    assert!(!env.boot_firmware_pending().unwrap());
    env.set(BOOT_UPGRADE, "0").unwrap();
    assert!(!env.boot_firmware_pending().unwrap());
    env.set(BOOT_UPGRADE, "1").unwrap();
    assert!(env.boot_firmware_pending().unwrap());
    // The real tools, masked: the flag the LmP boot script sets and clears.
    let u = UBootEnv::new();
    let masked = u.env(true);
    assert!(!masked.boot_firmware_pending().unwrap());
    masked.set(BOOT_UPGRADE, "1").unwrap();
    assert!(masked.boot_firmware_pending().unwrap());
    masked.set(BOOT_UPGRADE, "0").unwrap();
    assert!(!masked.boot_firmware_pending().unwrap());
    // uboot_generic has no boot firmware support in aktualizr-lite, whatever the variable says.
    let generic = u.env(false);
    generic.set(BOOT_UPGRADE, "1").unwrap();
    assert!(!generic.boot_firmware_pending().unwrap());
}

#[test]
fn check_boot_firmware_flags_a_different_version_only() {
    let t = TempDir::new().unwrap();
    let (env, _) = file_env(&t);
    env.set(VERSION_KEY, "5").unwrap();

    let absent = deployment(None);
    assert!(!env.check_boot_firmware(absent.path()).unwrap());
    let same = deployment(Some("bootfirmware_version=5\n"));
    assert!(!env.check_boot_firmware(same.path()).unwrap());
    let no_key = deployment(Some("something else\n"));
    assert!(!env.check_boot_firmware(no_key.path()).unwrap());
    assert_eq!(env.get(BOOT_UPGRADE).unwrap(), None);

    let newer = deployment(Some("bootfirmware_version=6\n"));
    assert!(env.check_boot_firmware(newer.path()).unwrap());
    assert_eq!(env.get(BOOT_UPGRADE).unwrap().as_deref(), Some("1"));
    assert!(env.boot_firmware_pending().unwrap());
    assert_eq!(
        env.get(VERSION_KEY).unwrap().as_deref(),
        Some("5"),
        "the bootloader updates it"
    );
}

#[test]
fn check_boot_firmware_with_unknown_running_version_flags_the_update() {
    let t = TempDir::new().unwrap();
    let (env, _) = file_env(&t);
    let d = deployment(Some("# lmp\n bootfirmware_version = 3 \n"));
    assert!(env.check_boot_firmware(d.path()).unwrap());
    assert!(env.boot_firmware_pending().unwrap());
}

#[test]
fn check_boot_firmware_passes_the_new_deployment_to_fioefi() {
    let t = tool_dir(&["fioefi_printenv", "fioefi_setenv"]);
    let p = t.path();
    let env = BootEnv::with_tools(
        RollbackMode::Fioefi,
        p.join("fioefi_printenv"),
        p.join("fioefi_setenv"),
    );
    let env = env.unwrap();
    let d = deployment(Some("bootfirmware_version=9\n"));
    assert!(env.check_boot_firmware(d.path()).unwrap());
    let expected = format!("{0}\n{0}\n", d.path().display());
    assert_eq!(
        read(&t, "target_sysroot"),
        expected,
        "printenv and setenv both get it"
    );
    assert_eq!(read(&t, "env"), "bootupgrade_available=1\n");
    env.update_notify().unwrap();
    assert_eq!(
        read(&t, "target_sysroot"),
        expected,
        "only the firmware check sets it"
    );
}

#[test]
fn update_notify_and_set_boot_ok_follow_aktualizr() {
    let t = TempDir::new().unwrap();
    let (env, path) = file_env(&t);
    env.set("bootcount", "2").unwrap();
    env.set("rollback", "1").unwrap();
    env.update_notify().unwrap();
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        "bootcount=0\nrollback=0\nupgrade_available=1\n"
    );
    env.set("bootcount", "1").unwrap();
    env.set_boot_ok().unwrap();
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        "bootcount=0\nrollback=0\nupgrade_available=0\n"
    );

    // U-Boot, masked, with the real tools: what the environment holds after each step.
    let m = UBootEnv::new();
    let masked = m.env(true);
    masked.set("bootcount", "2").unwrap();
    masked.set("rollback", "1").unwrap();
    masked.update_notify().unwrap();
    assert_eq!(m.dump(), armed("1"));
    masked.set("bootcount", "1").unwrap();
    masked.set_boot_ok().unwrap();
    assert_eq!(m.dump(), armed("0"));

    // uboot_generic counts every boot: only the counter and the rollback flag.
    let g = UBootEnv::new();
    let generic = g.env(false);
    generic.update_notify().unwrap();
    assert_eq!(
        g.dump(),
        [
            "bootcmd=run bootcmd_otenv",
            "bootcount=0",
            "bootlimit=3",
            "rollback=0"
        ]
    );
    generic.set("bootcount", "2").unwrap();
    generic.set_boot_ok().unwrap();
    assert_eq!(generic.get("bootcount").unwrap().as_deref(), Some("0"));
    assert_eq!(generic.get("upgrade_available").unwrap(), None);
    let d = deployment(Some("bootfirmware_version=2\n"));
    assert!(!generic.check_boot_firmware(d.path()).unwrap());
    assert_eq!(generic.get(BOOT_UPGRADE).unwrap(), None);
}

/// Boot counting as U-Boot does it (`upgrade_available` gates the count, past `bootlimit`
/// it sets `rollback` and boots the other rootfs), on the real environment: a good boot
/// disarms the counter, a new update clears the rollback of the one before.
#[test]
fn uboot_boot_counting_and_rollback_variables_with_the_real_tools() {
    let u = UBootEnv::new();
    let env = u.env(true);
    // Not armed: U-Boot does not count.
    u.boot();
    assert_eq!(env.get("bootcount").unwrap(), None);

    // An update armed it; the new rootfs boots twice without finishing, then comes up.
    env.update_notify().unwrap();
    u.boot();
    u.boot();
    assert_eq!(env.get("bootcount").unwrap().as_deref(), Some("2"));
    assert_eq!(env.get("rollback").unwrap().as_deref(), Some("0"));
    env.set_boot_ok().unwrap();
    u.boot();
    assert_eq!(env.get("bootcount").unwrap().as_deref(), Some("0"));
    assert_eq!(env.get("upgrade_available").unwrap().as_deref(), Some("0"));

    // The next update never boots: past bootlimit (3) U-Boot flags the rollback.
    env.update_notify().unwrap();
    for _ in 0..4 {
        u.boot();
    }
    assert_eq!(env.get("bootcount").unwrap().as_deref(), Some("4"));
    assert_eq!(env.get("rollback").unwrap().as_deref(), Some("1"));
    // The previous rootfs, booted again, is good; the update after that starts afresh.
    env.set_boot_ok().unwrap();
    assert_eq!(
        env.get("rollback").unwrap().as_deref(),
        Some("1"),
        "U-Boot's to clear"
    );
    env.update_notify().unwrap();
    assert_eq!(u.dump(), armed("1"));
}

/// The environment after `update_notify` (`upgrade_available` "1") or `set_boot_ok` ("0")
/// on a masked U-Boot: the device's own variables, the counter at 0, no rollback.
fn armed(upgrade_available: &str) -> Vec<String> {
    let mut v: Vec<String> = ["bootcmd=run bootcmd_otenv", "bootcount=0", "bootlimit=3"]
        .map(String::from)
        .to_vec();
    v.push("rollback=0".into());
    v.push(format!("upgrade_available={upgrade_available}"));
    v
}

#[test]
fn uboot_boot_firmware_versions_with_the_real_tools() {
    let u = UBootEnv::new();
    let env = u.env(true);
    // Unknown running version (not in the environment): a target with one is an update.
    let six = deployment(Some("bootfirmware_version=6\n"));
    assert!(env.check_boot_firmware(six.path()).unwrap());
    assert!(env.boot_firmware_pending().unwrap());
    // The reboot applied it: the boot script clears the flag and records the version.
    env.set(BOOT_UPGRADE, "0").unwrap();
    env.set(VERSION_KEY, "6").unwrap();
    assert!(!env.check_boot_firmware(six.path()).unwrap());
    assert!(!env.boot_firmware_pending().unwrap());
    // Rollback protection compares numbers from the environment.
    env.set("rollback_protection", "1").unwrap();
    let why = env
        .firmware_downgrade(Some("bootfirmware_version=5\n"))
        .unwrap();
    assert_eq!(
        why.as_deref(),
        Some("boot firmware rollback from version 6 to 5 refused (rollback_protection=1)")
    );
    assert_eq!(
        env.firmware_downgrade(Some("bootfirmware_version=7\n"))
            .unwrap(),
        None
    );
}

#[test]
fn firmware_downgrade_only_with_rollback_protection() {
    let t = TempDir::new().unwrap();
    let (env, _) = file_env(&t);
    env.set(VERSION_KEY, "5").unwrap();
    let old = Some("bootfirmware_version=4\n");
    assert_eq!(env.firmware_downgrade(old).unwrap(), None, "protection off");
    env.set("rollback_protection", "1").unwrap();
    let why = env.firmware_downgrade(old).unwrap().unwrap();
    assert!(why.contains("from version 5 to 4"), "{why}");
    assert_eq!(
        env.firmware_downgrade(Some("bootfirmware_version=5"))
            .unwrap(),
        None
    );
    assert_eq!(
        env.firmware_downgrade(Some("bootfirmware_version=6"))
            .unwrap(),
        None
    );
    assert_eq!(
        env.firmware_downgrade(None).unwrap(),
        None,
        "no firmware in the target"
    );
    assert!(env.firmware_downgrade(Some("junk")).unwrap().is_some());
    assert!(env
        .firmware_downgrade(Some("bootfirmware_version=v2"))
        .unwrap()
        .is_some());
    env.set(VERSION_KEY, "garbage").unwrap();
    assert_eq!(
        env.firmware_downgrade(old).unwrap(),
        None,
        "unknown current counts as 0"
    );
}

#[test]
fn version_txt_parsing() {
    assert_eq!(
        parse_version_txt("bootfirmware_version=12\n").as_deref(),
        Some("12")
    );
    assert_eq!(
        parse_version_txt("x\nbootfirmware_version = 3\r\n").as_deref(),
        Some("3")
    );
    assert_eq!(parse_version_txt("bootfirmware_version=\n"), None);
    assert_eq!(parse_version_txt("bootfirmware_versionX=1\n"), None);
    assert_eq!(parse_version_txt(""), None);
}
