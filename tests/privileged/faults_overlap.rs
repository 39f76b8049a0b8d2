//! `install` pulls the rootfs and copies and loads the apps at once: a failure of one half
//! stops the other, and neither leaves anything behind (no object, staging directory, blob,
//! app version or image), whichever half was ahead when it happened. The exit code and the
//! message are the failing half's.

use std::path::{Path, PathBuf};

use crate::common::apps::{app, AppScene, T};
use crate::common::faults::{code, spawn_paused, usb_update, Out, Snapshot};
use crate::common::scene::deployments;

fn out(r: crate::common::Run) -> Out {
    Out {
        code: r.code,
        stdout: r.stdout,
        stderr: r.stderr,
    }
}

/// Flip bytes in the middle of `file`, keeping its size (the scan checks sizes only).
fn corrupt_in_place(file: &Path) {
    let mut bytes = std::fs::read(file).unwrap();
    let (len, mid) = (bytes.len(), bytes.len() / 2);
    for b in &mut bytes[mid.saturating_sub(16)..(mid + 16).min(len)] {
        *b ^= 0xff;
    }
    std::fs::write(file, bytes).unwrap();
}

fn largest(files: impl Iterator<Item = PathBuf>) -> PathBuf {
    files
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .expect("a file")
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// No transaction left in the sysroot repo.
fn no_staging(s: &AppScene) -> bool {
    let tmp = s.d.sysroot.join("ostree/repo/tmp");
    std::fs::read_dir(tmp).map_or(true, |mut entries| {
        !entries.any(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.starts_with("staging-") && !name.ends_with("-lock")
        })
    })
}

#[track_caller]
fn nothing_left(s: &AppScene, before: &Snapshot) {
    before.assert_same(Some(s.image_ids()));
    assert!(no_staging(s), "a transaction was left in the sysroot repo");
    assert_eq!(deployments(&s.d), vec![s.commits["1"].clone()]);
}

/// An app blob that does not match its digest fails the apps' half: 50 with the blob's
/// message; the pull, ahead or behind, is stopped and its transaction aborted.
#[test]
fn apps_failing_stops_the_pull_and_nothing_is_left() {
    let mut s = AppScene::new(None);
    let f = s.f.name.clone();
    let b = s.bundle(vec![T::new("2", vec![app(&f, "app-01", "v2")])]);
    let mut blobs = Vec::new();
    walk(&b.path().join("apps/blobs/sha256"), &mut blobs);
    let blob = largest(blobs.into_iter());
    corrupt_in_place(&blob);
    let before = Snapshot::take(&s.d, Some(s.image_ids()));

    let o = out(s.install(b.path()));
    code(&o, 50);
    let hex = blob.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        o.error().contains(&format!("blob {hex} in ")),
        "{}",
        o.error()
    );
    assert!(
        o.error().ends_with("does not match its digest"),
        "{}",
        o.error()
    );
    assert!(
        o.stderr.contains("pulling commit ") && o.stderr.contains("stopped, the other half"),
        "the pull was not stopped: {}",
        o.stderr
    );
    nothing_left(&s, &before);
}

/// A rootfs object that does not match its checksum fails the pull: 50 with the pull's
/// message; the apps, ahead or behind, are stopped or taken back (blobs, versions, images).
#[test]
fn pull_failing_stops_the_apps_and_nothing_is_left() {
    let mut s = AppScene::new(None);
    let f = s.f.name.clone();
    let b = s.bundle(vec![T::new("2", vec![app(&f, "app-01", "v2")])]);
    // The largest content object the device lacks.
    let have = s.d.sysroot.join("ostree/repo/objects");
    let mut objects = Vec::new();
    walk(&b.path().join("ostree_repo/objects"), &mut objects);
    let missing = objects.into_iter().filter(|p| {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".filez") else {
            return false;
        };
        let dir = p.parent().unwrap().file_name().unwrap();
        !have.join(dir).join(format!("{stem}.file")).exists()
    });
    let object = largest(missing);
    let good = std::fs::read(&object).unwrap();
    corrupt_in_place(&object);
    let before = Snapshot::take(&s.d, Some(s.image_ids()));

    let o = out(s.install(b.path()));
    code(&o, 50);
    assert!(o.error().starts_with("pulling commit "), "{}", o.error());
    let name = object.file_name().unwrap().to_string_lossy().into_owned();
    assert!(o.error().contains(&name), "{}", o.error());
    nothing_left(&s, &before);

    // The object repaired: the same install goes through.
    std::fs::write(&object, good).unwrap();
    code(&out(s.install(b.path())), 100);
    assert_eq!(deployments(&s.d)[0], s.commits["2"]);
}

/// `install` of `bundle` held at `point`; `meanwhile` runs there, then it goes on.
fn install_held(s: &AppScene, bundle: &Path, point: &str, meanwhile: impl FnOnce()) -> Out {
    let cmd = usb_update(&s.d, &["install"], &["--src-dir", bundle.to_str().unwrap()]);
    let paused = spawn_paused(cmd, point, &s.d.tmp.path().join("paused"));
    meanwhile();
    paused.go()
}

/// A file found when the install began and gone when it is opened is the medium failing
/// (a pulled FAT stick answers a lookup with ENOENT), not a bundle that lacks it: 50, the
/// medium's message, nothing left. Only a file missing from the start is 8.
#[test]
fn blob_or_object_gone_after_the_check_is_the_medium_failing() {
    let mut s = AppScene::new(None);
    let f = s.f.name.clone();
    let b = s.bundle(vec![T::new("2", vec![app(&f, "app-01", "v2")])]);
    let before = Snapshot::take(&s.d, Some(s.image_ids()));
    let mut blobs = Vec::new();
    walk(&b.path().join("apps/blobs/sha256"), &mut blobs);
    let blob = largest(blobs.into_iter());
    let hex = blob.file_name().unwrap().to_string_lossy().into_owned();
    let kept = s.d.tmp.path().join("kept");

    // Gone from the start: the bundle lacks it, nothing is copied.
    std::fs::rename(&blob, &kept).unwrap();
    let o = out(s.install(b.path()));
    code(&o, 8);
    assert!(
        o.error()
            .starts_with(&format!("blob {hex} is not in bundle ")),
        "{}",
        o.error()
    );
    nothing_left(&s, &before);

    // Gone after every blob was found.
    std::fs::rename(&kept, &blob).unwrap();
    let o = install_held(&s, b.path(), "blobs-found", || {
        std::fs::rename(&blob, &kept).unwrap();
    });
    code(&o, 50);
    assert!(
        o.error().starts_with(&format!("blob {hex} in bundle ")),
        "{}",
        o.error()
    );
    assert!(
        o.error().ends_with(
            ": the medium cannot be read (found when the copy began, not found now): was the \
             stick removed?"
        ),
        "{}",
        o.error()
    );
    nothing_left(&s, &before);
    std::fs::rename(&kept, &blob).unwrap();

    // A rootfs object gone after the scan found it: the pull says the same.
    let mut objects = Vec::new();
    walk(&b.path().join("ostree_repo/objects"), &mut objects);
    let have = s.d.sysroot.join("ostree/repo/objects");
    let object = largest(objects.into_iter().filter(|p| {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let dir = p.parent().unwrap().file_name().unwrap();
        name.strip_suffix(".filez")
            .is_some_and(|stem| !have.join(dir).join(format!("{stem}.file")).exists())
    }));
    let name = object.file_name().unwrap().to_string_lossy().into_owned();
    let o = install_held(&s, b.path(), "pull-rootfs", || {
        std::fs::rename(&object, &kept).unwrap();
    });
    code(&o, 50);
    assert!(o.error().starts_with("pulling commit "), "{}", o.error());
    assert!(
        o.error().contains(&format!(
            "{name}: the medium cannot be read (found when the bundle was checked, not found \
             now): was the stick removed?"
        )),
        "{}",
        o.error()
    );
    nothing_left(&s, &before);

    // Everything back: the same bundle installs.
    std::fs::rename(&kept, &object).unwrap();
    code(&out(s.install(b.path())), 100);
    assert_eq!(deployments(&s.d)[0], s.commits["2"]);
}
