//! Bundle discovery on a directory tree the fuzzer builds (directories, files, symlinks,
//! hidden and `._` names): no panic; what is found is a directory with `tuf/` inside the
//! stick, never through a link; app listing and metadata reads stay inside too.

use std::path::Path;

const NAMES: [&str; 8] = ["tuf", "b", "c", ".h", "._x", "apps", "..", "x.json"];

pub fn run(data: &[u8]) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(outside.join("tuf")).expect("outside");
    let root = tmp.path().join("stick");
    std::fs::create_dir_all(&root).expect("root");
    // Each pair of bytes: a path of up to three names, and what to make there.
    for chunk in data.chunks(2).take(64) {
        let (a, kind) = (chunk[0], chunk.get(1).copied().unwrap_or(0));
        let mut p = root.clone();
        for i in 0..(1 + (a >> 6) as usize) {
            p.push(NAMES[((a >> (i * 2)) & 7) as usize]);
        }
        if !p.starts_with(&root) || p.components().any(|c| c.as_os_str() == "..") {
            continue;
        }
        let _ = std::fs::create_dir_all(p.parent().unwrap_or(Path::new("/nonexistent")));
        let _ = match kind % 4 {
            0 => std::fs::create_dir(&p),
            1 => std::fs::write(&p, [kind; 3]),
            2 => std::os::unix::fs::symlink(&outside, &p),
            _ => std::os::unix::fs::symlink("tuf", &p),
        };
    }
    let pick = match data.first().map(|b| b % 3) {
        Some(0) => Some("b"),
        Some(1) => Some("."),
        _ => None,
    };
    if let Ok(bundle) = usb_update::agent::media::find_bundle(&root, pick) {
        assert!(bundle.starts_with(&root), "{}", bundle.display());
        let meta = std::fs::symlink_metadata(bundle.join("tuf")).expect("tuf");
        assert!(meta.is_dir(), "tuf/ through a link");
        if let Ok(b) = usb_update::core::bundle::Bundle::open(&bundle) {
            let _ = b.app_uris();
            let _ = b.read_capped("tuf/x.json", 1 << 10);
        }
    }
}
