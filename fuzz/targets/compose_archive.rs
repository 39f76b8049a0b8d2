//! Compose archive extraction on hostile input: no panic, and whatever it accepts lands
//! inside the destination, as regular files and directories only; on refusal the
//! destination is gone. The input is a tar stream (gzipped here, so the fuzzer works on tar
//! headers rather than on deflate).

use std::io::Write as _;
use std::path::Path;

use usb_update::apps::archive;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip in memory");
    e.finish().expect("gzip in memory")
}

fn walk(root: &Path, dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("listing what was extracted") {
        let entry = entry.expect("entry");
        let kind = entry.file_type().expect("file type");
        assert!(
            kind.is_file() || kind.is_dir(),
            "{}: not a file or directory",
            entry.path().display()
        );
        assert!(entry.path().starts_with(root));
        if kind.is_dir() {
            walk(root, &entry.path());
        }
    }
}

pub fn run(data: &[u8]) {
    let gz = gzip(data);
    let _ = archive::read_member(gz.as_slice(), "docker-compose.yml", 1 << 20);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dest = tmp.path().join("p");
    let limits = archive::Limits {
        max_entries: 64,
        max_bytes: 1 << 20,
    };
    match archive::extract_tgz(gz.as_slice(), &dest, &limits) {
        Ok(files) => {
            walk(&dest, &dest);
            for f in files {
                assert!(f.is_relative(), "{}", f.display());
                assert!(dest.join(&f).is_file(), "{}", f.display());
            }
        }
        Err(_) => assert!(
            !dest.exists(),
            "refused, but the destination is still there"
        ),
    }
    // Nothing beside the destination.
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("tmp")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(names.iter().all(|n| n == "p"), "{names:?}");
}
