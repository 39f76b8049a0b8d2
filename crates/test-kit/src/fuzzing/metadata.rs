//! Metadata through the whole verifier: a genuinely signed bundle (roots 2 and 3, root 3
//! rotating the timestamp key; timestamp, snapshot, targets with apps, bundle-targets) from
//! the test kit's keys, one file of it replaced by the input, and the device's situation
//! (stored versions, clock, tags, type) chosen by the input.
//!
//! Input: `[op] [env] payload`. `op & 7` picks the file, `op >> 3 & 3` what is done with
//! the payload: 0 it is the file's bytes; 1 it is the file's `signed`, signed again with
//! the right keys (both roots' for a root), so the checks past the signatures run on it;
//! 2 the same, then snapshot and timestamp pinned to the result again and re-signed; 3 the
//! file is removed. `env` sets the clock (bits 0-1), the stored versions (2-3), the allowed
//! tags (4-5), the device type (6) and whether bundle-targets.json is required (7).
//!
//! What must hold: no panic; a refusal has a metadata exit code (4, 11, 12, 14, 15) and a
//! one-line reason; an acceptance has every role unexpired, roots one version apart, the
//! files to store in canonical form, and no version older than the device's stored one
//! unless the newest root changed the timestamp or snapshot keys. Raw payloads are also
//! canonicalised both ways (bytes to canonical form; parsed value to canonical form), which
//! must agree wherever the strict parse accepts.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::Value;

use crate::gen::{self, tuf as gt, Factory, PrivateKey, Role, TargetSpec, FAR_FUTURE};
use foundries_tuf::verify::{anchor, RootStep, StoredVersions};
use foundries_tuf::{canonical, meta, strict, verify_bundle, BundleRules, Trust};
use usb_update::core::tufdir::TufDir;
use usb_update::error::Code;

/// The files a fuzz input can replace, in `op & 7` order (6 and 7 wrap around).
pub const FILES: [&str; 6] = [
    "2.root.json",
    "3.root.json",
    "timestamp.json",
    "snapshot.json",
    "targets.json",
    "bundle-targets.json",
];

struct Kit {
    factory: Factory,
    /// File -> its envelope as a value (what edits start from).
    envelopes: BTreeMap<String, Value>,
    trust_root: foundries_tuf::Root,
}

fn kit() -> &'static Kit {
    static KIT: OnceLock<Kit> = OnceLock::new();
    KIT.get_or_init(|| build_kit().expect("the fuzz kit builds from fixed keys"))
}

fn build_kit() -> anyhow::Result<Kit> {
    let mut f = Factory::named("fuzz")?;
    f.rotate_root()?;
    let mut spec = f.next_root_spec();
    spec.timestamp = gen::RoleKeys::single(f.fresh_key());
    f.push_root(spec)?;
    let commit = |v: &str| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(v.as_bytes()));
    let targets = vec![
        TargetSpec::new(gen::DEFAULT_HWID, "2", &commit("2")).with_app(
            "app-01",
            &format!("hub.foundries.io/fuzz/app-01@sha256:{}", commit("app")),
        ),
        TargetSpec::new(gen::DEFAULT_HWID, "3", &commit("3")).with_tags(&["main"]),
    ];
    let names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
    let signed_by = |role| f.signers(role);
    let tg = gt::sign(
        gt::targets_signed(2, FAR_FUTURE, &targets),
        &signed_by(Role::Targets),
    )?;
    let sn = gt::sign(
        gt::snapshot_signed(2, FAR_FUTURE, &gt::to_bytes(&tg)?, 2),
        &signed_by(Role::Snapshot),
    )?;
    let ts = gt::sign(
        gt::timestamp_signed(2, FAR_FUTURE, &gt::to_bytes(&sn)?, 2),
        &signed_by(Role::Timestamp),
    )?;
    let bt = gt::sign(
        gt::bundle_targets_signed(1, FAR_FUTURE, "ci", "devel", &names),
        &signed_by(Role::Targets),
    )?;
    let mut envelopes = BTreeMap::new();
    for v in [2, 3] {
        let root = f
            .root(v)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("root {v}"))?;
        envelopes.insert(format!("{v}.root.json"), root);
    }
    envelopes.insert("timestamp.json".into(), ts);
    envelopes.insert("snapshot.json".into(), sn);
    envelopes.insert("targets.json".into(), tg);
    envelopes.insert("bundle-targets.json".into(), bt);
    let root1 = f
        .root(1)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("root 1"))?;
    let env = meta::Envelope::from_value(root1).map_err(|e| anyhow::anyhow!(e))?;
    let trust_root = anchor(&env, "1.root.json").map_err(|e| anyhow::anyhow!(e.msg))?;
    Ok(Kit {
        factory: f,
        envelopes,
        trust_root,
    })
}

/// Who signs `file` in the kit: both roots for a rotation, the newest root's role keys
/// for the rest.
fn signers<'a>(f: &'a Factory, file: &str) -> Vec<&'a PrivateKey> {
    let role = match file {
        "timestamp.json" => Role::Timestamp,
        "snapshot.json" => Role::Snapshot,
        "targets.json" | "bundle-targets.json" => Role::Targets,
        _ => {
            let v: u64 = file
                .strip_suffix(".root.json")
                .and_then(|n| n.parse().ok())
                .unwrap_or(2);
            let mut keys: Vec<&PrivateKey> = Vec::new();
            for spec in [f.spec_at(v - 1), f.spec_at(v)].into_iter().flatten() {
                keys.extend(spec.root.keys.iter().map(|k| k.as_ref()));
            }
            return keys;
        }
    };
    f.signers(role)
}

/// `file` re-pinned in `by` (snapshot pins targets, timestamp pins snapshot).
fn repin(files: &mut BTreeMap<String, Vec<u8>>, f: &Factory, file: &str, by: &str) {
    let (Some(bytes), Some(by_bytes)) = (files.get(file), files.get(by)) else {
        return;
    };
    let Ok(value) = serde_json::from_slice::<Value>(bytes) else {
        return;
    };
    let Ok(canon) = canonical::to_vec(&value) else {
        return;
    };
    let version = value["signed"]["version"].as_u64().unwrap_or(0);
    let Ok(mut env) = serde_json::from_slice::<Value>(by_bytes) else {
        return;
    };
    env["signed"]["meta"][file] = gt::meta_entry(&canon, version);
    if let Ok(v) = gt::resign(&env, &signers(f, by)).and_then(|v| gt::to_bytes(&v)) {
        files.insert(by.to_string(), v);
    }
}

/// The check of one fuzz input (see the module doc).
pub fn check(data: &[u8]) {
    let [op, env, payload @ ..] = data else {
        return;
    };
    let k = kit();
    let file = FILES[usize::from(op & 7) % FILES.len()];
    let mut files: BTreeMap<String, Vec<u8>> = k
        .envelopes
        .iter()
        .filter_map(|(n, v)| Some((n.clone(), gt::to_bytes(v).ok()?)))
        .collect();
    match (op >> 3) & 3 {
        0 => {
            canonical_forms_agree(payload);
            files.insert(file.into(), payload.to_vec());
        }
        3 => {
            files.remove(file);
        }
        mode => {
            let Ok(signed @ Value::Object(_)) = serde_json::from_slice::<Value>(payload) else {
                return;
            };
            let Ok(bytes) =
                gt::sign(signed, &signers(&k.factory, file)).and_then(|v| gt::to_bytes(&v))
            else {
                return;
            };
            files.insert(file.into(), bytes);
            if mode == 2 {
                repin(&mut files, &k.factory, "targets.json", "snapshot.json");
                repin(&mut files, &k.factory, "snapshot.json", "timestamp.json");
            }
        }
    }
    verify(k, files, *env);
}

fn verify(k: &Kit, files: BTreeMap<String, Vec<u8>>, env: u8) {
    let now = [
        "2000-01-01T00:00:00Z",
        "2030-06-01T12:00:00Z",
        "2099-06-01T00:00:00Z",
        "2050-01-01T00:00:00Z",
    ][usize::from(env & 3)];
    let stored = match (env >> 2) & 3 {
        0 => StoredVersions::default(),
        1 => StoredVersions {
            timestamp: Some(2),
            snapshot: Some(2),
            targets: Some(2),
        },
        2 => StoredVersions {
            timestamp: Some(3),
            snapshot: Some(1),
            targets: Some(1),
        },
        _ => StoredVersions {
            timestamp: Some(u64::MAX),
            snapshot: None,
            targets: None,
        },
    };
    let tags: Vec<String> = match (env >> 4) & 3 {
        0 => vec!["devel".into()],
        1 => vec!["main".into()],
        _ => Vec::new(),
    };
    let rules = BundleRules {
        device_type: (env & 0x40 != 0).then_some("ci"),
        allowed_tags: &tags,
        require_index: env & 0x80 != 0,
    };
    let trust = Trust {
        root: k.trust_root.clone(),
        chain: vec![RootStep {
            version: 1,
            expires: k.trust_root.expires.clone(),
            source: "fuzz".into(),
        }],
        stored: stored.clone(),
    };
    let tuf = TufDir::from_files(files);
    match verify_bundle(&trust, &tuf, &rules, now) {
        Err(e) => {
            // As the device reports it: the kind's exit code and one line.
            let e = usb_update::Error::from(e);
            let allowed = [
                Code::MetadataUpdate,
                Code::Security,
                Code::Expired,
                Code::MetadataNotFound,
                Code::InvalidBundle,
            ];
            assert!(
                allowed.contains(&e.code()),
                "code {}: {}",
                e.code(),
                e.one_line()
            );
            assert!(!e.one_line().contains('\n'), "{:?}", e.one_line());
        }
        Ok(v) => {
            for (name, expires) in [
                ("timestamp", &v.timestamp.expires),
                ("snapshot", &v.snapshot.expires),
                ("targets", &v.targets_role.expires),
                ("root", &v.root.expires),
            ] {
                assert!(
                    expires.as_str() >= now,
                    "{name} expired at {expires}, now {now}"
                );
            }
            for w in v.roots.windows(2) {
                assert_eq!(w[0].version + 1, w[1].version, "root chain {:?}", v.roots);
            }
            for (name, bytes) in &v.to_store {
                let c = strict::canonicalize(bytes, bytes.len()).expect("stored bytes parse");
                assert_eq!(&c.bytes, bytes, "{name} is not stored in canonical form");
            }
            let same = |role: &str| {
                let keys = |r: &foundries_tuf::Root| {
                    r.role(role)
                        .keyids
                        .iter()
                        .map(|id| (id.clone(), r.keys.get(id).cloned()))
                        .collect::<Vec<_>>()
                };
                let (mut a, mut b) = (keys(&k.trust_root), keys(&v.root));
                a.sort_by(|x, y| x.0.cmp(&y.0));
                b.sort_by(|x, y| x.0.cmp(&y.0));
                a == b
            };
            if same("timestamp") && same("snapshot") {
                for (got, was) in [
                    (v.timestamp.version, stored.timestamp),
                    (v.snapshot.version, stored.snapshot),
                    (v.targets_role.version, stored.targets),
                ] {
                    assert!(was.is_none_or(|w| got >= w), "rollback: {got} < {was:?}");
                }
            }
        }
    }
}

/// Bytes to canonical form and value to canonical form agree wherever the strict parse
/// accepts the bytes; it refuses only what the value writer cannot tell (duplicates) or
/// also refuses.
fn canonical_forms_agree(data: &[u8]) {
    let strict = strict::canonicalize(data, meta::canonical_bound(data.len()));
    let value = serde_json::from_slice::<Value>(data);
    match (strict, value) {
        (Ok(c), Ok(v)) => {
            let via_value = canonical::to_vec(&v).expect("a value the strict parse took");
            assert_eq!(c.bytes, via_value, "the two canonical forms differ");
            let again = strict::canonicalize(&c.bytes, c.bytes.len()).expect("a fixed point");
            assert_eq!(again.bytes, c.bytes);
        }
        (Ok(_), Err(e)) => panic!("strict took what serde_json refuses: {e}"),
        (Err(strict::StrictError::TooLarge(_)), _) => panic!("the bound is too small"),
        (Err(_), _) => {}
    }
}

/// Seeds: each file genuine in each mode, and the whole genuine set under each situation.
pub fn seeds() -> Vec<Vec<u8>> {
    let k = kit();
    let mut out = Vec::new();
    for (i, file) in FILES.iter().enumerate() {
        let Some(env) = k.envelopes.get(*file) else {
            continue;
        };
        let i = i as u8;
        if let Ok(bytes) = gt::to_bytes(env) {
            out.push([&[i, 0x05][..], &bytes].concat());
        }
        if let Ok(signed) = gt::to_bytes(&env["signed"]) {
            out.push([&[i | 0x08, 0x41][..], &signed].concat());
            out.push([&[i | 0x10, 0x86][..], &signed].concat());
        }
        out.push(vec![i | 0x18, 0x01]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn genuine() -> TufDir {
        TufDir::from_files(
            kit()
                .envelopes
                .iter()
                .map(|(n, v)| (n.clone(), gt::to_bytes(v).unwrap()))
                .collect(),
        )
    }

    /// The kit is genuine: the verifier accepts it, so the fuzzer starts past every check.
    #[test]
    fn the_kit_verifies_and_its_rotation_discards_a_fast_forward() {
        let k = kit();
        let tags = vec!["devel".to_string()];
        let rules = BundleRules {
            device_type: Some("ci"),
            allowed_tags: &tags,
            require_index: true,
        };
        let mut trust = Trust {
            root: k.trust_root.clone(),
            chain: Vec::new(),
            stored: StoredVersions {
                timestamp: Some(u64::MAX),
                snapshot: Some(u64::MAX),
                targets: Some(u64::MAX),
            },
        };
        let v = verify_bundle(&trust, &genuine(), &rules, "2030-01-01T00:00:00Z").unwrap();
        assert_eq!(v.root.version, 3);
        assert_eq!(v.targets.len(), 2);
        // Root 3 rotated the timestamp key: the stored versions were discarded.
        assert_eq!(v.timestamp.version, 2);
        trust.stored = StoredVersions::default();
        assert!(verify_bundle(&trust, &genuine(), &rules, "2030-01-01T00:00:00Z").is_ok());
    }
}
