//! A compose-apps device (`ostree+compose_apps`) with its own private dockerd, running a
//! rootfs of version "1", and bundles of targets with apps built from scratch (busybox).

use std::collections::BTreeMap;
use std::path::Path;

use test_kit::gen::{self, write_bundle, write_content, AppSpec, BundleSpec, Factory, TargetSpec};
use usb_update::apps::docker::Engine;

use super::dockerd::Dockerd;
use super::{Device, DeviceSpec, Run, HWID};

pub struct AppScene {
    pub f: Factory,
    pub d: Device,
    pub docker: Dockerd,
    /// Version -> commit, for every rootfs written so far.
    pub commits: BTreeMap<String, String>,
    /// (target version, app) -> what was written for it.
    pub written: BTreeMap<(String, String), gen::AppInfo>,
    _image: tempfile::TempDir,
}

/// One target of a bundle: a version, its rootfs (`rootfs` names the version whose commit
/// it reuses: an apps-only release), and its apps.
pub struct T {
    pub version: &'static str,
    pub rootfs: &'static str,
    pub apps: Vec<AppSpec>,
    pub custom: Vec<(&'static str, serde_json::Value)>,
}

impl T {
    pub fn new(version: &'static str, apps: Vec<AppSpec>) -> T {
        T {
            version,
            rootfs: version,
            apps,
            custom: Vec::new(),
        }
    }

    pub fn on(mut self, rootfs: &'static str) -> T {
        self.rootfs = rootfs;
        self
    }

    pub fn custom(mut self, key: &'static str, value: serde_json::Value) -> T {
        self.custom.push((key, value));
        self
    }
}

/// A runnable app that becomes healthy.
pub fn app(factory: &str, name: &str, marker: &str) -> AppSpec {
    // The app's name in the marker: two apps never share an image by accident.
    AppSpec::busybox(factory, name, &format!("{name} {marker}"))
}

impl AppScene {
    pub fn new(compose_apps: Option<&str>) -> AppScene {
        AppScene::in_dir(compose_apps, None)
    }

    /// [`AppScene::new`] with the device's directory made in `base`.
    pub fn in_dir(compose_apps: Option<&str>, base: Option<&Path>) -> AppScene {
        let f = Factory::new().expect("factory");
        let mut d = Device::with(
            &f,
            DeviceSpec {
                pacman_type: "ostree+compose_apps",
                rollback_mode: "file",
                base,
                ..Default::default()
            },
        );
        if let Some(list) = compose_apps {
            let conf = d.conf.join("sota.toml");
            let text = std::fs::read_to_string(&conf).expect("config");
            let text = text.replace(
                "[pacman]\n",
                &format!("[pacman]\ncompose_apps = \"{list}\"\n"),
            );
            std::fs::write(&conf, text).expect("config");
        }
        std::fs::write(
            d.policy.join("10-apps.toml"),
            "[apps]\nhealth_timeout = \"30s\"\nsettle = \"1s\"\n",
        )
        .expect("policy");
        let image = tempfile::tempdir().expect("tempdir");
        let c1 = write_content(image.path(), &f.name, HWID, "1", &[]).expect("rootfs 1");
        d.deploy_initial(&image.path().join("ostree_repo"), &c1.commit);
        d.reboot_into(&c1.commit, "sim-0");
        let docker = Dockerd::start();
        d.env.push(("DOCKER_HOST".into(), docker.host()));
        let mut commits = BTreeMap::new();
        commits.insert("1".to_string(), c1.commit);
        AppScene {
            f,
            d,
            docker,
            commits,
            written: BTreeMap::new(),
            _image: image,
        }
    }

    /// A bundle of `targets`, all listed.
    pub fn bundle(&mut self, targets: Vec<T>) -> tempfile::TempDir {
        let b = tempfile::tempdir().expect("tempdir");
        let mut specs = Vec::new();
        for t in targets {
            let c =
                write_content(b.path(), &self.f.name, HWID, t.rootfs, &t.apps).expect("content");
            if let Some(known) = self.commits.get(t.rootfs) {
                assert_eq!(known, &c.commit, "rootfs {} is not reproducible", t.rootfs);
            }
            self.commits.insert(t.rootfs.to_string(), c.commit.clone());
            let mut spec = TargetSpec::new(HWID, t.version, &c.commit);
            for a in &c.apps {
                spec.apps.insert(a.name.clone(), a.uri.clone());
                self.written
                    .insert((t.version.to_string(), a.name.clone()), a.clone());
            }
            for (k, v) in t.custom {
                spec = spec.with_custom(k, v);
            }
            specs.push(spec);
        }
        write_bundle(&self.f, &BundleSpec::new(specs), b.path()).expect("bundle");
        b
    }

    pub fn install(&self, bundle: &Path) -> Run {
        self.d.run("install", bundle, &[])
    }

    pub fn run(&self) -> Run {
        self.d.command("run", &[])
    }

    pub fn reboot_into(&self, version: &str, boot_id: &str) {
        self.d.reboot_into(&self.commits[version], boot_id);
    }

    pub fn engine(&self) -> Engine {
        Engine::connect_to(&self.docker.host()).expect("engine")
    }

    /// Running containers: project -> [(service, image id)].
    pub fn running(&self) -> BTreeMap<String, Vec<(String, String)>> {
        let engine = self.engine();
        let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        for p in projects(&self.d) {
            for c in engine.project_containers(&p).expect("containers") {
                if c.running {
                    out.entry(p.clone())
                        .or_default()
                        .push((c.service.unwrap_or_default(), c.image_id));
                }
            }
        }
        out
    }

    /// Image ids the engine holds.
    pub fn image_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .engine()
            .images()
            .expect("images")
            .into_iter()
            .map(|i| i.id)
            .collect();
        ids.sort();
        ids
    }

    pub fn store(&self) -> std::path::PathBuf {
        self.d.storage.join("reset-apps")
    }

    pub fn compose_root(&self) -> std::path::PathBuf {
        self.d.storage.join("compose-apps")
    }
}

/// Compose projects with a directory on the device, plus a few names tests use.
fn projects(d: &Device) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(d.storage.join("compose-apps"))
        .map(|r| {
            r.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    for n in ["app-01", "app-02", "app-03"] {
        if !names.iter().any(|x| x == n) {
            names.push(n.to_string());
        }
    }
    names.sort();
    names
}

impl AppScene {
    /// The image id of app `app` of target `version` as written: `sha256:<config digest>`.
    pub fn image_id(&self, version: &str, app: &str) -> String {
        let info = &self.written[&(version.to_string(), app.to_string())];
        format!("sha256:{}", info.images[0].config_digest)
    }
}
