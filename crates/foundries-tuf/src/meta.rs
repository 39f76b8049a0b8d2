//! Parsed TUF metadata files of the Foundries flavour (`Root`, `Timestamp`, `Snapshot`,
//! `Targets`, and the bundle's own `bundle-targets.json`).
//!
//! Parsing is separate from trust: an [`Envelope`] only says what a file claims; the
//! functions in `verify` decide whether to believe it.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

pub use super::envelope::{canonical_bound, Envelope, Signature, Unparsed};
use super::keys::PublicKey;

/// Why a file is not well-formed metadata (mapped to an exit code by the caller).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

pub(crate) fn bad(msg: impl Into<String>) -> Malformed {
    Malformed(msg.into())
}

pub(crate) fn check_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// `now` in the device's format, for string comparison with `expires`.
pub fn now_utc() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Keys and threshold of one role.
#[derive(Debug, Clone)]
pub struct Role {
    pub keyids: Vec<String>,
    pub threshold: u32,
}

#[derive(Debug, Clone)]
pub struct Root {
    pub version: u64,
    pub expires: String,
    pub keys: BTreeMap<String, PublicKey>,
    pub roles: BTreeMap<String, Role>,
}

pub const ROLES: [&str; 4] = ["root", "timestamp", "snapshot", "targets"];

impl Root {
    /// The root in `env`; call only once `env` is known to be signed by a trusted root (or
    /// is the device's own): this builds the whole of `signed`.
    pub fn from_envelope(env: &Envelope) -> Result<Root, Malformed> {
        if !env.type_name().eq_ignore_ascii_case("root") {
            return Err(bad(format!(
                "`_type` is {:?}, not \"Root\"",
                env.type_name()
            )));
        }
        let signed = env.signed_map()?;
        let keys_json = signed
            .get("keys")
            .and_then(Value::as_object)
            .ok_or_else(|| bad("no `signed.keys` object"))?;
        let mut keys = BTreeMap::new();
        for (id, entry) in keys_json {
            let k = PublicKey::from_json(entry).map_err(|e| bad(format!("key {id}: {e}")))?;
            keys.insert(id.clone(), k);
        }
        let roles_json = signed
            .get("roles")
            .and_then(Value::as_object)
            .ok_or_else(|| bad("no `signed.roles` object"))?;
        let mut roles = BTreeMap::new();
        for name in ROLES {
            let r = roles_json
                .get(name)
                .ok_or_else(|| bad(format!("no role `{name}`")))?;
            let keyids = r
                .get("keyids")
                .and_then(Value::as_array)
                .ok_or_else(|| bad(format!("role `{name}` has no `keyids` array")))?
                .iter()
                .map(|k| k.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad(format!("role `{name}` has a non-string key id")))?;
            let threshold = r
                .get("threshold")
                .and_then(Value::as_u64)
                .filter(|t| (1..=1000).contains(t))
                .ok_or_else(|| bad(format!("role `{name}` threshold is not in 1..1000")))?;
            roles.insert(
                name.to_string(),
                Role {
                    keyids,
                    threshold: threshold as u32,
                },
            );
        }
        Ok(Root {
            version: env.version()?,
            expires: env.expires()?,
            keys,
            roles,
        })
    }

    pub fn role(&self, name: &str) -> &Role {
        // Every root has the four roles: `from_envelope` refuses one that does not.
        &self.roles[name]
    }
}

/// `meta["x.json"]` of a timestamp or snapshot.
#[derive(Debug, Clone)]
pub struct MetaRef {
    pub version: u64,
    pub sha256: Option<String>,
    pub sha512: Option<String>,
    /// The length of the referenced file's canonical form, when stated.
    pub length: Option<u64>,
}

impl MetaRef {
    fn parse(env: &Envelope, file: &str, need_hashes: bool) -> Result<MetaRef, Malformed> {
        let signed = env.signed_map()?;
        let m = signed
            .get("meta")
            .and_then(|m| m.get(file))
            .ok_or_else(|| bad(format!("no `signed.meta[\"{file}\"]`")))?;
        let version = m
            .get("version")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad(format!("`meta[\"{file}\"].version` is not an integer")))?;
        let hash = |alg: &str| {
            m.get("hashes")
                .and_then(|h| h.get(alg))
                .and_then(Value::as_str)
                .map(str::to_ascii_lowercase)
        };
        let (sha256, sha512) = (hash("sha256"), hash("sha512"));
        if need_hashes && sha256.is_none() && sha512.is_none() {
            return Err(bad(format!(
                "`meta[\"{file}\"].hashes` has no sha256 or sha512"
            )));
        }
        let length = match m.get("length") {
            None => None,
            Some(l) => Some(l.as_u64().ok_or_else(|| {
                bad(format!(
                    "`meta[\"{file}\"].length` is not a non-negative integer"
                ))
            })?),
        };
        Ok(MetaRef {
            version,
            sha256,
            sha512,
            length,
        })
    }

    /// Does `env` (the referenced file) match every hash given here?
    pub fn hashes_match(&self, env: &Envelope) -> bool {
        self.sha256.as_deref().is_none_or(|h| h == env.sha256)
            && self.sha512.as_deref().is_none_or(|h| h == env.sha512)
    }
}

fn check_type(env: &Envelope, want: &str) -> Result<(), Malformed> {
    if env.type_name() == want {
        Ok(())
    } else {
        Err(bad(format!(
            "`_type` is {:?}, not {want:?}",
            env.type_name()
        )))
    }
}

/// The pin a timestamp holds on snapshot.json.
pub fn timestamp_snapshot_ref(env: &Envelope) -> Result<MetaRef, Malformed> {
    check_type(env, "Timestamp")?;
    MetaRef::parse(env, "snapshot.json", true)
}

/// The pin a snapshot holds on targets.json (hashes optional, as on the device).
pub fn snapshot_targets_ref(env: &Envelope) -> Result<MetaRef, Malformed> {
    check_type(env, "Snapshot")?;
    MetaRef::parse(env, "targets.json", false)
}

/// One entry of `targets.json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Target {
    pub name: String,
    /// For OSTree targets, the commit checksum.
    pub sha256: String,
    pub custom: Map<String, Value>,
}

impl Target {
    fn custom_str(&self, key: &str) -> Option<&str> {
        self.custom.get(key).and_then(Value::as_str)
    }

    /// What `custom.<key>` holds, for messages: a string quoted, else its kind and value.
    pub fn describe_custom(&self, key: &str) -> String {
        match self.custom.get(key) {
            None => "missing".into(),
            Some(Value::String(s)) => format!("{s:?}"),
            Some(Value::Number(n)) => format!("the number {n}"),
            Some(Value::Null) => "null".into(),
            Some(Value::Bool(b)) => format!("the boolean {b}"),
            Some(Value::Array(_)) => "an array".into(),
            Some(Value::Object(_)) => "an object".into(),
        }
    }

    pub fn target_format(&self) -> Option<&str> {
        self.custom_str("targetFormat")
    }

    pub fn version_str(&self) -> Option<&str> {
        self.custom_str("version")
    }

    /// `custom.version` as a plain decimal number (no sign, no `0x`, no leading zeros:
    /// the device parses with base 0, where those would change the value).
    pub fn version(&self) -> Option<u64> {
        let v = self.version_str()?;
        let plain = !v.is_empty()
            && v.bytes().all(|b| b.is_ascii_digit())
            && (v == "0" || !v.starts_with('0'));
        plain.then(|| v.parse().ok()).flatten()
    }

    pub fn hardware_ids(&self) -> Vec<&str> {
        self.str_list("hardwareIds")
    }

    pub fn tags(&self) -> Vec<&str> {
        self.str_list("tags")
    }

    fn str_list(&self, key: &str) -> Vec<&str> {
        self.custom
            .get(key)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    /// `custom.docker_compose_apps`: app name -> URI.
    pub fn apps(&self) -> BTreeMap<String, String> {
        self.custom
            .get("docker_compose_apps")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| {
                        let uri = v.get("uri")?.as_str()?;
                        Some((k.clone(), uri.to_string()))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The `targets` map of a `Targets` file, for a file whose signatures were checked (only
/// that member of `signed` is built).
pub fn targets(env: &Envelope) -> Result<Vec<Target>, Malformed> {
    #[derive(serde::Deserialize)]
    struct Signed {
        targets: Option<Value>,
    }
    check_type(env, "Targets")?;
    let Some(Value::Object(map)) = env.signed_as::<Signed>()?.targets else {
        return Err(bad("no `signed.targets` object"));
    };
    map.into_iter()
        .map(|(name, mut t)| {
            let sha256 = t
                .get("hashes")
                .and_then(|h| h.get("sha256"))
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("target {name:?} has no hashes.sha256")))?
                .to_ascii_lowercase();
            let custom = match t.get_mut("custom").map(Value::take) {
                Some(Value::Object(m)) => m,
                _ => Map::new(),
            };
            Ok(Target {
                name,
                sha256,
                custom,
            })
        })
        .collect()
}

/// `x-fio-offline-bundle` of `bundle-targets.json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BundleIndex {
    #[serde(rename = "type")]
    pub kind: String,
    pub tag: String,
    pub targets: Vec<String>,
}

pub fn bundle_index(env: &Envelope) -> Result<BundleIndex, Malformed> {
    let signed = env.signed_map()?;
    let b = signed
        .get("x-fio-offline-bundle")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no `signed.x-fio-offline-bundle` object"))?;
    let s = |k: &str| {
        b.get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| bad(format!("`x-fio-offline-bundle.{k}` is not a string")))
    };
    let targets = b
        .get("targets")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().map(|t| t.as_str().map(str::to_string)).collect())
        .ok_or_else(|| bad("`x-fio-offline-bundle.targets` is not a list of names"))?;
    Ok(BundleIndex {
        kind: s("type")?,
        tag: s("tag")?,
        targets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert!(check_timestamp("2030-01-01T00:00:00Z"));
        assert!(!check_timestamp("2030-01-01T00:00:00.5Z"));
        assert!(!check_timestamp("2030-01-01T00:00:00+00"));
        assert!(!check_timestamp("2030-01-01 00:00:00Z"));
        assert_eq!(now_utc().len(), 20);
    }

    #[test]
    fn versions_are_plain_decimal() {
        let t = |v: &str| Target {
            name: "t".into(),
            sha256: String::new(),
            custom: serde_json::json!({"version": v})
                .as_object()
                .unwrap()
                .clone(),
        };
        assert_eq!(t("42").version(), Some(42));
        assert_eq!(t("0").version(), Some(0));
        for v in ["010", "0x10", "-1", "1.5", "", "4 2", "v42"] {
            assert_eq!(t(v).version(), None, "{v}");
        }
    }

    #[test]
    fn envelope_shape_errors() {
        for (json, want) in [
            ("[]", "not a JSON object"),
            ("{\"signatures\":[]}", "no `signed`"),
            ("{\"signed\":{},\"signatures\":{}}", "not an array"),
            (
                "{\"signed\":{},\"signatures\":[{\"keyid\":\"a\",\"sig\":\"\"}]}",
                "`method`",
            ),
            ("{\"signed\":{\"v\":1.5},\"signatures\":[]}", "non-integral"),
        ] {
            let e = Envelope::parse(json.as_bytes()).unwrap_err();
            assert!(e.0.contains(want), "{json}: {e}");
        }
    }
}
