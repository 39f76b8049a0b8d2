//! A device running one version and a bundle offering others, on a real sysroot.

use std::collections::BTreeMap;

use test_kit::gen::{
    self, write_bundle, write_content, BundleSpec, BundleTargets, Factory, TargetSpec,
};

use super::{Device, DeviceSpec, HWID};

/// A device that runs version `running` (deployed from a factory repo of its own) and a
/// bundle whose targets are `all` (content in the bundle) listing `offered`.
pub struct Scene {
    pub d: Device,
    pub b: tempfile::TempDir,
    pub commits: BTreeMap<String, String>,
}

pub fn scene(running: &str, all: &[&str], offered: &[&str], extra: Option<TargetSpec>) -> Scene {
    scene_in(None, running, all, offered, extra)
}

/// [`scene`] with the device's directory made in `base`.
pub fn scene_in(
    base: Option<&std::path::Path>,
    running: &str,
    all: &[&str],
    offered: &[&str],
    extra: Option<TargetSpec>,
) -> Scene {
    let f = Factory::new().unwrap();
    let d = Device::with(
        &f,
        DeviceSpec {
            rollback_mode: "file",
            base,
            ..Default::default()
        },
    );
    let image = tempfile::tempdir().unwrap();
    let c0 = write_content(image.path(), &f.name, HWID, running, &[]).unwrap();
    d.deploy_initial(&image.path().join("ostree_repo"), &c0.commit);
    // Booted explicitly: without the files, the default deployment counts as booted, and
    // the default changes with every deploy.
    d.reboot_into(&c0.commit, "sim-0");
    let b = tempfile::tempdir().unwrap();
    let mut commits = BTreeMap::new();
    commits.insert(running.to_string(), c0.commit.clone());
    let mut targets = vec![gen::target_for(HWID, running, &c0)];
    for v in all.iter().filter(|v| **v != running) {
        let c = write_content(b.path(), &f.name, HWID, v, &[]).unwrap();
        commits.insert(v.to_string(), c.commit.clone());
        targets.push(gen::target_for(HWID, v, &c));
    }
    if let Some(t) = extra {
        commits.insert(t.version.clone(), t.commit.clone());
        targets.push(t);
    }
    let mut spec = BundleSpec::new(targets);
    spec.bundle_targets =
        BundleTargets::Only(offered.iter().map(|v| format!("{HWID}-lmp-{v}")).collect());
    write_bundle(&f, &spec, b.path()).unwrap();
    Scene { d, b, commits }
}

pub fn deployments(d: &Device) -> Vec<String> {
    let cfg = usb_update::config::Config::load(std::slice::from_ref(&d.conf)).unwrap();
    usb_update::ostree::deployments(&cfg.pacman)
        .unwrap()
        .into_iter()
        .map(|x| x.csum)
        .collect()
}

pub fn state(d: &Device) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(d.state_dir().join("state.json")).unwrap()).unwrap()
}
