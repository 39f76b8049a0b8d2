//! Sticks against real udev and real loop devices (root): what probe reads, which devices
//! are taken, the read-only mount and its one writable moment, the bundle on the stick, the
//! udev monitor, the automount directory watch, and the udev rule itself.

use crate::common::udev as udev_support;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use udev_support::{fresh_uuid, mounts_at, run, Fs, LoopStick};
use usb_update::agent::media::{find_bundle, DirWatch, Monitor, Mount, Stick};
use usb_update::policy::MediaPolicy;
use usb_update::Code;

fn ext4<'a>(label: &'a str, uuid: &'a str) -> Option<Fs<'a>> {
    Some(Fs {
        label,
        uuid,
        populate: None,
    })
}

fn loop_policy() -> MediaPolicy {
    MediaPolicy {
        require_usb: false,
        ..MediaPolicy::default()
    }
}

fn mkdirs(root: &Path, dirs: &[&str]) {
    for d in dirs {
        fs::create_dir_all(root.join(d)).unwrap();
    }
}

// ---- probe and accept ----

#[test]
fn probe_reads_udev_properties_of_a_whole_disk_stick() {
    let uuid = fresh_uuid();
    let stick = LoopStick::whole(ext4("UPDATE", &uuid));
    let s = Stick::probe(&stick.devnode).unwrap();
    assert_eq!(s.devnode, stick.devnode);
    assert_eq!(s.fs_type, "ext4");
    assert_eq!(s.uuid, uuid);
    assert_eq!(s.label, "UPDATE");
    assert_eq!(s.bus, None);
    assert!(!s.removable);
}

#[test]
fn probe_of_a_partition_reads_removable_from_its_disk() {
    let uuid = fresh_uuid();
    let stick = LoopStick::partitioned(ext4("PART", &uuid));
    let s = Stick::probe(&stick.devnode).unwrap();
    assert_eq!(
        s.devnode,
        PathBuf::from(format!("{}p1", stick.loopdev.display()))
    );
    assert_eq!(
        (s.fs_type.as_str(), s.uuid.as_str(), s.label.as_str()),
        ("ext4", uuid.as_str(), "PART")
    );
    let disk_removable = fs::read_to_string(format!(
        "/sys/class/block/{}/removable",
        stick.loopdev.file_name().unwrap().to_string_lossy()
    ))
    .unwrap();
    assert_eq!(disk_removable.trim(), "0");
    assert!(!s.removable);
}

#[test]
fn probe_without_filesystem_uses_the_kernel_name_and_is_refused() {
    let stick = LoopStick::whole(None);
    let s = Stick::probe(&stick.devnode).unwrap();
    assert_eq!(s.fs_type, "");
    assert_eq!(s.uuid, stick.kernel_name());
    assert_eq!(s.label, "");
    assert_eq!(
        s.accept(&loop_policy()),
        Err(format!("{}: no filesystem", stick.devnode.display()))
    );
}

#[test]
fn probe_refuses_what_udev_does_not_know() {
    let t = tempfile::tempdir().unwrap();
    let file = t.path().join("plain");
    fs::write(&file, "x").unwrap();
    let e = Stick::probe(&file).unwrap_err();
    assert_eq!(e.code(), Code::Internal);
    assert_eq!(
        e.one_line(),
        format!("{}: not a block device", file.display())
    );

    // A device node whose device does not exist (loop minor 4000 is never created here).
    let node = t.path().join("ghost");
    run("mknod", &[node.to_str().unwrap(), "b", "7", "4000"]);
    let e = Stick::probe(&node).unwrap_err();
    assert_eq!(e.code(), Code::Internal);
    assert!(
        e.one_line()
            .starts_with(&format!("{}: unknown to udev", node.display())),
        "{}",
        e.one_line()
    );

    let missing = t.path().join("missing");
    let e = Stick::probe(&missing).unwrap_err();
    assert_eq!(
        e.one_line(),
        format!("{}: ENOENT: No such file or directory", missing.display())
    );
}

#[test]
fn accept_refuses_a_loop_device_when_usb_is_required() {
    let uuid = fresh_uuid();
    let stick = LoopStick::whole(ext4("UPDATE", &uuid));
    let s = Stick::probe(&stick.devnode).unwrap();
    assert_eq!(
        s.accept(&MediaPolicy::default()),
        Err(format!(
            "{}: not a usb device (ID_BUS=none) and [media] require_usb is set",
            stick.devnode.display()
        ))
    );
    assert_eq!(s.accept(&loop_policy()), Ok(()));
    let only_vfat = MediaPolicy {
        filesystems: vec!["vfat".into()],
        ..loop_policy()
    };
    assert_eq!(
        s.accept(&only_vfat),
        Err(format!(
            "{}: filesystem ext4 is not one of [media] filesystems (vfat)",
            stick.devnode.display()
        ))
    );
}

// ---- mount ----

fn mounted_stick(populate: Option<&Path>) -> (LoopStick, Stick, tempfile::TempDir) {
    let uuid = fresh_uuid();
    let stick = LoopStick::whole(Some(Fs {
        label: "UPDATE",
        uuid: &uuid,
        populate,
    }));
    let s = Stick::probe(&stick.devnode).unwrap();
    (stick, s, tempfile::tempdir().unwrap())
}

fn devnum(devnode: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let rdev = fs::metadata(devnode).unwrap().rdev();
    format!(
        "{}:{}",
        nix::sys::stat::major(rdev),
        nix::sys::stat::minor(rdev)
    )
}

fn options(opts: &str) -> Vec<&str> {
    let mut v: Vec<&str> = opts.split(',').collect();
    v.sort();
    v
}

#[test]
fn mount_is_read_only_nosuid_nodev_noexec_at_run_dir_uuid() {
    let (stick, s, t) = mounted_stick(None);
    let run_dir = t.path().join("run/usb-update");
    let m = Mount::mount(&s, &run_dir).unwrap();
    let expected = run_dir.canonicalize().unwrap().join(&s.uuid);
    assert_eq!(m.path(), expected);
    let mounts = mounts_at(&expected);
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    let (per_mount, fstype, source, sb) = &mounts[0];
    assert_eq!(
        options(per_mount),
        ["noatime", "nodev", "noexec", "nosuid", "ro"]
    );
    assert_eq!(
        (fstype.as_str(), Path::new(source)),
        ("ext4", stick.devnode.as_path())
    );
    assert_eq!(sb.split(',').next(), Some("ro"), "{sb}");
    let e = fs::write(m.path().join("x"), "x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(nix::libc::EROFS));
    m.unmount().unwrap();
    assert_eq!(mounts_at(&expected), []);
    assert!(!expected.exists());
    assert!(run_dir.is_dir());
}

#[test]
fn with_writable_writes_the_report_and_leaves_the_stick_read_only() {
    let (_stick, s, t) = mounted_stick(None);
    let m = Mount::mount(&s, t.path()).unwrap();
    let written = m
        .with_writable(|root| {
            let mounts = mounts_at(root);
            assert_eq!(
                options(&mounts[0].0),
                ["noatime", "nodev", "noexec", "nosuid", "rw"]
            );
            fs::write(root.join("report.json"), "{\"ok\":true}")?;
            Ok(root.join("report.json"))
        })
        .unwrap();
    assert_eq!(written, m.path().join("report.json"));
    assert_eq!(
        options(&mounts_at(m.path())[0].0),
        ["noatime", "nodev", "noexec", "nosuid", "ro"]
    );
    assert_eq!(fs::read_to_string(&written).unwrap(), "{\"ok\":true}");

    // A failing writer still leaves the stick read-only, and its error is the one returned.
    let e = m
        .with_writable(|_| -> anyhow::Result<()> { anyhow::bail!("disk full") })
        .unwrap_err();
    assert_eq!(format!("{e:#}"), "disk full");
    assert_eq!(
        options(&mounts_at(m.path())[0].0),
        ["noatime", "nodev", "noexec", "nosuid", "ro"]
    );

    // What was written survives an unmount: the next mount sees it.
    let path = m.path().to_path_buf();
    m.unmount().unwrap();
    let again = Mount::mount(&s, t.path()).unwrap();
    assert_eq!(again.path(), path);
    assert_eq!(
        fs::read_to_string(path.join("report.json")).unwrap(),
        "{\"ok\":true}"
    );
    again.unmount().unwrap();
}

#[test]
fn a_stale_mount_is_replaced_and_drop_detaches() {
    let (_stick, s, t) = mounted_stick(None);
    let crashed = Mount::mount(&s, t.path()).unwrap();
    let path = crashed.path().to_path_buf();
    std::mem::forget(crashed); // as if the agent had been killed
    let m = Mount::mount(&s, t.path()).unwrap();
    assert_eq!(mounts_at(&path).len(), 1);
    drop(m);
    assert_eq!(mounts_at(&path), []);
    assert!(!path.exists());
}

#[test]
fn a_second_stick_with_the_same_uuid_does_not_unmount_the_first() {
    let uuid = fresh_uuid();
    let a = LoopStick::whole(ext4("A", &uuid));
    let b = LoopStick::whole(ext4("B", &uuid));
    let t = tempfile::tempdir().unwrap();
    let first = Mount::mount(&Stick::probe(&a.devnode).unwrap(), t.path()).unwrap();
    let e = Mount::mount(&Stick::probe(&b.devnode).unwrap(), t.path()).unwrap_err();
    assert_eq!(e.code(), Code::Busy);
    assert_eq!(
        e.one_line(),
        format!(
            "{}: another device ({}) with the same filesystem UUID is mounted there",
            first.path().display(),
            devnum(&a.devnode)
        )
    );
    let mounts = mounts_at(first.path());
    assert_eq!(mounts.len(), 1);
    assert_eq!(Path::new(&mounts[0].2), a.devnode);
    first.unmount().unwrap();
}

#[test]
fn a_stick_that_cannot_be_mounted_is_50_naming_device_and_mountpoint() {
    // A corrupt stick: udev said ext4, the superblock is gone. Any kernel with ext4 (the
    // only filesystem these tests need) refuses it the same way.
    let stick = LoopStick::whole(None);
    let mut s = Stick::probe(&stick.devnode).unwrap();
    s.fs_type = "ext4".into();
    let t = tempfile::tempdir().unwrap();
    let point = t.path().canonicalize().unwrap().join(&s.uuid);
    let e = Mount::mount(&s, t.path()).unwrap_err();
    assert_eq!(e.code(), Code::Copy);
    assert_eq!(
        e.one_line(),
        format!(
            "cannot mount {} (ext4) at {}: EINVAL: Invalid argument",
            stick.devnode.display(),
            point.display()
        )
    );
    assert!(!point.exists());

    // A filesystem no kernel has a driver for: ENODEV, and the message says so.
    s.fs_type = "usbupdatetestfs".into();
    let e = Mount::mount(&s, t.path()).unwrap_err();
    assert_eq!(e.code(), Code::Copy);
    assert_eq!(
        e.one_line(),
        format!(
            "cannot mount {} (usbupdatetestfs) at {}: ENODEV: No such device \
             (this kernel has no usbupdatetestfs driver)",
            stick.devnode.display(),
            point.display()
        )
    );
    assert!(!point.exists());
}

#[test]
fn the_bundle_is_found_on_a_mounted_stick() {
    let content = tempfile::tempdir().unwrap();
    mkdirs(
        content.path(),
        &["offline-update/tuf", "offline-update/ostree_repo", "notes"],
    );
    let (_stick, s, t) = mounted_stick(Some(content.path()));
    let m = Mount::mount(&s, t.path()).unwrap();
    // lost+found is a directory too, without tuf/.
    assert!(m.path().join("lost+found").is_dir());
    assert_eq!(
        find_bundle(m.path(), None).unwrap(),
        m.path().join("offline-update")
    );
    m.unmount().unwrap();
}

// ---- find_bundle ----

fn bundle_err(root: &Path, pick: Option<&str>) -> (Code, String) {
    let e = find_bundle(root, pick).unwrap_err();
    (e.code(), e.one_line())
}

#[test]
fn find_bundle_at_the_root_or_one_level_down() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    mkdirs(root, &["tuf", "docs"]);
    assert_eq!(find_bundle(root, None).unwrap(), root);

    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    mkdirs(
        root,
        &["update/tuf", "update/apps", "photos/2024", "deep/er/tuf"],
    );
    fs::write(root.join("README.txt"), "x").unwrap();
    assert_eq!(find_bundle(root, None).unwrap(), root.join("update"));
}

#[test]
fn find_bundle_skips_hidden_appledouble_and_symlinks() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    mkdirs(
        root,
        &[
            ".hidden/tuf",
            "._update/tuf",
            ".Trashes/x/tuf",
            "real/tuf",
            "elsewhere/b/tuf",
        ],
    );
    symlink(root.join("real"), root.join("link")).unwrap();
    mkdirs(root, &["tufless"]);
    symlink(root.join("elsewhere/b/tuf"), root.join("tufless/tuf")).unwrap();
    assert_eq!(find_bundle(root, None).unwrap(), root.join("real"));

    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    mkdirs(root, &[".hidden/tuf", "._x/tuf", "target/b/tuf", "plain"]);
    symlink(root.join("target/b"), root.join("link")).unwrap();
    symlink(root.join("target/b/tuf"), root.join("plain/tuf")).unwrap();
    fs::write(root.join("._tuf"), "appledouble").unwrap();
    assert_eq!(
        bundle_err(root, None),
        (
            Code::MetadataNotFound,
            format!(
                "{}: no bundle on the stick (a directory with tuf/ at the root or one level down)",
                root.display()
            )
        )
    );
    // A symlink is not taken even when named.
    assert_eq!(bundle_err(root, Some("link")).0, Code::MetadataNotFound);
    assert_eq!(bundle_err(root, Some("plain")).0, Code::MetadataNotFound);
}

#[test]
fn several_bundles_are_refused_unless_the_policy_picks_one() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    mkdirs(root, &["tuf", "v2/tuf", "v1/tuf", "other"]);
    assert_eq!(
        bundle_err(root, None),
        (
            Code::PolicyRefused,
            format!(
                "{}: several bundles on the stick (., v1, v2): set [media] bundle to the one to take",
                root.display()
            )
        )
    );
    assert_eq!(find_bundle(root, Some("v1")).unwrap(), root.join("v1"));
    assert_eq!(find_bundle(root, Some(".")).unwrap(), root);
    assert_eq!(
        bundle_err(root, Some("other")),
        (
            Code::MetadataNotFound,
            format!(
                "{}: no bundle \"other\" on the stick ([media] bundle): no tuf/ in it",
                root.display()
            )
        )
    );
    assert_eq!(bundle_err(root, Some("v3")).0, Code::MetadataNotFound);
    for bad in ["../v1", "v1/..", "/", "", ".hidden", ".."] {
        assert_eq!(
            bundle_err(root, Some(bad)),
            (
                Code::MetadataNotFound,
                format!(
                    "{}: [media] bundle = {bad:?} is not \".\" or a visible directory name",
                    root.display()
                )
            ),
            "{bad}"
        );
    }
}

#[test]
fn find_bundle_on_an_unreadable_root_is_50() {
    let t = tempfile::tempdir().unwrap();
    let missing = t.path().join("gone");
    let (code, msg) = bundle_err(&missing, None);
    assert_eq!(code, Code::Copy);
    assert_eq!(
        msg,
        format!(
            "{}: No such file or directory (os error 2)",
            missing.display()
        )
    );
}

// ---- udev monitor ----

/// How long a test waits for something that must come before it calls it lost: a guard
/// against hanging, not a limit anything is measured against.
const HANG: Duration = Duration::from_secs(60);

/// Everything `next` (a monitor's or a watch's) reports, up to and including `last`.
fn reports_until(mut next: impl FnMut(Duration) -> Option<PathBuf>, last: &Path) -> Vec<PathBuf> {
    let deadline = Instant::now() + HANG;
    let mut seen = Vec::new();
    while !seen.iter().any(|n| n == last) {
        match next(deadline.saturating_duration_since(Instant::now())) {
            Some(node) => seen.push(node),
            None => panic!("{} never reported; seen {seen:?}", last.display()),
        }
    }
    seen
}

/// Every devnode the monitor reports, up to and including `last` (a test's own device: other
/// tests may plug sticks at the same time, and theirs are reported too).
fn reported_until(m: &mut Monitor, last: &Path) -> Vec<PathBuf> {
    reports_until(|left| m.next(left).unwrap(), last)
}

/// Every event of `devnode` so far has reached every udev monitor: a `change` of our own,
/// which udevd starts only once the device's (and its disk's or partitions') earlier events
/// are done, waited for with `--settle` (until it too has been sent to the monitors).
fn flush_events(devnode: &Path) {
    run(
        "udevadm",
        &[
            "trigger",
            "--settle",
            "--action=change",
            devnode.to_str().unwrap(),
        ],
    );
}

#[test]
fn monitor_reports_a_new_partition_with_a_filesystem() {
    udev_support::ensure_udevd();
    let mut m = Monitor::new().unwrap();
    assert_eq!(m.next(Duration::ZERO).unwrap(), None);
    let uuid = fresh_uuid();
    let stick = LoopStick::partitioned(ext4("PLUGGED", &uuid));
    let seen = reported_until(&mut m, &stick.devnode);
    assert_eq!(seen.iter().filter(|n| **n == stick.devnode).count(), 1);
    // The disk is not a medium. Not asserted on the monitor's reports: a loop device reused
    // right after another test's whole-disk stick may serve that stick's superblock from
    // its cache to udev's first probe, a transient report that `agent handle` ignores once
    // it probes the settled device, as here.
    flush_events(&stick.loopdev);
    let disk = Stick::probe(&stick.loopdev).unwrap();
    assert_eq!(disk.fs_type, "", "the disk is not a medium: {disk:?}");
    assert_eq!(
        disk.accept(&MediaPolicy {
            require_usb: false,
            ..MediaPolicy::default()
        }),
        Err(format!("{}: no filesystem", stick.loopdev.display()))
    );
}

#[test]
fn monitor_takes_a_new_medium_once_and_ignores_partitions_without_filesystem() {
    udev_support::ensure_udevd();
    let mut m = Monitor::new().unwrap();
    let empty = LoopStick::partitioned(None);
    // Attaching a filesystem image to a loop device is a "change" that brings a medium, as a
    // card reader's is: it counts, once.
    let uuid = fresh_uuid();
    let changed = LoopStick::whole(ext4("CHANGED", &uuid));
    let mut seen = reported_until(&mut m, &changed.devnode);
    // Another change with the same filesystem (every close after a write sends one) is not
    // a new stick; neither is anything of the disk without a filesystem. Once their events
    // have reached the monitor, a stick plugged after them is the next thing reported.
    flush_events(&changed.devnode);
    flush_events(&empty.devnode);
    flush_events(&empty.loopdev);
    let sentinel_uuid = fresh_uuid();
    let sentinel = LoopStick::whole(ext4("LATER", &sentinel_uuid));
    seen.extend(reported_until(&mut m, &sentinel.devnode));
    assert!(!seen.contains(&empty.devnode), "{seen:?}");
    assert!(!seen.contains(&empty.loopdev), "{seen:?}");
    assert_eq!(
        seen.iter().filter(|d| **d == changed.devnode).count(),
        1,
        "{seen:?}"
    );
}

// ---- automount directories ----

/// The media the watch reports until it reports `last` (each only once: a second report
/// shows as a second entry).
fn watched_until(w: &mut DirWatch, last: &Path) -> Vec<PathBuf> {
    reports_until(|left| w.next(left).unwrap(), last)
}

#[test]
fn dir_watch_reports_a_udisks_style_mount_once_it_is_mounted() {
    let content = tempfile::tempdir().unwrap();
    mkdirs(content.path(), &["bundle/tuf"]);
    let uuid = fresh_uuid();
    let stick = LoopStick::whole(Some(Fs {
        label: "STICK",
        uuid: &uuid,
        populate: Some(content.path()),
    }));
    let media = tempfile::tempdir().unwrap();
    let mut w = DirWatch::new(&[media.path().to_path_buf()]).unwrap();
    assert_eq!(w.next(Duration::ZERO).unwrap(), None);

    // udisks2: mkdir /run/media/<user>/<label>, then mount on it. A medium that comes
    // after the directory is reported first: the directory, looked at before it, is not
    // a medium while nothing is mounted there.
    let point = media.path().join("operator/STICK");
    fs::create_dir_all(&point).unwrap();
    let _before = Tmpfs::mount(&media.path().join("before"), &["tuf"]);
    assert_eq!(
        watched_until(&mut w, &media.path().join("before")),
        [media.path().join("before")],
        "nothing mounted on {} yet",
        point.display()
    );
    run(
        "mount",
        &[
            "-o",
            "ro",
            stick.devnode.to_str().unwrap(),
            point.to_str().unwrap(),
        ],
    );
    let got = w.next(HANG);
    let _ = Command::new("umount").arg(&point).status();
    assert_eq!(got.unwrap(), Some(point.clone()));
    // Reported once: the next medium is the next report.
    let _after = Tmpfs::mount(&media.path().join("after"), &["tuf"]);
    assert_eq!(
        watched_until(&mut w, &media.path().join("after")),
        [media.path().join("after")]
    );
}
/// A tmpfs mounted on `dir` (created first, as automounters do) holding `inside`: a
/// medium as udisks2 would present it, without a block device.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, inside: &[&str]) -> Tmpfs {
        fs::create_dir_all(dir).unwrap();
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                "size=1m",
                "medium",
                dir.to_str().unwrap(),
            ],
        );
        mkdirs(dir, inside);
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn dir_watch_takes_new_media_with_a_bundle_only() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("media"); // created by DirWatch::new
    let other = t.path().join("other");
    mkdirs(&other, &["user"]);
    let _old = Tmpfs::mount(&other.join("old"), &["tuf"]);
    let mut w = DirWatch::new(&[root.clone(), other.clone()]).unwrap();
    assert!(root.is_dir());

    // Not media: mounted before the watch, a plain directory with a bundle, a symlink to a
    // medium, a medium without a bundle, a mount on a directory that was already there.
    let elsewhere = tempfile::tempdir().unwrap();
    let _target = Tmpfs::mount(&elsewhere.path().join("m"), &["tuf"]);
    mkdirs(&root, &["plain/update/tuf"]);
    symlink(elsewhere.path().join("m"), root.join("link")).unwrap();
    let _blank = Tmpfs::mount(&root.join("blank"), &["photos"]);
    let _fixed = Tmpfs::mount(&other.join("user"), &["tuf"]);

    // Media, each after all of those: a medium at depth one with its bundle one level down,
    // at depth two with the bundle at its root, one with two bundles (reported: the agent
    // says why it refuses it), and a last one. Each is the next report: none of the above
    // came before it, nor any medium twice.
    let (mut seen, mut media) = (Vec::new(), Vec::new());
    for (dir, inside) in [
        ("usb0", &["update/tuf"][..]),
        ("operator/LABEL", &["tuf"]),
        ("two", &["a/tuf", "b/tuf"]),
        ("last", &["tuf"]),
    ] {
        media.push(Tmpfs::mount(&root.join(dir), inside));
        seen.extend(watched_until(&mut w, &root.join(dir)));
    }
    let want: Vec<PathBuf> = media.iter().map(|m| m.0.clone()).collect();
    assert_eq!(seen, want);
}

#[test]
fn dir_watch_polled_briefly_between_other_waits_still_sees_the_medium() {
    // `agent watch` alternates a long udev wait with a 10 ms look at the directories.
    let t = tempfile::tempdir().unwrap();
    let mut w = DirWatch::new(&[t.path().to_path_buf()]).unwrap();
    let _medium = Tmpfs::mount(&t.path().join("operator/LABEL"), &["bundle/tuf", "x", "y"]);
    let deadline = Instant::now() + HANG;
    let mut looks = 0;
    let got = loop {
        std::thread::sleep(Duration::from_millis(200)); // the udev wait
        looks += 1;
        if let Some(dir) = w.next(Duration::from_millis(10)).unwrap() {
            break dir;
        }
        assert!(Instant::now() < deadline, "never seen in {looks} looks");
    };
    eprintln!("seen at look {looks}");
    assert_eq!(got, t.path().join("operator/LABEL"));
}

// ---- the udev rule ----

/// `udevadm test` of an `action` for one device with `rules` as the only files of
/// /run/udev/rules.d (the system's rules in /usr/lib still apply): in a mount namespace of
/// its own, so that neither the running udevd nor a test running beside this one sees them.
/// The properties it sets for SYSTEMD_WANTS, and its whole output.
fn udevadm_test(action: &str, stick: &LoopStick, rules: &[(&str, &str)]) -> (Vec<String>, String) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in rules {
        fs::write(dir.path().join(name), text).unwrap();
    }
    let script = format!(
        "mkdir -p /run/udev/rules.d && mount --bind {} /run/udev/rules.d && \
         exec udevadm test --action={action} /sys/class/block/{}",
        dir.path().display(),
        stick.kernel_name()
    );
    let out = run(
        "unshare",
        &["--mount", "--propagation", "private", "sh", "-c", &script],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let wants = text
        .lines()
        .filter(|l| l.starts_with("SYSTEMD_WANTS="))
        .map(str::to_string)
        .collect();
    (wants, text)
}

#[test]
fn the_udev_rule_wants_one_instance_per_usb_filesystem() {
    let rule_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("udev-rules/90-usb-update.rules");
    let rule = fs::read_to_string(&rule_file).unwrap();
    let (u1, u2) = (fresh_uuid(), fresh_uuid());
    let usb = LoopStick::whole(ext4("USB", &u1));
    let usb_blank = LoopStick::whole(None);
    let internal = LoopStick::whole(ext4("INTERNAL", &u2));
    // Loop devices have no ID_BUS: a test-only rule, before ours, makes two of them "usb".
    let fake_usb = format!(
        "KERNEL==\"{}|{}\", ENV{{ID_BUS}}=\"usb\"\n",
        usb.kernel_name(),
        usb_blank.kernel_name()
    );
    let rules = [
        ("89-usb-update-test-fake-usb.rules", fake_usb.as_str()),
        ("90-usb-update.rules", rule.as_str()),
    ];
    let (wants, text) = udevadm_test("add", &usb, &rules);
    assert!(
        text.contains("Reading rules file: /run/udev/rules.d/90-usb-update.rules"),
        "{text}"
    );
    // udev names the file and line of every rule it cannot parse (this udevadm, 252, has
    // no `verify`; the check below shows that this one fails on a broken rule).
    assert!(!text.contains("90-usb-update.rules:"), "{text}");
    assert!(text.lines().any(|l| l == "ID_BUS=usb"), "{text}");
    println!("udevadm test --action=add {}: {wants:?}", usb.kernel_name());
    assert_eq!(
        wants,
        [format!(
            "SYSTEMD_WANTS=usb-update@{}.service",
            usb.kernel_name()
        )]
    );
    let others = [
        udevadm_test("change", &usb, &rules).0,
        udevadm_test("add", &usb_blank, &rules).0,
        udevadm_test("add", &internal, &rules).0,
    ];
    assert_eq!(others, [Vec::<String>::new(), vec![], vec![]]);

    // The parse check can fail: an unknown key in the rule is named with its line.
    let broken = format!("{rule}\nKERNEL==\"loop*\", NOSUCHKEY{{x}}=\"y\"\n");
    let line = broken.lines().count();
    let (_, text) = udevadm_test("add", &usb, &[("90-usb-update.rules", &broken)]);
    assert!(
        text.contains(&format!(
            "90-usb-update.rules:{line} Invalid key 'NOSUCHKEY'"
        )),
        "{text}"
    );
    // Nothing of it reached the machine's rules.
    assert!(!Path::new("/run/udev/rules.d/90-usb-update.rules").exists());
}
