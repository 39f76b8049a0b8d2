//! `usb-update current`: the running target, read-only.

use crate::common::{Device, DeviceSpec, Unchanged, HWID};
use test_kit::gen::{self, write_bundle, write_content, BundleSpec, Factory};

fn compose_device(f: &Factory) -> Device {
    let d = Device::with(
        f,
        DeviceSpec {
            pacman_type: "ostree+compose_apps",
            ..Default::default()
        },
    );
    let conf = d.conf.join("sota.toml");
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(
        &conf,
        text.replace("[pacman]\n", "[pacman]\ncompose_apps = \"app-01\"\n"),
    )
    .unwrap();
    d
}

#[test]
fn booted_commit_matched_against_stored_targets() {
    let f = Factory::new().unwrap();
    let d = compose_device(&f);
    let b = tempfile::tempdir().unwrap();
    let apps = [
        gen::AppSpec::tiny(&f.name, "app-01", "a"),
        gen::AppSpec::tiny(&f.name, "app-02", "b"),
    ];
    let c = write_content(b.path(), &f.name, HWID, "7", &apps).unwrap();
    let bb = write_bundle(
        &f,
        &BundleSpec::new(vec![gen::target_for(HWID, "7", &c)]),
        b.path(),
    )
    .unwrap();
    let tuf = d.state_dir().join("tuf");
    std::fs::create_dir_all(&tuf).unwrap();
    std::fs::copy(bb.tuf_file("targets.json"), tuf.join("targets.json")).unwrap();
    d.boot(&c.commit);

    let before = Unchanged::new(&d, b.path());
    let r = d.command("current", &[]);
    before.assert();
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "current: intel-corei7-64-lmp-7 (version 7), commit {}",
            c.commit
        )
    );
    assert!(
        lines[1].starts_with("app app-01: on hub.foundries.io/factory/app-01@sha256:"),
        "{}",
        r.stdout
    );
    assert!(
        lines[2].starts_with("app app-02: off hub.foundries.io/factory/app-02@sha256:"),
        "{}",
        r.stdout
    );

    let r = d.command("current", &["--json"]);
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(v["name"], "intel-corei7-64-lmp-7");
    assert_eq!(v["version"], 7);
    assert_eq!(v["apps"][1]["on"], false);
}

#[test]
fn a_device_never_updated_runs_an_initial_target() {
    let f = Factory::new().unwrap();
    let d = Device::new(&f);
    d.boot(&"ef".repeat(32));
    let r = d.command("current", &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout.trim(),
        format!(
            "current: Initial Target (version unknown), commit {}",
            "ef".repeat(32)
        )
    );
}
