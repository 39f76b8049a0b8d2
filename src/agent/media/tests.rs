use std::fs;

use nix::mount::MsFlags;

use super::mount::{is_mount_point, mount_name, mount_options};
use super::*;
use crate::policy::MediaPolicy;
use crate::Code;

fn stick(fs_type: &str, bus: Option<&str>, removable: bool) -> Stick {
    Stick {
        devnode: "/dev/sdb1".into(),
        fs_type: fs_type.into(),
        uuid: "1234-ABCD".into(),
        label: "UPDATE".into(),
        bus: bus.map(String::from),
        removable,
    }
}

#[test]
fn mount_options_are_read_only_and_fat_gets_owner_and_masks() {
    let ro = MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC
        | MsFlags::MS_NOATIME;
    let vfat = "uid=0,gid=0,fmask=0133,dmask=0022,utf8,shortname=mixed";
    let exfat = "uid=0,gid=0,fmask=0133,dmask=0022,iocharset=utf8";
    assert_eq!(mount_options("vfat"), (ro, vfat.to_string()));
    assert_eq!(mount_options("exfat"), (ro, exfat.to_string()));
    assert_eq!(mount_options("ext4"), (ro, String::new()));
    assert_eq!(mount_options("ntfs3"), (ro, String::new()));
}

#[test]
fn mount_names_are_one_harmless_component() {
    assert_eq!(mount_name("1234-ABCD"), "1234-ABCD");
    assert_eq!(mount_name("0b0e_x"), "0b0e_x");
    assert_eq!(mount_name("../../etc"), "______etc");
    assert_eq!(mount_name("a b/c\\x2f"), "a_b_c_x2f");
    assert_eq!(mount_name(".."), "__");
    assert_eq!(mount_name(""), "stick");
    assert_eq!(mount_name(&"f".repeat(300)), "f".repeat(64));
    assert_eq!(mount_name("é"), "_");
}

#[test]
fn accept_follows_the_labels() {
    let policy = MediaPolicy {
        labels: vec!["USBUPDATE".into(), "UPDATE".into()],
        ..MediaPolicy::default()
    };
    assert_eq!(stick("vfat", Some("usb"), true).accept(&policy), Ok(()));
    let mut other = stick("vfat", Some("usb"), true);
    other.label = "PHOTOS".into();
    assert_eq!(
        other.accept(&policy),
        Err("/dev/sdb1: label \"PHOTOS\" is not one of [media] labels (USBUPDATE, UPDATE)".into())
    );
}

#[test]
fn accept_follows_the_policy() {
    let policy = MediaPolicy::default();
    assert_eq!(stick("vfat", Some("usb"), true).accept(&policy), Ok(()));
    assert_eq!(stick("exfat", Some("usb"), true).accept(&policy), Ok(()));
    assert_eq!(
        stick("", Some("usb"), true).accept(&policy),
        Err("/dev/sdb1: no filesystem".into())
    );
    assert_eq!(
        stick("ntfs", Some("usb"), true).accept(&policy),
        Err(
            "/dev/sdb1: filesystem ntfs is not one of [media] filesystems (vfat, exfat, ext4)"
                .into()
        )
    );
    assert_eq!(
        stick("vfat", Some("ata"), true).accept(&policy),
        Err("/dev/sdb1: not a usb device (ID_BUS=ata) and [media] require_usb is set".into())
    );
    assert_eq!(
        stick("vfat", None, true).accept(&policy),
        Err("/dev/sdb1: not a usb device (ID_BUS=none) and [media] require_usb is set".into())
    );
    assert_eq!(stick("vfat", Some("usb"), false).accept(&policy), Ok(()));
    let rig = MediaPolicy {
        require_usb: false,
        ..policy
    };
    assert_eq!(stick("ext4", None, false).accept(&rig), Ok(()));
    assert_eq!(
        stick("", None, false).accept(&rig),
        Err("/dev/sdb1: no filesystem".into())
    );
}

#[test]
fn a_root_listing_stops_at_its_cap_and_ignores_what_is_not_a_directory() {
    let t = tempfile::tempdir().unwrap();
    fs::create_dir_all(t.path().join("b/tuf")).unwrap();
    let mode = nix::sys::stat::Mode::from_bits_truncate(0o644);
    nix::unistd::mkfifo(&t.path().join("fifo"), mode).unwrap();
    std::os::unix::fs::symlink("b", t.path().join("link")).unwrap();
    for i in 0..ROOT_LIST_CAP - 3 {
        fs::write(t.path().join(format!("f{i}")), b"").unwrap();
    }
    assert_eq!(find_bundle(t.path(), None).unwrap(), t.path().join("b"));
    fs::write(t.path().join("one-more"), b"").unwrap();
    let e = find_bundle(t.path(), None).unwrap_err();
    assert_eq!(e.code(), Code::InvalidBundle);
    assert!(
        e.one_line().ends_with("more than 10000 entries at the root of the stick: refused (a bundle stick holds a few)"),
        "{}",
        e.one_line()
    );
}

#[test]
fn a_plain_directory_is_not_a_mount_point_and_the_root_is() {
    let t = tempfile::tempdir().unwrap();
    assert!(!is_mount_point(&t.path().join("missing")));
    fs::create_dir(t.path().join("d")).unwrap();
    assert!(!is_mount_point(&t.path().join("d")));
    assert!(is_mount_point(Path::new("/proc")));
}
