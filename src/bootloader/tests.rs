//! Unit tests of the bootloader environment: the file backend on a temp dir, and the tool
//! backends against a stand-in script behind a real process boundary.
use super::*;
use tempfile::TempDir;

const ENVTOOL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/bootloader/envtool"
);

fn err_of<T: std::fmt::Debug>(r: anyhow::Result<T>) -> String {
    format!("{:#}", r.expect_err("expected an error"))
}

fn file_env(t: &TempDir) -> (BootEnv, PathBuf) {
    let env = BootEnv::new(RollbackMode::File, t.path());
    (env, t.path().join(".usb-update-sim/bootenv"))
}

/// A temp dir with the stand-in tool linked under `names`; variables live in `<dir>/env`.
fn tool_dir(names: &[&str]) -> TempDir {
    let t = TempDir::new().unwrap();
    for n in names {
        std::os::unix::fs::symlink(ENVTOOL, t.path().join(n)).unwrap();
    }
    t
}

fn uboot(t: &TempDir, masked: bool) -> BootEnv {
    let mode = RollbackMode::UBoot { masked };
    let p = t.path();
    BootEnv::with_tools(mode, p.join("fw_printenv"), p.join("fw_setenv")).unwrap()
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
fn uboot_printenv_semantics_through_real_processes() {
    let t = tool_dir(&["fw_printenv", "fw_setenv"]);
    let env = uboot(&t, true);
    assert_eq!(env.get("bootcount").unwrap(), None, "undefined is None");
    env.set("bootcount", "2").unwrap();
    env.set("empty", "").unwrap();
    assert_eq!(env.get("bootcount").unwrap().as_deref(), Some("2"));
    assert_eq!(env.get("empty").unwrap().as_deref(), Some(""));
    assert_eq!(
        read(&t, "calls"),
        "fw_printenv -n bootcount\nfw_setenv bootcount 2\nfw_setenv empty \n\
         fw_printenv -n bootcount\nfw_printenv -n empty\n"
    );
}

#[test]
fn tool_failures_and_missing_tools_are_errors_naming_them() {
    let t = tool_dir(&["broken_printenv", "broken_setenv"]);
    let p = t.path();
    let mode = RollbackMode::UBoot { masked: true };
    let env = BootEnv::with_tools(mode, p.join("broken_printenv"), p.join("broken_setenv"));
    let env = env.unwrap();
    let e = err_of(env.get("bootcount"));
    assert!(
        e.contains("broken_printenv -n bootcount") && e.contains("Permission denied"),
        "{e}"
    );
    let e = err_of(env.set("bootcount", "0"));
    assert!(e.contains("broken_setenv bootcount 0"), "{e}");
    let e = err_of(env.boot_firmware_pending());
    assert!(e.contains("broken_printenv"), "{e}");

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
    // uboot_generic has no boot firmware support in aktualizr-lite, whatever the variable says.
    let g = tool_dir(&["fw_printenv", "fw_setenv"]);
    let generic = uboot(&g, false);
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

    let m = tool_dir(&["fw_printenv", "fw_setenv"]);
    uboot(&m, true).update_notify().unwrap();
    uboot(&m, true).set_boot_ok().unwrap();
    assert_eq!(
        read(&m, "calls"),
        "fw_setenv bootcount 0\nfw_setenv upgrade_available 1\nfw_setenv rollback 0\n\
         fw_setenv bootcount 0\nfw_setenv upgrade_available 0\n"
    );

    let g = tool_dir(&["fw_printenv", "fw_setenv"]);
    uboot(&g, false).update_notify().unwrap();
    uboot(&g, false).set_boot_ok().unwrap();
    assert_eq!(
        read(&g, "calls"),
        "fw_setenv bootcount 0\nfw_setenv rollback 0\nfw_setenv bootcount 0\n"
    );
    let d = deployment(Some("bootfirmware_version=2\n"));
    assert!(!uboot(&g, false).check_boot_firmware(d.path()).unwrap());
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
