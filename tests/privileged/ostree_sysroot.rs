//! `usb_update::ostree` against real libostree: sysroots made with the `ostree` CLI in
//! temporary directories (`ostree::testsys`), commits made with `gen::ostree`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use test_kit::gen::ostree::{self as gen_ostree, CommitOptions, TreeFile};
use test_kit::testsys::TestSysroot;
use usb_update::config::{Config, Pacman};
use usb_update::ostree::{self as ost, PullProgress};
use usb_update::Code;

const OS: &str = "lmp";
const KARGS: &[&str] = &["root=LABEL=otaroot", "console=ttyS0,115200"];

/// A `Pacman` read from a config file, as the agent gets it.
fn pacman(sys: &TestSysroot, booted: &str) -> Pacman {
    let conf = sys
        .path
        .parent()
        .unwrap()
        .join(format!("sota-{booted}.toml"));
    fs::write(
        &conf,
        format!(
            "[provision]\nprimary_ecu_hardware_id = \"test\"\n\
             [pacman]\ntype = \"ostree\"\nsysroot = \"{}\"\nos = \"{OS}\"\nbooted = \"{booted}\"\n",
            sys.path.display()
        ),
    )
    .unwrap();
    Config::load(&[conf]).unwrap().pacman
}

/// An archive repo (the bundle's `ostree_repo`) with a bootable commit of `version`.
fn commit(repo: &Path, version: &str, extra: Vec<TreeFile>) -> String {
    gen_ostree::commit_tree_with(
        repo,
        "lmp",
        &gen_ostree::bootable_tree(version, extra),
        &CommitOptions::new(&format!("lmp-{version}"), Some(version)),
    )
    .unwrap()
}

/// A sysroot whose first deployment (v1, with [`KARGS`]) was made by the `ostree` CLI.
fn device(tmp: &Path) -> (TestSysroot, PathBuf, String) {
    let sys = TestSysroot::new(OS).unwrap();
    let factory = tmp.join("factory-repo");
    let v1 = commit(&factory, "1", vec![gen_ostree::firmware_version_file(1)]);
    sys.deploy_with_cli(&factory, &v1, KARGS).unwrap();
    (sys, factory, v1)
}

fn csums(p: &Pacman) -> Vec<String> {
    ost::deployments(p)
        .unwrap()
        .into_iter()
        .map(|d| d.csum)
        .collect()
}

fn has_commit(sys: &TestSysroot, csum: &str) -> bool {
    gen_ostree::commit_object_path(&sys.repo(), csum).exists()
}

/// Nothing half-done in the sysroot repo: no transaction directory, no partial marker.
fn assert_repo_clean(sys: &TestSysroot) {
    let tmp: Vec<String> = fs::read_dir(sys.repo().join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("staging-"))
        .collect();
    assert!(tmp.is_empty(), "staging left in the repo: {tmp:?}");
    let state: Vec<_> = fs::read_dir(sys.repo().join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(state.is_empty(), "state left in the repo: {state:?}");
    // libostree's own `ostree/<bootversion>/<subbootversion>/<n>` refs pin the deployments;
    // any other ref would be ours.
    let refs: Vec<String> = sys
        .refs()
        .unwrap()
        .into_iter()
        .filter(|r| !r.starts_with("ostree/"))
        .collect();
    assert_eq!(refs, Vec::<String>::new(), "refs");
    assert_eq!(sys.remotes().unwrap(), Vec::<String>::new(), "remotes");
}

/// Scan and pull `csum` from `repo`, the `ostree_repo` of a bundle directory (given a
/// `tuf/` here if it has none: these tests are about the repo only).
fn pull(
    p: &Pacman,
    repo: &Path,
    csum: &str,
) -> usb_update::Result<(ost::PullStats, Vec<PullProgress>)> {
    assert_eq!(
        repo.file_name().unwrap(),
        "ostree_repo",
        "{}",
        repo.display()
    );
    let dir = repo.parent().unwrap();
    if !dir.join("tuf").exists() {
        fs::create_dir_all(dir.join("tuf")).unwrap();
    }
    let bundle = usb_update::core::bundle::Bundle::open(dir)?;
    let plan = ost::scan_bundle_commit(p, &bundle, csum)?;
    let mut seen = Vec::new();
    let stats = ost::pull_from_bundle(p, &bundle, &plan, &mut |pr| seen.push(pr))?;
    Ok((stats, seen))
}

/// A file several paths share and a directory that appears several times: the scan
/// and the pull walk the tree the same way and count the same objects, so the progress
/// ends at its total. With a size index a shared file counts once; without, once per path
/// (a shared directory is walked once either way).
#[test]
fn shared_files_and_directories_count_the_same_in_the_scan_and_the_pull() {
    let mut plans = Vec::new();
    for indexed in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let (sys, _factory, _v1) = device(tmp.path());
        let p = pacman(&sys, "staged");
        let dir = tmp.path().join("bundle");
        let repo = dir.join("ostree_repo");
        let mut extra = vec![gen_ostree::firmware_version_file(2)];
        for d in ["a", "b", "c"] {
            extra.push(TreeFile::file(
                &format!("usr/share/{d}/x"),
                vec![1u8; 5000],
                0o644,
            ));
        }
        for f in ["d1", "d2"] {
            extra.push(TreeFile::file(
                &format!("usr/share/{f}"),
                vec![2u8; 7000],
                0o644,
            ));
        }
        let mut opts = CommitOptions::new("lmp-2", Some("2"));
        opts.generate_sizes = indexed;
        let v2 = gen_ostree::commit_tree_with(
            &repo,
            "lmp",
            &gen_ostree::bootable_tree("2", extra),
            &opts,
        )
        .unwrap();
        fs::create_dir_all(dir.join("tuf")).unwrap();
        let bundle = usb_update::core::bundle::Bundle::open(&dir).unwrap();
        let plan = ost::scan_bundle_commit(&p, &bundle, &v2).unwrap();
        let mut seen = Vec::new();
        let stats = ost::pull_from_bundle(&p, &bundle, &plan, &mut |pr| seen.push(pr)).unwrap();
        let last = seen.last().expect("progress reported");
        assert_eq!(
            last.objects_total,
            plan.files + plan.metadata + 1,
            "{plan:?}"
        );
        assert_eq!(last.objects_done, last.objects_total, "{plan:?}");
        assert_eq!(last.bytes_done, plan.stored_bytes, "{plan:?}");
        if indexed {
            // Nothing written twice, nothing counted twice.
            assert_eq!(stats.objects, plan.files + plan.metadata + 1, "{plan:?}");
            assert!(plan.unpacked_bytes.is_some(), "{plan:?}");
        }
        assert!(has_commit(&sys, &v2));
        assert_repo_clean(&sys);
        plans.push(plan);
    }
    // d1 and d2 are one object: once with the index, twice without.
    assert_eq!(plans[1].files, plans[0].files + 1, "{plans:?}");
}

#[test]
fn pull_and_deploy_carry_kargs_etc_and_origin_and_leave_no_remote() {
    let tmp = tempfile::tempdir().unwrap();
    let (sys, _factory, v1) = device(tmp.path());
    let p = pacman(&sys, "staged");
    let first = ost::booted(&p).unwrap().expect("the first deployment");
    assert_eq!(first.csum, v1);
    // A local change in /etc must survive the update (3-way merge from the merge deployment).
    fs::write(first.path.join("etc/site.conf"), "site=1\n").unwrap();

    let bundle = tmp.path().join("bundle/ostree_repo");
    let v2 = commit(
        &bundle,
        "2",
        vec![
            gen_ostree::firmware_version_file(2),
            TreeFile::file("usr/share/v2", vec![7u8; 100_000], 0o644),
        ],
    );
    // The stick is mounted read-only.
    fs::create_dir_all(bundle.parent().unwrap().join("tuf")).unwrap();
    let ro = ReadOnlyBind::new(bundle.parent().unwrap(), &tmp.path().join("stick"));
    let (stats, seen) = pull(&p, &ro.path().join("ostree_repo"), &v2).unwrap();
    drop(ro);
    assert!(!stats.skipped);
    assert!(stats.objects > 0 && stats.bytes >= 100_000, "{stats:?}");
    let last = seen.last().expect("progress reported");
    assert_eq!(last.objects_done, last.objects_total);
    assert!(last.objects_total >= stats.objects, "{last:?} vs {stats:?}");
    assert_eq!(last.percent(), 100);
    assert!(has_commit(&sys, &v2));
    assert_repo_clean(&sys);

    // Already there: nothing read or written.
    let (again, _) = pull(&p, &bundle, &v2).unwrap();
    assert!(again.skipped && again.objects == 0, "{again:?}");

    let new = ost::deploy(&p, &v2).unwrap();
    assert_eq!((new.osname.as_str(), new.csum.as_str()), (OS, v2.as_str()));
    assert_eq!(new.origin_refspec.as_deref(), Some(v2.as_str()));
    for k in KARGS {
        assert!(
            new.kargs.split(' ').any(|a| a == *k),
            "{k} not in {:?}",
            new.kargs
        );
    }
    assert_eq!(
        fs::read_to_string(new.path.join("usr/lib/firmware/version.txt")).unwrap(),
        "bootfirmware_version=2\n"
    );
    assert_eq!(
        fs::read_to_string(new.path.join("etc/site.conf")).unwrap(),
        "site=1\n"
    );
    assert_eq!(csums(&p), vec![v2.clone(), v1.clone()]);
    assert_eq!(ost::deployments(&p).unwrap()[0], new);
    assert_repo_clean(&sys);
    // A rerun (power cut before the state was written) finds it done.
    assert_eq!(ost::deploy(&p, &v2).unwrap(), new);
    assert_eq!(csums(&p), vec![v2.clone(), v1.clone()]);

    // staged: the default counts as booted; simulated without files too.
    assert_eq!(ost::booted(&p).unwrap().unwrap().csum, v2);
    let sim = pacman(&sys, "simulated");
    assert_eq!(ost::booted(&sim).unwrap().unwrap().csum, v2);
    assert_eq!(ost::boot_id(&sim).unwrap(), "sim-0");
    // A simulated reboot that the bootloader rolled back.
    sys.simulate_reboot(&v1, "boot-2").unwrap();
    assert_eq!(ost::booted(&sim).unwrap().unwrap().csum, v1);
    assert_eq!(
        ost::booted_commit(&sim).unwrap().as_deref(),
        Some(v1.as_str())
    );
    assert_eq!(ost::boot_id(&sim).unwrap(), "boot-2");
    // booted = "booted" on a sysroot nobody booted: nothing runs.
    assert_eq!(ost::booted(&pacman(&sys, "booted")).unwrap(), None);
    // A simulation file naming no deployment is an error that names the file.
    sys.simulate_reboot(&"ab".repeat(32), "boot-3").unwrap();
    let err = ost::booted(&sim).unwrap_err().to_string();
    assert!(err.contains(".usb-update-sim/booted"), "{err}");
}

#[test]
fn corrupted_object_in_bundle_is_a_copy_error_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (sys, _factory, v1) = device(tmp.path());
    let p = pacman(&sys, "staged");
    let bundle = tmp.path().join("bundle/ostree_repo");
    let content: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 3) as u8).collect();
    let v2 = commit(
        &bundle,
        "2",
        vec![TreeFile::file("usr/share/payload", content, 0o644)],
    );
    // Flip one byte in every file object that the device does not have yet.
    let mut flipped = 0;
    for dir in fs::read_dir(bundle.join("objects")).unwrap() {
        for obj in fs::read_dir(dir.unwrap().path()).unwrap() {
            let path = obj.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("filez") {
                continue;
            }
            let name = format!(
                "{}{}",
                path.parent()
                    .unwrap()
                    .file_name()
                    .unwrap()
                    .to_string_lossy(),
                path.file_stem().unwrap().to_string_lossy()
            );
            let (head, tail) = name.split_at(2);
            if sys
                .repo()
                .join(format!("objects/{head}/{tail}.file"))
                .exists()
            {
                continue;
            }
            let mut bytes = fs::read(&path).unwrap();
            let at = bytes.len() - 10;
            bytes[at] ^= 0x01;
            fs::write(&path, bytes).unwrap();
            flipped += 1;
        }
    }
    assert!(flipped > 0);
    let err = pull(&p, &bundle, &v2).unwrap_err();
    eprintln!("corrupted: {}", err.one_line());
    assert_eq!(err.code(), Code::Copy, "{}", err.one_line());
    assert!(err.one_line().contains(&v2), "{}", err.one_line());
    assert!(!has_commit(&sys, &v2));
    assert_repo_clean(&sys);
    assert_eq!(csums(&p), vec![v1.clone()]);
    // And deploy refuses what is not there.
    let e = ost::deploy(&p, &v2).unwrap_err();
    assert_eq!(e.code(), Code::Internal);
    assert_eq!(
        e.one_line(),
        format!(
            "commit {v2} is not (completely) in the repo of {}: pull it first",
            sys.path.display()
        )
    );
    assert_eq!(csums(&p), vec![v1]);
}

#[test]
fn commit_missing_from_bundle_is_content_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let (sys, _factory, _v1) = device(tmp.path());
    let p = pacman(&sys, "staged");
    let bundle = tmp.path().join("bundle/ostree_repo");
    commit(&bundle, "2", vec![]);
    let err = pull(&p, &bundle, &"ab".repeat(32)).unwrap_err();
    assert_eq!(err.code(), Code::ContentMissing, "{}", err.one_line());
    assert_repo_clean(&sys);
}

fn sh(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A read-only bind mount of a directory (the stick), unmounted on drop. It must be
/// read-only: a test of pulling from a read-only stick fails where it cannot make one.
struct ReadOnlyBind {
    dir: PathBuf,
}

impl ReadOnlyBind {
    fn new(src: &Path, dir: &Path) -> ReadOnlyBind {
        fs::create_dir_all(dir).unwrap();
        sh(Command::new("mount").arg("--bind").arg(src).arg(dir));
        let bind = ReadOnlyBind {
            dir: dir.to_path_buf(),
        };
        sh(Command::new("mount")
            .args(["-o", "remount,ro,bind"])
            .arg(dir));
        let e = fs::write(dir.join("probe"), "x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(nix::libc::EROFS), "{e}");
        bind
    }

    fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for ReadOnlyBind {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// A loop-mounted ext4 filesystem (root, util-linux), unmounted on drop: `mount -o loop`
/// gives the loop device back with the mount.
struct LoopMount {
    dir: PathBuf,
}

impl LoopMount {
    fn new(img: &Path, dir: &Path, size_mb: u64) -> LoopMount {
        let f = fs::File::create(img).unwrap();
        f.set_len(size_mb << 20).unwrap();
        fs::create_dir_all(dir).unwrap();
        sh(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(img));
        sh(Command::new("mount").args(["-o", "loop"]).arg(img).arg(dir));
        LoopMount {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

#[test]
fn full_disk_is_no_space_and_leaves_nothing_half_done() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = LoopMount::new(&tmp.path().join("disk.img"), &tmp.path().join("mnt"), 40);
    let sys = TestSysroot::init_at(&mnt.dir.join("sysroot"), OS).unwrap();
    let factory = tmp.path().join("factory-repo");
    let v1 = commit(&factory, "1", vec![]);
    sys.deploy_with_cli(&factory, &v1, KARGS).unwrap();
    let p = pacman(&sys, "staged");

    // 48 MB of incompressible data for a 40 MB filesystem.
    let bundle = tmp.path().join("bundle/ostree_repo");
    let big = gen_ostree::commit_big_tree(&bundle, "lmp", "2", vec![], 48, 48 << 20).unwrap();

    // libostree's own reserve (min-free-space-percent, 3% by default) stops it first.
    let err = pull(&p, &bundle, &big).unwrap_err();
    eprintln!("no space: {}", err.one_line());
    assert_eq!(err.code(), Code::NoSpace, "{}", err.one_line());
    assert!(!has_commit(&sys, &big));
    assert_repo_clean(&sys);
    assert_eq!(csums(&p), vec![v1.clone()]);

    // Without the reserve the kernel says ENOSPC: same code, same cleanup.
    let st = Command::new("ostree")
        .arg(format!("--repo={}", sys.repo().display()))
        .args(["config", "set", "core.min-free-space-percent", "0"])
        .status()
        .unwrap();
    assert!(st.success());
    let err = pull(&p, &bundle, &big).unwrap_err();
    eprintln!("no space: {}", err.one_line());
    assert_eq!(err.code(), Code::NoSpace, "{}", err.one_line());
    assert!(!has_commit(&sys, &big));
    assert_repo_clean(&sys);
    assert_eq!(csums(&p), vec![v1.clone()]);

    // The space really came back: a small update still goes through.
    let v3 = commit(&bundle, "3", vec![]);
    pull(&p, &bundle, &v3).unwrap();
    ost::deploy(&p, &v3).unwrap();
    assert_eq!(csums(&p), vec![v3, v1]);
    drop(sys);
    drop(mnt);
}

#[test]
fn make_default_remove_deployment_and_cleanup() {
    let tmp = tempfile::tempdir().unwrap();
    let (sys, _factory, v1) = device(tmp.path());
    let p = pacman(&sys, "simulated");
    let bundle = tmp.path().join("bundle/ostree_repo");
    let v2 = commit(
        &bundle,
        "2",
        vec![TreeFile::file("usr/share/v", "2", 0o644)],
    );
    pull(&p, &bundle, &v2).unwrap();
    ost::deploy(&p, &v2).unwrap();
    assert_eq!(csums(&p), vec![v2.clone(), v1.clone()]);

    // Apps failed on v2: v1 back first, v2 dropped (and its objects pruned).
    ost::make_default(&p, &v1).unwrap();
    assert_eq!(csums(&p), vec![v1.clone(), v2.clone()]);
    ost::make_default(&p, &v1).unwrap();
    assert_eq!(csums(&p), vec![v1.clone(), v2.clone()]);
    let e = ost::make_default(&p, &"ab".repeat(32)).unwrap_err();
    assert_eq!(
        format!("{e:#}"),
        format!(
            "no deployment of commit {} for \"lmp\" in {}",
            "ab".repeat(32),
            sys.path.display()
        )
    );
    // The one running cannot be removed.
    sys.simulate_reboot(&v2, "boot-1").unwrap();
    let e = ost::remove_deployment(&p, &v2).unwrap_err();
    assert_eq!(
        format!("{e:#}"),
        format!(
            "refusing to remove the deployment of {v2} from {}: it is the one running",
            sys.path.display()
        )
    );
    sys.simulate_reboot(&v1, "boot-2").unwrap();
    ost::remove_deployment(&p, &v2).unwrap();
    assert_eq!(csums(&p), vec![v1.clone()]);
    assert!(!has_commit(&sys, &v2), "the removed commit is pruned");
    ost::remove_deployment(&p, &v2).unwrap(); // rerun: nothing to do

    // Four deployments (made with --retain); running v3: keep the default (v4), the running
    // one and its rollback (v2), drop v1 and prune it.
    let mut all = vec![v1.clone()];
    for v in ["2", "3", "4"] {
        let c = commit(&bundle, v, vec![TreeFile::file("usr/share/v", v, 0o644)]);
        let out = Command::new("ostree")
            .arg(format!("--repo={}", sys.repo().display()))
            .args(["pull-local", "--untrusted"])
            .arg(&bundle)
            .arg(&c)
            .status()
            .unwrap();
        assert!(out.success());
        let out = Command::new("ostree")
            .args(["admin", "deploy", "--retain"])
            .arg(format!("--sysroot={}", sys.path.display()))
            .arg(format!("--os={OS}"))
            .arg(&c)
            .status()
            .unwrap();
        assert!(out.success());
        all.insert(0, c);
    }
    assert_eq!(csums(&p), all);
    sys.simulate_reboot(&all[1], "boot-3").unwrap();
    ost::cleanup(&p).unwrap();
    assert_eq!(csums(&p), all[..3].to_vec());
    assert!(!has_commit(&sys, &v1), "v1 pruned");
    assert!(all[..3].iter().all(|c| has_commit(&sys, c)));
    assert_repo_clean(&sys);
    // Nothing more to drop: cleanup is idempotent.
    ost::cleanup(&p).unwrap();
    assert_eq!(csums(&p), all[..3].to_vec());
}

#[test]
fn simulated_booted_deployment_is_the_merge_deployment() {
    let tmp = tempfile::tempdir().unwrap();
    let (sys, _factory, v1) = device(tmp.path());
    let p = pacman(&sys, "simulated");
    let bundle = tmp.path().join("bundle/ostree_repo");
    let v2 = commit(
        &bundle,
        "2",
        vec![TreeFile::file("usr/share/v", "2", 0o644)],
    );
    let v3 = commit(
        &bundle,
        "3",
        vec![TreeFile::file("usr/share/v", "3", 0o644)],
    );
    pull(&p, &bundle, &v2).unwrap();
    ost::deploy(&p, &v2).unwrap();
    // The bootloader fell back to v1; v2 stays the default. An update from there keeps the
    // running v1 as rollback and drops v2, as on a booted device.
    sys.simulate_reboot(&v1, "boot-1").unwrap();
    pull(&p, &bundle, &v3).unwrap();
    let new = ost::deploy(&p, &v3).unwrap();
    assert_eq!(csums(&p), vec![v3.clone(), v1.clone()]);
    assert!(new.kargs.contains(KARGS[0]), "{}", new.kargs);
    assert!(!has_commit(&sys, &v2), "pruned with its deployment");
}

/// `cargo test --release --features privileged-tests --test privileged -- --ignored --nocapture ostree_sysroot::bench`: our pull next to
/// `ostree pull-local --untrusted` on the same ~50 MB commit.
#[test]
#[ignore]
fn bench_pull_against_ostree_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle/ostree_repo");
    let files: usize = std::env::var("BENCH_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let mb: u64 = std::env::var("BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let big = gen_ostree::commit_big_tree(&bundle, "lmp", "2", vec![], files, mb << 20).unwrap();
    let run = |cli: bool| {
        let sys = TestSysroot::new(OS).unwrap();
        let p = pacman(&sys, "staged");
        Command::new("sync").status().unwrap();
        let t = std::time::Instant::now();
        if cli {
            let st = Command::new("ostree")
                .arg(format!("--repo={}", sys.repo().display()))
                .args(["pull-local", "--untrusted"])
                .arg(&bundle)
                .arg(&big)
                .status()
                .unwrap();
            assert!(st.success());
        } else {
            let (stats, seen) = pull(&p, &bundle, &big).unwrap();
            let mid = seen
                .iter()
                .filter(|s| s.objects_done < s.objects_total)
                .count();
            eprintln!(
                "  {stats:?}; {} progress reports, {mid} before the end",
                seen.len()
            );
        }
        t.elapsed().as_secs_f64()
    };
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let (mut sum_ours, mut sum_cli) = (0.0, 0.0);
    for round in 0..rounds {
        // Alternate the order so that cache warmth does not favour one side.
        let (ours, cli) = if round % 2 == 0 {
            (run(false), run(true))
        } else {
            let cli = run(true);
            (run(false), cli)
        };
        sum_ours += ours;
        sum_cli += cli;
        eprintln!(
            "round {round}: {files} files, {mb} MB: usb-update pull {ours:.2} s, ostree pull-local --untrusted {cli:.2} s, ratio {:.2}",
            ours / cli
        );
    }
    eprintln!(
        "total: usb-update {sum_ours:.2} s, ostree {sum_cli:.2} s, ratio {:.2}",
        sum_ours / sum_cli
    );
}
