use super::*;
use std::os::unix::fs::symlink;

/// A tree with one of everything a hostile stick can hold, and a secret outside it.
fn hostile() -> (tempfile::TempDir, Tree) {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("stick");
    std::fs::create_dir_all(root.join("dir/sub")).unwrap();
    std::fs::write(d.path().join("secret"), b"HOST SECRET").unwrap();
    std::fs::write(root.join("file"), b"hello").unwrap();
    std::fs::write(root.join("dir/sub/deep"), b"deep").unwrap();
    symlink(d.path().join("secret"), root.join("abs-link")).unwrap();
    symlink("../secret", root.join("rel-link")).unwrap();
    symlink("dir", root.join("dir-link")).unwrap();
    nix::unistd::mkfifo(&root.join("fifo"), Mode::from_bits_truncate(0o644)).unwrap();
    let sparse = File::create(root.join("sparse")).unwrap();
    sparse.set_len(20 << 30).unwrap();
    let tree = Tree::open(&root).unwrap();
    (d, tree)
}

fn problem(r: Res<impl std::fmt::Debug>) -> Problem {
    r.expect_err("refused").problem
}

#[test]
fn regular_files_open_and_read_within_their_cap() {
    let (_d, t) = hostile();
    let (mut f, len) = t.open_file("file").unwrap().unwrap();
    assert_eq!(len, 5);
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "hello");
    assert_eq!(t.read_capped("dir/sub/deep", 4).unwrap().unwrap(), b"deep");
    assert_eq!(
        t.read_capped("./dir//sub/deep", 4).unwrap().unwrap(),
        b"deep"
    );
    assert!(t.open_file("missing").unwrap().is_none());
    assert!(t.read_capped("dir/missing", 9).unwrap().is_none());
    assert_eq!(
        problem(t.read_capped("file", 4)),
        Problem::TooLarge { len: 5, cap: 4 }
    );
}

#[test]
fn symlinks_escapes_and_special_files_are_refused_without_reading() {
    let (_d, t) = hostile();
    assert_eq!(problem(t.open_file("abs-link")), Problem::Symlink);
    assert_eq!(problem(t.open_file("rel-link")), Problem::Symlink);
    assert_eq!(
        problem(t.open_file("dir-link/sub/deep")),
        Problem::ThroughSymlink
    );
    assert_eq!(problem(t.open_file("../secret")), Problem::Escapes);
    assert_eq!(problem(t.open_file("/etc/hostname")), Problem::Escapes);
    assert_eq!(problem(t.open_file("file/x")), Problem::NotADirectory);
    // Neither blocks nor reads: the FIFO has no writer, /dev/zero never ends.
    let kind = |found| Problem::Kind {
        found,
        want: Kind::File,
    };
    assert_eq!(problem(t.open_file("fifo")), kind(Kind::Fifo));
    assert_eq!(problem(t.read_capped("fifo", 10)), kind(Kind::Fifo));
    // A device node: making one needs privileges the unit tests do not have, and /dev is a
    // tree like any other (a stick's device nodes are in the privileged hostile-stick suite).
    let dev = Tree::open(Path::new("/dev")).unwrap();
    assert_eq!(problem(dev.open_file("zero")), kind(Kind::CharDevice));
    assert_eq!(problem(t.open_file("dir")), kind(Kind::Dir));
    // A 20 GiB sparse file is refused by its size, before a byte is read.
    assert_eq!(
        problem(t.read_capped("sparse", 1 << 20)),
        Problem::TooLarge {
            len: 20 << 30,
            cap: 1 << 20
        }
    );
    let dir = |found| Problem::Kind {
        found,
        want: Kind::Dir,
    };
    assert_eq!(problem(t.open_dir("fifo")), dir(Kind::Fifo));
    assert_eq!(problem(t.open_dir("dir-link")), Problem::Symlink);
    assert_eq!(problem(t.names("file", 10)), dir(Kind::File));
    assert_eq!(t.kind("dir-link").unwrap(), Some((Kind::Symlink, 3)));
    assert_eq!(dev.kind("zero").unwrap().unwrap().0, Kind::CharDevice);
    assert_eq!(t.kind("missing").unwrap(), None);
    let shown = t.open_file("fifo").unwrap_err().to_string();
    assert_eq!(shown, "fifo is a FIFO, not a regular file");
}

#[test]
fn the_fallback_walk_refuses_the_same() {
    let (_d, t) = hostile();
    let rd = OFlag::O_RDONLY;
    assert!(t.walk("dir/sub/deep", rd).is_ok());
    assert!(t.walk("./dir//sub/deep", rd).is_ok());
    assert_eq!(t.walk("abs-link", rd).unwrap_err(), Errno::ELOOP);
    assert_eq!(t.walk("dir-link/sub", rd).unwrap_err(), Errno::ELOOP);
    assert_eq!(
        t.walk("dir-link/sub", OFlag::O_PATH).unwrap_err(),
        Errno::ELOOP
    );
    assert_eq!(t.walk("../secret", rd).unwrap_err(), Errno::EXDEV);
    assert_eq!(t.walk("/etc/hostname", rd).unwrap_err(), Errno::EXDEV);
    assert_eq!(t.walk("missing", rd).unwrap_err(), Errno::ENOENT);
    assert_eq!(t.walk("file/x", rd).unwrap_err(), Errno::ENOTDIR);
    // O_PATH opens a final link itself (its type is then checked), as openat2 does.
    let link = t.walk("abs-link", OFlag::O_PATH).unwrap();
    assert_eq!(Kind::of(&fstat(link.as_raw_fd()).unwrap()), Kind::Symlink);
}

#[test]
fn listings_are_streamed_sorted_and_capped() {
    let d = tempfile::tempdir().unwrap();
    for i in 0..50 {
        std::fs::write(d.path().join(format!("f{i:02}")), b"").unwrap();
    }
    std::fs::create_dir(d.path().join("sub")).unwrap();
    let t = Tree::open(d.path()).unwrap();
    let names = t.names(".", 51).unwrap().unwrap();
    assert_eq!(names.len(), 51);
    assert_eq!(names[0], "f00");
    assert_eq!(names[50], "sub");
    assert_eq!(problem(t.names(".", 50)), Problem::TooMany { cap: 50 });
    let mut dirs = Vec::new();
    t.each_entry(".", 51, |n, k| {
        if k == Some(Kind::Dir) {
            dirs.push(n.to_string())
        }
    })
    .unwrap()
    .unwrap();
    assert_eq!(dirs, ["sub"]);
    assert!(t.names("missing", 1).unwrap().is_none());
    assert_eq!(
        t.open_file(".").unwrap_err().to_string(),
        ". is a directory, not a regular file"
    );
}

#[test]
fn the_root_must_be_a_directory_and_opening_it_cannot_block() {
    let (d, _t) = hostile();
    let e = Tree::open(&d.path().join("stick/fifo")).unwrap_err();
    assert_eq!(
        e.problem,
        Problem::Kind {
            found: Kind::Fifo,
            want: Kind::Dir
        }
    );
    assert_eq!(
        Tree::open(&d.path().join("nothing")).unwrap_err().problem,
        Problem::Io(Errno::ENOENT)
    );
}

#[test]
fn capped_reader_fails_past_the_cap_not_at_it() {
    let data = [7u8; 10];
    let mut out = Vec::new();
    Capped::new(&data[..], 10, "object")
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out.len(), 10);
    let e = Capped::new(&data[..], 9, "object")
        .read_to_end(&mut Vec::new())
        .unwrap_err();
    assert!(is_cap_exceeded(&e));
    assert_eq!(
        e.to_string(),
        "object is over 9 bytes uncompressed: refused"
    );
}
