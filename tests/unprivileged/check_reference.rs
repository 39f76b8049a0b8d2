//! `check` on a bundle this project did not generate: the worked example of
//! docs/bundle-format.md, laid out as `fioctl targets offline-update` lays out a bundle.

use std::path::Path;

use crate::common::{Device, DeviceSpec, Unchanged};
use test_kit::gen::Factory;

const COMMIT: &str = "7d3b31b5462227e668378cd275a610290d9850223058c314a114038427d16ddb";
const APP_DIGEST: &str = "feca26f0b9d59ac6c3c37fee030ce2eb2e0ab0315c7982291f5f065ee79bd8c2";

fn vectors() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/reference-2.7"
    ))
}

/// The vectors' device: root 1 provisioned, a compose-apps device with tag devel.
fn device() -> Device {
    let d = Device::with(
        &Factory::new().unwrap(),
        DeviceSpec {
            pacman_type: "ostree+compose_apps",
            ..Default::default()
        },
    );
    std::fs::copy(vectors().join("1.root.json"), d.tuf.join("1.root.json")).unwrap();
    d
}

/// The bundle: root 2 and the four role files as given, an archive repo holding the
/// commit object and the app's `uri` where fioctl puts them. The vectors' commit id is a
/// placeholder, so no object can hash to it: `check`, which reads the commit it would
/// install, refuses it, after every TUF and selection step passed.
fn bundle(dir: &Path) {
    std::fs::create_dir_all(dir.join("tuf")).unwrap();
    for f in [
        "2.root.json",
        "timestamp.json",
        "snapshot.json",
        "targets.json",
        "bundle-targets.json",
    ] {
        std::fs::copy(vectors().join(f), dir.join("tuf").join(f)).unwrap();
    }
    let obj = dir.join(format!("ostree_repo/objects/{}", &COMMIT[..2]));
    std::fs::create_dir_all(&obj).unwrap();
    std::fs::write(
        dir.join("ostree_repo/config"),
        "[core]\nrepo_version=1\nmode=archive-z2\n",
    )
    .unwrap();
    std::fs::write(obj.join(format!("{}.commit", &COMMIT[2..])), b"").unwrap();
    let app = dir.join(format!("apps/apps/app-01/{APP_DIGEST}"));
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(
        app.join("uri"),
        format!("hub.foundries.io/factory/app-01@sha256:{APP_DIGEST}"),
    )
    .unwrap();
}

#[test]
fn the_reference_bundle_verifies_up_to_its_placeholder_commit() {
    let d = device();
    let b = tempfile::tempdir().unwrap();
    bundle(b.path());
    let before = Unchanged::new(&d, b.path());
    let r = d.check(b.path(), &[]);
    r.assert(
        50,
        &format!(
            "ostree_repo/objects/7d/{}.commit does not match its checksum",
            &COMMIT[2..]
        ),
    );
    before.assert();
    for line in [
        "root: v2 expires 2030-01-01T00:00:00Z (bundle tuf/2.root.json)",
        "timestamp: v42 expires 2030-01-01T00:00:00Z",
        "target intel-corei7-64-lmp-42 (version 42): candidate",
    ] {
        assert!(r.stdout.lines().any(|l| l == line), "{line}\n{}", r.stdout);
    }
    assert!(r
        .line("selected: intel-corei7-64-lmp-42 (version 42), commit 7d3b31b5")
        .unwrap()
        .ends_with("apps [app-01]"));
}

#[test]
fn the_reference_bundle_without_its_app_lacks_content() {
    let d = device();
    let b = tempfile::tempdir().unwrap();
    bundle(b.path());
    std::fs::remove_dir_all(b.path().join("apps")).unwrap();
    d.check(b.path(), &[])
        .assert(8, "apps missing from apps/: app-01");
}
