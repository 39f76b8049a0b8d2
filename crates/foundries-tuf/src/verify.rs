//! The trust decisions: signatures and thresholds, root rotation, the
//! timestamp -> snapshot -> targets chain, and the bundle index (`bundle-targets.json`).
//!
//! Exit codes follow aktualizr-lite where it has one: a signature, threshold, version link,
//! hash or rollback problem is a security error (11); expiry is 12; a missing file 14; a
//! role file that is not well-formed metadata 4; anything wrong with `bundle-targets.json`
//! 15. Each error message names the file.

use std::collections::{BTreeMap, BTreeSet};

use super::clock::{self, Clock};
use super::keys::PublicKey;
use super::meta::{self, BundleIndex, Envelope, Root, Target};
use crate::error::{Error, Result};

/// Where metadata files come from (the bundle's `tuf/` read into memory, or any directory
/// in tests).
pub trait MetaSource {
    /// The file's bytes, `None` if it does not exist. Size caps and path safety are the
    /// source's business.
    fn read(&self, name: &str) -> Result<Option<&[u8]>>;
    /// The versions `N` of every `N.root.json` present.
    fn root_versions(&self) -> Result<Vec<u64>>;
}

/// What the device already trusts before it looks at the bundle.
#[derive(Debug, Clone)]
pub struct Trust {
    pub root: Root,
    /// Every root of the device's chain, oldest first, with where it came from.
    pub chain: Vec<RootStep>,
    /// Versions of the timestamp/snapshot/targets stored by an earlier update.
    pub stored: StoredVersions,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StoredVersions {
    pub timestamp: Option<u64>,
    pub snapshot: Option<u64>,
    pub targets: Option<u64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RootStep {
    pub version: u64,
    pub expires: String,
    pub source: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RoleInfo {
    pub version: u64,
    pub expires: String,
}

/// What the device identity contributes to the bundle-index checks.
pub struct BundleRules<'a> {
    /// `ci` / `prod`, or `None` when the device type is undefined (check skipped).
    pub device_type: Option<&'a str>,
    /// Tags the bundle's tag must be one of; empty: any tag.
    pub allowed_tags: &'a [String],
    /// Refuse a bundle without `bundle-targets.json`.
    pub require_index: bool,
}

/// A bundle whose metadata passed every check.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verified {
    /// The device's chain followed by the roots the bundle added.
    pub roots: Vec<RootStep>,
    pub timestamp: RoleInfo,
    pub snapshot: RoleInfo,
    pub targets_role: RoleInfo,
    pub bundle: Option<BundleInfo>,
    pub targets: Vec<Target>,
    /// Files to persist once an install succeeds (roots the bundle added, then the three
    /// top-level roles), in canonical form (never the bytes of the stick), never by `check`.
    #[serde(skip)]
    pub to_store: Vec<(String, Vec<u8>)>,
    #[serde(skip)]
    pub root: Root,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BundleInfo {
    #[serde(flatten)]
    pub index: BundleIndex,
    pub version: u64,
    pub expires: String,
}

/// Does a threshold of `role`'s keys in `root` sign `env`? Key ids are labels; a key id
/// listed twice counts once; signatures by keys outside the role are ignored; a method the
/// device does not know refuses the file (as the device does, even for unknown keys).
pub fn check_role_signatures(env: &Envelope, root: &Root, role: &str, file: &str) -> Result<()> {
    let r = root.role(role);
    let mut seen = BTreeSet::new();
    let mut valid = 0u32;
    for s in &env.signatures {
        if s.method.is_none() {
            return Err(Error::security(format!(
                "{file}: signature method {:?} is not accepted",
                s.method_name
            )));
        }
        if !r.keyids.contains(&s.keyid) || !seen.insert(s.keyid.as_str()) {
            continue;
        }
        let (Some(key), Some(sig)) = (root.keys.get(&s.keyid), s.sig.as_deref()) else {
            continue;
        };
        if key.verify(env.signed_bytes(), sig) {
            valid += 1;
        }
    }
    if valid < r.threshold {
        return Err(Error::security(format!(
            "{file}: {valid} valid signature(s) by {role} keys of root v{}, {} required",
            root.version, r.threshold
        )));
    }
    Ok(())
}

fn parse(bytes: &[u8], file: &str) -> Result<Envelope> {
    Envelope::parse(bytes).map_err(|e| Error::metadata_update(format!("{file}: {e}")))
}

/// Parse a file pinned by `pin`: its canonical form may not be longer than the length the
/// pin states (checked on the bytes first, with room for pretty-printing, then while the
/// canonical form is produced), so a file that a signed pin does not allow is refused
/// before it costs more than a few times the stated length.
fn parse_pinned(bytes: &[u8], file: &str, pin: Option<(&meta::MetaRef, &str)>) -> Result<Envelope> {
    let Some((length, by)) = pin.and_then(|(p, by)| Some((p.length?, by))) else {
        return parse(bytes, file);
    };
    let stated = usize::try_from(length).unwrap_or(usize::MAX);
    let room = stated.saturating_mul(PRETTY_ROOM).saturating_add(64 << 10);
    let too_long = || {
        Error::security(format!(
            "{file}: longer than the {length} bytes that {by} states for it"
        ))
    };
    if bytes.len() > room {
        return Err(too_long());
    }
    let budget = stated.min(meta::canonical_bound(bytes.len()));
    Envelope::parse_within(bytes, budget).map_err(|e| match e {
        meta::Unparsed::TooLong(_) => too_long(),
        meta::Unparsed::Malformed(e) => Error::metadata_update(format!("{file}: {e}")),
    })
}

/// How much longer than its canonical form a pinned file may be on the stick: fioctl writes
/// the canonical form itself, other servers pretty-print (1.4 times for ota-tuf's).
const PRETTY_ROOM: usize = 4;

fn malformed(file: &str) -> impl Fn(meta::Malformed) -> Error + '_ {
    move |e| Error::metadata_update(format!("{file}: {e}"))
}

/// Check `env` (claiming to be root `old.version + 1`) against the trusted `old` root.
/// Nothing of `signed` beyond its header is built before the old root's keys vouched for it.
pub fn rotate(old: &Root, env: &Envelope, file: &str) -> Result<Root> {
    if !env.type_name().eq_ignore_ascii_case("root") {
        return Err(Error::security(format!(
            "{file}: signed as {:?}, not as a Root",
            env.type_name()
        )));
    }
    let version = env.version().map_err(malformed(file))?;
    if Some(version) != old.version.checked_add(1) {
        return Err(Error::security(format!(
            "{file}: root version {version} does not follow trusted root v{} (must be exactly one up)",
            old.version
        )));
    }
    check_role_signatures(env, old, "root", file)?;
    let new = Root::from_envelope(env).map_err(malformed(file))?;
    check_role_signatures(env, &new, "root", file)?;
    Ok(new)
}

/// A trust anchor read from the device's own image: well-formed and self-signed.
pub fn anchor(env: &Envelope, file: &str) -> Result<Root> {
    let root = Root::from_envelope(env).map_err(malformed(file))?;
    check_role_signatures(env, &root, "root", file)?;
    Ok(root)
}

fn rollback_check(file: &str, bundle: u64, stored: Option<u64>) -> Result<()> {
    match stored {
        Some(s) if s > bundle => Err(Error::security(format!(
            "{file}: version {bundle} is older than the device's version {s}: \
             the bundle's TUF metadata is outdated, make a newer bundle"
        ))),
        _ => Ok(()),
    }
}

fn read_required<'a>(src: &'a dyn MetaSource, file: &str) -> Result<&'a [u8]> {
    src.read(file)?
        .ok_or_else(|| Error::not_found(format!("tuf/{file}: missing from the bundle")))
}

fn expect_type(env: &Envelope, want: &str, file: &str) -> Result<()> {
    if env.type_name() != want {
        return Err(Error::security(format!(
            "{file}: signed as {:?}, not as {want:?}",
            env.type_name()
        )));
    }
    Ok(())
}

/// Verify the bundle's metadata from the device's trust, as a device would before using it.
/// `clock`: the device time (a `&str` will do), with the image's build date when known, for
/// the verdict of an expiry error.
pub fn verify_bundle<'c>(
    trust: &Trust,
    src: &dyn MetaSource,
    rules: &BundleRules,
    clock: impl Into<Clock<'c>>,
) -> Result<Verified> {
    let clock = clock.into();
    let mut roots = trust.chain.clone();
    let mut root = trust.root.clone();
    let mut to_store = Vec::new();
    // Freshness is judged after integrity: a forged or inconsistent chain is reported as
    // the security error it is, whatever the clock says.
    let mut expiries: Vec<(&str, String, String)> = Vec::new();

    // Roots: walk from the device's version; a bundle whose newest root is older than the
    // device's was made before the last rotation and is refused outright.
    let versions = src.root_versions()?;
    if let Some(&newest) = versions.iter().max() {
        if newest < root.version {
            return Err(Error::security(format!(
                "tuf/{newest}.root.json: the bundle's newest root is older than the device's \
                 root v{}: the bundle's TUF metadata is outdated, make a newer bundle",
                root.version
            )));
        }
    }
    loop {
        let file = format!("{}.root.json", root.version + 1);
        let Some(bytes) = src.read(&file)? else { break };
        let env = parse(bytes, &file)?;
        root = rotate(&root, &env, &file)?;
        roots.push(RootStep {
            version: root.version,
            expires: root.expires.clone(),
            source: format!("bundle tuf/{file}"),
        });
        to_store.push((file, env.into_canonical()));
    }
    if let Some(v) = versions.iter().find(|&&v| v > root.version) {
        return Err(Error::security(format!(
            "tuf/{v}.root.json: the bundle's root chain has a gap after root v{}",
            root.version
        )));
    }
    expiries.push((
        "root",
        format!("root v{}", root.version),
        root.expires.clone(),
    ));
    let stored = stored_still_valid(trust, &root);

    let bundle = verify_index(&root, src, rules)?;
    if let Some(b) = &bundle {
        expiries.push(("bundle", "bundle-targets.json".into(), b.expires.clone()));
    }

    // Timestamp, then snapshot pinned by it, then targets pinned by the snapshot.
    let st = &stored;
    let ts = role_file(src, &root, ("timestamp", "Timestamp"), None, st.timestamp)?;
    let snap_ref = meta::timestamp_snapshot_ref(&ts.env).map_err(malformed(ts.file))?;
    let sn = role_file(
        src,
        &root,
        ("snapshot", "Snapshot"),
        Some((&snap_ref, ts.file)),
        st.snapshot,
    )?;
    let tg_ref = meta::snapshot_targets_ref(&sn.env).map_err(malformed(sn.file))?;
    let tg = role_file(
        src,
        &root,
        ("targets", "Targets"),
        Some((&tg_ref, sn.file)),
        st.targets,
    )?;
    let targets = meta::targets(&tg.env).map_err(malformed(tg.file))?;
    for r in [&ts, &sn, &tg] {
        expiries.push((r.role, r.file.into(), r.info.expires.clone()));
    }
    let horizon = expiries
        .iter()
        .map(|e| e.2.as_str())
        .max()
        .unwrap_or_default();
    for (role, file, expires) in &expiries {
        if expires.as_str() < clock.now {
            return Err(clock::expired(file, role, expires, &clock, horizon));
        }
    }

    let (timestamp, snapshot, targets_role) = (ts.info.clone(), sn.info.clone(), tg.info.clone());
    for r in [ts, sn, tg] {
        to_store.push((r.file.to_string(), r.env.into_canonical()));
    }
    Ok(Verified {
        roots,
        timestamp,
        snapshot,
        targets_role,
        bundle,
        targets,
        to_store,
        root,
    })
}

/// Do roots `a` and `b` give `role` the same keys (ids and key material)?
fn same_keys(a: &Root, b: &Root, role: &str) -> bool {
    let keys = |r: &'_ Root| -> BTreeMap<String, Option<PublicKey>> {
        r.role(role)
            .keyids
            .iter()
            .map(|id| (id.clone(), r.keys.get(id).cloned()))
            .collect()
    };
    keys(a) == keys(b)
}

/// The stored versions that still bind the bundle under `root`, the newest root. When the
/// timestamp or snapshot keys changed since the device's root, the stored versions are
/// discarded (TUF 1.0, 5.3.11): that is how a repository recovers from a stolen key that
/// fast-forwarded them (a timestamp at version 2^64-1 would refuse every later bundle).
/// The stored targets version goes with them: it was pinned by the discarded snapshot.
fn stored_still_valid(trust: &Trust, root: &Root) -> StoredVersions {
    let rotated: Vec<&str> = ["timestamp", "snapshot"]
        .into_iter()
        .filter(|role| !same_keys(&trust.root, root, role))
        .collect();
    if rotated.is_empty() {
        return trust.stored.clone();
    }
    tracing::warn!(
        "root v{} rotated the {} keys: the device's stored timestamp, snapshot and targets \
         versions no longer apply",
        root.version,
        rotated.join(" and ")
    );
    StoredVersions::default()
}

/// One of the three top-level role files, checked except for expiry (done last).
struct RoleFile {
    role: &'static str,
    file: &'static str,
    env: Envelope,
    info: RoleInfo,
}

/// Read `<role>.json`; check `_type`, the hash pinned by the file before it in the chain,
/// the role's signatures, the version link to that pin, and rollback against the device.
fn role_file(
    src: &dyn MetaSource,
    root: &Root,
    (role, type_name): (&'static str, &str),
    pin: Option<(&meta::MetaRef, &str)>,
    stored: Option<u64>,
) -> Result<RoleFile> {
    let file = match role {
        "timestamp" => "timestamp.json",
        "snapshot" => "snapshot.json",
        _ => "targets.json",
    };
    let bytes = read_required(src, file)?;
    let env = parse_pinned(bytes, file, pin)?;
    expect_type(&env, type_name, file)?;
    if let Some((p, by)) = pin {
        if !p.hashes_match(&env) {
            return Err(Error::security(format!(
                "{file}: hash does not match the one in {by}"
            )));
        }
    }
    check_role_signatures(&env, root, role, file)?;
    let info = role_info(&env, file)?;
    if let Some((p, by)) = pin {
        link_check(file, info.version, by, p.version)?;
    }
    rollback_check(file, info.version, stored)?;
    Ok(RoleFile {
        role,
        file,
        env,
        info,
    })
}

fn role_info(env: &Envelope, file: &str) -> Result<RoleInfo> {
    Ok(RoleInfo {
        version: env.version().map_err(malformed(file))?,
        expires: env.expires().map_err(malformed(file))?,
    })
}

fn link_check(file: &str, version: u64, by: &str, pinned: u64) -> Result<()> {
    if version != pinned {
        return Err(Error::security(format!(
            "{file}: version {version} does not match version {pinned} pinned by {by}"
        )));
    }
    Ok(())
}

/// `bundle-targets.json`: stricter than TUF roles, as on the device: every signature must
/// be by a targets key and valid; then expiry, device type and tag.
fn verify_index(
    root: &Root,
    src: &dyn MetaSource,
    rules: &BundleRules,
) -> Result<Option<BundleInfo>> {
    let file = "bundle-targets.json";
    let Some(bytes) = src.read(file)? else {
        if rules.require_index {
            return Err(Error::not_found(format!(
                "tuf/{file}: missing, and the policy requires it (make the bundle with fioctl >= v0.42)"
            )));
        }
        return Ok(None);
    };
    let invalid = |m: String| Error::invalid_bundle(format!("{file}: {m}"));
    let env = Envelope::parse(bytes).map_err(|e| invalid(e.to_string()))?;
    if env.type_name() != "Targets" {
        return Err(invalid(format!(
            "signed as {:?}, not as \"Targets\"",
            env.type_name()
        )));
    }
    let role = root.role("targets");
    let mut distinct = BTreeSet::new();
    for s in &env.signatures {
        if s.method.is_none() {
            return Err(invalid(format!(
                "signature method {:?} is not accepted",
                s.method_name
            )));
        }
        let key = role
            .keyids
            .contains(&s.keyid)
            .then(|| root.keys.get(&s.keyid))
            .flatten()
            .ok_or_else(|| invalid(format!("signed with an unknown key {}", s.keyid)))?;
        let ok = s
            .sig
            .as_deref()
            .is_some_and(|sig| key.verify(env.signed_bytes(), sig));
        if !ok {
            return Err(invalid(format!("bad signature by key {}", s.keyid)));
        }
        distinct.insert(s.keyid.as_str());
    }
    if (distinct.len() as u32) < role.threshold {
        return Err(invalid(format!(
            "{} distinct valid signature(s) by targets keys of root v{}, {} required",
            distinct.len(),
            root.version,
            role.threshold
        )));
    }
    let info = RoleInfo {
        version: env.version().map_err(|e| invalid(e.to_string()))?,
        expires: env.expires().map_err(|e| invalid(e.to_string()))?,
    };
    let index = meta::bundle_index(&env).map_err(|e| invalid(e.to_string()))?;
    if let Some(dt) = rules.device_type {
        if index.kind != dt {
            return Err(invalid(format!(
                "bundle type {:?} does not match this {dt} device",
                index.kind
            )));
        }
    }
    if !rules.allowed_tags.is_empty() && !rules.allowed_tags.contains(&index.tag) {
        return Err(invalid(format!(
            "bundle tag {:?} is not one of the allowed tags {:?}",
            index.tag, rules.allowed_tags
        )));
    }
    Ok(Some(BundleInfo {
        index,
        version: info.version,
        expires: info.expires,
    }))
}
