//! Lines on the device's consoles (`/dev/console`, `/dev/tty1`, a serial port).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use nix::fcntl::OFlag;

/// Appends `line` to `console`, opened for this one write: a console can come and go (a
/// serial adapter unplugged), and holding none open means none can become our controlling
/// terminal (`O_NOCTTY`), so a hangup there cannot kill the agent. `O_NONBLOCK`: a terminal
/// stopped by flow control (XOFF, nobody reading) drops the line instead of hanging the
/// update. Never created: a console that is not there is none (a regular file made in
/// `/dev` would only fill memory). A missing or unwritable console is expected on many
/// devices: debug log only.
pub(crate) fn write_line(console: &Path, line: &str) {
    let written = std::fs::OpenOptions::new()
        .append(true)
        .custom_flags((OFlag::O_NOCTTY | OFlag::O_NONBLOCK).bits())
        .open(console)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        tracing::debug!("console {}: {e}", console.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_and_skips_what_cannot_be_opened() {
        let t = tempfile::tempdir().unwrap();
        let c = t.path().join("console");
        std::fs::write(&c, "before\n").unwrap();
        write_line(&c, "a\n");
        write_line(&c, "b\n");
        assert_eq!(std::fs::read_to_string(&c).unwrap(), "before\na\nb\n");
        write_line(&t.path().join("missing/console"), "c\n");
        write_line(t.path(), "a directory\n");
    }
}
