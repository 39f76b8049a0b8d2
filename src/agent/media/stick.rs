//! One stick: what udev knows about it, whether the agent takes it, and where the bundle
//! is on it.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::SFlag;

use crate::error::{Error, OrCode, Result};
use crate::hostile_fs::{Kind, Problem, Refused, Tree};
use crate::policy::MediaPolicy;

/// A block device with (perhaps) a filesystem, as udev described it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stick {
    pub devnode: PathBuf,
    /// `ID_FS_TYPE`; empty when udev found no filesystem.
    pub fs_type: String,
    /// `ID_FS_UUID`, else `ID_FS_UUID_ENC`, else the kernel name: never empty.
    pub uuid: String,
    pub label: String,
    /// `ID_BUS` (`usb`, `ata`, ...); loop and virtio devices have none.
    pub bus: Option<String>,
    /// The disk's sysfs `removable` flag (the parent disk's, for a partition).
    pub removable: bool,
}

impl Stick {
    /// What the udev database says about `devnode`.
    pub fn probe(devnode: &Path) -> Result<Stick> {
        let name = devnode.display();
        let st = nix::sys::stat::stat(devnode).or_internal(&name)?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFBLK {
            return Err(Error::internal(format!("{name}: not a block device")));
        }
        let dev = udev::Device::from_devnum(udev::DeviceType::Block, st.st_rdev)
            .or_internal(format!("{name}: unknown to udev"))?;
        // Without a database entry every property would read as absent, and the stick be
        // refused for the wrong reason ("no filesystem").
        if !dev.is_initialized() {
            return Err(Error::internal(format!(
                "{name}: unknown to udev (not in its database: is systemd-udevd running?)"
            )));
        }
        let prop = |key: &str| {
            dev.property_value(key)
                .map(|v| v.to_string_lossy().into_owned())
                .filter(|v| !v.is_empty())
        };
        // `removable` is an attribute of the disk; a partition has none of its own.
        let disk = match dev.devtype().and_then(|t| t.to_str()) {
            Some("partition") => dev.parent(),
            _ => Some(dev.clone()),
        };
        let removable = disk
            .as_ref()
            .and_then(|d| d.attribute_value("removable"))
            .is_some_and(|v| v.as_bytes().trim_ascii() == b"1");
        Ok(Stick {
            devnode: devnode.to_path_buf(),
            fs_type: prop("ID_FS_TYPE").unwrap_or_default(),
            uuid: prop("ID_FS_UUID")
                .or_else(|| prop("ID_FS_UUID_ENC"))
                .unwrap_or_else(|| dev.sysname().to_string_lossy().into_owned()),
            label: prop("ID_FS_LABEL").unwrap_or_default(),
            bus: prop("ID_BUS"),
            removable,
        })
    }

    /// `Err(reason)`: the agent leaves this device alone.
    pub fn accept(&self, policy: &MediaPolicy) -> std::result::Result<(), String> {
        let name = self.devnode.display();
        if self.fs_type.is_empty() {
            return Err(format!("{name}: no filesystem"));
        }
        if !policy.filesystems.contains(&self.fs_type) {
            return Err(format!(
                "{name}: filesystem {} is not one of [media] filesystems ({})",
                self.fs_type,
                policy.filesystems.join(", ")
            ));
        }
        if policy.require_usb && self.bus.as_deref() != Some("usb") {
            return Err(format!(
                "{name}: not a usb device (ID_BUS={}) and [media] require_usb is set",
                self.bus.as_deref().unwrap_or("none")
            ));
        }
        if !policy.labels.is_empty() && !policy.labels.contains(&self.label) {
            return Err(format!(
                "{name}: label {:?} is not one of [media] labels ({})",
                self.label,
                policy.labels.join(", ")
            ));
        }
        // Not `removable`: many USB flash drives and SSD enclosures report removable=0.
        Ok(())
    }
}

/// Flags and data of the read-only mount of a stick.
/// Most entries read from the root of a stick (a bundle stick holds a few; FAT16 roots
/// hold at most 512): the listing streams, and stops here rather than cost memory and time.
pub const ROOT_LIST_CAP: usize = 10_000;

/// Is `rel` (beneath the stick's root) a real directory holding a real `tuf/` directory?
/// Neither may be a symlink; nothing is opened for reading.
fn is_bundle(tree: &Tree, rel: &str) -> Result<bool> {
    let dir = |rel: &str| -> Result<bool> {
        match tree.kind(rel) {
            Ok(k) => Ok(matches!(k, Some((Kind::Dir, _)))),
            Err(r) if r.is_io() => Err(Error::copy(format!("{}: {r}", tree.path().display()))),
            // A symlink or a file on the way: not a bundle.
            Err(_) => Ok(false),
        }
    };
    let tuf = if rel == "." {
        "tuf".to_string()
    } else {
        format!("{rel}/tuf")
    };
    Ok(dir(rel)? && dir(&tuf)?)
}

/// The bundle on a mounted stick: a directory holding `tuf/`, at `root` or one level down;
/// `pick` (`[media] bundle`, `"."` for the root) chooses among several. Hidden entries
/// (with macOS `._*` files) and symlinks are never considered. The root's listing streams
/// and is refused past [`ROOT_LIST_CAP`] entries (15), whatever they are.
pub fn find_bundle(root: &Path, pick: Option<&str>) -> Result<PathBuf> {
    let at = root.display();
    // The refusal names the root itself.
    let tree = Tree::open(root).map_err(|r| Error::copy(r.to_string()))?;
    if let Some(pick) = pick {
        let rel = match pick {
            "." => ".",
            _ if !pick.is_empty() && !pick.contains('/') && !pick.starts_with('.') => pick,
            _ => {
                return Err(Error::not_found(format!(
                    "{at}: [media] bundle = {pick:?} is not \".\" or a visible directory name"
                )))
            }
        };
        if is_bundle(&tree, rel)? {
            return Ok(if rel == "." {
                root.to_path_buf()
            } else {
                root.join(rel)
            });
        }
        return Err(Error::not_found(format!(
            "{at}: no bundle {pick:?} on the stick ([media] bundle): no tuf/ in it"
        )));
    }
    let mut found = Vec::new();
    if is_bundle(&tree, ".")? {
        found.push((".".to_string(), root.to_path_buf()));
    }
    let mut names = Vec::new();
    let listed = tree.each_entry(".", ROOT_LIST_CAP, |name, kind| {
        // The type from the listing when the filesystem gives it; is_bundle looks otherwise.
        if !name.starts_with('.') && kind.is_none_or(|k| k == Kind::Dir) {
            names.push(name.to_string());
        }
    });
    match listed {
        Ok(_) => {}
        Err(r) if r.is_io() => return Err(Error::copy(format!("{at}: {r}"))),
        Err(Refused {
            problem: Problem::TooMany { .. },
            ..
        }) => {
            return Err(Error::invalid_bundle(format!(
                "{at}: more than {ROOT_LIST_CAP} entries at the root of the stick: refused \
                 (a bundle stick holds a few)"
            )))
        }
        Err(r) => return Err(Error::invalid_bundle(format!("{at}: {r}: refused"))),
    }
    names.sort();
    for name in names {
        if is_bundle(&tree, &name)? {
            let path = root.join(&name);
            found.push((name, path));
        }
    }
    match found.len() {
        0 => Err(Error::not_found(format!(
            "{at}: no bundle on the stick (a directory with tuf/ at the root or one level down)"
        ))),
        1 => Ok(found.remove(0).1),
        _ => Err(Error::policy(format!(
            "{at}: several bundles on the stick ({}): set [media] bundle to the one to take",
            found
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}
