//! Writer of byte-compatible offline-update bundles, for tests, the demo and benchmarks.
//!
//! Follows docs/bundle-format.md (layout, TUF flavour): `tuf/` in canonical JSON with
//! Foundries key ids, `ostree_repo/` a real archive repo written by libostree, `apps/` an
//! app store with real OCI images. Everything is deterministic (keys from seeds, fixed
//! commit time, reproducible tars), and every layer is exposed so tests can build attacks:
//! [`tuf`] has the metadata pieces, [`Factory`] the keys and root chain, [`Bundle`] the
//! after-the-fact edits (re-sign, re-chain snapshot and timestamp).
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use test_kit::gen::{simple_bundle, AppSpec, Factory};
//! let factory = Factory::new()?;
//! let dst = std::path::Path::new("/tmp/bundle");
//! let bundle = simple_bundle(&factory, dst, "intel-corei7-64", "42",
//!                            &[AppSpec::tiny("factory", "app-01", "v42")])?;
//! factory.write_device_roots(std::path::Path::new("/tmp/dev/usr/lib/sota/tuf"), "ci", 1)?;
//! # let _ = bundle; Ok(()) }
//! ```

pub mod apps;
pub mod bundle;
pub mod oci;
pub mod ostree;
pub mod tuf;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use serde_json::Value;
use sha2::{Digest, Sha256};

pub use self::apps::{default_compose, write_app, write_app_spec, AppInfo, AppSpec, Hostile};
pub use self::bundle::{
    simple_bundle, target_for, write_apps, write_bundle, write_content, Bundle, BundleSpec,
    BundleTargets, Content, RoleExpiries, RoleVersions,
};
pub use self::oci::LayerEntry;
pub use self::oci::{write_image, Healthcheck, ImageConfig, ImageFormat, ImageInfo, ImageSpec};
pub use self::ostree::TreeFile;
pub use self::tuf::{
    read_json, resign, sign, to_bytes, write_json, RoleKeys, RootSpec, TargetSpec,
};
pub use crate::keys::PrivateKey;

/// Expiry of everything a test does not explicitly expire.
pub const FAR_FUTURE: &str = "2099-01-01T00:00:00Z";
pub const DEFAULT_FACTORY: &str = "factory";
pub const DEFAULT_HWID: &str = "intel-corei7-64";

/// A TUF role of the root.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Root,
    Timestamp,
    Snapshot,
    Targets,
}

impl Role {
    fn of(self, spec: &RootSpec) -> &RoleKeys {
        match self {
            Role::Root => &spec.root,
            Role::Timestamp => &spec.timestamp,
            Role::Snapshot => &spec.snapshot,
            Role::Targets => &spec.targets,
        }
    }
}

/// A Foundries factory as far as bundles are concerned: its keys and its root chain
/// `1.root.json ..= N.root.json`. Keys are Ed25519 from seeds derived from the factory name,
/// so two factories of the same name are the same factory, and another name is a stranger.
pub struct Factory {
    pub name: String,
    specs: Vec<RootSpec>,
    roots: Vec<Value>,
    next_key: u32,
}

impl Factory {
    /// Root v1, one distinct Ed25519 key per role, thresholds 1, expiry [`FAR_FUTURE`].
    pub fn new() -> anyhow::Result<Factory> {
        Factory::named(DEFAULT_FACTORY)
    }

    /// [`Factory::new`] with keys derived from `name` (also used in app URIs).
    pub fn named(name: &str) -> anyhow::Result<Factory> {
        let mut f = Factory {
            name: name.into(),
            specs: Vec::new(),
            roots: Vec::new(),
            next_key: 0,
        };
        let mut role = || RoleKeys::single(f.fresh_key());
        let spec = RootSpec {
            version: 1,
            expires: FAR_FUTURE.into(),
            root: role(),
            timestamp: role(),
            snapshot: role(),
            targets: role(),
        };
        f.push_root(spec)?;
        Ok(f)
    }

    /// Root v1 with the RSA-2048 fixture key (`crates/test-kit/keys/rsa2048.pem`) for every
    /// role, as a factory with RSA online keys. Later rotations add Ed25519 root keys.
    pub fn rsa() -> anyhow::Result<Factory> {
        let key = Arc::new(fixture_rsa_key(2048)?);
        let role = || RoleKeys::single(key.clone());
        let spec = RootSpec {
            version: 1,
            expires: FAR_FUTURE.into(),
            root: role(),
            timestamp: role(),
            snapshot: role(),
            targets: role(),
        };
        Factory::from_root_spec(DEFAULT_FACTORY, spec)
    }

    /// A factory whose first root is `spec` (any version), self-signed by its root keys.
    pub fn from_root_spec(name: &str, spec: RootSpec) -> anyhow::Result<Factory> {
        let mut f = Factory {
            name: name.into(),
            specs: Vec::new(),
            roots: Vec::new(),
            next_key: 1000,
        };
        f.push_root(spec)?;
        Ok(f)
    }

    /// A new deterministic Ed25519 key (the n-th of this factory).
    pub fn fresh_key(&mut self) -> Arc<PrivateKey> {
        let n = self.next_key;
        self.next_key += 1;
        Arc::new(ed25519_key(&format!("{}/{n}", self.name)))
    }

    /// The next root: version + 1 and a fresh root key; other roles unchanged. Change it at
    /// will, then [`Factory::push_root`] it.
    pub fn next_root_spec(&mut self) -> RootSpec {
        let mut spec = self.spec().clone();
        spec.version += 1;
        spec.root = RoleKeys::single(self.fresh_key());
        spec
    }

    /// Root rotation as `fioctl keys tuf rotate-offline-key --role=root` does it: a new root
    /// version with a fresh root key, signed by the old and then the new root keys.
    pub fn rotate_root(&mut self) -> anyhow::Result<()> {
        let spec = self.next_root_spec();
        self.push_root(spec)
    }

    /// Sign `spec` with the previous root's keys then its own (each key once) and append it.
    pub fn push_root(&mut self, spec: RootSpec) -> anyhow::Result<()> {
        let mut signers: Vec<Arc<PrivateKey>> = Vec::new();
        let prev = self
            .specs
            .last()
            .map(|s| s.root.keys.clone())
            .unwrap_or_default();
        for k in prev.into_iter().chain(spec.root.keys.iter().cloned()) {
            if !signers.iter().any(|s| s.key_id() == k.key_id()) {
                signers.push(k);
            }
        }
        let refs: Vec<&PrivateKey> = signers.iter().map(|k| k.as_ref()).collect();
        let envelope = sign(tuf::root_signed(&spec), &refs)
            .with_context(|| format!("signing {}.root.json", spec.version))?;
        self.push_root_signed(spec, envelope);
        Ok(())
    }

    /// Append a root envelope built by the caller (wrong signers, odd versions, ...);
    /// `spec` is what later metadata of this factory will be signed with.
    pub fn push_root_signed(&mut self, spec: RootSpec, envelope: Value) {
        self.specs.push(spec);
        self.roots.push(envelope);
    }

    /// Every signed root envelope, oldest first.
    pub fn roots(&self) -> &[Value] {
        &self.roots
    }

    /// The envelope of root `version`.
    pub fn root(&self, version: u64) -> Option<&Value> {
        self.specs
            .iter()
            .position(|s| s.version == version)
            .map(|i| &self.roots[i])
    }

    /// The latest root's spec.
    pub fn spec(&self) -> &RootSpec {
        // `named` and `from_root_spec` always push one root, and nothing pops.
        &self.specs[self.specs.len() - 1]
    }

    pub fn spec_at(&self, version: u64) -> Option<&RootSpec> {
        self.specs.iter().find(|s| s.version == version)
    }

    pub fn latest_version(&self) -> u64 {
        self.spec().version
    }

    /// Keys of `role` in the latest root.
    pub fn role_keys(&self, role: Role) -> &RoleKeys {
        role.of(self.spec())
    }

    /// All keys of `role` in the latest root, ready for [`sign`].
    pub fn signers(&self, role: Role) -> Vec<&PrivateKey> {
        self.role_keys(role).signers()
    }

    /// `<dir>/N.root.json` for `from <= N <= to` (canonical bytes).
    pub fn write_roots(&self, dir: &Path, from: u64, to: u64) -> anyhow::Result<()> {
        for (spec, env) in self.specs.iter().zip(&self.roots) {
            if (from..=to).contains(&spec.version) {
                write_json(&dir.join(format!("{}.root.json", spec.version)), env)?;
            }
        }
        Ok(())
    }

    /// `<dir>/1.root.json ..= <dir>/<up_to>.root.json`: what a device image carries.
    pub fn write_provisioned_roots(&self, dir: &Path, up_to: u64) -> anyhow::Result<()> {
        self.write_roots(dir, 1, up_to)
    }

    /// The device layout: `<tuf_dir>/<kind>/N.root.json`, `kind` = `ci` or `prod`
    /// (`tuf_dir` is the device's `/usr/lib/sota/tuf`).
    pub fn write_device_roots(&self, tuf_dir: &Path, kind: &str, up_to: u64) -> anyhow::Result<()> {
        self.write_provisioned_roots(&tuf_dir.join(kind), up_to)
    }
}

/// An Ed25519 key whose seed is `sha256("usb-update/gen/" + label)`.
pub fn ed25519_key(label: &str) -> PrivateKey {
    let seed: [u8; 32] = Sha256::digest(format!("usb-update/gen/{label}")).into();
    PrivateKey::ed25519_from_seed(seed)
}

/// One of the pre-generated RSA keys in `crates/test-kit/keys/` (1024, 2048, 3072, 4096 bits).
pub fn fixture_rsa_key(bits: u32) -> anyhow::Result<PrivateKey> {
    let path = format!("{}/keys/rsa{bits}.pem", env!("CARGO_MANIFEST_DIR"));
    let pem = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    PrivateKey::rsa_from_pkcs8_pem(&pem).with_context(|| format!("parsing {path}"))
}
