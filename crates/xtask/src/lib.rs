//! What the Debian package (scripts/package) installs besides the repository's files,
//! generated from the CLI definition so that it cannot
//! drift from the binary: man pages (`usb-update(1)` and one per command; cargo-deb gzips
//! them) under `OUT/man/`, and bash, zsh and fish completions under `OUT/completions/`.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use clap_complete::Shell;

/// Sections of usb-update(1) that clap does not know: where the files are, the exit codes,
/// the environment, the aklite-offline name, and where to read on.
const EXTRA: &str = include_str!("usb-update.1.extra");

/// Writes `OUT/man/*.1` and `OUT/completions/*`, replacing what an earlier run left.
pub fn assets(out: &Path) -> Result<()> {
    let man = out.join("man");
    let completions = out.join("completions");
    for d in [&man, &completions] {
        if d.exists() {
            fs::remove_dir_all(d).with_context(|| format!("cannot empty {}", d.display()))?;
        }
        fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let pages = man_pages()?;
    for (name, text) in &pages {
        let path = man.join(format!("{name}.1"));
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    for (shell, file) in [
        (Shell::Bash, "usb-update"),
        (Shell::Zsh, "_usb-update"),
        (Shell::Fish, "usb-update.fish"),
    ] {
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut usb_update::command(), "usb-update", &mut text);
        let path = completions.join(file);
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!(
        "xtask: {} man pages in {}, bash/zsh/fish completions in {}",
        pages.len(),
        man.display(),
        completions.display()
    );
    Ok(())
}

/// The man pages as (name, roff): `usb-update` and one per command, `usb-update-agent-handle`
/// for `usb-update agent handle`.
pub fn man_pages() -> Result<Vec<(String, Vec<u8>)>> {
    // `help` is a command of the CLI, not a page: none is listed that does not exist.
    let mut cmd = usb_update::command().disable_help_subcommand(true);
    cmd.build();
    let mut pages = Vec::new();
    add_pages(&cmd, "usb-update", "usb-update", &mut pages)?;
    Ok(pages)
}

/// One page for `cmd` (named `name`, run as `bin`) and one for each of its subcommands,
/// recursively; the top page gets the hand-written sections.
fn add_pages(
    cmd: &clap::Command,
    name: &str,
    bin: &str,
    pages: &mut Vec<(String, Vec<u8>)>,
) -> Result<()> {
    let top = pages.is_empty();
    let page = cmd.clone().name(name.to_string()).bin_name(bin.to_string());
    let man = clap_mangen::Man::new(page)
        .section("1")
        .manual("usb-update manual")
        .source(format!("usb-update {}", env!("CARGO_PKG_VERSION")));
    let mut text = Vec::new();
    man.render(&mut text)
        .with_context(|| format!("cannot render the man page of {name}"))?;
    if top {
        text.extend_from_slice(EXTRA.as_bytes());
    } else {
        text.extend_from_slice(b".SH \"SEE ALSO\"\n\\fBusb-update\\fR(1)\n");
    }
    pages.push((name.to_string(), text));
    for sub in cmd.get_subcommands() {
        let sub_name = sub.get_name();
        add_pages(
            sub,
            &format!("{name}-{sub_name}"),
            &format!("{bin} {sub_name}"),
            pages,
        )?;
    }
    Ok(())
}
