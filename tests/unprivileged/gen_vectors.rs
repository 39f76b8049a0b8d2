//! The generator against the worked example of docs/bundle-format.md (byte for byte) and
//! the on-disk layout described there.

use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use test_kit::gen::{self, tuf, AppSpec, BundleSpec, Factory, PrivateKey, Role, TargetSpec};
use usb_update::tuf::keys::{decode_sig, PublicKey};

// The worked example, verbatim: each is the exact file content, no trailing newline.
const ROOT1: &str = include_str!("../fixtures/reference-2.7/1.root.json");
const ROOT2: &str = include_str!("../fixtures/reference-2.7/2.root.json");
const TARGETS: &str = include_str!("../fixtures/reference-2.7/targets.json");
const SNAPSHOT: &str = include_str!("../fixtures/reference-2.7/snapshot.json");
const TIMESTAMP: &str = include_str!("../fixtures/reference-2.7/timestamp.json");
const BUNDLE_TARGETS: &str = include_str!("../fixtures/reference-2.7/bundle-targets.json");

const EXPIRES: &str = "2030-01-01T00:00:00Z";

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn key_a() -> Arc<PrivateKey> {
    Arc::new(PrivateKey::ed25519_from_seed(std::array::from_fn(|i| {
        i as u8
    })))
}

fn key_b() -> Arc<PrivateKey> {
    Arc::new(PrivateKey::ed25519_from_seed(std::array::from_fn(|i| {
        0x20 + i as u8
    })))
}

fn all_roles(version: u64, root: &Arc<PrivateKey>, others: &Arc<PrivateKey>) -> tuf::RootSpec {
    tuf::RootSpec {
        version,
        expires: EXPIRES.into(),
        root: tuf::RoleKeys::single(root.clone()),
        timestamp: tuf::RoleKeys::single(others.clone()),
        snapshot: tuf::RoleKeys::single(others.clone()),
        targets: tuf::RoleKeys::single(others.clone()),
    }
}

fn text(v: &Value) -> String {
    String::from_utf8(tuf::to_bytes(v).unwrap()).unwrap()
}

#[test]
fn reference_vectors_byte_for_byte() {
    let (a, b) = (key_a(), key_b());
    assert_eq!(
        a.key_id(),
        "a050837d85070582ccf7394b0988847cc312cb88259b894899f6f239cf1791a5"
    );
    assert_eq!(
        b.key_id(),
        "824c89aa8efb95ef93629b4519599129cace4adac9a6180daba31ceed41ecee6"
    );

    let root1 = tuf::sign(tuf::root_signed(&all_roles(1, &a, &a)), &[&a]).unwrap();
    assert_eq!(text(&root1), ROOT1);
    let root2 = tuf::sign(tuf::root_signed(&all_roles(2, &b, &a)), &[&a, &b]).unwrap();
    assert_eq!(text(&root2), ROOT2);

    let commit = sha256_hex(b"example-ostree-commit");
    let app = format!(
        "hub.foundries.io/factory/app-01@sha256:{}",
        sha256_hex(b"app-01")
    );
    let target = TargetSpec::new("intel-corei7-64", "42", &commit).with_app("app-01", &app);
    assert_eq!(target.name, "intel-corei7-64-lmp-42");
    let targets = tuf::sign(
        tuf::targets_signed(42, EXPIRES, std::slice::from_ref(&target)),
        &[&a],
    )
    .unwrap();
    assert_eq!(text(&targets), TARGETS);

    let targets_bytes = tuf::to_bytes(&targets).unwrap();
    let snapshot = tuf::sign(tuf::snapshot_signed(42, EXPIRES, &targets_bytes, 42), &[&a]).unwrap();
    assert_eq!(text(&snapshot), SNAPSHOT);
    let snapshot_bytes = tuf::to_bytes(&snapshot).unwrap();
    let timestamp = tuf::sign(
        tuf::timestamp_signed(42, EXPIRES, &snapshot_bytes, 42),
        &[&a],
    )
    .unwrap();
    assert_eq!(text(&timestamp), TIMESTAMP);

    let bt_signed = tuf::bundle_targets_signed(42, EXPIRES, "ci", "devel", &[target.name]);
    assert_eq!(
        text(&bt_signed),
        r#"{"_type":"Targets","expires":"2030-01-01T00:00:00Z","version":42,"x-fio-offline-bundle":{"tag":"devel","targets":["intel-corei7-64-lmp-42"],"type":"ci"}}"#
    );
    assert_eq!(text(&tuf::sign(bt_signed, &[&a]).unwrap()), BUNDLE_TARGETS);

    // Lengths and hashes the worked example states.
    let lens = [
        (ROOT1, 919),
        (ROOT2, 1288),
        (TARGETS, 761),
        (SNAPSHOT, 424),
        (TIMESTAMP, 426),
        (BUNDLE_TARGETS, 372),
    ];
    for (file, len) in lens {
        assert_eq!(file.len(), len);
    }
    assert!(sha256_hex(ROOT1.as_bytes()).starts_with("f43b9faf"));
    assert!(sha256_hex(ROOT1.as_bytes()).ends_with("3ed10"));
    assert!(sha256_hex(ROOT2.as_bytes()).starts_with("cc8c2861"));
    assert!(sha256_hex(ROOT2.as_bytes()).ends_with("23773"));
    assert_eq!(
        sha256_hex(TARGETS.as_bytes()),
        "8a4ec9a7946598ced6523cd3ae4bd4ad2fa7b1f318ede986f9739339a5402c29"
    );
    assert_eq!(
        sha256_hex(SNAPSHOT.as_bytes()),
        "958e095610cb99779b8dfad51e30b70b4b1f4494cca33b0174773c9077f99f09"
    );
}

#[test]
fn factory_rotation_and_write_bundle_reproduce_the_vectors() {
    let (a, b) = (key_a(), key_b());
    let mut factory = Factory::from_root_spec("factory", all_roles(1, &a, &a)).unwrap();
    factory.push_root(all_roles(2, &b, &a)).unwrap();
    assert_eq!(text(&factory.roots()[0]), ROOT1);
    assert_eq!(text(&factory.roots()[1]), ROOT2);

    let dir = tempfile::tempdir().unwrap();
    factory
        .write_device_roots(&dir.path().join("sota"), "ci", 2)
        .unwrap();
    let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).unwrap();
    assert_eq!(read("sota/ci/1.root.json"), ROOT1);
    assert_eq!(read("sota/ci/2.root.json"), ROOT2);

    let commit = sha256_hex(b"example-ostree-commit");
    let app = format!(
        "hub.foundries.io/factory/app-01@sha256:{}",
        sha256_hex(b"app-01")
    );
    let mut spec = BundleSpec::new(vec![
        TargetSpec::new("intel-corei7-64", "42", &commit).with_app("app-01", &app)
    ]);
    spec.roots_from = 2;
    spec.versions = gen::RoleVersions {
        targets: 42,
        snapshot: 42,
        timestamp: 42,
        bundle_targets: 42,
    };
    spec.expires = gen::RoleExpiries {
        targets: EXPIRES.into(),
        snapshot: EXPIRES.into(),
        timestamp: EXPIRES.into(),
        bundle_targets: EXPIRES.into(),
    };
    gen::write_bundle(&factory, &spec, &dir.path().join("b")).unwrap();
    assert!(!dir.path().join("b/tuf/1.root.json").exists());
    assert_eq!(read("b/tuf/2.root.json"), ROOT2);
    assert_eq!(read("b/tuf/targets.json"), TARGETS);
    assert_eq!(read("b/tuf/snapshot.json"), SNAPSHOT);
    assert_eq!(read("b/tuf/timestamp.json"), TIMESTAMP);
    assert_eq!(read("b/tuf/bundle-targets.json"), BUNDLE_TARGETS);
}

fn verify_sigs(env: &Value, keys: &[&PrivateKey]) {
    let msg = tuf::to_bytes(&env["signed"]).unwrap();
    let sigs = env["signatures"].as_array().unwrap();
    assert_eq!(sigs.len(), keys.len());
    for (sig, key) in sigs.iter().zip(keys) {
        assert_eq!(sig["keyid"], key.key_id());
        let public = PublicKey::from_json(&key.public_json()).unwrap();
        let raw = decode_sig(sig["sig"].as_str().unwrap()).unwrap();
        assert!(public.verify(&msg, &raw));
    }
}

fn check_blobs(apps: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(apps.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        let bytes = std::fs::read(e.path()).unwrap();
        assert_eq!(sha256_hex(&bytes), e.file_name().to_str().unwrap());
        n += 1;
    }
    n
}

#[test]
fn simple_bundle_has_real_content() {
    let mut factory = Factory::new().unwrap();
    factory.rotate_root().unwrap();
    factory.rotate_root().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("bundle");
    let apps = [
        AppSpec::tiny("factory", "app-01", "v42"),
        AppSpec::busybox("factory", "shell", "v42"),
    ];
    let bundle = gen::simple_bundle(&factory, &dst, "intel-corei7-64", "42", &apps).unwrap();

    // Layout: exactly tuf/, ostree_repo/, apps/.
    let mut top: Vec<String> = std::fs::read_dir(&dst)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    top.sort();
    assert_eq!(top, ["apps", "ostree_repo", "tuf"]);
    let mut tuf_files: Vec<String> = std::fs::read_dir(bundle.tuf_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    tuf_files.sort();
    assert_eq!(
        tuf_files,
        [
            "3.root.json",
            "bundle-targets.json",
            "snapshot.json",
            "targets.json",
            "timestamp.json"
        ]
    );

    // OSTree: archive repo, commit object of the target's sha256, ref of the branch.
    let target = &bundle.targets[0];
    let config = std::fs::read_to_string(bundle.ostree_repo().join("config")).unwrap();
    assert!(
        config
            .lines()
            .any(|l| l.trim() == "mode=archive-z2" || l.trim() == "mode=archive"),
        "{config}"
    );
    let commit = &target.commit;
    assert_eq!(commit.len(), 64);
    assert!(dst
        .join(format!(
            "ostree_repo/objects/{}/{}.commit",
            &commit[..2],
            &commit[2..]
        ))
        .is_file());
    assert_eq!(
        bundle.commit_object(commit),
        dst.join(format!(
            "ostree_repo/objects/{}/{}.commit",
            &commit[..2],
            &commit[2..]
        ))
    );
    let head = std::fs::read_to_string(bundle.ostree_repo().join("refs/heads/intel-corei7-64-lmp"))
        .unwrap();
    assert_eq!(head.trim(), commit);

    // Apps: uri files equal the target's URIs, every blob is named by its sha256.
    for (name, uri) in &target.apps {
        let hex = uri.rsplit_once("@sha256:").unwrap().1;
        let app_dir = dst.join("apps/apps").join(name).join(hex);
        assert_eq!(std::fs::read_to_string(app_dir.join("uri")).unwrap(), *uri);
        let manifest = std::fs::read(app_dir.join("manifest.json")).unwrap();
        assert_eq!(sha256_hex(&manifest), hex);
        let m: Value = serde_json::from_slice(&manifest).unwrap();
        assert_eq!(m["annotations"], json!({"compose-app": "v1"}));
        assert_eq!(m["layers"][0]["mediaType"], "application/octet-stream");
        let archive = m["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap();
        assert!(app_dir.join(format!("{archive}.tgz")).is_file());
        let compose = std::fs::read_to_string(app_dir.join("docker-compose.yml")).unwrap();
        assert!(
            compose.contains(&format!("image: hub.foundries.io/factory/{name}@sha256:")),
            "{compose}"
        );
        let images = app_dir.join("images/hub.foundries.io/factory").join(name);
        let image_dirs: Vec<_> = std::fs::read_dir(&images).unwrap().collect();
        assert_eq!(image_dirs.len(), 1);
        let layout = image_dirs.into_iter().next().unwrap().unwrap().path();
        assert_eq!(
            std::fs::read_to_string(layout.join("oci-layout")).unwrap(),
            r#"{"imageLayoutVersion":"1.0.0"}"#
        );
        let index: Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        let image_digest = layout.file_name().unwrap().to_str().unwrap();
        assert_eq!(
            index["manifests"][0]["digest"],
            format!("sha256:{image_digest}")
        );
        assert!(compose.contains(image_digest));
    }
    assert!(check_blobs(&bundle.apps_dir()) >= 10);

    // TUF: signed by the latest root's keys, hashes chained over canonical bytes.
    let targets = bundle.read("targets.json").unwrap();
    verify_sigs(&targets, &factory.signers(Role::Targets));
    let snapshot = bundle.read("snapshot.json").unwrap();
    let targets_bytes = std::fs::read(bundle.tuf_file("targets.json")).unwrap();
    assert_eq!(
        snapshot["signed"]["meta"]["targets.json"]["hashes"]["sha256"],
        sha256_hex(&targets_bytes)
    );
    verify_sigs(
        &bundle.read("3.root.json").unwrap(),
        &[
            &factory.spec_at(2).unwrap().root.keys[0],
            &factory.spec().root.keys[0],
        ],
    );

    // Deterministic: the same inputs give the same commit and app URIs.
    let again = gen::simple_bundle(
        &factory,
        &dir.path().join("again"),
        "intel-corei7-64",
        "42",
        &apps,
    )
    .unwrap();
    assert_eq!(again.targets[0].commit, target.commit);
    assert_eq!(again.targets[0].apps, target.apps);
}

#[test]
fn busybox_layer_is_runnable_from_scratch() {
    let dir = tempfile::tempdir().unwrap();
    let info = gen::write_app_spec(
        dir.path(),
        "factory",
        &AppSpec::busybox("factory", "shell", "x"),
    )
    .unwrap();
    let image = &info.images[0];
    let layer = std::fs::read(
        dir.path()
            .join("blobs/sha256")
            .join(&image.layer_digests[0]),
    )
    .unwrap();
    let mut tar = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(layer.as_slice()),
        &mut tar,
    )
    .unwrap();
    assert_eq!(sha256_hex(&tar), image.diff_ids[0]);
    let mut archive = ::tar::Archive::new(tar.as_slice());
    let mut found = false;
    for e in archive.entries().unwrap() {
        let e = e.unwrap();
        let h = e.header();
        assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
        if e.path().unwrap().to_str() == Some("bin/busybox") {
            assert_eq!(h.mode().unwrap() & 0o7777, 0o755);
            assert_eq!(
                h.size().unwrap(),
                std::fs::metadata("/bin/busybox").unwrap().len()
            );
            found = true;
        }
    }
    assert!(found);
    let config: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("blobs/sha256").join(&image.config_digest)).unwrap(),
    )
    .unwrap();
    assert_eq!(
        config["rootfs"]["diff_ids"][0],
        format!("sha256:{}", image.diff_ids[0])
    );
    assert_eq!(config["architecture"], "amd64");
    assert!(config["config"]["Healthcheck"]["Test"].is_array());
}

#[test]
fn tampering_helpers_rechain() {
    let factory = Factory::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bundle = gen::simple_bundle(&factory, dir.path(), "intel-corei7-64", "7", &[]).unwrap();
    let before = bundle.read("timestamp.json").unwrap();
    bundle
        .edit_targets(&factory, |signed| {
            signed["version"] = json!(2);
            signed["targets"]["intel-corei7-64-lmp-7"]["custom"]["tags"] = json!(["postmerge"]);
        })
        .unwrap();
    let targets_bytes = std::fs::read(bundle.tuf_file("targets.json")).unwrap();
    let snapshot = bundle.read("snapshot.json").unwrap();
    let entry = &snapshot["signed"]["meta"]["targets.json"];
    assert_eq!(entry["hashes"]["sha256"], sha256_hex(&targets_bytes));
    assert_eq!(entry["version"], 2);
    assert_eq!(entry["length"], targets_bytes.len());
    verify_sigs(&snapshot, &factory.signers(Role::Snapshot));
    let timestamp = bundle.read("timestamp.json").unwrap();
    assert_ne!(timestamp, before);
    let snapshot_bytes = std::fs::read(bundle.tuf_file("snapshot.json")).unwrap();
    assert_eq!(
        timestamp["signed"]["meta"]["snapshot.json"]["hashes"]["sha256"],
        sha256_hex(&snapshot_bytes)
    );
    verify_sigs(&timestamp, &factory.signers(Role::Timestamp));

    // Signing with a stranger's key is one call.
    let evil = Factory::named("evil").unwrap();
    bundle
        .edit_signed("bundle-targets.json", &evil.signers(Role::Targets), |_| {})
        .unwrap();
    let bt = bundle.read("bundle-targets.json").unwrap();
    assert_ne!(
        bt["signatures"][0]["keyid"],
        factory.signers(Role::Targets)[0].key_id()
    );
    assert!(!std::fs::read(bundle.tuf_file("bundle-targets.json"))
        .unwrap()
        .ends_with(b"\n"));
}

#[test]
fn rsa_factory_signs_with_pss() {
    let factory = Factory::rsa().unwrap();
    let root = &factory.roots()[0];
    assert_eq!(root["signatures"][0]["method"], "rsassa-pss-sha256");
    let keys = root["signed"]["keys"].as_object().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys.values().next().unwrap()["keytype"], "RSA");
    verify_sigs(root, &factory.signers(Role::Root));
}
