//! Unit tests of the configuration loader, on real TOML files in temporary directories.
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
        expand_paths(&[], &defaults, "config", false).unwrap(),
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
    assert_eq!(c.storage.sqldb_path, PathBuf::from("/var/sota/sql.db"));
    let c = load_one("[storage]\npath = \"/data\"\nsqldb_path = \"db/a.db\"\n").unwrap();
    assert_eq!(c.storage.sqldb_path, PathBuf::from("/data/db/a.db"));
    let c = load_one("[storage]\npath = \"/data\"\nsqldb_path = \"/x/sql.db\"\n").unwrap();
    assert_eq!(c.storage.sqldb_path, PathBuf::from("/x/sql.db"));
}

#[test]
fn aktualizr_lite_files_default_as_there() {
    let c = load_one("").unwrap();
    assert_eq!(c.import.base_path, PathBuf::from("/var/sota/import"));
    assert_eq!(
        c.bootloader.reboot_sentinel_dir,
        PathBuf::from("/var/run/aktualizr-session")
    );
    assert_eq!(c.bootloader.reboot_sentinel_name, "need_reboot");
    assert_eq!(c.pacman.callback_program, None);
    let c = load_one(
        "[pacman]\ncallback_program = \"/usr/bin/cb\"\n[bootloader]\n\
         reboot_sentinel_dir = \"/run/s\"\nreboot_sentinel_name = \"nr\"\n",
    )
    .unwrap();
    assert_eq!(
        c.pacman.callback_program,
        Some(PathBuf::from("/usr/bin/cb"))
    );
    assert_eq!(c.bootloader.reboot_sentinel_dir, PathBuf::from("/run/s"));
    assert_eq!(c.bootloader.reboot_sentinel_name, "nr");
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
    let c =
        load_one("[pacman]\nos = 7\nbooted = 0\ntags = 42\n[bootloader]\nrollback_mode = true\n")
            .unwrap();
    assert_eq!(c.pacman.os, "7");
    assert_eq!(c.pacman.booted, BootedMode::Staged);
    assert_eq!(c.pacman.tags, ["42"]);
    assert_eq!(c.bootloader.rollback_mode, "true");
}

#[test]
fn package_manager_and_booted_mode_values() {
    let kind = |v: &str| load_one(&format!("[pacman]\ntype = \"{v}\"\n")).map(|c| c.pacman.kind);
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
