//! Write an offline-update bundle (and optionally the device's provisioned roots).
//!
//! `cargo run -p test-kit --bin make-bundle -- --out DIR [--hwid H] [--version V] [--rootfs-version W]
//! [--tag T] [--apps N] [--app-layer-bytes L] [--rotations R] [--targets K]
//! [--device-root-dir D] [--device-roots M] [--bulk-files F --bulk-bytes B]
//! [--rootfs-dir R | --rootfs-commit C]`
//!
//! The factory's keys are deterministic, so bundles made by separate runs share one root
//! chain: a device provisioned by one run accepts bundles of the next.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use clap::Parser;
use rand::{RngCore as _, SeedableRng as _};
use sha2::{Digest, Sha256};
use test_kit::gen::{
    self, ostree as gen_ostree, AppSpec, BundleSpec, BundleTargets, Factory, LayerEntry,
};

#[derive(Parser, Debug)]
#[command(about = "Write a Foundries-compatible offline-update bundle")]
struct Args {
    /// Bundle directory to write (tuf/, ostree_repo/, apps/).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value = gen::DEFAULT_HWID)]
    hwid: String,
    /// Target version (custom.version, a decimal string).
    #[arg(long, default_value = "42")]
    version: String,
    /// Build the rootfs of this version instead of V's: an apps-only release over it.
    /// targets.json then also lists this version's target (that commit, no apps), as a
    /// factory's does, so that a device booted on the commit knows what it runs.
    #[arg(long)]
    rootfs_version: Option<String>,
    /// Tag of the target and of bundle-targets.json.
    #[arg(long, default_value = "devel")]
    tag: String,
    /// Number of compose apps (app-01, app-02, ...), each a runnable busybox image.
    #[arg(long, default_value_t = 0)]
    apps: usize,
    /// Give each app's image an extra layer: one file of this many pseudo-random bytes,
    /// which gzip cannot shrink (for benchmarks).
    #[arg(long, default_value_t = 0)]
    app_layer_bytes: u64,
    /// Root rotations: the factory has roots 1..=1+R.
    #[arg(long, default_value_t = 0)]
    rotations: u64,
    /// Extra targets in targets.json (not in the bundle's list, no content).
    #[arg(long, default_value_t = 0)]
    targets: usize,
    /// Write the device's provisioned roots to D/ci/N.root.json (D = /usr/lib/sota/tuf).
    #[arg(long)]
    device_root_dir: Option<PathBuf>,
    /// Roots the device is provisioned with (1..=M); the bundle carries M+1.. .
    #[arg(long, default_value_t = 1)]
    device_roots: u64,
    /// Extra files of pseudo-random content in the OSTree commit (for benchmarks).
    #[arg(long, default_value_t = 0)]
    bulk_files: usize,
    /// Total size of the extra files, in bytes.
    #[arg(long, default_value_t = 0)]
    bulk_bytes: u64,
    /// Commit this directory as the rootfs instead of a synthetic tree: a bootable root in
    /// OSTree layout (`usr/etc`, kernel under `usr/lib/modules`), for the system test's VM.
    /// The device roots (--device-root-dir) are written before it is committed, so that
    /// they can live inside it.
    #[arg(long, conflicts_with = "bulk_files")]
    rootfs_dir: Option<PathBuf>,
    /// Use this commit, already in OUT/ostree_repo (e.g. a copy of another bundle's repo),
    /// as the rootfs instead of committing one: a second bundle of the same rootfs.
    #[arg(long, conflicts_with_all = ["bulk_files", "rootfs_dir"])]
    rootfs_commit: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let mut factory = Factory::new()?;
    for _ in 0..args.rotations {
        factory.rotate_root()?;
    }
    let device_roots = args.device_roots.clamp(1, factory.latest_version());

    let rootfs_version = args.rootfs_version.as_deref().unwrap_or(&args.version);
    let mut apps: Vec<AppSpec> = (1..=args.apps)
        .map(|i| {
            let name = format!("app-{i:02}");
            AppSpec::busybox(&factory.name, &name, &format!("{name} v{}", args.version))
        })
        .collect();
    // The layer files live only until the layers are built.
    let layer_files = if args.app_layer_bytes > 0 && !apps.is_empty() {
        std::fs::create_dir_all(&args.out)
            .with_context(|| format!("creating {}", args.out.display()))?;
        let dir = tempfile::Builder::new()
            .prefix(".app-layers-")
            .tempdir_in(&args.out)
            .with_context(|| format!("creating a scratch directory in {}", args.out.display()))?;
        for app in &mut apps {
            let file = dir.path().join(&app.name);
            let seed = format!("{} v{}", app.name, args.version);
            write_random(&file, &seed, args.app_layer_bytes)?;
            app.images[0]
                .layers
                .push(vec![LayerEntry::host("data/bulk.bin", file, 0o644)]);
        }
        Some(dir)
    } else {
        None
    };
    let kind = BundleSpec::new(Vec::new()).kind;
    if let Some(dir) = &args.device_root_dir {
        factory.write_device_roots(dir, &kind, device_roots)?;
        println!(
            "device:  roots 1..={device_roots} in {}/{kind}",
            dir.display()
        );
    }
    let content = if let Some(dir) = &args.rootfs_dir {
        let branch = format!("{}-lmp", args.hwid);
        let commit = gen_ostree::commit_dir(
            &args.out.join("ostree_repo"),
            &branch,
            dir,
            &gen_ostree::CommitOptions::new(&branch, Some(rootfs_version)),
        )?;
        let apps = gen::write_apps(&args.out, &factory.name, &apps)?;
        gen::Content { commit, apps }
    } else if let Some(commit) = &args.rootfs_commit {
        let repo = args.out.join("ostree_repo");
        if !gen_ostree::commit_object_path(&repo, commit).is_file() {
            anyhow::bail!("commit {commit} is not in {}", repo.display());
        }
        let apps = gen::write_apps(&args.out, &factory.name, &apps)?;
        gen::Content {
            commit: commit.clone(),
            apps,
        }
    } else if args.bulk_files > 0 {
        let commit = gen_ostree::commit_big_tree(
            &args.out.join("ostree_repo"),
            &format!("{}-lmp", args.hwid),
            rootfs_version,
            Vec::new(),
            args.bulk_files,
            args.bulk_bytes,
        )?;
        let apps = gen::write_apps(&args.out, &factory.name, &apps)?;
        gen::Content { commit, apps }
    } else {
        gen::write_content(&args.out, &factory.name, &args.hwid, rootfs_version, &apps)?
    };
    drop(layer_files);
    let main_target =
        gen::target_for(&args.hwid, &args.version, &content).with_tags(&[args.tag.as_str()]);

    let mut targets = Vec::with_capacity(args.targets + 2);
    let mut n = 0u64;
    while targets.len() < args.targets {
        n += 1;
        let version = n.to_string();
        if version == args.version || version == rootfs_version {
            continue;
        }
        let commit = hex::encode(Sha256::digest(format!("extra-commit-{n}")));
        targets.push(gen::TargetSpec::new(&args.hwid, &version, &commit).with_tags(&[&args.tag]));
    }
    if rootfs_version != args.version {
        targets.push(
            gen::TargetSpec::new(&args.hwid, rootfs_version, &content.commit)
                .with_tags(&[&args.tag]),
        );
    }
    targets.push(main_target.clone());

    let mut spec = BundleSpec::new(targets);
    spec.tag = args.tag.clone();
    spec.bundle_targets = BundleTargets::Only(vec![main_target.name.clone()]);
    spec.roots_from = device_roots + 1;
    gen::write_bundle(&factory, &spec, &args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;

    println!("bundle:  {}", args.out.display());
    println!(
        "target:  {} (ostree commit {})",
        main_target.name, content.commit
    );
    for app in &content.apps {
        println!("app:     {}", app.uri);
    }
    println!(
        "tuf:     roots {}..={} in the bundle, {} targets in targets.json",
        spec.roots_from,
        factory.latest_version(),
        spec.targets.len()
    );
    println!("took:    {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// `path`: `len` bytes from a generator seeded by `seed` (the same bytes for the same seed).
fn write_random(path: &Path, seed: &str, len: u64) -> anyhow::Result<()> {
    let mut rng = rand::rngs::StdRng::from_seed(Sha256::digest(seed).into());
    let mut file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        file.write_all(&buf[..n])
            .with_context(|| format!("writing {}", path.display()))?;
        left -= n as u64;
    }
    Ok(())
}
