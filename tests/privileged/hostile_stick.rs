//! Hostile sticks that went around the verifier: each case on a
//! real stick (ext4 on a loop device, mounted read-only and nodev as the agent mounts it)
//! and a real sysroot, through `check` where it applies, `install` and `agent handle`. Every
//! run must give the documented code with one clear line naming the object and the class of
//! failure, leak no byte of a host secret the stick points at, leave the device as it was,
//! start aktualizr-lite again and leave the stick unmounted (see `crate::common::hostile`). Peak
//! memory of each case is measured by `bench/hostile.sh`, not here.

use std::path::Path;

use crate::common::faults::{SmallDisk, Snapshot};
use crate::common::hostile::{self, Hostile, Via::*, ALL, INSTALLING};

/// Case 1: libostree followed `ostree_repo/config -> /etc/shadow` and quoted its first line
/// in its parse error, on the console and in the report.
#[test]
fn a_repo_config_linked_to_a_host_file_is_refused_unread() {
    let h = Hostile::new();
    let secret = h.secret.clone();
    let stick = h.stick(|_, b| hostile::link(&b.join("ostree_repo/config"), &secret));
    let why = "ostree_repo/config is a symlink: refused";
    h.refused_by(ALL, &stick, 15, why);
}

/// Case 1: a `.filez` object linked to a host file leaked its bytes the same way.
#[test]
fn a_content_object_linked_to_a_host_file_is_refused_unread() {
    let h = Hostile::new();
    let (secret, obj) = (h.secret.clone(), h.payload_object());
    let stick = h.stick(|_, b| hostile::link(&b.join(&obj), &secret));
    let why = format!("{} is a symlink: refused", obj.display());
    h.refused_by(ALL, &stick, 15, &why);
}

/// Case 1: from a writable source, libostree created its scratch files through
/// `ostree_repo/tmp -> elsewhere`. Nothing but our reader touches the repo now, and only
/// to read: the install goes through and nothing appears anywhere.
#[test]
fn a_writable_source_with_linked_scratch_directories_is_only_read() {
    let h = Hostile::new();
    let src = h.root.join("rw-bundle");
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(h.bundle.path())
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success());
    let elsewhere = h.root.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    for d in ["tmp", "state", "refs", "extensions"] {
        let at = src.join("ostree_repo").join(d);
        let _ = std::fs::remove_dir_all(&at);
        hostile::link(&at, &elsewhere);
    }
    let before = crate::common::fingerprint(&src);
    let o = h.cli_on(Install, &src);
    assert_eq!(o.code, 100, "{}\n{}", o.stdout, o.stderr);
    let left: Vec<_> = std::fs::read_dir(&elsewhere).unwrap().collect();
    assert!(left.is_empty(), "written through the links: {left:?}");
    assert_eq!(
        crate::common::fingerprint(&src),
        before,
        "the source changed"
    );
    assert_eq!(crate::common::scene::deployments(&h.d)[0], h.v2);
}

/// Case 2: a FIFO where a file of the bundle belongs blocked the open forever (the unit's
/// 4 h timeout, aktualizr-lite stopped, the stick mounted): metadata, repo config, a tree
/// object, a content object.
#[test]
fn a_fifo_anywhere_in_the_bundle_is_refused_at_once() {
    let h = Hostile::new();
    let dirtree = h.largest("dirtree");
    let filez = h.payload_object();
    for rel in [
        Path::new("tuf/timestamp.json"),
        Path::new("ostree_repo/config"),
        &dirtree,
        &filez,
    ] {
        let stick = h.stick(|_, b| hostile::fifo(&b.join(rel)));
        let why = format!("{} is a FIFO, not a regular file: refused", rel.display());
        h.refused_by(ALL, &stick, 15, &why);
    }
}

/// Case 3: a repo file or object that is a link to a device, a device node, or a huge
/// sparse file: `check` said 100 (it never opened the repo) and `install` read gigabytes
/// into memory and died in GLib. Now each is refused by its type or size, unread.
#[test]
fn device_links_device_nodes_and_sparse_giants_are_refused_unread() {
    let h = Hostile::new();
    let commit = Path::new("ostree_repo/objects")
        .join(&h.v2[..2])
        .join(format!("{}.commit", &h.v2[2..]));
    let dirtree = h.largest("dirtree");

    let stick = h.stick(|_, b| hostile::link(&b.join(&commit), Path::new("/dev/zero")));
    let why = format!("{} is a symlink: refused", commit.display());
    h.refused_by(ALL, &stick, 15, &why);
    drop(stick);

    let stick = h.stick(|_, b| hostile::zero_device(&b.join(&dirtree)));
    let why = format!(
        "{} is a character device, not a regular file: refused",
        dirtree.display()
    );
    h.refused_by(ALL, &stick, 15, &why);
    drop(stick);

    let giant = 20u64 << 30;
    for (rel, cap) in [
        (Path::new("ostree_repo/config"), 64u64 << 10),
        (&dirtree, 16 << 20),
    ] {
        let stick = h.stick(|_, b| hostile::sparse(&b.join(rel), giant));
        let why = format!(
            "{} is {giant} bytes, over the {cap}-byte limit: refused",
            rel.display()
        );
        h.refused_by(ALL, &stick, 15, &why);
    }
}

/// Case 8: a content object that declares the size of the file it replaces and inflates to
/// 1 GiB: no more than the declared size is ever inflated, and it does not match.
#[test]
fn a_decompression_bomb_inflates_no_further_than_it_declares() {
    let h = Hostile::new();
    let (stick, obj, _, _) = h.bomb_stick(1 << 20, 1 << 30, false);
    let why = format!("{} does not match its checksum", obj.display());
    h.refused_by(INSTALLING, &stick, 50, &why);
}

/// Case 8: a bomb that declares 3 GiB honestly, on a device with less free space: refused
/// by the free-space bound (keeping a margin) before a byte is inflated or written.
#[test]
fn a_bomb_declaring_more_than_the_free_space_is_60_before_inflating() {
    let disk = SmallDisk::new(256);
    std::env::set_var("TMPDIR", &disk.dir);
    let h = Hostile::new();
    let (stick, obj, _, _) = h.bomb_stick(3 << 30, 64 << 20, false);
    let why = format!("not enough space: {} needs 3221225472 bytes", obj.display());
    h.refused_by(INSTALLING, &stick, 60, &why);
}

/// Case 8: with the commit's own `ostree.sizes` index, a bomb is refused by its size on the
/// stick (already by `check`), or, padded to the indexed size, by the size it declares,
/// before a byte is inflated.
#[test]
fn with_a_size_index_a_bomb_is_refused_before_inflating() {
    let h = Hostile::with_sizes(true);
    let (stick, obj, orig, bomb) = h.bomb_stick(3 << 30, 256 << 20, false);
    let why = format!(
        "{} has {bomb} bytes, the commit's size index says {orig}",
        obj.display()
    );
    h.refused_by(ALL, &stick, 50, &why);
    drop(stick);

    let (stick, obj, _, _) = h.bomb_stick(3 << 30, 64 << 20, true);
    let why = format!(
        "{} declares 3221225472 bytes, the commit's size index says 1048576",
        obj.display()
    );
    h.refused_by(INSTALLING, &stick, 50, &why);
}

/// Case 9: the stick root's listing in bundle discovery was unbounded: it streams now and
/// stops past its cap, before the entries cost memory.
#[test]
fn a_stick_root_with_too_many_entries_is_refused_while_listing() {
    let h = Hostile::new();
    let stick = h.stick(|root, _| {
        for i in 0..=usb_update::agent::media::ROOT_LIST_CAP {
            std::fs::write(root.join(format!("f{i}")), b"").unwrap();
        }
    });
    let why = format!(
        "more than {} entries at the root of the stick: refused",
        usb_update::agent::media::ROOT_LIST_CAP
    );
    h.refused(Agent, &stick, 15, &why);
}

/// The watchdog: an install that makes no progress (held here at the rootfs copy, as a
/// stick that stopped answering holds it) ends by itself after `[agent] stall_timeout`:
/// 50, one line, the error pattern, aktualizr-lite running again, the stick unmounted, the
/// device unchanged. Before, it waited for the unit's timeout.
#[test]
fn an_update_that_makes_no_progress_is_ended_by_the_watchdog() {
    let h = Hostile::new();
    h.set_policy("[agent]\nstall_timeout = \"2s\"\n");
    let stick = h.stick(|_, _| {});
    let before = Snapshot::take(&h.d, None);
    let mut cmd = crate::common::faults::usb_update(&h.d, &["agent", "handle"], &[stick.devnode()]);
    cmd.env("USB_UPDATE_PAUSE_AT", "pull-rootfs")
        .env("USB_UPDATE_PAUSE_FILE", h.root.join("paused"));
    let o = hostile::guarded(&mut cmd);
    let why = format!("no progress for 2 s reading {}", stick.devnode.display());
    h.assert_refused(Agent, &o, 50, &why, 0);
    before.assert_same(None);
    assert!(!hostile::mounted(&stick), "the stick left mounted");
    assert!(h.root.join("paused").exists(), "it never reached the copy");
}

/// Case 2 for app blobs, on a Compose device: a FIFO in place of an image layer blocked
/// the blob copy forever.
#[test]
fn a_fifo_for_an_app_blob_is_refused_at_once() {
    use crate::common::agent_rig::{error_led, Rig};
    use crate::common::apps::{app, T};
    let mut r = Rig::new();
    let f = r.s.f.name.clone();
    let b = r.s.bundle(vec![T::new("2", vec![app(&f, "app-01", "v2")])]);
    let blobs = b.path().join("apps/blobs/sha256");
    let largest = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let rel = largest.strip_prefix(b.path()).unwrap().to_path_buf();
    let content = tempfile::tempdir().unwrap();
    let dst = content.path().join("update");
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(b.path())
        .arg(&dst)
        .status()
        .unwrap();
    assert!(st.success());
    hostile::fifo(&dst.join(&rel));
    let stick = crate::common::stick::Stick::with(content.path(), "UPDATE");
    let before = Snapshot::take(&r.s.d, Some(r.s.image_ids()));
    let o = hostile::guarded(&mut crate::common::faults::usb_update(
        &r.s.d,
        &["agent", "handle"],
        &[stick.devnode()],
    ));
    let why = format!("{} is a FIFO, not a regular file: refused", rel.display());
    assert_eq!(o.code, 15, "{}\n{}", o.stdout, o.stderr);
    let errors: Vec<&str> = o
        .stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{}", o.stderr);
    assert!(errors[0].contains(&why), "{why:?} not in {:?}", errors[0]);
    assert_eq!(r.led(), error_led());
    assert!(!hostile::mounted(&stick));
    before.assert_same(Some(r.s.image_ids()));
}
