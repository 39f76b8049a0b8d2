//! TUF metadata building blocks, in the Foundries flavour (docs/bundle-format.md).
//!
//! Every function returns plain `serde_json::Value`s so that tests can take any of them apart,
//! change a member and sign the result with whatever key they like: attacks are built from the
//! same pieces as valid bundles.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::keys::PrivateKey;

/// The keys of one role in a root, and how many of them must sign.
#[derive(Clone)]
pub struct RoleKeys {
    pub keys: Vec<Arc<PrivateKey>>,
    pub threshold: u32,
}

impl RoleKeys {
    /// One key, threshold 1: what a CI factory has for every role.
    pub fn single(key: Arc<PrivateKey>) -> RoleKeys {
        RoleKeys {
            keys: vec![key],
            threshold: 1,
        }
    }

    /// Borrowed keys, in order, ready for [`sign`].
    pub fn signers(&self) -> Vec<&PrivateKey> {
        self.keys.iter().map(|k| k.as_ref()).collect()
    }

    fn role_json(&self) -> Value {
        let ids: Vec<String> = self.keys.iter().map(|k| k.key_id()).collect();
        json!({"keyids": ids, "threshold": self.threshold})
    }
}

/// Everything that goes into the `signed` part of one `N.root.json`.
#[derive(Clone)]
pub struct RootSpec {
    pub version: u64,
    pub expires: String,
    pub root: RoleKeys,
    pub timestamp: RoleKeys,
    pub snapshot: RoleKeys,
    pub targets: RoleKeys,
}

/// The `signed` part of a root: every key of every role in `keys`, roles by lowercase name.
pub fn root_signed(spec: &RootSpec) -> Value {
    let mut keys = Map::new();
    for rk in [&spec.root, &spec.timestamp, &spec.snapshot, &spec.targets] {
        for k in &rk.keys {
            keys.insert(k.key_id(), k.public_json());
        }
    }
    json!({
        "_type": "Root",
        "consistent_snapshot": false,
        "expires": spec.expires,
        "keys": keys,
        "roles": {
            "root": spec.root.role_json(),
            "snapshot": spec.snapshot.role_json(),
            "targets": spec.targets.role_json(),
            "timestamp": spec.timestamp.role_json(),
        },
        "version": spec.version,
    })
}

/// The envelope `{"signatures": [...], "signed": signed}`, one signature per signer in the
/// given order, each over the canonical bytes of `signed` (what the device re-computes).
pub fn sign(signed: Value, signers: &[&PrivateKey]) -> anyhow::Result<Value> {
    let msg = to_bytes(&signed).context("canonicalising the signed part")?;
    let signatures = signers
        .iter()
        .map(|k| k.signature_json(&msg))
        .collect::<anyhow::Result<Vec<Value>>>()
        .context("signing metadata")?;
    Ok(json!({"signatures": signatures, "signed": signed}))
}

/// Replace the signatures of an envelope by fresh ones over its (possibly edited) `signed`.
pub fn resign(envelope: &Value, signers: &[&PrivateKey]) -> anyhow::Result<Value> {
    let signed = envelope
        .get("signed")
        .cloned()
        .context("metadata has no \"signed\" member")?;
    sign(signed, signers)
}

/// One entry of `targets.json`, as the Foundries backend writes an LmP build.
#[derive(Clone, Debug)]
pub struct TargetSpec {
    pub name: String,
    pub hwid: String,
    pub version: String,
    pub tags: Vec<String>,
    /// The OSTree commit checksum (`hashes.sha256`).
    pub commit: String,
    /// App name -> app URI (`hub.foundries.io/<factory>/<app>@sha256:<hex>`).
    pub apps: BTreeMap<String, String>,
    /// Merged into `custom` last, so it can override anything (`fetched-apps`,
    /// `hardwareIds`, `targetFormat`, ...); a `null` value removes the member.
    pub extra_custom: Map<String, Value>,
}

impl TargetSpec {
    /// `<hwid>-lmp-<version>`, tag `devel`, no apps: the shape of the worked example in
    /// docs/bundle-format.md.
    pub fn new(hwid: &str, version: &str, commit: &str) -> TargetSpec {
        TargetSpec {
            name: format!("{hwid}-lmp-{version}"),
            hwid: hwid.to_string(),
            version: version.to_string(),
            tags: vec!["devel".to_string()],
            commit: commit.to_string(),
            apps: BTreeMap::new(),
            extra_custom: Map::new(),
        }
    }

    /// Add (or replace) a required app: `docker_compose_apps.<name>.uri`.
    pub fn with_app(mut self, name: &str, uri: &str) -> TargetSpec {
        self.apps.insert(name.to_string(), uri.to_string());
        self
    }

    pub fn with_tags(mut self, tags: &[&str]) -> TargetSpec {
        self.tags = tags.iter().map(|t| t.to_string()).collect();
        self
    }

    /// Set (or with `Value::Null`, remove) one member of `custom`.
    pub fn with_custom(mut self, key: &str, value: Value) -> TargetSpec {
        self.extra_custom.insert(key.to_string(), value);
        self
    }

    /// The `targets.<name>` value. `docker_compose_apps` is left out when there are no apps.
    pub fn to_json(&self) -> Value {
        let mut custom = Map::new();
        if !self.apps.is_empty() {
            let apps: Map<String, Value> = self
                .apps
                .iter()
                .map(|(n, uri)| (n.clone(), json!({ "uri": uri })))
                .collect();
            custom.insert("docker_compose_apps".into(), Value::Object(apps));
        }
        custom.insert("hardwareIds".into(), json!([self.hwid]));
        custom.insert("name".into(), json!(format!("{}-lmp", self.hwid)));
        custom.insert("tags".into(), json!(self.tags));
        custom.insert("targetFormat".into(), json!("OSTREE"));
        custom.insert(
            "uri".into(),
            json!(format!(
                "https://ci.foundries.io/projects/factory/lmp/builds/{}",
                self.version
            )),
        );
        custom.insert("version".into(), json!(self.version));
        for (k, v) in &self.extra_custom {
            if v.is_null() {
                custom.remove(k);
            } else {
                custom.insert(k.clone(), v.clone());
            }
        }
        json!({
            "custom": custom,
            "hashes": {"sha256": self.commit},
            "length": 0,
        })
    }
}

/// The `signed` part of `targets.json`.
pub fn targets_signed(version: u64, expires: &str, targets: &[TargetSpec]) -> Value {
    let map: Map<String, Value> = targets
        .iter()
        .map(|t| (t.name.clone(), t.to_json()))
        .collect();
    json!({"_type": "Targets", "expires": expires, "targets": map, "version": version})
}

/// The `meta` entry describing a whole metadata file: hashes and length are over the exact
/// (canonical) bytes, as the device hashes the canonical form of the whole file.
pub fn meta_entry(file: &[u8], version: u64) -> Value {
    json!({
        "hashes": {"sha256": hex::encode(Sha256::digest(file))},
        "length": file.len(),
        "version": version,
    })
}

/// The `signed` part of `snapshot.json`; `targets_file` = canonical bytes of `targets.json`.
pub fn snapshot_signed(
    version: u64,
    expires: &str,
    targets_file: &[u8],
    targets_version: u64,
) -> Value {
    json!({
        "_type": "Snapshot",
        "expires": expires,
        "meta": {"targets.json": meta_entry(targets_file, targets_version)},
        "version": version,
    })
}

/// The `signed` part of `timestamp.json`; `snapshot_file` = canonical bytes of `snapshot.json`.
pub fn timestamp_signed(
    version: u64,
    expires: &str,
    snapshot_file: &[u8],
    snapshot_version: u64,
) -> Value {
    json!({
        "_type": "Timestamp",
        "expires": expires,
        "meta": {"snapshot.json": meta_entry(snapshot_file, snapshot_version)},
        "version": version,
    })
}

/// The `signed` part of `bundle-targets.json` (fioctl v0.42+); `kind` is `ci` or `prod`.
pub fn bundle_targets_signed(
    version: u64,
    expires: &str,
    kind: &str,
    tag: &str,
    names: &[String],
) -> Value {
    json!({
        "_type": "Targets",
        "expires": expires,
        "version": version,
        "x-fio-offline-bundle": {"tag": tag, "targets": names, "type": kind},
    })
}

/// Canonical bytes, no trailing newline: the form every generated TUF file is written in.
pub fn to_bytes(v: &Value) -> anyhow::Result<Vec<u8>> {
    Ok(foundries_tuf::canonical::to_vec(v)?)
}

/// Write `v` canonically to `path` (parents created).
pub fn write_json(path: &Path, v: &Value) -> anyhow::Result<()> {
    let bytes = to_bytes(v).with_context(|| format!("canonicalising {}", path.display()))?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Parse a JSON file.
pub fn read_json(path: &Path) -> anyhow::Result<Value> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}
