//! `cargo run -p xtask -- assets OUT`: the man pages and completions the Debian package
//! installs (scripts/package).

use anyhow::{bail, Result};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [cmd, out] if cmd == "assets" => xtask::assets(std::path::Path::new(out)),
        _ => bail!("usage: cargo run -p xtask -- assets OUT_DIR"),
    }
}
