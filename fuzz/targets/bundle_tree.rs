//! A bundle tree made hostile by the fuzzer: entries of a real bundle (TUF files, the
//! OSTree repo's config and objects, app files) and new ones at the stick's root replaced by
//! FIFOs, device nodes, sparse files up to 2 TiB, symlinks to a host secret, a host FIFO
//! and a host directory, directories of up to 16,320 entries, garbage or nothing. Then
//! bundle discovery, every bundle reader and the scan of the OSTree commit run on it.
//!
//! What must hold: nothing outside the stick is read. The host secret's bytes never come
//! back in any data or error; the host FIFO is never opened (that would block, and the
//! fuzzer reports the timeout); a bundle found is inside the stick, through no link.
//! Memory stays bounded whatever the sizes (the fuzzer's `-rss_limit_mb`).

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use usb_update::core::bundle::Bundle;
use usb_update::hostile_fs::Tree;
use usb_update::tuf::MetaSource as _;
use usb_update::core::tufdir::TufDir;

const MARKER: &str = "OUTSIDE-THE-STICK-7f3a";
const TUF: [&str; 5] = [
    "3.root.json",
    "timestamp.json",
    "snapshot.json",
    "targets.json",
    "bundle-targets.json",
];

struct Template {
    base: PathBuf,
    bundle: PathBuf,
    outside: PathBuf,
    commit: String,
    pacman: usb_update::config::Pacman,
    /// Entries of the bundle (relative to the stick) the fuzzer may replace.
    slots: Vec<String>,
}

fn template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| {
        // In memory when there is a tmpfs: thousands of files are made and removed per run.
        let shm = Path::new("/dev/shm");
        let base = match shm.is_dir() {
            true => tempfile::tempdir_in(shm),
            false => tempfile::tempdir(),
        }
        .expect("tempdir")
        .keep();
        let outside = base.join("outside");
        fs::create_dir_all(outside.join("dir/tuf")).expect("outside");
        fs::write(outside.join("secret"), format!("{MARKER}\n")).expect("secret");
        nix::unistd::mkfifo(
            &outside.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .expect("fifo");
        let bundle = base.join("template/update");
        fs::create_dir_all(bundle.join("tuf")).expect("tuf");
        for f in TUF {
            fs::write(bundle.join("tuf").join(f), b"{\"signed\":{},\"signatures\":[]}")
                .expect("tuf file");
        }
        let files = vec![
            test_kit::gen::ostree::TreeFile::file("usr/lib/os-release", "VERSION_ID=2\n", 0o644),
            test_kit::gen::ostree::TreeFile::file("usr/share/a", vec![1u8; 5000], 0o644),
            test_kit::gen::ostree::TreeFile::symlink("usr/share/l", "a"),
            test_kit::gen::ostree::TreeFile::dir("etc/empty"),
        ];
        let commit =
            test_kit::gen::ostree::commit_tree(&bundle.join("ostree_repo"), "lmp", &files)
                .expect("commit");
        let digest = "ab".repeat(32);
        let app = bundle.join("apps/apps/app-01").join(&digest);
        fs::create_dir_all(&app).expect("app");
        fs::write(app.join("uri"), format!("hub/f/app-01@sha256:{digest}")).expect("uri");
        fs::create_dir_all(bundle.join("apps/blobs/sha256")).expect("blobs");
        fs::write(bundle.join("apps/blobs/sha256").join(&digest), b"blob").expect("blob");
        let sysroot = base.join("sysroot");
        test_kit::testsys::init(&sysroot, "lmp").expect("sysroot");
        let conf = base.join("sota.toml");
        fs::write(
            &conf,
            format!(
                "[provision]\nprimary_ecu_hardware_id = \"hw\"\n[pacman]\ntype = \"ostree\"\n\
                 sysroot = \"{}\"\nos = \"lmp\"\nbooted = \"staged\"\n",
                sysroot.display()
            ),
        )
        .expect("config");
        let pacman = usb_update::config::Config::load(&[conf]).expect("config").pacman;
        let mut slots = Vec::new();
        collect(&bundle, &bundle, &mut slots);
        slots.sort();
        Template {
            base,
            bundle,
            outside,
            commit,
            pacman,
            slots,
        }
    })
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for e in fs::read_dir(dir).expect("template") {
        let p = e.expect("entry").path();
        let rel = p.strip_prefix(root).expect("prefix").to_string_lossy();
        out.push(format!("update/{rel}"));
        if p.is_dir() {
            collect(root, &p, out);
        }
    }
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for e in fs::read_dir(from).expect("read template") {
        let e = e.expect("entry");
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type().expect("type").is_dir() {
            copy_tree(&src, &dst);
        } else {
            fs::copy(&src, &dst).expect("copy");
        }
    }
}

fn clear(p: &Path) {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            let _ = fs::remove_dir_all(p);
        }
        Ok(_) => {
            let _ = fs::remove_file(p);
        }
        Err(_) => {}
    }
}

/// Make `rel` beneath `stick` hostile in way `action`, sized by `arg`.
fn plant(stick: &Path, rel: &str, action: u8, arg: u8, outside: &Path) {
    let p = &stick.join(rel);
    let mode = nix::sys::stat::Mode::from_bits_truncate(0o644);
    if let Some(parent) = p.parent() {
        let _ = fs::create_dir_all(parent);
    }
    match action % 10 {
        0 => {
            clear(p);
            let _ = nix::unistd::mkfifo(p, mode);
        }
        1 => {
            clear(p);
            let dev = nix::sys::stat::makedev(1, 5);
            let _ = nix::sys::stat::mknod(p, nix::sys::stat::SFlag::S_IFCHR, mode, dev);
        }
        2 => {
            clear(p);
            if let Ok(f) = fs::File::create(p) {
                let _ = f.set_len(1u64 << (30 + u32::from(arg % 12)));
            }
        }
        3 => {
            clear(p);
            let _ = std::os::unix::fs::symlink(outside.join("secret"), p);
        }
        4 => {
            clear(p);
            let _ = std::os::unix::fs::symlink(outside.join("fifo"), p);
        }
        5 => {
            clear(p);
            let _ = std::os::unix::fs::symlink(outside.join("dir"), p);
        }
        6 => {
            clear(p);
            // From the link's directory up to the stick's parent, where `outside` is.
            let up = "../".repeat(Path::new(rel).components().count());
            let _ = std::os::unix::fs::symlink(format!("{up}outside/secret"), p);
        }
        7 => {
            // A directory of `arg` entries, or of 16,320 (past every listing cap) for 255.
            if !p.is_dir() {
                clear(p);
                let _ = fs::create_dir_all(p);
            }
            let n = match arg {
                255 => 16_320,
                n => usize::from(n),
            };
            for i in 0..n {
                let _ = fs::write(p.join(format!("e{i}")), b"");
            }
        }
        8 => {
            clear(p);
            let _ = fs::write(p, vec![arg; usize::from(arg)]);
        }
        _ => clear(p),
    }
}

fn clean(what: &str, text: &str) {
    assert!(!text.contains(MARKER), "{what} carries bytes from outside the stick: {text}");
}

fn clean_bytes(what: &str, bytes: &[u8]) {
    let m = MARKER.as_bytes();
    assert!(
        !bytes.windows(m.len()).any(|w| w == m),
        "{what} read bytes from outside the stick"
    );
}

pub fn run(data: &[u8]) {
    let t = template();
    let tmp = tempfile::tempdir_in(&t.base).expect("tempdir");
    let stick = tmp.path().join("stick");
    copy_tree(&t.bundle, &stick.join("update"));
    // The outside as siblings of the stick, for relative links.
    let _ = std::os::unix::fs::symlink(&t.outside, tmp.path().join("outside"));
    for op in data.chunks(3).take(24) {
        let (sel, action, arg) = (op[0], op.get(1).copied().unwrap_or(0), op.get(2).copied().unwrap_or(0));
        let rel = match sel.checked_sub(224) {
            // New names at the stick's root (another bundle, junk).
            Some(n) => format!("x{}", n % 8),
            None => t.slots[usize::from(sel) % t.slots.len()].clone(),
        };
        plant(&stick, &rel, action, arg, &t.outside);
    }
    let pick = match data.last().map(|b| b % 4) {
        Some(0) => Some("update"),
        Some(1) => Some("."),
        _ => None,
    };
    match usb_update::agent::media::find_bundle(&stick, pick) {
        Ok(found) => {
            assert!(found.starts_with(&stick), "{}", found.display());
            let m = fs::symlink_metadata(found.join("tuf")).expect("tuf of the found bundle");
            assert!(m.is_dir(), "tuf/ through a link");
        }
        Err(e) => clean("find_bundle", &e.one_line()),
    }
    if let Ok(tree) = Tree::open(&stick) {
        match tree.names(".", 64) {
            Ok(names) => clean("names", &format!("{names:?}")),
            Err(r) => clean("names", &r.to_string()),
        }
        for rel in &t.slots {
            match tree.open_file(rel) {
                Ok(Some((f, _))) => {
                    let mut buf = Vec::new();
                    let _ = f.take(1 << 20).read_to_end(&mut buf);
                    clean_bytes(rel, &buf);
                }
                Ok(None) => {}
                Err(r) => clean(rel, &r.to_string()),
            }
        }
    }
    let bundle = match Bundle::open(&stick.join("update")) {
        Ok(b) => b,
        Err(e) => return clean("Bundle::open", &e.one_line()),
    };
    // tuf/ as the verifier reads it: once, capped, regular files only.
    match TufDir::read(&bundle, None) {
        Ok(tuf) => {
            for (f, bytes) in tuf.files() {
                clean_bytes(f, bytes);
            }
            match tuf.root_versions() {
                Ok(v) => assert!(v.len() <= usb_update::core::bundle::LIST_CAP),
                Err(e) => clean("root_versions", &e.msg),
            }
        }
        Err(e) => clean("tuf", &e.one_line()),
    }
    match bundle.app_uris() {
        Ok(uris) => clean("app_uris", &format!("{uris:?}")),
        Err(e) => clean("app_uris", &e.one_line()),
    }
    if let Err(e) = bundle.list_dir_capped("ostree_repo/objects", 300) {
        clean("list_dir", &e.one_line());
    }
    if let Err(e) = bundle.has_commit(&t.commit) {
        clean("has_commit", &e.one_line());
    }
    match usb_update::ostree::scan_bundle_commit(&t.pacman, &bundle, &t.commit) {
        Ok(plan) => assert!(plan.files <= 4 && plan.metadata <= 16, "{plan:?}"),
        Err(e) => clean("scan", &e.one_line()),
    }
}
