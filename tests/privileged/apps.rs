//! Compose apps against a real (private) dockerd and docker-compose, with images built from
//! scratch: install copies blobs and loads images, run starts the apps and checks them,
//! failures roll back. The reboot and the bootloader are simulated as in `install_run.rs`.

use std::collections::BTreeMap;

use crate::common::apps::{app, AppScene, T};
use crate::common::scene::{deployments, state};
use crate::common::Unchanged;
use test_kit::gen::{AppSpec, Hostile};

#[track_caller]
fn code(r: &crate::common::Run, want: i32) {
    assert_eq!(r.code, want, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
}

/// project -> [(service, image id)] from (app, image id) pairs.
fn expect(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<(String, String)>> {
    pairs
        .iter()
        .map(|(a, id)| (a.to_string(), vec![(a.to_string(), id.to_string())]))
        .collect()
}

fn blobs(s: &AppScene) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(s.store().join("blobs/sha256"))
        .map(|r| {
            r.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn rootfs_and_apps_update_then_next_update_replaces_and_prunes() {
    let mut s = AppScene::new(None);
    let f = s.f.name.clone();
    let b2 = s.bundle(vec![T::new(
        "2",
        vec![app(&f, "app-01", "v2"), app(&f, "app-02", "v2")],
    )]);
    let r = s.install(b2.path());
    code(&r, 100);
    let policy = r.line("policy: ").unwrap_or_default();
    assert!(policy.contains("2 app(s)"), "{policy}");
    // Before the reboot: images loaded and blobs stored, nothing started.
    let ids = s.image_ids();
    assert!(ids.contains(&s.image_id("2", "app-01")), "{ids:?}");
    assert!(ids.contains(&s.image_id("2", "app-02")), "{ids:?}");
    assert!(s.running().is_empty());
    let info = &s.written[&("2".to_string(), "app-01".to_string())];
    let dir = s.store().join("apps/app-01").join(&info.manifest_digest);
    assert_eq!(std::fs::read_to_string(dir.join("uri")).unwrap(), info.uri);
    for blob in [&info.archive_digest, &info.images[0].config_digest] {
        assert!(blobs(&s).contains(blob), "{blob} not in the store");
    }

    s.reboot_into("2", "boot-1");
    let r = s.run();
    code(&r, 0);
    assert!(r.stdout.starts_with("updated to"), "{}", r.stdout);
    assert_eq!(
        s.running(),
        expect(&[
            ("app-01", &s.image_id("2", "app-01")),
            ("app-02", &s.image_id("2", "app-02"))
        ])
    );
    assert_eq!(state(&s.d)["current"]["apps"].as_object().unwrap().len(), 2);

    // Next: new rootfs, app-01 changed, app-02 gone, app-03 new.
    let b3 = s.bundle(vec![T::new(
        "3",
        vec![app(&f, "app-01", "v3"), app(&f, "app-03", "v3")],
    )]);
    code(&s.install(b3.path()), 100);
    // The old apps keep running until the reboot.
    assert_eq!(s.running().len(), 2);
    s.reboot_into("3", "boot-2");
    code(&s.run(), 0);
    assert_eq!(
        s.running(),
        expect(&[
            ("app-01", &s.image_id("3", "app-01")),
            ("app-03", &s.image_id("3", "app-03"))
        ])
    );
    assert!(!s.compose_root().join("app-02").exists());
    let ids = s.image_ids();
    for gone in [s.image_id("2", "app-01"), s.image_id("2", "app-02")] {
        assert!(!ids.contains(&gone), "{gone} not pruned: {ids:?}");
    }
    assert!(!s.store().join("apps/app-02").exists());
    let old = &s.written[&("2".to_string(), "app-02".to_string())];
    assert!(!blobs(&s).contains(&old.archive_digest));
}

#[test]
fn apps_only_update_with_and_without_docker_restart() {
    let mut s = AppScene::new(None);
    let f = s.f.name.clone();
    let b2 = s.bundle(vec![T::new("2", vec![app(&f, "app-01", "v2")]).on("1")]);
    let r = s.install(b2.path());
    code(&r, 101);
    assert!(
        r.stdout.contains("restart Docker, then run"),
        "{}",
        r.stdout
    );
    assert_eq!(deployments(&s.d).len(), 1, "nothing deployed");
    s.docker.restart();
    code(&s.run(), 0);
    assert_eq!(
        s.running(),
        expect(&[("app-01", &s.image_id("2", "app-01"))])
    );

    // Without a Docker restart, run works as well.
    let b3 = s.bundle(vec![T::new("3", vec![app(&f, "app-01", "v3")]).on("1")]);
    code(&s.install(b3.path()), 101);
    code(&s.run(), 0);
    assert_eq!(
        s.running(),
        expect(&[("app-01", &s.image_id("3", "app-01"))])
    );
    assert!(!s.image_ids().contains(&s.image_id("2", "app-01")));
}

/// Reference aklite-offline 9.1: which apps run after install + reboot + run.
fn shortlist_case(compose_apps: Option<&str>, target: impl Fn(&AppScene) -> Vec<T>, want: &[&str]) {
    let mut s = AppScene::new(compose_apps);
    let targets = target(&s);
    let b = s.bundle(targets);
    code(&s.install(b.path()), 100);
    let newest = state(&s.d)["pending"]["target"]["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    s.d.reboot_into(&newest, "boot-1");
    code(&s.run(), 0);
    let running: Vec<String> = s.running().keys().cloned().collect();
    assert_eq!(running, want);
}

/// Removes app `name` from the bundle (its `apps/apps/<name>` directory).
fn without(b: &std::path::Path, name: &str) {
    std::fs::remove_dir_all(b.join("apps/apps").join(name)).unwrap();
}

#[test]
fn shortlist_device_list_and_missing_app() {
    // 10: target with 3 apps, app-03 missing from the bundle, device runs app-01, app-02.
    let mut s = AppScene::new(Some("app-01, app-02"));
    let f = s.f.name.clone();
    let b = s.bundle(vec![T::new(
        "2",
        vec![
            app(&f, "app-01", "a"),
            app(&f, "app-02", "a"),
            app(&f, "app-03", "a"),
        ],
    )]);
    without(b.path(), "app-03");
    code(&s.install(b.path()), 100);
    s.reboot_into("2", "boot-1");
    code(&s.run(), 0);
    assert_eq!(s.running().keys().collect::<Vec<_>>(), ["app-01", "app-02"]);
}

#[test]
fn shortlist_fetched_apps_rules() {
    let three = |s: &AppScene| {
        vec![
            app(&s.f.name, "app-01", "a"),
            app(&s.f.name, "app-02", "a"),
            app(&s.f.name, "app-03", "a"),
        ]
    };
    // 11: CI shortlist "", device shortlist app-01,app-02.
    shortlist_case(
        Some("app-01,app-02"),
        |s| {
            vec![T::new("2", three(s)).custom(
                "fetched-apps",
                serde_json::json!({"uri": "http://apps.tar", "shortlist": ""}),
            )]
        },
        &["app-01", "app-02"],
    );
    // 12: CI shortlist "app-01,app-02", no device shortlist.
    shortlist_case(
        None,
        |s| {
            vec![T::new("2", three(s)).custom(
                "fetched-apps",
                serde_json::json!({"uri": "http://apps.tar", "shortlist": "app-01,app-02"}),
            )]
        },
        &["app-01", "app-02"],
    );
    // 13: CI shortlist "foobar": the target runs no apps.
    shortlist_case(
        Some("app-01,app-02"),
        |s| {
            vec![T::new("2", three(s)).custom(
                "fetched-apps",
                serde_json::json!({"uri": "http://apps.tar", "shortlist": "foobar"}),
            )]
        },
        &[],
    );
    // 14: fetched-apps without a URI: apps are off.
    shortlist_case(
        None,
        |s| vec![T::new("2", three(s)).custom("fetched-apps", serde_json::json!({"uri": null}))],
        &[],
    );
}

#[test]
fn shortlist_newest_complete_target_wins() {
    // 9: three targets with different app sets: the newest is installed.
    shortlist_case(
        None,
        |s| {
            vec![
                T::new("2", vec![app(&s.f.name, "app-01", "2")]),
                T::new(
                    "3",
                    vec![app(&s.f.name, "app-01", "3"), app(&s.f.name, "app-02", "3")],
                ),
                T::new("4", vec![app(&s.f.name, "app-02", "4")]),
            ]
        },
        &["app-02"],
    );
    // 8: the newest target's updated app is missing: the older one is installed.
    let mut s = AppScene::new(None);
    let f = s.f.name.clone();
    let b = s.bundle(vec![
        T::new("2", vec![app(&f, "app-01", "2")]),
        T::new("3", vec![app(&f, "app-01", "3")]),
    ]);
    let newer = &s.written[&("3".to_string(), "app-01".to_string())];
    std::fs::remove_dir_all(
        b.path()
            .join("apps/apps/app-01")
            .join(&newer.manifest_digest),
    )
    .unwrap();
    code(&s.install(b.path()), 100);
    assert_eq!(state(&s.d)["pending"]["target"]["version"], 2);
}

/// A device that updated to version 2 with app-01 through us.
fn on_version_2() -> AppScene {
    let mut s = AppScene::new(None);
    let f = s.f.name.clone();
    let b = s.bundle(vec![T::new("2", vec![app(&f, "app-01", "v2")])]);
    code(&s.install(b.path()), 100);
    s.reboot_into("2", "boot-1");
    code(&s.run(), 0);
    s
}

fn failing_app(s: &AppScene, how: &str) -> AppSpec {
    match how {
        "exits" => {
            let mut a = AppSpec::busybox_running(&s.f.name, "app-02", "bad", "exit 3", true);
            // No healthcheck: its verdict would race the exit code.
            a.images[0].config.healthcheck = None;
            a
        }
        _ => AppSpec::busybox_running(
            &s.f.name,
            "app-02",
            "bad",
            test_kit::gen::apps::RUN_FOREVER,
            false,
        ),
    }
}

fn rootfs_update_with_failing_app_rolls_back(how: &str, fragment: &str) {
    let mut s = on_version_2();
    let f = s.f.name.clone();
    let bad = failing_app(&s, how);
    let b = s.bundle(vec![T::new("3", vec![app(&f, "app-01", "v3"), bad])]);
    code(&s.install(b.path()), 100);
    s.reboot_into("3", "boot-2");
    let r = s.run();
    code(&r, 100);
    assert!(
        fragment.split('|').any(|f| r.stdout.contains(f)),
        "{fragment}: {}",
        r.stdout
    );
    assert!(r.stdout.contains("rollback to"), "{}", r.stdout);
    assert_eq!(
        deployments(&s.d)[0],
        s.commits["2"],
        "previous deployment is default"
    );
    let st = state(&s.d);
    assert_eq!(st["failed"][0]["name"], "intel-corei7-64-lmp-3");
    assert_eq!(st["pending"]["phase"], "rolling_back");

    s.reboot_into("2", "boot-3");
    let r = s.run();
    code(&r, 0);
    assert!(
        r.stdout.starts_with("rolled back to intel-corei7-64-lmp-2"),
        "{}",
        r.stdout
    );
    assert_eq!(
        s.running(),
        expect(&[("app-01", &s.image_id("2", "app-01"))])
    );
    assert_eq!(deployments(&s.d), vec![s.commits["2"].clone()]);
    let r = s.d.command("current", &[]);
    assert!(
        r.stdout.starts_with("current: intel-corei7-64-lmp-2"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("returned 0") && r.stdout.contains("rolled back to"),
        "{}",
        r.stdout
    );
    // The same stick again: refused, the target failed here.
    code(&s.install(b.path()), 103);
}

#[test]
fn app_exiting_at_once_after_rootfs_update_rolls_back() {
    // With `restart: unless-stopped` the engine may already have restarted it.
    rootfs_update_with_failing_app_rolls_back("exits", "exited with code 3|keeps restarting");
}

#[test]
fn unhealthy_app_after_rootfs_update_rolls_back() {
    rootfs_update_with_failing_app_rolls_back("unhealthy", "is unhealthy");
}

#[test]
fn apps_only_update_with_failing_app_restores_previous_apps() {
    let mut s = on_version_2();
    let f = s.f.name.clone();
    let bad = failing_app(&s, "exits");
    let b = s.bundle(vec![T::new("3", vec![app(&f, "app-01", "v3"), bad]).on("2")]);
    code(&s.install(b.path()), 101);
    let r = s.run();
    code(&r, 99);
    assert!(r.stdout.contains("are running again"), "{}", r.stdout);
    assert_eq!(
        s.running(),
        expect(&[("app-01", &s.image_id("2", "app-01"))])
    );
    assert_eq!(state(&s.d)["current"]["name"], "intel-corei7-64-lmp-2");
}

/// A device never updated by us, running app-01 as it was preloaded: project directory,
/// images and containers, no state.
fn preloaded() -> AppScene {
    let s = on_version_2();
    std::fs::remove_dir_all(s.d.state_dir()).unwrap();
    s
}

#[test]
fn never_updated_device_rolls_back_to_its_preloaded_apps() {
    // The case of aklite-offline's own test RollbackToInitialTargetIfAppDrivenRolllback: a
    // device never updated whose new app fails gets its preloaded apps back.
    let mut s = preloaded();
    let f = s.f.name.clone();
    let bad = failing_app(&s, "exits");
    let b = s.bundle(vec![T::new("3", vec![app(&f, "app-01", "v3"), bad])]);
    code(&s.install(b.path()), 100);
    let record = std::fs::read_to_string(s.d.state_dir().join("previous-apps.json")).unwrap();
    assert!(
        record.contains("\"app-01\"") && record.contains("\"uri\": null"),
        "{record}"
    );
    s.reboot_into("3", "boot-2");
    code(&s.run(), 100);
    s.reboot_into("2", "boot-3");
    let r = s.run();
    code(&r, 0);
    assert!(r.stdout.starts_with("rolled back to"), "{}", r.stdout);
    assert_eq!(
        s.running(),
        expect(&[("app-01", &s.image_id("2", "app-01"))])
    );
}

#[test]
fn unreadable_record_gives_110_after_bootloader_rollback() {
    // The case of aklite-offline's own test RollbackToUnknown: a bootloader rollback with
    // the previous apps unknown is 110.
    let mut s = on_version_2();
    let f = s.f.name.clone();
    let b = s.bundle(vec![T::new("3", vec![app(&f, "app-01", "v3")])]);
    code(&s.install(b.path()), 100);
    std::fs::write(s.d.state_dir().join("previous-apps.json"), b"{not json").unwrap();
    s.reboot_into("2", "boot-2");
    let r = s.run();
    code(&r, 110);
    assert!(
        r.stdout.contains("previous apps are unknown"),
        "{}",
        r.stdout
    );
    assert_eq!(
        state(&s.d)["history"].as_array().unwrap().last().unwrap()["code"],
        110
    );
}

#[test]
fn unreadable_record_gives_120_when_apps_fail() {
    // The case of aklite-offline's own test RollbackToUnknownIfAppDrivenRolllback: apps fail
    // and the previous ones are unknown: 120.
    let mut s = on_version_2();
    let bad = failing_app(&s, "exits");
    let b = s.bundle(vec![T::new("3", vec![bad])]);
    code(&s.install(b.path()), 100);
    std::fs::remove_file(s.d.state_dir().join("previous-apps.json")).unwrap();
    s.reboot_into("3", "boot-2");
    let r = s.run();
    code(&r, 120);
    assert!(r.stdout.contains("nothing restored"), "{}", r.stdout);
    assert_eq!(
        deployments(&s.d)[0],
        s.commits["3"],
        "stays on the new rootfs"
    );
}

#[test]
fn blob_not_matching_its_digest_is_refused_with_nothing_loaded() {
    let mut s = AppScene::new(None);
    let f = s.f.name.clone();
    let b = s.bundle(vec![T::new("2", vec![app(&f, "app-01", "v2")])]);
    let info = &s.written[&("2".to_string(), "app-01".to_string())];
    // The busybox layer: the biggest blob, copied by its own worker.
    let layer = b
        .path()
        .join("apps/blobs/sha256")
        .join(&info.images[0].layer_digests[0]);
    let mut bytes = std::fs::read(&layer).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&layer, bytes).unwrap();
    let images = s.image_ids();
    let before = Unchanged::new(&s.d, b.path());
    let r = s.install(b.path());
    code(&r, 50);
    assert!(
        r.error().contains("does not match its digest"),
        "{}",
        r.stdout
    );
    assert!(
        r.error().contains(&info.images[0].layer_digests[0]),
        "{}",
        r.stdout
    );
    before.assert();
    assert_eq!(s.image_ids(), images);
}

/// The last layer of `app`'s image (version 2) in bundle `b` with its gzip header's time
/// changed: the engine would take it (the same tar inside), only its digest tells. Returns
/// the layer's digest.
fn retime_last_layer(s: &AppScene, b: &std::path::Path, app: &str) -> String {
    let info = &s.written[&("2".to_string(), app.to_string())];
    let layer = info.images[0].layer_digests.last().unwrap().clone();
    let path = b.join("apps/blobs/sha256").join(&layer);
    let mut bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "a gzip layer");
    bytes[4..8].copy_from_slice(&1_700_000_000u32.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    layer
}

const THREE: [&str; 3] = ["app-01", "app-02", "app-03"];

/// Version 2 with the apps [`THREE`] (each its own image; all share the busybox layer).
fn three_apps(s: &AppScene) -> T {
    T::new("2", THREE.iter().map(|n| app(&s.f.name, n, "v2")).collect())
}

/// Three images loaded at once share their busybox layer: it is copied into the store once
/// (by the first load to reach it; the others read the store's copy), every blob of the
/// bundle is in the store exactly once, and no partial file is left.
#[test]
fn images_loaded_at_once_copy_a_shared_layer_once() {
    let mut s = AppScene::new(None);
    let b = s.bundle(vec![three_apps(&s).on("1")]);
    let shared = &s.written[&("2".to_string(), "app-01".to_string())].images[0].layer_digests[0];
    for n in &THREE[1..] {
        let info = &s.written[&("2".to_string(), n.to_string())];
        assert_eq!(
            &info.images[0].layer_digests[0], shared,
            "{n} shares the layer"
        );
    }
    let in_bundle: BTreeMap<String, u64> = std::fs::read_dir(b.path().join("apps/blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            let size = e.metadata().unwrap().len();
            (e.file_name().to_string_lossy().into_owned(), size)
        })
        .collect();
    let r = s.install(b.path());
    code(&r, 101);
    let bytes: u64 = in_bundle.values().sum();
    let summary = format!(
        " {} blob(s), {:.1} MB copied",
        in_bundle.len(),
        bytes as f64 / 1e6
    );
    assert!(r.stdout.contains(&summary), "{summary} in {}", r.stdout);
    assert_eq!(blobs(&s), in_bundle.keys().cloned().collect::<Vec<_>>());
    let ids = s.image_ids();
    for n in THREE {
        assert!(ids.contains(&s.image_id("2", n)), "{n}: {ids:?}");
    }
}

/// Two apps' repos hold the same image (the same config and layers): it is loaded once and
/// tagged for both, so that each app's compose finds its own tag.
#[test]
fn one_image_in_two_repos_is_loaded_once_and_tagged_for_both() {
    let mut s = AppScene::new(None);
    let f = s.f.name.clone();
    let same = |name: &str| AppSpec::busybox(&f, name, "one image, two repos");
    let b = s.bundle(vec![
        T::new("2", vec![same("app-01"), same("app-02")]).on("1")
    ]);
    assert_eq!(s.image_id("2", "app-01"), s.image_id("2", "app-02"));
    let r = s.install(b.path());
    code(&r, 101);
    assert!(r.stdout.contains(" 1 image(s) loaded"), "{}", r.stdout);
    let tags: Vec<String> = (s.engine().images().unwrap().into_iter())
        .flat_map(|i| i.repo_tags)
        .collect();
    for name in ["app-01", "app-02"] {
        assert!(
            tags.iter().any(|t| t.contains(&format!("/{name}:"))),
            "{name}: {tags:?}"
        );
    }
}

/// One of three images loaded at once has a layer that does not match its digest: the
/// others, loaded beside it, are taken back with everything the install copied.
#[test]
fn a_bad_layer_among_images_loaded_at_once_leaves_nothing() {
    let mut s = AppScene::new(None);
    let b = s.bundle(vec![three_apps(&s)]);
    // app-03's own layer (its marker), shared with no other image.
    let layer = retime_last_layer(&s, b.path(), "app-03");
    let images = s.image_ids();
    let before = Unchanged::new(&s.d, b.path());
    let r = s.install(b.path());
    code(&r, 50);
    assert!(
        r.error().starts_with(&format!("blob {layer} in bundle ")),
        "{}",
        r.error()
    );
    before.assert();
    assert_eq!(s.image_ids(), images);
}

/// A layer is hashed only as the image load reads it from the stick. One the engine would
/// take (its gzip header's time set: the same size and the same tar inside, so the same
/// diff id) but whose digest does not match is refused before the tar can end: 50, the
/// engine never loads it, the store keeps no blob.
#[test]
fn layer_the_engine_would_take_but_not_matching_its_digest_loads_nothing() {
    let mut s = AppScene::new(None);
    let f = s.f.name.clone();
    let b = s.bundle(vec![T::new("2", vec![app(&f, "app-01", "v2")])]);
    let layer = retime_last_layer(&s, b.path(), "app-01");
    let images = s.image_ids();
    let before = Unchanged::new(&s.d, b.path());
    let bundle = b.path().to_str().unwrap();
    let info_log = [("USB_UPDATE_LOG", "usb_update=info")];
    let r =
        s.d.command_env("install", &["--src-dir", bundle], &info_log);
    code(&r, 50);
    // Refused before the tar could end: the engine never loaded it (not loaded and then
    // taken back).
    assert!(!r.stderr.contains("loaded image "), "{}", r.stderr);
    assert!(
        r.error().starts_with(&format!("blob {layer} in bundle ")),
        "{}",
        r.stdout
    );
    assert!(
        r.error().ends_with(" does not match its digest"),
        "{}",
        r.stdout
    );
    before.assert();
    assert_eq!(s.image_ids(), images, "the engine kept an image");
}

#[test]
fn hostile_compose_archives_are_refused() {
    for (entry, rule) in [
        (Hostile::File("../escape".into()), ".."),
        (
            Hostile::File("/tmp/usb-update-abs-escape".into()),
            "absolute",
        ),
        (Hostile::Symlink("link".into(), "/etc".into()), "link"),
    ] {
        let mut s = AppScene::new(None);
        let mut a = app(&s.f.name, "app-01", "v2");
        a.hostile = Some(entry.clone());
        let b = s.bundle(vec![T::new("2", vec![a])]);
        let before = Unchanged::new(&s.d, b.path());
        let r = s.install(b.path());
        code(&r, 50);
        assert!(r.error().contains(rule), "{entry:?}: {}", r.stdout);
        before.assert();
        assert!(!std::path::Path::new("/tmp/usb-update-abs-escape").exists());
        assert!(!s.d.tmp.path().join("var/sota/escape").exists());
    }
}

#[test]
fn docker_not_running_is_its_own_error_and_changes_nothing() {
    let mut s = AppScene::new(None);
    let f = s.f.name.clone();
    let b = s.bundle(vec![T::new("2", vec![app(&f, "app-01", "v2")])]);
    s.docker.stop();
    let before = Unchanged::new(&s.d, b.path());
    let r = s.install(b.path());
    code(&r, 52);
    assert!(r.error().contains("is not reachable"), "{}", r.stdout);
    before.assert();
}

#[test]
fn install_killed_after_the_copy_converges_on_the_next_attempt() {
    let mut s = AppScene::new(None);
    let f = s.f.name.clone();
    let b = s.bundle(vec![T::new("2", vec![app(&f, "app-01", "v2")])]);
    let bundle = b.path().to_str().unwrap();
    let r = s.d.command_env(
        "install",
        &["--src-dir", bundle],
        &[("USB_UPDATE_CRASH_AT", "install-apps-fetched")],
    );
    crate::common::crashes::killed(&s.d, &r, "install-apps-fetched");
    let copied = blobs(&s);
    assert!(!copied.is_empty());
    assert!(state_file_absent(&s));
    let r = s.install(b.path());
    code(&r, 100);
    assert!(
        r.stdout.contains(" 0 blob(s), 0.0 MB copied"),
        "{}",
        r.stdout
    );
    assert_eq!(blobs(&s), copied);
    s.reboot_into("2", "boot-1");
    code(&s.run(), 0);
    assert_eq!(
        s.running(),
        expect(&[("app-01", &s.image_id("2", "app-01"))])
    );
}

fn state_file_absent(s: &AppScene) -> bool {
    !s.d.state_dir().join("state.json").exists()
}

#[test]
fn run_with_docker_down_keeps_the_work_pending() {
    let mut s = AppScene::new(None);
    let f = s.f.name.clone();
    let b = s.bundle(vec![T::new("2", vec![app(&f, "app-01", "v2")]).on("1")]);
    code(&s.install(b.path()), 101);
    s.docker.stop();
    let r = s.run();
    code(&r, 52);
    assert!(r.stdout.contains("is not reachable"), "{}", r.stdout);
    let st = state(&s.d);
    assert_eq!(st["pending"]["target"]["name"], "intel-corei7-64-lmp-2");
    assert!(st["failed"].as_array().is_none_or(|f| f.is_empty()));
    s.docker.restart();
    code(&s.run(), 0);
    assert_eq!(
        s.running(),
        expect(&[("app-01", &s.image_id("2", "app-01"))])
    );
}
