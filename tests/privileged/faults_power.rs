//! Power cuts: a power cut right after a state write. The state directory is an ext4
//! filesystem on a loop device, mounted so that a lost write is likely (`commit=600`: no
//! periodic journal commit in the test's window; `noauto_da_alloc`: no implicit flush of a
//! file renamed over another). `install` is held right after it saved the state
//! (`USB_UPDATE_PAUSE_AT=state-saved`); another program's fsync on the same filesystem then
//! commits the journal, as would happen on a device any time. What the loop device has
//! received by then is what a power cut leaves: the filesystem's dirty pages and its
//! running journal transaction are in memory only, while every block the loop driver was
//! given is in the backing file (read through the host's page cache, which holds exactly
//! those writes). A copy of the backing file, mounted (its journal replayed as at boot),
//! must hold each file we rewrite whole: its old content or its new one.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::faults::{code, spawn_paused, usb_update};
use crate::common::scene::scene;

fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// An ext4 image on a loop device mounted at `at`; unmounted and detached on drop, also
/// when the mount itself failed or the test fails while it is mounted.
struct LoopFs {
    dev: String,
    at: Option<PathBuf>,
}

impl LoopFs {
    fn new(image: &Path, at: &Path, options: &str) -> LoopFs {
        let mut fs = LoopFs {
            dev: sh("losetup", &["--find", "--show", image.to_str().unwrap()]),
            at: None,
        };
        std::fs::create_dir_all(at).unwrap();
        sh("mount", &["-o", options, &fs.dev, at.to_str().unwrap()]);
        fs.at = Some(at.to_path_buf());
        fs
    }

    fn at(&self) -> &Path {
        self.at.as_deref().expect("mounted")
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if let Some(at) = &self.at {
            // Busy (a child of a failed test still in it): detached lazily, the loop device
            // is freed when the last user goes (losetup -d sets autoclear).
            let unmounted = Command::new("umount").arg(at).status();
            if !unmounted.is_ok_and(|s| s.success()) {
                let _ = Command::new("umount").arg("-l").arg(at).status();
            }
        }
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// Every regular file under `dir` (relative path -> content), `lost+found` aside.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.file_name().is_some_and(|n| n == "lost+found") {
                continue;
            }
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_path_buf();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

#[test]
fn state_files_are_old_or_new_after_a_power_cut() {
    let s = scene("1", &["1", "2", "3"], &["2", "3"], None);
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("state.img");
    sh("truncate", &["-s", "64M", image.to_str().unwrap()]);
    sh("mkfs.ext4", &["-q", "-F", image.to_str().unwrap()]);
    let dir = s.d.state_dir();
    let fs = LoopFs::new(&image, &dir, "commit=600,noauto_da_alloc");
    let src = s.b.path().to_str().unwrap();
    let target = |v: &str| format!("{}-lmp-{v}", crate::common::HWID);

    // The old state: an update done, everything on the disk.
    let r =
        s.d.command("install", &["--src-dir", src, "--target", &target("2")]);
    assert_eq!(r.code, 100, "{}{}", r.stdout, r.stderr);
    s.d.reboot_into(&s.commits["2"], "boot-1");
    assert_eq!(s.d.command("run", &[]).code, 0);
    sh("sync", &["-f", dir.join("state.json").to_str().unwrap()]);
    let old = files(&dir);
    assert!(
        old.contains_key(Path::new("state.json")),
        "{:?}",
        old.keys()
    );

    // The next install, held right after its state write.
    let cmd = usb_update(
        &s.d,
        &["install"],
        &["--src-dir", src, "--target", &target("3")],
    );
    let paused = spawn_paused(cmd, "state-saved", &work.path().join("paused"));
    let new = files(&dir);
    assert_ne!(new[Path::new("state.json")], old[Path::new("state.json")]);
    assert!(new.contains_key(Path::new("pending")));

    // The power cut now: what `save` made durable before it returned.
    let durable = power_cut(&image, work.path(), "cut-1");
    // Another program's fsync on the same filesystem commits the journal, ours included,
    // then the power cut: what was in the journal's running transaction is on the disk.
    let mut witness = std::fs::File::create(dir.join("witness")).unwrap();
    witness.write_all(b"x").unwrap();
    witness.sync_all().unwrap();
    drop(witness);
    let after = power_cut(&image, work.path(), "cut-2");

    code(&paused.go(), 100);

    for (cut, files) in [
        ("right after the save", &durable),
        ("after a journal commit", &after),
    ] {
        let report = verdicts(&old, &new, files);
        eprintln!("power cut {cut}:\n{}", report.join("\n"));
        assert!(
            !report
                .iter()
                .any(|l| l.contains("TORN") || l.contains("LOST")),
            "power cut {cut}:\n{}",
            report.join("\n")
        );
    }
    // `save` returned: the new state is durable (the device boots with the pending
    // installation it records), it parses, and the marker says the same.
    for files in [&durable, &after] {
        let state = &files[Path::new("state.json")];
        assert!(
            *state == new[Path::new("state.json")],
            "the saved state was lost: state.json is {}",
            if *state == old[Path::new("state.json")] {
                "the old one"
            } else {
                "neither old nor new"
            }
        );
        let v: serde_json::Value = serde_json::from_slice(state).unwrap();
        assert_eq!(v["pending"]["target"]["name"], target("3"));
        assert_eq!(
            files.get(Path::new("pending")).map(Vec::as_slice),
            Some(target("3").as_bytes())
        );
    }
    drop(fs);
}

/// A copy of what the loop device has received so far, mounted (journal replayed) and read.
fn power_cut(image: &Path, work: &Path, name: &str) -> BTreeMap<PathBuf, Vec<u8>> {
    let copy = work.join(format!("{name}.img"));
    std::fs::copy(image, &copy).unwrap();
    let snap = LoopFs::new(&copy, &work.join(name), "ro");
    files(snap.at())
}

/// Each file after the cut: its old content, its new one, or torn; and files lost.
fn verdicts(
    old: &BTreeMap<PathBuf, Vec<u8>>,
    new: &BTreeMap<PathBuf, Vec<u8>>,
    after: &BTreeMap<PathBuf, Vec<u8>>,
) -> Vec<String> {
    let mut report = Vec::new();
    for (path, bytes) in after {
        let name = path.to_string_lossy();
        // Our temporary files and the witness are nobody's state.
        if name.ends_with(".tmp") || name == "witness" {
            continue;
        }
        let verdict = if old.get(path) == Some(bytes) {
            "old"
        } else if new.get(path) == Some(bytes) {
            "new"
        } else {
            "TORN"
        };
        report.push(format!("{name}: {verdict} ({} bytes)", bytes.len()));
    }
    for (path, bytes) in new {
        if !after.contains_key(path) && old.contains_key(path) {
            report.push(format!(
                "{}: LOST ({} bytes before)",
                path.display(),
                bytes.len()
            ));
        }
    }
    report
}

/// The copy of an app's project kept for a rollback (`previous-apps/<app>/`) is on the disk
/// when the copy returns: the record that names it is written right after.
#[test]
fn a_kept_project_copy_is_on_the_disk_when_the_copy_returns() {
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("state.img");
    sh("truncate", &["-s", "32M", image.to_str().unwrap()]);
    sh("mkfs.ext4", &["-q", "-F", image.to_str().unwrap()]);
    let fs = LoopFs::new(
        &image,
        &work.path().join("state"),
        "commit=600,noauto_da_alloc",
    );
    let project = work.path().join("project");
    std::fs::create_dir_all(project.join("config")).unwrap();
    std::fs::write(
        project.join("docker-compose.yml"),
        "services:\n  a:\n    image: x\n",
    )
    .unwrap();
    std::fs::write(project.join("config/app.conf"), "key = value\n").unwrap();
    let kept = fs.at().join("previous-apps/app-01");
    usb_update::apps::previous::copy_tree(&project, &kept).unwrap();
    let after = power_cut(&image, work.path(), "cut");
    let copied: BTreeMap<PathBuf, Vec<u8>> = after
        .into_iter()
        .filter_map(|(p, b)| {
            Some((
                p.strip_prefix("previous-apps/app-01").ok()?.to_path_buf(),
                b,
            ))
        })
        .collect();
    assert_eq!(copied, files(&project), "the kept copy after a power cut");
}
