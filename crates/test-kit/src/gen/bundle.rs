//! A whole bundle directory: `tuf/` from a [`Factory`], content in `ostree_repo/` and
//! `apps/`, and the edits tests make afterwards.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::Value;

use super::apps::{write_app_spec, AppInfo, AppSpec};
use super::tuf::{
    bundle_targets_signed, meta_entry, read_json, resign, sign, snapshot_signed, targets_signed,
    timestamp_signed, to_bytes, write_json, TargetSpec,
};
use super::{ostree as gen_ostree, Factory, Role, FAR_FUTURE};
use crate::keys::PrivateKey;

/// What `tuf/bundle-targets.json` lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BundleTargets {
    /// Every target of `targets.json`.
    All,
    Only(Vec<String>),
    /// No `bundle-targets.json` at all (fioctl before v0.42).
    Omit,
}

/// `version` of each generated metadata file.
#[derive(Clone, Debug)]
pub struct RoleVersions {
    pub targets: u64,
    pub snapshot: u64,
    pub timestamp: u64,
    pub bundle_targets: u64,
}

/// `expires` of each generated metadata file (`YYYY-MM-DDTHH:MM:SSZ`).
#[derive(Clone, Debug)]
pub struct RoleExpiries {
    pub targets: String,
    pub snapshot: String,
    pub timestamp: String,
    pub bundle_targets: String,
}

/// What [`write_bundle`] puts into `tuf/`.
#[derive(Clone, Debug)]
pub struct BundleSpec {
    /// `ci` or `prod` (`x-fio-offline-bundle.type`).
    pub kind: String,
    /// `x-fio-offline-bundle.tag`.
    pub tag: String,
    pub targets: Vec<TargetSpec>,
    pub bundle_targets: BundleTargets,
    /// First `N.root.json` written (fioctl starts at 3); none if above the last.
    pub roots_from: u64,
    /// Last root written, and whose keys sign the rest; `None` = the factory's latest.
    pub roots_to: Option<u64>,
    pub versions: RoleVersions,
    pub expires: RoleExpiries,
}

impl BundleSpec {
    /// A CI bundle (`ci`, tag `devel`) of `targets`, all listed in `bundle-targets.json`,
    /// roots from 3 like fioctl, every version 1, everything expiring [`FAR_FUTURE`].
    pub fn new(targets: Vec<TargetSpec>) -> BundleSpec {
        BundleSpec {
            kind: "ci".into(),
            tag: "devel".into(),
            targets,
            bundle_targets: BundleTargets::All,
            roots_from: 3,
            roots_to: None,
            versions: RoleVersions {
                targets: 1,
                snapshot: 1,
                timestamp: 1,
                bundle_targets: 1,
            },
            expires: RoleExpiries {
                targets: FAR_FUTURE.into(),
                snapshot: FAR_FUTURE.into(),
                timestamp: FAR_FUTURE.into(),
                bundle_targets: FAR_FUTURE.into(),
            },
        }
    }
}

/// A bundle directory. Helpers edit its `tuf/` files the way tests need to.
#[derive(Clone, Debug)]
pub struct Bundle {
    pub dir: PathBuf,
    /// The targets written into `targets.json`.
    pub targets: Vec<TargetSpec>,
}

/// Write `dst/tuf/`: roots `roots_from..=roots_to`, then targets, snapshot, timestamp and
/// bundle-targets, each canonical and signed by the role keys of root `roots_to`.
pub fn write_bundle(factory: &Factory, spec: &BundleSpec, dst: &Path) -> anyhow::Result<Bundle> {
    let last = spec.roots_to.unwrap_or(factory.latest_version());
    let root = factory
        .spec_at(last)
        .with_context(|| format!("factory has no root version {last}"))?;
    let tuf = dst.join("tuf");
    std::fs::create_dir_all(&tuf).with_context(|| format!("creating {}", tuf.display()))?;
    factory.write_roots(&tuf, spec.roots_from, last)?;

    let (v, e) = (&spec.versions, &spec.expires);
    let targets = sign(
        targets_signed(v.targets, &e.targets, &spec.targets),
        &root.targets.signers(),
    )?;
    let targets_bytes = to_bytes(&targets)?;
    let snapshot = sign(
        snapshot_signed(v.snapshot, &e.snapshot, &targets_bytes, v.targets),
        &root.snapshot.signers(),
    )?;
    let snapshot_bytes = to_bytes(&snapshot)?;
    let timestamp = sign(
        timestamp_signed(v.timestamp, &e.timestamp, &snapshot_bytes, v.snapshot),
        &root.timestamp.signers(),
    )?;
    write_json(&tuf.join("targets.json"), &targets)?;
    write_json(&tuf.join("snapshot.json"), &snapshot)?;
    write_json(&tuf.join("timestamp.json"), &timestamp)?;

    let names: Vec<String> = match &spec.bundle_targets {
        BundleTargets::All => spec.targets.iter().map(|t| t.name.clone()).collect(),
        BundleTargets::Only(names) => names.clone(),
        BundleTargets::Omit => Vec::new(),
    };
    if spec.bundle_targets != BundleTargets::Omit {
        let signed = bundle_targets_signed(
            v.bundle_targets,
            &e.bundle_targets,
            &spec.kind,
            &spec.tag,
            &names,
        );
        write_json(
            &tuf.join("bundle-targets.json"),
            &sign(signed, &root.targets.signers())?,
        )?;
    }
    Ok(Bundle {
        dir: dst.to_path_buf(),
        targets: spec.targets.clone(),
    })
}

impl Bundle {
    /// A bundle already on disk (e.g. to edit it).
    pub fn open(dir: &Path) -> Bundle {
        Bundle {
            dir: dir.to_path_buf(),
            targets: Vec::new(),
        }
    }

    pub fn tuf_dir(&self) -> PathBuf {
        self.dir.join("tuf")
    }

    pub fn ostree_repo(&self) -> PathBuf {
        self.dir.join("ostree_repo")
    }

    pub fn apps_dir(&self) -> PathBuf {
        self.dir.join("apps")
    }

    /// `tuf/<file>`, e.g. `targets.json`, `4.root.json`.
    pub fn tuf_file(&self, file: &str) -> PathBuf {
        self.tuf_dir().join(file)
    }

    pub fn read(&self, file: &str) -> anyhow::Result<Value> {
        read_json(&self.tuf_file(file))
    }

    /// Write `tuf/<file>` canonically, as is (no re-signing, no re-chaining).
    pub fn write(&self, file: &str, v: &Value) -> anyhow::Result<()> {
        write_json(&self.tuf_file(file), v)
    }

    pub fn remove(&self, file: &str) -> anyhow::Result<()> {
        let path = self.tuf_file(file);
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))
    }

    /// Change `signed` of `tuf/<file>` and re-sign it with `signers` (no re-chaining).
    pub fn edit_signed(
        &self,
        file: &str,
        signers: &[&PrivateKey],
        edit: impl FnOnce(&mut Value),
    ) -> anyhow::Result<()> {
        let mut env = self.read(file)?;
        let signed = env
            .get_mut("signed")
            .with_context(|| format!("tuf/{file} has no \"signed\""))?;
        edit(signed);
        self.write(file, &resign(&env, signers)?)
    }

    /// Change `signed` of `targets.json`, re-sign it with the factory's targets keys, and
    /// re-chain snapshot and timestamp.
    pub fn edit_targets(
        &self,
        factory: &Factory,
        edit: impl FnOnce(&mut Value),
    ) -> anyhow::Result<()> {
        self.edit_signed("targets.json", &factory.signers(Role::Targets), edit)?;
        self.rechain(factory)
    }

    /// Re-derive `snapshot.json` from the current `targets.json` and `timestamp.json` from
    /// the result (hashes, length, version), keeping their own versions and expiries, and
    /// re-sign both with the factory's (latest root's) snapshot and timestamp keys.
    pub fn rechain(&self, factory: &Factory) -> anyhow::Result<()> {
        self.relink(
            "snapshot.json",
            "targets.json",
            &factory.signers(Role::Snapshot),
        )?;
        self.relink(
            "timestamp.json",
            "snapshot.json",
            &factory.signers(Role::Timestamp),
        )
    }

    fn relink(&self, file: &str, target: &str, signers: &[&PrivateKey]) -> anyhow::Result<()> {
        let referenced = self.read(target)?;
        // The device hashes the canonical form of the parsed file, not the bytes on disk.
        let bytes = to_bytes(&referenced)?;
        let version = referenced["signed"]["version"]
            .as_u64()
            .with_context(|| format!("tuf/{target} has no integer signed.version"))?;
        self.edit_signed(file, signers, |signed| {
            signed["meta"][target] = meta_entry(&bytes, version);
        })
    }

    /// `ostree_repo/objects/<h[0:2]>/<h[2:]>.commit`.
    pub fn commit_object(&self, checksum: &str) -> PathBuf {
        gen_ostree::commit_object_path(&self.ostree_repo(), checksum)
    }
}

/// What [`write_content`] put into a bundle.
#[derive(Clone, Debug)]
pub struct Content {
    pub commit: String,
    pub apps: Vec<AppInfo>,
}

/// `dst/ostree_repo` (archive repo, created or reused) with a bootable commit of `version`
/// on branch `<hwid>-lmp`, and `apps` written into `dst/apps` under `factory`.
pub fn write_content(
    dst: &Path,
    factory: &str,
    hwid: &str,
    version: &str,
    apps: &[AppSpec],
) -> anyhow::Result<Content> {
    let repo = dst.join("ostree_repo");
    let tree = gen_ostree::bootable_tree(version, Vec::new());
    let commit = gen_ostree::commit_tree_with(
        &repo,
        &format!("{hwid}-lmp"),
        &tree,
        &gen_ostree::CommitOptions::new(&format!("{hwid}-lmp-{version}"), Some(version)),
    )?;
    let apps = write_apps(dst, factory, apps)?;
    Ok(Content { commit, apps })
}

/// Write `apps` of `factory` into `dst/apps`.
pub fn write_apps(dst: &Path, factory: &str, apps: &[AppSpec]) -> anyhow::Result<Vec<AppInfo>> {
    apps.iter()
        .map(|a| write_app_spec(&dst.join("apps"), factory, a))
        .collect()
}

/// The target entry for `content` built for `hwid` / `version`.
pub fn target_for(hwid: &str, version: &str, content: &Content) -> TargetSpec {
    let mut t = TargetSpec::new(hwid, version, &content.commit);
    for app in &content.apps {
        t.apps.insert(app.name.clone(), app.uri.clone());
    }
    t
}

/// A complete CI bundle in `dst`: content for one target plus `tuf/` ([`BundleSpec::new`]).
pub fn simple_bundle(
    factory: &Factory,
    dst: &Path,
    hwid: &str,
    version: &str,
    apps: &[AppSpec],
) -> anyhow::Result<Bundle> {
    let content = write_content(dst, &factory.name, hwid, version, apps)?;
    let spec = BundleSpec::new(vec![target_for(hwid, version, &content)]);
    write_bundle(factory, &spec, dst)
}
